"""The ``streammine`` command: ``mine`` (flags and/or a YAML config; flags override the file), ``demo``,
``report`` (an HTML page on a mining output) and ``eval`` (fine-tune and evaluate per mining configuration)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback

from . import __version__, cache, config, console, registries
from .api import demo_data_path, load_config, mine
from .config import MineConfig, parse_set_items
from .errors import ConfigError, find_error, one_line
from .io import fs
from .evaluate import cli as eval_cli
from .preflight import check_serve_output
from .refresh.versions import check_version_name
from .refresh.watch import request_refresh, request_stop
from .report import cli as report_cli

# flag -> dotted config key; every other setting is reachable through --set KEY=VALUE. One flag per key, named
# after the key's last part where that is unambiguous (--batch-size is encoder.batch_size, as in the YAML).
FLAGS = {
    "input": "input.path", "format": "input.format", "split": "input.split", "corpus": "input.corpus",
    "max_queries": "input.max_queries", "output": "output.path", "model": "encoder.model",
    "query_prompt": "encoder.query_prompt", "document_prompt": "encoder.document_prompt",
    "batch_size": "encoder.batch_size",
    "encoders": "encoder.num_actors", "corpus_vectors": "encoder.corpus_vectors",
    "query_vectors": "encoder.query_vectors", "index": "index.kind", "shards": "index.shards",
    "nprobe": "index.nprobe",
    "filter": "mining.filter.method", "perc": "mining.filter.perc", "margin": "mining.filter.margin",
    "max_score": "mining.filter.max_score", "min_score": "mining.filter.min_score",
    "sampler": "mining.sampler.method", "num_negatives": "mining.sampler.num_negatives",
    "range_min": "mining.sampler.range_min", "range_max": "mining.sampler.range_max",
    "random_share": "mining.sampler.random_share", "seed": "mining.seed", "export": "output.export",
    "address": "run.address", "query_batch_size": "run.query_batch_size", "cache_dir": "run.cache_dir",
    "cross_encoder": "mining.cross_encoder.model", "ce_threshold": "mining.cross_encoder.threshold",
    "near_dup_positive": "mining.near_duplicate.positive", "near_dup_negatives": "mining.near_duplicate.negatives",
    "ce_pool": "mining.cross_encoder.pool", "ce_margin": "mining.cross_encoder.margin",
    "ce_relative_margin": "mining.cross_encoder.relative_margin",
    "supplied_negatives": "mining.supplied_negatives", "min_positive_grade": "mining.min_positive_grade",
}
SWITCHES = {"lenient": "input.lenient", "overwrite": "output.overwrite", "precomputed": None,
            "no_progress": None, "export_scores": "output.export_scores"}
HELP = {
    "input": "a BEIR directory, or a pairs table (local path or any fsspec URL)",
    "output": "output folder URL: absent, empty, or an earlier streammine output",
    "model": "sentence-transformers model directory or URL (default: the packaged all-MiniLM-L6-v2)",
    "corpus": "pairs input: a separate corpus table",
    "split": "BEIR: mine the queries of qrels/<split>.tsv",
    "max_queries": "mine only the first N queries (smoke runs)",
    "batch_size": "texts per encoder forward pass (0: by a token budget on CPU, 32 on GPU)",
    "encoders": "encoder actors (0: one per GPU, or per core up to 4 on a CPU machine)",
    "query_batch_size": "queries per block through encode, search and mining",
    "cache_dir": "embedding and query-vector cache, shared by runs (default: $STREAMMINE_CACHE, else "
                 "~/.cache/streammine)",
    "address": "join this Ray cluster (default: $RAY_ADDRESS, else a private local Ray)",
    "export": "comma-separated export formats",
    "corpus_vectors": "precomputed corpus vectors (.npy + .ids.txt, or Parquet id/vector)",
    "query_vectors": "precomputed query vectors",
    "cross_encoder": "cross-encoder model for RocketQA denoising (off by default)",
    "ce_threshold": "a candidate stays a possible negative only below this cross-encoder score",
    "ce_pool": "score only the first N filter survivors (0: the whole window)",
    "near_dup_positive": "drop candidates with cosine >= this to a positive (off by default; e.g. 0.98)",
    "near_dup_negatives": "among the negatives, pass over one with cosine >= this to a kept one (off by default)",
    "ce_margin": "also only below c+ - M (c+: the positives' minimum cross-encoder score)",
    "ce_relative_margin": "also only below c+ - |c+| * R",
    "supplied_negatives": "the input's known negatives (qrels score <= 0, neg column): first among the negatives "
                          "(include), never (exclude), or ordinary documents (ignore)",
    "min_positive_grade": "graded qrels: a positive has a score >= this (0 < score < this: neither)",
}
# a flag's choices: the registry of its config key (registries.py), else a tuple config.py owns
CHOICES = {"format": "input.format", "index": "index.kind", "filter": "mining.filter.method",
           "sampler": "mining.sampler.method", "export": "output.export", "supplied_negatives": "SUPPLIED_NEGATIVES"}

DESCRIPTIONS = {
    "mine": "Mine hard negatives for every query of a BEIR directory or a pairs table, and write them as Parquet "
            "parts (plus optional exports for sentence-transformers and FlagEmbedding).",
    "serve": "Mine continuously: follow a trainer's checkpoints and the query files, committing each unit of work "
             "to a log that NegativesFeed follows, until stopped.",
    "refresh": "Ask a running (or the next) serve of a run to mine with this model now.",
    "stop": "Ask a serve to stop after its unit of work in flight, and close its log.",
    "demo": "Mine the SciFact slice shipped in the package (small: it runs in-process, no Ray) and print a summary.",
    "cache": "Show or prune the embedding and query-vector cache shared by runs.",
}


def _config_default(key: str):
    node = MineConfig()
    for part in key.split("."):
        node = getattr(node, part)
    return node


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streammine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"streammine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help_text):
        return sub.add_parser(name, help=help_text, description=DESCRIPTIONS[name])

    _add_run_arguments(add("mine", "mine hard negatives"))
    s = add("serve", "mine continuously: follow checkpoints and query files until stopped")
    _add_run_arguments(s)
    s.add_argument("--checkpoints", dest="checkpoints", help="sets serve.checkpoints (a URL to follow)")
    r = add("refresh", "make a running (or the next) serve of a run use this model now")
    r.add_argument("--output", required=True, help="the run's output URL (its identity)")
    r.add_argument("--model", required=True, help="checkpoint directory URL (a sentence-transformers model)")
    r.add_argument("--name", help="the version name output rows will carry (default manual-<time>)")
    _add_console_arguments(r)
    st = add("stop", "stop a serve after its unit in flight and close its log")
    st.add_argument("--output", required=True, help="the run's output URL")
    _add_console_arguments(st)
    d = add("demo", "mine the shipped SciFact slice and print a summary")
    d.add_argument("--output", help="where to write (default: a new temporary directory)")
    d.add_argument("--shards", default="2", help="index shards (default: 2)")
    d.add_argument("--cache-dir", dest="cache_dir", help=HELP["cache_dir"])
    _add_console_arguments(d)
    c = add("cache", "show (ls) or prune the cache of embeddings and query vectors")
    c.add_argument("action", choices=("ls", "prune"),
                   help="ls: list entries, sizes and the total; prune: remove entries, oldest first")
    c.add_argument("--cache-dir", dest="cache_dir", help=HELP["cache_dir"])
    c.add_argument("--older-than", dest="older_than",
                   help="prune: entries not modified for this long (e.g. 30d, 12h, 45m)")
    c.add_argument("--max-size", dest="max_size",
                   help="prune: then the oldest entries until the cache holds at most this much (e.g. 10GiB, "
                        "500MB); with neither limit, prune removes every entry")
    c.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="prune: list what would be removed, remove nothing")
    _add_console_arguments(c)
    for p in (report_cli.add_parser(sub), eval_cli.add_parser(sub)):
        _add_console_arguments(p)
    return parser


def _add_console_arguments(m) -> None:
    m.add_argument("--verbose", action="store_true", help="show Ray's and the libraries' logs and warnings")
    m.add_argument("--debug", action="store_true",
                   help="on an error, print the full traceback (also STREAMMINE_DEBUG=1)")


def _add_run_arguments(m) -> None:
    m.add_argument("--config", help="YAML config (local path or any fsspec URL); flags override it")
    for flag, key in FLAGS.items():
        default = _config_default(key)
        parts = [HELP[flag]] if flag in HELP else []
        if flag in CHOICES:
            choices = CHOICES[flag]
            names = registries.names(choices) if choices in registries.REGISTRIES else getattr(config, choices)
            parts.append(f"one of {', '.join(names)}")
        shown = ",".join(default) if isinstance(default, list) else default
        parts.append(f"{key}, default: {shown if shown not in (None, '', []) else 'none'}")
        text = "; ".join(parts)
        m.add_argument("--" + flag.replace("_", "-"), dest=flag, help=text.replace("%", "%%"))
    m.add_argument("--lenient", action="store_true", help="quarantine bad rows instead of failing (input.lenient)")
    m.add_argument("--overwrite", action="store_true",
                   help="replace an existing streammine output (output.overwrite)")
    m.add_argument("--precomputed", action="store_true", help="use --corpus-vectors/--query-vectors")
    m.add_argument("--export-scores", action="store_true",
                   help="exports carry the bi-encoder's exact scores (output.export_scores; with a cross-encoder "
                        "they always carry its scores)")
    m.add_argument("--no-progress", action="store_true", help="no progress lines (run.progress=false)")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set index.nprobe=32")
    _add_console_arguments(m)


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
    if getattr(args, "export_scores", False):
        overrides["output.export_scores"] = True
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
    if "documents_encoded" in c:
        docs, encoded = int(c.get("corpus_documents", 0)), int(c["documents_encoded"])
        from_cache = int(c.get("documents_from_cache", docs - encoded))
        precomputed = (s.get("config") or {}).get("encoder", {}).get("kind") == "precomputed"
        print(f"corpus:   "
              f"{cache.corpus_line(docs, encoded, from_cache, s['seconds'].get('corpus_encode_seconds'), precomputed)}")
    exports = s.get("exports") or {}
    if "skipped" in exports:
        print(f"exports:  skipped ({exports['skipped']})")
    for fmt, e in exports.items():
        if isinstance(e, dict):
            skipped = sum((e.get("queries_skipped") or {}).values())
            print(f"export:   {fmt}: {e.get('rows_written', '?')} rows, {skipped} queries skipped -> {e.get('path')}")
    print(f"summary:  {result.output.rstrip('/')}/summary.json")


def _debug_requested(argv) -> bool:
    return "--debug" in (argv if argv is not None else sys.argv[1:]) or \
        os.environ.get("STREAMMINE_DEBUG", "").lower() in ("1", "true", "yes", "on")


def main(argv=None) -> int:
    """Runs a command. A user's mistake (a :class:`StreamMineError` raised anywhere, Ray tasks included) ends it
    with exit code 2 and one stderr line ``streammine: error: <where>: <reason>``; ``--debug`` (or
    ``STREAMMINE_DEBUG=1``) adds the traceback. Anything else is a bug: its traceback, and a line saying so."""
    debug = _debug_requested(argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("streammine: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted below: the user's mistake, or a bug
        found = find_error(e)
        if found is not None:
            if debug:
                traceback.print_exc()
            print(f"streammine: error: {one_line(str(found))}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"streammine: internal error (a bug in streammine or a library it uses, not in your input): "
              f"{type(e).__name__}; please report it with the traceback above", file=sys.stderr)
        return 1


def _setup_logging(verbose: bool) -> None:
    console.configure(verbose)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("streammine: %(message)s"))
    own = logging.getLogger("streammine")
    own.handlers[:] = [handler]
    own.propagate = False
    own.setLevel(logging.INFO)  # streammine's own lines (serve: what it does and waits for)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")


def _main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from packages or paths, never from a hub at run time
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False))
    if args.command == "report":
        return report_cli.run(args)
    if args.command == "eval":
        return eval_cli.run(args)
    if args.command == "cache":
        return run_cache(args)
    if args.command in ("refresh", "stop"):
        if args.command == "refresh" and args.name is not None:
            check_version_name(args.name, "--name")  # a syntax check first: it needs no file system
        check_serve_output(args.output, model=args.model if args.command == "refresh" else None)
        if args.command == "refresh":
            req = request_refresh(args.output, args.model, args.name)
            print(f"streammine: {args.output} will mine with {args.model} as version {req['name']}")
        else:
            request_stop(args.output)
            print(f"streammine: asked the serve of {args.output} to stop")
        return 0
    if args.command == "serve":
        from .refresh.serve import serve  # imports Ray: only serve needs it here
        summary = serve(load_config(args.config, overrides_from_args(args)))
        print(json.dumps({k: summary.get(k) for k in ("run", "units_committed", "versions_completed")}))
        return 0
    if args.command == "mine":
        cfg = load_config(args.config, overrides_from_args(args))
    else:
        out = args.output or tempfile.mkdtemp(prefix="streammine-demo-")
        overrides = {"input.path": demo_data_path(), "output.path": out, "output.overwrite": True,
                     "index.shards": args.shards, "output.export": "st-triplet,flagembedding"}
        if args.cache_dir:
            overrides["run.cache_dir"] = args.cache_dir
        cfg = load_config(None, overrides)
        print(f"streammine demo: mining {cfg.input.path} (SciFact slice, CC BY-NC 2.0)")
    result = mine(cfg)
    print_summary(result)
    line = cache.summary_line(cache.cache_root(cfg))
    if line:  # the shared cache grows with every new corpus or model: say how big it is and how to trim it
        print(f"cache:    {line} (streammine cache ls / prune)")
    if args.command == "demo":
        # the demo's last words: where the negatives are and what to run next
        print(f"\nmined into {result.output}")
        print(f"next:     streammine report {result.output}")
    return 0


def run_cache(args) -> int:
    root = args.cache_dir or cache.default_cache_dir()
    if args.cache_dir and fs.is_local(root) and os.path.exists(os.path.expanduser(root)) \
            and not os.path.isdir(os.path.expanduser(root)):
        raise ConfigError(f"--cache-dir {root}: not a directory")
    if args.action == "ls":
        if args.older_than or args.max_size or args.dry_run:
            raise ConfigError("--older-than, --max-size and --dry-run go with `cache prune`, not `cache ls`")
        entries = cache.entries(root)
        for e in entries:
            extra = ""
            if e["kind"] == "embeddings":
                extra = f"  {e['docs']} documents, model {e.get('model')}" if e.get("docs") is not None else \
                    "  not committed (a run writing it, or one that stopped)"
            print(f"{cache.human_bytes(e['bytes']):>10}  {_when(e['modified'])}  {e['kind']}/{e['key']}{extra}")
        total = sum(e["bytes"] for e in entries)
        print(f"{cache.human_bytes(total):>10}  total in {root} ({len(entries)} entries)")
        return 0
    older = cache.parse_age(args.older_than) if args.older_than else None
    max_bytes = cache.parse_size(args.max_size) if args.max_size else None
    chosen = cache.prune(root, older, max_bytes, dry_run=args.dry_run)
    for e in chosen:
        print(f"{'would remove' if args.dry_run else 'removed'} {cache.human_bytes(e['bytes']):>10}  "
              f"{_when(e['modified'])}  {e['kind']}/{e['key']}")
    size = cache.human_bytes(sum(e["bytes"] for e in chosen))
    if args.dry_run:
        print(f"would remove {len(chosen)} entries ({size}) from {root}; nothing removed (--dry-run)")
    else:
        print(f"removed {len(chosen)} entries ({size}) from {root}")
    return 0


def _when(modified: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(modified)) if modified else "?"


if __name__ == "__main__":
    sys.exit(main())
