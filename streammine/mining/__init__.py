"""The mining math: pure, vectorized numpy over columnar candidate batches (no Ray, no I/O)."""
from .batch import MinedBatch, mine_batch, num_random, pick_random_fill
from .depth import SAME_TEXT_SLACK, first_depths, search_to_depth, truncate, window_full
from .exclude import positive_masks, positive_reference, row_isin
from .filters import FilterOutcome, filter_candidates, rank_among_negatives, score_filter_masks, score_upper_bound
from .rescore import cross_encoder_keep, rescore_pool
from .samplers import (gumbel, pick_smallest, random_corpus_ordinals, sample_random, sample_simans, sample_top,
                       simans_log_weights)
from .types import CandidateBatch, PositiveBatch

__all__ = ["CandidateBatch", "FilterOutcome", "MinedBatch", "PositiveBatch", "SAME_TEXT_SLACK", "cross_encoder_keep",
           "filter_candidates", "first_depths", "gumbel", "mine_batch", "num_random", "pick_random_fill",
           "pick_smallest", "positive_masks", "positive_reference", "random_corpus_ordinals", "rank_among_negatives",
           "rescore_pool", "row_isin", "sample_random", "sample_simans", "sample_top", "score_filter_masks",
           "score_upper_bound", "search_to_depth", "simans_log_weights", "truncate", "window_full"]
