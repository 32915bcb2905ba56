"""``streammine report OUTPUT``: the subcommand's flags and what it runs (wired into ``streammine.cli``)."""
from __future__ import annotations

import sys


def add_parser(subparsers):
    """Adds the ``report`` subcommand to the ``streammine`` parser's subparsers."""
    p = subparsers.add_parser("report", help="an HTML report with figures on a mining output (local or s3://)",
                              description="Streams over a mining output and writes report.html (self-contained), "
                                          "its figures as PNG files and stats.json.")
    p.add_argument("output", help="the mining output directory (local path or any fsspec URL)")
    p.add_argument("--report-dir", help="where to write the report (default: <output>/report)")
    p.add_argument("--sample", type=int, default=20, help="example queries shown side by side (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the example sample (default 0)")
    p.add_argument("--no-texts", action="store_true",
                   help="do not read the run's corpus for the example documents' texts (ids only)")
    return p


def run(args) -> int:
    from ..errors import StreamMineError
    from .build import run_report
    if args.sample < 0:
        print("streammine: error: --sample must be >= 0", file=sys.stderr)
        return 2
    try:
        stats = run_report(args.output, report_dir=args.report_dir, sample=args.sample, seed=args.seed,
                           texts=not args.no_texts)
    except StreamMineError as e:
        print(f"streammine: error: {e}", file=sys.stderr)
        return 2
    per_query = stats["negatives"] / stats["queries"] if stats["queries"] else 0.0
    print(f"queries:   {stats['queries']:,}; negatives {stats['negatives']:,} ({per_query:.2f} per query); "
          f"{stats['short']:,} short")
    print(f"removed:   {stats['removed']:,} probable false negatives in {stats['queries_with_removed']:,} queries")
    for note in stats["notes"]:
        print(f"note:      {note}")
    print(f"report:    {stats['report']}  ({len(stats['figures'])} figures, {len(stats['sample'])} example queries, "
          f"{stats['seconds']:.1f} s)")
    return 0
