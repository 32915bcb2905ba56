"""The ``streammine`` command: ``mine`` (flags and/or a YAML config; flags override the file), ``demo``,
``report`` (an HTML page on a mining output) and ``eval`` (fine-tune and evaluate per mining configuration)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile

from .config import parse_set_items
from .errors import StreamMineError
from .evaluate import cli as eval_cli
from .report import cli as report_cli

# flag -> dotted config key; every other setting is reachable through --set KEY=VALUE
FLAGS = {
    "input": "input.path", "format": "input.format", "split": "input.split", "corpus": "input.corpus",
    "max_queries": "input.max_queries", "output": "output.path", "model": "encoder.model",
    "query_prompt": "encoder.query_prompt", "document_prompt": "encoder.document_prompt",
    "encoders": "encoder.num_actors", "corpus_vectors": "encoder.corpus_vectors",
    "query_vectors": "encoder.query_vectors", "index": "index.kind", "shards": "index.shards",
    "filter": "mining.filter.method", "perc": "mining.filter.perc", "margin": "mining.filter.margin",
    "max_score": "mining.filter.max_score", "min_score": "mining.filter.min_score",
    "sampler": "mining.sampler.method", "num_negatives": "mining.sampler.num_negatives",
    "range_min": "mining.sampler.range_min", "range_max": "mining.sampler.range_max",
    "random_share": "mining.sampler.random_share", "seed": "mining.seed", "export": "output.export",
    "address": "run.address", "batch_size": "run.query_batch_size",
    "cross_encoder": "mining.cross_encoder.model", "ce_threshold": "mining.cross_encoder.threshold",
    "ce_pool": "mining.cross_encoder.pool",
}
SWITCHES = {"lenient": "input.lenient", "overwrite": "output.overwrite", "precomputed": None,
            "no_progress": None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streammine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_arguments(sub.add_parser("mine", help="mine hard negatives"))
    s = sub.add_parser("serve", help="mine continuously: follow checkpoints and query files until stopped")
    _add_run_arguments(s)
    s.add_argument("--checkpoints", dest="checkpoints", help="sets serve.checkpoints (a URL to follow)")
    r = sub.add_parser("refresh", help="make a running (or the next) serve of a run use this model now")
    r.add_argument("--output", required=True, help="the run's output URL (its identity)")
    r.add_argument("--model", required=True, help="checkpoint directory URL (a sentence-transformers model)")
    r.add_argument("--name", help="the version name output rows will carry (default manual-<time>)")
    st = sub.add_parser("stop", help="stop a serve after its unit in flight and close its log")
    st.add_argument("--output", required=True, help="the run's output URL")
    d = sub.add_parser("demo", help="mine the shipped SciFact slice on a local Ray and print a summary")
    d.add_argument("--output", help="where to write (default: a new temporary directory)")
    d.add_argument("--shards", default="2")
    report_cli.add_parser(sub)
    eval_cli.add_parser(sub)
    return parser


def _add_run_arguments(m) -> None:
    m.add_argument("--config", help="YAML config (local path or any fsspec URL)")
    for flag, key in FLAGS.items():
        m.add_argument("--" + flag.replace("_", "-"), dest=flag, help=f"sets {key}")
    m.add_argument("--lenient", action="store_true", help="quarantine bad rows instead of failing")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output")
    m.add_argument("--precomputed", action="store_true", help="use --corpus-vectors/--query-vectors")
    m.add_argument("--no-progress", action="store_true")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set index.nprobe=32")


def overrides_from_args(args) -> dict:
    overrides = {key: getattr(args, flag) for flag, key in FLAGS.items() if getattr(args, flag) is not None}
    if getattr(args, "checkpoints", None):
        overrides["serve.checkpoints"] = args.checkpoints
    if args.lenient:
        overrides["input.lenient"] = True
    if args.overwrite:
        overrides["output.overwrite"] = True
    if args.precomputed:
        overrides["encoder.kind"] = "precomputed"
    if args.no_progress:
        overrides["run.progress"] = False
    overrides.update(parse_set_items(args.set))
    return overrides


def print_summary(result) -> None:
    s = result.summary
    c = s["counts"]
    print(f"\noutput:   {result.output}")
    print(f"queries:  {c['queries_out']} mined of {c['queries_in']} read; {c['queries_short_of_negatives']} "
          f"short of negatives; {c['quarantined_total']} rows quarantined")
    print(f"negatives: {c['negatives']}; removed as probable false negatives: "
          f"{c['removed_probable_false_negatives']}; known positives skipped: {c['removed_known_positives']}")
    print(f"time:     {s['seconds']['total']:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in s['seconds'].items() if k != 'total')})")
    print(f"summary:  {result.output.rstrip('/')}/summary.json")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="streammine: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from packages or paths, never from a hub at run time
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return report_cli.run(args)
    if args.command == "eval":
        return eval_cli.run(args)
    if args.command in ("refresh", "stop"):
        from .refresh.watch import request_refresh, request_stop
        try:
            if args.command == "refresh":
                req = request_refresh(args.output, args.model, args.name)
                print(f"streammine: {args.output} will mine with {args.model} as version {req['name']}")
            else:
                request_stop(args.output)
                print(f"streammine: asked the serve of {args.output} to stop")
        except StreamMineError as e:
            print(f"streammine: error: {e}", file=sys.stderr)
            return 2
        return 0
    from .api import demo_data_path, load_config, mine
    if args.command == "serve":
        from .refresh.serve import serve
        try:
            summary = serve(load_config(args.config, overrides_from_args(args)))
        except StreamMineError as e:
            print(f"streammine: error: {e}", file=sys.stderr)
            return 2
        print(json.dumps({k: summary.get(k) for k in ("run", "units_committed", "versions_completed")}))
        return 0
    try:
        if args.command == "mine":
            cfg = load_config(args.config, overrides_from_args(args))
        else:
            out = args.output or tempfile.mkdtemp(prefix="streammine-demo-")
            cfg = load_config(None, {"input.path": demo_data_path(), "output.path": out, "output.overwrite": True,
                                     "index.shards": args.shards, "output.export": "st-triplet,flagembedding"})
            print(f"streammine demo: mining {cfg.input.path} (SciFact slice, CC BY-NC 2.0) on a local Ray")
        result = mine(cfg)
    except StreamMineError as e:
        print(f"streammine: error: {e}", file=sys.stderr)
        return 2
    print_summary(result)
    if args.command == "demo":
        print("\nfirst mined row:")
        from .sink.parts import iter_rows
        batch = next(iter_rows(result.output, columns=["query", "positive_ids", "negative_ids", "negative_scores"]))
        print(json.dumps(batch.slice(0, 1).to_pylist()[0], indent=1, default=float)[:1500])
    return 0


if __name__ == "__main__":
    sys.exit(main())
