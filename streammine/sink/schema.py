"""The mined output: one row per query and model version."""
from __future__ import annotations

import pyarrow as pa

_str_list = pa.list_(pa.string())
_f32_list = pa.list_(pa.float32())

MINED_SCHEMA = pa.schema([
    ("query_id", pa.string()),
    ("query", pa.string()),
    ("positive_ids", _str_list),
    ("positive_scores", _f32_list),       # exact scores, aligned with positive_ids (NaN if not found)
    ("positive_ref", pa.float32()),       # s+ the filters used: the minimum positive score
    ("negative_ids", _str_list),          # hard negatives by rank, then random corpus negatives
    ("negative_scores", _f32_list),
    ("negative_ranks", pa.list_(pa.int32())),  # rank among non-positive candidates; -1: random corpus negative
    ("removed_ids", _str_list),           # probable false negatives removed by the positive-aware filter
    ("removed_scores", _f32_list),
    # teacher scores: the cross-encoder's, aligned with positive_ids / negative_ids; null without a cross-encoder
    ("positive_ce_scores", _f32_list),
    ("negative_ce_scores", _f32_list),
    ("n_candidates", pa.int32()),
    ("n_removed_positive", pa.int32()),
    ("n_removed_same_text", pa.int32()),
    ("n_removed_filter", pa.int32()),
    ("n_removed_min_score", pa.int32()),
    ("n_removed_cross_encoder", pa.int32()),  # survivors a cross-encoder scored at/above its threshold (RocketQA)
    ("n_removed_near_duplicate_of_positive", pa.int32()),  # cosine >= mining.near_duplicate.positive to a positive
    ("n_removed_near_duplicate_negative", pa.int32()),     # passed over: near-duplicate of a kept negative
    ("short", pa.bool_()),                # fewer negatives than asked for (kept, and counted)
    # supplied labels (mining/supplied.py): graded qrels' grades aligned with positive_ids; the query's known
    # negatives (negative_ranks -2 where included); how many were placed first; judged documents below
    # mining.min_positive_grade (neither positive nor negative); a per-query prompt (FlagEmbedding input)
    ("positive_grades", _f32_list),
    ("supplied_negative_ids", _str_list),
    ("n_supplied_negatives", pa.int32()),
    ("n_below_grade", pa.int32()),
    ("prompt", pa.string()),
    ("model", pa.string()),
    ("model_version", pa.string()),
    ("config_hash", pa.string()),
])
