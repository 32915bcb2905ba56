"""Where a shard keeps its float32 vectors for exact rescoring: in memory, or in a scratch file on the node.

Rescoring reads only the candidates' rows, so the full-precision vectors need not be in anonymous memory (the
DiskANN split: what proposes candidates in RAM, the exact vectors on local disk). Both kinds hold the rows in the
shard's local order (row ``i`` is local row ``i``) and return the same float32 bits, so every score is the same
whichever holds them.

``FileRows`` writes into a file that has no name: it is opened with ``O_TMPFILE`` (Linux; elsewhere created and
unlinked at once, before anything is written), so the kernel frees its blocks when the last descriptor closes,
however the process ends, a crash or ``kill -9`` included; nothing is left in the scratch directory to clean up.
Reads go through a read-only ``mmap`` whose pages are released after every read (``MADV_DONTNEED``), so the page
cache holds them, not the process: its unique memory (USS) stays at the rows being rescored.
"""
from __future__ import annotations

import mmap
import os
import tempfile
from typing import Iterator, Optional

import numpy as np

from ..errors import ConfigError

# A block of rows read at once (proposer build, finiteness checks): bounds the working set.
BLOCK_BYTES = 64 << 20


def scratch_dir(configured: Optional[str] = None) -> str:
    """The node-local scratch directory: ``index.scratch_dir``, else ``$STREAMMINE_SCRATCH``, else the system's
    temporary directory. Created when missing."""
    path = configured or os.environ.get("STREAMMINE_SCRATCH") or tempfile.gettempdir()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"index.scratch_dir={path!r} cannot be created ({e.strerror})") from None
    return path


class MemoryRows:
    """Rows held in an ndarray (``vectors`` is (n, d) float32, C-contiguous)."""
    on_disk = False

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors

    @classmethod
    def allocate(cls, n: int, d: int) -> "MemoryRows":
        return cls(np.zeros((int(n), int(d)), np.float32))

    @property
    def shape(self) -> tuple:
        return self.vectors.shape

    def __len__(self) -> int:
        return len(self.vectors)

    def write(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        self.vectors[rows] = vectors

    def seal(self) -> None:
        """Writing is over (the file kind maps itself read-only here)."""

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[np.asarray(rows, np.int64)]

    def blocks(self, step: Optional[int] = None) -> Iterator[tuple]:
        step = step or block_rows(self.vectors.shape[1])
        for a in range(0, len(self), step):
            yield a, self.vectors[a:a + step]

    def whole(self) -> np.ndarray:
        """All rows as one array (a kind that keeps them in memory anyway, e.g. torch-flat)."""
        return self.vectors

    def __array__(self, dtype=None, copy=None):  # a plug-in kind that builds from an ndarray still can
        return np.asarray(self.whole(), dtype=dtype)

    @property
    def memory_bytes(self) -> int:
        return int(self.vectors.nbytes)

    def close(self) -> None:
        self.vectors = np.zeros((0,) + tuple(self.vectors.shape[1:]), np.float32)


class FileRows:
    """Rows in an unnamed scratch file (see the module docstring), written once with ``write``, then ``seal``."""
    on_disk = True

    def __init__(self, n: int, d: int, directory: str):
        self.n, self.d = int(n), int(d)
        self.row_bytes = 4 * self.d
        self.directory = directory
        self._fd = _unnamed_file(directory)
        try:
            os.ftruncate(self._fd, max(1, self.n * self.row_bytes))
        except OSError as e:
            os.close(self._fd)
            raise ConfigError(f"index.scratch_dir={directory!r}: cannot make a {self.n * self.row_bytes} byte "
                              f"scratch file ({e.strerror})") from None
        self._map = None
        self._view = None

    @classmethod
    def allocate(cls, n: int, d: int, directory: Optional[str] = None) -> "FileRows":
        return cls(n, d, scratch_dir(directory))

    @property
    def shape(self) -> tuple:
        return (self.n, self.d)

    def __len__(self) -> int:
        return self.n

    def write(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Rows ``rows`` (increasing or not) get ``vectors``: one ``pwrite`` per run of consecutive rows, through
        the page cache rather than a writable mapping (whose dirty pages would count as the process's own)."""
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:
            return
        order = np.argsort(rows, kind="stable")
        rows, vectors = rows[order], np.ascontiguousarray(vectors[order], np.float32)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.r_[0, breaks]
        ends = np.r_[breaks, len(rows)]
        raw = memoryview(vectors).cast("B")
        for s, e in zip(starts.tolist(), ends.tolist()):
            os.pwrite(self._fd, raw[s * self.row_bytes:e * self.row_bytes], int(rows[s]) * self.row_bytes)

    def seal(self) -> None:
        if self._map is None and self.n:
            self._map = mmap.mmap(self._fd, self.n * self.row_bytes, mmap.MAP_SHARED, mmap.PROT_READ)
            self._view = np.frombuffer(self._map, np.float32).reshape(self.n, self.d)

    def _release(self) -> None:
        if self._map is not None and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED)

    def take(self, rows: np.ndarray) -> np.ndarray:
        if self.n == 0:
            return np.zeros((0, self.d), np.float32)
        out = self._view[np.asarray(rows, np.int64)]  # a copy
        self._release()
        return out

    def blocks(self, step: Optional[int] = None) -> Iterator[tuple]:
        step = step or block_rows(self.d)
        for a in range(0, self.n, step):
            block = np.array(self._view[a:a + step])
            self._release()
            yield a, block

    def whole(self) -> np.ndarray:
        return np.array(self._view) if self.n else np.zeros((0, self.d), np.float32)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.whole(), dtype=dtype)

    @property
    def memory_bytes(self) -> int:
        return 0

    @property
    def disk_bytes(self) -> int:
        return self.n * self.row_bytes

    def close(self) -> None:
        self._view = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view handed out is still alive; the mapping goes with it
                pass
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def release_freed_memory() -> None:
    """Hands memory freed by a shard build back to the system: Arrow's pool keeps what the store's batches used,
    glibc the tails of its heaps (best effort; elsewhere nothing happens)."""
    try:
        import pyarrow as pa
        pa.default_memory_pool().release_unused()
    except Exception:
        pass
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass


def block_rows(d: int) -> int:
    return max(1, BLOCK_BYTES // max(1, 4 * int(d)))


def _unnamed_file(directory: str) -> int:
    """A read-write descriptor of a file in ``directory`` that has no name (see the module docstring)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag:
        try:
            return os.open(directory, flag | os.O_RDWR, 0o600)
        except OSError:  # a filesystem without O_TMPFILE support
            pass
    fd, path = tempfile.mkstemp(prefix="streammine-shard-", dir=directory)
    os.unlink(path)
    return fd


def as_rows(vectors):
    """``vectors`` as rows (``MemoryRows`` around an ndarray; rows as they are)."""
    if isinstance(vectors, (MemoryRows, FileRows)):
        return vectors
    return MemoryRows(np.ascontiguousarray(vectors, dtype=np.float32))


def rows_on_disk(setting: str, proposer_keeps_rows: bool) -> bool:
    """Whether a shard's rescoring rows go to a scratch file: ``index.rescore_vectors`` ``disk``, or ``auto``
    where the proposer does not keep the float32 rows itself in local order (compressed and IVF kinds, a GPU
    index). Config validation has checked the setting (``config.RESCORE_VECTORS``)."""
    return setting == "disk" or (setting == "auto" and not proposer_keeps_rows)
