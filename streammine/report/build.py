"""``run_report``: a mining output (local or any fsspec URL) -> report.html, PNG figures and stats.json.

Passes: one over the output's Parquet parts (a record batch at a time, see :mod:`.scan`), then, for the sampled
queries only, one over the run's corpus to fetch their documents' texts (stopping once all are found).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Callable, Optional

import numpy as np

from ..errors import StreamMineError
from ..io import fs
from ..consume.committed import PARTS_MANIFEST, resolve_parts
from .figures import FilterInfo, all_figures
from .html import SHOWN_PER_COLUMN, render_page
from .scan import scan_output
from .texts import fetch_texts

log = logging.getLogger("streammine")


def read_summary(output_url: str) -> Optional[dict]:
    return fs.read_json(fs.join(output_url, "summary.json"))


def output_parts(output_url: str) -> list:
    """The committed parts (listed in the output's manifest), else the ``*.parquet`` files directly in the directory."""
    if not fs.exists(output_url):
        raise StreamMineError(f"{output_url}: not found")
    parts = resolve_parts(output_url)
    if not parts and not fs.exists(fs.join(output_url, PARTS_MANIFEST)):
        raise StreamMineError(f"{output_url}: no mining output here (no {PARTS_MANIFEST} and no .parquet parts)")
    return parts


def filter_from_config(config: Optional[dict]) -> tuple[Optional[Callable], FilterInfo]:
    """(bounds function positive_ref -> per-query threshold, or None; what to say about the filter/sampler)."""
    from ..config import FilterConfig, SamplerConfig
    from ..mining.filters import score_upper_bound
    from ..mining.samplers import window_end
    mining = (config or {}).get("mining") or {}
    if not mining:
        return None, FilterInfo()
    f = FilterConfig(**{k: v for k, v in (mining.get("filter") or {}).items()
                        if k in FilterConfig.__dataclass_fields__})
    s = SamplerConfig(**{k: v for k, v in (mining.get("sampler") or {}).items()
                         if k in SamplerConfig.__dataclass_fields__})
    text = {"topk-abs": f"max_score {f.max_score:g}", "topk-marginpos": f"s⁺ − {f.margin:g}",
            "topk-percpos": f"{f.perc:g}·s⁺"}.get(f.method)
    info = FilterInfo(method=f.method, bound_text=text, min_score=f.min_score, num_negatives=s.num_negatives,
                      range_min=s.range_min, range_max=window_end(s))
    if f.method == "none":
        return None, info

    def bounds(positive_ref: np.ndarray) -> np.ndarray:
        ref = np.asarray(positive_ref, np.float64)
        known = np.isfinite(ref)
        out = np.asarray(score_upper_bound(np.where(known, ref, 0.0), f), np.float64)
        if f.method != "topk-abs":
            out = np.where(known, out, np.nan)  # relative to a positive that is unknown: no threshold
        return out
    return bounds, info


def _pct(a: int, b: int) -> str:
    return f"{a:,} ({100.0 * a / b:.1f} %)" if b else f"{a:,}"


def summary_agreement(summary: Optional[dict], stats: dict) -> Optional[dict]:
    """The summary.json counts the report recomputed, and whether they agree."""
    counts = (summary or {}).get("counts")
    if not counts:
        return None
    pairs = {"queries_out": stats["queries"], "negatives": stats["negatives"],
             "queries_short_of_negatives": stats["short"],
             "removed_probable_false_negatives": stats["counts"]["n_removed_filter"],
             "removed_near_duplicate_of_positive": stats["counts"]["n_removed_near_duplicate_of_positive"],
             "removed_near_duplicate_negative": stats["counts"]["n_removed_near_duplicate_negative"],
             "supplied_negatives_used": stats["counts"]["n_supplied_negatives"],
             "judged_below_positive_grade": stats["counts"]["n_below_grade"]}
    return {k: {"summary": counts.get(k), "report": v, "agree": counts.get(k) == v} for k, v in pairs.items()
            if k in counts}


def run_report(output_url: str, report_dir: Optional[str] = None, sample: int = 20, seed: int = 0,
               texts: bool = True, batch_rows: int = 2048) -> dict:
    """Writes ``report.html`` (self-contained), its figures as PNG files and ``stats.json`` into ``report_dir``
    (default ``<output>/report``); returns the stats (also in stats.json) with ``report`` = the page's URL."""
    t0 = time.perf_counter()
    output_url = str(output_url)
    report_dir = str(report_dir) if report_dir else fs.join(output_url, "report")
    parts = output_parts(output_url)
    summary = read_summary(output_url)
    config = (summary or {}).get("config")
    bounds, info = filter_from_config(config)

    result = scan_output(parts, bounds, sample=sample, seed=seed, batch_rows=batch_rows)
    examples = sorted(result.sample.rows(), key=lambda row: str(row.get("query_id")))
    notes = []
    doc_texts = {}
    if texts and examples:
        wanted = {d for row in examples for key in ("positive_ids", "negative_ids", "removed_ids")
                  for d in (row.get(key) or [])[:SHOWN_PER_COLUMN]}
        doc_texts, why = fetch_texts((config or {}).get("input"), wanted)
        if why:
            notes.append(f"Example documents are shown by id only: {why}.")
        elif len(doc_texts) < len(wanted):
            notes.append(f"{len(wanted) - len(doc_texts)} of the {len(wanted)} example documents were not found in "
                         "the run's corpus (changed since the run?); they are shown by id only.")
    if summary is None:
        notes.append("The output has no summary.json: the filter threshold and the run settings are unknown.")
    if result.missing_columns:
        notes.append("This output lacks the columns " + ", ".join(sorted(result.missing_columns))
                     + " (written by an older streammine); the figures that need them are left out.")

    figures = all_figures(result, info)
    stats = result.to_dict()
    agreement = summary_agreement(summary, stats)
    if agreement and not all(v["agree"] for v in agreement.values()):
        notes.append("The counts recomputed here differ from summary.json: "
                     + "; ".join(f"{k}: summary {v['summary']}, parts {v['report']}"
                                 for k, v in agreement.items() if not v["agree"]))

    q = result.queries
    hist = result.negative_scores
    numbers = [
        ("queries", f"{q:,}"),
        ("negatives", f"{result.negatives:,}" + (f" ({result.negatives / q:.2f} per query)" if q else "")),
        ("… of which random corpus negatives", f"{result.random_negatives:,}"),
        ("queries short of negatives" + (f" (< {info.num_negatives})" if info.num_negatives else ""),
         _pct(result.short, q)),
        ("removed as probable false negatives", f"{result.removed:,} in {_pct(result.queries_with_removed, q)} "
                                                "queries"),
        ("known positives skipped", f"{result.counts['n_removed_positive']:,}"),
        ("same text as a positive, skipped", f"{result.counts['n_removed_same_text']:,}"),
        ("below min_score, skipped", f"{result.counts['n_removed_min_score']:,}"),
        ("near-duplicates of a positive, removed", f"{result.counts['n_removed_near_duplicate_of_positive']:,}"),
        ("near-duplicates of a kept negative, passed over",
         f"{result.counts['n_removed_near_duplicate_negative']:,}"),
        ("supplied negatives used", f"{result.counts['n_supplied_negatives']:,}"),
        ("judged below the positive grade, skipped", f"{result.counts['n_below_grade']:,}"),
        ("candidates seen", f"{result.counts['n_candidates']:,}"),
        ("positives (not found in the corpus)", f"{result.positives:,} ({result.positives_not_found:,})"),
        ("mean score: positives / kept negatives / removed",
         " / ".join("—" if not h.n else f"{h.mean:.4f}"
                    for h in (result.positive_scores, hist, result.removed_scores))),
    ]
    if info.method:
        numbers.append(("filter", info.method + (f": keep s < {info.bound_text}" if info.bound_text else "")
                        + (f", s ≥ {info.min_score:g}" if info.min_score is not None else "")))
        sampler = ((config or {}).get("mining") or {}).get("sampler") or {}
        numbers.append(("sampler", f"{sampler.get('method')}, {info.num_negatives} negatives, rank window "
                                   f"[{info.range_min}, {info.range_max})"
                        + (f", random share {sampler.get('random_share'):g}" if sampler.get("random_share") else "")))
    if agreement:
        numbers.append(("agrees with summary.json", "yes" if all(v["agree"] for v in agreement.values()) else "NO"))

    meta = [("output", output_url), ("model", (summary or {}).get("model")),
            ("model version", (summary or {}).get("model_version")), ("config", (summary or {}).get("config_hash")),
            ("mined", (summary or {}).get("finished_at")),
            ("report", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))]
    sample_note = (f"{len(examples)} of {q:,} queries, drawn uniformly at random (seed {seed}); "
                   "documents by score, highest first. Green: the query's positives; red: candidates the filter "
                   "removed as probable false negatives; blue: the negatives kept, with the rank they came from.")
    page = render_page(title="streammine mining report", meta=meta, numbers=numbers, figures=figures,
                       examples=examples, texts=doc_texts, sample_note=sample_note, notes=notes)

    fs.makedirs(report_dir)
    for fig in figures:
        with fs.open_url(fs.join(report_dir, fig.name), "wb", compression=None) as f:
            f.write(fig.png)
    report_url = fs.join(report_dir, "report.html")
    stats.update(output=output_url, report=report_url, figures=[fs.join(report_dir, f.name) for f in figures],
                 sample=[row.get("query_id") for row in examples], sample_seed=seed,
                 texts_found=len(doc_texts), notes=notes, summary_agreement=agreement,
                 filter={"method": info.method, "bound": info.bound_text, "min_score": info.min_score},
                 seconds=round(time.perf_counter() - t0, 3))
    with fs.open_url(fs.join(report_dir, "stats.json"), "wt") as f:
        json.dump(stats, f, indent=1, default=str)
    with fs.open_url(report_url, "wt") as f:
        f.write(page)
    log.debug("report: %s (%d queries, %d figures)", report_url, q, len(figures))
    return stats
