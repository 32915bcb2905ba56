"""Entrypoint for `ray job submit`: the online trainer of a continuous run (streammine.train.online).

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml \
        --entrypoint-num-gpus 1 -- python jobs/online_trainer.py --config jobs/online_trainer.yaml \
        --set feed=s3://bucket/negatives/run-1 --set checkpoints=s3://bucket/checkpoints/run-1

It follows the run's commit log (`feed`), trains on the mined hard negatives and publishes checkpoints under
`checkpoints`, which `streammine serve` follows. `--entrypoint-num-gpus 1` places this driver on a GPU node (the
trainer trains in this process; it uses CUDA when the node has it, else the CPU). SIGTERM or SIGINT (ray job stop)
stops it between steps; it publishes what it has trained before it exits. Prints the summary as JSON.
"""
import argparse
import json
import logging
import os
import signal
import sys
import threading


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="streammine online trainer")
    p.add_argument("--config", help="YAML config (see jobs/online_trainer.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set max_steps=1000 (repeatable)")
    p.add_argument("--summary", help="also write the summary JSON to this path")
    return p


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="streammine-train: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # imported once the environment above is set: the Hugging Face libraries read it when they are imported
    from streammine.config import parse_set_items
    from streammine.errors import StreamMineError
    from streammine.train import OnlineTrainerConfig, train_online

    args = build_parser().parse_args(argv)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        cfg = OnlineTrainerConfig.from_sources(args.config, parse_set_items(args.set))
        summary = train_online(cfg, stop=stop)
    except StreamMineError as e:
        print(f"streammine-train: error: {e}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    text = json.dumps(summary, indent=1, default=str)
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
