"""Columnar batches passed between the index (which finds candidates) and the mining functions (which pick)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CandidateBatch:
    """Candidates for B queries, padded to K columns.

    Rows are ranked by exact score descending, ties by corpus ordinal ascending. Padding: ordinal -1, score -inf,
    text key 0, doc id "".
    """
    ordinals: np.ndarray   # (B, K) int64: the document's position in the corpus (its stable, global key)
    scores: np.ndarray     # (B, K) float32: exact inner product of the stored float vectors
    text_keys: np.ndarray  # (B, K) uint64: keys.text_key of the document's normalized text
    doc_ids: np.ndarray    # (B, K) object: the document ids (str)

    @property
    def valid(self) -> np.ndarray:
        return self.ordinals >= 0

    @classmethod
    def empty(cls, batch: int, k: int) -> "CandidateBatch":
        return cls(np.full((batch, k), -1, np.int64), np.full((batch, k), -np.inf, np.float32),
                   np.zeros((batch, k), np.uint64), np.full((batch, k), "", object))


@dataclass
class PositiveBatch:
    """Each query's known positives as found in the corpus (ragged: one array per query)."""
    ordinals: list   # list of (P_i,) int64
    scores: list     # list of (P_i,) float32, exact inner products, aligned with ordinals
    text_keys: list  # list of (P_i,) uint64
    doc_ids: list    # list of list[str]
