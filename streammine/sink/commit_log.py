"""The commit log of a continuous run: what is committed, in order, for readers that follow it.

Layout under the run's output URL::

    _log/0000000001.json   one entry per committed unit of work (a query file slice mined by one model version)
    _log/_CLOSED            written when ``serve`` stops cleanly: followers stop at the end of the log
    data/<version>/<unit>/part-*.parquet   the parts an entry names

An entry is created (atomically, and only if no entry of that number exists) only after every part it names is completely written, so a reader that follows
the log never sees a partial part, and a part no entry names (left by a killed run) is never read. Entries are
numbered densely from 1 by the single writer (one ``serve`` per run id, held by its lease: ``refresh/lease.py``);
a reader lists them in order.

Entry fields: ``seq``, ``version`` (model version name), ``version_order`` (its position among versions),
``unit`` (query file and slice), ``parts`` (``[{"part": path relative to the output, "rows": n}]``), ``rows``,
``committed_at`` (unix seconds), ``version_created`` (when the checkpoint was published, unix seconds).
"""
from __future__ import annotations

import re
import time
from typing import Iterator, List, Optional

from ..errors import StreamMineError
from ..io import fs

LOG_DIR = "_log"
CLOSED = "_CLOSED"
_ENTRY = re.compile(r"^(\d{10})\.json$")


def entry_name(seq: int) -> str:
    return f"{seq:010d}.json"


class CommitLog:
    def __init__(self, out_url: str):
        self.out_url = out_url
        self.url = fs.join(out_url, LOG_DIR)

    # ---- reading ----------------------------------------------------------------------------------------------
    def sequence_numbers(self) -> List[int]:
        """The committed sequence numbers, ascending (entries are listed, not assumed dense)."""
        if not fs.exists(self.url):
            return []
        filesystem, path = fs.resolve(self.url)
        seqs = []
        for child in filesystem.ls(path, detail=False):
            m = _ENTRY.match(child.rstrip("/").rsplit("/", 1)[-1])
            if m:
                seqs.append(int(m.group(1)))
        return sorted(seqs)

    def read(self, seq: int) -> dict:
        entry = fs.read_json(fs.join(self.url, entry_name(seq)))
        if entry is None:
            raise FileNotFoundError(f"{self.url}: no entry {seq}")
        return entry

    def entries(self, after: int = 0) -> Iterator[dict]:
        """Committed entries with ``seq > after``, in order."""
        for seq in self.sequence_numbers():
            if seq > after:
                yield self.read(seq)

    def part_urls(self, entry: dict) -> List[str]:
        return [fs.join(self.out_url, p["part"]) for p in entry["parts"]]

    def closed(self) -> bool:
        return fs.exists(fs.join(self.url, CLOSED))

    # ---- writing (one writer per run) -------------------------------------------------------------------------
    def append(self, entry: dict, last_seq: Optional[int] = None) -> dict:
        """Commits ``entry`` as the next sequence number; returns it with ``seq`` and ``committed_at`` set."""
        seqs = self.sequence_numbers() if last_seq is None else [last_seq]
        seq = (seqs[-1] if seqs else 0) + 1
        entry = dict(entry, seq=seq, committed_at=time.time())
        # create-only: an entry is never replaced, so a second writer cannot silently overwrite a commit
        if fs.write_json_create(fs.join(self.url, entry_name(seq)), entry):
            return entry
        existing = self.read(seq)
        if all(existing.get(k) == entry.get(k) for k in ("version", "unit", "parts")):
            return existing  # this writer's own commit, retried after its answer was lost
        raise StreamMineError(f"{fs.join(self.url, entry_name(seq))}: committed by another writer meanwhile "
                              f"(one serve per run: is another serve running on {self.out_url}?)")

    def close(self) -> None:
        fs.write_json_atomic(fs.join(self.url, CLOSED), {"closed_at": time.time()})

    def reopen(self) -> None:
        fs.remove(fs.join(self.url, CLOSED))
