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
         verbose: bool = False, **kwargs):
    """Mines hard negatives; returns a RunResult (output URL and the run summary).

    ``model``: a model object (a ``SentenceTransformer``, or any object with ``encode_query`` /
    ``encode_document``, or ``encode`` with a prompt): its current in-memory weights encode, under the name
    ``pyobject://<digest of its state>`` (``encoder.model``; a path still goes there). The object is not changed.

    A user's mistake raises the project's own exception (:class:`~streammine.errors.InputError`,
    :class:`~streammine.errors.ConfigError`, ...), whichever Ray task or actor found it: never Ray's wrapper.

    Prints streammine's own progress and a one-line summary only; ``verbose=True`` (or ``STREAMMINE_VERBOSE=1``)
    adds Ray's and the libraries' logs. What the user should act on is a :class:`~streammine.errors.StreamMineWarning`.
    The private local Ray it starts stays up for the next call: :func:`shutdown` stops it."""
    from . import console
    from .errors import find_error
    from .run.mine import mine as run
    with console.api_call(verbose):
        try:
            if model is not None:
                from .encode.model_object import publish
                overrides = dict(overrides or {}, **{"encoder.model": publish(model)})
            result = run(load_config(config, overrides, **kwargs))
        except Exception as e:
            found = find_error(e)
            if found is None or found is e:
                raise
            raise found from e
        console.run_finished(result.output, result.summary)
        return result


def shutdown() -> bool:
    """Stops the private local Ray a call started in this process (or leaves the cluster a call joined); a Ray the
    caller started with ``ray.init`` is left alone. True when there was one to stop. A later call starts a new one
    (a few seconds). Without it the private Ray stays up until the process exits: the next call starts faster."""
    import sys
    if "ray" not in sys.modules:  # nothing imported Ray: nothing started it
        return False
    from . import console
    from .run.ray_runtime import shutdown_ray
    with console.api_call(False):  # Ray's shutdown lines are not the user's business
        return shutdown_ray()
