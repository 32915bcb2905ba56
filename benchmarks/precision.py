"""encoder.precision on a CPU: docs/s and how close each precision's vectors are to float32's, on real text.

    python benchmarks/precision.py [--data /work/shared/data/scifact] [--docs 300] [--threads 1] [--rounds 2]
                                   [--out FILE]

The first ``--docs`` documents of a BEIR corpus (title and text, as a run embeds them), encoded by streammine's
own encoder (encode/sentence_transformer.py: token-budget batches, as a mining run on a CPU) in each mode; the
reference is float32 with the stock PyTorch layers. Reports per mode the seconds, docs/s and the min / mean
cosine of each document's vector to the reference, how far a query-document score moves (the first ``--queries``
queries against every document), and the machine (CPU model, its bfloat16 flags, the load average).
Each mode is warmed up on a few documents, then the modes run in turn, ``--rounds`` times, the best time of each
kept: wall seconds and, less sensitive to other work on a shared machine, the process's CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# (name, encoder.precision, encoder.cpu_onednn)
MODES = [("float32 stock", "float32", False),
         ("float32 oneDNN (default float32 path)", "float32", True),
         ("bf16-autocast stock linears", "bf16-autocast", False),
         ("bf16-autocast oneDNN bfloat16 linears (streammine's bf16-autocast)", "bf16-autocast", True),
         ("bfloat16 whole model", "bfloat16", False)]


def machine() -> dict:
    import torch
    from streammine.encode.precision import BF16_FLAGS, _cpuinfo_flags, cpu_has_bf16
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    flags = _cpuinfo_flags() or set()
    return {"cpu": model, "logical_cpus": os.cpu_count(),
            "flags": sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma"))),
            "bf16_flags": [f for f in BF16_FLAGS if f in flags], "cpu_has_bf16": cpu_has_bf16(),
            "torch": torch.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/work/shared/data/scifact")
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "precision.json"))
    a = p.parse_args()
    import numpy as np
    from streammine.config import EncoderConfig
    from streammine.encode.sentence_transformer import SentenceTransformerEncoder
    docs = [json.loads(line) for _, line in zip(range(a.docs), open(os.path.join(a.data, "corpus.jsonl")))]
    texts = [f"{d['title']} {d['text']}" if d.get("title") else d["text"] for d in docs]
    out = {"machine": machine(), "load_average_before": os.getloadavg(), "documents": len(texts),
           "queries": a.queries, "threads": a.threads, "rounds": a.rounds,
           "model": "all-MiniLM-L6-v2 (packaged)", "reference": MODES[0][0], "modes": {}}
    encoders = {name: SentenceTransformerEncoder(EncoderConfig(precision=precision, cpu_onednn=onednn), device="cpu",
                                                 torch_threads=a.threads) for name, precision, onednn in MODES}
    for enc in encoders.values():
        enc.encode_documents(texts[:8])  # warm-up
    # interleaved rounds, the best of each mode kept: the machine is shared, so wall time is noisy; CPU time
    # (one thread: the process's own compute) much less so
    wall, cpu, vectors = {}, {}, {}
    for _ in range(a.rounds):
        for name in encoders:
            t, c = time.perf_counter(), time.process_time()
            vectors[name] = encoders[name].encode_documents(texts)
            wall[name] = min(wall.get(name, 1e9), time.perf_counter() - t)
            cpu[name] = min(cpu.get(name, 1e9), time.process_time() - c)
    # query-document scores (the first --queries queries against every document): how far a score moves
    queries = [json.loads(line)["text"] for _, line in zip(range(a.queries), open(os.path.join(a.data,
                                                                                              "queries.jsonl")))]
    scores = {name: encoders[name].encode_queries(queries) @ vectors[name].T for name in encoders}
    out["load_average_after"] = os.getloadavg()
    reference = vectors[MODES[0][0]]
    for name, precision, onednn in MODES:
        v = vectors[name]
        delta = np.abs(scores[name] - scores[MODES[0][0]])
        cos = (v * reference).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(reference, axis=1))
        out["modes"][name] = {"precision": precision, "cpu_onednn": onednn,
                              "onednn_layers": encoders[name].onednn_layers,
                              "seconds": round(wall[name], 3), "docs_per_s": round(len(texts) / wall[name], 1),
                              "cpu_seconds": round(cpu[name], 3), "docs_per_cpu_s": round(len(texts) / cpu[name], 1),
                              "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                              "docs_below_0.9999": int((cos < 0.9999).sum()),
                              "score_abs_diff_max": float(delta.max()),
                              "score_abs_diff_median": float(np.median(delta))}
        print(name, json.dumps(out["modes"][name]), flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
