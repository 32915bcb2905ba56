"""Compares streammine's negatives with the peer's (benchmarks/peer_st.py JSON), query by query.

    python benchmarks/compare.py --peer peer.json --ours OUTPUT_DIR [--label NAME] [--header] [--out diff.json]

``OUTPUT_DIR`` is a streammine output directory (Parquet parts with at least query_id and negative_ids; the parts
named in ``_parts.json`` when present, else every ``*.parquet`` directly inside). Only hard negatives are compared:
when the parts have ``negative_ranks``, random corpus negatives (rank -1) are left out.

Reported:

* overlap = sum over compared queries of |ours ∩ peer| / sum of |peer| (compared = queries the peer emitted, i.e.
  not dropped by ST's n-tuple format for being short, that ours also has);
* exact-match share: the share of compared queries whose negative sets are equal (and, separately, equal lists);
* every differing query with both lists and, per differing document, a reason from ``classify_difference``
  (which uses the peer's diagnostics: its candidates, their status, s+ and threshold; and ours: ranks, scores,
  removed ids, s+);
* queries the peer dropped as short, and queries only one side has.

The last stdout line (or two, with ``--header``) is a markdown table row.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import fsspec
import pyarrow.parquet as pq

OUR_COLUMNS = ["query_id", "negative_ids", "negative_ranks", "negative_scores", "removed_ids", "removed_scores",
               "positive_ids", "positive_ref", "short"]

DUPLICATE_TEXT = "duplicate corpus text"
PEER_WINDOW = "peer window reaches past range_max because range_max+max_positives were retrieved"
TIE = "tie / float rounding at the threshold"
OURS_FILTERED = "ours removed it as a probable false negative, peer kept it (s+ or threshold differs)"
PEER_FILTERED = "peer removed it by the relative margin, ours kept it (s+ or threshold differs)"
PEER_POSITIVE = "peer masks it as a positive"
PEER_MERGED_QUERY = "peer merged duplicate query texts: it is a positive of the other query id"
NOT_IN_PEER_CANDIDATES = "not among the peer's range_max+max_positives retrieved candidates (scores differ)"
DISPLACED = "displaced: the other side's first num_negatives survivors were different documents"
OURS_DID_NOT_KEEP = "ours did not keep it (not removed by our filter; our scores or window differ)"
UNEXPLAINED = "unexplained (no diagnostics)"
ORDER_ONLY = "same set, different order (near-equal scores)"


# ---- inputs --------------------------------------------------------------------------------------------------

@dataclass
class OurQuery:
    negative_ids: List[str]
    negative_ranks: List[int] = field(default_factory=list)
    negative_scores: List[float] = field(default_factory=list)
    removed: Dict[str, float] = field(default_factory=dict)   # doc id -> score
    positive_ids: List[str] = field(default_factory=list)
    positive_ref: Optional[float] = None
    short: bool = False


def our_part_urls(out_url: str) -> List[str]:
    fs, path = fsspec.core.url_to_fs(out_url)
    base = path.rstrip("/")
    manifest = f"{base}/_parts.json"
    if fs.exists(manifest):
        with fs.open(manifest, "rt") as f:
            names = [p["part"] for p in json.load(f)["parts"]]
    else:
        names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(base, detail=False) if p.endswith(".parquet"))
    return [f"{out_url.rstrip('/')}/{name}" for name in names]


def hard_negatives(row: dict) -> OurQuery:
    """Our row -> OurQuery, leaving out random corpus negatives (rank -1)."""
    ids = row["negative_ids"] or []
    ranks = row.get("negative_ranks") or [0] * len(ids)
    scores = row.get("negative_scores") or [math.nan] * len(ids)
    keep = [i for i, r in enumerate(ranks) if r is None or r >= 0]
    removed = dict(zip(row.get("removed_ids") or [], row.get("removed_scores") or []))
    return OurQuery([ids[i] for i in keep], [ranks[i] for i in keep], [scores[i] for i in keep], removed,
                    row.get("positive_ids") or [], row.get("positive_ref"), bool(row.get("short")))


def read_ours(out_url: str) -> Dict[str, OurQuery]:
    """query id -> OurQuery, streaming over the parts; a query id seen twice is an error (one model version)."""
    ours: Dict[str, OurQuery] = {}
    for url in our_part_urls(out_url):
        with fsspec.open(url, "rb") as f:
            parquet = pq.ParquetFile(f)
            columns = [c for c in OUR_COLUMNS if c in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(columns=columns):
                for row in batch.to_pylist():
                    if row["query_id"] in ours:
                        raise ValueError(f"{url}: query {row['query_id']!r} appears twice in {out_url}")
                    ours[row["query_id"]] = hard_negatives(row)
    return ours


# ---- classifying a difference --------------------------------------------------------------------------------

@dataclass
class Context:
    range_max: int = 50
    num_negatives: int = 5
    margin: float = 0.05
    tie_eps: float = 1e-4
    canonical: Dict[str, str] = field(default_factory=dict)   # doc id -> the id ST merged its text into

    def canon(self, doc_id: str) -> str:
        return self.canonical.get(doc_id, doc_id)


def peer_candidate(peer_q: dict, doc_id: str, ctx: Context):
    """(status, score, rank among non-positive candidates) of doc_id in the peer's candidates, or None."""
    ids = peer_q.get("candidate_ids")
    if not ids:
        return None
    target = ctx.canon(doc_id)
    nonpositive = 0
    for doc, score, status in zip(ids, peer_q["candidate_scores"], peer_q["candidate_status"]):
        if doc is not None and ctx.canon(doc) == target:
            return status, score, nonpositive
        if status != "positive":
            nonpositive += 1
    return "absent", None, None


def near(a: Optional[float], b: Optional[float], eps: float) -> bool:
    return a is not None and b is not None and not math.isnan(a) and not math.isnan(b) and abs(a - b) <= eps


def our_threshold(ours_q: OurQuery, margin: float) -> Optional[float]:
    """Our filter's cut for the same margin: s+ - |s+| * margin (topk-percpos with perc = 1 - margin)."""
    s = ours_q.positive_ref
    return None if s is None or math.isnan(s) else s - abs(s) * margin


def at_threshold(peer_score, peer_q: dict, our_score, ours_q: OurQuery, ctx: Context) -> bool:
    return (near(peer_score, peer_q.get("threshold"), ctx.tie_eps)
            or near(our_score, our_threshold(ours_q, ctx.margin), ctx.tie_eps))


def classify_difference(doc_id: str, side: str, peer_q: dict, ours_q: OurQuery, ctx: Context) -> str:
    """Why doc_id is a negative on one side only. ``side``: "peer_only" or "ours_only"."""
    other = ours_q.negative_ids if side == "peer_only" else peer_q["negative_ids"]
    if ctx.canon(doc_id) in {ctx.canon(d) for d in other}:
        return DUPLICATE_TEXT
    candidate = peer_candidate(peer_q, doc_id, ctx)
    if side == "peer_only":
        return _classify_peer_only(doc_id, peer_q, ours_q, ctx, candidate)
    if ctx.canon(doc_id) in {ctx.canon(d) for d in peer_q.get("positive_ids", [])}:
        return DUPLICATE_TEXT  # same text as one of the query's positives: ST sees the positive itself
    return _classify_ours_only(doc_id, peer_q, ours_q, ctx, candidate)


def _classify_peer_only(doc_id, peer_q, ours_q: OurQuery, ctx: Context, candidate) -> str:
    if candidate is not None and candidate[0] != "absent" and candidate[2] >= ctx.range_max:
        return PEER_WINDOW
    peer_score = candidate[1] if candidate else None
    if doc_id in ours_q.removed:
        if at_threshold(peer_score, peer_q, ours_q.removed[doc_id], ours_q, ctx):
            return TIE
        return OURS_FILTERED
    if len(ours_q.negative_ids) >= ctx.num_negatives:
        return DISPLACED
    return OURS_DID_NOT_KEEP


def _classify_ours_only(doc_id, peer_q, ours_q: OurQuery, ctx: Context, candidate) -> str:
    if candidate is None:
        return UNEXPLAINED
    status, peer_score, _ = candidate
    if status == "positive":
        return PEER_MERGED_QUERY if peer_q.get("merged_query_ids") else PEER_POSITIVE
    if status == "margin":
        our_score = dict(zip(ours_q.negative_ids, ours_q.negative_scores)).get(doc_id)
        return TIE if at_threshold(peer_score, peer_q, our_score, ours_q, ctx) else PEER_FILTERED
    if status == "kept":
        return DISPLACED
    return NOT_IN_PEER_CANDIDATES


# ---- comparing -----------------------------------------------------------------------------------------------

def compare_query(qid: str, peer_q: dict, ours_q: OurQuery, ctx: Context) -> Optional[dict]:
    """None when both lists are equal; else both lists and a reason per differing document."""
    peer_ids, our_ids = peer_q["negative_ids"], ours_q.negative_ids
    if peer_ids == our_ids:
        return None
    peer_set, our_set = set(peer_ids), set(our_ids)
    return {"query_id": qid, "peer": peer_ids, "ours": our_ids, "same_set": peer_set == our_set,
            "peer_only": {d: classify_difference(d, "peer_only", peer_q, ours_q, ctx)
                          for d in peer_ids if d not in our_set},
            "ours_only": {d: classify_difference(d, "ours_only", peer_q, ours_q, ctx)
                          for d in our_ids if d not in peer_set}}


def context_from_peer(peer: dict, tie_eps: float) -> Context:
    params = peer.get("params", {})
    return Context(range_max=params.get("range_max", 50), num_negatives=params.get("num_negatives", 5),
                   margin=params.get("relative_margin", 0.05), tie_eps=tie_eps,
                   canonical=peer.get("doc_text_duplicates", {}))


def compare(peer: dict, ours: Dict[str, OurQuery], tie_eps: float = 1e-4) -> dict:
    ctx = context_from_peer(peer, tie_eps)
    peer_queries = peer["queries"]
    compared = [q for q in peer_queries if q in ours and not peer_queries[q].get("short")]
    peer_short = [q for q in peer_queries if peer_queries[q].get("short")]
    shared = overlap = exact_set = exact_order = 0
    differences = []
    for qid in compared:
        peer_ids, our_ids = peer_queries[qid]["negative_ids"], ours[qid].negative_ids
        shared += len(set(peer_ids) & set(our_ids))
        overlap += len(set(peer_ids))
        exact_set += set(peer_ids) == set(our_ids)
        exact_order += peer_ids == our_ids
        diff = compare_query(qid, peer_queries[qid], ours[qid], ctx)
        if diff:
            differences.append(diff)
    reasons = Counter(r for d in differences for side in ("peer_only", "ours_only") for r in d[side].values())
    order_only = sum(1 for d in differences if d["same_set"])
    if order_only:
        reasons[ORDER_ONLY] = order_only  # counted in queries, not documents
    n = len(compared)
    return {
        "queries_peer": len(peer_queries), "queries_ours": len(ours), "queries_compared": n,
        "overlap": shared / overlap if overlap else math.nan,
        "exact_set_share": exact_set / n if n else math.nan,
        "exact_order_share": exact_order / n if n else math.nan,
        "queries_differing": len(differences),
        "reasons": dict(reasons.most_common()),
        "peer_short": len(peer_short),
        "peer_short_ours_short_too": sum(1 for q in peer_short if q in ours and ours[q].short),
        "peer_short_list": [{"query_id": q, "peer_survivors": peer_queries[q].get("survivor_ids", []),
                             "ours": ours[q].negative_ids if q in ours else None} for q in peer_short],
        "only_in_peer": sorted(q for q in peer_queries if q not in ours),
        "only_in_ours": sorted(q for q in ours if q not in peer_queries),
        "peer_wall_seconds": peer.get("wall_seconds"),
        "differences": differences,
    }


# ---- printing ------------------------------------------------------------------------------------------------

TABLE_HEADER = ("| run | queries compared | negative overlap | exact set match | exact order match | queries differing "
                "| peer short (ours short too) | peer wall s |\n|---|---|---|---|---|---|---|---|")


def markdown_row(label: str, r: dict) -> str:
    wall = f"{r['peer_wall_seconds']:.1f}" if r.get("peer_wall_seconds") is not None else "-"
    return (f"| {label} | {r['queries_compared']} | {r['overlap']:.2%} | {r['exact_set_share']:.2%} "
            f"| {r['exact_order_share']:.2%} | {r['queries_differing']} "
            f"| {r['peer_short']} ({r['peer_short_ours_short_too']}) | {wall} |")


def difference_lines(r: dict) -> List[str]:
    lines = []
    for d in r["differences"]:
        lines.append(f"- query {d['query_id']}: peer {d['peer']} / ours {d['ours']}")
        for side in ("peer_only", "ours_only"):
            for doc, reason in d[side].items():
                lines.append(f"    - {side.replace('_', ' ')} {doc}: {reason}")
        if d["same_set"]:
            lines.append(f"    - {ORDER_ONLY}")
    return lines


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Compare streammine negatives with peer_st.py's.")
    p.add_argument("--peer", required=True, help="peer_st.py results JSON")
    p.add_argument("--ours", required=True, help="streammine output directory (Parquet parts)")
    p.add_argument("--label", default="streammine vs sentence-transformers")
    p.add_argument("--tie-eps", type=float, default=1e-4, help="score distance from a threshold counted as a tie")
    p.add_argument("--header", action="store_true", help="print the markdown table header before the row")
    p.add_argument("--out", help="write the full comparison (every difference) as JSON")
    a = p.parse_args(argv)
    with fsspec.open(a.peer, "rt") as f:
        peer = json.load(f)
    result = compare(peer, read_ours(a.ours), a.tie_eps)
    if a.out:
        with fsspec.open(a.out, "wt") as f:
            json.dump(result, f, indent=1)
    for line in difference_lines(result):
        print(line)
    print("reasons (documents):", json.dumps(result["reasons"]), file=sys.stdout)
    if result["only_in_peer"] or result["only_in_ours"]:
        print(f"queries only in peer: {len(result['only_in_peer'])}, only in ours: {len(result['only_in_ours'])}")
    if a.header:
        print(TABLE_HEADER)
    print(markdown_row(a.label, result))
    return result


if __name__ == "__main__":
    main()
