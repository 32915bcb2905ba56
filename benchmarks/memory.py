"""Peak resident memory of a run, sampled across the driver and every Ray process on this machine."""
from __future__ import annotations

import threading

import psutil


def _ray_tree_rss() -> int:
    total = 0
    for p in psutil.process_iter(["cmdline", "memory_info"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if "ray" in cmd or p.pid == psutil.Process().pid:
                total += p.info["memory_info"].rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError):
            pass
    return total


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.peak_bytes`` (RSS summed over processes; shared pages count once
    per process, so this overstates, never understates)."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.peak_bytes = 0
        self.driver_peak_bytes = 0  # this process alone: shows that nothing is gathered in the driver
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _ray_tree_rss())
            self.driver_peak_bytes = max(self.driver_peak_bytes, psutil.Process().memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, _ray_tree_rss())
