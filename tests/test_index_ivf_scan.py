"""The list-by-list IVF-Flat batch scan (index/ivf_scan.py) against a brute-force reference and against faiss."""
import faiss
import numpy as np
import pytest

from streammine.config import IndexConfig
from streammine.index.ivf_scan import MIN_BATCH, InvertedListViews, ivf_batch_search, top_k_unsorted
from streammine.index.shard import IndexShard, ShardDocs
from streammine.keys import keys64


def _data(n, b, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((b, d)).astype(np.float32)
    return x, q


def _ivf(x, nlist, nprobe):
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = 1
    index.train(x)
    index.add(x)
    index.nprobe = nprobe
    return index


def _reference(index, x, q, probes, k):
    """Per query: the k best (score, label) among the vectors of its probed lists, scored in float64."""
    assign = index.quantizer.search(x, 1)[1][:, 0]  # the list each vector was added to
    out = []
    for i in range(len(q)):
        members = np.flatnonzero(np.isin(assign, probes[i][probes[i] >= 0]))
        s = x[members].astype(np.float64) @ q[i].astype(np.float64)
        best = np.argsort(-s, kind="stable")[:k]
        out.append((members[best], s[best]))
    return out


@pytest.mark.parametrize("n,nlist,nprobe,k", [(600, 12, 3, 10), (300, 30, 4, 25), (50, 5, 2, 40), (200, 8, 8, 5)])
def test_batch_scan_finds_the_reference_top_k(n, nlist, nprobe, k):
    x, q = _data(n, 97)
    index = _ivf(x, nlist, nprobe)
    _, probes = index.quantizer.search(q, nprobe)
    scores, labels = ivf_batch_search(probes, InvertedListViews.of(index), q, k)
    assert scores.shape == labels.shape == (len(q), k)
    for i, (ref_labels, ref_scores) in enumerate(_reference(index, x, q, probes, k)):
        got = labels[i] >= 0
        assert got.sum() == len(ref_labels)                      # fewer than k found: padded, never invented
        assert np.all(scores[i][~got] == -np.inf)
        assert set(labels[i][got].tolist()) == set(ref_labels.tolist())
        by_label = dict(zip(labels[i][got].tolist(), scores[i][got].tolist()))
        np.testing.assert_allclose([by_label[j] for j in ref_labels.tolist()], ref_scores, atol=1e-5)


def test_batch_scan_matches_faiss_search():
    x, q = _data(2000, 300, d=32, seed=1)
    index = _ivf(x, 20, 5)
    want_scores, want_labels = index.search(q, 30)
    _, probes = index.quantizer.search(q, 5)
    scores, labels = ivf_batch_search(probes, InvertedListViews.of(index), q, 30)
    for i in range(len(q)):
        assert set(labels[i].tolist()) == set(want_labels[i].tolist())
        np.testing.assert_allclose(np.sort(scores[i]), np.sort(want_scores[i]), atol=1e-5)


def test_missing_probes_and_empty_lists_are_skipped():
    x, q = _data(100, 3)
    index = _ivf(x, 4, 2)
    views = InvertedListViews.of(index)
    views.labels[1], views.vectors[1] = np.zeros(0, np.int64), np.zeros((0, x.shape[1]), np.float32)
    probes = np.array([[0, -1], [1, -1], [1, 2]], np.int64)
    scores, labels = ivf_batch_search(probes, views, q, 5)
    assert np.all(labels[1] == -1) and np.all(scores[1] == -np.inf)          # only an emptied list
    assert set(labels[0][labels[0] >= 0].tolist()) <= set(views.labels[0].tolist())
    assert set(labels[2][labels[2] >= 0].tolist()) <= set(views.labels[2].tolist())


def test_top_k_unsorted_pads_and_selects():
    s = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]], np.float32)
    lab = np.array([[10, 11, 12], [20, 21, 22]])
    ts, tl = top_k_unsorted(s, lab, 2)
    assert [set(r) for r in tl.tolist()] == [{10, 12}, {21, 22}]
    ts, tl = top_k_unsorted(s, lab, 5)
    assert tl.shape == (2, 5) and np.all(tl[:, 3:] == -1) and np.all(ts[:, 3:] == -np.inf)


def _shard(x, batch_scan):
    cfg = IndexConfig(kind="ivf-flat", nlist=16, nprobe=4, ivf_batch_scan=batch_scan)
    shard = IndexShard(cfg, x.shape[1])
    n = len(x)
    shard.add(ShardDocs([f"d{i}" for i in range(n)], np.arange(n), keys64([f"t{i}" for i in range(n)]), x,
                        ["f:1"] * n))
    shard.build()
    return shard


def test_a_shard_gives_the_same_candidates_with_and_without_the_batch_scan():
    x, q = _data(3000, MIN_BATCH + 36, d=24, seed=2)
    fast, plain = _shard(x, True), _shard(x, False)
    assert fast.proposer.lists is not None and plain.proposer.lists is None
    a, b = fast.search(q, 20), plain.search(q, 20)
    np.testing.assert_array_equal(a.ordinals, b.ordinals)
    np.testing.assert_array_equal(a.scores, b.scores)   # exact rescoring: the same bits
    (rows, approx), bound = fast.propose(q, 20)
    assert bound is not None and np.all(rows >= 0)
    exact = fast.score_rows(q, rows)
    assert np.all(np.abs(approx - exact) <= bound * np.linalg.norm(q, axis=1)[:, None])
