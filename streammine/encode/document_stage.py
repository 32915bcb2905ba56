"""Ray Data stages (callable classes for ``map_batches``) that add a ``vector`` column to record blocks: the base
stage and the document encoder. The query side (``EncodeQueries``, precomputed lookups, the prefetch of queries
by the document encoders) is ``query_vectors.py``."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa

from ..config import EncoderConfig
from ..metrics import MetricsClient
from ..vectors import to_arrow


def block_document_texts(block: pa.Table) -> list:
    """A corpus block's texts as they are embedded (title + text)."""
    from ..io.records import document_text
    titles = block.column("title").to_pylist()
    texts = block.column("text").to_pylist()
    return [document_text(t, x) for t, x in zip(titles, texts)]


class EncodeStage:
    """Records -> the same records plus a ``vector`` column; subclasses say which texts and which side."""
    stage = ""

    def __init__(self, cfg: EncoderConfig, torch_threads: Optional[int] = None, metrics=None, lazy: bool = False,
                 encoder=None):
        """``encoder``: one already loaded (the in-process path shares one model between its stages)."""
        self.cfg, self.torch_threads = cfg, torch_threads
        self._encoder = encoder
        self.metrics = MetricsClient(metrics)
        if not lazy:
            self.encoder  # noqa: B018 - load now: the first block should not wait for the model

    @property
    def encoder(self):
        """Loaded on first use when lazy: a warm re-run whose texts are all cached never loads the model."""
        if self._encoder is None:
            from .model_object import make_encoder
            self._encoder = make_encoder(self.cfg, torch_threads=self.torch_threads)
        return self._encoder

    def encode(self, block: pa.Table) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, block: pa.Table) -> pa.Table:
        with self.metrics.time(self.stage, block.num_rows):
            vectors = self.encode(block)
        return block.append_column("vector", to_arrow(vectors))


class EncodeDocuments(EncodeStage):
    """Documents -> vectors; with ``cached_store``, documents that store already holds (same id, same text, same
    model) are not encoded: they get a ``cached`` flag and a zero vector, filled from that store at commit, and
    the model is loaded only when a block holds a document to encode. With a ``prefetcher``
    (``query_vectors.QueryPrefetcher``), every input block goes through it first: it takes out the run's queries,
    if the block carries any, and encodes them with this stage's model."""
    stage = "encode_corpus"

    def __init__(self, cfg: EncoderConfig, torch_threads: Optional[int] = None, metrics=None,
                 cached_store: Optional[str] = None, prefetcher=None, encoder=None):
        super().__init__(cfg, torch_threads, metrics, lazy=cached_store is not None, encoder=encoder)
        from ..index.store import read_manifest, stored_doc_keys
        # 8 bytes per stored document, per encoder actor: the price of never encoding a document twice
        self.cached_keys = stored_doc_keys(cached_store) if cached_store else None
        self.cached_dim = (read_manifest(cached_store) or {}).get("dim") if cached_store else None
        self.prefetcher = prefetcher

    def encode(self, block: pa.Table) -> np.ndarray:
        return self.encoder.encode_documents(block_document_texts(block))

    def __call__(self, block: pa.Table) -> pa.Table:
        if self.prefetcher is not None:
            block = self.prefetcher.take_queries(block, lambda texts: self.encoder.encode_queries(texts),
                                                 self.metrics)
        return self._encode_documents(block)

    def _encode_documents(self, block: pa.Table) -> pa.Table:
        if self.cached_keys is None or len(self.cached_keys) == 0:
            return super().__call__(block).append_column("cached", pa.array(np.zeros(block.num_rows, bool)))
        from ..index.store import doc_keys, in_sorted
        cached = in_sorted(doc_keys(block.column("doc_id").to_pylist(), block.column("text_key").to_numpy()),
                           self.cached_keys)
        todo = np.flatnonzero(~cached)
        # the cached store's dimension: a block of cached documents only needs no model
        vectors = np.zeros((block.num_rows, self.cached_dim or self.encoder.dim), np.float32)
        if len(todo):  # no encoder time is reported for a block with nothing to encode
            with self.metrics.time(self.stage, len(todo)):
                vectors[todo] = self.encode(block.take(pa.array(todo)))
        return mark_cached(block.append_column("vector", to_arrow(vectors)), cached, self.metrics)


def mark_cached(block: pa.Table, cached: np.ndarray, metrics: MetricsClient) -> pa.Table:
    """``block`` plus the ``cached`` flags the store sink fills vectors by; counts them (``corpus_cached``)."""
    with metrics.time("corpus_cached", int(cached.sum())):
        pass
    return block.append_column("cached", pa.array(cached))


def all_cached_documents(block: pa.Table, dim: int, metrics=None) -> pa.Table:
    """The stage of a run whose every document the cached store holds (``run.store_build``): no model, no
    encoder actor; zero vectors, every row flagged ``cached`` (the store sink copies the vectors in)."""
    n = block.num_rows
    return mark_cached(block.append_column("vector", to_arrow(np.zeros((n, dim), np.float32))),
                       np.ones(n, bool), MetricsClient(metrics))
