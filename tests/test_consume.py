"""The trainer-side reader of a continuous run (streammine.consume): commit logs are written here by hand with
CommitLog.append and small Parquet parts, and every expectation is computed from what the test wrote."""
from __future__ import annotations

import io
import os
import shutil
import threading
import time
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from streammine.consume import NegativesFeed, assigned_to, backoff_delays, committed_dataset, stale
from streammine.io import fs
from streammine.sink.commit_log import CommitLog
from streammine.sink.schema import MINED_SCHEMA


# ---- writing a log by hand -------------------------------------------------------------------------------------------
class Run:
    """A commit log under ``out`` written the way ``serve`` does: parts first, then the entry naming them. ``rows``
    is the independent record of what was committed: (seq, query_id, version) in log order."""

    def __init__(self, out: str):
        self.out = out
        self.log = CommitLog(out)
        self.rows: list = []
        self.entries: list = []
        self._unit = 0

    def commit(self, version_order: int, part_rows=(2,), row_group_size=None) -> dict:
        self._unit += 1
        version = f"v{version_order}"
        unit = f"u{self._unit:03d}"
        parts, ids = [], []
        for i, n in enumerate(part_rows):
            rows = [make_row(f"{unit}-p{i}-q{j}", version) for j in range(n)]
            rel = f"data/{version}/{unit}/part-{i:03d}.parquet"
            write_part(fs.join(self.out, rel), rows, row_group_size)
            parts.append({"part": rel, "rows": n})
            ids += [r["query_id"] for r in rows]
        entry = self.log.append({"version": version, "version_order": version_order, "unit": unit, "parts": parts,
                                 "rows": len(ids), "version_created": time.time()})
        self.rows += [(entry["seq"], q, version) for q in ids]
        self.entries.append(entry)
        return entry

    def orphan(self) -> str:
        """A part no entry names (a killed writer's): valid Parquet whose rows must never appear."""
        rel = "data/v1/orphan/part-000.parquet"
        write_part(fs.join(self.out, rel), [make_row("ORPHAN", "v1")])
        return rel


def make_row(query_id: str, version: str) -> dict:
    return {"query_id": query_id, "query": f"text of {query_id}", "positive_ids": ["d1"], "positive_scores": [0.9],
            "positive_ref": 0.9, "negative_ids": ["d2", "d3"], "negative_scores": [0.5, 0.25],
            "negative_ranks": [0, 1], "n_candidates": 5, "short": False, "model": "m", "model_version": version}


def write_part(url: str, rows: list, row_group_size=None) -> None:
    table = pa.Table.from_pylist(rows, schema=MINED_SCHEMA)
    with fs.open_url(url, "wb") as f:
        pq.write_table(table, f, row_group_size=row_group_size)


def keys(rows) -> list:
    return [(r["_seq"], r["query_id"], r["model_version"]) for r in rows]


def wait_for(condition, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def drain(feed, out: list) -> None:
    for row in feed:
        out.append(row)


# ---- the pure rules --------------------------------------------------------------------------------------------------
def test_assigned_to_gives_every_entry_exactly_one_consumer():
    for world_size, num_workers in [(1, 1), (2, 2), (3, 2), (4, 1)]:
        for seq in range(1, 50):
            owners = [(r, w) for r in range(world_size) for w in range(num_workers)
                      if assigned_to(seq, r, world_size, w, num_workers)]
            assert len(owners) == 1
            r, w = owners[0]
            assert r * num_workers + w == seq % (world_size * num_workers)
    with pytest.raises(ValueError):
        assigned_to(1, 2, 2)


def test_stale_keeps_exactly_the_last_k_versions():
    # newest known order 5: k=1 keeps {5}, k=2 keeps {4, 5}; None keeps all
    assert [o for o in range(1, 6) if not stale(o, 5, 1)] == [5]
    assert [o for o in range(1, 6) if not stale(o, 5, 2)] == [4, 5]
    assert [o for o in range(1, 6) if not stale(o, 5, None)] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        stale(1, 1, 0)


def test_backoff_doubles_up_to_the_cap():
    gen = backoff_delays(0.1, 1.0)
    assert [round(next(gen), 6) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


# ---- reading what is committed ---------------------------------------------------------------------------------------
def test_reads_entries_in_order_only_named_parts_then_stops(tmp_path):
    run = Run(str(tmp_path / "out"))
    for order, parts in [(1, (3, 2)), (1, (0,)), (2, (5,)), (2, ()), (3, (1, 4))]:
        run.commit(order, parts, row_group_size=2)
    run.orphan()
    # garbage where a part could be: reading it would raise, so the feed must not open it either
    with open(tmp_path / "out" / "data" / "part-garbage.parquet", "wb") as f:
        f.write(b"not parquet")

    feed = NegativesFeed(run.out, follow=False, batch_rows=2)
    rows = list(feed)
    assert keys(rows) == run.rows
    assert set(rows[0]) == set(MINED_SCHEMA.names) | {"_seq"}
    assert rows[0]["negative_ids"] == ["d2", "d3"] and rows[0]["negative_scores"] == [0.5, 0.25]
    assert feed.position == 5
    assert feed.stats["entries_read"] == 5 and feed.stats["rows"] == len(run.rows) == 15
    assert feed.stats["entries_skipped_stale"] == 0 and feed.stats["max_age_seconds"] >= 0

    # batches: same rows, at most batch_rows each, a _seq column, the columns asked for in the order asked
    feed = NegativesFeed(run.out, follow=False, batch_rows=2, columns=["model_version", "query_id"])
    batches = list(feed.batches())
    assert all(0 < b.num_rows <= 2 for b in batches)
    assert batches[0].schema.names == ["model_version", "query_id", "_seq"]
    assert batches[0].schema.field("_seq").type == pa.int64()
    table = pa.Table.from_batches(batches)
    assert list(zip(table["_seq"].to_pylist(), table["query_id"].to_pylist(),
                    table["model_version"].to_pylist())) == run.rows
    assert feed.position == 5

    with pytest.raises(ValueError):
        NegativesFeed(run.out, columns=["no_such_column"])


def test_follow_false_on_a_log_not_started_yields_nothing(tmp_path):
    start = time.monotonic()
    (tmp_path / "nothing").mkdir()  # a run's folder before its first commit (a missing one is an error)
    feed = NegativesFeed(str(tmp_path / "nothing"), follow=False, poll_seconds=5)
    assert list(feed) == [] and feed.position == 0
    assert time.monotonic() - start < 2


def test_entries_from_ten_on_sort_numerically(tmp_path):
    run = Run(str(tmp_path / "out"))
    for _ in range(12):
        run.commit(1, (1,))
    assert [r["_seq"] for r in NegativesFeed(run.out, follow=False)] == list(range(1, 13))


# ---- tail -f ---------------------------------------------------------------------------------------------------------
def test_follow_sees_every_row_once_in_order_and_ends_when_the_log_closes(tmp_path):
    run = Run(str(tmp_path / "out"))
    run.commit(1, (2,))
    run.orphan()

    def writer():
        for i in range(8):
            time.sleep(0.03)
            run.commit(1 + i // 3, (i % 3 + 1, 2))
        run.log.close()

    feed = NegativesFeed(run.out, follow=True, poll_seconds=0.01, idle_timeout_s=20)
    thread = threading.Thread(target=writer)
    thread.start()
    start = time.monotonic()
    rows = list(feed)
    thread.join()
    assert time.monotonic() - start < 15  # ended by _CLOSED, not by the idle timeout
    assert keys(rows) == run.rows and len(run.rows) == 2 + sum(i % 3 + 3 for i in range(8))
    assert feed.position == 9 and feed.stats["entries_read"] == 9


def test_stop_event_ends_the_feed_between_entries(tmp_path):
    run = Run(str(tmp_path / "out"))
    run.commit(1, (3,))
    run.commit(1, (2,))
    stop = threading.Event()
    feed = NegativesFeed(run.out, follow=True, poll_seconds=0.05, stop=stop)
    rows = []
    for row in feed:
        rows.append(row)
        stop.set()  # set on the first row: entry 1 is finished (never half read), entry 2 is not started
    assert keys(rows) == run.rows[:3]
    assert feed.position == 1

    # set from another thread while the feed waits for entries that never come (the log is not closed)
    stop = threading.Event()
    feed = NegativesFeed(run.out, follow=True, poll_seconds=0.05, stop=stop)
    got: list = []
    thread = threading.Thread(target=drain, args=(feed, got))
    thread.start()
    wait_for(lambda: len(got) == len(run.rows))
    time.sleep(0.2)
    assert thread.is_alive()  # caught up, following
    stop.set()
    thread.join(15)
    assert not thread.is_alive()
    assert keys(got) == run.rows and feed.position == 2


def test_idle_timeout_ends_a_feed_with_nothing_new(tmp_path):
    run = Run(str(tmp_path / "out"))
    run.commit(1, (2,))
    feed = NegativesFeed(run.out, follow=True, poll_seconds=0.05, idle_timeout_s=0.4)
    start = time.monotonic()
    rows = list(feed)
    elapsed = time.monotonic() - start
    assert keys(rows) == run.rows
    assert 0.35 <= elapsed < 10

    # an entry arriving within the timeout restarts it: the feed reads it and times out later
    feed = NegativesFeed(run.out, follow=True, poll_seconds=0.02, idle_timeout_s=0.5, start_after_seq=1)
    timer = threading.Timer(0.3, lambda: run.commit(1, (1,)))
    timer.start()
    start = time.monotonic()
    rows = list(feed)
    elapsed = time.monotonic() - start
    timer.join()
    assert keys(rows) == run.rows[2:] and len(rows) == 1
    assert elapsed >= 0.75


# ---- freshness -------------------------------------------------------------------------------------------------------
def test_last_versions_on_a_listed_log(tmp_path):
    """Everything listed before reading: an entry is kept iff its version_order >= max order in the log - k + 1."""
    run = Run(str(tmp_path / "out"))
    for order in [1, 2, 1, 3, 2, 3, 1]:
        run.commit(order, (2,))
    newest = max(e["version_order"] for e in run.entries)
    for k in (1, 2, 3):
        keep = {e["seq"] for e in run.entries if e["version_order"] >= newest - k + 1}
        feed = NegativesFeed(run.out, follow=False, last_versions=k)
        rows = list(feed)
        assert keys(rows) == [r for r in run.rows if r[0] in keep]
        assert feed.stats["entries_skipped_stale"] == len(run.entries) - len(keep)
        assert feed.position == 7  # skipped entries count as handled
    assert {r["model_version"] for r in NegativesFeed(run.out, follow=False, last_versions=1)} == {"v3"}
    with pytest.raises(ValueError):
        NegativesFeed(run.out, last_versions=0)


def test_last_versions_moves_when_a_newer_version_is_listed_while_following(tmp_path):
    """Rows of v1 are read while v1 is the newest listed; once the log lists v3, every later entry of an older
    version is skipped, even one committed before it (seq 2). poll_seconds=0 lists the log before every entry."""
    run = Run(str(tmp_path / "out"))
    run.commit(1, (1,))
    run.commit(1, (1,))
    feed = NegativesFeed(run.out, follow=True, last_versions=1, poll_seconds=0, idle_timeout_s=10)
    it = iter(feed)
    assert keys([next(it)]) == [run.rows[0]]   # seq 1, v1: the newest version listed
    run.commit(3, (1,))                         # seq 3: v3 listed before seq 2 is read
    assert keys([next(it)]) == [run.rows[2]]   # seq 2 (v1) skipped, seq 3 read
    run.commit(2, (1,))                         # seq 4: v2, older than v3
    run.commit(3, (1,))                         # seq 5
    run.log.close()
    rest = list(it)
    assert keys(rest) == [run.rows[4]]
    assert feed.stats["entries_skipped_stale"] == 2 and feed.position == 5


# ---- resuming --------------------------------------------------------------------------------------------------------
def test_resume_from_position_misses_nothing_and_repeats_only_an_unfinished_entry(tmp_path):
    run = Run(str(tmp_path / "out"))
    for parts in [(2, 1), (0,), (3,), (), (1,), (2, 2)]:
        run.commit(1, parts, row_group_size=1)
    total = len(run.rows)
    for cut in range(total + 1):
        first = NegativesFeed(run.out, follow=False, batch_rows=1)
        it = iter(first)
        taken = [next(it) for _ in range(cut)]
        position = first.position
        # the entries up to position were yielded completely; what follows position is what is unfinished
        done = [r for r in run.rows if r[0] <= position]
        assert keys(taken)[:len(done)] == done
        partial = keys(taken)[len(done):]
        assert all(r[0] > position for r in partial)
        if cut and cut < total and run.rows[cut][0] != run.rows[cut - 1][0]:
            assert partial == []  # cut right after an entry's last row: that entry is done, nothing repeats
        second = NegativesFeed(run.out, follow=False, start_after_seq=position, batch_rows=1)
        again = keys(second)
        assert done + again == run.rows  # none missed, none twice
        assert again[:len(partial)] == partial  # only the unfinished entry's rows come again

    # batches: position covers the entry of the last batch handed out
    feed = NegativesFeed(run.out, follow=False, batch_rows=10)
    it = feed.batches()
    first = next(it)
    assert set(first["_seq"].to_pylist()) == {1}
    next(it)
    assert feed.position == 1  # second batch: the rest of entry 1 (second part)
    rest = list(it)
    assert feed.position == 6 and sum(b.num_rows for b in rest) == total - 3


# ---- transient errors ------------------------------------------------------------------------------------------------
def test_a_part_missing_for_a_moment_is_retried_not_skipped(tmp_path):
    run = Run(str(tmp_path / "out"))
    run.commit(1, (2,))
    entry = run.commit(1, (3,))
    run.commit(1, (1,))
    part = os.path.join(run.out, entry["parts"][0]["part"])
    shutil.move(part, part + ".away")  # e.g. a network filesystem that does not show it yet
    feed = NegativesFeed(run.out, follow=False, retry_initial_s=0.02, retry_cap_s=0.05, retry_total_s=30)
    rows: list = []
    thread = threading.Thread(target=drain, args=(feed, rows))
    thread.start()
    wait_for(lambda: feed.stats["retries"] >= 2)
    assert keys(rows) == run.rows[:2]  # entry 1 read; waiting on entry 2, nothing after it
    shutil.move(part + ".away", part)
    thread.join(10)
    assert keys(rows) == run.rows
    assert feed.stats["retries"] >= 2 and "FileNotFoundError" in feed.last_error

    # after retry_total_s the error is raised, and what came before it was yielded
    shutil.move(part, part + ".away")
    feed = NegativesFeed(run.out, follow=False, retry_initial_s=0.02, retry_cap_s=0.05, retry_total_s=0.3)
    rows = []
    start = time.monotonic()
    with pytest.raises(FileNotFoundError):
        drain(feed, rows)
    assert 0.2 <= time.monotonic() - start < 5
    assert keys(rows) == run.rows[:2] and feed.position == 1


class FlakyMemoryFileSystem(MemoryFileSystem):
    """memory:// whose Parquet files fail one read (the ``fail_at``-th read call on a part): an I/O error in the
    middle of a part, after some of its rows were handed out. A test double for the filesystem layer only."""
    protocol = "flakymem"
    reads = 0
    fail_at = 0

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).replace("flakymem://", "memory://", 1))

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        if mode != "rb" or not path.endswith(".parquet"):
            return f
        return _FlakyFile(f.getvalue())


class _FlakyFile(io.BytesIO):
    def read(self, *args):
        FlakyMemoryFileSystem.reads += 1
        if FlakyMemoryFileSystem.reads == FlakyMemoryFileSystem.fail_at:
            raise ConnectionResetError("connection reset by peer (injected)")
        return super().read(*args)


def test_an_error_in_the_middle_of_a_part_resumes_at_the_next_row():
    fsspec.register_implementation("flakymem", FlakyMemoryFileSystem, clobber=True)
    name = uuid.uuid4().hex
    run = Run(f"memory://consume-{name}")
    run.commit(1, (4,), row_group_size=1)
    run.commit(1, (4, 3), row_group_size=2)
    url = f"flakymem://consume-{name}"

    FlakyMemoryFileSystem.fail_at, FlakyMemoryFileSystem.reads = 0, 0
    cols = ["query_id", "model_version"]  # two column chunks per row group: fewer reads, every one of them tried
    clean = NegativesFeed(url, follow=False, batch_rows=1, columns=cols)
    assert keys(clean) == run.rows
    n_reads = FlakyMemoryFileSystem.reads
    assert n_reads > 3 * 6  # several reads per part: failures land before, between and after row groups

    for fail_at in range(1, n_reads + 1):
        FlakyMemoryFileSystem.fail_at, FlakyMemoryFileSystem.reads = fail_at, 0
        feed = NegativesFeed(url, follow=False, batch_rows=1, columns=cols, retry_initial_s=0.001,
                             retry_cap_s=0.001)
        assert keys(feed) == run.rows, f"failing read {fail_at}"
        assert feed.stats["retries"] == 1 and feed.stats["rows"] == len(run.rows)


# ---- torch -----------------------------------------------------------------------------------------------------------
def test_iterable_dataset_splits_entries_over_ranks_and_workers(tmp_path, monkeypatch):
    from torch.utils.data import DataLoader

    from streammine.consume import NegativesIterableDataset
    run = Run(str(tmp_path / "out"))
    for i in range(11):
        run.commit(1, (i % 3 + 1,))
    run.orphan()
    by_rank = {}
    for rank in (0, 1):
        dataset = NegativesIterableDataset(run.out, rank=rank, world_size=2, follow=False)
        loader = DataLoader(dataset, batch_size=None, num_workers=2)
        by_rank[rank] = keys(loader)
    assert sorted(by_rank[0] + by_rank[1]) == sorted(run.rows)  # every row exactly once
    assert not set(by_rank[0]) & set(by_rank[1])
    for rank in (0, 1):
        # consumers 2*rank and 2*rank+1 of 4: the entries whose seq % 4 is one of them
        assert {r[0] for r in by_rank[rank]} == {s for s in range(1, 12) if s % 4 in (2 * rank, 2 * rank + 1)}
        # each entry's rows arrive together and in order (one worker reads it)
        for seq in {r[0] for r in by_rank[rank]}:
            assert [r for r in by_rank[rank] if r[0] == seq] == [r for r in run.rows if r[0] == seq]

    # no arguments: RANK and WORLD_SIZE from the environment; no workers: one consumer per rank
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    dataset = NegativesIterableDataset(run.out, follow=False)
    assert (dataset.rank, dataset.world_size) == (2, 3)
    assert keys(dataset) == [r for r in run.rows if r[0] % 3 == 2]


def test_importing_the_package_imports_neither_torch_nor_ray():
    import subprocess
    import sys
    code = ("import sys, streammine.consume as c; c.NegativesFeed; c.committed_dataset; "
            "print('torch' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---- Ray Data --------------------------------------------------------------------------------------------------------
def test_committed_dataset_is_the_committed_rows(tmp_path, ray_session):
    from streammine.consume.ray_data import committed_parts
    run = Run(str(tmp_path / "out"))
    for order, parts in [(1, (3, 2)), (2, (4,)), (2, (0,)), (3, (1, 2))]:
        run.commit(order, parts)
    run.orphan()
    expected = pa.Table.from_pylist([make_row(q, v) for _, q, v in run.rows], schema=MINED_SCHEMA).to_pylist()

    # one execution (Ray Data's first is slow on a small machine): a streaming_split, as Ray Train hands its
    # workers, consumed concurrently; together the splits hold each committed row once, and no other row
    ds = committed_dataset(run.out)
    assert ds.columns() == MINED_SCHEMA.names
    splits = ds.streaming_split(2, equal=False)
    got: list = [[], []]

    def consume(i):
        for batch in splits[i].iter_batches(batch_format="pyarrow"):
            got[i] += batch.to_pylist()

    threads = [threading.Thread(target=consume, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    by_id = lambda rows: sorted(rows, key=lambda r: r["query_id"])  # noqa: E731
    assert by_id(got[0] + got[1]) == by_id(expected)

    # freshness and columns as the feed's (what would be read, without another execution)
    assert committed_parts(run.out, last_versions=2) == [p["part"] for e in run.entries if e["version_order"] >= 2
                                                         for p in e["parts"]]
    assert committed_parts(run.out) == [p["part"] for e in run.entries for p in e["parts"]]
    assert committed_dataset(run.out, last_versions=2, columns=["query_id", "model_version"]).columns() == [
        "query_id", "model_version"]
    (tmp_path / "nothing").mkdir()
    assert committed_dataset(str(tmp_path / "nothing")).count() == 0


# ---- S3 (a loopback moto server) -------------------------------------------------------------------------------------
def test_feed_on_s3_and_a_part_missing_for_a_moment(s3_bucket):
    run = Run(f"s3://{s3_bucket}/run")
    run.commit(1, (2, 1))
    entry = run.commit(2, (3,))
    run.orphan()
    run.log.close()
    feed = NegativesFeed(run.out, follow=False)
    assert keys(feed) == run.rows and feed.position == 2
    assert keys(NegativesFeed(run.out, follow=True, poll_seconds=0.05, idle_timeout_s=10)) == run.rows
    assert keys(NegativesFeed(run.out, follow=False, last_versions=1)) == run.rows[3:]

    # the object store does not have a part for a moment: waited for, then read; nothing skipped
    filesystem, _ = fs.resolve(run.out)
    part = f"{s3_bucket}/run/{entry['parts'][0]['part']}"
    data = filesystem.cat_file(part)
    filesystem.rm(part)
    feed = NegativesFeed(run.out, follow=False, retry_initial_s=0.05, retry_cap_s=0.1, retry_total_s=30)
    rows: list = []
    thread = threading.Thread(target=drain, args=(feed, rows))
    thread.start()
    wait_for(lambda: feed.stats["retries"] >= 1)
    assert keys(rows) == run.rows[:3]
    filesystem.pipe_file(part, data)
    thread.join(30)
    assert keys(rows) == run.rows
