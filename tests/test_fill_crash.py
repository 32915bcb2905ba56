"""A worker that crashes while it copies cached vectors into a new embedding store (the ``_fill_file`` task) never
ends in a committed store with rows missing or vectors altered: the task is retried and the store is whole and
right, or the write raises and nothing is committed.

The crash is real: ``os.abort()`` in the Ray worker (SIGABRT, "Fatal Python error: Aborted", as the issue saw), right
after the task did all its file work and before it returns — the point where a retry meets the most of the first
try's side effects. It is injected by wrapping the task function for this test (a closure, so Ray ships it by
value); the store is written by the real Ray Data sink on the session's Ray. Vectors are synthetic (no model)."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
import ray

from streammine.index import store_sink
from streammine.index.store import NUM_BUCKETS, STORE_COLUMNS, bucket_of, read_buckets, read_manifest
from streammine.index.store_sink import EmbeddingStoreSink
from streammine.keys import text_key
from streammine.vectors import to_arrow

N_DOCS, N_NEW, DIM = 12, 4, 8
# the documents fall in one bucket: one fill task (each crash costs a worker start, seconds on a small machine)
BUCKETS = (3,)


def _table(ids, vectors, cached=None) -> pa.Table:
    n = len(ids)
    t = pa.table({"doc_id": ids, "text_key": pa.array([text_key(f"text of {d}") for d in ids], pa.uint64()),
                  "file_idx": pa.array([0] * n, pa.int64()), "row": pa.array(list(range(n)), pa.int64()),
                  "location": [f"corpus.jsonl:{i + 1}" for i in range(n)], "vector": to_arrow(vectors)})
    if cached is not None:
        t = t.append_column("cached", pa.array(cached))
    return t


def _write_store(ray, url: str, table: pa.Table, cached_store=None) -> None:
    sink = EmbeddingStoreSink(url, {"store_key": os.path.basename(url), "model_key": "m"}, cached_store=cached_store)
    ray.data.from_arrow(table).write_datasink(sink)


def _store_vectors(url: str) -> dict:
    out = {}
    for t in read_buckets(url, list(range(NUM_BUCKETS)), read_manifest(url)):
        assert t.column_names[:len(STORE_COLUMNS)] == STORE_COLUMNS and "cached" not in t.column_names
        for d, v in zip(t.column("doc_id").to_pylist(), t.column("vector").to_pylist()):
            assert d not in out, f"{d} twice in the store"
            out[d] = np.asarray(v, np.float32)
    return out


@pytest.fixture
def stores(ray_session, tmp_path):
    """A committed store of N_DOCS documents, and the rows of a grown corpus (N_DOCS + N_NEW): the old documents
    flagged cached with zero placeholders (as the encoder stage leaves them), the new ones with their vectors."""
    rng = np.random.default_rng(0)
    candidates = [f"d{i}" for i in range(2000)]
    ids = [d for d, b in zip(candidates, bucket_of(candidates)) if b in BUCKETS][:N_DOCS + N_NEW]
    vectors = rng.standard_normal((N_DOCS + N_NEW, DIM)).astype(np.float32)
    old = str(tmp_path / "embeddings" / "old")
    _write_store(ray_session, old, _table(ids[:N_DOCS], vectors[:N_DOCS]))
    placeholders = vectors.copy()
    placeholders[:N_DOCS] = 0.0
    grown = _table(ids, placeholders, cached=[True] * N_DOCS + [False] * N_NEW)
    return {"old": old, "grown": grown, "expected": dict(zip(ids, vectors)), "tmp": tmp_path}


def _abort_after(original, flag: str, always: bool):
    def crashing_fill(*args, **kwargs):
        result = original(*args, **kwargs)  # every file the task writes or removes, done
        if always:
            os.abort()
        try:
            os.remove(flag)  # the first task to claim the flag crashes; its retry and the others do not
        except FileNotFoundError:
            return result
        os.abort()
    return crashing_fill


def test_fill_task_crash_is_retried_and_the_store_is_whole(ray_session, stores, monkeypatch):
    flag = str(stores["tmp"] / "crash-once")
    open(flag, "w").close()
    monkeypatch.setattr(store_sink, "_fill_file", _abort_after(store_sink._fill_file, flag, always=False))
    new = str(stores["tmp"] / "embeddings" / "new")
    _write_store(ray_session, new, stores["grown"], cached_store=stores["old"])
    assert not os.path.exists(flag), "no fill task crashed"
    manifest = read_manifest(new)
    assert manifest is not None and manifest["docs"] == N_DOCS + N_NEW and manifest["cached"] == N_DOCS
    got = _store_vectors(new)
    assert sorted(got) == sorted(stores["expected"])
    for d, v in stores["expected"].items():
        np.testing.assert_array_equal(got[d], v, err_msg=d)
    # no file of the crashed try is left beside the listed ones
    on_disk = sorted(os.path.relpath(os.path.join(r, f), new) for r, _, fs_ in os.walk(new) for f in fs_
                     if f.endswith(".parquet"))
    assert on_disk == sorted(manifest["files"])


def test_fill_task_that_always_crashes_fails_the_write(ray_session, stores, monkeypatch):
    monkeypatch.setattr(store_sink, "_fill_file", _abort_after(store_sink._fill_file, "", always=True))
    new = str(stores["tmp"] / "embeddings" / "new")
    with pytest.raises(Exception) as e:
        _write_store(ray_session, new, stores["grown"], cached_store=stores["old"])
    assert isinstance(e.value, ray.exceptions.WorkerCrashedError), repr(e.value)  # after Ray's retries
    assert read_manifest(new) is None  # never committed: no later run takes it for whole
