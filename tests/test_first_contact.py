"""First contact (issue 14): one-line errors before Ray starts, the cache that outlives an output folder, a private
local Ray beside another one, one reader for both output layouts, the CLI's help.

The error cases run ``streammine.cli.main`` in this process with the file descriptors captured (capfd), plus one
in a subprocess as a user runs it. In this process, starting Ray is replaced by a failure (``_no_ray``): a case
that reached it would end as an internal error, so every error below is found before Ray starts.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import pytest

import streammine
from streammine import InputError
from tests.helpers import precomputed_overrides, read_output, write_synthetic_beir

ERROR_LINE = re.compile(r"^streammine: error: \S")
UNREACHABLE_RAY = "127.0.0.1:1"  # nothing listens there: joining it fails loudly


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _beir(root, corpus_lines=None, queries_lines=None) -> str:
    """A small BEIR directory (texts only; the error cases never encode)."""
    os.makedirs(os.path.join(root, "qrels"), exist_ok=True)
    corpus_lines = corpus_lines or [json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i}"})
                                    for i in range(6)]
    queries_lines = queries_lines or [json.dumps({"_id": f"q{i}", "text": f"query {i}"}) for i in range(3)]
    with open(os.path.join(root, "corpus.jsonl"), "w") as f:
        f.write("\n".join(corpus_lines) + "\n")
    with open(os.path.join(root, "queries.jsonl"), "w") as f:
        f.write("\n".join(queries_lines) + "\n")
    with open(os.path.join(root, "qrels", "train.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3)))
    return str(root)


def _run_cli(argv, capfd):
    """(exit code, stdout, stderr) of ``streammine <argv>`` run in this process; restores what the CLI's quiet
    mode changes process-wide (environment, warning filters, logger levels)."""
    import logging
    from streammine import cli, console
    env = dict(os.environ)
    levels = {name: logging.getLogger(name).level for name in console.NOISY_LOGGERS + ("streammine",)}
    own = logging.getLogger("streammine")
    handlers, propagate = list(own.handlers), own.propagate
    try:
        with warnings.catch_warnings():
            rc = cli.main(argv)
    finally:
        os.environ.clear()
        os.environ.update(env)
        console._state.update(configured=False, verbose=True, owner=None)  # as before the CLI ran
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        own.handlers[:], own.propagate = handlers, propagate
    out, err = capfd.readouterr()
    return rc, out, err


def _assert_one_error_line(rc, err, *expected):
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), err
    assert "Traceback" not in err and "\x1b" not in err
    for text in expected:
        assert text in lines[0], (text, lines[0])


def _no_ray(monkeypatch):
    from streammine.run import ray_runtime

    def reached(*a, **k):
        raise RuntimeError("ray.init reached: this error was not found before Ray")
    monkeypatch.setattr(ray_runtime, "ensure_ray", reached)


def test_user_errors_are_one_line_before_ray(tmp_path, capfd, monkeypatch, s3_env, s3_bucket):
    """Each class of user mistake: exit 2, one stderr line naming the file (and line), no traceback, no escape
    code, before Ray; nothing is encoded and no output folder is left behind."""
    _no_ray(monkeypatch)
    cache = str(tmp_path / "cache")
    good = _beir(tmp_path / "good")
    out = str(tmp_path / "out")
    mine = ["mine", "--cache-dir", cache, "--output", out]

    rc, _, err = _run_cli(mine + ["--input", str(tmp_path / "does-not-exist")], capfd)
    _assert_one_error_line(rc, err, str(tmp_path / "does-not-exist"), "not found")
    rc, _, err = _run_cli(mine + ["--input", good, "--split", "test"], capfd)
    _assert_one_error_line(rc, err, good, "qrels/test.tsv")

    bad_json = [json.dumps({"_id": f"d{i}", "text": f"document {i}"}) for i in range(4)] + ['{"_id": "d4", "text"']
    bad = _beir(tmp_path / "badjson", corpus_lines=bad_json)
    rc, _, err = _run_cli(mine + ["--input", bad], capfd)
    _assert_one_error_line(rc, err, os.path.join(bad, "corpus.jsonl") + ":5:", "malformed JSON")

    # a document id twice with different texts: both lines named, and found before any document is encoded
    dup = _beir(tmp_path / "dup", corpus_lines=[json.dumps({"_id": f"d{i}", "text": f"document {i}"})
                                                 for i in range(6)] + [json.dumps({"_id": "d2", "text": "other"})])
    rc, _, err = _run_cli(mine + ["--input", dup], capfd)
    corpus = os.path.join(dup, "corpus.jsonl")
    _assert_one_error_line(rc, err, f"{corpus}:7:", "duplicate document id 'd2'", f"{corpus}:3")
    assert not os.path.exists(os.path.join(cache, "embeddings"))  # the store is empty: nothing was encoded
    dupq = _beir(tmp_path / "dupq", queries_lines=[json.dumps({"_id": "q0", "text": "a"}),
                                                   json.dumps({"_id": "q1", "text": "b"}),
                                                   json.dumps({"_id": "q2", "text": "c"}),
                                                   json.dumps({"_id": "q1", "text": "d"})])
    rc, _, err = _run_cli(mine + ["--input", dupq], capfd)
    _assert_one_error_line(rc, err, os.path.join(dupq, "queries.jsonl") + ":4:", "duplicate query id 'q1'")

    # outputs: a finished run (needs --overwrite), a foreign folder, the input itself, inside it, above it
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "_parts.json").write_text('{"parts": [], "rows": 0}')
    rc, _, err = _run_cli(["mine", "--input", good, "--output", str(finished)], capfd)
    _assert_one_error_line(rc, err, str(finished), "already holds a mining output; pass --overwrite")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    rc, _, err = _run_cli(["mine", "--input", good, "--output", str(foreign), "--overwrite"], capfd)
    _assert_one_error_line(rc, err, str(foreign), "not a streammine output")
    assert (foreign / "notes.txt").exists()
    for target, what in ((good, "is the input"), (os.path.join(good, "neg"), "inside the input"),
                         (str(tmp_path), "holds the input")):
        rc, _, err = _run_cli(["mine", "--input", good, "--output", target, "--overwrite"], capfd)
        _assert_one_error_line(rc, err, target, what)
    assert sorted(os.listdir(good)) == ["corpus.jsonl", "qrels", "queries.jsonl"]

    # config: a bad value, a missing config file; refresh of a run that does not exist, with a missing model
    rc, _, err = _run_cli(mine + ["--input", good, "--sampler", "nearest"], capfd)
    _assert_one_error_line(rc, err, "mining.sampler.method")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a scratch directory for the shards' rows that cannot be made (under a file)
    rc, _, err = _run_cli(mine + ["--input", good, "--set", f"index.scratch_dir={blocker}/scratch"], capfd)
    _assert_one_error_line(rc, err, "index.scratch_dir", str(blocker))
    rc, _, err = _run_cli(["mine", "--config", str(tmp_path / "nope.yaml")], capfd)
    _assert_one_error_line(rc, err, str(tmp_path / "nope.yaml"), "not found")
    rc, _, err = _run_cli(["refresh", "--output", str(tmp_path / "nonexistent"), "--model", "/nope"], capfd)
    _assert_one_error_line(rc, err, str(tmp_path / "nonexistent"))
    assert not (tmp_path / "nonexistent").exists()

    # object storage: a prefix that does not exist, a bucket that does not exist, an unreachable endpoint
    rc, _, err = _run_cli(mine + ["--input", f"s3://{s3_bucket}/no/such/prefix"], capfd)
    _assert_one_error_line(rc, err, f"s3://{s3_bucket}/no/such/prefix", "not found")
    rc, _, err = _run_cli(["mine", "--input", good, "--output", "s3://no-such-bucket-sm14/out"], capfd)
    _assert_one_error_line(rc, err, "s3://no-such-bucket-sm14/out", "bucket")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    rc, _, err = _run_cli(mine + ["--input", f"s3://{s3_bucket}/beir"], capfd)
    _assert_one_error_line(rc, err, f"s3://{s3_bucket}/beir", "cannot reach the object store")
    assert not os.path.exists(out)  # no run left an empty output folder behind

    # --debug: the same error with its traceback
    rc, _, err = _run_cli(mine + ["--input", str(tmp_path / "does-not-exist"), "--debug"], capfd)
    assert rc == 2 and "Traceback" in err and err.splitlines()[-1].startswith("streammine: error: ")


def test_error_line_as_a_user_sees_it(tmp_path):
    """The same in a real process: exit 2, one clean stderr line, nothing on stdout's side about Ray."""
    env = dict(os.environ, RAY_ADDRESS=UNREACHABLE_RAY, STREAMMINE_CACHE=str(tmp_path / "cache"))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "streammine.cli", "mine", "--input", _beir(tmp_path / "in"),
                           "--split", "test", "--output", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]) and "qrels/test.tsv" in lines[0], proc.stderr
    assert "\x1b" not in proc.stderr and time.monotonic() - t0 < 120


def test_internal_error_keeps_its_traceback(capfd, monkeypatch, tmp_path):
    """A bug is not dressed up as a user error: traceback, a line saying it is a bug, exit 1."""
    from streammine import cli

    def broken(*a, **k):
        raise KeyError("bug")
    monkeypatch.setattr(cli, "run_cache", broken)
    rc, _, err = _run_cli(["cache", "ls", "--cache-dir", str(tmp_path)], capfd)
    assert rc == 1 and "Traceback" in err and "internal error" in err.splitlines()[-1]


def test_find_error_unwraps_ray_wrappers(ray_session):
    """An InputError raised in a Ray task reaches the caller as the project's type (not RayTaskError)."""
    import ray
    from ray.exceptions import RayTaskError
    from streammine.errors import find_error

    @ray.remote
    def fails():
        raise InputError("corpus.jsonl:5", "malformed JSON")
    with pytest.raises(RayTaskError) as excinfo:
        ray.get(fails.remote())
    found = find_error(excinfo.value)
    assert type(found) is InputError and str(found) == "corpus.jsonl:5: malformed JSON"
    assert find_error(RuntimeError("a bug")) is None
    try:  # a wrapper that is not the error's own type (as Ray Data's UserCodeException chains it)
        try:
            raise InputError("queries.jsonl:2", "empty query text")
        except InputError as e:
            inner = e
            raise RuntimeError("Exception occurred in user code") from e
    except RuntimeError as outer:
        assert find_error(outer) is inner


def test_duplicate_document_found_before_encoding_in_the_api(tmp_path, monkeypatch):
    """The Python API raises the project's InputError for a conflicting duplicate id, naming both lines, with no
    embedding store written (the corpus was never encoded)."""
    dup = _beir(tmp_path / "dup", corpus_lines=[json.dumps({"_id": "d0", "text": "x"}),
                                                 json.dumps({"_id": "d1", "text": "y"}),
                                                 json.dumps({"_id": "d2", "text": "z"}),
                                                 json.dumps({"_id": "d1", "text": "Y"}),   # same text: fine
                                                 json.dumps({"_id": "d0", "text": "other"})])
    _no_ray(monkeypatch)
    with pytest.raises(InputError) as excinfo:
        streammine.mine(overrides={"input.path": dup, "output.path": str(tmp_path / "out"),
                                   "run.cache_dir": str(tmp_path / "cache")})
    corpus = os.path.join(dup, "corpus.jsonl")
    assert excinfo.value.location == f"{corpus}:5" and f"than at {corpus}:1" in excinfo.value.reason
    assert not (tmp_path / "cache").exists()


def test_first_id_conflict_against_brute_force():
    """The numpy pass finds the same first conflict as a plain dict walk."""
    import numpy as np
    from streammine.preflight import first_id_conflict
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 30))
        ids = rng.integers(0, 8, n).astype(np.uint64)
        texts = rng.integers(0, 3, n).astype(np.uint64)
        first, expected = {}, None
        for i, (d, t) in enumerate(zip(ids.tolist(), texts.tolist())):
            f = first.setdefault(d, i)
            if texts[f] != t:
                expected = (f, i)
                break
        assert first_id_conflict(ids, texts) == expected


def test_help_version_and_flags(capsys):
    """Every subcommand has a description; options show choices and defaults; --version; --batch-size is the
    YAML's encoder.batch_size and --query-batch-size is run.query_batch_size."""
    from streammine import __version__, cli
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--version"])
    assert __version__ in capsys.readouterr().out
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert p.description, name
    help_text = sub.choices["mine"].format_help()
    assert "one of top, random, simans" in " ".join(help_text.split())  # --sampler
    assert "index.shards, default: 2" in " ".join(help_text.split())
    args = parser.parse_args(["mine", "--batch-size", "64", "--query-batch-size", "128"])
    overrides = cli.overrides_from_args(args)
    assert overrides["encoder.batch_size"] == "64" and overrides["run.query_batch_size"] == "128"
    assert len(set(cli.FLAGS.values())) == len(cli.FLAGS)  # one flag per key


def test_private_local_ray_beside_another(tmp_path):
    """With a plain `ray start --head` running (in the default temp dir of its environment), `streammine mine`
    without an address starts its own Ray instead of attaching to it, and succeeds."""
    ray_tmp = tempfile.mkdtemp(prefix="smr-", dir="/tmp")  # short: Ray's unix sockets live under it
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled", STREAMMINE_CACHE=str(tmp_path / "cache"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("RAY_ADDRESS", None)
    ports = [f"--{name}={_free_port()}" for name in ("port", "dashboard-agent-listen-port",
                                                     "dashboard-agent-grpc-port", "runtime-env-agent-port",
                                                     "metrics-export-port", "ray-client-server-port")]
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", *ports, "--num-cpus=1",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        current = os.path.join(ray_tmp, "ray", "ray_current_cluster")
        deadline = time.time() + 120
        while not os.path.exists(current):
            assert head.poll() is None and time.time() < deadline, "ray start --head did not start"
            time.sleep(0.5)
        data = write_synthetic_beir(str(tmp_path / "data"), n_docs=120, n_queries=12)
        o = precomputed_overrides(data, str(tmp_path / "out"))
        proc = subprocess.run([sys.executable, "-m", "streammine.cli", "mine", "--input", o["input.path"],
                               "--precomputed", "--corpus-vectors", o["encoder.corpus_vectors"],
                               "--query-vectors", o["encoder.query_vectors"], "--output", o["output.path"],
                               "--shards", "1"], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(read_output(o["output.path"])) == 12
        assert head.poll() is None  # the other Ray was left alone
    finally:
        head.terminate()  # `ray start --block` stops the processes it started when it is terminated
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def mined(ray_session, tmp_path_factory):
    """A finished `mine` output (precomputed vectors: no model)."""
    root = tmp_path_factory.mktemp("mined")
    data = write_synthetic_beir(str(root / "data"), n_docs=200, n_queries=30)
    result = streammine.mine(overrides=precomputed_overrides(data, str(root / "out"), **{
        "index.shards": 2, "run.cache_dir": str(root / "cache")}))
    return result.output


def _within(seconds, fn):
    box = {}
    t = threading.Thread(target=lambda: box.update(value=fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still waiting after {seconds} s"
    return box["value"]


def test_feed_and_dataset_read_a_mine_output_and_end(mined, tmp_path):
    """A mine output is a finished, closed log of one version: the feed (following, the default) yields every row
    once and ends; follow=False too; committed_dataset has every row. A snapshot of a URL that does not exist or
    holds something else fails at once."""
    from streammine.consume import NegativesFeed
    from streammine.consume.ray_data import committed_dataset
    expected = read_output(mined)
    rows = _within(120, lambda: list(NegativesFeed(mined, poll_seconds=0.2)))
    assert sorted(r["query_id"] for r in rows) == sorted(expected) and {r["_seq"] for r in rows} == {1}
    assert len(_within(120, lambda: list(NegativesFeed(mined, follow=False)))) == len(expected)
    assert committed_dataset(mined).count() == len(expected)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not mined")
    for url in (str(tmp_path / "other"), str(tmp_path / "missing")):
        with pytest.raises(InputError):
            NegativesFeed(url, follow=False)
        with pytest.raises(InputError):
            committed_dataset(url)


def test_cache_ls_and_prune(mined, tmp_path, capfd):
    """`cache ls` lists the store the run left in the cache (not in the output); `prune --older-than` keeps what
    is newer; `prune` removes everything (on a copy of the module's cache)."""
    assert not os.path.exists(os.path.join(mined, "_work"))
    cache = str(tmp_path / "cache")
    shutil.copytree(os.path.join(os.path.dirname(mined), "cache"), cache)
    stores = os.listdir(os.path.join(cache, "embeddings"))
    assert stores
    rc, out, _ = _run_cli(["cache", "ls", "--cache-dir", cache], capfd)
    assert rc == 0 and all(f"embeddings/{k}" in out for k in stores) and "total" in out
    rc, out, _ = _run_cli(["cache", "prune", "--older-than", "1d", "--cache-dir", cache], capfd)
    assert rc == 0 and "removed 0 entries" in out and os.listdir(os.path.join(cache, "embeddings")) == stores
    rc, out, _ = _run_cli(["cache", "prune", "--cache-dir", cache], capfd)
    assert rc == 0 and os.listdir(os.path.join(cache, "embeddings")) == []
    rc, out, _ = _run_cli(["cache", "ls", "--cache-dir", cache], capfd)
    assert "(0 entries)" in out


def test_report_and_exporters_read_a_serve_output(mined, tmp_path):
    """A serve output (commit log + data/ parts, written with the serve's own CommitLog) is read by the report and
    the exporters like a mine output."""
    from streammine.report import run_report
    from streammine.sink.commit_log import CommitLog
    from streammine.sink.exporters import export_st_triplet
    from streammine.sink.parts import list_parts
    serve_out = tmp_path / "serve"
    log = CommitLog(str(serve_out))
    for k, part in enumerate(list_parts(mined)):
        rel = f"data/v1/unit{k}/{os.path.basename(part)}"
        os.makedirs(os.path.dirname(serve_out / rel), exist_ok=True)
        shutil.copy(part, serve_out / rel)
        log.append({"version": "v1", "version_order": 1, "unit": f"unit{k}", "parts": [{"part": rel, "rows": 0}]})
    log.close()
    expected = read_output(mined)
    stats = run_report(str(serve_out), texts=False, sample=2)
    assert stats["queries"] == len(expected)
    counts = export_st_triplet(str(serve_out), {f"d{i}": f"doc {i}" for i in range(200)}, str(tmp_path / "t.parquet"))
    assert counts["queries_read"] == len(expected)


def test_error_text_is_one_plain_line():
    """No ANSI escape codes and no line breaks reach the error line, whatever a message carries."""
    from streammine.errors import one_line
    assert one_line("\x1b[31mcorpus.jsonl:5\x1b[0m: bad\r\n  (column 3)\n") == "corpus.jsonl:5: bad; (column 3)"


def test_serve_says_what_it_waits_for(ray_session, tmp_path, caplog):
    """serve with an empty checkpoint folder does not wait silently: it logs that it waits for a checkpoint there."""
    import logging
    from streammine.refresh.serve import serve
    data = write_synthetic_beir(str(tmp_path / "data"), n_docs=60, n_queries=6)
    (tmp_path / "checkpoints").mkdir()
    cfg = streammine.load_config(overrides=precomputed_overrides(data, str(tmp_path / "out"), **{
        "serve.checkpoints": str(tmp_path / "checkpoints"), "serve.idle_exit_seconds": 2, "serve.poll_seconds": 0.2,
        "index.shards": 1}))
    with caplog.at_level(logging.INFO, logger="streammine"):
        summary = serve(cfg)
    assert summary["versions_completed"] == []
    assert any(f"waiting for a complete checkpoint under {tmp_path / 'checkpoints'}" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
