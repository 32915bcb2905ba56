"""Writing the mined rows: one immutable Parquet part per block, as the stream produces them."""
from __future__ import annotations

import uuid
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink

from ..io import fs
# reading a committed output needs no Ray (streammine.consume.committed); re-exported here, where writers and
# readers have always found them
from ..consume.committed import iter_rows, list_parts  # noqa: F401
from .layout import PARTS_MANIFEST
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
