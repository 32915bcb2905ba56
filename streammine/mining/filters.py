"""Positive-aware score filters and the rank window: which candidates may be sampled as negatives.

Order of operations: exclude positives and same-text copies -> rank the rest -> keep the rank window -> drop the
window's candidates that score too close to (or above) the positive -> the survivors go to the sampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config import FilterConfig

# the filter methods (config's mining.filter.method; registries.py reads this)
FILTERS = ("none", "topk-abs", "topk-marginpos", "topk-percpos")
_RELATIVE = ("topk-marginpos", "topk-percpos")


def score_upper_bound(pos_ref: np.ndarray, f: FilterConfig) -> np.ndarray:
    """(B,) float64 bound: a candidate is kept only if its score is strictly below it.

    none: +inf. topk-abs: max_score. topk-marginpos: s+ - margin. topk-percpos: perc * s+ for s+ >= 0, and for
    s+ < 0 the mirrored s+ - |s+| (1 - perc), since perc * s+ would lie *above* a negative s+ and let through
    candidates that outscore the positive.
    """
    pos_ref = np.asarray(pos_ref, dtype=np.float64)
    if f.method == "none":
        return np.full(pos_ref.shape, np.inf)
    if f.method == "topk-abs":
        return np.full(pos_ref.shape, float(f.max_score))
    if f.method in _RELATIVE and np.isnan(pos_ref).any():
        bad = np.flatnonzero(np.isnan(pos_ref)).tolist()
        raise ValueError(f"filter {f.method!r} is relative to the positive's score, but batch rows {bad[:10]} "
                         f"have no positive score")
    if f.method == "topk-marginpos":
        return pos_ref - float(f.margin)
    if f.method == "topk-percpos":
        perc = float(f.perc)
        return np.where(pos_ref >= 0, perc * pos_ref, pos_ref - np.abs(pos_ref) * (1.0 - perc))
    raise ValueError(f"unknown filter method {f.method!r}")


def score_filter_masks(scores: np.ndarray, bound: np.ndarray,
                       min_score: Optional[float]) -> tuple[np.ndarray, np.ndarray]:
    """(below_bound, meets_min), both shaped like ``scores`` (B, K): s < bound (per row), and s >= min_score
    (all True when min_score is None). Compared in float64 so a float32 score and the bound meet exactly."""
    s = np.asarray(scores, dtype=np.float64)
    below_bound = s < np.asarray(bound, dtype=np.float64).reshape(-1, *([1] * (s.ndim - 1)))
    meets_min = np.ones(s.shape, bool) if min_score is None else s >= float(min_score)
    return below_bound, meets_min


def rank_among_negatives(eligible: np.ndarray) -> np.ndarray:
    """(B, K) int64: the 0-based rank of each eligible candidate among the eligible ones of its row (rows are in
    score order, so this is its rank as a negative), -1 where not eligible."""
    eligible = np.asarray(eligible, dtype=bool)
    return np.where(eligible, np.cumsum(eligible, axis=1, dtype=np.int64) - 1, -1)


@dataclass
class FilterOutcome:
    """Masks and per-query counts of one pass of the filters over a (B, K) candidate batch."""
    bound: np.ndarray             # (B,) float64: keep s < bound
    rank: np.ndarray              # (B, K) int64: rank among negatives, -1 for positives/same-text/padding
    in_window: np.ndarray         # (B, K) bool: range_min <= rank < range_max
    removed_filter: np.ndarray    # (B, K) bool: in the window, s >= bound (probable false negatives)
    removed_min_score: np.ndarray  # (B, K) bool: in the window, s < bound, s < min_score
    survivors: np.ndarray         # (B, K) bool: what the sampler may pick

    @property
    def n_removed_filter(self) -> np.ndarray:
        return self.removed_filter.sum(axis=1)

    @property
    def n_removed_min_score(self) -> np.ndarray:
        return self.removed_min_score.sum(axis=1)

    @property
    def n_survivors(self) -> np.ndarray:
        return self.survivors.sum(axis=1)


def filter_candidates(scores: np.ndarray, eligible: np.ndarray, pos_ref: np.ndarray, f: FilterConfig,
                      range_min: int, range_max: int) -> FilterOutcome:
    """Rank the eligible candidates (valid, not a positive, not a positive's text), keep the rank window, then
    apply the score filter to the window."""
    bound = score_upper_bound(pos_ref, f)
    rank = rank_among_negatives(eligible)
    in_window = (rank >= 0) & (rank >= range_min) & (rank < range_max)  # rank -1: not eligible
    below_bound, meets_min = score_filter_masks(scores, bound, f.min_score)
    return FilterOutcome(bound=bound, rank=rank, in_window=in_window,
                         removed_filter=in_window & ~below_bound,
                         removed_min_score=in_window & below_bound & ~meets_min,
                         survivors=in_window & below_bound & meets_min)


def cross_encoder_bound(pos_ce_ref: np.ndarray, threshold: Optional[float], margin: Optional[float],
                        relative_margin: Optional[float]) -> np.ndarray:
    """(B,) float64 bound on cross-encoder scores: a candidate stays a possible negative only if its score is
    strictly below it. The tightest of: ``threshold``; ``c+ - margin``; ``c+ - |c+| * relative_margin`` (the
    subtraction keeps the bound below a negative c+ too), c+ = ``pos_ce_ref``, the minimum cross-encoder score of
    the query's positives -- sentence-transformers' absolute_margin / relative_margin on cross-encoder scores
    (which keeps ties at the bound; here, as in every streammine filter, a tie is removed). Unset rules: +inf."""
    ref = np.asarray(pos_ce_ref, dtype=np.float64)
    bound = np.full(ref.shape, np.inf)
    if threshold is not None:
        bound = np.minimum(bound, float(threshold))
    if margin is None and relative_margin is None:
        return bound
    if np.isnan(ref).any():
        bad = np.flatnonzero(np.isnan(ref)).tolist()
        raise ValueError(f"cross-encoder margins are relative to the positive's score, but batch rows {bad[:10]} "
                         f"have no positive cross-encoder score")
    if margin is not None:
        bound = np.minimum(bound, ref - float(margin))
    if relative_margin is not None:
        bound = np.minimum(bound, ref - np.abs(ref) * float(relative_margin))
    return bound
