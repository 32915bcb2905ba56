"""URLs for everything fsspec reads: local paths, ``file://``, ``s3://``, ``gs://``, ``memory://``.

URLs keep the form the user gave them (a plain local path stays a plain path), so the locations in error messages
and quarantine records name files the way the user wrote them.

Object stores: ``s3://`` takes its endpoint from ``STREAMMINE_S3_ENDPOINT``, ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (first set wins), passed explicitly to s3fs (whose own handling of these variables depends on
its version). Credentials are never passed or written anywhere by this module: boto's usual chain (environment,
profile, instance role) finds them. Directory listings are never cached (``use_listings_cache=False``), because a
process commonly writes files and then lists them, and other processes (Ray workers) write files it later lists.
"""
from __future__ import annotations

import os
import tempfile
from typing import Iterable, List, Tuple, Union

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import StreamMineError

S3_ENDPOINT_VARS = ("STREAMMINE_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


def protocol_of(url: str) -> str:
    """``"s3"``, ``"memory"``, ... and ``"file"`` for local paths and ``file://`` URLs."""
    return fsspec.utils.get_protocol(str(url))


def s3_endpoint() -> str | None:
    for var in S3_ENDPOINT_VARS:
        value = os.environ.get(var)
        if value:
            return value
    return None


def storage_options(url: str) -> dict:
    """The fsspec options this project uses for ``url`` (never credentials)."""
    protocol = protocol_of(url)
    options: dict = {}
    if protocol in ("s3", "s3a"):
        options["use_listings_cache"] = False
        endpoint = s3_endpoint()
        if endpoint:
            options["client_kwargs"] = {"endpoint_url": endpoint}
    elif protocol in ("gs", "gcs"):
        options["use_listings_cache"] = False
    return options


def resolve(url: str) -> Tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URL or local path."""
    url = str(url)
    try:
        return fsspec.core.url_to_fs(url, **storage_options(url))
    except ImportError as e:
        raise StreamMineError(f"{url}: no filesystem for this URL ({e}); for gs:// install streammine[gcs]") from e
    except ValueError as e:
        raise StreamMineError(f"{url}: not a usable URL ({e})") from e


def is_local(url: str) -> bool:
    return protocol_of(url) in ("file", "local")


def open_url(url: str, mode: str = "rb", compression: str | None = "infer", **kwargs):
    """Opens a file for reading or writing. ``.gz`` (and other fsspec codecs) are (de)compressed transparently;
    text modes default to UTF-8. Writing to a local path creates the parent directory."""
    filesystem, path = resolve(url)
    if "t" in mode:
        kwargs.setdefault("encoding", "utf-8")
    if any(c in mode for c in "wax") and isinstance(filesystem, LocalFileSystem):
        parent = filesystem._parent(path)
        if parent:
            filesystem.makedirs(parent, exist_ok=True)
    return filesystem.open(path, mode, compression=compression, **kwargs)


def join(url: str, *parts: str) -> str:
    """``join("s3://b/x/", "y", "z.txt") == "s3://b/x/y/z.txt"``; keeps the URL's form."""
    out = str(url)
    for part in parts:
        part = str(part).strip("/")
        if not part:
            continue
        out = (out.rstrip("/") + "/" + part) if out and not out.endswith("://") else out + part
    return out


def exists(url: str) -> bool:
    filesystem, path = resolve(url)
    return filesystem.exists(path)


def isdir(url: str) -> bool:
    filesystem, path = resolve(url)
    return filesystem.isdir(path)


def list_files(url: str, suffixes: Union[str, Iterable[str], None] = None) -> List[str]:
    """A file URL -> ``[url]`` (whatever its suffix). A directory -> the URLs of the files under it (recursively)
    whose names end with one of ``suffixes`` (all files when None), sorted; names starting with ``.`` (and
    anything inside such a folder) are skipped. A missing URL -> ``[]``."""
    filesystem, path = resolve(url)
    if not filesystem.isdir(path):
        return [str(url)] if filesystem.exists(path) else []
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    suffixes = tuple(suffixes) if suffixes is not None else None
    base = path.rstrip("/")
    out = []
    for found in filesystem.find(path):
        found = filesystem._strip_protocol(found)
        rel = found[len(base):].lstrip("/") if found.startswith(base) else os.path.basename(found)
        if not rel or any(p.startswith(".") for p in rel.split("/")):
            continue
        if suffixes is not None and not rel.endswith(suffixes):
            continue
        out.append(rel)
    return [join(url, rel) for rel in sorted(out)]


def remove_quietly(urls: Iterable[str]) -> int:
    """Best-effort deletion of leftover files; returns how many went. A file that cannot be removed stays: every
    caller's readers only open files a manifest names, so a leftover costs space, never correctness."""
    removed = 0
    for url in urls:
        try:
            remove(url)
            removed += 1
        except OSError:
            pass
    return removed


def read_json(url: str):
    """The parsed JSON document at ``url``, or None when there is none."""
    import json
    if not exists(url):
        return None
    with open_url(url, "rt") as f:
        return json.load(f)


def _local_temp_copy(path: str, data: str) -> str:
    """``data`` written and synced to a new file beside ``path``; returns its name. The name is unique, so two
    writers of one file (threads, or processes on a shared disk) never share it."""
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def write_json_atomic(url: str, obj) -> None:
    """Writes a small JSON document so that readers see all of it or none of it: a local file is written beside
    its final name and renamed (atomic on POSIX); an object store's PUT is atomic by itself."""
    import json
    data = json.dumps(obj, indent=1, sort_keys=True)
    filesystem, path = resolve(url)
    if isinstance(filesystem, LocalFileSystem):
        os.replace(_local_temp_copy(path, data), path)
        return
    with filesystem.open(path, "wt", encoding="utf-8") as f:
        f.write(data)


def write_json_create(url: str, obj) -> bool:
    """Creates a small JSON document only if ``url`` does not exist yet; returns False (writing nothing) if it
    does. Whole or nothing, as :func:`write_json_atomic`. The create is exclusive wherever the store allows it: a
    local file is linked into place (``os.link`` fails on an existing name), an S3 object is PUT with
    ``If-None-Match: *`` (S3 and compatible stores refuse a second create). Other stores (``memory://``, ``gs://``)
    check and then write: exclusive within one process only."""
    import json
    data = json.dumps(obj, indent=1, sort_keys=True)
    filesystem, path = resolve(url)
    if isinstance(filesystem, LocalFileSystem):
        tmp = _local_temp_copy(path, data)
        try:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:  # a filesystem without hard links: an exclusive create (whole once it is closed)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(data)
            return True
        finally:
            os.unlink(tmp)
    if protocol_of(url) in ("s3", "s3a"):
        try:
            filesystem.pipe_file(path, data.encode("utf-8"), mode="create")
            return True
        except FileExistsError:
            return False
    if filesystem.exists(path):
        return False
    with filesystem.open(path, "wt", encoding="utf-8") as f:
        f.write(data)
    return True


def makedirs(url: str) -> None:
    """Creates a directory (and its parents) where the filesystem has directories; a no-op on object stores
    (prefixes need no creation), except that a missing bucket is not created either."""
    if protocol_of(url) in _OBJECT_STORES:
        return
    filesystem, path = resolve(url)
    filesystem.makedirs(path, exist_ok=True)


def remove(url: str, recursive: bool = False) -> None:
    filesystem, path = resolve(url)
    if filesystem.exists(path):
        filesystem.rm(path, recursive=recursive)


def pyarrow_fs(url: str):
    """(pyarrow.fs.FileSystem, path) for a URL, so pyarrow and Ray Data read and write any fsspec URL.

    Local paths use pyarrow's native LocalFileSystem (faster, and what Ray expects locally); every other scheme is
    the fsspec filesystem wrapped in ``PyFileSystem(FSSpecHandler(...))``, so it shares this module's endpoint and
    caching settings."""
    import pyarrow.fs as pafs
    filesystem, path = resolve(url)
    if isinstance(filesystem, LocalFileSystem):
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path
