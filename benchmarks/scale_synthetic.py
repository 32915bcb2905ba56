"""Scale benchmark: 1M synthetic unit vectors (d=384), 100k queries, IVF-Flat in 4 shards.

Compares streammine's mining throughput (queries/s through read -> vector lookup -> fan-out search over 4 shard
actors -> exact rescoring -> merge -> filter/sample -> Parquet parts) with one process searching an IVF index over
the same vectors with faiss directly (search only: no rescoring, mining or writing). Both scan the same share of
the corpus: the single index has nlist lists and nprobe probes; each of the S shards has nlist/S lists and
nprobe/S probes. Recall@10 against exact search is reported for both, on a sample of queries.

    python benchmarks/scale_synthetic.py --docs 1000000 --queries 100000 --work /tmp/sm-scale
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from memory import PeakMemory  # noqa: E402


def make_data(work: str, n_docs: int, n_queries: int, dim: int, seed: int = 0) -> dict:
    """Clustered unit vectors; each query is a noisy copy of one document, which is its positive."""
    os.makedirs(work, exist_ok=True)
    paths = {k: os.path.join(work, v) for k, v in
             {"corpus": "corpus.npy", "queries_vec": "queries.npy", "beir": "beir"}.items()}
    if os.path.exists(os.path.join(work, "DONE")):
        return paths
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1000, dim)).astype(np.float32)
    corpus = np.lib.format.open_memmap(paths["corpus"], "w+", np.float32, (n_docs, dim))
    for s in range(0, n_docs, 100_000):
        e = min(n_docs, s + 100_000)
        x = centers[rng.integers(0, 1000, e - s)] + 0.7 * rng.standard_normal((e - s, dim)).astype(np.float32)
        corpus[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    corpus.flush()
    with open(paths["corpus"][:-4] + ".ids.txt", "w") as f:
        f.writelines(f"d{i}\n" for i in range(n_docs))
    positives = rng.choice(n_docs, n_queries, replace=False)
    q = corpus[np.sort(positives)] + 0.05 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    positives = np.sort(positives)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.save(paths["queries_vec"], q.astype(np.float32))
    write_synthetic_queries(paths, positives)
    open(os.path.join(work, "DONE"), "w").close()
    return paths


def write_synthetic_queries(paths: dict, positives) -> None:
    """Query i (``q<i>``) with document ``d<positives[i]>`` as its positive: the ids beside the query vectors, and
    the BEIR queries and train qrels under ``paths["beir"]``."""
    n_queries = len(positives)
    with open(paths["queries_vec"][:-4] + ".ids.txt", "w") as f:
        f.writelines(f"q{i}\n" for i in range(n_queries))
    os.makedirs(os.path.join(paths["beir"], "qrels"), exist_ok=True)
    with open(os.path.join(paths["beir"], "queries.jsonl"), "w") as f:
        f.writelines(json.dumps({"_id": f"q{i}", "text": f"synthetic query {i}"}) + "\n" for i in range(n_queries))
    with open(os.path.join(paths["beir"], "qrels", "train.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"q{i}\td{p}\t1\n" for i, p in enumerate(positives))


def faiss_direct(paths: dict, nlist: int, nprobe: int, k: int, threads: int) -> dict:
    import faiss
    faiss.omp_set_num_threads(threads)
    corpus = np.load(paths["corpus"], mmap_mode="r")
    queries = np.load(paths["queries_vec"])
    d = corpus.shape[1]
    t = time.perf_counter()
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = 64
    rng = np.random.default_rng(1)
    index.train(np.ascontiguousarray(corpus[np.sort(rng.choice(len(corpus), min(len(corpus), 64 * nlist), replace=False))]))
    for s in range(0, len(corpus), 200_000):
        index.add(np.ascontiguousarray(corpus[s:s + 200_000]))
    build = time.perf_counter() - t
    index.nprobe = nprobe
    t = time.perf_counter()
    ids = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 4096):
        _, ids[s:s + 4096] = index.search(queries[s:s + 4096], k)
    search = time.perf_counter() - t
    return {"build_seconds": build, "search_seconds": search, "queries_per_second": len(queries) / search,
            "recall@10": recall_at_10(corpus, queries, ids)}


def recall_at_10(corpus, queries, found, sample: int = 500) -> float:
    rows = np.arange(0, len(queries), max(1, len(queries) // sample))[:sample]
    hits = 0
    for r in rows:
        scores = np.asarray(corpus @ queries[r])
        exact = np.argpartition(-scores, 10)[:10]
        hits += len(set(exact.tolist()) & set(found[r][:10].tolist()))
    return hits / (10 * len(rows))


def streammine_run(paths: dict, work: str, shards: int, nlist: int, nprobe: int, range_max: int,
                   miner_actors: int = 2, prune_rescoring: bool = True) -> dict:
    import streammine
    out = os.path.join(work, "out")
    cfg = streammine.load_config(None, {
        "input.path": paths["beir"], "encoder.kind": "precomputed", "encoder.corpus_vectors": paths["corpus"],
        "encoder.query_vectors": paths["queries_vec"], "index.kind": "ivf-flat", "index.shards": shards,
        "index.nlist": nlist // shards, "index.nprobe": max(1, nprobe // shards),
        "mining.filter.method": "topk-percpos", "mining.sampler.num_negatives": 5,
        "mining.sampler.range_max": range_max, "output.path": out, "output.overwrite": True,
        "run.query_batch_size": 4096, "run.miner_actors": miner_actors,
        "index.prune_rescoring": prune_rescoring, "run.progress": False, "run.work_dir": os.path.join(work, "_work")})
    t = time.perf_counter()
    result = streammine.mine(cfg)
    wall = time.perf_counter() - t
    s = result.summary
    return {"wall_seconds": wall, "seconds": s["seconds"], "stages": s["stages"],
            "queries_out": s["counts"]["queries_out"],
            "mining_queries_per_second": s["counts"]["queries_out"] / s["seconds"]["query_mining_seconds"],
            "store_reused": s["index"]["store_reused"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--nlist", type=int, default=2048)
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--range-max", type=int, default=50)
    p.add_argument("--work", default="/tmp/sm-scale")
    p.add_argument("--out", default="benchmarks/results/scale_synthetic.json")
    p.add_argument("--skip-faiss", action="store_true")
    p.add_argument("--miner-actors", type=int, default=2, help="run.miner_actors (its default: 2)")
    p.add_argument("--no-prune", action="store_true", help="rescore every candidate (one round per block)")
    p.add_argument("--runs", default="cold", help="cold,warm: warm reuses the embedding store the cold run wrote")
    a = p.parse_args()
    paths = make_data(a.work, a.docs, a.queries, a.dim)
    result = {"docs": a.docs, "queries": a.queries, "dim": a.dim, "shards": a.shards, "nlist": a.nlist,
              "nprobe": a.nprobe, "cpus": os.cpu_count(), "miner_actors": a.miner_actors,
              "prune_rescoring": not a.no_prune}
    # streammine first, so the driver-memory figure is not inflated by the baseline's arrays. The mining
    # throughput counts the query phase only (reading queries, vector lookup, search, rescoring, mining, writing)
    for label in a.runs.split(","):
        with PeakMemory() as m:
            run = streammine_run(paths, a.work, a.shards, a.nlist, a.nprobe, a.range_max, a.miner_actors,
                                 not a.no_prune)
        run["peak_rss_gb"] = m.peak_bytes / 2**30
        run["driver_peak_rss_gb"] = m.driver_peak_bytes / 2**30
        result[f"streammine_{label}"] = run
        print(label, json.dumps(run, indent=1), flush=True)
    if not a.skip_faiss:
        with PeakMemory() as m:
            result["faiss_direct"] = faiss_direct(paths, a.nlist, a.nprobe, a.range_max + 1, os.cpu_count())
        result["faiss_direct"]["peak_rss_gb"] = m.peak_bytes / 2**30
        print(json.dumps(result["faiss_direct"], indent=1), flush=True)
    if "faiss_direct" in result:
        result["throughput_ratio"] = (result["streammine_cold"]["mining_queries_per_second"]
                                      / result["faiss_direct"]["queries_per_second"])
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()
