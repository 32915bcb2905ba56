"""A model version ready to mine with: ``open_version`` builds (or reuses) the embedding store, starts the shard
actors and waits until they have built their shards. ``mine`` opens one; ``serve`` opens one per checkpoint."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ContextManager, Optional

from ..config import MineConfig
from ..encode.plan import EncoderPlan
from ..encode.pool import encoder_plan
from ..index.actor import ShardedIndex
from .paths import RunPaths
from .store_build import build_store


@dataclass
class OpenVersion:
    """The index of one model version over the corpus, with what the query pass and the summary need."""
    cfg: MineConfig
    paths: RunPaths
    plan: EncoderPlan         # the encoder actors of this cluster (the query pass encodes with the same plan)
    index: ShardedIndex
    manifest: dict            # the store's manifest, plus ``reused``
    shard_info: list          # each shard actor's ``ready()`` report
    encode_seconds: float     # building (or finding) the store
    index_build_seconds: float  # the shards' build, after the store was committed

    @property
    def store_reused(self) -> bool:
        return bool(self.manifest["reused"])

    @property
    def docs_encoded(self) -> int:
        """Documents this opening encoded (0 when the store was reused; the cached ones are not counted)."""
        return 0 if self.store_reused else int(self.manifest.get("encoded", self.manifest["docs"]))

    def shutdown(self) -> None:
        self.index.shutdown()


def open_version(cfg: MineConfig, paths: RunPaths, metrics, prefetch_queries: bool = False,
                 encode_progress: Optional[ContextManager] = None, corpus_keys=None) -> OpenVersion:
    """Plans the encoders, starts the shard actors (their start overlaps the encoding; they build when the store
    is committed and they are asked), builds or reuses ``paths.store`` (``store_build.build_store``) and waits
    until every shard is ready. On any failure the shard actors are stopped before the error is raised.

    ``encode_progress``: a context manager held while documents are encoded (a progress line; not entered when
    nothing is to encode). ``corpus_keys``: see ``store_build.build_store``."""
    plan = encoder_plan(cfg)  # a local run whose actors cannot fit stops here, before any actor is started
    index = ShardedIndex.start(paths.store, cfg.index, cfg.input.lenient, paths.quarantine)
    try:
        t = time.perf_counter()
        manifest = build_store(cfg, paths, metrics, plan, prefetch_queries=prefetch_queries,
                               corpus_keys=corpus_keys, progress=encode_progress)
        encode_seconds = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        shard_info = index.wait_ready()
        index_build_seconds = round(time.perf_counter() - t, 3)
    except BaseException:
        index.shutdown()
        raise
    return OpenVersion(cfg, paths, plan, index, manifest, shard_info, encode_seconds, index_build_seconds)
