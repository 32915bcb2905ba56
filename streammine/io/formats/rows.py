"""Row-level parsing shared by the input formats: field checks, bad-row reporting, record blocks, text lines.

Every reader validates every row. With ``quarantine=None`` (strict mode) the first bad row raises
:class:`~streammine.errors.InputError` naming ``"<file>:<line>"`` (text files, 1-based) or ``"<file>:row <n>"``
(Parquet, 0-based) and the reason. With a :class:`~streammine.io.records.Quarantine` (lenient mode) the row is
recorded there (kind, location, reason, the first 300 characters of the raw row) and reading goes on.

Quarantine kinds: ``corpus`` (corpus rows), ``query`` (queries.jsonl lines), ``qrels`` (qrels lines, and qrels
naming a query that queries.jsonl lacks), ``pairs`` (rows of a pairs table).
"""
from __future__ import annotations

import gzip
import json
import lzma
import re
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

import pyarrow as pa

from ...errors import InputError
from ...keys import text_key
from .. import fs
from ..records import Quarantine, document_text

DEFAULT_BLOCK_ROWS = 4096
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
TABLE_SUFFIXES = PARQUET_SUFFIXES + JSONL_SUFFIXES
VECTOR_SUFFIXES = PARQUET_SUFFIXES + (".npy",)
QRELS_HEADER_NAMES = ("query-id", "query_id", "queryid", "qid", "query")
_READ_CHUNK = 1 << 20
_RAW_ID = re.compile(r'"_id"\s*:\s*"((?:[^"\\]|\\.)*)"')



# ---- splits -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """A share of one input file that one read task reads: a whole file, a byte range of an uncompressed text file
    (the lines that start in ``[start, stop)``), or the row groups ``[start, stop)`` of a Parquet file.

    Splits are a pure function of the input files and the split size (never of the cluster), so the records a
    split yields, their ``file_idx``/``row`` (hence corpus ordinals), locations and blocks are the same whichever
    read task reads it. ``base``: the lines (text) or rows (Parquet) of the file before ``start``. ``role`` and
    ``extra``: what a format needs besides (pairs: its positives pass; vectors: global row and id bases)."""
    url: str
    file_idx: int = 0
    start: int = 0
    stop: Optional[int] = None
    base: int = 0
    role: str = ""
    extra: tuple = ()

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop is None


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
        for column in list(self.columns.values())[len(values):]:  # trailing optional columns a reader lacks
            column.append(None)
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


def _iter_lines(url: str, start: int = 0, stop: Optional[int] = None, lines_before: int = 0
                ) -> Iterator[Tuple[int, bytes]]:
    """(1-based line number, line bytes without the newline) of a (possibly compressed) text file. A compressed
    stream that breaks off raises InputError at the line it broke in: the rest of the file is unreadable, so
    this is an error in lenient mode too (there is no row to skip to).

    A byte range ``[start, stop)`` of an uncompressed file (a :class:`Split`) yields the lines that *start* in it
    (the last one read to its end, past ``stop``), numbered from ``lines_before`` (the newlines in
    ``[0, start)``): every line belongs to exactly one range, with its true number."""
    n = lines_before
    skip_partial = False  # the range starts inside a line: that line belongs to the range before
    pos = start           # byte offset of the first byte of ``rest``
    with open_for_reading(url) as f:
        if start:
            f.seek(start - 1)
            before = f.read(1)
            if not before:
                return
            skip_partial = before != b"\n"
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
                line_start, pos = pos, pos + len(line) + 1
                n += 1
                if skip_partial:
                    skip_partial = False
                    continue
                if stop is not None and line_start >= stop:
                    return
                yield n, line
        if rest and not skip_partial and (stop is None or pos < stop):
            yield n + 1, rest


def count_newlines(url: str, start: int, stop: int) -> int:
    """The newlines in bytes ``[start, stop)`` of an uncompressed file (what a later range's line numbers start
    from)."""
    count = 0
    with open_for_reading(url) as f:
        f.seek(start)
        left = stop - start
        while left > 0:
            chunk = f.read(min(_READ_CHUNK * 8, left))
            if not chunk:
                break
            count += chunk.count(b"\n")
            left -= len(chunk)
    return count


def _text_lines(url: str, report: Report, start: int = 0, stop: Optional[int] = None, lines_before: int = 0
                ) -> Iterator[Tuple[int, str, str]]:
    """(line number, location, text) of the non-blank lines (of a byte range: see :func:`_iter_lines`);
    undecodable lines are reported."""
    for n, raw in _iter_lines(url, start, stop, lines_before):
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


def _json_lines(url: str, report: Report, start: int = 0, stop: Optional[int] = None, lines_before: int = 0
                ) -> Iterator[Tuple[int, str, dict, str]]:
    """(line number, location, object, raw line) of the JSON-object lines of a JSONL file (or of a byte range)."""
    for n, location, text in _text_lines(url, report, start, stop, lines_before):
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


