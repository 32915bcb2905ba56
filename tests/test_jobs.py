"""`ray job submit` for real: a Ray head started with `ray start --head` (job server on loopback), a mining job
submitted through jobs/submit.py (Ray's Job Submission SDK), its output written to the loopback S3 server with
credentials that the head node holds in its own environment (as a cluster node holds its role or Secret): the
submission carries the endpoint only, so the job table and the job's files never hold a secret. The head is stopped by the test that started it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from helpers import write_synthetic_beir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(s3_env):
    """A separate Ray head (its own temp dir and ports) with a job server, started with the S3 credentials in its
    environment (the node's own credentials); yields the job server URL."""
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    dash = free_port()
    temp_dir = tempfile.mkdtemp(prefix="smj-", dir="/tmp")  # short: Ray's unix sockets live under it
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    # every port of its own: the test session's Ray (started by other tests) already holds Ray's default agent
    # and metrics ports, and a head whose job agent cannot bind answers "No available agent" forever
    ports = [f"--{name}={free_port()}" for name in ("port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                     "runtime-env-agent-port", "metrics-export-port",
                                                     "ray-client-server-port")]
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", *ports,
                             f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                             "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/api/version", timeout=2)
            break
        except Exception:
            if head.poll() is not None or time.time() > deadline:
                head.kill()
                raise RuntimeError(f"ray head did not start: {head.stderr.read()[-3000:] if head.stderr else ''}")
            time.sleep(0.5)
    yield url
    head.terminate()  # `ray start --block` stops the processes it started when it is terminated
    try:
        head.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, 9)


@pytest.mark.slow
def test_mining_job_submitted_to_a_ray_head(ray_head, s3_bucket, s3_env, tmp_path):
    data = write_synthetic_beir(str(tmp_path / "data"), n_docs=200, n_queries=30)
    out = f"s3://{s3_bucket}/negatives/job-1"
    cmd = [sys.executable, os.path.join(REPO, "jobs", "submit.py"), "--address", ray_head, "--wait",
           "--timeout", "400", "--",
           "python", "jobs/mine.py", "--config", "jobs/mine.yaml", "--input", data["beir"], "--precomputed",
           "--corpus-vectors", data["corpus_vectors"], "--query-vectors", data["query_vectors"],
           "--output", out, "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env=dict(os.environ, **s3_env))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "SUCCEEDED" in proc.stdout
    # the credentials were passed in the request: no file in the repo or the runtime env holds them
    with open(os.path.join(REPO, "jobs", "runtime_env.yaml")) as f:
        assert "AWS_SECRET_ACCESS_KEY" not in f.read()
    from ray.job_submission import JobSubmissionClient
    job_id = proc.stdout.split("submitted ", 1)[1].split()[0]
    job_env = (JobSubmissionClient(ray_head).get_job_info(job_id).runtime_env or {}).get("env_vars", {})
    assert "AWS_ENDPOINT_URL" in job_env and not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(job_env)
    import s3fs
    s3 = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_env["AWS_ENDPOINT_URL"]})
    names = [p.rsplit("/", 1)[-1] for p in s3.ls(out.replace("s3://", ""))]
    assert "_parts.json" in names and "summary.json" in names
    import json
    summary = json.loads(s3.cat(out.replace("s3://", "") + "/summary.json"))
    assert summary["counts"]["queries_out"] == 30
    from streammine.sink.parts import iter_rows
    qids = [q for b in iter_rows(out, columns=["query_id"]) for q in b.column("query_id").to_pylist()]
    assert sorted(qids) == sorted(f"q{i}" for i in range(30))
