"""Near-duplicate guards (mining/near_duplicate.py): the pure functions against naive references, the guarded
mining against a brute-force reference over the whole score matrix (every sampler), the same negatives whatever
the shard count or block, and one run on the session Ray whose planted near-duplicates are removed and counted."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import streammine
from helpers import one_faiss_thread, precomputed_overrides, read_output, write_synthetic_beir  # noqa: F401
from streammine.config import FilterConfig, IndexConfig, MineConfig, MiningConfig, NearDuplicateConfig, SamplerConfig
from streammine.errors import ConfigError
from streammine.index.local import LocalShardedIndex, mine_block
from streammine.index.shard import ShardDocs
from streammine.keys import keys64, uniform_keys
from streammine.mining.near_duplicate import (VectorTable, cosines, greedy_distinct, near_positive,
                                              preference_order)
from streammine.mining.samplers import gumbel, simans_log_weights


# ---- references ----------------------------------------------------------------------------------------------

def naive_cos(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = float(np.sqrt((a @ a) * (b @ b)))  # sqrt(|a|^2 |b|^2): a copy has cosine exactly 1
    return 0.0 if den == 0 else float(a @ b) / den


def naive_greedy(vectors, n, threshold, blocked=None):
    """Kept indices, #blocked, #skipped, by a plain loop over python lists."""
    kept, n_blocked, n_skipped = [], 0, 0
    for j in range(len(vectors)):
        if len(kept) == n:
            break
        if blocked is not None and blocked[j]:
            n_blocked += 1
        elif threshold is not None and any(naive_cos(vectors[j], vectors[i]) >= threshold for i in kept):
            n_skipped += 1
        else:
            kept.append(j)
    return kept, n_blocked, n_skipped


def planted(rng, n, d, n_dups, scale=0.003):
    """n random vectors (varied norms, one zero row) whose last n_dups rows are near-copies of earlier ones."""
    v = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, (n, 1))
    src = rng.integers(0, n - n_dups, n_dups)
    v[n - n_dups:] = v[src] * rng.uniform(0.5, 2.0, (n_dups, 1)) + scale * rng.standard_normal((n_dups, d))
    v[1] = 0.0
    return v.astype(np.float32)


# ---- pure functions ------------------------------------------------------------------------------------------

def test_cosines_match_the_naive_formula_and_zero_vectors_are_never_near():
    rng = np.random.default_rng(0)
    a, b = planted(rng, 30, 12, 6), planted(rng, 9, 12, 2)
    got = cosines(a, b)
    want = np.array([[naive_cos(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert (got[1] == 0).all() and (got[:, 1] == 0).all()  # the zero rows
    # a copy, or a power-of-two multiple, of a vector has cosine exactly 1: threshold 1.0 catches exact duplicates
    x = np.random.default_rng(1).standard_normal((200, 24)).astype(np.float32)
    assert (np.diag(cosines(x, x)) == 1.0).all() and (np.diag(cosines(x, 4 * x)) == 1.0).all()
    table = VectorTable(np.arange(400), np.concatenate([x, 0.5 * x]))
    assert (table.pair_cosines(np.arange(200), np.arange(200, 400)) == 1.0).all()
    # the same bits whatever else is in the batch (fixed-order sums)
    assert np.array_equal(cosines(a[5:6], b[3:4])[0, 0], got[5, 3])


def test_threshold_is_inclusive_at_exact_equality():
    # 3-4-5 vectors: cosines computed exactly (0.6 = 3/5, 0.96 = 48/50, 1 = 25/25)
    a = np.array([[1, 0], [3, 4]], np.float32)
    b = np.array([[3, 4], [6, 8]], np.float32)
    c = cosines(a, b)
    assert c[0, 0] == 0.6 and c[1, 0] == 1.0 and c[1, 1] == 1.0
    table = VectorTable(np.array([0, 1, 2, 3]), np.array([[1, 0], [3, 4], [6, 8], [0, 0]], np.float32))
    cands = np.array([[0, 2, 3]])
    for thr, want in ((0.6, [True, True, False]), (np.nextafter(0.6, 1.0), [False, True, False]),
                      (1.0, [False, True, False])):
        got = near_positive(cands, np.ones((1, 3), bool), [np.array([1])], table, thr)
        assert got[0].tolist() == want, thr
    keep, _, skipped, _ = greedy_distinct(table.vectors[[1, 2, 0]], 3, 1.0)  # (6, 8) duplicates (3, 4) exactly
    assert keep.tolist() == [True, False, True] and skipped == 1
    keep, _, skipped, _ = greedy_distinct(table.vectors[[1, 2, 0]], 3, 0.6)
    assert keep.tolist() == [True, False, False] and skipped == 2  # (1, 0) has cosine exactly 0.6 to (3, 4)


@pytest.mark.parametrize("seed", range(4))
def test_near_positive_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, d, b, k = 120, 16, 7, 25
    v = planted(rng, n, d, 30)
    table = VectorTable(np.arange(n), v)
    cands = rng.integers(-1, n, (b, k))
    mask = (cands >= 0) & (rng.random((b, k)) < 0.8)
    # positives include the sources of planted copies, so some candidates are near them
    positives = [rng.choice(n, int(rng.integers(0, 4)), replace=False) for _ in range(b)]
    thr = 0.98
    got = near_positive(cands, mask, positives, table, thr)
    want = np.array([[bool(mask[i, j]) and any(naive_cos(v[cands[i, j]], v[p]) >= thr for p in positives[i])
                      for j in range(k)] for i in range(b)])
    assert np.array_equal(got, want)
    assert not near_positive(cands, mask, positives, table, None).any()


@pytest.mark.parametrize("seed", range(6))
def test_greedy_matches_the_naive_loop(seed):
    rng = np.random.default_rng(seed)
    v = planted(rng, 40, 8, 15, scale=0.02)
    order = rng.permutation(40)
    blocked = rng.random(40) < 0.1
    for n, thr in ((5, 0.99), (12, 0.999), (40, 0.99), (8, None)):
        keep, n_blocked, n_skipped, kept = greedy_distinct(v[order], n, thr, blocked=blocked)
        want, want_blocked, want_skipped = naive_greedy(v[order], n, thr, blocked)
        assert np.flatnonzero(keep).tolist() == want and (n_blocked, n_skipped) == (want_blocked, want_skipped)
        assert np.array_equal(kept, v[order][want])
        # kept negatives are pairwise below the threshold; every skipped one is near an earlier kept one
        if thr is not None:
            c = cosines(kept, kept)
            assert (c[~np.eye(len(kept), dtype=bool)] < thr).all()


def test_preference_order_is_the_survivors_by_key():
    keys = np.array([[0.5, 0.1, 0.9, 0.1]])
    surv = np.array([[True, True, False, True]])
    assert preference_order(surv, keys).tolist() == [[1, 3, 0, -1]]  # ties: lower column first


# ---- mining against a brute-force reference ------------------------------------------------------------------

def _corpus(seed=0, n=300, d=16):
    """Clustered vectors (varied norms) with near-copies of other documents: near-duplicates among candidates."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((6, d))
    v = centers[rng.integers(0, 6, n)] + 0.7 * rng.standard_normal((n, d))
    src = rng.integers(0, n - 60, 60)
    v[n - 60:] = v[src] * rng.uniform(0.8, 1.2, (60, 1)) + 0.01 * rng.standard_normal((60, d))
    v *= rng.uniform(0.7, 1.3, (n, 1))
    q = centers[rng.integers(0, 6, 40)] + 0.5 * rng.standard_normal((40, d))
    # each query's positives: one of its near-copied sources (so the copy is near it) and a random document
    positives = [[f"d{src[i % 60]}", f"d{int(rng.integers(0, n))}"] for i in range(40)]
    return v.astype(np.float32), q.astype(np.float32), positives


def _index(v, shards):
    n = len(v)
    docs = ShardDocs(np.array([f"d{i}" for i in range(n)], object), np.arange(n),
                     keys64([f"text {i}" for i in range(n)]), v, np.array([f"c:{i}" for i in range(n)], object))
    return LocalShardedIndex.build(IndexConfig(kind="flat", shards=shards), docs)


def _mining(method, pos_thr, neg_thr, **sampler):
    return MiningConfig(filter=FilterConfig(method="none"), seed=3,
                        sampler=SamplerConfig(method=method, num_negatives=6, range_max=30, simans_a=2.0, **sampler),
                        near_duplicate=NearDuplicateConfig(positive=pos_thr, negatives=neg_thr))


def reference(v, q, positives, cfg: MiningConfig):
    """Full score matrix; rank by (score desc, ordinal asc); the rank window over the non-positives; drop those
    near a positive; the survivors in the sampler's order; a naive greedy pass."""
    s = cfg.sampler
    out = {}
    for i in range(len(q)):
        scores = np.array([float(v[j].astype(np.float64) @ q[i].astype(np.float64)) for j in range(len(v))],
                          np.float32)
        pos = sorted({int(p[1:]) for p in positives[i]})
        ranked = [j for j in sorted(range(len(v)), key=lambda j: (-scores[j], j)) if j not in pos][:s.range_max]
        near = [any(naive_cos(v[j], v[p]) >= cfg.near_duplicate.positive for p in pos) for j in ranked]
        surv = [j for j, bad in zip(ranked, near) if not bad]
        if s.method in ("random", "simans"):
            qk = keys64([f"q{i}"])[0]
            u = {j: float(uniform_keys(cfg.seed, np.array([[qk]], np.uint64), np.array([[j]]))[0, 0]) for j in surv}
            if s.method == "random":
                surv.sort(key=lambda j: u[j])
            else:
                ref = min(scores[p] for p in pos)
                key = {j: float(simans_log_weights(np.array([[scores[j]]]), np.array([ref]), s.simans_a,
                                                   s.simans_b)[0, 0] + gumbel(np.array(u[j]))) for j in surv}
                surv.sort(key=lambda j: -key[j])
        kept, _, skipped = naive_greedy([v[j] for j in surv], s.num_negatives, cfg.near_duplicate.negatives)
        picked = sorted((surv[x] for x in kept), key=lambda j: ranked.index(j))
        out[i] = ([f"d{j}" for j in picked], int(sum(near)), skipped)
    return out


@pytest.mark.parametrize("method", ["top", "random", "simans"])
def test_guarded_mining_matches_brute_force(method):
    v, q, positives = _corpus()
    cfg = _mining(method, 0.98, 0.99)
    want = reference(v, q, positives, cfg)
    mined, _, _ = mine_block(_index(v, 3), q, [f"q{i}" for i in range(len(q))], positives, cfg, len(v))
    for i in range(len(q)):
        assert (mined.negative_doc_ids[i], int(mined.n_removed_near_duplicate_of_positive[i]),
                int(mined.n_removed_near_duplicate_negative[i])) == want[i], i
    assert mined.n_removed_near_duplicate_of_positive.sum() > 0 and mined.n_removed_near_duplicate_negative.sum() > 0


def _rows(mined):
    return [(mined.negative_doc_ids[i], mined.negative_ranks[i].tolist(), mined.negative_scores[i].tolist(),
             bool(mined.short[i]), int(mined.n_removed_near_duplicate_of_positive[i]),
             int(mined.n_removed_near_duplicate_negative[i]), int(mined.n_removed_filter[i]),
             int(mined.n_survivors[i])) for i in range(len(mined))]


@pytest.mark.parametrize("method", ["top", "random", "simans"])
def test_same_negatives_whatever_the_shards_and_blocks_and_none_changed_without_near_duplicates(method):
    v, q, positives = _corpus(seed=1)
    qids = [f"q{i}" for i in range(len(q))]
    extra = {"random_share": 0.34, "fill_with_random": True}
    cfg = _mining(method, 0.97, 0.98, **extra)
    whole, _, _ = mine_block(_index(v, 1), q, qids, positives, cfg, len(v))
    index3 = _index(v, 3)
    split = []
    for a, b in ((0, 7), (7, 8), (8, 40)):
        m, _, _ = mine_block(index3, q[a:b], qids[a:b], positives[a:b], cfg, len(v))
        split += _rows(m)
    assert _rows(whole) == split
    assert any(-1 in r[1] for r in split)  # random corpus negatives went through the guarded fill
    # without near-duplicates to find (threshold 1 and no identical vectors), the guarded picks are the sampler's
    off, _, _ = mine_block(index3, q, qids, positives, _mining(method, None, None, **extra), len(v))
    strict, _, _ = mine_block(index3, q, qids, positives, _mining(method, 1.0, 1.0, **extra), len(v))
    assert _rows(strict) == _rows(off)


def test_guard_on_without_a_vector_lookup_is_an_error():
    from streammine.mining import mine_batch
    from streammine.mining.types import CandidateBatch, PositiveBatch
    cands = CandidateBatch.empty(1, 3)
    with pytest.raises(ValueError, match="vectors_of"):
        mine_batch(np.zeros(1, np.uint64), cands, PositiveBatch([np.zeros(0, np.int64)], [np.zeros(0)], [[]], [[]]),
                   _mining("top", 0.9, None))


@pytest.mark.parametrize("key,value", [("positive", 0.0), ("negatives", 1.5), ("positive", -0.2)])
def test_thresholds_outside_zero_one_are_one_line_errors(key, value):
    cfg = MineConfig.from_dict({"input": {"path": "x"}, "mining": {"near_duplicate": {key: value}}})
    with pytest.raises(ConfigError, match=f"mining.near_duplicate.{key} must be"):
        cfg.validate()


def test_off_by_default_and_the_config_hash_is_unchanged():
    base = MineConfig.from_dict({"input": {"path": "x"}})
    assert not base.mining.near_duplicate.enabled
    on = MineConfig.from_dict({"input": {"path": "x"}, "mining": {"near_duplicate": {"positive": 0.98}}})
    assert on.config_hash() != base.config_hash()
    d = base.to_dict()
    del d["mining"]["near_duplicate"]
    assert "near_duplicate" not in json.dumps(d)


# ---- end to end on the session Ray ---------------------------------------------------------------------------

def test_planted_near_duplicates_removed_and_counted(ray_session, tmp_path):
    """Near-copies of positives and exact copies of other documents under new ids: with the guards, no negative is
    near a positive or another negative, the counts are a brute-force reference's, and summary.json and the report
    add up the per-query counts."""
    data = write_synthetic_beir(str(tmp_path / "data"), n_docs=200, n_queries=24, dim=16, duplicates=12)
    rng = np.random.default_rng(5)
    docs = data["docs"]
    copies = np.stack([docs[p[0]] * 1.5 + 0.002 * rng.standard_normal(16) for p in data["positives"][:16]])
    docs = np.concatenate([docs, copies.astype(np.float32)])  # not unit-norm: cosine, not the inner product
    np.save(data["corpus_vectors"], docs)
    with open(os.path.join(str(tmp_path / "data"), "corpus.ids.txt"), "w") as f:
        f.writelines(f"d{i}\n" for i in range(len(docs)))
    data["docs"] = docs
    overrides = {"mining.filter.method": "none", "mining.sampler.num_negatives": 5, "mining.sampler.range_max": 25,
                 "mining.near_duplicate.positive": 0.98, "mining.near_duplicate.negatives": 0.99}
    a = streammine.mine(overrides=precomputed_overrides(data, str(tmp_path / "a"), **overrides,
                                                        **{"index.shards": 2, "run.query_batch_size": 5}))
    rows = read_output(a.output)
    q = [f"q{i}" for i in range(24)]
    cfg = MiningConfig(filter=FilterConfig(method="none"),
                       sampler=SamplerConfig(num_negatives=5, range_max=25),
                       near_duplicate=NearDuplicateConfig(positive=0.98, negatives=0.99))
    want = reference(docs, data["queries"], [[f"d{p}" for p in ps] for ps in data["positives"]], cfg)
    for i, qid in enumerate(q):
        r = rows[qid]
        assert (r["negative_ids"], r["n_removed_near_duplicate_of_positive"],
                r["n_removed_near_duplicate_negative"]) == want[i], qid
    assert sum(r["n_removed_near_duplicate_of_positive"] for r in rows.values()) >= 16  # every planted copy
    assert sum(r["n_removed_near_duplicate_negative"] for r in rows.values()) > 0
    counts = json.load(open(os.path.join(a.output, "summary.json")))["counts"]
    for key in ("removed_near_duplicate_of_positive", "removed_near_duplicate_negative"):
        assert counts[key] == sum(r["n_" + key] for r in rows.values())
    from streammine.report import run_report
    stats = run_report(a.output, texts=False, sample=2)
    assert stats["counts"]["n_removed_near_duplicate_of_positive"] == counts["removed_near_duplicate_of_positive"]
    assert stats["counts"]["n_removed_near_duplicate_negative"] == counts["removed_near_duplicate_negative"]
    assert all(v["agree"] for v in stats["summary_agreement"].values())
    # one shard and other blocks: the same negatives and counts
    b = streammine.mine(overrides=precomputed_overrides(data, str(tmp_path / "b"), **overrides,
                                                        **{"index.shards": 1, "run.query_batch_size": 16}))
    rows_b = read_output(b.output)
    assert {k: (r["negative_ids"], r["n_removed_near_duplicate_of_positive"], r["n_removed_near_duplicate_negative"])
            for k, r in rows.items()} == \
        {k: (r["negative_ids"], r["n_removed_near_duplicate_of_positive"], r["n_removed_near_duplicate_negative"])
         for k, r in rows_b.items()}


def test_random_corpus_documents_are_guarded_in_draw_order():
    """Draws near a positive or near a kept hard negative are passed over (counted) and the next draws fill the
    slots; draws after the fill is complete are not counted."""
    from streammine.mining import mine_batch
    from streammine.mining.types import CandidateBatch, PositiveBatch
    rng = np.random.default_rng(2)
    v = rng.standard_normal((30, 8)).astype(np.float32)
    v[20] = 2 * v[0] + 1e-3   # near the positive 0
    v[21] = v[10] + 1e-3      # near the hard negative 10
    v[24] = v[0]              # near the positive, but drawn after the fill is complete

    def batch(ords):
        o = np.array([ords], np.int64)
        return CandidateBatch(o, -np.arange(len(ords), dtype=np.float32)[None, :], (o + 100).astype(np.uint64),
                              np.array([[f"d{x}" for x in ords]], object))
    cands, rand = batch([10, 11, 12]), batch([20, 21, 22, 23, 24])
    positives = PositiveBatch([np.array([0])], [np.array([1.0], np.float32)], [np.array([100], np.uint64)], [["d0"]])
    cfg = MiningConfig(filter=FilterConfig(method="none"),
                       sampler=SamplerConfig(num_negatives=4, random_share=0.5, range_max=10),
                       near_duplicate=NearDuplicateConfig(positive=0.99, negatives=0.99))
    mined = mine_batch(np.array([7], np.uint64), cands, positives, cfg, rand, vectors_of=lambda o: v[o])
    assert mined.negative_ordinals[0].tolist() == [10, 11, 22, 23]
    assert mined.negative_ranks[0].tolist() == [0, 1, -1, -1]
    assert (mined.n_removed_near_duplicate_of_positive[0], mined.n_removed_near_duplicate_negative[0]) == (1, 1)


def test_near_positive_candidates_are_counted_by_the_guard_not_the_filter():
    """With a score filter too, a window candidate near a positive is the guard's (removed_ids keeps only the
    filter's own); everything else the filter removes is unchanged."""
    v, q, positives = _corpus(seed=4)
    qids = [f"q{i}" for i in range(len(q))]
    index = _index(v, 2)
    cfg_on, cfg_off = _mining("top", 0.97, None), _mining("top", None, None)
    cfg_on.filter = cfg_off.filter = FilterConfig(method="topk-percpos", perc=0.9)
    on, cands, _ = mine_block(index, q, qids, positives, cfg_on, len(v))
    off, _, _ = mine_block(index, q, qids, positives, cfg_off, len(v))
    both = 0
    for i in range(len(q)):
        pos = [int(p[1:]) for p in positives[i]]
        near = {f"d{j}" for j in range(len(v)) if any(naive_cos(v[j], v[p]) >= 0.97 for p in pos)} - set(positives[i])
        assert not near & set(on.removed_doc_ids[i]) and not near & set(on.negative_doc_ids[i])
        assert set(on.removed_doc_ids[i]) == set(off.removed_doc_ids[i]) - near
        both += len(near & set(off.removed_doc_ids[i]))
        assert on.n_removed_filter[i] == off.n_removed_filter[i] - len(near & set(off.removed_doc_ids[i]))
    assert both > 0  # some near-copies scored above the filter bound: counted by the guard


@pytest.mark.parametrize("seed", range(3))
def test_distinct_picks_match_the_naive_loop_with_long_runs_of_copies(seed):
    """Rows whose preferred candidates are many copies of one another (the pass must look past n + a few) and
    thresholds met with equality (3-4-5 vectors: cosines 0.6 and 1 exactly)."""
    from streammine.mining.near_duplicate import distinct_picks
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, (12, 2)).astype(np.float32)
    base[:4] = [[3, 4], [6, 8], [1, 0], [-4, 3]]
    n_docs = 60
    v = base[rng.integers(0, 12, n_docs)] * rng.choice([1.0, 2.0, 0.5], (n_docs, 1)).astype(np.float32)
    v[:15] = [3, 4]  # fifteen copies of one direction
    table = VectorTable(np.arange(n_docs), v)
    b, k = 6, 30
    ordinals = np.stack([rng.permutation(n_docs)[:k] for _ in range(b)])
    ordinals[0, :15] = np.arange(15)  # row 0 prefers the copies first
    survivors = rng.random((b, k)) < 0.9
    survivors[0, :15] = True
    order = preference_order(survivors, rng.random((b, k)) if seed else np.arange(k)[None, :].repeat(b, 0))
    for n, thr in ((3, 1.0), (3, 0.6), (5, np.nextafter(0.6, 1.0)), (4, 0.99)):
        cols, skipped, kept = distinct_picks(order, ordinals, table, n, thr)
        for i in range(b):
            walk = order[i][order[i] >= 0]
            want, _, want_skipped = naive_greedy([v[o] for o in ordinals[i, walk]], n, thr)
            assert sorted(walk[want].tolist()) == cols[i][cols[i] >= 0].tolist() and skipped[i] == want_skipped
            assert np.array_equal(kept[i], v[ordinals[i, walk[want]]])


# ---- a new sampler is one class and one registry line --------------------------------------------------------

class _Easiest:
    """A sampler written as a newcomer would: the *lowest*-ranked survivors of the window first (its own range rule:
    a window of 12). Only keys and a name; the registry makes it a choice everywhere."""
    name = "easiest"
    uses_uniform_keys = False
    default_range_max = 12

    def keys(self, scores, pos_ref, u, params):
        return -np.broadcast_to(np.arange(np.shape(scores)[1], dtype=np.float64)[None, :], np.shape(scores))

    def pick(self, survivors, scores, pos_ref, n, u, params):
        from streammine.mining.samplers import pick_smallest
        return pick_smallest(survivors, self.keys(scores, pos_ref, u, params), n)


def _easiest_reference(v, q, positives, n, window, pos_thr, neg_thr):
    """Brute force: the window's non-positives, those near a positive dropped, the rest from the lowest-ranked up,
    a naive greedy pass; the picks back in rank order."""
    out = {}
    for i in range(len(q)):
        scores = (v.astype(np.float64) @ q[i].astype(np.float64)).astype(np.float32)
        pos = sorted({int(p[1:]) for p in positives[i]})
        ranked = [j for j in sorted(range(len(v)), key=lambda j: (-scores[j], j)) if j not in pos][:window]
        surv = [j for j in ranked if pos_thr is None or not any(naive_cos(v[j], v[p]) >= pos_thr for p in pos)]
        pref = surv[::-1]
        kept, _, _ = naive_greedy([v[j] for j in pref], n, neg_thr)
        out[i] = [f"d{j}" for j in sorted((pref[x] for x in kept), key=ranked.index)]
    return out


def test_a_sampler_added_by_one_class_and_one_registry_line_mines_with_and_without_the_guard(monkeypatch):
    import argparse
    from streammine.cli import build_parser
    from streammine.mining.samplers import SAMPLERS, window_end
    monkeypatch.setitem(SAMPLERS, "easiest", _Easiest())
    # config validation, the range rule and the CLI's choices read the registry
    cfg = streammine.load_config(None, {"input.path": "x", "mining.sampler.method": "easiest"})
    assert window_end(cfg.mining.sampler) == 12
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "easiest" in commands.choices["mine"].format_help()
    v, q, positives = _corpus(seed=2)
    qids = [f"q{i}" for i in range(len(q))]
    for pos_thr, neg_thr in ((None, None), (0.98, 0.99)):
        mining = MiningConfig(filter=FilterConfig(method="none"), seed=3,
                              sampler=SamplerConfig(method="easiest", num_negatives=4),
                              near_duplicate=NearDuplicateConfig(positive=pos_thr, negatives=neg_thr))
        mined, _, _ = mine_block(_index(v, 2), q, qids, positives, mining, len(v))
        want = _easiest_reference(v, q, positives, 4, 12, pos_thr, neg_thr)
        assert [mined.negative_doc_ids[i] for i in range(len(q))] == [want[i] for i in range(len(q))], pos_thr
    assert mined.n_removed_near_duplicate_negative.sum() > 0  # the guard did pass over some of its picks
    monkeypatch.delitem(SAMPLERS, "easiest")
    with pytest.raises(ConfigError, match="mining.sampler.method must be one of"):
        streammine.load_config(None, {"input.path": "x", "mining.sampler.method": "easiest"})
