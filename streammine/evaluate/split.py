"""A deterministic held-out carve of a BEIR split, written out as a BEIR directory.

``carve_heldout(source, out, fraction, seed)`` ranks the queries of ``qrels/<split>.tsv`` by a seeded hash of their
id and puts the first ``round(fraction * n)`` in ``qrels/heldout.tsv``, the rest in ``qrels/train.tsv``. The
assignment depends only on (seed, query id, number of queries): not on file order, not on the machine. With
``fold=(i, k)`` the queries are dealt into k folds in that order instead and fold i is held out
(``assign_folds``): k carves, one per fold, judge every query exactly once.

Mining reads ``qrels/train.tsv`` only (streammine's BEIR reader yields just the queries with positives in the
split it is given), and training builds its examples from the mining output or from ``qrels/train.tsv``: a
held-out query is never mined and never trained on. ``queries.jsonl`` holds both sets (BEIR layout), and the corpus
is the whole corpus: held-out queries are searched against every document, as in any BEIR evaluation.

Relevance is binary here, as streammine reads it: a qrels line with score > 0 is a positive and is written with
score 1; lines with score <= 0 are dropped.

Files are rewritten only when their content changes, so a second carve with the same settings leaves the
directory (and its modification times) untouched and the mining embedding store, keyed on those, is reused.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

from ..errors import ConfigError, StreamMineError
from ..io import fs, readers
from ..io.records import document_text

TRAIN_SPLIT = "train"
HELDOUT_SPLIT = "heldout"
SPLIT_FILE = "split.json"


@dataclass
class SplitInfo:
    path: str                       # the carved BEIR directory
    source: str
    source_split: str
    fraction: float
    seed: int
    train_ids: List[str] = field(default_factory=list)
    heldout_ids: List[str] = field(default_factory=list)
    docs: int = 0
    dropped_queries: int = 0        # qrels queries that queries.jsonl lacks (or left out by max_queries)
    fold: Optional[List[int]] = None  # [i, k]: the held-out part is fold i of k

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train_queries"], d["heldout_queries"] = len(self.train_ids), len(self.heldout_ids)
        return d


def hash_rank(ids: Iterable[str], seed: int) -> List[str]:
    """The ids ordered by a seeded SHA-256 of the id (ties, impossible in practice, by id)."""
    def key(qid: str) -> Tuple[bytes, str]:
        return hashlib.sha256(f"{int(seed)}\x00{qid}".encode("utf-8")).digest(), qid
    return sorted(set(ids), key=key)


def assign_heldout(ids: Iterable[str], fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """(train ids, held-out ids), each sorted, disjoint, together every id. ``round(fraction * n)`` are held out,
    at least one and at most n - 1 when 0 < fraction < 1."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"heldout_fraction must be in (0, 1), got {fraction}")
    ranked = hash_rank(ids, seed)
    if len(ranked) < 2:
        raise StreamMineError(f"need at least 2 queries to carve a held-out part, got {len(ranked)}")
    k = min(max(int(round(fraction * len(ranked))), 1), len(ranked) - 1)
    heldout, train = sorted(ranked[:k]), sorted(ranked[k:])
    assert not set(heldout) & set(train) and len(heldout) + len(train) == len(ranked)
    return train, heldout


def assign_folds(ids: Iterable[str], folds: int, seed: int) -> List[List[str]]:
    """``folds`` disjoint lists of ids (each sorted) that together hold every id once: dealt round-robin in
    seeded hash order, so fold sizes differ by at most one and fold i of a seed is the same on every machine."""
    ranked = hash_rank(ids, seed)
    if int(folds) < 2:
        raise ConfigError(f"folds must be >= 2, got {folds}")
    if len(ranked) < folds:
        raise StreamMineError(f"need at least {folds} queries for {folds} folds, got {len(ranked)}")
    return [sorted(ranked[i::folds]) for i in range(folds)]


def assign_fold(ids: Iterable[str], folds: int, fold: int, seed: int) -> Tuple[List[str], List[str]]:
    """(train ids, held-out ids) for fold ``fold`` of :func:`assign_folds`: held out that fold, train the rest."""
    parts = assign_folds(ids, folds, seed)
    if not 0 <= fold < folds:
        raise ConfigError(f"fold must be in 0..{folds - 1}, got {fold}")
    return sorted(q for i, p in enumerate(parts) if i != fold for q in p), parts[fold]


def carve_heldout(source: str, out_dir: str, fraction: float, seed: int = 0, split: str = "train",
                  max_queries: Optional[int] = None, max_docs: Optional[int] = None,
                  fold: Optional[Tuple[int, int]] = None) -> SplitInfo:
    """Writes ``out_dir`` as a BEIR directory: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/train.tsv`` (mining
    and training queries), ``qrels/heldout.tsv`` (evaluation queries), ``split.json``.

    ``max_queries`` / ``max_docs`` make a smaller set for smoke runs: the first ``max_queries`` queries in seeded
    hash order, and a corpus of every positive of those queries plus other documents (in seeded hash order of their
    id) up to ``max_docs`` documents in all.

    ``fold`` = (i, k): the held-out part is fold i of k (:func:`assign_fold`) instead of a ``fraction``."""
    positives = {qid: p.ids for qid, p in readers.read_qrels(readers.beir_qrels_url(source, split)).items()}
    query_lines = _query_lines(readers.beir_queries_url(source), set(positives))
    usable = [q for q in positives if q in query_lines]
    dropped = len(positives) - len(usable)
    if max_queries is not None:
        kept = hash_rank(usable, seed)[:max_queries]
        dropped += len(usable) - len(kept)
        usable = kept
    train, heldout = (assign_heldout(usable, fraction, seed) if fold is None
                      else assign_fold(usable, fold[1], fold[0], seed))

    os.makedirs(os.path.join(out_dir, "qrels"), exist_ok=True)
    corpus_url = readers.beir_corpus_url(source)
    needed = {d for q in usable for d in positives[q]}
    docs = _write_corpus(corpus_url, os.path.join(out_dir, "corpus.jsonl"), needed, max_docs, seed)
    keep = set(usable)
    _write_if_changed(os.path.join(out_dir, "queries.jsonl"),
                      "".join(line + "\n" for q, line in query_lines.items() if q in keep))  # file order
    for name, ids in ((TRAIN_SPLIT, train), (HELDOUT_SPLIT, heldout)):
        _write_if_changed(os.path.join(out_dir, "qrels", f"{name}.tsv"),
                          "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q in ids for d in positives[q]))
    info = SplitInfo(path=out_dir, source=source, source_split=split, fraction=fraction, seed=seed,
                     train_ids=train, heldout_ids=heldout, docs=docs, dropped_queries=dropped,
                     fold=None if fold is None else [int(fold[0]), int(fold[1])])
    _write_if_changed(os.path.join(out_dir, SPLIT_FILE), json.dumps(info.to_dict(), indent=1) + "\n")
    return info


def _query_lines(url: str, wanted: Set[str]) -> Dict[str, str]:
    """query id -> its queries.jsonl line (verbatim), for the wanted ids, in file order; the first line wins."""
    lines: Dict[str, str] = {}
    with fs.open_url(url, "rt") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                qid = str(json.loads(line).get("_id"))
            except (ValueError, AttributeError):
                continue  # the streammine reader reports bad lines when the carved directory is mined
            if qid in wanted and qid not in lines:
                lines[qid] = line
    return lines


def _write_corpus(url: str, path: str, needed: Set[str], max_docs: Optional[int], seed: int) -> int:
    if max_docs is None:
        with fs.open_url(url, "rt") as f:
            text = f.read()
        _write_if_changed(path, text)
        return sum(1 for line in text.splitlines() if line.strip())
    lines: Dict[str, str] = {}
    with fs.open_url(url, "rt") as f:
        for line in f:
            line = line.rstrip("\r\n")
            try:
                doc_id = str(json.loads(line)["_id"])
            except (ValueError, KeyError, TypeError):
                continue
            lines.setdefault(doc_id, line)
    missing = needed - set(lines)
    if missing:
        raise StreamMineError(f"{url}: {len(missing)} positive document(s) are not in the corpus, e.g. "
                              f"{sorted(missing)[0]!r}")
    others = [d for d in hash_rank(lines, seed) if d not in needed]
    keep = needed | set(others[:max(0, max_docs - len(needed))])
    _write_if_changed(path, "".join(line + "\n" for d, line in lines.items() if d in keep))
    return len(keep)


def _write_if_changed(path: str, text: str) -> None:
    data = text.encode("utf-8")
    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == data:
                return
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---- reading a carved (or any BEIR) directory back -----------------------------------------------------------

def read_queries(dir_url: str, split: str) -> Tuple[Dict[str, str], Dict[str, List[str]]]:
    """(query id -> text, query id -> positive ids) for the queries of ``qrels/<split>.tsv``, via streammine's
    validating reader."""
    texts, positives = {}, {}
    for table in readers.iter_beir_queries(dir_url, split):
        for qid, text, pos in zip(table.column("query_id").to_pylist(), table.column("query").to_pylist(),
                                  table.column("positive_ids").to_pylist()):
            texts[qid], positives[qid] = text, list(pos)
    return texts, positives


def read_corpus(dir_url: str) -> Tuple[List[str], List[str]]:
    """(doc ids, document texts) in corpus order; the text is what streammine embeds (title + " " + text)."""
    ids, texts, seen = [], [], set()
    for table in readers.iter_beir_corpus(dir_url):
        for doc_id, title, text in zip(table.column("doc_id").to_pylist(), table.column("title").to_pylist(),
                                       table.column("text").to_pylist()):
            if doc_id in seen:
                continue
            seen.add(doc_id)
            ids.append(doc_id)
            texts.append(document_text(title, text))
    return ids, texts
