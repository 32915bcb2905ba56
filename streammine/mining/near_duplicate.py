"""Near-duplicate guards on the exact corpus vectors the shards hold (no extra model).

Two guards, each off unless its threshold is set (``mining.near_duplicate``):

* positive: a candidate in the rank window whose cosine to any of the query's positives is >= ``positive`` is
  removed as a probable false negative, before the score filter (a candidate both near a positive and above the
  filter bound is counted here, not by the filter). It keeps its rank: the window, and so the search depth, are
  what they are without the guard. Random corpus documents are guarded the same way (counted when reached, below).
* negatives: the negatives are chosen by a greedy pass over the candidates in the sampler's order of preference,
  keeping a candidate unless its cosine to an already kept one is >= ``negatives`` (then it is skipped, counted, and
  the pass goes on to the next), until ``n`` are kept or the candidates run out (the query is then ``short``).
  Of each near-duplicate pair the earlier in that order is kept. The order of preference: ``top``, rank order;
  ``random``, ascending uniform key u; ``simans``, descending perturbed log-weight (the Gumbel-top-k draw order);
  ties by column (rank). Random corpus documents follow the hard negatives, in draw order.

Without near-duplicates the picks are exactly the sampler's (the greedy pass keeps its first n). Cosine is the
inner product of the float32 vectors over the product of their norms, summed in a fixed order (exact float64
products, pairwise sums): a pure function of the two vectors, whatever block, shard count or batch they arrive in.
A zero vector (or one the shards do not hold) has cosine 0 to everything, so it is never a near-duplicate
(thresholds are in (0, 1]).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .samplers import gumbel, simans_log_weights


def _fixed_sum(p: np.ndarray) -> np.ndarray:
    """Sum over the last axis in a pairwise order fixed by its length alone (elementwise adds only), so each
    result is the same bits whatever else the array holds."""
    n = p.shape[-1]
    if n == 0:
        return np.zeros(p.shape[:-1], p.dtype)
    p = p.copy()
    while n > 1:
        h = n // 2
        np.add(p[..., :h], p[..., h:2 * h], out=p[..., :h])
        if n % 2:
            p[..., 0] += p[..., 2 * h]
        n = h
    return p[..., 0].copy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(m, n) float64 cosines of the rows of ``a`` (m, d) and ``b`` (n, d); 0 where either row is zero."""
    a = np.asarray(a, np.float32).astype(np.float64)
    b = np.asarray(b, np.float32).astype(np.float64)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]), np.float64)
    dots = _fixed_sum(a[:, None, :] * b[None, :, :])  # float32 x float32 products are exact in float64
    den = np.sqrt(_fixed_sum(a * a))[:, None] * np.sqrt(_fixed_sum(b * b))[None, :]
    return np.where(den > 0, dots / np.where(den > 0, den, 1.0), 0.0)


@dataclass
class VectorTable:
    """The exact vectors of some corpus ordinals (sorted, unique); a missing ordinal reads as the zero vector."""
    ordinals: np.ndarray  # (m,) int64, sorted, unique
    vectors: np.ndarray   # (m, d) float32

    @classmethod
    def fetch(cls, ordinals: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray]) -> "VectorTable":
        """One ``vectors_of`` call for the distinct valid (>= 0) ordinals."""
        o = np.asarray(ordinals, np.int64).ravel()
        uniq = np.unique(o[o >= 0])
        vecs = np.asarray(vectors_of(uniq), np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(uniq):
            raise ValueError(f"vectors_of returned shape {vecs.shape} for {len(uniq)} ordinals")
        return cls(uniq, vecs)

    def get(self, ordinals) -> np.ndarray:
        """(len(ordinals), d) float32; zero rows where the table lacks an ordinal."""
        o = np.asarray(ordinals, np.int64).ravel()
        out = np.zeros((len(o), self.vectors.shape[1]), np.float32)
        if len(self.ordinals) == 0 or len(o) == 0:
            return out
        pos = np.minimum(np.searchsorted(self.ordinals, o), len(self.ordinals) - 1)
        hit = self.ordinals[pos] == o
        out[hit] = self.vectors[pos[hit]]
        return out


def near_positive(ordinals: np.ndarray, mask: np.ndarray, positive_ordinals: list, table: VectorTable,
                  threshold: Optional[float]) -> np.ndarray:
    """(B, K) bool: where ``mask``, the candidate's cosine to at least one of its query's positives is
    >= ``threshold`` (all False when the threshold is None)."""
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, bool)
    if threshold is None:
        return out
    for i in range(mask.shape[0]):
        cols = np.flatnonzero(mask[i])
        pos = np.asarray(positive_ordinals[i], np.int64)
        if len(cols) == 0 or len(pos) == 0:
            continue
        c = cosines(table.get(ordinals[i, cols]), table.get(pos))
        out[i, cols] = (c >= float(threshold)).any(axis=1)
    return out


def preference_keys(method: str, n_cols: int, scores: np.ndarray, pos_ref: np.ndarray, u: Optional[np.ndarray],
                    simans_a: float = 0.5, simans_b: float = 0.0) -> np.ndarray:
    """(B, K) keys, smaller preferred, that order a row's candidates as its sampler prefers them (the keys
    ``samplers.pick_smallest`` takes the n smallest of)."""
    if method == "top":
        return np.broadcast_to(np.arange(n_cols, dtype=np.float64)[None, :], np.shape(scores))
    if method == "random":
        return np.asarray(u, np.float64)
    if method == "simans":
        return -(simans_log_weights(scores, pos_ref, simans_a, simans_b) + gumbel(u))
    raise ValueError(f"unknown sampler method {method!r}")


def preference_order(survivors: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(B, K) int64: each row's survivor columns by ascending key (ties: lower column first), -1 padded."""
    survivors = np.asarray(survivors, bool)
    if survivors.shape[1] == 0:
        return np.zeros(survivors.shape, np.int64)
    order = np.lexsort((np.broadcast_to(keys, survivors.shape), ~survivors), axis=-1)
    return np.where(np.take_along_axis(survivors, order, axis=1), order, -1).astype(np.int64)


def greedy_distinct(vectors: np.ndarray, n: int, threshold: Optional[float], kept: Optional[np.ndarray] = None,
                    blocked: Optional[np.ndarray] = None) -> tuple:
    """Walk ``vectors`` (L, d) in order and keep each unless ``blocked`` (counted as such) or its cosine to an
    already kept vector (``kept`` (m, d) first, then those kept here) is >= ``threshold`` (skipped, counted),
    until ``n`` are kept. Returns ``(keep (L,) bool, n_blocked, n_skipped, kept vectors)``; what follows the n-th
    kept one is neither kept nor counted."""
    vectors = np.asarray(vectors, np.float32)
    length, d = vectors.shape
    keep = np.zeros(length, bool)
    kept_list = [] if kept is None else list(np.asarray(kept, np.float32).reshape(-1, d))
    n_blocked = n_skipped = n_kept = 0
    for j in range(length):
        if n_kept >= n:
            break
        if blocked is not None and blocked[j]:
            n_blocked += 1
            continue
        if threshold is not None and kept_list and \
                (cosines(vectors[j:j + 1], np.stack(kept_list)) >= float(threshold)).any():
            n_skipped += 1
            continue
        keep[j] = True
        kept_list.append(vectors[j])
        n_kept += 1
    kept_out = np.stack(kept_list) if kept_list else np.zeros((0, d), np.float32)
    return keep, n_blocked, n_skipped, kept_out


def distinct_picks(order: np.ndarray, ordinals: np.ndarray, table: VectorTable, n: int,
                   threshold: Optional[float]) -> tuple:
    """The sampler's picks with the negatives guard: per row, ``greedy_distinct`` over the columns in ``order``
    (``preference_order``). Returns ``(cols (B, n) int64 sorted by column, -1 padded, n_skipped (B,) int64,
    kept vectors per row)``."""
    b = order.shape[0]
    cols_out = np.full((b, n), -1, np.int64)
    skipped = np.zeros(b, np.int64)
    kept = []
    for i in range(b):
        cols = order[i][order[i] >= 0]
        keep, _, skipped[i], kv = greedy_distinct(table.get(ordinals[i, cols]), n, threshold)
        picked = np.sort(cols[keep])
        cols_out[i, :len(picked)] = picked
        kept.append(kv)
    return cols_out, skipped, kept


def distinct_fill(usable: np.ndarray, ordinals: np.ndarray, need: np.ndarray, table: VectorTable,
                  near_pos: np.ndarray, threshold: Optional[float], kept: list) -> tuple:
    """(B, R) bool: the random documents that fill each row's ``need`` slots, in draw order, passing over those
    ``near_pos`` (near a positive) and those near a kept negative (``kept``: the row's kept hard negatives' vectors,
    then the random ones as they are kept). Returns ``(fill, n_near_positive (B,), n_skipped (B,))``, counting only
    the documents reached before the fill was complete."""
    usable = np.asarray(usable, bool)
    b = usable.shape[0]
    fill = np.zeros(usable.shape, bool)
    n_pos = np.zeros(b, np.int64)
    n_skip = np.zeros(b, np.int64)
    for i in range(b):
        cols = np.flatnonzero(usable[i])
        keep, n_pos[i], n_skip[i], _ = greedy_distinct(table.get(ordinals[i, cols]), int(need[i]), threshold,
                                                       kept[i], near_pos[i, cols])
        fill[i, cols[keep]] = True
    return fill, n_pos, n_skip
