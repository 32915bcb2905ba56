"""The headline benchmark on a BEIR directory (SciFact train here): streammine vs sentence-transformers
`mine_hard_negatives`, and streammine vs the encoder alone. Each measurement runs in its own fresh process, one
after the other, on an otherwise idle machine.

    python benchmarks/scifact.py --data ../shared/data/scifact --results benchmarks/results/scifact

Settings (both sides): all-MiniLM-L6-v2, TopK-PercPos 0.95 (ST: relative_margin=0.05), 5 negatives, range_max 50,
top sampler, exact (Flat) search, batch size 32.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# the mining settings both sides are held to (see the docstring); benchmarks/efficiency.py uses them too
MINE_FLAGS = ["--filter", "topk-percpos", "--perc", "0.95", "--num-negatives", "5", "--range-max", "50",
              "--sampler", "top", "--index", "flat", "--no-progress"]


def timed(cmd: list, env: dict) -> float:
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--results", default=os.path.join(HERE, "results", "scifact"))
    p.add_argument("--shards", default="2")
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--reuse-encode-only", action="store_true", help="keep the encode_only.json of an earlier run")
    a = p.parse_args()
    os.makedirs(a.results, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled")
    py = sys.executable
    res = {"data": a.data, "cpus": os.cpu_count(), "machine": os.uname().machine}
    if not a.skip_peer:
        res["peer_wall_seconds"] = timed([py, os.path.join(HERE, "peer_st.py"), "--data", a.data, "--out",
                                          os.path.join(a.results, "peer.json")], env)
    # the encoder alone, as one process with every core, and as one single-core process per core (the faster
    # of the two is the bound streammine is held to)
    layouts = {"encode_only": 1, "encode_only_per_core": os.cpu_count() or 1}
    for name, procs in layouts.items():
        path = os.path.join(a.results, f"{name}.json")
        if not (a.reuse_encode_only and os.path.exists(path)):
            timed([py, os.path.join(HERE, "encode_only.py"), "--data", a.data, "--procs", str(procs), "--out", path],
                  env)
    out = os.path.join(a.results, "streammine-out")
    cache = os.path.join(out + "-cache")
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)  # cold: no embedding store or query vectors to reuse
    mine = ["-m", "streammine.cli", "mine", "--input", a.data, "--output", out, "--overwrite", "--shards", a.shards,
            "--cache-dir", cache, *MINE_FLAGS]
    res["streammine_cold_wall_seconds"] = timed([py] + mine, env)
    with open(os.path.join(out, "summary.json")) as f:
        cold = json.load(f)
    res["streammine_cold_summary_seconds"] = cold["seconds"]
    res["streammine_cold_stages"] = cold["stages"]
    res["streammine_warm_wall_seconds"] = timed([py] + mine, env)  # the cache's store and query vectors are reused
    with open(os.path.join(out, "summary.json")) as f:
        res["streammine_warm_summary_seconds"] = json.load(f)["seconds"]
    for name in layouts:
        with open(os.path.join(a.results, f"{name}.json")) as f:
            res[name] = json.load(f)
    best = min(res[name]["encode_seconds"] for name in layouts)
    res["encoder_efficiency_cold"] = best / res["streammine_cold_wall_seconds"]
    if not a.skip_peer:
        res["wall_ratio_cold"] = res["streammine_cold_wall_seconds"] / res["peer_wall_seconds"]
        cmp = subprocess.run([py, os.path.join(HERE, "compare.py"), "--peer", os.path.join(a.results, "peer.json"),
                              "--ours", out, "--header", "--out", os.path.join(a.results, "compare.json")],
                             env=env, check=True, capture_output=True, text=True)
        print(cmp.stdout)
        with open(os.path.join(a.results, "compare.txt"), "w") as f:
            f.write(cmp.stdout)
    with open(os.path.join(a.results, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()
