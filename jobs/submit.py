"""Submit a streammine job to a Ray cluster's job server, passing object-store settings from *this* shell.

    python jobs/submit.py --address http://HEAD:8265 [--wait] -- python jobs/mine.py --config jobs/mine.yaml \
        --input s3://bucket/beir/scifact --output s3://bucket/negatives/run-1

The same as `ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- ...`, except that the S3
endpoint and region (when set) travel in the submission request to the job's driver and workers. Credentials
never do: Ray keeps a job's runtime env in its job table (readable through the job API) and logs it, so the
cluster's nodes must hold their own (on EKS the service account's IAM role, k8s/; elsewhere the node's
instance role or a Kubernetes Secret given to the pods as environment variables). Each argument of the
entrypoint is shell-quoted, so spaces and shell metacharacters reach the job's command as written.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import yaml

# settings only: never AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (see the docstring)
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
                 "STREAMMINE_S3_ENDPOINT")
HERE = os.path.dirname(os.path.abspath(__file__))


def runtime_env(path: str, working_dir: str) -> dict:
    with open(path) as f:
        env = yaml.safe_load(f) or {}
    if env.get("working_dir") == ".":
        env["working_dir"] = working_dir
    env.setdefault("env_vars", {}).update({k: os.environ[k] for k in FORWARDED_ENV if k in os.environ})
    return env


def entrypoint_command(argv: list) -> str:
    """The job's shell command: every argument quoted, so it reaches the job as one argument, unexpanded."""
    return " ".join(shlex.quote(a) for a in argv)


def submit_with_retry(client, entrypoint: str, env: dict, wait_s: float = 120):
    """A head that just started answers "No available agent ... try again later" until its job agent is up."""
    deadline = time.time() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=env)
        except RuntimeError as e:
            if "try again" not in str(e) or time.time() > deadline:
                raise
            time.sleep(2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"),
                   help="the job server (Ray dashboard) address")
    p.add_argument("--runtime-env", default=os.path.join(HERE, "runtime_env.yaml"))
    p.add_argument("--working-dir", default=os.path.dirname(HERE), help="uploaded to the cluster (default: repo)")
    p.add_argument("--wait", action="store_true", help="follow the job's logs until it ends; exit 1 if it fails")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="after --: the command the job runs")
    args = p.parse_args(argv)
    entrypoint = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    if not entrypoint:
        p.error("give the job's command after --")
    from ray.job_submission import JobStatus, JobSubmissionClient  # Ray: loaded only when a job is submitted
    client = JobSubmissionClient(args.address)
    job_id = submit_with_retry(client, entrypoint_command(entrypoint), runtime_env(args.runtime_env, args.working_dir))
    print(f"submitted {job_id} to {args.address}", flush=True)
    if not args.wait:
        return 0
    deadline = time.time() + args.timeout
    status = client.get_job_status(job_id)
    while status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) and time.time() < deadline:
        time.sleep(1)
        status = client.get_job_status(job_id)
    print(client.get_job_logs(job_id)[-5000:])
    print(f"job {job_id}: {status}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
