"""Ray Data stages (callable classes for ``map_batches``) that add a ``vector`` column to record blocks."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa

from ..config import EncoderConfig
from ..errors import InputError
from ..metrics import MetricsClient
from ..vectors import to_arrow


def _document_texts(block: pa.Table) -> list:
    from ..io.records import document_text
    titles = block.column("title").to_pylist()
    texts = block.column("text").to_pylist()
    return [document_text(t, x) for t, x in zip(titles, texts)]


class _EncodeStage:
    """Records -> the same records plus a ``vector`` column; subclasses say which texts and which side."""
    stage = ""

    def __init__(self, cfg: EncoderConfig, torch_threads: Optional[int] = None, metrics=None):
        from .sentence_transformer import SentenceTransformerEncoder
        self.encoder = SentenceTransformerEncoder(cfg, torch_threads=torch_threads)
        self.metrics = MetricsClient(metrics)

    def encode(self, block: pa.Table) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, block: pa.Table) -> pa.Table:
        with self.metrics.time(self.stage, block.num_rows):
            vectors = self.encode(block)
        return block.append_column("vector", to_arrow(vectors))


class EncodeDocuments(_EncodeStage):
    stage = "encode_corpus"

    def encode(self, block: pa.Table) -> np.ndarray:
        return self.encoder.encode_documents(_document_texts(block))


class EncodeQueries(_EncodeStage):
    stage = "encode_queries"

    def encode(self, block: pa.Table) -> np.ndarray:
        return self.encoder.encode_queries(block.column("query").to_pylist())


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
