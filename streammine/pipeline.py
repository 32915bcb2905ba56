"""The read side of a run: read tasks for the corpus and the queries, the encoder's input blocks, and the names of
the input for errors and fingerprints. The run itself is ``run/`` (``run.mine.mine``).
"""
from __future__ import annotations

import functools
import hashlib
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import ray

from .config import MineConfig
from .encode.query_vectors import QUERY_ROW
from .io import fs


# ---- read tasks ---------------------------------------------------------------------------------------------

def corpus_read_fns(cfg: MineConfig, quarantine_url: Optional[str], block_rows: int = 4096) -> list:
    from .io.datasource import read_quarantining
    from .io.readers import corpus_reader
    if cfg.encoder.kind == "precomputed":
        return [functools.partial(_precomputed_corpus_blocks, cfg.encoder.corpus_vectors,
                                  check_finite=not cfg.input.lenient)]
    reader, kwargs = corpus_reader(cfg.input)
    return [functools.partial(read_quarantining, reader, quarantine_url, block_rows=block_rows, **kwargs)]


def query_read_fns(cfg: MineConfig, quarantine_url: Optional[str]) -> list:
    from .io.datasource import read_quarantining
    from .io.readers import query_reader
    reader, kwargs = query_reader(cfg.input, cfg.run.query_batch_size)
    return [functools.partial(read_quarantining, reader, quarantine_url, **kwargs)]


def _precomputed_corpus_blocks(url: str, check_finite: bool = True) -> Iterator[pa.Table]:
    """Precomputed corpus vectors as store records; without texts, a document's text key is its id's."""
    from .io.readers import iter_vectors
    from .keys import key64
    from .vectors import to_arrow
    row = 0
    for ids, vectors, locations in iter_vectors(url, check_finite=check_finite):
        n = len(ids)
        yield pa.table({"doc_id": pa.array(ids, pa.string()),
                        # same id and same vector: the same document listed twice; same id, other vector: a conflict
                        "text_key": pa.array([key64(f"id:{d}:{hashlib.blake2b(v.tobytes(), digest_size=8).hexdigest()}")
                                              for d, v in zip(ids, vectors)], pa.uint64()),
                        "file_idx": pa.array([0] * n, pa.int32()),
                        "row": pa.array(range(row, row + n), pa.int64()),
                        "location": pa.array(locations, pa.string()),
                        "vector": to_arrow(vectors)})
        row += n


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
    from .io.records import Quarantine
    from .io.readers import query_reader
    reader, kwargs = query_reader(cfg.input, cfg.run.query_batch_size)
    for table in reader(quarantine=Quarantine(), **kwargs):  # this quarantine is never written: see above
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
    if cfg is not None and schema is not None:
        yield from prefetch_query_blocks(cfg, schema)


def read_dataset(fns: list, name: str) -> "ray.data.Dataset":
    from .io.datasource import GeneratorDatasource
    return ray.data.read_datasource(GeneratorDatasource(fns, name=name), override_num_blocks=len(fns),
                                    num_cpus=0.25)


def corpus_source(cfg: MineConfig) -> str:
    """The corpus file (or table) as the user would name it, for errors."""
    if cfg.encoder.kind == "precomputed":
        return cfg.encoder.corpus_vectors
    if cfg.input.format == "beir":
        from .io.readers import beir_corpus_url
        return beir_corpus_url(cfg.input.path)
    return cfg.input.corpus or cfg.input.path


def queries_source(cfg: MineConfig) -> str:
    """Where the run's queries come from, for errors: the split's qrels (BEIR), else the pairs table."""
    if cfg.input.format == "beir":
        from .io.readers import beir_qrels_url
        return beir_qrels_url(cfg.input.path, cfg.input.split)
    return cfg.input.path


def corpus_fingerprint(cfg: MineConfig) -> list:
    """Size and modification stamp of every corpus source file (cheap: metadata only)."""
    if cfg.encoder.kind == "precomputed":
        urls = [cfg.encoder.corpus_vectors]
        ids_file = urls[0][: -len(".npy")] + ".ids.txt"
        if urls[0].endswith(".npy") and fs.exists(ids_file):  # the ids live beside the vectors
            urls.append(ids_file)
    elif cfg.input.format == "beir":
        urls = [cfg.input.path]
    else:
        urls = [u for u in (cfg.input.path, cfg.input.corpus) if u]
    stamps = []
    for url in urls:
        filesystem, path = fs.resolve(url)
        for p in sorted(filesystem.find(path) if filesystem.isdir(path) else [path]):
            info = filesystem.info(p)
            stamps.append([p, info.get("size"), str(info.get("mtime") or info.get("LastModified")
                                                     or info.get("ETag") or info.get("created") or "")])
    return stamps
