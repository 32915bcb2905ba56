"""Score bounds, ranks, the rank window and the filter counts against per-query Python loops."""
from __future__ import annotations

import math

import numpy as np
import pytest

from streammine.config import FilterConfig
from streammine.mining import filter_candidates, rank_among_negatives, score_filter_masks, score_upper_bound


def reference_bound(pos: float, f: FilterConfig) -> float:
    if f.method == "none":
        return math.inf
    if f.method == "topk-abs":
        return f.max_score
    if f.method == "topk-marginpos":
        return pos - f.margin
    # percpos: a fraction of the way from s+ towards 0 ... and for s+ < 0, as far again below s+
    return f.perc * pos if pos >= 0 else pos - abs(pos) * (1 - f.perc)


FILTERS = [FilterConfig(method="none"), FilterConfig(method="topk-abs", max_score=0.375),
           FilterConfig(method="topk-marginpos", margin=0.1), FilterConfig(method="topk-percpos", perc=0.9),
           FilterConfig(method="topk-percpos", perc=1.0)]


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: f"{f.method}")
def test_score_upper_bound_matches_formula(f):
    pos = np.array([0.8, 0.05, 0.0, -0.05, -0.7, 1.0], np.float32).astype(np.float64)
    got = score_upper_bound(pos, f)
    assert got.dtype == np.float64 and got.shape == pos.shape
    for g, p in zip(got, pos):
        assert g == reference_bound(float(p), f)
    if f.method in ("topk-marginpos", "topk-percpos"):
        assert (got <= pos).all()  # a relative bound never lets through a score above the positive's


def test_percpos_negative_positive_score_bound_is_below_it():
    f = FilterConfig(method="topk-percpos", perc=0.9)
    got = score_upper_bound(np.array([-0.5, 0.5]), f)
    assert got[0] == pytest.approx(-0.55)  # not 0.9 * -0.5 = -0.45, which lies above s+
    assert got[1] == pytest.approx(0.45)


@pytest.mark.parametrize("method", ["topk-marginpos", "topk-percpos"])
def test_relative_filter_without_positive_score_raises_naming_it(method):
    with pytest.raises(ValueError, match=method):
        score_upper_bound(np.array([0.5, np.nan]), FilterConfig(method=method))


@pytest.mark.parametrize("method", ["none", "topk-abs"])
def test_absolute_filters_accept_missing_positive_score(method):
    got = score_upper_bound(np.array([np.nan]), FilterConfig(method=method, max_score=0.7))
    assert got[0] == (math.inf if method == "none" else 0.7)


def test_score_filter_is_strict_and_min_score_inclusive():
    # dyadic values: exact in float32, so "equal" really is equal
    scores = np.array([[0.5, 0.25, 0.125, 0.0625]], np.float32)
    below, meets = score_filter_masks(scores, np.array([0.5]), 0.125)
    assert below.tolist() == [[False, True, True, True]]
    assert meets.tolist() == [[True, True, True, False]]
    _, meets_none = score_filter_masks(scores, np.array([0.5]), None)
    assert meets_none.all()


def test_rank_among_negatives_matches_loop():
    rng = np.random.default_rng(0)
    eligible = rng.random((20, 15)) < 0.6
    got = rank_among_negatives(eligible)
    assert got.dtype == np.int64
    for i in range(20):
        r = 0
        for j in range(15):
            if eligible[i, j]:
                assert got[i, j] == r
                r += 1
            else:
                assert got[i, j] == -1


def reference_filter(scores, eligible, pos_ref, f, range_min, range_max):
    b, k = scores.shape
    out = {name: np.zeros((b, k), bool) for name in ("in_window", "removed_filter", "removed_min_score", "survivors")}
    for i in range(b):
        bound = reference_bound(float(pos_ref[i]), f)
        rank = 0
        for j in range(k):
            if not eligible[i, j]:
                continue
            in_window = range_min <= rank < range_max
            rank += 1
            if not in_window:
                continue
            out["in_window"][i, j] = True
            s = float(scores[i, j])
            if not s < bound:
                out["removed_filter"][i, j] = True
            elif f.min_score is not None and s < f.min_score:
                out["removed_min_score"][i, j] = True
            else:
                out["survivors"][i, j] = True
    return out


@pytest.mark.parametrize("window", [(0, 50), (2, 7), (0, 1), (5, 6)])
@pytest.mark.parametrize("min_score", [None, -0.25])
@pytest.mark.parametrize("f", FILTERS, ids=lambda f: f"{f.method}")
def test_filter_candidates_matches_loops(f, min_score, window):
    rng = np.random.default_rng(7)
    b, k = 30, 20
    # scores on a coarse dyadic grid (exact in float32): ties between candidates, and candidates exactly at the
    # bound (topk-abs, percpos with perc=1) or at min_score
    scores = np.sort(np.round(rng.uniform(-1, 1, (b, k)) * 8) / 8, axis=1)[:, ::-1].astype(np.float32)
    n_valid = rng.integers(0, k + 1, b)
    valid = np.arange(k)[None, :] < n_valid[:, None]
    scores[~valid] = -np.inf
    eligible = valid & (rng.random((b, k)) < 0.8)
    pos_ref = (np.round(rng.uniform(-1, 1, b) * 8) / 8).astype(np.float64)
    f = FilterConfig(method=f.method, max_score=f.max_score, margin=f.margin, perc=f.perc, min_score=min_score)
    got = filter_candidates(scores, eligible, pos_ref, f, *window)
    ref = reference_filter(scores, eligible, pos_ref, f, *window)
    for name, mask in ref.items():
        np.testing.assert_array_equal(getattr(got, name), mask, err_msg=name)
    np.testing.assert_array_equal(got.n_removed_filter, ref["removed_filter"].sum(1))
    np.testing.assert_array_equal(got.n_removed_min_score, ref["removed_min_score"].sum(1))
    np.testing.assert_array_equal(got.n_survivors, ref["survivors"].sum(1))
    if f.method in ("topk-marginpos", "topk-percpos"):
        # whatever the sign of s+, nothing at or above s+ survives
        assert (scores.astype(np.float64)[got.survivors] < np.broadcast_to(pos_ref[:, None], scores.shape)[got.survivors]).all()
    if window == (0, 50) and f.method == "topk-abs":
        assert ref["removed_filter"].any() and ref["survivors"].any()
        if min_score is not None:
            assert ref["removed_min_score"].any()
