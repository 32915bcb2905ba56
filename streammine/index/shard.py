"""One index shard: a faiss index over part of the corpus, with exact rescoring and id/ordinal lookups.

Rows of a built shard are the shard's documents sorted by corpus ordinal ("local rows" ``0..n-1``), so nothing
depends on the order in which documents arrived. faiss only *proposes* candidates; every score returned is
recomputed exactly from the stored float32 vectors by ``exact_scores``, which makes scores a pure function of the
(query, document) vector pair: the same bits for any batch size, shard count or index kind. An approximate or
compressed index can change which documents are found, never their scores or the order of what is found.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa

from ..config import IndexConfig
from ..errors import ConfigError, InputError
from ..keys import keys64
from ..mining.tree_sum import tree_sum
from ..mining.types import CandidateBatch, PositiveBatch
from .answers import Proposal, ShardAnswer, ShardProposal
from .merge import pad_columns, rank_order
from .vector_rows import FileRows, MemoryRows, block_rows, rows_on_disk

# Working-set budget of exact rescoring (float64 products), per chunk of queries.
_RESCORE_BYTES = 32 << 20


# ---- exact scores --------------------------------------------------------------------------------------------

def exact_scores(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Inner products of ``queries`` (B, d) float32 with ``vectors`` (B, m, d) float32, as (B, m) float64.

    float32 x float32 products are exact in float64 (24 + 24 significant bits < 53); the sum is ``tree_sum``.
    """
    return tree_sum(np.multiply(vectors, queries.astype(np.float64)[:, None, :]), overwrite=True)


def uncertified(faiss_scores: np.ndarray, asked: int, kth_exact: np.ndarray, err: np.ndarray,
                floor: Optional[np.ndarray] = None) -> np.ndarray:
    """(B,) bool: where a document faiss did not return could still belong to the shard's exact top k.

    ``faiss_scores`` (B, K) are the faiss scores of what faiss returned for ``asked`` candidates (-inf: none);
    ``kth_exact`` (B,) the k-th exact score among the rescored ones (-inf: fewer than k); ``err`` (B,) the faiss
    error bound for the query. A document faiss did not return scores at most the lowest returned faiss score f
    (faiss keeps its best ``asked``), so its exact score is at most f + err: it cannot reach the top k (ties
    included, as ties are broken by ordinal) when f + err < kth_exact, nor pass a pruning ``floor`` when
    f < floor. A query for which faiss returned fewer than ``asked`` has nothing more to return.
    """
    f = np.asarray(faiss_scores, np.float32)
    found = np.isfinite(f)
    full = found.sum(axis=1) >= asked
    last = np.where(found, f, np.float32(np.inf)).min(axis=1, initial=np.inf).astype(np.float64)
    # err is widened by a relative 2^-20 so that the float64 sum's own rounding can only make this stricter
    threatened = last + np.asarray(err, np.float64) * (1 + 2.0 ** -20) >= np.asarray(kth_exact, np.float64)
    if floor is not None:
        threatened &= last >= np.asarray(floor, np.float32)
    return full & threatened & (asked > 0)


# ---- inputs and outputs --------------------------------------------------------------------------------------

@dataclass
class ShardDocs:
    """A columnar batch of corpus documents for one shard."""
    doc_ids: np.ndarray    # (n,) object: str
    ordinals: np.ndarray   # (n,) int64: position in the corpus
    text_keys: np.ndarray  # (n,) uint64: keys.text_key of the normalized text
    vectors: np.ndarray    # (n, d) float32
    locations: np.ndarray  # (n,) object: "<file>:<line>" / "<file>:row <n>", for error messages

    def __post_init__(self):
        self.doc_ids = np.asarray(self.doc_ids, dtype=object).reshape(-1)
        self.ordinals = np.asarray(self.ordinals, dtype=np.int64).reshape(-1)
        self.text_keys = np.asarray(self.text_keys, dtype=np.uint64).reshape(-1)
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        self.locations = np.asarray(self.locations, dtype=object).reshape(-1)
        n = len(self.ordinals)
        if self.vectors.ndim != 2 or len(self.vectors) != n:
            raise ValueError(f"ShardDocs: vectors must be (n, d) with n={n}, got shape {self.vectors.shape}")
        for name in ("doc_ids", "text_keys", "locations"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ShardDocs: {name} has {len(getattr(self, name))} rows, ordinals {n}")

    def __len__(self) -> int:
        return len(self.ordinals)

    def take(self, idx: np.ndarray) -> "ShardDocs":
        return ShardDocs(self.doc_ids[idx], self.ordinals[idx], self.text_keys[idx], self.vectors[idx],
                         self.locations[idx])


@dataclass
class _DocColumns:
    """A shard's documents without their vectors: what the first read of ``IndexShard.build_from`` keeps. Ids
    and locations are Arrow string columns (a few bytes per document, no Python object each)."""
    ordinals: np.ndarray   # (n,) int64
    text_keys: np.ndarray  # (n,) uint64
    id_keys: np.ndarray    # (n,) uint64: keys64 of the ids
    doc_ids: pa.Array      # (n,) large_string
    locations: pa.Array    # (n,) large_string
    finite: np.ndarray     # (n,) bool: the vector is finite

    @classmethod
    def read(cls, parts, dim: int, shard_id: int) -> "_DocColumns":
        cols: dict = {f: [] for f in ("ordinals", "text_keys", "id_keys", "doc_ids", "locations", "finite")}
        step = block_rows(dim)
        for docs in parts:
            if not len(docs):
                continue
            if docs.vectors.shape[1] != dim:
                raise ValueError(f"shard {shard_id}: vectors have dimension {docs.vectors.shape[1]}, the index {dim}")
            cols["ordinals"].append(docs.ordinals)
            cols["text_keys"].append(docs.text_keys)
            cols["id_keys"].append(keys64(docs.doc_ids))
            cols["doc_ids"].append(pa.array(docs.doc_ids.tolist(), pa.large_string()))
            cols["locations"].append(pa.array([str(x) for x in docs.locations], pa.large_string()))
            cols["finite"].append(np.concatenate([np.isfinite(docs.vectors[a:a + step]).all(axis=1)
                                                  for a in range(0, len(docs), step)]))
        if not cols["ordinals"]:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.uint64),
                       pa.array([], pa.large_string()), pa.array([], pa.large_string()), np.zeros(0, bool))
        return cls(np.concatenate(cols["ordinals"]), np.concatenate(cols["text_keys"]),
                   np.concatenate(cols["id_keys"]), pa.concat_arrays(cols["doc_ids"]),
                   pa.concat_arrays(cols["locations"]), np.concatenate(cols["finite"]))

    def __len__(self) -> int:
        return len(self.ordinals)

    def take(self, idx: np.ndarray) -> "_DocColumns":
        at = pa.array(np.asarray(idx, np.int64))
        return _DocColumns(self.ordinals[idx], self.text_keys[idx], self.id_keys[idx], self.doc_ids.take(at),
                           self.locations.take(at), self.finite[idx])

    def id(self, r) -> str:
        return self.doc_ids[int(r)].as_py()

    def location(self, r) -> str:
        return self.locations[int(r)].as_py()


def assemble_vectors(parts: list, m: int, dim: int) -> np.ndarray:
    """(m, dim) float32 from the shards' ``vectors_of`` answers; zeros where no shard holds the ordinal."""
    out = np.zeros((m, dim), np.float32)
    for positions, vectors in parts:
        out[np.asarray(positions, np.int64)] = vectors
    return out


def _widen(a: np.ndarray, width: int, fill) -> np.ndarray:
    """``a`` (B, K) padded with ``fill`` to ``width`` columns (a copy)."""
    out = np.full((a.shape[0], width), fill, a.dtype)
    out[:, :a.shape[1]] = a
    return out


# ---- the shard -----------------------------------------------------------------------------------------------

class IndexShard:
    """Buffer documents with ``add``, then ``build`` once; afterwards search and look up (read-only)."""

    def __init__(self, cfg: IndexConfig, dim: int, shard_id: int = 0):
        self.cfg = cfg
        self._dim = int(dim)
        self.shard_id = shard_id
        self._parts: list = []
        self._built = False
        self.proposer = None  # the index kind's proposer (index/kinds.py); None for an empty shard
        self._shares_storage = False  # self.vectors is a view of the proposer's own copy
        self.max_norm = 0.0  # largest vector norm: scales the faiss error bound
        self.rows = MemoryRows.allocate(0, self._dim)  # the float32 rows for rescoring (vector_rows)
        self.ordinals = np.zeros(0, np.int64)
        self.text_keys = np.zeros(0, np.uint64)
        self.doc_ids = pa.array([], pa.large_string())  # local row -> id
        self._key_sorted = np.zeros(0, np.uint64)  # keys64(doc_id) sorted, for lookup_ids
        self._key_rows = np.zeros(0, np.int64)     # ... and the local row of each

    # ---- building ----------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self.ordinals)

    def add(self, docs: ShardDocs) -> None:
        if self._built:
            raise RuntimeError("IndexShard.add after build")
        if docs.vectors.shape[1] != self._dim and len(docs):
            raise ValueError(f"shard {self.shard_id}: vectors have dimension {docs.vectors.shape[1]}, "
                             f"the index {self._dim}")
        if len(docs):
            self._parts.append(docs)

    def build(self, lenient: bool = False) -> list:
        """Deduplicate, index and keep the vectors of the ``add``-ed documents (``build_from``)."""
        if self._built:
            raise RuntimeError("IndexShard.build called twice")
        parts, self._parts = self._parts, []
        return self.build_from(lambda: iter(parts), lenient)

    def build_from(self, read_docs, lenient: bool = False) -> list:
        """Build from ``read_docs()``, a fresh iterator of ``ShardDocs`` at each call, read twice: once for
        everything but the vectors (ids, keys, ordinals, and whether each vector is finite), once to write the
        kept vectors into their local rows (``vector_rows``). No pass holds the shard's vectors at once; the
        proposer then reads them block by block. Returns quarantine records (lenient) of dropped rows.

        Duplicate ids: the same id with the same text key is the same document listed twice, and only its lowest
        ordinal is kept, silently. The same id with a different text is an ``InputError`` naming both rows
        (strict, the earliest such conflict by ordinal), or (lenient) the first row is kept and each differing
        later row becomes a record. A document whose vector is not finite is an error / a record the same way.
        """
        from .kinds import make_proposer
        if self._built:
            raise RuntimeError("IndexShard.build called twice")
        meta = _DocColumns.read(read_docs(), self._dim, self.shard_id)
        by_ordinal = np.argsort(meta.ordinals, kind="stable")
        docs = meta.take(by_ordinal)
        id_keys = docs.id_keys
        keep, dropped = self._dedupe(docs, id_keys, lenient)
        keep, bad = self._check_finite(docs, keep, lenient)
        dropped += bad
        kept = np.flatnonzero(keep)
        docs, id_keys = docs.take(kept), id_keys[kept]
        if len(docs) > 1 and (docs.ordinals[1:] == docs.ordinals[:-1]).any():
            i = int(np.flatnonzero(docs.ordinals[1:] == docs.ordinals[:-1])[0])
            raise ValueError(f"shard {self.shard_id}: ordinal {docs.ordinals[i]} given to two documents "
                             f"({docs.id(i)!r} at {docs.location(i)}, {docs.id(i + 1)!r} at "
                             f"{docs.location(i + 1)}); the embedding store is inconsistent")
        n = len(docs)
        self.ordinals, self.text_keys, self.doc_ids = docs.ordinals, docs.text_keys, docs.doc_ids
        order = np.argsort(id_keys, kind="stable")
        self._key_sorted, self._key_rows = id_keys[order], order.astype(np.int64)
        local_of_arrival = np.full(len(meta), -1, np.int64)
        local_of_arrival[by_ordinal[kept]] = np.arange(n, dtype=np.int64)
        del meta, docs
        self.proposer = make_proposer(self.cfg, self._dim, n) if n else None
        self.rows, self.max_norm = self._write_rows(read_docs, local_of_arrival, n)
        if self.proposer is not None:
            self.proposer.build(self.rows)  # sequential ids: labels are local rows
            self._share_storage()
        self._built = True
        dropped.sort(key=lambda od: od[0])
        return [record for _, record in dropped]

    def _write_rows(self, read_docs, local_of_arrival: np.ndarray, n: int):
        """The kept vectors in local order, in memory or in a scratch file (``vector_rows.rows_on_disk``), and
        their largest norm (scales the proposer's error bound), taken while they pass by."""
        keeps = self.proposer is not None and bool(getattr(self.proposer, "keeps_rows", False))
        on_disk = n > 0 and rows_on_disk(self.cfg.rescore_vectors, keeps)
        rows = FileRows.allocate(n, self._dim, self.cfg.scratch_dir) if on_disk else MemoryRows.allocate(n, self._dim)
        at, top = 0, 0.0
        for part in read_docs():
            dest = local_of_arrival[at:at + len(part)]
            at += len(part)
            hit = np.flatnonzero(dest >= 0)
            if len(hit):
                kept = part.vectors[hit]
                rows.write(dest[hit], kept)
                top = max(top, float(np.max(np.einsum("ij,ij->i", kept, kept, dtype=np.float64))))
        if at != len(local_of_arrival):
            raise RuntimeError(f"shard {self.shard_id}: the documents changed between the two reads "
                               f"({len(local_of_arrival)} rows, then {at})")
        rows.seal()
        return rows, float(np.sqrt(top))

    def _dedupe(self, docs: "_DocColumns", id_keys: np.ndarray, lenient: bool):
        n = len(docs)
        keep = np.ones(n, bool)
        if n < 2:
            return keep, []
        order = np.lexsort((np.arange(n), id_keys))  # by id key, then by ordinal (row) within a key
        sk = id_keys[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        sizes = np.diff(np.r_[starts, n])
        conflicts = []  # (later row, first row)
        for s, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            first_of: dict = {}
            for r in order[s:s + size]:  # rows in ordinal order; ids differ only on a 64-bit key collision
                f = first_of.setdefault(docs.id(r), r)
                if f != r:
                    keep[r] = False
                    if docs.text_keys[r] != docs.text_keys[f]:
                        conflicts.append((int(r), int(f)))
        conflicts.sort()
        dropped = []
        for r, f in conflicts:
            reason = f"duplicate document id {docs.id(r)!r} with a different text than at {docs.location(f)}"
            if not lenient:
                raise InputError(docs.location(r), reason)
            dropped.append((int(docs.ordinals[r]), {"location": docs.location(r),
                                                    "reason": reason + "; the first is kept", "kind": "corpus"}))
        return keep, dropped

    def _check_finite(self, docs: "_DocColumns", keep: np.ndarray, lenient: bool):
        dropped = []
        for r in np.flatnonzero(~docs.finite & keep):
            reason = f"the embedding of document {docs.id(r)!r} has non-finite values (NaN or inf)"
            if not lenient:
                raise InputError(docs.location(r), reason)
            keep[r] = False
            dropped.append((int(docs.ordinals[r]), {"location": docs.location(r), "reason": reason,
                                                    "kind": "corpus"}))
        return keep, dropped

    def _share_storage(self) -> None:
        """Where the proposer keeps the raw float32 vectors itself (Flat, HNSW) and the rows are in memory:
        rescore from that copy instead of a second one."""
        if self.rows.on_disk:
            return
        view = self.proposer.stored_vectors()
        if view is None or view.shape != self.rows.shape or view.dtype != np.float32:
            return
        if np.array_equal(view, self.rows.vectors):
            self.rows = MemoryRows(view)  # valid while the proposer lives (self.proposer holds it)
            self._shares_storage = True

    @property
    def vectors(self) -> np.ndarray:
        """All rows, (n, d) float32 in local order (a copy where they are on disk): for inspection."""
        return self.rows.whole()

    @property
    def index(self):
        """The object the proposer searches (a faiss index or a ``TorchFlatIndex``), or None: for inspection."""
        return None if self.proposer is None else self.proposer.index

    # ---- lookups -----------------------------------------------------------------------------------------
    def _queries(self, queries) -> np.ndarray:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self._dim:
            raise ValueError(f"queries must be (B, {self._dim}), got shape {q.shape}")
        return q

    def lookup_ids(self, ids) -> np.ndarray:
        """Local rows of document ids (-1 where this shard does not hold one)."""
        ids = np.asarray(list(ids), dtype=object).reshape(-1)
        out = np.full(len(ids), -1, np.int64)
        if len(ids) == 0 or len(self) == 0:
            return out
        keys = keys64(ids)
        lo = np.searchsorted(self._key_sorted, keys, "left")
        hi = np.searchsorted(self._key_sorted, keys, "right")
        hit = hi > lo
        cand = self._key_rows[np.minimum(lo, len(self) - 1)]
        same = hit & (self.ids_of(cand) == ids)
        out[same] = cand[same]
        for j in np.flatnonzero(hit & ~same & (hi - lo > 1)):  # 64-bit key collisions: compare the strings
            for p in range(lo[j] + 1, hi[j]):
                if self.doc_ids[int(self._key_rows[p])].as_py() == ids[j]:
                    out[j] = self._key_rows[p]
                    break
        return out

    def lookup_ordinals(self, ordinals) -> np.ndarray:
        """Local rows of corpus ordinals (any shape; -1 where this shard does not hold one)."""
        ords = np.asarray(ordinals, dtype=np.int64)
        if len(self) == 0:
            return np.full(ords.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(self.ordinals, ords), len(self) - 1)
        return np.where((self.ordinals[pos] == ords) & (ords >= 0), pos, -1).astype(np.int64)

    def vectors_of(self, ordinals) -> tuple:
        """The stored float32 vectors of the corpus ``ordinals`` this shard holds: ``(positions, vectors)``, the
        positions (into ``ordinals``) it holds and their (j, d) vectors (``assemble_vectors`` joins the shards')."""
        rows = self.lookup_ordinals(np.asarray(ordinals, np.int64).reshape(-1))
        held = np.flatnonzero(rows >= 0)
        return held.astype(np.int64), np.asarray(self.rows.take(rows[held]), np.float32).reshape(-1, self._dim)

    def ids_of(self, rows: np.ndarray) -> np.ndarray:
        """The ids (object array of str) of local ``rows`` (all valid)."""
        rows = np.asarray(rows, np.int64)
        return self.doc_ids.take(pa.array(rows.reshape(-1))).to_numpy(zero_copy_only=False).reshape(rows.shape)

    def score_rows(self, queries, rows) -> np.ndarray:
        """Exact scores (B, m) float32 of ``queries`` (B, d) against local ``rows`` (B, m); -inf where row is -1."""
        q = self._queries(queries)
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 2 or rows.shape[0] != q.shape[0]:
            raise ValueError(f"rows must be (B={q.shape[0]}, m), got shape {rows.shape}")
        out = np.full(rows.shape, -np.inf, np.float32)
        b, m = rows.shape
        if b == 0 or m == 0 or len(self) == 0:
            return out
        # only the (query, row) pairs that are there: after a pruning floor most of a shard's candidates are not
        query_of, column = np.nonzero(rows >= 0)
        doc_rows = rows[query_of, column]
        step = max(1, _RESCORE_BYTES // (self._dim * 8))
        for a in range(0, len(doc_rows), step):
            pairs = slice(a, a + step)
            s = exact_scores(q[query_of[pairs]], self.rows.take(doc_rows[pairs])[:, None, :])[:, 0]
            out[query_of[pairs], column[pairs]] = s.astype(np.float32)
        return out

    def gather(self, rows):
        """``(ordinals, text_keys, doc_ids)`` of local ``rows`` (any shape), padded (-1, 0, "") where row is -1."""
        rows = np.asarray(rows, dtype=np.int64)
        valid = rows >= 0
        if len(self) == 0:
            return (np.full(rows.shape, -1, np.int64), np.zeros(rows.shape, np.uint64),
                    np.full(rows.shape, "", object))
        safe = np.where(valid, rows, 0)
        ordinals = np.where(valid, self.ordinals[safe], -1)
        text_keys = np.where(valid, self.text_keys[safe], np.uint64(0)).astype(np.uint64)
        doc_ids = self.ids_of(safe)
        doc_ids[~valid] = ""
        return ordinals, text_keys, doc_ids

    def batch_of(self, rows, scores) -> CandidateBatch:
        ordinals, text_keys, doc_ids = self.gather(rows)
        return CandidateBatch(ordinals, np.asarray(scores, np.float32), text_keys, doc_ids)

    # ---- search ------------------------------------------------------------------------------------------
    def search(self, queries, k: int, proposal: Optional[Proposal] = None,
               floor: Optional[np.ndarray] = None) -> CandidateBatch:
        """The top k by exact score (desc), ties by ordinal (asc), padded to k columns.

        faiss is asked for ``k + oversample`` candidates (at most the shard size), so that exact rescoring can
        reorder documents whose approximate scores put them just outside the top k. With a ``floor`` (B,) from
        ``merge.rescore_floor``, only the candidates whose faiss score reaches it are rescored: the others cannot
        be in the global top k, so the merged result is the same (see ``propose``).

        Certified: where the index has an error bound (``faiss_error_bound``), a query whose unreturned documents
        could still reach its exact top k (``uncertified``) is searched again with twice the depth, until
        certified or the shard is exhausted. With Flat shards the result is then the exact top k for any data
        (clusters of near-duplicates larger than the oversample included) and any batch size; with IVF-Flat and
        HNSW, the exact top k of the documents the index can return.
        """
        return self._search(self._queries(queries), k, proposal, floor)[0]

    def _search(self, q: np.ndarray, k: int, proposal: Optional[Proposal] = None,
                floor: Optional[np.ndarray] = None) -> tuple:
        """``search``'s batch, and how many queries it searched again to certify it."""
        b, k = q.shape[0], int(k)
        if k <= 0 or b == 0 or len(self) == 0:
            return CandidateBatch.empty(b, max(k, 0)), 0
        rows, approx = proposal if proposal is not None else self._faiss_candidates(q, k)
        floor = None if floor is None else np.asarray(floor, np.float32)
        ranked_rows, scores = self._rescore(q, rows, approx, floor)
        bound, researches = self.faiss_error_bound, 0
        if bound is not None:
            err = bound * np.linalg.norm(q.astype(np.float64), axis=1)
            asked = rows.shape[1]
            while True:
                kth = scores[:, k - 1].astype(np.float64) if scores.shape[1] >= k else np.full(b, -np.inf)
                redo = np.flatnonzero(uncertified(approx, asked, kth, err, floor))
                if len(redo) == 0 or asked >= len(self):
                    break
                asked = min(2 * asked, len(self))
                researches += len(redo)
                r2, a2 = self._faiss_candidates(q[redo], k, depth=asked)
                rr, ss = self._rescore(q[redo], r2, a2, None if floor is None else floor[redo])
                width = max(ranked_rows.shape[1], rr.shape[1])
                rows, approx = _widen(rows, width, -1), _widen(approx, width, -np.inf)
                ranked_rows, scores = _widen(ranked_rows, width, -1), _widen(scores, width, -np.inf)
                rows[redo], approx[redo] = _widen(r2, width, -1), _widen(a2, width, -np.inf)
                ranked_rows[redo], scores[redo] = _widen(rr, width, -1), _widen(ss, width, -np.inf)
        return pad_columns(self.batch_of(ranked_rows[:, :k], scores[:, :k]), k), researches

    def _rescore(self, q: np.ndarray, rows: np.ndarray, approx: np.ndarray, floor: Optional[np.ndarray]):
        """faiss' candidates rescored exactly (those reaching ``floor``), ranked by (score desc, ordinal asc)."""
        if floor is not None:
            rows = np.where(approx >= floor[:, None], rows, -1)
        scores = self.score_rows(q, rows)
        order = rank_order(np.where(rows >= 0, rows, -1), scores)  # local rows are in ordinal order
        rows = np.take_along_axis(rows, order, 1)
        scores = np.take_along_axis(scores, order, 1)
        dup = np.zeros(rows.shape, bool)  # an index should not return a row twice; never pass one on if it does
        dup[:, 1:] = (rows[:, 1:] == rows[:, :-1]) & (rows[:, 1:] >= 0)
        if dup.any():
            rows[dup], scores[dup] = -1, -np.inf
            order = rank_order(rows, scores)
            rows, scores = np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)
        return rows, scores

    def _faiss_candidates(self, q: np.ndarray, k: int, depth: Optional[int] = None) -> Proposal:
        """faiss' ``k + oversample`` (or ``depth``) candidates: local rows (-1: none) and faiss' own scores
        (-inf: none)."""
        kk = min(k + max(0, int(self.cfg.oversample)) if depth is None else int(depth), len(self))
        max_k = self.proposer.max_k
        if max_k is not None and kk > max_k:
            raise ConfigError(f"this index returns at most {max_k} candidates per query (a GPU index), {kk} were "
                              "asked for; lower mining.sampler.range_max or set index.use_gpu=false")
        rows, approx = self.proposer.propose(q, kk)  # unsorted from some kinds: callers rank after rescoring
        rows = np.asarray(rows, np.int64)
        bad = (rows < 0) | (rows >= len(self))
        rows[bad] = -1
        return Proposal(rows, np.where(bad, -np.inf, approx).astype(np.float32))

    @property
    def faiss_error_bound(self) -> Optional[float]:
        """A bound on |faiss score - exact score| per unit of query norm, or None where there is none.

        The proposer states it (``kinds``): uncompressed float32 CPU indexes (Flat, IVF-Flat, HNSW) give
        ``kinds.float32_bound``; PQ codes and GPU kernels (which may use reduced precision) give none, so their
        candidates are all rescored; torch-flat states the bound of its precision.
        """
        return None if self.proposer is None else self.proposer.error_bound(self.max_norm)

    def propose(self, queries, k: int) -> ShardProposal:
        """Round one of a pruned search: faiss' candidates and their faiss scores, and the error bound.

        The caller gathers every shard's faiss scores, takes per query the k-th largest (tau) and sends back
        ``floor = tau - 2·bound·|q|``: a document in the exact global top k scores exact >= s_k (the k-th exact
        score), so its faiss score is >= s_k - e, while tau <= s_k + e; hence faiss >= tau - 2e. Rescoring only
        those candidates gives the same top k as rescoring all, with about k rescored instead of shards·(k+o).
        """
        q = self._queries(queries)
        if int(k) <= 0 or q.shape[0] == 0 or len(self) == 0:
            return ShardProposal(Proposal(np.zeros((q.shape[0], 0), np.int64), np.zeros((q.shape[0], 0), np.float32)),
                                 None)
        return ShardProposal(self._faiss_candidates(q, int(k)), self.faiss_error_bound)

    def answer(self, queries, k: int, positive_ids: list, random_ordinals=None,
               proposal: Optional[Proposal] = None, floor: Optional[np.ndarray] = None) -> ShardAnswer:
        """Everything the miner needs from this shard for one query batch, in one call.

        ``positive_ids``: per query, the ids of its known positives; ``random_ordinals``: (B, R) corpus ordinals
        drawn for random negatives, or None; ``proposal``/``floor``: round two of a pruned search (``propose``).
        See ``ShardAnswer``.
        """
        q = self._queries(queries)
        b = q.shape[0]
        positive_ids = [list(p or []) for p in positive_ids]
        if len(positive_ids) != b:
            raise ValueError(f"positive_ids has {len(positive_ids)} entries for {b} queries")
        candidates, researches = self._search(q, k, proposal, floor)

        flat = [p for ps in positive_ids for p in ps]
        flat_rows = self.lookup_ids(flat)
        per_query_rows, found_ids, at = [], [], 0
        for ps in positive_ids:
            r = flat_rows[at:at + len(ps)]
            at += len(ps)
            per_query_rows.append(np.unique(r[r >= 0]))  # sorted rows = sorted by ordinal; each once
            found_ids.append(list(dict.fromkeys(p for p, x in zip(ps, r) if x >= 0)))
        width = max((len(r) for r in per_query_rows), default=0)
        rows = np.full((b, width), -1, np.int64)
        for i, r in enumerate(per_query_rows):
            rows[i, :len(r)] = r
        pos_scores = self.score_rows(q, rows)
        pos_ords, pos_keys, pos_ids = self.gather(rows)
        positives = PositiveBatch([], [], [], [])
        for i, r in enumerate(per_query_rows):
            c = len(r)
            positives.ordinals.append(pos_ords[i, :c].copy())
            positives.scores.append(pos_scores[i, :c].copy())
            positives.text_keys.append(pos_keys[i, :c].copy())
            positives.doc_ids.append(list(pos_ids[i, :c]))

        random = None
        if random_ordinals is not None:
            ro = np.asarray(random_ordinals, dtype=np.int64)
            if ro.ndim != 2 or ro.shape[0] != b:
                raise ValueError(f"random_ordinals must be (B={b}, R), got shape {ro.shape}")
            rrows = self.lookup_ordinals(ro)
            random = self.batch_of(rrows, self.score_rows(q, rrows))
        return ShardAnswer(candidates, positives, found_ids, positive_ids, random, self.shard_id, len(self),
                           researches)

    # ---- accounting --------------------------------------------------------------------------------------
    def memory_bytes(self) -> int:
        """Host (and, for a GPU index, device) bytes held: vectors, faiss index (estimated), lookup arrays."""
        n, d = len(self), self._dim
        total = self.rows.memory_bytes + self.ordinals.nbytes + self.text_keys.nbytes + self._key_sorted.nbytes
        total += self._key_rows.nbytes + self.doc_ids.nbytes
        if self.proposer is None:
            return int(total)
        # the proposer's bytes include its own copy of the vectors, counted above already where it is shared
        return int(total + self.proposer.memory_bytes(n, d) - (self.rows.memory_bytes if self._shares_storage else 0))

    def disk_bytes(self) -> int:
        """Bytes of the scratch file holding the rescoring rows (0 when they are in memory)."""
        return int(getattr(self.rows, "disk_bytes", 0))

    def close(self) -> None:
        """Let go of the rows (a scratch file's blocks are freed) and the proposer."""
        self.rows.close()
        self.proposer = None
