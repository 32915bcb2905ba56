"""Entrypoint for `ray job submit`: mine hard negatives with a YAML config (flags as in `streammine mine`).

    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/mine.py --config jobs/mine.yaml \
        --input s3://bucket/beir/scifact --output s3://bucket/negatives/run-1

Inside a Ray job, RAY_ADDRESS is set, so streammine joins the cluster instead of starting a local Ray.
"""
import sys

from streammine.cli import main

if __name__ == "__main__":
    sys.exit(main(["mine", *sys.argv[1:]]))
