"""The run summary (summary.json beside the output): counts, time per stage, the resolved config."""
from __future__ import annotations

import json
import time

import numpy as np
import pyarrow.compute as pc

from ..io import fs
from .parts import iter_rows

COUNT_COLUMNS = ["n_candidates", "n_removed_positive", "n_removed_same_text", "n_removed_filter",
                 "n_removed_min_score", "n_removed_cross_encoder", "n_removed_near_duplicate_of_positive",
                 "n_removed_near_duplicate_negative", "n_supplied_negatives", "n_below_grade"]


# Counters the miners report through the stage metrics (MetricsClient.count): summary counts, not stages.
# deeper_searches: query searches repeated deeper to fill a rank window (mining/depth.py); certificate_researches:
# (query, shard) searches repeated deeper to certify an exact top k (IndexShard.search).
MINER_COUNTERS = ("deeper_searches", "certificate_researches")


def count_output(out_url: str, random_share_n: int = 0) -> dict:
    """Streams over the committed parts and adds up what the mining stage recorded per query.

    ``random_share_n``: the random negatives a query's share asks for (``mining.num_random``); the random
    negatives beyond it (only with ``fill_with_random``) are counted as ``random_fill_negatives``."""
    totals = {c: 0 for c in COUNT_COLUMNS}
    queries = negatives = short = randoms = filled = 0
    for batch in iter_rows(out_url, columns=COUNT_COLUMNS + ["negative_ids", "negative_ranks", "short"]):
        queries += batch.num_rows
        negatives += int(pc.sum(pc.list_value_length(batch.column("negative_ids"))).as_py() or 0)
        short += int(np.count_nonzero(batch.column("short").to_numpy(zero_copy_only=False)))
        for c in COUNT_COLUMNS:
            totals[c] += int(pc.sum(batch.column(c)).as_py() or 0)
        ranks = batch.column("negative_ranks")
        if batch.num_rows and len(pc.list_flatten(ranks)):
            is_random = pc.equal(pc.list_flatten(ranks), -1).to_numpy(zero_copy_only=False)
            per_row = np.bincount(pc.list_parent_indices(ranks).to_numpy(), weights=is_random,
                                  minlength=batch.num_rows).astype(np.int64)
            randoms += int(per_row.sum())
            filled += int(np.maximum(per_row - int(random_share_n), 0).sum())
    return {"queries_out": queries, "negatives": negatives, "queries_short_of_negatives": short,
            "random_negatives": randoms, "random_fill_negatives": filled,
            "candidates_seen": totals["n_candidates"], "removed_known_positives": totals["n_removed_positive"],
            "removed_same_text_as_positive": totals["n_removed_same_text"],
            "removed_probable_false_negatives": totals["n_removed_filter"],
            "removed_below_min_score": totals["n_removed_min_score"],
            "removed_by_cross_encoder": totals["n_removed_cross_encoder"],
            "removed_near_duplicate_of_positive": totals["n_removed_near_duplicate_of_positive"],
            "removed_near_duplicate_negative": totals["n_removed_near_duplicate_negative"],
            "supplied_negatives_used": totals["n_supplied_negatives"],
            "judged_below_positive_grade": totals["n_below_grade"]}


def build_summary(cfg, out_url: str, phases: dict, stages: dict, shards: list, store: dict) -> dict:
    from ..io.records import count_quarantine
    quarantine_url = fs.join(out_url, "_quarantine")
    quarantined = count_quarantine(quarantine_url) if fs.exists(quarantine_url) else {}
    from ..mining import num_random
    counts = count_output(out_url, num_random(cfg.mining.sampler))
    for name in MINER_COUNTERS:
        counts[name] = int(stages.get(name, {}).get("rows", 0))
    stages = {name: v for name, v in stages.items() if name not in MINER_COUNTERS}
    # queries reach the miner encoded, or from the query-vector cache of an unchanged model
    encoded_queries = stages.get("encode_queries", {}).get("rows", 0)
    cached_queries = stages.get("queries_cached", {}).get("rows", 0)
    # every query read: mined, or quarantined with its reason (a bad or duplicate line, no positive, no positive
    # in the corpus); strict mode stops at the first of those, so there queries_in == queries_out
    counts["queries_in"] = counts["queries_out"] + int(quarantined.get("query", 0))
    counts["queries_encoded"], counts["queries_from_cache"] = encoded_queries, cached_queries
    counts["documents_encoded"] = int(store.get("encoded", 0)) if not store.get("reused") else 0
    # a reused store is the cache's as a whole; a new one may hold documents copied from an older store
    counts["documents_from_cache"] = int(store.get("docs", 0)) if store.get("reused") else \
        int(store.get("cached", 0))
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
        # the precision the encoders ran (encode/precision.py: auto resolved; none for precomputed vectors)
        "encoder": {"precision": cfg.encoder.precision if cfg.encoder.kind == "sentence-transformers" else None},
        "index": {"shards": shards, "store_reused": bool(store.get("reused"))},
        "config": cfg.to_dict(),
    }


def write_summary(out_url: str, summary: dict) -> None:
    # whole or nothing (summary.json marks a finished output): values JSON lacks are written as strings
    fs.write_json_atomic(fs.join(out_url, "summary.json"), json.loads(json.dumps(summary, default=str)))
