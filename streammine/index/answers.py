"""The values that cross the search seam: a shard's faiss proposal, a shard's answer, and the merged answer.

They live here, apart from the shard (``shard.py``) and the merge (``merge.py``), so that both import them and
neither imports the other's types. Named tuples where callers unpack them (``rows, scores = proposal``); fields by
name everywhere else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional

import numpy as np

from ..mining.types import CandidateBatch, PositiveBatch


class Proposal(NamedTuple):
    """faiss' candidates for a query batch, before exact rescoring (round one of a pruned search)."""
    rows: np.ndarray      # (B, K) int64 local rows of the shard, -1 = none
    scores: np.ndarray    # (B, K) float32 faiss' own scores, -inf = none


class ShardProposal(NamedTuple):
    """A shard's round-one reply (``IndexShard.propose``): its proposal, and the faiss error bound per unit of
    query norm (None: the index gives none, so nothing can be pruned)."""
    proposal: Proposal
    error_bound: Optional[float]


class ProposalScores(NamedTuple):
    """What a shard actor sends back in round one: only the faiss scores (the rows stay on the actor)."""
    scores: np.ndarray
    error_bound: Optional[float]


@dataclass
class ShardAnswer:
    """One shard's answer to a query batch (see ``IndexShard.answer``; combined by ``merge.merge_answers``)."""
    candidates: CandidateBatch         # (B, k) this shard's top k
    positives: PositiveBatch           # per query, the requested positives this shard holds (sorted by ordinal)
    found_positive_ids: list           # per query, the requested positive ids this shard holds (request order)
    positive_ids: list                 # per query, the requested positive ids (as asked)
    random: Optional[CandidateBatch]   # (B, R) the requested random ordinals this shard holds, else padding
    shard_id: int = 0
    n_docs: int = 0
    researches: int = 0                # queries searched again deeper to certify the top k (``IndexShard.search``)


class MergedAnswer(NamedTuple):
    """All shards' answers to one query batch, combined (``merge.merge_answers``)."""
    candidates: CandidateBatch          # (B, k) the global top k by (exact score desc, ordinal asc)
    positives: PositiveBatch            # per query, the positives found on any shard, sorted by ordinal
    random: Optional[CandidateBatch]    # (B, R) aligned with the requested random ordinals; None: none requested
    missing: List[list]                 # per query, the requested positive ids no shard holds (request order)


class BlockSearch(NamedTuple):
    """One block of queries searched to their own depths (``local.search_block``)."""
    query_keys: np.ndarray
    answer: MergedAnswer
    n_deeper: int                 # queries searched again deeper for their sampler's range
    n_researches: int             # (query, shard) searches repeated to certify a top k
