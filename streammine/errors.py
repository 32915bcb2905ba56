"""Errors that name where the bad input is, and how a user's mistake is told apart from a bug.

A user's mistake (bad input, bad config, an output that is in the way, an unreachable object store) is a
:class:`StreamMineError`; the CLI prints it as one line ``streammine: error: <location>: <reason>`` and exits 2.
It may be raised in the driver or in any Ray task or actor: :func:`find_error` digs it out of Ray's wrappers
(``RayTaskError``, Ray Data's ``UserCodeException``, exception chains), so the Python API raises the project's own
type too. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import re
from typing import Optional


class StreamMineError(Exception):
    """Base class for errors raised by streammine."""


class ConfigError(StreamMineError, ValueError):
    """An invalid configuration value."""


class _Located:
    """An error at a place: ``str(e) == f"{location}: {reason}"``."""

    def __init__(self, location: str, reason: str):
        self.location = location
        self.reason = reason
        super().__init__(f"{location}: {reason}")

    def __reduce__(self):  # survive pickling through Ray
        return (type(self), (self.location, self.reason))


class InputError(_Located, StreamMineError, ValueError):
    """Bad input data. ``location`` is ``"<file>:<line>"`` (text files) or ``"<file>:row <n>"`` (tables)."""


class OutputError(_Located, StreamMineError):
    """An output location that cannot be used (not writable, holds something else, would overwrite an input)."""


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


def one_line(message: str) -> str:
    """``message`` as one printable line: no ANSI escape codes, line breaks folded into ``"; "``."""
    text = _ANSI.sub("", str(message)).replace("\r", "")
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def _is_ray_wrapper(exc: BaseException) -> bool:
    try:
        from ray.exceptions import RayError
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    return isinstance(exc, RayError)


def find_error(exc: BaseException) -> Optional[StreamMineError]:
    """The :class:`StreamMineError` that caused ``exc`` (``exc`` itself, or one found through ``cause`` of Ray's
    wrappers, ``__cause__`` and ``__context__``), preferring a plain one over Ray's dual-class wrapper
    (``RayTaskError(InputError)``); None when there is none (a bug, or an interruption)."""
    seen, queue, wrapped = set(), [exc], None
    while queue:
        e = queue.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, StreamMineError):
            if not _is_ray_wrapper(e):
                return e
            wrapped = wrapped or e
        queue.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
    if wrapped is not None:  # a dual instance whose cause was not kept: rebuild the project's own type
        args = (wrapped.location, wrapped.reason) if isinstance(wrapped, _Located) else (one_line(str(wrapped)),)
        for base in type(wrapped).__mro__:
            if issubclass(base, StreamMineError) and not _is_ray_wrapper_type(base):
                try:
                    return base(*args)
                except TypeError:
                    return StreamMineError(one_line(str(wrapped)))
    return None


def _is_ray_wrapper_type(cls: type) -> bool:
    try:
        from ray.exceptions import RayError
    except ImportError:  # pragma: no cover
        return False
    return issubclass(cls, RayError)


class StreamMineWarning(UserWarning):
    """Something the user should act on in a run that still finished (rows set aside, a setting that cannot take
    effect): shown even when a Python call is quiet; ``warnings.simplefilter("error", StreamMineWarning)`` makes
    it an exception."""
