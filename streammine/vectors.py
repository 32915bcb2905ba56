"""Float vectors as Arrow columns (fixed_size_list<float32>) and back, without copies where possible."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), d)


def from_arrow(column) -> np.ndarray:
    """A (n, d) float32 array from a fixed_size_list or list column (chunked or not)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    n = len(column)
    if n == 0:
        d = column.type.list_size if pa.types.is_fixed_size_list(column.type) else 0
        return np.zeros((0, d), np.float32)
    if pa.types.is_fixed_size_list(column.type):
        d = column.type.list_size
        flat = column.flatten()
    else:
        flat = column.flatten()
        d = len(flat) // n
    return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, d)
