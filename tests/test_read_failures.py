"""Every read failure is a one-line error naming the file and line/row (strict), quarantined where the row can be
skipped (lenient); a broken compressed stream or Parquet page cannot be skipped and says so. Readers only, no
Ray."""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_io_readers import GOOD_DOC, QUERIES, write_beir

from streammine.errors import InputError
from streammine.io import readers
from streammine.io.records import Quarantine
from streammine.keys import content_id, key64, text_key


def test_lone_surrogate_is_a_bad_row_not_a_crash(tmp_path):
    """A JSON \\ud800 escape is valid JSON but not text: the row is reported with its line (it used to raise
    UnicodeEncodeError from the text key, outside the row check, and kill the run, lenient included)."""
    corpus = [GOOD_DOC, '{"_id": "s1", "text": "bad \\ud800 text"}', '{"_id": "s\\udc00", "text": "bad id"}',
              {"_id": "last", "text": "end"}]
    root = write_beir(str(tmp_path), corpus=corpus)
    with pytest.raises(InputError) as e:
        list(readers.iter_beir_corpus(root))
    assert e.value.location.endswith("corpus.jsonl:2") and "lone surrogate" in e.value.reason
    q = Quarantine()
    docs = [d for t in readers.iter_beir_corpus(root, quarantine=q) for d in t.to_pylist()]
    assert [d["doc_id"] for d in docs] == ["ok", "last"]
    assert [r["location"].rsplit(":", 1)[1] for r in q.records] == ["2", "3"]
    # queries too
    root2 = write_beir(str(tmp_path / "q"), queries=[QUERIES[0], '{"_id": "q9", "text": "x \\ud83d y"}'],
                       qrels="q1\td1\t1\nq9\td1\t1\n")
    with pytest.raises(InputError, match=r"queries.jsonl:2: field 'text' holds a lone surrogate"):
        list(readers.iter_beir_queries(root2))
    q = Quarantine()
    assert [r["query_id"] for t in readers.iter_beir_queries(root2, quarantine=q) for r in t.to_pylist()] == ["q1"]
    assert len(q) == 1  # the bad line only: not also "q9 is not in queries.jsonl"
    q.write(str(tmp_path / "quarantine"))  # the record (raw line included) can be written


def test_keys_never_raise_and_keep_their_values():
    assert key64("\ud800") != key64("\udc00")  # a key for any str, distinct per surrogate
    assert isinstance(text_key("a \ud800"), int) and len(content_id("\udfff")) == 16
    # valid text keeps the key it always had (UTF-8 bytes): stores and caches stay valid
    import hashlib
    assert key64("héllo") == int.from_bytes(hashlib.blake2b("héllo".encode(), digest_size=8).digest(), "little")


def test_invalid_utf8_is_reported_with_its_line(tmp_path):
    root = write_beir(str(tmp_path))
    with open(os.path.join(root, "corpus.jsonl"), "ab") as f:
        f.write(b'{"_id": "x", "text": "\xff\xfe"}\n')
    with pytest.raises(InputError, match=r"corpus.jsonl:5: not valid UTF-8"):
        list(readers.iter_beir_corpus(root))
    q = Quarantine()
    assert len([d for t in readers.iter_beir_corpus(root, quarantine=q) for d in t.to_pylist()]) == 4 and len(q) == 1


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not-gzip"])
def test_broken_gzip_is_one_error_in_both_modes(tmp_path, damage):
    root = write_beir(str(tmp_path), corpus=[{"_id": f"d{i}", "text": f"document number {i} " * 20}
                                             for i in range(400)], gz=True)
    path = os.path.join(root, "corpus.jsonl.gz")
    data = open(path, "rb").read()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "corrupt":
        data = data[:200] + bytes(b ^ 0xFF for b in data[200:260]) + data[260:]
    else:
        data = b"\x1f\x8bXXnot a gzip stream at all" * 10
    open(path, "wb").write(data)
    for quarantine in (None, Quarantine()):
        with pytest.raises(InputError) as e:
            list(readers.iter_beir_corpus(root, quarantine=quarantine))
        assert e.value.location.startswith(path + ":")
        assert "truncated or corrupt" in e.value.reason and "cannot be quarantined" in e.value.reason
        assert "\n" not in str(e.value)


def test_corrupt_parquet_pages_name_the_file_and_row(tmp_path):
    path = str(tmp_path / "corpus.parquet")
    pq.write_table(pa.table({"_id": [f"d{i}" for i in range(5000)], "text": [f"text {i}" * 5 for i in range(5000)]}),
                   path, row_group_size=1000, compression="none")
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 2000] = os.urandom(2000)  # pages of a middle row group, footer intact
    open(path, "wb").write(bytes(data))
    with pytest.raises(InputError) as e:
        list(readers.iter_corpus_table(path, quarantine=Quarantine()))
    assert e.value.location.startswith(f"{path}:row ") and "corrupt Parquet" in e.value.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_names_the_file(tmp_path):
    root = write_beir(str(tmp_path))
    path = os.path.join(root, "corpus.jsonl")
    os.chmod(path, 0)
    try:
        with pytest.raises(InputError, match="permission denied") as e:
            list(readers.iter_beir_corpus(root))
        assert e.value.location == path
    finally:
        os.chmod(path, 0o644)


def test_a_bad_query_line_is_quarantined_once(tmp_path):
    """A malformed line of a query the qrels name: one record (malformed JSON), not a second one claiming the
    query is missing from queries.jsonl."""
    root = write_beir(str(tmp_path), queries=QUERIES[:3] + ['{"_id": "q4", "text": "where is Madrid?"'])
    q = Quarantine()
    got = [r["query_id"] for t in readers.iter_beir_queries(root, quarantine=q) for r in t.to_pylist()]
    assert got == ["q1", "q2"]
    reasons = sorted(r["reason"].split(":")[0] for r in q.records)
    assert len([r for r in q.records if "q4" in r["reason"] or r["location"].endswith("queries.jsonl:4")]) == 1
    assert "malformed JSON" in reasons and not [r for r in q.records if "is not in" in r["reason"]], q.records
