"""End-to-end runs of ``streammine.mine`` on small inputs: strict errors that name file and line, lenient quarantine
and completeness, pairs input (JSONL and Parquet), an S3 round trip, and an existing output (overwrite, store reuse).

Most runs use ``encoder.kind=precomputed`` with tiny synthetic vectors, so no model loads. The tests that need texts
encoded (pairs, whose corpus is the positive texts; duplicate BEIR documents with different texts) use the packaged
model and are marked slow. Every run goes through the shared Ray of the ``ray_session`` fixture.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streammine
from streammine import InputError, StreamMineError
from streammine.keys import content_id, normalize_text
from streammine.sink.parts import iter_rows

DIM = 8


# ---- synthetic BEIR input with precomputed vectors ----------------------------------------------------------

def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Beir:
    """queries.jsonl + qrels/train.tsv under ``root/beir``, vectors (.npy + .ids.txt) under ``root/vectors``.

    Tests edit the lists (planting bad rows) before ``write()``. Query ``i`` has positive document ``i``; every third
    query also document ``n_queries + i``. A query's vector is its first positive's vector plus noise.
    """
    root: Path
    doc_ids: list
    doc_vectors: np.ndarray
    query_ids: list
    query_vectors: np.ndarray
    query_lines: list   # the lines of queries.jsonl
    qrels_lines: list   # the lines of qrels/train.tsv, header first

    @property
    def beir_dir(self) -> Path:
        return self.root / "beir"

    @property
    def queries_path(self) -> Path:
        return self.beir_dir / "queries.jsonl"

    @property
    def qrels_path(self) -> Path:
        return self.beir_dir / "qrels" / "train.tsv"

    @property
    def corpus_npy(self) -> Path:
        return self.root / "vectors" / "corpus.npy"

    @property
    def queries_npy(self) -> Path:
        return self.root / "vectors" / "queries.npy"

    def insert_query_line(self, index: int, line: str) -> int:
        """Inserts a queries.jsonl line before ``index``; returns its (1-based) line number."""
        self.query_lines.insert(index, line)
        return index + 1

    def insert_qrels_line(self, index: int, line: str) -> int:
        self.qrels_lines.insert(index, line)  # index 0 is the header
        return index + 1

    def write(self) -> "Beir":
        self.qrels_path.parent.mkdir(parents=True, exist_ok=True)
        self.corpus_npy.parent.mkdir(parents=True, exist_ok=True)
        self.queries_path.write_text("".join(line + "\n" for line in self.query_lines))
        self.qrels_path.write_text("".join(line + "\n" for line in self.qrels_lines))
        np.save(self.corpus_npy, self.doc_vectors)
        self.corpus_npy.with_suffix(".ids.txt").write_text("".join(d + "\n" for d in self.doc_ids))
        np.save(self.queries_npy, self.query_vectors)
        self.queries_npy.with_suffix(".ids.txt").write_text("".join(q + "\n" for q in self.query_ids))
        return self

    def overrides(self, out, base=None) -> dict:
        """Run overrides; ``base`` (a URL prefix the tree was uploaded to) replaces ``root`` in the input paths."""
        base = str(base or self.root)
        return {"input.path": f"{base}/beir", "encoder.kind": "precomputed",
                "encoder.corpus_vectors": f"{base}/vectors/corpus.npy",
                "encoder.query_vectors": f"{base}/vectors/queries.npy",
                "output.path": str(out), "run.progress": False, "index.shards": 1,
                "mining.sampler.num_negatives": 3, "mining.sampler.range_max": 12}


def synthetic(root: Path, n_docs: int = 40, n_queries: int = 12, seed: int = 0) -> Beir:
    rng = np.random.default_rng(seed)
    doc_ids = [f"d{i:03d}" for i in range(n_docs)]
    doc_vectors = _unit(rng.standard_normal((n_docs, DIM)))
    query_ids = [f"q{i:02d}" for i in range(n_queries)]
    query_vectors = _unit(doc_vectors[:n_queries] + 0.5 * rng.standard_normal((n_queries, DIM)))
    query_lines = [json.dumps({"_id": q, "text": f"synthetic question number {i}"}) for i, q in enumerate(query_ids)]
    qrels = ["query-id\tcorpus-id\tscore"]
    for i, q in enumerate(query_ids):
        qrels.append(f"{q}\t{doc_ids[i]}\t1")
        if i % 3 == 0:
            qrels.append(f"{q}\t{doc_ids[n_queries + i]}\t1")
    return Beir(root, doc_ids, doc_vectors, query_ids, query_vectors, query_lines, qrels)


# ---- reading an output back ---------------------------------------------------------------------------------

def _local_fs():
    import fsspec
    return fsspec.filesystem("file")


def read_output(out: str, filesystem=None) -> pa.Table:
    """Every row of the committed parts (those listed in ``_parts.json``)."""
    filesystem = filesystem or _local_fs()
    out = str(out).rstrip("/")
    with filesystem.open(f"{out}/_parts.json", "rt") as f:
        manifest = json.load(f)
    tables = []
    for part in manifest["parts"]:
        with filesystem.open(f"{out}/{part['part']}", "rb") as f:
            tables.append(pq.read_table(f))
    table = pa.concat_tables(tables) if tables else None
    assert table is not None and table.num_rows == manifest["rows"]
    return table


def read_quarantine(out: Path) -> list:
    records = []
    for part in sorted((out / "_quarantine").glob("*.jsonl")):
        records += [json.loads(line) for line in part.read_text().splitlines() if line.strip()]
    return records


def negatives_by_query(table: pa.Table) -> dict:
    return {r["query_id"]: (r["negative_ids"], r["negative_scores"])
            for r in table.select(["query_id", "negative_ids", "negative_scores"]).to_pylist()}


def assert_input_error(excinfo, location: str, *fragments: str) -> None:
    """The error is an InputError whose location and message name the file and line."""
    err = excinfo.value
    assert isinstance(err, InputError)
    assert err.location == location
    message = str(err)
    assert location in message
    for fragment in fragments:
        assert fragment in message


# ---- 1. strict mode: the first bad row fails the run, naming its file and line ------------------------------

def test_strict_malformed_query_line(ray_session, tmp_path):
    b = synthetic(tmp_path)
    line = b.insert_query_line(4, '{"_id": "q-broken", "text": "an unterminated')
    b.write()
    out = tmp_path / "out"
    with pytest.raises(InputError) as excinfo:
        streammine.mine(overrides=b.overrides(out))
    assert_input_error(excinfo, f"{b.queries_path}:{line}", "malformed JSON")
    assert not (out / "_parts.json").exists() and not (out / "summary.json").exists()


def test_strict_qrels_positive_missing_from_corpus(ray_session, tmp_path):
    b = synthetic(tmp_path)
    # q03 keeps its two real positives; the third one names a document the corpus does not have
    line = b.insert_qrels_line(6, "q03\tno-such-doc\t1")
    b.write()
    out = tmp_path / "out"
    with pytest.raises(InputError) as excinfo:
        streammine.mine(overrides=b.overrides(out))
    assert_input_error(excinfo, f"{b.qrels_path}:{line}", "'no-such-doc'", "'q03'", "not in the corpus")
    assert "qrels/train.tsv:" in str(excinfo.value)
    assert not (out / "_parts.json").exists() and not (out / "summary.json").exists()


def test_strict_qrels_unknown_query(ray_session, tmp_path):
    b = synthetic(tmp_path)
    line = b.insert_qrels_line(5, "q-unknown\td001\t1")
    b.write()
    out = tmp_path / "out"
    with pytest.raises(InputError) as excinfo:
        streammine.mine(overrides=b.overrides(out))
    assert_input_error(excinfo, f"{b.qrels_path}:{line}", "'q-unknown'", str(b.queries_path))
    assert not (out / "_parts.json").exists() and not (out / "summary.json").exists()


def test_non_finite_corpus_vector_names_file_and_row(ray_session, tmp_path):
    """A NaN in a precomputed vector file is an error naming the file and row."""
    b = synthetic(tmp_path)
    b.doc_vectors[7, 2] = np.nan
    b.write()
    with pytest.raises(InputError) as excinfo:
        streammine.mine(overrides=b.overrides(tmp_path / "out"))
    assert_input_error(excinfo, f"{b.corpus_npy}:row 7", "NaN")


def test_lenient_non_finite_corpus_vector_is_quarantined(ray_session, tmp_path):
    """Lenient: that row goes to the quarantine with its location; the other documents are mined against."""
    b = synthetic(tmp_path)
    b.doc_vectors[7, 2] = np.nan
    b.write()
    out = tmp_path / "out"
    result = streammine.mine(overrides=dict(b.overrides(out), **{"input.lenient": True}))
    records = [json.loads(line) for p in sorted((out / "_quarantine").glob("*.jsonl")) for line in open(p)]
    assert any(f"{b.corpus_npy}:row 7" in r["location"] for r in records), records
    assert result.summary["counts"]["quarantined"].get("corpus") == 1
    assert result.summary["counts"]["corpus_documents"] == len(b.doc_ids)
    rows = [r for batch in iter_rows(str(out)) for r in batch.to_pylist()]
    assert all(b.doc_ids[7] not in r["negative_ids"] for r in rows)


def test_strict_precomputed_duplicate_id_with_different_vector(ray_session, tmp_path):
    """Two rows of the precomputed corpus with the same id and different vectors are two different documents under
    one id: the shards must report it (the same id with the same vector would be one document listed twice)."""
    b = synthetic(tmp_path)
    n = len(b.doc_ids)
    b.doc_ids.append("d005")
    b.doc_vectors = np.concatenate([b.doc_vectors, _unit(-b.doc_vectors[5:6])])
    b.write()
    with pytest.raises(InputError) as excinfo:
        streammine.mine(overrides=b.overrides(tmp_path / "out"))
    assert_input_error(excinfo, f"{b.corpus_npy}:row {n}", "duplicate document id 'd005'",
                       f"{b.corpus_npy}:row 5")


SLOW_CORPUS = [
    {"_id": "c1", "title": "Tea", "text": "Green tea is made from unoxidized leaves of Camellia sinensis."},
    {"_id": "c2", "title": "Volcanoes", "text": "Magma that reaches the surface of the earth is called lava."},
    {"_id": "c3", "title": "Bees", "text": "Honey bees communicate the location of flowers with a waggle dance."},
    {"_id": "c4", "title": "Rivers", "text": "The Nile flows north through eleven countries into the Mediterranean."},
    {"_id": "c2", "title": "Chess", "text": "A pawn that reaches the last rank is promoted to another piece."},
    {"_id": "c5", "title": "Glaciers", "text": "Glaciers form where snow accumulates faster than it melts."},
]


@pytest.mark.slow
def test_strict_beir_duplicate_doc_id_with_different_text(ray_session, tmp_path):
    """BEIR corpus.jsonl through the real encoder (precomputed vectors cannot express it, see the test above): an id
    repeated with a different text is an InputError naming the later line and the first. It fails when the shards
    are built, before any query is encoded, so the model loads once."""
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    corpus = beir / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in SLOW_CORPUS))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "t1", "text": "what is green tea made of"}) + "\n")
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nt1\tc1\t1\n")
    out = tmp_path / "out"
    with pytest.raises(InputError) as excinfo:
        streammine.mine(overrides={"input.path": str(beir), "output.path": str(out), "run.progress": False,
                                   "index.shards": 2})
    assert_input_error(excinfo, f"{corpus}:5", "duplicate document id 'c2'", f"{corpus}:2")
    assert not (out / "_parts.json").exists() and not (out / "summary.json").exists()


# ---- 2. lenient mode: bad rows are quarantined, every query is accounted for --------------------------------

def test_lenient_quarantines_bad_rows_and_accounts_for_every_query(ray_session, tmp_path):
    b = synthetic(tmp_path)
    # queries.jsonl: a malformed line (of a query without qrels, so the line is its only trace)
    bad_json = b.insert_query_line(3, '{"_id": "q-broken", "text": ')
    # qrels: q00 gets a third positive the corpus lacks (it is still mined with the other two); q05's only positive
    # becomes a missing document (q05 cannot be mined); a qrels line names a query that does not exist
    extra_missing = b.insert_qrels_line(2, "q00\tghost-a\t1")
    q05 = b.qrels_lines.index("q05\td005\t1")
    b.qrels_lines[q05] = "q05\tghost-b\t1"
    only_missing = q05 + 1
    unknown = b.insert_qrels_line(len(b.qrels_lines), "q-nobody\td001\t1")
    # corpus: d005 (nobody's positive now) listed again with another vector
    duplicate_row = len(b.doc_ids)
    b.doc_ids.append("d005")
    b.doc_vectors = np.concatenate([b.doc_vectors, _unit(-b.doc_vectors[5:6])])
    b.write()
    out = tmp_path / "out"
    queries, qrels = str(b.queries_path), str(b.qrels_path)
    q05_line = next(n for n, line in enumerate(b.query_lines, 1) if '"q05"' in line)

    result = streammine.mine(overrides=dict(b.overrides(out), **{"input.lenient": True}))

    # every good query is mined exactly once
    table = read_output(str(out))
    mined = table.column("query_id").to_pylist()
    assert len(mined) == len(set(mined)), "a query was written more than once"
    good = [q for q in b.query_ids if q != "q05"]
    assert sorted(mined) == sorted(good)
    counts = result.summary["counts"]
    assert counts["queries_out"] == len(good)

    # each planted row is quarantined with its kind and a reason
    records = read_quarantine(out)
    assert all(r.get("reason") for r in records)
    by_location: dict = {}
    for r in records:
        by_location.setdefault(r["location"], []).append((r["kind"], r["reason"]))
    [(kind, reason)] = by_location[f"{queries}:{bad_json}"]
    assert kind == "query" and "malformed JSON" in reason
    [(kind, reason)] = by_location[f"{qrels}:{extra_missing}"]
    assert kind == "qrels" and "'ghost-a'" in reason and "not in the corpus" in reason
    [(kind, reason)] = by_location[f"{qrels}:{only_missing}"]
    assert kind == "qrels" and "'ghost-b'" in reason and "not in the corpus" in reason
    [(kind, reason)] = by_location[f"{qrels}:{unknown}"]
    assert kind == "qrels" and "'q-nobody'" in reason
    [(kind, reason)] = by_location[f"{queries}:{q05_line}"]
    assert kind == "query" and "'q05'" in reason

    # completeness: every line of queries.jsonl is mined or named in the quarantine
    for n, line in enumerate(b.query_lines, 1):
        try:
            qid = json.loads(line)["_id"]
        except json.JSONDecodeError:
            qid = None
        assert qid in mined or f"{queries}:{n}" in by_location, f"line {n} ({qid}) is neither mined nor quarantined"

    rows = {r["query_id"]: r for r in table.to_pylist()}
    for r in rows.values():
        assert not set(r["negative_ids"]) & set(r["positive_ids"])
    # documented (MINED_SCHEMA): positives not found keep their place in positive_ids, with a NaN score
    assert rows["q00"]["positive_ids"] == ["d000", "ghost-a", "d012"]
    scores = rows["q00"]["positive_scores"]
    assert np.isnan(scores[1]) and np.isfinite(scores[0]) and np.isfinite(scores[2])

    # the duplicate corpus row, and the per-kind counts of all of it (summary.json and the returned summary)
    [(kind, reason)] = by_location.get(f"{b.corpus_npy}:row {duplicate_row}", [(None, "not quarantined")])
    assert kind == "corpus" and "duplicate document id 'd005'" in reason
    assert len(records) == len(by_location) == 6
    expected = {"corpus": 1, "qrels": 3, "query": 2}
    assert counts["quarantined"] == expected and counts["quarantined_total"] == 6
    with open(out / "summary.json") as f:
        assert json.load(f)["counts"]["quarantined"] == expected


# ---- 3. pairs input: the corpus is the positive texts ------------------------------------------------------

REPEATED = "how do plants make their food"
PHOTOSYNTHESIS = "Plants make sugar from carbon dioxide and water using sunlight in photosynthesis."
CHLOROPHYLL = "Chlorophyll in the leaves absorbs light energy that drives the making of glucose."
JSONL_PAIRS = [
    (REPEATED, PHOTOSYNTHESIS),
    ("why is the sky blue", "Air molecules scatter short blue wavelengths of sunlight more than red ones."),
    ("what causes ocean tides", "Tides are caused mainly by the gravitational pull of the moon on the oceans."),
    ("how do vaccines work", "A vaccine trains the immune system to recognise a pathogen without causing disease."),
    ("what is the boiling point of water", "At sea level pure water boils at one hundred degrees Celsius."),
    ("where is the eiffel tower", "The Eiffel Tower stands on the Champ de Mars in Paris."),
    ("how fast does light travel", "Light travels at about 300,000 kilometres per second in a vacuum."),
    ("what do bees make", "Honey bees turn flower nectar into honey and store it in wax combs."),
    ("how are mountains formed", "Mountains rise where tectonic plates collide and push the crust upward."),
]
PARQUET_PAIRS = [
    (REPEATED, CHLOROPHYLL),     # the anchor's second positive, in the other file
    (REPEATED, PHOTOSYNTHESIS),  # a pair repeated: still one positive
    ("which city has the eiffel tower", "the eiffel tower  stands on the champ de mars in paris."),  # same text
    ("what is the largest planet", "Jupiter is the largest planet of the solar system, a gas giant."),
    ("how do birds migrate", "Migrating birds navigate with the sun, the stars and the earth's magnetic field."),
    ("why do leaves change colour in autumn", "In autumn trees stop making chlorophyll and yellow pigments show."),
    ("what is the speed of sound", "Sound moves through dry air at roughly 343 metres per second."),
    ("what makes a rainbow", "Sunlight refracted and reflected in raindrops splits into a band of colours."),
    ("how does a compass work", "A compass needle is a small magnet that lines up with the earth's magnetic field."),
    ("what is dna", "DNA is the molecule that carries the genetic instructions of living organisms."),
    ("why do we have seasons", "Seasons come from the tilt of the earth's axis as it orbits the sun."),
]


@pytest.mark.slow
def test_pairs_input_from_jsonl_and_parquet(ray_session, tmp_path):
    """One run over a directory holding a JSONL and a Parquet (anchor, positive) table (one run: the model loads
    once per stage). Rows group by anchor across both files; ids are content hashes; no negative is a positive of
    its query, nor a document with a positive's text."""
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "a.jsonl").write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in JSONL_PAIRS))
    pq.write_table(pa.table({"anchor": [a for a, _ in PARQUET_PAIRS], "positive": [p for _, p in PARQUET_PAIRS],
                             "source": ["extra column, ignored"] * len(PARQUET_PAIRS)}), pairs / "b.parquet")
    out = tmp_path / "out"
    result = streammine.mine(overrides={"input.format": "pairs", "input.path": str(pairs), "output.path": str(out),
                                        "run.progress": False, "index.shards": 2,
                                        "mining.sampler.num_negatives": 3})

    groups: dict = {}  # anchor -> positive ids, in order of first appearance (files in name order)
    for anchor, positive in JSONL_PAIRS + PARQUET_PAIRS:
        ids = groups.setdefault(anchor, [])
        if content_id(positive) not in ids:
            ids.append(content_id(positive))
    texts = {content_id(p): normalize_text(p) for _, p in JSONL_PAIRS + PARQUET_PAIRS}
    table = read_output(str(out))
    rows = {r["query_id"]: r for r in table.to_pylist()}
    assert table.num_rows == len(rows) == len(groups)
    assert set(rows) == {content_id(a) for a in groups}
    counts = result.summary["counts"]
    assert counts["corpus_documents"] == len(texts)
    assert counts["quarantined_total"] == 0
    repeated = rows[content_id(REPEATED)]
    assert repeated["query"] == REPEATED
    assert repeated["positive_ids"] == [content_id(PHOTOSYNTHESIS), content_id(CHLOROPHYLL)]
    for anchor, positive_ids in groups.items():
        row = rows[content_id(anchor)]
        assert row["query"] == anchor and row["positive_ids"] == positive_ids
        negatives = row["negative_ids"]
        assert negatives, f"no negatives for {anchor!r}"
        assert len(negatives) == len(set(negatives)) and set(negatives) <= set(texts)
        assert not set(negatives) & set(positive_ids), f"a positive of {anchor!r} was mined as its negative"
        assert not {texts[n] for n in negatives} & {texts[p] for p in positive_ids}, \
            f"a document with a positive's text is a negative of {anchor!r}"
    # the two Eiffel Tower positives are one text: each is removed from the other query's candidates
    assert counts["removed_same_text_as_positive"] == 2


# ---- 4 and 5 share one local run of the synthetic input -----------------------------------------------------

@dataclass
class Baseline:
    data: Beir
    out: Path
    overrides: dict
    summary: dict
    negatives: dict


@pytest.fixture(scope="module")
def baseline(ray_session, tmp_path_factory) -> Baseline:
    """One local run (two shards). Its negatives are recorded here: test 5 replaces the output in place."""
    root = tmp_path_factory.mktemp("baseline")
    b = synthetic(root / "data").write()
    out = root / "out"
    overrides = dict(b.overrides(out), **{"index.shards": 2, "run.cache_dir": str(root / "cache")})
    result = streammine.mine(overrides=overrides)
    return Baseline(b, out, overrides, result.summary, negatives_by_query(read_output(str(out))))


# ---- 4. S3: input, work dir and output on object storage ----------------------------------------------------

def test_s3_round_trip_matches_local_run(ray_session, s3_env, s3_bucket, baseline):
    import s3fs
    b = baseline.data
    s3 = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_env["AWS_ENDPOINT_URL"]}, use_listings_cache=False)
    for path in sorted(p for p in b.root.rglob("*") if p.is_file()):
        s3.put_file(str(path), f"{s3_bucket}/in/{path.relative_to(b.root).as_posix()}")
    overrides = dict(b.overrides(f"s3://{s3_bucket}/out", base=f"s3://{s3_bucket}/in"),
                     **{"index.shards": baseline.overrides["index.shards"], "run.work_dir": f"s3://{s3_bucket}/work"})
    assert set(overrides) == (set(baseline.overrides) - {"run.cache_dir"}) | {"run.work_dir"}

    result = streammine.mine(overrides=overrides)

    table = read_output(f"{s3_bucket}/out", s3)
    assert table.num_rows == len(b.query_ids)
    assert negatives_by_query(table) == baseline.negatives
    with s3.open(f"{s3_bucket}/out/summary.json", "rt") as f:
        summary = json.load(f)
    assert summary["counts"] == result.summary["counts"]
    assert summary["counts"]["queries_out"] == baseline.summary["counts"]["queries_out"] == len(b.query_ids)
    assert summary["counts"]["negatives"] == baseline.summary["counts"]["negatives"]
    assert summary["index"]["store_reused"] is False
    # the embedding store lives in the work dir on S3, not beside the output
    assert len(s3.glob(f"{s3_bucket}/work/embeddings/*/_manifest.json")) == 1
    assert not s3.exists(f"{s3_bucket}/out/_work")


# ---- 5. an existing output: refused without overwrite; replaced with it, the embedding store reused -------------

def test_existing_output_needs_overwrite_and_keeps_the_store(baseline):
    out, overrides = baseline.out, baseline.overrides
    cache = Path(overrides["run.cache_dir"])  # the store lives in the cache shared by runs, not in the output
    assert baseline.summary["index"]["store_reused"] is False
    first_parts = json.loads((out / "_parts.json").read_text())
    first_summary = (out / "summary.json").read_text()
    store_files = {p: p.stat().st_mtime_ns for p in (cache / "embeddings").rglob("*") if p.is_file()}
    assert any(p.name == "_manifest.json" for p in store_files)

    with pytest.raises(StreamMineError) as excinfo:
        streammine.mine(overrides=overrides)
    assert not isinstance(excinfo.value, InputError)
    assert str(out) in str(excinfo.value) and "overwrite" in str(excinfo.value)
    assert json.loads((out / "_parts.json").read_text()) == first_parts  # left as it was
    assert (out / "summary.json").read_text() == first_summary
    assert all((out / p["part"]).exists() for p in first_parts["parts"])

    (out / "notes.txt").write_text("not written by streammine")
    second = streammine.mine(overrides=dict(overrides, **{"output.overwrite": True}))
    assert second.summary["index"]["store_reused"] is True
    assert json.loads((out / "summary.json").read_text())["index"]["store_reused"] is True
    assert (out / "notes.txt").exists()  # overwrite deletes only what the earlier run wrote and named
    assert not any((out / p["part"]).exists() for p in first_parts["parts"])  # the old parts are gone
    assert {p: p.stat().st_mtime_ns for p in (cache / "embeddings").rglob("*") if p.is_file()} == store_files
    assert negatives_by_query(read_output(str(out))) == baseline.negatives


def test_store_key_changes_when_precomputed_ids_change(tmp_path):
    """The store holds the corpus ids: new ids in corpus.ids.txt (corpus.npy untouched) must not reuse it. Checked
    on the store key (no run needed); in a run, the stale store is reused and the new ids are unknown to the index."""
    from streammine.index.store_naming import store_key
    b = synthetic(tmp_path).write()
    overrides = b.overrides(tmp_path / "out")
    before = store_key(streammine.load_config(overrides=overrides))
    assert store_key(streammine.load_config(overrides=overrides)) == before  # stable
    npy_stamp = b.corpus_npy.stat().st_mtime_ns
    b.corpus_npy.with_suffix(".ids.txt").write_text("".join(f"doc-{i}\n" for i in range(len(b.doc_ids))))
    assert b.corpus_npy.stat().st_mtime_ns == npy_stamp
    assert store_key(streammine.load_config(overrides=overrides)) != before


def test_length_sorted_blocks_sorts_each_window_and_keeps_every_row():
    from streammine.io.run_input import length_sorted_blocks
    rng = np.random.default_rng(0)
    windows = []
    for w in range(3):  # windows of 10, 10 and 3 rows, as a reader yields them
        n = 10 if w < 2 else 3
        texts = ["x" * int(k) for k in rng.integers(0, 50, n)]
        titles = [None if i % 3 else "t" * i for i in range(n)]
        windows.append(pa.table({"doc_id": [f"{w}-{i}" for i in range(n)], "title": titles, "text": texts,
                                 "row": list(range(w * 10, w * 10 + n))}))
    blocks = list(length_sorted_blocks(lambda: iter(windows + [pa.table({"doc_id": pa.array([], pa.string())})]), 4))
    assert [b.num_rows for b in blocks] == [4, 4, 2, 4, 4, 2, 3]
    out = pa.concat_tables(blocks)
    assert sorted(out.column("row").to_pylist()) == list(range(23)) and len(set(out.column("doc_id").to_pylist())) == 23
    for first, last in ((0, 3), (3, 6), (6, 7)):  # within a window: longest first; rows never cross windows
        window = pa.concat_tables(blocks[first:last])
        lengths = [len(t or "") + len(x) for t, x in zip(window.column("title").to_pylist(),
                                                         window.column("text").to_pylist())]
        assert lengths == sorted(lengths, reverse=True)
        assert len({r // 10 for r in window.column("row").to_pylist()}) == 1


def test_encoder_input_blocks_put_the_queries_after_the_corpus(tmp_path):
    """Corpus blocks first (flag off), then every query of the run once (flag on), in the corpus's schema."""
    from streammine.encode.query_vectors import QUERY_ROW
    from streammine.io import readers
    from streammine.api import demo_data_path
    from streammine.io.run_input import corpus_read_fns, encoder_input_blocks
    data = demo_data_path()
    cfg = streammine.load_config(overrides={"input.path": data, "output.path": str(tmp_path / "o"),
                                            "run.query_batch_size": 16})
    blocks = list(encoder_input_blocks(corpus_read_fns(cfg, None, 64)[0], 32, cfg))
    flags = [b.column(QUERY_ROW).to_pylist() for b in blocks]
    assert all(len(set(f)) == 1 for f in flags)                      # a block holds one kind
    kinds = [f[0] for f in flags]
    assert kinds == sorted(kinds) and kinds[0] is False and kinds[-1] is True  # queries last
    assert len({b.schema for b in blocks}) == 1
    docs = pa.concat_tables([b for b, k in zip(blocks, kinds) if not k])
    queries = pa.concat_tables([b for b, k in zip(blocks, kinds) if k])
    assert docs.num_rows == sum(1 for _ in open(f"{data}/corpus.jsonl"))
    expected = pa.concat_tables(list(readers.iter_beir_queries(data, split=cfg.input.split)))
    assert queries.column("text").to_pylist() == expected.column("query").to_pylist()
    assert queries.column("doc_id").to_pylist() == expected.column("query_id").to_pylist()
    assert set(queries.column("file_idx").to_pylist()) == {-1}
    # without a config (no query cache, or a serve unit): the corpus alone
    assert sum(b.num_rows for b in encoder_input_blocks(corpus_read_fns(cfg, None, 64)[0], 32)) == docs.num_rows
