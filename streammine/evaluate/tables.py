"""The tables of ``streammine eval``: one run's rows (:func:`format_table`) and several seeds' rows pooled
(:func:`seed_summary`, :func:`format_seed_table`)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import StreamMineError
from . import metrics as M

BASE_ROW = "before fine-tuning"


def _interval(d: Optional[Sequence[float]]) -> str:
    return "" if d is None else f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]"


def _rows_cell(r: dict) -> str:
    """``737 (613)``: the training rows and, for a mined variant, how many of them had all n negatives."""
    if r.get("train_rows") is None:
        return ""
    full = r.get("rows_full_negatives")
    return f"{r['train_rows']}" + ("" if full is None or not r.get("negatives_per_row") else f" ({full})")


def format_table(rows: List[dict]) -> str:
    vs = any(r.get("delta_vs") for r in rows)  # the column only when a variant names compare_to
    head = ("| model | nDCG@10 | MRR@10 | Recall@100 | ΔnDCG@10 vs before (95% CI) "
            + ("| ΔnDCG@10 vs compare_to (95% CI) " if vs else "")
            + "| negatives/row | train rows (with all negatives) | mine s | train s | eval s |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        cell = lambda x: "" if x is None else str(x)  # noqa: E731
        ref = r.get("delta_vs")
        vs_cell = (f"| {_interval(ref['delta_ndcg@10'])} vs {ref['reference']} " if ref else "| ") if vs else ""
        lines.append(f"| {r['model']} | {r['ndcg@10']:.4f} | {r['mrr@10']:.4f} | {r['recall@100']:.4f} "
                     f"| {_interval(r['delta_ndcg@10'])} {vs_cell}"
                     f"| {cell(r['negatives_per_row'])} | {_rows_cell(r)} | {cell(r['mine_seconds'])} "
                     f"| {cell(r['train_seconds'])} | {cell(r['eval_seconds'])} |")
    return "\n".join(lines)


def seed_summary(per_seed: Dict[int, List[dict]], samples: int = 2000) -> List[dict]:
    """Rows of several runs that differ only in ``base.seed`` (same held-out split) -> one row per model: the mean
    and every seed's nDCG@10, every seed's ΔnDCG@10 interval vs the model before fine-tuning (each run's own paired
    bootstrap) and, where the rows carry per-query nDCG@10, the pooled intervals over all seeds
    (:func:`metrics.pooled_paired_bootstrap`) vs the model before fine-tuning and vs the variant's ``compare_to``.
    Models in the order of the first seed's rows; a model missing from a seed is an error."""
    seeds = sorted(per_seed)
    if not seeds:
        raise ValueError("no seeds")
    by_seed = {s: {r["model"]: r for r in per_seed[s]} for s in seeds}

    def pooled(reference: str, name: str) -> Optional[List[float]]:
        runs = [(by_seed[s].get(reference, {}).get("ndcg@10_per_query"), by_seed[s][name].get("ndcg@10_per_query"))
                for s in seeds]
        if any(a is None or b is None for a, b in runs):
            return None
        d = M.pooled_paired_bootstrap([a for a, _ in runs], [b for _, b in runs], samples, seeds[0])
        return [round(x, 4) for x in d]

    out = []
    for r in per_seed[seeds[0]]:
        name = r["model"]
        missing = [s for s in seeds if name not in by_seed[s]]
        if missing:
            raise StreamMineError(f"model {name!r} has no row for seed(s) {missing}")
        values = [by_seed[s][name]["ndcg@10"] for s in seeds]
        row = {"model": name, "seeds": seeds, "ndcg@10_mean": round(float(np.mean(values)), 4),
               "ndcg@10_per_seed": values,
               "delta_ndcg@10_per_seed": [by_seed[s][name]["delta_ndcg@10"] for s in seeds],
               "delta_ndcg@10_pooled": None if name == BASE_ROW else pooled(BASE_ROW, name),
               "train_rows_per_seed": [by_seed[s][name].get("train_rows") for s in seeds],
               "rows_full_negatives_per_seed": [by_seed[s][name].get("rows_full_negatives") for s in seeds],
               "negatives_per_row": r.get("negatives_per_row")}
        reference = (r.get("delta_vs") or {}).get("reference")
        if reference is not None:
            row["delta_vs_pooled"] = {"reference": reference, "delta_ndcg@10": pooled(reference, name)}
        out.append(row)
    return out


def _seed_rows_cell(r: dict) -> str:
    cells = [_rows_cell({"train_rows": n, "rows_full_negatives": f, "negatives_per_row": r.get("negatives_per_row")})
             for n, f in zip(r.get("train_rows_per_seed") or [], r.get("rows_full_negatives_per_seed") or [])]
    return "; ".join(cells) if len(set(cells)) > 1 else (cells[0] if cells else "")


def format_seed_table(summary: List[dict]) -> str:
    lines = ["| model | mean nDCG@10 | nDCG@10 per seed | ΔnDCG@10 vs before, all seeds (95% CI) "
             "| ΔnDCG@10 vs compare_to, all seeds (95% CI) | ΔnDCG@10 vs before per seed (95% CI) "
             "| train rows (with all negatives) per seed |",
             "|---|---|---|---|---|---|---|"]
    for r in summary:
        deltas = "; ".join(_interval(d) for d in r["delta_ndcg@10_per_seed"])
        per = ", ".join(f"{v:.4f}" for v in r["ndcg@10_per_seed"])
        vs = r.get("delta_vs_pooled")
        vs_cell = f"{_interval(vs['delta_ndcg@10'])} vs {vs['reference']}" if vs and vs["delta_ndcg@10"] else ""
        lines.append(f"| {r['model']} | {r['ndcg@10_mean']:.4f} | {per} | {_interval(r.get('delta_ndcg@10_pooled'))} "
                     f"| {vs_cell} | {deltas if deltas.strip('; ') else ''} | {_seed_rows_cell(r)} |")
    return "\n".join(lines)


TABLE_NOTE = ("mine s: the first mining run encodes the corpus into the shared embedding store, the others reuse "
              "it; eval s: encoding the corpus and the held-out queries, ranking, scoring (the model before "
              "fine-tuning takes its corpus vectors from the store when it can)")


