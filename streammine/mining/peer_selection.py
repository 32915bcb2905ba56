"""The peer's selection, one query at a time: pure functions over one query's candidates (numpy, no Ray).

``streammine.compat`` runs one streammine pipeline that returns, per query, its positives and every
non-positive candidate of a window wide enough for both candidate-window rules; these functions then apply the
exclusions, the score filters, the rank window and the sampler exactly as ``mine_hard_negatives`` promises.
"""
from __future__ import annotations

import random as _random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..keys import key64, uniform_keys
from .samplers import sample_random, sample_top

WINDOWS = ("streammine", "sentence-transformers")
FILTER_ORDER = ("absolute_margin", "relative_margin", "max_score", "min_score")  # the peer applies them so


@dataclass
class QueryCandidates:
    """One query's candidates, sorted by score descending (ties: the pipeline's order, positives after).

    Holds the query's positives and every non-positive document the pipeline returned (its rank window, less the
    documents under ``min_score``, which all score below anything that can be selected, so ranks stay exact)."""
    doc_ids: List[str]
    scores: np.ndarray        # (m,) float64
    is_positive: np.ndarray   # (m,) bool
    positive_ids: List[str]   # in the query's order (first appearance in the dataset)
    positive_scores: np.ndarray  # (p,) float64, aligned with positive_ids


def candidates_from_row(row: dict) -> QueryCandidates:
    """A mined output row -> QueryCandidates. Non-positives are the sampled survivors and the filter's removed
    candidates; positives are added at their own scores."""
    neg_ids = list(row["negative_ids"]) + list(row["removed_ids"])
    neg_scores = list(row["negative_scores"]) + list(row["removed_scores"])
    pos_ids = list(row["positive_ids"])
    pos_scores = np.asarray(row["positive_scores"], np.float64)
    ids = neg_ids + pos_ids
    scores = np.asarray(neg_scores + list(pos_scores), np.float64)
    is_pos = np.r_[np.zeros(len(neg_ids), bool), np.ones(len(pos_ids), bool)]
    order = np.lexsort((np.arange(len(ids)), -scores))  # score descending; stable
    return QueryCandidates([ids[i] for i in order], scores[order], is_pos[order], pos_ids, pos_scores)


def positive_reference(positive_scores: np.ndarray) -> float:
    """s+: the minimum positive score (the weakest positive decides what is too close), as both tools use."""
    return float(np.min(positive_scores)) if len(positive_scores) else float("nan")


def score_keep_mask(scores: np.ndarray, pos_ref: float, *, absolute_margin: Optional[float] = None,
                    relative_margin: Optional[float] = None, max_score: Optional[float] = None,
                    min_score: Optional[float] = None, inclusive: bool = False) -> np.ndarray:
    """(m,) bool: the candidates every configured score filter keeps.

    absolute_margin: s < s+ - margin. relative_margin: s < s+ - |s+| * margin (= streammine's ``topk-percpos``
    with perc = 1 - margin, including its rule for s+ < 0). max_score: s < max_score. min_score: s >= min_score.
    ``inclusive``: keep s <= bound instead (the peer's comparison; the two differ only on exact float ties).
    """
    s = np.asarray(scores, np.float64)
    bound = np.inf
    if absolute_margin is not None:
        bound = min(bound, pos_ref - float(absolute_margin))
    if relative_margin is not None:
        bound = min(bound, pos_ref - abs(pos_ref) * float(relative_margin))
    if max_score is not None:
        bound = min(bound, float(max_score))
    keep = (s <= bound) if inclusive else (s < bound)
    if min_score is not None:
        keep &= s >= float(min_score)
    return keep


def filter_removals(scores: np.ndarray, pos_ref: float, filters: dict, inclusive: bool) -> Dict[str, int]:
    """name -> how many of ``scores`` each given filter removes, the filters applied one after another in
    ``FILTER_ORDER`` (a candidate removed by an earlier filter is not counted again); only filters that removed
    one are named."""
    alive = np.ones(len(scores), bool)
    counts = {}
    for name in FILTER_ORDER:
        if filters.get(name) is None:
            continue
        removed = alive & ~score_keep_mask(scores, pos_ref, inclusive=inclusive, **{name: filters[name]})
        if removed.any():
            counts[name] = int(removed.sum())
        alive &= ~removed
    return counts


def select_negatives(c: QueryCandidates, query_id: str, *, num_negatives: int, range_min: int, range_max: int,
                     pool: int, window: str, include_positives: bool, sampling_strategy: str,
                     filters: dict, seed: Optional[int], rng: Optional[_random.Random] = None,
                     skipped: Optional[Dict[str, int]] = None) -> np.ndarray:
    """Indices into ``c`` of the query's negatives, by score descending.

    Exclusions: positives (unless ``include_positives``) and the document whose text is the query's own
    (its id is the query's id, as both are content hashes), unless it is one of the query's positives.

    ``window="streammine"``: rank the remaining candidates, keep ranks [range_min, range_max), then the score
    filters -- the window counts candidates before they are filtered (streammine's order of operations).
    ``window="sentence-transformers"``: the peer's rule -- only the first ``pool`` candidates of the whole
    ranking (positives and the query's own text included) are considered, the score filters apply, and ranks
    [range_min, range_max) are taken among the filters' survivors.

    Sampling: "top" takes the first ``num_negatives``; "random" takes ``num_negatives`` uniformly without
    replacement -- with an int ``seed``, the ones with the smallest keys ``uniform_keys(seed, query, document)``
    (a pure function of the seed and the texts, as in streammine's sampler); with ``seed=None``, drawn from
    ``rng`` (Python's ``random``) exactly as the peer draws them.
    """
    m = len(c.doc_ids)
    is_self = np.array([d == query_id for d in c.doc_ids], bool) & ~c.is_positive
    eligible = ~is_self & (include_positives | ~c.is_positive)
    inclusive = window == "sentence-transformers"
    keep = eligible & score_keep_mask(c.scores, positive_reference(c.positive_scores), inclusive=inclusive,
                                      **filters)
    if window == "streammine":
        rank = np.cumsum(eligible) - 1
        considered = eligible & (rank >= range_min) & (rank < range_max)
        options = np.flatnonzero(keep & considered)
    elif window == "sentence-transformers":
        considered = eligible & (np.arange(m) < pool)
        options = np.flatnonzero(keep & considered)[range_min:range_max]
    else:
        raise ValueError(f"candidate_window must be one of {WINDOWS}, got {window!r}")
    if skipped is not None:
        for name, count in filter_removals(c.scores[considered], positive_reference(c.positive_scores), filters,
                                           inclusive).items():
            skipped[name] = skipped.get(name, 0) + count
    if sampling_strategy == "top":
        mask = np.zeros((1, m), bool)
        mask[0, options] = True
        cols = sample_top(mask, num_negatives)[0]
        return cols[cols >= 0]
    if sampling_strategy != "random":
        raise ValueError(f"sampling_strategy must be 'top' or 'random', got {sampling_strategy!r}")
    if seed is None:
        # the peer: random.sample over max(#options, n) slots; slots past the options are empty
        slots = (rng or _random).sample(range(max(len(options), num_negatives)), k=num_negatives)
        return np.sort(np.array([options[k] for k in slots if k < len(options)], np.int64))
    mask = np.zeros((1, m), bool)
    mask[0, options] = True
    u = uniform_keys(seed, np.array([[key64(query_id)]], np.uint64),
                     np.array([[key64(d) for d in c.doc_ids]], np.uint64)) if m else np.zeros((1, 0))
    cols = sample_random(mask, num_negatives, u)[0]
    return cols[cols >= 0]


def rescore(c: QueryCandidates, query: str, texts: dict, cross_encoder, batch_size: int, pool: Optional[int],
            range_max: int, include_positives: bool) -> QueryCandidates:
    """The candidates the window admits, rescored by the cross-encoder and re-sorted by its scores; the
    positives' scores (s+ and the output scores) are the cross-encoder's too.

    ``pool``: the peer's rule, the first ``pool`` of the bi-encoder ranking. None: streammine's, the first
    ``range_max + 1`` candidates that may be negatives (one more for a document equal to the query)."""
    m = len(c.doc_ids)
    if pool is not None:
        admit = np.arange(m) < pool
    else:
        counted = np.ones(m, bool) if include_positives else ~c.is_positive
        admit = counted & (np.cumsum(counted) <= range_max + 1)
    others = [c.doc_ids[i] for i in np.flatnonzero(admit & ~c.is_positive)]
    pairs = [(query, texts[d]) for d in others + list(c.positive_ids)]
    ce = np.asarray(cross_encoder.predict(pairs, batch_size=batch_size, show_progress_bar=False),
                    np.float64).reshape(-1)
    pos_scores = ce[len(others):]
    by_id = dict(zip(others, ce[:len(others)]))
    by_id.update(zip(c.positive_ids, pos_scores))
    ids = [c.doc_ids[i] for i in np.flatnonzero(admit)]
    scores = np.array([by_id[d] for d in ids], np.float64)
    is_pos = c.is_positive[admit]
    order = np.lexsort((np.arange(len(ids)), -scores))
    return QueryCandidates([ids[i] for i in order], scores[order], is_pos[order], list(c.positive_ids), pos_scores)


def teacher_scores(row: dict, positive_ids: Sequence[str], negative_ids: Sequence[str]) -> tuple:
    """(positive scores, negative scores) from a row mined with streammine's cross-encoder denoising: its teacher
    scores (``positive_ce_scores`` / ``negative_ce_scores``) of the given ids; NaN for an id it did not score (a
    candidate only the bi-encoder filter saw)."""
    by_id = dict(zip(row["negative_ids"], row["negative_ce_scores"]))
    by_id.update(zip(row["positive_ids"], row["positive_ce_scores"]))
    return ([float(by_id.get(d, float("nan"))) for d in positive_ids],
            [float(by_id.get(d, float("nan"))) for d in negative_ids])


