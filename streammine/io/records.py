"""The record schemas that readers produce, and the quarantine of bad input rows.

Corpus records (``CORPUS_SCHEMA``) and query records (``QUERY_SCHEMA``) are what every input format is turned into.
A quarantine record is ``{"kind", "location", "reason", "raw"}``; each task that finds bad rows (in lenient mode)
writes its own JSONL part under the run's quarantine directory, so nothing is gathered in the driver.
"""
from __future__ import annotations

import collections
import json
import uuid
from typing import Dict, Iterator, List, Optional

import pyarrow as pa

from . import fs

CORPUS_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("title", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("text_key", pa.uint64(), nullable=False),   # keys.text_key(document_text(title, text))
    pa.field("file_idx", pa.int32(), nullable=False),
    pa.field("row", pa.int64(), nullable=False),           # 0-based line/row within its file, bad ones counted
    pa.field("location", pa.string(), nullable=False),     # "<file>:<line>" or "<file>:row <n>"
])

QUERY_SCHEMA = pa.schema([
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("query", pa.string(), nullable=False),
    pa.field("positive_ids", pa.list_(pa.string()), nullable=False),
    pa.field("positive_locations", pa.list_(pa.string()), nullable=False),  # where each positive was named
    pa.field("location", pa.string(), nullable=False),
    # additive, null when the format has none (io/formats/beir.py, pairs.py, flagembedding.py):
    pa.field("positive_grades", pa.list_(pa.float32())),          # graded qrels: aligned with positive_ids
    pa.field("supplied_negative_ids", pa.list_(pa.string())),     # known negatives (qrels score <= 0, neg column)
    pa.field("supplied_negative_locations", pa.list_(pa.string())),
    pa.field("below_grade_ids", pa.list_(pa.string())),           # judged 0 < grade < min_positive_grade: neither
    pa.field("prompt", pa.string()),                              # a per-query instruction (FlagEmbedding)
])

RAW_CHARS = 300
QUARANTINE_SUFFIX = ".jsonl"


def document_text(title: Optional[str], text: Optional[str]) -> str:
    """The text a document is embedded as: ``"{title} {text}"`` when it has a title, else ``text``
    (the BEIR / sentence-transformers convention)."""
    text = text or ""
    return f"{title} {text}" if title else text


def _raw(raw) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    elif not isinstance(raw, str):
        try:
            raw = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            raw = repr(raw)
    return raw[:RAW_CHARS]


class Quarantine:
    """Bad rows seen by one task. ``write`` puts them in a new uniquely named part and empties the collection,
    so a task may write more than once (each call writes only what was added since)."""

    def __init__(self):
        self.records: List[dict] = []

    def add(self, kind: str, location: str, reason: str, raw="") -> None:
        self.records.append({"kind": str(kind), "location": str(location), "reason": str(reason),
                             "raw": _raw(raw)})

    def __len__(self) -> int:
        return len(self.records)

    def __bool__(self) -> bool:  # an empty quarantine is still a quarantine (lenient mode), never falsy
        return True

    def counts(self) -> Dict[str, int]:
        return dict(collections.Counter(r["kind"] for r in self.records))

    def write(self, dir_url: str) -> Optional[str]:
        """Writes the collected records as ``<dir_url>/part-<uuid>.jsonl``; returns its URL (None when empty)."""
        if not self.records:
            return None
        fs.makedirs(dir_url)
        url = fs.join(dir_url, f"part-{uuid.uuid4().hex}{QUARANTINE_SUFFIX}")
        with fs.open_url(url, "wt") as f:
            for record in self.records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.records = []
        return url


def read_quarantine(dir_url: str) -> Iterator[dict]:
    """Every quarantine record under ``dir_url`` (all parts, in part-name order); nothing if it does not exist."""
    for url in fs.list_files(dir_url, (QUARANTINE_SUFFIX,)):
        with fs.open_url(url, "rt") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def count_quarantine(dir_url: str) -> Dict[str, int]:
    """kind -> number of quarantined records, over all parts under ``dir_url``."""
    counts: collections.Counter = collections.Counter()
    for record in read_quarantine(dir_url):
        counts[record.get("kind", "unknown")] += 1
    return dict(sorted(counts.items()))
