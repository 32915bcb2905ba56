"""Names in the cache: which embedding store and which query-vector cache a run's config reads and writes.

Every name is a 16-hex digest (``digest16``) of what determines the content: the model and encoding settings
(``model_key``), plus the corpus files' stamps for a store (``store_key``), plus the query settings for the
query cache's completeness marks (``query_input_key``). Equal names mean equal content, so runs share entries.
"""
from __future__ import annotations

import hashlib
import json
from typing import Optional

from ..config import MineConfig
from ..encode.precision import planned_precision
from ..io import fs
from ..io.formats import format_of
from ..io.run_input import corpus_fingerprint
from .store import read_manifest


def digest16(ident) -> str:
    """The first 16 hex digits of the SHA-256 of ``ident`` as canonical JSON (sorted keys; ``str`` for what JSON
    cannot hold)."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_ident(cfg: MineConfig) -> dict:
    """What turns a text into a vector: the model and the encoding settings, with the precision the run's
    encoders run (``auto`` resolved, encode/precision.py): a bf16-autocast store is never a float32 run's."""
    e = cfg.encoder
    return {"kind": e.kind, "model": e.model or "packaged:all-MiniLM-L6-v2", "document_prompt": e.document_prompt,
            "max_length": e.max_length, "normalize": e.normalize,
            "precision": planned_precision(e) if e.kind == "sentence-transformers" else e.precision}


def model_key(cfg: MineConfig) -> str:
    """Identifies what turns a document into a vector (model version and encoding settings): two stores with the
    same model key hold the same vector for the same document, so one can serve as the other's cache."""
    return digest16(model_ident(cfg))


def store_key(cfg: MineConfig, fingerprint: Optional[list] = None) -> str:
    """Identifies (model, encoding settings, corpus content): a changed corpus or model gets a new store.
    ``fingerprint``: ``corpus_fingerprint(cfg)``, when the caller already has it."""
    e = cfg.encoder
    ident = dict(model_ident(cfg),
                 corpus_vectors=e.corpus_vectors, input=format_of(cfg.input).identity(),
                 fingerprint=corpus_fingerprint(cfg) if fingerprint is None else fingerprint)
    return digest16(ident)


def query_cache_key(cfg: MineConfig) -> str:
    """Names the query-vector cache of a model and query prompt."""
    return digest16(dict(model_ident(cfg), query_prompt=cfg.encoder.query_prompt))


def query_input_key(cfg: MineConfig, fingerprint: Optional[list] = None) -> str:
    """Names a run's query set: the input's file stamps (as for the store) and the query settings, so a changed
    query file, split or limit gets another name."""
    return digest16(dict(format_of(cfg.input).query_identity(),
                         files=corpus_fingerprint(cfg) if fingerprint is None else fingerprint))


def cached_store_for(store_url: str, key_of_model: str) -> Optional[str]:
    """The newest committed store beside ``store_url`` made with the same model: its vectors are reused for the
    documents it holds unchanged (so a corpus that grew only encodes the new documents)."""
    root = store_url.rstrip("/").rsplit("/", 1)[0]
    if not fs.exists(root):
        return None
    filesystem, path = fs.resolve(root)
    best, best_time = None, -1.0
    for child in filesystem.ls(path, detail=False):
        url = fs.join(root, child.rstrip("/").rsplit("/", 1)[-1])
        if url.rstrip("/") == store_url.rstrip("/"):
            continue
        m = read_manifest(url) if fs.isdir(url) else None
        if m and m.get("model_key") == key_of_model and float(m.get("committed_at", 0)) > best_time:
            best, best_time = url, float(m.get("committed_at", 0))
    return best
