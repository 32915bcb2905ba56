"""10M-document benchmark: streammine on a local Ray against faiss in one process, with memory (USS) and exactness.

    python benchmarks/scale_10m.py --docs 10000000 --queries 10000 --work /data/sm10m [--out result.json]
        [--kind ivf-sq8] [--shards 4] [--nlist N] [--nprobe P] [--skip-faiss]
    # small check: --docs 200000 --queries 2000 --kind ivf-flat --work /tmp/sm10m-dev (a few minutes)

Data (under --work, never in the repository; made once per (docs, queries, dim, seed), named in DONE): ``corpus.npy``
(docs x 384 clustered float32 unit vectors, written in 100k-row chunks through ``open_memmap``) with
``corpus.ids.txt`` (d0, d1, ...), ``queries.npy`` + ``queries.ids.txt``: each query a noisy copy of one document,
its only positive (``beir/queries.jsonl``, ``beir/qrels/train.tsv``; ``positives.npy``: the positive's row).

streammine runs through its Python API (``streammine.mine``) as a user would on one machine: precomputed vectors,
``run.executor: ray`` and otherwise the default Ray settings of a local run (actors, batch sizes); ``index.kind``
--kind, ``index.shards`` --shards, ``index.nlist`` / ``index.nprobe`` per shard (--nlist default: streammine's own,
about 4*sqrt(n) per shard; --nprobe default: streammine's 16). Mining is set so a row holds the query's 10 best
non-positive documents with their exact scores: ``mining.filter.method: none``, ``mining.sampler.method: top``,
``num_negatives: 10``, ``range_max: 10``. The embedding store and query cache of an earlier run are deleted first
(a cold run: every stage runs). Data generation is timed apart (``data_seconds``), not part of the run.

The figures (JSON printed last on stdout, also written to --out):
- ``wall_seconds``: ``streammine.mine`` call; ``seconds`` / ``stages``: the run summary's per-stage times.
- ``queries_per_second``: queries out / the summary's ``query_mining_seconds`` (read, vector lookup, fan-out search,
  exact rescoring, merge, mining, Parquet writing); ``queries_per_second_wall``: queries / ``wall_seconds``.
- ``peak_uss_bytes``: the largest per-second sum of USS over this process and every process of its Ray session
  (gcs_server, raylet, dashboard, workers: memory.UssSampler); ``uss_samples``: ``[t, bytes]`` per second;
  ``peak_pss_bytes``: the same with PSS (USS counts no page two processes share, such as Ray's object store once a
  worker maps an object: PSS does); ``driver_peak_uss_bytes``: this process alone (nothing gathered in the driver
  should make it grow with N); ``uss_pass_seconds_max`` / ``_mean``: one sampling pass (about 20 processes through
  /proc/<pid>/smaps_rollup: 0.05 s on average, under 0.3 s mostly, 2 s once on 2 cores with a load of 8);
  ``uss_peak_processes``: ``[name, pid, uss]`` at the peak; ``uss_process_peaks``: ``[name, pid, uss, t]``, each
  process's own peak (t: seconds into the run).
- ``recall_at_10``: on 500 queries spread over the set, |streammine's 10 negatives & the exact 10 best
  non-positive documents| / 5000, the exact ones by a float64 brute force over the whole corpus read in chunks.
- ``scores_bit_equal``: every returned negative score of the sample equals float32(the float64 inner product of the
  float32 query and document vectors) bit for bit: ``{"equal": bool, "checked": n, "mismatches": m}``.
- ``faiss_*``: one separate process with faiss alone (no Ray, rescoring, mining or writing): one index of the
  same kind (ivf-flat: IVF,Flat; ivf-sq8: IVF,SQ8; ivf-pq: IVF,PQ) holding the whole corpus, with S times the
  per-shard nlist and S times the per-shard nprobe (S shards of nlist lists probing nprobe each scan the same share
  of the corpus), trained on 64 vectors per list sampled from the corpus and filled in 100k-row chunks read from
  the file; ``faiss_queries_per_second``: the search of all queries (k = 11: 10 plus the positive, batches of
  4096, all cores); ``faiss_recall_at_10`` on the same sample and exact answer; ``faiss_peak_uss_bytes``: that
  process's USS peak (sampled every second and after training, adding and searching); ``faiss_build_seconds``.
- ``machine``: CPU model, cores, RAM.

Reading the comparison: S shards of nlist coarse lists are not one index of S*nlist finer lists: at equal scanned
share the single index recalls more (20k documents: streammine 0.971, a 4-shard faiss emulation 0.977, the single
index 0.9998); both recall 1.0 on this clustered data from 200k documents up, so ``recall_at_10`` mostly shows that
nothing is lost between the shards and the output. The faiss build's k-means (64 vectors per list over S*nlist
lists) costs about what the shards' together cost (faiss's 256 per list over nlist each) at the default nlist of a
10M corpus; on a small corpus it costs S times more (200k on 2 shared cores: 60 to 250 s).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import UssSampler  # noqa: E402
from scale_synthetic import write_synthetic_queries  # noqa: E402

CHUNK = 100_000   # rows per generation / read chunk (part of the data's definition: the generator's draws follow it)
SAMPLE = 500      # queries checked against the brute force
K = 10


# ---- data -------------------------------------------------------------------------------------------------------

def make_data(work: str, n_docs: int, n_queries: int, dim: int, seed: int = 0) -> dict:
    """Clustered unit vectors, written chunk by chunk (the corpus is never in memory); each query a noisy copy of
    one document, which is its positive. Reused when DONE names the same (docs, queries, dim, seed)."""
    os.makedirs(work, exist_ok=True)
    paths = {k: os.path.join(work, v) for k, v in {
        "corpus": "corpus.npy", "queries_vec": "queries.npy", "positives": "positives.npy", "beir": "beir"}.items()}
    key = {"docs": n_docs, "queries": n_queries, "dim": dim, "seed": seed, "chunk": CHUNK}
    done = os.path.join(work, "DONE")
    if os.path.exists(done):
        with open(done) as f:
            if json.load(f) == key:
                paths["generated"] = False
                return paths
        os.remove(done)
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1000, dim)).astype(np.float32)
    corpus = np.lib.format.open_memmap(paths["corpus"], "w+", np.float32, (n_docs, dim))
    with open(paths["corpus"][:-4] + ".ids.txt", "w") as ids:
        for s in range(0, n_docs, CHUNK):
            e = min(n_docs, s + CHUNK)
            x = centers[rng.integers(0, 1000, e - s)] + 0.7 * rng.standard_normal((e - s, dim)).astype(np.float32)
            corpus[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
            ids.writelines(f"d{i}\n" for i in range(s, e))
            if (s // CHUNK) % 10 == 9:
                corpus.flush()  # written back as it goes: dirty pages of the mapping do not pile up
    corpus.flush()
    del corpus  # unmapped: what it touched is page cache, not this process's memory
    positives = np.sort(rng.choice(n_docs, n_queries, replace=False))
    corpus = np.load(paths["corpus"], mmap_mode="r")
    q = np.asarray(corpus[positives]) + 0.05 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    del corpus
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.save(paths["queries_vec"], q.astype(np.float32))
    np.save(paths["positives"], positives)
    write_synthetic_queries(paths, positives)
    with open(done, "w") as f:
        json.dump(key, f)
    paths["generated"] = True
    return paths


def _header(f):
    fmt = np.lib.format
    version = fmt.read_magic(f)
    return fmt.read_array_header_1_0(f) if version == (1, 0) else fmt.read_array_header_2_0(f)


def npy_chunks(path: str, rows: int = CHUNK):
    """``(start, float32 array)`` chunks of a C-order .npy file by plain reads: nothing stays mapped, so the pages
    read do not count in the reader's USS (a memmap's touched pages would, until it is unmapped)."""
    with open(path, "rb") as f:
        shape, fortran, dtype = _header(f)
        assert not fortran and dtype == np.float32 and len(shape) == 2, (shape, fortran, dtype)
        n, d = shape
        for s in range(0, n, rows):
            e = min(n, s + rows)
            buf = np.empty((e - s, d), np.float32)
            if f.readinto(memoryview(buf).cast("B")) != buf.nbytes:
                raise IOError(f"{path}: truncated at row {s}")
            yield s, buf


def npy_shape(path: str):
    with open(path, "rb") as f:
        return _header(f)[0]


# ---- machine ----------------------------------------------------------------------------------------------------

def machine() -> dict:
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import psutil
    return {"cpu_model": model or platform.processor(), "cores": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False), "ram_bytes": psutil.virtual_memory().total,
            "platform": platform.platform(), "python": platform.python_version()}


def per_shard_nlist(n_docs: int, shards: int, nlist) -> int:
    """What streammine resolves for a shard (index/factory.resolve_nlist) of the largest shard's size."""
    from streammine.config import IndexConfig
    from streammine.index.factory import resolve_nlist
    return resolve_nlist(IndexConfig(nlist=nlist), math.ceil(n_docs / shards))


# ---- streammine -------------------------------------------------------------------------------------------------

def streammine_run(paths: dict, work: str, kind: str, shards: int, nlist, nprobe, train_points: int = 64) -> dict:
    import streammine
    out = os.path.join(work, "out")
    for d in ("_work", "_cache"):  # a cold run: no embedding store or cached query vectors from an earlier one
        shutil.rmtree(os.path.join(work, d), ignore_errors=True)
    overrides = {
        "input.path": paths["beir"], "encoder.kind": "precomputed", "encoder.corpus_vectors": paths["corpus"],
        "encoder.query_vectors": paths["queries_vec"], "index.kind": kind, "index.shards": shards,
        "mining.filter.method": "none", "mining.sampler.method": "top", "mining.sampler.num_negatives": K,
        "mining.sampler.range_max": K, "output.path": out, "output.overwrite": True, "run.executor": "ray",
        "run.progress": False, "run.work_dir": os.path.join(work, "_work"),
        "run.cache_dir": os.path.join(work, "_cache"), "index.train_points_per_list": train_points}
    if nlist is not None:
        overrides["index.nlist"] = nlist
    if nprobe is not None:
        overrides["index.nprobe"] = nprobe
    cfg = streammine.load_config(None, overrides)
    t = time.perf_counter()
    result = streammine.mine(cfg)
    wall = time.perf_counter() - t
    s = result.summary
    q_out = s["counts"]["queries_out"]
    return {"wall_seconds": wall, "seconds": s["seconds"], "stages": s.get("stages"), "queries_out": q_out,
            "queries_per_second": q_out / s["seconds"]["query_mining_seconds"],
            "queries_per_second_wall": q_out / wall, "index_summary": s.get("index"),
            "executor": s.get("executor"), "counts": s["counts"], "out": out, "nprobe": cfg.index.nprobe}


def read_returned(out: str, sample_qids: list) -> dict:
    """query id -> (negative ids, negative scores) of the output rows of the sample's queries."""
    import pyarrow.dataset as ds
    parts = sorted(glob.glob(os.path.join(out, "**", "part-*.parquet"), recursive=True))
    table = ds.dataset(parts, format="parquet").to_table(
        columns=["query_id", "negative_ids", "negative_scores"], filter=ds.field("query_id").isin(sample_qids))
    rows = {}
    for qid, ids, scores in zip(*(table.column(c).to_pylist() for c in ("query_id", "negative_ids",
                                                                          "negative_scores"))):
        rows[qid] = (ids, scores)
    return rows


# ---- exact answer -----------------------------------------------------------------------------------------------

def brute_force(corpus_path: str, queries: np.ndarray, positives: np.ndarray, pairs: dict, k: int = K):
    """Float64 exact search of ``queries`` over the whole corpus, read in chunks: the top ``k`` rows per query other
    than its positive, and the float64 product of each ``pairs[(query index, row)]`` asked for."""
    q64 = queries.astype(np.float64)
    nq = len(q64)
    best_s = np.full((nq, k), -np.inf)
    best_i = np.full((nq, k), -1, np.int64)
    wanted = {}
    for qi, row in pairs:
        wanted.setdefault(row // CHUNK, []).append((qi, row))
    exact = {}
    for s, chunk in npy_chunks(corpus_path):
        scores = chunk.astype(np.float64) @ q64.T  # (rows, nq)
        for qi, row in wanted.get(s // CHUNK, ()):
            exact[(qi, row)] = float(scores[row - s, qi])
        inside = (positives >= s) & (positives < s + len(chunk))
        scores[positives[inside] - s, np.nonzero(inside)[0]] = -np.inf
        kk = min(k, len(chunk))
        top = np.argpartition(-scores, kk - 1, axis=0)[:kk].T  # (nq, kk)
        cand_s = np.concatenate([best_s, np.take_along_axis(scores.T, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + s], 1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i, best_s, exact


def sample_rows(n_queries: int) -> np.ndarray:
    return np.arange(0, n_queries, max(1, n_queries // SAMPLE))[:SAMPLE]


# ---- faiss alone ------------------------------------------------------------------------------------------------

def faiss_factory(kind: str, nlist: int, dim: int) -> str:
    if kind == "ivf-flat":
        return f"IVF{nlist},Flat"
    if kind == "ivf-sq8":
        return f"IVF{nlist},SQ8"
    if kind == "ivf-pq":
        m = max(d for d in range(1, min(16, dim) + 1) if dim % d == 0)
        return f"IVF{nlist},PQ{m}x8"
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return "HNSW32"
    raise SystemExit(f"--kind {kind}: no faiss-alone equivalent here")


def faiss_alone(work: str, kind: str, nlist: int, nprobe: int, k: int, train_points: int = 64) -> dict:
    """Run in its own process (``--faiss-only``): build one index over the corpus and search every query."""
    import faiss
    faiss.omp_set_num_threads(os.cpu_count())
    corpus_path, queries = os.path.join(work, "corpus.npy"), np.load(os.path.join(work, "queries.npy"))
    n, d = npy_shape(corpus_path)
    spec = faiss_factory(kind, nlist, d)
    m = UssSampler(only_pids=[os.getpid()]).__enter__()  # this process alone, also sampled after each phase
    t = time.perf_counter()
    index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(1)
        mm = np.load(corpus_path, mmap_mode="r")
        sample = np.asarray(mm[np.sort(rng.choice(n, min(n, train_points * nlist), replace=False))])
        del mm  # unmapped
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.max_points_per_centroid = train_points
        index.train(sample)
        m.sample()
        del sample
    for _, chunk in npy_chunks(corpus_path):
        index.add(chunk)
    m.sample()
    build = time.perf_counter() - t
    if spec.startswith("IVF"):
        faiss.extract_index_ivf(index).nprobe = nprobe
    t = time.perf_counter()
    ids = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 4096):
        _, ids[s:s + 4096] = index.search(queries[s:s + 4096], k)
    search = time.perf_counter() - t
    m.__exit__(None, None, None)
    np.save(os.path.join(work, "faiss_ids.npy"), ids)
    return {"peak_uss_bytes": m.peak_bytes, "uss_samples": m.samples, "factory": spec, "nlist": nlist,
            "nprobe": nprobe, "k": k, "build_seconds": build,
            "search_seconds": search, "queries_per_second": len(queries) / search}


def faiss_in_child(work: str, kind: str, nlist: int, nprobe: int, train_points: int = 64) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--faiss-only", "--work", work, "--kind", kind,
           "--faiss-nlist", str(nlist), "--faiss-nprobe", str(nprobe), "--train-points", str(train_points)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"faiss alone failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- main -------------------------------------------------------------------------------------------------------

def recall(found_rows: list, exact: np.ndarray) -> float:
    hits = sum(len(set(f) & set(e.tolist())) for f, e in zip(found_rows, exact))
    return hits / (K * len(exact))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=10_000_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", required=True, help="data, streammine's output and work files (not the repository)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--kind", default="ivf-sq8", help="index.kind (and the faiss index of the same kind)")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--nlist", type=int, default=None, help="index.nlist, per shard (default: streammine's)")
    p.add_argument("--nprobe", type=int, default=None, help="index.nprobe, per shard (default: streammine's)")
    p.add_argument("--train-points", type=int, default=64,
                   help="index.train_points_per_list, and the faiss index's training rows per list")
    p.add_argument("--skip-faiss", action="store_true")
    p.add_argument("--faiss-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--faiss-nlist", type=int, help=argparse.SUPPRESS)
    p.add_argument("--faiss-nprobe", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.faiss_only:
        print(json.dumps(faiss_alone(a.work, a.kind, a.faiss_nlist, a.faiss_nprobe, K + 1, a.train_points)))
        return

    t = time.perf_counter()
    paths = make_data(a.work, a.docs, a.queries, a.dim, a.seed)
    data_seconds = time.perf_counter() - t
    result = {"documents": a.docs, "queries": a.queries, "dim": a.dim, "seed": a.seed,
              "settings": {"kind": a.kind, "shards": a.shards, "nlist_per_shard": a.nlist,
                           "nprobe_per_shard": a.nprobe, "train_points_per_list": a.train_points, "executor": "ray", "filter": "none", "sampler": "top",
                           "num_negatives": K, "range_max": K},
              "machine": machine(), "data_seconds": data_seconds, "data_generated": paths.pop("generated")}
    print(f"data: {data_seconds:.1f}s ({'generated' if result['data_generated'] else 'reused'})", file=sys.stderr)

    os.environ["STREAMMINE_EXECUTOR"] = "ray"
    with UssSampler() as m:
        run = streammine_run(paths, a.work, a.kind, a.shards, a.nlist, a.nprobe, a.train_points)
    import streammine
    streammine.shutdown()
    result.update({k: run[k] for k in ("wall_seconds", "seconds", "stages", "queries_out", "queries_per_second",
                                        "queries_per_second_wall", "index_summary", "counts")})
    result.update({"peak_uss_bytes": m.peak_bytes, "peak_pss_bytes": m.peak_pss_bytes,
                   "driver_peak_uss_bytes": m.driver_peak_bytes, "uss_processes_max": m.max_processes,
                   "uss_pass_seconds_max": m.pass_seconds_max, "uss_pass_seconds_mean": m.pass_seconds_mean,
                   "uss_peak_processes": m.peak_processes,
                   "uss_process_peaks": sorted(m.process_peaks.values(), key=lambda e: -e[2]),
                   "uss_samples": m.samples})
    print(f"streammine: {run['wall_seconds']:.1f}s, {run['queries_per_second']:.0f} q/s, "
          f"peak USS {m.peak_bytes / 2**30:.2f} GiB", file=sys.stderr)

    # the sample: streammine's rows, the exact answer, the exact product of every returned pair
    queries = np.load(paths["queries_vec"])
    positives = np.load(paths["positives"])
    rows = sample_rows(len(queries))
    returned = read_returned(run["out"], [f"q{r}" for r in rows])
    found, pairs = [], {}
    for j, r in enumerate(rows):
        ids, scores = returned.get(f"q{r}", ([], []))
        found.append([int(i[1:]) for i in ids[:K]])
        for i, sc in zip(ids, scores):
            pairs[(j, int(i[1:]))] = sc
    t = time.perf_counter()
    exact_i, _, exact64 = brute_force(paths["corpus"], queries[rows], positives[rows], pairs)
    mismatches = sum(np.float32(exact64[key]).view(np.uint32) != np.float32(sc).view(np.uint32)
                     for key, sc in pairs.items())
    result.update({"recall_at_10": recall(found, exact_i), "recall_sample": len(rows),
                   "sample_rows_missing": int(sum(f"q{r}" not in returned for r in rows)),
                   "sample_short_rows": int(sum(len(f) < K for f in found)),
                   "scores_bit_equal": {"equal": bool(mismatches == 0) and bool(pairs), "checked": len(pairs),
                                        "mismatches": int(mismatches)},
                   "brute_force_seconds": time.perf_counter() - t})

    if not a.skip_faiss:
        nlist_s = per_shard_nlist(a.docs, a.shards, a.nlist)
        nprobe_s = run["nprobe"]
        fa = faiss_in_child(a.work, a.kind, nlist_s * a.shards, min(nprobe_s * a.shards, nlist_s * a.shards),
                            a.train_points)
        ids = np.load(os.path.join(a.work, "faiss_ids.npy"))[rows]
        f_found = [[int(i) for i in row if i != pos][:K] for row, pos in zip(ids, positives[rows])]
        result.update({"faiss_queries_per_second": fa["queries_per_second"], "faiss_recall_at_10":
                       recall(f_found, exact_i), "faiss_peak_uss_bytes": fa["peak_uss_bytes"],
                       "faiss_build_seconds": fa["build_seconds"], "faiss_search_seconds": fa["search_seconds"],
                       "faiss": fa, "throughput_ratio": result["queries_per_second"] / fa["queries_per_second"]})
    else:
        result.update({"faiss_queries_per_second": None, "faiss_peak_uss_bytes": None})
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
