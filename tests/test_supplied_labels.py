"""Supplied negatives and graded labels (issue 18 items 2-input and 5): the FlagEmbedding input format against a
plain json reading of the file, ``mine_batch`` with supplied negatives against a per-query brute force for each of
include / exclude / ignore, graded qrels with min_positive_grade 1 and 2, and the one-line CLI switch from
FlagEmbedding's hn_mine.py end to end (its export re-read)."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from streammine.config import FilterConfig, InputConfig, MiningConfig, SamplerConfig
from streammine.io.formats import format_of
from streammine.io.formats.beir import read_qrels
from streammine.keys import content_id
from streammine.mining import CandidateBatch, PositiveBatch, mine_batch
from streammine.mining.supplied import SUPPLIED_RANK, Supplied


# ---- a FlagEmbedding file and its plain reading -------------------------------------------------------------

def fe_rows():
    rows = [{"query": "what is a cat", "pos": ["cats are small felines", "a cat is a pet"],
             "neg": ["dogs bark loudly", "fish swim"], "prompt": "Represent this query: ", "extra": 1},
            {"query": "how do planes fly", "pos": ["wings give planes lift"], "neg": ["birds have feathers",
                                                                                      "dogs bark loudly"]},
            {"query": "what is a cat", "pos": ["a cat is a pet"], "neg": ["cats are small felines", "owls hoot"]},
            {"query": "why does it rain", "pos": ["water falls from clouds"]}]
    rows += [{"query": f"question {i} on subject {i % 4}", "pos": [f"an answer on subject {i % 4}, number {i}"],
              "neg": [f"an unrelated remark {i}"]} for i in range(14)]
    return rows


def write_jsonl(path, rows) -> str:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def plain_reading(rows):
    """(queries: qid -> (query, pos ids, neg ids, prompt), corpus texts in order) from the rows alone."""
    queries, corpus = {}, []
    for r in rows:
        qid = content_id(r["query"])
        q = queries.setdefault(qid, [r["query"], [], [], None])
        for t in r["pos"]:
            if content_id(t) not in q[1]:
                q[1].append(content_id(t))
        for t in r.get("neg", []):
            if content_id(t) not in q[2]:
                q[2].append(content_id(t))
        if q[3] is None:
            q[3] = r.get("prompt")
        for t in r["pos"] + r.get("neg", []):
            if t not in corpus:
                corpus.append(t)
    for q in queries.values():
        q[2] = [d for d in q[2] if d not in q[1]]  # a positive of the query is never its negative
    return queries, corpus


def read_format(input_cfg):
    fmt = format_of(input_cfg)
    got = {}
    for t in fmt.query_blocks(5):
        for r in t.to_pylist():
            got[r["query_id"]] = [r["query"], r["positive_ids"], r["supplied_negative_ids"], r["prompt"]]
    corpus = [(d, t) for b in fmt.corpus_blocks(block_rows=7) for d, t in zip(b.column("doc_id").to_pylist(),
                                                                             b.column("text").to_pylist())]
    return got, corpus


def test_flagembedding_records_against_plain_json(tmp_path):
    rows = fe_rows()
    want_q, want_corpus = plain_reading(rows)
    got_q, got_corpus = read_format(InputConfig(format="flagembedding", path=write_jsonl(tmp_path / "t.jsonl", rows)))
    assert got_q == want_q
    assert got_corpus == [(content_id(t), t) for t in want_corpus]
    # a candidate pool: the pool, plus the file's texts (a pool line repeating one of them is that document)
    pool = ["a pool document about cats", "dogs bark loudly", "an unrelated pool line"]
    pool_url = write_jsonl(tmp_path / "pool.jsonl", [{"text": t} for t in pool])
    _, got_corpus = read_format(InputConfig(format="flagembedding", path=str(tmp_path / "t.jsonl"), corpus=pool_url))
    assert sorted(got_corpus) == sorted({(content_id(t), t) for t in want_corpus + pool})


def test_flagembedding_on_s3(s3_env, s3_bucket, tmp_path):
    import fsspec
    rows = fe_rows()
    url = f"s3://{s3_bucket}/fe/train.jsonl"
    with fsspec.open(url, "w", client_kwargs={"endpoint_url": s3_env["AWS_ENDPOINT_URL"]}) as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    want_q, want_corpus = plain_reading(rows)
    got_q, got_corpus = read_format(InputConfig(format="flagembedding", path=url))
    assert got_q == want_q and [t for _, t in got_corpus] == want_corpus


# ---- mine_batch with supplied negatives vs a per-query brute force -------------------------------------------

def world(seed, b=12, corpus=40, k=30):
    rng = np.random.default_rng(seed)
    score = rng.normal(0, 0.3, (b, corpus)).astype(np.float32)
    ords = np.stack([np.lexsort((np.arange(corpus), -score[i]))[:k] for i in range(b)])
    rows = np.arange(b)[:, None]
    cands = CandidateBatch(ords, score[rows, ords], np.arange(corpus, dtype=np.uint64)[ords] + np.uint64(1),
                           np.array([[f"d{o}" for o in r] for r in ords], object))
    pos, sup, below = [], [], []
    for i in range(b):
        perm = rng.permutation(ords[i][:15])
        p, s, j = perm[:rng.integers(1, 3)], perm[3:3 + rng.integers(0, 6)], perm[9:9 + rng.integers(0, 3)]
        if len(s) > 1 and rng.random() < 0.5:
            s = np.concatenate([s, s[:1]])  # a repeated supplied negative is used once
        if rng.random() < 0.3:
            s = np.concatenate([s, rng.choice(np.arange(corpus), 3)])  # some beyond the candidates
        s = np.array([x for x in s if x not in p], np.int64)
        pos.append(p.astype(np.int64))
        sup.append(s)
        below.append(np.array([x for x in j if x not in p], np.int64))
    positives = PositiveBatch(pos, [score[i, p] for i, p in enumerate(pos)],
                              [p.astype(np.uint64) + np.uint64(1) for p in pos], [[f"d{o}" for o in p] for p in pos])
    keys = rng.integers(1, 2**62, b).astype(np.uint64)
    return keys, cands, positives, score, sup, below


def reference(mode, n, cands, positives, score, sup, below, i):
    """One query: (ids, ranks, scores) by hand: top sampler, no filter."""
    head = []
    if mode == "include":
        for o in sup[i]:
            if o not in head and len(head) < n:
                head.append(int(o))
    skip = set(positives.ordinals[i].tolist()) | set(below[i].tolist())
    if mode != "ignore":
        skip |= set(sup[i].tolist())
    mined, rank = [], 0
    for o in cands.ordinals[i]:
        if o in positives.ordinals[i]:
            continue
        if o not in skip and len(head) + len(mined) < n:
            mined.append((int(o), rank))
        if o not in skip:
            rank += 1
    ids = [f"d{o}" for o in head] + [f"d{o}" for o, _ in mined]
    ranks = [SUPPLIED_RANK] * len(head) + [r for _, r in mined]
    return ids, ranks, [score[i, o] for o in head + [o for o, _ in mined]]


@pytest.mark.parametrize("mode", ["include", "exclude", "ignore"])
@pytest.mark.parametrize("seed", [0, 1])
def test_supplied_modes_against_brute_force(mode, seed):
    n = 6
    keys, cands, positives, score, sup, below = world(seed)
    supplied = Supplied(mode, sup, [score[i, s] for i, s in enumerate(sup)], [[f"d{o}" for o in s] for s in sup],
                        below)
    cfg = MiningConfig(filter=FilterConfig(method="none"), sampler=SamplerConfig(method="top", num_negatives=n,
                                                                                  range_min=0, range_max=30),
                       exclude_same_text=False, supplied_negatives=mode)
    mined = mine_batch(keys, cands, positives, cfg, supplied=supplied)
    for i in range(len(keys)):
        ids, ranks, scores = reference(mode, n, cands, positives, score, sup, below, i)
        assert mined.negative_doc_ids[i] == ids, (mode, i)
        assert mined.negative_ranks[i].tolist() == ranks
        np.testing.assert_array_equal(mined.negative_scores[i], np.asarray(scores, np.float32))
        assert mined.n_supplied_negatives[i] == ranks.count(SUPPLIED_RANK)
        assert mined.short[i] == (len(ids) < n)
        assert not set(ids) & set(positives.doc_ids[i])


# ---- graded qrels ---------------------------------------------------------------------------------------------

QRELS = [("q1", "a", 2), ("q1", "b", 1), ("q1", "c", 0), ("q1", "d", -1), ("q1", "b", 0), ("q2", "e", 1),
         ("q2", "f", 0), ("q3", "g", 3), ("q3", "h", 1), ("q3", "h", 2), ("q1", "c", 0)]


@pytest.mark.parametrize("min_grade", [1, 2])
def test_graded_qrels_against_brute_force(tmp_path, min_grade):
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in QRELS))
    judged, non_positive = {}, {}
    got = read_qrels(str(path), None, non_positive, min_grade, judged)
    for qid in sorted({q for q, _, _ in QRELS}):
        lines = [(d, s) for q, d, s in QRELS if q == qid]
        pos = []
        for d, s in lines:
            if s >= min_grade and d not in [p for p, _ in pos]:
                pos.append((d, s))
        neg = list(dict.fromkeys(d for d, s in lines if s <= 0 and d not in dict(pos)))
        mid = list(dict.fromkeys(d for d, s in lines if 0 < s < min_grade and d not in dict(pos)))
        if pos:
            assert got[qid].ids == [d for d, _ in pos] and got[qid].grades == [float(s) for _, s in pos]
        else:
            assert qid not in got and qid in non_positive
        kept = judged.get(qid)
        assert (kept.negatives.ids if kept else []) == neg
        assert (kept.below.ids if kept else []) == mid


# ---- the one-line switch from hn_mine.py, end to end --------------------------------------------------------

def test_flagembedding_one_line_cli(ray_session, tmp_path, capfd):
    from streammine import cli
    rows = fe_rows()
    src = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "OUT"
    env = dict(os.environ)
    try:
        with warnings.catch_warnings():
            rc = cli.main(["mine", "--format", "flagembedding", "--input", src, "--output", str(out),
                           "--range-min", "2", "--range-max", "200", "--num-negatives", "15",
                           "--export", "flagembedding", "--no-progress"])
    finally:
        os.environ.clear()
        os.environ.update(env)
    capfd.readouterr()
    assert rc == 0
    want_q, corpus = plain_reading(rows)
    text_of = {content_id(t): t for t in corpus}
    exported = [json.loads(line) for line in open(out / "export" / "flagembedding.jsonl")]
    assert len(exported) == len(want_q)
    by_query = {content_id(e["query"]): e for e in exported}
    for qid, (query, pos, neg, prompt) in want_q.items():
        e = by_query[qid]
        assert e["pos"] == [text_of[d] for d in pos]
        assert e["neg"][:len(neg)] == [text_of[d] for d in neg]  # supplied first, in file order
        assert len(e["neg"]) == min(15, len(corpus) - len(pos))  # they count toward num_negatives
        assert len(set(e["neg"])) == len(e["neg"]) and not set(e["neg"]) & set(e["pos"])
        assert e.get("prompt") == prompt
    from streammine.sink.parts import iter_rows
    for batch in iter_rows(str(out), columns=["query_id", "negative_ids", "negative_ranks", "n_supplied_negatives",
                                              "supplied_negative_ids", "prompt"]):
        for r in batch.to_pylist():
            neg = want_q[r["query_id"]][2]
            assert r["supplied_negative_ids"] == neg and r["prompt"] == want_q[r["query_id"]][3]
            assert r["negative_ids"][:len(neg)] == neg and r["n_supplied_negatives"] == len(neg)
            assert r["negative_ranks"].count(SUPPLIED_RANK) == len(neg)
    summary = json.load(open(out / "summary.json"))
    assert summary["counts"]["supplied_negatives_used"] == sum(len(q[2]) for q in want_q.values())


# ---- a BEIR run with graded qrels and known negatives, on precomputed vectors (exact brute force) -----------

def graded_beir(root, missing: bool = False):
    """30 documents, 6 queries; qrels per query: two grade-2 and grade-1 documents, known negatives 0 and -1."""
    rng = np.random.default_rng(3)
    docs = [f"d{i:02d}" for i in range(30)]
    dv = rng.standard_normal((30, 8))
    dv = (dv / np.linalg.norm(dv, axis=1, keepdims=True)).astype(np.float32)
    qs = [f"q{i}" for i in range(6)]
    qv = dv[:6] + 0.6 * rng.standard_normal((6, 8))
    qv = (qv / np.linalg.norm(qv, axis=1, keepdims=True)).astype(np.float32)
    qrels = []
    for i, q in enumerate(qs):
        qrels += [(q, docs[i], 2), (q, docs[(i + 7) % 30], 1), (q, docs[(i + 11) % 30], 0),
                  (q, docs[(i + 3) % 30], -1), (q, docs[(i + 11) % 30], 0)]
    if missing:
        qrels.append(("q2", "no-such-doc", 0))
    (root / "beir" / "qrels").mkdir(parents=True)
    (root / "beir" / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": f"question {q}"}) + "\n"
                                                         for q in qs))
    (root / "beir" / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    (root / "vectors").mkdir()
    np.save(root / "vectors" / "corpus.npy", dv)
    (root / "vectors" / "corpus.ids.txt").write_text("".join(d + "\n" for d in docs))
    np.save(root / "vectors" / "queries.npy", qv)
    (root / "vectors" / "queries.ids.txt").write_text("".join(q + "\n" for q in qs))
    overrides = {"input.path": str(root / "beir"), "encoder.kind": "precomputed",
                 "encoder.corpus_vectors": str(root / "vectors" / "corpus.npy"),
                 "encoder.query_vectors": str(root / "vectors" / "queries.npy"),
                 "output.path": str(root / "out"), "run.progress": False, "index.shards": 2,
                 "mining.filter.method": "none", "mining.sampler.method": "top",
                 "mining.sampler.num_negatives": 4, "mining.sampler.range_max": 12}
    return docs, dv, qs, qv, qrels, overrides


@pytest.mark.parametrize("min_grade", [1, 2])
def test_graded_beir_run_against_brute_force(ray_session, tmp_path, min_grade):
    import streammine
    from streammine.sink.parts import iter_rows
    docs, dv, qs, qv, qrels, overrides = graded_beir(tmp_path)
    streammine.mine(overrides=dict(overrides, **{"mining.min_positive_grade": min_grade}))
    rows = {r["query_id"]: r for b in iter_rows(str(tmp_path / "out")) for r in b.to_pylist()}
    assert sorted(rows) == qs
    for i, q in enumerate(qs):
        lines = [(d, s) for qq, d, s in qrels if qq == q]
        pos = [d for d, s in lines if s >= min_grade]
        sup = list(dict.fromkeys(d for d, s in lines if s <= 0))
        below = [d for d, s in lines if 0 < s < min_grade]
        score = {d: float(qv[i] @ dv[j]) for j, d in enumerate(docs)}
        rest = sorted((d for d in docs if d not in pos + sup + below), key=lambda d: (-score[d], d))
        want = sup[:4] + rest[:4 - len(sup[:4])]
        r = rows[q]
        assert r["positive_ids"] == pos and r["positive_grades"] == [float(s) for d, s in lines if s >= min_grade]
        assert r["supplied_negative_ids"] == sup and r["n_below_grade"] == len(below)
        assert r["negative_ids"] == want
        np.testing.assert_allclose(r["negative_scores"], [score[d] for d in want], rtol=0, atol=1e-6)
        assert r["negative_ranks"][:len(sup)] == [SUPPLIED_RANK] * len(sup)


def test_supplied_negative_missing_from_corpus(ray_session, tmp_path):
    import streammine
    from streammine import InputError
    _, _, _, _, qrels, overrides = graded_beir(tmp_path, missing=True)
    with pytest.raises(InputError) as e:
        streammine.mine(overrides=overrides)
    assert f"train.tsv:{len(qrels) + 1}" in str(e.value) and "'no-such-doc'" in str(e.value)
    # lenient: a quarantine record for the line, and the query is still mined without that negative
    from streammine.io.records import read_quarantine
    from streammine.sink.parts import iter_rows
    streammine.mine(overrides=dict(overrides, **{"input.lenient": True, "output.overwrite": True}))
    records = list(read_quarantine(str(tmp_path / "out" / "_quarantine")))
    assert [(r["kind"], r["location"].endswith(f"train.tsv:{len(qrels) + 1}")) for r in records] == [("qrels", True)]
    rows = {r["query_id"]: r for b in iter_rows(str(tmp_path / "out")) for r in b.to_pylist()}
    assert "no-such-doc" not in rows["q2"]["negative_ids"] and len(rows) == 6


@pytest.mark.parametrize("mode", ["include", "exclude", "ignore"])
def test_supplied_modes_with_random_negatives_against_brute_force(mode):
    """Half of the slots are random corpus draws: supplied (unless ignored) and below-grade documents are never
    drawn, and with include the merged list keeps the first n - s of hard-then-random."""
    n, n_hard = 6, 3
    keys, cands, positives, score, sup, below = world(5)
    b, corpus = len(keys), score.shape[1]
    rng = np.random.default_rng(9)
    draws = rng.integers(0, corpus, (b, 10))
    for i in range(b):  # plant supplied and below-grade documents among the draws
        planted = np.concatenate([sup[i], below[i]])[:4]
        draws[i, :len(planted)] = planted
    rows = np.arange(b)[:, None]
    random_docs = CandidateBatch(draws, score[rows, draws], draws.astype(np.uint64) + np.uint64(1),
                                 np.array([[f"d{o}" for o in r] for r in draws], object))
    supplied = Supplied(mode, sup, [score[i, s] for i, s in enumerate(sup)], [[f"d{o}" for o in s] for s in sup],
                        below)
    cfg = MiningConfig(filter=FilterConfig(method="none"),
                       sampler=SamplerConfig(method="top", num_negatives=n, range_min=0, range_max=30,
                                             random_share=0.5),
                       exclude_same_text=False, supplied_negatives=mode)
    mined = mine_batch(keys, cands, positives, cfg, random_docs=random_docs, supplied=supplied)
    for i in range(b):
        head = list(dict.fromkeys(int(o) for o in sup[i]))[:n] if mode == "include" else []
        skip = set(positives.ordinals[i].tolist()) | set(below[i].tolist())
        skip |= set(sup[i].tolist()) if mode != "ignore" else set()
        hard = [int(o) for o in cands.ordinals[i] if o not in skip][:n_hard]
        rand = []
        for o in draws[i]:
            if o not in skip and o not in hard and o not in rand and len(rand) < n - n_hard:
                rand.append(int(o))
        want = head + (hard + rand)[:n - len(head)]
        assert mined.negative_doc_ids[i] == [f"d{o}" for o in want], (mode, i)
