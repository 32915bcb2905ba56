"""Query vectors cached per (model, query prompt, query text): re-mining with an unchanged model encodes no query.

Content-addressed files under ``<work_dir>/query_vectors/<cache key>/``: ``part-<uuid>.parquet`` with
``query_key`` (uint64 of the query text) and ``vector``. Every file is complete when it appears (a local file is
renamed into place, an object-store PUT is atomic), and two files holding the same key hold the same vector, so
writers need no coordination and no manifest. An encoder actor loads the whole cache once: 8 + 4·dim bytes per
cached query (1.5 kB at 384 dimensions), fine for query sets up to a few hundred thousand.
"""
from __future__ import annotations

import os
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..io import fs
from ..keys import keys64
from ..vectors import from_arrow, to_arrow


def query_keys(texts) -> np.ndarray:
    return keys64(texts)


def holds_every_query(url: str, keys: np.ndarray) -> bool:
    """Does the cache at ``url`` hold a vector for each of ``keys``? Reads the key columns only (8 bytes a
    query), so the driver can tell before the query pass whether it needs an encoder."""
    if len(keys) == 0 or not fs.exists(url):
        return False
    held = []
    for part in fs.list_files(url, (".parquet",)):
        try:
            with fs.open_url(part, "rb") as f:
                held.append(pq.read_table(f, columns=["query_key"]).column("query_key").to_numpy())
        except (OSError, pa.ArrowInvalid):  # unreadable: as in ``load``, its queries count as missing
            continue
    return bool(held) and bool(np.isin(np.asarray(keys, np.uint64), np.concatenate(held)).all())


class QueryVectorCache:
    def __init__(self, url: str):
        self.url = url
        self.keys = np.zeros(0, np.uint64)
        self.vectors = None

    def load(self) -> "QueryVectorCache":
        keys, vectors = [], []
        for part in fs.list_files(self.url, (".parquet",)):
            try:
                with fs.open_url(part, "rb") as f:
                    t = pq.read_table(f)
            except (OSError, pa.ArrowInvalid):  # unreadable: its queries are simply encoded again
                continue
            keys.append(t.column("query_key").to_numpy())
            vectors.append(from_arrow(t.column("vector")))
        if keys:
            k = np.concatenate(keys)
            k, first = np.unique(k, return_index=True)
            self.keys, self.vectors = k, np.concatenate(vectors)[first]
        return self

    def lookup(self, keys: np.ndarray):
        """(found mask, vectors for the found keys in order)."""
        keys = np.asarray(keys, np.uint64)
        if len(self.keys) == 0:
            return np.zeros(len(keys), bool), None
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = self.keys[pos] == keys
        return found, self.vectors[pos[found]]

    def vectors_for(self, keys: np.ndarray, texts: list, encode, timer) -> tuple:
        """Vectors for the queries ``keys`` (texts ``texts``): looked up, and those not cached encoded with
        ``encode(texts) -> vectors`` (called only when some are missing, so a lazily loaded model stays unloaded)
        and added to the cache. ``timer(n)`` is a context manager wrapped around encoding the n missing ones.
        Returns (vectors or None when there are no rows and no dimension to give them, found mask)."""
        keys = np.asarray(keys, np.uint64)
        found, cached = self.lookup(keys)
        todo = np.flatnonzero(~found)
        encoded = None
        with timer(len(todo)):
            if len(todo):
                encoded = np.asarray(encode([texts[i] for i in todo.tolist()]), np.float32)
                self.add(keys[todo], encoded)
        dim = cached.shape[1] if cached is not None and len(cached) else (
            encoded.shape[1] if encoded is not None else None)
        if dim is None:
            return None, found
        vectors = np.zeros((len(keys), dim), np.float32)
        if cached is not None and len(cached):
            vectors[found] = cached
        if encoded is not None:
            vectors[todo] = encoded
        return vectors, found

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Writes one new file with these entries (complete when visible)."""
        if len(keys) == 0:
            return
        table = pa.table({"query_key": pa.array(np.asarray(keys, np.uint64)), "vector": to_arrow(vectors)})
        name = f"part-{uuid.uuid4().hex}.parquet"
        if fs.is_local(self.url):
            path = fs.resolve(self.url)[1]
            os.makedirs(path, exist_ok=True)
            tmp = os.path.join(path, f".{name}.tmp")
            pq.write_table(table, tmp)
            os.replace(tmp, os.path.join(path, name))
        else:
            with fs.open_url(fs.join(self.url, name), "wb") as f:
                pq.write_table(table, f)
