"""Input readers: generator functions that stream validated records as pyarrow Tables.

Every reader validates every row. With ``quarantine=None`` (strict mode) the first bad row raises
:class:`~streammine.errors.InputError` naming ``"<file>:<line>"`` (text files, 1-based) or ``"<file>:row <n>"``
(Parquet, 0-based) and the reason. With a :class:`~streammine.io.records.Quarantine` (lenient mode) the row is
recorded there (kind, location, reason, the first 300 characters of the raw row) and reading goes on.

Quarantine kinds: ``corpus`` (corpus rows), ``query`` (queries.jsonl lines), ``qrels`` (qrels lines, and qrels
naming a query that queries.jsonl lacks), ``pairs`` (rows of a pairs table).

Readers are meant to run inside Ray read tasks (see :mod:`streammine.io.datasource`): each one streams its input
file by file, block by block, and keeps in memory only what the format forces it to:

* BEIR queries: the qrels of the split (query id -> positive ids) and the set of query ids seen so far (to report
  duplicates and qrels queries that never appear).
* Pairs: grouping rows by query needs every row of the pairs table, so the pairs reader holds one entry per query
  (its text, positive ids and their locations) before it yields anything; the pairs corpus reader holds the ids of
  the positive texts it has yielded (to deduplicate them). This happens inside the read task, never in the driver.

Not checked here: duplicate document ids (the index shards see all documents and detect them globally) and
positives missing from the corpus (the mining stage reports them, with the location that named them).
"""
from __future__ import annotations

import gzip
import json
import lzma
import math
import re
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..config import ColumnsConfig
from ..errors import ConfigError, InputError
from ..keys import content_id, text_key
from . import fs
from .records import CORPUS_SCHEMA, QUERY_SCHEMA, Quarantine, document_text

DEFAULT_BLOCK_ROWS = 4096
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
TABLE_SUFFIXES = PARQUET_SUFFIXES + JSONL_SUFFIXES
VECTOR_SUFFIXES = PARQUET_SUFFIXES + (".npy",)
QRELS_HEADER_NAMES = ("query-id", "query_id", "queryid", "qid", "query")
_READ_CHUNK = 1 << 20
_RAW_ID = re.compile(r'"_id"\s*:\s*"((?:[^"\\]|\\.)*)"')


# ---- reporting bad rows -------------------------------------------------------------------------------------

class _Bad(Exception):
    """A row failed validation; the message is the reason."""


Report = Callable[[str, str, object], None]


def _reporter(quarantine: Optional[Quarantine], kind: str, discard: bool = False) -> Report:
    """strict (quarantine None): raise; lenient: record; discard: skip silently (rows another reader reports)."""
    def report(location: str, reason: str, raw=None) -> None:
        if discard:
            return
        if quarantine is None:
            raise InputError(location, reason)
        quarantine.add(kind, location, reason, raw)
    return report


def _type_name(value) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number",
            str: "a string", type(None): "null"}.get(type(value), type(value).__name__)


def _check_unicode(value: str, name: str) -> str:
    """A JSON ``\\ud800`` escape decodes to a lone surrogate: a str that is not Unicode text (it cannot be encoded,
    stored or tokenized). The row is bad, and says where."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _Bad(f"field {name!r} holds a lone surrogate {value[e.start]!r} at character {e.start} "
                   f"(not valid Unicode)") from None
    return value


def _id_field(obj: dict, name: str) -> str:
    """An id: a non-empty string (integers are accepted and turned into their decimal string)."""
    if name not in obj:
        raise _Bad(f"missing required field {name!r}")
    value = obj[name]
    if value is None:
        raise _Bad(f"field {name!r} is null")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Bad(f"field {name!r} must be a string, got {_type_name(value)}")
    value = _check_unicode(str(value), name)
    if not value.strip():
        raise _Bad(f"field {name!r} is empty")
    return value


def _str_field(obj: dict, name: Optional[str], required: bool = True) -> str:
    if not name:
        return ""
    if name not in obj or obj[name] is None:
        if required:
            raise _Bad(f"missing required field {name!r}" if name not in obj else f"field {name!r} is null")
        return ""
    value = obj[name]
    if not isinstance(value, str):
        raise _Bad(f"field {name!r} must be a string, got {_type_name(value)}")
    return _check_unicode(value, name)


# ---- building blocks ----------------------------------------------------------------------------------------

class _Blocks:
    """Accumulates rows column-wise and hands out a Table every ``block_rows`` rows."""

    def __init__(self, schema: pa.Schema, block_rows: int):
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        self.schema = schema
        self.block_rows = block_rows
        self._reset()

    def _reset(self) -> None:
        self.columns = {name: [] for name in self.schema.names}
        self.n = 0

    def add(self, *values) -> Optional[pa.Table]:
        for column, value in zip(self.columns.values(), values):
            column.append(value)
        self.n += 1
        return self.flush() if self.n >= self.block_rows else None

    def flush(self) -> Optional[pa.Table]:
        if not self.n:
            return None
        table = pa.Table.from_pydict(self.columns, schema=self.schema)
        self._reset()
        return table


def _corpus_row(blocks: _Blocks, doc_id: str, title: str, text: str, file_idx: int, row: int,
                location: str) -> Optional[pa.Table]:
    return blocks.add(doc_id, title, text, text_key(document_text(title, text)), file_idx, row, location)


# ---- text files ---------------------------------------------------------------------------------------------

# a compressed stream that is truncated or corrupt: what gzip, zlib and fsspec's other codecs raise
_STREAM_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


def open_for_reading(url: str, mode: str = "rb"):
    """fs.open_url, with a missing file or a permission problem as a one-line InputError naming the file."""
    try:
        return fs.open_url(url, mode)
    except PermissionError as e:
        raise InputError(url, f"permission denied ({e.strerror or e})") from None
    except IsADirectoryError:
        raise InputError(url, "is a directory, not a file") from None
    except FileNotFoundError:
        raise InputError(url, "not found") from None


def _iter_lines(url: str) -> Iterator[Tuple[int, bytes]]:
    """(1-based line number, line bytes without the newline) of a (possibly compressed) text file. A compressed
    stream that breaks off raises InputError at the line it broke in: the rest of the file is unreadable, so
    this is an error in lenient mode too (there is no row to skip to)."""
    n = 0
    with open_for_reading(url) as f:
        rest = b""
        while True:
            try:
                chunk = f.read(_READ_CHUNK)
            except _STREAM_ERRORS as e:
                raise InputError(f"{url}:{n + 1}", f"the compressed stream is truncated or corrupt "
                                                   f"({type(e).__name__}: {e}); nothing after this line can be "
                                                   f"read, so it cannot be quarantined: repair or re-create the "
                                                   f"file") from None
            except PermissionError as e:
                raise InputError(url, f"permission denied ({e.strerror or e})") from None
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                n += 1
                yield n, line
        if rest:
            yield n + 1, rest


def _text_lines(url: str, report: Report) -> Iterator[Tuple[int, str, str]]:
    """(line number, location, text) of the non-blank lines; undecodable lines are reported."""
    for n, raw in _iter_lines(url):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        location = f"{url}:{n}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            report(location, f"not valid UTF-8 ({e.reason} at byte {e.start})", raw)
            continue
        if n == 1:
            text = text.lstrip("\ufeff")
        yield n, location, text


def _json_lines(url: str, report: Report) -> Iterator[Tuple[int, str, dict, str]]:
    """(line number, location, object, raw line) of the JSON-object lines of a JSONL file."""
    for n, location, text in _text_lines(url, report):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            report(location, f"malformed JSON: {e.msg} at column {e.colno}", text)
            continue
        if not isinstance(obj, dict):
            report(location, f"expected a JSON object, got {_type_name(obj)}", text)
            continue
        yield n, location, obj, text


def _first_existing(dir_url: str, names: Tuple[str, ...], what: str) -> str:
    for name in names:
        url = fs.join(dir_url, name)
        if fs.exists(url):
            return url
    raise InputError(dir_url, f"no {what} found (looked for {', '.join(names)})")


# ---- BEIR ---------------------------------------------------------------------------------------------------

def beir_corpus_url(dir_url: str) -> str:
    return _first_existing(dir_url, ("corpus.jsonl", "corpus.jsonl.gz"), "corpus")


def beir_queries_url(dir_url: str) -> str:
    return _first_existing(dir_url, ("queries.jsonl", "queries.jsonl.gz"), "queries")


def beir_qrels_url(dir_url: str, split: str) -> str:
    return _first_existing(dir_url, (f"qrels/{split}.tsv", f"qrels/{split}.tsv.gz"), f"qrels for split {split!r}")


def iter_beir_corpus(dir_url: str, file_idx_base: int = 0, block_rows: int = DEFAULT_BLOCK_ROWS,
                     quarantine: Optional[Quarantine] = None) -> Iterator[pa.Table]:
    """The documents of a BEIR directory's ``corpus.jsonl`` (or ``.jsonl.gz``) as CORPUS_SCHEMA tables.

    Each line is ``{"_id": str, "title": str (optional), "text": str, ...}`` (other fields are ignored).
    """
    url = beir_corpus_url(dir_url)
    report = _reporter(quarantine, "corpus")
    blocks = _Blocks(CORPUS_SCHEMA, block_rows)
    for n, location, obj, raw in _json_lines(url, report):
        try:
            doc_id = _id_field(obj, "_id")
            text = _str_field(obj, "text")
            title = _str_field(obj, "title", required=False)
            if not text.strip() and not title.strip():
                raise _Bad("empty document: title and text are empty")
        except _Bad as e:
            report(location, str(e), raw)
            continue
        table = _corpus_row(blocks, doc_id, title, text, file_idx_base, n - 1, location)
        if table is not None:
            yield table
    table = blocks.flush()
    if table is not None:
        yield table


@dataclass
class _Positives:
    ids: List[str]
    locations: List[str]


def read_qrels(url: str, quarantine: Optional[Quarantine] = None,
               non_positive: Optional[Dict[str, str]] = None) -> Dict[str, _Positives]:
    """query id -> its positives (``ids`` and the ``locations`` of the qrels lines naming them), in order of first
    appearance, deduplicated. A header line (``query-id corpus-id score``) is skipped; lines with a score <= 0 are
    not positives: ``non_positive`` (when given) gets the location of the first such line of each query id, so a
    query with no positive at all can be reported by the queries reader."""
    report = _reporter(quarantine, "qrels")
    positives: Dict[str, _Positives] = {}
    first = True
    for n, location, text in _text_lines(url, report):
        fields = [f.strip() for f in text.split("\t")]
        if first:
            first = False
            if fields[0].lower() in QRELS_HEADER_NAMES:
                continue
        if len(fields) != 3:
            report(location, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(fields)}",
                   text)
            continue
        qid, doc_id, score_text = fields
        if not qid or not doc_id:
            report(location, "empty query-id" if not qid else "empty corpus-id", text)
            continue
        try:
            score = float(score_text)
            if not math.isfinite(score):
                raise ValueError(score_text)
        except ValueError:
            report(location, f"score {score_text!r} is not a number", text)
            continue
        if score <= 0:
            if non_positive is not None:
                non_positive.setdefault(qid, location)
            continue
        entry = positives.get(qid)
        if entry is None:
            entry = positives[qid] = _Positives([], [])
        if doc_id not in entry.ids:  # queries have few positives: a list scan is cheaper than a set per query
            entry.ids.append(doc_id)
            entry.locations.append(location)
    return positives


def iter_beir_queries(dir_url: str, split: str = "train", block_rows: int = DEFAULT_BLOCK_ROWS,
                      quarantine: Optional[Quarantine] = None, max_queries: Optional[int] = None
                      ) -> Iterator[pa.Table]:
    """The queries of a BEIR directory that have at least one positive in ``qrels/<split>.tsv``, as QUERY_SCHEMA
    tables in ``queries.jsonl`` order.

    A query of the split whose qrels lines all have a score <= 0 has no positive: it is reported (kind ``query``,
    at its queries.jsonl line, naming the qrels line), never dropped silently. After the last query, every qrels
    query id that ``queries.jsonl`` never named is reported (at the first qrels line naming it); an id on a line
    already reported as malformed is not reported twice. With ``max_queries`` the reader stops after that many
    queries and skips that final check.
    """
    qrels_url = beir_qrels_url(dir_url, split)
    queries_url = beir_queries_url(dir_url)
    non_positive: Dict[str, str] = {}
    positives = read_qrels(qrels_url, quarantine, non_positive)
    report = _reporter(quarantine, "query")
    blocks = _Blocks(QUERY_SCHEMA, block_rows)
    seen: Dict[str, int] = {}  # accepted query id -> its line (memory: one entry per query of the file)
    rejected: set = set()      # ids of lines rejected for their text: not "absent" from queries.jsonl
    yielded = 0
    if max_queries is not None and max_queries <= 0:
        return
    def report_line(location: str, reason: str, raw=None) -> None:
        report(location, reason, raw)
        # a malformed line's query id, if one can be seen in it: that query is not "absent" from queries.jsonl
        m = _RAW_ID.search(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or ""))
        if m:
            rejected.add(m.group(1))

    for n, location, obj, raw in _json_lines(queries_url, report_line):
        try:
            qid = _id_field(obj, "_id")
        except _Bad as e:
            report_line(location, str(e), raw)
            continue
        if qid in seen:
            report(location, f"duplicate query id {qid!r} (first at {queries_url}:{seen[qid]})", raw)
            continue
        try:
            text = _str_field(obj, "text")
            if not text.strip():
                raise _Bad("empty query text")
        except _Bad as e:
            report(location, str(e), raw)
            rejected.add(qid)
            continue
        seen[qid] = n
        pos = positives.get(qid)
        if pos is None:
            if qid in non_positive:
                report(location, f"query {qid!r} has no positive: every qrels line for it has a score <= 0 "
                                 f"(first at {non_positive[qid]}); not mined", raw)
            continue
        table = blocks.add(qid, text, pos.ids, pos.locations, location)
        if table is not None:
            yield table
        yielded += 1
        if max_queries is not None and yielded >= max_queries:
            table = blocks.flush()
            if table is not None:
                yield table
            return
    table = blocks.flush()
    if table is not None:
        yield table
    report_qrels = _reporter(quarantine, "qrels")
    for qid, pos in positives.items():
        if qid not in seen and qid not in rejected:
            report_qrels(pos.locations[0], f"query id {qid!r} is not in {queries_url}", "")


# ---- tables (Parquet / JSONL) -------------------------------------------------------------------------------

def table_files(url: str) -> List[str]:
    """The Parquet / JSONL files of a table URL (a file, or a directory of such files)."""
    files = fs.list_files(url, TABLE_SUFFIXES)
    if not files:
        raise InputError(url, "not found" if not fs.exists(url) else
                         f"no table files ({', '.join(TABLE_SUFFIXES)}) in this directory")
    for f in files:
        if not f.endswith(TABLE_SUFFIXES):
            raise InputError(f, f"unsupported table format: expected one of {', '.join(TABLE_SUFFIXES)}")
    return files


def _open_parquet(url: str):
    import pyarrow.parquet as pq
    filesystem, path = fs.resolve(url)
    try:
        handle = filesystem.open(path, "rb")
    except PermissionError as e:
        raise InputError(url, f"permission denied ({e.strerror or e})") from None
    try:
        return handle, pq.ParquetFile(handle)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        handle.close()
        raise InputError(url, f"not a readable Parquet file ({e})") from None


def _iter_table_rows(url: str, report: Report, batch_rows: int = DEFAULT_BLOCK_ROWS
                     ) -> Iterator[Tuple[int, int, str, dict, object]]:
    """(file index, row, location, row dict, raw) over the files of a table URL."""
    for file_idx, file_url in enumerate(table_files(url)):
        if file_url.endswith(PARQUET_SUFFIXES):
            handle, parquet = _open_parquet(file_url)
            with handle:
                row = 0
                batches = parquet.iter_batches(batch_size=batch_rows)
                while True:
                    try:
                        batch = next(batches, None)
                    except (OSError, pa.ArrowException) as e:
                        # a corrupt page or row group: its rows cannot be told apart, so it cannot be skipped
                        raise InputError(f"{file_url}:row {row}", f"corrupt Parquet data from this row on "
                                                                  f"({e}); cannot be quarantined: repair or "
                                                                  f"re-create the file") from None
                    if batch is None:
                        break
                    for obj in batch.to_pylist():
                        yield file_idx, row, f"{file_url}:row {row}", obj, obj
                        row += 1
        else:
            for n, location, obj, raw in _json_lines(file_url, report):
                yield file_idx, n - 1, location, obj, raw


def iter_table_rows(url: str, quarantine: Optional[Quarantine] = None, kind: str = "row"
                    ) -> Iterator[Tuple[str, dict]]:
    """(location, row dict) over a Parquet or JSONL table (a file or a directory of them). Parquet is read in
    record batches; JSONL line by line, its malformed lines reported by line (raised, or quarantined as ``kind``)."""
    for _file_idx, _row, location, obj, _raw in _iter_table_rows(url, _reporter(quarantine, kind)):
        yield location, obj


def iter_corpus_table(url: str, columns: Optional[ColumnsConfig] = None, file_idx_base: int = 0,
                      block_rows: int = DEFAULT_BLOCK_ROWS, quarantine: Optional[Quarantine] = None
                      ) -> Iterator[pa.Table]:
    """A corpus table (Parquet / JSONL, file or directory) as CORPUS_SCHEMA tables.

    Columns from ``columns``: ``text`` (required), ``title`` (optional), ``doc_id``. When ``columns.doc_id`` is None,
    or the first row of a file lacks that column, the file's ids are ``keys.content_id(document_text)``; once a file
    has ids, a row without one is an error. File ``i`` of the table gets ``file_idx = file_idx_base + i``.
    """
    columns = columns or ColumnsConfig()
    report = _reporter(quarantine, "corpus")
    blocks = _Blocks(CORPUS_SCHEMA, block_rows)
    has_ids: Dict[int, bool] = {}
    for file_idx, row, location, obj, raw in _iter_table_rows(url, report, block_rows):
        try:
            text = _str_field(obj, columns.text)
            title = _str_field(obj, columns.title, required=False)
            if not text.strip() and not title.strip():
                raise _Bad("empty document: title and text are empty")
            if file_idx not in has_ids:
                has_ids[file_idx] = bool(columns.doc_id) and columns.doc_id in obj
            if has_ids[file_idx]:
                doc_id = _id_field(obj, columns.doc_id)
            else:
                doc_id = content_id(document_text(title, text))
        except _Bad as e:
            report(location, str(e), raw)
            continue
        table = _corpus_row(blocks, doc_id, title, text, file_idx_base + file_idx, row, location)
        if table is not None:
            yield table
    table = blocks.flush()
    if table is not None:
        yield table


# ---- pairs --------------------------------------------------------------------------------------------------

@dataclass
class _PairRow:
    file_idx: int
    row: int
    location: str
    query_id: str
    query: str
    positives: List[str]  # ids (columns.positive_id) or texts (columns.positive)
    raw: object


def _positive_list(obj: dict, name: str, as_ids: bool) -> List[str]:
    """A positive (or a list of them) from one pairs row: ids, or non-empty texts."""
    if name not in obj:
        raise _Bad(f"missing required field {name!r}")
    value = obj[name]
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _Bad(f"field {name!r} is an empty list")
    out = []
    for v in values:
        if as_ids:
            out.append(_id_field({name: v}, name))
        else:
            text = _str_field({name: v}, name)
            if not text.strip():
                raise _Bad(f"empty positive text in field {name!r}")
            out.append(text)
    return out


def _check_pair_columns(columns: ColumnsConfig, corpus_url: Optional[str]) -> bool:
    """True when positives are ids."""
    if columns.positive_id:
        if not corpus_url:
            raise ConfigError(f"pairs with positive ids (columns.positive_id={columns.positive_id!r}) need a "
                              "corpus table (input.corpus) that holds those ids")
        return True
    if not columns.positive:
        raise ConfigError("pairs input needs columns.positive (positive texts) or columns.positive_id")
    return False


def _iter_pair_rows(url: str, columns: ColumnsConfig, by_id: bool, report: Report) -> Iterator[_PairRow]:
    for file_idx, row, location, obj, raw in _iter_table_rows(url, report):
        try:
            query = _str_field(obj, columns.query)
            if not query.strip():
                raise _Bad("empty query text")
            query_id = _id_field(obj, columns.query_id) if columns.query_id else content_id(query)
            positives = _positive_list(obj, columns.positive_id if by_id else columns.positive, by_id)
        except _Bad as e:
            report(location, str(e), raw)
            continue
        yield _PairRow(file_idx, row, location, query_id, query, positives, raw)


def iter_pairs_queries(url: str, columns: Optional[ColumnsConfig] = None, corpus_url: Optional[str] = None,
                       block_rows: int = DEFAULT_BLOCK_ROWS, quarantine: Optional[Quarantine] = None,
                       max_queries: Optional[int] = None) -> Iterator[pa.Table]:
    """The queries of an (anchor, positive) pairs table, as QUERY_SCHEMA tables.

    Rows are grouped by query id (``columns.query_id``, else the content hash of the query text) in order of first
    appearance; a query's positives are deduplicated in order of first appearance. Positives are ids
    (``columns.positive_id``; they must be ids of the ``corpus_url`` table) or texts (``columns.positive``; their id
    is ``content_id(text)``, the id :func:`iter_pairs_corpus` gives them). A positive cell may hold one value or a
    list. Grouping holds every query of the table in memory (inside the read task) before the first block.
    """
    columns = columns or ColumnsConfig()
    by_id = _check_pair_columns(columns, corpus_url)
    report = _reporter(quarantine, "pairs")
    groups: Dict[str, list] = {}  # query id -> [query, positive ids, positive locations, location]
    for pair in _iter_pair_rows(url, columns, by_id, report):
        group = groups.get(pair.query_id)
        if group is None:
            group = groups[pair.query_id] = [pair.query, [], [], pair.location]
        elif group[0] != pair.query:
            report(pair.location, f"query id {pair.query_id!r} has a different query text than at {group[3]}",
                   pair.raw)
            continue
        for positive in pair.positives:
            doc_id = positive if by_id else content_id(positive)
            if doc_id not in group[1]:
                group[1].append(doc_id)
                group[2].append(pair.location)
    blocks = _Blocks(QUERY_SCHEMA, block_rows)
    for i, (query_id, (query, positive_ids, positive_locations, location)) in enumerate(groups.items()):
        if max_queries is not None and i >= max_queries:
            break
        table = blocks.add(query_id, query, positive_ids, positive_locations, location)
        if table is not None:
            yield table
    table = blocks.flush()
    if table is not None:
        yield table


def iter_pairs_corpus(url: str, columns: Optional[ColumnsConfig] = None, corpus_url: Optional[str] = None,
                      file_idx_base: int = 0, block_rows: int = DEFAULT_BLOCK_ROWS,
                      quarantine: Optional[Quarantine] = None) -> Iterator[pa.Table]:
    """The documents of a pairs input, as CORPUS_SCHEMA tables.

    With text positives: each distinct positive text once, id ``content_id(text)``, title ``""``, in order of first
    appearance (``file_idx = file_idx_base``, ``row`` = its ordinal among them, ``location`` = the pairs row that
    first named it). Then, when ``corpus_url`` is given, that corpus table (its files numbered from
    ``file_idx_base + 1``), less the documents that repeat a positive text already yielded under the same id.

    Bad pairs rows are reported by :func:`iter_pairs_queries`, which reads the same table: here they raise in
    strict mode but are skipped without a quarantine record in lenient mode, so each is counted once.
    """
    columns = columns or ColumnsConfig()
    by_id = _check_pair_columns(columns, corpus_url)
    yielded: Dict[str, int] = {}  # positive id -> text key (memory: one entry per distinct positive)
    if not by_id:
        report = _reporter(quarantine, "pairs", discard=quarantine is not None)
        blocks = _Blocks(CORPUS_SCHEMA, block_rows)
        for pair in _iter_pair_rows(url, columns, by_id, report):
            for text in pair.positives:
                doc_id = content_id(text)
                if doc_id in yielded:
                    continue
                yielded[doc_id] = text_key(text)
                table = _corpus_row(blocks, doc_id, "", text, file_idx_base, len(yielded) - 1, pair.location)
                if table is not None:
                    yield table
        table = blocks.flush()
        if table is not None:
            yield table
    if corpus_url:
        for table in iter_corpus_table(corpus_url, columns, file_idx_base + 1, block_rows, quarantine):
            if yielded:
                ids = table.column("doc_id").to_pylist()
                keys = table.column("text_key").to_pylist()
                keep = [yielded.get(d) != k for d, k in zip(ids, keys)]
                if not all(keep):
                    table = table.filter(pa.array(keep))
            if table.num_rows:
                yield table


# ---- a run's readers ---------------------------------------------------------------------------------------

def corpus_reader(input_cfg) -> tuple:
    """(reader function, its keyword arguments) for a run's corpus documents: BEIR's corpus file, or the documents
    of a pairs input (its positive texts, or its separate corpus table). The corpus pass and the cross-encoder's
    text lookup read through this one choice."""
    if input_cfg.format == "beir":
        return iter_beir_corpus, {"dir_url": input_cfg.path}
    return iter_pairs_corpus, {"url": input_cfg.path, "columns": input_cfg.columns, "corpus_url": input_cfg.corpus}


def corpus_texts(input_cfg) -> Dict[str, str]:
    """doc id -> the document's text as it is embedded (title + text), for the whole corpus of a run's input; the
    first row of an id wins, as in the index. Bad rows raise in a strict run; a lenient run skips them here (the
    corpus pass quarantined and counted them). Memory: the corpus text."""
    reader, kwargs = corpus_reader(input_cfg)
    texts: Dict[str, str] = {}
    for block in reader(quarantine=Quarantine() if input_cfg.lenient else None, **kwargs):
        for doc_id, title, text in zip(block.column("doc_id").to_pylist(), block.column("title").to_pylist(),
                                       block.column("text").to_pylist()):
            texts.setdefault(doc_id, document_text(title, text))
    return texts


def query_reader(input_cfg, block_rows: int) -> tuple:
    """(reader function, its keyword arguments) for a run's queries (with their positives)."""
    i = input_cfg
    if i.format == "beir":
        return iter_beir_queries, {"dir_url": i.path, "split": i.split, "max_queries": i.max_queries,
                                   "block_rows": block_rows}
    return iter_pairs_queries, {"url": i.path, "columns": i.columns, "corpus_url": i.corpus,
                                "max_queries": i.max_queries, "block_rows": block_rows}


# ---- precomputed vectors ------------------------------------------------------------------------------------

class _Dim:
    """The expected vector dimension: given, or taken from the first row seen."""

    def __init__(self, dim: Optional[int]):
        self.dim = dim
        self.source = "dim" if dim is not None else None

    def check(self, d: int, location: str) -> None:
        if d == 0:
            raise InputError(location, "empty vector")
        if self.dim is None:
            self.dim, self.source = d, f"the first row ({location})"
        elif d != self.dim:
            if self.source == "dim":
                raise InputError(location, f"wrong dimension: vector has {d} values, expected dim={self.dim}")
            raise InputError(location, f"ragged vectors: vector has {d} values, {self.source} has {self.dim}")


def _check_finite(vectors: np.ndarray, url: str, row0: int) -> None:
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise InputError(f"{url}:row {row0 + int(np.argmax(bad))}", "vector has NaN or infinite values")


def _parquet_vectors(url: str, dim: _Dim, block_rows: int, check_finite: bool = True):
    import pyarrow.compute as pc
    handle, parquet = _open_parquet(url)
    with handle:
        schema = parquet.schema_arrow
        if "id" not in schema.names or "vector" not in schema.names:
            raise InputError(url, f"expected columns 'id' and 'vector', found {schema.names}")
        vtype = schema.field("vector").type
        if not (pa.types.is_list(vtype) or pa.types.is_large_list(vtype) or pa.types.is_fixed_size_list(vtype)) \
                or not pa.types.is_floating(vtype.value_type):
            raise InputError(url, f"column 'vector' must be a list of floats, got {vtype}")
        itype = schema.field("id").type
        if not (pa.types.is_string(itype) or pa.types.is_large_string(itype) or pa.types.is_integer(itype)):
            raise InputError(url, f"column 'id' must be strings, got {itype}")
        row0 = 0
        for batch in parquet.iter_batches(batch_size=block_rows, columns=["id", "vector"]):
            n = batch.num_rows
            ids_arr, vec_arr = batch.column("id"), batch.column("vector")
            if ids_arr.null_count:
                raise InputError(f"{url}:row {row0 + _first_null(ids_arr)}", "id is null")
            if vec_arr.null_count:
                raise InputError(f"{url}:row {row0 + _first_null(vec_arr)}", "vector is null")
            lengths = pc.list_value_length(vec_arr).to_numpy(zero_copy_only=False)
            if n:
                dim.check(int(lengths[0]), f"{url}:row {row0}")
                wrong = lengths != dim.dim
                if wrong.any():
                    i = int(np.argmax(wrong))
                    dim.check(int(lengths[i]), f"{url}:row {row0 + i}")
            values = pc.list_flatten(vec_arr).to_numpy(zero_copy_only=False)
            vectors = np.asarray(values, dtype=np.float32).reshape(n, dim.dim or 0)
            if check_finite:
                _check_finite(vectors, url, row0)
            ids = [str(v) for v in ids_arr.to_pylist()]
            yield ids, vectors, [f"{url}:row {row0 + i}" for i in range(n)]
            row0 += n


def _first_null(arr: pa.Array) -> int:
    return int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))


def _npy_ids(url: str, n: int, first_row_id: int) -> Tuple[List[str], Optional[str]]:
    ids_url = url[: -len(".npy")] + ".ids.txt"
    if not fs.exists(ids_url):
        return [str(first_row_id + i) for i in range(n)], None
    ids = []
    for line_no, location, text in _text_lines(ids_url, _reporter(None, "vectors")):
        if line_no != len(ids) + 1:
            raise InputError(f"{ids_url}:{len(ids) + 1}", "empty id")
        ids.append(text.strip())
        if not ids[-1]:
            raise InputError(location, "empty id")
    if len(ids) < n:
        raise InputError(f"{url}:row {len(ids)}", f"no id for this row: {ids_url} has {len(ids)} ids for {n} rows")
    if len(ids) > n:
        raise InputError(f"{ids_url}:{n + 1}", f"{len(ids)} ids for the {n} rows of {url}")
    return ids, ids_url


def _read_exact(f, nbytes: int) -> bytes:
    parts, left = [], nbytes
    while left > 0:
        chunk = f.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _npy_vectors(url: str, dim: _Dim, block_rows: int, first_row_id: int, check_finite: bool = True):
    fmt = np.lib.format
    with fs.open_url(url, "rb", compression=None) as f:
        try:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                shape, fortran, dtype = fmt._read_array_header(f, version)
        except ValueError as e:
            raise InputError(url, f"not a readable .npy file ({e})") from None
        if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
            raise InputError(url, f"vectors must be float16 or float32 (float64 accepted), got {dtype}")
        if len(shape) != 2:
            raise InputError(url, f"expected a 2-D array (n, dim), got shape {shape}")
        n, d = int(shape[0]), int(shape[1])
        ids, _ids_url = _npy_ids(url, n, first_row_id)
        if n:
            dim.check(d, f"{url}:row 0")
        itemsize = dtype.itemsize
        if fortran:  # column-major: rows are not contiguous, so the whole array is read at once
            data = _read_exact(f, n * d * itemsize)
            if len(data) < n * d * itemsize:
                raise InputError(url, "file is truncated")
            whole = np.frombuffer(data, dtype=dtype).reshape((d, n)).T
        for r in range(0, n, block_rows):
            rows = min(block_rows, n - r)
            if fortran:
                vectors = whole[r:r + rows].astype(np.float32)
            else:
                data = _read_exact(f, rows * d * itemsize)
                if len(data) < rows * d * itemsize:
                    raise InputError(f"{url}:row {r + len(data) // (d * itemsize)}", "file is truncated")
                vectors = np.frombuffer(data, dtype=dtype).reshape(rows, d).astype(np.float32)
            if check_finite:
                _check_finite(vectors, url, r)
            yield ids[r:r + rows], vectors, [f"{url}:row {r + i}" for i in range(rows)]


def iter_vectors(url: str, dim: Optional[int] = None, block_rows: int = DEFAULT_BLOCK_ROWS,
                 check_finite: bool = True) -> Iterator[Tuple[List[str], np.ndarray, List[str]]]:
    """Precomputed embeddings as (ids, float32 vectors (n, d), locations) chunks of at most ``block_rows``.

    ``url``: a Parquet file with columns ``id`` (string) and ``vector`` (list / fixed-size list of floats), a
    ``.npy`` file (float32 / float16, shape (n, d)) whose ids are in a sibling ``<name>.ids.txt`` (one per line;
    without it the ids are the row numbers, counted across the files of a directory), or a directory of such files.
    Any bad vector is an error naming its file and row (also in lenient runs): wrong dimension (against ``dim``, else
    the first row), ragged rows, null, NaN or infinite values, id count mismatch. ``check_finite=False`` leaves
    NaN/inf rows to the caller (lenient corpus runs: the index shard quarantines them with their location).
    """
    files = fs.list_files(url, VECTOR_SUFFIXES)
    if not files:
        raise InputError(url, "not found" if not fs.exists(url) else "no .parquet or .npy files in this directory")
    expected = _Dim(dim)
    next_row_id = 0
    for file_url in files:
        if file_url.endswith(PARQUET_SUFFIXES):
            yield from _parquet_vectors(file_url, expected, block_rows, check_finite)
        elif file_url.endswith(".npy"):
            for chunk in _npy_vectors(file_url, expected, block_rows, next_row_id, check_finite):
                next_row_id += len(chunk[0])
                yield chunk
        else:
            raise InputError(file_url, "unsupported vectors format: expected .parquet, .pq or .npy")


__all__ = ["DEFAULT_BLOCK_ROWS", "iter_beir_corpus", "iter_beir_queries", "read_qrels", "iter_table_rows",
           "iter_corpus_table", "iter_pairs_queries", "iter_pairs_corpus", "iter_vectors", "table_files",
           "beir_corpus_url", "beir_queries_url", "beir_qrels_url"]
