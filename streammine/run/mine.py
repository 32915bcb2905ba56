"""``mine``: one pass over the input, as Ray Data stages over small components.

    corpus, then the queries ──read──▶ encode (actor pool) ──▶ embedding store (bucketed Parquet, reused when
                                                            unchanged); query vectors ──▶ query-vector cache
    store ──▶ N shard actors (faiss)
    queries ──read──▶ vectors (cache, else encode) ──▶ search fan-out + merge + filter + sample (actor pool)
                                                   ──▶ Parquet parts

Nothing is gathered in the driver: blocks stream from readers to sinks, and the summary is computed by streaming
over what was written. The driver reads in five steps: check and set up, open the version (encode the corpus,
build the index), mine the queries, summarize, export.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import ray

from .. import console
from ..config import MineConfig
from ..encode.query_vectors import QueryVectorSource, choose_source, mark_complete
from ..errors import StreamMineError
from ..index.store import read_manifest
from ..io import fs
from ..io.formats import format_of
from ..metrics import start_stage_metrics
from ..io.run_input import queries_source
from ..preflight import check_run, scan_inputs
from ..sink.parts import PARTS_MANIFEST
from ..sink.summary import build_summary, write_summary
from .output import prepare_output
from .paths import RunPaths
from .query_pass import mine_queries
from .ray_runtime import start_ray
from .version import OpenVersion, open_version

log = logging.getLogger("streammine")


@dataclass
class RunResult:
    output: str
    summary: dict = field(default_factory=dict)


def mine(cfg: MineConfig) -> RunResult:
    """Runs the whole mining path; returns where the output is and the run summary."""
    paths, totals, store_exists = _check_and_set_up(cfg)
    metrics = start_stage_metrics()
    version: Optional[OpenVersion] = None
    try:
        show = bool(cfg.run.progress) and console.configured()
        version = open_version(cfg, paths, metrics, prefetch_queries=True, encode_progress=_progress(
            "encode", metrics, ("encode_corpus", "corpus_cached"), totals["documents"], "documents",
            show and not store_exists), corpus_keys=totals.get("document_keys"))
        # what the corpus came from is said once, in the summary (cache.corpus_line): not here as well
        phases = {"corpus_encode_seconds": version.encode_seconds,
                  "index_build_seconds": version.index_build_seconds}
        source = choose_source(cfg, paths.query_cache_complete,
                               prefetched=bool(version.manifest.get("queries_prefetched")),
                               run_query_keys=totals.get("query_keys"), cache_url=paths.query_cache)
        with _phase(phases, "query_mining_seconds"), _progress(
                "mine", metrics, ("search_and_mine",), totals["queries"], "queries", show):
            mine_queries(cfg, version, paths.output, metrics, version.manifest["store_key"], source=source)
        mark_complete(paths.query_cache_complete, paths.output)
        summary = _summarize(cfg, version, source, phases, ray.get(metrics.snapshot.remote()))
        _export(cfg, summary)
    finally:
        if version is not None:
            version.shutdown()
        ray.kill(metrics)
    return RunResult(paths.output, summary)


def _check_and_set_up(cfg: MineConfig):
    """Everything that can be checked without Ray is checked before it starts: config, inputs, output, and a read
    pass over the corpus and queries (bad rows, conflicting duplicate ids) before any document is encoded. Then
    Ray, and the output folder. Returns the run's paths, the input's totals and whether the store exists."""
    check_run(cfg)
    paths = RunPaths.for_mine(cfg)
    store_manifest = read_manifest(paths.store)
    totals = scan_inputs(cfg, corpus=store_manifest is None)
    if store_manifest is not None:
        totals["documents"] = store_manifest.get("docs")
    start_ray(cfg.run)
    from ..encode.model_object import is_published, ship_to_ray
    if is_published(cfg.encoder.model):  # a model object: its state goes to the encoder actors via the object store
        ship_to_ray(cfg.encoder.model)
    prepare_output(cfg)
    return paths, totals, store_manifest is not None


def _summarize(cfg: MineConfig, version: OpenVersion, source: QueryVectorSource, phases: dict, stages: dict) -> dict:
    """The run summary, written; a run that mined no query is the user's mistake and raises instead."""
    out = version.paths.output
    summary = build_summary(cfg, out, phases=phases, stages=stages, shards=version.shard_info,
                            store=version.manifest)
    summary["query_vectors"] = source.value
    if summary["counts"]["queries_out"] == 0:
        # nothing mined is the user's mistake (wrong split, empty queries file, every row bad), not a finished
        # run: the empty manifest goes, so the output does not look like a result (the quarantine stays)
        fs.remove(fs.join(out, PARTS_MANIFEST))
        n_in = summary["counts"]["queries_in"]
        raise StreamMineError(f"{queries_source(cfg)}: no query to mine (" + (
            f"all {n_in} queries read were quarantined: see {version.paths.quarantine})" if n_in else
            f"{format_of(cfg.input).no_query_reason})"))
    if source is not QueryVectorSource.PRECOMPUTED:
        summary["encoder_plan"] = dataclasses.asdict(version.plan)
    write_summary(out, summary)
    return summary


def _export(cfg: MineConfig, summary: dict) -> None:
    if cfg.output.export:
        from ..sink.exporters import run_exports
        summary["exports"] = run_exports(cfg, cfg.output.path)
        write_summary(cfg.output.path, summary)


@contextmanager
def _progress(label: str, metrics, stages: tuple, total: Optional[int], unit: str, enabled: bool):
    """A progress line for one phase, counting the rows the given stages reported to the metrics actor."""
    def count() -> int:
        snap = ray.get(metrics.snapshot.remote(), timeout=10)
        return sum(snap.get(s, {}).get("rows", 0) for s in stages)
    p = console.Progress(label, count, total, unit, enabled=enabled)
    try:
        yield p
    finally:
        p.close()


@contextmanager
def _phase(phases: dict, name: str):
    t = time.perf_counter()
    yield
    phases[name] = round(time.perf_counter() - t, 3)
