"""A committed mining output, read without Ray: the parts its manifest names, and their rows.

The manifest (``_parts.json``) is written by :class:`streammine.sink.parts.MinedPartsSink` once every write task
has finished; a part it does not name (a write retried after its worker died) is never read.
"""
from __future__ import annotations

import json
import uuid
from typing import List, Sequence, Union

import pyarrow.parquet as pq

from ..io import fs

PARTS_MANIFEST = "_parts.json"
PartsArg = Union[str, Sequence[str]]


def list_parts(out_url: str) -> list:
    """The committed parts of an output directory (those named in its manifest)."""
    with fs.open_url(fs.join(out_url, PARTS_MANIFEST), "rt") as f:
        return [fs.join(out_url, p["part"]) for p in json.load(f)["parts"]]


def resolve_parts(parts: PartsArg) -> List[str]:
    """Part URLs from a list of part URLs, one part file, or an output directory (its manifest when it has one,
    else every ``*.parquet`` directly inside it, sorted)."""
    if not isinstance(parts, (str, bytes)) and not hasattr(parts, "__fspath__"):
        return [str(p) for p in parts]
    url = str(parts)
    if not fs.isdir(url):
        return [url]
    if fs.exists(fs.join(url, PARTS_MANIFEST)):
        return list_parts(url)
    if fs.exists(fs.join(url, "_log")):  # a serve output: the parts its commit log names
        from .layout import committed_part_urls
        return committed_part_urls(url)
    # only files directly inside: the directory also holds _work/ (embedding store) and export/ subfolders
    base = url.rstrip("/") + "/"
    return [u for u in fs.list_files(url, suffixes=".parquet") if "/" not in u[len(base):]]


def iter_rows(out_url: str, columns=None, batch_rows: int = 4096):
    """Streams the committed rows as pyarrow RecordBatches (never the whole output at once)."""
    for url in list_parts(out_url):
        with fs.open_url(url, "rb") as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=columns)


def part_name(task_idx: int, writer: str) -> str:
    """A part's file name: ``part-<task>-<writer>-<random>.parquet``; ``writer`` is the writing sink's token."""
    return f"part-{task_idx:05d}-{writer}-{uuid.uuid4().hex[:12]}.parquet"


def written_by(name: str, writer: str) -> bool:
    return bool(writer) and name.startswith("part-") and name.endswith(".parquet") and f"-{writer}-" in name


def remove_uncommitted_parts(out_url: str, committed: list, writer: str) -> int:
    """Deletes the part files this writer (its token, see :func:`part_name`) wrote that its manifest does not
    name: a write task retried after its worker or node died may have left one behind. Readers never see them
    (they follow the manifest); this only reclaims the space. A file this writer did not write is never
    touched, whatever its name."""
    filesystem, path = fs.resolve(out_url)
    names = [child.rstrip("/").rsplit("/", 1)[-1] for child in filesystem.ls(path, detail=False)]
    keep = set(committed)
    return fs.remove_quietly(fs.join(out_url, n) for n in names if written_by(n, writer) and n not in keep)
