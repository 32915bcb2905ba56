"""The write side of the embedding store (layout in ``store.py``): a Ray Data sink that writes encoded corpus blocks
into the bucketed store and commits its manifest last."""
from __future__ import annotations

import logging
import time
import uuid
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink

from ..errors import StreamMineError
from ..io import fs
from ..vectors import from_arrow, to_arrow
from .store import (STORE_COLUMNS, bucket_of, doc_keys, read_manifest, remove_unlisted, store_file_name,
                    write_manifest)

log = logging.getLogger("streammine")

class EmbeddingStoreSink(Datasink):
    """Writes encoded corpus blocks into the bucketed store; commits the manifest when every block is written.

    With ``cached_store`` (a committed store of the same model), rows flagged ``cached`` were not encoded: their
    vectors are copied from that store, bucket by bucket (both stores bucket by document id), before the commit.
    """

    def __init__(self, store_url: str, manifest_extra: dict, cached_store: Optional[str] = None):
        self.store_url = store_url
        self.manifest_extra = manifest_extra
        self.cached_store = cached_store
        # names every file this sink writes: what it may delete (never a file of a concurrent writer)
        self.writer = uuid.uuid4().hex[:8]

    @property
    def min_rows_per_write(self) -> int:
        # one file per bucket per write task: bundle blocks so the store is not thousands of tiny files
        return 65536

    def write(self, blocks: Iterable, ctx) -> dict:
        columns = STORE_COLUMNS + ["cached"]
        tables = [b.select([c for c in columns if c in b.column_names]) for b in blocks if b.num_rows]
        if not tables:
            return {"rows_per_file": {}, "docs": 0, "dim": None}
        block = pa.concat_tables(tables, promote_options="default")
        cached = block.column("cached").to_numpy(zero_copy_only=False) if "cached" in block.column_names else None
        file_idx = block.column("file_idx").to_numpy()
        rows = block.column("row").to_numpy()
        rows_per_file = {int(f): int(rows[file_idx == f].max()) + 1 for f in np.unique(file_idx)}
        buckets = bucket_of(block.column("doc_id").to_pylist())
        files, files_to_fill = [], []
        for b in np.unique(buckets):
            name = store_file_name(b, self.writer)
            fs.makedirs(fs.join(self.store_url, f"bucket={int(b):02d}"))
            part = block.filter(pa.array(buckets == b))
            if cached is not None and cached[buckets == b].any():
                files_to_fill.append(name)
            elif "cached" in part.column_names:
                part = part.drop_columns(["cached"])
            with fs.open_url(fs.join(self.store_url, name), "wb") as f:
                pq.write_table(part, f)
            files.append(name)
        n_cached = int(cached.sum()) if cached is not None else 0
        return {"rows_per_file": rows_per_file, "docs": block.num_rows, "encoded": block.num_rows - n_cached,
                "cached": n_cached, "dim": block.column("vector").type.list_size, "files": files,
                "files_to_fill": files_to_fill}

    def on_write_complete(self, write_result) -> None:
        rows_per_file: dict = {}
        docs, dim, files, to_fill, encoded, n_cached = 0, None, [], [], 0, 0
        for r in write_result.write_returns:
            if not r:
                continue
            docs += r["docs"]
            encoded += r.get("encoded", r["docs"])
            n_cached += r.get("cached", 0)
            dim = dim or r["dim"]
            files += r.get("files", [])
            to_fill += r.get("files_to_fill", [])
            for f, count in r["rows_per_file"].items():
                rows_per_file[f] = max(rows_per_file.get(f, 0), count)
        if to_fill:
            files = fill_cached_vectors(self.store_url, self.cached_store, files, to_fill, self.writer)
        # The manifest names the files of the write tasks that finished: a task retried after a worker or node
        # died may have left a partial or duplicate file behind, which must never reach a shard.
        manifest = dict(self.manifest_extra, docs=docs, dim=dim, files=sorted(files), encoded=encoded,
                        cached=n_cached, cached_from=self.cached_store if n_cached else None,
                        committed_at=time.time(),
                        rows_per_file={str(k): v for k, v in sorted(rows_per_file.items())})
        if write_manifest(self.store_url, manifest):
            remove_unlisted(self.store_url, manifest["files"], self.writer)
        else:  # a concurrent run committed this store first: its store (same corpus, same model) stands
            log.info("embedding store %s was committed by another run meanwhile: using it", self.store_url)
            remove_unlisted(self.store_url, [], self.writer)


def fill_cached_vectors(store_url: str, cached_store: Optional[str], files: list, to_fill: list,
                        writer: str) -> list:
    """Replaces each file in ``to_fill`` by a copy whose cached rows carry their vectors from ``cached_store``
    (each file reads only the same bucket of the cached store). Returns the new file list.

    The files go in at most one Ray task per CPU of the cluster: a task is a worker process to start, and a store
    has a file per bucket (64), which on a small machine took longer to start than to copy."""
    import ray
    if not cached_store:
        raise StreamMineError(f"{store_url}: rows marked cached but no store to take their vectors from")
    cached_manifest = read_manifest(cached_store)
    if cached_manifest is None:
        raise StreamMineError(f"the embedding cache {cached_store} is gone (no manifest): cannot reuse its vectors")
    n_tasks = max(1, min(len(to_fill), int(ray.cluster_resources().get("CPU", 1))))
    groups = [to_fill[k::n_tasks] for k in range(n_tasks)]
    fill = ray.remote(num_cpus=0.25, max_retries=3)(_fill_files)
    # _fill_file goes as an argument (by value when it is not this module's), so a test can wrap it
    replaced = dict(pair for done in ray.get([fill.remote(_fill_file, store_url, names, cached_store,
                                                          cached_manifest["files"], writer) for names in groups])
                    for pair in done)
    return [replaced.get(f, f) for f in files]


def _fill_files(fill_one, store_url: str, names: list, cached_store: str, cached_files: list, writer: str) -> list:
    """One task's share of ``fill_cached_vectors``: ``(old name, new name)`` per file. A retry redoes them all:
    each reads its input file again, which stays until the commit."""
    return [fill_one(store_url, name, cached_store, cached_files, writer) for name in names]


def _fill_file(store_url: str, name: str, cached_store: str, cached_files: list, writer: str):
    bucket = name.split("/", 1)[0]
    with fs.open_url(fs.join(store_url, name), "rb") as f:
        table = pq.read_table(f)
    cached = table.column("cached").to_numpy(zero_copy_only=False)
    wanted = doc_keys(table.column("doc_id").to_pylist(), table.column("text_key").to_numpy())
    vectors = from_arrow(table.column("vector")).copy()
    need = {int(k): i for i, k in enumerate(wanted) if cached[i]}
    for cf in cached_files:
        if cf.split("/", 1)[0] != bucket or not need:
            continue
        with fs.open_url(fs.join(cached_store, cf), "rb") as f:
            old = pq.read_table(f, columns=["doc_id", "text_key", "vector"])
        old_keys = doc_keys(old.column("doc_id").to_pylist(), old.column("text_key").to_numpy())
        old_vectors = from_arrow(old.column("vector"))
        for j, k in enumerate(old_keys):
            i = need.pop(int(k), None)
            if i is not None:
                vectors[i] = old_vectors[j]
    if need:
        raise StreamMineError(f"{cached_store}: {len(need)} cached documents of {bucket} not found")
    table = table.drop_columns(["cached", "vector"]).append_column("vector", to_arrow(vectors))
    new_name = store_file_name(int(bucket.split("=", 1)[1]), writer)
    with fs.open_url(fs.join(store_url, new_name), "wb") as f:
        pq.write_table(table.select(STORE_COLUMNS), f)
    # ``name`` stays until the commit (the sink's remove_unlisted deletes it then): a retry of this task after its
    # worker died past this point reads it again; a half-written ``new_name`` is never listed, so never read
    return name, new_name
