"""Small real data and checkpoints for the continuous-mining tests (a slice of the packaged SciFact slice)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streammine.api import demo_data_path
from streammine.io.records import document_text
from streammine.sink.commit_log import CommitLog


def tiny_scifact(root: str, n_docs: int = 60) -> dict:
    """A BEIR directory with the first ``n_docs`` documents of the demo slice and the queries whose positives all
    lie among them. Returns {"path", "docs": {id: text}, "queries": {id: text}, "qrels": {qid: [doc ids]}}."""
    src = demo_data_path()
    os.makedirs(os.path.join(root, "qrels"), exist_ok=True)
    with open(os.path.join(src, "corpus.jsonl")) as f:
        docs = [json.loads(line) for line in f][:n_docs]
    ids = {d["_id"] for d in docs}
    qrels: dict = {}
    with open(os.path.join(src, "qrels", "train.tsv")) as f:
        for row in list(csv.reader(f, delimiter="\t"))[1:]:
            qrels.setdefault(row[0], []).append(row[1])
    qrels = {q: p for q, p in qrels.items() if set(p) <= ids}
    with open(os.path.join(src, "queries.jsonl")) as f:
        queries = [q for q in map(json.loads, f) if q["_id"] in qrels]
    with open(os.path.join(root, "corpus.jsonl"), "w") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)
    with open(os.path.join(root, "queries.jsonl"), "w") as f:
        f.writelines(json.dumps(q) + "\n" for q in queries)
    with open(os.path.join(root, "qrels", "train.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{p}\t1\n" for q in qrels for p in qrels[q])
    return {"path": root, "docs": {d["_id"]: document_text(d.get("title", ""), d["text"]) for d in docs},
            "queries": {q["_id"]: q["text"] for q in queries}, "qrels": qrels}


def write_pairs_files(data: dict, root: str, n_files: int) -> list:
    """The tiny set as (anchor, positive-id) pair files plus a corpus table; returns the pair file paths."""
    os.makedirs(os.path.join(root, "pairs"), exist_ok=True)
    corpus = pa.table({"_id": list(data["docs"]), "title": [""] * len(data["docs"]),
                       "text": list(data["docs"].values())})
    pq.write_table(corpus, os.path.join(root, "corpus.parquet"))
    qids = sorted(data["queries"])
    paths = []
    for i in range(n_files):
        chunk = qids[i::n_files]
        table = pa.table({"qid": chunk, "anchor": [data["queries"][q] for q in chunk],
                          "pos": [data["qrels"][q][0] for q in chunk]})
        paths.append(os.path.join(root, "pairs", f"part-{i}.parquet"))
        pq.write_table(table, paths[-1])
    return paths


def perturbed_model_dir(base_dir: str, target: str, scale: float = 0.9, seed: int = 0) -> str:
    """A copy of a sentence-transformers model with a few weights changed: a different model version."""
    import torch
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(base_dir, device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "encoder.layer.5" in name and p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02).mul_(scale)
    shutil.rmtree(target, ignore_errors=True)
    model.save(target)
    return target


def committed_rows(out: str) -> list:
    """Every committed row of a run (following its commit log), with the entry's seq."""
    from streammine.io import fs
    log = CommitLog(out)
    rows = []
    for entry in log.entries():
        for url in log.part_urls(entry):
            with fs.open_url(url, "rb") as f:
                table = pq.read_table(f)
            for r in table.to_pylist():
                rows.append(dict(r, _seq=entry["seq"]))
    return rows


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def encode(model_dir: str, texts: list) -> np.ndarray:
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(model_dir, device="cpu")
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)


class FlakyProxy:
    """A TCP proxy on loopback in front of the S3 server that can be taken down (connections refused, open ones
    cut) and brought back: an object store that stops for a while, without losing what it holds."""

    def __init__(self, target_host: str, target_port: int):
        import socket
        self.target = (target_host, target_port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conns: list = []
        self.listener = None
        self.lock = threading.Lock()
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        import socket
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self.listener = self.listener, None
        listener.close()
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def _accept(self, listener) -> None:
        import socket
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


def scrape_ray_metric(name: str, labels: dict, timeout: float = 180.0):
    """The value this process exported for a metric, read from the node's Prometheus endpoint (Ray's metrics
    agent) once it is there (None after ``timeout``)."""
    import re
    import urllib.request
    import ray
    port = ray._private.worker.global_worker.node.metrics_export_port
    # this process's series only (other drivers of the session export the same names)
    labels = dict(labels, WorkerId=ray.get_runtime_context().get_worker_id())
    want = [f'{k}="{v}"' for k, v in labels.items()]
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            body = ""
        for line in body.splitlines():
            m = re.match(rf"^{re.escape(name)}{{(.*)}} (\S+)$", line)
            if m and all(w in m.group(1) for w in want):
                return float(m.group(2))
        time.sleep(1.0)
    print(f"{name} {labels} not exported by port {port} within {timeout:.0f} s; streammine series there:", [ln[:300] for ln in body.splitlines() if "streammine" in ln][:8])
    return None
