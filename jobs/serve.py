"""Entrypoint for `ray job submit`: continuous mining, `streammine serve`, with a YAML config (flags as in
`streammine serve`: those of `streammine mine` plus --checkpoints).

    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/serve.py --restarts 5 \\
        --config jobs/serve.yaml --input s3://bucket/input/beir/scifact \\
        --output s3://bucket/negatives/scifact-serve --checkpoints s3://bucket/checkpoints/scifact-serve

It runs until stopped. `streammine stop --output RUN` (or `python jobs/refresh.py --stop --output RUN`) ends it
after the unit of work in flight and closes the run's commit log, so the trainers that follow it end too; SIGTERM
or SIGINT (`ray job stop`, deleting its RayJob) end it without closing the log. --output is the run's identity:
started again with the same output, serve resumes where it stopped and commits every query of a version once.

--restarts N makes this script a supervisor: serve runs in a child process, and when it fails (any exit but 0,
a clean stop, and 2, a config or input error that a restart cannot fix) it is started again after --restart-delay
seconds (doubled at each consecutive failure, at most 10 minutes), up to N consecutive times (a run that lasted
10 minutes resets the count). A restart is safe because of the exactly-once resume above. On a shared Ray cluster
this is the way to retry: a RayJob's own backoffLimit recreates the job's Ray cluster, which for a RayJob with a
clusterSelector is the shared one (k8s/README.md). Without --restarts, serve runs in this process.

Inside a Ray job, RAY_ADDRESS is set, so streammine joins the cluster instead of starting a local Ray.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

NO_RESTART_CODES = (0, 2)   # done (stopped, or the serve.* limits reached) / a config or input error
HEALTHY_SECONDS = 600.0     # a child that ran this long resets the count of consecutive failures
MAX_DELAY_SECONDS = 600.0


def supervisor_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobs/serve.py", add_help=False, allow_abbrev=False)
    p.add_argument("--restarts", type=int, default=0,
                   help="restart serve after a failure, up to this many consecutive times (default 0: run once, "
                        "in this process)")
    p.add_argument("--restart-delay", type=float, default=30.0,
                   help="seconds before the first restart, doubled at each consecutive failure (default 30)")
    return p


def supervise(cmd: list, restarts: int, delay: float, healthy_seconds: float = HEALTHY_SECONDS,
              max_delay: float = MAX_DELAY_SECONDS) -> int:
    """Runs ``cmd`` until it exits 0 or 2, is stopped by a signal sent to this process, or fails more than
    ``restarts`` consecutive times; returns its last exit status (128 + N for a child killed by signal N)."""
    stopping = threading.Event()
    state = {"child": None}

    def on_signal(signum, _frame):
        stopping.set()
        child = state["child"]
        if child is not None and child.poll() is None:
            child.send_signal(signum)  # the child stops after its unit in flight (resumable)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    failures = 0
    try:
        while True:
            started = time.monotonic()
            state["child"] = subprocess.Popen(cmd)
            rc = state["child"].wait()
            rc = 128 - rc if rc < 0 else rc
            if stopping.is_set() or rc in NO_RESTART_CODES:
                return rc
            failures = 1 if time.monotonic() - started >= healthy_seconds else failures + 1
            if failures > restarts:
                print(f"jobs/serve.py: serve exited with status {rc}; {restarts} consecutive restarts used, "
                      f"giving up", file=sys.stderr, flush=True)
                return rc
            wait = min(max_delay, delay * 2 ** (failures - 1))
            print(f"jobs/serve.py: serve exited with status {rc}; restart {failures} of {restarts} in {wait:.0f} s "
                  f"(it resumes from its output)", file=sys.stderr, flush=True)
            if stopping.wait(wait):
                return rc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sup, rest = supervisor_parser().parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
        supervisor_parser().print_help()
        print()
    if sup.restarts < 0 or sup.restart_delay < 0:
        print("jobs/serve.py: --restarts and --restart-delay must be >= 0", file=sys.stderr)
        return 2
    if sup.restarts == 0 or "-h" in rest or "--help" in rest:
        # imported only here: the supervisor process itself never loads streammine (nor Ray)
        from streammine.cli import main as streammine_main
        return streammine_main(["serve", *rest])
    return supervise([sys.executable, os.path.abspath(__file__), *rest], sup.restarts, sup.restart_delay)


if __name__ == "__main__":
    sys.exit(main())
