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


def cross_encoder_keep(ce_scores: np.ndarray, pool_mask: np.ndarray, threshold: float) -> np.ndarray:
    """(B, K) bool: pooled candidates the cross-encoder scored strictly below ``threshold``.

    A pooled candidate without a finite score is an error, not a silent keep or drop: the scorer failed."""
    pool_mask = np.asarray(pool_mask, dtype=bool)
    ce = np.asarray(ce_scores, dtype=np.float64)
    if ce.shape != pool_mask.shape:
        raise ValueError(f"cross-encoder scores have shape {ce.shape}, the candidates {pool_mask.shape}")
    bad = pool_mask & ~np.isfinite(ce)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1)).tolist()
        raise ValueError(f"the cross-encoder gave no finite score for pooled candidates of batch rows {rows[:10]}")
    return pool_mask & (np.where(pool_mask, ce, np.inf) < float(threshold))
