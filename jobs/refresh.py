"""Control a continuous-mining run (jobs/serve.py, `streammine serve`) through its output URL.

    python jobs/refresh.py --output s3://bucket/negatives/scifact-serve --model s3://bucket/models/m --name v7
    python jobs/refresh.py --output s3://bucket/negatives/scifact-serve --stop

--model (`streammine refresh`): the serve of that run mines with this checkpoint now (a sentence-transformers
model directory, local or any fsspec URL), as version --name (default manual-<time>), until a checkpoint published
after this request comes along. The request is a file, RUN/_control/refresh.json: the serve picks it up while it
runs, or when it next starts.

--stop (`streammine stop`): the serve of that run stops after its unit of work in flight and closes its commit log,
so the trainers that follow the run end too (RUN/_control/stop.json).

Needs only access to the run's output (no Ray): run it anywhere with the bucket's credentials, or on the cluster,
e.g. `ray job submit -- python jobs/refresh.py ...` or `kubectl exec` on a Ray head (k8s/README.md).
"""
from __future__ import annotations

import argparse
import sys

from streammine.cli import main as streammine_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobs/refresh.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="the run's output URL (its identity)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="checkpoint directory URL to mine with now")
    what.add_argument("--stop", action="store_true", help="stop the serve after its unit in flight, close its log")
    p.add_argument("--name", help="with --model: the version name output rows will carry (default manual-<time>)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stop and args.name:
        parser.error("--name goes with --model")
    if args.stop:
        return streammine_main(["stop", "--output", args.output])
    return streammine_main(["refresh", "--output", args.output, "--model", args.model]
                           + (["--name", args.name] if args.name else []))


if __name__ == "__main__":
    sys.exit(main())
