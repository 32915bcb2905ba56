"""Samplers against per-row loops, and their distributions against the ones they claim.

Frequency tolerances: an empirical frequency over N independent draws has standard deviation
sqrt(p (1 - p) / N); every check allows 5 of those (difference of two estimates: sqrt of the summed variances), so
with C categories a correct sampler fails with probability below C * 6e-7, while the alternatives each test rules out
(uniform instead of weighted, weights with the sign of b flipped, ...) differ by many times the tolerance
(asserted alongside, so a test cannot silently lose its power).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from streammine.keys import uniform_keys
from streammine.mining import random_corpus_ordinals, sample_random, sample_simans, sample_top


def five_sigma(p, n):
    return 5 * np.sqrt(np.asarray(p) * (1 - np.asarray(p)) / n)


def random_survivors(rng, b, k, density=0.5):
    survivors = rng.random((b, k)) < density
    survivors[:, k - 3:] = False  # a padded tail, as in real batches
    return survivors


def reference_pick(survivors_row, key_row, n, largest=False):
    """The n survivors with the smallest (or largest) key, ties by column, returned sorted by column."""
    cols = [j for j in range(len(survivors_row)) if survivors_row[j]]
    cols.sort(key=lambda j: (-key_row[j] if largest else key_row[j], j))
    picked = sorted(cols[:n])
    return picked + [-1] * (n - len(picked))


@pytest.mark.parametrize("n", [0, 1, 3, 12, 25])
def test_sample_top_is_first_n_survivors(n):
    rng = np.random.default_rng(n)
    survivors = random_survivors(rng, 40, 20)
    got = sample_top(survivors, n)
    assert got.shape == (40, n) and got.dtype == np.int64
    for i in range(40):
        cols = [j for j in range(20) if survivors[i, j]][:n]
        assert got[i].tolist() == cols + [-1] * (n - len(cols))


@pytest.mark.parametrize("n", [0, 1, 4, 25])
def test_sample_random_picks_smallest_keys(n):
    rng = np.random.default_rng(10 + n)
    survivors = random_survivors(rng, 40, 20)
    ordinals = rng.integers(0, 1000, (40, 20))
    u = uniform_keys(3, np.arange(40, dtype=np.uint64)[:, None], ordinals)
    got = sample_random(survivors, n, u)
    assert got.shape == (40, n)
    for i in range(40):
        assert got[i].tolist() == reference_pick(survivors[i], u[i], n)


def test_sample_random_ties_go_to_lower_column():
    survivors = np.array([[True, True, True, True]])
    u = np.array([[0.5, 0.2, 0.2, 0.2]])
    assert sample_random(survivors, 2, u).tolist() == [[1, 2]]


def test_sample_random_is_uniform_over_subsets():
    """n=2 of m=6 survivors: all 15 pairs equally likely (1/15), over 30000 independent queries."""
    k, n, draws = 10, 2, 30000
    survivors = np.zeros((draws, k), bool)
    survivors[:, [0, 2, 3, 5, 8, 9]] = True
    ordinals = np.broadcast_to(np.arange(100, 100 + k), (draws, k))
    u = uniform_keys(11, np.arange(draws, dtype=np.uint64)[:, None], ordinals)
    got = sample_random(survivors, n, u)
    assert (got >= 0).all() and survivors[np.arange(draws)[:, None], got].all()
    pairs, counts = np.unique(got, axis=0, return_counts=True)
    assert len(pairs) == 15
    freq = counts / draws
    assert np.abs(freq - 1 / 15).max() < five_sigma(1 / 15, draws)


def reference_simans_weights(scores, pos, a, b):
    w = np.array([math.exp(-a * (float(s) - pos - b) ** 2) for s in scores])
    return w / w.sum()


SCORES = np.array([0.95, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.2], np.float32)
POS, A, B = 0.9, 10.0, -0.15


def simans_draws(n, draws, seed, a=A):
    """``draws`` independent queries over the same 8 survivors (plus two non-survivor columns)."""
    k = len(SCORES) + 2
    scores = np.broadcast_to(np.concatenate([SCORES, [0.88, -np.inf]]).astype(np.float32), (draws, k))
    survivors = np.zeros((draws, k), bool)
    survivors[:, :len(SCORES)] = True
    ordinals = np.broadcast_to(np.arange(k), (draws, k))
    u = uniform_keys(seed, np.arange(draws, dtype=np.uint64)[:, None], ordinals)
    return sample_simans(survivors, scores, np.full(draws, POS), n, a, B, u)


def test_simans_single_pick_frequencies_match_weights():
    draws = 40000
    p = reference_simans_weights(SCORES, POS, A, B)
    got = simans_draws(1, draws, seed=5)[:, 0]
    assert (got >= 0).all() and (got < len(SCORES)).all()  # never a non-survivor
    freq = np.bincount(got, minlength=len(SCORES)) / draws
    tol = five_sigma(p, draws)
    assert (np.abs(freq - p) < tol).all(), (freq, p)
    # the test has power: uniform sampling, or b with the wrong sign, would fail it by a wide margin
    uniform = np.full(len(SCORES), 1 / len(SCORES))
    assert np.abs(uniform - p).max() > 10 * tol.max()
    flipped = reference_simans_weights(SCORES, POS, A, -B)
    assert np.abs(flipped - p).max() > 10 * tol.max()


def test_simans_three_picks_inclusion_matches_numpy_choice_without_replacement():
    draws, a = 20000, 40.0  # peaked weights: without-replacement inclusion is far from 3 p
    p = reference_simans_weights(SCORES, POS, a, B)
    got = simans_draws(3, draws, seed=9, a=a)
    assert (got >= 0).all()
    assert (np.diff(got, axis=1) > 0).all()  # distinct, sorted by column
    ours = np.bincount(got.ravel(), minlength=len(SCORES)) / draws

    rng = np.random.default_rng(1234)
    theirs_counts = np.zeros(len(SCORES))
    for _ in range(draws):
        theirs_counts[rng.choice(len(SCORES), 3, replace=False, p=p)] += 1
    theirs = theirs_counts / draws
    tol = 5 * np.sqrt(theirs * (1 - theirs) * 2 / draws) + 1e-3
    assert (np.abs(ours - theirs) < tol).all(), (ours, theirs)
    # and inclusion is not simply 3 * p (which sampling with replacement would approach): the test can tell
    assert np.abs(np.minimum(3 * p, 1) - theirs).max() > 3 * tol.max()


def test_simans_matches_gumbel_keys_per_row():
    rng = np.random.default_rng(3)
    b, k = 30, 16
    survivors = random_survivors(rng, b, k, 0.7)
    scores = np.round(rng.uniform(-1, 1, (b, k)), 2).astype(np.float32)
    pos = rng.uniform(-1, 1, b)
    u = uniform_keys(0, np.arange(b, dtype=np.uint64)[:, None], rng.integers(0, 10**6, (b, k)))
    got = sample_simans(survivors, scores, pos, 4, 2.0, 0.1, u)
    for i in range(b):
        keys = [-2.0 * (float(scores[i, j]) - pos[i] - 0.1) ** 2 - math.log(-math.log(u[i, j])) for j in range(k)]
        assert got[i].tolist() == reference_pick(survivors[i], keys, 4, largest=True)


def test_simans_large_a_does_not_underflow():
    # exp(-a d^2) underflows to 0 for every candidate here; the log-space keys still pick the closest one
    draws = 200
    scores = np.broadcast_to(np.array([0.5, 0.45, 0.3, 0.1], np.float32), (draws, 4))
    survivors = np.ones((draws, 4), bool)
    u = uniform_keys(1, np.arange(draws, dtype=np.uint64)[:, None], np.arange(4)[None, :])
    got = sample_simans(survivors, scores, np.full(draws, 0.46), 1, 1e6, 0.0, u)
    assert (got[:, 0] == 1).all()
    got3 = sample_simans(survivors, scores, np.full(draws, 0.46), 3, 1e6, 0.0, u)
    assert (got3 == [0, 1, 2]).all()  # the three closest, in column order


def test_simans_without_positive_score_raises():
    with pytest.raises(ValueError, match="simans"):
        sample_simans(np.ones((2, 3), bool), np.zeros((2, 3), np.float32), np.array([0.5, np.nan]), 1, 1.0, 0.0,
                      np.full((2, 3), 0.5))


def test_samplers_pad_rows_with_too_few_survivors():
    survivors = np.array([[False, True, False, False], [False] * 4])
    u = np.full((2, 4), 0.5)
    for got in (sample_top(survivors, 3), sample_random(survivors, 3, u),
                sample_simans(survivors, np.zeros((2, 4), np.float32), np.zeros(2), 3, 1.0, 0.0, u)):
        assert got.tolist() == [[1, -1, -1], [-1, -1, -1]]


def test_random_corpus_ordinals_range_determinism_and_uniformity():
    qk = np.array([5, 2**63 + 7, 42], np.uint64)
    got = random_corpus_ordinals(0, qk, 13, 1000)
    assert got.shape == (3, 1000) and got.dtype == np.int64
    assert got.min() >= 0 and got.max() < 13
    # a query's draws depend only on (seed, query key, draw index): not on its row or its batch
    np.testing.assert_array_equal(random_corpus_ordinals(0, qk[::-1], 13, 1000), got[::-1])
    np.testing.assert_array_equal(random_corpus_ordinals(0, qk[1:2], 13, 10), got[1:2, :10])
    assert not np.array_equal(random_corpus_ordinals(1, qk, 13, 1000), got)
    assert random_corpus_ordinals(0, qk, 13, 0).shape == (3, 0)
    with pytest.raises(ValueError):
        random_corpus_ordinals(0, qk, 0, 5)
    # uniform over [0, n_total): 20000 draws over 7 positions
    draws = random_corpus_ordinals(3, np.arange(20, dtype=np.uint64), 7, 1000).ravel()
    freq = np.bincount(draws, minlength=7) / draws.size
    assert np.abs(freq - 1 / 7).max() < five_sigma(1 / 7, draws.size)


def test_random_corpus_draws_are_not_the_candidate_keys():
    # the salt keeps draw j from being a function of the same number as document ordinal j's sampling key
    qk = np.arange(50, dtype=np.uint64)
    u = uniform_keys(0, qk[:, None], np.arange(20)[None, :])
    assert not np.array_equal(random_corpus_ordinals(0, qk, 1 << 40, 20), (u * (1 << 40)).astype(np.int64))


# ---- SimANS: the joint law of the draw, by exact enumeration ---------------------------------------------------

def without_replacement_law(w, n):
    """P(subset) of n sequential draws without replacement, each with probability proportional to w among the
    items left: the sum over the subset's orderings of the product of the successive conditional probabilities."""
    import itertools
    law = {}
    for order in itertools.permutations(range(len(w)), n):
        p, left = 1.0, float(np.sum(w))
        for i in order:
            p *= w[i] / left
            left -= w[i]
        key = tuple(sorted(order))
        law[key] = law.get(key, 0.0) + p
    return law


def conditioned_with_replacement_law(w, n):
    """The tempting wrong law: n i.i.d. draws with replacement (p proportional to w), kept when all distinct."""
    import itertools
    law = {s: math.factorial(n) * float(np.prod([w[i] for i in s])) for s in itertools.combinations(range(len(w)), n)}
    total = sum(law.values())
    return {s: v / total for s, v in law.items()}


def chi_square_p(counts: dict, law: dict, draws: int) -> float:
    from scipy.stats import chi2
    keys = sorted(law)
    expected = np.array([law[s] * draws for s in keys])
    observed = np.array([counts.get(s, 0) for s in keys])
    assert set(counts) <= set(keys)
    stat = float(((observed - expected) ** 2 / expected).sum())
    return float(chi2.sf(stat, len(keys) - 1))


def test_simans_subsets_follow_the_without_replacement_law():
    """3 of 6 survivors (20 subsets), 30000 independent queries: the subset frequencies pass a chi-square test
    (p > 0.01, fixed seed) against the exact law of sequential weighted draws without replacement, computed by
    enumerating every ordering, and fail it against i.i.d. draws with replacement kept when distinct."""
    scores = np.array([0.95, 0.9, 0.82, 0.75, 0.6, 0.4, 0.85, -np.inf], np.float32)  # columns 6, 7: not survivors
    pos, a, b, n, draws = 0.9, 12.0, -0.1, 3, 30000
    w = np.exp(-a * (scores[:6].astype(np.float64) - pos - b) ** 2)
    survivors = np.zeros((draws, 8), bool)
    survivors[:, :6] = True
    u = uniform_keys(21, np.arange(draws, dtype=np.uint64)[:, None], np.arange(8)[None, :])
    got = sample_simans(survivors, np.broadcast_to(scores, (draws, 8)), np.full(draws, pos), n, a, b, u)
    assert (got >= 0).all() and (got < 6).all() and (np.diff(got, axis=1) > 0).all()
    subsets, counts = np.unique(got, axis=0, return_counts=True)
    counts = {tuple(int(x) for x in s): int(c) for s, c in zip(subsets, counts)}
    exact = without_replacement_law(w, n)
    assert abs(sum(exact.values()) - 1) < 1e-12 and len(exact) == 20
    assert chi_square_p(counts, exact, draws) > 0.01
    # power: the same counts reject the with-replacement law, and draws from that law reject the exact one
    wrong = conditioned_with_replacement_law(w, n)
    assert chi_square_p(counts, wrong, draws) < 1e-6
    picks = np.sort(np.random.default_rng(5).choice(6, (6 * draws, n), replace=True, p=w / w.sum()), axis=1)
    picks = picks[(np.diff(picks, axis=1) > 0).all(axis=1)][:draws]
    assert len(picks) == draws
    subsets, wr = np.unique(picks, axis=0, return_counts=True)
    assert chi_square_p({tuple(int(x) for x in s): int(c) for s, c in zip(subsets, wr)}, exact, draws) < 0.01


def test_uniform_keys_strictly_inside_the_unit_interval():
    """The hash -> float map never gives 0 or 1, also at the extremes: (2^53 - 1) + 0.5 would round up to 1."""
    from streammine.keys import splitmix64, unit_open_interval
    from streammine.mining import gumbel
    h = np.array([0, 1, 2**11 - 1, 2**63, 2**64 - 2**12, 2**64 - 2**11 - 1, 2**64 - 2**11, 2**64 - 1], np.uint64)
    u = unit_open_interval(h)
    assert (u > 0).all() and (u < 1).all() and np.isfinite(gumbel(u)).all() and np.isfinite(np.log(u)).all()
    assert u[0] == u[2] == 2.0 ** -54 and u[3] == 0.5  # (2^52 + 0.5) / 2^53 rounds to 0.5
    assert u[-1] == u[-2] == np.nextafter(1.0, 0.0)
    # uniform_keys is that map of its (seed, query, document) hash
    q, d = np.array([3, 2**64 - 5], np.uint64), np.array([0, 7], np.uint64)
    with np.errstate(over="ignore"):
        hashed = splitmix64(splitmix64(q ^ splitmix64(np.uint64(9))) + d)
    np.testing.assert_array_equal(uniform_keys(9, q, d), unit_open_interval(hashed))
