"""k-fold evaluation: the rows of k runs, fold i holding out the i-th k-th of the queries, merged into one row per
model as if one model had been scored on every query.

Each fold trains its own model per variant on the other folds' queries; its per-query scores are for its own
held-out queries only, and the folds' held-out sets are disjoint, so the union of the per-query scores covers
every query once. A merged mean is the mean over that union (each fold's mean weighted by its number of held-out
queries), and the paired bootstrap intervals (vs the model before fine-tuning, vs ``compare_to``) resample the
union: with all of SciFact's 809 training queries instead of a 162-query carve, half as wide.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from . import metrics as M
from .tables import BASE_ROW

SUMMED = ("train_rows", "rows_full_negatives", "mine_seconds", "train_seconds", "eval_seconds")


def union_per_query(per_fold: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """The folds' per-query scores as one dict; a query scored by two folds is an error (the folds overlap)."""
    out: Dict[str, float] = {}
    for fold, scores in enumerate(per_fold):
        twice = set(out) & set(scores)
        if twice:
            raise ValueError(f"fold {fold} scores query {sorted(twice)[0]!r} that an earlier fold scored")
        out.update(scores)
    return out


def weighted_mean(values: Sequence[float], weights: Sequence[int]) -> float:
    total = sum(weights)
    if not total:
        raise ValueError("no held-out queries")
    return sum(v * w for v, w in zip(values, weights)) / total


def merge_folds(per_fold: Sequence[List[dict]], samples: int = 2000, seed: int = 0) -> List[dict]:
    """One row per model from each fold's rows (``runner._row`` layout, with ``ndcg@10_per_query``): the means
    over all held-out queries, ``train_rows``/``rows_full_negatives`` and the timings summed over the folds, the
    intervals recomputed on the union, the folds' own rows under ``per_fold``. Models in fold 0's order; a model
    missing from a fold is an error."""
    if not per_fold:
        raise ValueError("no folds")
    by_fold = [{r["model"]: r for r in rows} for rows in per_fold]
    ndcg: Dict[str, Dict[str, float]] = {}
    merged = []
    for first in per_fold[0]:
        name = first["model"]
        missing = [i for i, f in enumerate(by_fold) if name not in f]
        if missing:
            raise ValueError(f"model {name!r} has no row in fold(s) {missing}")
        rows = [f[name] for f in by_fold]
        per_query = union_per_query([r["ndcg@10_per_query"] for r in rows])
        ndcg[name] = per_query
        sizes = [len(r["ndcg@10_per_query"]) for r in rows]
        row = {"model": name, **{m: round(weighted_mean([r[m] for r in rows], sizes), 4) for m in M.METRICS},
               "delta_ndcg@10": None, "negatives_per_row": first.get("negatives_per_row"),
               "folds": len(rows), "heldout_per_fold": sizes, "ndcg@10_per_query": per_query}
        for key in SUMMED:
            values = [r.get(key) for r in rows]
            row[key] = None if any(v is None for v in values) else round(sum(values), 1 if "seconds" in key else 0)
            if key in ("train_rows", "rows_full_negatives") and row[key] is not None:
                row[key] = int(row[key])
        if name != BASE_ROW and BASE_ROW in ndcg:
            row["delta_ndcg@10"] = _rounded(M.paired_bootstrap(ndcg[BASE_ROW], per_query, samples, seed))
        reference = (first.get("delta_vs") or {}).get("reference")
        if reference is not None:
            row["delta_vs"] = {"reference": reference,
                               "delta_ndcg@10": _rounded(M.paired_bootstrap(ndcg[reference], per_query, samples,
                                                                            seed))}
        same = {r.get("same_training_as") for r in rows}
        if len(same) == 1 and None not in same:
            row["same_training_as"] = same.pop()
        row["per_fold"] = [{k: v for k, v in r.items() if k != "ndcg@10_per_query"} for r in rows]
        merged.append(row)
    return merged


def _rounded(d: Optional[Sequence[float]]) -> List[float]:
    return [round(float(x), 4) for x in d]
