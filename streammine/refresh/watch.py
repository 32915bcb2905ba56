"""Which model version should be served now: the newest complete checkpoint, or a version forced by hand.

``streammine refresh --output RUN --model URL`` writes ``RUN/_control/refresh.json``; a forced version wins over
the checkpoints published before the request, and a checkpoint published after it wins again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from ..io import fs
from .versions import ModelVersion, check_version_name, latest_version

CONTROL_DIR = "_control"
FORCE_FILE = "refresh.json"
STOP_FILE = "stop.json"
INITIAL = "initial"   # the version name of encoder.model when no checkpoint location is followed


def request_refresh(run_url: str, model_url: str, name: Optional[str] = None) -> dict:
    """Asks a running (or the next) ``serve`` of this run to mine with ``model_url`` now."""
    request = {"model": model_url, "name": check_version_name(name or f"manual-{int(time.time())}", "--name"),
               "requested_at": time.time()}
    fs.write_json_atomic(fs.join(run_url, CONTROL_DIR, FORCE_FILE), request)
    return request


def request_stop(run_url: str) -> None:
    """Asks ``serve`` to stop after the unit of work in flight and close the log (followers then end)."""
    fs.write_json_atomic(fs.join(run_url, CONTROL_DIR, STOP_FILE), {"requested_at": time.time()})


def stop_requested(run_url: str, since: float) -> bool:
    try:
        req = fs.read_json(fs.join(run_url, CONTROL_DIR, STOP_FILE))
    except Exception:  # noqa: BLE001 - the object store may be down for a while: asked again at the next poll
        return False
    return bool(req) and float(req.get("requested_at", 0)) >= since


def clear_stop(run_url: str) -> None:
    fs.remove(fs.join(run_url, CONTROL_DIR, STOP_FILE))


@dataclass
class VersionSource:
    """Where versions come from: a checkpoint location (optional), the configured model, forced requests."""
    run_url: str
    checkpoints: Optional[str]
    initial_model: Optional[str]

    def forced(self) -> Optional[ModelVersion]:
        req = fs.read_json(fs.join(self.run_url, CONTROL_DIR, FORCE_FILE))
        if not req or not req.get("model"):
            return None
        name = check_version_name(req.get("name"), f"{fs.join(self.run_url, CONTROL_DIR, FORCE_FILE)}: name")
        return ModelVersion(name=name, url=str(req["model"]), step=-1,
                            created=float(req.get("requested_at", 0.0)))

    def latest(self) -> Optional[ModelVersion]:
        """The version to serve now (None while a followed checkpoint location has no complete version)."""
        newest = latest_version(self.checkpoints) if self.checkpoints else \
            ModelVersion(name=INITIAL, url=self.initial_model or "", step=-1, created=0.0)
        forced = self.forced()
        if forced is not None and (newest is None or forced.created >= newest.created):
            return forced
        return newest
