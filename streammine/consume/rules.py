"""The small decisions a reader of the commit log makes, as pure functions (no I/O), so they are tested alone."""
from __future__ import annotations

import sys
from typing import Iterator, Optional, Tuple


def assigned_to(seq: int, rank: int, world_size: int, worker_id: int = 0, num_workers: int = 1) -> bool:
    """Whether the log entry ``seq`` is read by DataLoader worker ``worker_id`` of distributed rank ``rank``.

    Consumers are numbered ``rank * num_workers + worker_id`` out of ``world_size * num_workers``; entry ``seq``
    goes to consumer ``seq % (world_size * num_workers)``. Every entry has exactly one consumer, and each consumer
    decides alone, from the sequence number, without coordination (entries are numbered densely, so the split is
    even)."""
    if not (0 <= rank < world_size and 0 <= worker_id < num_workers):
        raise ValueError(f"rank {rank}/{world_size}, worker {worker_id}/{num_workers}: out of range")
    return seq % (world_size * num_workers) == rank * num_workers + worker_id


def stale(entry_order: int, max_order: int, k: Optional[int]) -> bool:
    """Whether an entry mined by the version at ``entry_order`` falls outside the last ``k`` versions, the newest
    known being ``max_order``: the last ``k`` versions are the orders ``max_order - k + 1 .. max_order``. ``k=None``
    keeps everything."""
    if k is None:
        return False
    if k < 1:
        raise ValueError(f"last_versions must be >= 1 (got {k})")
    return entry_order < max_order - k + 1


def backoff_delays(initial_s: float = 0.1, cap_s: float = 10.0, factor: float = 2.0) -> Iterator[float]:
    """``initial_s, initial_s*factor, ...`` capped at ``cap_s``: the waits between retries of a failed read."""
    delay = initial_s
    while True:
        yield min(delay, cap_s)
        delay = min(delay * factor, cap_s)


def transient_errors() -> Tuple[type, ...]:
    """Exception types worth retrying: I/O and connection errors. s3fs turns the HTTP errors of S3 into
    ``OSError``, but hands botocore's connection errors (endpoint unreachable, connection reset) through as they
    are, and aiohttp's may escape too; those are added when their libraries are already loaded (importing botocore
    just to name its errors would cost every local reader)."""
    types: list = [OSError, ConnectionError, TimeoutError]
    botocore_exc = sys.modules.get("botocore.exceptions")
    if botocore_exc is not None:
        # EndpointConnectionError derives from botocore's ConnectionError; resets and timeouts from HTTPClientError
        types += [botocore_exc.ConnectionError, botocore_exc.HTTPClientError]
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and hasattr(aiohttp, "ClientError"):
        types.append(aiohttp.ClientError)
    return tuple(types)
