"""The feed as a ``torch.utils.data.IterableDataset``, split by log entry over distributed ranks and DataLoader
workers. Importing this module imports torch; ``streammine.consume`` imports it only when the class is asked for."""
from __future__ import annotations

import os
from typing import Iterator, Optional, Tuple

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .feed import NegativesFeed


def _dist_rank_world() -> Optional[Tuple[int, int]]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None


def resolve_rank(rank: Optional[int] = None, world_size: Optional[int] = None) -> Tuple[int, int]:
    """(rank, world_size): torch.distributed's when it is initialized, else the arguments, else the ``RANK`` and
    ``WORLD_SIZE`` environment variables (what torchrun sets), else (0, 1)."""
    found = _dist_rank_world()
    if found is not None:
        return found
    if rank is None:
        rank = int(os.environ.get("RANK", 0))
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in range for world size {world_size}")
    return rank, world_size


class NegativesIterableDataset(IterableDataset):
    """Yields the mined rows (dicts, as :class:`NegativesFeed` does) of the log entries this consumer owns: entry
    ``seq`` goes to the consumer ``rank * num_workers + worker_id`` when ``seq % (world_size * num_workers)`` equals
    it (:func:`assigned_to`), so the ranks and their DataLoader workers together read every entry exactly once.

    ``feed_kwargs`` are :class:`NegativesFeed`'s (``follow``, ``last_versions``, ``poll_seconds``, ...). Rows hold
    variable-length lists, so use ``DataLoader(..., batch_size=None)`` or a ``collate_fn`` of your own. With
    ``num_workers > 0`` each worker is its own process: a ``stop`` event must be one that crosses processes
    (``multiprocessing.Event``), and ``start_after_seq`` is one position for all consumers (each feed's
    ``position`` only covers its own entries, so resume from the smallest one the consumers report).
    """

    def __init__(self, out_url: str, rank: Optional[int] = None, world_size: Optional[int] = None, **feed_kwargs):
        super().__init__()
        if "consumer" in feed_kwargs:
            raise TypeError("the dataset sets the feed's consumer itself (from rank and worker)")
        NegativesFeed(out_url, **feed_kwargs)  # checks the arguments now rather than in a worker process
        self.out_url = out_url
        self.feed_kwargs = feed_kwargs
        # resolved now, in the trainer's process: a DataLoader worker may not see its process group
        self.rank, self.world_size = resolve_rank(rank, world_size)

    def consumer(self) -> Tuple[int, int]:
        """(index, count) of the consumer iterating here: this rank and DataLoader worker."""
        rank, world_size = _dist_rank_world() or (self.rank, self.world_size)
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * num_workers + worker_id, world_size * num_workers

    def __iter__(self) -> Iterator[dict]:
        # the feed keeps seq when seq % count == index: assigned_to(seq, rank, world_size, worker_id, num_workers)
        self.feed = NegativesFeed(self.out_url, consumer=self.consumer(), **self.feed_kwargs)
        return iter(self.feed)
