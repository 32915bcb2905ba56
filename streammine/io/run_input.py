"""A run's input as Ray Data read tasks: the corpus and query read functions, the encoder's input blocks, and the
input's names (sources for errors, the corpus fingerprint).

Read tasks: the corpus is cut into splits (:mod:`streammine.io.formats.base`: whole files, line-aligned byte ranges
of large uncompressed text files, runs of Parquet row groups), a pure function of the input files and
``input.read_split_mb``. ``input.read_tasks`` groups them: 0 (automatic) gives each split its own read task, N
gives N tasks of consecutive splits (1: one task reads everything, as before). A split's records (ids, texts,
``file_idx``/``row`` hence corpus ordinals, locations) and its blocks are the same whichever task reads it, so the
number of read tasks never changes the store or the mined output. The queries are one read task: duplicate query
ids, the qrels check and the grouping of pairs rows by query need all of them.
"""
from __future__ import annotations

import functools
from typing import Iterator, List, Optional

import numpy as np
import pyarrow as pa
import ray

from ..config import MineConfig
from ..encode.query_vectors import QUERY_ROW
from .datasource import GeneratorDatasource, read_quarantining
from .formats import input_format
from .formats.base import group_splits, split_bytes_of
from .formats.rows import DEFAULT_BLOCK_ROWS
from .formats.vectors import PrecomputedVectors
from .records import CORPUS_SCHEMA, Quarantine


def corpus_read_fns(cfg: MineConfig, quarantine_url: Optional[str], block_rows: int = 4096) -> list:
    """One zero-argument callable per corpus read task (see the module docstring)."""
    fmt = input_format(cfg)
    splits = fmt.corpus_splits(split_bytes_of(cfg.input))
    if fmt.precomputed:  # vectors go straight to the store sink: no encoder block size to follow
        block_rows = DEFAULT_BLOCK_ROWS
    return [functools.partial(read_quarantining, fmt.read_corpus, quarantine_url, splits=group,
                              block_rows=block_rows)
            for group in group_splits(splits, cfg.input.read_tasks)]


def query_read_fns(cfg: MineConfig, quarantine_url: Optional[str]) -> list:
    reader, kwargs = input_format(cfg).query_reader(cfg.run.query_batch_size)
    return [functools.partial(read_quarantining, reader, quarantine_url, **kwargs)]


def _precomputed_corpus_blocks(url: str, check_finite: bool = True) -> Iterator[pa.Table]:
    """Precomputed corpus vectors as store records, read in one pass; without texts, a document's text key is its
    id's (and its vector's)."""
    vectors = PrecomputedVectors(url, check_finite)
    yield from vectors.read(vectors.splits(split_bytes_of(None)))


# Documents are sorted by length within windows of this many encoder blocks before they are cut into blocks: a
# block of similar lengths pads less (sentence-transformers sorts within one encode call, i.e. within a block).
# Longest first also puts the cheap blocks at the end, where they shorten the tail. Measured on SciFact's token
# lengths, in a padded-token cost model: 256-document blocks in file order cost 3.8 % more than one global sort,
# 16-block windows 0.25 % more.
LENGTH_SORT_WINDOW_BLOCKS = 16


def length_sorted_blocks(read_fn, block_rows: int) -> Iterator[pa.Table]:
    """Each table ``read_fn`` yields (a window), its rows sorted by text length, longest first, in ``block_rows``
    slices. Rows keep their ``file_idx``/``row``, from which corpus ordinals are computed, so order is free."""
    import pyarrow.compute as pc
    for table in read_fn():
        if table is None or table.num_rows == 0:
            continue
        chars = pc.add(pc.utf8_length(pc.fill_null(table.column("title"), "")),
                       pc.utf8_length(pc.fill_null(table.column("text"), ""))).to_numpy(zero_copy_only=False)
        table = table.take(pa.array(np.argsort(-chars, kind="stable")))
        for start in range(0, table.num_rows, block_rows):
            yield table.slice(start, block_rows)


def prefetch_query_blocks(cfg: MineConfig, schema: pa.Schema) -> Iterator[pa.Table]:
    """The run's query texts as encoder-input records (``schema``, the corpus's, plus QUERY_ROW set): the corpus
    encoder actors encode them after the documents, into the query-vector cache, so the query pass that follows
    loads no model. Best effort: bad rows are skipped here, and the query pass reports or quarantines them."""
    # this quarantine is never written: see above
    for table in input_format(cfg).query_blocks(cfg.run.query_batch_size, quarantine=Quarantine()):
        n = table.num_rows
        if n == 0:
            continue
        # the corpus's columns, so blocks of both kinds concatenate; a query row has no corpus position (-1)
        columns = {"doc_id": table.column("query_id"), "title": pa.array([""] * n, pa.string()),
                   "text": table.column("query"), "text_key": pa.array(np.zeros(n, np.uint64)),
                   "file_idx": pa.array(np.full(n, -1, np.int32)), "row": pa.array(np.full(n, -1, np.int64)),
                   "location": table.column("location")}
        yield pa.table([columns[f.name].cast(f.type) for f in schema], schema=schema).append_column(
            QUERY_ROW, pa.array(np.ones(n, bool)))


def encoder_input_blocks(corpus_fn, block_rows: int, cfg: Optional[MineConfig] = None) -> Iterator[pa.Table]:
    """Length-sorted corpus blocks, then (with ``cfg``) the run's queries (:func:`prefetch_query_blocks`). Queries
    come last: short, cheap blocks that even out the encoder actors' finishing times."""
    schema = None
    for block in length_sorted_blocks(corpus_fn, block_rows):
        schema = block.schema
        yield block.append_column(QUERY_ROW, pa.array(np.zeros(block.num_rows, bool)))
    if cfg is not None:
        # the task's splits may hold no document (a range inside one long line, bad rows): the records' schema
        yield from prefetch_query_blocks(cfg, schema or CORPUS_SCHEMA)


def read_dataset(fns: list, name: str) -> "ray.data.Dataset":
    """One Ray Data read task per callable. A read task parses on one core, so it asks for one CPU: with less, Ray
    packs several onto a core, where they only take turns (the encoder plan keeps one CPU free for such a task,
    encode/plan.py LOCAL_TASK_CPUS)."""
    return ray.data.read_datasource(GeneratorDatasource(fns, name=name), override_num_blocks=len(fns),
                                    num_cpus=1)


def corpus_source(cfg: MineConfig) -> str:
    """The corpus file (or table) as the user would name it, for errors."""
    return input_format(cfg).corpus_source()


def queries_source(cfg: MineConfig) -> str:
    """Where the run's queries come from, for errors: the split's qrels (BEIR), else the pairs table."""
    return input_format(cfg).queries_source()


def corpus_fingerprint(cfg: MineConfig) -> list:
    """Size and modification stamp of every corpus source file (cheap: metadata only)."""
    return input_format(cfg).fingerprint()


__all__: List[str] = ["corpus_read_fns", "query_read_fns", "length_sorted_blocks", "prefetch_query_blocks",
                      "encoder_input_blocks", "read_dataset", "corpus_source", "queries_source",
                      "corpus_fingerprint", "LENGTH_SORT_WINDOW_BLOCKS"]
