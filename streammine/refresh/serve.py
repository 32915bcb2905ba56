"""Continuous mining: follow the trainer's checkpoints, refresh the index, mine every query with each version.

    watch ──▶ new version ──▶ refresh (background thread: re-encode the corpus through the embedding cache, start
    new shard actors, build)  ──▶ swap between units of work ──▶ mine units ──▶ parts + commit log entry

A *unit* is one query file (BEIR: the split's queries) and, with ``serve.chunk_factor`` C > 1, the 1/C slice of it
this version mines (ANCE's rolling chunks). A unit is mined entirely by one version and committed by one log
entry written after its parts, so a run killed anywhere and restarted with the same output URL re-mines only the
units without an entry: every query of a version appears exactly once in the committed output.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import ray

from ..config import MineConfig
from ..encode.precision import pin_precision
from ..errors import ConfigError, StreamMineError
from ..index.store_naming import store_key
from ..io import fs
from ..io.formats import format_of, input_format
from ..run.paths import RunPaths, serve_work_root
from ..run.query_pass import mine_queries
from ..run.ray_runtime import start_ray
from ..run.version import OpenVersion, open_version
from ..sink.commit_log import CommitLog
from . import metrics as serve_metrics
from .lease import RunLease
from .versions import ModelVersion, check_version_name
from .watch import VersionSource, clear_stop, stop_requested

log = logging.getLogger("streammine")
WAIT_LOG_SECONDS = 180.0  # an idle serve says what it waits for this often

SUMMARY_FILE = "serve_summary.json"
USER_ERRORS = (StreamMineError,)   # bad input, config or checkpoint: retrying cannot fix these
FAILED_VERSION_RETRY_SECONDS = 300.0  # a version that failed to refresh is tried again after this long


# ---- units of work ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unit:
    source: str           # the query file (pairs) or the BEIR directory
    name: str             # its path relative to the input (what the log records)
    slice_id: int
    n_slices: int

    @property
    def key(self) -> str:
        """Directory-safe and unique per (file, slice)."""
        digest = hashlib.sha1(f"{self.name}#{self.slice_id}/{self.n_slices}".encode()).hexdigest()[:12]
        return f"u-{digest}"


def query_sources(cfg: MineConfig) -> List[tuple]:
    """(url, name) of each query file; listed again every poll, so files that appear are picked up."""
    return format_of(cfg.input).query_units()


def units_of_version(cfg: MineConfig, version_order: int) -> List[Unit]:
    c = cfg.serve.chunk_factor
    return [Unit(url, name, version_order % c, c) for url, name in query_sources(cfg)]


def unit_config(cfg: MineConfig, unit: Unit) -> MineConfig:
    return dataclasses.replace(cfg, input=format_of(cfg.input).unit_input(unit.source))


def config_for_version(cfg: MineConfig, version: ModelVersion) -> MineConfig:
    return dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, model=version.url or cfg.encoder.model))


# ---- what the log says ----------------------------------------------------------------------------------------

@dataclass
class LogState:
    """Rebuilt from the commit log at start: what is done, and the order given to each version."""
    committed: set = field(default_factory=set)        # (version name, unit key)
    orders: Dict[str, int] = field(default_factory=dict)
    last_seq: int = 0

    @classmethod
    def read(cls, commit_log: CommitLog) -> "LogState":
        state = cls()
        for entry in commit_log.entries():
            state.add(entry)
        return state

    def add(self, entry: dict) -> None:
        self.committed.add((entry["version"], entry["unit"]["key"]))
        self.orders.setdefault(entry["version"], int(entry["version_order"]))
        self.last_seq = max(self.last_seq, int(entry["seq"]))

    def order_of(self, name: str) -> int:
        if name not in self.orders:
            self.orders[name] = max(self.orders.values(), default=0) + 1
        return self.orders[name]


# ---- a version ready to mine with --------------------------------------------------------------------------

@dataclass
class ActiveVersion:
    """A model version opened for mining (``run.version.open_version``), with what the serve loop reports."""
    version: ModelVersion
    opened: OpenVersion
    refresh_seconds: float
    covered: frozenset     # corpus source files the store was built from (a new pairs file waits for a refresh)

    @property
    def cfg(self) -> MineConfig:
        return self.opened.cfg

    @property
    def store_key(self) -> str:
        return self.opened.paths.store_key

    @property
    def store_url(self) -> str:
        return self.opened.paths.store

    @property
    def manifest(self) -> dict:
        return self.opened.manifest

    @property
    def index(self):
        return self.opened.index

    @property
    def docs_encoded(self) -> int:
        return self.opened.docs_encoded

    @property
    def docs_cached(self) -> int:
        return int(self.manifest["docs"]) - self.docs_encoded

    @property
    def ident(self) -> tuple:
        return self.version.name, self.store_key


@dataclass
class Refresh:
    """A refresh in progress on the refresh thread: the version it opens, and its future ``ActiveVersion``."""
    ident: tuple           # (version name, store key), as ``ActiveVersion.ident``
    future: Future
    version: ModelVersion


@dataclass
class MinedUnit:
    """A unit mined, not yet committed: its commit log entry, and how long the mining took."""
    entry: dict
    seconds: float


def check_checkpoint(url: str) -> None:
    """Loads the checkpoint once on a worker, so a corrupt one is reported as itself before any encoding."""
    @ray.remote(num_cpus=0.25, max_retries=0)
    def load(model_url):
        from ..config import EncoderConfig
        from ..encode.sentence_transformer import SentenceTransformerEncoder
        SentenceTransformerEncoder(EncoderConfig(model=model_url or None), device="cpu", torch_threads=1)
    try:
        ray.get(load.remote(url))
    except ray.exceptions.RayTaskError as e:
        raise StreamMineError(f"checkpoint {url} cannot be loaded: {e.cause if hasattr(e, 'cause') else e}") \
            from None


def build_version(cfg: MineConfig, version: ModelVersion, metrics) -> ActiveVersion:
    """Encodes the corpus with ``version`` (only documents the cache lacks) and builds new shards from it."""
    t0 = time.perf_counter()
    vcfg = config_for_version(cfg, version)
    paths = RunPaths.for_serve(vcfg)
    if not input_format(vcfg).precomputed:
        check_checkpoint(vcfg.encoder.model or "")
    opened = open_version(vcfg, paths, metrics)
    return ActiveVersion(version, opened, refresh_seconds=round(time.perf_counter() - t0, 3),
                         covered=frozenset(stamp[0] for stamp in paths.fingerprint))


# ---- the loop -----------------------------------------------------------------------------------------------

class Server:
    def __init__(self, cfg: MineConfig):
        self.cfg = cfg
        self.out = cfg.output.path
        self.log = CommitLog(self.out)
        self.source = VersionSource(self.out, cfg.serve.checkpoints, cfg.encoder.model)
        self.state = LogState()
        self.active: Optional[ActiveVersion] = None
        self.staged: Optional[ActiveVersion] = None     # refreshed, waiting for the active version to finish
        self.refreshing: Optional[Refresh] = None
        self.failed: Dict[tuple, float] = {}             # version idents that could not be refreshed -> when
        self.retired: List[ActiveVersion] = []
        self.summary = fs.read_json(fs.join(self.out, SUMMARY_FILE)) or {"versions": {}, "errors": []}
        self.stop_event = threading.Event()
        self.lock = threading.Lock()   # the refresh thread and the main loop both report
        self.started = time.time()
        self.exporter = serve_metrics.Exporter()
        self.lease: Optional[RunLease] = None

    # ---- helpers ----
    def retrying(self, what: str, fn, *args):
        """Runs ``fn`` with exponential backoff on failures that may pass (object store down, a node lost)."""
        s = self.cfg.serve
        for attempt in range(1, s.retries + 1):
            try:
                return fn(*args)
            except USER_ERRORS:
                raise
            except Exception as e:  # noqa: BLE001 - anything else may be transient: retried, then raised
                if attempt == s.retries:
                    raise
                delay = min(s.backoff_max_seconds, 2.0 ** attempt)
                log.warning("%s failed (attempt %d of %d), retrying in %.0f s: %s", what, attempt, s.retries,
                            delay, e)
                self.record_error(f"{what}: {e}", retried=True)
                time.sleep(delay)

    def record_error(self, message: str, retried: bool = False) -> None:
        with self.lock:
            self.summary["errors"] = (self.summary.get("errors", []) +
                                      [{"at": time.time(), "error": message[:2000], "retried": retried}])[-100:]
        self.write_summary()

    def write_summary(self) -> None:
        with self.lock:
            self.summary.update(run=self.out, updated_at=time.time(), units_committed=len(self.state.committed),
                                active_version=self.active.version.name if self.active else None,
                                config=self.cfg.to_dict())
            try:
                fs.write_json_atomic(fs.join(self.out, SUMMARY_FILE), self.summary)
            except Exception as e:  # noqa: BLE001 - the summary is a report: never worth failing the run over
                log.warning("could not write %s: %s", SUMMARY_FILE, e)

    def version_summary(self, name: str) -> dict:
        return self.summary["versions"].setdefault(name, {"queries_mined": 0, "negatives": 0, "units": 0,
                                                          "mining_seconds": 0.0})

    # ---- versions ----
    def waiting_for(self) -> str:
        """What an idle serve waits for, in words (logged every WAIT_LOG_SECONDS)."""
        cp = self.cfg.serve.checkpoints
        if self.active is None:
            return (f"a complete checkpoint under {cp}" if cp else "the model to load") + (
                " (a refresh is in progress)" if self.refreshing is not None else "")
        more = f" or a new checkpoint under {cp}" if cp else ""
        return f"new query files under {self.cfg.input.path}{more} (version {self.active.version.name} is mined)"

    def poll_versions(self) -> None:
        latest = self.retrying("looking for model versions", self.source.latest)
        if latest is None:
            return
        ident = (latest.name, self.retrying("fingerprinting the corpus", store_key,
                                            config_for_version(self.cfg, latest)))
        known = [v.ident for v in (self.active, self.staged) if v is not None]
        if ident in known or time.time() - self.failed.get(ident, -1e18) < FAILED_VERSION_RETRY_SECONDS:
            return
        if self.refreshing is not None:
            return  # one refresh at a time; the newest version is taken when this one ends
        log.info("model version %s: refreshing (corpus re-encoded through the cache, new shards)", latest.name)
        future = self.pool.submit(self.retrying, f"refreshing to {latest.name}", build_version, self.cfg, latest,
                                  self.metrics)
        self.refreshing = Refresh(ident, future, latest)

    def collect_refresh(self, wait: bool = False) -> None:
        if self.refreshing is None or (not wait and not self.refreshing.future.done()):
            return
        refresh, self.refreshing = self.refreshing, None
        version = refresh.version
        try:
            ready: ActiveVersion = refresh.future.result()
        except Exception as e:  # noqa: BLE001 - a corrupt checkpoint must not stop the miner
            self.failed[refresh.ident] = time.time()
            log.error("model version %s could not be refreshed; still serving %s: %s", version.name,
                      self.active.version.name if self.active else "nothing yet", e)
            self.record_error(f"refresh to {version.name} failed: {e}")
            return
        vs = self.version_summary(ready.version.name)
        vs.update(url=ready.version.url, step=ready.version.step, created=ready.version.created,
                  refresh_seconds=ready.refresh_seconds, docs=int(ready.manifest["docs"]),
                  docs_encoded=vs.get("docs_encoded", 0) + ready.docs_encoded,
                  docs_cached=ready.docs_cached, store=ready.store_url)
        self.exporter.refreshed(ready)
        if self.staged is not None:
            self.retire(self.staged)
        self.staged = ready
        self.write_summary()

    def maybe_swap(self) -> None:
        """Swaps the staged version in between units: the unit in flight always finishes on its own version."""
        if self.staged is None:
            return
        same_model = self.active is not None and self.active.version.name == self.staged.version.name
        if self.active is not None and self.cfg.serve.complete_versions and not same_model and self.pending_units():
            return
        old, self.active, self.staged = self.active, self.staged, None
        order = self.state.order_of(self.active.version.name)
        self.version_summary(self.active.version.name)["order"] = order
        log.info("serving model version %s (order %d)", self.active.version.name, order)
        if old is not None:
            self.retire(old)
        self.write_summary()

    def retire(self, old: ActiveVersion) -> None:
        old.index.shutdown()
        try:
            self.apply_retention()
        except Exception as e:  # noqa: BLE001 - cleaning up is never worth failing the run over
            log.warning("retention: %s", e)

    def apply_retention(self) -> None:
        """Keeps the embedding stores in use plus the newest committed ones, ``serve.retention`` in all."""
        from ..index.store import read_manifest, remove_store
        root = fs.join(serve_work_root(self.cfg), "embeddings")
        keep = {v.store_url.rstrip("/") for v in (self.active, self.staged) if v is not None}
        filesystem, path = fs.resolve(root)
        stores = []
        for child in filesystem.ls(path, detail=False):
            url = fs.join(root, child.rstrip("/").rsplit("/", 1)[-1])
            manifest = read_manifest(url) if fs.isdir(url) else None
            if manifest is not None:  # a store without a manifest may be the one a refresh is writing
                stores.append((float(manifest.get("committed_at", 0)), url.rstrip("/")))
        room = max(0, self.cfg.serve.retention - len(keep))
        others = [url for _, url in sorted(stores, reverse=True) if url not in keep]
        for url in others[room:]:
            log.info("retention: deleting the embedding store %s", url)
            remove_store(url)  # its manifest and the files it names: nothing else under that folder

    # ---- units ----
    def pending_units(self) -> List[Unit]:
        if self.active is None:
            return []
        order = self.state.order_of(self.active.version.name)
        units = self.retrying("listing query files", units_of_version, self.cfg, order)
        return [u for u in units if (self.active.version.name, u.key) not in self.state.committed
                and self.covers(u)]

    def covers(self, unit: Unit) -> bool:
        """Pairs input: a query file's positives are corpus documents, so the file is mined only by a store built
        after it appeared (its appearance changed the corpus fingerprint, which starts that refresh)."""
        if not format_of(self.cfg.input).units_follow_corpus:
            return True
        return fs.resolve(unit.source)[1] in self.active.covered

    def mine_unit(self, unit: Unit) -> MinedUnit:
        from ..sink.parts import PARTS_MANIFEST
        active = self.active
        name = active.version.name
        unit_url = fs.join(self.out, "data", check_version_name(name), unit.key)
        remove_unit_leftovers(unit_url)  # what an attempt that never committed left behind
        t0 = time.perf_counter()
        mine_queries(unit_config(active.cfg, unit), active.opened, unit_url, self.metrics, name,
                     query_slice=(unit.slice_id, unit.n_slices))
        seconds = time.perf_counter() - t0
        parts = fs.read_json(fs.join(unit_url, PARTS_MANIFEST))["parts"]
        negatives = count_negatives([fs.join(unit_url, p["part"]) for p in parts])
        rel = f"data/{name}/{unit.key}"
        entry = {"version": name, "version_order": self.state.order_of(name), "version_url": active.version.url,
                 "version_created": active.version.created, "store_key": active.store_key,
                 "unit": {"key": unit.key, "file": unit.name, "slice": unit.slice_id, "slices": unit.n_slices},
                 "parts": [{"part": f"{rel}/{p['part']}", "rows": p["rows"]} for p in parts],
                 "rows": sum(p["rows"] for p in parts), "negatives": negatives,
                 "mining_seconds": round(seconds, 3)}
        return MinedUnit(entry, seconds)

    def run_unit(self, unit: Unit) -> None:
        mined = self.retrying(f"mining {unit.name} (slice {unit.slice_id}) with {self.active.version.name}",
                              self.mine_unit, unit)
        entry, seconds = mined.entry, mined.seconds
        self.lease.check()  # a serve that lost its lease (stalled past it, overtaken) commits nothing
        entry = self.retrying("committing to the log", self.log.append, entry, self.state.last_seq)
        self.state.add(entry)
        vs = self.version_summary(entry["version"])
        vs["queries_mined"] += entry["rows"]
        vs["negatives"] += entry["negatives"]
        vs["units"] += 1
        vs["mining_seconds"] = round(vs["mining_seconds"] + seconds, 3)
        vs["negatives_per_second"] = round(vs["negatives"] / max(vs["mining_seconds"], 1e-9), 1)
        if "first_commit_at" not in vs:
            vs["first_commit_at"] = entry["committed_at"]
            if entry["version_created"]:
                vs["checkpoint_to_first_negatives_seconds"] = round(entry["committed_at"] -
                                                                    entry["version_created"], 3)
        self.exporter.committed(entry, seconds)
        self.write_summary()

    # ---- main ----
    def run(self) -> dict:
        cfg = self.cfg
        from ..registries import check_names
        cfg.validate()
        check_names(cfg)
        if not cfg.output.path:
            raise ConfigError("output.path is required: it is the run's identity (restart with the same URL)")
        from ..preflight import check_output_location, input_urls
        check_output_location(self.out, input_urls(cfg))  # before Ray: never a run inside (or above) its input
        # one writer per run: a second serve on this output fails here, at once, before starting anything
        with RunLease(self.out) as self.lease:
            return self._run()

    def _run(self) -> dict:
        from ..metrics import start_stage_metrics
        # auto resolved once, after the checks (it may import torch), for every version's encoders
        self.cfg = cfg = pin_precision(self.cfg)
        start_ray(cfg.run)
        fs.makedirs(self.out)
        self.log.reopen()
        clear_stop(self.out)
        self.state = LogState.read(self.log)
        log.info("run %s: %d units already committed", self.out, len(self.state.committed))
        self.metrics = start_stage_metrics()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streammine-refresh")
        previous = _install_stop_signals(self.stop_event)
        last_progress = time.monotonic()
        last_wait_log = float("-inf")
        completed: set = set()
        planned_end = False
        try:
            while not self.stop_event.is_set():
                if stop_requested(self.out, self.started):
                    planned_end = True
                    break
                self.poll_versions()
                self.collect_refresh(wait=self.active is None and self.refreshing is not None
                                     and self.staged is None)
                self.maybe_swap()
                units = self.pending_units()
                if units:
                    self.run_unit(units[0])
                    last_progress = time.monotonic()
                    continue
                if self.active is not None and self.active.version.name not in completed:
                    completed.add(self.active.version.name)
                    log.info("model version %s: every unit mined", self.active.version.name)
                    last_progress = time.monotonic()
                if cfg.serve.max_versions and len(completed) >= cfg.serve.max_versions:
                    planned_end = True
                    break
                if self.staged is not None or (self.refreshing is not None and self.refreshing.future.done()):
                    continue
                if cfg.serve.idle_exit_seconds and time.monotonic() - last_progress > cfg.serve.idle_exit_seconds:
                    planned_end = True
                    break
                if time.monotonic() - max(last_wait_log, last_progress) >= WAIT_LOG_SECONDS \
                        or last_wait_log < last_progress:
                    log.info("waiting for %s", self.waiting_for())  # what it waits for, every few minutes
                    last_wait_log = time.monotonic()
                self.stop_event.wait(cfg.serve.poll_seconds)
        finally:
            _restore_signals(previous)
            if self.refreshing is not None:
                try:
                    self.collect_refresh(wait=True)
                except Exception:  # noqa: BLE001
                    pass
            for v in (self.active, self.staged):
                if v is not None:
                    v.index.shutdown()
            self.pool.shutdown(wait=False)
            self.summary["stages"] = ray.get(self.metrics.snapshot.remote())
            ray.kill(self.metrics)
            self.summary["versions_completed"] = sorted(completed)
            self.write_summary()
        if planned_end:
            self.log.close()  # followers end once they have read everything
        return self.summary


def remove_unit_leftovers(unit_url: str) -> int:
    """Deletes what an uncommitted attempt at a unit left in its folder: the part files the mining sink names
    (``part-<task>-<writer>-<random>.parquet``) and its ``_parts.json``. Only files directly in the folder, only
    those names: anything else there (not streammine's) stays. Returns how many files went."""
    import re
    from ..sink.parts import PARTS_MANIFEST
    if not fs.exists(unit_url):
        return 0
    filesystem, path = fs.resolve(unit_url)
    ours = re.compile(r"part-\d{5}-[0-9a-f]{8}-[0-9a-f]{12}\.parquet|" + re.escape(PARTS_MANIFEST))
    names = [c.rstrip("/").rsplit("/", 1)[-1] for c in filesystem.ls(path, detail=False)]
    return fs.remove_quietly(fs.join(unit_url, n) for n in names if ours.fullmatch(n))


def count_negatives(part_urls: list) -> int:
    import pyarrow.compute as pc
    from ..sink.mined import read_batches
    total = 0
    for _, _, batch in read_batches(part_urls, ["negative_ids"], required=["negative_ids"]):
        total += int(pc.sum(pc.list_value_length(batch.column("negative_ids"))).as_py() or 0)
    return total


def _install_stop_signals(event: threading.Event):
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda *_: event.set())
    return previous


def _restore_signals(previous) -> None:
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)


def serve(cfg: MineConfig, stop_event: Optional[threading.Event] = None) -> dict:
    """Mines continuously until stopped (signal, ``streammine stop``, ``stop_event``, or the serve.* limits)."""
    server = Server(cfg)
    if stop_event is not None:
        server.stop_event = stop_event
    return server.run()


