"""Continuous mining: the embedding cache, model versions followed and swapped, corrupt and unfinished
checkpoints, exactly-once output across kills and restarts (real Ray, real model, real faiss)."""
from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from serve_helpers import (FlakyProxy, committed_rows, encode, perturbed_model_dir, scrape_ray_metric,
                           tiny_scifact, wait_for, write_pairs_files)
from streammine.api import load_config
from streammine.encode.base import default_model_path
from streammine.index.store import read_manifest
from streammine.refresh.versions import MARKER, list_versions, publish_checkpoint
from streammine.sink.commit_log import CommitLog

pytestmark = pytest.mark.usefixtures("ray_session")

MINING = {"mining.sampler.method": "top", "mining.sampler.num_negatives": 4, "mining.sampler.range_max": 20,
          "mining.filter.method": "topk-percpos", "index.shards": 2, "run.progress": False,
          "encoder.num_actors": 1}


def _store_manifests(work: str) -> list:
    root = os.path.join(work, "embeddings")
    return [m for m in (read_manifest(os.path.join(root, d)) for d in sorted(os.listdir(root))) if m]


@pytest.mark.slow
def test_embedding_cache_encodes_only_new_or_changed_documents(tmp_path):
    from streammine.run.mine import mine
    data = tiny_scifact(str(tmp_path / "data"), n_docs=40)
    work = str(tmp_path / "work")
    common = dict(MINING, **{"input.path": data["path"], "run.work_dir": work, "output.overwrite": True,
                             "input.max_queries": 3})
    mine(load_config(None, dict(common, **{"output.path": str(tmp_path / "o1")})))
    first = _store_manifests(work)
    assert len(first) == 1 and first[0]["encoded"] == 40 and first[0]["cached"] == 0

    # the corpus grows by 3 documents and one document's text changes: only those 4 are encoded
    corpus = os.path.join(data["path"], "corpus.jsonl")
    lines = open(corpus).read().splitlines()
    changed = json.loads(lines[5])
    changed["text"] = changed["text"] + " (revised)"
    lines[5] = json.dumps(changed)
    lines += [json.dumps({"_id": f"new-{i}", "title": "", "text": f"A new abstract number {i} about cells."})
              for i in range(3)]
    open(corpus, "w").write("\n".join(lines) + "\n")
    mine(load_config(None, dict(common, **{"output.path": str(tmp_path / "o2")})))
    second = [m for m in _store_manifests(work) if m["store_key"] != first[0]["store_key"]]
    assert len(second) == 1 and second[0]["docs"] == 43
    assert second[0]["encoded"] == 4 and second[0]["cached"] == 39

    # the vectors taken from the cache equal those of a cold build of the same corpus
    cold_work = str(tmp_path / "cold")
    mine(load_config(None, dict(common, **{"output.path": str(tmp_path / "o3"), "run.work_dir": cold_work})))
    cold = _store_manifests(cold_work)[0]
    assert cold["encoded"] == 43

    def vectors(work_dir, manifest):
        import pyarrow.parquet as pq
        from streammine.vectors import from_arrow
        store = os.path.join(work_dir, "embeddings", manifest["store_key"])
        out = {}
        for f in manifest["files"]:
            t = pq.read_table(os.path.join(store, f))
            out.update(zip(t.column("doc_id").to_pylist(), from_arrow(t.column("vector"))))
        return out
    warm_vectors, cold_vectors = vectors(work, second[0]), vectors(cold_work, cold)
    assert set(warm_vectors) == set(cold_vectors)
    for doc_id, v in cold_vectors.items():
        np.testing.assert_allclose(warm_vectors[doc_id], v, atol=1e-5)

    # a rerun with an unchanged model and corpus encodes nothing
    result = mine(load_config(None, dict(common, **{"output.path": str(tmp_path / "o4")})))
    assert result.summary["index"]["store_reused"] is True
    counts = result.summary["counts"]
    assert counts["documents_encoded"] == 0
    # and its queries come from the query-vector cache of the same model
    assert counts["queries_encoded"] == 0 and counts["queries_from_cache"] == counts["queries_in"] == 3


def _serve_in_thread(cfg):
    from streammine.refresh.serve import serve
    stop = threading.Event()
    result = {}

    def run():
        try:
            result["summary"] = serve(cfg, stop_event=stop)
        except BaseException as e:  # noqa: BLE001 - surfaced by the test
            result["error"] = e
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return stop, thread, result


def _versions_in_log(out: str) -> dict:
    per_version = collections.defaultdict(list)
    for row in committed_rows(out):
        per_version[row["model_version"]].append(row)
    return per_version


@pytest.mark.slow
def test_serve_follows_checkpoints_swaps_versions_and_ignores_bad_ones(tmp_path):
    data = tiny_scifact(str(tmp_path / "data"), n_docs=60)
    ckpts, out = str(tmp_path / "ckpts"), str(tmp_path / "run")
    publish_checkpoint(default_model_path(), ckpts, step=0)
    cfg = load_config(None, dict(MINING, **{"input.path": data["path"], "output.path": out,
                                            "serve.checkpoints": ckpts, "serve.poll_seconds": 0.5}))
    stop, thread, result = _serve_in_thread(cfg)
    try:
        wait_for(lambda: "step-000000000" in _versions_in_log(out) or result, 300, "version 0 mined")
        assert "error" not in result, result.get("error")
        # a checkpoint still being written (no marker) is never loaded
        unfinished = os.path.join(ckpts, "step-000000005")
        shutil.copytree(default_model_path(), unfinished)
        # a new version: a perturbed copy of the model
        v1_dir = perturbed_model_dir(default_model_path(), str(tmp_path / "v1"))
        publish_checkpoint(v1_dir, ckpts, step=1)
        wait_for(lambda: "step-000000001" in _versions_in_log(out) or result, 300, "version 1 mined")
        # a corrupt checkpoint (marker present, weights unreadable): the miner keeps serving version 1
        bad = os.path.join(ckpts, "step-000000002")
        shutil.copytree(v1_dir, bad)
        for name in os.listdir(bad):
            if name.endswith(".safetensors"):
                open(os.path.join(bad, name), "wb").write(b"not a safetensors file")
        json.dump({"step": 2, "created": time.time()}, open(os.path.join(bad, MARKER), "w"))
        wait_for(lambda: any("step-000000002" in e["error"]
                             for e in json.load(open(os.path.join(out, "serve_summary.json")))["errors"]),
                 300, "the corrupt checkpoint reported")
    finally:
        stop.set()
        thread.join(300)
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary["active_version"] == "step-000000001"
    assert [v.name for v in list_versions(ckpts)] == ["step-000000000", "step-000000001", "step-000000002"]

    per_version = _versions_in_log(out)
    assert set(per_version) == {"step-000000000", "step-000000001"}
    for name, rows in per_version.items():  # every query of the version exactly once
        assert sorted(r["query_id"] for r in rows) == sorted(data["queries"])
    entries = list(CommitLog(out).entries())
    assert [e["version_order"] for e in entries] == [1, 2]

    # negatives tagged version 1 were mined with version-1 embeddings: recompute their scores with its weights
    rows = [r for r in per_version["step-000000001"] if r["negative_ids"]][:5]
    assert rows
    for row in rows:
        q = encode(v1_dir, [row["query"]])[0]
        d = encode(v1_dir, [data["docs"][i] for i in row["negative_ids"]])
        np.testing.assert_allclose(d @ q, row["negative_scores"], atol=2e-4)
        q0 = encode(default_model_path(), [row["query"]])[0]
        d0 = encode(default_model_path(), [data["docs"][i] for i in row["negative_ids"]])
        assert np.abs(d0 @ q0 - np.asarray(row["negative_scores"])).max() > 1e-3  # not version 0's scores
    v1 = summary["versions"]["step-000000001"]
    assert v1["docs_encoded"] == 60 and v1["queries_mined"] == len(data["queries"])
    assert v1["checkpoint_to_first_negatives_seconds"] > 0
    # the same figures reach Prometheus through Ray's metrics agent (names get Ray's prefix)
    exported = scrape_ray_metric("ray_streammine_refresh_seconds", {"version": "step-000000001"})
    assert exported == pytest.approx(v1["refresh_seconds"], rel=1e-3)
    assert scrape_ray_metric("ray_streammine_model_age_seconds", {"version": "step-000000001"}) > 0


def _serve_cmd(out: str, pairs_dir: str, corpus: str, extra=()) -> list:
    import ray
    return [sys.executable, "-m", "streammine.cli", "serve", "--format", "pairs", "--input", pairs_dir,
            "--corpus", corpus, "--output", out, "--no-progress",
            "--set", "input.columns.query_id=qid", "--set", "input.columns.positive_id=pos",
            "--set", "serve.max_versions=1",
            "--set", "serve.poll_seconds=0.5", "--set", f"run.address={ray.get_runtime_context().gcs_address}",
            *[f"--set={k}={v}" for k, v in MINING.items() if k != "run.progress"], *extra]


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)


@pytest.mark.slow
def test_killed_during_refresh_and_during_mining_then_restarted_every_query_exactly_once(tmp_path):
    data = tiny_scifact(str(tmp_path / "data"), n_docs=60)
    write_pairs_files(data, str(tmp_path), n_files=4)
    out = str(tmp_path / "run")
    cmd = _serve_cmd(out, str(tmp_path / "pairs"), str(tmp_path / "corpus.parquet"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    logs = [open(tmp_path / f"serve-{i}.log", "w") for i in range(3)]

    # 1. killed during the refresh: the corpus is being encoded, no store committed yet
    proc = subprocess.Popen(cmd, env=env, stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: "refreshing" in open(tmp_path / "serve-0.log").read(), 120, "the refresh to start")
    time.sleep(1.0)
    work = os.path.join(out, "_work", "embeddings")
    assert not (os.path.isdir(work) and _store_manifests(os.path.join(out, "_work"))), "killed too late"
    _kill(proc)

    # 2. restarted, then killed during mining: after the first of four units is committed
    proc = subprocess.Popen(cmd, env=env, stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: CommitLog(out).sequence_numbers() or proc.poll() is not None, 300, "a first commit")
    _kill(proc)
    committed_before = len(CommitLog(out).sequence_numbers())
    assert 1 <= committed_before < 4

    # 3. restarted with the same run: finishes the remaining units and nothing twice
    proc = subprocess.run(cmd, env=env, stdout=logs[2], stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, open(tmp_path / "serve-2.log").read()[-3000:]
    rows = committed_rows(out)
    assert sorted(r["query_id"] for r in rows) == sorted(data["queries"])
    entries = list(CommitLog(out).entries())
    assert len(entries) == 4 and len({e["unit"]["key"] for e in entries}) == 4
    assert CommitLog(out).closed()
    # no part file outside the committed ones remains under data/
    committed = {os.path.join(out, p["part"]) for e in entries for p in e["parts"]}
    on_disk = {os.path.join(d, f) for d, _, fs_ in os.walk(os.path.join(out, "data")) for f in fs_
               if f.endswith(".parquet")}
    assert on_disk == committed
    # the restart did not encode the corpus again: one store, built once
    assert len(_store_manifests(os.path.join(out, "_work"))) == 1


@pytest.mark.slow
def test_object_store_stopping_for_a_while_is_retried_not_lost(tmp_path, s3_env, s3_bucket, monkeypatch, caplog):
    from urllib.parse import urlparse
    data = tiny_scifact(str(tmp_path / "data"), n_docs=40)
    target = urlparse(s3_env["AWS_ENDPOINT_URL"])
    proxy = FlakyProxy(target.hostname, target.port)
    # the serve driver (log, summary, manifests, listings) reaches S3 through the proxy; Ray workers directly
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    out, ckpts = f"s3://{s3_bucket}/run", str(tmp_path / "ckpts")
    publish_checkpoint(default_model_path(), ckpts, step=0)
    cfg = load_config(None, dict(MINING, **{"input.path": data["path"], "output.path": out,
                                            "serve.checkpoints": ckpts, "serve.poll_seconds": 0.5,
                                            "serve.retries": 12, "serve.backoff_max_seconds": 4}))
    # The outage lasts until the server has met it: a fixed pause raced the driver's own (botocore) retries,
    # which can outlast a short outage on a slow machine so that nothing reaches the server's retry loop.
    caplog.set_level(logging.WARNING, logger="streammine")  # the serve thread's "failed ..., retrying in" lines
    stop, thread, result = _serve_in_thread(cfg)
    try:
        wait_for(lambda: "step-000000000" in _versions_in_log(out) or result, 300, "version 0 mined")
        proxy.down()  # the object store stops: refresh and mining of version 1 meet it
        publish_checkpoint(perturbed_model_dir(default_model_path(), str(tmp_path / "v1")), ckpts, step=1)
        wait_for(lambda: any("retrying in" in r.getMessage() for r in caplog.records) or result, 300,
                 "the server to meet the outage and retry")
        time.sleep(5)  # and stays down a while after that: later calls meet it too
        proxy.up()
        wait_for(lambda: "step-000000001" in _versions_in_log(out) or result, 300, "version 1 mined")
    finally:
        if proxy.listener is None:
            proxy.up()
        stop.set()
        thread.join(300)
    assert "error" not in result, result.get("error")
    per_version = _versions_in_log(out)
    for name in ("step-000000000", "step-000000001"):
        assert sorted(r["query_id"] for r in per_version[name]) == sorted(data["queries"])
    # what was retried during the outage reached the summary once the store was back
    retried = [e for e in result["summary"]["errors"] if e["retried"]]
    assert retried, "the outage was never met: nothing was retried"


@pytest.mark.slow
def test_rolling_slices_new_query_files_and_retention(tmp_path):
    """chunk_factor 2: each version mines the half of every query file its order picks; a query file that
    appears while serving is mined too; retention 1 keeps only the newest embedding store."""
    import pyarrow.parquet as pq
    from streammine.keys import keys64
    data = tiny_scifact(str(tmp_path / "data"), n_docs=60)
    files = write_pairs_files(data, str(tmp_path), n_files=3)
    late = files.pop()  # appears while serving
    os.rename(late, str(tmp_path / "late.parquet"))
    out, ckpts = str(tmp_path / "run"), str(tmp_path / "ckpts")
    publish_checkpoint(default_model_path(), ckpts, step=0)
    cfg = load_config(None, dict(MINING, **{
        "input.format": "pairs", "input.path": str(tmp_path / "pairs"), "input.corpus": str(tmp_path / "corpus.parquet"),
        "input.columns.query_id": "qid", "input.columns.query": "anchor", "input.columns.positive_id": "pos",
        "output.path": out, "serve.checkpoints": ckpts, "serve.poll_seconds": 0.5, "serve.chunk_factor": 2,
        "serve.retention": 1}))
    stop, thread, result = _serve_in_thread(cfg)
    try:
        wait_for(lambda: len(CommitLog(out).sequence_numbers()) >= 2 or result, 300, "version 0's two files")
        os.rename(str(tmp_path / "late.parquet"), late)
        wait_for(lambda: len(CommitLog(out).sequence_numbers()) >= 3 or result, 300, "the new file mined")
        publish_checkpoint(perturbed_model_dir(default_model_path(), str(tmp_path / "v1")), ckpts, step=1)
        wait_for(lambda: len(CommitLog(out).sequence_numbers()) >= 6 or result, 300, "version 1's three files")
    finally:
        stop.set()
        thread.join(300)
    assert "error" not in result, result.get("error")
    entries = list(CommitLog(out).entries())
    slice_of = {e["version"]: {e["unit"]["slice"]} for e in entries}
    for e in entries:
        slice_of[e["version"]].add(e["unit"]["slice"])
    assert slice_of == {"step-000000000": {1}, "step-000000001": {0}}  # version order 1 -> slice 1, 2 -> 0
    per_version = _versions_in_log(out)
    qids = sorted(data["queries"])
    halves = {s: sorted(q for q, k in zip(qids, keys64(qids)) if int(k) % 2 == s) for s in (0, 1)}
    assert sorted(r["query_id"] for r in per_version["step-000000000"]) == halves[1]
    assert sorted(r["query_id"] for r in per_version["step-000000001"]) == halves[0]
    assert sorted(e["unit"]["file"] for e in entries if e["version"] == "step-000000000") == \
        sorted(os.path.basename(f) for f in files + [late])
    # retention 1: only the store in use is kept
    stores = [d for d in os.listdir(os.path.join(out, "_work", "embeddings"))
              if read_manifest(os.path.join(out, "_work", "embeddings", d))]
    assert len(stores) == 1
    assert pq.read_table(late).num_rows > 0
