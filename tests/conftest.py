"""Session-wide fixtures: one loopback S3 server (moto in server mode) and one local Ray for the whole run.

The S3 endpoint and credentials go into the environment *before* Ray starts, so Ray workers (separate processes)
reach the same server through s3fs/pyarrow over HTTP, exactly as they would reach a real object store.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
# The tests were written for the Ray path (actors, faults, object store): small runs keep using it here, where
# "auto" would run them in-process (run/in_process.py). The in-process tests choose their executor themselves.
os.environ.setdefault("STREAMMINE_EXECUTOR", "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API on 127.0.0.1 (moto_server), for the whole session. Yields the endpoint URL."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def s3_env(s3_endpoint):
    """Point every S3 client (boto, s3fs, pyarrow) at the loopback server through the standard variables."""
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
def ray_session(s3_env):
    """One local Ray for the whole test session (started after the S3 variables are set, so workers see them)."""
    import ray
    if not ray.is_initialized():
        # address="local": a Ray of the tests' own, never one that happens to run on the machine
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": dict(s3_env)})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def streammine_session_cache(tmp_path_factory):
    """The cache of runs made outside a test (module- and session-scoped fixtures): a temporary folder, never the
    user's ~/.cache/streammine."""
    path = str(tmp_path_factory.mktemp("streammine-cache"))
    old = os.environ.get("STREAMMINE_CACHE")
    os.environ["STREAMMINE_CACHE"] = path
    yield path
    if old is None:
        os.environ.pop("STREAMMINE_CACHE", None)
    else:
        os.environ["STREAMMINE_CACHE"] = old


@pytest.fixture(autouse=True)
def streammine_cache(tmp_path_factory, monkeypatch):
    """Each test's own empty embedding / query-vector cache (as each new output had its own store before the cache
    outlived outputs); a fixture whose runs a test reuses sets run.cache_dir itself."""
    path = str(tmp_path_factory.mktemp("cache"))
    monkeypatch.setenv("STREAMMINE_CACHE", path)
    return path


@pytest.fixture
def s3_bucket(s3_env):
    """A fresh bucket on the loopback server; yields its name."""
    import uuid
    import boto3
    name = f"sm-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name
