"""Continuous-mining benchmark: warm vs cold re-mining, refresh time against corpus size, checkpoint-to-negatives
latency, and what a restart with an unchanged model encodes.

    python benchmarks/refresh.py --data ../shared/data/scifact --out benchmarks/results/refresh.json

1. SciFact train mined twice by `streammine mine` processes sharing one work dir: cold (nothing cached) and warm
   (same model: corpus and query vectors from the caches). Both include process and Ray start. The warm output must
   equal the cold one (same negatives, same scores).
2. Refresh (encode the corpus with a new model version through the cache, start and build the shards) for growing
   prefixes of the corpus, then an incremental refresh after adding 5 % new documents.
3. `serve` following a checkpoint directory: time from a checkpoint's marker to the first committed negatives mined
   with it; then `serve` restarted on the same run: documents and queries encoded by the restart.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time



def machine() -> dict:
    import torch
    return {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def subset(src: str, dst: str, n_docs: int, extra_docs: int = 0) -> str:
    """The first ``n_docs`` documents (plus ``extra_docs`` synthetic new ones), the train qrels whose documents are
    among them and their queries."""
    os.makedirs(os.path.join(dst, "qrels"), exist_ok=True)
    ids = set()
    with open(os.path.join(src, "corpus.jsonl")) as f, open(os.path.join(dst, "corpus.jsonl"), "w") as g:
        for i, line in enumerate(f):
            if i >= n_docs:
                break
            ids.add(json.loads(line)["_id"])
            g.write(line)
        for i in range(extra_docs):
            g.write(json.dumps({"_id": f"added-{i}", "title": "", "text": f"An added abstract {i} on biology."})
                    + "\n")
    with open(os.path.join(src, "qrels", "train.tsv")) as f:
        header, *rows = f.read().splitlines()
    by_query: dict = {}
    for row in rows:
        q, d = row.split("\t")[:2]
        by_query.setdefault(q, []).append((d, row))
    kept = {q: r for q, r in by_query.items() if all(d in ids for d, _ in r)}
    with open(os.path.join(dst, "qrels", "train.tsv"), "w") as f:
        f.write("\n".join([header] + [row for r in kept.values() for _, row in r]) + "\n")
    with open(os.path.join(src, "queries.jsonl")) as f, open(os.path.join(dst, "queries.jsonl"), "w") as g:
        g.writelines(line for line in f if line.strip() and json.loads(line)["_id"] in kept)
    return dst


def rows_by_query(out: str) -> dict:
    from streammine.consume.committed import iter_rows
    rows = {}
    for batch in iter_rows(out, columns=["query_id", "negative_ids", "negative_scores"]):
        for r in batch.to_pylist():
            rows[r["query_id"]] = (r["negative_ids"], [round(s, 5) for s in r["negative_scores"]])
    return rows


def cold_vs_warm(data: str, work: str, tmp: str) -> dict:
    def run(name):
        out = os.path.join(tmp, name)
        cmd = [sys.executable, "-m", "streammine.cli", "mine", "--input", data, "--split", "train", "--output",
               out, "--no-progress", "--shards", "2", "--set", f"run.work_dir={work}"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        summary = json.load(open(os.path.join(out, "summary.json")))
        return out, {"wall_seconds": round(wall, 1), "seconds": summary["seconds"],
                     "documents_encoded": summary["counts"]["documents_encoded"],
                     "queries_encoded": summary["counts"]["queries_encoded"],
                     "queries_from_cache": summary["counts"]["queries_from_cache"],
                     "queries_out": summary["counts"]["queries_out"],
                     "query_vectors": summary.get("query_vectors")}
    cold_out, cold = run("cold")
    warm_out, warm = run("warm")
    same = rows_by_query(cold_out) == rows_by_query(warm_out)
    return {"cold": cold, "warm": warm, "speedup": round(cold["wall_seconds"] / warm["wall_seconds"], 1),
            "warm_output_equals_cold": same}


def refresh_sizes(data: str, sizes: list, tmp: str) -> list:
    from streammine.api import load_config
    from streammine.metrics import start_stage_metrics
    from streammine.refresh.serve import build_version
    from streammine.refresh.versions import ModelVersion
    results = []
    metrics = start_stage_metrics()
    for n in sizes:
        d = subset(data, os.path.join(tmp, f"subset-{n}"), n)
        work = os.path.join(tmp, f"work-{n}")
        cfg = load_config(None, {"input.path": d, "output.path": os.path.join(tmp, f"out-{n}"),
                                 "run.work_dir": work, "index.shards": 2, "run.progress": False})
        v = build_version(cfg, ModelVersion("initial", "", -1, 0.0), metrics)
        v.index.shutdown()
        row = {"documents": n, "refresh_seconds": v.refresh_seconds, "encoded": v.docs_encoded,
               "docs_per_second": round(n / v.refresh_seconds, 1)}
        # incremental: 5 % new documents appended, same model
        extra = max(1, n // 20)
        subset(data, d, n, extra_docs=extra)
        v2 = build_version(cfg, ModelVersion("initial", "", -1, 0.0), metrics)
        v2.index.shutdown()
        row.update(incremental_added=extra, incremental_refresh_seconds=v2.refresh_seconds,
                   incremental_encoded=v2.docs_encoded, incremental_cached=v2.docs_cached)
        print("refresh", row, flush=True)
        results.append(row)
    return results


def perturbed_copy(src: str, dst: str) -> str:
    import torch
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(src, device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "encoder.layer.5" in name and p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    model.save(dst)
    return dst


def serve_latency(data: str, n_docs: int, tmp: str) -> dict:
    from streammine.api import load_config
    from streammine.encode.base import default_model_path
    from streammine.refresh.serve import serve
    from streammine.refresh.versions import publish_checkpoint
    from streammine.sink.commit_log import CommitLog
    d = subset(data, os.path.join(tmp, "serve-data"), n_docs)
    ckpts, out = os.path.join(tmp, "ckpts"), os.path.join(tmp, "serve-run")
    publish_checkpoint(default_model_path(), ckpts, step=0)
    cfg = load_config(None, {"input.path": d, "output.path": out, "serve.checkpoints": ckpts,
                             "serve.poll_seconds": 1.0, "index.shards": 2, "run.progress": False})
    stop = threading.Event()
    result = {}
    def run():
        try:
            result["summary"] = serve(cfg, stop_event=stop)
        except BaseException as e:  # noqa: BLE001 - reported by wait_version
            result["error"] = e
    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def wait_version(name, timeout=1800):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if "error" in result:
                raise RuntimeError(f"serve failed: {result['error']}")
            if any(e["version"] == name for e in CommitLog(out).entries()):
                return
            time.sleep(1.0)
        raise RuntimeError(f"{name} not mined in time")
    wait_version("step-000000000")
    publish_checkpoint(perturbed_copy(default_model_path(), os.path.join(tmp, "v1")), ckpts, step=1)
    wait_version("step-000000001")
    stop.set()
    thread.join()
    v1 = result["summary"]["versions"]["step-000000001"]
    # restart on the same run with the same (latest) model: nothing to encode, nothing to mine again
    t0 = time.perf_counter()
    restart = serve(load_config(cfg.to_dict(), {"serve.max_versions": 1}))
    restart_wall = time.perf_counter() - t0
    rv = restart["versions"]["step-000000001"]
    return {"documents": n_docs, "checkpoint_to_first_negatives_seconds": v1["checkpoint_to_first_negatives_seconds"],
            "refresh_seconds": v1["refresh_seconds"], "queries_mined": v1["queries_mined"],
            "negatives_per_second": v1["negatives_per_second"],
            "restart": {"wall_seconds": round(restart_wall, 1), "units_mined_again": rv["units"] - v1["units"],
                        "documents_encoded_by_restart": rv["docs_encoded"] - v1["docs_encoded"]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/scifact")
    p.add_argument("--out", default="benchmarks/results/refresh.json")
    p.add_argument("--sizes", default="500,1000,2000")
    p.add_argument("--serve-docs", type=int, default=1000)
    p.add_argument("--skip", default="", help="comma list of parts to skip: coldwarm,sizes,serve")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    skip = set(filter(None, args.skip.split(",")))
    tmp = tempfile.mkdtemp(prefix="streammine-refresh-bench-")
    result = {"machine": machine(), "data": os.path.abspath(args.data)}
    if skip and os.path.exists(args.out):  # a partial rerun keeps the parts it skips
        with open(args.out) as f:
            result = dict(json.load(f), **result)
    if "coldwarm" not in skip:
        result["cold_vs_warm"] = cold_vs_warm(args.data, os.path.join(tmp, "work"), tmp)
        print("cold vs warm", result["cold_vs_warm"], flush=True)
    from streammine.run.ray_runtime import ensure_ray
    ensure_ray()
    if "sizes" not in skip:
        result["refresh_by_corpus_size"] = refresh_sizes(args.data, [int(s) for s in args.sizes.split(",")], tmp)
    if "serve" not in skip:
        result["serve"] = serve_latency(args.data, args.serve_docs, tmp)
        print("serve", result["serve"], flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
