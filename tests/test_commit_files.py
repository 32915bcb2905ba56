"""Retried writes cannot duplicate data: stores and outputs are read through their manifests, and files a
retried (killed) write task left behind are removed at commit. Driven without Ray, by calling the sinks the way
Ray Data does (write per task, then on_write_complete with every finished task's return)."""
from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streammine.index.store import buckets_of_shard, read_buckets, read_manifest
from streammine.index.store_sink import EmbeddingStoreSink
from streammine.sink.parts import MinedPartsSink, iter_rows
from streammine.sink.schema import MINED_SCHEMA
from streammine.vectors import to_arrow


def store_block(ids, file_idx=0):
    n = len(ids)
    return pa.table({"doc_id": pa.array(ids, pa.string()), "text_key": pa.array(range(n), pa.uint64()),
                     "file_idx": pa.array([file_idx] * n, pa.int32()), "row": pa.array(range(n), pa.int64()),
                     "location": pa.array([f"c.jsonl:{i + 1}" for i in range(n)], pa.string()),
                     "vector": to_arrow(np.ones((n, 4), np.float32))})


def test_store_reads_only_committed_files_and_drops_orphans(tmp_path):
    store = str(tmp_path / "store")
    sink = EmbeddingStoreSink(store, {"model": "m"})
    ids = [f"d{i}" for i in range(40)]
    finished = sink.write([store_block(ids)], SimpleNamespace(task_idx=0))
    # a task that died after writing its files (its return never reached the driver); Ray Data retried it, and
    # the retry is the `finished` one above: the dead attempt's files duplicate every document
    dead = sink.write([store_block(ids)], SimpleNamespace(task_idx=0))
    assert dead["files"] and set(dead["files"]).isdisjoint(finished["files"])
    sink.on_write_complete(SimpleNamespace(write_returns=[finished]))
    manifest = read_manifest(store)
    assert manifest["files"] == sorted(finished["files"]) and manifest["docs"] == 40
    for f in dead["files"]:
        assert not os.path.exists(os.path.join(store, f))
    read = [d for t in read_buckets(store, buckets_of_shard(0, 1), manifest) for d in t.column("doc_id").to_pylist()]
    assert sorted(read) == sorted(ids)  # each document exactly once


def test_store_without_file_list_still_reads(tmp_path):
    store = str(tmp_path / "store")
    sink = EmbeddingStoreSink(store, {})
    r = sink.write([store_block(["a", "b", "c"])], SimpleNamespace(task_idx=0))
    sink.on_write_complete(SimpleNamespace(write_returns=[r]))
    legacy = dict(read_manifest(store))
    del legacy["files"]  # as stores written by 0.1.0 were
    read = [d for t in read_buckets(store, buckets_of_shard(0, 1), legacy) for d in t.column("doc_id").to_pylist()]
    assert sorted(read) == ["a", "b", "c"]


def mined_block(qids):
    n = len(qids)
    cols = {f.name: pa.nulls(n, f.type) for f in MINED_SCHEMA}
    cols["query_id"] = pa.array(qids, pa.string())
    return pa.table(cols, schema=MINED_SCHEMA)


def test_output_parts_follow_manifest_and_orphans_removed(tmp_path):
    out = str(tmp_path / "out")
    sink = MinedPartsSink(out)
    sink.on_write_start()
    a = sink.write([mined_block(["q1", "q2"])], SimpleNamespace(task_idx=0))
    dead = sink.write([mined_block(["q3"])], SimpleNamespace(task_idx=1))  # the attempt that died
    b = sink.write([mined_block(["q3"])], SimpleNamespace(task_idx=1))     # its retry
    os.makedirs(os.path.join(out, "_quarantine"))
    pq.write_table(mined_block(["x"]), os.path.join(out, "_quarantine", "part-keep.parquet"))
    sink.on_write_complete(SimpleNamespace(write_returns=[a, b]))
    assert not os.path.exists(os.path.join(out, dead["part"]))
    assert os.path.exists(os.path.join(out, "_quarantine", "part-keep.parquet"))  # only top-level parts
    qids = [q for batch in iter_rows(out, columns=["query_id"]) for q in batch.column("query_id").to_pylist()]
    assert sorted(qids) == ["q1", "q2", "q3"]
