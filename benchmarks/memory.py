"""Memory of a run, sampled across the driver and every Ray process on this machine: peak RSS (PeakMemory) or
USS samples (UssSampler)."""
from __future__ import annotations

import os
import threading
import time

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


class _Sampling:
    """A thread calling ``sample()`` every ``interval`` seconds inside ``with``, and once more at the end."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()

    def sample(self):
        raise NotImplementedError

    def _run(self):
        while not self._stop.is_set():
            t = time.perf_counter()
            self.sample()
            self._stop.wait(max(0.0, self.interval - (time.perf_counter() - t)))

    def __enter__(self):
        self._t_start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


class PeakMemory(_Sampling):
    """``with PeakMemory() as m: ...`` then ``m.peak_bytes`` (RSS summed over processes; shared pages count once
    per process, so this overstates, never understates)."""

    def __init__(self, interval: float = 0.5):
        super().__init__(interval)
        self.peak_bytes = 0
        self.driver_peak_bytes = 0  # this process alone: shows that nothing is gathered in the driver

    def sample(self):
        self.peak_bytes = max(self.peak_bytes, _ray_tree_rss())
        self.driver_peak_bytes = max(self.driver_peak_bytes, psutil.Process().memory_info().rss)


def _ray_session_dir():
    """The session directory of the Ray this process started or joined, or None (not imported or not up)."""
    import sys
    if "ray" not in sys.modules:
        return None
    try:
        import ray
        node = getattr(ray._private.worker, "_global_node", None)
        return getattr(node, "get_session_dir_path", lambda: None)() if node is not None else None
    except Exception:
        return None


def _tree(pids) -> list:
    procs = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs[pid] = p
            for c in p.children(recursive=True):
                procs[c.pid] = c
        except psutil.NoSuchProcess:
            pass
    return list(procs.values())


def _ray_session_pids(session_dir) -> set:
    """Every process whose command line mentions ray and names this Ray session's directory (the processes of a
    Ray that another process started; other sessions' Ray processes on the machine are left out). Reads every
    process's command line: the sampler does it every ``rescan`` seconds, not every pass."""
    if not session_dir:
        return set()
    name = session_dir.rstrip("/").rsplit("/", 1)[-1]
    found = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "ray" in cmd and name in cmd:
            found.add(p.pid)
    return found


class UssSampler(_Sampling):
    """``with UssSampler() as m: ...``: every ``interval`` seconds, the USS (pages no other process maps: what
    stopping the process would free) summed over this process, its descendants (a local Ray's gcs_server, raylet,
    dashboard and workers are started under it) and the processes of its Ray session (``_ray_session_pids``), with
    the PSS sum and this process's own USS beside it; ``only_pids``: those processes and their descendants instead.

    ``samples``: ``[t, summed_uss_bytes]`` per pass (t from the start); ``peak_bytes``, ``peak_pss_bytes``,
    ``driver_peak_bytes``; ``pass_seconds_max`` / ``pass_seconds_mean``: how long one pass took (psutil reads
    /proc/<pid>/smaps_rollup where the kernel has it, a few ms per process; full smaps, much slower for a process
    with many mappings, only on old kernels); ``max_processes``; ``peak_processes``: ``[name, pid, uss]`` of each
    process at the peak pass; ``process_peaks``: each process's own peak ``{pid: [name, pid, uss, t]}``.

    USS leaves out pages that two processes share (Ray's object store in /dev/shm, once a worker maps an object,
    counts in no one's USS; an object only its writer has mapped counts in the writer's); PSS shares them out, so
    the PSS sum is the machine's total for these processes."""

    def __init__(self, interval: float = 1.0, only_pids=None, rescan: float = 10.0):
        super().__init__(interval)
        self.rescan = rescan
        self._session_pids: set = set()
        self._scanned_at = None
        self.only_pids = None if only_pids is None else list(only_pids)  # these processes and their descendants
        self.samples: list = []
        self.peak_bytes = self.peak_pss_bytes = self.driver_peak_bytes = 0
        self.pass_seconds: list = []
        self.max_processes = 0
        self.peak_processes: list = []
        self.process_peaks: dict = {}  # pid -> [name at its peak, pid, peak uss, t of the peak]
        self._me = psutil.Process()

    def sample(self) -> int:
        t0 = time.perf_counter()
        uss = pss = 0
        if self.only_pids is None:
            if self._scanned_at is None or t0 - self._scanned_at >= self.rescan:
                self._session_pids, self._scanned_at = _ray_session_pids(_ray_session_dir()), t0
            procs = _tree([self._me.pid] + sorted(self._session_pids - {self._me.pid}))
        else:
            procs = _tree(self.only_pids)
        n, each = 0, []
        for p in procs:
            try:
                info = p.memory_full_info()
                name = "driver" if p.pid == self._me.pid else " ".join(
                    os.path.basename(c) for c in p.cmdline()[:2])[:60]
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            n += 1
            each.append((name, p.pid, info.uss))
            top = self.process_peaks.setdefault(p.pid, [name, p.pid, 0, 0.0])
            if info.uss > top[2]:
                top[0], top[2], top[3] = name, info.uss, round(t0 - self._t_start, 3)
            uss += info.uss
            pss += getattr(info, "pss", 0)
            if p.pid == self._me.pid:
                self.driver_peak_bytes = max(self.driver_peak_bytes, info.uss)
        t1 = time.perf_counter()
        self.pass_seconds.append(t1 - t0)
        self.samples.append([round(t0 - self._t_start, 3), uss])
        if uss >= self.peak_bytes:  # what each process held at the peak, largest first
            self.peak_processes = [[nm, pid, u] for nm, pid, u in sorted(each, key=lambda e: -e[2])]
        self.peak_bytes = max(self.peak_bytes, uss)
        self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
        self.max_processes = max(self.max_processes, n)
        return uss

    @property
    def pass_seconds_max(self) -> float:
        return max(self.pass_seconds, default=0.0)

    @property
    def pass_seconds_mean(self) -> float:
        return sum(self.pass_seconds) / len(self.pass_seconds) if self.pass_seconds else 0.0
