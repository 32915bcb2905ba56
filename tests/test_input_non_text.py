"""A null or a number where an input holds text (a query, a positive, a corpus document; in Parquet and JSONL
pairs tables, a corpus table and BEIR files) is a bad row, named by file and row: an InputError in strict mode, a
quarantine record in lenient mode (the other rows read on). It is never turned into the text "None" or "5".

The expected locations are written out by hand from the files the tests write (line numbers 1-based for text
files, rows 0-based for Parquet), not taken from the readers."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streammine
from streammine.config import ColumnsConfig
from streammine.errors import InputError
from streammine.io.formats.beir import iter_beir_corpus, iter_beir_queries
from streammine.io.formats.pairs import iter_pairs_corpus, iter_pairs_queries
from streammine.io.formats.tables import iter_corpus_table
from streammine.io.records import Quarantine

PAIRS = ColumnsConfig(query="anchor", positive="positive")
BAD_VALUES = [(None, "is null"), (7, "must be a string, got a number"), (2.5, "must be a string, got a number")]


def _write_table(path: str, rows: list) -> str:
    if path.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def _texts(tables) -> list:
    return [r.get("query") or r.get("text") for t in tables for r in t.to_pylist()]


def _where(path: str, index: int) -> str:
    return f"{path}:row {index}" if path.endswith(".parquet") else f"{path}:{index + 1}"


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
@pytest.mark.parametrize("column", ["anchor", "positive"])
@pytest.mark.parametrize("bad,reason", BAD_VALUES)
def test_pairs_non_text_cell(tmp_path, suffix, column, bad, reason):
    if suffix == ".parquet" and bad is not None:
        # a Parquet column has one type: a number there makes the whole column numeric (as a dataframe with a
        # numeric column writes it), so every row is bad and the first is reported
        rows = [{"anchor": "q0", "positive": "p0"}, {"anchor": "q1", "positive": "p1"}]
        rows = [dict(r, **{column: bad + i}) for i, r in enumerate(rows)]
        bad_index = 0
    else:
        rows = [{"anchor": "what is a cell", "positive": "a cell is a unit"},
                {"anchor": "what is a gene", "positive": "a gene is a sequence"}]
        rows[1][column] = bad
        bad_index = 1
    path = _write_table(str(tmp_path / f"pairs{suffix}"), rows)
    expected = f"{_where(path, bad_index)}: field '{column}' {reason}"
    for reader in (iter_pairs_queries, iter_pairs_corpus):
        with pytest.raises(InputError) as e:
            list(reader(path, PAIRS))
        assert str(e.value) == expected
    q = Quarantine()
    texts = _texts(iter_pairs_queries(path, PAIRS, quarantine=q)) + _texts(iter_pairs_corpus(path, PAIRS,
                                                                                             quarantine=q))
    assert [r["location"] for r in q.records][:1] == [_where(path, bad_index)]
    assert q.records[0]["reason"] == f"field '{column}' {reason}"
    assert str(bad) not in texts and "None" not in texts
    if bad_index == 1:  # the good row is kept
        assert "what is a cell" in texts and "a cell is a unit" in texts


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
@pytest.mark.parametrize("bad,reason", BAD_VALUES[:2])
def test_corpus_table_non_text(tmp_path, suffix, bad, reason):
    if suffix == ".parquet" and bad is not None:
        rows = [{"_id": "d0", "text": 10}, {"_id": "d1", "text": 11}]
        bad_index = 0
    else:
        rows = [{"_id": "d0", "text": "a document"}, {"_id": "d1", "text": bad}]
        bad_index = 1
    path = _write_table(str(tmp_path / f"corpus{suffix}"), rows)
    cols = ColumnsConfig(doc_id="_id")
    with pytest.raises(InputError) as e:
        list(iter_corpus_table(path, cols))
    assert str(e.value) == f"{_where(path, bad_index)}: field 'text' {reason}"
    q = Quarantine()
    texts = _texts(iter_corpus_table(path, cols, quarantine=q))
    assert q.records[0]["location"] == _where(path, bad_index)
    assert str(bad) not in texts and "None" not in texts


@pytest.mark.parametrize("bad,reason", BAD_VALUES)
@pytest.mark.parametrize("field", ["text", "title"])
def test_beir_non_text(tmp_path, bad, reason, field):
    if field == "title" and bad is None:
        pytest.skip("a null title is no title (BEIR titles are optional)")
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    doc = {"_id": "d1", "title": "t", "text": "x"}
    doc[field] = bad
    _write_table(str(root / "corpus.jsonl"), [{"_id": "d0", "text": "a document"}, doc])
    _write_table(str(root / "queries.jsonl"), [{"_id": "q0", "text": "fine"}, {"_id": "q1", "text": bad}])
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td0\t1\n")
    with pytest.raises(InputError) as e:
        list(iter_beir_corpus(str(root)))
    assert str(e.value) == f"{root}/corpus.jsonl:2: field '{field}' {reason}"
    with pytest.raises(InputError) as e:
        list(iter_beir_queries(str(root)))
    assert str(e.value) == f"{root}/queries.jsonl:2: field 'text' {reason}"
    q = Quarantine()
    texts = _texts(iter_beir_corpus(str(root), quarantine=q)) + _texts(iter_beir_queries(str(root), quarantine=q))
    assert sorted(r["location"] for r in q.records) == [f"{root}/corpus.jsonl:2", f"{root}/queries.jsonl:2"]
    assert texts == ["a document", "fine"]


def test_mine_refuses_a_number_in_a_pairs_parquet_before_encoding(tmp_path):
    """From Python, the read pass before Ray names the row (strict mode)."""
    path = _write_table(str(tmp_path / "pairs.parquet"),
                        [{"anchor": "what is a cell", "positive": "a cell is a unit"},
                         {"anchor": "what is a gene", "positive": None}])
    with pytest.raises(streammine.InputError) as e:
        streammine.mine(input__format="pairs", input__path=path, output__path=str(tmp_path / "out"),
                        run__progress=False)
    assert str(e.value) == f"{path}:row 1: field 'positive' is null"
