"""The run summary (summary.json beside the output): counts, time per stage, the resolved config."""
from __future__ import annotations

import json
import time

import numpy as np
import pyarrow.compute as pc

from ..io import fs
from .parts import iter_rows

COUNT_COLUMNS = ["n_candidates", "n_removed_positive", "n_removed_same_text", "n_removed_filter",
                 "n_removed_min_score", "n_removed_cross_encoder"]


def count_output(out_url: str) -> dict:
    """Streams over the committed parts and adds up what the mining stage recorded per query."""
    totals = {c: 0 for c in COUNT_COLUMNS}
    queries = negatives = short = 0
    for batch in iter_rows(out_url, columns=COUNT_COLUMNS + ["negative_ids", "short"]):
        queries += batch.num_rows
        negatives += int(pc.sum(pc.list_value_length(batch.column("negative_ids"))).as_py() or 0)
        short += int(np.count_nonzero(batch.column("short").to_numpy(zero_copy_only=False)))
        for c in COUNT_COLUMNS:
            totals[c] += int(pc.sum(batch.column(c)).as_py() or 0)
    return {"queries_out": queries, "negatives": negatives, "queries_short_of_negatives": short,
            "candidates_seen": totals["n_candidates"], "removed_known_positives": totals["n_removed_positive"],
            "removed_same_text_as_positive": totals["n_removed_same_text"],
            "removed_probable_false_negatives": totals["n_removed_filter"],
            "removed_below_min_score": totals["n_removed_min_score"],
            "removed_by_cross_encoder": totals["n_removed_cross_encoder"]}


def build_summary(cfg, out_url: str, phases: dict, stages: dict, shards: list, store: dict) -> dict:
    from ..io.records import count_quarantine
    quarantine_url = fs.join(out_url, "_quarantine")
    quarantined = count_quarantine(quarantine_url) if fs.exists(quarantine_url) else {}
    counts = count_output(out_url)
    # queries reach the miner encoded, or from the query-vector cache of an unchanged model
    encoded_queries = stages.get("encode_queries", {}).get("rows", 0)
    cached_queries = stages.get("queries_cached", {}).get("rows", 0)
    # every query read: mined, or quarantined with its reason (a bad or duplicate line, no positive, no positive
    # in the corpus); strict mode stops at the first of those, so there queries_in == queries_out
    counts["queries_in"] = counts["queries_out"] + int(quarantined.get("query", 0))
    counts["queries_encoded"], counts["queries_from_cache"] = encoded_queries, cached_queries
    counts["documents_encoded"] = int(store.get("encoded", 0)) if not store.get("reused") else 0
    counts["quarantined"] = quarantined
    counts["quarantined_total"] = int(sum(quarantined.values()))
    counts["corpus_documents"] = int(store.get("docs", 0))
    return {
        "output": out_url,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": cfg.encoder.model or "all-MiniLM-L6-v2",
        "model_version": store.get("store_key"),
        "config_hash": cfg.config_hash(),
        "counts": counts,
        "seconds": dict(phases, total=round(sum(phases.values()), 3)),
        "stages": stages,
        "index": {"shards": shards, "store_reused": bool(store.get("reused"))},
        "config": cfg.to_dict(),
    }


def write_summary(out_url: str, summary: dict) -> None:
    # whole or nothing (summary.json marks a finished output): values JSON lacks are written as strings
    fs.write_json_atomic(fs.join(out_url, "summary.json"), json.loads(json.dumps(summary, default=str)))
