"""The embedding store of a run: reused when committed for the same key, else the corpus encoded into it (documents
an older store of the same model holds unchanged are copied, not encoded; when it holds every document, no encoder
actor starts and no model is loaded)."""
from __future__ import annotations

import functools
import logging
import os
from contextlib import nullcontext
from typing import ContextManager, Optional

from ..config import MineConfig
from ..io.formats import input_format
from ..encode.plan import EncoderPlan
from ..encode.pool import encoder_map_args
from ..encode.query_vectors import QueryPrefetcher
from ..encode.document_stage import EncodeDocuments, all_cached_documents
from ..errors import StreamMineError
from ..index.store import in_sorted, read_manifest, stored_doc_keys
from ..index.store_naming import cached_store_for, model_ident, model_key
from ..index.store_sink import EmbeddingStoreSink
from ..io.run_input import (LENGTH_SORT_WINDOW_BLOCKS, corpus_read_fns, corpus_source, encoder_input_blocks,
                        read_dataset)
from .paths import RunPaths

log = logging.getLogger("streammine")


def build_store(cfg: MineConfig, paths: RunPaths, metrics, plan: EncoderPlan, prefetch_queries: bool = False,
                corpus_keys=None, progress: Optional[ContextManager] = None) -> dict:
    """The manifest of ``paths.store`` (plus ``reused`` and ``queries_prefetched``), after encoding the corpus
    into it unless a committed store for the same key exists. With ``prefetch_queries`` (and the query cache on),
    the same encoder actors encode the run's queries into the query-vector cache after the documents: the query
    pass then starts no second model. ``corpus_keys``: the corpus's sorted doc keys (``preflight.scan_inputs``):
    when the cached store holds all of them, its vectors are copied in and no encoder starts (the queries are then
    not prefetched). ``progress``: held while documents are encoded."""
    store_url = paths.store
    manifest = read_manifest(store_url)
    if manifest is not None:
        log.debug("embedding store %s is up to date: the corpus is not encoded again", store_url)
        return dict(manifest, reused=True, queries_prefetched=False)
    precomputed = input_format(cfg).precomputed
    cached = cached_store_for(store_url, model_key(cfg)) if not precomputed else None
    every_doc_cached = (cached is not None and corpus_keys is not None and len(corpus_keys) > 0
                        and bool(in_sorted(corpus_keys, stored_doc_keys(cached)).all()))
    if cached:
        log.debug("embedding cache: documents already in %s are not encoded again", cached)
    if precomputed:
        ds = read_dataset(corpus_read_fns(cfg, paths.read_quarantine, plan.block_rows), "corpus")
    elif every_doc_cached:
        ds = read_dataset(corpus_read_fns(cfg, paths.read_quarantine, plan.block_rows), "corpus")
        # as the read task asks (read_dataset): Ray Data then fuses the two into one task
        ds = ds.map_batches(all_cached_documents, batch_format="pyarrow", num_cpus=1,
                            fn_kwargs={"dim": read_manifest(cached)["dim"], "metrics": metrics})
    else:
        query_cache = paths.query_cache if prefetch_queries else None
        ds = read_dataset(encoder_input_fns(cfg, paths, plan, query_cache), "corpus")
        # An actor call holds its whole input block, and a read task's output is coalesced into big blocks (up to
        # Ray Data's target block size): split them (streaming, no shuffle) so every encoder actor gets work.
        ds = ds.repartition(target_num_rows_per_block=plan.block_rows)
        ds = ds.map_batches(EncodeDocuments, batch_size=plan.block_rows,
                            **encoder_map_args(cfg, plan, metrics, cached, QueryPrefetcher(query_cache)))
    with (progress if progress is not None and not every_doc_cached else nullcontext()):
        ds.write_datasink(store_sink(cfg, store_url, cached))
    return committed_store(cfg, store_url,
                           queries_prefetched=bool(prefetch_queries and not precomputed and not every_doc_cached))


def encoder_input_fns(cfg: MineConfig, paths: RunPaths, plan: EncoderPlan, query_cache: Optional[str]) -> list:
    """One zero-argument callable per corpus read task, yielding the encoder's input blocks: length-sorted
    windows cut into ``plan.block_rows`` blocks, then (with ``query_cache``) the run's queries after the last
    window. The Ray path reads them as a dataset, the in-process path calls them in order."""
    windows = corpus_read_fns(cfg, paths.read_quarantine, LENGTH_SORT_WINDOW_BLOCKS * plan.block_rows)
    return [functools.partial(encoder_input_blocks, fn, plan.block_rows,
                              cfg if query_cache and k == len(windows) - 1 else None)
            for k, fn in enumerate(windows)]


def store_sink(cfg: MineConfig, store_url: str, cached_store: Optional[str] = None) -> EmbeddingStoreSink:
    """The sink that writes and commits ``store_url``, its manifest naming the store key and the model."""
    return EmbeddingStoreSink(store_url, {"store_key": os.path.basename(store_url.rstrip("/")),
                                          "model": cfg.encoder.model or "all-MiniLM-L6-v2",
                                          "model_key": model_key(cfg),
                                          "precision": model_ident(cfg)["precision"]},
                              cached_store=cached_store)


def committed_store(cfg: MineConfig, store_url: str, queries_prefetched: bool) -> dict:
    """The manifest of the store just written (plus ``reused`` False and ``queries_prefetched``); a store with
    no document is the user's mistake."""
    manifest = read_manifest(store_url)
    if manifest is None or not manifest.get("docs"):
        raise StreamMineError(f"{corpus_source(cfg)}: the corpus has no document"
                              + (" (every row was quarantined)" if cfg.input.lenient else ""))
    return dict(manifest, reused=False, queries_prefetched=queries_prefetched)
