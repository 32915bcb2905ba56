"""The sharded search and the mining of one query block in a single process, without Ray.

``LocalShardedIndex.answer`` makes the same calls on ``IndexShard`` objects that ``actor.ShardedIndex.answer``
makes on shard actors (round one ``propose``, ``merge.rescore_floor``, round two ``answer``, ``merge_answers``):
the in-process path of small runs (run/in_process.py) and the GPU check where Ray is not installed
(benchmarks/gpu_check.py, tests/test_gpu_pieces.py) use it. Keep the two ``answer`` methods in step. A shard is
built from the embedding store by ``build_shard`` on both paths (the shard actor calls it too).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..config import IndexConfig, MiningConfig
from ..keys import keys64
from ..mining import first_depths, mine_batch, num_random, random_corpus_ordinals, search_to_depth
from ..mining.samplers import window_end
from .answers import BlockSearch, MergedAnswer
from .merge import assign_shard, merge_answers, rescore_floor
from .shard import IndexShard, ShardDocs, assemble_vectors
from .store import buckets_of_shard, file_offsets, read_buckets, read_manifest
from .vector_rows import release_freed_memory


def shard_docs_from_store(store_url: str, manifest: dict, shard_id: int, n_shards: int):
    """The documents of shard ``shard_id`` of ``n_shards``, read from the store's buckets of that shard."""
    from ..vectors import from_arrow
    offsets = file_offsets(manifest)
    for table in read_buckets(store_url, buckets_of_shard(shard_id, n_shards), manifest):
        file_idx = table.column("file_idx").to_numpy()
        rows = table.column("row").to_numpy().astype(np.int64)
        ordinals = np.fromiter((offsets[int(f)] for f in file_idx), np.int64, len(file_idx)) + rows
        yield ShardDocs(doc_ids=np.asarray(table.column("doc_id").to_pylist(), dtype=object),
                        ordinals=ordinals,
                        text_keys=table.column("text_key").to_numpy().astype(np.uint64),
                        vectors=from_arrow(table.column("vector")),
                        locations=np.asarray(table.column("location").to_pylist(), dtype=object))


def build_shard(store_url: str, shard_id: int, n_shards: int, cfg: IndexConfig, lenient: bool = False,
                quarantine_url: Optional[str] = None) -> IndexShard:
    """Shard ``shard_id`` built from the committed store; in lenient runs the documents it drops (conflicting
    duplicates) are quarantined under ``quarantine_url``."""
    from ..errors import StreamMineError
    from ..io.records import Quarantine
    manifest = read_manifest(store_url)
    if manifest is None:
        raise StreamMineError(f"no committed embedding store at {store_url}")
    shard = IndexShard(cfg, int(manifest["dim"]), shard_id)
    # read twice (ids and keys, then the vectors into their rows): the shard's vectors are never held at once
    dropped = shard.build_from(lambda: shard_docs_from_store(store_url, manifest, shard_id, n_shards), lenient)
    release_freed_memory()  # what the reads and the build's temporaries used, back to the system
    if dropped and quarantine_url:
        q = Quarantine()
        for record in dropped:
            q.add(record["kind"], record["location"], record["reason"], record.get("raw", ""))
        q.write(quarantine_url)
    return shard


class LocalShardedIndex:
    """Shards held in this process; ``answer`` has ``actor.ShardedIndex.answer``'s signature and result."""

    def __init__(self, shards: list, prune_rescoring: bool = True):
        self.shards = shards
        self.prune_rescoring = prune_rescoring
        self.certificate_researches = 0  # as ShardedIndex: (query, shard) searches repeated to certify a top k

    @classmethod
    def build(cls, cfg: IndexConfig, docs: ShardDocs) -> "LocalShardedIndex":
        """``cfg.shards`` shards over ``docs``, each document where the embedding store would put it."""
        which = assign_shard(keys64(docs.doc_ids), cfg.shards)
        shards = []
        for s in range(cfg.shards):
            shard = IndexShard(cfg, docs.vectors.shape[1], s)
            shard.add(docs.take(np.flatnonzero(which == s)))
            shard.build()
            shards.append(shard)
        return cls(shards, cfg.prune_rescoring)

    @classmethod
    def from_store(cls, store_url: str, cfg: IndexConfig, lenient: bool = False,
                   quarantine_url: Optional[str] = None) -> "LocalShardedIndex":
        """``cfg.shards`` shards built from the committed store, as the shard actors build them."""
        return cls([build_shard(store_url, s, cfg.shards, cfg, lenient, quarantine_url) for s in range(cfg.shards)],
                   cfg.prune_rescoring)

    def shard_info(self) -> list:
        """Each shard's report, as ``ShardActor.ready`` gives it."""
        return [{"shard": i, "docs": len(s), "bytes": s.memory_bytes()} for i, s in enumerate(self.shards)]

    def shutdown(self) -> None:
        """Lets go of the shards' rows and scratch files (``actor.ShardedIndex.shutdown`` kills its actors)."""
        for shard in self.shards:
            shard.close()

    @property
    def n_total(self) -> int:
        return sum(len(s) for s in self.shards)

    def answer(self, queries: np.ndarray, k: int, positive_ids: list, random_ordinals=None) -> MergedAnswer:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        proposals, floor = None, None
        if self.prune_rescoring and len(self.shards) > 1:
            rounds = [s.propose(queries, k) for s in self.shards]
            proposals = [r.proposal for r in rounds]
            floor = rescore_floor([p.scores for p in proposals], [r.error_bound for r in rounds], queries, k)
            if any(r.error_bound is None for r in rounds):
                self.prune_rescoring = False  # as ShardedIndex: no bound, nothing to prune, one round from now on
        answers = [s.answer(queries, k, positive_ids, random_ordinals,
                            proposals[i] if proposals is not None else None, floor)
                   for i, s in enumerate(self.shards)]
        self.certificate_researches += sum(int(a.researches) for a in answers)
        return merge_answers(answers, k)

    def vectors_of(self, ordinals: np.ndarray) -> np.ndarray:
        """As ``actor.ShardedIndex.vectors_of``."""
        ordinals = np.asarray(ordinals, np.int64).reshape(-1)
        return assemble_vectors([s.vectors_of(ordinals) for s in self.shards], len(ordinals),
                                self.shards[0].dim if self.shards else 0)


def search_block(index, queries: np.ndarray, query_ids: list, positive_ids: list, cfg: MiningConfig,
                 n_total: int, excluded_ids: Optional[list] = None) -> BlockSearch:
    """The merged answer for one block of encoded queries, each query searched to its own depth
    (``mining.depth``: a function of the query, never of the block it arrived in), with the random corpus
    ordinals its sampler may draw. ``index``: a ``LocalShardedIndex`` or an ``actor.ShardedIndex``.

    Returns a ``BlockSearch``: the query keys, the ``MergedAnswer`` (its candidates searched to depth), how many
    queries were searched deeper, and how many (query, shard) searches were repeated to certify a top k.
    ``excluded_ids``: per query, ids its labels keep out of the negatives (``mining.depth.excluded_by_id``); like
    its positives, they deepen the first search and do not count toward a full window.
    """
    s = cfg.sampler
    query_keys = keys64(list(query_ids))
    n_excluded = [len(p) + (len(excluded_ids[i]) if excluded_ids else 0) for i, p in enumerate(positive_ids)]
    depths = first_depths(window_end(s), n_excluded, n_total)
    random_ordinals = None
    n_random = num_random(s)
    if n_random:
        # draw extra: some land on positives, quarantined rows or each other
        random_ordinals = random_corpus_ordinals(cfg.seed, query_keys, n_total, 2 * n_random + 4)
    researches = index.certificate_researches
    k = int(depths.max()) if len(depths) else 0
    first = index.answer(queries, k, positive_ids, random_ordinals)

    def search(rows, k):
        return index.answer(queries[rows], k, [positive_ids[i] for i in rows]).candidates
    cands, _, n_deeper = search_to_depth(search, first.candidates, first.positives, depths, window_end(s),
                                         cfg.exclude_same_text, cfg.max_search_depth, n_total, excluded_ids)
    return BlockSearch(query_keys, first._replace(candidates=cands), n_deeper,
                       index.certificate_researches - researches)


def mine_block(index, queries: np.ndarray, query_ids: list, positive_ids: list, cfg: MiningConfig,
               n_total: int):
    """Mine one block of encoded queries as ``run.mine_stage.MineQueries`` does (``search_block``, then the mining):
    returns ``(MinedBatch, candidates, positives)``."""
    found = search_block(index, queries, query_ids, positive_ids, cfg, n_total)
    a = found.answer
    vectors_of = index.vectors_of if cfg.near_duplicate.enabled else None
    return mine_batch(found.query_keys, a.candidates, a.positives, cfg, a.random, vectors_of=vectors_of), \
        a.candidates, a.positives
