"""The online trainer (streammine.train.online): examples from mined rows, batches, and the real loop on a CPU.

The feed is a commit log built by hand (CommitLog.append + small Parquet parts of MINED_SCHEMA rows whose ids come
from the packaged SciFact slice), closed, so the trainer reads it to the end; the model is the packaged
all-MiniLM-L6-v2, trained for real (no mocks) for a few steps.
"""
from __future__ import annotations

import collections
import importlib.util
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from streammine.api import demo_data_path
from streammine.encode.base import default_model_path
from streammine.errors import StreamMineError
from streammine.refresh.versions import MARKER, list_versions
from streammine.sink.commit_log import CommitLog
from streammine.sink.schema import MINED_SCHEMA
from streammine.train import Example, OnlineTrainerConfig, load_texts, pack_batches, train_online, training_examples
from streammine.train.online import TRAINER_STATE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "step-000000000"


# ---- the demo slice, read directly -----------------------------------------------------------------------------

def _demo():
    root = demo_data_path()
    corpus = {}
    with open(os.path.join(root, "corpus.jsonl"), encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            corpus[str(obj["_id"])] = (obj.get("title") or "", obj["text"])
    queries = {}
    with open(os.path.join(root, "queries.jsonl"), encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            queries[str(obj["_id"])] = obj["text"]
    qrels = collections.defaultdict(list)
    with open(os.path.join(root, "qrels", "train.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, score = line.split("\t")
            if int(score) > 0 and did not in qrels[qid]:
                qrels[qid].append(did)
    return root, corpus, queries, dict(qrels)


@pytest.fixture(scope="module")
def demo():
    return _demo()


def mined_rows(demo, version=BASE):
    """One MINED_SCHEMA row per query with positives: 3 negatives from the corpus; two special rows: the first
    has one of its positives among its negatives (the miner never does that; the trainer must drop it), the
    last has no negatives at all (skipped)."""
    _, corpus, queries, qrels = demo
    ids = sorted(corpus)
    rows = []
    for i, qid in enumerate(sorted(qrels, key=int)):
        positives = qrels[qid]
        negatives = []
        j = 0
        while len(negatives) < 3:
            d = ids[(i * 7 + j * 13) % len(ids)]
            j += 1
            if d not in positives and d not in negatives:
                negatives.append(d)
        rows.append({"query_id": qid, "query": queries[qid], "positive_ids": positives,
                     "positive_scores": [0.5] * len(positives), "positive_ref": 0.5,
                     "negative_ids": negatives, "negative_scores": [0.4, 0.3, 0.2],
                     "negative_ranks": [0, 1, 2], "removed_ids": [], "removed_scores": [],
                     "n_candidates": 50, "n_removed_positive": 0, "n_removed_same_text": 0,
                     "n_removed_filter": 0, "n_removed_min_score": 0, "short": False,
                     "model": "all-MiniLM-L6-v2", "model_version": version, "config_hash": "test"})
    rows[0]["negative_ids"] = [rows[0]["positive_ids"][0]] + rows[0]["negative_ids"][:2]
    rows[-1].update(negative_ids=[], negative_scores=[], negative_ranks=[], short=True)
    return rows


def write_log(out, entries, version=BASE, version_order=0):
    """Commits each list of rows as one log entry (one or two parts), then closes the log."""
    log = CommitLog(str(out))
    for n, rows in enumerate(entries):
        half = (len(rows) + 1) // 2
        parts = []
        for k, chunk in enumerate([rows[:half], rows[half:]]):
            if not chunk:
                continue
            rel = f"data/{version}/unit-{n:03d}/part-{k:05d}.parquet"
            os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
            pq.write_table(pa.Table.from_pylist(chunk, schema=MINED_SCHEMA), os.path.join(out, rel))
            parts.append({"part": rel, "rows": len(chunk)})
        log.append({"version": version, "version_order": version_order, "unit": f"queries.jsonl[{n}]",
                    "parts": parts, "rows": len(rows), "version_created": 0.0})
    log.close()


def load(path):
    """(max_seq_length, floating-point weights) of the sentence-transformers model at ``path``."""
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(path), device="cpu")
    return model.max_seq_length, {k: v.detach().clone() for k, v in model.state_dict().items()
                                  if v.is_floating_point()}


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ---- load_texts --------------------------------------------------------------------------------------------------

def test_load_texts_is_the_document_text_of_every_corpus_line(demo):
    root, corpus, _, _ = demo
    expected = {d: (f"{title} {text}" if title else text) for d, (title, text) in corpus.items()}
    assert load_texts(root) == expected
    assert len(expected) == 300


# ---- training_examples ---------------------------------------------------------------------------------------------

TEXTS = {"p1": "positive one", "p2": "positive two", "p1copy": "positive one", "n1": "neg one", "n2": "neg two",
         "n3": "neg three"}


def _row(qid, positives, negatives, **extra):
    return dict({"query_id": qid, "query": f"query {qid}", "positive_ids": positives, "negative_ids": negatives,
                 "model_version": "v1", "_seq": 7}, **extra)


def test_training_examples_direct_cases():
    rows = [
        _row("a", ["p1"], ["n1", "p1", "n2"]),        # a positive among the negatives: dropped
        _row("b", ["p1"], []),                        # no negatives
        _row("c", [], ["n1"]),                        # no positive
        _row("d", ["p1", "p2"], ["p2", "p1"]),        # only positives: no negatives left
        _row("e", ["p1"], ["p1copy", "n3"]),          # a document with the positive's text is no negative
        _row("f", ["p2"], ["n1", "n1"]),              # a repeated negative counts once: short of 2
    ]
    counts = collections.Counter()
    got = list(training_examples(rows, TEXTS, negatives_per_query=2, seed=3, counts=counts))
    # with exactly as many candidates as asked for, every candidate is taken, in the miner's order
    assert got == [Example(("query a", "positive one", "neg one", "neg two"), "a", "v1", 7)]
    assert counts == {"rows": 6, "examples": 1, "skipped_no_negatives": 2, "skipped_no_positive": 1,
                      "skipped_short_of_negatives": 2}
    one = list(training_examples(rows, TEXTS, negatives_per_query=1, seed=3))
    assert [ex.query_id for ex in one] == ["a", "e", "f"]
    assert one[1].texts == ("query e", "positive one", "neg three")
    assert one[2].texts == ("query f", "positive two", "neg one")
    assert one[0].texts[2] in ("neg one", "neg two")


def test_training_examples_unknown_document_is_an_error():
    with pytest.raises(StreamMineError, match="'zz'.*not in the corpus"):
        list(training_examples([_row("a", ["p1"], ["zz"])], TEXTS))


def test_training_examples_are_deterministic_per_seed_and_query(demo):
    _, _, _, qrels = demo
    texts = load_texts(demo_data_path())
    ids = sorted(texts)
    rows = [_row(q, qrels[q] + ids[:3], ids[i % 50: i % 50 + 12]) for i, q in enumerate(sorted(qrels))]

    def by_query(rows, seed, k=3):
        return {ex.query_id: ex.texts for ex in training_examples(rows, texts, k, seed)}

    first = by_query(rows, seed=0)
    assert first == by_query(rows, seed=0)
    # a query's example does not depend on the other rows nor on their order
    assert by_query(list(reversed(rows)), seed=0) == first
    assert by_query(rows[5:6], seed=0) == {rows[5]["query_id"]: first[rows[5]["query_id"]]}
    # another seed draws other examples
    assert by_query(rows, seed=1) != first
    for row in rows:
        ex = first[row["query_id"]]
        positive_texts = {texts[p] for p in row["positive_ids"]}
        candidates = [texts[d] for d in row["negative_ids"] if texts[d] not in positive_texts]
        assert ex[0] == row["query"] and ex[1] in positive_texts and len(ex) == 5
        assert not positive_texts.intersection(ex[2:])
        # the negatives are distinct candidates, in the miner's order
        positions = [candidates.index(t) for t in ex[2:]]
        assert positions == sorted(set(positions))


# ---- pack_batches --------------------------------------------------------------------------------------------------

def test_pack_batches_never_repeats_a_text_in_a_batch():
    exs = [Example((f"q{i}", f"p{i % 5}", f"n{i % 7}"), f"q{i}", "v", i) for i in range(40)]
    batches = list(pack_batches(exs, 4))
    assert sorted(ex.query_id for b in batches for ex in b) == sorted(ex.query_id for ex in exs)
    for b in batches:
        assert 1 <= len(b) <= 4
        texts = [t for ex in b for t in ex.texts]
        assert len(texts) == len(set(texts))
    # an example that had to wait goes first into the next batch
    clash = [Example(("a", "p", "n1"), "a", "v", 1), Example(("b", "p", "n2"), "b", "v", 1),
             Example(("c", "x", "n3"), "c", "v", 1)]
    assert [[ex.query_id for ex in b] for b in pack_batches(clash, 2)] == [["a", "c"], ["b"]]
    # everything colliding: short batches, never a stall
    same = [Example((f"q{i}", "p", "n"), f"q{i}", "v", 1) for i in range(10)]
    assert [len(b) for b in pack_batches(same, 4)] == [1] * 10


# ---- the loop --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("online")
    rows = mined_rows(demo)
    entries = [rows[:20], rows[20:]]
    feed, root = str(tmp / "run"), str(tmp / "checkpoints")
    write_log(feed, entries)
    cfg = OnlineTrainerConfig(feed=feed, corpus=demo[0], checkpoints=root, batch_size=4, negatives_per_query=1,
                              lr=1e-4, publish_every=2, max_steps=4, seed=0, device="cpu", poll_seconds=0.1,
                              max_seq_length=32,  # short sequences: a fast CPU test
                              idle_timeout_s=30, consumed_log=str(tmp / "trainer" / "consumed.jsonl"))
    summary = train_online(cfg)
    return {"cfg": cfg, "summary": summary, "rows": rows, "entries": entries, "tmp": tmp}


def test_train_online_publishes_base_then_trained_checkpoints(trained):
    cfg, summary = trained["cfg"], trained["summary"]
    versions = list_versions(cfg.checkpoints)
    assert [(v.name, v.step) for v in versions] == [(BASE, 0), ("step-000000002", 2), ("step-000000004", 4)]
    for v in versions:
        assert os.path.exists(os.path.join(v.url, MARKER))
        assert os.path.exists(os.path.join(v.url, TRAINER_STATE))
    # the base was published first, before any training
    assert summary["base_published"] is True
    assert [c["name"] for c in summary["checkpoints"]] == [BASE, "step-000000002", "step-000000004"]
    assert versions[0].created < versions[1].created < versions[2].created
    assert summary["steps"] == 4 and summary["steps_trained"] == 4 and summary["stopped"] == "max_steps"
    assert summary["device"] == "cpu" and len(summary["losses"]) == 4
    assert all(loss == loss and loss > 0 for loss in summary["losses"])

    base_length, base = load(default_model_path())
    loaded = [load(v.url) for v in versions]
    # trained with max_seq_length=32, published with the model's own (what the miner encodes with)
    assert [length for length, _ in loaded] == [base_length] * 3 and base_length > 32
    published = [w for _, w in loaded]
    assert published[0].keys() == base.keys()
    assert all(torch.equal(published[0][k], base[k]) for k in base)          # step 0 is the base model
    for trained_weights in published[1:]:                                       # later ones were trained
        assert any(not torch.equal(trained_weights[k], base[k]) for k in base)
    assert any(not torch.equal(published[2][k], published[1][k]) for k in base)


def test_train_online_logs_what_it_consumed(trained):
    cfg, summary, rows = trained["cfg"], trained["summary"], trained["rows"]
    lines = read_jsonl(cfg.consumed_log)
    assert len(lines) == 16
    assert collections.Counter(line["step"] for line in lines) == {1: 4, 2: 4, 3: 4, 4: 4}
    assert {line["model_version"] for line in lines} == {BASE}
    seq_of = {row["query_id"]: n + 1 for n, entry in enumerate(trained["entries"]) for row in entry}
    for line in lines:
        assert line["_seq"] == seq_of[line["query_id"]]
    assert len({line["query_id"] for line in lines}) == 16
    assert rows[-1]["query_id"] not in {line["query_id"] for line in lines}  # no negatives: never trained
    # every batch holds distinct texts (the first row's negatives lost the positive mined among them)
    assert summary["examples_per_version"] == {BASE: 16}
    assert summary["rows_per_version"][BASE] == summary["rows_consumed"] >= 16
    assert summary["counts"]["examples"] >= 16

    # resume_after_seq: every usable row of the entries up to it was trained, and not so for the next one
    texts = load_texts(cfg.corpus)
    trained_pairs = {(line["query_id"], line["_seq"]) for line in lines}
    r = summary["resume_after_seq"]
    for seq, entry in enumerate(trained["entries"], start=1):
        usable = {(ex.query_id, seq) for ex in training_examples(entry, texts, 1, 0)}
        if seq <= r:
            assert usable <= trained_pairs
        elif seq == r + 1:
            assert not usable <= trained_pairs
    with open(os.path.join(list_versions(cfg.checkpoints)[-1].url, TRAINER_STATE)) as f:
        state = json.load(f)
    assert state == {"step": 4, "feed": cfg.feed, "resume_after_seq": r, "seed": 0}


def _job_main():
    spec = importlib.util.spec_from_file_location("online_trainer_job", os.path.join(REPO, "jobs", "online_trainer.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_job_config_and_resume(trained, capsys):
    cfg, summary = trained["cfg"], trained["summary"]
    # the shipped YAML is valid and documents every key
    with open(os.path.join(REPO, "jobs", "online_trainer.yaml")) as f:
        text = f.read()
    import dataclasses
    for field in dataclasses.fields(OnlineTrainerConfig):
        assert f"\n{field.name}:" in text, field.name
    shipped = OnlineTrainerConfig.from_sources(os.path.join(REPO, "jobs", "online_trainer.yaml"),
                                               {"corpus": "x", "last_versions": "null", "max_steps": "7"})
    assert shipped.last_versions is None and shipped.max_steps == 7 and shipped.negatives_per_query == 1

    # the job resumes from the latest version (weights, step, feed position) and publishes the next ones
    root = str(trained["tmp"] / "resumed")
    shutil.copytree(list_versions(cfg.checkpoints)[-1].url, os.path.join(root, "step-000000004"))
    out_summary = str(trained["tmp"] / "resumed-summary.json")
    sets = {"feed": cfg.feed, "corpus": cfg.corpus, "checkpoints": root, "batch_size": 4, "max_steps": 6,
            "publish_every": 2, "device": "cpu", "lr": 1e-4, "max_seq_length": 32, "poll_seconds": 0.1, "idle_timeout_s": 30,
            "consumed_log": str(trained["tmp"] / "resumed.jsonl")}
    argv = ["--config", os.path.join(REPO, "jobs", "online_trainer.yaml"), "--summary", out_summary]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    assert _job_main()(argv) == 0
    with open(out_summary) as f:
        resumed = json.load(f)
    assert resumed["base_published"] is False
    assert resumed["start_step"] == 4 and resumed["steps"] == 6 and resumed["steps_trained"] == 2
    assert resumed["start_after_seq"] == summary["resume_after_seq"]
    assert [(v.name, v.step) for v in list_versions(root)] == [("step-000000004", 4), ("step-000000006", 6)]
    lines = read_jsonl(sets["consumed_log"])
    assert len(lines) == 8 and {line["step"] for line in lines} == {5, 6}
    assert min(line["_seq"] for line in lines) > summary["resume_after_seq"]

    # a missing required key is reported, not raised
    assert _job_main()(["--set", "corpus=x"]) == 2
    assert "feed is required" in capsys.readouterr().err


def test_train_online_publishes_what_it_trained_when_the_feed_ends(trained):
    """The recipe's last step: steps trained since the last publication are published when the feed ends."""
    cfg = trained["cfg"]
    root = str(trained["tmp"] / "to-the-end")
    shutil.copytree(list_versions(cfg.checkpoints)[-1].url, os.path.join(root, "step-000000004"))
    rest = OnlineTrainerConfig(feed=cfg.feed, corpus=cfg.corpus, checkpoints=root, batch_size=8, lr=1e-4,
                               publish_every=100, max_steps=None, device="cpu", max_seq_length=32, poll_seconds=0.1,
                               idle_timeout_s=30, start_after_seq=0)
    summary = train_online(rest)
    assert summary["stopped"] == "feed_end" and summary["steps"] == 4 + summary["steps_trained"] > 4
    assert summary["steps_trained"] < rest.publish_every
    assert [c["step"] for c in summary["checkpoints"]] == [summary["steps"]]
    assert [v.step for v in list_versions(root)] == [4, summary["steps"]]
    assert summary["resume_after_seq"] == summary["feed_position"] == len(trained["entries"])
