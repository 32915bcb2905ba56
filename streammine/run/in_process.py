"""Small runs in the calling process: the Ray path's own stages, called one after the other here, without Ray.

A notebook user mining a few hundred queries should not pay for a private Ray, actor processes and one model load
per actor (seconds each) to do a second of work. Below ``run.in_process_max_texts`` (documents + queries, known
from the read pass before anything starts) a local run executes here: the same readers, the same
``EncodeDocuments`` / ``QueryPrefetcher`` / ``EncodeQueries`` stages on the same blocks, the same embedding store
and query-vector cache, shards built by the same ``index.local.build_shard``, the same ``MineQueries`` over a
``LocalShardedIndex`` (the calls ``ShardedIndex`` makes on actors), the same part sink and summary. One model is
loaded, once (a model object: the caller's object, copied), and shared by every stage.

Invariant: the mined rows are those of the Ray path on the same input and config (tests/test_in_process.py
compares both sides of the threshold row by row, bit for bit). What differs is only where the work runs: one
part file instead of one per write task, and no parallelism beyond the model's and faiss' threads.
"""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

from ..config import MineConfig
from ..encode.plan import ClusterView, EncoderPlan, plan_encoders
from ..encode.query_vectors import QueryVectorSource
from ..index.store import read_manifest, total_rows
from ..io.formats import input_format
from ..io.run_input import corpus_read_fns, query_read_fns
from ..metrics import StageTotals
from .paths import RunPaths
from .version import OpenVersion

EXECUTOR_ENV = "STREAMMINE_EXECUTOR"  # replaces run.executor "auto" (a test suite or a job that must use Ray)


def runs_in_process(cfg: MineConfig, totals: dict) -> bool:
    """Where ``cfg``'s run executes: True for the calling process. ``totals``: the read pass's
    ``{"documents", "queries"}`` (None where unknown: a lenient run, precomputed vectors; those use Ray under
    "auto", as does any run given a cluster address)."""
    executor = cfg.run.executor
    if executor == "auto":
        executor = os.environ.get(EXECUTOR_ENV) or "auto"
    if executor in ("ray", "in-process"):
        return executor == "in-process"
    if cfg.run.address or os.environ.get("RAY_ADDRESS"):
        return False
    docs, queries = totals.get("documents"), totals.get("queries")
    return docs is not None and queries is not None and docs + queries <= cfg.run.in_process_max_texts


def local_plan(cfg: MineConfig) -> EncoderPlan:
    """The plan the Ray path makes on this machine (its ``block_rows`` cut the same encoder blocks), with one
    encoder here."""
    gpus = 0.0
    if cfg.encoder.gpus_per_actor != 0:
        from ..device import pick_device
        gpus = 1.0 if pick_device().startswith("cuda") else 0.0
    cpus = os.cpu_count() or 1
    plan = plan_encoders(cfg.encoder, ClusterView(cpus=float(cpus), gpus=gpus, nodes=1, host_cpus=cpus),
                         cfg.run.corpus_batch_size, cfg.run.miner_actors)
    return EncoderPlan(1, plan.cpus_per_actor, plan.gpus_per_actor, cpus, plan.block_rows, None)


class InProcessExecutor:
    """The run's stages in this process (the module docstring); the Ray path's counterpart is
    ``run.mine.RayExecutor``. ``mine.mine`` calls: ``setup``, ``open_version``, ``mine_queries``, ``stages``,
    ``export``, ``cleanup``."""

    name = "in-process"

    def __init__(self):
        self.metrics = StageTotals()
        self.encoder = None

    def setup(self, cfg: MineConfig) -> None:
        """Nothing to start: no Ray, no actors."""

    def stages(self, timeout=None) -> dict:
        return self.metrics.snapshot()

    def cleanup(self) -> None:
        self.encoder = None

    def _encoder(self, cfg: MineConfig, plan: EncoderPlan):
        if self.encoder is None:
            from ..encode.model_object import make_encoder
            # torch's thread count is left as the caller's process has it (a global setting, not ours to change)
            self.encoder = make_encoder(cfg.encoder, torch_threads=None)
        return self.encoder

    # ---- the version: embedding store, then the shards -----------------------------------------------------
    def open_version(self, cfg: MineConfig, paths: RunPaths, prefetch_queries: bool = True,
                     encode_progress=None, corpus_keys=None) -> OpenVersion:
        """``corpus_keys`` (the Ray path's shortcut for a corpus another store holds entirely) is not used: a
        small run encodes what its own store lacks."""
        from contextlib import nullcontext
        from ..index.local import LocalShardedIndex
        plan = local_plan(cfg)
        t = time.perf_counter()
        with encode_progress or nullcontext():
            manifest = self._build_store(cfg, paths, plan, prefetch_queries)
        encode_seconds = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        index = LocalShardedIndex.from_store(paths.store, cfg.index, cfg.input.lenient, paths.quarantine)
        return OpenVersion(cfg, paths, plan, index, manifest, index.shard_info(), encode_seconds,
                           round(time.perf_counter() - t, 3))

    def _build_store(self, cfg: MineConfig, paths: RunPaths, plan: EncoderPlan, prefetch_queries: bool) -> dict:
        """``run.store_build.build_store``'s work, in order, here: the same blocks through the same stages into
        the same sink. Documents a different store of the same model holds are encoded again (the Ray path copies
        them): a small run loses little, and the copy is a Ray task per file."""
        from ..encode.document_stage import EncodeDocuments
        from ..encode.query_vectors import QueryPrefetcher
        from .store_build import committed_store, encoder_input_fns, store_sink
        store_url = paths.store
        manifest = read_manifest(store_url)
        if manifest is not None:
            return dict(manifest, reused=True, queries_prefetched=False)
        precomputed = input_format(cfg).precomputed
        query_cache = paths.query_cache if prefetch_queries else None
        if precomputed:
            blocks = (b for fn in corpus_read_fns(cfg, paths.read_quarantine, plan.block_rows) for b in fn())
        else:
            stage = EncodeDocuments(cfg.encoder, None, self.metrics, prefetcher=QueryPrefetcher(query_cache),
                                    encoder=self._encoder(cfg, plan))
            inputs = (b for fn in encoder_input_fns(cfg, paths, plan, query_cache) for b in fn())
            blocks = (out for out in (stage(b) for b in inputs) if out.num_rows)
        sink = store_sink(cfg, store_url)
        sink.on_write_complete(SimpleNamespace(write_returns=[sink.write(blocks, SimpleNamespace(task_idx=0))]))
        return committed_store(cfg, store_url, queries_prefetched=bool(prefetch_queries and not precomputed))

    # ---- the query pass ---------------------------------------------------------------------------------------
    def mine_queries(self, cfg: MineConfig, version: OpenVersion, out_url: str, model_version: str,
                     source: QueryVectorSource) -> None:
        """``run.query_pass.mine_queries`` here: query blocks of ``run.query_batch_size`` -> vectors -> mined
        rows -> one committed part."""
        from ..encode.query_vectors import EncodeQueries, LookupQueryVectors
        from ..sink.parts import MinedPartsSink
        from .mine_stage import MineQueries
        paths = version.paths
        lookup_cache = paths.query_cache if source.miners_look_up else None
        add_vectors = None
        if source is QueryVectorSource.PRECOMPUTED:
            add_vectors = LookupQueryVectors(cfg.encoder.query_vectors, self.metrics)
        elif not source.miners_look_up:
            add_vectors = EncodeQueries(cfg.encoder, None, self.metrics, paths.query_cache,
                                        encoder=self._encoder(cfg, version.plan))
        miner = MineQueries(cfg, version.index, total_rows(version.manifest), model_version, paths.quarantine,
                            self.metrics, lookup_cache,
                            encoder=self.encoder if lookup_cache else None, query_torch_threads=None)
        blocks = (b for fn in query_read_fns(cfg, paths.read_quarantine)
                  for b in rebatched(fn(), cfg.run.query_batch_size))
        if add_vectors is not None:
            blocks = (add_vectors(b) for b in blocks)
        sink = MinedPartsSink(out_url)
        sink.on_write_start()
        written = sink.write((miner(b) for b in blocks), SimpleNamespace(task_idx=0))
        sink.on_write_complete(SimpleNamespace(write_returns=[written]))

    def export(self, cfg: MineConfig, out_url: str) -> dict:
        from ..sink.exporters import run_exports
        return run_exports(cfg, out_url, in_process=True)


def rebatched(tables, rows: int):
    """The tables' rows in consecutive blocks of ``rows`` (the last one shorter): the blocks the Ray path's
    ``repartition(target_num_rows_per_block=rows)`` + ``map_batches(batch_size=rows)`` hand its miners."""
    import pyarrow as pa
    pending, n = [], 0
    for t in tables:
        if t is None or t.num_rows == 0:
            continue
        pending.append(t)
        n += t.num_rows
        while n >= rows:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, rows)
            rest = whole.slice(rows)
            pending, n = ([rest] if rest.num_rows else []), rest.num_rows
    if n:
        yield pa.concat_tables(pending)


__all__ = ["runs_in_process", "InProcessExecutor", "rebatched", "local_plan", "EXECUTOR_ENV"]
