"""Security properties of a run (README, "Security"): no credential in any file Ray or streammine writes, nor in
what a run prints; the operator NetworkPolicy names its namespace; submitted commands are quoted; user strings
that become paths are checked."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from helpers import write_synthetic_beir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTINELS = {"AWS_ACCESS_KEY_ID": "AKIASENTINELKEYID0001", "AWS_SECRET_ACCESS_KEY": "sentinel-Secret-9f3b2c7d",
             "AWS_SESSION_TOKEN": "sentinel-Session-Token-51e0"}


def files_holding(root: str, needles) -> list:
    """Every file under ``root`` (binary included: Ray's GCS and log files) that contains one of ``needles``."""
    hits = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue  # sockets, files removed while walking
            hits += [f"{path}: {n}" for n in needles if n.encode() in data]
    return hits


def test_a_run_writes_and_prints_no_credential(tmp_path):
    """A CLI run (its own local Ray, its own temp dir) with sentinel credentials in its environment: no file under
    Ray's temp dir or the output, and nothing printed, holds them."""
    data = write_synthetic_beir(str(tmp_path / "data"), n_docs=120, n_queries=12)
    out = str(tmp_path / "out")
    ray_tmp = tempfile.mkdtemp(prefix="sms-", dir="/tmp")  # short: Ray's unix sockets live under it
    env = dict(os.environ, **SENTINELS, RAY_TMPDIR=ray_tmp, PYTHONPATH=REPO, HF_HUB_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)
    try:
        _run_and_grep(data, out, ray_tmp, env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _run_and_grep(data, out, ray_tmp, env):
    proc = subprocess.run([sys.executable, "-m", "streammine.cli", "mine", "--input", data["beir"], "--precomputed",
                           "--corpus-vectors", data["corpus_vectors"], "--query-vectors", data["query_vectors"],
                           "--output", out, "--shards", "1", "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.listdir(ray_tmp), "the run's Ray did not use the given temp dir: the check would see nothing"
    printed = proc.stdout + proc.stderr
    assert not [n for n in SENTINELS.values() if n in printed]
    assert files_holding(ray_tmp, SENTINELS.values()) == []
    assert files_holding(out, SENTINELS.values()) == []


def test_submitted_entrypoint_is_quoted_argument_by_argument(tmp_path):
    """jobs/submit.py's command: a shell splits it back into exactly the arguments given, none expanded."""
    import shlex
    sys.path.insert(0, os.path.join(REPO, "jobs"))
    try:
        from submit import entrypoint_command
    finally:
        sys.path.pop(0)
    marker = tmp_path / "ran"
    argv = ["python", "jobs/mine.py", "--output", "s3://b/a run", f"x; touch {marker}", "$(id)", "'q'"]
    cmd = entrypoint_command(argv)
    assert shlex.split(cmd) == argv
    echoed = subprocess.run(["sh", "-c", "printf '%s\\n' " + cmd], capture_output=True, text=True, check=True)
    assert echoed.stdout.splitlines() == argv and not marker.exists()


def test_refresh_refuses_a_version_name_that_is_a_path(tmp_path):
    """`refresh --name ../../x` would make serve build (and clean) data/../../x: refused, one line, nothing
    written."""
    run = tmp_path / "run"
    for name in ("../../x", "a/b", "..", ".hidden"):
        proc = subprocess.run([sys.executable, "-m", "streammine.cli", "refresh", "--output", str(run), "--model",
                               "/m", "--name", name], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, (name, proc.stderr)
        assert proc.stderr.startswith("streammine: error: --name ") and "Traceback" not in proc.stderr
    assert not run.exists()
    # a request file written by hand is checked where serve reads it
    from streammine.errors import ConfigError
    from streammine.refresh.watch import CONTROL_DIR, FORCE_FILE, VersionSource
    os.makedirs(run / CONTROL_DIR)
    (run / CONTROL_DIR / FORCE_FILE).write_text('{"model": "/m", "name": "../../victim"}')
    with pytest.raises(ConfigError, match="victim"):
        VersionSource(str(run), None, None).forced()


def test_remote_checkpoint_keys_stay_inside_the_download(tmp_path):
    import fsspec
    from streammine.errors import StreamMineError
    from streammine.refresh.versions import local_model_dir
    mem = fsspec.filesystem("memory")
    root = f"/ck-{os.getpid()}"
    mem.pipe(f"{root}/config.json", b"{}")
    escape = tmp_path / "escaped.txt"
    mem.pipe(f"{root}/../../..{escape}", b"planted")
    cache = tmp_path / "cache"
    with pytest.raises(StreamMineError, match="leads outside the checkpoint directory"):
        local_model_dir(f"memory://{root}", str(cache))
    assert not escape.exists() and os.listdir(cache) == []  # the partial download is gone too


def test_model_cache_is_private(tmp_path, monkeypatch):
    import stat
    from streammine.errors import StreamMineError
    from streammine.refresh.versions import private_cache_dir
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # re-read TMPDIR
    try:
        path = private_cache_dir("models")
        root = os.path.dirname(path)
        assert root == os.path.join(str(tmp_path), f"streammine-{os.getuid()}")
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
        os.chmod(root, 0o777)  # opened to others (or planted by someone else): refused
        with pytest.raises(StreamMineError, match="mode 0700"):
            private_cache_dir("models")
    finally:
        tempfile.tempdir = None
