"""Retrieval metrics on held-out queries: nDCG@10, MRR@10, Recall@100.

The metric arithmetic is sentence-transformers' ``InformationRetrievalEvaluator.compute_metrics`` (an established
implementation, already a dependency: no compiled pytrec-eval, no numba for ranx). streammine only ranks: exact
cosine scores of the model's normalized embeddings over the whole corpus (ties by corpus position), the top 100
per query handed to the library as ``{"corpus_id", "score"}`` hits. Relevance is binary (qrels score > 0).

Per-query values (each query through the same library call on its own) are kept for a paired bootstrap of the
difference between two models; their mean equals the library's all-query figure (checked in the tests).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

METRICS = ("ndcg@10", "mrr@10", "recall@100")
TOP_K = 100

Run = Mapping[str, Sequence[Tuple[str, float]]]          # query id -> [(doc id, score)], best first
Qrels = Mapping[str, Iterable[str]]                      # query id -> relevant doc ids


def _evaluator(qrels: Mapping[str, set]):
    try:  # sentence-transformers >= 6 moved it; the old path still works there, with a warning
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    except ImportError:  # pragma: no cover - older sentence-transformers
        from sentence_transformers.evaluation import InformationRetrievalEvaluator
    # queries/corpus texts are only used when the evaluator encodes; here it only scores given hits
    return InformationRetrievalEvaluator(queries={q: q for q in qrels}, corpus={}, relevant_docs=dict(qrels),
                                         mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[10],
                                         precision_recall_at_k=[TOP_K], map_at_k=[TOP_K], write_csv=False)


def _library_scores(run: Run, qrels: Mapping[str, set]) -> Dict[str, float]:
    ev = _evaluator(qrels)
    hits = [[{"corpus_id": d, "score": float(s)} for d, s in run.get(q, [])] for q in ev.queries_ids]
    scores = ev.compute_metrics(hits)
    return {"ndcg@10": float(scores["ndcg@k"][10]), "mrr@10": float(scores["mrr@k"][10]),
            "recall@100": float(scores["recall@k"][TOP_K])}


def evaluate_run(run: Run, qrels: Qrels, per_query: bool = False):
    """Mean nDCG@10, MRR@10, Recall@100 over the queries of ``qrels`` that have a relevant document (a query
    missing from ``run`` retrieved nothing). With ``per_query``: (means, {query id: {metric: value}})."""
    rel = {q: set(d) for q, d in qrels.items() if d}
    if not rel:
        raise ValueError("no query with a relevant document to evaluate")
    means = _library_scores(run, rel)
    if not per_query:
        return means
    return means, {q: _library_scores({q: run.get(q, [])}, {q: rel[q]}) for q in rel}


# ---- ranking --------------------------------------------------------------------------------------------------

def rank(query_vectors: np.ndarray, query_ids: Sequence[str], doc_vectors: np.ndarray, doc_ids: Sequence[str],
         k: int = TOP_K, chunk: int = 1024) -> Dict[str, List[Tuple[str, float]]]:
    """Exact top-k by inner product (cosine for normalized vectors), ties by corpus position."""
    q = np.asarray(query_vectors, np.float32)
    d = np.asarray(doc_vectors, np.float32)
    k = min(k, len(doc_ids))
    run = {}
    for start in range(0, len(q), chunk):
        scores = q[start:start + chunk] @ d.T
        for i, row in enumerate(scores):
            order = np.argsort(-row, kind="stable")[:k]  # stable: equal scores keep corpus order
            run[query_ids[start + i]] = [(doc_ids[j], float(row[j])) for j in order]
    return run


def encode(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Normalized float32 embeddings, the way streammine's encoder makes them (no prompt)."""
    import torch
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
    if was_training:
        model.train()
    return np.ascontiguousarray(vectors, dtype=np.float32)


def evaluate_model(model, queries: Mapping[str, str], qrels: Qrels, doc_ids: Sequence[str],
                   doc_texts: Optional[Sequence[str]] = None, doc_vectors: Optional[np.ndarray] = None,
                   batch_size: int = 64) -> Tuple[Dict[str, float], Dict[str, Dict[str, float]]]:
    """Encodes the queries (and the corpus unless ``doc_vectors`` are given), ranks, scores."""
    if doc_vectors is None:
        doc_vectors = encode(model, doc_texts, batch_size)
    qids = [q for q in qrels if q in queries]
    run = rank(encode(model, [queries[q] for q in qids], batch_size), qids, doc_vectors, doc_ids)
    return evaluate_run(run, {q: qrels[q] for q in qids}, per_query=True)


# ---- comparing two models on the same queries ----------------------------------------------------------------

def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], samples: int = 2000,
                     seed: int = 0) -> Tuple[float, float, float]:
    """mean(b - a) over the shared queries and a 95% percentile interval from resampling the queries."""
    qids = sorted(set(a) & set(b))
    diff = np.array([b[q] - a[q] for q in qids], np.float64)
    if not len(diff):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (samples, len(diff)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi)


def pooled_paired_bootstrap(a_runs: Sequence[Mapping[str, float]], b_runs: Sequence[Mapping[str, float]],
                            samples: int = 2000, seed: int = 0) -> Tuple[float, float, float]:
    """Two models compared over several runs (seeds) on the same queries: each query's difference is the mean over
    the runs of b - a (run i of b paired with run i of a), so a seed's luck is averaged before the queries are
    resampled; then :func:`paired_bootstrap` over the queries every run scored."""
    if len(a_runs) != len(b_runs) or not a_runs:
        raise ValueError(f"need the same number (>= 1) of runs on both sides, got {len(a_runs)} and {len(b_runs)}")
    qids = sorted(set.intersection(*(set(r) for r in list(a_runs) + list(b_runs))))
    diff = {q: float(np.mean([b[q] - a[q] for a, b in zip(a_runs, b_runs)])) for q in qids}
    return paired_bootstrap(dict.fromkeys(qids, 0.0), diff, samples, seed)
