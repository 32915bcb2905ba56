"""How deep to search for each query: a function of the query alone, never of the block it is mined in.

The rank window ``[range_min, range_max)`` counts only candidates that are neither positives nor copies of a
positive's text, so a query needs ``range_max`` such candidates. Its first depth is ``range_max + its positives +
SAME_TEXT_SLACK``; while its window is not full and the corpus has more, it is searched again at twice the depth,
up to ``max(first depth, mining.max_search_depth)``; a query that still cannot fill its window is mined from what
was found (and is ``short`` if that is too little). Candidates are ranked by a total order (exact score desc,
ordinal asc), so the first d of a deeper search are exactly a search of depth d: a block may be searched at its
deepest query's depth and each query cut to its own (``truncate``), with the same result as searching it alone.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .exclude import positive_masks
from .types import CandidateBatch, PositiveBatch

# Candidates fetched beyond range_max + the query's positives, for documents that repeat a positive's text.
SAME_TEXT_SLACK = 16


def first_depths(range_max: int, n_positives, n_total: int) -> np.ndarray:
    """(B,) int64: ``range_max + n_positives + SAME_TEXT_SLACK``, at most the corpus size."""
    n_positives = np.asarray(n_positives, np.int64).reshape(-1)
    return np.minimum(int(range_max) + n_positives + SAME_TEXT_SLACK, max(int(n_total), 0)).astype(np.int64)


def depth_limits(first: np.ndarray, max_search_depth: int, n_total: int) -> np.ndarray:
    """(B,) int64: how deep a query may be searched: ``max(first, max_search_depth)``, at most the corpus size."""
    return np.minimum(np.maximum(first, int(max_search_depth)), max(int(n_total), 0)).astype(np.int64)


def truncate(cands: CandidateBatch, depths: np.ndarray) -> CandidateBatch:
    """Each row cut to its first ``depths[i]`` columns (the rest padding), ``max(depths)`` columns wide."""
    depths = np.asarray(depths, np.int64)
    width = int(depths.max()) if len(depths) else 0
    out = CandidateBatch.empty(cands.ordinals.shape[0], width)
    w = min(width, cands.ordinals.shape[1])
    keep = np.arange(w)[None, :] < depths[:, None]
    for name, pad in (("ordinals", -1), ("scores", -np.inf), ("text_keys", 0), ("doc_ids", "")):
        getattr(out, name)[:, :w] = np.where(keep, getattr(cands, name)[:, :w], pad)
    return out


def excluded_by_id(doc_ids: np.ndarray, excluded_ids: Optional[list]) -> np.ndarray:
    """(B, K) bool: the candidate's id is among its query's ``excluded_ids`` (documents the labels keep out of the
    negatives: supplied negatives, judged below the positive grade; mining/supplied.py)."""
    if not excluded_ids:
        return np.zeros(doc_ids.shape, bool)
    out = np.zeros(doc_ids.shape, bool)
    for i, (row, ex) in enumerate(zip(doc_ids, excluded_ids)):
        if ex:
            keep_out = set(ex)  # once per query, not once per candidate
            out[i] = [d in keep_out for d in row]
    return out


def window_full(cands: CandidateBatch, positives: PositiveBatch, exclude_same_text: bool,
                range_max: int, excluded_ids: Optional[list] = None) -> np.ndarray:
    """(B,) bool: the row holds at least ``range_max`` candidates that are neither positives, same-text copies nor
    ``excluded_ids`` (then its rank window, and everything mined from it, no longer depends on how deep it was
    searched)."""
    is_positive, is_same_text = positive_masks(cands, positives, exclude_same_text)
    eligible = cands.valid & ~is_positive & ~is_same_text & ~excluded_by_id(cands.doc_ids, excluded_ids)
    return eligible.sum(axis=1) >= int(range_max)


def _put_rows(pool: CandidateBatch, rows: np.ndarray, got: CandidateBatch) -> CandidateBatch:
    """``pool`` with ``rows`` replaced by ``got`` (widened with padding to fit either)."""
    width = max(pool.ordinals.shape[1], got.ordinals.shape[1])
    out = truncate(pool, np.full(pool.ordinals.shape[0], width, np.int64))
    got = truncate(got, np.full(got.ordinals.shape[0], width, np.int64))
    for name in ("ordinals", "scores", "text_keys", "doc_ids"):
        getattr(out, name)[rows] = getattr(got, name)
    return out


def search_to_depth(search: Callable[[np.ndarray, int], CandidateBatch], cands: CandidateBatch,
                    positives: PositiveBatch, depths: np.ndarray, range_max: int, exclude_same_text: bool,
                    max_search_depth: int, n_total: int, excluded_ids: Optional[list] = None) -> tuple:
    """Each query's candidates at its own depth, searched deeper where its window is not full.

    ``cands``: the block's candidates from a search as deep as ``depths.max()`` (``depths``: ``first_depths``);
    ``search(rows, k)``: the top k of the block's queries ``rows``. Returns ``(candidates, depths, n_deeper)``:
    each row cut to its final depth, the depths, and how many query searches were repeated deeper. A row's final
    depth and candidates depend only on that query's own candidates, whatever else is in the block.
    """
    depths = np.asarray(depths, np.int64).copy()
    limits = depth_limits(depths, max_search_depth, n_total)
    searched = np.full(len(depths), cands.ordinals.shape[1], np.int64)  # how deep each row's pool was searched
    pool, n_deeper = cands, 0
    while True:
        view = truncate(pool, depths)
        deeper = ~window_full(view, positives, exclude_same_text, range_max, excluded_ids) & (depths < limits)
        if not deeper.any():
            return view, depths, n_deeper
        depths = np.where(deeper, np.minimum(2 * depths, limits), depths)
        fetch = np.flatnonzero(deeper & (depths > searched))  # the others already hold that many
        if len(fetch):
            k = int(depths[fetch].max())
            pool = _put_rows(pool, fetch, search(fetch, k))
            searched[fetch] = k
            n_deeper += len(fetch)
