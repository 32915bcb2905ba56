"""The cache that outlives an output folder: embedding stores and query vectors, keyed by model and corpus.

Where: ``run.work_dir`` when set (the older per-run setting), else ``run.cache_dir`` (``--cache-dir``), else
``$STREAMMINE_CACHE``, else ``~/.cache/streammine``; any fsspec URL (``s3://bucket/cache``). Layout::

    embeddings/<store key>/            one committed store per (model, encoding settings, corpus files' stamps)
    query_vectors/<model key>/         query vectors of one model and query prompt (+ complete/ marks)

Entries are content-addressed and a store becomes visible only when its manifest is written (last), so runs of
different outputs share them; a second run over the same corpus and model encodes no document.
"""
from __future__ import annotations

import os
import time
from typing import List, Optional

from .errors import ConfigError
from .index.store import read_manifest
from .io import fs

CACHE_ENV = "STREAMMINE_CACHE"
KINDS = ("embeddings", "query_vectors")


def default_cache_dir() -> str:
    """``$STREAMMINE_CACHE``, else ``$XDG_CACHE_HOME/streammine``, else ``~/.cache/streammine``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "streammine")


def cache_root(cfg) -> str:
    """The cache of a run's config (see the module docstring for the order)."""
    r = cfg.run
    root = r.work_dir or getattr(r, "cache_dir", None) or default_cache_dir()
    return os.path.expanduser(root) if fs.is_local(root) else root


def _size_and_mtime(filesystem, path: str) -> tuple:
    size, newest = 0, 0.0
    for info in filesystem.find(path, detail=True).values():
        size += int(info.get("size") or 0)
        m = info.get("mtime") or info.get("LastModified") or info.get("created")
        if hasattr(m, "timestamp"):
            m = m.timestamp()
        try:
            newest = max(newest, float(m or 0))
        except (TypeError, ValueError):
            pass
    return size, newest


def entries(root: str) -> List[dict]:
    """One dict per cache entry: ``kind``, ``key``, ``url``, ``bytes``, ``modified`` (unix seconds, the newest
    file), and for embedding stores ``model`` and ``docs`` (from the manifest; None when not committed)."""
    out = []
    if not fs.exists(root):
        return out
    filesystem, base = fs.resolve(root)
    for kind in KINDS:
        kind_path = base.rstrip("/") + "/" + kind
        if not filesystem.isdir(kind_path):
            continue
        for child in sorted(filesystem.ls(kind_path, detail=False)):
            key = child.rstrip("/").rsplit("/", 1)[-1]
            url = fs.join(root, kind, key)
            size, modified = _size_and_mtime(filesystem, child)
            entry = {"kind": kind, "key": key, "url": url, "bytes": size, "modified": modified}
            if kind == "embeddings":
                m = read_manifest(url) or {}
                entry.update(model=m.get("model"), docs=m.get("docs"))
            out.append(entry)
    return out


def prune(root: str, older_than_s: Optional[float] = None, now: Optional[float] = None) -> List[dict]:
    """Removes the entries last modified more than ``older_than_s`` seconds ago (every entry when None); returns
    the removed ones."""
    now = time.time() if now is None else now
    removed = []
    for e in entries(root):
        if older_than_s is None or now - e["modified"] > older_than_s:
            filesystem, path = fs.resolve(e["url"])
            filesystem.rm(path, recursive=True)
            removed.append(e)
    return removed


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"45m"``, ``"90s"`` or a number of days -> seconds."""
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    t = str(text).strip().lower()
    try:
        if t and t[-1] in units:
            value = float(t[:-1]) * units[t[-1]]
        else:
            value = float(t) * units["d"]
    except ValueError:
        raise ConfigError(f"--older-than: cannot read {text!r} (e.g. 30d, 12h, 45m)") from None
    if not value >= 0:
        raise ConfigError(f"--older-than must be >= 0, got {text!r}")
    return value


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
