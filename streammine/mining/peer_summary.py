"""The peer's verbose report, as lines of text (pure, numpy): what ``sentence_transformers.util.mine_hard_negatives``
prints with ``verbose=True``, computed from the negatives ``streammine.compat`` selected.

Users (and the peer's own tests) read these lines: "Could not find enough negatives for N samples (P%).", the
score table, "Skipped N potential negatives ...". The wording and the conditions each line prints under are the
peer's (sentence-transformers 6.3); the counts are streammine's.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

_ROW = "{:<6} {:>14} {:>14} {:>14}"
MINED_LINE = "Negative candidates mined, preparing dataset..."


def opening_lines(n_unique: int, n_total: int, positives_per_query: Sequence[int],
                  derived_range_max: Optional[int]) -> List[str]:
    """The lines before mining: the derived ``range_max`` (None: the caller gave one), duplicate queries, the
    average number of positives when some query has several."""
    lines = []
    if derived_range_max is not None:
        lines.append(f"Setting range_max to {derived_range_max} based on the provided parameters.")
    if n_unique != n_total:
        lines.append(f"Found {n_unique} unique queries out of {n_total} total queries.")
    if max(positives_per_query) > 1:
        lines.append(f"Found an average of {float(np.mean(positives_per_query)):.3f} positives per query.")
    return lines


def score_arrays(per_query: Sequence[Tuple[Sequence[float], Sequence[float]]], output_format: str,
                 num_negatives: int, keep_short: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positive scores, negative scores, positive - negative) over the rows the output holds, as the peer's
    table counts them: every (query, positive) pair's score; each negative once per positive of its query; in
    "n-tuple" without ``keep_short`` only the queries with all their negatives."""
    pos, neg, diff = [], [], []
    for p_scores, n_scores in per_query:
        pos.extend(p_scores)
        if output_format == "n-tuple" and len(n_scores) < num_negatives and not keep_short:
            continue
        for ps in p_scores:
            neg.extend(n_scores)
            diff.extend(ps - s for s in n_scores)
    return tuple(np.asarray(x, np.float64) for x in (pos, neg, diff))


def _statistics(x: np.ndarray) -> List[float]:
    """mean, median (the lower middle, as torch's), std (n - 1), min, 25%, 50%, 75%, max; the peer's values for
    an empty array (nan, or +-inf for the order statistics)."""
    if x.size == 0:
        return [float("nan")] * 3 + [float("inf")] * 4 + [float("-inf")]
    s = np.sort(x)
    std = float(np.std(x, ddof=1)) if x.size > 1 else float("nan")
    return [float(np.mean(x)), float(s[(x.size - 1) // 2]), std, float(s[0])] + \
        [float(np.quantile(x, q)) for q in (0.25, 0.5, 0.75)] + [float(s[-1])]


def score_table(positive: np.ndarray, negative: np.ndarray, difference: np.ndarray) -> List[str]:
    """The peer's table: a header, the counts, then eight statistics of each column."""
    lines = [_ROW.format("Metric", "Positive", "Negative", "Difference"),
             _ROW.format("Count", f"{positive.size:,}", f"{negative.size:,}", "")]
    names = ["Mean", "Median", "Std", "Min", "25%", "50%", "75%", "Max"]
    for name, values in zip(names, zip(*(_statistics(a) for a in (positive, negative, difference)))):
        lines.append(_ROW.format(name, *(f"{v:.4f}" for v in values)))
    return lines


def skipped_lines(skipped: Dict[str, int], candidates: int, values: Dict[str, Optional[float]]) -> List[str]:
    """One line per score filter that removed candidates. ``candidates``: how many the window held in all; as in
    the peer, each margin's ratio is over what the filters before it left."""
    lines, left = [], candidates
    for name in ("absolute_margin", "relative_margin", "max_score", "min_score"):
        count = skipped.get(name, 0)
        if not count:
            continue
        lines.append(f"Skipped {count:,} potential negatives ({count / max(left, 1):.2%}) due to the {name} of "
                     f"{values[name]}.")
        if name in ("absolute_margin", "relative_margin"):
            left -= count
    return lines


def maximum_samples(output_format: str, n_pairs: int, n_queries: int, num_negatives: int,
                    dataset_rows: int) -> int:
    """The rows the output would have if every query had all its negatives (the peer's ``maximum_possible``)."""
    if output_format == "triplet":
        return n_pairs * num_negatives
    if output_format == "labeled-pair":
        return n_queries * num_negatives + dataset_rows
    return n_pairs


def missing_line(missing: int, maximum: int, range_min: int, filters: Dict[str, Optional[float]]) -> List[str]:
    """The "Could not find enough negatives" line, naming the parameters that would find more; none if no row
    is missing."""
    if missing <= 0:
        return []
    solutions = ["range_max"] + (["range_min"] if range_min > 0 else []) + [
        name for name in ("absolute_margin", "relative_margin", "max_score") if filters.get(name) is not None]
    names = solutions[0] if len(solutions) == 1 else ", ".join(solutions[:-1]) + " and " + solutions[-1]
    return [f"Could not find enough negatives for {missing} samples ({missing / maximum:.2%}). Consider adjusting "
            f"the {names} parameter{'s' if len(solutions) > 1 else ''} if you'd like to find more valid negatives."]
