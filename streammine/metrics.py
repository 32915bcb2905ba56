"""Per-stage busy time and row counts: one accumulator (``StageTotals``), held by a small actor on the Ray path
(``StageMetrics``) and directly by the in-process path (run/in_process.py)."""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import ray


class StageTotals:
    def __init__(self):
        self.seconds = defaultdict(float)
        self.rows = defaultdict(int)
        self.calls = defaultdict(int)

    def add(self, stage: str, seconds: float, rows: int) -> None:
        self.seconds[stage] += seconds
        self.rows[stage] += rows
        self.calls[stage] += 1

    def snapshot(self) -> dict:
        return {s: {"busy_seconds": round(self.seconds[s], 3), "rows": self.rows[s], "calls": self.calls[s]}
                for s in sorted(self.seconds)}


StageMetrics = ray.remote(num_cpus=0)(StageTotals)


def start_stage_metrics():
    """The metrics actor lives on the driver's node: if that node dies the run dies with it anyway, while on any
    other node it would take the run's timings down with a worker node that is lost and replaced."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    here = ray.get_runtime_context().get_node_id()
    return StageMetrics.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()


class MetricsClient:
    """Held by stage actors; fire-and-forget so metrics never slow the stream. ``handle``: the ``StageMetrics``
    actor, a ``StageTotals`` of this process (the in-process path), or None (not measured)."""

    def __init__(self, handle):
        self.handle = handle
        self._add = None if handle is None else handle.add if isinstance(handle, StageTotals) else handle.add.remote

    def count(self, name: str, n: int) -> None:
        """Adds ``n`` to a counter (kept as a stage with no busy time; the summary moves it to its counts)."""
        if self.handle is not None and n:
            self._add(name, 0.0, int(n))

    @contextmanager
    def time(self, stage: str, rows: int):
        t0 = time.perf_counter()
        yield
        if self.handle is not None:
            self._add(stage, time.perf_counter() - t0, rows)
