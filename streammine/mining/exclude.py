"""Which candidates are the query's own positives (by corpus ordinal) or repeat a positive's text."""
from __future__ import annotations

import numpy as np

from .types import CandidateBatch, PositiveBatch


def row_isin(values: np.ndarray, row_sets: list) -> np.ndarray:
    """(B, K) bool: ``values[i, j] in row_sets[i]``, for every row at once.

    Values are replaced by dense ids (one 1-D ``np.unique``), so that (row, id) packs into one int64 and a single
    1-D ``np.isin`` answers all rows; memory stays linear in B*K + sum(|row_sets|), which a (B, K, P) broadcast
    would not be for queries with many positives.
    """
    values = np.asarray(values)
    b, k = values.shape
    if len(row_sets) != b:
        raise ValueError(f"need one set per row: {b} rows, {len(row_sets)} sets")
    sizes = np.fromiter((len(s) for s in row_sets), dtype=np.int64, count=b)
    if values.size == 0 or sizes.sum() == 0:
        return np.zeros((b, k), dtype=bool)
    # uint64 keys are compared by their bits (a reinterpreting view keeps equality); ordinals are int64 already
    as_int = _bits_as_int64 if values.dtype == np.uint64 else (lambda a: np.asarray(a).astype(np.int64, copy=False))
    set_values = np.concatenate([as_int(s).ravel() for s in row_sets])
    _, dense = np.unique(np.concatenate([as_int(values).ravel(), set_values]), return_inverse=True)
    dense = dense.ravel().astype(np.int64)
    n_distinct = int(dense.max()) + 1  # <= B*K + sum(sizes), so row * n_distinct + id stays far inside int64
    rows = np.concatenate([np.repeat(np.arange(b, dtype=np.int64), k), np.repeat(np.arange(b, dtype=np.int64), sizes)])
    packed = rows * n_distinct + dense
    return np.isin(packed[:b * k], packed[b * k:]).reshape(b, k)


def _bits_as_int64(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a).astype(np.uint64, copy=False)).view(np.int64)


def positive_masks(cands: CandidateBatch, positives: PositiveBatch,
                   exclude_same_text: bool) -> tuple[np.ndarray, np.ndarray]:
    """(is_positive, is_same_text), both (B, K) bool.

    is_positive: the candidate's ordinal is one of the query's positives. is_same_text: a different document
    (not a positive, not padding) whose normalized text equals a positive's -- training on it as a negative would
    contradict the positive, so it is excluded like one (only when ``exclude_same_text``).
    """
    valid = cands.valid
    is_positive = valid & row_isin(cands.ordinals, [np.asarray(p, np.int64) for p in positives.ordinals])
    if not exclude_same_text:
        return is_positive, np.zeros_like(is_positive)
    same_text = row_isin(np.asarray(cands.text_keys, np.uint64), [np.asarray(t, np.uint64) for t in positives.text_keys])
    return is_positive, valid & ~is_positive & same_text


def positive_reference(positives: PositiveBatch) -> np.ndarray:
    """(B,) float64 s+: the minimum of the query's positive scores (the weakest positive is the one a false
    negative is most likely to outscore), NaN for a query without positives."""
    return np.array([float(np.min(np.asarray(s, np.float64))) if len(s) else np.nan for s in positives.scores],
                    dtype=np.float64)
