"""What a run prints: streammine's own progress lines, with Ray's and the libraries' chatter behind ``--verbose``.

Two ways in: :func:`configure`, called once by the CLI for the whole process, and :func:`api_call`, the context
manager the Python entry points (``streammine.mine``, ``compat.mine_hard_negatives``, ``committed_dataset``) wrap
themselves in: the same quiet mode for the call, what it changed restored when it returns. Quiet mode turns off
Ray's driver-side log forwarding and INFO/WARNING logs, Ray Data's progress blocks, Python warnings from libraries
(not :class:`~streammine.errors.StreamMineWarning`: the user should act on those) and the C++ core's non-fatal log
lines. Progress goes to stdout: one line per phase, rewritten in place on a terminal; otherwise printed every
``PIPE_INTERVAL_S`` seconds by the CLI and a verbose call, only as the phase's final line by a quiet Python call.
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
VERBOSE_ENV = "STREAMMINE_VERBOSE"
_state = {"configured": False, "verbose": True, "owner": None, "progress": True, "summary": True,
          "pipe_interval": PIPE_INTERVAL_S}
# What quiet mode sets in the environment: read by Ray's processes when they start (the driver's core worker, the
# raylet, GCS) and by the libraries in the driver.
QUIET_ENV = {"RAY_BACKEND_LOG_LEVEL": "fatal",        # core_worker.cc / gcs_server lines written to stderr
             "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
             "TQDM_DISABLE": "1",                      # "Loading weights" bars
             "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "TRANSFORMERS_VERBOSITY": "error",
             "TOKENIZERS_PARALLELISM": "false",
             "RAY_DEDUP_LOGS": "1"}
# What quiet mode gives Ray's workers (runtime env): the bars and library logs of the encoder and mining actors.
QUIET_WORKER_ENV = {k: QUIET_ENV[k] for k in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS",
                                               "TRANSFORMERS_VERBOSITY", "TOKENIZERS_PARALLELISM")}
_call_levels: dict = {}   # logger name -> its level before the current api_call quieted it
# Ray's loggers stay quiet after a quiet call while the private Ray it started runs (a dataset made by a call runs
# later, under them); their earlier levels come back when that Ray stops (``private_ray_stopped``).
_private_ray = {"quiet": False, "levels": {}}
NOISY_LOGGERS = ("ray", "ray.data", "ray.serve", "ray.tune", "ray.train", "filelock", "botocore", "s3fs",
                 "aiobotocore", "urllib3", "sentence_transformers", "transformers", "faiss", "fsspec", "httpx",
                 "huggingface_hub", "torch")


def configure(verbose: bool) -> None:
    """Sets the process's verbosity (before Ray starts). Quiet: see the module docstring."""
    _state.update(configured=True, verbose=bool(verbose), owner="cli")
    if verbose:
        return
    _quiet_process()


def _quiet_process() -> None:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    warnings.filterwarnings("ignore")
    _show_own_warnings()
    for name in NOISY_LOGGERS:
        _set_level(name, logging.ERROR)


def _show_own_warnings() -> None:
    from .errors import StreamMineWarning
    warnings.filterwarnings("default", category=StreamMineWarning)   # what the user should act on stays


def _set_level(name: str, level: int) -> None:
    logger = logging.getLogger(name)
    if _state["owner"] == "api":
        _call_levels.setdefault(name, logger.level)
    logger.setLevel(level)


def env_verbose() -> bool:
    """``STREAMMINE_VERBOSE=1`` (or true/yes/on): Ray's and the libraries' logs in every Python call."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def api_call(verbose: Optional[bool] = False, *, progress: bool = True, summary: bool = True):
    """A Python entry point's verbosity for the duration of the call, restored after it (environment, warning
    filters, logger levels). ``verbose`` (or ``STREAMMINE_VERBOSE=1``): Ray's and the libraries' logs and
    warnings, and a progress line every ``PIPE_INTERVAL_S`` s to a file; otherwise quiet. ``progress`` /
    ``summary``: streammine's own progress lines and the one-line summary of ``streammine.mine``.

    Inside the CLI (which called :func:`configure`) or inside another call (compat calls ``streammine.mine``) the
    outer one decides: a nested call changes nothing."""
    if _state["owner"] is not None:
        yield
        return
    loud = bool(verbose) or env_verbose()
    saved_state, saved_env = dict(_state), {k: os.environ.get(k) for k in QUIET_ENV}
    _state.update(configured=True, verbose=loud, owner="api", progress=bool(progress), summary=bool(summary),
                  pipe_interval=PIPE_INTERVAL_S if loud else None)
    _call_levels.clear()
    with warnings.catch_warnings():
        try:
            if not loud:
                _quiet_process()
            else:
                _show_own_warnings()
            yield
        finally:
            for name, level in _call_levels.items():
                if _private_ray["quiet"] and name.startswith("ray"):
                    _private_ray["levels"].setdefault(name, level)
                else:
                    logging.getLogger(name).setLevel(level)
            _call_levels.clear()
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _state.clear()
            _state.update(saved_state)


def verbose() -> bool:
    return _state["verbose"]


def configured() -> bool:
    return _state["configured"]


def quiet() -> bool:
    return _state["configured"] and not _state["verbose"]


def show_progress() -> bool:
    """streammine's own progress lines: in the CLI, and in a Python call that did not turn them off."""
    return _state["configured"] and _state["progress"]


def show_summary() -> bool:
    """The one-line summary of ``streammine.mine``: a Python call only (the CLI prints its own)."""
    return _state["owner"] == "api" and _state["summary"] and _state["progress"]


def private_ray_started(quiet_ray: bool) -> None:
    """ray_runtime started a private local Ray (quiet: with its logs off)."""
    _private_ray["quiet"] = bool(quiet_ray)


def private_ray_stopped() -> None:
    """The private Ray stopped: Ray's loggers get back the levels they had before a quiet call silenced them."""
    for name, level in _private_ray["levels"].items():
        logging.getLogger(name).setLevel(level)
    _private_ray.update(quiet=False, levels={})


def silence_ray_loggers() -> None:
    """Ray (re)configures its loggers when it starts and when Ray Data is first used: quiet them again."""
    if quiet():
        for name in NOISY_LOGGERS:
            _set_level(name, logging.ERROR)
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("ray"):
                _set_level(name, logging.ERROR)


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


def throughput(first: Optional[tuple], done: int, now: float, t0: float) -> Optional[float]:
    """Units per second since the first batch: ``first`` is (time, count) when a count above 0 was first seen.
    Until a later count, None (the time to the first batch is model loading and start-up, not throughput). A
    phase that ended before a second look (``first is None`` or no progress since) gets its average since t0."""
    if first is not None and done > first[1] and now > first[0]:
        return (done - first[1]) / (now - first[0])
    return None


def progress_text(label: str, done: int, total: Optional[int], elapsed: float, unit: str,
                  rate: Optional[float] = None, final: bool = False) -> str:
    """``"encode: 1,200/5,183 documents, 85.1 documents/s, ETA 46s"``: ``rate`` the throughput since the first
    batch (None: no ETA yet, "starting" before any unit is done). The final line: the rate and the time taken."""
    if final:
        shown = rate if rate is not None else (done / elapsed if elapsed > 0 else 0.0)
        of = f"/{total:,}" if total else ""
        return f"{label}: {done:,}{of} {unit}, {shown:,.1f} {unit}/s, {_fmt_eta(elapsed)}"
    if rate is None:
        what = "starting" if done == 0 else "measuring the rate"
        return f"{label}: {done:,}/{total:,} {unit}, {what}" if total else f"{label}: {done:,} {unit}, {what}"
    if total:
        eta = (total - done) / rate if rate > 0 else None
        return (f"{label}: {done:,}/{total:,} {unit}, {rate:,.1f} {unit}/s, "
                f"ETA {_fmt_eta(eta) if done < total else '0s'}")
    return f"{label}: {done:,} {unit}, {rate:,.1f} {unit}/s"


class Progress:
    """A background thread printing ``progress_text`` of ``count()`` until :meth:`close` (which prints the final
    line). On a terminal the line is rewritten in place; otherwise one line every ``interval`` seconds (None: the
    final line only). The count is polled every ``TTY_INTERVAL_S`` either way, to see when the first batch lands."""

    def __init__(self, label: str, count: Callable[[], int], total: Optional[int], unit: str,
                 stream=None, interval: Optional[float] = -1.0, enabled: bool = True):
        self.label, self.count, self.total, self.unit = label, count, total, unit
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if interval == -1.0:   # not given: the console's choice
            interval = TTY_INTERVAL_S if self.tty else _state["pipe_interval"]
        self.interval = interval
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.first: Optional[tuple] = None
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
        if self.first is None and self._last > 0:
            self.first = (time.monotonic(), self._last)
        return self._last

    def _emit(self, final: bool = False) -> None:
        done, now = self._poll(), time.monotonic()
        text = progress_text(self.label, done, self.total, now - self.t0, self.unit,
                             throughput(self.first, done, now, self.t0), final=final)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _run(self) -> None:
        last_print = time.monotonic()
        poll = min(TTY_INTERVAL_S, self.interval) if self.interval else TTY_INTERVAL_S
        while not self._stop.wait(poll):
            if self.interval and time.monotonic() - last_print >= self.interval:
                self._emit()
                last_print = time.monotonic()
            else:
                self._poll()

    def close(self) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._emit(final=True)


def summary_line(output: str, summary: dict) -> str:
    """The one line ``streammine.mine`` prints at the end of a Python call (the CLI prints its longer summary)."""
    c = summary.get("counts", {})
    seconds = (summary.get("seconds") or {}).get("total")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    return (f"streammine: {c.get('queries_out', '?')} queries mined of {c.get('queries_in', '?')} read, "
            f"{c.get('negatives', '?')} negatives, {c.get('queries_short_of_negatives', 0)} queries short of "
            f"negatives, {c.get('quarantined_total', 0)} rows quarantined{took} -> {output}")


def run_finished(output: str, summary: dict) -> None:
    """The end of a Python ``streammine.mine`` call: its summary line (when shown) and a warning for what the user
    should look at (rows set aside). Nothing in the CLI, which prints its own summary."""
    if _state["owner"] != "api":
        return
    if show_summary():
        print(summary_line(output, summary), flush=True)
    quarantined = (summary.get("counts") or {}).get("quarantined_total") or 0
    if quarantined:
        from .errors import StreamMineWarning
        warnings.warn(f"{quarantined} input rows were set aside, not mined (bad or duplicate rows, queries without "
                      f"a positive): see {output.rstrip('/')}/_quarantine", StreamMineWarning, stacklevel=3)
