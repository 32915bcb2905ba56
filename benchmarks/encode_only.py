"""The encoder alone: embed the same texts a mining run embeds (corpus documents and train queries), with the
same model and batching, and nothing else. The lower bound for an end-to-end run on a CPU.

    python benchmarks/encode_only.py --data DIR [--procs 1] [--out results.json]

``--procs 1`` is one process using every core (torch's intra-op threads), as sentence-transformers runs.
``--procs N`` splits the texts into N contiguous slices encoded at once by N processes with cores/N threads each,
which is how streammine's encoder actors share a CPU machine; the clock runs from the moment every process has
its model loaded to the moment the last one is done.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

t_start = time.perf_counter()


def load_texts(data: str, split: str):
    docs = [json.loads(line) for line in open(os.path.join(data, "corpus.jsonl"))]
    texts = [f"{d['title']} {d['text']}" if d.get("title") else d["text"] for d in docs]
    qids = {line.split("\t")[0] for line in list(open(os.path.join(data, "qrels", f"{split}.tsv")))[1:]}
    queries = [q["text"] for q in map(json.loads, open(os.path.join(data, "queries.jsonl"))) if q["_id"] in qids]
    return texts, queries


def slice_of(items: list, part: int, parts: int) -> list:
    n = len(items)
    return items[part * n // parts:(part + 1) * n // parts]


def worker(part: int, parts: int, threads: int, a, barrier, results) -> None:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(threads)
    # streammine's own forward passes (encode/sentence_transformer.py): the same batching as a mining run,
    # token-budget batches for --batch-size 0 (its default), else sentence-transformers' encode with that size
    from streammine.config import EncoderConfig
    from streammine.encode.sentence_transformer import SentenceTransformerEncoder
    texts, queries = load_texts(a.data, a.split)
    t = time.perf_counter()
    encoder = SentenceTransformerEncoder(EncoderConfig(batch_size=a.batch_size, cpu_onednn=not a.stock_kernels),
                                         device="cpu", torch_threads=threads)
    load = time.perf_counter() - t
    barrier.wait()
    t0 = time.time()
    encoder.encode_documents(slice_of(texts, part, parts))
    t1 = time.time()
    encoder.encode_queries(slice_of(queries, part, parts))
    results.put({"part": part, "start": t0, "corpus_done": t1, "end": time.time(), "model_load_seconds": load,
                 "documents": len(texts), "queries": len(queries)})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--batch-size", type=int, default=0, help="0: streammine's default (token-budget batches on CPU)")
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--stock-kernels", action="store_true", help="PyTorch's own linear layers (encoder.cpu_onednn off)")
    p.add_argument("--out")
    a = p.parse_args()
    cores = os.cpu_count() or 1
    threads = max(1, cores // a.procs)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(a.procs), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(i, a.procs, threads, a, barrier, results)) for i in range(a.procs)]
    for proc in procs:
        proc.start()
    parts = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    start = min(r["start"] for r in parts)
    corpus_s = max(r["corpus_done"] for r in parts) - start
    encode_s = max(r["end"] for r in parts) - start
    n = parts[0]["documents"] + parts[0]["queries"]
    result = {"documents": parts[0]["documents"], "queries": parts[0]["queries"], "procs": a.procs,
              "batch_size": a.batch_size or "auto (token budget)", "cpu_onednn": not a.stock_kernels,
              "threads_per_proc": threads, "model_load_seconds": max(r["model_load_seconds"] for r in parts),
              "corpus_encode_seconds": corpus_s, "query_encode_seconds": encode_s - corpus_s,
              "encode_seconds": encode_s, "texts_per_second": n / encode_s,
              "process_wall_seconds": time.perf_counter() - t_start}
    print(json.dumps(result, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
