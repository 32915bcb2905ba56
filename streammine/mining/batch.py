"""``mine_batch``: exclusion, filters and samplers composed over one batch of queries."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from ..config import MiningConfig, SamplerConfig
from ..keys import uniform_keys
from .exclude import positive_masks, positive_reference, row_isin
from .filters import cross_encoder_bound, filter_candidates, score_filter_masks
from .near_duplicate import (VectorTable, distinct_fill, distinct_picks, near_positive,
                             preference_order)
from .rescore import cross_encoder_keep, padded_ids, positive_ce_reference, rescore_pool
from .samplers import sampler_named, window_end
from .supplied import Supplied, merge_supplied, padded_ordinals
from .types import CandidateBatch, PositiveBatch


@dataclass
class MinedBatch:
    """The negatives of B queries (per-query lists) and what was removed on the way ((B,) counts)."""
    negative_ordinals: list   # (n_i,) int64: hard negatives by rank, then random corpus negatives in draw order
    negative_scores: list     # (n_i,) float32
    negative_doc_ids: list    # list[str]
    negative_ranks: list      # (n_i,) int32: rank among non-positive candidates; -1: random corpus negative
    removed_doc_ids: list     # list[str]: in the rank window but at/above the filter bound (probable false negatives)
    removed_scores: list      # (r_i,) float32
    positive_ref: np.ndarray  # (B,) float64: s+, the minimum positive score (NaN: no positive)
    n_candidates: np.ndarray  # (B,) int64: valid candidates
    n_removed_positive: np.ndarray
    n_removed_same_text: np.ndarray
    n_removed_filter: np.ndarray
    n_removed_min_score: np.ndarray
    n_survivors: np.ndarray   # (B,) int64: candidates the sampler could pick from
    short: np.ndarray         # (B,) bool: fewer negatives than num_negatives
    n_removed_cross_encoder: np.ndarray  # (B,) int64: pooled survivors the cross-encoder rejected
    # (B,) int64, mining/near_duplicate.py: window candidates (and reached random documents) near a positive; and
    # candidates the negatives guard passed over as near-duplicates of a kept negative. Zeros when the guards are off.
    n_removed_near_duplicate_of_positive: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    n_removed_near_duplicate_negative: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # teacher scores, only with a cross-encoder (else None): aligned with negative_doc_ids / positives.doc_ids
    negative_ce_scores: Optional[list] = None  # (n_i,) float32
    positive_ce_scores: Optional[list] = None  # (P_i,) float32
    # (B,) int64, mining/supplied.py: supplied negatives placed first (include); zeros otherwise
    n_supplied_negatives: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.negative_ordinals)


def num_random(s: SamplerConfig) -> int:
    """How many of the num_negatives are random corpus documents: random_share * n, rounded half up (the same
    rounding the stage uses to size its random draws)."""
    return int(min(max(np.floor(s.random_share * s.num_negatives + 0.5), 0), s.num_negatives))


def sample_hard(s: SamplerConfig, survivors: np.ndarray, scores: np.ndarray, pos_ref: np.ndarray, n: int,
                u: Optional[np.ndarray]) -> np.ndarray:
    """(B, n) columns picked by the configured sampler."""
    return sampler_named(s.method).pick(survivors, scores, pos_ref, n, u, s)


def first_occurrences(ordinals: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """(B, R) bool: usable and no earlier usable column of the row has the same ordinal."""
    b, r = ordinals.shape
    if r == 0:
        return np.zeros((b, r), bool)
    # unusable columns get distinct negative stand-ins so they never shadow a later usable duplicate
    keyed = np.where(usable, ordinals, -2 - np.arange(r, dtype=np.int64)[None, :])
    order = np.argsort(keyed, axis=1, kind="stable")  # equal ordinals keep draw order
    sorted_keys = np.take_along_axis(keyed, order, axis=1)
    repeat = np.zeros((b, r), bool)
    repeat[:, 1:] = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    is_repeat = np.empty_like(repeat)
    np.put_along_axis(is_repeat, order, repeat, axis=1)
    return usable & ~is_repeat


def pick_random_fill(random_docs: CandidateBatch, positives: PositiveBatch, exclude_same_text: bool,
                     bound: np.ndarray, min_score: Optional[float], taken_ordinals: np.ndarray,
                     need: np.ndarray) -> np.ndarray:
    """(B, R) bool: the random documents that fill each row's remaining ``need`` slots, taken in draw order.

    A random document qualifies if it is a real document, not a positive or a positive's text, not already a
    negative of the query, not a repeat of an earlier draw, and passes the same score filter as the hard
    negatives (a random document above the positive-aware bound is just as likely a false negative).
    """
    is_positive, is_same_text = positive_masks(random_docs, positives, exclude_same_text)
    below_bound, meets_min = score_filter_masks(random_docs.scores, bound, min_score)
    taken = row_isin(random_docs.ordinals, [t[t >= 0] for t in np.asarray(taken_ordinals, np.int64)])
    usable = random_docs.valid & ~is_positive & ~is_same_text & below_bound & meets_min & ~taken
    usable = first_occurrences(np.asarray(random_docs.ordinals, np.int64), usable)
    return usable & (np.cumsum(usable, axis=1) <= np.asarray(need)[:, None])


def near_duplicate_table(cands: CandidateBatch, positives: PositiveBatch, in_play: np.ndarray,
                         random_docs: Optional[CandidateBatch], vectors_of) -> VectorTable:
    """The vectors the near-duplicate guards need, in one ``vectors_of`` call: the positives', the candidates
    ``in_play`` and the random documents'."""
    if vectors_of is None:
        raise ValueError("mining.near_duplicate is on but the miner was given no vectors_of lookup")
    parts = [np.concatenate([np.asarray(p, np.int64) for p in positives.ordinals] + [np.zeros(0, np.int64)]),
             np.asarray(cands.ordinals)[np.asarray(in_play, bool)]]
    if random_docs is not None:
        parts.append(np.asarray(random_docs.ordinals, np.int64).ravel())
    return VectorTable.fetch(np.concatenate(parts), vectors_of)


def mine_batch(query_keys: np.ndarray, cands: CandidateBatch, positives: PositiveBatch, cfg: MiningConfig,
               random_docs: Optional[CandidateBatch] = None,
               cross_scores: Optional[Callable[..., np.ndarray]] = None,
               vectors_of: Optional[Callable[[np.ndarray], np.ndarray]] = None,
               supplied: Optional[Supplied] = None) -> MinedBatch:
    """Mine negatives for B queries from their ranked candidates (and optional random corpus documents).

    ``cross_scores(doc_ids, mask, stage)``, when given, returns cross-encoder scores shaped like ``doc_ids``
    where ``mask`` is True (NaN elsewhere), for the query of each row. It scores the positives (stage
    "positives"), then the candidates of the pool (stage "pool": the filters' survivors, up to
    ``cfg.cross_encoder.pool`` per query): only those scored below ``filters.cross_encoder_bound`` (threshold and
    margins to the positives' minimum score) may be sampled; then the random corpus negatives taken (stage
    "random"), which are scored but not denoised. The scores of the positives and kept negatives are returned
    (``positive_ce_scores``, ``negative_ce_scores``).
    A query with too few qualifying documents gets fewer negatives and ``short=True``; it is never dropped.
    Random corpus documents (``random_docs``) fill at most their share ``num_random(s)`` of the n slots, so a query
    short of hard negatives is short, unless ``s.fill_with_random`` lets them take the missing hard slots too.
    ``vectors_of(ordinals)``: (m, d) exact corpus vectors, needed only when ``cfg.near_duplicate`` is on
    (mining/near_duplicate.py: its guards run after the ranking, before the score filter and in the sampler).
    ``supplied`` (mining/supplied.py): the query's known negatives and below-grade documents, never picked by the
    miner (supplied ones unless ``ignore``); with ``include`` they come first and count toward num_negatives.
    """
    query_keys = np.asarray(query_keys, dtype=np.uint64)
    b, k = cands.ordinals.shape
    if query_keys.shape != (b,) or len(positives.ordinals) != b:
        raise ValueError(f"batch sizes disagree: {query_keys.shape[0]} query keys, {b} candidate rows, "
                         f"{len(positives.ordinals)} positive lists")
    if random_docs is not None and random_docs.ordinals.shape[0] != b:
        raise ValueError(f"random_docs has {random_docs.ordinals.shape[0]} rows for {b} queries")
    s = cfg.sampler
    n = s.num_negatives
    n_hard = n - num_random(s)

    valid = cands.valid
    is_positive, is_same_text = positive_masks(cands, positives, cfg.exclude_same_text)
    pos_ref = positive_reference(positives)
    known = row_isin(cands.ordinals, supplied.excluded()) if supplied is not None else np.zeros_like(valid)
    out = filter_candidates(cands.scores, valid & ~is_positive & ~is_same_text & ~known, pos_ref, cfg.filter,
                            s.range_min, window_end(s))
    nd, table = cfg.near_duplicate, None
    n_near_pos, n_near_neg = np.zeros(b, np.int64), np.zeros(b, np.int64)
    if nd.enabled:
        table = near_duplicate_table(cands, positives, out.in_window if nd.positive is not None else out.survivors,
                                     random_docs, vectors_of)
        near = near_positive(cands.ordinals, out.in_window, positives.ordinals, table, nd.positive)
        n_near_pos = near.sum(axis=1).astype(np.int64)
        out = replace(out, removed_filter=out.removed_filter & ~near,
                      removed_min_score=out.removed_min_score & ~near, survivors=out.survivors & ~near)

    survivors = out.survivors
    n_removed_ce = np.zeros(b, np.int64)
    ce_cands = ce_pos = None
    if cross_scores is not None:
        ce = cfg.cross_encoder
        pos_ids, pos_mask = padded_ids(positives.doc_ids)
        ce_pos = cross_scores(pos_ids, pos_mask, "positives")
        pool = rescore_pool(survivors, ce.pool)
        ce_cands = cross_scores(cands.doc_ids, pool, "pool")
        bound = cross_encoder_bound(positive_ce_reference(ce_pos, pos_mask), ce.threshold, ce.margin,
                                    ce.relative_margin)
        survivors = cross_encoder_keep(ce_cands, pool, bound)
        n_removed_ce = (pool & ~survivors).sum(axis=1).astype(np.int64)

    u = uniform_keys(cfg.seed, query_keys[:, None], cands.ordinals) if sampler_named(s.method).uses_uniform_keys \
        else None
    hard_cols = sample_hard(s, survivors, cands.scores, pos_ref, n_hard, u)  # (B, n_hard), sorted, -1 padded
    if table is not None:  # the same picks, unless the negatives guard passes over near-duplicates of kept ones
        keys = sampler_named(s.method).keys(cands.scores, pos_ref, u, s)
        hard_cols, n_near_neg, kept_vectors = distinct_picks(preference_order(survivors, keys), cands.ordinals,
                                                             table, n_hard, nd.negatives)
    n_hard_got = (hard_cols >= 0).sum(axis=1)
    safe_cols = np.maximum(hard_cols, 0)
    hard_ordinals = np.where(hard_cols >= 0, np.take_along_axis(cands.ordinals, safe_cols, axis=1), -1) \
        if k else np.full_like(hard_cols, -1)
    taken = hard_ordinals if supplied is None else \
        np.concatenate([hard_ordinals, padded_ordinals(supplied.excluded())], axis=1)  # random draws skip them too

    if random_docs is not None:
        # random documents take their share; the hard slots the window could not fill only with fill_with_random
        need = n - n_hard_got if s.fill_with_random else np.full(b, n - n_hard, np.int64)
        fill = pick_random_fill(random_docs, positives, cfg.exclude_same_text, out.bound, cfg.filter.min_score,
                                taken, need)
        if table is not None:  # all the usable draws, then the guarded fill in draw order
            usable = pick_random_fill(random_docs, positives, cfg.exclude_same_text, out.bound, cfg.filter.min_score,
                                      taken, np.full(b, random_docs.ordinals.shape[1], np.int64))
            near = near_positive(random_docs.ordinals, usable, positives.ordinals, table, nd.positive)
            fill, r_pos, r_neg = distinct_fill(usable, random_docs.ordinals, need, table, near, nd.negatives,
                                               kept_vectors)
            n_near_pos, n_near_neg = n_near_pos + r_pos, n_near_neg + r_neg
    else:
        fill = None
    ce_random = cross_scores(random_docs.doc_ids, fill, "random") if ce_cands is not None and fill is not None \
        else None

    neg_ordinals, neg_scores, neg_ids, neg_ranks, removed_ids, removed_scores = [], [], [], [], [], []
    neg_ce, pos_ce = [], []
    for i in range(b):
        h = hard_cols[i][hard_cols[i] >= 0]
        r = np.flatnonzero(fill[i]) if fill is not None else np.zeros(0, np.int64)
        ro = random_docs.ordinals[i, r] if fill is not None else np.zeros(0, np.int64)
        rs = random_docs.scores[i, r] if fill is not None else np.zeros(0, np.float32)
        rid = list(random_docs.doc_ids[i, r]) if fill is not None else []
        neg_ordinals.append(np.concatenate([cands.ordinals[i, h], ro]).astype(np.int64))
        neg_scores.append(np.concatenate([cands.scores[i, h], rs]).astype(np.float32))
        neg_ids.append([str(x) for x in cands.doc_ids[i, h]] + [str(x) for x in rid])
        neg_ranks.append(np.concatenate([out.rank[i, h], np.full(len(r), -1, np.int64)]).astype(np.int32))
        gone = np.flatnonzero(out.removed_filter[i])
        removed_ids.append([str(x) for x in cands.doc_ids[i, gone]])
        removed_scores.append(np.asarray(cands.scores[i, gone], np.float32))
        if ce_cands is not None:
            neg_ce.append(np.concatenate([ce_cands[i, h], ce_random[i, r] if ce_random is not None
                                          else np.zeros(0, np.float32)]).astype(np.float32))
            pos_ce.append(np.asarray(ce_pos[i, :len(positives.doc_ids[i])], np.float32))

    sup_ce = None
    if supplied is not None and supplied.mode == "include" and ce_cands is not None:  # teacher scores for them too
        sup_ids, sup_mask = padded_ids(supplied.doc_ids)
        sup_ce = cross_scores(sup_ids, sup_mask, "random") if sup_mask.size else None
    neg_ordinals, neg_scores, neg_ids, neg_ranks, merged_ce, n_supplied = merge_supplied(
        supplied, n, neg_ordinals, neg_scores, neg_ids, neg_ranks, neg_ce if ce_cands is not None else None, sup_ce)
    neg_ce = merged_ce if ce_cands is not None else neg_ce
    n_got = np.fromiter((len(x) for x in neg_ordinals), dtype=np.int64, count=b)
    return MinedBatch(
        negative_ordinals=neg_ordinals, negative_scores=neg_scores, negative_doc_ids=neg_ids,
        negative_ranks=neg_ranks, removed_doc_ids=removed_ids, removed_scores=removed_scores,
        positive_ref=pos_ref,
        n_candidates=valid.sum(axis=1).astype(np.int64),
        n_removed_positive=is_positive.sum(axis=1).astype(np.int64),
        n_removed_same_text=is_same_text.sum(axis=1).astype(np.int64),
        n_removed_filter=out.n_removed_filter.astype(np.int64),
        n_removed_min_score=out.n_removed_min_score.astype(np.int64),
        n_survivors=survivors.sum(axis=1).astype(np.int64),
        short=n_got < n,
        n_removed_cross_encoder=n_removed_ce,
        n_removed_near_duplicate_of_positive=n_near_pos,
        n_removed_near_duplicate_negative=n_near_neg,
        negative_ce_scores=neg_ce if ce_cands is not None else None,
        positive_ce_scores=pos_ce if ce_cands is not None else None,
        n_supplied_negatives=n_supplied,
    )
