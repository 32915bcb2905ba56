"""What a run prints: streammine's own progress lines, with Ray's and the libraries' chatter behind ``--verbose``.

:func:`configure` is called by the CLI (the Python API keeps Ray's defaults unless it is called). Quiet mode turns
off Ray's driver-side log forwarding and INFO/WARNING logs, Ray Data's progress blocks, Python warnings from
libraries and the C++ core's non-fatal log lines. Progress goes to stdout: one line per phase, rewritten in place
on a terminal, printed every ``PIPE_INTERVAL_S`` seconds otherwise.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from typing import Callable, Optional

PIPE_INTERVAL_S = 30.0
TTY_INTERVAL_S = 0.5
_state = {"configured": False, "verbose": True}
NOISY_LOGGERS = ("ray", "ray.data", "ray.serve", "ray.tune", "ray.train", "filelock", "botocore", "s3fs",
                 "aiobotocore", "urllib3", "sentence_transformers", "transformers", "faiss", "fsspec", "httpx",
                 "huggingface_hub", "torch")


def configure(verbose: bool) -> None:
    """Sets the process's verbosity (before Ray starts). Quiet: see the module docstring."""
    _state.update(configured=True, verbose=bool(verbose))
    if verbose:
        return
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")   # core_worker.cc warnings printed by the driver
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")                  # "Loading weights" bars in the driver
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    warnings.filterwarnings("ignore")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def verbose() -> bool:
    return _state["verbose"]


def configured() -> bool:
    return _state["configured"]


def quiet() -> bool:
    return _state["configured"] and not _state["verbose"]


def silence_ray_loggers() -> None:
    """Ray (re)configures its loggers when it starts and when Ray Data is first used: quiet them again."""
    if quiet():
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("ray"):
                logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def native_stderr_muted():
    """Quiet mode: file descriptor 2 goes to /dev/null inside the block (native code writes there directly, past
    Python's sys.stderr). A Python exception raised inside still reaches the caller."""
    if not quiet():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _fmt_eta(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_text(label: str, done: int, total: Optional[int], elapsed: float, unit: str) -> str:
    """``"encode: 1,200/5,183 documents, 85.1 documents/s, ETA 46s"`` (no total: no ETA)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    if total:
        eta = (total - done) / rate if rate > 0 else None
        return (f"{label}: {done:,}/{total:,} {unit}, {rate:,.1f} {unit}/s, "
                f"ETA {_fmt_eta(eta) if done < total else '0s'}")
    return f"{label}: {done:,} {unit}, {rate:,.1f} {unit}/s"


class Progress:
    """A background thread printing ``progress_text`` of ``count()`` until :meth:`close` (which prints the final
    line). On a terminal the line is rewritten in place; on a pipe, one line every ``interval`` seconds."""

    def __init__(self, label: str, count: Callable[[], int], total: Optional[int], unit: str,
                 stream=None, interval: Optional[float] = None, enabled: bool = True):
        self.label, self.count, self.total, self.unit = label, count, total, unit
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (TTY_INTERVAL_S if self.tty else PIPE_INTERVAL_S)
        self.enabled = enabled
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._last = 0
        self._thread = None
        if enabled:
            self._thread = threading.Thread(target=self._run, daemon=True, name=f"progress-{label}")
            self._thread.start()

    def _poll(self) -> int:
        try:
            self._last = int(self.count())
        except Exception:  # noqa: BLE001 - progress is best effort; the run's own errors surface elsewhere
            pass
        return self._last

    def _emit(self, final: bool = False) -> None:
        text = progress_text(self.label, self._poll(), self.total, time.monotonic() - self.t0, self.unit)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._emit()

    def close(self) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._emit(final=True)
