"""The committed parts of a continuous run as a Ray Data dataset (a snapshot), for Ray Train's ``streaming_split``."""
from __future__ import annotations

from typing import List, Optional, Sequence

from ..io import fs
from ..sink.layout import output_log
from ..sink.schema import MINED_SCHEMA
from .rules import stale


def committed_parts(out_url: str, last_versions: Optional[int] = None) -> List[str]:
    """The parts (paths relative to ``out_url``) of the entries committed now, in log order; with
    ``last_versions=k``, only those of entries mined by one of the last ``k`` versions the log lists."""
    entries = list(output_log(out_url, require=True).entries())  # a serve's log, or a mine output
    if last_versions is not None and entries:
        newest = max(int(e["version_order"]) for e in entries)
        entries = [e for e in entries if not stale(int(e["version_order"]), newest, last_versions)]
    return [p["part"] for e in entries for p in e["parts"]]


def committed_dataset(out_url: str, last_versions: Optional[int] = None, columns: Optional[Sequence[str]] = None,
                      verbose: bool = False):
    """A ``ray.data.Dataset`` of the rows committed under ``out_url`` now (later entries are not in it). Only parts
    named by log entries are read; ``last_versions`` and ``columns`` are as for :class:`NegativesFeed` (with the
    whole snapshot listed before anything is read). Rows carry no ``_seq`` column.

    Without a Ray in the process, a private local Ray starts (quietly unless ``verbose``; ``streammine.shutdown()``
    stops it). Unless ``verbose``, the dataset runs without Ray Data's progress blocks and execution plans."""
    from .. import console
    with console.api_call(verbose):
        return _committed_dataset(out_url, last_versions, columns)


def _committed_dataset(out_url: str, last_versions: Optional[int], columns: Optional[Sequence[str]]):
    import ray
    from ..run.ray_runtime import ensure_ray, quiet_data_context
    cols = list(columns) if columns is not None else list(MINED_SCHEMA.names)
    unknown = [c for c in cols if c not in MINED_SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; the mined rows have {MINED_SCHEMA.names}")
    parts = committed_parts(out_url, last_versions)
    ensure_ray()
    with quiet_data_context():  # the dataset keeps a copy of the context it was made in
        if not parts:
            return ray.data.from_arrow(MINED_SCHEMA.empty_table().select(cols))
        filesystem, base = fs.pyarrow_fs(out_url)
        paths = [base.rstrip("/") + "/" + p.lstrip("/") for p in parts]
        return ray.data.read_parquet(paths, filesystem=filesystem, columns=cols)
