"""Writing the mined rows: one immutable Parquet part per block, as the stream produces them."""
from __future__ import annotations

import json
import uuid
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink

from ..io import fs
from .schema import MINED_SCHEMA

PARTS_MANIFEST = "_parts.json"


class MinedPartsSink(Datasink):
    """Each write task writes its blocks as one part; the driver records the list of parts when all are done."""

    def __init__(self, out_url: str):
        self.out_url = out_url

    def on_write_start(self, schema=None) -> None:
        fs.makedirs(self.out_url)

    def write(self, blocks: Iterable, ctx) -> dict:
        tables = [b for b in blocks if b.num_rows]
        if not tables:
            return {"part": None, "rows": 0}
        table = pa.concat_tables([t.select(MINED_SCHEMA.names).cast(MINED_SCHEMA) for t in tables])
        name = f"part-{ctx.task_idx:05d}-{uuid.uuid4().hex[:12]}.parquet"
        with fs.open_url(fs.join(self.out_url, name), "wb") as f:
            pq.write_table(table, f)
        return {"part": name, "rows": table.num_rows}

    def on_write_complete(self, write_result) -> None:
        parts = sorted((r for r in write_result.write_returns if r["part"]), key=lambda r: r["part"])
        with fs.open_url(fs.join(self.out_url, PARTS_MANIFEST), "wt") as f:
            json.dump({"parts": parts, "rows": sum(p["rows"] for p in parts)}, f, indent=1)
        remove_uncommitted_parts(self.out_url, [p["part"] for p in parts])


def remove_uncommitted_parts(out_url: str, committed: list) -> int:
    """Deletes part files the manifest does not name: a write task retried after its worker or node died may
    have left one behind. Readers never see them (they follow the manifest); this only reclaims the space."""
    keep = set(committed)
    removed = 0
    filesystem, path = fs.resolve(out_url)
    for child in filesystem.ls(path, detail=False):
        name = child.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("part-") and name.endswith(".parquet") and name not in keep:
            try:
                filesystem.rm(child)
                removed += 1
            except OSError:
                pass
    return removed


def list_parts(out_url: str) -> list:
    """The committed parts of an output directory (those named in its manifest)."""
    with fs.open_url(fs.join(out_url, PARTS_MANIFEST), "rt") as f:
        return [fs.join(out_url, p["part"]) for p in json.load(f)["parts"]]


def iter_rows(out_url: str, columns=None, batch_rows: int = 4096):
    """Streams the committed rows as pyarrow RecordBatches (never the whole output at once)."""
    for url in list_parts(out_url):
        with fs.open_url(url, "rb") as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=columns)
