"""Exporters: a hand-built mined output (two parts) -> each trainer format, checked against expectations written
out independently here (not derived from the exporter's own logic)."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streammine.errors import StreamMineError
from streammine.sink.exporters import (FORMATS, MissingTextError, export_flagembedding, export_st_labeled_list,
                                       export_st_labeled_pair, export_st_ntuple, export_st_triplet, resolve_parts)
from streammine.sink.schema import MINED_SCHEMA

TEXTS = {f"d{i}": f"document {i} text" for i in range(1, 20)}

# (query_id, query, positive_ids, negative_ids); parts as the miner would write them
PART_0 = [("q1", "query one", ["d1", "d2"], ["d5", "d6", "d7"]),
          ("q2", "query two", ["d3"], ["d8", "d9"])]                 # short: 2 of 3 negatives
PART_1 = [("q3", "query three", ["d4"], ["d10", "d11", "d12"]),
          ("q4", "query four", ["d13"], []),                         # no negatives at all
          ("q5", "query five", [], ["d14", "d15", "d16"])]           # no positive


def ce_score(doc_id: str) -> float:
    """A stand-in teacher score per document: distinct, exact in float32."""
    return int(doc_id[1:]) / 8 - 1.0


def bi_score(doc_id: str) -> float:
    return 1.0 - int(doc_id[1:]) / 32


def mined_table(rows, with_ce: bool = False) -> pa.Table:
    """A MINED_SCHEMA table; columns the exporters do not read get plausible filler. Scores are per document
    (``bi_score``, and ``ce_score`` with ``with_ce``), so an export's scores can be checked by its texts."""
    def column(name):
        if name in ("query_id", "query", "positive_ids", "negative_ids"):
            return [r[("query_id", "query", "positive_ids", "negative_ids").index(name)] for r in rows]
        if name in ("positive_ce_scores", "negative_ce_scores"):
            ids = 2 if name.startswith("positive") else 3
            return [[ce_score(d) for d in r[ids]] if with_ce else None for r in rows]
        if name == "positive_scores":
            return [[bi_score(d) for d in r[2]] for r in rows]
        if name == "positive_ref":
            return [0.8 if r[2] else math.nan for r in rows]
        if name == "negative_scores":
            return [[bi_score(d) for d in r[3]] for r in rows]
        if name == "negative_ranks":
            return [list(range(len(r[3]))) for r in rows]
        if name in ("removed_ids", "removed_scores"):
            return [[] for _ in rows]
        if name == "short":
            return [len(r[3]) < 3 for r in rows]
        if name in ("model", "model_version", "config_hash"):
            return ["m" for _ in rows]
        if name in ("positive_grades", "supplied_negative_ids", "prompt"):  # supplied labels: none here
            return [None for _ in rows]
        return [0 for _ in rows]  # the n_* counters
    return pa.table({f.name: pa.array(column(f.name), f.type) for f in MINED_SCHEMA}, schema=MINED_SCHEMA)


@pytest.fixture
def mined_dir(tmp_path):
    out = tmp_path / "mined"
    out.mkdir()
    pq.write_table(mined_table(PART_0), out / "part-00000-a.parquet")
    pq.write_table(mined_table(PART_1), out / "part-00001-b.parquet")
    (out / "_work").mkdir()  # the embedding store lives here too: its parquet must not be read as mined rows
    pq.write_table(pa.table({"x": [1]}), out / "_work" / "vectors.parquet")
    return out


def t(doc_id):
    return TEXTS[doc_id]


def rows_of(path) -> list:
    table = pq.read_table(path)
    return [tuple(r.values()) for r in table.to_pylist()]


def test_resolve_parts_reads_only_top_level_parts(mined_dir):
    assert [p.rsplit("/", 1)[-1] for p in resolve_parts(str(mined_dir))] == ["part-00000-a.parquet",
                                                                               "part-00001-b.parquet"]
    assert resolve_parts([str(mined_dir / "part-00001-b.parquet")]) == [str(mined_dir / "part-00001-b.parquet")]


def test_resolve_parts_prefers_the_manifest(mined_dir):
    (mined_dir / "_parts.json").write_text(json.dumps({"parts": [{"part": "part-00001-b.parquet", "rows": 3}]}))
    assert [p.rsplit("/", 1)[-1] for p in resolve_parts(str(mined_dir))] == ["part-00001-b.parquet"]


def test_st_triplet(mined_dir, tmp_path):
    out = tmp_path / "triplet.parquet"
    counts = export_st_triplet(str(mined_dir), TEXTS, str(out))
    expected = [("query one", t("d1"), t("d5")), ("query one", t("d1"), t("d6")), ("query one", t("d1"), t("d7")),
                ("query one", t("d2"), t("d5")), ("query one", t("d2"), t("d6")), ("query one", t("d2"), t("d7")),
                ("query two", t("d3"), t("d8")), ("query two", t("d3"), t("d9")),
                ("query three", t("d4"), t("d10")), ("query three", t("d4"), t("d11")),
                ("query three", t("d4"), t("d12"))]
    assert rows_of(out) == expected
    # MultipleNegativesRankingLoss takes (anchor, positive, negative) by position; no label/score column
    assert pq.read_schema(out).names == ["anchor", "positive", "negative"]
    assert counts["rows_written"] == 11 and counts["queries_read"] == 5 and counts["queries_written"] == 3
    assert counts["queries_skipped"] == {"no_negatives": 1, "no_positive": 1}
    assert counts["queries_skipped_total"] == 2


def test_st_ntuple_width_from_output_skips_short_queries(mined_dir, tmp_path):
    out = tmp_path / "ntuple.parquet"
    counts = export_st_ntuple([str(p) for p in sorted(mined_dir.glob("part-*.parquet"))], TEXTS, str(out))
    assert pq.read_schema(out).names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert rows_of(out) == [("query one", t("d1"), t("d5"), t("d6"), t("d7")),
                            ("query one", t("d2"), t("d5"), t("d6"), t("d7")),
                            ("query three", t("d4"), t("d10"), t("d11"), t("d12"))]
    assert counts["num_negatives"] == 3 and counts["rows_written"] == 3 and counts["queries_written"] == 2
    assert counts["queries_skipped"] == {"short_of_negatives": 2, "no_positive": 1}  # q2, q4 / q5


def test_st_ntuple_explicit_width_truncates_by_rank(mined_dir, tmp_path):
    out = tmp_path / "ntuple2.parquet"
    counts = export_st_ntuple(str(mined_dir), TEXTS, str(out), num_negatives=2)
    assert rows_of(out) == [("query one", t("d1"), t("d5"), t("d6")),
                            ("query one", t("d2"), t("d5"), t("d6")),
                            ("query two", t("d3"), t("d8"), t("d9")),
                            ("query three", t("d4"), t("d10"), t("d11"))]
    assert counts["queries_skipped"] == {"short_of_negatives": 1, "no_positive": 1}


def test_st_labeled_pair(mined_dir, tmp_path):
    out = tmp_path / "pairs.parquet"
    counts = export_st_labeled_pair(str(mined_dir), TEXTS, str(out))
    expected = [("query one", t("d1"), 1), ("query one", t("d2"), 1),
                ("query one", t("d5"), 0), ("query one", t("d6"), 0), ("query one", t("d7"), 0),
                ("query two", t("d3"), 1), ("query two", t("d8"), 0), ("query two", t("d9"), 0),
                ("query three", t("d4"), 1),
                ("query three", t("d10"), 0), ("query three", t("d11"), 0), ("query three", t("d12"), 0)]
    assert rows_of(out) == expected
    schema = pq.read_schema(out)  # CrossEncoder training reads the integer `label` column
    assert schema.names == ["anchor", "positive", "label"] and schema.field("label").type == pa.int64()
    assert counts["rows_written"] == 12 and counts["queries_written"] == 3
    assert counts["queries_skipped"] == {"no_negatives": 1, "no_positive": 1}


def test_st_labeled_list(mined_dir, tmp_path):
    out = tmp_path / "lists.parquet"
    counts = export_st_labeled_list(str(mined_dir), TEXTS, str(out))
    expected = [("query one", [t("d1"), t("d5"), t("d6"), t("d7")], [1, 0, 0, 0]),
                ("query one", [t("d2"), t("d5"), t("d6"), t("d7")], [1, 0, 0, 0]),
                ("query two", [t("d3"), t("d8"), t("d9")], [1, 0, 0]),                 # rows may differ in length
                ("query three", [t("d4"), t("d10"), t("d11"), t("d12")], [1, 0, 0, 0])]
    assert rows_of(out) == expected
    assert pq.read_schema(out).names == ["anchor", "positive", "labels"]
    assert counts["rows_written"] == 4 and counts["queries_skipped"] == {"no_negatives": 1, "no_positive": 1}


def test_flagembedding(mined_dir, tmp_path):
    out = tmp_path / "fe.jsonl"
    counts = export_flagembedding(str(mined_dir), TEXTS, str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [{"query": "query one", "pos": [t("d1"), t("d2")], "neg": [t("d5"), t("d6"), t("d7")]},
                     {"query": "query two", "pos": [t("d3")], "neg": [t("d8"), t("d9")]},
                     {"query": "query three", "pos": [t("d4")], "neg": [t("d10"), t("d11"), t("d12")]}]
    assert counts["rows_written"] == 3 and counts["queries_skipped"] == {"no_negatives": 1, "no_positive": 1}


@pytest.mark.parametrize("exporter", [export_st_triplet, export_st_ntuple, export_st_labeled_pair,
                                      export_st_labeled_list, export_flagembedding])
def test_missing_text_names_id_and_part_and_leaves_no_file(mined_dir, tmp_path, exporter):
    texts = {k: v for k, v in TEXTS.items() if k != "d11"}
    out = tmp_path / "out.file"
    with pytest.raises(KeyError) as info:
        exporter(str(mined_dir), texts, str(out))
    assert isinstance(info.value, MissingTextError)
    message = str(info.value)
    assert "'d11'" in message and "part-00001-b.parquet" in message and "q3" in message
    assert not out.exists()


def test_empty_output(tmp_path):
    part = tmp_path / "part-00000-x.parquet"
    pq.write_table(mined_table([]), part)
    out = tmp_path / "triplet.parquet"
    assert export_st_triplet([str(part)], TEXTS, str(out))["rows_written"] == 0
    assert pq.read_table(out).num_rows == 0 and pq.read_schema(out).names == ["anchor", "positive", "negative"]
    with pytest.raises(ValueError, match="no query in the output has any negative"):
        export_st_ntuple([str(part)], TEXTS, str(tmp_path / "n.parquet"))


def test_gzip_jsonl_by_suffix(mined_dir, tmp_path):
    import gzip
    out = tmp_path / "fe.jsonl.gz"
    export_flagembedding(str(mined_dir), TEXTS, str(out))
    assert len(gzip.open(out, "rt").read().splitlines()) == 3


def test_s3_output(mined_dir, s3_bucket):
    import fsspec
    url = f"s3://{s3_bucket}/export/triplet.parquet"
    counts = export_st_triplet(str(mined_dir), TEXTS, url)
    with fsspec.open(url, "rb", client_kwargs={"endpoint_url": __import__("os").environ["AWS_ENDPOINT_URL"]}) as f:
        assert pq.read_table(f).num_rows == counts["rows_written"] == 11


# ---- scores ----------------------------------------------------------------------------------------------------

ID_OF = {text: doc_id for doc_id, text in TEXTS.items()}


@pytest.fixture
def mined_ce_dir(tmp_path):
    out = tmp_path / "mined-ce"
    out.mkdir()
    pq.write_table(mined_table(PART_0, with_ce=True), out / "part-00000-a.parquet")
    pq.write_table(mined_table(PART_1, with_ce=True), out / "part-00001-b.parquet")
    return out


@pytest.mark.parametrize("source,score", [("cross-encoder", ce_score), ("bi-encoder", bi_score)])
def test_st_exports_carry_scores_aligned_with_texts(mined_ce_dir, tmp_path, source, score):
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    out = tmp_path / "triplet.parquet"
    counts = export_st_triplet(str(mined_ce_dir), TEXTS, str(out), scores=source)
    table = pq.read_table(out)
    assert table.column_names == ["anchor", "positive", "negative", "scores"] and counts["scores"] == source
    rows = table.to_pylist()
    export_st_triplet(str(mined_ce_dir), TEXTS, str(tmp_path / "plain.parquet"))
    # the same rows as without scores (test_st_triplet checks those), one more column
    assert [(r["anchor"], r["positive"], r["negative"]) for r in rows] == rows_of(tmp_path / "plain.parquet")
    assert len(rows) == 11
    for r in rows:  # each score is the one of the text beside it
        assert r["scores"] == [f32(score(ID_OF[r["positive"]])), f32(score(ID_OF[r["negative"]]))]
    out = tmp_path / "ntuple.parquet"
    export_st_ntuple(str(mined_ce_dir), TEXTS, str(out), num_negatives=2, scores=source)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 4
    for r in rows:
        texts = [r["positive"], r["negative_1"], r["negative_2"]]
        assert r["scores"] == [f32(score(ID_OF[t])) for t in texts]
    # labeled-pair: a float `score` column in place of `label` (the peer's output_scores=True); labeled-list: `scores`
    out = tmp_path / "pairs.parquet"
    export_st_labeled_pair(str(mined_ce_dir), TEXTS, str(out), scores=source)
    pairs = pq.read_table(out)
    assert pairs.column_names == ["anchor", "positive", "score"] and pairs.num_rows == 12
    for r in pairs.to_pylist():
        assert r["score"] == f32(score(ID_OF[r["positive"]]))
    out = tmp_path / "lists.parquet"
    export_st_labeled_list(str(mined_ce_dir), TEXTS, str(out), scores=source)
    lists = pq.read_table(out)
    assert lists.column_names == ["anchor", "positive", "scores"] and lists.num_rows == 4
    for r in lists.to_pylist():
        assert r["scores"] == [f32(score(ID_OF[t])) for t in r["positive"]]


def test_flagembedding_scores_and_prompt(mined_ce_dir, tmp_path):
    out = tmp_path / "fe.jsonl"
    export_flagembedding(str(mined_ce_dir), TEXTS, str(out), scores="cross-encoder", prompt="query: ")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["query"] for line in lines] == ["query one", "query two", "query three"]
    for line in lines:
        assert line["prompt"] == "query: "
        assert line["pos_scores"] == [float(np.float32(ce_score(ID_OF[t]))) for t in line["pos"]]
        assert line["neg_scores"] == [float(np.float32(ce_score(ID_OF[t]))) for t in line["neg"]]
    plain = tmp_path / "plain.jsonl"
    export_flagembedding(str(mined_ce_dir), TEXTS, str(plain))
    assert set(json.loads(plain.read_text().splitlines()[0])) == {"query", "pos", "neg"}


def test_cross_encoder_scores_asked_of_an_output_without_them(mined_dir, tmp_path):
    with pytest.raises(StreamMineError, match="positive_ce_scores.*cross-encoder"):
        export_flagembedding(str(mined_dir), TEXTS, str(tmp_path / "fe.jsonl"), scores="cross-encoder")
    assert not (tmp_path / "fe.jsonl").exists()


def test_registry_names_every_configurable_format_and_its_file():
    from streammine.registries import names
    assert names("output.export") == tuple(FORMATS)  # config validation and the CLI read this registry
    assert {name: f.file for name, f in FORMATS.items()} == {
        "st-triplet": "st-triplet.parquet", "st-ntuple": "st-ntuple.parquet",
        "st-labeled-pair": "st-labeled-pair.parquet", "st-labeled-list": "st-labeled-list.parquet",
        "flagembedding": "flagembedding.jsonl"}


def test_a_run_export_reads_only_the_texts_its_output_names(mined_dir, tmp_path, monkeypatch):
    """``write_exports`` (what a run calls) looks up the texts of the documents the output names, positives and
    negatives, from a corpus that holds many more: memory is those texts, not the corpus's."""
    from streammine.api import load_config
    from streammine.io.formats.base import InputFormat
    from streammine.sink.exporters import write_exports
    corpus = tmp_path / "beir"
    (corpus / "qrels").mkdir(parents=True)
    with open(corpus / "corpus.jsonl", "w") as f:
        for i in range(1, 400):  # d1..d19 as TEXTS, then documents no output row names
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": TEXTS.get(f"d{i}", f"unrelated {i}")}) + "\n")
    (corpus / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "query one"}) + "\n")
    (corpus / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (mined_dir / "_parts.json").write_text(json.dumps({"parts": [{"part": "part-00000-a.parquet", "rows": 2},
                                                                 {"part": "part-00001-b.parquet", "rows": 3}]}))
    kept = []
    original = InputFormat.corpus_texts

    def spy(self, lenient=None, only=None):
        texts = original(self, lenient, only)
        kept.append(len(texts))
        return texts
    monkeypatch.setattr(InputFormat, "corpus_texts", spy)
    cfg = load_config(None, {"input.path": str(corpus), "output.export": ["st-triplet", "flagembedding"]})
    results = write_exports(cfg, str(mined_dir))
    named = {d for _, _, pos, neg in PART_0 + PART_1 for d in pos + neg}
    assert kept == [len(named)] and len(named) < 399
    assert rows_of(results["st-triplet"]["path"])[:2] == [("query one", t("d1"), t("d5")),
                                                         ("query one", t("d1"), t("d6"))]
