"""How close do a model's top candidates come to a query's positives? The numbers behind choosing
``mining.near_duplicate.positive``: for each query, the top ``--depth`` non-positive candidates by the model's
cosine, and each one's highest cosine to any of the query's positives; counted at several thresholds.

Independent of streammine's pipeline (sentence-transformers and numpy, exact search), so it can check what the
guard removes in a mining run.

    python benchmarks/near_duplicate_scan.py --data ../shared/data/scifact   # -> results/near_duplicate_scan.json
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
THRESHOLDS = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98)


def positives_of(qrels_path: str) -> dict:
    pos: dict = {}
    with open(qrels_path) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            if int(r["score"]) > 0:
                pos.setdefault(r["query-id"], []).append(r["corpus-id"])
    return pos


def closest_positive_cosines(q: np.ndarray, docs: np.ndarray, positive_rows: list, depth: int) -> np.ndarray:
    """(depth,) the highest cosine to a positive of each of the top ``depth`` non-positive candidates (rank order).
    Vectors are unit length; ties in the ranking go to the lower corpus row."""
    scores = docs @ q
    scores[positive_rows] = -np.inf
    order = np.lexsort((np.arange(len(scores)), -scores))[:depth]
    return (docs[order] @ docs[positive_rows].T).max(axis=1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.normpath(os.path.join(REPO, "..", "shared", "data", "scifact")))
    p.add_argument("--split", default="train")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--results", default=os.path.join(HERE, "results", "near_duplicate_scan.json"))
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, REPO)
    from sentence_transformers import SentenceTransformer
    from streammine.encode.base import default_model_path

    t = time.perf_counter()
    with open(os.path.join(a.data, "corpus.jsonl")) as f:
        docs = [json.loads(line) for line in f]
    with open(os.path.join(a.data, "queries.jsonl")) as f:
        queries = {r["_id"]: r["text"] for r in map(json.loads, f)}
    positives = positives_of(os.path.join(a.data, "qrels", f"{a.split}.tsv"))
    row_of = {d["_id"]: i for i, d in enumerate(docs)}
    qids = sorted(q for q in positives if q in queries and any(d in row_of for d in positives[q]))
    model = SentenceTransformer(default_model_path(), device="cpu")
    model.max_seq_length = a.max_seq_length
    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
    doc_vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)
    query_vectors = model.encode([queries[q] for q in qids], batch_size=64, normalize_embeddings=True)
    closest = np.stack([closest_positive_cosines(query_vectors[i], doc_vectors,
                                                 [row_of[d] for d in positives[q] if d in row_of], a.depth)
                        for i, q in enumerate(qids)])
    at = {str(th): {"queries_whose_top1_is_at_or_above": int((closest[:, 0] >= th).sum()),
                    f"candidates_in_top{a.depth}_at_or_above": int((closest >= th).sum()),
                    f"queries_with_any_in_top{a.depth}": int((closest >= th).any(axis=1).sum())}
          for th in THRESHOLDS}
    report = {"data": a.data, "split": a.split, "queries": len(qids), "documents": len(docs), "depth": a.depth,
              "model": "all-MiniLM-L6-v2 (packaged)", "max_seq_length": a.max_seq_length,
              "top1_closest_positive_cosine_percentiles": {
                  str(pc): round(float(np.percentile(closest[:, 0], pc)), 4) for pc in (50, 90, 99, 100)},
              "at_threshold": at, "seconds": round(time.perf_counter() - t, 1)}
    os.makedirs(os.path.dirname(a.results), exist_ok=True)
    with open(a.results, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
