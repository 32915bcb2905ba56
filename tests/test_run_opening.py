"""The corridor of a run: paths computed once (run.paths.RunPaths), the names in the cache (index.store_naming),
the query-vector source chosen once (encode.query_vectors), the prefetcher the document encoders are given, and the
search seam's types imported without a loop. No Ray."""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa

import streammine
from streammine.api import demo_data_path
from streammine.encode.precision import planned_precision
from streammine.encode.query_cache import QueryVectorCache, query_keys
from streammine.encode.query_vectors import QUERY_ROW, QueryPrefetcher, QueryVectorSource, choose_source
from streammine.index.store_naming import digest16, model_key, store_key
from streammine.metrics import MetricsClient
from streammine.run.paths import RunPaths


def _cfg(tmp_path, **more):
    return streammine.load_config(overrides=dict({"input.path": demo_data_path(), "output.path": str(tmp_path / "out"),
                                                   "run.cache_dir": str(tmp_path / "cache")}, **more))


def test_names_are_the_documented_digests(tmp_path):
    """Keys must not change with the code's layout: existing caches stay valid."""
    cfg = _cfg(tmp_path)
    e = cfg.encoder
    ident = {"kind": e.kind, "model": e.model or "packaged:all-MiniLM-L6-v2", "document_prompt": e.document_prompt,
             "max_length": e.max_length, "normalize": e.normalize,
             "precision": planned_precision(e)}
    assert model_key(cfg) == hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    assert digest16({"b": [1, 2], "a": "x"}) == hashlib.sha256(b'{"a": "x", "b": [1, 2]}').hexdigest()[:16]


def test_run_paths_for_mine_and_serve(tmp_path):
    cfg = _cfg(tmp_path)
    mine, serve = RunPaths.for_mine(cfg), RunPaths.for_serve(cfg)
    key = store_key(cfg)
    out = str(tmp_path / "out")
    assert mine.store_key == serve.store_key == key
    assert mine.store == str(tmp_path / "cache" / "embeddings" / key)          # the shared cache
    assert serve.store == f"{out}/_work/embeddings/{key}"                       # the serve run's own stores
    assert mine.quarantine == serve.quarantine == f"{out}/_quarantine" and mine.read_quarantine is None
    assert RunPaths.for_mine(_cfg(tmp_path, **{"input.lenient": True})).read_quarantine == mine.quarantine
    # the query cache is the model's, wherever the stores live; its completion mark is per input
    assert mine.query_cache == serve.query_cache and mine.query_cache.startswith(str(tmp_path / "cache"))
    assert mine.query_cache_complete.startswith(mine.query_cache + "/complete/")
    off = RunPaths.for_mine(_cfg(tmp_path, **{"run.cache_queries": False}))
    assert off.query_cache is None and off.query_cache_complete is None


def test_query_vector_source_is_chosen_once(tmp_path):
    cfg = _cfg(tmp_path)
    mark = str(tmp_path / "complete.json")
    assert choose_source(cfg, mark, prefetched=True) is QueryVectorSource.PREFETCHED
    assert choose_source(cfg, mark, prefetched=False) is QueryVectorSource.ENCODER_ACTORS   # no mark written yet
    (tmp_path / "complete.json").write_text("{}")
    assert choose_source(cfg, mark, prefetched=False) is QueryVectorSource.CACHE
    assert choose_source(cfg, None, prefetched=True) is QueryVectorSource.ENCODER_ACTORS    # the cache is off
    # the summary's strings
    assert [s.value for s in QueryVectorSource] == ["precomputed", "prefetched", "cache", "encoder-actors"]
    assert [s.miners_look_up for s in QueryVectorSource] == [False, True, True, False]


def test_prefetcher_takes_the_query_rows_out_and_caches_them(tmp_path):
    calls = []

    def encode(texts):  # a vector per text, a pure function of it
        calls.append(list(texts))
        return np.array([[len(t), sum(map(ord, t)), 1.0] for t in texts], np.float32)

    flag = [False, True, False, True, True]
    texts = ["doc a", "query one", "doc b", "query two", "query one"]
    block = pa.table({"doc_id": ["a", "q1", "b", "q2", "q1"], "text": texts, QUERY_ROW: flag})
    url = str(tmp_path / "qcache")
    docs = QueryPrefetcher(url).take_queries(block, encode, MetricsClient(None))
    assert docs.column_names == ["doc_id", "text"] and docs.column("doc_id").to_pylist() == ["a", "b"]
    assert sorted(calls[0]) == ["query one", "query two"] and len(calls) == 1   # a repeated text encoded once
    found, got = QueryVectorCache(url).load().lookup(query_keys(["query two", "query one", "doc a"]))
    assert found.tolist() == [True, True, False]
    np.testing.assert_array_equal(got, encode(["query two", "query one"]))
    # documents only: nothing cached, the flag column goes
    calls.clear()
    only_docs = QueryPrefetcher(url).take_queries(block.filter(pa.array([not f for f in flag])), encode,
                                                  MetricsClient(None))
    assert only_docs.column_names == ["doc_id", "text"] and only_docs.num_rows == 2 and calls == []
    # without a cache the query rows are dropped unencoded
    assert QueryPrefetcher(None).take_queries(block, encode, MetricsClient(None)).num_rows == 2 and calls == []


def test_merge_and_shard_do_not_import_each_other():
    code = ("import sys, streammine.index.merge as m; assert 'streammine.index.shard' not in sys.modules; "
            "import streammine.index.answers as a; assert 'streammine.index.shard' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
