"""One reader for both output layouts: a ``mine`` output read as a finished, closed commit log of one version.

- ``serve`` writes ``_log/<seq>.json`` entries naming parts under ``data/`` (:mod:`streammine.sink.commit_log`).
- ``mine`` writes ``part-*.parquet`` at the top and, when every part is written, ``_parts.json`` naming them; to a
  reader it is a log with one entry (seq 1, version order 1) that is closed.

:func:`output_log` returns an object with the reading side of :class:`CommitLog` (``sequence_numbers``, ``read``,
``entries``, ``part_urls``, ``closed``, ``url``) for either layout; it looks again until one of them is there, so a
follower that starts before the writer waits, and ``layout()`` says what was found.
"""
from __future__ import annotations

from typing import Iterator, List, Optional

from ..errors import InputError
from ..io import fs
from ..preflight import output_state
from .commit_log import LOG_DIR, CommitLog

# a finished ``mine`` output's manifest: the parts it names, written last (streammine.sink.parts.MinedPartsSink)
PARTS_MANIFEST = "_parts.json"


class MineOutputLog:
    """A finished ``mine`` output as a closed log of one entry (its ``_parts.json``)."""

    def __init__(self, out_url: str):
        self.out_url = out_url
        self.url = fs.join(out_url, PARTS_MANIFEST)

    def _entry(self) -> dict:
        manifest = fs.read_json(self.url)
        if manifest is None:
            raise InputError(self.url, "not found")
        summary = fs.read_json(fs.join(self.out_url, "summary.json")) or {}
        parts = [{"part": p["part"], "rows": p.get("rows")} for p in manifest.get("parts", [])]
        return {"seq": 1, "version": summary.get("model_version") or "mine", "version_order": 1, "unit": "mine",
                "parts": parts, "rows": manifest.get("rows", sum(p["rows"] or 0 for p in parts))}

    def sequence_numbers(self) -> List[int]:
        return [1]

    def read(self, seq: int) -> dict:
        if seq != 1:
            raise FileNotFoundError(f"{self.url}: a mine output has one entry, not {seq}")
        return self._entry()

    def entries(self, after: int = 0) -> Iterator[dict]:
        if after < 1:
            yield self._entry()

    def part_urls(self, entry: dict) -> List[str]:
        return [fs.join(self.out_url, p["part"]) for p in entry["parts"]]

    def closed(self) -> bool:
        return True


def detect_layout(out_url: str) -> Optional[str]:
    """``"serve"`` (a commit log), ``"mine"`` (a finished mine output) or None (neither, yet)."""
    if fs.exists(fs.join(out_url, LOG_DIR)):
        return "serve"
    if fs.exists(fs.join(out_url, PARTS_MANIFEST)):
        return "mine"
    return None


def not_an_output(out_url: str) -> InputError:
    what = "not found" if not fs.exists(out_url) else \
        f"not a streammine output (no {PARTS_MANIFEST} of a finished mine, no {LOG_DIR}/ of a serve)"
    return InputError(out_url, what)


class OutputLog:
    """The reading side of a commit log over either layout (see the module docstring)."""

    def __init__(self, out_url: str):
        self.out_url = out_url
        self._impl = None

    def layout(self) -> Optional[str]:
        if self._impl is None:
            found = detect_layout(self.out_url)
            if found == "serve":
                self._impl = CommitLog(self.out_url)
            elif found == "mine":
                self._impl = MineOutputLog(self.out_url)
        return None if self._impl is None else ("serve" if isinstance(self._impl, CommitLog) else "mine")

    @property
    def url(self) -> str:
        return self._impl.url if self._impl is not None else self.out_url

    def sequence_numbers(self) -> List[int]:
        return self._impl.sequence_numbers() if self.layout() else []

    def read(self, seq: int) -> dict:
        if not self.layout():
            raise not_an_output(self.out_url)
        return self._impl.read(seq)

    def entries(self, after: int = 0) -> Iterator[dict]:
        if self.layout():
            yield from self._impl.entries(after)

    def part_urls(self, entry: dict) -> List[str]:
        return self._impl.part_urls(entry)

    def closed(self) -> bool:
        return bool(self.layout()) and self._impl.closed()


def output_log(out_url: str, require: bool = False) -> OutputLog:
    """The log of ``out_url``. With ``require`` (a snapshot reader), an :class:`InputError` at once when neither
    layout is there and nothing says one will come: the URL does not exist, or holds something other than a
    streammine output. A folder a run has started (or an empty one) is an output with nothing committed yet."""
    log = OutputLog(out_url)
    if require and log.layout() is None:
        if output_state(out_url) in ("absent", "file", "foreign"):
            raise not_an_output(out_url)
    return log


def committed_part_urls(out_url: str) -> List[str]:
    """Every part the output has committed, in log order, for either layout (see :func:`output_log`)."""
    log = output_log(out_url, require=True)
    return [u for entry in log.entries() for u in log.part_urls(entry)]
