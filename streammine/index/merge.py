"""Combining per-shard answers into one, and assigning documents to shards.

Every shard ranks its candidates by (exact score desc, ordinal asc) with scores that are a pure function of the
(query, document) vector pair (see ``shard.exact_scores``), so the global top k is the top k of the union of the
shards' top k lists, and a merge gives the same result for any number of shards.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..mining.types import CandidateBatch, PositiveBatch
from .answers import MergedAnswer, ShardAnswer

# The embedding store partitions documents into NUM_BUCKETS hash buckets of the document id (store.NUM_BUCKETS,
# repeated here to keep this module free of the store's Ray/pyarrow imports; a test checks they agree).
NUM_BUCKETS = 64
_INT64_MAX = np.iinfo(np.int64).max


def assign_shard(doc_keys: np.ndarray, n_shards: int) -> np.ndarray:
    """The shard of each document: ``bucket = doc_key % 64`` and ``shard = bucket % n_shards``.

    ``doc_keys`` are ``keys.keys64(doc_ids)``. The embedding store writes each document under its bucket, and a
    shard reads the buckets ``b`` with ``b % n_shards == shard_id`` (``store.buckets_of_shard``), so the shard
    count can change between runs without re-encoding the corpus (shard counts that divide 64 balance best).
    A document id always lands on the same shard, so duplicate ids are always seen by one shard.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    buckets = np.asarray(doc_keys, dtype=np.uint64) % np.uint64(NUM_BUCKETS)
    return (buckets % np.uint64(n_shards)).astype(np.int64)


# ---- ranking -------------------------------------------------------------------------------------------------

def rank_order(ordinals: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per row, the column order by (score desc, ordinal asc), padding (ordinal < 0) last. (B, K) int64."""
    ordinals = np.asarray(ordinals)
    if ordinals.shape[-1] == 0:
        return np.zeros(ordinals.shape, np.int64)
    valid = ordinals >= 0
    neg = np.where(valid, -np.asarray(scores, np.float32), np.float32(np.inf))
    ord_key = np.where(valid, ordinals, _INT64_MAX)
    return np.lexsort((ord_key, neg), axis=-1)


def take_columns(batch: CandidateBatch, order: np.ndarray, k: int) -> CandidateBatch:
    """``batch``'s columns in ``order`` (B, K'), the first k of them, padded to exactly k columns."""
    order = order[:, :k]
    out = CandidateBatch(np.take_along_axis(batch.ordinals, order, 1),
                         np.take_along_axis(batch.scores, order, 1),
                         np.take_along_axis(batch.text_keys, order, 1),
                         np.take_along_axis(batch.doc_ids, order, 1))
    return pad_columns(out, k)


def pad_columns(batch: CandidateBatch, k: int) -> CandidateBatch:
    have = batch.ordinals.shape[1]
    if have >= k:
        return batch
    pad = CandidateBatch.empty(batch.ordinals.shape[0], k - have)
    return concat_columns([batch, pad])


def concat_columns(parts: list) -> CandidateBatch:
    return CandidateBatch(np.concatenate([p.ordinals for p in parts], 1),
                          np.concatenate([p.scores for p in parts], 1),
                          np.concatenate([p.text_keys for p in parts], 1),
                          np.concatenate([p.doc_ids for p in parts], 1))


# ---- pruned rescoring ----------------------------------------------------------------------------------------

def rescore_floor(faiss_scores: list, bounds: list, queries: np.ndarray, k: int) -> Optional[np.ndarray]:
    """(B,) float32: per query, the faiss score a candidate needs to be rescored (``IndexShard.propose``), or
    None when some shard's index gives no error bound (then every candidate is rescored).

    ``faiss_scores``: each shard's (B, K_s) faiss scores (-inf: none); ``bounds``: each shard's error bound per
    unit of query norm. floor = tau - 2·e·|q|, tau the k-th largest faiss score over all shards (-inf when
    fewer than k were found: nothing can be pruned).
    """
    if not faiss_scores or any(b is None for b in bounds):
        return None
    scores = np.concatenate([np.asarray(f, np.float32) for f in faiss_scores], axis=1)
    b = scores.shape[0]
    if scores.shape[1] < k or k <= 0:
        return np.full(b, -np.inf, np.float32)
    tau = -np.partition(-scores, k - 1, axis=1)[:, k - 1].astype(np.float64)
    q_norms = np.linalg.norm(np.asarray(queries, np.float64), axis=1)
    floor = tau - 2.0 * max(bounds) * q_norms
    # rounded down to float32, so that the comparison with float32 faiss scores never excludes a needed one
    floor32 = floor.astype(np.float32)
    floor32 = np.where(floor32.astype(np.float64) > floor, np.nextafter(floor32, np.float32(-np.inf)), floor32)
    return np.where(np.isfinite(floor32), floor32, np.float32(-np.inf)).astype(np.float32)


# ---- merging -------------------------------------------------------------------------------------------------

def merge_topk(parts: list, k: int) -> CandidateBatch:
    """The global top k of per-shard candidate batches (same B, any K each), by (score desc, ordinal asc)."""
    if not parts:
        raise ValueError("merge_topk needs at least one part")
    both = concat_columns(list(parts))
    return take_columns(both, rank_order(both.ordinals, both.scores), k)


def merge_positives(parts: list) -> PositiveBatch:
    """Per query, the positives found on all shards, sorted by ordinal."""
    batch = len(parts[0].ordinals)
    out = PositiveBatch([], [], [], [])
    for i in range(batch):
        ords = np.concatenate([np.asarray(p.ordinals[i], np.int64) for p in parts])
        order = np.argsort(ords, kind="stable")
        out.ordinals.append(ords[order])
        out.scores.append(np.concatenate([np.asarray(p.scores[i], np.float32) for p in parts])[order])
        out.text_keys.append(np.concatenate([np.asarray(p.text_keys[i], np.uint64) for p in parts])[order])
        ids = [d for p in parts for d in p.doc_ids[i]]
        out.doc_ids.append([ids[j] for j in order])
    return out


def merge_columns(parts: list) -> CandidateBatch:
    """Column-aligned batches where each (query, column) is filled (ordinal >= 0) on at most one part."""
    ords = np.stack([p.ordinals for p in parts])
    filled = ords >= 0
    if (filled.sum(0) > 1).any():
        raise ValueError("a document was found on more than one shard (do the shards overlap?)")
    src = np.argmax(filled, axis=0)[None]  # the part holding it; part 0 (its padding) where none does

    def pick(name):
        return np.take_along_axis(np.stack([getattr(p, name) for p in parts]), src, 0)[0]
    return CandidateBatch(pick("ordinals"), pick("scores"), pick("text_keys"), pick("doc_ids"))


def merge_answers(answers: List[ShardAnswer], k: int) -> MergedAnswer:
    """Combine the shards' answers to one query batch.

    Returns a ``MergedAnswer`` ``(candidates, positives, random, missing)``: the global top-k ``CandidateBatch``; a ``PositiveBatch``
    of the positives found (per query, sorted by ordinal); the random documents as a (B, R) ``CandidateBatch``
    aligned with the requested ordinals (padding where no shard holds one), or None when none were requested; and
    per query the requested positive ids that no shard holds (request order, each once).
    """
    if not answers:
        raise ValueError("merge_answers needs at least one shard answer")
    candidates = merge_topk([a.candidates for a in answers], k)
    positives = merge_positives([a.positives for a in answers])
    random: Optional[CandidateBatch] = None
    if answers[0].random is not None:
        random = merge_columns([a.random for a in answers])
    missing = []
    for i, requested in enumerate(answers[0].positive_ids):
        found = set()
        for a in answers:
            found.update(a.found_positive_ids[i])
        missing.append(list(dict.fromkeys(p for p in (requested or []) if p not in found)))
    return MergedAnswer(candidates, positives, random, missing)
