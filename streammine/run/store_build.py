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
from ..index.store_naming import cached_store_for, model_key
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
    e = cfg.encoder
    precomputed = input_format(cfg).precomputed
    key_of_model = model_key(cfg)
    cached = cached_store_for(store_url, key_of_model) if not precomputed else None
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
    sink = EmbeddingStoreSink(store_url, {"store_key": os.path.basename(store_url.rstrip("/")),
                                          "model": e.model or "all-MiniLM-L6-v2", "model_key": key_of_model},
                              cached_store=cached)
    with (progress if progress is not None and not every_doc_cached else nullcontext()):
        ds.write_datasink(sink)
    manifest = read_manifest(store_url)
    if manifest is None or not manifest.get("docs"):
        raise StreamMineError(f"{corpus_source(cfg)}: the corpus has no document"
                              + (" (every row was quarantined)" if cfg.input.lenient else ""))
    return dict(manifest, reused=False,
                queries_prefetched=bool(prefetch_queries and not precomputed and not every_doc_cached))
