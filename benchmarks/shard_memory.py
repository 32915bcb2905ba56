"""Bytes per document of one index shard, per kind: ``IndexShard.memory_bytes()`` and the process's measured USS.

Each kind is built in a fresh process from a committed embedding store (one shard of ``--shards``), exactly as a
shard actor builds it (``index.local.build_shard``), then searched with a block of queries. Reported per kind:
the shard's documents, its own estimate, the process's unique memory (psutil USS) after the build and at the
peak of the search above the baseline of a process that imported streammine and faiss, and the scratch file.

    python benchmarks/shard_memory.py --store DIR/_work/embeddings/<key> --shards 4 --out JSON
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

KINDS = ["flat", "flat-fp16", "ivf-flat", "ivf-sq8", "ivf-pq", "hnsw"]


def measure(store: str, shards: int, kind: str, nlist: int, queries: int) -> dict:
    import numpy as np
    import psutil

    import faiss  # noqa: F401 (in the baseline)
    from streammine.config import IndexConfig
    from streammine.index.local import build_shard, shard_docs_from_store
    from streammine.index.store import read_buckets, read_manifest
    from streammine.index.vector_rows import release_freed_memory
    me = psutil.Process()
    next(iter(shard_docs_from_store(store, read_manifest(store), 0, 64)))  # the reader's imports in the baseline
    release_freed_memory()
    base = me.memory_full_info().uss
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], me.memory_full_info().uss)
            stop.wait(0.2)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cfg = IndexConfig(kind=kind, shards=shards, nlist=nlist, nprobe=8, pq_m=48, train_points_per_list=64)
    t = time.perf_counter()
    shard = build_shard(store, 0, shards, cfg)
    build_s = time.perf_counter() - t
    after_build = me.memory_full_info().uss
    build_peak = peak[0]
    manifest = read_manifest(store)
    from streammine.vectors import from_arrow
    table = next(iter(read_buckets(store, [1], manifest)))
    q = np.array(from_arrow(table.column("vector"))[:queries])
    del table
    q = (q + 0.05 * np.random.default_rng(0).standard_normal(q.shape, dtype=np.float32)).astype(np.float32)
    before_search = peak[0] = me.memory_full_info().uss
    t = time.perf_counter()
    shard.answer(q, 66, [[] for _ in range(len(q))])
    search_s = time.perf_counter() - t
    stop.set()
    sampler.join()
    n = len(shard)
    return {"kind": kind, "documents": n, "dim": shard.dim, "estimate_bytes": shard.memory_bytes(),
            "estimate_bytes_per_doc": shard.memory_bytes() / n,
            "uss_after_build_bytes_per_doc": (after_build - base) / n,
            "uss_build_peak_bytes_per_doc": (build_peak - base) / n,
            "uss_search_peak_bytes_per_doc": (peak[0] - base) / n,
            "search_working_bytes": peak[0] - before_search,
            "scratch_file_bytes_per_doc": shard.disk_bytes() / n,
            "build_seconds": build_s, "search_seconds": search_s, "queries": len(q)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", required=True)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--queries", type=int, default=4096)
    p.add_argument("--out")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(measure(a.store, a.shards, a.one, a.nlist, a.queries)))
        return
    rows = []
    for kind in a.kinds.split(","):
        out = subprocess.run([sys.executable, __file__, "--store", a.store, "--shards", str(a.shards),
                              "--nlist", str(a.nlist), "--queries", str(a.queries), "--one", kind],
                             capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2"))
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    result = {"store": a.store, "shards": a.shards, "nlist": a.nlist, "kinds": rows,
              "cpu": _cpu(), "cores": os.cpu_count()}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
