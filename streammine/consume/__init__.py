"""The trainer side of a continuous run: read the mined hard negatives as they are committed (``tail -f``).

- :class:`NegativesFeed`: rows or Arrow batches, in commit-log order, following the log as it grows.
- :class:`NegativesIterableDataset`: the feed as a torch ``IterableDataset``, split over ranks and workers.
- :func:`committed_dataset`: what is committed now, as a Ray Data dataset.

torch and Ray are imported only when the dataset class or ``committed_dataset`` is used.
"""
from __future__ import annotations

from .feed import SEQ_COLUMN, NegativesFeed
from .ray_data import committed_dataset  # imports ray when called
from .rules import assigned_to, backoff_delays, stale, transient_errors

__all__ = ["NegativesFeed", "NegativesIterableDataset", "committed_dataset", "assigned_to", "stale",
           "backoff_delays", "transient_errors", "SEQ_COLUMN"]


def __getattr__(name):
    if name == "NegativesIterableDataset":  # subclasses torch's IterableDataset: torch is imported here, on use
        from .dataset import NegativesIterableDataset
        return NegativesIterableDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
