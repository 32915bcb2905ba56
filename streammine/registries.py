"""The plug-in registries, by the config key that names one of their entries.

Each registry lives beside what it registers (input formats in io/formats, index kinds in index/kinds.py,
samplers in mining/samplers.py, filters in mining/filters.py, export formats in sink/exporters.py) and imports
config for its typed sections; config.py imports none of them (no import circle), so a name that no registry
holds is checked here, once the config is loaded (``api.load_config``, preflight, serve), and the CLI's choices
come from the same place. A new entry in a registry is a choice everywhere without an edit here.
"""
from __future__ import annotations

import importlib
from typing import Tuple

from .errors import ConfigError

# config key -> (module, registry attribute); imported only when the names are asked for
REGISTRIES = {
    "input.format": ("streammine.io.formats", "FORMATS"),
    "index.kind": ("streammine.index.kinds", "KINDS"),
    "mining.filter.method": ("streammine.mining.filters", "FILTERS"),
    "mining.sampler.method": ("streammine.mining.samplers", "SAMPLERS"),
    "output.export": ("streammine.sink.exporters", "FORMATS"),
}


def names(key: str) -> Tuple[str, ...]:
    """The names the registry of config key ``key`` holds now (plug-ins registered at run time included)."""
    module, attr = REGISTRIES[key]
    return tuple(getattr(importlib.import_module(module), attr))


def check_names(cfg) -> None:
    """Every registry-named value of ``cfg`` (a MineConfig) is registered, or one ConfigError names the key, the
    value and the choices."""
    for key in REGISTRIES:
        section, _, field_name = key.rpartition(".")
        obj = cfg
        for part in section.split("."):
            obj = getattr(obj, part)
        value = getattr(obj, field_name)
        allowed = names(key)
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if v not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {v!r}")
    from .mining.samplers import window_end
    s = cfg.mining.sampler
    if s.range_min >= window_end(s):  # the window's end is the sampler's rule when range_max is unset
        raise ConfigError(f"mining.sampler.range_min must satisfy 0 <= range_min < range_max, got "
                          f"[{s.range_min}, {window_end(s)})")
