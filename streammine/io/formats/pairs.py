"""Pairs input: an (anchor, positive) table (Parquet / JSONL, file or directory), and optionally a corpus table.

Grouping rows by query needs every row of the pairs table, so the pairs reader holds one entry per query (its
text, positive ids and their locations) before it yields anything; the pairs corpus reader holds the ids of the
positive texts it has yielded (to deduplicate them). This happens inside the read task, never in the driver.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import pyarrow as pa

from ...config import ColumnsConfig, InputConfig
from ...errors import ConfigError
from ...keys import content_id, text_key
from ..records import CORPUS_SCHEMA, QUERY_SCHEMA, Quarantine
from .base import InputFormat
from .rows import (DEFAULT_BLOCK_ROWS, Report, Split, _Bad, _Blocks, _corpus_row, _id_field, _reporter,
                   _str_field)
from .tables import _iter_table_rows, iter_corpus_table, table_files, table_splits

POSITIVES = "positives"  # the split role of the pass over the pairs table that yields its positive texts


@dataclass
class _PairRow:
    file_idx: int
    row: int
    location: str
    query_id: str
    query: str
    positives: List[str]  # ids (columns.positive_id) or texts (columns.positive)
    raw: object
    negatives: List[str] = dataclasses.field(default_factory=list)  # ids (columns.negative_id) or texts
    prompt: Optional[str] = None


def _negative_ids(columns: ColumnsConfig, negatives: List[str]) -> List[str]:
    """The corpus ids of a row's supplied negatives: ids as given, texts by their content hash."""
    return list(negatives) if columns.negative_id else [content_id(t) for t in negatives]


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
    if columns.negative_id and not corpus_url:
        raise ConfigError(f"pairs with negative ids (columns.negative_id={columns.negative_id!r}) need a corpus "
                          "table (input.corpus) that holds those ids")
    if columns.positive_id and columns.negative and not columns.negative_id:
        raise ConfigError("pairs with positive ids take negative ids too (columns.negative_id), not texts")
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
            negative = columns.negative_id or columns.negative
            negatives = _positive_list(obj, negative, bool(columns.negative_id)) \
                if negative and obj.get(negative) not in (None, []) else []  # optional per row
            prompt = _str_field(obj, columns.prompt, required=False) or None
        except _Bad as e:
            report(location, str(e), raw)
            continue
        yield _PairRow(file_idx, row, location, query_id, query, positives, raw, negatives, prompt)


def iter_pairs_queries(url: str, columns: Optional[ColumnsConfig] = None, corpus_url: Optional[str] = None,
                       block_rows: int = DEFAULT_BLOCK_ROWS, quarantine: Optional[Quarantine] = None,
                       max_queries: Optional[int] = None) -> Iterator[pa.Table]:
    """The queries of an (anchor, positive) pairs table, as QUERY_SCHEMA tables.

    Rows are grouped by query id (``columns.query_id``, else the content hash of the query text) in order of first
    appearance; a query's positives are deduplicated in order of first appearance. Positives are ids
    (``columns.positive_id``; they must be ids of the ``corpus_url`` table) or texts (``columns.positive``; their id
    is ``content_id(text)``, the id :func:`iter_pairs_corpus` gives them). A positive cell may hold one value or a
    list. Grouping holds every query of the table in memory (inside the read task) before the first block.

    Supplied negatives (``columns.negative``: texts, added to the corpus by :func:`iter_pairs_corpus`; or
    ``columns.negative_id``: corpus ids; optional per row) become ``supplied_negative_ids`` (in order of first
    appearance, never one of the query's positives); null when neither column is configured. ``columns.prompt``:
    the query's first non-empty prompt, as ``prompt``.
    """
    columns = columns or ColumnsConfig()
    by_id = _check_pair_columns(columns, corpus_url)
    report = _reporter(quarantine, "pairs")
    groups: Dict[str, list] = {}  # query id -> [query, positive ids, positive locations, location, negative ids,
    #                               negative locations, prompt]
    with_negatives = bool(columns.negative or columns.negative_id)
    for pair in _iter_pair_rows(url, columns, by_id, report):
        group = groups.get(pair.query_id)
        if group is None:
            group = groups[pair.query_id] = [pair.query, [], [], pair.location, [], [], pair.prompt]
        elif group[0] != pair.query:
            report(pair.location, f"query id {pair.query_id!r} has a different query text than at {group[3]}",
                   pair.raw)
            continue
        for positive in pair.positives:
            doc_id = positive if by_id else content_id(positive)
            if doc_id not in group[1]:
                group[1].append(doc_id)
                group[2].append(pair.location)
        for doc_id in _negative_ids(columns, pair.negatives):
            if doc_id not in group[4]:
                group[4].append(doc_id)
                group[5].append(pair.location)
        if group[6] is None:
            group[6] = pair.prompt
    blocks = _Blocks(QUERY_SCHEMA, block_rows)
    for i, (query_id, (query, positive_ids, positive_locations, location, neg_ids, neg_locs, prompt)) in \
            enumerate(groups.items()):
        if max_queries is not None and i >= max_queries:
            break
        keep = [j for j, d in enumerate(neg_ids) if d not in positive_ids]  # a positive is never a negative
        table = blocks.add(query_id, query, positive_ids, positive_locations, location, None,
                           [neg_ids[j] for j in keep] if with_negatives else None,
                           [neg_locs[j] for j in keep] if with_negatives else None, None, prompt)
        if table is not None:
            yield table
    table = blocks.flush()
    if table is not None:
        yield table


def iter_pairs_corpus(url: str, columns: Optional[ColumnsConfig] = None, corpus_url: Optional[str] = None,
                      file_idx_base: int = 0, block_rows: int = DEFAULT_BLOCK_ROWS,
                      quarantine: Optional[Quarantine] = None, splits: Optional[List[Split]] = None
                      ) -> Iterator[pa.Table]:
    """The documents of a pairs input, as CORPUS_SCHEMA tables.

    With text positives: each distinct positive text once, id ``content_id(text)``, title ``""``, in order of first
    appearance (``file_idx = file_idx_base``, ``row`` = its ordinal among them, ``location`` = the pairs row that
    first named it). Then, when ``corpus_url`` is given, that corpus table (its files numbered from
    ``file_idx_base + 1``), less the documents that repeat a positive text already yielded under the same id.

    Bad pairs rows are reported by :func:`iter_pairs_queries`, which reads the same table: here they raise in
    strict mode but are skipped without a quarantine record in lenient mode, so each is counted once.

    ``splits`` (of :meth:`PairsFormat.text_corpus_splits`): the positives pass (one split: a positive's row is its
    rank among the distinct positives, so the pass is sequential) and splits of the corpus table; a task that reads
    only table splits makes the positives pass itself, without yielding it, to know which documents to drop.
    """
    columns = columns or ColumnsConfig()
    by_id = _check_pair_columns(columns, corpus_url)
    if splits is None:
        splits = [Split(url, 0, role=POSITIVES)] if not by_id else []
        table = [None] if corpus_url else []
    else:
        table = [s for s in splits if s.role != POSITIVES]
    yielded: Optional[Dict[str, int]] = None  # positive id -> text key (memory: one entry per distinct positive)
    if any(s.role == POSITIVES for s in splits) and not by_id:
        yielded = {}
        yield from _positive_blocks(url, columns, by_id, file_idx_base, block_rows, quarantine, yielded)
    if not table:
        return
    if yielded is None and not by_id:
        yielded = {}
        for _ in _positive_blocks(url, columns, by_id, file_idx_base, block_rows, quarantine, yielded):
            pass
    for block in iter_corpus_table(corpus_url, columns, file_idx_base + 1, block_rows, quarantine,
                                   splits=None if table == [None] else table):
        if yielded:
            ids = block.column("doc_id").to_pylist()
            keys = block.column("text_key").to_pylist()
            keep = [yielded.get(d) != k for d, k in zip(ids, keys)]
            if not all(keep):
                block = block.filter(pa.array(keep))
        if block.num_rows:
            yield block


def _positive_blocks(url: str, columns: ColumnsConfig, by_id: bool, file_idx_base: int, block_rows: int,
                     quarantine: Optional[Quarantine], yielded: Dict[str, int]) -> Iterator[pa.Table]:
    """The distinct positive texts (and supplied negative texts, ``columns.negative``) as corpus records, in order of
    first appearance; fills ``yielded`` (id -> text key) as it goes."""
    report = _reporter(quarantine, "pairs", discard=quarantine is not None)
    blocks = _Blocks(CORPUS_SCHEMA, block_rows)
    for pair in _iter_pair_rows(url, columns, by_id, report):
        for text in pair.positives + (pair.negatives if columns.negative and not columns.negative_id else []):
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


class PairsFormat(InputFormat):
    """``input.format: pairs``: an (anchor, positive) table, and optionally a separate corpus table."""

    name = "pairs"

    def text_corpus_source(self) -> str:
        return self.input.corpus or self.input.path

    def text_corpus_files(self) -> List[str]:
        return [u for u in (self.input.path, self.input.corpus) if u]

    def text_corpus_splits(self, split_bytes: int) -> List[Split]:
        i = self.input
        by_id = _check_pair_columns(i.columns, i.corpus)
        splits = [] if by_id else [Split(i.path, 0, role=POSITIVES)]
        if i.corpus:
            splits += table_splits(i.corpus, split_bytes)
        return splits

    def read_text_corpus(self, splits: List[Split], block_rows: int = DEFAULT_BLOCK_ROWS,
                         quarantine: Optional[Quarantine] = None) -> Iterator[pa.Table]:
        i = self.input
        positives = [s for s in splits if s.role == POSITIVES]
        yield from iter_pairs_corpus(i.path, i.columns, i.corpus, 0, block_rows, quarantine, splits=positives)
        # one split at a time, so each split's blocks end where it ends (the positives pass is made once)
        table = [s for s in splits if s.role != POSITIVES]
        if table:
            yield from iter_pairs_corpus(i.path, i.columns, i.corpus, 0, block_rows, quarantine,
                                         splits=table)

    def corpus_reader(self) -> tuple:
        i = self.input
        return iter_pairs_corpus, {"url": i.path, "columns": i.columns, "corpus_url": i.corpus}

    def queries_source(self) -> str:
        return self.input.path

    def query_reader(self, block_rows: int) -> tuple:
        i = self.input
        return iter_pairs_queries, {"url": i.path, "columns": i.columns, "corpus_url": i.corpus,
                                    "max_queries": i.max_queries, "block_rows": block_rows}

    def query_units(self) -> List[Tuple[str, str]]:
        base = self.input.path.rstrip("/")
        return [(url, url[len(base):].lstrip("/") or url.rsplit("/", 1)[-1]) for url in table_files(self.input.path)]

    def unit_input(self, unit_source: str) -> InputConfig:
        return dataclasses.replace(self.input, path=unit_source)

    def identity(self) -> list:
        i = self.input
        return [i.format, i.path, i.corpus, i.columns.__dict__]

    def query_identity(self) -> dict:
        return dict(super().query_identity(), columns=self.input.columns.__dict__)

    def check_files(self, access) -> Iterator[Tuple[str, str]]:
        for url in [self.input.path] + ([self.input.corpus] if self.input.corpus else []):
            with access(url):
                files = table_files(url)
            for f in files:
                yield f, "table"
