"""One writer per run: the lease a ``serve`` holds on its output URL while it runs.

Layout under the run's output URL::

    _lease/0000000003.json   {"owner", "host", "pid", "acquired_at", "heartbeat_at", "seconds", "released"}

The newest epoch file is the lease. Taking it means *creating* the next epoch file (create-only: an exclusive
local create, an S3 PUT with ``If-None-Match: *``), so of two processes taking it at once exactly one succeeds.
It may be taken when the newest holder released it, or is gone: its heartbeat is older than its ``seconds``, or
it ran on this host and its process no longer exists (a serve killed and restarted on the same machine takes
over at once). A holder on another host whose heartbeat is fresh is watched until its heartbeat either moves
(it is alive: refused) or expires (it is gone: taken), so a serve restarted elsewhere waits at most ``seconds``
and a second live serve is refused within one heartbeat interval. The holder
rewrites its own epoch file every ``seconds / 3``; before each commit it checks that no newer epoch exists (a
holder that was stalled past its lease and overtaken stops instead of committing). Heartbeats are compared with
the reader's clock: hosts sharing a run need clocks within a fraction of ``seconds`` (NTP gives milliseconds).
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from typing import List, Optional

from ..errors import StreamMineError
from ..io import fs

log = logging.getLogger("streammine")

LEASE_DIR = "_lease"
LEASE_SECONDS = 30.0
_EPOCH = re.compile(r"^(\d{10})\.json$")


class LeaseHeld(StreamMineError):
    """Another live writer holds the run."""


_LIVE_OWNERS: set = set()   # owner tokens of the leases this process holds now


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class RunLease:
    def __init__(self, run_url: str, seconds: float = LEASE_SECONDS):
        self.run_url = run_url
        self.url = fs.join(run_url, LEASE_DIR)
        self.seconds = float(seconds)
        self.owner = uuid.uuid4().hex
        self.epoch: Optional[int] = None
        self.acquired_at = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _epoch_url(self, epoch: int) -> str:
        return fs.join(self.url, f"{epoch:010d}.json")

    def epochs(self) -> List[int]:
        if not fs.exists(self.url):
            return []
        filesystem, path = fs.resolve(self.url)
        found = (_EPOCH.match(c.rstrip("/").rsplit("/", 1)[-1]) for c in filesystem.ls(path, detail=False))
        return sorted(int(m.group(1)) for m in found if m)

    def _record(self, released: bool = False) -> dict:
        return {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                "acquired_at": self.acquired_at, "heartbeat_at": time.time(), "seconds": self.seconds,
                "released": released}

    def _refuse(self, holder: dict, age: float) -> LeaseHeld:
        return LeaseHeld(f"{self.run_url}: another serve is writing this run (host {holder.get('host')}, pid "
                         f"{holder.get('pid')}, alive {max(age, 0):.0f} s ago); stop it first (streammine stop "
                         f"--output {self.run_url}), or if it is gone, start again in "
                         f"{max(0.0, float(holder.get('seconds', self.seconds)) - age):.0f} s")

    def _holder_state(self, holder: dict) -> str:
        """"gone", "live" or "unknown" (fresh heartbeat, another host: only watching it can tell)."""
        age = time.time() - float(holder.get("heartbeat_at", 0))
        if holder.get("released") or age >= float(holder.get("seconds", self.seconds)):
            return "gone"
        if holder.get("owner") in _LIVE_OWNERS:
            return "live"
        if holder.get("host") == socket.gethostname():
            pid = int(holder.get("pid", -1))
            # our own pid but not one of our leases: an earlier process (a restarted container reuses pids)
            return "live" if pid != os.getpid() and pid > 0 and _process_exists(pid) else "gone"
        return "unknown"

    def acquire(self) -> "RunLease":
        """Takes the lease, or raises LeaseHeld (one line) when a live writer holds it."""
        watched = None
        while True:
            epochs = self.epochs()
            if not epochs:
                break
            holder = fs.read_json(self._epoch_url(epochs[-1])) or {}
            state = self._holder_state(holder)
            if state == "gone":
                break
            age = time.time() - float(holder.get("heartbeat_at", 0))
            if state == "live" or (watched is not None and holder.get("heartbeat_at") != watched):
                raise self._refuse(holder, age)
            if watched is None:
                log.info("%s: the lease of host %s (pid %s) is %.0f s old: waiting until it beats again (a live "
                         "serve: refused) or expires (taken)", self.run_url, holder.get("host"), holder.get("pid"),
                         age)
                watched = holder.get("heartbeat_at")
            time.sleep(min(1.0, self.seconds / 10))
        nxt = (epochs[-1] if epochs else 0) + 1
        self.acquired_at = time.time()
        if not fs.write_json_create(self._epoch_url(nxt), self._record()):
            holder = fs.read_json(self._epoch_url(nxt)) or {}
            raise self._refuse(holder, time.time() - float(holder.get("heartbeat_at", time.time())))
        self.epoch = nxt
        _LIVE_OWNERS.add(self.owner)
        # earlier epochs are this run's own lease files, no longer read: only the newest two are kept
        fs.remove_quietly(self._epoch_url(e) for e in epochs[:-1])
        self._thread = threading.Thread(target=self._beat, name="streammine-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                if self.epochs()[-1:] != [self.epoch]:
                    log.error("%s: the lease was taken by another writer; this serve commits nothing more",
                              self.run_url)
                    return
                fs.write_json_atomic(self._epoch_url(self.epoch), self._record())
            except Exception as e:  # noqa: BLE001 - the object store may be down: checked again before a commit
                log.warning("%s: lease heartbeat failed: %s", self.run_url, e)

    def check(self) -> None:
        """Raises LeaseHeld unless this process still holds the lease (called before each commit)."""
        epochs = self.epochs()
        if self.epoch is None or epochs[-1:] != [self.epoch]:
            raise LeaseHeld(f"{self.run_url}: this serve's lease was taken by another writer (it stalled for "
                            f"longer than {self.seconds:.0f} s); it stops without committing")

    def release(self) -> None:
        self._stop.set()
        _LIVE_OWNERS.discard(self.owner)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.epoch is not None:
            try:
                if self.epochs()[-1:] == [self.epoch]:
                    fs.write_json_atomic(self._epoch_url(self.epoch), self._record(released=True))
            except Exception as e:  # noqa: BLE001 - an unreleased lease expires by itself
                log.warning("%s: could not release the lease (it expires in %.0f s): %s", self.run_url,
                            self.seconds, e)
            self.epoch = None

    def __enter__(self) -> "RunLease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
