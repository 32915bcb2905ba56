"""The embedding store: corpus vectors on object storage, partitioned into 64 hash buckets of the document id.

Layout under ``<work_dir>/embeddings/<store_key>/``::

    bucket=07/part-<uuid>.parquet   doc_id, text_key, file_idx, row, location, vector
    _manifest.json                  rows per corpus file, dimension, model; written last (the commit marker)

A shard owns the buckets ``b`` with ``b % n_shards == shard_id``, so the shard count can change without
re-encoding, and a restarted shard rebuilds from here. A store whose manifest matches the corpus fingerprint and
model is reused: the corpus is not encoded twice.
"""
from __future__ import annotations

import json
import uuid
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink

from ..io import fs
from ..keys import keys64

NUM_BUCKETS = 64
STORE_COLUMNS = ["doc_id", "text_key", "file_idx", "row", "location", "vector"]


def bucket_of(doc_ids) -> np.ndarray:
    return (keys64(doc_ids) % np.uint64(NUM_BUCKETS)).astype(np.int64)


def buckets_of_shard(shard_id: int, n_shards: int) -> list:
    return [b for b in range(NUM_BUCKETS) if b % n_shards == shard_id]


class EmbeddingStoreSink(Datasink):
    """Writes encoded corpus blocks into the bucketed store; commits the manifest when every block is written."""

    def __init__(self, store_url: str, manifest_extra: dict):
        self.store_url = store_url
        self.manifest_extra = manifest_extra

    @property
    def min_rows_per_write(self) -> int:
        # one file per bucket per write task: bundle blocks so the store is not thousands of tiny files
        return 65536

    def write(self, blocks: Iterable, ctx) -> dict:
        tables = [b.select(STORE_COLUMNS) for b in blocks if b.num_rows]
        if not tables:
            return {"rows_per_file": {}, "docs": 0, "dim": None}
        block = pa.concat_tables(tables)
        file_idx = block.column("file_idx").to_numpy()
        rows = block.column("row").to_numpy()
        rows_per_file = {int(f): int(rows[file_idx == f].max()) + 1 for f in np.unique(file_idx)}
        buckets = bucket_of(block.column("doc_id").to_pylist())
        files = []
        for b in np.unique(buckets):
            name = f"bucket={int(b):02d}/part-{uuid.uuid4().hex}.parquet"
            fs.makedirs(fs.join(self.store_url, f"bucket={int(b):02d}"))
            with fs.open_url(fs.join(self.store_url, name), "wb") as f:
                pq.write_table(block.filter(pa.array(buckets == b)), f)
            files.append(name)
        return {"rows_per_file": rows_per_file, "docs": block.num_rows,
                "dim": block.column("vector").type.list_size, "files": files}

    def on_write_complete(self, write_result) -> None:
        rows_per_file: dict = {}
        docs, dim, files = 0, None, []
        for r in write_result.write_returns:
            if not r:
                continue
            docs += r["docs"]
            dim = dim or r["dim"]
            files += r.get("files", [])
            for f, count in r["rows_per_file"].items():
                rows_per_file[f] = max(rows_per_file.get(f, 0), count)
        # The manifest names the files of the write tasks that finished: a task retried after a worker or node
        # died may have left a partial or duplicate file behind, which must never reach a shard.
        manifest = dict(self.manifest_extra, docs=docs, dim=dim, files=sorted(files),
                        rows_per_file={str(k): v for k, v in sorted(rows_per_file.items())})
        write_manifest(self.store_url, manifest)
        remove_unlisted(self.store_url, manifest["files"])


def write_manifest(store_url: str, manifest: dict) -> None:
    fs.makedirs(store_url)
    with fs.open_url(fs.join(store_url, "_manifest.json"), "wt") as f:
        json.dump(manifest, f, indent=1)


def read_manifest(store_url: str) -> Optional[dict]:
    return fs.read_json(fs.join(store_url, "_manifest.json"))


def file_offsets(manifest: dict) -> dict:
    """Corpus ordinal of a row = offset of its file + its row: dense, global and independent of sharding."""
    offsets, total = {}, 0
    for f in sorted(manifest["rows_per_file"], key=int):
        offsets[int(f)] = total
        total += manifest["rows_per_file"][f]
    return offsets


def total_rows(manifest: dict) -> int:
    return int(sum(manifest["rows_per_file"].values()))


def remove_unlisted(store_url: str, files: list) -> int:
    """Deletes part files the manifest does not name (left by retried writes); returns how many. Best effort."""
    listed = {fs.join(store_url, f) for f in files}
    return fs.remove_quietly(u for u in fs.list_files(store_url, (".parquet",)) if u not in listed)


def read_buckets(store_url: str, buckets: list, manifest: Optional[dict] = None) -> Iterable[pa.Table]:
    """Yields the store's tables for the given buckets (one per part file named by the manifest)."""
    wanted = {f"bucket={b:02d}" for b in buckets}
    if manifest is not None and "files" in manifest:
        urls = [fs.join(store_url, f) for f in manifest["files"] if f.split("/", 1)[0] in wanted]
    else:  # a store written before manifests listed their files
        urls = [u for b in sorted(wanted) if fs.exists(fs.join(store_url, b))
                for u in fs.list_files(fs.join(store_url, b), (".parquet",))]
    for url in urls:
        with fs.open_url(url, "rb") as f:
            yield pq.read_table(f)
