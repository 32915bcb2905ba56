"""Fault scenarios on Ray's multi-node test cluster (several raylets with their own resources, one machine).

Run by tests/test_faults.py in a subprocess (it needs its own Ray, not the test session's):

    python tests/faults/multinode.py WORKDIR

1. a clean run: the reference output; the shard actors must sit on more than one node;
2. a shard actor's process is killed mid-run (it restarts and rebuilds its shard from the embedding store);
3. a whole worker node holding a shard is removed mid-run (its actors restart on the other nodes, its blocks are
   retried or rebuilt from lineage).
Each faulty run must produce every query exactly once, with the clean run's negatives. Prints one JSON line.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import streammine  # noqa: E402
from helpers import alive_actors, precomputed_overrides, read_output, write_synthetic_beir  # noqa: E402

STORE_MB = 200 * 1024 * 1024


def committed_parts_so_far(out: str) -> int:
    return len([n for n in os.listdir(out) if n.startswith("part-")]) if os.path.isdir(out) else 0


def shard_actors() -> list:
    return alive_actors("ShardActor")


class FaultAfterFirstParts(threading.Thread):
    """Waits until the run has written some parts (so the fault lands mid-stream), then injects the fault."""

    def __init__(self, out: str, inject, min_parts: int = 2, timeout: float = 240):
        super().__init__(daemon=True)
        self.out, self.inject, self.min_parts, self.timeout = out, inject, min_parts, timeout
        self.parts_at_fault = None
        self.detail = None

    def run(self):
        deadline = time.time() + self.timeout
        while committed_parts_so_far(self.out) < self.min_parts:
            if time.time() > deadline:
                return
            time.sleep(0.05)
        self.parts_at_fault = committed_parts_so_far(self.out)
        self.detail = self.inject()


def parts_in_manifest(out: str) -> int:
    with open(os.path.join(out, "_parts.json")) as f:
        return len(json.load(f)["parts"])


def mine(data: dict, out: str) -> dict:
    result = streammine.mine(overrides=precomputed_overrides(
        data, out, **{"index.shards": 4, "run.query_batch_size": 8, "run.miner_actors": 2,
                      "mining.sampler.num_negatives": 5, "mining.sampler.range_max": 30}))
    return result.summary


def compare(clean: dict, other: dict) -> dict:
    mismatched = [q for q in clean if q not in other or other[q]["negative_ids"] != clean[q]["negative_ids"]
                  or other[q]["negative_scores"] != clean[q]["negative_scores"]]
    return {"queries": len(other), "extra": sorted(set(other) - set(clean))[:5], "mismatched": mismatched[:5],
            "n_mismatched": len(mismatched)}


def main(workdir: str) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    data = write_synthetic_beir(os.path.join(workdir, "data"), n_docs=3000, n_queries=1200, dim=16)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": STORE_MB,
                                                            "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2, object_store_memory=STORE_MB) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    report = {}
    try:
        # 1. clean
        mine(data, os.path.join(workdir, "clean"))
        clean = read_output(os.path.join(workdir, "clean"))
        report["queries_in"] = len(data["positives"])
        report["clean_queries"] = len(clean)

        # 2. a shard actor's process dies mid-run (SIGKILL: no clean shutdown)
        out = os.path.join(workdir, "shard-kill")

        def kill_one_shard():
            victim = shard_actors()[0]
            os.kill(victim["pid"], signal.SIGKILL)
            return {"killed_pid": victim["pid"], "node": victim["node_id"][:8]}
        fault = FaultAfterFirstParts(out, kill_one_shard)
        fault.start()
        mine(data, out)
        fault.join(5)
        report["shard_kill"] = dict(compare(clean, read_output(out)), fault=fault.detail,
                                    parts_at_fault=fault.parts_at_fault,
                                    parts_total=parts_in_manifest(out))

        # 3. a worker node holding a shard is removed mid-run
        out = os.path.join(workdir, "node-loss")
        spread = {}

        def remove_a_shard_node():
            actors = shard_actors()
            spread["shard_nodes"] = len({a["node_id"] for a in actors})
            node_ids = {a["node_id"] for a in actors}
            victim = next(w for w in workers if w.node_id in node_ids)
            cluster.remove_node(victim, allow_graceful=False)
            return {"removed_node": victim.node_id[:8],
                    "shards_on_it": sum(a["node_id"] == victim.node_id for a in actors)}
        fault = FaultAfterFirstParts(out, remove_a_shard_node)
        fault.start()
        mine(data, out)
        fault.join(5)
        report["node_loss"] = dict(compare(clean, read_output(out)), fault=fault.detail,
                                   parts_at_fault=fault.parts_at_fault, parts_total=parts_in_manifest(out),
                                   **spread)
        report["alive_nodes_after"] = len([n for n in ray.nodes() if n["Alive"]])
    finally:
        ray.shutdown()
        cluster.shutdown()
    print("FAULTS " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
