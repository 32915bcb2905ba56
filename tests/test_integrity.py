"""Integrity (README, "Security" and "Bad input"): streammine deletes only files it wrote and names; one writer
per run and per store (create-only commits, a lease for serve); manifests are written whole. Most tests drive the
sinks and the commit log without Ray, in the order Ray Data calls them; two run real second processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from helpers import write_synthetic_beir
from test_commit_files import mined_block, store_block

from streammine.errors import StreamMineError
from streammine.index.store import buckets_of_shard, read_buckets, read_manifest
from streammine.index.store_sink import EmbeddingStoreSink
from streammine.sink.commit_log import CommitLog
from streammine.sink.parts import MinedPartsSink, iter_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def foreign(path, text="not streammine's") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


# ---- never delete a foreign file ----------------------------------------------------------------------------

def test_commit_removes_only_its_own_leftovers(tmp_path):
    """The output sink's commit deletes its retried tasks' parts; a foreign part (any name, streammine-like too)
    and an earlier writer's part stay."""
    out = str(tmp_path / "out")
    theirs = [foreign(os.path.join(out, n)) for n in
              ("part-00000-0000.parquet", "part-00001-0123456789ab.parquet", "part-00002-abcdef01-0123456789ab.parquet")]
    sink = MinedPartsSink(out)
    sink.on_write_start()
    a = sink.write([mined_block(["q1"])], SimpleNamespace(task_idx=0))
    dead = sink.write([mined_block(["q2"])], SimpleNamespace(task_idx=1))
    b = sink.write([mined_block(["q2"])], SimpleNamespace(task_idx=1))
    sink.on_write_complete(SimpleNamespace(write_returns=[a, b]))
    assert not os.path.exists(os.path.join(out, dead["part"]))
    assert all(os.path.exists(p) for p in theirs)
    assert sorted(q for t in iter_rows(out, ["query_id"]) for q in t.column("query_id").to_pylist()) == ["q1", "q2"]


def test_overwrite_removes_only_what_the_previous_run_named(tmp_path):
    """--overwrite deletes the previous run's listed parts, manifest, summary, quarantine parts and exports;
    nothing else, and never a path a manifest leads outside the output."""
    from streammine.run.output import remove_previous_output
    out = str(tmp_path / "out")
    sink = MinedPartsSink(out)
    sink.on_write_start()
    r = sink.write([mined_block(["q1"])], SimpleNamespace(task_idx=0))
    sink.on_write_complete(SimpleNamespace(write_returns=[r]))
    ours = [os.path.join(out, r["part"]), foreign(os.path.join(out, "summary.json"), "{}"),
            foreign(os.path.join(out, "_quarantine", "part-" + "a" * 32 + ".jsonl")),
            foreign(os.path.join(out, "export", "st-triplet.parquet"))]
    outside = foreign(str(tmp_path / "precious.parquet"))
    manifest = json.load(open(os.path.join(out, "_parts.json")))
    manifest["parts"].append({"part": "../precious.parquet", "rows": 1})
    json.dump(manifest, open(os.path.join(out, "_parts.json"), "w"))
    kept = [foreign(os.path.join(out, n)) for n in ("notes.txt", "part-00000-0000.parquet", "corpus.jsonl",
                                                    os.path.join("_quarantine", "mine.jsonl"),
                                                    os.path.join("export", "other.parquet"),
                                                    os.path.join("_work", "embeddings", "x", "_manifest.json"))]
    remove_previous_output(out)
    assert [p for p in ours + [os.path.join(out, "_parts.json")] if os.path.exists(p)] == []
    assert all(os.path.exists(p) for p in kept + [outside])


def test_serve_unit_cleanup_removes_only_sink_files(tmp_path):
    from streammine.refresh.serve import remove_unit_leftovers
    unit = str(tmp_path / "run" / "data" / "v1" / "u-1")
    sink = MinedPartsSink(unit)
    sink.on_write_start()
    r = sink.write([mined_block(["q1"])], SimpleNamespace(task_idx=0))
    sink.on_write_complete(SimpleNamespace(write_returns=[r]))
    kept = [foreign(os.path.join(unit, "part-00000-0000.parquet")), foreign(os.path.join(unit, "sub", "x.txt"))]
    assert remove_unit_leftovers(unit) == 2
    assert sorted(os.listdir(unit)) == ["part-00000-0000.parquet", "sub"] and all(map(os.path.exists, kept))


def test_two_writers_of_one_store_leave_a_whole_store(tmp_path):
    """Two runs with one store key write it at once (interleaved as two processes would): the first commit
    stands, each writer deletes only its own files, and every file the manifest names exists."""
    store = str(tmp_path / "store")
    ids = [f"d{i}" for i in range(50)]
    a, b = EmbeddingStoreSink(store, {"model": "m"}), EmbeddingStoreSink(store, {"model": "m"})
    ra = a.write([store_block(ids)], SimpleNamespace(task_idx=0))
    rb = b.write([store_block(ids)], SimpleNamespace(task_idx=0))
    foreign_part = foreign(os.path.join(store, "bucket=00", "part-" + "0" * 32 + ".parquet"))
    a.on_write_complete(SimpleNamespace(write_returns=[ra]))
    b.on_write_complete(SimpleNamespace(write_returns=[rb]))
    manifest = read_manifest(store)
    assert manifest["files"] == sorted(ra["files"])
    assert all(os.path.exists(os.path.join(store, f)) for f in manifest["files"])
    assert not [f for f in rb["files"] if os.path.exists(os.path.join(store, f))]  # the loser cleaned up
    assert os.path.exists(foreign_part)
    read = [d for t in read_buckets(store, buckets_of_shard(0, 1), manifest) for d in t.column("doc_id").to_pylist()]
    assert sorted(read) == sorted(ids)


def test_store_retention_removes_only_the_store_files(tmp_path):
    from streammine.index.store import remove_store
    store = str(tmp_path / "store")
    sink = EmbeddingStoreSink(store, {"model": "m"})
    r = sink.write([store_block([f"d{i}" for i in range(20)])], SimpleNamespace(task_idx=0))
    sink.on_write_complete(SimpleNamespace(write_returns=[r]))
    kept = [foreign(os.path.join(store, "bucket=00", "mine.parquet")), foreign(os.path.join(store, "README"))]
    assert remove_store(store) == len(r["files"]) + 1
    assert read_manifest(store) is None and all(map(os.path.exists, kept))
    assert not [f for f in r["files"] if os.path.exists(os.path.join(store, f))]


# ---- one writer per run -------------------------------------------------------------------------------------

APPEND = """
import sys, json
from streammine.sink.commit_log import CommitLog
from streammine.errors import StreamMineError
try:
    e = CommitLog(sys.argv[1]).append({"version": "v", "unit": {"key": sys.argv[2]}, "parts": []}, last_seq=0)
    print(json.dumps(e["seq"]))
except StreamMineError as err:
    print("refused:", err)
"""


@pytest.mark.parametrize("url", ["local", "s3"])
def test_a_commit_entry_is_never_replaced(tmp_path, url, request):
    """Two processes commit entry 1 of one log (each believes it is next): exactly one succeeds, the other is
    refused with an error naming the entry, and the entry is the first one's."""
    if url == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        run = f"s3://{bucket}/run"
    else:
        run = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=REPO)
    outs = [subprocess.run([sys.executable, "-c", APPEND, run, key], capture_output=True, text=True, env=env,
                           timeout=120, check=True).stdout.strip() for key in ("u-first", "u-second")]
    assert outs[0] == "1" and outs[1].startswith("refused:") and "0000000001.json" in outs[1], outs
    assert CommitLog(run).read(1)["unit"]["key"] == "u-first" and CommitLog(run).sequence_numbers() == [1]


def test_retried_commit_of_the_same_entry_is_not_an_error(tmp_path):
    log = CommitLog(str(tmp_path / "run"))
    entry = {"version": "v", "unit": {"key": "u"}, "parts": [{"part": "p", "rows": 1}]}
    first = log.append(entry, last_seq=0)
    assert log.append(entry, last_seq=0)["committed_at"] == first["committed_at"]


def test_lease_expires_and_a_stalled_holder_cannot_commit(tmp_path):
    from streammine.refresh.lease import LeaseHeld, RunLease
    run = str(tmp_path / "run")
    a = RunLease(run, seconds=1.0).acquire()
    with pytest.raises(LeaseHeld, match="another serve"):
        RunLease(run, seconds=1.0).acquire()
    a._stop.set()  # a holder stalled (no heartbeat) past its lease
    a._thread.join()
    time.sleep(1.2)
    b = RunLease(run, seconds=1.0).acquire()
    with pytest.raises(LeaseHeld, match="taken by another writer"):
        a.check()
    b.check()
    b.release()
    RunLease(run, seconds=30).acquire().release()  # a released lease is free at once


HOLD = """
import sys, time
from streammine.refresh.lease import RunLease
lease = RunLease(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_killed_holder_is_taken_over_at_once_and_a_remote_one_when_it_stops_beating(tmp_path):
    """A serve killed on this host (SIGKILL: no release) is replaced at once, so a restart resumes; a holder on
    another host is refused while its heartbeat moves and taken over once it has expired."""
    import threading
    from streammine.io import fs
    from streammine.refresh.lease import LeaseHeld, RunLease
    run = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, run], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=REPO))
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LeaseHeld):
        RunLease(run).acquire()
    holder.kill()
    holder.wait()
    t0 = time.monotonic()
    RunLease(run).acquire().release()
    assert time.monotonic() - t0 < 5

    remote = RunLease(run, seconds=2.0)
    epoch = remote.epochs()[-1] + 1
    record = {"owner": "x", "host": "another-host", "pid": 1, "heartbeat_at": time.time(), "seconds": 2.0}
    fs.write_json_atomic(remote._epoch_url(epoch), record)
    stop = threading.Event()

    def beat():
        while not stop.wait(0.3):
            fs.write_json_atomic(remote._epoch_url(epoch), dict(record, heartbeat_at=time.time()))
    beating = threading.Thread(target=beat)
    beating.start()
    try:
        with pytest.raises(LeaseHeld, match="another-host"):
            RunLease(run, seconds=2.0).acquire()
    finally:
        stop.set()
        beating.join()
    t0 = time.monotonic()
    taken = RunLease(run, seconds=2.0).acquire()  # the remote holder stopped beating: taken once it expires
    assert taken.epoch == epoch + 1 and time.monotonic() - t0 < 10
    taken.release()


def test_a_second_serve_on_one_output_fails_at_once(tmp_path):
    """While a live process holds a run's lease, `streammine serve` on that output exits 2 with one line, fast
    (before starting Ray)."""
    data = write_synthetic_beir(str(tmp_path / "data"), n_docs=40, n_queries=4)
    run = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=REPO)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, run], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "streammine.cli", "serve", "--input", data["beir"],
                               "--precomputed", "--corpus-vectors", data["corpus_vectors"],
                               "--query-vectors", data["query_vectors"], "--output", run, "--no-progress"],
                              capture_output=True, text=True, env=env, timeout=120)
        seconds = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streammine: error: ") and "another serve" in lines[0], lines
    assert "Traceback" not in proc.stderr and seconds < 30
    assert not os.path.exists(os.path.join(run, "_log"))


@pytest.mark.slow
def test_two_mines_sharing_a_work_dir_both_succeed(ray_session, tmp_path):
    """Two `streammine mine` processes at once, one work dir (so one embedding store key): both exit 0 with every
    query mined, and the committed store is whole (every file its manifest names exists, every document once).
    Both drivers join the session's Ray (as two jobs on one cluster would)."""
    data = write_synthetic_beir(str(tmp_path / "data"), n_docs=300, n_queries=20)
    work = str(tmp_path / "work")
    env = dict(os.environ, PYTHONPATH=REPO, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    procs = [subprocess.Popen([sys.executable, "-m", "streammine.cli", "mine", "--input", data["beir"],
                               "--precomputed", "--corpus-vectors", data["corpus_vectors"],
                               "--query-vectors", data["query_vectors"], "--output", str(tmp_path / f"out{i}"),
                               "--shards", "1", "--no-progress", "--set", f"run.work_dir={work}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in (0, 1)]
    results = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    [store] = [os.path.join(work, "embeddings", d) for d in os.listdir(os.path.join(work, "embeddings"))]
    manifest = read_manifest(store)
    assert all(os.path.exists(os.path.join(store, f)) for f in manifest["files"])
    ids = [d for f in manifest["files"] for d in pq.read_table(os.path.join(store, f)).column("doc_id").to_pylist()]
    assert sorted(ids) == sorted(f"d{i}" for i in range(300))
    for i in (0, 1):
        qids = [q for t in iter_rows(str(tmp_path / f"out{i}"), ["query_id"]) for q in t.column("query_id").to_pylist()]
        assert sorted(qids) == sorted(f"q{i}" for i in range(20))


# ---- every query accounted ----------------------------------------------------------------------------------

def test_every_query_read_is_mined_or_quarantined(ray_session, tmp_path):
    """Lenient run: a query whose qrels are all score 0 and a malformed query line are quarantined with their
    reasons, and queries_in counts them; an empty split is an error naming its qrels file, not an empty success."""
    from helpers import precomputed_overrides
    from streammine.api import load_config, mine
    from streammine.io.records import read_quarantine
    data = write_synthetic_beir(str(tmp_path / "data"), n_docs=100, n_queries=10)
    beir = data["beir"]
    with open(os.path.join(beir, "queries.jsonl"), "a") as f:
        f.write(json.dumps({"_id": "q_zero", "text": "judged, nothing relevant"}) + "\n")
        f.write('{"_id": "q_bad", "text": \n')
    with open(os.path.join(beir, "qrels", "train.tsv"), "a") as f:
        f.write("q_zero\td1\t0\nq_bad\td2\t1\n")
    out = str(tmp_path / "out")
    result = mine(load_config(None, precomputed_overrides(data, out, **{"input.lenient": True})))
    c = result.summary["counts"]
    assert (c["queries_out"], c["queries_in"]) == (10, 12)
    records = {r["location"].rsplit(":", 1)[1]: r for r in read_quarantine(os.path.join(out, "_quarantine"))}
    assert "no positive" in records["11"]["reason"] and "malformed JSON" in records["12"]["reason"]
    assert len(records) == 2  # each once
    with pytest.raises(StreamMineError, match="no positive"):  # strict: the same query is an error
        mine(load_config(None, precomputed_overrides(data, str(tmp_path / "strict"))))
    with open(os.path.join(beir, "qrels", "train.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\nq_zero\td1\t0\n")
    with pytest.raises(StreamMineError, match=r"qrels/train.tsv: no query to mine \(all 2 queries read were "
                                              r"quarantined"):
        mine(load_config(None, precomputed_overrides(data, str(tmp_path / "empty"), **{"input.lenient": True})))
    assert not os.path.exists(os.path.join(tmp_path, "empty", "_parts.json"))


def test_a_zero_query_budget_is_an_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "streammine.cli", "mine", "--input", str(tmp_path), "--output",
                           str(tmp_path / "o"), "--max-queries", "-1"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "streammine: error: input.max_queries must be >= 1, got -1", proc.stderr
