"""The mined output, read back: one reader of its Parquet parts and one typed row, for every consumer.

Every consumer of a mining output (the exporters, ``streammine eval``'s training rows, the report, the committed
snapshot, serve's counts, the trainer feed) reads the parts through :func:`read_batches`, and those that want
rows through :func:`iter_mined_rows` (:class:`MinedRow`). This is the one place that knows which columns an
older output may lack and how scores align with ids:

* the row columns (``ROW_COLUMNS``) are in every output a streammine version wrote: a part without one is not a
  mining output (``StreamMineError`` naming the part and the column);
* every other column (``MINED_SCHEMA``'s later additions: a cross-encoder's scores, ``prompt``, supplied labels)
  may be absent from an older part: it reads as null;
* a score pair (``SCORE_COLUMNS``) is per row either absent (null) or aligned with the ids, one score each:
  anything else is an error naming the part and the query, never a silent misalignment.
"""
from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StreamMineError
from ..io import fs

ROW_COLUMNS = ["query_id", "query", "positive_ids", "negative_ids"]
BATCH_ROWS = 1024
# where each kind of score is in the mined output: (positive column, negative column)
SCORE_COLUMNS = {"cross-encoder": ("positive_ce_scores", "negative_ce_scores"),
                 "bi-encoder": ("positive_scores", "negative_scores")}
_WHAT_WRITES = {"cross-encoder": "a cross-encoder (mining.cross_encoder.model)",
                "bi-encoder": "a streammine version that writes them"}


def read_batches(part_urls: Iterable[str], columns: Optional[Sequence[str]] = None, batch_rows: int = BATCH_ROWS,
                 required: Sequence[str] = (), pre_buffer: bool = True
                 ) -> Iterator[Tuple[str, List[str], pa.RecordBatch]]:
    """(part URL, the asked columns this part has, record batch) over every part in order, a batch at a time.

    ``columns``: the columns to read (None: all); those a part lacks are left out of its batches (the caller
    reads them as null). ``required``: columns a part must have. ``pre_buffer=False`` for a part still being
    tailed (the trainer feed)."""
    for url in part_urls:
        with fs.open_url(url, "rb") as f:
            parquet = pq.ParquetFile(f, pre_buffer=pre_buffer)
            have = parquet.schema_arrow.names
            missing = [c for c in required if c not in have]
            if missing:
                raise StreamMineError(f"{url}: not a streammine mining output part (no column {missing[0]!r})")
            present = list(have) if columns is None else [c for c in columns if c in have]
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=present):
                yield url, present, batch


def column_values(batch: pa.RecordBatch, name: str) -> list:
    """A column of ``batch`` as Python values; all None where the part has no such column."""
    return batch.column(name).to_pylist() if name in batch.schema.names else [None] * batch.num_rows


class MinedRow:
    """One mined query. ``negative_ids`` keep the output's order (hard negatives by rank, then random ones);
    ``prompt``: the query's own prompt where the output has one. ``scores(source)``: that source's
    (positive scores, negative scores), aligned with the ids, or None where the row has none."""
    __slots__ = ("query_id", "query", "positive_ids", "negative_ids", "prompt", "_scores", "part_url")

    def __init__(self, query_id, query, positive_ids, negative_ids, prompt=None, scores=None, part_url=""):
        self.query_id, self.query = query_id, query
        self.positive_ids, self.negative_ids = positive_ids or [], negative_ids or []
        self.prompt, self.part_url = prompt, part_url
        self._scores: Dict[str, Optional[tuple]] = dict(scores or {})
        for source, pair in self._scores.items():
            if pair is not None and (len(pair[0]) != len(self.positive_ids)
                                     or len(pair[1]) != len(self.negative_ids)):
                pos, neg = SCORE_COLUMNS[source]
                raise StreamMineError(f"{part_url}: query {query_id!r}: {pos}/{neg} are not aligned with its ids")

    def scores(self, source: str) -> Optional[tuple]:
        return self._scores.get(source)

    def require_scores(self, source: str) -> tuple:
        """``scores(source)``, or an error saying the output was not mined with them."""
        pair = self._scores.get(source)
        if pair is None:
            pos, neg = SCORE_COLUMNS[source]
            raise StreamMineError(f"{self.part_url}: query {self.query_id!r} has no {pos}/{neg}: was the output "
                                  f"mined with {_WHAT_WRITES[source]}?")
        return pair


def iter_mined_rows(part_urls: Iterable[str], sources: Sequence[str] = (), batch_rows: int = BATCH_ROWS
                    ) -> Iterator[MinedRow]:
    """Every mined row of the parts, in order, with the score pairs of ``sources`` (keys of SCORE_COLUMNS)."""
    score_names = [c for s in sources for c in SCORE_COLUMNS[s]]
    for url, _, batch in read_batches(part_urls, ROW_COLUMNS + ["prompt"] + score_names, batch_rows,
                                      required=ROW_COLUMNS):
        cols = {name: column_values(batch, name) for name in ROW_COLUMNS + ["prompt"] + score_names}
        for i in range(batch.num_rows):
            pairs = {}
            for s in sources:
                pos, neg = (cols[c][i] for c in SCORE_COLUMNS[s])
                pairs[s] = None if pos is None or neg is None else (pos, neg)
            yield MinedRow(cols["query_id"][i], cols["query"][i], cols["positive_ids"][i], cols["negative_ids"][i],
                           cols["prompt"][i], pairs, url)
