"""Precomputed vectors: the corpus source of ``encoder.kind: precomputed`` (Parquet ``id``/``vector`` files, or
``.npy`` arrays with ``.ids.txt`` beside them), standing in for the input format's text corpus.

Each file is a split (a large Parquet file: runs of row groups). The records' ``row`` counts rows across all the
files (``file_idx`` is 0), and an ``.npy`` file without ids numbers its rows across the ``.npy`` files: the planner
reads each file's row count from its metadata (Parquet footer, ``.npy`` header) so a split knows where it starts.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
from typing import Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ...errors import InputError
from ...keys import key64
from .. import fs
from ..records import Quarantine
from .rows import (DEFAULT_BLOCK_ROWS, PARQUET_SUFFIXES, VECTOR_SUFFIXES, Split, _open_parquet, _reporter,
                   _text_lines)
from .base import parquet_row_group_splits


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


def _parquet_vectors(url: str, dim: _Dim, block_rows: int, check_finite: bool = True,
                     split: Optional[Split] = None):
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
        row0, groups = 0, {}
        if split is not None and not split.whole:
            row0 = split.base
            groups = {"row_groups": range(split.start, parquet.num_row_groups if split.stop is None else split.stop)}
        for batch in parquet.iter_batches(batch_size=block_rows, columns=["id", "vector"], **groups):
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


class _NpyIds:
    """The ids of an ``.npy`` file's rows, read from its ``.ids.txt`` as the rows are (``take(k)``: the next k),
    so that no task holds every id of a large file; without the file the ids are the row numbers."""

    def __init__(self, url: str, n: int, first_row_id: int):
        self.url, self.n, self.first_row_id = url, n, first_row_id
        self.ids_url = url[: -len(".npy")] + ".ids.txt"
        self.lines = _text_lines(self.ids_url, _reporter(None, "vectors")) if fs.exists(self.ids_url) else None
        self.taken = 0

    def take(self, k: int) -> List[str]:
        start, self.taken = self.taken, self.taken + k
        if self.lines is None:
            return [str(self.first_row_id + i) for i in range(start, start + k)]
        ids = []
        for line_no, location, text in self.lines:
            if line_no != start + len(ids) + 1:
                raise InputError(f"{self.ids_url}:{start + len(ids) + 1}", "empty id")
            ids.append(text.strip())
            if not ids[-1]:
                raise InputError(location, "empty id")
            if len(ids) == k:
                break
        if len(ids) < k:
            have = start + len(ids)
            raise InputError(f"{self.url}:row {have}",
                             f"no id for this row: {self.ids_url} has {have} ids for {self.n} rows")
        return ids

    def finish(self) -> None:
        """Every row has had its id: one more line is an error naming it."""
        if self.lines is None:
            return
        for line_no, location, text in self.lines:
            extra = self.n + 1 + sum(1 for _ in self.lines)
            raise InputError(f"{self.ids_url}:{self.n + 1}", f"{extra - 1} ids for the {self.n} rows of {self.url}")


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
        ids = _NpyIds(url, n, first_row_id)
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
            yield ids.take(rows), vectors, [f"{url}:row {r + i}" for i in range(rows)]
        ids.finish()


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
        for chunk in _file_vectors(file_url, expected, block_rows, next_row_id, check_finite):
            next_row_id += len(chunk[0]) if file_url.endswith(".npy") else 0
            yield chunk


def _vector_files(url: str) -> List[str]:
    files = fs.list_files(url, VECTOR_SUFFIXES)
    if not files:
        raise InputError(url, "not found" if not fs.exists(url) else "no .parquet or .npy files in this directory")
    return files


def _npy_shape(url: str) -> Tuple[int, int]:
    fmt = np.lib.format
    with fs.open_url(url, "rb", compression=None) as f:
        version = fmt.read_magic(f)
        shape = (fmt.read_array_header_1_0(f) if version == (1, 0) else fmt.read_array_header_2_0(f)
                 if version == (2, 0) else fmt._read_array_header(f, version))[0]
    return int(shape[0]), int(shape[1])


def _file_layout(url: str, split_bytes: int) -> Tuple[int, Optional[int], List[Split]]:
    """(rows, the first row's dimension or None, splits) of one vectors file, from its metadata (the first row's
    vector of a Parquet file is read: one page)."""
    if url.endswith(".npy"):
        n, d = _npy_shape(url)
        return n, (d or None) if n else None, [Split(url)]
    handle, parquet = _open_parquet(url)
    with handle:
        n = parquet.metadata.num_rows
        first = None
        if n:
            batch = next(parquet.iter_batches(batch_size=1, columns=["vector"]), None)
            value = batch.column("vector")[0].as_py() if batch is not None and batch.num_rows else None
            first = len(value) or None if value is not None else None
        big = parquet.metadata.serialized_size + sum(parquet.metadata.row_group(g).total_byte_size
                                                     for g in range(parquet.num_row_groups)) > split_bytes
    return n, first, parquet_row_group_splits(url, 0, split_bytes) if big else [Split(url)]


class PrecomputedVectors:
    """The corpus as precomputed vectors at ``url`` (a file or a directory of them). Picklable."""

    def __init__(self, url: str, check_finite: bool = True, query_url: Optional[str] = None):
        self.url = url
        self.check_finite = check_finite
        self.query_url = query_url

    def source(self) -> str:
        return self.url

    def urls(self) -> List[str]:
        """The corpus and query vectors as the user named them (what preflight checks)."""
        return [self.url, self.query_url]

    def files(self) -> List[str]:
        urls = [self.url]
        ids_file = self.url[: -len(".npy")] + ".ids.txt"
        if self.url.endswith(".npy") and fs.exists(ids_file):  # the ids live beside the vectors
            urls.append(ids_file)
        return urls

    def splits(self, split_bytes: int) -> List[Split]:
        """One split per file (row-group runs of a large Parquet file), each with ``extra = (its first global row,
        its first .npy row id, the first row's dimension and location)``. A file whose metadata cannot be read
        starts one last split that reads it and every later file in order, as a single read does (its read task
        reports the problem)."""
        files = _vector_files(self.url)
        with concurrent.futures.ThreadPoolExecutor(8 if len(files) > 1 and not fs.is_local(self.url) else 1) as pool:
            layouts = list(pool.map(lambda u: _safe_layout(u, split_bytes), files))
        first_dim = None  # (dimension, "the first row (<location>)"), as a single read would take it
        for url, layout in zip(files, layouts):
            if layout is None:
                break
            if layout[0]:
                first_dim = (layout[1], f"the first row ({url}:row 0)") if layout[1] else None
                break
        out: List[Split] = []
        row, npy_row = 0, 0
        for k, (url, layout) in enumerate(zip(files, layouts)):
            if layout is None:
                out.append(Split(url, 0, 0, None, 0, role="tail", extra=(row, npy_row, first_dim, tuple(files[k:]))))
                break
            n, _d, file_splits = layout
            for s in file_splits:
                out.append(Split(s.url, 0, s.start, s.stop, s.base, extra=(row + s.base, npy_row, first_dim, ())))
            row += n
            if url.endswith(".npy"):
                npy_row += n
        return out

    def read(self, splits: List[Split], block_rows: int = DEFAULT_BLOCK_ROWS,
             quarantine: Optional[Quarantine] = None) -> Iterator[pa.Table]:
        """Store records (``doc_id``, ``text_key``, ``file_idx`` 0, ``row``, ``location``, ``vector``) of
        ``splits``; without texts, a document's text key is its id's and its vector's."""
        for split in splits:
            row, npy_row, first_dim, tail = split.extra
            dim = _Dim(None)
            if first_dim is not None:
                dim.dim, dim.source = first_dim
            for ids, vectors, locations in _split_vectors(split, tail, dim, block_rows, npy_row, self.check_finite):
                yield _vector_records(ids, vectors, locations, row)
                row += len(ids)


def _safe_layout(url: str, split_bytes: int):
    try:
        return _file_layout(url, split_bytes)
    except Exception:  # noqa: BLE001 - the read task reads the file and reports what is wrong with it
        return None


def _file_vectors(url: str, dim: "_Dim", block_rows: int, npy_row: int, check_finite: bool,
                  split: Optional[Split] = None):
    """One vectors file (or a Parquet split of it); ``npy_row``: the first row id an .npy file without ids gets."""
    if url.endswith(PARQUET_SUFFIXES):
        yield from _parquet_vectors(url, dim, block_rows, check_finite, split)
    elif url.endswith(".npy"):
        yield from _npy_vectors(url, dim, block_rows, npy_row, check_finite)
    else:
        raise InputError(url, "unsupported vectors format: expected .parquet, .pq or .npy")


def _split_vectors(split: Split, tail: tuple, dim: "_Dim", block_rows: int, npy_row: int, check_finite: bool):
    for url in (tail or (split.url,)):
        for chunk in _file_vectors(url, dim, block_rows, npy_row, check_finite, None if tail else split):
            npy_row += len(chunk[0]) if url.endswith(".npy") else 0
            yield chunk


def _vector_records(ids: List[str], vectors: np.ndarray, locations: List[str], row: int) -> pa.Table:
    from ...vectors import to_arrow
    n = len(ids)
    return pa.table({"doc_id": pa.array(ids, pa.string()),
                     # same id and same vector: the same document listed twice; same id, other vector: a conflict
                     "text_key": pa.array([key64(f"id:{d}:{hashlib.blake2b(v.tobytes(), digest_size=8).hexdigest()}")
                                           for d, v in zip(ids, vectors)], pa.uint64()),
                     "file_idx": pa.array([0] * n, pa.int32()),
                     "row": pa.array(range(row, row + n), pa.int64()),
                     "location": pa.array(locations, pa.string()),
                     "vector": to_arrow(vectors)})
