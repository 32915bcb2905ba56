"""The report's figures, drawn with matplotlib's Agg backend (no display needed), returned as PNG bytes."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from .accumulators import IntCounts, common_edges
from .scan import ScanResult

POSITIVE, NEGATIVE, RANDOM, REMOVED, THRESHOLD, SHORT = \
    "#2a9d8f", "#3a6ea5", "#9b7fd1", "#e4572e", "#222222", "#f4a259"
DPI = 110


@dataclass
class Figure:
    name: str      # file name, e.g. "scores.png"
    title: str
    caption: str
    png: bytes


@dataclass
class FilterInfo:
    """What the report knows of the run's filter and sampler (from summary.json; all optional)."""
    method: Optional[str] = None
    bound_text: Optional[str] = None   # e.g. "0.95·s⁺"
    min_score: Optional[float] = None
    num_negatives: Optional[int] = None
    range_min: Optional[int] = None
    range_max: Optional[int] = None


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _stairs(ax, counts, edges, color, label, fill=True, zorder=2, **kw):
    if not len(counts) or not np.asarray(counts).sum():
        return
    if fill:
        ax.stairs(counts, edges, fill=True, color=color, alpha=0.25, zorder=zorder)
    ax.stairs(counts, edges, color=color, linewidth=1.8, label=label, zorder=zorder, **kw)


def _integer_counts(*axes) -> None:
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777777")


def scores_figure(r: ScanResult, f: FilterInfo) -> Figure:
    """Distributions of the positive scores, the kept negatives' and the removed candidates', with the filter's
    threshold (one line when it is the same for every query, else the distribution of per-query thresholds)."""
    plt = _plt()
    series = [(r.positive_scores, POSITIVE, f"positives (n={r.positive_scores.n:,})"),
              (r.hard_scores, NEGATIVE, f"kept hard negatives (n={r.hard_scores.n:,})"),
              (r.random_scores, RANDOM, f"kept random corpus negatives (n={r.random_scores.n:,})"),
              (r.removed_scores, REMOVED, f"removed: probable false negatives (n={r.removed_scores.n:,})")]
    t = r.thresholds
    varies = bool(t.n) and t.min != t.max
    edges, counts = common_edges([s[0] for s in series] + [t], max_bins=70)
    if varies:  # per-query thresholds (relative filters): their distribution in a panel of its own, in queries
        fig, (ax, tax) = plt.subplots(2, 1, figsize=(9.5, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    else:
        fig, ax = plt.subplots(figsize=(9.5, 4.8))
    if not edges.size:
        _no_data(ax)
    for i, ((h, color, label), c) in enumerate(zip(series, counts)):
        _stairs(ax, c, edges, color, label, zorder=10 - i)  # positives on top: they are the fewest
    what = f" ({f.bound_text})" if f.bound_text else ""
    if t.n and not varies:
        ax.axvline(t.min, color=THRESHOLD, linestyle="--", linewidth=1.6,
                   label=f"filter threshold{what}: keep s < {t.min:.3g}")
    if f.min_score is not None:
        ax.axvline(f.min_score, color="#888888", linestyle=":", linewidth=1.6,
                   label=f"min_score {f.min_score:.3g}: keep s ≥ it")
    ax.set_title("Scores of positives, kept negatives and removed probable false negatives")
    ax.set_ylabel("documents")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8.5, framealpha=0.85)
    ax.grid(axis="y", alpha=0.3)
    _integer_counts(ax)
    if varies:
        _stairs(tax, counts[-1], edges, THRESHOLD, None, fill=True)
        tax.axvline(t.quantile(0.5), color=THRESHOLD, linestyle="--", linewidth=1.2,
                    label=f"median ≈ {t.quantile(0.5):.3g}")
        tax.set_ylabel("queries")
        tax.set_title(f"Each query's filter threshold{what}: its negatives must score below it", fontsize=10)
        tax.legend(loc="upper left", fontsize=8.5, frameon=False)
        tax.grid(axis="y", alpha=0.3)
        _integer_counts(tax)
        tax.set_xlabel("score (inner product of query and document embeddings)")
    else:
        ax.set_xlabel("score (inner product of query and document embeddings)")
    caption = ("Every positive score, every kept negative's score and every candidate the positive-aware filter "
               "removed as a probable false negative. ")
    if t.n and t.min == t.max:
        caption += f"The dashed line is the filter threshold: negatives must score below {t.min:.4g}."
    elif t.n:
        caption += ("The filter threshold depends on each query's positive: the lower panel shows how the "
                    "per-query thresholds are distributed (in queries); the next figure puts every document "
                    "against its own query's threshold.")
    else:
        caption += "The run used no score threshold (or its config is unknown)."
    return Figure("scores.png", "Score distributions", caption, _png(fig))


def margin_figure(r: ScanResult, f: FilterInfo) -> Optional[Figure]:
    """Each kept negative's and removed candidate's score minus its own query's threshold: the filter's cut at 0."""
    if not (r.kept_margin.n or r.removed_margin.n):
        return None
    plt = _plt()
    edges, (kept, removed) = common_edges([r.kept_margin, r.removed_margin], max_bins=70)
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    _stairs(ax, kept, edges, NEGATIVE, f"kept negatives (n={r.kept_margin.n:,})")
    _stairs(ax, removed, edges, REMOVED, f"removed: probable false negatives (n={r.removed_margin.n:,})")
    ax.axvline(0.0, color=THRESHOLD, linestyle="--", linewidth=1.6,
               label="filter threshold: kept below, removed at or above")
    what = f" = {f.bound_text}" if f.bound_text else ""
    ax.set_title("Scores relative to each query's filter threshold")
    ax.set_xlabel(f"score − the query's threshold{what}")
    ax.set_ylabel("documents")
    ax.legend(loc="best", fontsize=8.5, framealpha=0.85)
    ax.grid(axis="y", alpha=0.3)
    _integer_counts(ax)
    caption = ("How close the kept negatives came to the threshold and how far above it the removed candidates "
               "were: mass just left of 0 means the filter decided many close calls.")
    return Figure("threshold_margin.png", "Distance to the filter threshold", caption, _png(fig))


def _bars(ax, counts: IntCounts, color, highlight=None, annotate=True):
    items = counts.items()
    if not items:
        _no_data(ax)
        return
    xs = np.arange(min(0, items[0][0]), items[-1][0] + 1)
    ys = np.array([counts[x] for x in xs])
    colors = [highlight[1] if highlight is not None and highlight[0](x) else color for x in xs]
    bars = ax.bar(xs, ys, color=colors, width=0.8)
    if annotate and len(xs) <= 25:
        for bar, y in zip(bars, ys):
            if y:
                ax.annotate(f"{y:,}", (bar.get_x() + bar.get_width() / 2, y), ha="center", va="bottom",
                            fontsize=8, xytext=(0, 2), textcoords="offset points")
    if len(xs) <= 25:
        ax.set_xticks(xs)
    ax.margins(y=0.12)


def per_query_figure(r: ScanResult, f: FilterInfo) -> Figure:
    """Two bar charts: negatives per query (short lists highlighted) and removed candidates per query."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    n = f.num_negatives
    short = (lambda x: x < n, SHORT) if n else None
    _bars(left, r.negatives_per_query, NEGATIVE, short)
    left.set_title("Negatives per query")
    left.set_xlabel("negatives in the query's list" + (f" (asked for {n})" if n else ""))
    left.set_ylabel("queries")
    if n and r.short:
        from matplotlib.patches import Patch
        left.legend(handles=[Patch(color=NEGATIVE, label=f"{n} (full)"),
                             Patch(color=SHORT, label=f"fewer: short ({r.short:,} queries)")],
                    fontsize=8.5, frameon=False, loc="upper left")
    if "removed_ids" in r.missing_columns:
        _no_data(right, "the output has no removed_ids column")
    else:
        _bars(right, r.removed_per_query, REMOVED)
    right.set_title("Probable false negatives removed per query")
    right.set_xlabel("candidates removed by the positive-aware filter")
    right.set_ylabel("queries")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    _integer_counts(left, right)
    caption = (f"{r.queries:,} queries. Left: how many negatives each query got"
               + (f"; {r.short:,} got fewer than the {n} asked for (kept, flagged short)" if n else "")
               + f". Right: how many of each query's candidates were removed as probable false negatives "
               f"({r.queries_with_removed:,} queries had at least one).")
    return Figure("per_query.png", "Per query", caption, _png(fig))


def ranks_figure(r: ScanResult, f: FilterInfo) -> Optional[Figure]:
    """Where in the ranking the kept negatives came from (random corpus negatives as their own bar)."""
    if "negative_ranks" in r.missing_columns:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    hard = [(k, c) for k, c in r.ranks.items() if k >= 0]
    if hard:
        top = hard[-1][0]
        xs = np.arange(0, top + 1)
        ax.bar(xs, [r.ranks[x] for x in xs], color=NEGATIVE, width=0.85 if top < 80 else 1.0,
               label=f"hard negatives (n={sum(c for _, c in hard):,})")
    else:
        top = 0
    if r.random_negatives:
        gap = max(2, int(0.04 * (top + 1)))
        ax.bar([-gap], [r.random_negatives], color=RANDOM, width=0.85 if top < 80 else max(1.0, gap / 2),
               label=f"random corpus negatives (n={r.random_negatives:,})")
        ticks = [t for t in ax.get_xticks() if 0 <= t <= top]
        ax.set_xticks([-gap] + ticks, ["random"] + [f"{int(t)}" for t in ticks])
    if f.range_max is not None:
        lo = f.range_min or 0
        ax.axvspan(lo - 0.5, f.range_max - 0.5, color="#cccccc", alpha=0.25, zorder=0,
                   label=f"rank window [{lo}, {f.range_max})")
        ax.set_xlim(left=min(ax.get_xlim()[0], lo - 1.5), right=max(top, f.range_max) + 0.5)
    if not hard and not r.random_negatives:
        _no_data(ax)
    ax.set_title("Rank positions the kept negatives came from")
    ax.set_xlabel("rank among the non-positive candidates (0 = the highest-scoring)")
    ax.set_ylabel("negatives")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8.5, frameon=False, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    _integer_counts(ax)
    caption = ("The rank of each kept negative among its query's candidates once known positives (and documents "
               "with a positive's text) are set aside. Ranks missing near the top were taken by probable false "
               "negatives the filter removed, or skipped by the sampler.")
    return Figure("negative_ranks.png", "Rank positions", caption, _png(fig))


def all_figures(r: ScanResult, f: FilterInfo) -> List[Figure]:
    figs = [scores_figure(r, f), margin_figure(r, f), per_query_figure(r, f), ranks_figure(r, f)]
    return [x for x in figs if x is not None]


__all__ = ["Figure", "FilterInfo", "all_figures", "scores_figure", "margin_figure", "per_query_figure",
           "ranks_figure"]
