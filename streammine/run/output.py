"""The output folder of a ``mine`` run: made ready (``prepare_output``), and what ``--overwrite`` deletes."""
from __future__ import annotations

import re

from ..config import MineConfig
from ..errors import StreamMineError
from ..io import fs
from ..io.records import QUARANTINE_SUFFIX
from ..sink.exporters import EXPORT_FILES
from ..sink.parts import PARTS_MANIFEST


def prepare_output(cfg: MineConfig) -> None:
    out = cfg.output.path
    if fs.exists(fs.join(out, PARTS_MANIFEST)) or fs.exists(fs.join(out, "summary.json")):
        if not cfg.output.overwrite:
            raise StreamMineError(f"{out} already holds a mining output; pass --overwrite to replace it")
        remove_previous_output(out)
    fs.makedirs(out)


def remove_previous_output(out: str) -> int:
    """``--overwrite``: deletes what an earlier mining run wrote in ``out`` and names: the parts its
    ``_parts.json`` lists, ``_parts.json``, ``summary.json``, its quarantine parts and its exports. Nothing
    else is touched, whatever its name (the embedding store under ``_work/`` is a cache and is kept; a part no
    manifest names may be another writer's). Returns how many files went."""
    try:
        listed = [p["part"] for p in (fs.read_json(fs.join(out, PARTS_MANIFEST)) or {}).get("parts", [])]
    except (ValueError, TypeError, KeyError, AttributeError):  # an unreadable manifest names nothing
        listed = []
    # a name is a file directly in ``out``, as the sink writes them: never a path that leads elsewhere
    doomed = [fs.join(out, n) for n in listed if isinstance(n, str) and re.fullmatch(r"part-[\w.-]+\.parquet", n)
              and ".." not in n]
    ours = re.compile(r"part-[0-9a-f]{32}" + re.escape(QUARANTINE_SUFFIX) + "$")
    doomed += [u for u in fs.list_files(fs.join(out, "_quarantine"), (QUARANTINE_SUFFIX,))
               if ours.search(u.rsplit("/", 1)[-1])]
    doomed += [fs.join(out, "export", name) for name in EXPORT_FILES.values()]
    doomed += [fs.join(out, name) for name in ("summary.json", PARTS_MANIFEST)]  # the commit marks go last
    return fs.remove_quietly(u for u in doomed if fs.exists(u))
