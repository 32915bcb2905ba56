"""mine_batch against a per-query Python reference, plus layout determinism, short queries and random mixing."""
from __future__ import annotations

import itertools
import zlib
import math
from dataclasses import replace

import numpy as np
import pytest

from streammine.config import CrossEncoderConfig, FilterConfig, MiningConfig, SamplerConfig
from streammine.keys import splitmix64, uniform_keys
from streammine.mining import (CandidateBatch, MinedBatch, PositiveBatch, cross_encoder_keep, mine_batch,
                               rescore_pool)

N_CORPUS = 80


def text_key_of(ordinal: int) -> int:
    return int(splitmix64(np.uint64(ordinal % 50)))  # o and o + 50 share a text


class World:
    """Queries over a small corpus with a consistent score for every (query, document) pair."""

    def __init__(self, seed: int, b: int, k: int, r: int = 8, max_positives: int = 3, allow_no_positive=False):
        rng = np.random.default_rng(seed)
        self.query_keys = rng.integers(0, 2**63, b, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        # scores on a coarse grid: ties, broken by ordinal as the index does
        self.score = np.round(np.clip(rng.normal(0, 0.4, (b, N_CORPUS)), -1, 1), 1).astype(np.float32)
        ords = np.full((b, k), -1, np.int64)
        pos_o, pos_s, pos_t, pos_i = [], [], [], []
        rand = np.full((b, r), -1, np.int64)
        for i in range(b):
            n_valid = int(rng.integers(0, k + 1)) if i % 4 == 3 else k  # every 4th row padded
            order = np.lexsort((np.arange(N_CORPUS), -self.score[i]))
            ords[i, :n_valid] = order[:n_valid]
            lo = 0 if allow_no_positive else 1
            n_pos = int(rng.integers(lo, max_positives + 1))
            # positives are mostly among the top candidates (as real ones are), sometimes not
            pool = order[:4] if rng.random() < 0.8 else np.arange(N_CORPUS)
            p = rng.choice(pool, n_pos, replace=False)
            pos_o.append(p.astype(np.int64))
            pos_s.append(self.score[i, p])
            pos_t.append(np.array([text_key_of(o) for o in p], np.uint64))
            pos_i.append([f"doc{o}" for o in p])
            # random draws: duplicates, positives and padding (documents the index could not return) included
            rand[i] = rng.integers(0, N_CORPUS, r)
            rand[i, rng.random(r) < 0.1] = -1
            if n_pos and rng.random() < 0.3:
                rand[i, 0] = p[0]
            if rng.random() < 0.3:
                rand[i, 1] = rand[i, 2]
        self.cands = self.batch(ords)
        self.positives = PositiveBatch(pos_o, pos_s, pos_t, pos_i)
        self.random_docs = self.batch(rand)

    def batch(self, ords: np.ndarray) -> CandidateBatch:
        valid = ords >= 0
        rows = np.arange(ords.shape[0])[:, None]
        scores = np.where(valid, self.score[rows, np.maximum(ords, 0)], -np.inf).astype(np.float32)
        tkeys = np.array([[text_key_of(o) if o >= 0 else 0 for o in row] for row in ords], np.uint64).reshape(ords.shape)
        ids = np.array([[f"doc{o}" if o >= 0 else "" for o in row] for row in ords], object).reshape(ords.shape)
        return CandidateBatch(ords, scores, tkeys, ids)


# ---- the reference: one query at a time, plain Python --------------------------------------------------------

def reference_bound(pos: float, f: FilterConfig) -> float:
    if f.method == "none":
        return math.inf
    if f.method == "topk-abs":
        return f.max_score
    if math.isnan(pos):
        raise ValueError(f.method)
    if f.method == "topk-marginpos":
        return pos - f.margin
    return f.perc * pos if pos >= 0 else pos - abs(pos) * (1 - f.perc)


def reference_query(qkey, c_ords, c_scores, c_texts, c_ids, p_ords, p_scores, p_texts, cfg: MiningConfig,
                    r_ords=None, r_scores=None, r_texts=None, r_ids=None, cross=None):
    """``cross``: a cross-encoder stand-in, ordinal -> score (RocketQA denoising with cfg.cross_encoder)."""
    s, f = cfg.sampler, cfg.filter
    pos_ords = {int(o) for o in p_ords}
    pos_texts = {int(t) for t in p_texts} if cfg.exclude_same_text else set()
    s_plus = min((float(x) for x in p_scores), default=math.nan)
    bound = reference_bound(s_plus, f)
    range_max = s.range_max if s.range_max is not None else (200 if s.method == "simans" else 50)
    res = dict(n_candidates=0, n_removed_positive=0, n_removed_same_text=0, n_removed_filter=0,
               n_removed_min_score=0, removed_ids=[], removed_scores=[], positive_ref=s_plus)
    survivors, rank_of, rank = [], {}, 0
    for j, o in enumerate(c_ords):
        o = int(o)
        if o < 0:
            continue
        res["n_candidates"] += 1
        if o in pos_ords:
            res["n_removed_positive"] += 1
            continue
        if int(c_texts[j]) in pos_texts:
            res["n_removed_same_text"] += 1
            continue
        rank_of[j], rank = rank, rank + 1
        if not s.range_min <= rank_of[j] < range_max:
            continue
        sc = float(c_scores[j])
        if not sc < bound:
            res["n_removed_filter"] += 1
            res["removed_ids"].append(c_ids[j])
            res["removed_scores"].append(sc)
        elif f.min_score is not None and sc < f.min_score:
            res["n_removed_min_score"] += 1
        else:
            survivors.append(j)
    res["n_removed_cross_encoder"] = 0
    if cross is not None:
        ce = cfg.cross_encoder
        pool = ce.pool
        pooled = survivors[:pool] if pool else survivors
        # the bound, brute force: threshold, and margins to the *minimum* positive cross-encoder score
        c_plus = min(cross(int(o)) for o in p_ords)
        ce_bound = min([math.inf] + ([ce.threshold] if ce.threshold is not None else [])
                       + ([c_plus - ce.margin] if ce.margin is not None else [])
                       + ([c_plus - abs(c_plus) * ce.relative_margin] if ce.relative_margin is not None else []))
        survivors = [j for j in pooled if cross(int(c_ords[j])) < ce_bound]
        res["n_removed_cross_encoder"] = len(pooled) - len(survivors)
        res["scored"] = [int(c_ords[j]) for j in pooled]
    res["n_survivors"] = len(survivors)

    n = s.num_negatives
    n_random = int(math.floor(s.random_share * n + 0.5))
    n_hard = n - n_random

    def u(o):
        return float(uniform_keys(cfg.seed, np.uint64(qkey), np.int64(o)))

    if s.method == "top":
        hard = survivors[:n_hard]
    elif s.method == "random":
        hard = sorted(sorted(survivors, key=lambda j: (u(c_ords[j]), j))[:n_hard])
    else:
        def key(j):
            return -s.simans_a * (float(c_scores[j]) - s_plus - s.simans_b) ** 2 - math.log(-math.log(u(c_ords[j])))
        hard = sorted(sorted(survivors, key=lambda j: (-key(j), j))[:n_hard])
    negs = [(int(c_ords[j]), float(c_scores[j]), c_ids[j], rank_of[j]) for j in hard]

    if r_ords is not None:
        taken = {o for o, *_ in negs}
        # random documents fill their share; the hard slots left empty only with fill_with_random
        limit = n if s.fill_with_random else len(negs) + n_random
        for j, o in enumerate(r_ords):
            o = int(o)
            if len(negs) >= limit:
                break
            sc = float(r_scores[j])
            if (o < 0 or o in pos_ords or o in taken or int(r_texts[j]) in pos_texts or not sc < bound
                    or (f.min_score is not None and sc < f.min_score)):
                continue
            negs.append((o, sc, r_ids[j], -1))
            taken.add(o)
    res["negatives"] = negs
    res["short"] = len(negs) < n
    return res


def reference_batch(world: World, cfg: MiningConfig, with_random: bool, cross=None):
    out = []
    c, p, r = world.cands, world.positives, world.random_docs
    for i in range(len(world.query_keys)):
        extra = (r.ordinals[i], r.scores[i], r.text_keys[i], r.doc_ids[i]) if with_random else (None,) * 4
        out.append(reference_query(int(world.query_keys[i]), c.ordinals[i], c.scores[i], c.text_keys[i],
                                   c.doc_ids[i], p.ordinals[i], p.scores[i], p.text_keys[i], cfg, *extra,
                                   cross=cross))
    return out


def query_result(m: MinedBatch, i: int):
    """Everything mine_batch says about query i, in comparable form."""
    return dict(
        negatives=list(zip(m.negative_ordinals[i].tolist(), m.negative_scores[i].tolist(), m.negative_doc_ids[i],
                           m.negative_ranks[i].tolist())),
        removed=(list(m.removed_doc_ids[i]), m.removed_scores[i].tolist()),
        counts=tuple(int(getattr(m, name)[i]) for name in COUNTS), short=bool(m.short[i]),
        positive_ref=float(m.positive_ref[i]))


COUNTS = ("n_candidates", "n_removed_positive", "n_removed_same_text", "n_removed_filter", "n_removed_min_score",
          "n_survivors")

FILTERS = [FilterConfig(method="none"), FilterConfig(method="topk-abs", max_score=0.6),
           FilterConfig(method="topk-marginpos", margin=0.1), FilterConfig(method="topk-percpos", perc=0.9)]


@pytest.mark.parametrize("f,sampler,random_share,exclude_same_text,min_score,window", [
    (f, sampler, share, ex, ms, win)
    for f, sampler, share, ex, ms, win in itertools.product(
        FILTERS, ["top", "random", "simans"], [0.0, 0.5], [True, False], [None, 0.3], [(0, None), (2, 14)])
], ids=lambda v: getattr(v, "method", str(v)))
def test_mine_batch_matches_reference(f, sampler, random_share, exclude_same_text, min_score, window):
    world = World(seed=zlib.crc32(f"{f.method}/{sampler}".encode()) % 1000, b=16, k=24)
    cfg = MiningConfig(filter=replace(f, min_score=min_score),
                       sampler=SamplerConfig(method=sampler, num_negatives=5, range_min=window[0], range_max=window[1],
                                             simans_a=3.0, simans_b=-0.1, random_share=random_share),
                       exclude_same_text=exclude_same_text, seed=17)
    with_random = random_share > 0
    mined = mine_batch(world.query_keys, world.cands, world.positives, cfg,
                       world.random_docs if with_random else None)
    ref = reference_batch(world, cfg, with_random)
    assert len(mined) == len(ref) == 16  # no query is ever dropped
    for i, r in enumerate(ref):
        got = query_result(mined, i)
        assert got["negatives"] == r["negatives"], i
        assert got["removed"] == (r["removed_ids"], r["removed_scores"]), i
        assert got["counts"] == tuple(r[name] for name in COUNTS), i
        assert got["short"] == r["short"]
        assert got["positive_ref"] == r["positive_ref"]
    assert mined.negative_scores[0].dtype == np.float32 and mined.negative_ranks[0].dtype == np.int32
    assert mined.negative_ordinals[0].dtype == np.int64


@pytest.mark.parametrize("sampler", ["top", "simans"])
def test_fill_with_random_matches_reference(sampler):
    world = World(seed=21, b=24, k=12, r=16)
    cfg = MiningConfig(filter=FilterConfig(method="topk-percpos", perc=0.9),
                       sampler=SamplerConfig(method=sampler, num_negatives=6, range_max=6, random_share=0.34,
                                             fill_with_random=True, simans_a=3.0), seed=3)
    mined = mine_batch(world.query_keys, world.cands, world.positives, cfg, world.random_docs)
    ref = reference_batch(world, cfg, True)
    for i, r in enumerate(ref):
        got = query_result(mined, i)
        assert got["negatives"] == r["negatives"] and got["short"] == r["short"], i
    # some query had fewer hard negatives than its hard share and got more random ones than its share
    assert any(sum(rk == -1 for *_, rk in r["negatives"]) > 2 for r in ref)


def fake_cross_encoder(ordinal: int) -> float:
    """A deterministic stand-in for a cross-encoder's score of (query, document): scattered over [0, 1)."""
    return float((ordinal * 2654435761) % 1000) / 1000.0


@pytest.mark.parametrize("sampler,pool,random_share,threshold,margin,relative_margin", [
    ("top", 0, 0.0, 0.6, None, None), ("top", 3, 0.0, 0.6, None, None), ("random", 6, 0.0, 0.6, None, None),
    ("simans", 0, 0.0, 0.6, None, None), ("top", 4, 0.4, 0.6, None, None),
    ("top", 0, 0.0, None, 0.05, None), ("top", 0, 0.4, None, None, 0.1), ("top", 0, 0.0, 0.7, 0.02, 0.2)])
def test_cross_encoder_denoising_matches_reference(sampler, pool, random_share, threshold, margin,
                                                   relative_margin):
    world = World(seed=11, b=24, k=24)
    cfg = MiningConfig(filter=FilterConfig(method="topk-percpos", perc=0.95),
                       sampler=SamplerConfig(method=sampler, num_negatives=4, random_share=random_share),
                       cross_encoder=CrossEncoderConfig(model="stand-in", threshold=threshold, pool=pool,
                                                        margin=margin, relative_margin=relative_margin), seed=5)
    ref = reference_batch(world, cfg, random_share > 0, cross=fake_cross_encoder)
    asked = {}

    def cross_scores(doc_ids, mask, stage):
        asked[stage] = (doc_ids, mask.copy())
        ordinals = np.vectorize(lambda d: int(d[3:]) if d else 0, otypes=[np.int64])(doc_ids)
        scores = np.vectorize(fake_cross_encoder, otypes=[np.float64])(ordinals)
        return np.where(mask, scores, np.nan)

    mined = mine_batch(world.query_keys, world.cands, world.positives, cfg,
                       world.random_docs if random_share > 0 else None, cross_scores)
    # one scoring call per kind and batch: the model sees every pair at once
    assert set(asked) == {"positives", "pool"} | ({"random"} if random_share > 0 else set())
    for i, r in enumerate(ref):
        got = query_result(mined, i)
        # only the pooled survivors were scored
        assert world.cands.ordinals[i, asked["pool"][1][i]].tolist() == r["scored"], i
        assert got["negatives"] == r["negatives"], i
        assert got["counts"] == tuple(r[name] for name in COUNTS), i
        assert int(mined.n_removed_cross_encoder[i]) == r["n_removed_cross_encoder"], i
        if threshold is not None:
            assert all(fake_cross_encoder(o) < threshold for o, _, _, rank in got["negatives"] if rank >= 0)
        # teacher scores: every kept negative (random ones too) and every positive, aligned with their lists
        assert mined.negative_ce_scores[i].tolist() == pytest.approx(
            [fake_cross_encoder(o) for o, *_ in got["negatives"]]), i
        assert mined.positive_ce_scores[i].tolist() == pytest.approx(
            [fake_cross_encoder(o) for o in world.positives.ordinals[i]]), i
    assert mined.n_removed_cross_encoder.sum() > 0 and sum(len(x) for x in mined.negative_ordinals) > 0


def test_cross_encoder_masks():
    survivors = np.array([[1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]], bool)
    np.testing.assert_array_equal(rescore_pool(survivors, 2), [[1, 0, 1, 0, 0, 0], [0] * 6, [1, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(rescore_pool(survivors, 0), survivors)
    scores = np.where(survivors, [[0.1, 9, 0.5, 0.49, 9, 0.7]] * 3, np.nan)
    np.testing.assert_array_equal(cross_encoder_keep(scores, survivors, 0.5),
                                  [[1, 0, 0, 1, 0, 0], [0] * 6, [1, 0, 0, 0, 0, 0]])  # strictly below
    with pytest.raises(ValueError, match="no finite score"):
        cross_encoder_keep(np.full(survivors.shape, np.nan), survivors, 0.5)
    with pytest.raises(ValueError, match="shape"):
        cross_encoder_keep(scores[:, :3], survivors, 0.5)


def test_reference_comparison_covers_every_path():
    """The generated worlds exercise what the comparison above is meant to check."""
    world = World(seed=3, b=40, k=24)
    cfg = MiningConfig(filter=FilterConfig(method="topk-percpos", perc=0.9, min_score=0.3),
                       sampler=SamplerConfig(method="top", num_negatives=5, random_share=0.4), seed=1)
    ref = reference_batch(world, cfg, True)
    total = {name: sum(r[name] for r in ref) for name in COUNTS}
    assert all(total[name] > 0 for name in COUNTS), total
    assert any(r["short"] for r in ref) and not all(r["short"] for r in ref)
    assert any(rk == -1 for r in ref for *_, rk in r["negatives"])


def slice_world(world: World, rows, pad: int = 0):
    """The same queries in another batch: rows picked/reordered, and ``pad`` extra padding columns."""
    def take(batch: CandidateBatch) -> CandidateBatch:
        b = CandidateBatch.empty(len(rows), batch.ordinals.shape[1] + pad)
        k = batch.ordinals.shape[1]
        for name in ("ordinals", "scores", "text_keys", "doc_ids"):
            getattr(b, name)[:, :k] = getattr(batch, name)[rows]
        return b
    p = world.positives
    positives = PositiveBatch([p.ordinals[i] for i in rows], [p.scores[i] for i in rows],
                              [p.text_keys[i] for i in rows], [p.doc_ids[i] for i in rows])
    return world.query_keys[rows], take(world.cands), positives, take(world.random_docs)


@pytest.mark.parametrize("sampler", ["top", "random", "simans"])
def test_same_query_same_negatives_whatever_the_batch(sampler):
    world = World(seed=11, b=12, k=20)
    cfg = MiningConfig(filter=FilterConfig(method="topk-marginpos", margin=0.05),
                       sampler=SamplerConfig(method=sampler, num_negatives=4, random_share=0.25, simans_a=2.0),
                       seed=99)
    rows = list(range(12))
    def mine(rows, pad=0, cfg=cfg):
        keys, cands, positives, random_docs = slice_world(world, rows, pad)
        return mine_batch(keys, cands, positives, cfg, random_docs)

    full = mine(rows)
    expected = [query_result(full, i) for i in rows]
    layouts = [[i] for i in rows] + [rows[::-1], [5, 0, 9], [7, 3, 3, 1]]
    for layout in layouts:
        for pad in (0, 6):
            got = mine(layout, pad)
            for pos, i in enumerate(layout):
                assert query_result(got, pos) == expected[i], (layout, pad, i)
    # and the randomness is real: another seed changes some query's negatives
    if sampler != "top":
        other = mine(rows, cfg=replace(cfg, seed=100))
        assert any(query_result(other, i)["negatives"] != expected[i]["negatives"] for i in rows)


def test_short_queries_are_kept_and_counted():
    world = World(seed=5, b=3, k=10)
    world.cands.ordinals[0, :], world.cands.scores[0, :] = -1, -np.inf   # no candidates at all
    world.cands.ordinals[1, 3:], world.cands.scores[1, 3:] = -1, -np.inf  # three candidates
    cfg = MiningConfig(filter=FilterConfig(method="none"), sampler=SamplerConfig(method="top", num_negatives=5))
    m = mine_batch(world.query_keys, world.cands, world.positives, cfg)
    assert len(m) == 3
    assert m.n_candidates.tolist()[:2] == [0, 3]
    assert len(m.negative_ordinals[0]) == 0 and m.short[0]
    assert len(m.negative_ordinals[1]) == m.n_survivors[1] <= 3 and m.short[1]
    assert not m.short[2] and len(m.negative_ordinals[2]) == 5


@pytest.mark.parametrize("share,n,expected_random", [(0.5, 5, 3), (0.3, 5, 2), (0.1, 5, 1), (0.0, 5, 0),
                                                     (1.0, 4, 4), (0.25, 2, 1)])
def test_random_share_rounds_half_up_and_orders_hard_first(share, n, expected_random):
    world = World(seed=8, b=10, k=30, r=40)
    cfg = MiningConfig(filter=FilterConfig(method="none"),
                       sampler=SamplerConfig(method="top", num_negatives=n, random_share=share))
    m = mine_batch(world.query_keys, world.cands, world.positives, cfg, world.random_docs)
    for i in range(10):
        ranks = m.negative_ranks[i].tolist()
        assert len(ranks) == n and not m.short[i]  # plenty of candidates and random draws here
        assert ranks == sorted(ranks[:n - expected_random]) + [-1] * expected_random
        assert min(ranks[:n - expected_random], default=0) >= 0
        assert len(set(m.negative_ordinals[i].tolist())) == n


def test_random_documents_take_their_share_only_unless_told_to_fill():
    """random_share caps the random negatives: a query short of hard negatives stays short. With
    fill_with_random, random documents also take the hard slots the window could not fill."""
    world = World(seed=2, b=4, k=10, r=30)
    cfg = MiningConfig(filter=FilterConfig(method="none"),
                       sampler=SamplerConfig(method="top", num_negatives=6, range_max=2, random_share=0.5))
    m = mine_batch(world.query_keys, world.cands, world.positives, cfg, world.random_docs)
    for i in range(4):
        n_hard = int((m.negative_ranks[i] >= 0).sum())
        assert n_hard == min(2, m.n_survivors[i]) < 3  # the window holds at most 2 of the 3 hard slots
        assert int((m.negative_ranks[i] == -1).sum()) == 3  # random documents: their share, no more
        assert m.short[i]
    filled = mine_batch(world.query_keys, world.cands, world.positives,
                        replace(cfg, sampler=replace(cfg.sampler, fill_with_random=True)), world.random_docs)
    for i in range(4):
        assert len(filled.negative_ordinals[i]) == 6 and not filled.short[i]  # random documents take the rest
        got = m.negative_ordinals[i].tolist()
        assert filled.negative_ordinals[i][:len(got)].tolist() == got  # the same first ones, then more draws
    none = mine_batch(world.query_keys, world.cands, world.positives, cfg, None)
    assert none.short.all() and all(len(x) <= 2 for x in none.negative_ordinals)


def test_random_documents_are_screened_like_candidates():
    t_pos = text_key_of(1)
    cands = CandidateBatch(np.array([[1, 2, 3]]), np.array([[0.9, 0.5, 0.4]], np.float32),
                           np.array([[t_pos, text_key_of(2), text_key_of(3)]], np.uint64),
                           np.array([["doc1", "doc2", "doc3"]], object))
    positives = PositiveBatch([np.array([1])], [np.array([0.9], np.float32)], [np.array([t_pos], np.uint64)],
                              [["doc1"]])
    #            padding  positive  same text  hard pick  above bound  below min  ok     repeat  ok     (full)
    r_ords = [-1, 1, 51, 2, 10, 11, 12, 12, 13, 14]
    r_scores = [-np.inf, 0.9, 0.2, 0.5, 0.85, -0.9, 0.1, 0.1, 0.3, 0.0]
    r_texts = [0 if o < 0 else text_key_of(o) for o in r_ords]
    random_docs = CandidateBatch(np.array([r_ords]), np.array([r_scores], np.float32), np.array([r_texts], np.uint64),
                                 np.array([[f"doc{o}" for o in r_ords]], object))
    cfg = MiningConfig(filter=FilterConfig(method="topk-percpos", perc=0.9, min_score=-0.5),  # bound 0.81
                       sampler=SamplerConfig(method="top", num_negatives=4, random_share=0.5))
    m = mine_batch(np.array([7], np.uint64), cands, positives, cfg, random_docs)
    assert m.negative_ordinals[0].tolist() == [2, 3, 12, 13]
    assert m.negative_ranks[0].tolist() == [0, 1, -1, -1]
    assert m.negative_doc_ids[0] == ["doc2", "doc3", "doc12", "doc13"]
    loose = replace(cfg, exclude_same_text=False)
    assert mine_batch(np.array([7], np.uint64), cands, positives, loose, random_docs).negative_ordinals[0].tolist() \
        == [2, 3, 51, 12]


def test_relative_filter_needs_a_positive_score():
    world = World(seed=4, b=3, k=8, allow_no_positive=True, max_positives=0)
    cfg = MiningConfig(filter=FilterConfig(method="topk-marginpos"))
    with pytest.raises(ValueError, match="topk-marginpos"):
        mine_batch(world.query_keys, world.cands, world.positives, cfg)
    ok = mine_batch(world.query_keys, world.cands, world.positives, replace(cfg, filter=FilterConfig(method="none")))
    assert np.isnan(ok.positive_ref).all() and (ok.n_removed_positive == 0).all()


def test_empty_batches():
    cfg = MiningConfig(sampler=SamplerConfig(method="random", num_negatives=3))
    empty = PositiveBatch([], [], [], [])
    m = mine_batch(np.zeros(0, np.uint64), CandidateBatch.empty(0, 5), empty, cfg)
    assert len(m) == 0 and m.short.shape == (0,)
    one = PositiveBatch([np.array([4])], [np.array([0.5], np.float32)], [np.array([9], np.uint64)], [["d4"]])
    m = mine_batch(np.ones(1, np.uint64), CandidateBatch.empty(1, 0), one, cfg, CandidateBatch.empty(1, 0))
    assert m.short.tolist() == [True] and len(m.negative_ordinals[0]) == 0


def test_cross_encoder_bound_and_positive_reference_brute_force():
    from streammine.mining.filters import cross_encoder_bound
    from streammine.mining.rescore import positive_ce_reference
    rng = np.random.default_rng(4)
    pos = rng.normal(0, 3, (30, 4))
    mask = rng.random((30, 4)) < 0.7
    mask[:, 0] = True
    ref = positive_ce_reference(np.where(mask, pos, np.nan), mask)
    assert ref.tolist() == [min(p for p, m in zip(row, mrow) if m) for row, mrow in zip(pos, mask)]
    assert np.isnan(positive_ce_reference(np.zeros((1, 2)), np.zeros((1, 2), bool))).all()
    assert (ref < 0).any() and (ref > 0).any()  # both signs of c+ for the relative rule
    for threshold, margin, rel in [(0.5, None, None), (None, 0.3, None), (None, None, 0.2), (1.0, 0.1, 0.5)]:
        got = cross_encoder_bound(ref, threshold, margin, rel)
        want = [min([math.inf] + ([threshold] if threshold is not None else [])
                    + ([c - margin] if margin is not None else [])
                    + ([c - abs(c) * rel] if rel is not None else [])) for c in ref]
        assert got.tolist() == pytest.approx(want)
        if margin is not None or rel is not None:
            assert (got < ref).all()  # never at or above the weakest positive
    with pytest.raises(ValueError, match="no positive cross-encoder score"):
        cross_encoder_bound(np.array([0.1, np.nan]), None, 0.1, None)
    assert cross_encoder_bound(np.array([np.nan]), 0.3, None, None).tolist() == [0.3]  # threshold alone
