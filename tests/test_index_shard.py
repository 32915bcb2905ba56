"""IndexShard: exactness against brute force, approximate kinds, duplicates, lookups, empty shards, factory, GPU."""
from __future__ import annotations

import argparse
import math

import faiss
import numpy as np
import pytest

from helpers import one_faiss_thread  # noqa: F401 - autouse fixture
from streammine.api import load_config
from streammine.config import IndexConfig
from streammine.errors import ConfigError, InputError
from streammine.index import factory, kinds
from streammine.index.answers import Proposal
from streammine.index.factory import maybe_to_gpu, resolve_nlist, resolve_pq
from streammine.index.kinds import make_index
from streammine.index.merge import assign_shard, merge_answers, merge_topk, rescore_floor
from streammine.index.kinds import float32_bound
from streammine.index.shard import IndexShard, ShardDocs, exact_scores, uncertified
from streammine.mining.tree_sum import tree_sum as _tree_sum
from streammine.keys import keys64


# ---- helpers -------------------------------------------------------------------------------------------------

def corpus(n, d, seed=0, clusters=None, quantized=False):
    """ShardDocs with ids d<i>, ordinals 0..n-1, distinct texts; clustered or quantized (exactly summable)."""
    rng = np.random.default_rng(seed)
    if quantized:  # small multiples of 1/4: every dot product is exact in any summation order (ties stay ties)
        vecs = rng.integers(-3, 4, (n, d)).astype(np.float32) / 4
    elif clusters:
        centers = rng.normal(size=(clusters, d))
        vecs = centers[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    else:
        vecs = rng.normal(size=(n, d))
    ids = np.array([f"d{i}" for i in range(n)], dtype=object)
    return ShardDocs(ids, np.arange(n), keys64([f"text {i}" for i in range(n)]), vecs.astype(np.float32),
                     np.array([f"corpus.jsonl:{i + 1}" for i in range(n)], dtype=object))


def reference_topk(queries, docs, k):
    """Brute force: float64 full-matrix scores (as float32), ranked by (-score, ordinal)."""
    s = (queries.astype(np.float64) @ docs.vectors.astype(np.float64).T).astype(np.float32)
    ords = np.broadcast_to(docs.ordinals, s.shape)
    order = np.lexsort((ords, -s), axis=-1)[:, :k]
    return np.take_along_axis(ords, order, 1), np.take_along_axis(s, order, 1)


def build_shards(docs, n_shards, cfg, chunks=3, seed=0):
    """Split docs by assign_shard and build one IndexShard per shard, adding in shuffled chunks."""
    which = assign_shard(keys64(docs.doc_ids), n_shards)
    rng = np.random.default_rng(seed)
    shards = []
    for s in range(n_shards):
        sel = np.flatnonzero(which == s)
        rng.shuffle(sel)
        shard = IndexShard(cfg, docs.vectors.shape[1], s)
        for part in np.array_split(sel, chunks):
            shard.add(docs.take(part))
        assert shard.build() == []
        shards.append(shard)
    return shards


def search_all(shards, queries, k):
    return merge_topk([s.search(queries, k) for s in shards], k)


FLAT = IndexConfig(kind="flat", oversample=16)


# ---- exactness -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_shards", [1, 2, 4])
def test_flat_shards_match_brute_force(n_shards):
    docs = corpus(3000, 32, seed=1)
    queries = np.random.default_rng(2).normal(size=(40, 32)).astype(np.float32)
    k = 25
    got = search_all(build_shards(docs, n_shards, FLAT), queries, k)
    ref_ords, ref_scores = reference_topk(queries, docs, k)
    np.testing.assert_array_equal(got.ordinals, ref_ords)
    np.testing.assert_array_equal(got.scores, ref_scores)
    np.testing.assert_array_equal(got.doc_ids, docs.doc_ids[ref_ords])
    np.testing.assert_array_equal(got.text_keys, docs.text_keys[ref_ords])


@pytest.mark.parametrize("n_shards", [1, 2, 4])
def test_exact_ties_broken_by_ordinal(n_shards):
    docs = corpus(1500, 16, seed=3, quantized=True)
    # deliberate exact duplicates: copies of a few vectors under other ids, at scattered ordinals
    src = np.array([5, 5, 5, 77, 77, 400, 1200, 1499])
    dst = np.array([900, 20, 1300, 3, 1100, 401, 0, 750])
    docs.vectors[dst] = docs.vectors[src]
    queries = np.vstack([docs.vectors[[5, 77, 400, 1200]],   # each query's top hits include tied copies
                         np.random.default_rng(4).integers(-3, 4, (12, 16)) / 4]).astype(np.float32)
    k = 30
    got = search_all(build_shards(docs, n_shards, FLAT), queries, k)
    ref_ords, ref_scores = reference_topk(queries, docs, k)
    np.testing.assert_array_equal(got.ordinals, ref_ords)
    np.testing.assert_array_equal(got.scores, ref_scores)
    # the copies of vector 5 tie exactly and come out in ordinal order
    first = got.ordinals[0][got.scores[0] == got.scores[0, 0]]
    assert list(first) == sorted(first) and {5, 20, 900, 1300} <= set(first)


def pruned_search_all(shards, queries, k):
    """Two rounds, as ShardedIndex does with several shard actors: faiss scores, a floor, pruned rescoring."""
    proposals = [s.propose(queries, k) for s in shards]
    floor = rescore_floor([p[0][1] for p in proposals], [p[1] for p in proposals], queries, k)
    merged = merge_topk([s.search(queries, k, p[0], floor) for s, p in zip(shards, proposals)], k)
    return merged, floor, proposals


@pytest.mark.parametrize("kind,n_shards,data", [("flat", 2, "normal"), ("flat", 4, "ties"), ("ivf-flat", 4, "clusters"),
                                                ("hnsw", 2, "clusters"), ("ivf-pq", 2, "clusters")])
def test_pruned_rescoring_gives_the_same_top_k(kind, n_shards, data):
    if data == "ties":
        docs = corpus(1500, 16, seed=3, quantized=True)
        docs.vectors[[900, 20, 1300]] = docs.vectors[5]
        queries = np.vstack([docs.vectors[[5, 77]], np.random.default_rng(4).integers(-3, 4, (14, 16)) / 4])
    elif data == "normal":  # norms far from 1: the error bound scales with them
        docs = corpus(3000, 32, seed=1)
        docs.vectors *= np.random.default_rng(7).uniform(0.1, 20, (3000, 1)).astype(np.float32)
        queries = np.random.default_rng(2).normal(size=(40, 32)) * 3
    else:
        docs = corpus(3000, 32, seed=1, clusters=20)
        queries = docs.vectors[:40] + 0.05 * np.random.default_rng(2).normal(size=(40, 32))
    queries = queries.astype(np.float32)
    cfg = IndexConfig(kind=kind, nlist=16, nprobe=4, pq_m=8, oversample=16)
    shards = build_shards(docs, n_shards, cfg)
    k = 25
    full = search_all(shards, queries, k)
    pruned, floor, proposals = pruned_search_all(shards, queries, k)
    for name in ("ordinals", "scores", "doc_ids", "text_keys"):
        np.testing.assert_array_equal(getattr(pruned, name), getattr(full, name))
    if kind == "ivf-pq":  # PQ scores have no error bound: nothing is pruned
        assert floor is None
        return
    rescored = sum(int((p[0][1] >= floor[:, None]).sum()) for p in proposals)
    found = sum(int((p[0][0] >= 0).sum()) for p in proposals)
    assert rescored < 0.5 * found, (rescored, found)  # the point: far fewer vectors rescored


def near_duplicates(d, clusters=2, size=240, others=300, eps=1e-7, seed=0):
    """Clusters of ``size`` near-duplicate unit vectors (each a center plus ``eps`` noise: their scores differ by
    about faiss's own float32 error), far more than any oversample, among ``others`` unrelated vectors; ordinals
    shuffled. Returns the docs and the cluster centers."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    members = np.repeat(centers, size, 0) + eps * rng.normal(size=(clusters * size, d))
    rest = rng.normal(size=(others, d))
    rest /= np.linalg.norm(rest, axis=1, keepdims=True)
    vecs = np.vstack([members, rest])[rng.permutation(clusters * size + others)].astype(np.float32)
    n = len(vecs)
    docs = ShardDocs(np.array([f"d{i}" for i in range(n)], object), np.arange(n), keys64([f"t{i}" for i in range(n)]),
                     vecs, np.array([f"corpus.jsonl:{i + 1}" for i in range(n)], object))
    return docs, centers


def towards(centers, n, noise, seed, norm=1.0):
    """``n`` queries of norm ``norm`` near random cluster centers."""
    rng = np.random.default_rng(seed)
    q = centers[rng.integers(0, len(centers), n)] + noise * rng.normal(size=(n, centers.shape[1]))
    return (norm * q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered_128():
    docs, centers = near_duplicates(128)
    near = towards(centers, 64, 0.05, seed=1)
    far = np.random.default_rng(2).normal(size=(4096 - 64, 128)).astype(np.float32)
    queries = np.vstack([near, far])
    return docs, queries, reference_topk(queries, docs, 10)


@pytest.mark.parametrize("n_shards", [1, 2, 4])
def test_flat_exact_on_near_duplicate_clusters_for_any_batch_size(clustered_128, n_shards, monkeypatch):
    """240 near-duplicates per cluster (k = 10, oversample 16): the certified search equals float64 brute force
    (ids, order, scores) for batches of 1, 19, 20 (faiss switches to BLAS), 63, 64 and 4096 queries."""
    docs, queries, (ref_ords, ref_scores) = clustered_128
    shards = build_shards(docs, n_shards, FLAT)
    k, near = 10, 64
    for bs in (1, 19, 20, 63, 64):
        got = np.vstack([search_all(shards, queries[a:min(a + bs, near)], k).ordinals for a in range(0, near, bs)])
        np.testing.assert_array_equal(got, ref_ords[:near], err_msg=f"batch size {bs}")
    everything = search_all(shards, queries, k)
    np.testing.assert_array_equal(everything.ordinals, ref_ords)
    np.testing.assert_array_equal(everything.scores, ref_scores)
    np.testing.assert_array_equal(everything.doc_ids, docs.doc_ids[ref_ords])
    # the data has power: the certificate had to search again, and without it the top k would be wrong
    assert sum(s._search(queries[:near], k)[1] for s in shards) > 0
    monkeypatch.setattr(IndexShard, "faiss_error_bound", property(lambda self: None))
    assert (search_all(shards, queries[:near], k).ordinals != ref_ords[:near]).any()


@pytest.mark.parametrize("n_shards", [2, 4])
def test_pruned_rescoring_exact_on_near_duplicates(n_shards, monkeypatch):
    """Pruned, certified rescoring on near-duplicate clusters equals float64 brute force. d = 4 and scores just
    above 1 (query norm 1.05) make faiss's float32 error about a fifth of the bound (which grows with d): the same
    search with the bound divided by 10 prunes or misses true top-k documents."""
    docs, centers = near_duplicates(4, eps=1e-7, seed=3)
    queries = towards(centers, 30, 0.05, seed=4, norm=1.05)
    shards = build_shards(docs, n_shards, FLAT)
    k = 10
    ref_ords, ref_scores = reference_topk(queries, docs, k)
    for bs in (1, 30):
        for a in range(0, 30, bs):
            got = pruned_search_all(shards, queries[a:a + bs], k)[0]
            np.testing.assert_array_equal(got.ordinals, ref_ords[a:a + bs])
            np.testing.assert_array_equal(got.scores, ref_scores[a:a + bs])
    # the test has power: a bound ten times too small gives another top k
    bound = IndexShard.faiss_error_bound
    monkeypatch.setattr(IndexShard, "faiss_error_bound", property(lambda self: bound.fget(self) / 10))
    assert (pruned_search_all(shards, queries, k)[0].ordinals != ref_ords).any(axis=1).sum() >= 2


def test_uncertified_rule():
    f = np.array([[0.9, 0.8, 0.5], [0.9, 0.8, -np.inf], [0.9, 0.8, 0.5], [0.9, 0.8, 0.5]], np.float32)
    kth = np.array([0.52, 0.52, 0.5 + 0.01 + 1e-9, 0.6])
    err = np.full(4, 0.01)
    # an unreturned document scores at most last + err = 0.51: below 0.52 (row 0) and 0.6 (row 3) it cannot reach
    # the top k; row 2's k-th score is within the float64 slack of 0.51, so it is searched again; row 1 returned
    # fewer than asked (nothing more to find)
    assert uncertified(f, 3, kth, err).tolist() == [False, False, True, False]
    assert uncertified(f, 3, np.array([0.51] * 4), err).tolist() == [True, False, True, True]  # ties: again
    assert uncertified(f, 3, np.full(4, -np.inf), err).tolist() == [True, False, True, True]   # fewer than k
    # with a pruning floor above the last faiss score, what was not returned would be pruned anyway
    floor = np.array([0.5, 0.5, 0.6, 0.6], np.float32)
    assert uncertified(f, 3, np.full(4, -np.inf), err, floor).tolist() == [True, False, False, False]


def test_rescore_floor():
    a = np.array([[0.9, 0.5, 0.1], [0.3, -np.inf, -np.inf]], np.float32)
    b = np.array([[0.7, 0.6], [0.2, 0.1]], np.float32)
    q = np.array([[3.0, 4.0], [0.0, 1.0]], np.float32)  # norms 5 and 1
    floor = rescore_floor([a, b], [1e-3, 2e-3], q, 2)
    # tau: 2nd largest of (0.9 0.5 0.1 0.7 0.6) = 0.7, of (0.3 0.2 0.1) = 0.2; minus 2 * 2e-3 * |q|
    np.testing.assert_allclose(floor, [0.7 - 0.02, 0.2 - 0.004], rtol=1e-6)
    assert floor.dtype == np.float32 and (floor.astype(np.float64) <= np.array([0.68, 0.196])).all()
    assert rescore_floor([a, b], [1e-3, None], q, 2) is None
    assert np.isneginf(rescore_floor([a, b], [1e-3, 1e-3], q, 5)[1])  # fewer than k found: no pruning
    assert np.isneginf(rescore_floor([a[:, :1]], [1e-3], q, 2)).all()


def test_scores_bit_identical_across_batch_sizes_and_shards():
    docs = corpus(2000, 48, seed=5)
    queries = np.random.default_rng(6).normal(size=(33, 48)).astype(np.float32)
    one = build_shards(docs, 1, FLAT)[0]
    rows = np.random.default_rng(7).integers(0, 2000, (33, 50))
    full = one.score_rows(queries, rows)
    for i in range(33):  # one query at a time, and a different column count
        np.testing.assert_array_equal(one.score_rows(queries[i:i + 1], rows[i:i + 1]), full[i:i + 1])
        np.testing.assert_array_equal(one.score_rows(queries[i:i + 1], rows[i:i + 1, 10:13]), full[i:i + 1, 10:13])
    # a batch of 7 vs all 33, via search, on 1 vs 4 shards
    a = search_all([one], queries, 20)
    b = search_all(build_shards(docs, 4, FLAT), queries[:7], 20)
    np.testing.assert_array_equal(a.scores[:7], b.scores)
    np.testing.assert_array_equal(a.ordinals[:7], b.ordinals)
    # close to the exact value (fsum)
    q, v = queries[0].astype(np.float64), docs.vectors[rows[0, 0]].astype(np.float64)
    assert abs(float(full[0, 0]) - math.fsum(q * v)) <= 1e-6 * max(1.0, abs(math.fsum(q * v)))


def test_score_rows_scores_only_present_rows_with_the_reference_bits():
    """Rows of -1 (pruned or padding) come back -inf; every other entry is exact_scores' value, bit for bit."""
    docs = corpus(500, 24, seed=11)
    shard = build_shards(docs, 1, FLAT)[0]
    queries = np.random.default_rng(12).normal(size=(9, 24)).astype(np.float32)
    rows = np.random.default_rng(13).integers(0, 500, (9, 17))
    rows[np.random.default_rng(14).random(rows.shape) < 0.6] = -1
    rows[4] = -1                                   # a query with nothing to score
    got = shard.score_rows(queries, rows)
    assert np.isneginf(got[rows < 0]).all()
    for i in range(9):
        present = rows[i] >= 0
        expected = exact_scores(queries[i:i + 1], shard.vectors[rows[i][present]][None]).astype(np.float32)[0]
        np.testing.assert_array_equal(got[i][present], expected)


def test_tree_sum_fixed_order():
    x = np.random.default_rng(0).normal(size=(5, 7, 37))
    s = _tree_sum(x)
    assert s.shape == (5, 7)
    np.testing.assert_array_equal(_tree_sum(x.copy(), overwrite=True), s)  # in place: the same bits
    np.testing.assert_allclose(s, x.sum(-1), rtol=1e-12)
    for i in range(5):  # each output depends on its own row only
        np.testing.assert_array_equal(_tree_sum(x[i, 3:4]), s[i, 3:4])
    assert exact_scores(np.ones((2, 3), np.float32), np.ones((2, 4, 3), np.float32)).tolist() == [[3.0] * 4] * 2
    assert _tree_sum(np.zeros((2, 0))).tolist() == [0.0, 0.0]


def test_arrival_order_does_not_matter():
    docs = corpus(1200, 16, seed=8, clusters=10)
    queries = docs.vectors[:20] + 0.01
    cfg = IndexConfig(kind="ivf-flat", nprobe=4, oversample=4)
    a = build_shards(docs, 1, cfg, chunks=1, seed=0)[0].search(queries, 10)
    b = build_shards(docs, 1, cfg, chunks=5, seed=99)[0].search(queries, 10)
    np.testing.assert_array_equal(a.ordinals, b.ordinals)
    np.testing.assert_array_equal(a.scores, b.scores)


# ---- approximate kinds ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,min_recall", [("ivf-flat", 0.9), ("hnsw", 0.9), ("ivf-pq", 0.8)])
def test_approximate_kinds_exact_scores_and_recall(kind, min_recall):
    docs = corpus(4000, 32, seed=9, clusters=40)
    rng = np.random.default_rng(10)
    queries = (docs.vectors[rng.integers(0, 4000, 50)] + 0.1 * rng.normal(size=(50, 32))).astype(np.float32)
    cfg = IndexConfig(kind=kind, nprobe=32, ef_search=128, pq_m=8, pq_nbits=8, oversample=16)
    shards = build_shards(docs, 2, cfg)
    got = search_all(shards, queries, 10)
    ref_ords, _ = reference_topk(queries, docs, 10)
    # scores are exact for whatever was found: equal to a brute-force dot product of those documents ...
    valid = got.valid
    assert valid.all()
    brute = np.einsum("bd,bkd->bk", queries.astype(np.float64), docs.vectors[got.ordinals].astype(np.float64))
    np.testing.assert_allclose(got.scores, brute, rtol=1e-6, atol=1e-6)
    # ... and bit-identical to the flat index's scores of the same documents
    flat = build_shards(docs, 1, FLAT)[0]
    np.testing.assert_array_equal(got.scores, flat.score_rows(queries, flat.lookup_ordinals(got.ordinals)))
    # ranked by (score desc, ordinal asc)
    for row_s, row_o in zip(got.scores, got.ordinals):
        assert all((a > b) or (a == b and c < e) for a, b, c, e in zip(row_s, row_s[1:], row_o, row_o[1:]))
    recall = np.mean([len(set(g) & set(r)) / 10 for g, r in zip(got.ordinals, ref_ords)])
    assert recall >= min_recall, recall


@pytest.mark.parametrize("kind", ["flat", "ivf-flat", "hnsw", "ivf-pq"])
def test_tiny_shards_train_and_search(kind):
    """Every kind builds on a handful of vectors (IVF lists and PQ bits adapt), and finds the exact top k."""
    docs = corpus(50, 12, seed=11)
    queries = np.random.default_rng(12).normal(size=(5, 12)).astype(np.float32)
    shard = build_shards(docs, 1, IndexConfig(kind=kind, nprobe=8))[0]
    got = shard.search(queries, 5)
    ref_ords, ref_scores = reference_topk(queries, docs, 5)
    np.testing.assert_array_equal(got.ordinals, ref_ords)  # 1 IVF list, 50 docs: the search is exhaustive
    np.testing.assert_array_equal(got.scores, ref_scores)


# ---- kinds: one proposer object each, from one registry ------------------------------------------------------

class NumpyFlat:
    """A tiny extra kind, written here as a newcomer would: float32 matrix products in numpy, best k by
    (score desc, row asc). Counts its proposals, so the test sees that the shard really searched it."""
    max_k = None
    proposals = 0

    def __init__(self, dim):
        self.d, self.index = dim, None

    @classmethod
    def make(cls, cfg, dim, n):
        return cls(dim)

    @classmethod
    def torch_device(cls, cfg):
        return None

    def placed(self, use_gpu):
        return self

    def build(self, vectors):
        self.index = np.array(vectors, np.float32)

    def propose(self, queries, k):
        NumpyFlat.proposals += 1
        s = queries @ self.index.T
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return Proposal(top.astype(np.int64), np.take_along_axis(s, top, 1))

    def error_bound(self, max_norm):
        return float32_bound(self.d, max_norm)

    def memory_bytes(self, n, d):
        return n * d * 4

    def stored_vectors(self):
        return None


def test_a_new_kind_is_one_class_and_one_registry_line(monkeypatch):
    from streammine.cli import build_parser
    from streammine.config import MineConfig
    monkeypatch.setitem(kinds.KINDS, "numpy-flat", NumpyFlat)
    # config validation and the CLI's choices read the registry
    assert load_config(None, {"input.path": "x", "index.kind": "numpy-flat"}).index.kind == "numpy-flat"
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "numpy-flat" in commands.choices["mine"].format_help()
    # a shard with it: near-duplicate clusters larger than the oversample, certified to the brute-force top k
    docs, centers = near_duplicates(4, eps=1e-7, seed=3)
    queries = towards(centers, 30, 0.05, seed=4, norm=1.05)
    NumpyFlat.proposals = 0
    shards = build_shards(docs, 2, IndexConfig(kind="numpy-flat", oversample=4))
    assert all(isinstance(s.proposer, NumpyFlat) for s in shards)
    ref_ords, ref_scores = reference_topk(queries, docs, 10)
    for got in (search_all(shards, queries, 10), pruned_search_all(shards, queries, 10)[0]):
        np.testing.assert_array_equal(got.ordinals, ref_ords)
        np.testing.assert_array_equal(got.scores, ref_scores)
    assert NumpyFlat.proposals > 0 and sum(s._search(queries, 10)[1] for s in shards) > 0  # certified deeper
    assert shards[0].memory_bytes() >= 2 * len(shards[0]) * 4 * 4  # the shard's vectors and the kind's own copy
    monkeypatch.delitem(kinds.KINDS, "numpy-flat")
    with pytest.raises(ConfigError, match="index.kind must be one of"):
        load_config(None, {"input.path": "x", "index.kind": "numpy-flat"})


def test_ivf_pq_states_the_bound_of_the_index_it_really_built():
    """A shard too small for a product quantizer builds IVF-Flat and has IVF-Flat's float32 bound (so it prunes
    and certifies); a PQ shard has none."""
    cfg = IndexConfig(kind="ivf-pq", pq_m=8, nprobe=4, oversample=16)
    small, large = build_shards(corpus(500, 32, seed=5), 1, cfg)[0], build_shards(corpus(4000, 32, seed=5), 1, cfg)[0]
    assert isinstance(faiss.downcast_index(small.index), faiss.IndexIVFFlat) and small.proposer.lists is not None
    assert small.faiss_error_bound == 2 * 32 * 2.0 ** -24 * small.max_norm
    assert isinstance(faiss.downcast_index(large.index), faiss.IndexIVFPQ) and large.faiss_error_bound is None
    docs = corpus(1000, 32, seed=6, clusters=10)
    queries = (docs.vectors[:20] + 0.05 * np.random.default_rng(7).normal(size=(20, 32))).astype(np.float32)
    shards = build_shards(docs, 2, cfg)  # 500 a shard or so: IVF-Flat
    full = search_all(shards, queries, 10)
    pruned, floor, _ = pruned_search_all(shards, queries, 10)
    assert floor is not None
    np.testing.assert_array_equal(pruned.ordinals, full.ordinals)
    np.testing.assert_array_equal(pruned.scores, full.scores)


# ---- factory -------------------------------------------------------------------------------------------------

def test_factory_sizes():
    cfg = IndexConfig(kind="ivf-flat")
    assert resolve_nlist(cfg, 0) == 1 and resolve_nlist(cfg, 10) == 1
    assert resolve_nlist(cfg, 4000) == 4000 // 39        # 4*sqrt(4000)=253 clamped to n/39
    assert resolve_nlist(cfg, 1_000_000) == 4000
    assert resolve_nlist(IndexConfig(nlist=50), 4000) == 50
    assert resolve_nlist(IndexConfig(nlist=5000), 4000) == 102
    idx = make_index(IndexConfig(kind="ivf-flat", nprobe=500), 8, 4000)
    assert isinstance(idx, faiss.IndexIVFFlat) and idx.nlist == 102 and idx.nprobe == 102
    assert idx.metric_type == faiss.METRIC_INNER_PRODUCT
    h = make_index(IndexConfig(kind="hnsw", hnsw_m=16, ef_search=77), 8, 100)
    assert isinstance(h, faiss.IndexHNSWFlat) and h.hnsw.efSearch == 77 and h.metric_type == faiss.METRIC_INNER_PRODUCT
    assert isinstance(make_index(IndexConfig(kind="flat"), 8, 10), faiss.IndexFlatIP)
    # PQ: m divides dim; nbits shrinks with n; tiny shards fall back to ivf-flat
    assert resolve_pq(IndexConfig(pq_m=16, pq_nbits=8), 30, 100_000) == (15, 8)
    assert resolve_pq(IndexConfig(pq_m=16, pq_nbits=8), 64, 4000) == (16, 6)   # 4000/39 = 102 -> 2**6
    pq = make_index(IndexConfig(kind="ivf-pq", pq_m=16, pq_nbits=8), 64, 4000)
    assert isinstance(pq, faiss.IndexIVFPQ) and pq.pq.M == 16 and pq.pq.nbits == 6
    assert isinstance(make_index(IndexConfig(kind="ivf-pq"), 64, 500), faiss.IndexIVFFlat)
    with pytest.raises(ConfigError):
        make_index(IndexConfig(kind="lsh"), 8, 10)


def test_gpu_fallback_and_errors(monkeypatch):
    idx = faiss.IndexFlatIP(8)
    assert maybe_to_gpu(idx, "auto") is idx      # no GPU here: CPU
    assert maybe_to_gpu(idx, "false") is idx
    assert maybe_to_gpu(idx, False) is idx
    with pytest.raises(ConfigError, match="no GPU"):
        maybe_to_gpu(idx, "true")
    with pytest.raises(ConfigError, match="use_gpu"):
        maybe_to_gpu(idx, "sometimes")
    shard = IndexShard(IndexConfig(use_gpu="true"), 12)
    shard.add(corpus(20, 12))
    with pytest.raises(ConfigError, match="no GPU"):
        shard.build()
    # a GPU that faiss reports, but an index kind without a GPU version
    monkeypatch.setattr(factory, "num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: None, raising=False)
    h = faiss.IndexHNSWFlat(8, 16, faiss.METRIC_INNER_PRODUCT)
    assert maybe_to_gpu(h, "auto") is h
    with pytest.raises(ConfigError, match="no GPU version"):
        maybe_to_gpu(h, "true")
    # ... and a GPU move that fails: auto warns and stays on CPU, true is an error
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")),
                        raising=False)
    with pytest.warns(UserWarning, match="boom"):
        assert maybe_to_gpu(idx, "auto") is idx
    with pytest.raises(ConfigError, match="boom"):
        maybe_to_gpu(idx, "true")


# ---- duplicates and bad vectors ------------------------------------------------------------------------------

def dup_docs(second_text_same: bool):
    docs = corpus(30, 8, seed=13)
    docs.doc_ids[17] = "d4"                       # the id of ordinal 4, again at ordinal 17
    if second_text_same:
        docs.text_keys[17] = docs.text_keys[4]
        docs.vectors[17] = docs.vectors[4]
    return docs


def test_duplicate_same_text_kept_once_silently():
    docs = dup_docs(True)
    shard = IndexShard(FLAT, 8)
    shard.add(docs.take(np.arange(15, 30)))       # the later copy arrives first
    shard.add(docs.take(np.arange(0, 15)))
    assert shard.build() == []
    assert len(shard) == 29
    assert shard.ordinals[shard.lookup_ids(["d4"])[0]] == 4
    assert shard.lookup_ordinals(np.array([17, 4, 18])).tolist()[0] == -1


def test_duplicate_different_text_strict_names_both_locations():
    shard = IndexShard(FLAT, 8)
    shard.add(dup_docs(False))
    with pytest.raises(InputError) as e:
        shard.build()
    assert e.value.location == "corpus.jsonl:18"
    assert "corpus.jsonl:5" in e.value.reason and "'d4'" in e.value.reason


def test_duplicate_different_text_lenient_quarantines_later_rows():
    docs = dup_docs(False)
    docs.doc_ids[25] = "d4"                      # a third copy, with the first row's text: dropped silently
    docs.text_keys[25] = docs.text_keys[4]
    shard = IndexShard(FLAT, 8)
    shard.add(docs)
    records = shard.build(lenient=True)
    assert records == [{"location": "corpus.jsonl:18", "kind": "corpus",
                        "reason": "duplicate document id 'd4' with a different text than at corpus.jsonl:5; "
                                  "the first is kept"}]
    assert len(shard) == 28
    assert shard.ordinals[shard.lookup_ids(["d4"])[0]] == 4


def test_non_finite_vectors():
    docs = corpus(20, 8)
    docs.vectors[7, 3] = np.nan
    shard = IndexShard(FLAT, 8)
    shard.add(docs)
    with pytest.raises(InputError) as e:
        shard.build()
    assert e.value.location == "corpus.jsonl:8"
    shard = IndexShard(FLAT, 8)
    shard.add(docs)
    records = shard.build(lenient=True)
    assert [r["location"] for r in records] == ["corpus.jsonl:8"] and len(shard) == 19


# ---- lookups, answer, empty shards ---------------------------------------------------------------------------

def test_lookups_and_gather():
    docs = corpus(100, 8, seed=14)
    shard = build_shards(docs, 1, FLAT)[0]
    rows = shard.lookup_ids(["d3", "nope", "d99", "d3"])
    assert rows.tolist() == [3, -1, 99, 3]
    assert shard.lookup_ordinals(np.array([[0, 99], [100, -1]])).tolist() == [[0, 99], [-1, -1]]
    ords, tks, ids = shard.gather(np.array([[3, -1]]))
    assert ords.tolist() == [[3, -1]] and ids.tolist() == [["d3", ""]] and tks[0, 1] == 0
    assert tks[0, 0] == docs.text_keys[3]
    q = np.ones((1, 8), np.float32)
    s = shard.score_rows(q, np.array([[3, -1]]))
    assert s[0, 1] == -np.inf and s[0, 0] == np.float32(docs.vectors[3].astype(np.float64).sum())
    # a flat (or HNSW) shard rescores from faiss's own copy of the vectors (no second copy)
    assert shard._shares_storage
    assert build_shards(docs, 1, IndexConfig(kind="hnsw"))[0]._shares_storage
    assert not build_shards(docs, 1, IndexConfig(kind="ivf-flat"))[0]._shares_storage
    assert 100 * 8 * 4 <= shard.memory_bytes() < 3 * 100 * 8 * 4 + 100 * 200
    # k beyond the shard: padded
    b = shard.search(q, 120)
    assert b.ordinals.shape == (1, 120) and b.valid.sum() == 100 and b.scores[0, -1] == -np.inf
    assert b.doc_ids[0, -1] == "" and b.text_keys[0, -1] == 0
    assert shard.search(q, 0).ordinals.shape == (1, 0)


def test_answer_and_merge_answers():
    docs = corpus(600, 16, seed=15)
    shards = build_shards(docs, 3, FLAT)
    queries = np.random.default_rng(16).normal(size=(4, 16)).astype(np.float32)
    positive_ids = [["d10", "d500"], ["ghost", "d7", "d7"], [], ["d599", "ghost2", "d0"]]
    random_ordinals = np.array([[5, 6, 7], [-1, 600, 8], [9, 9, 10], [0, 1, 2]], np.int64)
    answers = [s.answer(queries, 12, positive_ids, random_ordinals) for s in shards]
    cands, pos, rnd, missing = merge_answers(answers, 12)
    ref_ords, ref_scores = reference_topk(queries, docs, 12)
    np.testing.assert_array_equal(cands.ordinals, ref_ords)
    np.testing.assert_array_equal(cands.scores, ref_scores)
    assert missing == [[], ["ghost"], [], ["ghost2"]]
    assert [p.tolist() for p in pos.ordinals] == [[10, 500], [7], [], [0, 599]]
    assert pos.doc_ids == [["d10", "d500"], ["d7"], [], ["d0", "d599"]]
    full = (queries.astype(np.float64) @ docs.vectors.astype(np.float64).T).astype(np.float32)
    for i in range(4):
        np.testing.assert_array_equal(pos.scores[i], full[i, pos.ordinals[i]])
        np.testing.assert_array_equal(pos.text_keys[i], docs.text_keys[pos.ordinals[i]])
    assert rnd.ordinals.tolist() == [[5, 6, 7], [-1, -1, 8], [9, 9, 10], [0, 1, 2]]
    ok = rnd.ordinals >= 0
    np.testing.assert_array_equal(rnd.scores[ok], np.take_along_axis(full, np.maximum(rnd.ordinals, 0), 1)[ok])
    assert (rnd.scores[~ok] == -np.inf).all() and (rnd.doc_ids[~ok] == "").all()
    assert rnd.doc_ids[0].tolist() == ["d5", "d6", "d7"]
    # each shard reports only what it holds
    held = [set(a.found_positive_ids[1]) for a in answers]
    assert sum("d7" in h for h in held) == 1
    # no random ordinals requested
    assert merge_answers([s.answer(queries, 3, positive_ids) for s in shards], 3)[2] is None


def test_empty_shard():
    shard = IndexShard(IndexConfig(kind="ivf-pq"), 8, shard_id=3)
    assert shard.build() == []
    assert len(shard) == 0 and shard.dim == 8 and shard.memory_bytes() == 0
    q = np.ones((2, 8), np.float32)
    b = shard.search(q, 5)
    assert b.ordinals.shape == (2, 5) and not b.valid.any() and (b.scores == -np.inf).all()
    assert shard.lookup_ids(["x"]).tolist() == [-1]
    assert shard.lookup_ordinals(np.array([0, 1])).tolist() == [-1, -1]
    a = shard.answer(q, 5, [["x"], []], np.array([[0], [1]]))
    assert a.found_positive_ids == [[], []] and a.positives.ordinals[0].size == 0
    assert (a.random.ordinals == -1).all()
    # merged with a real shard, the empty one changes nothing
    docs = corpus(40, 8, seed=17)
    full = build_shards(docs, 1, FLAT)[0]
    c, p, r, missing = merge_answers([a, full.answer(q, 5, [["x"], []], np.array([[0], [1]]))], 5)
    np.testing.assert_array_equal(c.ordinals, full.search(q, 5).ordinals)
    assert missing == [["x"], []] and r.ordinals.tolist() == [[0], [1]]


def test_tiny_corpus_over_many_shards_leaves_some_empty():
    docs = corpus(3, 8, seed=18)
    shards = build_shards(docs, 4, IndexConfig(kind="ivf-flat"), chunks=1)
    assert sorted(len(s) for s in shards)[0] == 0 and sum(len(s) for s in shards) == 3
    q = np.random.default_rng(19).normal(size=(2, 8)).astype(np.float32)
    got = search_all(shards, q, 5)
    ref_ords, ref_scores = reference_topk(q, docs, 3)
    np.testing.assert_array_equal(got.ordinals[:, :3], ref_ords)
    assert (got.ordinals[:, 3:] == -1).all()


def test_add_checks():
    shard = IndexShard(FLAT, 8)
    with pytest.raises(ValueError, match="dimension"):
        shard.add(corpus(5, 4))
    with pytest.raises(ValueError):
        ShardDocs(["a"], [0, 1], [0], np.zeros((1, 8)), ["x:1"])
    shard.add(corpus(5, 8))
    shard.build()
    with pytest.raises(RuntimeError):
        shard.add(corpus(5, 8))
    with pytest.raises(ValueError, match="queries"):
        shard.search(np.ones((2, 4), np.float32), 3)
