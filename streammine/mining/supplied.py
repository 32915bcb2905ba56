"""Supplied negatives and judged documents (``mining.supplied_negatives``, ``mining.min_positive_grade``).

A query's known negatives come with the input (BEIR qrels lines with a score <= 0; a pairs table's negatives
column; FlagEmbedding's ``neg``); its judged documents below the minimum positive grade (0 < grade < min) are
neither positives nor negatives. The stage looks both up in the index by id (exact bi-encoder scores, corpus
ordinals) and hands them to :func:`~streammine.mining.batch.mine_batch` as a :class:`Supplied`.

Modes: ``include`` (default): the supplied negatives come first among the query's negatives, in file order, at
most ``num_negatives`` of them, counted toward ``num_negatives``, marked with rank ``SUPPLIED_RANK``; the mined ones
fill the rest and never repeat them. ``exclude``: they are never negatives. ``ignore``: they are ordinary corpus
documents (mined or not as any other). Judged documents below grade are excluded from the negatives in every mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

SUPPLIED_RANK = -2  # negative_ranks of a supplied negative (-1: a random corpus negative; >= 0: a mined rank)


@dataclass
class Supplied:
    """Per query (ragged): the supplied negatives found in the corpus, in file order, and the ordinals the miner
    must never pick."""
    mode: str               # include | exclude | ignore
    ordinals: list          # list of (S_i,) int64
    scores: list            # list of (S_i,) float32: exact inner products
    doc_ids: list           # list of list[str]
    below_ordinals: list    # list of (J_i,) int64: judged below min_positive_grade

    def excluded(self) -> List[np.ndarray]:
        """The ordinals the miner never picks: below-grade documents, and the supplied negatives unless ignored
        (include: they are placed first; exclude: never)."""
        out = []
        for sup, below in zip(self.ordinals, self.below_ordinals):
            parts = [np.asarray(below, np.int64)]
            if self.mode != "ignore":
                parts.append(np.asarray(sup, np.int64))
            out.append(np.concatenate(parts))
        return out


def padded_ordinals(rows: List[np.ndarray]) -> np.ndarray:
    """(B, W) int64, -1 padded."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def first_supplied(supplied: Supplied, n: int) -> tuple:
    """include: per query the positions of the supplied negatives it keeps: the first occurrence of each ordinal,
    in file order, at most ``n``. Returns (list of index arrays, (B,) int64 counts); empty for other modes."""
    picks = []
    for ords in supplied.ordinals:
        if supplied.mode != "include":
            picks.append(np.zeros(0, np.int64))
            continue
        _, first = np.unique(np.asarray(ords, np.int64), return_index=True)
        picks.append(np.sort(first)[:n].astype(np.int64))
    return picks, np.fromiter((len(p) for p in picks), np.int64, count=len(picks))


def merge_supplied(supplied: Optional[Supplied], n: int, ordinals: list, scores: list, doc_ids: list,
                   ranks: list, ce: Optional[list] = None, supplied_ce: Optional[list] = None) -> tuple:
    """The negatives with the supplied ones first (``include``): per query, the kept supplied negatives
    (:func:`first_supplied`), then the mined ones in their order, up to ``n`` in all (so a query with ``s`` supplied
    negatives keeps its first ``n - s`` mined ones: hard by rank, then random). Other modes: unchanged.

    Returns (ordinals, scores, doc_ids, ranks, ce, (B,) counts of supplied negatives used)."""
    b = len(ordinals)
    if supplied is None or supplied.mode != "include":
        return ordinals, scores, doc_ids, ranks, ce, np.zeros(b, np.int64)
    picks, counts = first_supplied(supplied, n)
    o2, s2, d2, r2, c2 = [], [], [], [], [] if ce is not None else None
    for i in range(b):
        p = picks[i]
        room = max(n - len(p), 0)
        o2.append(np.concatenate([np.asarray(supplied.ordinals[i], np.int64)[p],
                                  np.asarray(ordinals[i], np.int64)[:room]]))
        s2.append(np.concatenate([np.asarray(supplied.scores[i], np.float32)[p],
                                  np.asarray(scores[i], np.float32)[:room]]))
        d2.append([str(supplied.doc_ids[i][j]) for j in p] + list(doc_ids[i])[:room])
        r2.append(np.concatenate([np.full(len(p), SUPPLIED_RANK, np.int32), np.asarray(ranks[i], np.int32)[:room]]))
        if ce is not None:
            head = np.asarray(supplied_ce[i], np.float32)[p] if supplied_ce is not None \
                else np.full(len(p), np.nan, np.float32)
            c2.append(np.concatenate([head, np.asarray(ce[i], np.float32)[:room]]))
    return o2, s2, d2, r2, c2, counts
