"""The ANCE loop end to end on CPU: `serve` follows the checkpoints an online trainer publishes, the trainer reads
the negatives as a stream; negatives of a later version were mined with that version's weights and trained on."""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from serve_helpers import committed_rows, encode, wait_for
from streammine.api import demo_data_path, load_config
from streammine.io.records import document_text
from streammine.refresh.serve import serve
from streammine.refresh.versions import local_model_dir, read_version
from streammine.train.online import OnlineTrainerConfig, train_online

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]


def _corpus_texts(path: str) -> dict:
    with open(os.path.join(path, "corpus.jsonl")) as f:
        docs = [json.loads(line) for line in f]
    return {d["_id"]: document_text(d.get("title", ""), d["text"]) for d in docs}


def test_trainer_and_serve_close_the_loop_over_two_model_versions(tmp_path):
    data = demo_data_path()
    ckpts, out = str(tmp_path / "ckpts"), str(tmp_path / "run")
    consumed_log = str(tmp_path / "consumed.jsonl")
    serve_cfg = load_config(None, {"input.path": data, "output.path": out, "serve.checkpoints": ckpts,
                                   "serve.poll_seconds": 0.5, "index.shards": 2, "run.progress": False,
                                   "encoder.num_actors": 1, "mining.filter.method": "none",
                                   "mining.sampler.num_negatives": 3, "mining.sampler.range_max": 30})
    serve_stop, trainer_stop = threading.Event(), threading.Event()
    results = {}

    def run(name, fn):
        try:
            results[name] = fn()
        except BaseException as e:  # noqa: BLE001 - surfaced below
            results[name + "_error"] = e

    trainer_cfg = OnlineTrainerConfig.from_dict({
        "feed": out, "corpus": data, "checkpoints": ckpts, "batch_size": 4, "negatives_per_query": 1,
        "publish_every": 2, "max_seq_length": 32, "last_versions": 1, "poll_seconds": 0.5, "seed": 0,
        "consumed_log": consumed_log, "device": "cpu", "lr": 1e-4})
    trainer = threading.Thread(target=run, args=("trainer", lambda: train_online(trainer_cfg, stop=trainer_stop)),
                               daemon=True)
    trainer.start()  # publishes the base model as step 0 first; serve starts from it
    server = threading.Thread(target=run, args=("serve", lambda: serve(serve_cfg, stop_event=serve_stop)),
                              daemon=True)
    server.start()

    def consumed_later_version():
        if any(k.endswith("_error") for k in results):
            return True
        if not os.path.exists(consumed_log):
            return None
        with open(consumed_log) as f:
            versions = {json.loads(line)["model_version"] for line in f if line.strip()}
        return versions - {"step-000000000"} or None
    try:
        wait_for(consumed_later_version, 900, "the trainer to consume negatives of a later model version")
    finally:
        trainer_stop.set()
        trainer.join(300)
        serve_stop.set()
        server.join(300)
    assert not [k for k in results if k.endswith("_error")], results
    with open(consumed_log) as f:
        consumed = [json.loads(line) for line in f if line.strip()]
    later = sorted({c["model_version"] for c in consumed} - {"step-000000000"})
    assert later, "only version 0 was consumed"
    assert {c["model_version"] for c in consumed} >= {"step-000000000"}

    # the rows of that later version were mined with its own weights: recompute scores with the checkpoint
    version = read_version(os.path.join(ckpts, later[0]))
    assert version is not None and version.step > 0
    rows = [r for r in committed_rows(out) if r["model_version"] == version.name and r["negative_ids"]]
    consumed_ids = {c["query_id"] for c in consumed if c["model_version"] == version.name}
    assert consumed_ids <= {r["query_id"] for r in rows}  # what the trainer read is committed output
    texts = _corpus_texts(data)
    model_dir = local_model_dir(version.url)
    base_dir = local_model_dir(os.path.join(ckpts, "step-000000000"))
    checked = 0
    for row in rows[:4]:
        q = encode(model_dir, [row["query"]])[0]
        d = encode(model_dir, [texts[i] for i in row["negative_ids"]])
        np.testing.assert_allclose(d @ q, row["negative_scores"], atol=2e-4)
        q0 = encode(base_dir, [row["query"]])[0]
        d0 = encode(base_dir, [texts[i] for i in row["negative_ids"]])
        assert np.abs(d0 @ q0 - np.asarray(row["negative_scores"])).max() > 1e-4  # not the base model's scores
        checked += 1
    assert checked > 0
    assert results["serve"]["versions"][version.name]["queries_mined"] >= len(consumed_ids)
