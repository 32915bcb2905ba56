"""No data is lost or duplicated when a worker or a node dies mid-run.

- an encoder actor's process is killed while the corpus is being encoded (real model, the test session's Ray);
- a shard actor's process is killed, and a whole worker node is removed, mid-mining, on Ray's multi-node test
  cluster (tests/faults/multinode.py, in a subprocess: it needs a Ray of its own).
Each faulty run must give every query exactly once, with the same negatives as a clean run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import streammine
from streammine.api import demo_data_path
from helpers import alive_actors, read_output

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_encoder_actor_killed_mid_corpus(ray_session, tmp_path):
    overrides = {"input.path": demo_data_path(), "index.shards": 2, "run.progress": False,
                 "run.corpus_batch_size": 24, "encoder.num_actors": 2}
    clean = str(tmp_path / "clean")
    streammine.mine(overrides=dict(overrides, **{"output.path": clean, "run.cache_dir": str(tmp_path / "cache-a")}))
    faulty = str(tmp_path / "faulty")
    faulty_cache = str(tmp_path / "cache-b")  # its own cache: the clean run's store would leave nothing to encode
    killed = {}

    def store_files():
        return [f for _, _, fs_ in os.walk(faulty_cache) for f in fs_]

    def kill_an_encoder():
        # the corpus encoders are the only Ray Data actors alive before mining starts; wait until both are up and
        # the first encoded block is in the store (a fixed wait raced the faster encoders), then SIGKILL one
        deadline = time.time() + 120
        while time.time() < deadline:
            pids = [a["pid"] for a in alive_actors("MapWorker")]
            if len(pids) >= 2 and any(f.endswith(".parquet") for f in store_files()):
                os.kill(pids[0], signal.SIGKILL)
                killed["pid"] = pids[0]
                killed["store_committed"] = "_manifest.json" in store_files()
                return
            time.sleep(0.05)
    t = threading.Thread(target=kill_an_encoder, daemon=True)
    t.start()
    result = streammine.mine(overrides=dict(overrides, **{"output.path": faulty, "run.cache_dir": faulty_cache}))
    t.join(10)
    assert killed.get("pid"), "no encoder actor was found to kill"
    assert killed["store_committed"] is False, "the kill came after the corpus was encoded"
    assert result.summary["counts"]["corpus_documents"] == 300  # every document once in the store
    a, b = read_output(clean), read_output(faulty)  # read_output asserts each query once
    assert set(a) == set(b) and len(a) == result.summary["counts"]["queries_out"]
    for qid in a:
        assert a[qid]["negative_ids"] == b[qid]["negative_ids"], qid


@pytest.mark.slow
def test_shard_actor_and_node_loss_on_a_multinode_cluster(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ADDRESS="")
    env.pop("RAY_ADDRESS")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "faults", "multinode.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAULTS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    report = json.loads(lines[-1][len("FAULTS "):])
    assert report["clean_queries"] == report["queries_in"] == 1200
    for scenario in ("shard_kill", "node_loss"):
        r = report[scenario]
        assert r["fault"] is not None, f"{scenario}: the fault was never injected"
        assert r["parts_at_fault"] < r["parts_total"], f"{scenario}: the fault came after the run"
        assert r["queries"] == 1200 and not r["extra"] and r["n_mismatched"] == 0, (scenario, r)
    assert report["node_loss"]["shard_nodes"] >= 2  # shards were spread over nodes
    assert report["node_loss"]["fault"]["shards_on_it"] >= 1
    assert report["alive_nodes_after"] == 2
