"""URL handling: local paths, file://, memory:// and s3:// against the loopback S3 server."""
from __future__ import annotations

import gzip
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streammine.io import fs


def _mem() -> str:
    return f"memory://fs-{uuid.uuid4().hex[:8]}"


def test_join_keeps_the_url_form():
    assert fs.join("s3://b/x/", "y", "z.txt") == "s3://b/x/y/z.txt"
    assert fs.join("/tmp/a", "b/", "/c") == "/tmp/a/b/c"
    assert fs.join("memory://", "a", "b") == "memory://a/b"
    assert fs.join("rel", "") == "rel"


def test_resolve_local_and_memory(tmp_path):
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem
    filesystem, path = fs.resolve(str(tmp_path / "a.txt"))
    assert isinstance(filesystem, LocalFileSystem) and path.endswith("a.txt")
    filesystem, path = fs.resolve(f"file://{tmp_path}/a.txt")
    assert isinstance(filesystem, LocalFileSystem) and path == f"{tmp_path}/a.txt"
    filesystem, path = fs.resolve("memory://x/y")
    assert isinstance(filesystem, MemoryFileSystem) and path == "/x/y"


def test_open_exists_makedirs_and_gzip(tmp_path):
    for root in (str(tmp_path / "plain"), f"file://{tmp_path}/url", _mem()):
        target = fs.join(root, "deep", "dir", "f.jsonl.gz")
        assert not fs.exists(target)
        with fs.open_url(target, "wt") as f:  # parents are created for local paths
            f.write('{"a": "é"}\n')
        assert fs.exists(target)
        with fs.open_url(target, "rt") as f:
            assert f.read() == '{"a": "é"}\n'
        with fs.open_url(target, "rb", compression=None) as f:
            assert gzip.decompress(f.read()) == '{"a": "é"}\n'.encode()
        fs.makedirs(fs.join(root, "made", "here"))
        assert fs.isdir(fs.join(root, "made", "here"))


def test_list_files(tmp_path):
    for root in (str(tmp_path / "t"), _mem()):
        for name in ("b.jsonl", "a.parquet", "sub/c.jsonl.gz", "sub/deeper/d.pq", "x.txt", ".hidden.jsonl",
                     ".cache/e.jsonl"):
            with fs.open_url(fs.join(root, name), "wb", compression=None) as f:
                f.write(b"1")
        got = fs.list_files(root, (".jsonl", ".jsonl.gz", ".parquet", ".pq"))
        assert got == [fs.join(root, n) for n in ("a.parquet", "b.jsonl", "sub/c.jsonl.gz", "sub/deeper/d.pq")]
        assert fs.list_files(fs.join(root, "x.txt"), (".jsonl",)) == [fs.join(root, "x.txt")]  # a file is itself
        assert fs.list_files(fs.join(root, "missing"), (".jsonl",)) == []
        assert len(fs.list_files(root)) == 5


def test_pyarrow_fs_round_trip(tmp_path):
    table = pa.table({"x": [1, 2, 3]})
    for root in (str(tmp_path), _mem()):
        pafs, path = fs.pyarrow_fs(fs.join(root, "t.parquet"))
        pq.write_table(table, path, filesystem=pafs)
        assert pq.read_table(path, filesystem=pafs).equals(table)
        with fs.open_url(fs.join(root, "t.parquet"), "rb") as f:
            assert pq.read_table(f).equals(table)


def test_s3_endpoint_from_environment(monkeypatch):
    for var in fs.S3_ENDPOINT_VARS:
        monkeypatch.delenv(var, raising=False)
    assert "client_kwargs" not in fs.storage_options("s3://b/k")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    opts = fs.storage_options("s3://b/k")
    assert opts["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:1"}
    assert opts["use_listings_cache"] is False
    monkeypatch.setenv("STREAMMINE_S3_ENDPOINT", "http://127.0.0.1:2")  # the project's own variable wins
    assert fs.storage_options("s3://b/k")["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:2"}
    # only the endpoint is passed: credentials stay in boto's chain, never in our options
    assert not any("key" in k.lower() or "secret" in k.lower() or "token" in k.lower() for k in opts)
    assert fs.storage_options("memory://x") == {}


def test_s3_write_then_list_and_pyarrow(s3_bucket):
    root = f"s3://{s3_bucket}/data"
    filesystem, path = fs.resolve(root)
    assert filesystem.client_kwargs.get("endpoint_url", "").startswith("http://127.0.0.1")
    fs.makedirs(root)  # a no-op on object stores
    assert fs.list_files(root, (".txt",)) == []
    for name in ("b.txt", "a.txt", "sub/c.txt"):
        with fs.open_url(fs.join(root, name), "wt") as f:
            f.write(name)
        # the same process writes then lists: the listing must not be stale
        assert fs.join(root, name) in fs.list_files(root, (".txt",))
    assert fs.list_files(root, (".txt",)) == [fs.join(root, n) for n in ("a.txt", "b.txt", "sub/c.txt")]
    with fs.open_url(fs.join(root, "sub/c.txt"), "rt") as f:
        assert f.read() == "sub/c.txt"
    assert fs.exists(fs.join(root, "a.txt")) and not fs.exists(fs.join(root, "zz.txt"))
    table = pa.table({"id": ["a", "b"]})
    pafs, p = fs.pyarrow_fs(fs.join(root, "t.parquet"))
    pq.write_table(table, p, filesystem=pafs)
    assert pq.read_table(p, filesystem=pafs).equals(table)
    fs.remove(fs.join(root, "a.txt"))
    assert fs.list_files(root, (".txt",)) == [fs.join(root, n) for n in ("b.txt", "sub/c.txt")]


def test_unknown_protocol_is_a_clear_error():
    from streammine.errors import StreamMineError
    with pytest.raises(StreamMineError, match="nosuchproto://x"):
        fs.resolve("nosuchproto://x/y")
