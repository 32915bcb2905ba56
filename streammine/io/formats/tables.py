"""Tables: Parquet or JSONL files (a file, or a directory of them), the corpus tables of pairs inputs.

A table file is one split, or (larger than the split size) runs of row groups (Parquet) or line-aligned byte
ranges (uncompressed JSONL); see :mod:`.base`.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import pyarrow as pa

from ...config import ColumnsConfig
from ...errors import InputError
from ...keys import content_id
from .. import fs
from ..records import CORPUS_SCHEMA, Quarantine, document_text
from .base import plan_file_splits
from .rows import (DEFAULT_BLOCK_ROWS, PARQUET_SUFFIXES, TABLE_SUFFIXES, Report, Split, _Bad, _Blocks, _corpus_row,
                   _id_field, _json_lines, _open_parquet, _reporter, _str_field)


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



def _iter_table_rows(url: str, report: Report, batch_rows: int = DEFAULT_BLOCK_ROWS,
                     splits: Optional[List[Split]] = None) -> Iterator[Tuple[int, int, str, dict, object]]:
    """(file index, row, location, row dict, raw) over the files of a table URL (or over ``splits`` of them: the
    rows of each split's byte range or row groups, with their true row numbers)."""
    if splits is None:
        splits = [Split(file_url, file_idx) for file_idx, file_url in enumerate(table_files(url))]
    for split in splits:
        file_idx, file_url = split.file_idx, split.url
        if file_url.endswith(PARQUET_SUFFIXES):
            handle, parquet = _open_parquet(file_url)
            with handle:
                row = split.base
                groups = {} if split.whole else {"row_groups": range(split.start, split.stop if split.stop is not None
                                                                      else parquet.num_row_groups)}
                batches = parquet.iter_batches(batch_size=batch_rows, **groups)
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
            for n, location, obj, raw in _json_lines(file_url, report, split.start, split.stop, split.base):
                yield file_idx, n - 1, location, obj, raw


def iter_table_rows(url: str, quarantine: Optional[Quarantine] = None, kind: str = "row"
                    ) -> Iterator[Tuple[str, dict]]:
    """(location, row dict) over a Parquet or JSONL table (a file or a directory of them). Parquet is read in
    record batches; JSONL line by line, its malformed lines reported by line (raised, or quarantined as ``kind``)."""
    for _file_idx, _row, location, obj, _raw in _iter_table_rows(url, _reporter(quarantine, kind)):
        yield location, obj


def iter_corpus_table(url: str, columns: Optional[ColumnsConfig] = None, file_idx_base: int = 0,
                      block_rows: int = DEFAULT_BLOCK_ROWS, quarantine: Optional[Quarantine] = None,
                      splits: Optional[List[Split]] = None) -> Iterator[pa.Table]:
    """A corpus table (Parquet / JSONL, file or directory) as CORPUS_SCHEMA tables.

    Columns from ``columns``: ``text`` (required), ``title`` (optional), ``doc_id``. When ``columns.doc_id`` is None,
    or the first row of a file lacks that column, the file's ids are ``keys.content_id(document_text)``; once a file
    has ids, a row without one is an error. File ``i`` of the table gets ``file_idx = file_idx_base + i``.

    With ``splits`` (of :func:`table_splits`), only their rows, each split's last block flushed at its end; a split
    that starts inside a file looks at the file's first document to know whether the file has ids.
    """
    if splits is not None:
        for split in splits:
            has_ids = None if split.whole else _file_has_ids(split.url, columns or ColumnsConfig())
            yield from _corpus_table_rows(url, columns, file_idx_base, block_rows, quarantine, [split], has_ids)
        return
    yield from _corpus_table_rows(url, columns, file_idx_base, block_rows, quarantine, None, None)


def _first_document_has_ids(obj: dict, columns: ColumnsConfig) -> bool:
    return bool(columns.doc_id) and columns.doc_id in obj


def _document_text_fields(obj: dict, columns: ColumnsConfig) -> Tuple[str, str]:
    text = _str_field(obj, columns.text)
    title = _str_field(obj, columns.title, required=False)
    if not text.strip() and not title.strip():
        raise _Bad("empty document: title and text are empty")
    return text, title


def _file_has_ids(file_url: str, columns: ColumnsConfig) -> Optional[bool]:
    """Whether a table file has ids, decided as the whole-file read decides it: by the file's first row that is a
    document (bad rows before it are skipped silently: the split that holds them reports them)."""
    for _file_idx, _row, _location, obj, _raw in _iter_table_rows(file_url, _reporter(None, "corpus", discard=True),
                                                                  splits=[Split(file_url)]):
        try:
            _document_text_fields(obj, columns)
        except _Bad:
            continue
        return _first_document_has_ids(obj, columns)
    return None


def _corpus_table_rows(url: str, columns: Optional[ColumnsConfig], file_idx_base: int, block_rows: int,
                       quarantine: Optional[Quarantine], splits: Optional[List[Split]],
                       file_has_ids: Optional[bool]) -> Iterator[pa.Table]:
    columns = columns or ColumnsConfig()
    report = _reporter(quarantine, "corpus")
    blocks = _Blocks(CORPUS_SCHEMA, block_rows)
    has_ids: Dict[int, bool] = {}
    if file_has_ids is not None:
        has_ids[splits[0].file_idx] = file_has_ids
    for file_idx, row, location, obj, raw in _iter_table_rows(url, report, block_rows, splits):
        try:
            text, title = _document_text_fields(obj, columns)
            if file_idx not in has_ids:
                has_ids[file_idx] = _first_document_has_ids(obj, columns)
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




def table_splits(url: str, split_bytes: int, file_idx_base: int = 0) -> List[Split]:
    """The splits of a table's files (file ``i`` gets ``file_idx_base + i``)."""
    return plan_file_splits(table_files(url), split_bytes, file_idx_base)
