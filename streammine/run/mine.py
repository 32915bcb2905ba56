"""``mine``: one pass over the input, as Ray Data stages over small components.

    corpus, then the queries ──read──▶ encode (actor pool) ──▶ embedding store (bucketed Parquet, reused when
                                                            unchanged); query vectors ──▶ query-vector cache
    store ──▶ N shard actors (faiss)
    queries ──read──▶ vectors (cache, else encode) ──▶ search fan-out + merge + filter + sample (actor pool)
                                                   ──▶ Parquet parts

Nothing is gathered in the driver: blocks stream from readers to sinks, and the summary is computed by streaming
over what was written. The driver reads in five steps: check and set up, open the version (encode the corpus,
build the index), mine the queries, summarize, export. An executor runs the steps: ``RayExecutor`` (the stages
above), or for a small local run ``in_process.InProcessExecutor`` (the same stages called in this process, no Ray).
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
from ..encode.precision import pin_precision
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
from .in_process import InProcessExecutor, runs_in_process
from .version import OpenVersion, open_version

log = logging.getLogger("streammine")


@dataclass
class RunResult:
    output: str
    summary: dict = field(default_factory=dict)
    executor: str = "ray"     # where the run executed: "ray" or "in-process" (run/in_process.py)


class RayExecutor:
    """The run's stages as Ray Data pipelines over actors (the module docstring); the small-run counterpart is
    ``in_process.InProcessExecutor``, with the same methods."""

    name = "ray"

    def __init__(self):
        self.metrics = None

    def setup(self, cfg: MineConfig) -> None:
        start_ray(cfg.run)
        from ..encode.model_object import is_published, ship_to_ray
        if is_published(cfg.encoder.model):  # a model object: its state goes to the encoder actors via the store
            ship_to_ray(cfg.encoder.model)
        self.metrics = start_stage_metrics()

    def open_version(self, cfg: MineConfig, paths: RunPaths, prefetch_queries: bool = True,
                     encode_progress=None, corpus_keys=None) -> OpenVersion:
        return open_version(cfg, paths, self.metrics, prefetch_queries=prefetch_queries,
                            encode_progress=encode_progress, corpus_keys=corpus_keys)

    def mine_queries(self, cfg: MineConfig, version: OpenVersion, out_url: str, model_version: str,
                     source: QueryVectorSource) -> None:
        mine_queries(cfg, version, out_url, self.metrics, model_version, source=source)

    def stages(self, timeout=None) -> dict:
        """The stage metrics so far (``timeout``: seconds to wait for the metrics actor; None: as long as it takes)."""
        return ray.get(self.metrics.snapshot.remote(), timeout=timeout)

    def export(self, cfg: MineConfig, out_url: str) -> dict:
        from ..sink.exporters import run_exports
        return run_exports(cfg, out_url)

    def cleanup(self) -> None:
        if self.metrics is not None:
            ray.kill(self.metrics)


def mine(cfg: MineConfig) -> RunResult:
    """Runs the whole mining path; returns where the output is and the run summary. A small local run executes
    in this process (``in_process.runs_in_process``), any other on Ray: the same stages either way."""
    cfg, paths, totals, store_exists = _check(cfg)
    executor = InProcessExecutor() if runs_in_process(cfg, totals) else RayExecutor()
    version: Optional[OpenVersion] = None
    try:
        executor.setup(cfg)
        prepare_output(cfg)
        show = bool(cfg.run.progress) and console.show_progress()
        version = executor.open_version(cfg, paths, prefetch_queries=True, encode_progress=_progress(
            "encode", executor, ("encode_corpus", "corpus_cached"), totals["documents"], "documents",
            show and not store_exists), corpus_keys=totals.get("document_keys"))
        # what the corpus came from is said once, in the summary (cache.corpus_line): not here as well
        phases = {"corpus_encode_seconds": version.encode_seconds,
                  "index_build_seconds": version.index_build_seconds}
        source = choose_source(cfg, paths.query_cache_complete,
                               prefetched=bool(version.manifest.get("queries_prefetched")),
                               run_query_keys=totals.get("query_keys"), cache_url=paths.query_cache)
        with _phase(phases, "query_mining_seconds"), _progress(
                "mine", executor, ("search_and_mine",), totals["queries"], "queries", show):
            executor.mine_queries(cfg, version, paths.output, version.manifest["store_key"], source)
        mark_complete(paths.query_cache_complete, paths.output)
        summary = _summarize(cfg, version, source, phases, executor.stages())
        summary["executor"] = executor.name
        write_summary(paths.output, summary)
        if cfg.output.export:
            summary["exports"] = executor.export(cfg, cfg.output.path)
            write_summary(cfg.output.path, summary)
    finally:
        if version is not None:
            version.shutdown()
        executor.cleanup()
    return RunResult(paths.output, summary, executor.name)


def _check(cfg: MineConfig):
    """Everything that can be checked before Ray (or the in-process run) starts: config, inputs, output, and a
    read pass over the corpus and queries (bad rows, conflicting duplicate ids) before any document is encoded.
    Returns the config with ``encoder.precision`` pinned, the run's paths, the input's totals (which also choose
    the executor) and whether the store exists."""
    check_run(cfg)
    # auto resolved once, after the checks (it may import torch): every encoder runs what the store key says
    cfg = pin_precision(cfg)
    paths = RunPaths.for_mine(cfg)
    store_manifest = read_manifest(paths.store)
    totals = scan_inputs(cfg, corpus=store_manifest is None)
    if store_manifest is not None:
        totals["documents"] = store_manifest.get("docs")
    return cfg, paths, totals, store_manifest is not None


def _summarize(cfg: MineConfig, version: OpenVersion, source: QueryVectorSource, phases: dict, stages: dict) -> dict:
    """The run summary (written by the caller); a run that mined no query is the user's mistake and raises."""
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
    return summary


@contextmanager
def _progress(label: str, executor, stages: tuple, total: Optional[int], unit: str, enabled: bool):
    """A progress line for one phase, counting the rows the given stages reported to the executor's metrics."""
    def count() -> int:
        snap = executor.stages(timeout=10)
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
