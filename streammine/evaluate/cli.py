"""``streammine eval --config eval.yaml [--output DIR] [--set base.train.max_steps=10 ...]``.

Wired into the ``streammine`` command by ``streammine/cli.py`` (``add_parser(sub)``; ``run(args)`` for the
``eval`` command)."""
from __future__ import annotations

import sys

from ..config import parse_set_items
from ..errors import StreamMineError
from . import runner

HELP = ("fine-tune a copy of the model with the negatives of several mining configurations and score each on "
        "held-out queries (nDCG@10, MRR@10, Recall@100)")


def add_parser(subparsers):
    e = subparsers.add_parser("eval", help=HELP, description=HELP)
    e.add_argument("--config", required=True, help="YAML with `base` settings and a list of `variants`")
    e.add_argument("--data", help="sets base.data (a BEIR directory with the training split)")
    e.add_argument("--output", help="sets base.output (a local directory)")
    e.add_argument("--max-steps", help="sets base.train.max_steps")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any eval key, e.g. --set base.heldout_fraction=0.25 or --set base.mine.index.shards=4")
    return e


def overrides_from_args(args) -> dict:
    overrides = {}
    for flag, key in (("data", "base.data"), ("output", "base.output"), ("max_steps", "base.train.max_steps")):
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    overrides.update(parse_set_items(args.set))
    return overrides


def run(args) -> int:
    try:
        result = runner.run_eval(args.config, overrides_from_args(args))
    except StreamMineError as e:
        print(f"streammine: error: {e}", file=sys.stderr)
        return 2
    r = result.report
    m = r["machine"]
    print()
    print(result.table)
    print(runner.TABLE_NOTE)
    print(f"\n{r['split']['heldout_queries']} held-out queries, {r['split']['train_queries']} training queries, "
          f"{r['split']['docs']} documents; {m['cpus']} CPUs, device {m['device']}; {r['total_seconds']:.0f} s")
    print(f"written: {result.json_path}")
    return 0
