"""Checks that run in the driver before any Ray process starts: a user's mistake costs seconds, not a cluster.

- :func:`check_inputs`: the input paths exist and are readable (the BEIR directory and its split's files, the pairs
  and corpus tables, precomputed vectors, a model given as a path), on local paths and object stores alike; an
  unreachable object store is named here.
- :func:`check_output`: the output is absent, empty, or a streammine output (one with a finished run needs
  ``overwrite``), its location is writable, and it is neither an input nor inside or above one (replacing it would
  destroy the input).
- :func:`scan_inputs`: a read pass over the corpus and the queries, in strict mode, before any document is encoded:
  bad rows, duplicate query ids, and a document id given twice with different texts stop the run here, naming
  both lines. It returns the counts that the progress lines use as totals.

Every failure is a :class:`~streammine.errors.StreamMineError` (one line in the CLI).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import List, Optional

import numpy as np

from .config import MineConfig
from .encode.model_object import MODEL_OBJECT_SCHEME
from .errors import ConfigError, InputError, OutputError, StreamMineError
from .io import fs
from .io.formats import input_format

# names a streammine run writes at the top of its output (mine and serve layouts); a folder holding only these is
# a streammine output, which a run may replace (with --overwrite when a run finished there)
OUTPUT_NAMES = ("_parts.json", "summary.json", "_quarantine", "_work", "export", "report", "_log", "data",
                "_control", "_serve", "_state")
FINISHED_MARKERS = ("_parts.json", "summary.json", "_log")


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, FileNotFoundError):
        return "not found"
    if isinstance(e, PermissionError):
        return "permission denied"
    name = type(e).__name__
    if "Credentials" in name or "credentials" in text.lower():
        return f"no credentials for the object store ({name})"
    if "EndpointConnection" in name or "Connect" in name or "connect" in text.lower():
        return f"cannot reach the object store ({text.splitlines()[0][:200]})"
    return f"cannot be accessed ({name}: {text.splitlines()[0][:200]})"


@contextmanager
def _access(url: str):
    """Any failure to reach ``url`` (missing, forbidden, object store unreachable) as one InputError naming it."""
    try:
        yield
    except StreamMineError:
        raise
    except Exception as e:  # noqa: BLE001 - filtered below: storage errors only, a bug keeps its traceback
        if not _is_storage_error(e):
            raise
        raise InputError(str(url), _reason(e)) from e


def _is_storage_error(e: BaseException) -> bool:
    """OS errors and the object-store clients' own (s3fs, botocore, gcsfs...): the URL cannot be used."""
    root = type(e).__module__.split(".")[0]
    return isinstance(e, OSError) or root in ("botocore", "aiobotocore", "s3fs", "aiohttp", "gcsfs", "google",
                                                 "fsspec", "urllib3", "requests")


def _exists(url: str) -> bool:
    with _access(url):
        return fs.exists(url)


def _check_readable(url: str, what: str) -> None:
    """``url`` is a file that can be opened and read (one byte), or a directory that can be listed."""
    with _access(url):
        filesystem, path = fs.resolve(url)
        if not filesystem.exists(path):
            raise InputError(str(url), f"{what} not found")
        if filesystem.isdir(path):
            filesystem.ls(path, detail=False)
            return
        with filesystem.open(path, "rb") as f:
            f.read(1)


# ---- inputs ---------------------------------------------------------------------------------------------------

def input_urls(cfg: MineConfig) -> List[str]:
    """Every URL the run reads (the output must not be any of them, nor inside or above one)."""
    fmt = input_format(cfg)
    urls = [cfg.input.path, cfg.input.corpus]
    if fmt.precomputed:
        urls += fmt.vectors.urls()
    return [u for u in urls if u]


def _looks_like_path(name: str) -> bool:
    return "://" in name or name.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(name))


def check_inputs(cfg: MineConfig) -> None:
    e = cfg.encoder
    fmt = input_format(cfg)
    for url, what in fmt.check_files(_access):  # the format's files (its layout checked on the way)
        _check_readable(url, what)
    if fmt.precomputed:
        for url in fmt.vectors.urls():
            _check_readable(url, "vectors file")
    for key, model in (("encoder.model", e.model if not fmt.precomputed else None),
                       ("mining.cross_encoder.model", cfg.mining.cross_encoder.model)):
        check_model(model, key)


# files one of which a loadable model directory holds: sentence-transformers' module list, or a transformers
# config (sentence-transformers wraps a plain transformers model with mean pooling; a CrossEncoder is one)
MODEL_FILES = ("modules.json", "config.json")
_TRUE = ("1", "on", "yes", "true")


def _hub_offline() -> bool:
    from huggingface_hub import constants
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def check_model(model, key: str) -> None:
    """``model`` (a config's model name: a local or object-store directory, or a hub id) can be loaded, or one
    InputError names it and why: not found, not a model directory, not a local directory while the hub is offline
    or unreachable. A hub id is checked against the local hub cache, then (online) with one short request, so a
    mistake costs seconds in the driver instead of a failed actor per worker. None (the packaged model) and a model
    object (not a string) pass."""
    if not model or not isinstance(model, str) or model.startswith(MODEL_OBJECT_SCHEME):  # an object
        return
    if _looks_like_path(model):
        local = os.path.expanduser(model) if fs.is_local(model) else model
        with _access(model):
            if not fs.exists(local):
                raise InputError(model, f"model directory not found ({key})")
            filesystem, path = fs.resolve(local)
            if not filesystem.isdir(path):
                raise InputError(model, f"not a model directory: a file ({key})")
            if not any(filesystem.exists(path.rstrip("/") + "/" + name) for name in MODEL_FILES):
                raise InputError(model, f"not a sentence-transformers model directory (it holds neither "
                                        f"{' nor '.join(MODEL_FILES)}) ({key})")
        return
    _check_hub_model(model, key)


def _check_hub_model(model: str, key: str) -> None:
    from huggingface_hub import try_to_load_from_cache
    try:
        if any(isinstance(try_to_load_from_cache(model, name), str) for name in MODEL_FILES):
            return  # in the local hub cache: loads offline
    except Exception:  # noqa: BLE001 - not a valid repo id: answered below
        pass
    if _hub_offline():
        raise InputError(model, f"not a local directory and the hub is offline (HF_HUB_OFFLINE=1), and the hub "
                                f"cache does not hold it ({key}); pass a model directory")
    from huggingface_hub import HfApi
    from huggingface_hub.utils import GatedRepoError, HFValidationError, RepositoryNotFoundError
    try:
        HfApi().model_info(model, timeout=10)
    except GatedRepoError:
        raise InputError(model, f"a gated model on the hub that this machine's token cannot read ({key})") from None
    except (HFValidationError, RepositoryNotFoundError):
        raise InputError(model, f"not a local directory nor a model on the hub ({key})") from None
    except Exception as e:  # noqa: BLE001 - network failures of every kind: the hub cannot be reached
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise InputError(model, f"not a local directory and the hub cannot be reached ({reason}) ({key}); "
                                f"pass a model directory") from None


# ---- output ---------------------------------------------------------------------------------------------------

def _canonical(url: str) -> str:
    """A comparable form: local paths resolved (symlinks, ``..``), object-store URLs as ``proto://bucket/key``."""
    url = str(url)
    if fs.is_local(url):
        path = url[len("file://"):] if url.startswith("file://") else url
        return os.path.realpath(os.path.expanduser(path)).rstrip("/") or "/"
    return f"{fs.protocol_of(url)}://{fs.resolve(url)[1].strip('/')}"


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def check_output_location(out: str, inputs: List[str]) -> None:
    """Refuse an output that is an input, inside one, or above one: replacing it would destroy the input."""
    o = _canonical(out)
    for url in inputs:
        c = _canonical(url)
        if o == c:
            raise OutputError(out, f"the output is the input {url}; choose another --output")
        if _inside(o, c):
            raise OutputError(out, f"the output is inside the input {url}; choose a folder outside it")
        if _inside(c, o):
            raise OutputError(out, f"the output holds the input {url}; replacing it would delete the input; "
                                   "choose another --output")


def output_state(out: str) -> str:
    """``"absent"``, ``"empty"``, ``"finished"`` (a streammine run finished there), ``"partial"`` (only names a
    streammine run writes), ``"file"`` (a file, not a folder) or ``"foreign"`` (other content)."""
    with _access(out):
        filesystem, path = fs.resolve(out)
        if not filesystem.exists(path):
            return "absent"
        if not filesystem.isdir(path):
            return "file"
        names = [c.rstrip("/").rsplit("/", 1)[-1] for c in filesystem.ls(path, detail=False)]
    names = [n for n in names if n and n != os.path.basename(path.rstrip("/"))]
    if not names:
        return "empty"
    if any(n in FINISHED_MARKERS for n in names):
        return "finished"
    if all(n in OUTPUT_NAMES or (n.startswith("part-") and n.endswith(".parquet")) or n.startswith(".")
           for n in names):
        return "partial"
    return "foreign"


def check_writable(out: str) -> None:
    """The output can be created: on a local disk, its nearest existing folder is writable; on an object store,
    its bucket exists and can be listed."""
    with _access(out):
        if fs.is_local(out):
            path = os.path.abspath(os.path.expanduser(out[len("file://"):] if out.startswith("file://") else out))
            probe = path
            while not os.path.exists(probe):
                probe = os.path.dirname(probe)
            if not os.path.isdir(probe):
                raise OutputError(out, f"cannot create the output: {probe} is a file")
            if not os.access(probe, os.W_OK | os.X_OK):
                raise OutputError(out, f"not writable (no write permission on {probe})")
            return
        filesystem, path = fs.resolve(out)
        bucket = path.strip("/").split("/", 1)[0]
        if not filesystem.exists(bucket):
            raise OutputError(out, f"bucket {bucket!r} not found")


def check_output(cfg: MineConfig) -> str:
    """Checks the output (see the module docstring); returns its :func:`output_state`."""
    out = cfg.output.path
    check_output_location(out, input_urls(cfg))
    state = output_state(out)
    if state == "file":
        raise OutputError(out, "the output must be a folder; a file is there")
    if state == "foreign":
        raise OutputError(out, "the folder is not empty and is not a streammine output; choose a new or empty "
                               "folder")
    if state == "finished" and not cfg.output.overwrite:
        raise OutputError(out, "already holds a mining output; pass --overwrite to replace it")
    check_writable(out)
    return state


# ---- the read pass --------------------------------------------------------------------------------------------

def _corpus_blocks(cfg: MineConfig):
    return input_format(cfg).corpus_blocks(quarantine=None)


def first_id_conflict(id_keys: np.ndarray, text_keys: np.ndarray) -> Optional[tuple]:
    """(first row, later row) of the earliest row (by position) whose id key appeared before with another text
    key; None when there is none. Same id and same text is the same document listed twice (no conflict)."""
    n = len(id_keys)
    if n < 2:
        return None
    order = np.lexsort((np.arange(n), id_keys))  # by id key, then position
    sk = id_keys[order]
    first_pos = order[np.r_[0, np.flatnonzero(sk[1:] != sk[:-1]) + 1]]  # first row of each id key group
    group = np.cumsum(np.r_[0, (sk[1:] != sk[:-1]).astype(np.int64)])
    first_of_row = np.empty(n, np.int64)
    first_of_row[order] = first_pos[group]
    bad = np.flatnonzero(text_keys != text_keys[first_of_row])
    if not len(bad):
        return None
    later = int(bad.min())
    return int(first_of_row[later]), later


def scan_corpus(cfg: MineConfig, keys: Optional[list] = None) -> int:
    """Reads the corpus once (strict: a bad row raises, naming its line) and raises on a document id given twice
    with different texts, naming both lines; returns the number of documents. Memory: 16 bytes per document.
    ``keys``: a list that gets the corpus's sorted distinct doc keys (``index.store.doc_keys``), with which the
    run tells, before any encoder starts, how many documents the embedding cache already holds."""
    from .keys import keys64
    id_keys, text_keys = [], []
    for block in _corpus_blocks(cfg):
        id_keys.append(keys64(block.column("doc_id").to_pylist()))
        text_keys.append(block.column("text_key").to_numpy(zero_copy_only=False).astype(np.uint64))
    ids = np.concatenate(id_keys) if id_keys else np.zeros(0, np.uint64)
    texts = np.concatenate(text_keys) if text_keys else np.zeros(0, np.uint64)
    if keys is not None:
        from .index.store import doc_keys_of_id_keys
        keys.append(np.unique(doc_keys_of_id_keys(ids, texts)))
    conflict = first_id_conflict(ids, texts)
    if conflict is not None:
        # rare: read again to name both rows (and rule out a 64-bit collision between two different ids)
        first, later = conflict
        rows: dict = {}
        pos = 0
        for block in _corpus_blocks(cfg):
            n = block.num_rows
            for r in (first, later):
                if pos <= r < pos + n:
                    rows[r] = (block.column("doc_id")[r - pos].as_py(), block.column("location")[r - pos].as_py())
            pos += n
            if len(rows) == 2:
                break
        (id1, loc1), (id2, loc2) = rows[first], rows[later]
        if id1 == id2:
            raise InputError(loc2, f"duplicate document id {id2!r} with a different text than at {loc1}")
    return len(ids)


def scan_queries(cfg: MineConfig, keys: Optional[list] = None) -> int:
    """Reads the queries (strict: bad rows, duplicate query ids, qrels naming unknown queries raise); returns how
    many the run will mine. ``keys``: a list that gets the query texts' keys (``query_cache.query_keys``)."""
    from .encode.query_cache import query_keys
    n, found = 0, []
    for t in input_format(cfg).query_blocks(cfg.run.query_batch_size, quarantine=None):
        n += t.num_rows
        if keys is not None:
            found.append(query_keys(t.column("query").to_pylist()))
    if keys is not None:
        keys.append(np.concatenate(found) if found else np.zeros(0, np.uint64))
    return n


def scan_inputs(cfg: MineConfig, corpus: bool = True) -> dict:
    """The read pass (strict runs only; a lenient run quarantines in its own passes): ``{"documents": n or None,
    "queries": m or None, "document_keys": the corpus's doc keys or None, "query_keys": the query texts' keys
    or None}``. ``corpus=False`` skips the corpus
    (its embedding store is already built)."""
    counts = {"documents": None, "queries": None, "document_keys": None, "query_keys": None}
    if cfg.input.lenient:
        return counts
    if corpus and not input_format(cfg).precomputed:
        keys: list = []
        with _access(cfg.input.path):
            counts["documents"] = scan_corpus(cfg, keys)
        counts["document_keys"] = keys[0]
    keys = []
    with _access(cfg.input.path):
        counts["queries"] = scan_queries(cfg, keys)
    counts["query_keys"] = keys[0]
    return counts


def check_run(cfg: MineConfig) -> str:
    """Config, inputs and output, before Ray (the read pass is :func:`scan_inputs`); returns the output state."""
    from .registries import check_names
    cfg.validate()
    check_names(cfg)
    check_inputs(cfg)
    check_scratch(cfg)
    return check_output(cfg)


def check_scratch(cfg: MineConfig) -> None:
    """A configured ``index.scratch_dir`` (where the shards' rescoring rows may go) is a directory this process
    can create and write; a shard on another node checks its own when it builds."""
    path = cfg.index.scratch_dir
    if not path:
        return
    from .index.vector_rows import scratch_dir
    scratch_dir(path)
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"index.scratch_dir={path!r} is not a writable directory")


def check_serve_output(out: str, model: Optional[str] = None) -> None:
    """``refresh``/``stop``: the run's output exists and is a streammine output, and the model exists."""
    state = output_state(out)
    if state in ("absent", "empty"):
        raise OutputError(out, "no streammine run here; start `streammine serve --output ...` first")
    if state in ("file", "foreign"):
        raise OutputError(out, "not a streammine output")
    if model:
        local = os.path.expanduser(model) if fs.is_local(model) else model
        with _access(model):
            if not fs.exists(local):
                raise InputError(model, "model directory not found")
