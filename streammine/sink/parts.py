"""Writing the mined rows: one immutable Parquet part per block, as the stream produces them."""
from __future__ import annotations

import uuid
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink

from ..io import fs
# reading a committed output needs no Ray; re-exported here, where writers and readers have always found them
from .committed import PARTS_MANIFEST, iter_rows, list_parts, part_name, remove_uncommitted_parts  # noqa: F401
from .schema import MINED_SCHEMA


class MinedPartsSink(Datasink):
    """Each write task writes its blocks as one part; the driver records the list of parts when all are done."""

    def __init__(self, out_url: str):
        self.out_url = out_url
        # names every part this sink writes: what it may delete at commit (never a file another writer left)
        self.writer = uuid.uuid4().hex[:8]

    def on_write_start(self, schema=None) -> None:
        fs.makedirs(self.out_url)

    def write(self, blocks: Iterable, ctx) -> dict:
        tables = [b for b in blocks if b.num_rows]
        if not tables:
            return {"part": None, "rows": 0}
        table = pa.concat_tables([t.select(MINED_SCHEMA.names).cast(MINED_SCHEMA) for t in tables])
        name = part_name(ctx.task_idx, self.writer)
        with fs.open_url(fs.join(self.out_url, name), "wb") as f:
            pq.write_table(table, f)
        return {"part": name, "rows": table.num_rows}

    def on_write_complete(self, write_result) -> None:
        parts = sorted((r for r in write_result.write_returns if r["part"]), key=lambda r: r["part"])
        fs.write_json_atomic(fs.join(self.out_url, PARTS_MANIFEST),
                             {"parts": parts, "rows": sum(p["rows"] for p in parts), "writer": self.writer})
        remove_uncommitted_parts(self.out_url, [p["part"] for p in parts], self.writer)
