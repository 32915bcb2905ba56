"""Samplers: which of a row's survivors become its hard negatives.

Every sampler returns (B, n) int64 column indices into the candidate batch, -1 padded where a row has fewer than
n survivors, each row's picks sorted by column (i.e. by rank, score descending). Randomness comes only from the
per-(seed, query, document) uniform keys ``u``, so a query's picks do not depend on the batch it arrived in.

Every sampler is "keys, then the smallest": a ``Sampler`` object states its preference keys (``keys``), whether
it needs ``u``, its parameters' checks and its range rule (``default_range_max``); ``SAMPLERS`` names them. The
miner (mining/batch.py), the near-duplicate guard's preference order, config validation and the CLI's choices
read that registry, so a new sampler is one class and one line there.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..keys import uniform_keys

# Salts the seed of the random corpus draws, so they are not the same numbers as the candidates' keys u
_RANDOM_DOCS_SALT = 0x5354_4152_5241_4E44  # "STARRAND"


def pick_smallest(survivors: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """(B, n) int64: the columns of each row's n survivors with the smallest keys (ties: lower column first),
    sorted by column, -1 padded."""
    survivors = np.asarray(survivors, dtype=bool)
    b, k = survivors.shape
    out = np.full((b, n), -1, dtype=np.int64)
    m = min(n, k)
    if m <= 0:
        return out
    # survivors first, then by key; lexsort is stable, so equal keys keep column order
    order = np.lexsort((np.broadcast_to(keys, survivors.shape), ~survivors), axis=-1)[:, :m]
    picked = np.take_along_axis(survivors, order, axis=1)
    cols = np.sort(np.where(picked, order, k), axis=1)  # non-survivors (only at the tail) sort last as k
    out[:, :m] = np.where(cols < k, cols, -1)
    return out


def sample_top(survivors: np.ndarray, n: int) -> np.ndarray:
    """The first n survivors of each row (the hardest: highest scores)."""
    survivors = np.asarray(survivors, dtype=bool)
    return pick_smallest(survivors, np.arange(survivors.shape[1], dtype=np.int64)[None, :], n)


def sample_random(survivors: np.ndarray, n: int, u: np.ndarray) -> np.ndarray:
    """n survivors uniformly without replacement: the n with the smallest i.i.d. uniform keys u (a uniformly
    random n-subset, since every ordering of i.i.d. keys is equally likely)."""
    return pick_smallest(survivors, np.asarray(u, dtype=np.float64), n)


def gumbel(u: np.ndarray) -> np.ndarray:
    """Standard Gumbel noise from uniforms in (0, 1)."""
    return -np.log(-np.log(np.asarray(u, dtype=np.float64)))


def simans_log_weights(scores: np.ndarray, pos_ref: np.ndarray, a: float, b: float) -> np.ndarray:
    """(B, K) log of the SimANS weight exp(-a (s - s+ - b)^2): highest for negatives scoring near s+ + b, so
    ambiguous negatives are preferred over both easy ones and probable false negatives."""
    s = np.asarray(scores, dtype=np.float64)
    return -float(a) * (s - np.asarray(pos_ref, dtype=np.float64)[:, None] - float(b)) ** 2


def sample_simans(survivors: np.ndarray, scores: np.ndarray, pos_ref: np.ndarray, n: int, a: float, b: float,
                  u: np.ndarray) -> np.ndarray:
    """SimANS (SimXNS): n survivors without replacement with p proportional to exp(-a (s - s+ - b)^2).

    Gumbel-top-k: the n largest of log-weight + Gumbel(u) are distributed as n sequential weighted draws without
    replacement, and working with log-weights never underflows, however large a is.
    """
    survivors = np.asarray(survivors, dtype=bool)
    pos_ref = np.asarray(pos_ref, dtype=np.float64)
    if n > 0 and np.isnan(pos_ref).any():
        bad = np.flatnonzero(np.isnan(pos_ref)).tolist()
        raise ValueError(f"sampler 'simans' weighs negatives by their distance to the positive's score, but batch "
                         f"rows {bad[:10]} have no positive score")
    perturbed = simans_log_weights(scores, pos_ref, a, b) + gumbel(u)
    return pick_smallest(survivors, -perturbed, n)


def random_corpus_ordinals(seed: int, query_keys: np.ndarray, n_total: int, count: int) -> np.ndarray:
    """(B, count) int64 uniform random corpus positions in [0, n_total), with replacement (the caller dedupes):
    draw j of a query is a pure function of (seed, query key, j), as in STAR's random negatives."""
    if n_total < 1:
        raise ValueError(f"cannot draw random documents from an empty corpus (n_total={n_total})")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    q = np.asarray(query_keys, dtype=np.uint64).reshape(-1, 1)
    u = uniform_keys(seed ^ _RANDOM_DOCS_SALT, q, np.arange(count, dtype=np.uint64)[None, :])
    # u < 1 strictly; the clip only guards float rounding of u * n_total for huge corpora
    return np.minimum((u * n_total).astype(np.int64), n_total - 1)


# ---- the samplers as objects, and their registry --------------------------------------------------------------

class Sampler:
    """A sampler: preference keys over a row's candidate columns, smaller preferred; the picks are the n survivors
    with the smallest keys (``pick_smallest``). ``params`` is the run's ``SamplerConfig`` (its fields are the
    samplers' parameters)."""
    name = ""
    uses_uniform_keys = False   # needs the per-(seed, query, document) uniforms u
    default_range_max = 50      # the rank window's end when mining.sampler.range_max is unset

    def keys(self, scores: np.ndarray, pos_ref: np.ndarray, u: Optional[np.ndarray], params) -> np.ndarray:
        raise NotImplementedError

    def pick(self, survivors: np.ndarray, scores: np.ndarray, pos_ref: np.ndarray, n: int,
             u: Optional[np.ndarray], params) -> np.ndarray:
        """(B, n) columns, sorted, -1 padded (the module's contract)."""
        return pick_smallest(survivors, self.keys(scores, pos_ref, u, params), n)


class TopSampler(Sampler):
    """``top``: the highest-ranked survivors (ANCE / FlagEmbedding's rank window, sentence-transformers' top)."""
    name = "top"

    def keys(self, scores, pos_ref, u, params):
        return np.broadcast_to(np.arange(np.shape(scores)[1], dtype=np.int64)[None, :], np.shape(scores))


class RandomSampler(Sampler):
    """``random``: survivors uniformly without replacement (``sample_random``)."""
    name = "random"
    uses_uniform_keys = True

    def keys(self, scores, pos_ref, u, params):
        return np.asarray(u, np.float64)


class SimansSampler(Sampler):
    """``simans``: SimANS' weighted draws without replacement (``sample_simans``); its pool defaults to 200."""
    name = "simans"
    uses_uniform_keys = True
    default_range_max = 200

    def keys(self, scores, pos_ref, u, params):
        return -(simans_log_weights(scores, pos_ref, params.simans_a, params.simans_b) + gumbel(u))

    def pick(self, survivors, scores, pos_ref, n, u, params):
        return sample_simans(survivors, scores, pos_ref, n, params.simans_a, params.simans_b, u)


SAMPLERS: dict = {cls.name: cls() for cls in (TopSampler, RandomSampler, SimansSampler)}


def window_end(s) -> int:
    """The rank window's end of ``s`` (a SamplerConfig): its range_max, else its sampler's default."""
    return int(s.range_max) if s.range_max is not None else sampler_named(s.method).default_range_max


def sampler_named(name: str) -> Sampler:
    """The registered sampler ``name`` (config validation names the choices before any mining)."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler method {name!r}; one of {', '.join(SAMPLERS)}") from None
