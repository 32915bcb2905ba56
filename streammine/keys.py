"""Stable 64-bit keys for ids and texts, and counter-based random numbers derived from them.

Randomness in mining is a pure function of (seed, query key, document ordinal), never of the order in which
batches arrive, so the same inputs give the same negatives whatever the parallelism.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

_WS = re.compile(r"\s+")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def key64(value: str) -> int:
    """A stable unsigned 64-bit key of a string (blake2b; independent of PYTHONHASHSEED). Any str has a key: a
    lone surrogate (not valid Unicode, which readers reject with its location) is hashed as its code point
    ("surrogatepass"), so a key never raises; valid strings hash their UTF-8 bytes as always."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def keys64(values) -> np.ndarray:
    """``key64`` over an iterable of strings, as a uint64 array."""
    return np.fromiter((key64(v) for v in values), dtype=np.uint64)


def normalize_text(text: str) -> str:
    """The form in which two documents count as the same text: case-folded, whitespace collapsed."""
    return _WS.sub(" ", text).strip().casefold()


def text_key(text: str) -> int:
    return key64(normalize_text(text))


def content_id(text: str) -> str:
    """A stable id for a row that has none: a hash of its content."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorized SplitMix64 finalizer: a bijective mixer of uint64 values."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def uniform_keys(seed: int, query_keys: np.ndarray, doc_keys: np.ndarray) -> np.ndarray:
    """Uniform floats in (0, 1), one per (query, document) pair; shapes broadcast (e.g. (B,1) with (B,K))."""
    q = np.asarray(query_keys, dtype=np.uint64)
    d = np.asarray(doc_keys).astype(np.uint64)  # ordinals are int64 >= 0
    with np.errstate(over="ignore"):
        h = splitmix64(splitmix64(q ^ splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF))) + d)
    return unit_open_interval(h)


_BELOW_ONE = np.nextafter(1.0, 0.0)


def unit_open_interval(h: np.ndarray) -> np.ndarray:
    """uint64 hashes -> float64 strictly inside (0, 1): the 53 high bits, offset by half a step.

    Never 0 (so log(u) is finite) and never 1 (so gumbel(u) is finite): for the top value (2^53 - 1) + 0.5 needs
    54 bits and rounds up to 2^53, so that one value is clamped to the largest float64 below 1 (every other value
    is as before)."""
    u = ((np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    return np.minimum(u, _BELOW_ONE)


def query_rng(seed: int, query_key: int) -> np.random.Generator:
    """A generator private to one query: the same (seed, query) always gives the same stream."""
    return np.random.Generator(np.random.PCG64([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF,
                                                query_key & 0xFFFFFFFF, query_key >> 32]))
