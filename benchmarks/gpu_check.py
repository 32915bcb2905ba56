"""The one prepared GPU check: streammine's GPU pieces run and measured in one process, figures to one JSON.

    bash benchmarks/gpu_check.sh [--data DIR] [--model DIR] [--out FILE]    # on the GPU machine (<= 8 min, H100)
    python benchmarks/gpu_check.py --cpu [--out FILE]                       # dry run here: tiny sizes, CPU

Steps (each recorded under ``steps`` with its seconds; one failing does not stop the others):

1. ``tests``: ``pytest tests/test_gpu_pieces.py`` (its CUDA cases run where torch sees a GPU). Off in a dry run
   (``--tests`` turns it on), since the test suite runs that file itself.
2. ``encode``: SciFact's documents (``--data``, else the shipped scifact-mini) encoded on the device by
   streammine's encoder (float16 by default on a GPU, and bfloat16) and by sentence-transformers' own ``encode``
   (float32 and float16) in this process: docs/s of each, and the cosines of streammine's vectors to the float32
   ones.
3. ``search``: torch-flat against CPU Flat (faiss, where importable) on ``--n-docs`` x ``--dim`` synthetic vectors
   (1 % exact duplicates, so ties occur) and ``--n-queries`` queries, through the same sharded search the miners
   use (``index.local.LocalShardedIndex``: candidates, pruned exact rescoring, merge): q/s of each and whether
   their top k are identical; torch-flat on the CPU on ``--cpu-queries`` of them (the CPU figure where faiss is
   absent); and all against a float64 numpy brute force on ``--ref-queries`` of the queries.
4. ``mine_e2e``: ``streammine mine --index torch-flat`` on the data, only where Ray is importable (in a dry run
   only with ``--e2e``: it takes minutes on a CPU).

The check fails (exit 1) when a step errs or a comparison differs; skipped steps say why.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MIN_COS_FP16 = 0.999   # streammine's float16 vectors vs sentence-transformers' float32 ones, every document
MIN_COS_BF16 = 0.99


class Skip(Exception):
    """A step that cannot run here, with the reason."""


def importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def env_info(device: str) -> dict:
    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "cpu_count": os.cpu_count(), "faiss": importable("faiss"), "ray": importable("ray"),
            "cuda_available": torch.cuda.is_available()}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(p.total_memory / 2 ** 30, 1),
                    cuda=torch.version.cuda)
    try:
        import sentence_transformers
        info["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        pass
    return info


def sync(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


# ---- 1. tests ------------------------------------------------------------------------------------------------

def child_env() -> dict:
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in paths if p != ROOT]))


def run_child(cmd: list, env: dict, timeout: float) -> tuple:
    """``(returncode, output lines)``; past ``timeout`` the child's whole process group is killed (a local Ray's
    processes with it) and the return code is 124."""
    import signal
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc, out = 124, (out or "") + f"\n(killed after {timeout} s)"
    return rc, out.strip().splitlines()


def step_tests(a) -> dict:
    if a.cpu and not a.tests:
        raise Skip("dry run: tests/test_gpu_pieces.py runs in the test suite (--tests runs it here)")
    if not importable("pytest"):
        raise Skip("pytest is not installed")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_gpu_pieces.py"]
    env = child_env()
    if a.model:
        env["STREAMMINE_MODEL_DIR"] = os.path.abspath(a.model)
    t = time.perf_counter()
    rc, lines = run_child(cmd, env, a.tests_timeout)
    return {"returncode": rc, "summary": lines[-1] if lines else "", "seconds": time.perf_counter() - t,
            "tail": lines[-25:], "ok": rc == 0}


# ---- 2. encode -----------------------------------------------------------------------------------------------

def load_texts(data: str, limit: int) -> list:
    from streammine.io.records import document_text
    texts = []
    with open(os.path.join(data, "corpus.jsonl")) as f:
        for line in f:
            d = json.loads(line)
            texts.append(document_text(d.get("title"), d.get("text")))
            if limit and len(texts) >= limit:
                break
    return texts


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)


def timed_encode(fn, texts, device) -> tuple:
    fn(texts[:64])  # warm-up: CUDA context, kernels, allocator
    sync(device)
    t = time.perf_counter()
    v = fn(texts)
    sync(device)
    s = time.perf_counter() - t
    return np.asarray(v, np.float32), s


def step_encode(a) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer
    from streammine.config import EncoderConfig
    from streammine.encode.base import resolve_model_dir
    from streammine.encode.sentence_transformer import SentenceTransformerEncoder
    model = resolve_model_dir(a.model)
    texts = load_texts(a.data, a.max_docs)
    dev = a.device
    out = {"data": a.data, "documents": len(texts), "model": a.model or "all-MiniLM-L6-v2 (packaged)", "runs": {}}

    st = SentenceTransformer(model, device=dev)
    st.float()

    def st_encode(xs):
        return st.encode(xs, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False)

    ref, s = timed_encode(st_encode, texts, dev)
    out["runs"]["sentence_transformers_fp32"] = {"seconds": s, "docs_per_s": len(texts) / s}
    if dev == "cuda":
        st.half()
        v, s = timed_encode(st_encode, texts, dev)
        out["runs"]["sentence_transformers_fp16"] = {"seconds": s, "docs_per_s": len(texts) / s,
                                                     "min_cos_to_fp32": float(cosines(v, ref).min())}
    del st
    precisions = [("auto", MIN_COS_FP16), ("bfloat16", MIN_COS_BF16)] if dev == "cuda" else \
        [("float32", 0.9999), ("bf16-autocast", 0.9999)]
    ok = True
    for precision, min_cos in precisions:
        for batch in ([0, 128] if dev == "cuda" else [0]):
            enc = SentenceTransformerEncoder(EncoderConfig(model=model, precision=precision, batch_size=batch),
                                             device=dev)
            v, s = timed_encode(enc.encode_documents, texts, dev)
            cos = cosines(v, ref)
            name = f"streammine_{enc.precision}_batch{batch or 'auto'}"
            out["runs"][name] = {"seconds": s, "docs_per_s": len(texts) / s, "min_cos_to_st_fp32": float(cos.min()),
                                 "mean_cos_to_st_fp32": float(cos.mean()),
                                 "max_abs_diff": float(np.abs(v - ref).max()), "required_min_cos": min_cos}
            ok &= bool(cos.min() >= min_cos)
            del enc
            if dev == "cuda":
                torch.cuda.empty_cache()
    out["ok"] = ok
    return out


# ---- 3. search -----------------------------------------------------------------------------------------------

def synthetic(n: int, d: int, nq: int, seed: int = 0):
    """Unit vectors with 1 % exact duplicates (ties), and queries near documents (so top hits are close calls)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    x /= torch.linalg.vector_norm(x, dim=1, keepdim=True)
    x = x.numpy()
    rng = np.random.default_rng(seed)
    dup = rng.choice(n, size=max(1, n // 100), replace=False)
    x[dup] = x[rng.integers(0, n, len(dup))]
    near = rng.integers(0, n, nq)
    q = x[near] + 0.1 * rng.standard_normal((nq, d), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q.astype(np.float32)


def shard_docs(x: np.ndarray):
    from streammine.index.shard import ShardDocs
    n = len(x)
    ids = np.array([f"d{i}" for i in range(n)], dtype=object)
    keys = np.arange(1, n + 1, dtype=np.uint64)  # distinct texts
    return ShardDocs(ids, np.arange(n), keys, x, np.full(n, "synthetic", dtype=object))


def run_search(index, q: np.ndarray, k: int, block: int, device: str) -> tuple:
    ords = np.empty((len(q), k), np.int64)
    scores = np.empty((len(q), k), np.float32)
    sync(device)
    t = time.perf_counter()
    for s in range(0, len(q), block):
        c = index.answer(q[s:s + block], k, [[]] * len(q[s:s + block]))[0]
        ords[s:s + block], scores[s:s + block] = c.ordinals, c.scores
    sync(device)
    return ords, scores, time.perf_counter() - t


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple:
    """float64 scores rounded to float32 (what rescoring returns), top k by (-score, ordinal)."""
    x64 = x.astype(np.float64)
    ords = np.empty((len(q), k), np.int64)
    scores = np.empty((len(q), k), np.float32)
    for s in range(0, len(q), 64):
        sc = (q[s:s + 64].astype(np.float64) @ x64.T).astype(np.float32)
        for j, row in enumerate(sc):
            kth = np.partition(row, len(row) - k)[len(row) - k]
            cand = np.flatnonzero(row >= kth)  # every tie of the k-th score, in ordinal order
            order = np.lexsort((cand, -row[cand]))[:k]
            ords[s + j], scores[s + j] = cand[order], row[cand[order]]
    return ords, scores


def compare(a_ords, a_scores, b_ords, b_scores) -> dict:
    same = (a_ords == b_ords).all(1) & (a_scores == b_scores).all(1)
    return {"queries": int(len(same)), "identical_queries": int(same.sum()), "identical": bool(same.all())}


def step_search(a) -> dict:
    import torch
    from streammine.config import IndexConfig
    from streammine.index.local import LocalShardedIndex
    t = time.perf_counter()
    x, q = synthetic(a.n_docs, a.dim, a.n_queries)
    docs = shard_docs(x)
    out = {"n_docs": a.n_docs, "dim": a.dim, "n_queries": a.n_queries, "k": a.k, "shards": a.shards,
           "query_block": a.block, "data_seconds": time.perf_counter() - t}
    use_gpu = "true" if a.device == "cuda" else "false"
    ok = True
    results = {}
    for dtype in a.torch_dtypes:
        cfg = IndexConfig(kind="torch-flat", shards=a.shards, use_gpu=use_gpu, torch_dtype=dtype)
        t = time.perf_counter()
        index = LocalShardedIndex.build(cfg, docs)
        build = time.perf_counter() - t
        run_search(index, q[:a.block], a.k, a.block, a.device)  # warm-up
        ords, scores, s = run_search(index, q, a.k, a.block, a.device)
        name = f"torch_flat_{a.device}_{index.shards[0].index.dtype_name}"
        out[name] = {"build_seconds": build, "search_seconds": s, "queries_per_s": len(q) / s,
                     "error_bound": index.shards[0].faiss_error_bound,
                     "query_chunk": index.shards[0].index.chunk_size()}
        if a.device == "cuda":
            out[name]["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
            torch.cuda.reset_peak_memory_stats()
        results[name] = (ords, scores)
        del index
        if a.device == "cuda":
            torch.cuda.empty_cache()
    if a.device == "cuda" and a.cpu_queries:  # the same exact search on this machine's CPU cores
        nc = min(len(q), a.cpu_queries)
        index = LocalShardedIndex.build(IndexConfig(kind="torch-flat", shards=a.shards, use_gpu="false"), docs)
        ords, scores, s = run_search(index, q[:nc], a.k, a.block, "cpu")
        out["torch_flat_cpu_float32"] = {"search_seconds": s, "queries": nc, "queries_per_s": nc / s,
                                         "threads": torch.get_num_threads()}
        first = next(iter(results))
        out[f"{first}_vs_torch_flat_cpu_float32"] = compare(results[first][0][:nc], results[first][1][:nc],
                                                            ords, scores)
        ok &= out[f"{first}_vs_torch_flat_cpu_float32"]["identical"]
        del index
    names = list(results)
    for other in names[1:]:  # precisions differ in candidates only: the rescored top k must not
        out[f"{other}_vs_{names[0]}"] = compare(*results[other], *results[names[0]])
        ok &= out[f"{other}_vs_{names[0]}"]["identical"]

    if importable("faiss"):
        import faiss
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        nf = min(len(q), a.flat_queries or len(q))
        cfg = IndexConfig(kind="flat", shards=a.shards, use_gpu="false")
        t = time.perf_counter()
        index = LocalShardedIndex.build(cfg, docs)
        build = time.perf_counter() - t
        ords, scores, s = run_search(index, q[:nf], a.k, a.block, "cpu")
        out["faiss_flat_cpu"] = {"build_seconds": build, "search_seconds": s, "queries": nf,
                                 "queries_per_s": nf / s, "threads": faiss.omp_get_max_threads()}
        for name in names:
            out[f"{name}_vs_faiss_flat_cpu"] = compare(results[name][0][:nf], results[name][1][:nf], ords, scores)
            ok &= out[f"{name}_vs_faiss_flat_cpu"]["identical"]
        del index
    else:
        out["faiss_flat_cpu"] = {"skipped": "faiss is not installed (benchmarks/gpu_wheels.sh --faiss)"}

    nr = min(len(q), a.ref_queries)
    t = time.perf_counter()
    ref = brute_force(x, q[:nr], a.k)
    s = time.perf_counter() - t
    out["numpy_float64_brute_force"] = {"queries": nr, "seconds": s, "queries_per_s": nr / s}
    for name in names:
        out[f"{name}_vs_brute_force"] = compare(results[name][0][:nr], results[name][1][:nr], *ref)
        ok &= out[f"{name}_vs_brute_force"]["identical"]
    out["ok"] = bool(ok)
    return out


# ---- 4. end to end -------------------------------------------------------------------------------------------

def step_mine_e2e(a) -> dict:
    if a.cpu and not a.e2e:
        raise Skip("dry run: the end-to-end run takes minutes on a CPU (--e2e runs it here)")
    if not importable("ray"):
        raise Skip("Ray is not installed here (its wheel is over the carry limit): streammine mine cannot run")
    outdir = tempfile.mkdtemp(prefix="gpu-check-mine-")
    cmd = [sys.executable, "-m", "streammine.cli", "mine", "--input", a.data, "--output", outdir,
           "--index", "torch-flat", "--no-progress", "--overwrite"]
    if a.model:
        cmd += ["--model", a.model]
    if a.cpu:
        cmd += ["--max-queries", "8"]
    env = child_env()
    t = time.perf_counter()
    rc, lines = run_child(cmd, env, a.e2e_timeout)
    return {"returncode": rc, "seconds": time.perf_counter() - t, "tail": lines[-15:], "ok": rc == 0}


# ---- driver --------------------------------------------------------------------------------------------------

STEPS = [("tests", step_tests), ("encode", step_encode), ("search", step_search), ("mine_e2e", step_mine_e2e)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="dry run: tiny sizes on the CPU")
    p.add_argument("--out", help="the JSON of figures (default $OUT/gpu_check.json, else ./gpu_check.json)")
    p.add_argument("--data", help="a BEIR dataset directory (default: the shipped scifact-mini)")
    p.add_argument("--model", default=os.environ.get("STREAMMINE_MODEL_DIR"),
                   help="a sentence-transformers model directory (default: $STREAMMINE_MODEL_DIR, else the packaged "
                        "all-MiniLM-L6-v2)")
    p.add_argument("--steps", default=",".join(n for n, _ in STEPS), help="comma-separated subset to run")
    p.add_argument("--tests", action="store_true", help="run the tests step in a dry run too")
    p.add_argument("--e2e", action="store_true", help="run the end-to-end step in a dry run too")
    p.add_argument("--n-docs", type=int)
    p.add_argument("--n-queries", type=int)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=100, help="top k per query (a miner's range_max + slack)")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--block", type=int, default=4096, help="queries per search call (a miner's query block)")
    p.add_argument("--flat-queries", type=int, help="queries searched by faiss Flat (default: all)")
    p.add_argument("--ref-queries", type=int, help="queries checked against numpy brute force")
    p.add_argument("--cpu-queries", type=int, default=2000,
                   help="on a GPU: queries also searched by torch-flat on the CPU (float32), for its q/s")
    p.add_argument("--max-docs", type=int, help="documents encoded (0: all)")
    p.add_argument("--torch-dtypes", default="float16,bfloat16", help="torch-flat precisions on a GPU")
    p.add_argument("--tests-timeout", type=int, default=240)
    p.add_argument("--e2e-timeout", type=int, default=240)
    a = p.parse_args(argv)
    small = a.cpu
    a.n_docs = a.n_docs or (20_000 if small else 1_000_000)
    a.n_queries = a.n_queries or (512 if small else 100_000)
    a.ref_queries = a.ref_queries if a.ref_queries is not None else (64 if small else 1000)
    a.max_docs = a.max_docs if a.max_docs is not None else (16 if small else 0)
    if small:
        a.block = min(a.block, 256)
    a.data = a.data or os.path.join(ROOT, "streammine", "data", "scifact-mini")
    import torch
    a.device = "cuda" if torch.cuda.is_available() and not a.cpu else "cpu"
    a.torch_dtypes = [t for t in a.torch_dtypes.split(",") if t] if a.device == "cuda" else ["float32"]
    if not a.out:
        a.out = os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else "gpu_check.json"
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if not a.cpu and a.device != "cuda":
        print("gpu_check: error: torch sees no GPU here; use --cpu for the dry run", file=sys.stderr)
        return 2
    report = {"started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "mode": "cpu-dry-run" if a.cpu else "gpu", "argv": sys.argv[1:], "env": env_info(a.device),
              "steps": {}}
    failed = []
    wanted = set(a.steps.split(","))
    for name, fn in STEPS:
        if name not in wanted:
            continue
        t = time.perf_counter()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            res = fn(a)
            if not res.get("ok", True):
                failed.append(name)
        except Skip as e:
            res = {"skipped": str(e)}
        except Exception as e:  # recorded, and the other steps still run
            res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc().splitlines()[-12:]}
            failed.append(name)
        res["step_seconds"] = round(time.perf_counter() - t, 2)
        report["steps"][name] = res
        print(f"gpu_check: {name}: {json.dumps(res, default=str)[:600]}", flush=True)
        write(report, a.out)
    report["failed"] = failed
    report["ok"] = not failed
    write(report, a.out)
    print(f"gpu_check: {'ok' if not failed else 'FAILED: ' + ', '.join(failed)}; figures in {a.out}")
    return 0 if not failed else 1


def write(report: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, default=str)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
