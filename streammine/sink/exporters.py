"""Exporters: the mined Parquet output -> files that trainers load unchanged.

* ``export_st_triplet``  -> Parquet ``anchor, positive, negative``: one row per (query, positive, negative), in the
  order sentence-transformers' ``mine_hard_negatives(output_format="triplet")`` writes them (per query: for each
  positive, every negative in rank order).
* ``export_st_ntuple``   -> Parquet ``anchor, positive, negative_1 .. negative_n``: one row per (query, positive)
  with exactly ``n`` negatives, like ``output_format="n-tuple"``.
* ``export_flagembedding`` -> JSONL ``{"query", "pos": [...], "neg": [...]}``: one line per query
  (FlagEmbedding's ``hn_mine.py`` output / finetune input).

The ST files load with ``datasets.load_dataset("parquet", data_files=...)`` and feed
``MultipleNegativesRankingLoss`` directly (column order anchor, positive, negatives...).

All exporters stream: they read the parts one record batch at a time (``ParquetFile.iter_batches``, only the
columns they need) and append to the output as they go, so memory is one batch plus the caller's ``texts``
(doc id -> document text) map. Every exporter returns counts, including how many queries it skipped and why:
nothing is dropped silently.
"""
from __future__ import annotations

import json
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import StreamMineError
from ..io import fs
from ..consume.committed import resolve_parts  # noqa: F401  (part of this module's API: exporters take what it takes)

PartsArg = Union[str, Sequence[str]]
READ_COLUMNS = ["query_id", "query", "positive_ids", "negative_ids"]
BATCH_ROWS = 1024


class MissingTextError(StreamMineError, KeyError):
    """A doc id in the mined output has no entry in the ``texts`` map given to an exporter."""

    def __init__(self, doc_id: str, part_url: str, query_id: str):
        self.doc_id, self.part_url, self.query_id = doc_id, part_url, query_id
        super().__init__(doc_id)

    def __str__(self) -> str:  # KeyError's str() would only repr the key
        return (f"{self.part_url}: document id {self.doc_id!r} (query {self.query_id!r}) is not in the texts map; "
                f"was the corpus used for mining the same one the texts were built from?")

    def __reduce__(self):  # survive pickling through Ray
        return (type(self), (self.doc_id, self.part_url, self.query_id))


# ---- reading the mined output --------------------------------------------------------------------------------

def iter_mined_batches(part_urls: Iterable[str], columns: List[str]) -> Iterator[Tuple[str, pa.RecordBatch]]:
    """(part URL, record batch) over every part, a batch at a time."""
    for url in part_urls:
        with fs.open_url(url, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                yield url, batch


class QueryRow:
    """One mined query with its texts resolved; ``negative_ids`` keep the output's order (by rank)."""
    __slots__ = ("query_id", "query", "positive_ids", "negative_ids")

    def __init__(self, query_id, query, positive_ids, negative_ids):
        self.query_id, self.query = query_id, query
        self.positive_ids, self.negative_ids = positive_ids or [], negative_ids or []


def iter_query_rows(part_urls: Iterable[str]) -> Iterator[Tuple[str, QueryRow]]:
    for url, batch in iter_mined_batches(part_urls, READ_COLUMNS):
        columns = [batch.column(name).to_pylist() for name in READ_COLUMNS]
        for values in zip(*columns):
            yield url, QueryRow(*values)


def text_lookup(texts: Mapping[str, str]) -> Callable[[str, str, str], str]:
    """lookup(doc_id, part_url, query_id) -> text, raising MissingTextError that names the id and the part."""
    def lookup(doc_id: str, part_url: str, query_id: str) -> str:
        try:
            return texts[doc_id]
        except KeyError:
            raise MissingTextError(doc_id, part_url, query_id) from None
    return lookup


def max_negatives(part_urls: Sequence[str]) -> int:
    """The widest negative list in the output (one cheap pass over a single column): the n-tuple width."""
    widest = 0
    for _, batch in iter_mined_batches(part_urls, ["negative_ids"]):
        if batch.num_rows:
            widest = max(widest, int(pc.max(pc.list_value_length(batch.column("negative_ids"))).as_py() or 0))
    return widest


# ---- writing -------------------------------------------------------------------------------------------------

class ParquetRowWriter:
    """Buffers rows (dicts of strings) and appends them to a Parquet file as row groups."""

    def __init__(self, file, schema: pa.Schema, rows_per_group: int = 4096):
        self.schema, self.rows_per_group = schema, rows_per_group
        self.writer = pq.ParquetWriter(file, schema)
        self.buffer: Dict[str, list] = {name: [] for name in schema.names}
        self.rows = 0

    def add(self, row: Mapping[str, str]) -> None:
        for name in self.schema.names:
            self.buffer[name].append(row[name])
        self.rows += 1
        if len(self.buffer[self.schema.names[0]]) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if self.buffer[self.schema.names[0]]:
            self.writer.write_table(pa.table(self.buffer, schema=self.schema))
            self.buffer = {name: [] for name in self.schema.names}

    def close(self) -> None:
        self.flush()
        self.writer.close()  # an empty output still gets a valid file with the schema

    def __enter__(self) -> "ParquetRowWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.writer.close()  # before the file handle closes, else pyarrow writes to a closed file on GC


def string_schema(names: List[str]) -> pa.Schema:
    return pa.schema([(name, pa.string()) for name in names])


def ntuple_columns(num_negatives: int) -> List[str]:
    return ["anchor", "positive"] + [f"negative_{i}" for i in range(1, num_negatives + 1)]


def _write_guarded(out_url: str, mode: str, write: Callable) -> dict:
    """Runs ``write(file)``; on failure removes the partial output so no half file looks like a finished one."""
    try:
        with fs.open_url(out_url, mode) as f:
            return write(f)
    except BaseException:
        try:
            if fs.exists(out_url):
                fs.remove(out_url)
        except Exception:
            pass
        raise


def _new_counts(fmt: str) -> dict:
    return {"format": fmt, "queries_read": 0, "queries_written": 0, "rows_written": 0, "queries_skipped": {}}


def _skip(counts: dict, reason: str) -> None:
    counts["queries_skipped"][reason] = counts["queries_skipped"].get(reason, 0) + 1


def _finish(counts: dict) -> dict:
    counts["queries_skipped_total"] = sum(counts["queries_skipped"].values())
    return counts


# ---- the exporters -------------------------------------------------------------------------------------------
# Each format is a function QueryRow -> (output rows, skip reason or None); the drivers below do the streaming,
# the counting and the file handling.

RowsOrSkip = Tuple[List[dict], Optional[str]]


def _export_parquet(part_urls: List[str], out_url: str, columns: List[str], counts: dict,
                    rows_for: Callable[[str, QueryRow], RowsOrSkip]) -> dict:
    def write(f) -> dict:
        with ParquetRowWriter(f, string_schema(columns)) as out:
            for url, row in iter_query_rows(part_urls):
                for record in _count_query(counts, rows_for(url, row)):
                    out.add(record)
        counts["rows_written"] = out.rows
        return _finish(counts)
    return _write_guarded(out_url, "wb", write)


def _export_jsonl(part_urls: List[str], out_url: str, counts: dict,
                  rows_for: Callable[[str, QueryRow], RowsOrSkip]) -> dict:
    def write(f) -> dict:
        for url, row in iter_query_rows(part_urls):
            for record in _count_query(counts, rows_for(url, row)):
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                counts["rows_written"] += 1
        return _finish(counts)
    return _write_guarded(out_url, "wt", write)


def _count_query(counts: dict, rows_or_skip: RowsOrSkip) -> List[dict]:
    records, skipped_because = rows_or_skip
    counts["queries_read"] += 1
    if skipped_because:
        _skip(counts, skipped_because)
        return []
    counts["queries_written"] += 1
    return records


def unpairable(row: QueryRow) -> Optional[str]:
    """Why no (query, positive, negative) example can be formed from this row, or None."""
    if not row.positive_ids:
        return "no_positive"
    if not row.negative_ids:
        return "no_negatives"
    return None


def export_st_triplet(parts_url_or_paths: PartsArg, texts: Mapping[str, str], out_url: str) -> dict:
    """Parquet (anchor, positive, negative): every positive paired with every negative of its query.

    Skipped (and counted): queries with no positive, queries with no negative (no triplet can be formed)."""
    lookup = text_lookup(texts)

    def rows_for(url: str, row: QueryRow) -> RowsOrSkip:
        reason = unpairable(row)
        if reason:
            return [], reason
        negatives = [lookup(d, url, row.query_id) for d in row.negative_ids]
        return [{"anchor": row.query, "positive": lookup(pid, url, row.query_id), "negative": negative}
                for pid in row.positive_ids for negative in negatives], None

    return _export_parquet(resolve_parts(parts_url_or_paths), out_url, ["anchor", "positive", "negative"],
                           _new_counts("st-triplet"), rows_for)


def export_st_ntuple(parts_url_or_paths: PartsArg, texts: Mapping[str, str], out_url: str,
                     num_negatives: Optional[int] = None) -> dict:
    """Parquet (anchor, positive, negative_1 .. negative_n): one row per (query, positive), exactly n negatives.

    ``num_negatives`` None: n = the widest negative list in the output (the mined ``num_negatives`` unless every
    query came up short). The format is fixed-width, so queries with fewer than n negatives are skipped and counted
    (``queries_skipped["short_of_negatives"]``), as sentence-transformers drops them too; a query with more than n
    keeps its first n (best-ranked)."""
    part_urls = resolve_parts(parts_url_or_paths)
    n = max_negatives(part_urls) if num_negatives is None else int(num_negatives)
    if n < 1:
        raise ValueError(f"n-tuple export needs at least one negative per row; got num_negatives={n}"
                         + (" (no query in the output has any negative)" if num_negatives is None else ""))
    lookup = text_lookup(texts)
    columns = ntuple_columns(n)

    def rows_for(url: str, row: QueryRow) -> RowsOrSkip:
        if not row.positive_ids:
            return [], "no_positive"
        if len(row.negative_ids) < n:
            return [], "short_of_negatives"
        negatives = [lookup(d, url, row.query_id) for d in row.negative_ids[:n]]
        return [dict(zip(columns, [row.query, lookup(pid, url, row.query_id)] + negatives))
                for pid in row.positive_ids], None

    return _export_parquet(part_urls, out_url, columns, dict(_new_counts("st-ntuple"), num_negatives=n), rows_for)


def export_flagembedding(parts_url_or_paths: PartsArg, texts: Mapping[str, str], out_url: str) -> dict:
    """JSONL ``{"query": str, "pos": [texts], "neg": [texts]}``, one line per query.

    Queries short of negatives are kept (FlagEmbedding's trainer repeats negatives up to train_group_size); skipped
    and counted: no positive (it needs pos[0]), no negatives at all (its sampler divides by len(neg))."""
    lookup = text_lookup(texts)

    def rows_for(url: str, row: QueryRow) -> RowsOrSkip:
        reason = unpairable(row)
        if reason:
            return [], reason
        return [{"query": row.query,
                 "pos": [lookup(d, url, row.query_id) for d in row.positive_ids],
                 "neg": [lookup(d, url, row.query_id) for d in row.negative_ids]}], None

    return _export_jsonl(resolve_parts(parts_url_or_paths), out_url, _new_counts("flagembedding"), rows_for)


EXPORTERS = {"st-triplet": export_st_triplet, "st-ntuple": export_st_ntuple, "flagembedding": export_flagembedding}
