"""Small synthetic data sets for end-to-end tests (precomputed vectors: no model loads)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest


def write_synthetic_beir(root: str, n_docs: int = 400, n_queries: int = 60, dim: int = 16, seed: int = 0,
                         duplicates: int = 8) -> dict:
    """Clustered unit vectors with some exact duplicate vectors (score ties), queries near their positives.

    Returns the paths and the arrays, so a test can compute an independent reference.
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, dim))
    docs = centers[rng.integers(0, 8, n_docs)] + 0.6 * rng.standard_normal((n_docs, dim))
    docs[n_docs - duplicates:] = docs[:duplicates]  # identical vectors under other ids: exact ties
    docs = (docs / np.linalg.norm(docs, axis=1, keepdims=True)).astype(np.float32)
    positives = [sorted(rng.choice(n_docs, rng.integers(1, 4), replace=False).tolist()) for _ in range(n_queries)]
    queries = np.stack([docs[p].mean(0) + 0.3 * rng.standard_normal(dim) for p in positives])
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    os.makedirs(os.path.join(root, "beir", "qrels"), exist_ok=True)
    np.save(os.path.join(root, "corpus.npy"), docs)
    with open(os.path.join(root, "corpus.ids.txt"), "w") as f:
        f.writelines(f"d{i}\n" for i in range(n_docs))
    np.save(os.path.join(root, "queries.npy"), queries)
    with open(os.path.join(root, "queries.ids.txt"), "w") as f:
        f.writelines(f"q{i}\n" for i in range(n_queries))
    with open(os.path.join(root, "beir", "queries.jsonl"), "w") as f:
        f.writelines(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(n_queries))
    with open(os.path.join(root, "beir", "qrels", "train.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"q{i}\td{d}\t1\n" for i, p in enumerate(positives) for d in p)
    return {"beir": os.path.join(root, "beir"), "corpus_vectors": os.path.join(root, "corpus.npy"),
            "query_vectors": os.path.join(root, "queries.npy"), "docs": docs, "queries": queries,
            "positives": positives}


def precomputed_overrides(data: dict, out: str, **extra) -> dict:
    return dict({"input.path": data["beir"], "encoder.kind": "precomputed",
                 "encoder.corpus_vectors": data["corpus_vectors"], "encoder.query_vectors": data["query_vectors"],
                 "output.path": out, "run.progress": False}, **extra)


def read_output(out: str) -> dict:
    """query_id -> row dict, from the committed parts; asserts every query appears once."""
    from streammine.sink.parts import iter_rows
    rows = {}
    for batch in iter_rows(out):
        for row in batch.to_pylist():
            assert row["query_id"] not in rows, f"query {row['query_id']} written twice"
            rows[row["query_id"]] = row
    return rows


def alive_actors(class_name_part: str) -> list:
    """pid and node of the live Ray actors whose class name contains ``class_name_part``, from the GCS (the state
    API would need the dashboard). For fault tests that kill actors by process."""
    from ray._private import state
    return [{"pid": a["Pid"], "node_id": a["Address"]["NodeID"]} for a in state.actors().values()
            if class_name_part in a["ActorClassName"] and a["State"] == "ALIVE"]


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """Import into a test module to run its faiss searches single-threaded: small indexes build and search faster
    that way (OpenMP spinning on a busy 2-core box is slow)."""
    import faiss
    from streammine.index.factory import set_search_threads
    before = faiss.omp_get_max_threads()
    set_search_threads(1)
    yield
    faiss.omp_set_num_threads(before)
