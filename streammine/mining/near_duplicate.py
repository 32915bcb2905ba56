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

from .tree_sum import tree_sum

# Working-set budget (float64 products) of one chunk of candidate-positive pairs in ``near_positive``.
_PAIR_BYTES = 16 << 20


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(m, n) float64 cosines of the rows of ``a`` (m, d) and ``b`` (n, d); 0 where either row is zero."""
    a = np.asarray(a, np.float32).astype(np.float64)
    b = np.asarray(b, np.float32).astype(np.float64)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]), np.float64)
    dots = tree_sum(a[:, None, :] * b[None, :, :])  # float32 x float32 products are exact in float64
    # sqrt(|a|^2 |b|^2), not |a| |b|: sqrt(x*x) == x exactly, so a vector and its copy have cosine exactly 1
    den = np.sqrt(tree_sum(a * a)[:, None] * tree_sum(b * b)[None, :])
    return np.where(den > 0, dots / np.where(den > 0, den, 1.0), 0.0)


@dataclass
class VectorTable:
    """The exact vectors of some corpus ordinals (sorted, unique); a missing ordinal reads as the zero vector."""
    ordinals: np.ndarray  # (m,) int64, sorted, unique
    vectors: np.ndarray   # (m, d) float32

    def __post_init__(self):
        self.ordinals = np.asarray(self.ordinals, np.int64)
        self.vectors = np.asarray(self.vectors, np.float32)
        v = self.vectors.astype(np.float64)
        self.squared_norms = tree_sum(v * v)  # (m,) the same bits as ``cosines`` computes them

    @classmethod
    def fetch(cls, ordinals: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray]) -> "VectorTable":
        """One ``vectors_of`` call for the distinct valid (>= 0) ordinals."""
        o = np.asarray(ordinals, np.int64).ravel()
        uniq = np.unique(o[o >= 0])
        vecs = np.asarray(vectors_of(uniq), np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(uniq):
            raise ValueError(f"vectors_of returned shape {vecs.shape} for {len(uniq)} ordinals")
        return cls(uniq, vecs)

    def rows(self, ordinals) -> np.ndarray:
        """Table rows of ``ordinals`` (any shape), -1 where the table lacks one."""
        o = np.asarray(ordinals, np.int64)
        if len(self.ordinals) == 0:
            return np.full(o.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(self.ordinals, o), len(self.ordinals) - 1)
        return np.where(self.ordinals[pos] == o, pos, -1).astype(np.int64)

    def pair_cosines(self, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
        """(p,) float64 cosines of the table rows paired up (-1: the zero vector), in chunks; each the same bits as
        ``cosines`` gives for that pair."""
        rows_a, rows_b = np.asarray(rows_a, np.int64), np.asarray(rows_b, np.int64)
        out = np.zeros(len(rows_a), np.float64)
        ok = np.flatnonzero((rows_a >= 0) & (rows_b >= 0))
        step = max(1, _PAIR_BYTES // (8 * max(1, self.vectors.shape[1])))
        for a in range(0, len(ok), step):
            idx = ok[a:a + step]
            ra, rb = rows_a[idx], rows_b[idx]
            dots = tree_sum(self.vectors[ra].astype(np.float64) * self.vectors[rb].astype(np.float64))
            den = np.sqrt(self.squared_norms[ra] * self.squared_norms[rb])
            out[idx] = np.where(den > 0, dots / np.where(den > 0, den, 1.0), 0.0)
        return out

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
    if threshold is None or not mask.any():
        return out
    pos = [table.rows(np.asarray(p, np.int64)) for p in positive_ordinals]
    n_pos = np.fromiter((len(p) for p in pos), np.int64, len(pos))
    row, col = np.nonzero(mask & (n_pos > 0)[:, None])
    # every (candidate, positive of its query) pair, candidate by candidate
    reps = n_pos[row]
    cand_rows = np.repeat(table.rows(np.asarray(ordinals)[row, col]), reps)
    starts = np.concatenate([[0], np.cumsum(n_pos)[:-1]])
    flat_pos = np.concatenate(pos + [np.zeros(0, np.int64)])
    within = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    pos_rows = flat_pos[np.repeat(starts[row], reps) + within]
    near = table.pair_cosines(cand_rows, pos_rows) >= float(threshold)
    hits = np.bincount(np.repeat(np.arange(len(row)), reps), weights=near, minlength=len(row)) > 0
    out[row, col] = hits
    return out


def preference_order(survivors: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(B, K) int64: each row's survivor columns by ascending key (ties: lower column first), -1 padded."""
    survivors = np.asarray(survivors, bool)
    if survivors.shape[1] == 0:
        return np.zeros(survivors.shape, np.int64)
    order = np.lexsort((np.broadcast_to(keys, survivors.shape), ~survivors), axis=-1)
    return np.where(np.take_along_axis(survivors, order, axis=1), order, -1).astype(np.int64)


def _greedy(near: np.ndarray, near_before: np.ndarray, blocked: np.ndarray, n: int) -> tuple:
    """The pass over m candidates given their (m, m) near-duplicate matrix and whether each is near an earlier
    kept vector: ``(keep (m,), n_blocked, n_skipped)``."""
    m = len(near_before)
    keep = np.zeros(m, bool)
    n_blocked = n_skipped = n_kept = 0
    for j in range(m):
        if n_kept >= n:
            break
        if blocked[j]:
            n_blocked += 1
        elif near_before[j] or near[j, :j][keep[:j]].any():
            n_skipped += 1
        else:
            keep[j] = True
            n_kept += 1
    return keep, n_blocked, n_skipped


def greedy_distinct(vectors: np.ndarray, n: int, threshold: Optional[float], kept: Optional[np.ndarray] = None,
                    blocked: Optional[np.ndarray] = None) -> tuple:
    """Walk ``vectors`` (L, d) in order and keep each unless ``blocked`` (counted as such) or its cosine to an
    already kept vector (``kept`` (m, d) first, then those kept here) is >= ``threshold`` (skipped, counted),
    until ``n`` are kept. Returns ``(keep (L,) bool, n_blocked, n_skipped, kept vectors)``; what follows the n-th
    kept one is neither kept nor counted."""
    vectors = np.asarray(vectors, np.float32)
    length, d = vectors.shape
    before = np.zeros((0, d), np.float32) if kept is None else np.asarray(kept, np.float32).reshape(-1, d)
    blocked = np.zeros(length, bool) if blocked is None else np.asarray(blocked, bool)
    # the pass looks at the first m candidates; most rows need n + a few, so m starts there and doubles if needed
    m = min(length, n + 4)
    while True:
        if threshold is None:
            near_before, near = np.zeros(m, bool), np.zeros((m, m), bool)
        else:
            near_before = (cosines(vectors[:m], before) >= float(threshold)).any(axis=1)
            near = cosines(vectors[:m], vectors[:m]) >= float(threshold)
        keep_m, n_blocked, n_skipped = _greedy(near, near_before, blocked[:m], n)
        if keep_m.sum() >= n or m == length:
            break
        m = min(length, 2 * m)
    keep = np.zeros(length, bool)
    keep[:m] = keep_m
    return keep, n_blocked, n_skipped, np.concatenate([before, vectors[keep]])


def distinct_picks(order: np.ndarray, ordinals: np.ndarray, table: VectorTable, n: int,
                   threshold: Optional[float]) -> tuple:
    """The sampler's picks with the negatives guard: per row, ``greedy_distinct`` over the columns in ``order``
    (``preference_order``). Returns ``(cols (B, n) int64 sorted by column, -1 padded, n_skipped (B,) int64,
    kept vectors per row)``."""
    b = order.shape[0]
    cols_out = np.full((b, n), -1, np.int64)
    skipped = np.zeros(b, np.int64)
    kept = [None] * b
    lengths = (order >= 0).sum(axis=1)
    width = np.minimum(lengths, n + 4)  # most rows need n + a few; a row that needs more is redone wider
    pending = np.arange(b)
    while len(pending):
        # the (a, c) pairs, a < c, among each pending row's first ``width`` candidates: one batched computation
        near = {}
        if threshold is not None:
            pr, pa, pc = [], [], []
            for i in pending:
                a, c = np.triu_indices(int(width[i]), 1)
                pr.append(np.full(len(a), i))
                pa.append(a)
                pc.append(c)
            pr, pa, pc = (np.concatenate(x + [np.zeros(0, np.int64)]).astype(np.int64) for x in (pr, pa, pc))
            rows = table.rows(ordinals[pr, order[pr, pa]]), table.rows(ordinals[pr, order[pr, pc]])
            hit = table.pair_cosines(*rows) >= float(threshold)
            at = 0
            for i in pending:
                w = int(width[i])
                mat = np.zeros((w, w), bool)
                a, c = np.triu_indices(w, 1)
                mat[a, c] = mat[c, a] = hit[at:at + len(a)]
                at += len(a)
                near[i] = mat
        redo = []
        for i in pending:
            w = int(width[i])
            mat = near.get(i, np.zeros((w, w), bool))
            keep, _, skipped[i] = _greedy(mat, np.zeros(w, bool), np.zeros(w, bool), n)
            if keep.sum() < n and w < lengths[i]:
                width[i] = min(int(lengths[i]), 2 * w)
                redo.append(i)
                continue
            cols = order[i, :w][keep]
            picked = np.sort(cols)
            cols_out[i, :len(picked)] = picked
            kept[i] = table.get(ordinals[i, cols])
        pending = np.asarray(redo, np.int64)
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
