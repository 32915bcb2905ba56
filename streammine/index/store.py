"""The embedding store: corpus vectors on object storage, partitioned into 64 hash buckets of the document id.

Layout under ``<work_dir>/embeddings/<store_key>/``::

    bucket=07/part-<uuid>.parquet   doc_id, text_key, file_idx, row, location, vector
    _manifest.json                  rows per corpus file, dimension, model; written last (the commit marker)

A shard owns the buckets ``b`` with ``b % n_shards == shard_id``, so the shard count can change without
re-encoding, and a restarted shard rebuilds from here. A store whose manifest matches the corpus fingerprint and
model is reused: the corpus is not encoded twice.

This module is the read side (shard actors import it); the Ray Data sink that writes a store is in
``store_sink.py``, so a shard actor does not import Ray Data.
"""
from __future__ import annotations

import re
import uuid
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..io import fs
from ..keys import keys64, splitmix64

NUM_BUCKETS = 64
READ_BATCH_ROWS = 1 << 16
STORE_COLUMNS = ["doc_id", "text_key", "file_idx", "row", "location", "vector"]


def bucket_of(doc_ids) -> np.ndarray:
    return (keys64(doc_ids) % np.uint64(NUM_BUCKETS)).astype(np.int64)


def buckets_of_shard(shard_id: int, n_shards: int) -> list:
    return [b for b in range(NUM_BUCKETS) if b % n_shards == shard_id]


def doc_keys(doc_ids, text_keys) -> np.ndarray:
    """One 64-bit key per (document id, document text): what the embedding cache is keyed by, per model."""
    return doc_keys_of_id_keys(keys64(doc_ids), text_keys)


def doc_keys_of_id_keys(id_keys, text_keys) -> np.ndarray:
    """``doc_keys`` from the ids' 64-bit keys (``keys64``), for a reader that has those already."""
    return splitmix64(np.asarray(id_keys, dtype=np.uint64) ^ np.asarray(text_keys, dtype=np.uint64))


def in_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """For each of ``keys``: is it in ``sorted_keys`` (sorted, distinct, e.g. ``stored_doc_keys``)?"""
    keys = np.asarray(keys, dtype=np.uint64)
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def stored_doc_keys(store_url: str) -> np.ndarray:
    """The sorted doc keys of a committed store (8 bytes per document)."""
    manifest = read_manifest(store_url)
    if manifest is None:
        return np.zeros(0, np.uint64)
    chunks = []
    for f in manifest["files"]:
        with fs.open_url(fs.join(store_url, f), "rb") as fh:
            t = pq.read_table(fh, columns=["doc_id", "text_key"])
        chunks.append(doc_keys(t.column("doc_id").to_pylist(), t.column("text_key").to_numpy()))
    return np.unique(np.concatenate(chunks)) if chunks else np.zeros(0, np.uint64)


def write_manifest(store_url: str, manifest: dict) -> bool:
    """Commits a store: creates its manifest, whole, only if it has none. False: another writer (a concurrent
    run with the same store key, hence the same corpus and model) committed first, and its store stands."""
    fs.makedirs(store_url)
    return fs.write_json_create(fs.join(store_url, "_manifest.json"), manifest)


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


def store_file_name(bucket: int, writer: str) -> str:
    """``bucket=07/part-<writer>-<random>.parquet``: ``writer`` is the token of the sink that wrote it."""
    return f"bucket={int(bucket):02d}/part-{writer}-{uuid.uuid4().hex}.parquet"


def remove_unlisted(store_url: str, files: list, writer: str) -> int:
    """Deletes the part files ``writer`` wrote that ``files`` does not name (left by retried writes); returns how
    many. Files of other writers (a concurrent run writing the same store) are never touched. Best effort."""
    listed = {fs.join(store_url, f) for f in files}
    return fs.remove_quietly(u for u in fs.list_files(store_url, (".parquet",))
                             if u not in listed and u.rsplit("/", 1)[-1].startswith(f"part-{writer}-"))


def remove_store(store_url: str) -> int:
    """Deletes a committed store: its manifest first (so no reader takes it for whole any more), then the files
    the manifest names. A file it does not name (not this store's) stays. Returns how many files went."""
    manifest = read_manifest(store_url)
    if manifest is None:
        return 0
    names = [f for f in manifest.get("files", []) if isinstance(f, str) and ".." not in f.split("/")
             and re.fullmatch(r"bucket=\d{2}/part-[\w-]+\.parquet", f)]
    removed = fs.remove_quietly([fs.join(store_url, "_manifest.json")])
    return removed + fs.remove_quietly(fs.join(store_url, f) for f in names)


def read_buckets(store_url: str, buckets: list, manifest: Optional[dict] = None) -> Iterable[pa.Table]:
    """Yields the store's tables for the given buckets (part files named by the manifest, in batches of at most
    ``READ_BATCH_ROWS`` rows, so a reader holds no more than that at once)."""
    wanted = {f"bucket={b:02d}" for b in buckets}
    if manifest is not None and "files" in manifest:
        urls = [fs.join(store_url, f) for f in manifest["files"] if f.split("/", 1)[0] in wanted]
    else:  # a store written before manifests listed their files
        urls = [u for b in sorted(wanted) if fs.exists(fs.join(store_url, b))
                for u in fs.list_files(fs.join(store_url, b), (".parquet",))]
    for url in urls:
        with fs.open_url(url, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=READ_BATCH_ROWS):
                yield pa.Table.from_batches([batch])
