"""The mining stage: a Ray Data callable class composing fan-out search, merge and the pure mining functions."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import pyarrow as pa

from .config import MineConfig
from .errors import InputError
from .index.answers import MergedAnswer
from .index.local import search_block
from .metrics import MetricsClient
from .sink.schema import MINED_SCHEMA
from .vectors import from_arrow


class MineQueries:
    """Encoded query records -> mined rows (MINED_SCHEMA). Quarantines what lenient mode lets through.

    With ``query_cache_url`` the records come without vectors: the miner looks them up in the query-vector cache,
    which holds every query of the run (filled by the corpus encoders' prefetch, or by an earlier pass: see
    run.paths.RunPaths.query_cache_complete), so the query pass starts no encoder actors; a query missing from the
    cache is encoded here, with a model loaded on first need."""

    def __init__(self, cfg: MineConfig, shard_handles: list, n_total: int, model_version: str,
                 quarantine_url: str, metrics=None, query_cache_url: Optional[str] = None):
        from .index.actor import ShardedIndex
        self.cfg = cfg
        self.index = ShardedIndex(shard_handles, cfg.index.prune_rescoring)
        self.n_total = n_total
        self.model = cfg.encoder.model or "all-MiniLM-L6-v2"
        self.model_version = model_version
        self.config_hash = cfg.config_hash()
        self.quarantine_url = quarantine_url
        self.metrics = MetricsClient(metrics)
        self.query_vectors = None
        if query_cache_url:
            from .encode.query_vectors import EncodeQueries
            self.query_vectors = EncodeQueries(cfg.encoder, 1, metrics, query_cache_url, lazy=True)
        self.cross_encoder = None
        if cfg.mining.cross_encoder.model:
            from .encode.cross_encoder import CrossEncoderScorer, document_texts
            self.cross_encoder = CrossEncoderScorer(cfg.mining.cross_encoder, document_texts(cfg))

    def __call__(self, block: pa.Table) -> pa.Table:
        from .mining import mine_batch
        if self.query_vectors is not None:
            block = self.query_vectors(block)
        with self.metrics.time("search_and_mine", block.num_rows):
            query_keys, answer = self._search(block)
            kept = self._drop_unminable(block, answer)
            if kept.num_rows == 0:
                return MINED_SCHEMA.empty_table()
            if kept.num_rows < block.num_rows:  # rare (lenient runs only): search again without those queries
                block = kept
                query_keys, answer = self._search(block)
            cands, positives, random_docs = answer.candidates, answer.positives, answer.random
            cross_scores = None
            if self.cross_encoder is not None:
                queries = block.column("query").to_pylist()

                def cross_scores(mask):
                    with self.metrics.time("cross_encoder", int(mask.sum())):
                        return self.cross_encoder.scores(queries, cands.doc_ids, mask)
            mined = mine_batch(query_keys, cands, positives, self.cfg.mining, random_docs, cross_scores)
            return self._rows(block, positives, mined)

    # ---- steps ----------------------------------------------------------------------------------------------
    def _search(self, block: pa.Table) -> Tuple[np.ndarray, MergedAnswer]:
        """The block's query keys and merged answer, each query searched to its own depth
        (``index.local.search_block``)."""
        found = search_block(
            self.index, from_arrow(block.column("vector")), block.column("query_id").to_pylist(),
            block.column("positive_ids").to_pylist(), self.cfg.mining, self.n_total)
        self.metrics.count("deeper_searches", found.n_deeper)
        self.metrics.count("certificate_researches", found.n_researches)
        return found.query_keys, found.answer

    def _drop_unminable(self, block: pa.Table, answer: MergedAnswer) -> pa.Table:
        """Positives named by the qrels but absent from the corpus: an error, or (lenient) a quarantine record."""
        missing = answer.missing
        if not any(missing):
            return block
        from .io.records import Quarantine
        quarantine = Quarantine()
        keep = np.ones(block.num_rows, bool)
        qids = block.column("query_id").to_pylist()
        pos_ids = block.column("positive_ids").to_pylist()
        pos_locs = block.column("positive_locations").to_pylist()
        for i, miss in enumerate(missing):
            for pid in miss:
                loc = pos_locs[i][pos_ids[i].index(pid)]
                reason = f"positive {pid!r} of query {qids[i]!r} is not in the corpus"
                if not self.cfg.input.lenient:
                    raise InputError(loc, reason)
                quarantine.add("qrels", loc, reason, "")
            if miss and len(miss) == len(pos_ids[i]):
                keep[i] = False
                quarantine.add("query", block.column("location")[i].as_py(),
                               f"query {qids[i]!r} has no positive in the corpus; not mined", "")
        quarantine.write(self.quarantine_url)
        return block.filter(pa.array(keep))

    def _rows(self, block: pa.Table, positives, mined) -> pa.Table:
        n = block.num_rows
        positive_ids = block.column("positive_ids").to_pylist()
        positive_scores = []
        for i in range(n):
            score_of = dict(zip(positives.doc_ids[i], np.asarray(positives.scores[i]).tolist()))
            positive_scores.append([score_of.get(p, float("nan")) for p in positive_ids[i]])
        columns = {
            "query_id": block.column("query_id"),
            "query": block.column("query"),
            "positive_ids": block.column("positive_ids"),
            "positive_scores": positive_scores,
            "positive_ref": np.asarray(mined.positive_ref, np.float32),
            "negative_ids": [list(x) for x in mined.negative_doc_ids],
            "negative_scores": [np.asarray(x, np.float32) for x in mined.negative_scores],
            "negative_ranks": [np.asarray(x, np.int32) for x in mined.negative_ranks],
            "removed_ids": [list(x) for x in mined.removed_doc_ids],
            "removed_scores": [np.asarray(x, np.float32) for x in mined.removed_scores],
            "n_candidates": np.asarray(mined.n_candidates, np.int32),
            "n_removed_positive": np.asarray(mined.n_removed_positive, np.int32),
            "n_removed_same_text": np.asarray(mined.n_removed_same_text, np.int32),
            "n_removed_filter": np.asarray(mined.n_removed_filter, np.int32),
            "n_removed_min_score": np.asarray(mined.n_removed_min_score, np.int32),
            "n_removed_cross_encoder": np.asarray(mined.n_removed_cross_encoder, np.int32),
            "short": np.asarray(mined.short, bool),
            "model": [self.model] * n,
            "model_version": [self.model_version] * n,
            "config_hash": [self.config_hash] * n,
        }
        arrays = [pa.array(columns[f.name], type=f.type) if not isinstance(columns[f.name], pa.ChunkedArray)
                  else columns[f.name].cast(f.type) for f in MINED_SCHEMA]
        return pa.Table.from_arrays(arrays, schema=MINED_SCHEMA)
