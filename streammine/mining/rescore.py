"""Cross-encoder denoising (RocketQA) as masks: which survivors to score, and which of them stay.

The scores themselves come from a model (``streammine.encode.cross_encoder``); these functions only decide, so
the rule is tested without one.
"""
from __future__ import annotations

import numpy as np


def rescore_pool(survivors: np.ndarray, pool: int) -> np.ndarray:
    """(B, K) bool: the first ``pool`` survivors of each row in rank order (all of them when ``pool`` is 0)."""
    survivors = np.asarray(survivors, dtype=bool)
    if pool <= 0:
        return survivors.copy()
    return survivors & (np.cumsum(survivors, axis=1) <= pool)


def cross_encoder_keep(ce_scores: np.ndarray, pool_mask: np.ndarray, threshold) -> np.ndarray:
    """(B, K) bool: pooled candidates the cross-encoder scored strictly below ``threshold`` (a number, or a (B,)
    bound per query: ``filters.cross_encoder_bound``).

    A pooled candidate without a finite score is an error, not a silent keep or drop: the scorer failed."""
    pool_mask = np.asarray(pool_mask, dtype=bool)
    ce = np.asarray(ce_scores, dtype=np.float64)
    if ce.shape != pool_mask.shape:
        raise ValueError(f"cross-encoder scores have shape {ce.shape}, the candidates {pool_mask.shape}")
    bad = pool_mask & ~np.isfinite(ce)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1)).tolist()
        raise ValueError(f"the cross-encoder gave no finite score for pooled candidates of batch rows {rows[:10]}")
    bound = np.asarray(threshold, dtype=np.float64).reshape(-1, 1) if np.ndim(threshold) else float(threshold)
    return pool_mask & (np.where(pool_mask, ce, np.inf) < bound)


def padded_ids(id_lists: list) -> tuple:
    """Ragged per-query id lists -> ((B, P) object array padded with "", (B, P) bool mask of the real ids)."""
    width = max((len(x) for x in id_lists), default=0)
    ids = np.full((len(id_lists), width), "", object)
    mask = np.zeros((len(id_lists), width), bool)
    for i, row in enumerate(id_lists):
        ids[i, :len(row)] = list(row)
        mask[i, :len(row)] = True
    return ids, mask


def positive_ce_reference(pos_ce: np.ndarray, pos_mask: np.ndarray) -> np.ndarray:
    """(B,) float64 c+: the minimum cross-encoder score over each query's positives (the weakest positive decides
    what is too close, as for the bi-encoder's s+); NaN for a query without one."""
    pos_mask = np.asarray(pos_mask, dtype=bool)
    ce = np.where(pos_mask, np.asarray(pos_ce, dtype=np.float64), np.inf)
    ref = ce.min(axis=1) if ce.shape[1] else np.full(ce.shape[0], np.inf)
    return np.where(pos_mask.any(axis=1), ref, np.nan)
