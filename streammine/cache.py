"""The cache that outlives an output folder: embedding stores and query vectors, keyed by model and corpus.

Where: ``run.work_dir`` when set (the older per-run setting), else ``run.cache_dir`` (``--cache-dir``), else
``$STREAMMINE_CACHE``, else ``~/.cache/streammine``; any fsspec URL (``s3://bucket/cache``). Layout::

    embeddings/<store key>/            one committed store per (model, encoding settings, corpus files' stamps)
    query_vectors/<model key>/         query vectors of one model and query prompt (+ complete/ marks)

Entries are content-addressed and a store becomes visible only when its manifest is written (last), so runs of
different outputs share them; a second run over the same corpus and model encodes no document, and one over the
same documents under new file stamps or another path starts no encoder (``run.store_build``). ``prune`` removes
entries by age and size, oldest first (``choose_prune``), only those named like one (a 16-hex key).
"""
from __future__ import annotations

import os
import re
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


_process_inputs: Optional[str] = None


def process_inputs_dir() -> str:
    """A folder of this process, removed when it exits, for the input files a call writes from in-memory texts
    (``compat.mine_hard_negatives``). The files are named by their content and kept for the process's life, so a
    second call on the same texts reads the same files: same corpus stamps, same store key, and the embedding
    store of the first call is reused as it stands (none encoded)."""
    global _process_inputs
    if _process_inputs is None or not os.path.isdir(_process_inputs):
        import atexit
        import shutil
        import tempfile
        _process_inputs = tempfile.mkdtemp(prefix="streammine-inputs-")
        atexit.register(shutil.rmtree, _process_inputs, True)
    return _process_inputs


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
            if not is_entry_key(key):
                continue
            url = fs.join(root, kind, key)
            size, modified = _size_and_mtime(filesystem, child)
            entry = {"kind": kind, "key": key, "url": url, "bytes": size, "modified": modified}
            if kind == "embeddings":
                m = read_manifest(url) or {}
                entry.update(model=m.get("model"), docs=m.get("docs"))
            out.append(entry)
    return out


# An entry's folder name is a 16-hex digest (index/store_naming.digest16): anything else under the cache's kind
# folders is not streammine's (a --cache-dir pointed at the wrong folder), so prune never removes it.
_KEY = re.compile(r"^[0-9a-f]{16}$")


def is_entry_key(name: str) -> bool:
    return bool(_KEY.match(name))


def choose_prune(entries_: List[dict], now: float, older_than_s: Optional[float] = None,
                 max_bytes: Optional[float] = None) -> List[dict]:
    """The entries a prune removes, oldest first: those last modified more than ``older_than_s`` ago, then, while
    the rest still exceed ``max_bytes`` in total, the oldest of the rest. Neither limit: every entry."""
    by_age = sorted(entries_, key=lambda e: (e["modified"], e["kind"], e["key"]))
    if older_than_s is None and max_bytes is None:
        return by_age
    go = [e for e in by_age if older_than_s is not None and now - e["modified"] > older_than_s]
    kept = [e for e in by_age if not any(e is g for g in go)]
    if max_bytes is not None:
        total = sum(e["bytes"] for e in kept)
        while kept and total > max_bytes:
            oldest = kept.pop(0)
            go.append(oldest)
            total -= oldest["bytes"]
    return go


def prune(root: str, older_than_s: Optional[float] = None, max_bytes: Optional[float] = None,
          dry_run: bool = False, now: Optional[float] = None) -> List[dict]:
    """Removes the entries ``choose_prune`` picks (nothing with ``dry_run``); returns them, oldest first. Only
    streammine's own entries (``<root>/<kind>/<16-hex key>``) are ever removed; a link is removed, not followed."""
    now = time.time() if now is None else now
    chosen = choose_prune(entries(root), now, older_than_s, max_bytes)
    if not dry_run:
        for e in chosen:
            _remove_entry(e["url"])
    return chosen


def _remove_entry(url: str) -> None:
    if fs.is_local(url):
        path = os.path.expanduser(url)
        if os.path.islink(path):  # the link is the cache's; what it points at is not
            os.unlink(path)
            return
    filesystem, path = fs.resolve(url)
    filesystem.rm(path, recursive=True)


def summary_line(root: str) -> Optional[str]:
    """``"<size> in <n> entries at <root>"`` for a local cache (a listing of an object store can be slow and
    cost requests: None there), None when the cache does not exist."""
    if not fs.is_local(root) or not os.path.isdir(os.path.expanduser(root)):
        return None
    found = entries(root)
    return f"{human_bytes(sum(e['bytes'] for e in found))} in {len(found)} entries at {root}"


def parse_size(text: str) -> float:
    """``"10GiB"``, ``"500MB"``, ``"2G"``, ``"1048576"`` (bytes) -> bytes (K/M/G/T and KiB/MiB/... are powers of
    1024, KB/MB/... of 1000)."""
    t = str(text).strip()
    m = re.match(r"^([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B?)$", t, re.IGNORECASE)
    if not m:
        raise ConfigError(f"--max-size: cannot read {text!r} (e.g. 10GiB, 500MB, 2G)")
    value, prefix, suffix = float(m.group(1)), m.group(2).upper(), m.group(3).upper()
    power = " KMGT".index(prefix) if prefix else 0
    base = 1000.0 if suffix == "B" and prefix else 1024.0
    return value * base ** power


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


def corpus_line(docs: int, encoded: int, from_cache: int, encode_seconds: Optional[float],
                precomputed: bool = False) -> str:
    """What a run's corpus came from, in one line: the summary's ``documents_encoded`` / ``documents_from_cache``
    and ``corpus_encode_seconds`` (which, with nothing to encode, is only the store's copy or lookup)."""
    took = f" in {encode_seconds:.1f} s" if encode_seconds is not None else ""
    if precomputed:
        return f"{docs} documents, precomputed vectors (none encoded; store ready{took})"
    if encoded == 0:
        return f"{docs} documents, all from the cache; none encoded (store ready{took})"
    if from_cache == 0:
        return f"{docs} documents, all encoded{took}"
    return f"{docs} documents: {from_cache} from the cache, {encoded} encoded{took}"
