"""Readers: BEIR, tables, pairs and precomputed vectors; strict errors name file and line, lenient ones quarantine."""
from __future__ import annotations

import gzip
import json
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streammine.config import ColumnsConfig
from streammine.errors import ConfigError, InputError
from streammine.io import fs, readers
from streammine.io.records import (CORPUS_SCHEMA, QUERY_SCHEMA, Quarantine, count_quarantine, document_text,
                                   read_quarantine)
from streammine.keys import content_id, text_key

# ---- helpers ------------------------------------------------------------------------------------------------

CORPUS = [
    {"_id": "d1", "title": "Paris", "text": "Paris is the capital of France."},
    {"_id": "d2", "text": "Berlin is the capital of Germany."},           # no title
    {"_id": "d3", "title": "Rome", "text": ""},                           # empty text, title only: fine
    {"_id": 4, "title": None, "text": "Madrid is in Spain.", "meta": 1},  # integer id, null title
]
QUERIES = [
    {"_id": "q1", "text": "capital of France?"},
    {"_id": "q2", "text": "capital of Germany?"},
    {"_id": "q3", "text": "no positives here"},       # only a score-0 qrels line
    {"_id": "q4", "text": "where is Madrid?"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq1\td3\t2\nq1\td1\t1\nq3\td2\t0\nq4\t4\t1.0\n"


def _lines(objs) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def write_text(url: str, text, gz: bool = False) -> str:
    data = text.encode() if isinstance(text, str) else text
    with fs.open_url(url, "wb", compression=None) as f:
        f.write(gzip.compress(data) if gz else data)
    return url


def write_beir(root: str, corpus=CORPUS, queries=QUERIES, qrels=QRELS, split="train", gz=False) -> str:
    write_text(fs.join(root, "corpus.jsonl" + (".gz" if gz else "")), _lines(corpus), gz=gz)
    write_text(fs.join(root, "queries.jsonl"), _lines(queries))
    write_text(fs.join(root, "qrels", f"{split}.tsv"), qrels)
    return root


def rows(tables) -> list:
    out = []
    for t in tables:
        out.extend(t.to_pylist())
    return out


# ---- BEIR happy path ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_beir_corpus(tmp_path, gz):
    root = write_beir(str(tmp_path), gz=gz)
    tables = list(readers.iter_beir_corpus(root, file_idx_base=3, block_rows=3))
    assert [t.num_rows for t in tables] == [3, 1]
    assert all(t.schema.equals(CORPUS_SCHEMA) for t in tables)
    docs = rows(tables)
    url = fs.join(root, "corpus.jsonl.gz" if gz else "corpus.jsonl")
    assert [d["doc_id"] for d in docs] == ["d1", "d2", "d3", "4"]
    assert [d["title"] for d in docs] == ["Paris", "", "Rome", ""]
    assert [d["row"] for d in docs] == [0, 1, 2, 3]
    assert {d["file_idx"] for d in docs} == {3}
    assert docs[0]["location"] == f"{url}:1" and docs[3]["location"] == f"{url}:4"
    assert docs[0]["text_key"] == text_key("Paris Paris is the capital of France.")
    assert docs[1]["text_key"] == text_key("Berlin is the capital of Germany.")


def test_document_text():
    assert document_text("T", "body") == "T body"
    assert document_text("", "body") == "body"
    assert document_text(None, "body") == "body"


def test_beir_queries_multi_positive_and_score_zero(tmp_path):
    root = write_beir(str(tmp_path))
    quarantine = Quarantine()
    tables = list(readers.iter_beir_queries(root, "train", block_rows=2, quarantine=quarantine))
    assert all(t.schema.equals(QUERY_SCHEMA) for t in tables)
    qs = rows(tables)
    qrels = fs.join(root, "qrels", "train.tsv")
    assert [q["query_id"] for q in qs] == ["q1", "q2", "q4"]  # q3 has only a score-0 line: not a query to mine
    # ... and is accounted for: quarantined (lenient) with its reason, or an error naming its line (strict)
    [record] = quarantine.records
    assert record["kind"] == "query" and record["location"] == f"{fs.join(root, 'queries.jsonl')}:3"
    assert "no positive" in record["reason"] and f"{qrels}:6" in record["reason"]
    with pytest.raises(InputError, match=r"queries.jsonl:3: query 'q3' has no positive"):
        list(readers.iter_beir_queries(root, "train"))
    assert qs[0]["positive_ids"] == ["d1", "d3"]                # first-appearance order, duplicate line dropped
    assert qs[0]["positive_locations"] == [f"{qrels}:2", f"{qrels}:4"]
    assert qs[2]["positive_ids"] == ["4"]
    assert qs[1]["location"] == f"{fs.join(root, 'queries.jsonl')}:2"
    assert qs[0]["query"] == "capital of France?"


def test_beir_qrels_without_header_and_max_queries(tmp_path):
    root = write_beir(str(tmp_path), qrels="q1\td1\t1\nq2\td2\t1\n\nq4\t4\t1\n")
    assert [q["query_id"] for q in rows(readers.iter_beir_queries(root))] == ["q1", "q2", "q4"]
    assert [q["query_id"] for q in rows(readers.iter_beir_queries(root, max_queries=2))] == ["q1", "q2"]
    assert rows(readers.iter_beir_queries(root, max_queries=0)) == []


def test_beir_missing_files(tmp_path):
    with pytest.raises(InputError, match="corpus.jsonl") as e:
        list(readers.iter_beir_corpus(str(tmp_path)))
    assert e.value.location == str(tmp_path)
    write_beir(str(tmp_path))
    with pytest.raises(InputError, match="qrels/dev.tsv"):
        list(readers.iter_beir_queries(str(tmp_path), split="dev"))


# ---- BEIR bad input: strict ---------------------------------------------------------------------------------

GOOD_DOC = {"_id": "ok", "text": "fine"}
BAD_CORPUS_LINES = [
    ('{"_id": "x", "text": ', "malformed JSON"),
    ('["_id", "x"]', "expected a JSON object, got a list"),
    ({"text": "no id"}, "missing required field '_id'"),
    ({"_id": "x"}, "missing required field 'text'"),
    ({"_id": "x", "title": " ", "text": "  \t"}, "empty document"),
    ({"_id": "x", "text": 5}, "field 'text' must be a string, got a number"),
    ({"_id": ["x"], "text": "t"}, "field '_id' must be a string, got a list"),
    ({"_id": "x", "title": 3, "text": "t"}, "field 'title' must be a string"),
    ({"_id": None, "text": "t"}, "field '_id' is null"),
    ({"_id": "  ", "text": "t"}, "field '_id' is empty"),
]


@pytest.mark.parametrize("bad,reason", BAD_CORPUS_LINES)
def test_beir_corpus_strict_errors_name_file_and_line(tmp_path, bad, reason):
    root = write_beir(str(tmp_path), corpus=[GOOD_DOC, GOOD_DOC, bad, GOOD_DOC])
    with pytest.raises(InputError) as e:
        list(readers.iter_beir_corpus(root))
    assert e.value.location == f"{fs.join(root, 'corpus.jsonl')}:3"
    assert reason in e.value.reason
    assert f"{fs.join(root, 'corpus.jsonl')}:3" in str(e.value)


def test_beir_corpus_invalid_utf8(tmp_path):
    root = str(tmp_path)
    write_text(fs.join(root, "corpus.jsonl"), b'{"_id": "a", "text": "t"}\n{"_id": "b", "text": "\xff"}\n')
    with pytest.raises(InputError, match=r"corpus.jsonl:2: not valid UTF-8"):
        list(readers.iter_beir_corpus(root))


def test_beir_corpus_lenient_quarantines_and_goes_on(tmp_path):
    corpus = [GOOD_DOC] + [b for b, _ in BAD_CORPUS_LINES] + [{"_id": "last", "text": "end"}]
    root = write_beir(str(tmp_path), corpus=corpus)
    q = Quarantine()
    docs = rows(readers.iter_beir_corpus(root, quarantine=q))
    assert [d["doc_id"] for d in docs] == ["ok", "last"]
    assert docs[1]["row"] == len(corpus) - 1  # rows count every line, bad ones included
    assert len(q) == len(BAD_CORPUS_LINES)
    url = fs.join(root, "corpus.jsonl")
    for i, (record, (_bad, reason)) in enumerate(zip(q.records, BAD_CORPUS_LINES)):
        assert record["kind"] == "corpus"
        assert record["location"] == f"{url}:{i + 2}"
        assert reason in record["reason"]
        assert len(record["raw"]) <= 300


BAD_QUERY_LINES = [
    ("{not json", "malformed JSON"),
    ({"text": "no id"}, "missing required field '_id'"),
    ({"_id": "qx"}, "missing required field 'text'"),
    ({"_id": "qx", "text": "   "}, "empty query text"),
    ({"_id": "qx", "text": ["a"]}, "field 'text' must be a string, got a list"),
    ({"_id": "q1", "text": "again"}, "duplicate query id 'q1'"),
]


@pytest.mark.parametrize("bad,reason", BAD_QUERY_LINES)
def test_beir_queries_strict_errors(tmp_path, bad, reason):
    root = write_beir(str(tmp_path), queries=QUERIES[:2] + [bad] + QUERIES[2:])
    with pytest.raises(InputError) as e:
        list(readers.iter_beir_queries(root))
    assert e.value.location == f"{fs.join(root, 'queries.jsonl')}:3"
    assert reason in e.value.reason
    if "duplicate" in reason:
        assert f"{fs.join(root, 'queries.jsonl')}:1" in e.value.reason  # where it first appeared


BAD_QRELS_LINES = [
    ("q1\td1", "expected 3 tab-separated columns"),
    ("q1\td1\t1\textra", "got 4"),
    ("q1\td1\thigh", "score 'high' is not a number"),
    ("q1\td1\tnan", "is not a number"),
    ("\td1\t1", "empty query-id"),
    ("q1\t\t1", "empty corpus-id"),
]


@pytest.mark.parametrize("bad,reason", BAD_QRELS_LINES)
def test_beir_qrels_strict_errors(tmp_path, bad, reason):
    root = write_beir(str(tmp_path), qrels=f"query-id\tcorpus-id\tscore\nq1\td1\t1\n{bad}\nq2\td2\t1\n")
    with pytest.raises(InputError) as e:
        list(readers.iter_beir_queries(root))
    assert e.value.location == f"{fs.join(root, 'qrels', 'train.tsv')}:3"
    assert reason in e.value.reason


def test_beir_qrels_query_absent_from_queries_names_the_qrels_line(tmp_path):
    root = write_beir(str(tmp_path), qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nghost\td2\t1\nghost\td1\t1\n")
    with pytest.raises(InputError) as e:
        list(readers.iter_beir_queries(root))
    assert e.value.location == f"{fs.join(root, 'qrels', 'train.tsv')}:3"
    assert "'ghost'" in e.value.reason and "queries.jsonl" in e.value.reason


def test_beir_queries_lenient(tmp_path):
    queries = QUERIES[:2] + [b for b, _ in BAD_QUERY_LINES] + QUERIES[2:]
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\n" + "".join(b + "\n" for b, _ in BAD_QRELS_LINES) + \
        "q2\td2\t1\nq4\t4\t1\nghost\td1\t1\nqx\td1\t1\n"
    root = write_beir(str(tmp_path), queries=queries, qrels=qrels)
    q = Quarantine()
    qs = rows(readers.iter_beir_queries(root, quarantine=q))
    # qx appears in queries.jsonl (with bad text), so it is quarantined as a query, not as a missing qrels query
    assert [x["query_id"] for x in qs] == ["q1", "q2", "q4"]
    assert q.counts() == {"qrels": len(BAD_QRELS_LINES) + 1, "query": len(BAD_QUERY_LINES)}
    qrels_url, queries_url = fs.join(root, "qrels", "train.tsv"), fs.join(root, "queries.jsonl")
    by_loc = {r["location"]: r for r in q.records}
    for i, (_bad, reason) in enumerate(BAD_QUERY_LINES):
        assert reason in by_loc[f"{queries_url}:{i + 3}"]["reason"]
    for i, (_bad, reason) in enumerate(BAD_QRELS_LINES):
        assert reason in by_loc[f"{qrels_url}:{i + 3}"]["reason"]
    ghost_line = 3 + len(BAD_QRELS_LINES) + 2
    assert "'ghost'" in by_loc[f"{qrels_url}:{ghost_line}"]["reason"]


# ---- quarantine files ---------------------------------------------------------------------------------------

def test_quarantine_parts_round_trip(tmp_path):
    out = str(tmp_path / "_quarantine")
    assert Quarantine().write(out) is None and not fs.exists(out)  # nothing to write: no part
    assert count_quarantine(out) == {}
    a, b = Quarantine(), Quarantine()
    a.add("corpus", "c.jsonl:1", "bad", "x" * 1000)
    a.add("query", "q.jsonl:2", "bad", {"k": 1})
    b.add(kind="corpus", location="c.jsonl:9", reason="bad", raw="")
    url_a, url_b = a.write(out), b.write(out)
    assert url_a != url_b and len(a) == 0  # written records are cleared
    assert count_quarantine(out) == {"corpus": 2, "query": 1}
    records = list(read_quarantine(out))
    assert len(records) == 3 and max(len(r["raw"]) for r in records) == 300
    assert {"kind", "location", "reason", "raw"} == set(records[0])


# ---- tables -------------------------------------------------------------------------------------------------

def test_iter_table_rows_parquet_and_jsonl_directory(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    pq.write_table(pa.table({"_id": ["p0", "p1", "p2"], "text": ["a", "b", "c"]}), d / "a.parquet", row_group_size=2)
    write_text(str(d / "b.jsonl.gz"), _lines([{"_id": "j0", "text": "x"}, "{oops", {"_id": "j2", "text": "z"}]),
               gz=True)
    with pytest.raises(InputError, match=r"b\.jsonl\.gz:2: malformed JSON"):
        list(readers.iter_table_rows(str(d)))
    q = Quarantine()
    got = list(readers.iter_table_rows(str(d), quarantine=q, kind="corpus"))
    assert [loc for loc, _ in got] == [f"{d}/a.parquet:row 0", f"{d}/a.parquet:row 1", f"{d}/a.parquet:row 2",
                                       f"{d}/b.jsonl.gz:1", f"{d}/b.jsonl.gz:3"]
    assert got[2][1] == {"_id": "p2", "text": "c"}
    assert q.records[0]["location"] == f"{d}/b.jsonl.gz:2" and q.records[0]["kind"] == "corpus"
    with pytest.raises(InputError, match="not found"):
        list(readers.iter_table_rows(str(tmp_path / "missing")))
    write_text(str(tmp_path / "x.csv"), "a,b\n")
    with pytest.raises(InputError, match="unsupported table format"):
        list(readers.iter_table_rows(str(tmp_path / "x.csv")))


def test_corpus_table_columns_and_content_ids(tmp_path):
    url = str(tmp_path / "c.parquet")
    pq.write_table(pa.table({"pid": ["a", "b"], "body": ["one", "two"], "head": ["T", None]}), url)
    cols = ColumnsConfig(doc_id="pid", text="body", title="head")
    docs = rows(readers.iter_corpus_table(url, cols, file_idx_base=2))
    assert [(d["doc_id"], d["title"], d["text"], d["file_idx"], d["row"]) for d in docs] == \
        [("a", "T", "one", 2, 0), ("b", "", "two", 2, 1)]
    assert docs[1]["location"] == f"{url}:row 1"
    # no id column (configured None, or absent from the table): content hash of the document text
    for c in (ColumnsConfig(doc_id=None, text="body", title="head"), ColumnsConfig(doc_id="_id", text="body",
                                                                                   title="head")):
        ids = [d["doc_id"] for d in rows(readers.iter_corpus_table(url, c))]
        assert ids == [content_id("T one"), content_id("two")]


def test_corpus_table_errors(tmp_path):
    url = str(tmp_path / "c.jsonl")
    write_text(url, _lines([{"_id": "a", "text": "x"}, {"text": "no id in a file with ids"},
                            {"_id": "c", "text": None}, {"_id": "d", "text": "ok"}]))
    with pytest.raises(InputError) as e:
        list(readers.iter_corpus_table(url))
    assert e.value.location == f"{url}:2" and "missing required field '_id'" in e.value.reason
    q = Quarantine()
    assert [d["doc_id"] for d in rows(readers.iter_corpus_table(url, quarantine=q))] == ["a", "d"]
    assert [r["location"] for r in q.records] == [f"{url}:2", f"{url}:3"]
    assert "field 'text' is null" in q.records[1]["reason"]
    purl = str(tmp_path / "c.parquet")
    pq.write_table(pa.table({"_id": ["a", None], "text": ["x", "y"]}), purl)
    with pytest.raises(InputError, match=r"c\.parquet:row 1: field '_id' is null"):
        list(readers.iter_corpus_table(purl))


# ---- pairs --------------------------------------------------------------------------------------------------

Q_FR, P_FR = "What is the capital of France?", "Paris is the capital of France."
PAIRS = [
    {"anchor": Q_FR, "positive": P_FR},
    {"anchor": "Who wrote Hamlet?", "positive": "Shakespeare wrote Hamlet."},
    {"anchor": Q_FR, "positive": "The French capital is Paris."},
    {"anchor": Q_FR, "positive": P_FR},                             # same pair again: deduplicated
    {"anchor": "Largest planet?", "positive": ["Jupiter.", "Jupiter is the largest planet."]},
    {"anchor": "Another question about Paris", "positive": P_FR},  # a positive shared across queries
]


def test_content_ids_are_stable():
    # literal values: ids must not depend on the process, the platform or PYTHONHASHSEED
    assert content_id(Q_FR) == "6c3396ab0ec485bb"
    assert content_id(P_FR) == "cedecad809fc3bd8"
    assert text_key(P_FR) == 509903588993610976


def test_pairs_with_text_positives(tmp_path):
    url = str(tmp_path / "pairs.jsonl")
    write_text(url, _lines(PAIRS))
    qs = rows(readers.iter_pairs_queries(url, ColumnsConfig()))
    assert [q["query_id"] for q in qs] == [content_id(Q_FR), content_id("Who wrote Hamlet?"),
                                           content_id("Largest planet?"), content_id("Another question about Paris")]
    assert qs[0]["query"] == Q_FR
    assert qs[0]["positive_ids"] == [content_id(P_FR), content_id("The French capital is Paris.")]
    assert qs[0]["positive_locations"] == [f"{url}:1", f"{url}:3"]
    assert qs[0]["location"] == f"{url}:1"
    assert qs[2]["positive_ids"] == [content_id("Jupiter."), content_id("Jupiter is the largest planet.")]
    docs = rows(readers.iter_pairs_corpus(url, ColumnsConfig(), file_idx_base=5))
    texts = [P_FR, "Shakespeare wrote Hamlet.", "The French capital is Paris.", "Jupiter.",
             "Jupiter is the largest planet."]
    assert [d["text"] for d in docs] == texts  # each positive text once
    assert [d["doc_id"] for d in docs] == [content_id(t) for t in texts]
    assert [(d["file_idx"], d["row"]) for d in docs] == [(5, i) for i in range(5)]  # unique (file_idx, row)
    assert docs[3]["location"] == f"{url}:5" and all(d["title"] == "" for d in docs)
    assert readers.iter_pairs_queries is not None and len(rows(readers.iter_pairs_queries(url, max_queries=2))) == 2


def test_pairs_text_positives_with_a_corpus_table(tmp_path):
    url = str(tmp_path / "pairs.parquet")
    pq.write_table(pa.Table.from_pylist(PAIRS[:3]), url)
    corpus = str(tmp_path / "corpus.jsonl")
    write_text(corpus, _lines([{"text": "Berlin is in Germany."}, {"text": P_FR}]))  # no ids: content hashes
    docs = rows(readers.iter_pairs_corpus(url, ColumnsConfig(), corpus_url=corpus))
    assert [d["text"] for d in docs] == [P_FR, "Shakespeare wrote Hamlet.", "The French capital is Paris.",
                                         "Berlin is in Germany."]  # P_FR from the corpus is the same document
    assert docs[-1]["file_idx"] == 1 and docs[-1]["location"] == f"{corpus}:1"
    assert len({d["doc_id"] for d in docs}) == len(docs)


def test_pairs_with_id_positives(tmp_path):
    url = str(tmp_path / "pairs.jsonl")
    write_text(url, _lines([{"qid": "a", "q": "first?", "pid": "d1"}, {"qid": "b", "q": "second?", "pid": 7},
                            {"qid": "a", "q": "first?", "pid": ["d2", "d1"]}]))
    corpus = str(tmp_path / "corpus")
    (tmp_path / "corpus").mkdir()
    pq.write_table(pa.table({"_id": ["d1", "d2"], "text": ["one", "two"]}), f"{corpus}/0.parquet")
    pq.write_table(pa.table({"_id": ["7"], "text": ["seven"]}), f"{corpus}/1.parquet")
    cols = ColumnsConfig(query_id="qid", query="q", positive_id="pid")
    qs = rows(readers.iter_pairs_queries(url, cols, corpus_url=corpus))
    assert [(q["query_id"], q["positive_ids"]) for q in qs] == [("a", ["d1", "d2"]), ("b", ["7"])]
    assert qs[0]["positive_locations"] == [f"{url}:1", f"{url}:3"]
    docs = rows(readers.iter_pairs_corpus(url, cols, corpus_url=corpus))
    assert [(d["doc_id"], d["file_idx"], d["row"]) for d in docs] == [("d1", 1, 0), ("d2", 1, 1), ("7", 2, 0)]
    with pytest.raises(ConfigError, match="corpus"):
        list(readers.iter_pairs_queries(url, cols))


def test_pairs_bad_rows_strict_and_lenient(tmp_path):
    url = str(tmp_path / "pairs.jsonl")
    bad = [({"positive": "p"}, "missing required field 'anchor'"),
           ({"anchor": "  ", "positive": "p"}, "empty query text"),
           ({"anchor": "q"}, "missing required field 'positive'"),
           ({"anchor": "q", "positive": ""}, "empty positive text"),
           ({"anchor": "q", "positive": 3}, "must be a string"),
           ({"anchor": "q", "positive": []}, "empty list"),
           ("{broken", "malformed JSON")]
    write_text(url, _lines([PAIRS[0]] + [b for b, _ in bad] + [PAIRS[1]]))
    with pytest.raises(InputError) as e:
        list(readers.iter_pairs_queries(url))
    assert e.value.location == f"{url}:2" and bad[0][1] in e.value.reason
    with pytest.raises(InputError):
        list(readers.iter_pairs_corpus(url))
    q = Quarantine()
    assert len(rows(readers.iter_pairs_queries(url, quarantine=q))) == 2
    assert [r["location"] for r in q.records] == [f"{url}:{i + 2}" for i in range(len(bad))]
    assert all(reason in r["reason"] for r, (_b, reason) in zip(q.records, bad))
    assert q.counts() == {"pairs": len(bad)}
    q2 = Quarantine()  # the corpus reader reads the same rows: it must not count them a second time
    assert len(rows(readers.iter_pairs_corpus(url, quarantine=q2))) == 2 and len(q2) == 0


def test_pairs_query_id_with_two_texts(tmp_path):
    url = str(tmp_path / "pairs.jsonl")
    write_text(url, _lines([{"qid": "a", "anchor": "x?", "positive": "p"},
                            {"qid": "a", "anchor": "y?", "positive": "r"}]))
    with pytest.raises(InputError) as e:
        list(readers.iter_pairs_queries(url, ColumnsConfig(query_id="qid")))
    assert e.value.location == f"{url}:2" and f"{url}:1" in e.value.reason


# ---- precomputed vectors ------------------------------------------------------------------------------------

def _vec_parquet(path, ids, vectors, fixed=None):
    typ = pa.list_(pa.float32(), fixed) if fixed else pa.list_(pa.float32())
    pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "vector": pa.array(vectors, typ)}), path)
    return str(path)


def _collect(it):
    ids, vecs, locs = [], [], []
    for i, v, l in it:
        assert v.dtype == np.float32 and v.ndim == 2 and len(i) == len(v) == len(l)
        ids += i
        vecs.append(v)
        locs += l
    return ids, np.concatenate(vecs), locs


@pytest.mark.parametrize("fixed", [None, 3])
def test_vectors_parquet(tmp_path, fixed):
    vectors = np.arange(15, dtype=np.float32).reshape(5, 3)
    url = _vec_parquet(tmp_path / "v.parquet", list("abcde"), vectors.tolist(), fixed)
    ids, got, locs = _collect(readers.iter_vectors(url, dim=3, block_rows=2))
    assert ids == list("abcde") and np.array_equal(got, vectors) and locs[4] == f"{url}:row 4"


def test_vectors_npy(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float16)
    url = str(tmp_path / "emb.npy")
    np.save(url, vectors)
    ids, got, locs = _collect(readers.iter_vectors(url, block_rows=3))
    assert ids == [str(i) for i in range(7)] and np.array_equal(got, vectors.astype(np.float32))  # no ids file
    write_text(str(tmp_path / "emb.ids.txt"), "".join(f"id{i}\n" for i in range(7)))
    ids, got, locs = _collect(readers.iter_vectors(url, dim=4, block_rows=3))
    assert ids == [f"id{i}" for i in range(7)] and locs[6] == f"{url}:row 6"
    f32 = str(tmp_path / "f.npy")
    np.save(f32, np.asfortranarray(np.arange(6, dtype=np.float32).reshape(3, 2)))
    assert np.array_equal(_collect(readers.iter_vectors(f32))[1], np.arange(6).reshape(3, 2))


def test_vectors_errors(tmp_path):
    def err(url, **kw):
        with pytest.raises(InputError) as e:
            list(readers.iter_vectors(url, **kw))
        return e.value

    ok = _vec_parquet(tmp_path / "ok.parquet", ["a", "b"], [[1, 2], [3, 4]])
    e = err(ok, dim=3)
    assert e.location == f"{ok}:row 0" and "wrong dimension" in e.reason and "dim=3" in e.reason
    ragged = _vec_parquet(tmp_path / "ragged.parquet", ["a", "b", "c"], [[1, 2], [3, 4], [5]])
    e = err(ragged)
    assert e.location == f"{ragged}:row 2" and "ragged" in e.reason
    nan = _vec_parquet(tmp_path / "nan.parquet", ["a", "b"], [[1, 2], [np.nan, 4]])
    assert err(nan).location == f"{nan}:row 1" and "NaN" in err(nan).reason
    inf = _vec_parquet(tmp_path / "inf.parquet", ["a", "b"], [[np.inf, 2], [3, 4]])
    assert err(inf).location == f"{inf}:row 0"
    null = _vec_parquet(tmp_path / "null.parquet", ["a", "b"], [[1, 2], None])
    assert err(null).location == f"{null}:row 1" and "null" in err(null).reason
    nulls_inside = _vec_parquet(tmp_path / "nullv.parquet", ["a", "b"], [[1, 2], [3, None]])
    assert err(nulls_inside).location == f"{nulls_inside}:row 1"
    d = tmp_path / "npy"
    d.mkdir()
    np.save(d / "e.npy", np.ones((3, 2), np.float32))
    write_text(str(d / "e.ids.txt"), "a\nb\n")
    e = err(str(d / "e.npy"))
    assert e.location == f"{d}/e.npy:row 2" and "no id" in e.reason
    write_text(str(d / "e.ids.txt"), "a\nb\nc\nd\n")
    assert err(str(d / "e.npy")).location == f"{d}/e.ids.txt:4"
    write_text(str(d / "e.ids.txt"), "a\n\nc\n")
    assert err(str(d / "e.npy")).location == f"{d}/e.ids.txt:2"
    np.save(d / "bad.npy", np.array([[1.0, np.nan]], np.float32))
    assert err(str(d / "bad.npy")).location == f"{d}/bad.npy:row 0"
    np.save(d / "int.npy", np.ones((2, 2), np.int64))
    assert "float" in err(str(d / "int.npy")).reason
    np.save(d / "flat.npy", np.ones(4, np.float32))
    assert "2-D" in err(str(d / "flat.npy")).reason
    # a directory: files must agree on the dimension
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / "a.npy", np.ones((2, 2), np.float32))
    np.save(mixed / "b.npy", np.ones((2, 3), np.float32))
    assert err(str(mixed)).location == f"{mixed}/b.npy:row 0"


# ---- remote filesystems -------------------------------------------------------------------------------------

def _read_all(root):
    corpus = rows(readers.iter_beir_corpus(root, block_rows=2))
    queries = rows(readers.iter_beir_queries(root, block_rows=2, quarantine=Quarantine()))  # q3: no positive
    strip = lambda rs: [{k: v for k, v in r.items() if "location" not in k} for r in rs]  # noqa: E731
    return strip(corpus), strip(queries), corpus, queries


def test_beir_on_memory_fs_equals_local(tmp_path):
    local = write_beir(str(tmp_path), gz=True)
    mem = write_beir(f"memory://beir-{uuid.uuid4().hex[:8]}", gz=True)
    assert _read_all(mem)[:2] == _read_all(local)[:2]
    assert _read_all(mem)[2][0]["location"] == f"{mem}/corpus.jsonl.gz:1"


def test_beir_s3_round_trip(tmp_path, s3_bucket):
    local = write_beir(str(tmp_path))
    remote = f"s3://{s3_bucket}/datasets/mini"
    for path in fs.list_files(local):  # upload the local directory through our own URL layer
        rel = path[len(local) + 1:]
        with fs.open_url(path, "rb", compression=None) as src, \
                fs.open_url(fs.join(remote, rel), "wb", compression=None) as dst:
            dst.write(src.read())
    got, want = _read_all(remote), _read_all(local)
    assert got[:2] == want[:2] and len(got[0]) == 4 and len(got[1]) == 3
    assert got[3][0]["positive_locations"][0] == f"{remote}/qrels/train.tsv:2"
    # a bad line on S3 is reported with its s3:// location too
    write_text(fs.join(remote, "corpus.jsonl"), _lines([GOOD_DOC, "{bad"]))
    with pytest.raises(InputError) as e:
        list(readers.iter_beir_corpus(remote))
    assert e.value.location == f"{remote}/corpus.jsonl:2"
    q = Quarantine()
    list(readers.iter_beir_corpus(remote, quarantine=q))
    q.write(f"s3://{s3_bucket}/out/_quarantine")
    assert count_quarantine(f"s3://{s3_bucket}/out/_quarantine") == {"corpus": 1}
    # parquet vectors on S3
    vurl = f"s3://{s3_bucket}/vec/v.parquet"
    pafs, p = fs.pyarrow_fs(vurl)
    pq.write_table(pa.table({"id": ["a"], "vector": pa.array([[1.0, 2.0]], pa.list_(pa.float32()))}), p,
                   filesystem=pafs)
    ids, vecs, locs = _collect(readers.iter_vectors(vurl))
    assert ids == ["a"] and locs == [f"{vurl}:row 0"]


def test_beir_query_line_after_a_rejected_one_with_the_same_id_is_kept(tmp_path):
    queries = [{"_id": "q1", "text": ""}, {"_id": "q1", "text": "second try"}, {"_id": "q2", "text": "b"}]
    root = write_beir(str(tmp_path), queries=queries, qrels="q1\td1\t1\nq2\td2\t1\n")
    q = Quarantine()
    assert [(x["query_id"], x["query"]) for x in rows(readers.iter_beir_queries(root, quarantine=q))] == \
        [("q1", "second try"), ("q2", "b")]
    assert [r["location"] for r in q.records] == [f"{fs.join(root, 'queries.jsonl')}:1"]


def test_corpus_texts_first_row_of_an_id_wins_and_strict_runs_raise(tmp_path):
    """The id -> text map the exporters and the cross-encoder use: every document as embedded; a repeated id keeps
    its first row (as the index does); a bad row raises in a strict run and is skipped in a lenient one."""
    from streammine.config import InputConfig
    corpus = CORPUS + [{"_id": "d1", "title": "Lyon", "text": "a second row with the id d1"}, "{broken"]
    root = write_beir(str(tmp_path / "beir"), corpus=corpus)
    texts = readers.corpus_texts(InputConfig(path=root, lenient=True))
    assert texts == {"d1": document_text("Paris", "Paris is the capital of France."),
                     "d2": document_text(None, "Berlin is the capital of Germany."),
                     "d3": document_text("Rome", ""), "4": document_text(None, "Madrid is in Spain.")}
    with pytest.raises(InputError, match=r"corpus\.jsonl:6"):
        readers.corpus_texts(InputConfig(path=root))
