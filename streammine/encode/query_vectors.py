"""The query-vector path, in one place: where the query pass gets its vectors, and the stages that give them.

Four sources (``QueryVectorSource``), chosen once per pass by ``choose_source``:

    precomputed      the user's query vectors, joined by query id (``LookupQueryVectors``)
    prefetched       the corpus encoders encoded every query into the query-vector cache after the documents
                     (``QueryPrefetcher``), so the miners look them up: no encoder actor starts for the pass
    cache            an earlier pass over the same input marked the cache complete: the miners look them up
    encoder-actors   the pass's own encoder actors (``EncodeQueries``), which read the cache first

Queries reach the corpus encoders as extra encoder-input rows flagged ``QUERY_ROW`` (the read side appends them
after the corpus: ``io.run_input.encoder_input_blocks``); the document encoder hands every block to its
``QueryPrefetcher``, which takes those rows out and encodes them into the cache, so the encoder itself only ever
sees documents. The cache itself (content-addressed Parquet files) is ``query_cache.QueryVectorCache``.
"""
from __future__ import annotations

import enum
import time
from contextlib import nullcontext
from typing import Optional, Tuple

import numpy as np
import pyarrow as pa
import ray

from ..config import EncoderConfig, MineConfig
from ..errors import InputError
from ..io import fs
from ..io.formats import input_format
from ..metrics import MetricsClient
from ..vectors import to_arrow
from .plan import LOOKUP_CPUS, EncoderPlan
from .pool import encoder_map_args
from .query_cache import QueryVectorCache, holds_every_query, query_keys
from .document_stage import EncodeStage

# marks the query rows riding with the corpus through the document encoders (io.run_input.encoder_input_blocks)
QUERY_ROW = "query_row"


class QueryVectorSource(str, enum.Enum):
    """Where a query pass gets its vectors; the value is what the run summary's ``query_vectors`` says."""
    PRECOMPUTED = "precomputed"
    PREFETCHED = "prefetched"
    CACHE = "cache"
    ENCODER_ACTORS = "encoder-actors"

    @property
    def miners_look_up(self) -> bool:
        """The cache holds every query: the miners read it, and no stage adds vectors before them."""
        return self in (QueryVectorSource.PREFETCHED, QueryVectorSource.CACHE)


def choose_source(cfg: MineConfig, complete_mark: Optional[str], prefetched: bool,
                  run_query_keys: Optional[np.ndarray] = None, cache_url: Optional[str] = None) -> QueryVectorSource:
    """The source of a pass: the user's vectors; else the cache when it holds every query (``prefetched``: this
    run's corpus encoders just filled it, ``complete_mark`` exists: an earlier pass over the same input did, or
    the cache at ``cache_url`` holds each of ``run_query_keys``, the run's query texts: an earlier pass over other
    files with the same queries did); else encoder actors. ``complete_mark``: ``RunPaths.query_cache_complete``
    (None: no mark can exist)."""
    if input_format(cfg).precomputed:
        return QueryVectorSource.PRECOMPUTED
    if complete_mark and prefetched:
        return QueryVectorSource.PREFETCHED
    if complete_mark and fs.exists(complete_mark):
        return QueryVectorSource.CACHE
    if complete_mark and cache_url and run_query_keys is not None and \
            holds_every_query(cache_url, run_query_keys):
        return QueryVectorSource.CACHE
    return QueryVectorSource.ENCODER_ACTORS


def encoding_source(cfg: MineConfig) -> QueryVectorSource:
    """The source of a pass that does not look at the cache's marks: precomputed vectors or encoder actors."""
    return choose_source(cfg, None, False)


def mark_complete(complete_mark: Optional[str], output: str) -> None:
    """After a pass: every query the input yields now has a vector in the cache."""
    if complete_mark:
        fs.write_json_atomic(complete_mark, {"completed_at": time.time(), "output": output})


def add_query_vectors(ds, cfg: MineConfig, source: QueryVectorSource, query_cache: Optional[str], metrics,
                      plan: EncoderPlan) -> Tuple[object, Optional[str]]:
    """The query records ``ds`` with their vectors added as ``source`` says. Returns the dataset and the cache the
    miners must look vectors up in (None: the records carry their vectors)."""
    if source.miners_look_up:
        return ds, query_cache
    if source is QueryVectorSource.PRECOMPUTED:
        return ds.map_batches(LookupQueryVectors, batch_size=cfg.run.query_batch_size, batch_format="pyarrow",
                              fn_constructor_args=(cfg.encoder.query_vectors, metrics),
                              compute=ray.data.ActorPoolStrategy(size=1), num_cpus=LOOKUP_CPUS), None
    return ds.map_batches(EncodeQueries, batch_size=cfg.run.query_batch_size,
                          **encoder_map_args(cfg, plan, metrics, query_cache)), None


class QueryPrefetcher:
    """Given to a document encoder: takes the query rows out of its input blocks and encodes them, with that
    encoder's model, into the query-vector cache (``cache_url``; None: the rows are dropped unencoded)."""

    def __init__(self, cache_url: Optional[str]):
        self.cache_url = cache_url
        self._cache: Optional[QueryVectorCache] = None

    def take_queries(self, block: pa.Table, encode_queries, metrics: MetricsClient) -> pa.Table:
        """``block`` without its query rows and without the ``QUERY_ROW`` flag; the query rows' texts are encoded
        with ``encode_queries(texts) -> vectors`` (called only when some are not cached) into the cache."""
        if QUERY_ROW not in block.column_names:
            return block
        is_query = block.column(QUERY_ROW).to_numpy(zero_copy_only=False)
        if is_query.any():  # only the last blocks of a run hold queries: the others are not copied
            self._prefetch(block.filter(pa.array(is_query)).column("text").to_pylist(), encode_queries, metrics)
            block = block.filter(pa.array(~is_query))
        return block.drop_columns([QUERY_ROW])

    def _prefetch(self, texts: list, encode_queries, metrics: MetricsClient) -> None:
        if not self.cache_url:
            return
        if self._cache is None:
            self._cache = QueryVectorCache(self.cache_url).load()
        text_of = dict(zip(query_keys(texts).tolist(), texts))  # a query text repeated in the run: encoded once
        # its own stage name: the query pass's encode_queries + queries_cached rows count the queries read
        self._cache.vectors_for(np.fromiter(text_of, np.uint64, len(text_of)), list(text_of.values()),
                                encode_queries,
                                lambda n: metrics.time("prefetch_queries", n) if n else nullcontext())


class EncodeQueries(EncodeStage):
    """Queries -> vectors; with ``cache_url``, queries encoded before by the same model are looked up instead."""
    stage = "encode_queries"

    def __init__(self, cfg: EncoderConfig, torch_threads: Optional[int] = None, metrics=None,
                 cache_url: Optional[str] = None, lazy: Optional[bool] = None, encoder=None):
        self.cache = QueryVectorCache(cache_url).load() if cache_url else None
        if lazy is None:  # the model is loaded up front unless the cache may answer every query
            lazy = self.cache is not None and len(self.cache.keys) > 0
        super().__init__(cfg, torch_threads, metrics, lazy=lazy, encoder=encoder)

    def encode(self, block: pa.Table) -> np.ndarray:
        return self.encoder.encode_queries(block.column("query").to_pylist())

    def __call__(self, block: pa.Table) -> pa.Table:
        if self.cache is None:
            return super().__call__(block)
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
