"""Input readers: the names the rest of streammine (and its tests) import, kept where they always were.

The readers live in :mod:`streammine.io.formats` (one module per format, row-level parsing in ``rows.py``); a run
chooses its format once (:func:`streammine.io.formats.input_format`). These functions stream validated records as
pyarrow Tables; see :mod:`streammine.io.formats.rows` for strict and lenient reporting.

Not checked here: duplicate document ids (the index shards see all documents and detect them globally) and
positives missing from the corpus (the mining stage reports them, with the location that named them).
"""
from __future__ import annotations

from typing import Dict

from .formats import format_of
from .formats.beir import beir_corpus_url, beir_qrels_url, beir_queries_url, iter_beir_corpus, iter_beir_queries, \
    read_qrels
from .formats.pairs import iter_pairs_corpus, iter_pairs_queries
from .formats.rows import (DEFAULT_BLOCK_ROWS, JSONL_SUFFIXES, PARQUET_SUFFIXES, QRELS_HEADER_NAMES, TABLE_SUFFIXES,
                           VECTOR_SUFFIXES, open_for_reading)
from .formats.tables import iter_corpus_table, iter_table_rows, table_files
from .formats.vectors import iter_vectors


def corpus_reader(input_cfg) -> tuple:
    """(reader function, its keyword arguments) for a run's corpus documents (see ``InputFormat.corpus_reader``)."""
    return format_of(input_cfg).corpus_reader()


def corpus_texts(input_cfg) -> Dict[str, str]:
    """doc id -> the document's text as it is embedded (title + text); see ``InputFormat.corpus_texts``."""
    return format_of(input_cfg).corpus_texts()


def query_reader(input_cfg, block_rows: int) -> tuple:
    """(reader function, its keyword arguments) for a run's queries (with their positives)."""
    return format_of(input_cfg).query_reader(block_rows)


__all__ = ["DEFAULT_BLOCK_ROWS", "iter_beir_corpus", "iter_beir_queries", "read_qrels", "iter_table_rows",
           "iter_corpus_table", "iter_pairs_queries", "iter_pairs_corpus", "iter_vectors", "table_files",
           "beir_corpus_url", "beir_queries_url", "beir_qrels_url", "corpus_reader", "corpus_texts", "query_reader",
           "open_for_reading", "JSONL_SUFFIXES", "PARQUET_SUFFIXES", "QRELS_HEADER_NAMES", "TABLE_SUFFIXES",
           "VECTOR_SUFFIXES"]
