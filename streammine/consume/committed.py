"""A committed mining output, read without Ray: the parts its manifest names, and their rows.

The manifest (``_parts.json``) is written by :class:`streammine.sink.parts.MinedPartsSink` once every write task
has finished; a part it does not name (a write retried after its worker died) is never read.
"""
from __future__ import annotations

import json
from typing import List, Sequence, Union


from ..io import fs
from ..sink.layout import PARTS_MANIFEST, committed_part_urls

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
        return committed_part_urls(url)
    # only files directly inside: the directory also holds _work/ (embedding store) and export/ subfolders
    base = url.rstrip("/") + "/"
    return [u for u in fs.list_files(url, suffixes=".parquet") if "/" not in u[len(base):]]


def iter_rows(out_url: str, columns=None, batch_rows: int = 4096):
    """Streams the committed rows as pyarrow RecordBatches (never the whole output at once)."""
    from ..sink.mined import read_batches
    for _, _, batch in read_batches(list_parts(out_url), columns, batch_rows):
        yield batch
