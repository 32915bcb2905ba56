"""Exporters: the mined Parquet output -> files that trainers load unchanged. Every export format is in
``FORMATS`` (name -> file name under ``<output>/export/`` and writer); ``run_exports`` writes a run's configured
ones (``output.export``).

* ``export_st_triplet``  -> Parquet ``anchor, positive, negative[, scores]``: one row per (query, positive,
  negative), in the order sentence-transformers' ``mine_hard_negatives(output_format="triplet")`` writes them (per
  query: for each positive, every negative in rank order); ``scores`` = [s(positive), s(negative)].
* ``export_st_ntuple``   -> Parquet ``anchor, positive, negative_1 .. negative_n[, scores]``: one row per (query,
  positive) with exactly ``n`` negatives, like ``output_format="n-tuple"``; ``scores`` = [s(positive),
  s(negative_1) .. s(negative_n)] (the peer's ``output_scores=True``; MarginMSE / DistillKLDiv labels).
* ``export_st_labeled_pair`` -> Parquet ``anchor, positive, label`` (or ``score``): one row per (query, document),
  the query's positives (label 1) then its negatives (label 0) in rank order, like ``output_format="labeled-pair"``
  (CrossEncoder / reranker training: BinaryCrossEntropyLoss reads ``label``); with scores a float ``score`` column
  takes the place of ``label``, as the peer's ``output_scores=True`` does.
* ``export_st_labeled_list`` -> Parquet ``anchor, positive: list[str], labels: list[int]`` (or ``scores:
  list[float]``): one row per (query, positive) holding [positive, negatives...], like
  ``output_format="labeled-list"`` (listwise reranker losses: LambdaLoss, ListNet; reranking evaluation sets).
* ``export_flagembedding`` -> JSONL ``{"query", "pos": [...], "neg": [...][, "pos_scores", "neg_scores"][,
  "prompt"]}``: one line per query (FlagEmbedding's ``hn_mine.py`` output / finetune input; its distillation
  reads ``pos_scores`` / ``neg_scores``, and ``prompt`` is the run's query prompt when it has one).

Scores (``scores=``): "cross-encoder" writes the teacher scores (``positive_ce_scores`` / ``negative_ce_scores``),
"bi-encoder" the exact embedding scores (``positive_scores`` / ``negative_scores``), None none. A run exports the
cross-encoder's when it has one, else the bi-encoder's with ``output.export_scores`` (``export_score_source``).
Each score is aligned with the text beside it.

The ST files load with ``datasets.load_dataset("parquet", data_files=...)`` and feed
``MultipleNegativesRankingLoss`` directly (column order anchor, positive, negatives...; a ``scores`` column is
the label sentence-transformers hands to the loss).

All exporters stream: they read the parts one record batch at a time (``ParquetFile.iter_batches``, only the
columns they need) and append to the output as they go, so memory is one batch plus the caller's ``texts``
(doc id -> document text) map. Every exporter returns counts, including how many queries it skipped and why:
nothing is dropped silently.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import StreamMineError
from ..io import fs
from ..io.formats import format_of, input_format
from .mined import BATCH_ROWS, MinedRow, iter_mined_rows, read_batches
from ..consume.committed import list_parts, resolve_parts  # noqa: F401  (part of this module's API: exporters take what it takes)

PartsArg = Union[str, Sequence[str]]


class MissingTextError(StreamMineError, KeyError):
    """A doc id in the mined output has no entry in the ``texts`` map given to an exporter."""

    def __init__(self, doc_id: str, part_url: str, query_id: str):
        self.doc_id, self.part_url, self.query_id = doc_id, part_url, query_id
        super().__init__(doc_id)

    def __str__(self) -> str:  # KeyError's str() would only repr the key
        return (f"{self.part_url}: document id {self.doc_id!r} (query {self.query_id!r}) is not in the texts map; "
                f"was the corpus used for mining the same one the texts were built from?")

    def __reduce__(self):  # survive pickling through Ray
        return (type(self), (self.doc_id, self.part_url, self.query_id))


# ---- reading the mined output: sink/mined.py (one reader, one row type) ------------------------------------

def _rows(part_urls: Iterable[str], scores: Optional[str]) -> Iterator[Tuple[str, MinedRow]]:
    """(part URL, row) over every mined row; with ``scores`` every row must have that source's scores."""
    for row in iter_mined_rows(part_urls, (scores,) if scores else (), BATCH_ROWS):
        if scores:
            row.require_scores(scores)
        yield row.part_url, row


def text_lookup(texts: Mapping[str, str]) -> Callable[[str, str, str], str]:
    """lookup(doc_id, part_url, query_id) -> text, raising MissingTextError that names the id and the part."""
    def lookup(doc_id: str, part_url: str, query_id: str) -> str:
        try:
            return texts[doc_id]
        except KeyError:
            raise MissingTextError(doc_id, part_url, query_id) from None
    return lookup


def referenced_doc_ids(part_urls: Sequence[str]) -> set:
    """Every document id the output names, as a positive or a negative: the texts an export needs."""
    ids: set = set()
    for _, have, batch in read_batches(part_urls, ["positive_ids", "negative_ids"], BATCH_ROWS):
        for name in have:
            ids.update(pc.list_flatten(batch.column(name)).to_pylist())
    return ids


def max_negatives(part_urls: Sequence[str]) -> int:
    """The widest negative list in the output (one cheap pass over a single column): the n-tuple width."""
    widest = 0
    for _, _, batch in read_batches(part_urls, ["negative_ids"], BATCH_ROWS, required=["negative_ids"]):
        if batch.num_rows:
            widest = max(widest, int(pc.max(pc.list_value_length(batch.column("negative_ids"))).as_py() or 0))
    return widest


# ---- writing -------------------------------------------------------------------------------------------------

class ParquetRowWriter:
    """Buffers rows (dicts of strings) and appends them to a Parquet file as row groups."""

    def __init__(self, file, schema: pa.Schema, rows_per_group: int = 4096):
        self.schema, self.rows_per_group = schema, rows_per_group
        self.writer = pq.ParquetWriter(file, schema)
        self.buffer: Dict[str, list] = {name: [] for name in schema.names}
        self.rows = 0

    def add(self, row: Mapping[str, str]) -> None:
        for name in self.schema.names:
            self.buffer[name].append(row[name])
        self.rows += 1
        if len(self.buffer[self.schema.names[0]]) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if self.buffer[self.schema.names[0]]:
            self.writer.write_table(pa.table(self.buffer, schema=self.schema))
            self.buffer = {name: [] for name in self.schema.names}

    def close(self) -> None:
        self.flush()
        self.writer.close()  # an empty output still gets a valid file with the schema

    def __enter__(self) -> "ParquetRowWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.writer.close()  # before the file handle closes, else pyarrow writes to a closed file on GC


def string_schema(names: List[str], scores: bool = False) -> pa.Schema:
    """Text columns, and with ``scores`` a last ``scores`` column (list of float32)."""
    return pa.schema([(name, pa.string()) for name in names] + ([("scores", pa.list_(pa.float32()))] if scores
                                                                else []))


def ntuple_columns(num_negatives: int) -> List[str]:
    return ["anchor", "positive"] + [f"negative_{i}" for i in range(1, num_negatives + 1)]


def _write_guarded(out_url: str, mode: str, write: Callable) -> dict:
    """Runs ``write(file)``; on failure removes the partial output so no half file looks like a finished one."""
    try:
        with fs.open_url(out_url, mode) as f:
            return write(f)
    except BaseException:
        try:
            if fs.exists(out_url):
                fs.remove(out_url)
        except Exception:
            pass
        raise


def _new_counts(fmt: str) -> dict:
    return {"format": fmt, "queries_read": 0, "queries_written": 0, "rows_written": 0, "queries_skipped": {}}


def _skip(counts: dict, reason: str) -> None:
    counts["queries_skipped"][reason] = counts["queries_skipped"].get(reason, 0) + 1


def _finish(counts: dict) -> dict:
    counts["queries_skipped_total"] = sum(counts["queries_skipped"].values())
    return counts


# ---- the exporters -------------------------------------------------------------------------------------------
# Each format is a function MinedRow -> (output rows, skip reason or None); the drivers below do the streaming,
# the counting and the file handling.

RowsOrSkip = Tuple[List[dict], Optional[str]]


def _export_parquet(part_urls: List[str], out_url: str, columns: Union[List[str], pa.Schema], counts: dict,
                    rows_for: Callable[[str, MinedRow], RowsOrSkip], scores: Optional[str] = None) -> dict:
    """``columns``: text column names (with ``scores`` a ``scores`` list column after them), or a whole schema."""
    schema = columns if isinstance(columns, pa.Schema) else string_schema(columns, bool(scores))

    def write(f) -> dict:
        with ParquetRowWriter(f, schema) as out:
            for url, row in _rows(part_urls, scores):
                for record in _count_query(counts, rows_for(url, row)):
                    out.add(record)
        counts["rows_written"] = out.rows
        return _finish(counts)
    return _write_guarded(out_url, "wb", write)


def _export_jsonl(part_urls: List[str], out_url: str, counts: dict,
                  rows_for: Callable[[str, MinedRow], RowsOrSkip], scores: Optional[str] = None) -> dict:
    def write(f) -> dict:
        for url, row in _rows(part_urls, scores):
            for record in _count_query(counts, rows_for(url, row)):
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                counts["rows_written"] += 1
        return _finish(counts)
    return _write_guarded(out_url, "wt", write)


def _count_query(counts: dict, rows_or_skip: RowsOrSkip) -> List[dict]:
    records, skipped_because = rows_or_skip
    counts["queries_read"] += 1
    if skipped_because:
        _skip(counts, skipped_because)
        return []
    counts["queries_written"] += 1
    return records


def unpairable(row: MinedRow) -> Optional[str]:
    """Why no (query, positive, negative) example can be formed from this row, or None."""
    if not row.positive_ids:
        return "no_positive"
    if not row.negative_ids:
        return "no_negatives"
    return None


def texts_of(row: MinedRow, url: str, lookup: Callable[[str, str, str], str]) -> Tuple[List[str], List[str]]:
    """(positive texts, negative texts) of a row, in its order."""
    return ([lookup(d, url, row.query_id) for d in row.positive_ids],
            [lookup(d, url, row.query_id) for d in row.negative_ids])


def _with_scores(counts: dict, scores: Optional[str]) -> dict:
    return dict(counts, scores=scores) if scores else counts


def export_st_triplet(parts_url_or_paths: PartsArg, texts: Mapping[str, str], out_url: str,
                      scores: Optional[str] = None) -> dict:
    """Parquet (anchor, positive, negative[, scores]): every positive paired with every negative of its query;
    with ``scores`` a ``scores`` column [s(positive), s(negative)].

    Skipped (and counted): queries with no positive, queries with no negative (no triplet can be formed)."""
    lookup = text_lookup(texts)

    def rows_for(url: str, row: MinedRow) -> RowsOrSkip:
        reason = unpairable(row)
        if reason:
            return [], reason
        positives, negatives = texts_of(row, url, lookup)
        out = []
        for p, positive in enumerate(positives):
            for j, negative in enumerate(negatives):
                record = {"anchor": row.query, "positive": positive, "negative": negative}
                if scores:
                    record["scores"] = [row.scores(scores)[0][p], row.scores(scores)[1][j]]
                out.append(record)
        return out, None

    return _export_parquet(resolve_parts(parts_url_or_paths), out_url, ["anchor", "positive", "negative"],
                           _with_scores(_new_counts("st-triplet"), scores), rows_for, scores)


def export_st_ntuple(parts_url_or_paths: PartsArg, texts: Mapping[str, str], out_url: str,
                     num_negatives: Optional[int] = None, scores: Optional[str] = None) -> dict:
    """Parquet (anchor, positive, negative_1 .. negative_n[, scores]): one row per (query, positive), exactly n
    negatives; with ``scores`` a ``scores`` column [s(positive), s(negative_1) .. s(negative_n)].

    ``num_negatives`` None: n = the widest negative list in the output (the mined ``num_negatives`` unless every
    query came up short). The format is fixed-width, so queries with fewer than n negatives are skipped and counted
    (``queries_skipped["short_of_negatives"]``), as sentence-transformers drops them too; a query with more than n
    keeps its first n (best-ranked)."""
    part_urls = resolve_parts(parts_url_or_paths)
    n = max_negatives(part_urls) if num_negatives is None else int(num_negatives)
    if n < 1:
        raise ValueError(f"n-tuple export needs at least one negative per row; got num_negatives={n}"
                         + (" (no query in the output has any negative)" if num_negatives is None else ""))
    lookup = text_lookup(texts)
    columns = ntuple_columns(n)

    def rows_for(url: str, row: MinedRow) -> RowsOrSkip:
        if not row.positive_ids:
            return [], "no_positive"
        if len(row.negative_ids) < n:
            return [], "short_of_negatives"
        negatives = [lookup(d, url, row.query_id) for d in row.negative_ids[:n]]
        out = []
        for p, pid in enumerate(row.positive_ids):
            record = dict(zip(columns, [row.query, lookup(pid, url, row.query_id)] + negatives))
            if scores:
                record["scores"] = [row.scores(scores)[0][p]] + list(row.scores(scores)[1][:n])
            out.append(record)
        return out, None

    return _export_parquet(part_urls, out_url, columns,
                           _with_scores(dict(_new_counts("st-ntuple"), num_negatives=n), scores), rows_for, scores)


def export_st_labeled_pair(parts_url_or_paths: PartsArg, texts: Mapping[str, str], out_url: str,
                           scores: Optional[str] = None) -> dict:
    """Parquet (anchor, positive, label): per query, each positive with label 1, then each negative (rank order)
    with label 0; with ``scores`` the column is ``score`` (float: the document's score) instead of ``label``, as
    sentence-transformers' ``labeled-pair`` with ``output_scores=True``.

    Skipped (and counted): queries with no positive, queries with no negative (nothing to tell apart)."""
    lookup = text_lookup(texts)
    last = ("score", pa.float32()) if scores else ("label", pa.int64())
    schema = pa.schema([("anchor", pa.string()), ("positive", pa.string()), last])

    def rows_for(url: str, row: MinedRow) -> RowsOrSkip:
        reason = unpairable(row)
        if reason:
            return [], reason
        judged = ([(d, 1, row.scores(scores)[0][i] if scores else None) for i, d in enumerate(row.positive_ids)]
                  + [(d, 0, row.scores(scores)[1][j] if scores else None) for j, d in enumerate(row.negative_ids)])
        return [{"anchor": row.query, "positive": lookup(d, url, row.query_id), last[0]: score if scores else label}
                for d, label, score in judged], None

    return _export_parquet(resolve_parts(parts_url_or_paths), out_url, schema,
                           _with_scores(_new_counts("st-labeled-pair"), scores), rows_for, scores)


def export_st_labeled_list(parts_url_or_paths: PartsArg, texts: Mapping[str, str], out_url: str,
                           scores: Optional[str] = None) -> dict:
    """Parquet (anchor, positive: [positive, negative_1 .. negative_k], labels: [1, 0 .. 0]): one row per (query,
    positive), the query's negatives in rank order; with ``scores`` the last column is ``scores`` (floats aligned
    with the list) instead of ``labels``, as sentence-transformers' ``labeled-list`` with ``output_scores=True``.
    A query's rows may differ in length (k = its negatives).

    Skipped (and counted): queries with no positive, queries with no negative."""
    lookup = text_lookup(texts)
    last = ("scores", pa.list_(pa.float32())) if scores else ("labels", pa.list_(pa.int64()))
    schema = pa.schema([("anchor", pa.string()), ("positive", pa.list_(pa.string())), last])

    def rows_for(url: str, row: MinedRow) -> RowsOrSkip:
        reason = unpairable(row)
        if reason:
            return [], reason
        positives, negatives = texts_of(row, url, lookup)
        return [{"anchor": row.query, "positive": [positive] + negatives,
                 last[0]: ([row.scores(scores)[0][p]] + list(row.scores(scores)[1]) if scores
                           else [1] + [0] * len(negatives))}
                for p, positive in enumerate(positives)], None

    return _export_parquet(resolve_parts(parts_url_or_paths), out_url, schema,
                           _with_scores(_new_counts("st-labeled-list"), scores), rows_for, scores)


def export_flagembedding(parts_url_or_paths: PartsArg, texts: Mapping[str, str], out_url: str,
                         scores: Optional[str] = None, prompt: str = "") -> dict:
    """JSONL ``{"query": str, "pos": [texts], "neg": [texts]}``, one line per query; with ``scores`` also
    ``"pos_scores"`` / ``"neg_scores"`` (aligned with pos / neg: what FlagEmbedding's distillation reads), with a
    ``prompt`` also ``"prompt"`` (the query instruction its trainer prepends; a row's own ``prompt`` column, from
    FlagEmbedding input, wins).

    Queries short of negatives are kept (FlagEmbedding's trainer repeats negatives up to train_group_size); skipped
    and counted: no positive (it needs pos[0]), no negatives at all (its sampler divides by len(neg))."""
    lookup = text_lookup(texts)

    def rows_for(url: str, row: MinedRow) -> RowsOrSkip:
        reason = unpairable(row)
        if reason:
            return [], reason
        record = {"query": row.query,
                  "pos": [lookup(d, url, row.query_id) for d in row.positive_ids],
                  "neg": [lookup(d, url, row.query_id) for d in row.negative_ids]}
        if scores:
            record["pos_scores"] = list(row.scores(scores)[0])
            record["neg_scores"] = list(row.scores(scores)[1])
        if row.prompt or prompt:  # the query's own prompt (FlagEmbedding input) wins over the run's
            record["prompt"] = row.prompt or prompt
        return [record], None

    return _export_jsonl(resolve_parts(parts_url_or_paths), out_url,
                         _with_scores(_new_counts("flagembedding"), scores), rows_for, scores)


# ---- the registry and a run's exports ------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportFormat:
    """One export format: its file under ``<output>/export/`` and ``write(parts, texts, out_url, cfg, scores)``."""
    file: str
    write: Callable[..., dict]


FORMATS: Dict[str, ExportFormat] = {
    "st-triplet": ExportFormat("st-triplet.parquet",
                               lambda parts, texts, out, cfg, scores: export_st_triplet(parts, texts, out, scores)),
    "st-ntuple": ExportFormat("st-ntuple.parquet",
                              lambda parts, texts, out, cfg, scores: export_st_ntuple(parts, texts, out,
                                                                                      scores=scores)),
    "st-labeled-pair": ExportFormat("st-labeled-pair.parquet",
                                    lambda parts, texts, out, cfg, scores: export_st_labeled_pair(parts, texts, out,
                                                                                                  scores)),
    "st-labeled-list": ExportFormat("st-labeled-list.parquet",
                                    lambda parts, texts, out, cfg, scores: export_st_labeled_list(parts, texts, out,
                                                                                                  scores)),
    "flagembedding": ExportFormat("flagembedding.jsonl",
                                  lambda parts, texts, out, cfg, scores: export_flagembedding(
                                      parts, texts, out, scores, cfg.encoder.query_prompt)),
}
EXPORT_FILES = {name: f.file for name, f in FORMATS.items()}
EXPORTERS = {"st-triplet": export_st_triplet, "st-ntuple": export_st_ntuple,
             "st-labeled-pair": export_st_labeled_pair, "st-labeled-list": export_st_labeled_list,
             "flagembedding": export_flagembedding}


def export_score_source(cfg) -> Optional[str]:
    """The scores a run's exports carry: the cross-encoder's (teacher scores) when the run has one, else the
    bi-encoder's with ``output.export_scores``, else none."""
    if cfg.mining.cross_encoder.model:
        return "cross-encoder"
    return "bi-encoder" if cfg.output.export_scores else None


def write_exports(cfg, out_url: str) -> dict:
    """Writes every format of ``cfg.output.export`` under ``<out_url>/export/``; format -> counts and path."""
    parts = list_parts(out_url)  # a finished run: the parts its manifest commits
    # doc id -> text of the documents the output names (memory: those texts, not the corpus's)
    texts = format_of(cfg.input).corpus_texts(only=referenced_doc_ids(parts))
    scores = export_score_source(cfg)
    results = {}
    for fmt in cfg.output.export:
        target = fs.join(out_url, "export", FORMATS[fmt].file)
        fs.makedirs(fs.join(out_url, "export"))
        results[fmt] = dict(FORMATS[fmt].write(parts, texts, target, cfg, scores), path=target)
    return results


def run_exports(cfg, out_url: str, in_process: bool = False) -> dict:
    """``write_exports`` in a Ray task (the id -> text map stays off the driver), or here (``in_process``: a small
    run without Ray)."""
    if input_format(cfg).precomputed:
        return {"skipped": "precomputed vectors carry no texts to export"}
    if in_process:
        return write_exports(cfg, out_url)
    import ray
    return ray.get(ray.remote(num_cpus=0.25)(write_exports).remote(cfg, out_url))
