"""The interface every input format implements, and how a format's corpus is cut into splits.

A format (``beir.py``, ``pairs.py``; chosen once by :func:`streammine.io.formats.input_format`) knows its files and
how to turn them into CORPUS_SCHEMA and QUERY_SCHEMA records. The run never asks which format it has: it asks the
format object for read tasks, sources to name in errors, the files that identify the corpus, the query units serve
mines, and the files preflight checks. Precomputed vectors (``vectors.py``) are a corpus source that stands in for
the format's text corpus; the format still provides the queries.

Splits (see :class:`~streammine.io.formats.rows.Split`) are what makes reading scale: every corpus file is one
split, an uncompressed text file larger than the split size is cut into line-aligned byte ranges, a Parquet file
into runs of row groups. A split's records are the same whichever read task reads it (see
:func:`plan_file_splits`), so the number of read tasks never changes what a run computes.
"""
from __future__ import annotations

import concurrent.futures
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import fsspec
import pyarrow as pa

from ...config import InputConfig
from ...errors import StreamMineError
from .. import fs
from ..records import Quarantine, document_text
from .rows import DEFAULT_BLOCK_ROWS, PARQUET_SUFFIXES, Split, _open_parquet, count_newlines

DEFAULT_SPLIT_MB = 64.0


class InputFormat:
    """One input format over a run's :class:`~streammine.config.InputConfig`. Subclasses implement the
    ``text_corpus_*``, query and identity methods; ``vectors`` (a :class:`~.vectors.PrecomputedVectors`) replaces
    the text corpus as the run's corpus when the vectors are precomputed. Picklable (read tasks carry it)."""

    name = ""
    no_query_reason = "the table has no query"   # how a run that found nothing to mine explains it
    units_follow_corpus = True   # serve: a query unit's positives are corpus documents (mined once a store has it)
    labels_kind = "pairs"        # the quarantine kind of a bad label (a positive or supplied negative) of this format

    def __init__(self, input_cfg: InputConfig, vectors=None):
        self.input = input_cfg
        self.vectors = vectors

    @property
    def precomputed(self) -> bool:
        """The corpus (and query) vectors come with the input: no encoder runs."""
        return self.vectors is not None

    # ---- the text corpus (each format) ----------------------------------------------------------------------
    def text_corpus_source(self) -> str:
        """The corpus file (or table) as the user would name it, for errors."""
        raise NotImplementedError

    def text_corpus_files(self) -> List[str]:
        """The URLs (files or directories) whose stamps identify the text corpus."""
        raise NotImplementedError

    def text_corpus_splits(self, split_bytes: int) -> List[Split]:
        raise NotImplementedError

    def read_text_corpus(self, splits: List[Split], block_rows: int = DEFAULT_BLOCK_ROWS,
                         quarantine: Optional[Quarantine] = None) -> Iterator[pa.Table]:
        """The records of ``splits``, in order; each split's last block is flushed at its end (so a split's
        blocks do not depend on which splits a task reads before it)."""
        raise NotImplementedError

    def require_text_corpus(self) -> None:
        """Raises (naming the path) when the text corpus is plainly absent, before a read is attempted."""
        if not fs.exists(self.input.path):
            raise StreamMineError(f"{self.input.path}: not found")

    def corpus_reader(self) -> tuple:
        """(reader function, its keyword arguments): the whole text corpus in one pass, in file order (the
        preflight scan, the texts lookups). ``reader(quarantine=..., block_rows=..., **kwargs)``."""
        raise NotImplementedError

    def corpus_blocks(self, quarantine: Optional[Quarantine] = None,
                      block_rows: int = DEFAULT_BLOCK_ROWS) -> Iterator[pa.Table]:
        reader, kwargs = self.corpus_reader()
        return reader(quarantine=quarantine, block_rows=block_rows, **kwargs)

    def corpus_texts(self, lenient: Optional[bool] = None, only=None) -> Dict[str, str]:
        """doc id -> the document's text as it is embedded (title + text), for the whole text corpus, or for the
        ids in ``only`` (a set); the first row of an id wins, as in the index. Bad rows raise in a strict run; a
        lenient run skips them here (the corpus pass quarantined and counted them). Memory: the texts kept."""
        lenient = self.input.lenient if lenient is None else lenient
        texts: Dict[str, str] = {}
        for block in self.corpus_blocks(quarantine=Quarantine() if lenient else None):
            ids = block.column("doc_id").to_pylist()
            if only is not None:
                rows = [i for i, doc_id in enumerate(ids) if doc_id in only and doc_id not in texts]
                if not rows:
                    continue
                block, ids = block.take(rows), [ids[i] for i in rows]
            for doc_id, title, text in zip(ids, block.column("title").to_pylist(), block.column("text").to_pylist()):
                texts.setdefault(doc_id, document_text(title, text))
        return texts

    # ---- the run's corpus: the text corpus, or the precomputed vectors ----------------------------------------
    def corpus_source(self) -> str:
        return self.vectors.source() if self.precomputed else self.text_corpus_source()

    def corpus_files(self) -> List[str]:
        return self.vectors.files() if self.precomputed else self.text_corpus_files()

    def corpus_splits(self, split_bytes: int) -> List[Split]:
        return self.vectors.splits(split_bytes) if self.precomputed else self.text_corpus_splits(split_bytes)

    def read_corpus(self, splits: List[Split], block_rows: int = DEFAULT_BLOCK_ROWS,
                    quarantine: Optional[Quarantine] = None) -> Iterator[pa.Table]:
        if self.precomputed:
            return self.vectors.read(splits, block_rows, quarantine)
        return self.read_text_corpus(splits, block_rows, quarantine)

    def fingerprint(self) -> list:
        """Size and modification stamp of every corpus source file (cheap: metadata only)."""
        stamps = []
        for url in self.corpus_files():
            filesystem, path = fs.resolve(url)
            for p in sorted(filesystem.find(path) if filesystem.isdir(path) else [path]):
                info = filesystem.info(p)
                stamps.append([p, info.get("size"), str(info.get("mtime") or info.get("LastModified")
                                                         or info.get("ETag") or info.get("created") or "")])
        return stamps

    # ---- queries --------------------------------------------------------------------------------------------
    def queries_source(self) -> str:
        """Where the run's queries come from, for errors."""
        raise NotImplementedError

    def query_reader(self, block_rows: int) -> tuple:
        """(reader function, its keyword arguments) for the run's queries (with their positives)."""
        raise NotImplementedError

    def query_blocks(self, block_rows: int, quarantine: Optional[Quarantine] = None) -> Iterator[pa.Table]:
        reader, kwargs = self.query_reader(block_rows)
        return reader(quarantine=quarantine, **kwargs)

    def query_units(self) -> List[Tuple[str, str]]:
        """(url, name) of each query unit serve mines; listed again every poll, so files that appear are
        picked up."""
        raise NotImplementedError

    def unit_input(self, unit_source: str) -> InputConfig:
        """The input config that mines one query unit."""
        raise NotImplementedError

    # ---- identity and checks --------------------------------------------------------------------------------
    def identity(self) -> list:
        """What names the corpus in the embedding store key (with :meth:`fingerprint`)."""
        i = self.input
        return [i.format, i.path, i.corpus, None]

    def query_identity(self) -> dict:
        """What names the query set in the query-vector cache's completion marker (with the file stamps)."""
        i = self.input
        return {"format": i.format, "split": i.split, "max_queries": i.max_queries, "columns": None}

    def check_files(self, access) -> Iterable[Tuple[str, str]]:
        """(url, what) of every input file preflight must be able to read, in the order it checks them (raises
        InputError for a bad layout). ``access(url)``: a context that turns a storage failure into an InputError naming ``url``."""
        raise NotImplementedError


# ---- splitting files ----------------------------------------------------------------------------------------

def split_bytes_of(input_cfg: InputConfig) -> int:
    mb = input_cfg.read_split_mb if input_cfg is not None else DEFAULT_SPLIT_MB
    return max(1, int(mb * (1 << 20)))


def file_sizes(urls: List[str]) -> List[int]:
    """Each file's size in bytes (metadata only; object stores are asked in parallel)."""
    def size(url: str) -> int:
        filesystem, path = fs.resolve(url)
        return int(filesystem.size(path) or 0)
    if len(urls) <= 1 or all(fs.is_local(u) for u in urls):
        return [size(u) for u in urls]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(size, urls))


def splittable_text(url: str) -> bool:
    """An uncompressed text file: a byte offset in it is a position in its lines (not so in a .gz stream)."""
    return fsspec.utils.infer_compression(url) is None and not url.endswith(PARQUET_SUFFIXES)


def parquet_row_group_splits(url: str, file_idx: int, split_bytes: int) -> List[Split]:
    """Runs of consecutive row groups of about ``split_bytes`` each (at least one row group per split)."""
    handle, parquet = _open_parquet(url)
    with handle:
        meta = parquet.metadata
        sizes = [meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)]
        rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    splits, start, acc, base = [], 0, 0, 0
    for g, nbytes in enumerate(sizes):
        acc += nbytes
        if acc >= split_bytes or g == len(sizes) - 1:
            splits.append(Split(url, file_idx, start, g + 1, base))
            base += sum(rows[start:g + 1])
            start, acc = g + 1, 0
    return splits or [Split(url, file_idx)]


def plan_file_splits(urls: List[str], split_bytes: int, file_idx_base: int = 0) -> List[Split]:
    """The splits of a list of files (file ``i`` gets ``file_idx_base + i``): whole files, except a file larger
    than ``split_bytes`` that is uncompressed text (line-aligned byte ranges, their line bases counted) or Parquet
    (runs of row groups). A pure function of the files and ``split_bytes``."""
    sizes = file_sizes(urls)
    splits: List[Split] = []
    for i, (url, size) in enumerate(zip(urls, sizes)):
        idx = file_idx_base + i
        if size <= split_bytes:
            splits.append(Split(url, idx))
        elif url.endswith(PARQUET_SUFFIXES):
            try:
                splits.extend(parquet_row_group_splits(url, idx, split_bytes))
            except Exception:  # noqa: BLE001 - an unreadable file: its read task reports it, as it always did
                splits.append(Split(url, idx))
        elif splittable_text(url):
            splits.extend(text_range_splits(url, idx, size, split_bytes))
        else:
            splits.append(Split(url, idx))
    return splits


def text_range_splits(url: str, file_idx: int, size: int, split_bytes: int) -> List[Split]:
    """``[k * split_bytes, (k + 1) * split_bytes)`` ranges, each with the count of newlines before it (a pass
    that only counts bytes: Ray tasks, one per range, when Ray runs; else in this process)."""
    bounds = list(range(0, size, split_bytes)) + [size]
    ranges = list(zip(bounds[:-1], bounds[1:]))
    counts = count_ranges(url, ranges[:-1])
    splits, base = [], 0
    for k, (start, stop) in enumerate(ranges):
        splits.append(Split(url, file_idx, start, stop if k < len(ranges) - 1 else None, base))
        if k < len(counts):
            base += counts[k]
    return splits


def count_ranges(url: str, ranges: List[Tuple[int, int]]) -> List[int]:
    """The newlines of each byte range: in this process for a local file (page cache, memchr speed); for an
    object store in parallel (one Ray task per range when Ray runs, else threads), since the bytes cross the
    network."""
    if not ranges:
        return []
    if fs.is_local(url) or len(ranges) == 1:
        return [count_newlines(url, a, b) for a, b in ranges]
    import ray
    if ray.is_initialized():
        count = ray.remote(num_cpus=0.25, max_retries=3)(count_newlines)
        return ray.get([count.remote(url, a, b) for a, b in ranges])
    with concurrent.futures.ThreadPoolExecutor(min(16, len(ranges))) as pool:
        return list(pool.map(lambda r: count_newlines(url, *r), ranges))


def group_splits(splits: List[Split], read_tasks: int) -> List[List[Split]]:
    """The splits of each read task: one task per split (``read_tasks`` 0), else ``read_tasks`` runs of
    consecutive splits (1: a single task reads everything, in order)."""
    if not splits:
        return [[]]
    if read_tasks <= 0 or read_tasks >= len(splits):
        return [[s] for s in splits]
    n = len(splits)
    return [splits[k * n // read_tasks:(k + 1) * n // read_tasks] for k in range(read_tasks)]
