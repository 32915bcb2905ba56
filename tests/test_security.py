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
