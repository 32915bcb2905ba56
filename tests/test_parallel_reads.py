"""Parallel reads: the corpus cut into splits (line-aligned byte ranges of JSONL files, runs of Parquet row groups,
whole files) and read by one task or many gives the same records, errors, quarantine, store and mined output.

References are independent: plain ``json`` / ``pyarrow`` over the files, never the readers under test.
"""
from __future__ import annotations

import gzip
import json
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streammine
from streammine.config import MineConfig
from streammine.errors import InputError
from streammine.io import fs
from streammine.io.formats import input_format
from streammine.io.formats.base import group_splits, split_bytes_of
from streammine.io.records import document_text, read_quarantine
from streammine.io.run_input import corpus_read_fns, read_dataset
from streammine.keys import content_id, text_key

from helpers import precomputed_overrides, read_output, write_synthetic_beir

TINY_SPLIT_MB = 0.002  # about 2 KB: the small test files are cut into many splits
RAY_SPLIT_MB = 0.008   # through Ray: fewer, larger splits (each read task costs a worker call)


# ---- inputs -------------------------------------------------------------------------------------------------

def _words(rnd: random.Random, n: int) -> str:
    return " ".join(rnd.choice(["alpha", "beta", "gamma", "delta", "é", "λ"]) for _ in range(n))


def write_beir_corpus(root: str, n: int = 400, bad_line: int = 0) -> str:
    """A BEIR directory whose corpus.jsonl has a BOM, CRLF lines, blank lines, one long line that spans several
    splits, and (``bad_line``) one row with an empty text at that 1-based line."""
    rnd = random.Random(1)
    lines = []
    for i in range(n):
        if i % 41 == 7:
            lines.append("")
            continue
        text = _words(rnd, 4000 if i == 150 else rnd.randint(1, 30))
        lines.append(json.dumps({"_id": f"d{i}", "title": f"title {i}" if i % 3 else "", "text": text},
                                ensure_ascii=False))
    if bad_line:
        lines[bad_line - 1] = json.dumps({"_id": "bad", "text": ""})
    os.makedirs(os.path.join(root, "qrels"), exist_ok=True)
    with open(os.path.join(root, "corpus.jsonl"), "w", encoding="utf-8", newline="") as f:
        f.write("\ufeff" + "\r\n".join(lines[:20]) + "\r\n" + "\n".join(lines[20:]))  # no final newline
    with open(os.path.join(root, "queries.jsonl"), "w") as f:
        f.writelines(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(5))
    with open(os.path.join(root, "qrels", "train.tsv"), "w") as f:
        f.writelines(f"q{i}\td{i * 3}\t1\n" for i in range(5))
    return root


def write_pairs_input(root: str, bad_parquet_row: int = -1) -> dict:
    """A pairs table with text positives, and a corpus directory of JSONL (one .gz), and Parquet files of many
    small row groups (one without an id column: content-hash ids)."""
    rnd = random.Random(2)
    corpus = os.path.join(root, "corpus")
    os.makedirs(corpus, exist_ok=True)
    for f in range(2):
        with open(os.path.join(corpus, f"a{f}.jsonl"), "w") as fh:
            for i in range(150):
                fh.write("\n" if i % 50 == 3 else json.dumps({"_id": f"j{f}-{i}", "text": _words(rnd, rnd.randint(1, 25))}) + "\n")
    with open(os.path.join(corpus, "a2.jsonl"), "w") as fh:  # its first document has no id: content ids throughout
        for i in range(100):
            fh.write(json.dumps({"text": _words(rnd, 12)} if i == 0 else {"_id": f"k{i}", "text": _words(rnd, 12)}) + "\n")
    with gzip.open(os.path.join(corpus, "b.jsonl.gz"), "wt") as fh:
        for i in range(300):  # larger than a split, compressed
            fh.write(json.dumps({"_id": f"g{i}", "text": _words(rnd, 5) + f" {rnd.random()}"}) + "\n")
    for f in range(2):
        texts = [_words(rnd, rnd.randint(1, 25)) for _ in range(300)]
        if f == 0 and bad_parquet_row >= 0:
            texts[bad_parquet_row] = ""
        cols = {"_id": [f"p{f}-{i}" for i in range(300)], "text": texts} if f == 0 else {"text": texts}
        pq.write_table(pa.table(cols), os.path.join(corpus, f"c{f}.parquet"), row_group_size=20)
    pairs = os.path.join(root, "pairs.jsonl")
    with open(pairs, "w") as fh:
        for i in range(30):
            fh.write(json.dumps({"anchor": f"question {i}", "positive": f"answer {i % 20}"}) + "\n")
    return {"input.format": "pairs", "input.path": pairs, "input.corpus": corpus}


def reference_records(cfg: MineConfig) -> list:
    """(file_idx, row, doc_id, title, text, location) of every document, by plain json / pyarrow."""
    out = []
    if cfg.input.format == "beir":
        files = [fs.join(cfg.input.path, "corpus.jsonl")]
        base = 0
    else:  # pairs: the distinct positive texts first (file_idx 0), then the corpus files from 1
        base = 1
        seen = {}
        with fs.open_url(cfg.input.path, "rt") as f:
            for n, line in enumerate(f, 1):
                text = json.loads(line)["positive"]
                if content_id(text) not in seen:
                    seen[content_id(text)] = True
                    out.append((0, len(seen) - 1, content_id(text), "", text, f"{cfg.input.path}:{n}"))
        files = fs.list_files(cfg.input.corpus)
    for i, url in enumerate(files):
        if url.endswith(".parquet"):
            with fs.open_url(url, "rb") as f:
                rows = pq.read_table(f).to_pylist()
            for r, obj in enumerate(rows):
                if obj["text"]:
                    doc_id = obj.get("_id") or content_id(obj["text"])
                    out.append((base + i, r, doc_id, "", obj["text"], f"{url}:row {r}"))
            continue
        with fs.open_url(url, "rb") as f:  # .gz decompressed by the suffix
            data = f.read().decode("utf-8").lstrip("\ufeff")
        has_ids = None  # decided by the file's first document
        for r, line in enumerate(data.split("\n")):
            if line.strip("\r").strip():
                obj = json.loads(line)
                if obj.get("text") or obj.get("title"):
                    has_ids = ("_id" in obj) if has_ids is None else has_ids
                    title = obj.get("title", "")
                    doc_id = obj["_id"] if has_ids else content_id(f"{title} {obj['text']}" if title else obj["text"])
                    out.append((base + i, r, doc_id, title, obj["text"], f"{url}:{r + 1}"))
    return sorted(out)


def records(tables) -> list:
    out = []
    for t in tables:
        for r in t.to_pylist():
            assert r["text_key"] == text_key(document_text(r["title"], r["text"]))
            out.append((r["file_idx"], r["row"], r["doc_id"], r["title"], r["text"], r["location"]))
    return sorted(out)


def config(overrides: dict, split_mb: float = TINY_SPLIT_MB) -> MineConfig:
    return MineConfig.from_sources(None, dict(overrides, **{"input.read_split_mb": split_mb}))


def read_in_tasks(cfg: MineConfig, read_tasks: int, block_rows: int = 64) -> list:
    """Every task's records, each task read on its own (in reverse order: tasks are independent)."""
    fmt = input_format(cfg)
    groups = group_splits(fmt.corpus_splits(split_bytes_of(cfg.input)), read_tasks)
    return [t for g in reversed(groups) for t in fmt.read_corpus(g, block_rows)]


# ---- records ------------------------------------------------------------------------------------------------

def test_byte_ranges_partition_the_lines_at_every_cut(tmp_path):
    """Brute force over every pair of cut points of a small file: the ranges' lines, numbered from the newlines
    before each range (counted here with bytes.count), are the file's lines, each once, with its own number."""
    from streammine.io.formats.rows import _iter_lines
    data = b"ab\n\ncdef\r\ng\n\n\nhij\nk"
    path = str(tmp_path / "f.jsonl")
    with open(path, "wb") as f:
        f.write(data)
    whole = [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line or n < data.count(b"\n") + 1]
    assert list(_iter_lines(path)) == whole
    for a in range(len(data) + 1):
        for b in range(a, len(data) + 1):
            got = []
            for start, stop in ((0, a), (a, b), (b, None)):
                got += _iter_lines(path, start, stop, data[:start].count(b"\n"))
            assert got == whole, (a, b)


@pytest.mark.parametrize("kind", ["beir", "pairs"])
def test_splits_give_the_reference_records_whatever_the_task_count(tmp_path, kind):
    overrides = ({"input.path": write_beir_corpus(str(tmp_path / "beir"))} if kind == "beir"
                 else write_pairs_input(str(tmp_path)))
    cfg = config(overrides)
    fmt = input_format(cfg)
    splits = fmt.corpus_splits(split_bytes_of(cfg.input))
    files = {s.url for s in splits}
    assert len(splits) >= 2 * len(files)  # files really are cut
    if kind == "pairs":
        assert any(s.url.endswith(".parquet") and s.start > 0 for s in splits)  # row-group runs
        assert sum(s.url.endswith(".gz") for s in splits) == 1                 # a .gz file is one split
    expected = reference_records(cfg)
    for read_tasks in (1, 0, 3):
        assert records(read_in_tasks(cfg, read_tasks)) == expected, read_tasks
    # the single-pass reader (preflight, texts) agrees too
    assert records(fmt.corpus_blocks()) == expected


def test_a_split_yields_the_same_blocks_in_any_task(tmp_path):
    """Blocks end where splits end, so the encoder windows do not depend on how splits are grouped."""
    cfg = config({"input.path": write_beir_corpus(str(tmp_path / "beir"))})
    one = [t.column("doc_id").to_pylist() for t in read_in_tasks(cfg, 1)]
    many = [t.column("doc_id").to_pylist() for t in read_in_tasks(cfg, 0)]
    assert sorted(one) == sorted(many)


def test_precomputed_vector_splits_keep_rows_ids_and_vectors(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((230, 8)).astype(np.float32)
    root = tmp_path / "vectors"
    root.mkdir()
    # two Parquet files of small row groups, then two .npy files without ids (ids count .npy rows across files)
    pq.write_table(pa.table({"id": [f"v{i}" for i in range(80)], "vector": list(vectors[:80])}),
                   str(root / "a.parquet"), row_group_size=10)
    pq.write_table(pa.table({"id": [f"w{i}" for i in range(70)], "vector": list(vectors[80:150])}),
                   str(root / "b.parquet"), row_group_size=10)
    np.save(str(root / "c.npy"), vectors[150:200])
    np.save(str(root / "d.npy"), vectors[200:])
    data = write_synthetic_beir(str(tmp_path / "q"), n_docs=10, n_queries=3)
    cfg = config(precomputed_overrides(data, str(tmp_path / "out"), **{"encoder.corpus_vectors": str(root)}))
    fmt = input_format(cfg)
    assert len(fmt.corpus_splits(split_bytes_of(cfg.input))) > 4
    ids = [f"v{i}" for i in range(80)] + [f"w{i}" for i in range(70)] + [str(i) for i in range(80)]
    locations = ([f"{root}/a.parquet:row {i}" for i in range(80)] + [f"{root}/b.parquet:row {i}" for i in range(70)]
                 + [f"{root}/c.npy:row {i}" for i in range(50)] + [f"{root}/d.npy:row {i}" for i in range(30)])
    for read_tasks in (1, 0, 3):
        rows = sorted((r["row"], r["doc_id"], r["location"], r["file_idx"], tuple(r["vector"]))
                      for t in read_in_tasks(cfg, read_tasks) for r in t.to_pylist())
        assert [r[0] for r in rows] == list(range(230))
        assert [r[1] for r in rows] == ids and [r[2] for r in rows] == locations
        assert {r[3] for r in rows} == {0}
        assert np.array_equal(np.array([r[4] for r in rows], np.float32), vectors)


# ---- errors and quarantine ----------------------------------------------------------------------------------

def test_strict_error_in_a_later_range_names_its_file_and_true_line(ray_session, tmp_path):
    root = write_beir_corpus(str(tmp_path / "beir"), bad_line=377)
    cfg = config({"input.path": root}, RAY_SPLIT_MB)
    fns = corpus_read_fns(cfg, None, 64)
    assert len(fns) > 3
    failed = []
    for k, fn in enumerate(fns):
        try:
            list(fn())
        except InputError as e:
            failed.append((k, str(e)))
    location = f"{root}/corpus.jsonl:377"
    assert len(failed) == 1 and failed[0][0] > 0 and failed[0][1].startswith(location), failed
    with pytest.raises(Exception, match=location):  # and through Ray's read tasks
        read_dataset(fns, "corpus").materialize()


def test_strict_error_in_a_later_row_group_names_its_row(tmp_path):
    cfg = config(write_pairs_input(str(tmp_path), bad_parquet_row=253))
    with pytest.raises(InputError, match=r"c0\.parquet:row 253: empty document"):
        read_in_tasks(cfg, 0)


def test_lenient_quarantine_is_the_same_for_one_and_many_read_tasks(ray_session, tmp_path):
    root = write_beir_corpus(str(tmp_path / "beir"), bad_line=377)
    with open(os.path.join(root, "corpus.jsonl"), "a") as f:  # and a malformed last line
        f.write("\n{not json")
    cfg = config({"input.path": root, "input.lenient": True}, RAY_SPLIT_MB)
    got = {}
    for read_tasks in (1, 0):
        q = str(tmp_path / f"q{read_tasks}")
        ds = read_dataset(corpus_read_fns(dataclass_replace(cfg, read_tasks), q, 64), "corpus")
        got[read_tasks] = (ds.count(), sorted(json.dumps(r, sort_keys=True) for r in read_quarantine(q)))
    assert got[1] == got[0]
    assert [json.loads(r)["location"] for r in got[0][1]] == [f"{root}/corpus.jsonl:377", f"{root}/corpus.jsonl:401"]


def dataclass_replace(cfg: MineConfig, read_tasks: int) -> MineConfig:
    import dataclasses
    return dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, read_tasks=read_tasks))


# ---- Ray and object storage ---------------------------------------------------------------------------------

def test_ray_read_tasks_on_s3_give_the_reference_records(ray_session, s3_env, s3_bucket, tmp_path):
    local = write_pairs_input(str(tmp_path))
    fsys, _ = fs.resolve(f"s3://{s3_bucket}")
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        fsys.put_file(str(path), f"{s3_bucket}/in/{path.relative_to(tmp_path).as_posix()}")
    base = f"s3://{s3_bucket}/in"
    cfg = config({"input.format": "pairs", "input.path": f"{base}/pairs.jsonl", "input.corpus": f"{base}/corpus"},
                 RAY_SPLIT_MB)
    expected = reference_records(cfg)
    assert [r[2:5] for r in expected] == [r[2:5] for r in reference_records(config(local))]
    for read_tasks in (1, 0):
        fns = corpus_read_fns(dataclass_replace(cfg, read_tasks), None, 64)
        assert (len(fns) == 1) == (read_tasks == 1)
        assert records(ray_session.get(read_dataset(fns, "corpus").to_arrow_refs())) == expected


def _store_rows(cache: str) -> list:
    from glob import glob
    (store,) = glob(os.path.join(cache, "embeddings", "*", "_manifest.json"))
    t = pa.concat_tables(pq.read_table(os.path.join(os.path.dirname(store), f))
                         for f in json.load(open(store))["files"])
    return sorted((r["file_idx"], r["row"], r["doc_id"], r["location"], r["text_key"], tuple(r["vector"]))
                  for r in t.to_pylist())


def test_mined_output_and_store_are_the_same_for_one_and_many_read_tasks(ray_session, tmp_path):
    data = write_synthetic_beir(str(tmp_path / "data"), n_docs=300, n_queries=40)
    vectors_dir = tmp_path / "vectors"
    vectors_dir.mkdir()
    ids = [f"d{i}" for i in range(300)]
    for k, (a, b) in enumerate([(0, 120), (120, 250), (250, 300)]):
        pq.write_table(pa.table({"id": ids[a:b], "vector": list(data["docs"][a:b])}),
                       str(vectors_dir / f"part-{k}.parquet"), row_group_size=15)
    runs = {}
    assert len(corpus_read_fns(MineConfig.from_sources(None, precomputed_overrides(data, "x", **{
        "encoder.corpus_vectors": str(vectors_dir), "input.read_split_mb": RAY_SPLIT_MB})), None)) > 3
    for read_tasks in (1, 0):
        out, cache = str(tmp_path / f"out{read_tasks}"), str(tmp_path / f"cache{read_tasks}")
        overrides = precomputed_overrides(data, out, **{
            "encoder.corpus_vectors": str(vectors_dir), "input.read_split_mb": RAY_SPLIT_MB,
            "input.read_tasks": read_tasks, "run.cache_dir": cache, "index.shards": 2})
        streammine.mine(overrides=overrides)
        runs[read_tasks] = (read_output(out), _store_rows(cache))
    assert runs[1][0] == runs[0][0] and len(runs[0][0]) == 40
    assert runs[1][1] == runs[0][1]
    assert [(r[0], r[1], r[2]) for r in runs[0][1]] == [(0, i, f"d{i}") for i in range(300)]


def test_load_texts_keeps_the_first_row_of_an_id(tmp_path):
    from streammine.train import load_texts
    root = tmp_path / "beir"
    root.mkdir()
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "a", "text": "first"}) + "\n"
                                       + json.dumps({"_id": "b", "text": "other"}) + "\n"
                                       + json.dumps({"_id": "a", "title": "T", "text": "second"}) + "\n")
    assert load_texts(str(root)) == {"a": "first", "b": "other"}


def test_ragged_vector_in_a_later_split_names_the_first_row_of_the_input(tmp_path):
    root = tmp_path / "vectors"
    root.mkdir()
    vectors = np.ones((60, 4), np.float32)
    pq.write_table(pa.table({"id": [f"a{i}" for i in range(60)], "vector": list(vectors)}), str(root / "a.parquet"),
                   row_group_size=10)
    later = [np.ones(4, np.float32)] * 50 + [np.ones(3, np.float32)] + [np.ones(4, np.float32)] * 9
    pq.write_table(pa.table({"id": [f"b{i}" for i in range(60)], "vector": later}), str(root / "b.parquet"),
                   row_group_size=10)
    data = write_synthetic_beir(str(tmp_path / "q"), n_docs=10, n_queries=3)
    cfg = config(precomputed_overrides(data, str(tmp_path / "out"), **{"encoder.corpus_vectors": str(root)}))
    with pytest.raises(InputError, match=rf"b\.parquet:row 50: ragged vectors: vector has 3 values, the first row "
                                         rf"\({root}/a\.parquet:row 0\) has 4"):
        read_in_tasks(cfg, 0)
