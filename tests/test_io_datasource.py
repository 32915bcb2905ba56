"""GeneratorDatasource: reader callables become Ray Data read tasks; lenient tasks write their own quarantine."""
from __future__ import annotations

import functools
import json

import pytest

from streammine.errors import InputError
from streammine.io import fs, readers
from streammine.io.datasource import GeneratorDatasource, quarantining
from streammine.io.records import CORPUS_SCHEMA, count_quarantine, read_quarantine


def _write(url: str, lines) -> None:
    with fs.open_url(url, "wt") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def _beir(root: str, n_docs: int, bad_lines=()) -> str:
    _write(fs.join(root, "corpus.jsonl"),
           [{"_id": f"d{i}", "text": f"doc {i}"} for i in range(n_docs)] + list(bad_lines))
    return root


def test_generator_datasource_streams_blocks(ray_session, tmp_path):
    import ray
    a, b = _beir(str(tmp_path / "a"), 5), _beir(str(tmp_path / "b"), 3)
    fns = [functools.partial(readers.iter_beir_corpus, dir_url=a, file_idx_base=0, block_rows=2),
           functools.partial(readers.iter_beir_corpus, dir_url=b, file_idx_base=1, block_rows=2)]
    source = GeneratorDatasource(fns, name="beir-corpus")
    assert source.estimate_inmemory_data_size() is None and len(source.get_read_tasks(1)) == 2
    ds = ray.data.read_datasource(source, override_num_blocks=len(fns))
    tables = ray.get(ds.to_arrow_refs())  # (Ray may coalesce the small blocks a task streams out)
    assert sum(t.num_rows for t in tables) == 8
    rows = sorted((r["file_idx"], r["row"], r["doc_id"]) for t in tables for r in t.to_pylist())
    assert rows == [(0, i, f"d{i}") for i in range(5)] + [(1, i, f"d{i}") for i in range(3)]
    assert tables[0].schema.equals(CORPUS_SCHEMA)


def test_lenient_read_tasks_write_their_own_quarantine(ray_session, tmp_path, s3_bucket):
    import ray
    a = _beir(str(tmp_path / "a"), 2, bad_lines=["{bad", {"_id": "x"}])
    b = _beir(f"s3://{s3_bucket}/b", 2, bad_lines=[{"text": "no id"}])  # read by a worker, over S3
    qdir = f"s3://{s3_bucket}/out/_quarantine"
    fns = [quarantining(readers.iter_beir_corpus, qdir, dir_url=a),
           quarantining(readers.iter_beir_corpus, qdir, dir_url=b, file_idx_base=1)]
    ds = ray.data.read_datasource(GeneratorDatasource(fns, name="corpus"), override_num_blocks=2)
    assert ds.count() == 4
    assert count_quarantine(qdir) == {"corpus": 3}
    assert len(fs.list_files(qdir, (".jsonl",))) == 2  # one part per read task
    locations = sorted(r["location"] for r in read_quarantine(qdir))
    assert locations == [f"{a}/corpus.jsonl:3", f"{a}/corpus.jsonl:4", f"s3://{s3_bucket}/b/corpus.jsonl:3"]


def test_strict_read_task_error_reaches_the_driver(ray_session, tmp_path):
    import ray
    a = _beir(str(tmp_path / "a"), 2, bad_lines=["{bad"])
    fns = [quarantining(readers.iter_beir_corpus, None, dir_url=a)]
    ds = ray.data.read_datasource(GeneratorDatasource(fns, name="corpus"), override_num_blocks=1)
    with pytest.raises(InputError) as e:  # Ray re-raises it as RayTaskError(InputError), an InputError
        ds.materialize()
    assert e.value.location == f"{a}/corpus.jsonl:3" and "malformed JSON" in e.value.reason
