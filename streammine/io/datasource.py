"""A Ray Data datasource over reader functions: one read task per zero-argument callable.

    fns = [functools.partial(readers.iter_beir_corpus, dir_url="s3://bucket/scifact")]
    ds = ray.data.read_datasource(GeneratorDatasource(fns, name="beir-corpus"), override_num_blocks=len(fns))

Each callable runs inside its own read task (a Ray worker) and streams the pyarrow Tables it yields as blocks, so
inputs are read where they are processed and never pass through the driver. The callables must be picklable
(module-level functions, or ``functools.partial`` of them). In lenient runs, wrap a reader with
:func:`quarantining` so that the task writes its own quarantine part when it finishes.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable, Iterator, List, Optional

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask


def _run(fn: Callable[[], Iterable[pa.Table]]) -> Iterator[pa.Table]:
    for table in fn():
        if table is not None and table.num_rows:
            yield table


class GeneratorDatasource(Datasource):
    """One ReadTask per callable; ``parallelism`` is ignored (the callables are the unit of parallelism)."""

    def __init__(self, fns: List[Callable[[], Iterable[pa.Table]]], name: str = "generator",
                 schema: Optional[pa.Schema] = None):
        super().__init__()
        self._fns = list(fns)
        self._name = name
        self._schema = schema

    def get_name(self) -> str:
        return self._name

    def estimate_inmemory_data_size(self) -> Optional[int]:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: Optional[int] = None,
                       data_context=None) -> List[ReadTask]:
        tasks = []
        for fn in self._fns:
            metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            tasks.append(ReadTask(functools.partial(_run, fn), metadata, schema=self._schema,
                                  per_task_row_limit=per_task_row_limit))
        return tasks


def read_quarantining(reader: Callable[..., Iterable[pa.Table]], quarantine_url: Optional[str],
                      **kwargs) -> Iterator[pa.Table]:
    """Runs ``reader(quarantine=..., **kwargs)``; with a ``quarantine_url`` (lenient mode) the rows it quarantines
    are written as one part under that URL when it finishes (or fails), by the task that found them. Without one
    (strict mode) the reader gets ``quarantine=None`` and raises on the first bad row."""
    from .records import Quarantine
    quarantine = Quarantine() if quarantine_url else None
    try:
        yield from reader(quarantine=quarantine, **kwargs)
    finally:
        if quarantine is not None:
            quarantine.write(quarantine_url)


def quarantining(reader: Callable[..., Iterable[pa.Table]], quarantine_url: Optional[str],
                 **kwargs) -> Callable[[], Iterator[pa.Table]]:
    """A picklable zero-argument callable for :class:`GeneratorDatasource` (see :func:`read_quarantining`)."""
    return functools.partial(read_quarantining, reader, quarantine_url, **kwargs)
