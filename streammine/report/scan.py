"""One streaming pass over a mining output: every figure's numbers and the sampled example queries.

Memory: one record batch of the output, the fixed-size accumulators (score histograms of at most a few thousand
bins, counts per negatives-per-query / per rank) and the ``sample`` rows kept. Nothing grows with the output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..sink.mined import read_batches
from .accumulators import BottomK, Histogram, IntCounts

BATCH_ROWS = 2048

# what the scan reads; a part that lacks an optional column (older outputs) just leaves its figures empty
COLUMNS = ["query_id", "query", "positive_ids", "positive_scores", "positive_ref", "negative_ids",
           "negative_scores", "negative_ranks", "removed_ids", "removed_scores", "n_candidates",
           "n_removed_positive", "n_removed_same_text", "n_removed_filter", "n_removed_min_score", "short",
           "n_removed_near_duplicate_of_positive", "n_removed_near_duplicate_negative", "n_supplied_negatives",
           "n_below_grade"]
REQUIRED = ["query_id", "negative_ids", "negative_scores"]
COUNT_COLUMNS = ["n_candidates", "n_removed_positive", "n_removed_same_text", "n_removed_filter",
                 "n_removed_min_score", "n_removed_near_duplicate_of_positive", "n_removed_near_duplicate_negative",
                 "n_supplied_negatives", "n_below_grade"]
SAMPLE_COLUMNS = ["query_id", "query", "positive_ids", "positive_scores", "positive_ref", "negative_ids",
                  "negative_scores", "negative_ranks", "removed_ids", "removed_scores", "short"]

BoundFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class ScanResult:
    """Everything the report shows, accumulated over the whole output."""
    parts: int = 0
    queries: int = 0
    negatives: int = 0
    short: int = 0
    positives: int = 0
    positives_not_found: int = 0                 # positive score NaN: the positive was not in the corpus
    removed: int = 0                             # probable false negatives (removed_ids)
    queries_with_removed: int = 0
    random_negatives: int = 0                    # rank -1
    counts: dict = field(default_factory=lambda: {c: 0 for c in COUNT_COLUMNS})
    negatives_per_query: IntCounts = field(default_factory=IntCounts)
    removed_per_query: IntCounts = field(default_factory=IntCounts)
    ranks: IntCounts = field(default_factory=IntCounts)
    positive_scores: Histogram = field(default_factory=Histogram)
    negative_scores: Histogram = field(default_factory=Histogram)  # every kept negative
    hard_scores: Histogram = field(default_factory=Histogram)     # kept negatives from the ranking (rank >= 0)
    random_scores: Histogram = field(default_factory=Histogram)   # kept random corpus negatives (rank -1)
    removed_scores: Histogram = field(default_factory=Histogram)
    thresholds: Histogram = field(default_factory=Histogram)      # each query's filter bound (finite ones)
    kept_margin: Histogram = field(default_factory=Histogram)     # negative score - its query's bound (< 0)
    removed_margin: Histogram = field(default_factory=Histogram)  # removed score - its query's bound (>= 0)
    missing_columns: set = field(default_factory=set)
    sample: Optional[BottomK] = None

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("parts", "queries", "negatives", "short", "positives",
                                           "positives_not_found", "removed", "queries_with_removed",
                                           "random_negatives")}
        d["counts"] = dict(self.counts)
        d["negatives_per_query"] = self.negatives_per_query.to_dict()
        d["removed_per_query"] = self.removed_per_query.to_dict()
        d["negative_ranks"] = self.ranks.to_dict()
        d["histograms"] = {name: getattr(self, name).to_dict() for name in
                           ("positive_scores", "negative_scores", "hard_scores", "random_scores", "removed_scores", "thresholds",
                            "kept_margin", "removed_margin")}
        d["missing_columns"] = sorted(self.missing_columns)
        return d


def _flat(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.list_flatten(column).to_numpy(zero_copy_only=False)


def _lengths(column) -> np.ndarray:
    return pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)


def _int(column) -> np.ndarray:
    return pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.int64)


def scan_output(part_urls: List[str], bounds: Optional[BoundFn] = None, sample: int = 20, seed: int = 0,
                batch_rows: int = BATCH_ROWS) -> ScanResult:
    """Streams over the parts once and accumulates the report's numbers.

    ``bounds(positive_ref) -> (B,) float64``: each query's filter bound (keep s < bound; NaN where unknown), or
    None when there is no score threshold (filter ``none``, or no run config to derive it from).
    """
    r = ScanResult(sample=BottomK(sample, seed))
    seen_parts = set()
    for url, present, batch in read_batches(part_urls, COLUMNS, batch_rows):  # absent columns left out
        seen_parts.add(url)
        missing = [c for c in REQUIRED if c not in present]
        if missing:
            from ..errors import StreamMineError
            raise StreamMineError(f"{url}: not a mining output part (no column {', '.join(missing)})")
        r.missing_columns.update(c for c in COLUMNS if c not in present)
        _add_batch(r, batch, present, bounds)
    r.parts = len(seen_parts)
    return r


def _add_batch(r: ScanResult, batch: pa.RecordBatch, present: list, bounds: Optional[BoundFn]) -> None:
    b = batch.num_rows
    if not b:
        return
    has = set(present).__contains__
    r.queries += b
    n_neg = _lengths(batch.column("negative_ids"))
    r.negatives += int(n_neg.sum())
    r.negatives_per_query.add(n_neg)
    if has("short"):
        r.short += int(np.count_nonzero(pc.fill_null(batch.column("short"), False).to_numpy(zero_copy_only=False)))
    for c in COUNT_COLUMNS:
        if has(c):
            r.counts[c] += int(_int(batch.column(c)).sum())

    neg_scores = _flat(batch.column("negative_scores")).astype(np.float64)
    neg_rank = _flat(batch.column("negative_ranks")).astype(np.int64) if has("negative_ranks") \
        else np.zeros(neg_scores.size, np.int64)
    if has("negative_ranks"):
        r.ranks.add(neg_rank)
    is_random = neg_rank < 0
    r.random_negatives += int(np.count_nonzero(is_random))
    r.negative_scores.add(neg_scores)
    r.hard_scores.add(neg_scores[~is_random])
    r.random_scores.add(neg_scores[is_random])

    if has("positive_scores"):
        pos = _flat(batch.column("positive_scores")).astype(np.float64)
        r.positives += int(pos.size)
        r.positives_not_found += int(np.count_nonzero(np.isnan(pos)))
        r.positive_scores.add(pos[~np.isnan(pos)])

    removed_scores = np.zeros(0)
    n_rem = np.zeros(b, np.int64)
    if has("removed_scores"):
        n_rem = _lengths(batch.column("removed_scores"))
        removed_scores = _flat(batch.column("removed_scores")).astype(np.float64)
        r.removed += int(n_rem.sum())
        r.queries_with_removed += int(np.count_nonzero(n_rem))
        r.removed_per_query.add(n_rem)
        r.removed_scores.add(removed_scores)

    bound = None
    if bounds is not None and has("positive_ref"):
        ref = pc.fill_null(batch.column("positive_ref"), float("nan")).to_numpy(zero_copy_only=False)
        bound = np.asarray(bounds(np.asarray(ref, np.float64)), np.float64)
        r.thresholds.add(bound[np.isfinite(bound)])
        r.kept_margin.add(neg_scores - np.repeat(bound, n_neg))
        r.removed_margin.add(removed_scores - np.repeat(bound, n_rem))

    if r.sample is not None and r.sample.k:
        ids = batch.column("query_id").to_pylist()
        pick = r.sample.candidates(ids)
        if pick.size:
            cols = [c for c in SAMPLE_COLUMNS if has(c)]
            rows = pa.Table.from_batches([batch]).select(cols).take(pa.array(pick)).to_pylist()
            for i, row in zip(pick.tolist(), rows):
                row["threshold"] = float(bound[i]) if bound is not None and np.isfinite(bound[i]) else None
            r.sample.offer([ids[i] for i in pick.tolist()], rows)

