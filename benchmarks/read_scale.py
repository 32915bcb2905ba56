"""Read scale: corpus documents per second through the run's Ray read tasks, one read task vs the default.

A synthetic corpus of short documents in 16 files (JSONL, and the same documents as Parquet), read as a pairs
input's corpus table, and (``jsonl-1file``) as one BEIR ``corpus.jsonl`` cut into byte ranges. What is timed is
the corpus read stage exactly as ``mine`` builds it (``io.run_input.corpus_read_fns`` -> ``read_dataset``): split
planning, then parsing, validation, text keys and Arrow blocks in the read tasks; the blocks stay in Ray's object
store (nothing downstream), so no encoder or index time is mixed in. Ray starts as a run starts it
(``run.ray_runtime.start_ray``: all the machine's cores, the run's Ray Data settings).

Where the time goes: one split profiled in this process (raw bytes, lines + ``json.loads``, the whole reader), and
the planning step (listing, sizes, newline counts of byte ranges).

    python benchmarks/read_scale.py --docs 2000000 --files 16 --work /tmp/sm-read-scale

Prints JSON and writes benchmarks/results/read_scale.json (``--out``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORDS = np.array("the of and to in a is that for it as was with be by on not he this are or his from at which "
                 "but have an they you were her she there been one all we their has would when if so no will "
                 "protein cell gene study results patients treatment effect analysis model data".split())


def make_data(work: str, n_docs: int, n_files: int, seed: int = 0) -> dict:
    """``jsonl/`` and ``parquet/`` corpus tables (n_files files each), a BEIR directory with the same documents in
    one corpus.jsonl, and a one-row pairs table naming a document by id (so the corpus is the table alone)."""
    paths = {"jsonl": os.path.join(work, "jsonl"), "parquet": os.path.join(work, "parquet"),
             "beir": os.path.join(work, "beir"), "pairs": os.path.join(work, "pairs.jsonl")}
    done = os.path.join(work, f"DONE-{n_docs}-{n_files}")
    if os.path.exists(done):
        return paths
    for p in ("jsonl", "parquet", "beir"):
        os.makedirs(paths[p], exist_ok=True)
    os.makedirs(os.path.join(paths["beir"], "qrels"), exist_ok=True)
    rng = np.random.default_rng(seed)
    per_file = -(-n_docs // n_files)
    with open(os.path.join(paths["beir"], "corpus.jsonl"), "w") as beir:
        for f in range(n_files):
            lo, hi = f * per_file, min(n_docs, (f + 1) * per_file)
            lengths = rng.integers(5, 20, hi - lo)
            words = WORDS[rng.integers(0, len(WORDS), int(lengths.sum()))]
            cuts = np.cumsum(lengths)[:-1]
            texts = [" ".join(w) for w in np.split(words, cuts)]
            ids = [f"d{i}" for i in range(lo, hi)]
            lines = "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in zip(ids, texts))
            with open(os.path.join(paths["jsonl"], f"part-{f:02d}.jsonl"), "w") as out:
                out.write(lines)
            beir.write(lines)
            pq.write_table(pa.table({"_id": ids, "title": [""] * len(ids), "text": texts}),
                           os.path.join(paths["parquet"], f"part-{f:02d}.parquet"), row_group_size=16384)
    with open(os.path.join(paths["beir"], "queries.jsonl"), "w") as f:
        f.write(json.dumps({"_id": "q0", "text": "query"}) + "\n")
    with open(os.path.join(paths["beir"], "qrels", "train.tsv"), "w") as f:
        f.write("q0\td0\t1\n")
    with open(paths["pairs"], "w") as f:
        f.write(json.dumps({"anchor": "query", "positive_id": "d0"}) + "\n")
    open(done, "w").close()
    return paths


def variant_overrides(paths: dict, variant: str, split_mb: float) -> dict:
    if variant == "jsonl-1file":
        return {"input.path": paths["beir"], "input.read_split_mb": split_mb}
    return {"input.format": "pairs", "input.path": paths["pairs"], "input.corpus": paths[variant],
            "input.columns.positive_id": "positive_id", "input.columns.positive": None,
            "input.read_split_mb": split_mb}


def time_read(cfg, block_rows: int) -> dict:
    """Split planning, then the read stage through Ray to the last block (blocks stay in the object store)."""
    from streammine.io.run_input import corpus_read_fns, read_dataset
    t0 = time.perf_counter()
    fns = corpus_read_fns(cfg, None, block_rows)
    t1 = time.perf_counter()
    rows = 0
    ds = read_dataset(fns, "corpus")
    for bundle in ds.iter_internal_ref_bundles():
        rows += bundle.num_rows()
    t2 = time.perf_counter()
    # Ray Data's own account of the read tasks (wall and CPU time per task, summed): where the time went
    stats = [line.strip() for line in ds.stats().splitlines() if "time" in line or "executed" in line][:8]
    return {"read_tasks": len(fns), "rows": rows, "plan_seconds": round(t1 - t0, 3),
            "read_seconds": round(t2 - t1, 3), "seconds": round(t2 - t0, 3),
            "rows_per_second": round(rows / (t2 - t0)), "ray_data_stats": stats}


def profile_split(cfg, block_rows: int) -> dict:
    """One split, in this process: raw bytes, lines + json.loads (JSONL) or Arrow rows (Parquet), whole reader."""
    from streammine.io import fs
    from streammine.io.formats import input_format
    from streammine.io.formats.base import split_bytes_of
    fmt = input_format(cfg)
    split = fmt.corpus_splits(split_bytes_of(cfg.input))[0]
    out = {"split": {"url": split.url, "start": split.start, "stop": split.stop}}
    t = time.perf_counter()
    with fs.open_url(split.url, "rb") as f:
        data = f.read() if split.stop is None or split.url.endswith(".parquet") else f.read(split.stop)
    out["bytes"] = len(data)
    if split.stop is not None and not split.url.endswith(".parquet"):
        data = data[: data.rfind(b"\n") + 1]  # whole lines (the reader also reads the last one past the range)
    out["io_seconds"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    if split.url.endswith(".parquet"):
        n = sum(len(b.to_pylist()) for b in pq.ParquetFile(pa.BufferReader(data)).iter_batches(block_rows))
        out["decode_rows_seconds"] = round(time.perf_counter() - t, 3)
    else:
        n = sum(1 for line in data.split(b"\n") if line.strip() and json.loads(line)) + 1
        out["json_seconds"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    rows = sum(b.num_rows for b in fmt.read_corpus([split], block_rows))
    out["reader_seconds"] = round(time.perf_counter() - t, 3)
    out["rows"] = rows
    assert n >= rows
    out["reader_rows_per_second"] = round(rows / max(out["reader_seconds"], 1e-9))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--work", default="/tmp/sm-read-scale")
    ap.add_argument("--variants", default="jsonl,parquet,jsonl-1file")
    ap.add_argument("--block-rows", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=2,
                    help="best of N timings per setting (the first default run also starts Ray's worker processes)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "read_scale.json"))
    args = ap.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    from streammine.config import MineConfig
    from streammine.run.ray_runtime import start_ray
    import ray

    t = time.perf_counter()
    paths = make_data(args.work, args.docs, args.files)
    make_seconds = time.perf_counter() - t
    start_ray(MineConfig().run)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    size = sum(os.path.getsize(os.path.join(paths["jsonl"], f)) for f in os.listdir(paths["jsonl"]))
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version(), "ray": ray.__version__,
                           "ray_cpus": ray.cluster_resources().get("CPU"),
                           "loadavg_at_start": os.getloadavg()},
               "docs": args.docs, "files": args.files, "jsonl_bytes": size,
               "data_seconds": round(make_seconds, 1), "variants": {}}
    for variant in args.variants.split(","):
        # the single BEIR file is cut into as many byte ranges as the table has files
        split_mb = size / args.files / (1 << 20) * 1.001 if variant == "jsonl-1file" else 64.0
        base = MineConfig.from_sources(None, variant_overrides(paths, variant, split_mb))
        entry = {}
        for name, tasks in (("single_task", 1), ("default", 0)):
            cfg = dataclasses.replace(base, input=dataclasses.replace(base.input, read_tasks=tasks))
            runs = [time_read(cfg, args.block_rows) for _ in range(args.repeats)]
            entry[name] = min(runs, key=lambda r: r["seconds"])
            assert entry[name]["rows"] == args.docs, entry[name]
        entry["speedup"] = round(entry["default"]["rows_per_second"] / entry["single_task"]["rows_per_second"], 2)
        entry["one_split_in_process"] = profile_split(base, args.block_rows)
        results["variants"][variant] = entry
        print(json.dumps({variant: entry}), flush=True)
    results["loadavg_at_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
