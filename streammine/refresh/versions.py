"""Model versions: complete checkpoint directories under one location, in order.

A version is a directory ``<root>/<name>/`` holding a sentence-transformers model; it is complete when the marker
``<root>/<name>/_STREAMMINE_COMPLETE`` exists. The marker is written last, so a directory without it (a checkpoint
being written, or abandoned) is never loaded. The marker is JSON: ``{"step": int, "created": unix seconds}``;
versions are ordered by step, then name. A marker that is not valid JSON counts as step 0 (hand-made markers).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from typing import List, Optional

from ..errors import ConfigError, StreamMineError
from ..io import fs

MARKER = "_STREAMMINE_COMPLETE"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")


def check_version_name(name: str, where: str = "version name") -> str:
    """A version name becomes a directory (``data/<name>/``): one path component of safe characters, never
    ``..`` or a ``/``. Raises ConfigError naming it otherwise."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 200:
        raise ConfigError(f"{where} {name!r}: use letters, digits, '.', '_', '=', '-' (starting with a letter or "
                          f"digit, at most 200 characters)")
    return name


@dataclass(frozen=True)
class ModelVersion:
    name: str        # the checkpoint directory's name: what output rows say in ``model_version``
    url: str         # the checkpoint directory
    step: int
    created: float   # when the marker says it was published (unix seconds)

    @property
    def order_key(self):
        return (self.step, self.name)


def read_version(url: str) -> Optional[ModelVersion]:
    """The version at a checkpoint directory, or None while it has no marker."""
    marker_url = fs.join(url, MARKER)
    if not fs.exists(marker_url):
        return None
    name = url.rstrip("/").rsplit("/", 1)[-1]
    try:
        with fs.open_url(marker_url, "rt") as f:
            meta = json.load(f)
        step, created = int(meta.get("step", 0)), float(meta.get("created", 0.0))
    except (ValueError, TypeError, AttributeError):
        step, created = 0, 0.0
    return ModelVersion(name=name, url=url.rstrip("/"), step=step, created=created)


def list_versions(root_url: str) -> List[ModelVersion]:
    """Complete versions under ``root_url``, oldest first. A missing root has none."""
    if not fs.exists(root_url) or not fs.isdir(root_url):
        return []
    filesystem, path = fs.resolve(root_url)
    found = []
    for child in filesystem.ls(path, detail=True):
        if child.get("type") != "directory":
            continue
        name = child["name"].rstrip("/").rsplit("/", 1)[-1]
        if not _NAME.match(name):
            continue
        version = read_version(fs.join(root_url, name))
        if version is not None:
            found.append(version)
    return sorted(found, key=lambda v: v.order_key)


def latest_version(root_url: str) -> Optional[ModelVersion]:
    versions = list_versions(root_url)
    return versions[-1] if versions else None


def version_dir_name(step: int) -> str:
    return f"step-{step:09d}"


def publish_checkpoint(model_or_dir, root_url: str, step: int, name: Optional[str] = None) -> ModelVersion:
    """Publishes a checkpoint as a version: copies the model files, then writes the marker last.

    ``model_or_dir`` is a sentence-transformers model (saved first) or a local directory holding one.
    """
    name = name or version_dir_name(step)
    target = fs.join(root_url, name)
    with tempfile.TemporaryDirectory(prefix="streammine-ckpt-") as tmp:
        if isinstance(model_or_dir, (str, os.PathLike)):
            src = str(model_or_dir)
        else:
            src = os.path.join(tmp, "model")
            model_or_dir.save(src)
        if fs.is_local(target):
            _, dst = fs.resolve(target)
            if os.path.exists(dst):
                shutil.rmtree(dst)
            shutil.copytree(src, dst)
        else:
            filesystem, dst = fs.resolve(target)
            for dirpath, _dirs, files in os.walk(src):
                for fname in files:
                    rel = os.path.relpath(os.path.join(dirpath, fname), src)
                    filesystem.put_file(os.path.join(dirpath, fname), f"{dst}/{rel}")
    fs.write_json_atomic(fs.join(target, MARKER), {"step": int(step), "created": time.time()})
    return read_version(target)


def local_model_dir(url: str, cache_root: Optional[str] = None) -> str:
    """A local directory holding the model at ``url`` (downloaded once per URL when it is remote)."""
    if fs.is_local(url):
        return fs.resolve(url)[1]
    cache_root = cache_root or private_cache_dir("models")
    local = os.path.join(cache_root, hashlib.sha256(url.encode()).hexdigest()[:16])
    if os.path.exists(os.path.join(local, MARKER)) or os.path.exists(os.path.join(local, ".complete")):
        return local
    filesystem, path = fs.resolve(url)
    tmp = tempfile.mkdtemp(prefix="dl-", dir=_ensure(cache_root))
    try:
        for remote in filesystem.find(path):
            rel = remote[len(path.rstrip("/")):].lstrip("/")
            target = os.path.normpath(os.path.join(tmp, rel))
            if not rel or os.path.isabs(rel) or not target.startswith(tmp + os.sep):
                raise StreamMineError(f"{url}: checkpoint file {rel!r} leads outside the checkpoint directory")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            filesystem.get_file(remote, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    open(os.path.join(tmp, ".complete"), "w").close()
    try:
        os.replace(tmp, local)
    except OSError:  # another process downloaded it first
        shutil.rmtree(tmp, ignore_errors=True)
    return local


def private_cache_dir(name: str) -> str:
    """``<tmp>/streammine-<uid>/<name>``, created mode 0700: only this user can read it or plant files in it (a
    shared, predictable path would let another local user pre-create a "cached" model). A path that exists but
    is a link, or owned by someone else, or open to others, is refused."""
    root = os.path.join(tempfile.gettempdir(), f"streammine-{os.getuid()}")
    os.makedirs(root, mode=0o700, exist_ok=True)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise StreamMineError(f"{root}: the model cache must be a directory of this user, mode 0700 "
                              f"(it is not: remove it or fix its mode)")
    path = os.path.join(root, name)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _ensure(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path
