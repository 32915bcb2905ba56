"""Encoder-bound efficiency against corpus size: a cold `streammine mine` vs the encoder alone on the same texts,
for a BEIR corpus repeated R times (copy r of document d gets the id ``d~r``; queries and qrels unchanged, so the
positives are the original documents and the copies are extra candidates). The run's fixed cost (Ray's start,
actor processes, model loads, the query pass, stop) stays the same while the encoding grows R-fold, so this shows
what the efficiency on the SciFact corpus alone is made of.

    python benchmarks/efficiency.py --data ../shared/data/scifact --repeat 3 --out benchmarks/results/efficiency_x3.json

Each measurement is its own fresh process, one after the other: the encoder alone (one single-threaded process
per core, `encode_only.py`), then streammine cold with its defaults.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from scifact import MINE_FLAGS, timed  # this script's folder is on sys.path when it runs

HERE = os.path.dirname(os.path.abspath(__file__))


def repeated_beir(src: str, dst: str, repeat: int) -> int:
    """Writes ``dst`` as ``src`` with its corpus repeated; returns the number of documents."""
    os.makedirs(os.path.join(dst, "qrels"), exist_ok=True)
    docs = [json.loads(line) for line in open(os.path.join(src, "corpus.jsonl")) if line.strip()]
    with open(os.path.join(dst, "corpus.jsonl"), "w") as f:
        for r in range(repeat):
            for d in docs:
                f.write(json.dumps(dict(d, _id=d["_id"] if r == 0 else f"{d['_id']}~{r}")) + "\n")
    shutil.copy(os.path.join(src, "queries.jsonl"), os.path.join(dst, "queries.jsonl"))
    for name in os.listdir(os.path.join(src, "qrels")):
        shutil.copy(os.path.join(src, "qrels", name), os.path.join(dst, "qrels", name))
    return len(docs) * repeat


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled")
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="streammine-eff-") as tmp:
        data = os.path.join(tmp, "beir")
        n_docs = repeated_beir(a.data, data, a.repeat)
        enc_json = os.path.join(tmp, "encode_only.json")
        timed([py, os.path.join(HERE, "encode_only.py"), "--data", data, "--procs", str(os.cpu_count() or 1),
               "--out", enc_json], env)
        out = os.path.join(tmp, "out")
        wall = timed([py, "-m", "streammine.cli", "mine", "--input", data, "--output", out, "--cache-dir",
                      os.path.join(tmp, "cache"), *MINE_FLAGS], env)
        with open(enc_json) as f:
            enc = json.load(f)
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
    res = {"data": a.data, "repeat": a.repeat, "documents": n_docs, "cpus": os.cpu_count(),
           "encode_only_per_core": enc, "streammine_cold_wall_seconds": wall,
           "streammine_cold_summary_seconds": summary["seconds"], "streammine_cold_stages": summary["stages"],
           "efficiency_encode_time": enc["encode_seconds"] / wall,
           "efficiency_process_time": enc["process_wall_seconds"] / wall,
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()
