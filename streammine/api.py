"""The Python API; the CLI is a thin layer over it."""
from __future__ import annotations

from typing import Optional, Union

from .config import MineConfig, flatten_keys


def demo_data_path() -> str:
    """The SciFact slice shipped in the package (see its README for source and license)."""
    from importlib.resources import files
    return str(files("streammine") / "data" / "scifact-mini")


def load_config(config: Union[MineConfig, dict, str, None] = None, overrides: Optional[dict] = None,
                **kwargs) -> MineConfig:
    """A config from a MineConfig, a dict or a YAML URL, with dotted overrides on top.

    Keyword arguments are overrides too, with ``__`` for the dot: ``index__shards=4`` is ``{"index.shards": 4}``.
    """
    from .registries import check_names
    overrides = dict(overrides or {}, **{k.replace("__", "."): v for k, v in kwargs.items()})
    if isinstance(config, MineConfig):
        config = config.to_dict()
    if isinstance(config, dict):
        config = MineConfig.from_dict(config)
        cfg = MineConfig.from_sources(None, dict(flatten_keys(config.to_dict()), **overrides))
    else:
        cfg = MineConfig.from_sources(config, overrides)
    check_names(cfg)  # the plug-in registries' names (config.py imports no registry)
    return cfg


def mine(config: Union[MineConfig, dict, str, None] = None, overrides: Optional[dict] = None, *, model=None,
         **kwargs):
    """Mines hard negatives; returns a RunResult (output URL and the run summary).

    ``model``: a model object (a ``SentenceTransformer``, or any object with ``encode_query`` /
    ``encode_document``, or ``encode`` with a prompt): its current in-memory weights encode, under the name
    ``pyobject://<digest of its state>`` (``encoder.model``; a path still goes there). The object is not changed.

    A user's mistake raises the project's own exception (:class:`~streammine.errors.InputError`,
    :class:`~streammine.errors.ConfigError`, ...), whichever Ray task or actor found it: never Ray's wrapper."""
    from .errors import find_error
    from .run.mine import mine as run
    try:
        if model is not None:
            from .encode.model_object import publish
            overrides = dict(overrides or {}, **{"encoder.model": publish(model)})
        return run(load_config(config, overrides, **kwargs))
    except Exception as e:
        found = find_error(e)
        if found is None or found is e:
            raise
        raise found from e
