"""A run's embeddings written where the peer's ``cache_folder`` keeps them, so either tool can reuse them.

sentence-transformers' ``mine_hard_negatives(cache_folder=...)`` saves ``query_embeddings_<sha>.npy`` (the
deduplicated queries, in order) and ``corpus_embeddings_<sha>.npy`` (the deduplicated corpus + positives), both
L2-normalized, where ``<sha>`` hashes the model's base name, the prompt arguments and the texts. ``compat`` mines
through streammine's embedding store and query-vector cache; :func:`export_peer_cache` copies the vectors of
those texts from there into the peer's two files (an existing file is left as it is: its name fixes its content).
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional, Sequence, Tuple

import numpy as np
import pyarrow.parquet as pq

from ..encode.query_cache import QueryVectorCache, query_keys
from ..index.store import read_manifest
from ..io import fs
from ..keys import content_id
from ..vectors import from_arrow


def peer_cache_files(cache_folder: str, model_name: str, query_prompt: Optional[str],
                     query_prompt_name: Optional[str], queries: Sequence[str], corpus_prompt: Optional[str],
                     corpus_prompt_name: Optional[str], corpus: Sequence[str]) -> Tuple[str, str]:
    """(query file, corpus file): the peer's names for these texts and arguments (its hashing rule)."""
    def sha(ident) -> str:
        return hashlib.sha256(repr(ident).encode()).hexdigest()
    q = sha((model_name, query_prompt, query_prompt_name, list(queries)))
    d = sha((model_name, corpus_prompt, corpus_prompt_name, list(corpus)))
    return (os.path.join(cache_folder, f"query_embeddings_{q}.npy"),
            os.path.join(cache_folder, f"corpus_embeddings_{d}.npy"))


def store_vectors(store_url: str, doc_ids: Sequence[str]) -> np.ndarray:
    """(n, dim) float32: the committed store's vector of each id, in order (KeyError naming an id it lacks)."""
    manifest = read_manifest(store_url)
    if manifest is None:
        raise KeyError(f"no committed embedding store at {store_url}")
    found = {}
    wanted = set(doc_ids)
    for name in manifest["files"]:
        with fs.open_url(fs.join(store_url, name), "rb") as f:
            table = pq.read_table(f, columns=["doc_id", "vector"])
        vectors = from_arrow(table.column("vector"))
        for i, d in enumerate(table.column("doc_id").to_pylist()):
            if d in wanted:
                found[d] = vectors[i]
    return np.stack([found[d] for d in doc_ids]).astype(np.float32)


def cached_query_vectors(query_cache_url: str, queries: Sequence[str]) -> np.ndarray:
    """(n, dim) float32: the query-vector cache's vector of each query text, in order (KeyError if one lacks)."""
    found, vectors = QueryVectorCache(query_cache_url).load().lookup(query_keys(queries))
    if not found.all():
        raise KeyError(f"query {queries[int(np.flatnonzero(~found)[0])]!r} is not in {query_cache_url}")
    return np.asarray(vectors, np.float32)


def export_peer_cache(store_url: str, query_cache_url: Optional[str], queries: Sequence[str],
                      corpus: Sequence[str], query_file: str, corpus_file: str) -> list:
    """Writes the two files (those not there yet) from a finished run's store and query cache; returns the paths
    written as (side, path). ``corpus``: the texts in the peer's order (their store ids are their content ids)."""
    written = []
    if not os.path.exists(corpus_file):
        _save(corpus_file, store_vectors(store_url, [content_id(t) for t in corpus]))
        written.append(("corpus", corpus_file))
    if query_cache_url and not os.path.exists(query_file):
        _save(query_file, cached_query_vectors(query_cache_url, queries))
        written.append(("query", query_file))
    return written


def _save(path: str, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)
