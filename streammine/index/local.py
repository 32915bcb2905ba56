"""The sharded search and the mining of one query block in a single process, without Ray.

``LocalShardedIndex.answer`` makes the same calls on ``IndexShard`` objects that ``actor.ShardedIndex.answer``
makes on shard actors (round one ``propose``, ``merge.rescore_floor``, round two ``answer``, ``merge_answers``),
so the GPU pieces (encoder, shard kinds, mining) can be run and checked together where Ray is not installed
(benchmarks/gpu_check.py, tests/test_gpu_pieces.py). Keep the two ``answer`` methods in step.
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
