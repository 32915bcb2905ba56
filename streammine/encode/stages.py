"""Ray Data stages (callable classes for ``map_batches``) that add a ``vector`` column to record blocks."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import numpy as np
import pyarrow as pa

from ..config import EncoderConfig
from ..errors import InputError
from ..metrics import MetricsClient
from ..vectors import to_arrow

# marks the query rows riding with the corpus through the document encoders (pipeline.encoder_input_blocks)
QUERY_ROW = "query_row"


def block_document_texts(block: pa.Table) -> list:
    """A corpus block's texts as they are embedded (title + text)."""
    from ..io.records import document_text
    titles = block.column("title").to_pylist()
    texts = block.column("text").to_pylist()
    return [document_text(t, x) for t, x in zip(titles, texts)]


class _EncodeStage:
    """Records -> the same records plus a ``vector`` column; subclasses say which texts and which side."""
    stage = ""

    def __init__(self, cfg: EncoderConfig, torch_threads: Optional[int] = None, metrics=None, lazy: bool = False):
        self.cfg, self.torch_threads = cfg, torch_threads
        self._encoder = None
        self.metrics = MetricsClient(metrics)
        if not lazy:
            self.encoder  # noqa: B018 - load now: the first block should not wait for the model

    @property
    def encoder(self):
        """Loaded on first use when lazy: a warm re-run whose texts are all cached never loads the model."""
        if self._encoder is None:
            from .sentence_transformer import SentenceTransformerEncoder
            self._encoder = SentenceTransformerEncoder(self.cfg, torch_threads=self.torch_threads)
        return self._encoder

    def encode(self, block: pa.Table) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, block: pa.Table) -> pa.Table:
        with self.metrics.time(self.stage, block.num_rows):
            vectors = self.encode(block)
        return block.append_column("vector", to_arrow(vectors))


class EncodeDocuments(_EncodeStage):
    """Documents -> vectors; with ``cached_store``, documents that store already holds (same id, same text, same
    model) are not encoded: they get a ``cached`` flag and a zero vector, filled from that store at commit."""
    stage = "encode_corpus"

    def __init__(self, cfg: EncoderConfig, torch_threads: Optional[int] = None, metrics=None,
                 cached_store: Optional[str] = None, query_cache_url: Optional[str] = None):
        super().__init__(cfg, torch_threads, metrics)
        from ..index.store import stored_doc_keys
        # 8 bytes per stored document, per encoder actor: the price of never encoding a document twice
        self.cached_keys = stored_doc_keys(cached_store) if cached_store else None
        self.query_cache_url = query_cache_url
        self._query_cache = None

    def encode(self, block: pa.Table) -> np.ndarray:
        return self.encoder.encode_documents(block_document_texts(block))

    def __call__(self, block: pa.Table) -> pa.Table:
        if QUERY_ROW in block.column_names:
            is_query = block.column(QUERY_ROW).to_numpy(zero_copy_only=False)
            if is_query.any():  # only the last blocks of a run hold queries: the others are not copied
                self._prefetch_queries(block.filter(pa.array(is_query)).column("text").to_pylist())
                block = block.filter(pa.array(~is_query))
            block = block.drop_columns([QUERY_ROW])
        return self._encode_documents(block)

    def _prefetch_queries(self, texts: list) -> None:
        """Query texts riding with the corpus (pipeline.encoder_input_blocks) -> the query-vector cache; nothing
        goes downstream, the query pass looks them up there."""
        if not self.query_cache_url:
            return
        from .query_cache import QueryVectorCache, query_keys
        if self._query_cache is None:
            self._query_cache = QueryVectorCache(self.query_cache_url).load()
        text_of = dict(zip(query_keys(texts).tolist(), texts))  # a query text repeated in the run: encoded once
        # its own stage name: the query pass's encode_queries + queries_cached rows count the queries read
        self._query_cache.vectors_for(np.fromiter(text_of, np.uint64, len(text_of)), list(text_of.values()),
                                      self.encoder.encode_queries,
                                      lambda n: self.metrics.time("prefetch_queries", n) if n else nullcontext())

    def _encode_documents(self, block: pa.Table) -> pa.Table:
        if self.cached_keys is None or len(self.cached_keys) == 0:
            return super().__call__(block).append_column("cached", pa.array(np.zeros(block.num_rows, bool)))
        from ..index.store import doc_keys
        keys = doc_keys(block.column("doc_id").to_pylist(), block.column("text_key").to_numpy())
        pos = np.minimum(np.searchsorted(self.cached_keys, keys), len(self.cached_keys) - 1)
        cached = self.cached_keys[pos] == keys
        vectors = np.zeros((block.num_rows, self.encoder.dim), np.float32)
        todo = np.flatnonzero(~cached)
        with self.metrics.time(self.stage, len(todo)):
            if len(todo):
                vectors[todo] = self.encode(block.take(pa.array(todo)))
        with self.metrics.time("corpus_cached", int(cached.sum())):
            pass
        return block.append_column("vector", to_arrow(vectors)).append_column("cached", pa.array(cached))


class EncodeQueries(_EncodeStage):
    """Queries -> vectors; with ``cache_url``, queries encoded before by the same model are looked up instead."""
    stage = "encode_queries"

    def __init__(self, cfg: EncoderConfig, torch_threads: Optional[int] = None, metrics=None,
                 cache_url: Optional[str] = None, lazy: Optional[bool] = None):
        from .query_cache import QueryVectorCache
        self.cache = QueryVectorCache(cache_url).load() if cache_url else None
        if lazy is None:  # the model is loaded up front unless the cache may answer every query
            lazy = self.cache is not None and len(self.cache.keys) > 0
        super().__init__(cfg, torch_threads, metrics, lazy=lazy)

    def encode(self, block: pa.Table) -> np.ndarray:
        return self.encoder.encode_queries(block.column("query").to_pylist())

    def __call__(self, block: pa.Table) -> pa.Table:
        if self.cache is None:
            return super().__call__(block)
        from .query_cache import query_keys
        texts = block.column("query").to_pylist()
        # self.encoder is reached only when a query is missing: a lazily loaded model stays unloaded otherwise
        vectors, found = self.cache.vectors_for(query_keys(texts), texts, lambda t: self.encoder.encode_queries(t),
                                                lambda n: self.metrics.time(self.stage, n))
        if vectors is None:  # an empty block
            vectors = np.zeros((0, self.encoder.dim), np.float32)
        with self.metrics.time("queries_cached", int(found.sum())):
            pass
        return block.append_column("vector", to_arrow(vectors))


class LookupQueryVectors:
    """Precomputed query vectors, joined to the query records by query id."""

    def __init__(self, url: str, metrics=None):
        from ..io.readers import iter_vectors
        ids, chunks, self.locations = [], [], {}
        for chunk_ids, vectors, locations in iter_vectors(url):
            ids.extend(chunk_ids)
            chunks.append(vectors)
            self.locations.update(zip(chunk_ids, locations))
        self.vectors = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
        self.row_of = {qid: i for i, qid in enumerate(ids)}
        self.url = url
        self.metrics = MetricsClient(metrics)

    def __call__(self, block: pa.Table) -> pa.Table:
        with self.metrics.time("encode_queries", block.num_rows):
            qids = block.column("query_id").to_pylist()
            locations = block.column("location").to_pylist()
            rows = []
            for qid, loc in zip(qids, locations):
                row = self.row_of.get(qid)
                if row is None:
                    raise InputError(loc, f"query {qid!r} has no vector in {self.url}")
                rows.append(row)
            vectors = self.vectors[np.asarray(rows, dtype=np.int64)]
        return block.append_column("vector", to_arrow(vectors))
