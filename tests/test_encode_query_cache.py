"""The query-vector cache (encode/query_cache.py) and the lookup the miners do with it when the corpus encoders
prefetched the queries (run.mine_stage.MineQueries with a cache URL): cached vectors come back unchanged, a query the cache
lacks is encoded by a model loaded only then."""
import numpy as np
import pyarrow as pa

from streammine.config import EncoderConfig
from streammine.encode.query_cache import QueryVectorCache, query_keys
from streammine.encode.query_vectors import EncodeQueries


def test_cache_round_trip_and_lookup(tmp_path):
    url = str(tmp_path / "cache")
    rng = np.random.default_rng(0)
    texts = [f"query {i}" for i in range(10)]
    vectors = rng.standard_normal((10, 4)).astype(np.float32)
    cache = QueryVectorCache(url)
    cache.add(query_keys(texts[:6]), vectors[:6])
    cache.add(query_keys(texts[4:8]), vectors[4:8])  # overlapping writers hold the same vectors for the same keys
    loaded = QueryVectorCache(url).load()
    asked = ["query 7", "query 9", "query 0", "query 5"]
    found, got = loaded.lookup(query_keys(asked))
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(got, vectors[[7, 0, 5]])
    assert len(loaded.keys) == 8


def test_vectors_for_encodes_only_the_missing_and_adds_them(tmp_path):
    url = str(tmp_path / "cache")
    texts = ["a", "b", "c", "d"]
    known = np.arange(8, dtype=np.float32).reshape(2, 4)
    QueryVectorCache(url).add(query_keys(["b", "d"]), known)
    calls, timed = [], []

    def encode(batch):
        calls.append(list(batch))
        return np.full((len(batch), 4), 7.0, np.float32)

    class Timer:
        def __init__(self, n):
            timed.append(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    cache = QueryVectorCache(url).load()
    vectors, found = cache.vectors_for(query_keys(texts), texts, encode, Timer)
    assert calls == [["a", "c"]] and timed == [2]
    assert found.tolist() == [False, True, False, True]
    np.testing.assert_array_equal(vectors[[1, 3]], known)
    np.testing.assert_array_equal(vectors[[0, 2]], np.full((2, 4), 7.0))
    again, found = QueryVectorCache(url).load().vectors_for(query_keys(texts), texts, encode, Timer)
    assert found.all() and len(calls) == 1 and timed == [2, 0]  # nothing left to encode: encode not called
    np.testing.assert_array_equal(again, vectors)
    empty, found = QueryVectorCache(str(tmp_path / "none")).vectors_for(query_keys([]), [], encode, Timer)
    assert empty is None and len(found) == 0 and len(calls) == 1


def test_miner_lookup_encodes_only_what_the_cache_lacks(tmp_path):
    url = str(tmp_path / "cache")
    queries = ["does vitamin d prevent fractures", "is aspirin linked to bleeding", "a query nobody cached"]
    stand_in = np.full((2, 384), 0.5, np.float32)  # not what the model gives: proves these rows were looked up
    QueryVectorCache(url).add(query_keys(queries[:2]), stand_in)
    block = pa.table({"query_id": ["q1", "q2", "q3"], "query": queries})

    lookup = EncodeQueries(EncoderConfig(), 1, None, url, lazy=True)
    assert lookup._encoder is None  # nothing loaded up front
    cached_only = lookup(block.slice(0, 2))
    assert lookup._encoder is None  # every query was cached: no model was needed
    np.testing.assert_array_equal(np.stack(cached_only.column("vector").to_pylist()), stand_in)

    out = lookup(block)
    vectors = np.stack(out.column("vector").to_pylist()).astype(np.float32)
    np.testing.assert_array_equal(vectors[:2], stand_in)
    expected = lookup.encoder.encode_queries([queries[2]])[0]
    np.testing.assert_allclose(vectors[2], expected, atol=1e-6)
    assert abs(np.linalg.norm(vectors[2]) - 1.0) < 1e-5
    # the miss was added to the cache for the next run
    found, got = QueryVectorCache(url).load().lookup(query_keys([queries[2]]))
    assert found.all()
    np.testing.assert_allclose(got[0], expected, atol=1e-6)
