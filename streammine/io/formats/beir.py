"""BEIR input: a directory with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` (each may be .gz).

Memory in the read task: the qrels of the split (query id -> positive ids) and the set of query ids seen so far
(to report duplicates and qrels queries that never appear). The corpus file is cut into line-aligned byte ranges
when it is larger than the split size (uncompressed only); the queries are one read task (duplicates and the
qrels check need all of them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import pyarrow as pa

from ...config import InputConfig
from ...errors import InputError
from .. import fs
from ..records import CORPUS_SCHEMA, QUERY_SCHEMA, Quarantine
from .base import InputFormat, plan_file_splits
from .rows import (DEFAULT_BLOCK_ROWS, QRELS_HEADER_NAMES, _RAW_ID, Split, _Bad, _Blocks, _corpus_row,
                   _first_existing, _id_field, _json_lines, _reporter, _str_field, _text_lines)

def beir_corpus_url(dir_url: str) -> str:
    return _first_existing(dir_url, ("corpus.jsonl", "corpus.jsonl.gz"), "corpus")


def beir_queries_url(dir_url: str) -> str:
    return _first_existing(dir_url, ("queries.jsonl", "queries.jsonl.gz"), "queries")


def beir_qrels_url(dir_url: str, split: str) -> str:
    return _first_existing(dir_url, (f"qrels/{split}.tsv", f"qrels/{split}.tsv.gz"), f"qrels for split {split!r}")


def iter_beir_corpus(dir_url: str, file_idx_base: int = 0, block_rows: int = DEFAULT_BLOCK_ROWS,
                     quarantine: Optional[Quarantine] = None, split: Optional[Split] = None) -> Iterator[pa.Table]:
    """The documents of a BEIR directory's ``corpus.jsonl`` (or ``.jsonl.gz``) as CORPUS_SCHEMA tables (with
    ``split``, only the lines of that byte range, with their true line numbers).

    Each line is ``{"_id": str, "title": str (optional), "text": str, ...}`` (other fields are ignored).
    """
    url = split.url if split is not None else beir_corpus_url(dir_url)
    report = _reporter(quarantine, "corpus")
    blocks = _Blocks(CORPUS_SCHEMA, block_rows)
    lines = _json_lines(url, report, split.start, split.stop, split.base) if split is not None else \
        _json_lines(url, report)
    for n, location, obj, raw in lines:
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
    grades: List[float] = field(default_factory=list)   # the qrels score of each id (aligned with ids)


@dataclass
class _Judged:
    """A query's qrels lines that are not positives: score <= 0 (known negatives) and 0 < score < the minimum
    positive grade (neither positive nor negative)."""
    negatives: _Positives = field(default_factory=lambda: _Positives([], []))
    below: _Positives = field(default_factory=lambda: _Positives([], []))


def read_qrels(url: str, quarantine: Optional[Quarantine] = None,
               non_positive: Optional[Dict[str, str]] = None, min_positive_grade: float = 1.0,
               judged: Optional[Dict[str, _Judged]] = None) -> Dict[str, _Positives]:
    """query id -> its positives (``ids`` and the ``locations`` of the qrels lines naming them), in order of first
    appearance, deduplicated. A header line (``query-id corpus-id score``) is skipped; lines with a score <= 0 are
    not positives: ``non_positive`` (when given) gets the location of the first such line of each query id, so a
    query with no positive at all can be reported by the queries reader.

    Graded qrels: a line is a positive when its score is >= ``min_positive_grade`` (its score is kept in
    ``grades``); ``judged`` (when given) gets, per query, the ids with a score <= 0 (known negatives) and those with
    0 < score < ``min_positive_grade`` (neither: never positives, never negatives), each id once, in file order.
    A score >= ``min_positive_grade`` wins over another line's lower score for the same id."""
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
        if score < min_positive_grade:
            if non_positive is not None:
                non_positive.setdefault(qid, location)
            if judged is not None:
                kept = judged.setdefault(qid, _Judged())
                side = kept.negatives if score <= 0 else kept.below
                if doc_id not in side.ids:
                    side.ids.append(doc_id)
                    side.locations.append(location)
                    side.grades.append(score)
            continue
        entry = positives.get(qid)
        if entry is None:
            entry = positives[qid] = _Positives([], [])
        if doc_id not in entry.ids:  # queries have few positives: a list scan is cheaper than a set per query
            entry.ids.append(doc_id)
            entry.locations.append(location)
            entry.grades.append(score)
    if judged is not None:  # an id that is a positive of its query is never also a negative or below grade
        for qid, kept in judged.items():
            pos = set(positives[qid].ids) if qid in positives else set()
            for side in (kept.negatives, kept.below):
                keep = [i for i, d in enumerate(side.ids) if d not in pos]
                side.ids = [side.ids[i] for i in keep]
                side.locations = [side.locations[i] for i in keep]
                side.grades = [side.grades[i] for i in keep]
    return positives


def iter_beir_queries(dir_url: str, split: str = "train", block_rows: int = DEFAULT_BLOCK_ROWS,
                      quarantine: Optional[Quarantine] = None, max_queries: Optional[int] = None,
                      min_positive_grade: float = 1.0) -> Iterator[pa.Table]:
    """The queries of a BEIR directory that have at least one positive in ``qrels/<split>.tsv``, as QUERY_SCHEMA
    tables in ``queries.jsonl`` order.

    A query of the split whose qrels lines all have a score <= 0 has no positive: it is reported (kind ``query``,
    at its queries.jsonl line, naming the qrels line), never dropped silently. After the last query, every qrels
    query id that ``queries.jsonl`` never named is reported (at the first qrels line naming it); an id on a line
    already reported as malformed is not reported twice. With ``max_queries`` the reader stops after that many
    queries and skips that final check.

    Each query also carries its positives' grades (``positive_grades``), its known negatives (qrels score <= 0:
    ``supplied_negative_ids``) and its judged documents below ``min_positive_grade`` (``below_grade_ids``); see
    :func:`read_qrels`.
    """
    qrels_url = beir_qrels_url(dir_url, split)
    queries_url = beir_queries_url(dir_url)
    non_positive: Dict[str, str] = {}
    judged: Dict[str, _Judged] = {}
    positives = read_qrels(qrels_url, quarantine, non_positive, min_positive_grade, judged)
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
                report(location, f"query {qid!r} has no positive: every qrels line for it has a score < "
                                 f"{min_positive_grade:g} (first at {non_positive[qid]}); not mined", raw)
            continue
        kept = judged.get(qid) or _Judged()
        table = blocks.add(qid, text, pos.ids, pos.locations, location, pos.grades, kept.negatives.ids,
                           kept.negatives.locations, kept.below.ids)
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




class BeirFormat(InputFormat):
    """``input.format: beir``."""

    name = "beir"
    no_query_reason = "no query of queries.jsonl has a positive in this split"
    units_follow_corpus = False  # the queries and their qrels are one unit, whatever the corpus holds
    labels_kind = "qrels"
    min_positive_grade = 1.0     # mining.min_positive_grade (set by formats.input_format)

    def text_corpus_source(self) -> str:
        return beir_corpus_url(self.input.path)

    def text_corpus_files(self) -> List[str]:
        return [self.input.path]

    def require_text_corpus(self) -> None:
        beir_corpus_url(self.input.path)  # raises InputError when the directory has no corpus file

    def text_corpus_splits(self, split_bytes: int) -> List[Split]:
        return plan_file_splits([beir_corpus_url(self.input.path)], split_bytes)

    def read_text_corpus(self, splits: List[Split], block_rows: int = DEFAULT_BLOCK_ROWS,
                         quarantine: Optional[Quarantine] = None) -> Iterator[pa.Table]:
        for split in splits:
            yield from iter_beir_corpus(self.input.path, 0, block_rows, quarantine, split=split)

    def corpus_reader(self) -> tuple:
        return iter_beir_corpus, {"dir_url": self.input.path}

    def queries_source(self) -> str:
        return beir_qrels_url(self.input.path, self.input.split)

    def query_reader(self, block_rows: int) -> tuple:
        i = self.input
        return iter_beir_queries, {"dir_url": i.path, "split": i.split, "max_queries": i.max_queries,
                                   "block_rows": block_rows, "min_positive_grade": self.min_positive_grade}

    def query_units(self) -> List[Tuple[str, str]]:
        return [(self.input.path, "queries")]

    def unit_input(self, unit_source: str) -> InputConfig:
        return self.input

    def check_files(self, access) -> List[Tuple[str, str]]:
        path = self.input.path
        with access(path):
            if not fs.exists(path):
                raise InputError(path, "input directory not found")
            if not fs.isdir(path):
                raise InputError(path, "a BEIR input must be a directory (corpus.jsonl, queries.jsonl, "
                                       "qrels/<split>.tsv)")
            files = ([beir_corpus_url(path)] if not self.precomputed else []) + [
                beir_queries_url(path), beir_qrels_url(path, self.input.split)]
        return [(url, "file") for url in files]
