"""Streaming accumulators: each takes the data a batch at a time and holds a bounded amount of state.

* :class:`Histogram` — counts of float values in bins ``[k*w, (k+1)*w)`` whose width ``w`` is a power of two.
  It starts fine (``w = 2**-9``) and doubles ``w`` whenever the bins would exceed ``max_bins``; because every width
  is a power of two times the starting one, doubling merges pairs of bins exactly, so the result is the same as
  ``np.histogram`` of all the values over the final edges, whatever order and batches the values came in.
* :class:`IntCounts` — how often each integer occurred (a ``bincount`` that grows to the range seen).
* :class:`BottomK` — a uniform random sample of k rows without replacement: each row gets a key that is a pure
  function of (seed, its id), and the k smallest keys are kept (a reservoir whose content does not depend on the
  order in which parts and batches are read).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..keys import keys64, uniform_keys


class Histogram:
    """Exact binned counts of a stream of floats (non-finite values are counted apart, not binned)."""

    def __init__(self, max_bins: int = 4096, start_width: float = 2.0 ** -9):
        if max_bins < 2:
            raise ValueError(f"max_bins must be >= 2, got {max_bins}")
        if start_width <= 0 or np.log2(start_width) != np.round(np.log2(start_width)):
            raise ValueError(f"start_width must be a power of two, got {start_width}")
        self.max_bins = max_bins
        self.width = float(start_width)
        self.lo = 0                                   # bin index of counts[0]
        self.counts = np.zeros(0, np.int64)
        self.n = 0                                    # finite values binned
        self.nonfinite = 0
        self.total = 0.0
        self.min = np.inf
        self.max = -np.inf

    # ---- adding ------------------------------------------------------------------------------------------------
    def add(self, values) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(v)
        self.nonfinite += int(v.size - np.count_nonzero(finite))
        v = v[finite]
        if not v.size:
            return
        self.n += int(v.size)
        self.total += float(v.sum())
        self.min, self.max = min(self.min, float(v.min())), max(self.max, float(v.max()))
        lo_v, hi_v = float(v.min()), float(v.max())
        while True:
            k_lo, k_hi = int(np.floor(lo_v / self.width)), int(np.floor(hi_v / self.width))
            if self.counts.size:
                k_lo, k_hi = min(k_lo, self.lo), max(k_hi, self.lo + self.counts.size - 1)
            if k_hi - k_lo + 1 <= self.max_bins:
                break
            self._coarsen()
        if not self.counts.size:
            self.lo, self.counts = k_lo, np.zeros(k_hi - k_lo + 1, np.int64)
        elif k_lo < self.lo or k_hi >= self.lo + self.counts.size:
            grown = np.zeros(k_hi - k_lo + 1, np.int64)
            grown[self.lo - k_lo: self.lo - k_lo + self.counts.size] = self.counts
            self.lo, self.counts = k_lo, grown
        k = np.floor(v / self.width).astype(np.int64) - self.lo
        self.counts += np.bincount(k, minlength=self.counts.size)

    def _coarsen(self) -> None:
        """Doubles the bin width: bin k becomes bin floor(k / 2) (exact: both widths are powers of two)."""
        self.width *= 2.0
        if self.counts.size:
            new_index = (self.lo + np.arange(self.counts.size, dtype=np.int64)) >> 1  # arithmetic shift: floor
            new_lo = int(new_index[0])
            self.counts = np.bincount(new_index - new_lo, weights=self.counts).astype(np.int64)
            self.lo = new_lo

    # ---- reading -----------------------------------------------------------------------------------------------
    @property
    def edges(self) -> np.ndarray:
        return (self.lo + np.arange(self.counts.size + 1, dtype=np.float64)) * self.width

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")

    def quantile(self, q: float) -> float:
        """Approximate quantile (to within one bin width): the upper edge of the bin holding it."""
        if not self.n:
            return float("nan")
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, q * self.n, side="left"))
        return float(min(self.edges[min(i + 1, self.counts.size)], self.max))

    def at_width(self, width: float) -> "Histogram":
        """A copy with the given (larger or equal, power-of-two multiple) bin width."""
        if width < self.width or np.log2(width / self.width) != np.round(np.log2(width / self.width)):
            raise ValueError(f"width {width} is not a power-of-two multiple of {self.width}")
        out = self.copy()
        while out.width < width:
            out._coarsen()
        return out

    def copy(self) -> "Histogram":
        out = Histogram(self.max_bins, self.width)
        out.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()})
        return out

    def to_dict(self) -> dict:
        return {"n": self.n, "nonfinite": self.nonfinite, "min": _num(self.min), "max": _num(self.max),
                "mean": _num(self.mean), "bin_width": self.width, "first_edge": float(self.lo * self.width),
                "counts": self.counts.tolist()}


def coarsened(hists: Sequence[Histogram], max_bins: Optional[int] = None) -> List[Histogram]:
    """Copies of ``hists`` at one common bin width (the widest of theirs, doubled further until the union of
    their ranges fits in ``max_bins`` bins): what a figure needs to draw them over the same edges."""
    width = max(h.width for h in hists)
    used = [h for h in hists if h.counts.size]
    if max_bins is not None and used:
        while True:
            k_lo = min(int(np.floor(h.lo * h.width / width)) for h in used)
            k_hi = max(int(np.floor((h.lo + h.counts.size - 1) * h.width / width)) for h in used)
            if k_hi - k_lo + 1 <= max_bins:
                break
            width *= 2.0
    return [h.at_width(width) for h in hists]


def common_edges(hists: Sequence[Histogram], max_bins: int = 80) -> Tuple[np.ndarray, List[np.ndarray]]:
    """(edges, counts per histogram) over one set of edges spanning every histogram's range."""
    hs = coarsened(hists, max_bins)
    used = [h for h in hs if h.counts.size]
    if not used:
        return np.zeros(0), [np.zeros(0, np.int64) for _ in hs]
    k_lo = min(h.lo for h in used)
    k_hi = max(h.lo + h.counts.size for h in used)
    width = hs[0].width
    out = []
    for h in hs:
        c = np.zeros(k_hi - k_lo, np.int64)
        if h.counts.size:
            c[h.lo - k_lo: h.lo - k_lo + h.counts.size] = h.counts
        out.append(c)
    return (k_lo + np.arange(k_hi - k_lo + 1, dtype=np.float64)) * width, out


class IntCounts:
    """How often each integer value occurred (any range, including negatives such as the -1 rank)."""

    def __init__(self):
        self.lo = 0
        self.counts = np.zeros(0, np.int64)

    def add(self, values) -> None:
        v = np.asarray(values, dtype=np.int64).ravel()
        if not v.size:
            return
        k_lo, k_hi = int(v.min()), int(v.max())
        if self.counts.size:
            k_lo, k_hi = min(k_lo, self.lo), max(k_hi, self.lo + self.counts.size - 1)
        if not self.counts.size or k_lo < self.lo or k_hi >= self.lo + self.counts.size:
            grown = np.zeros(k_hi - k_lo + 1, np.int64)
            if self.counts.size:
                grown[self.lo - k_lo: self.lo - k_lo + self.counts.size] = self.counts
            self.lo, self.counts = k_lo, grown
        self.counts += np.bincount(v - self.lo, minlength=self.counts.size)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def __getitem__(self, value: int) -> int:
        i = int(value) - self.lo
        return int(self.counts[i]) if 0 <= i < self.counts.size else 0

    def items(self) -> List[Tuple[int, int]]:
        """(value, count) for every value seen at least once, ascending."""
        return [(self.lo + int(i), int(self.counts[i])) for i in np.flatnonzero(self.counts)]

    def to_dict(self) -> dict:
        return {str(k): c for k, c in self.items()}


class BottomK:
    """The k rows whose key u = uniform_keys(seed, key64(id)) is smallest: a seeded uniform sample of k ids."""

    def __init__(self, k: int, seed: int = 0):
        if k < 0:
            raise ValueError(f"sample size must be >= 0, got {k}")
        self.k, self.seed = int(k), int(seed)
        self.items: List[Tuple[float, str, dict]] = []   # (u, id, row), sorted ascending, at most k

    def keys(self, ids: Sequence[str]) -> np.ndarray:
        return uniform_keys(self.seed, keys64(ids), np.zeros(len(ids), np.uint64))

    @property
    def threshold(self) -> float:
        """A new row is a candidate only if its key is below this (1.0 while the sample is not full)."""
        return self.items[-1][0] if len(self.items) >= self.k and self.k else (1.0 if self.k else 0.0)

    def candidates(self, ids: Sequence[str]) -> np.ndarray:
        """Positions among ``ids`` that may enter the sample (cheap pre-filter before building row dicts)."""
        if not self.k or not len(ids):
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.keys(ids) <= self.threshold)

    def offer(self, ids: Sequence[str], rows: Iterable[dict]) -> None:
        """Offers rows (one per id); keeps the k smallest keys (ties: the smaller id)."""
        if not self.k:
            return
        u = self.keys(ids)
        self.items.extend(zip(u.tolist(), ids, rows))
        self.items.sort(key=lambda t: (t[0], t[1]))
        del self.items[self.k:]

    def rows(self) -> List[dict]:
        return [row for _, _, row in self.items]


def _num(x: float):
    return float(x) if np.isfinite(x) else None
