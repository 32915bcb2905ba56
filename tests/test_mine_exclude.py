"""positive_masks / positive_reference / row_isin against per-query Python loops."""
from __future__ import annotations

import math

import numpy as np
import pytest

from streammine.keys import splitmix64
from streammine.mining import CandidateBatch, PositiveBatch, positive_masks, positive_reference, row_isin

N_CORPUS = 60


def text_key_of(ordinal: int) -> int:
    # ordinals o and o + 40 share a text (duplicates in the corpus); keys use all 64 bits, high bit included
    return int(splitmix64(np.uint64(ordinal % 40)))


def make_batch(rng: np.random.Generator, b: int, k: int):
    ords = np.full((b, k), -1, np.int64)
    scores = np.full((b, k), -np.inf, np.float32)
    tkeys = np.zeros((b, k), np.uint64)
    ids = np.full((b, k), "", object)
    pos_o, pos_s, pos_t, pos_i = [], [], [], []
    for i in range(b):
        n_valid = int(rng.integers(0, k + 1))
        row_o = rng.choice(N_CORPUS, n_valid, replace=False)
        row_s = np.round(rng.uniform(-1, 1, n_valid), 1).astype(np.float32)  # rounding makes ties
        order = np.lexsort((row_o, -row_s))
        ords[i, :n_valid], scores[i, :n_valid] = row_o[order], row_s[order]
        tkeys[i, :n_valid] = [text_key_of(o) for o in ords[i, :n_valid]]
        ids[i, :n_valid] = [f"d{o}" for o in ords[i, :n_valid]]
        p = rng.choice(N_CORPUS, int(rng.integers(0, 4)), replace=False)
        pos_o.append(p.astype(np.int64))
        pos_s.append(rng.uniform(-1, 1, len(p)).astype(np.float32))
        pos_t.append(np.array([text_key_of(o) for o in p], np.uint64))
        pos_i.append([f"d{o}" for o in p])
    return CandidateBatch(ords, scores, tkeys, ids), PositiveBatch(pos_o, pos_s, pos_t, pos_i)


def reference_masks(cands, positives, exclude_same_text):
    b, k = cands.ordinals.shape
    is_pos = np.zeros((b, k), bool)
    is_same = np.zeros((b, k), bool)
    for i in range(b):
        pos_ordinals = set(int(o) for o in positives.ordinals[i])
        pos_texts = set(int(t) for t in positives.text_keys[i])
        for j in range(k):
            o = int(cands.ordinals[i, j])
            if o < 0:
                continue
            if o in pos_ordinals:
                is_pos[i, j] = True
            elif exclude_same_text and int(cands.text_keys[i, j]) in pos_texts:
                is_same[i, j] = True
    return is_pos, is_same


@pytest.mark.parametrize("exclude_same_text", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_positive_masks_match_loops(seed, exclude_same_text):
    cands, positives = make_batch(np.random.default_rng(seed), b=25, k=30)
    is_pos, is_same = positive_masks(cands, positives, exclude_same_text)
    ref_pos, ref_same = reference_masks(cands, positives, exclude_same_text)
    assert is_pos.dtype == bool and is_pos.shape == cands.ordinals.shape
    np.testing.assert_array_equal(is_pos, ref_pos)
    np.testing.assert_array_equal(is_same, ref_same)
    assert not (is_pos & is_same).any()
    if seed == 0:  # the generator must exercise both cases, or the comparison proves little
        assert ref_pos.any() and (ref_same.any() or not exclude_same_text)


def test_same_text_is_not_the_positive_itself_and_ignores_padding():
    t = text_key_of(3)
    cands = CandidateBatch(ordinals=np.array([[3, 43, 7, -1]], np.int64),
                           scores=np.array([[0.9, 0.8, 0.1, -np.inf]], np.float32),
                           text_keys=np.array([[t, t, text_key_of(7), 0]], np.uint64),
                           doc_ids=np.array([["d3", "d43", "d7", ""]], object))
    # a positive whose text key is 0 must not mark the padding (text key 0) as same-text
    positives = PositiveBatch([np.array([3, 50], np.int64)], [np.array([0.9, 0.5], np.float32)],
                              [np.array([t, 0], np.uint64)], [["d3", "d50"]])
    is_pos, is_same = positive_masks(cands, positives, True)
    assert is_pos.tolist() == [[True, False, False, False]]
    assert is_same.tolist() == [[False, True, False, False]]
    _, is_same_off = positive_masks(cands, positives, False)
    assert not is_same_off.any()


def test_positive_reference_is_min_and_nan_without_positives():
    rng = np.random.default_rng(1)
    scores = [rng.uniform(-1, 1, n).astype(np.float32) for n in (0, 1, 3, 5, 0, 2)]
    positives = PositiveBatch([np.arange(len(s)) for s in scores], scores,
                              [np.zeros(len(s), np.uint64) for s in scores], [[""] * len(s) for s in scores])
    got = positive_reference(positives)
    assert got.dtype == np.float64 and got.shape == (6,)
    for i, s in enumerate(scores):
        if len(s) == 0:
            assert math.isnan(got[i])
        else:
            assert got[i] == min(float(x) for x in s)


def test_row_isin_matches_loops_for_uint64_and_int64():
    rng = np.random.default_rng(2)
    big = np.array([2**64 - 1, 2**63, 2**63 - 1, 0, 12345], np.uint64)  # includes values that wrap as int64
    values = rng.choice(big, (7, 9))
    sets = [rng.choice(big, int(rng.integers(0, 4))) for _ in range(7)]
    got = row_isin(values, sets)
    ref = [[int(v) in set(int(x) for x in sets[i]) for v in values[i]] for i in range(7)]
    assert got.tolist() == ref
    ivalues = rng.integers(-1, 6, (5, 4))
    isets = [rng.integers(0, 6, int(rng.integers(0, 3))) for _ in range(5)]
    assert row_isin(ivalues, isets).tolist() == [[int(v) in set(isets[i].tolist()) for v in ivalues[i]]
                                                 for i in range(5)]
    assert row_isin(np.zeros((3, 0), np.int64), [np.array([1])] * 3).shape == (3, 0)
