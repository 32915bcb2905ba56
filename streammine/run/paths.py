"""Every location a run reads or writes, computed once from its config (``RunPaths``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..cache import cache_root
from ..config import MineConfig
from ..index.store_naming import query_cache_key, query_input_key, store_key
from ..io import fs
from ..io.formats import input_format
from ..io.run_input import corpus_fingerprint

QUARANTINE_DIR = "_quarantine"


def serve_work_root(cfg: MineConfig) -> str:
    """Where a serve run keeps its embedding stores: ``run.work_dir``, else ``<output>/_work``. Not the shared
    cache: ``serve.retention`` deletes old stores there."""
    return cfg.run.work_dir or fs.join(cfg.output.path, "_work")


@dataclass(frozen=True)
class RunPaths:
    output: str                       # the output folder
    quarantine: str                   # where shards and miners write quarantine records (``<output>/_quarantine``)
    read_quarantine: Optional[str]    # where readers quarantine bad rows: ``quarantine`` when lenient, else None
    work: str                         # the root the embedding stores live under
    fingerprint: list                 # the corpus files' stamps (``io.run_input.corpus_fingerprint``), listed once
    store_key: str
    store: str                        # this run's embedding store: ``<work>/embeddings/<store_key>``
    query_cache: Optional[str]        # the model's query-vector cache (None: run.cache_queries is off)
    query_cache_complete: Optional[str]  # the mark of a finished query pass over this input (see below)

    @classmethod
    def for_mine(cls, cfg: MineConfig) -> "RunPaths":
        """A ``mine`` run: stores in the shared cache (``cache.cache_root``)."""
        return cls.of(cfg, cache_root(cfg))

    @classmethod
    def for_serve(cls, cfg: MineConfig) -> "RunPaths":
        """A version of a ``serve`` run: stores under ``serve_work_root``."""
        return cls.of(cfg, serve_work_root(cfg))

    @classmethod
    def of(cls, cfg: MineConfig, work: str) -> "RunPaths":
        """The paths of ``cfg`` with its stores under ``work``. The corpus files are listed (a metadata pass)
        once, here: their stamps name the store and the query cache's completeness mark.

        ``query_cache_complete``: where a finished query pass marks the query-vector cache as holding every query
        of this run's input (None when the cache is off or the vectors are precomputed). With a mark, a run that
        reuses its embedding store lets the miners look the query vectors up (no encoder actors start for the
        query pass). Vectors deleted behind a mark cost only speed: a query the cache lacks is encoded by the
        miner that meets it."""
        out = cfg.output.path
        quarantine = fs.join(out, QUARANTINE_DIR)
        fingerprint = corpus_fingerprint(cfg)
        key = store_key(cfg, fingerprint)
        query_cache = fs.join(cache_root(cfg), "query_vectors", query_cache_key(cfg)) if cfg.run.cache_queries \
            else None
        complete = None
        if query_cache is not None and not input_format(cfg).precomputed:
            complete = fs.join(query_cache, "complete", f"{query_input_key(cfg, fingerprint)}.json")
        return cls(output=out, quarantine=quarantine, read_quarantine=quarantine if cfg.input.lenient else None,
                   work=work, fingerprint=fingerprint, store_key=key, store=fs.join(work, "embeddings", key),
                   query_cache=query_cache, query_cache_complete=complete)

    @property
    def stores(self) -> str:
        """The folder of every store under ``work`` (where an older store of the same model is looked for)."""
        return fs.join(self.work, "embeddings")
