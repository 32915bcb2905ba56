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
from .merge import assign_shard, merge_answers, rescore_floor
from .shard import IndexShard, ShardDocs

# stages.SAME_TEXT_SLACK (stages.py imports Ray, which this module must not); a test checks they agree
SAME_TEXT_SLACK = 16


class LocalShardedIndex:
    """Shards held in this process; ``answer`` has ``actor.ShardedIndex.answer``'s signature and result."""

    def __init__(self, shards: list, prune_rescoring: bool = True):
        self.shards = shards
        self.prune_rescoring = prune_rescoring

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

    def answer(self, queries: np.ndarray, k: int, positive_ids: list, random_ordinals=None):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        proposals, floor = None, None
        if self.prune_rescoring and len(self.shards) > 1:
            rounds = [s.propose(queries, k) for s in self.shards]
            proposals = [r[0] for r in rounds]
            floor = rescore_floor([p[1] for p in proposals], [r[1] for r in rounds], queries, k)
        answers = [s.answer(queries, k, positive_ids, random_ordinals,
                            proposals[i] if proposals is not None else None, floor)
                   for i, s in enumerate(self.shards)]
        return merge_answers(answers, k)


def mine_block(index, queries: np.ndarray, query_ids: list, positive_ids: list, cfg: MiningConfig,
               n_total: int, extra: Optional[int] = None):
    """Mine one block of encoded queries as ``stages.MineQueries`` does (search depth, random draws, mining):
    returns ``(MinedBatch, candidates, positives)``. ``index``: a ``LocalShardedIndex`` or ``ShardedIndex``."""
    from ..mining import mine_batch, num_random, random_corpus_ordinals
    s = cfg.sampler
    query_keys = keys64(list(query_ids))
    slack = SAME_TEXT_SLACK if extra is None else extra
    k = min(s.resolved_range_max() + max((len(p) for p in positive_ids), default=0) + slack, n_total)
    n_random = num_random(s)
    random_ordinals = None
    if n_random:
        random_ordinals = random_corpus_ordinals(cfg.seed, query_keys, n_total, 2 * n_random + 4)
    cands, positives, random_docs, _missing = index.answer(queries, k, positive_ids, random_ordinals)
    return mine_batch(query_keys, cands, positives, cfg, random_docs), cands, positives
