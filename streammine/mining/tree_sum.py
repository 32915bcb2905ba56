"""A float sum whose bits depend only on the values summed: the exact scores of the shards and the cosines of the
near-duplicate guards are computed with it, so a score is the same whatever block, batch or shard it came from."""
from __future__ import annotations

import numpy as np


def tree_sum(p: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Sum over the last axis in a fixed pairwise order that depends only on its length (``overwrite``: use ``p``
    as the scratch space).

    Only elementwise IEEE additions are used (no BLAS, no numpy reduction whose blocking or SIMD path could
    depend on the array's shape), so each output is the same bits whatever else is in the array. In place: the
    sums are memory-bound, and a new array per level costs rescoring time (README, "How it is built").
    """
    n = p.shape[-1]
    if n == 0:
        return np.zeros(p.shape[:-1], p.dtype)
    if not overwrite:
        p = p.copy()
    while n > 1:
        h = n // 2
        np.add(p[..., :h], p[..., h:2 * h], out=p[..., :h])
        if n % 2:
            p[..., 0] += p[..., 2 * h]
        n = h
    return p[..., 0].copy()
