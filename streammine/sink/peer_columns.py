"""The peer's output Dataset columns, built from each query's selected negatives (pure, no Ray), and the mined
rows they are selected from (read through ``sink.mined``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

OUTPUT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
# what the selection reads of each mined row (sink.mined reads them; ce scores null unless mined with them)
PEER_ROW_COLUMNS = ["query_id", "positive_ids", "positive_scores", "negative_ids", "negative_scores",
                    "removed_ids", "removed_scores", "positive_ce_scores", "negative_ce_scores"]


@dataclass
class QueryResult:
    query: str
    positives: List[str]          # texts, the query's order
    positive_scores: List[float]
    negatives: List[str]          # texts, score descending
    negative_scores: List[float]


def build_columns(results: Sequence[QueryResult], anchor: str, positive: str, output_format: str,
                  output_scores: bool, num_negatives: int, keep_short: bool) -> dict:
    """The peer's Dataset columns (and their order) for each output format; see ``mine_hard_negatives``."""
    data: dict = {anchor: [], positive: []}
    if output_format == "triplet":
        data["negative"] = []
        if output_scores:
            data["scores"] = []
        for r in results:
            for p, ps in zip(r.positives, r.positive_scores):
                pairs = list(zip(r.negatives, r.negative_scores))
                if not pairs and keep_short:
                    pairs = [(None, None)]
                for n, ns in pairs:
                    data[anchor].append(r.query)
                    data[positive].append(p)
                    data["negative"].append(n)
                    if output_scores:
                        data["scores"].append([ps] if ns is None else [ps, ns])
    elif output_format == "labeled-pair":
        data["score" if output_scores else "label"] = []
        key = "score" if output_scores else "label"
        for r in results:
            for text, score, label in ([(p, s, 1) for p, s in zip(r.positives, r.positive_scores)]
                                       + [(n, s, 0) for n, s in zip(r.negatives, r.negative_scores)]):
                data[anchor].append(r.query)
                data[positive].append(text)
                data[key].append(score if output_scores else label)
    elif output_format == "n-tuple":
        for i in range(1, num_negatives + 1):
            data[f"negative_{i}"] = []
        if output_scores:
            data["scores"] = []
        for r in results:
            if len(r.negatives) < num_negatives and not keep_short:
                continue
            for p, ps in zip(r.positives, r.positive_scores):
                data[anchor].append(r.query)
                data[positive].append(p)
                for i in range(num_negatives):
                    data[f"negative_{i + 1}"].append(r.negatives[i] if i < len(r.negatives) else None)
                if output_scores:
                    data["scores"].append([ps] + list(r.negative_scores))
    elif output_format == "labeled-list":
        data["scores" if output_scores else "labels"] = []
        for r in results:
            if not r.negatives and not keep_short:
                continue
            for p, ps in zip(r.positives, r.positive_scores):
                data[anchor].append(r.query)
                data[positive].append([p] + list(r.negatives))
                if output_scores:
                    data["scores"].append([ps] + list(r.negative_scores))
                else:
                    data["labels"].append([1] + [0] * len(r.negatives))
    else:
        raise ValueError(f"Invalid output_format: {output_format}. Must be one of {', '.join(OUTPUT_FORMATS)}.")
    return data


def rows_by_query(out_url: str) -> dict:
    """query id -> mined row (dict of lists) from a run's committed parts, through the one reader."""
    from ..consume.committed import list_parts
    from .mined import ROW_COLUMNS, column_values, read_batches
    rows = {}
    for _, _, batch in read_batches(list_parts(out_url), PEER_ROW_COLUMNS, required=ROW_COLUMNS):
        cols = {name: column_values(batch, name) for name in PEER_ROW_COLUMNS}
        for i, qid in enumerate(cols["query_id"]):
            rows[qid] = {name: (values[i] if values[i] is not None or name.endswith("ce_scores") else [])
                         for name, values in cols.items()}
    return rows
