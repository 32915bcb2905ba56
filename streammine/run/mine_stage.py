"""The mining stage: a Ray Data callable class composing fan-out search, merge and the pure mining functions."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import pyarrow as pa

from ..config import MineConfig
from ..errors import InputError
from ..index.answers import MergedAnswer
from ..index.local import search_block
from ..io.formats import format_of
from ..io.records import Quarantine
from ..metrics import MetricsClient
from ..mining import mine_batch
from ..mining.supplied import Supplied
from ..sink.schema import MINED_SCHEMA
from ..vectors import from_arrow


class MineQueries:
    """Encoded query records -> mined rows (MINED_SCHEMA). Quarantines what lenient mode lets through.

    With ``query_cache_url`` the records come without vectors: the miner looks them up in the query-vector cache,
    which holds every query of the run (filled by the corpus encoders' prefetch, or by an earlier pass: see
    run.paths.RunPaths.query_cache_complete), so the query pass starts no encoder actors; a query missing from the
    cache is encoded here, with a model loaded on first need.

    ``index``: the shard actors' handles (a miner actor of the Ray path), or an index with ``answer`` and
    ``vectors_of`` (``index.local.LocalShardedIndex``: the in-process path). ``encoder``: a loaded encoder for
    the queries the cache lacks (else one is loaded on first need, with ``query_torch_threads``)."""

    def __init__(self, cfg: MineConfig, index, n_total: int, model_version: str,
                 quarantine_url: str, metrics=None, query_cache_url: Optional[str] = None, encoder=None,
                 query_torch_threads: Optional[int] = 1):
        self.cfg = cfg
        if isinstance(index, list):
            from ..index.actor import ShardedIndex
            index = ShardedIndex(index, cfg.index.prune_rescoring)
        self.index = index
        self.n_total = n_total
        self.model = cfg.encoder.model or "all-MiniLM-L6-v2"
        self.model_version = model_version
        self.config_hash = cfg.config_hash()
        self.quarantine_url = quarantine_url
        self.metrics = MetricsClient(metrics)
        self.query_vectors = None
        if query_cache_url:
            from ..encode.query_vectors import EncodeQueries
            self.query_vectors = EncodeQueries(cfg.encoder, query_torch_threads, metrics, query_cache_url, lazy=True,
                                               encoder=encoder)
        self.cross_encoder = None
        if cfg.mining.cross_encoder.model:
            from ..encode.cross_encoder import CrossEncoderScorer, document_texts
            self.cross_encoder = CrossEncoderScorer(cfg.mining.cross_encoder, document_texts(cfg))

    def __call__(self, block: pa.Table) -> pa.Table:
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

                def cross_scores(doc_ids, mask, stage):
                    # the pool is the denoising work; positives and random negatives are scored as teacher scores
                    name = "cross_encoder" if stage == "pool" else "cross_encoder_teacher"
                    with self.metrics.time(name, int(mask.sum())):
                        return self.cross_encoder.scores(queries, doc_ids, mask)
            vectors_of = self.index.vectors_of if self.cfg.mining.near_duplicate.enabled else None
            mined = mine_batch(query_keys, cands, positives, self.cfg.mining, random_docs, cross_scores,
                               vectors_of=vectors_of, supplied=self._supplied(block))
            return self._rows(block, positives, mined)

    # ---- steps ----------------------------------------------------------------------------------------------
    def _search(self, block: pa.Table) -> Tuple[np.ndarray, MergedAnswer]:
        """The block's query keys and merged answer, each query searched to its own depth
        (``index.local.search_block``)."""
        found = search_block(
            self.index, from_arrow(block.column("vector")), block.column("query_id").to_pylist(),
            block.column("positive_ids").to_pylist(), self.cfg.mining, self.n_total, self._excluded_ids(block))
        self.metrics.count("deeper_searches", found.n_deeper)
        self.metrics.count("certificate_researches", found.n_researches)
        return found.query_keys, found.answer

    def _drop_unminable(self, block: pa.Table, answer: MergedAnswer) -> pa.Table:
        """Positives named by the qrels but absent from the corpus: an error, or (lenient) a quarantine record."""
        missing = answer.missing
        if not any(missing):
            return block
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

    def _labelled(self, block: pa.Table) -> Tuple[list, list]:
        """Per query, the supplied negatives the mining must look up (none with ``ignore``) and the documents
        judged below the positive grade."""
        names, n = block.column_names, block.num_rows
        sup = [x or [] for x in block.column("supplied_negative_ids").to_pylist()] \
            if "supplied_negative_ids" in names and self.cfg.mining.supplied_negatives != "ignore" else [[]] * n
        below = [x or [] for x in block.column("below_grade_ids").to_pylist()] \
            if "below_grade_ids" in names else [[]] * n
        return sup, below

    def _excluded_ids(self, block: pa.Table) -> Optional[list]:
        """Per query, the ids its labels keep out of the mined negatives (the search deepens past them), or None."""
        sup, below = self._labelled(block)
        return [a + b for a, b in zip(sup, below)] if any(sup) or any(below) else None

    def _supplied(self, block: pa.Table):
        """The block's supplied negatives and below-grade documents, looked up in the index by id (exact scores,
        ordinals: mining/supplied.py), or None when it has none. A supplied negative absent from the corpus is an
        error, or (lenient) a quarantine record, as a missing positive (not with ``ignore``: they are then ordinary
        documents, not looked up); an absent below-grade document cannot be picked anyway."""
        labels_kind = format_of(self.cfg.input).labels_kind
        names, n = block.column_names, block.num_rows
        sup, below = self._labelled(block)
        locs = [x or [] for x in block.column("supplied_negative_locations").to_pylist()] \
            if "supplied_negative_locations" in names else [[]] * n
        if not any(sup) and not any(below):
            return None
        found = self.index.answer(from_arrow(block.column("vector")), 1, [a + b for a, b in zip(sup, below)]).positives
        out = Supplied(self.cfg.mining.supplied_negatives, [], [], [], [])
        quarantine, qids = Quarantine(), block.column("query_id").to_pylist()
        for i in range(n):
            where = {d: (o, sc) for d, o, sc in zip(found.doc_ids[i], np.asarray(found.ordinals[i]).tolist(),
                                                     np.asarray(found.scores[i]).tolist())}
            ids = []
            for d, loc in zip(sup[i], locs[i]):
                if d in where:
                    ids.append(d)
                    continue
                reason = f"supplied negative {d!r} of query {qids[i]!r} is not in the corpus"
                if not self.cfg.input.lenient:
                    raise InputError(loc, reason)
                quarantine.add(labels_kind, loc, reason, "")
            out.doc_ids.append(ids)
            out.ordinals.append(np.array([where[d][0] for d in ids], np.int64))
            out.scores.append(np.array([where[d][1] for d in ids], np.float32))
            out.below_ordinals.append(np.array([where[d][0] for d in below[i] if d in where], np.int64))
        quarantine.write(self.quarantine_url)
        return out

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
            "positive_ce_scores": aligned_scores(positives.doc_ids, mined.positive_ce_scores, positive_ids),
            "negative_ce_scores": [None] * n if mined.negative_ce_scores is None else
            [np.asarray(x, np.float32) for x in mined.negative_ce_scores],
            "n_candidates": np.asarray(mined.n_candidates, np.int32),
            "n_removed_positive": np.asarray(mined.n_removed_positive, np.int32),
            "n_removed_same_text": np.asarray(mined.n_removed_same_text, np.int32),
            "n_removed_filter": np.asarray(mined.n_removed_filter, np.int32),
            "n_removed_min_score": np.asarray(mined.n_removed_min_score, np.int32),
            "n_removed_cross_encoder": np.asarray(mined.n_removed_cross_encoder, np.int32),
            "n_removed_near_duplicate_of_positive": _counts(mined.n_removed_near_duplicate_of_positive, n),
            "n_removed_near_duplicate_negative": _counts(mined.n_removed_near_duplicate_negative, n),
            "short": np.asarray(mined.short, bool),
            "positive_grades": _optional(block, "positive_grades"),
            "supplied_negative_ids": _optional(block, "supplied_negative_ids"),
            "n_supplied_negatives": _counts(mined.n_supplied_negatives, n),
            "n_below_grade": [len(x or []) for x in _optional(block, "below_grade_ids")],
            "prompt": _optional(block, "prompt"),
            "model": [self.model] * n,
            "model_version": [self.model_version] * n,
            "config_hash": [self.config_hash] * n,
        }
        arrays = [pa.array(columns[f.name], type=f.type) if not isinstance(columns[f.name], pa.ChunkedArray)
                  else columns[f.name].cast(f.type) for f in MINED_SCHEMA]
        return pa.Table.from_arrays(arrays, schema=MINED_SCHEMA)


def _optional(block: pa.Table, name: str) -> list:
    """An additive query column (io/records.py QUERY_SCHEMA), or nulls when the block lacks it."""
    return block.column(name).to_pylist() if name in block.column_names else [None] * block.num_rows


def _counts(values, n: int) -> np.ndarray:
    """(n,) int32 per-query counts; a MinedBatch built without them (zero-length default) reads as zeros."""
    values = np.asarray(values, np.int64)
    return values.astype(np.int32) if len(values) == n else np.zeros(n, np.int32)


def aligned_scores(found_ids: list, found_scores: Optional[list], wanted_ids: list) -> list:
    """Per query, the scores of ``wanted_ids`` (the row's positive_ids) looked up among the ids the index found
    (NaN for one it did not); all None when there are no scores (no cross-encoder)."""
    if found_scores is None:
        return [None] * len(wanted_ids)
    out = []
    for ids, scores, wanted in zip(found_ids, found_scores, wanted_ids):
        score_of = dict(zip(ids, np.asarray(scores, np.float64).tolist()))
        out.append([score_of.get(p, float("nan")) for p in wanted])
    return out
