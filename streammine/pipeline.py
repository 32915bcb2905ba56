"""The mining run as Ray Data stages over small components.

    corpus, then the queries ──read──▶ encode (actor pool) ──▶ embedding store (bucketed Parquet, reused when
                                                            unchanged); query vectors ──▶ query-vector cache
    store ──▶ N shard actors (faiss)
    queries ──read──▶ vectors (cache, else encode) ──▶ search fan-out + merge + filter + sample (actor pool)
                                                   ──▶ Parquet parts

Nothing is gathered in the driver: blocks stream from readers to sinks, and the summary is computed by streaming
over what was written.
"""
from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np
import pyarrow as pa
import ray

from .config import MineConfig
from .encode.stages import QUERY_ROW
from .errors import StreamMineError
from .cache import cache_root
from .io import fs
from .io.run_input import (LENGTH_SORT_WINDOW_BLOCKS, corpus_fingerprint, corpus_read_fns, corpus_source,  # noqa: F401
                           encoder_input_blocks, length_sorted_blocks, prefetch_query_blocks, queries_source,
                           query_read_fns, read_dataset)
from . import console

if TYPE_CHECKING:  # pragma: no cover
    from .encode.plan import ClusterView, EncoderPlan

log = logging.getLogger("streammine")

# Passed to workers in the runtime env: settings only, never a secret. Ray writes runtime envs into its logs and
# job table, so credentials must reach workers another way: a local Ray's workers inherit the driver's
# environment; a cluster's workers use their node's credential chain (IRSA role, a Kubernetes Secret as env).
S3_ENV_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
               "STREAMMINE_S3_ENDPOINT", "HF_HUB_OFFLINE")
SECRET_ENV_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


# ---- Ray ----------------------------------------------------------------------------------------------------

def ensure_ray(address: Optional[str] = None) -> None:
    """Join the given cluster (or RAY_ADDRESS), else start a private local Ray. One code path either way.

    Without an address the run starts and owns its own local Ray (``address="local"``): it never attaches to
    another instance that happens to run on the machine (a ``ray start --head``, another tool's). With an address
    it joins that cluster and passes nothing that conflicts with it (no CPU or GPU counts)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Workers must see the same object-store endpoint as the driver. Credentials are not passed (see S3_ENV_VARS).
    env = {k: os.environ[k] for k in S3_ENV_VARS if k in os.environ}
    # Inside a `ray job submit` job, Ray merges the job's runtime env into ours and refuses a variable set in
    # both: pass only what the job does not already give its workers.
    env = {k: v for k, v in env.items() if k not in _job_env_vars()}
    kwargs = dict(include_dashboard=False, log_to_driver=console.verbose(),
                  runtime_env={"env_vars": env} if env else None)
    if console.quiet():
        kwargs["logging_level"] = logging.ERROR
    with console.native_stderr_muted():  # quiet: the C++ core's start-up lines
        if address:
            ray.init(address=address, **kwargs)
        else:
            # A local Ray gets at least 2 logical CPUs: requests only schedule, and a 1-core machine must still fit
            # an encoder beside a 1-CPU read or write task (see encode/plan.py).
            ray.init(address="local", num_cpus=max(2, os.cpu_count() or 1), **kwargs)
            atexit.register(_stop_local_autoscaler)  # runs before Ray's exit hook (atexit is last-in, first-out)
    console.silence_ray_loggers()


def _stop_local_autoscaler() -> None:
    """Ray's shutdown stops the GCS before the autoscaler monitor, whose SIGTERM handler then tries to report to
    that GCS and is killed only after a 1-s grace period: every local run ended 1 s late. A local Ray has nothing to
    autoscale, so the monitor is stopped first, at once. Best effort: this reaches into Ray's node object."""
    node = getattr(ray._private.worker, "_global_node", None)
    try:
        if node is not None and ray.is_initialized():
            node.kill_monitor(check_alive=False)
    except Exception as e:  # noqa: BLE001 - a Ray without this method: its own shutdown still runs
        log.debug("could not stop the local autoscaler monitor early: %s", e)


def _job_env_vars() -> dict:
    """The env_vars of the Ray job this driver runs in (Ray's job manager passes its config in this variable)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return {}


# ---- the embedding store ------------------------------------------------------------------------------------

def _model_ident(cfg: MineConfig) -> dict:
    e = cfg.encoder
    return {"kind": e.kind, "model": e.model or "packaged:all-MiniLM-L6-v2", "document_prompt": e.document_prompt,
            "max_length": e.max_length, "normalize": e.normalize, "fp16": str(e.fp16)}


def model_key(cfg: MineConfig) -> str:
    """Identifies what turns a document into a vector (model version and encoding settings): two stores with the
    same model key hold the same vector for the same document, so one can serve as the other's cache."""
    return hashlib.sha256(json.dumps(_model_ident(cfg), sort_keys=True).encode()).hexdigest()[:16]


def store_key(cfg: MineConfig, fingerprint: Optional[list] = None) -> str:
    """Identifies (model, encoding settings, corpus content): a changed corpus or model gets a new store.
    ``fingerprint``: :func:`corpus_fingerprint`, when the caller already has it."""
    e = cfg.encoder
    ident = dict(_model_ident(cfg),
                 corpus_vectors=e.corpus_vectors, input=[cfg.input.format, cfg.input.path, cfg.input.corpus,
                                                         cfg.input.columns.__dict__ if cfg.input.format == "pairs"
                                                         else None],
                 fingerprint=corpus_fingerprint(cfg) if fingerprint is None else fingerprint)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_store_for(store_url: str, key_of_model: str) -> Optional[str]:
    """The newest committed store beside ``store_url`` made with the same model: its vectors are reused for the
    documents it holds unchanged (so a corpus that grew only encodes the new documents)."""
    from .index.store import read_manifest
    root = store_url.rstrip("/").rsplit("/", 1)[0]
    if not fs.exists(root):
        return None
    filesystem, path = fs.resolve(root)
    best, best_time = None, -1.0
    for child in filesystem.ls(path, detail=False):
        url = fs.join(root, child.rstrip("/").rsplit("/", 1)[-1])
        if url.rstrip("/") == store_url.rstrip("/"):
            continue
        m = read_manifest(url) if fs.isdir(url) else None
        if m and m.get("model_key") == key_of_model and float(m.get("committed_at", 0)) > best_time:
            best, best_time = url, float(m.get("committed_at", 0))
    return best


def build_store(cfg: MineConfig, store_url: str, quarantine_url: Optional[str], metrics,
                plan: "EncoderPlan", prefetch_queries: bool = False) -> dict:
    """Encodes the corpus into the embedding store unless a committed store for the same key exists. With
    ``prefetch_queries`` (and the query cache on), the same encoder actors encode the run's queries into the
    query-vector cache after the documents: the query pass then starts no second model."""
    from .encode.stages import EncodeDocuments
    from .index.store import read_manifest
    from .index.store_sink import EmbeddingStoreSink
    manifest = read_manifest(store_url)
    if manifest is not None:
        log.info("embedding store %s is up to date: the corpus is not encoded again", store_url)
        return dict(manifest, reused=True)
    e = cfg.encoder
    key_of_model = model_key(cfg)
    cached = cached_store_for(store_url, key_of_model) if e.kind != "precomputed" else None
    if cached:
        log.info("embedding cache: documents already in %s are not encoded again", cached)
    if e.kind == "precomputed":
        ds = read_dataset(corpus_read_fns(cfg, quarantine_url, plan.block_rows), "corpus")
    else:
        windows = corpus_read_fns(cfg, quarantine_url, LENGTH_SORT_WINDOW_BLOCKS * plan.block_rows)
        query_cache = query_cache_url(cfg) if prefetch_queries else None
        ds = read_dataset([functools.partial(encoder_input_blocks, fn, plan.block_rows,
                                             cfg if query_cache and k == len(windows) - 1 else None)
                           for k, fn in enumerate(windows)], "corpus")
        # An actor call holds its whole input block, and a read task's output is coalesced into big blocks (up to
        # Ray Data's target block size): split them (streaming, no shuffle) so every encoder actor gets work.
        ds = ds.repartition(target_num_rows_per_block=plan.block_rows)
        args = _encoder_map_args(cfg, plan, metrics)
        args["fn_constructor_args"] = args["fn_constructor_args"] + (cached, query_cache)
        ds = ds.map_batches(EncodeDocuments, batch_size=plan.block_rows, **args)
    ds.write_datasink(EmbeddingStoreSink(store_url, {"store_key": os.path.basename(store_url.rstrip("/")),
                                                     "model": e.model or "all-MiniLM-L6-v2",
                                                     "model_key": key_of_model},
                                         cached_store=cached))
    manifest = read_manifest(store_url)
    if manifest is None or not manifest.get("docs"):
        raise StreamMineError(f"{corpus_source(cfg)}: the corpus has no document"
                              + (" (every row was quarantined)" if cfg.input.lenient else ""))
    return dict(manifest, reused=False)


def cluster_view() -> ClusterView:
    from .encode.plan import ClusterView
    res = ray.cluster_resources()
    return ClusterView(cpus=float(res.get("CPU", 1.0)), gpus=float(res.get("GPU", 0.0)),
                       nodes=len([n for n in ray.nodes() if n.get("Alive")]), host_cpus=os.cpu_count() or 1)


def encoder_plan(cfg: MineConfig) -> EncoderPlan:
    """The encoder plan for this cluster; on one machine, checked to leave room for the rest of the run."""
    from .encode.plan import check_local_fit, plan_encoders
    cluster = cluster_view()
    plan = plan_encoders(cfg.encoder, cluster, cfg.run.corpus_batch_size, cfg.run.miner_actors)
    check_local_fit(plan, cluster, cfg.run.miner_actors, cfg.encoder.kind == "precomputed")
    return plan


def _encoder_map_args(cfg: MineConfig, plan, metrics) -> dict:
    """map_batches arguments for an encoder stage: the actor pool, its resources and its environment."""
    # Ray starts workers with OMP_NUM_THREADS=<their CPU request>; torch's OpenMP kernels follow that variable
    # even after torch.set_num_threads, so an encoder given more threads must be given the variable too
    # (otherwise they run single-threaded whatever the plan says; README, SciFact benchmark).
    threads = str(plan.torch_threads)
    env = {k: os.environ[k] for k in S3_ENV_VARS if k in os.environ}
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return dict(batch_format="pyarrow", fn_constructor_args=(cfg.encoder, plan.torch_threads, metrics),
                compute=ray.data.ActorPoolStrategy(size=plan.num_actors,
                                                   max_tasks_in_flight_per_actor=plan.max_tasks_in_flight),
                num_cpus=plan.cpus_per_actor, num_gpus=plan.gpus_per_actor, runtime_env={"env_vars": env})


# ---- the run ------------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    output: str
    summary: dict = field(default_factory=dict)


def prepare_output(cfg: MineConfig) -> None:
    from .sink.parts import PARTS_MANIFEST
    out = cfg.output.path
    if fs.exists(fs.join(out, PARTS_MANIFEST)) or fs.exists(fs.join(out, "summary.json")):
        if not cfg.output.overwrite:
            raise StreamMineError(f"{out} already holds a mining output; pass --overwrite to replace it")
        remove_previous_output(out)
    fs.makedirs(out)


def remove_previous_output(out: str) -> int:
    """``--overwrite``: deletes what an earlier mining run wrote in ``out`` and names: the parts its
    ``_parts.json`` lists, ``_parts.json``, ``summary.json``, its quarantine parts and its exports. Nothing
    else is touched, whatever its name (the embedding store under ``_work/`` is a cache and is kept; a part no
    manifest names may be another writer's). Returns how many files went."""
    import re
    from .io.records import QUARANTINE_SUFFIX
    from .sink.exporters import EXPORT_FILES
    from .sink.parts import PARTS_MANIFEST
    try:
        listed = [p["part"] for p in (fs.read_json(fs.join(out, PARTS_MANIFEST)) or {}).get("parts", [])]
    except (ValueError, TypeError, KeyError, AttributeError):  # an unreadable manifest names nothing
        listed = []
    # a name is a file directly in ``out``, as the sink writes them: never a path that leads elsewhere
    doomed = [fs.join(out, n) for n in listed if isinstance(n, str) and re.fullmatch(r"part-[\w.-]+\.parquet", n)
              and ".." not in n]
    ours = re.compile(r"part-[0-9a-f]{32}" + re.escape(QUARANTINE_SUFFIX) + "$")
    doomed += [u for u in fs.list_files(fs.join(out, "_quarantine"), (QUARANTINE_SUFFIX,))
               if ours.search(u.rsplit("/", 1)[-1])]
    doomed += [fs.join(out, "export", name) for name in EXPORT_FILES.values()]
    doomed += [fs.join(out, name) for name in ("summary.json", PARTS_MANIFEST)]  # the commit marks go last
    return fs.remove_quietly(u for u in doomed if fs.exists(u))


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


def query_cache_url(cfg: MineConfig) -> Optional[str]:
    """Where this model's query vectors are cached (None when run.cache_queries is off)."""
    if not cfg.run.cache_queries:
        return None
    ident = dict(_model_ident(cfg), query_prompt=cfg.encoder.query_prompt)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return fs.join(cache_root(cfg), "query_vectors", key)


def query_cache_complete_marker(cfg: MineConfig, fingerprint: Optional[list] = None) -> Optional[str]:
    """Where a finished query pass marks the query-vector cache as holding every query of this run's input (None
    when the cache is off or the vectors are precomputed). The marker is named by the input's file stamps (size,
    modification time; as for the embedding store) and the query settings, so a changed query file, split or limit
    has no marker. With a marker, a run that reuses its embedding store lets the miners look the query vectors up
    (no encoder actors start for the query pass). Vectors deleted behind a marker cost only speed: a query the
    cache lacks is encoded by the miner that meets it. ``fingerprint``: as for :func:`store_key`."""
    cache = query_cache_url(cfg)
    if cache is None or cfg.encoder.kind == "precomputed":
        return None
    i = cfg.input
    ident = {"format": i.format, "split": i.split, "max_queries": i.max_queries,
             "columns": i.columns.__dict__ if i.format == "pairs" else None,
             "files": corpus_fingerprint(cfg) if fingerprint is None else fingerprint}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return fs.join(cache, "complete", f"{key}.json")


def _add_query_vectors(ds, cfg: MineConfig, metrics, plan: "EncoderPlan"):
    from .encode.plan import LOOKUP_CPUS
    from .encode.stages import EncodeQueries, LookupQueryVectors
    e = cfg.encoder
    if e.kind == "precomputed":
        return ds.map_batches(LookupQueryVectors, batch_size=cfg.run.query_batch_size, batch_format="pyarrow",
                              fn_constructor_args=(e.query_vectors, metrics),
                              compute=ray.data.ActorPoolStrategy(size=1), num_cpus=LOOKUP_CPUS)
    args = _encoder_map_args(cfg, plan, metrics)
    args["fn_constructor_args"] = args["fn_constructor_args"] + (query_cache_url(cfg),)
    return ds.map_batches(EncodeQueries, batch_size=cfg.run.query_batch_size, **args)


def keep_query_slice(block: pa.Table, slice_id: int, n_slices: int) -> pa.Table:
    """The queries of one slice: a stable hash of the query id picks the slice (ANCE's rolling chunks)."""
    from .keys import keys64
    keys = keys64(block.column("query_id").to_pylist())
    return block.filter(pa.array(keys % np.uint64(n_slices) == np.uint64(slice_id)))


def mine_queries(cfg: MineConfig, index, manifest: dict, out_url: str, quarantine_url: Optional[str], metrics,
                 plan: "EncoderPlan", model_version: str, query_slice: Optional[tuple] = None,
                 queries_cached: bool = False) -> None:
    """Queries -> encode -> fan-out search, merge, filter, sample -> Parquet parts under ``out_url`` (streaming).

    ``queries_cached``: every query's vector is in the query-vector cache (put there by this run's corpus
    encoders, see build_store, or by an earlier pass: query_cache_complete_marker), so the miners look the vectors
    up themselves and no encoder actor is started for the pass (a shorter query pass: README, SciFact benchmark)."""
    from .index.store import total_rows
    from .sink.parts import MinedPartsSink
    from .encode.plan import MINER_CPUS
    from .stages import MineQueries
    ds = read_dataset(query_read_fns(cfg, quarantine_url), "queries")
    if query_slice is not None and query_slice[1] > 1:
        ds = ds.map_batches(keep_query_slice, batch_format="pyarrow", fn_kwargs={"slice_id": query_slice[0],
                                                                                 "n_slices": query_slice[1]},
                            num_cpus=0.25)
    ds = ds.repartition(target_num_rows_per_block=cfg.run.query_batch_size)  # see build_store
    miner_cache = query_cache_url(cfg) if queries_cached else None
    if miner_cache is None:
        ds = _add_query_vectors(ds, cfg, metrics, plan)
    ds = ds.map_batches(MineQueries, batch_size=cfg.run.query_batch_size, batch_format="pyarrow",
                        fn_constructor_args=(cfg, index.handles, total_rows(manifest), model_version,
                                             fs.join(cfg.output.path, "_quarantine"), metrics, miner_cache),
                        compute=ray.data.ActorPoolStrategy(size=cfg.run.miner_actors), num_cpus=MINER_CPUS,
                        num_gpus=cfg.mining.cross_encoder.gpus_per_actor if cfg.mining.cross_encoder.model else 0)
    ds.write_datasink(MinedPartsSink(out_url))


def mine(cfg: MineConfig) -> RunResult:
    """Runs the whole mining path; returns where the output is and the run summary."""
    from .index.actor import ShardedIndex
    from .metrics import start_stage_metrics
    from .sink.summary import build_summary, write_summary

    from .index.store import read_manifest
    from .preflight import check_run, scan_inputs

    # Everything that can be checked without Ray is checked before it starts: config, inputs, output, and a read
    # pass over the corpus and queries (bad rows, conflicting duplicate ids) before any document is encoded.
    check_run(cfg)
    out = cfg.output.path
    quarantine_url = fs.join(out, "_quarantine") if cfg.input.lenient else None
    work = cache_root(cfg)
    fingerprint = corpus_fingerprint(cfg)  # the input files' stamps, listed once: they name the store and the mark
    store_url = fs.join(work, "embeddings", store_key(cfg, fingerprint))
    store_manifest = read_manifest(store_url)
    totals = scan_inputs(cfg, corpus=store_manifest is None)
    if store_manifest is not None:
        totals["documents"] = store_manifest.get("docs")
    ensure_ray(cfg.run.address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(cfg.run.progress) and console.verbose()
    ctx.raise_original_map_exception = True  # a stage's InputError reaches the caller as itself
    if console.quiet():
        ctx.print_on_execution_start = False
    console.silence_ray_loggers()
    prepare_output(cfg)
    # asks Ray once what the cluster has; the corpus and query encoders and the summary share the answer (and a
    # local run whose actors cannot fit stops here, before any actor is started)
    plan = encoder_plan(cfg)
    metrics = start_stage_metrics()
    # shard actors start now (process start and imports overlap the corpus encoding); they build when asked
    index = ShardedIndex.start(store_url, cfg.index, cfg.input.lenient, fs.join(out, "_quarantine"))
    phases = {}
    try:
        show = bool(cfg.run.progress) and console.configured()
        with _phase(phases, "corpus_encode_seconds"), _progress(
                "encode", metrics, ("encode_corpus", "corpus_cached"), totals["documents"], "documents",
                show and store_manifest is None):
            manifest = build_store(cfg, store_url, quarantine_url, metrics, plan, prefetch_queries=True)
        log.info("corpus: %d documents in the store (%s)", manifest["docs"],
                 "reused" if manifest["reused"] else "encoded")
        with _phase(phases, "index_build_seconds"):
            shard_info = index.wait_ready()
        # Where the query pass gets its vectors: the cache, read by the miners, when it holds every query (filled
        # by this run's corpus encoders, or marked complete by an earlier pass over the same input); else its own
        # encoder actors (which read the cache first); or the user's precomputed vectors.
        marker = query_cache_complete_marker(cfg, fingerprint)
        source = ("precomputed" if cfg.encoder.kind == "precomputed" else
                  "prefetched" if marker and not manifest["reused"] else
                  "cache" if marker and fs.exists(marker) else "encoder-actors")
        with _phase(phases, "query_mining_seconds"), _progress(
                "mine", metrics, ("search_and_mine",), totals["queries"], "queries", show):
            mine_queries(cfg, index, manifest, out, quarantine_url, metrics, plan, manifest["store_key"],
                         queries_cached=source in ("prefetched", "cache"))
        if marker:  # every query the input yields now has a vector in the cache
            fs.write_json_atomic(marker, {"completed_at": time.time(), "output": out})
        summary = build_summary(cfg, out, phases=phases, stages=ray.get(metrics.snapshot.remote()),
                                shards=shard_info, store=manifest)
        summary["query_vectors"] = source
        if summary["counts"]["queries_out"] == 0:
            # nothing mined is the user's mistake (wrong split, empty queries file, every row bad), not a finished
            # run: the empty manifest goes, so the output does not look like a result (the quarantine stays)
            from .sink.parts import PARTS_MANIFEST
            fs.remove(fs.join(out, PARTS_MANIFEST))
            n_in = summary["counts"]["queries_in"]
            raise StreamMineError(f"{queries_source(cfg)}: no query to mine (" + (
                f"all {n_in} queries read were quarantined: see {fs.join(out, '_quarantine')})" if n_in else
                "no query of queries.jsonl has a positive in this split)" if cfg.input.format == "beir" else
                "the table has no query)"))
        if cfg.encoder.kind != "precomputed":
            summary["encoder_plan"] = dataclasses.asdict(plan)
        write_summary(out, summary)
        if cfg.output.export:
            from .sink.exporters import run_exports
            summary["exports"] = run_exports(cfg, out)
            write_summary(out, summary)
    finally:
        index.shutdown()
        ray.kill(metrics)
    return RunResult(out, summary)
