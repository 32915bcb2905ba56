"""Following a continuous run's commit log from the trainer side: the committed rows, in log order, as they come.

A :class:`NegativesFeed` lists ``<out>/_log/``, reads each entry in sequence order and streams the Parquet parts the
entry names (never another file under ``data/``: a part no entry names may be incomplete). With ``follow=True`` it
then polls for new entries, like ``tail -f``, until the writer closes the log, a ``stop`` event is set, or nothing new
arrives for ``idle_timeout_s``. Only a batch or two of rows is in memory at a time.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa

from ..sink.layout import output_log
from ..sink.mined import read_batches
from ..sink.schema import MINED_SCHEMA
from .rules import assigned_to, backoff_delays, stale, transient_errors

SEQ_COLUMN = "_seq"


class _Stopped(Exception):
    """The stop event was set while waiting (to poll, or to retry): the feed ends."""


class _Retrier:
    """Retries one operation after transient errors, with exponential backoff; gives up (re-raises the last error)
    once ``total_s`` has passed since the first failure of the episode. Any success ends the episode."""

    def __init__(self, feed: "NegativesFeed"):
        self.feed = feed
        self.first_failure: Optional[float] = None
        self.delays: Optional[Iterator[float]] = None

    def ok(self) -> None:
        self.first_failure = None
        self.delays = None

    def failed(self, error: BaseException, what: str) -> None:
        """Waits before the next try, or re-raises ``error`` when the time for retries is spent."""
        now = time.monotonic()
        if self.first_failure is None:
            self.first_failure = now
            self.delays = backoff_delays(self.feed.retry_initial_s, self.feed.retry_cap_s)
        delay = next(self.delays)
        if now + delay - self.first_failure > self.feed.retry_total_s:
            raise error
        self.feed.stats["retries"] += 1
        self.feed.last_error = f"{what}: {type(error).__name__}: {error}"
        self.feed._wait(delay)


class NegativesFeed:
    """The rows a continuous miner has committed under ``out_url``, in commit-log order.

    ``for row in feed`` yields dicts (the ``columns`` asked for, all of :data:`MINED_SCHEMA` by default, plus
    ``"_seq"``, the log entry the row came from); :meth:`batches` yields the same rows as ``pyarrow.RecordBatch``
    (with a ``"_seq"`` column). A feed is iterated once.

    - ``out_url``: a ``serve`` output (its commit log) or a ``mine`` output (read as a finished, closed log of one
      entry: every row, then the feed ends). With ``follow=False`` an URL holding neither raises
      :class:`~streammine.errors.InputError` at once; a follower waits for one to appear (``idle_timeout_s``).
    - ``follow``: keep polling (every ``poll_seconds``) once caught up; stop when the log is closed and all of it is
      read, when ``stop`` (a ``threading.Event``) is set, or after ``idle_timeout_s`` caught up with nothing new.
      ``follow=False`` reads what is committed when it lists the log, then stops.
    - ``last_versions=k``: only rows mined by one of the last ``k`` model versions. An entry is skipped (counted in
      ``stats["entries_skipped_stale"]``) when, as it is about to be read, its ``version_order`` is below
      ``m - k + 1``, ``m`` being the highest ``version_order`` of the entries listed so far (after
      ``start_after_seq``), read or not. While following, the log is listed again before an entry when the last
      listing is ``poll_seconds`` old, so a newer version appearing during a backlog makes the rest of it stale.
    - ``start_after_seq``: resume after an earlier feed's :attr:`position`: nothing twice, nothing missed.
    - ``consumer=(index, count)``: read only the entries whose ``seq % count == index`` (how
      :class:`NegativesIterableDataset` splits work); the others are passed over without reading their parts.
    - Transient read errors (listing, entries, parts) are retried with exponential backoff from ``retry_initial_s``
      up to ``retry_cap_s`` between tries, for at most ``retry_total_s`` per failure; then the error is raised.
      Nothing is skipped: a part that failed mid-way resumes at the first row not yet yielded.

    :attr:`position` is the last entry handled completely (all its rows yielded, or skipped as stale or as another
    consumer's); a feed created with ``start_after_seq=position`` goes on exactly where this one stopped. The
    ``stop`` event is only honoured between entries and while waiting, so stopping never leaves an entry half read.
    """

    def __init__(self, out_url: str, follow: bool = True, last_versions: Optional[int] = None,
                 poll_seconds: float = 1.0, idle_timeout_s: Optional[float] = None,
                 stop: Optional[threading.Event] = None, columns: Optional[Sequence[str]] = None,
                 start_after_seq: int = 0, batch_rows: int = 1024, *,
                 consumer: Optional[Tuple[int, int]] = None, retry_total_s: float = 300.0,
                 retry_initial_s: float = 0.1, retry_cap_s: float = 10.0):
        if last_versions is not None:
            stale(0, 0, last_versions)  # validates k >= 1
        if columns is not None:
            unknown = [c for c in columns if c not in MINED_SCHEMA.names]
            if unknown:
                raise ValueError(f"unknown columns {unknown}; the mined rows have {MINED_SCHEMA.names}")
        if consumer is not None and not (consumer[1] >= 1 and 0 <= consumer[0] < consumer[1]):
            raise ValueError(f"consumer {consumer}: want (index, count) with 0 <= index < count")
        if batch_rows < 1 or poll_seconds < 0 or retry_total_s < 0:
            raise ValueError("batch_rows must be >= 1, poll_seconds and retry_total_s >= 0")
        self.out_url = out_url
        self.follow = follow
        self.last_versions = last_versions
        self.poll_seconds = poll_seconds
        self.idle_timeout_s = idle_timeout_s
        self.stop = stop
        self.columns: List[str] = list(columns) if columns is not None else list(MINED_SCHEMA.names)
        self.batch_rows = batch_rows
        self.consumer = consumer
        self.retry_total_s = retry_total_s
        self.retry_initial_s = retry_initial_s
        self.retry_cap_s = retry_cap_s
        self.position = start_after_seq
        self.stats: Dict[str, float] = {"entries_read": 0, "rows": 0, "entries_skipped_stale": 0,
                                        "max_age_seconds": 0.0, "retries": 0}
        self.last_error: Optional[str] = None
        # either layout: a serve's commit log, or a finished mine output read as a closed log of one entry
        self._log = output_log(out_url, require=not follow)
        self._listed_seq = start_after_seq   # the highest seq listed so far: later listings add only what is newer
        self._listed_at = float("-inf")
        self._max_order: Optional[int] = None
        self._started = False

    # ---- public iteration ---------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        for seq, batch, last in self._stream():
            rows = batch.to_pylist()
            for i, row in enumerate(rows):
                row[SEQ_COLUMN] = seq
                self.stats["rows"] += 1
                if last and i == len(rows) - 1:
                    self.position = seq  # before the yield: once the caller holds the entry's last row, it is done
                yield row

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The same rows as ``pyarrow.RecordBatch`` es of at most ``batch_rows`` rows (never across entries)."""
        for seq, batch, last in self._stream():
            seqs = pa.array([seq] * batch.num_rows, pa.int64())
            out = pa.RecordBatch.from_arrays(list(batch.columns) + [seqs],
                                             names=list(batch.schema.names) + [SEQ_COLUMN])
            self.stats["rows"] += batch.num_rows
            if last:
                self.position = seq
            yield out

    # ---- the stream -----------------------------------------------------------------------------------------------
    def _stream(self) -> Iterator[Tuple[int, pa.RecordBatch, bool]]:
        """(seq, batch, last batch of its entry), entry after entry, until a stop condition."""
        if self._started:
            raise RuntimeError("a NegativesFeed is iterated once; make a new one (start_after_seq=position)")
        self._started = True
        try:
            yield from self._follow_log()
        except _Stopped:
            return

    def _follow_log(self) -> Iterator[Tuple[int, pa.RecordBatch, bool]]:
        pending: Deque[dict] = deque()
        idle_since: Optional[float] = None
        while True:
            self._check_stop()
            # checked before listing: every entry committed before _CLOSED is in the listing that follows
            closed = self.follow and self._retry(self._log.closed, "checking whether the log is closed")
            self._list_new(pending)
            if pending:
                idle_since = None
            while pending:
                self._check_stop()
                if (self.follow and self.last_versions is not None
                        and time.monotonic() - self._listed_at >= self.poll_seconds):
                    self._list_new(pending)  # a newer version may have appeared: the freshness bound moves
                entry = pending.popleft()
                yield from self._read_entry(entry)
            if not self.follow or closed:
                return
            now = time.monotonic()
            if idle_since is None:
                idle_since = now  # idle counts from being caught up, not from the last entry's commit
            wait = self.poll_seconds
            if self.idle_timeout_s is not None:
                left = self.idle_timeout_s - (now - idle_since)
                if left <= 0:
                    return
                wait = min(wait, left)
            self._wait(wait)

    def _list_new(self, pending: Deque[dict]) -> None:
        """Appends the entries committed since the last listing to ``pending``; keeps the highest version order."""
        seqs = self._retry(self._log.sequence_numbers, f"listing {self._log.url}")
        self._listed_at = time.monotonic()
        for seq in seqs:
            if seq <= self._listed_seq:
                continue
            if self.last_versions is None and not self._mine(seq):
                entry = {"seq": seq}  # another consumer's, and no freshness bound needs its version: not read
            else:
                entry = self._retry(lambda s=seq: self._log.read(s), f"reading log entry {seq}")
                if self.last_versions is not None:
                    order = int(entry["version_order"])
                    self._max_order = order if self._max_order is None else max(self._max_order, order)
            pending.append(entry)
            self._listed_seq = seq

    def _mine(self, seq: int) -> bool:
        return self.consumer is None or assigned_to(seq, self.consumer[0], self.consumer[1])

    def _read_entry(self, entry: dict) -> Iterator[Tuple[int, pa.RecordBatch, bool]]:
        seq = entry["seq"]
        if not self._mine(seq):
            self.position = seq
            return
        if self.last_versions is not None and stale(int(entry["version_order"]), self._max_order,
                                                    self.last_versions):
            self.stats["entries_skipped_stale"] += 1
            self.position = seq
            return
        self.stats["entries_read"] += 1
        committed_at = entry.get("committed_at")
        if committed_at is not None:
            self.stats["max_age_seconds"] = max(self.stats["max_age_seconds"], time.time() - float(committed_at))
        # one batch of look-ahead, so the entry's last batch is known as such when it is handed out
        held: Optional[pa.RecordBatch] = None
        for url in self._log.part_urls(entry):
            for batch in self._part_batches(url):
                if held is not None:
                    yield seq, held, False
                held = batch
        if held is not None:
            yield seq, held, True
        else:
            self.position = seq  # an entry without rows is done once reached

    def _part_batches(self, url: str) -> Iterator[pa.RecordBatch]:
        """The part's rows in batches; after a transient error the part is opened again and the rows already
        handed out are passed over, so none is yielded twice and none is lost."""
        done = 0
        retrier = _Retrier(self)
        while True:
            try:
                skip = done
                # pre_buffer=False: row group by row group, not the whole part in one read (bounded memory)
                for _, _, batch in read_batches([url], self.columns, self.batch_rows, required=self.columns,
                                                pre_buffer=False):
                    retrier.ok()
                    if skip:
                        if batch.num_rows <= skip:
                            skip -= batch.num_rows
                            continue
                        batch, skip = batch.slice(skip), 0
                    if batch.num_rows == 0:
                        continue
                    batch = batch.select(self.columns)  # the order asked for, whatever the file's order
                    done += batch.num_rows
                    yield batch
                return
            except transient_errors() as e:
                retrier.failed(e, f"reading {url}")

    # ---- waiting, stopping, retrying -----------------------------------------------------------------------------
    def _retry(self, fn: Callable, what: str):
        retrier = _Retrier(self)
        while True:
            try:
                return fn()
            except transient_errors() as e:
                retrier.failed(e, what)

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _Stopped()

    def _wait(self, seconds: float) -> None:
        if self.stop is not None:
            if self.stop.wait(seconds):
                raise _Stopped()
        else:
            time.sleep(seconds)
