"""The embedding store of a run: reused when committed for the same key, else the corpus encoded into it (documents
an older store of the same model holds unchanged are copied, not encoded)."""
from __future__ import annotations

import functools
import logging
import os

from ..config import MineConfig
from ..io.formats import input_format
from ..encode.plan import EncoderPlan
from ..encode.pool import encoder_map_args
from ..encode.query_vectors import QueryPrefetcher
from ..encode.document_stage import EncodeDocuments
from ..errors import StreamMineError
from ..index.store import read_manifest
from ..index.store_naming import cached_store_for, model_key
from ..index.store_sink import EmbeddingStoreSink
from ..io.run_input import (LENGTH_SORT_WINDOW_BLOCKS, corpus_read_fns, corpus_source, encoder_input_blocks,
                        read_dataset)
from .paths import RunPaths

log = logging.getLogger("streammine")


def build_store(cfg: MineConfig, paths: RunPaths, metrics, plan: EncoderPlan, prefetch_queries: bool = False) -> dict:
    """The manifest of ``paths.store`` (plus ``reused``), after encoding the corpus into it unless a committed
    store for the same key exists. With ``prefetch_queries`` (and the query cache on), the same encoder actors
    encode the run's queries into the query-vector cache after the documents: the query pass then starts no
    second model."""
    store_url = paths.store
    manifest = read_manifest(store_url)
    if manifest is not None:
        log.info("embedding store %s is up to date: the corpus is not encoded again", store_url)
        return dict(manifest, reused=True)
    e = cfg.encoder
    precomputed = input_format(cfg).precomputed
    key_of_model = model_key(cfg)
    cached = cached_store_for(store_url, key_of_model) if not precomputed else None
    if cached:
        log.info("embedding cache: documents already in %s are not encoded again", cached)
    if precomputed:
        ds = read_dataset(corpus_read_fns(cfg, paths.read_quarantine, plan.block_rows), "corpus")
    else:
        windows = corpus_read_fns(cfg, paths.read_quarantine, LENGTH_SORT_WINDOW_BLOCKS * plan.block_rows)
        query_cache = paths.query_cache if prefetch_queries else None
        ds = read_dataset([functools.partial(encoder_input_blocks, fn, plan.block_rows,
                                             cfg if query_cache and k == len(windows) - 1 else None)
                           for k, fn in enumerate(windows)], "corpus")
        # An actor call holds its whole input block, and a read task's output is coalesced into big blocks (up to
        # Ray Data's target block size): split them (streaming, no shuffle) so every encoder actor gets work.
        ds = ds.repartition(target_num_rows_per_block=plan.block_rows)
        ds = ds.map_batches(EncodeDocuments, batch_size=plan.block_rows,
                            **encoder_map_args(cfg, plan, metrics, cached, QueryPrefetcher(query_cache)))
    ds.write_datasink(EmbeddingStoreSink(store_url, {"store_key": os.path.basename(store_url.rstrip("/")),
                                                     "model": e.model or "all-MiniLM-L6-v2",
                                                     "model_key": key_of_model},
                                         cached_store=cached))
    manifest = read_manifest(store_url)
    if manifest is None or not manifest.get("docs"):
        raise StreamMineError(f"{corpus_source(cfg)}: the corpus has no document"
                              + (" (every row was quarantined)" if cfg.input.lenient else ""))
    return dict(manifest, reused=False)
