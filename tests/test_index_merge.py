"""merge_topk / merge_answers on hand-made batches, and the shard assignment."""
from __future__ import annotations

import numpy as np
import pytest

from streammine.index import store
from streammine.index.merge import NUM_BUCKETS, assign_shard, merge_answers, merge_columns, merge_topk, rank_order
from streammine.index.shard import ShardAnswer
from streammine.keys import keys64
from streammine.mining.types import CandidateBatch, PositiveBatch

NEG = -np.inf


def batch(ords, scores):
    ords = np.asarray(ords, np.int64)
    return CandidateBatch(ords, np.asarray(scores, np.float32),
                          np.where(ords >= 0, ords + 1000, 0).astype(np.uint64),
                          np.where(ords >= 0, np.char.add("d", ords.astype(str)), "").astype(object))


def test_rank_order_ties_and_padding():
    o = rank_order(np.array([[4, -1, 2, 9, 1]]), np.array([[0.5, NEG, 0.5, 0.7, -0.0]], np.float32))
    assert o.tolist() == [[3, 2, 0, 4, 1]]
    # 0.0 and -0.0 tie, and the tie is broken by ordinal
    o = rank_order(np.array([[7, 3]]), np.array([[0.0, -0.0]], np.float32))
    assert o.tolist() == [[1, 0]]


def test_merge_topk():
    a = batch([[10, 3, -1], [1, 2, 3]], [[0.9, 0.5, NEG], [0.3, 0.2, 0.1]])
    b = batch([[2, 8], [7, -1]], [[0.5, 0.4], [0.3, NEG]])
    m = merge_topk([a, b], 4)
    assert m.ordinals.tolist() == [[10, 2, 3, 8], [1, 7, 2, 3]]
    np.testing.assert_allclose(m.scores, [[0.9, 0.5, 0.5, 0.4], [0.3, 0.3, 0.2, 0.1]], rtol=1e-6)
    assert m.doc_ids.tolist() == [["d10", "d2", "d3", "d8"], ["d1", "d7", "d2", "d3"]]
    assert m.text_keys[0].tolist() == [1010, 1002, 1003, 1008]
    # k beyond what the parts hold: padded
    m = merge_topk([a, b], 7)
    assert m.ordinals.shape == (2, 7)
    assert m.ordinals[1].tolist() == [1, 7, 2, 3, -1, -1, -1]
    assert m.scores[1, -1] == NEG and m.doc_ids[1, -1] == "" and m.text_keys[1, -1] == 0
    # order of the parts does not matter
    for k in (1, 3, 5):
        x, y = merge_topk([a, b], k), merge_topk([b, a], k)
        assert x.ordinals.tolist() == y.ordinals.tolist() and x.scores.tolist() == y.scores.tolist()
    assert merge_topk([CandidateBatch.empty(2, 0)], 3).ordinals.tolist() == [[-1] * 3] * 2


def test_merge_columns_rejects_overlap():
    a, b = batch([[1, -1]], [[0.1, NEG]]), batch([[-1, 2]], [[NEG, 0.2]])
    assert merge_columns([a, b]).ordinals.tolist() == [[1, 2]]
    with pytest.raises(ValueError, match="more than one shard"):
        merge_columns([a, a])


def _pos(per_query):
    return PositiveBatch([np.array([o for o, _ in q], np.int64) for q in per_query],
                         [np.array([s for _, s in q], np.float32) for q in per_query],
                         [np.array([o + 1000 for o, _ in q], np.uint64) for q in per_query],
                         [[f"d{o}" for o, _ in q] for q in per_query])


def test_merge_answers_hand_made():
    req = [["d9", "x", "d1", "x"], ["d4"]]
    a = ShardAnswer(batch([[9, 1], [9, 1]], [[0.9, 0.1], [0.9, 0.1]]),
                    _pos([[(1, 0.1), (9, 0.9)], []]), [["d9", "d1"], []], req, None)
    b = ShardAnswer(batch([[4, -1], [4, -1]], [[0.5, NEG], [0.5, NEG]]), _pos([[], [(4, 0.5)]]), [[], ["d4"]],
                    req, None)
    cands, pos, rnd, missing = merge_answers([b, a], 3)
    assert cands.ordinals.tolist() == [[9, 4, 1], [9, 4, 1]]
    assert [p.tolist() for p in pos.ordinals] == [[1, 9], [4]]
    assert pos.doc_ids == [["d1", "d9"], ["d4"]]
    assert missing == [["x"], []] and rnd is None
    with pytest.raises(ValueError):
        merge_answers([], 3)


def test_assign_shard_scheme():
    keys = keys64([f"doc-{i}" for i in range(2000)])
    buckets = keys % np.uint64(64)
    for n in (1, 2, 3, 4, 7):
        s = assign_shard(keys, n)
        assert s.dtype == np.int64 and s.min() >= 0 and s.max() < n
        np.testing.assert_array_equal(s, (buckets % np.uint64(n)).astype(np.int64))
    # a bucket maps to one shard, so a changed shard count only regroups whole buckets
    assert np.all(assign_shard(np.arange(64, dtype=np.uint64), 4) == np.arange(64) % 4)
    with pytest.raises(ValueError):
        assign_shard(keys, 0)


def test_assign_shard_agrees_with_embedding_store():
    assert NUM_BUCKETS == store.NUM_BUCKETS
    ids = [f"doc-{i}" for i in range(500)]
    buckets = store.bucket_of(ids)
    for n in (1, 2, 4, 5):
        shards = assign_shard(keys64(ids), n)
        for sid in range(n):
            assert set(np.flatnonzero(shards == sid)) == set(np.flatnonzero(np.isin(buckets,
                                                                                     store.buckets_of_shard(sid, n))))
