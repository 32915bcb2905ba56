"""Errors that name where the bad input is."""
from __future__ import annotations


class StreamMineError(Exception):
    """Base class for errors raised by streammine."""


class ConfigError(StreamMineError, ValueError):
    """An invalid configuration value."""


class InputError(StreamMineError, ValueError):
    """Bad input data. ``location`` is ``"<file>:<line>"`` (text files) or ``"<file>:row <n>"`` (tables)."""

    def __init__(self, location: str, reason: str):
        self.location = location
        self.reason = reason
        super().__init__(f"{location}: {reason}")

    def __reduce__(self):  # survive pickling through Ray
        return (type(self), (self.location, self.reason))
