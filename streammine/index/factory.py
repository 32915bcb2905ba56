"""Sizing of the faiss kinds for a shard, GPU placement, and the search thread count.

The kinds themselves are the proposer classes of ``index/kinds.py`` (``kinds.make_proposer`` chooses one per
shard, ``kinds.make_index`` the empty index it would search; this module imports no kind). Every faiss kind
assigns sequential ids on ``add``, so adding rows ``0..n-1`` in one call makes faiss return local row numbers
without an ``IndexIDMap`` wrapper (which would cost 8 bytes a row, and has no GPU counterpart).

Sizes are adapted to the shard (shards differ in size, and tiny test corpora are common):

* IVF lists: ``nlist`` (given, or about ``4 * sqrt(n)``) is clamped to ``[1, n // 39]``. faiss's k-means wants at
  least 39 training points per centroid (it warns below that, and fails below one point per centroid).
* IVF-PQ: ``m`` sub-quantizers must divide ``dim``; the largest divisor of ``dim`` not above ``pq_m`` is used.
  Each sub-quantizer trains ``2**nbits`` centroids on the shard's n points, so ``nbits`` is lowered to
  ``floor(log2(n / 39))`` when the shard is too small for ``pq_nbits``. Below 4 bits (n < 624) a product
  quantizer is useless and the memory it would save is negligible, so such a shard falls back to IVF-flat.
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING

try:
    import faiss
except ImportError:  # torch-flat needs no faiss (index/torch_flat.py); the faiss kinds say so when asked for
    faiss = None

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import IndexConfig

log = logging.getLogger(__name__)

MIN_POINTS_PER_CENTROID = 39   # faiss ClusteringParameters.min_points_per_centroid
MIN_PQ_NBITS = 4               # below this, ivf-pq falls back to ivf-flat (see the module docstring)
GPU_MAX_K = 2048               # faiss GPU k-selection limit (per query); also the GPU nprobe limit


def resolve_nlist(cfg: IndexConfig, n: int) -> int:
    """The number of IVF lists for a shard of ``n`` vectors."""
    nlist = cfg.nlist if cfg.nlist is not None else int(round(4 * math.sqrt(max(n, 1))))
    return max(1, min(int(nlist), n // MIN_POINTS_PER_CENTROID))


def resolve_pq(cfg: IndexConfig, dim: int, n: int) -> tuple[int, int]:
    """``(m, nbits)`` usable for a shard of ``n`` vectors of dimension ``dim``; nbits < MIN_PQ_NBITS: no PQ."""
    m = max(d for d in range(1, min(cfg.pq_m, dim) + 1) if dim % d == 0)
    room = n // MIN_POINTS_PER_CENTROID
    nbits = min(int(cfg.pq_nbits), room.bit_length() - 1 if room > 0 else 0)
    return m, nbits


def gpu_supported(index) -> bool:
    """Whether faiss has a GPU version of this index (flat, IVF-Flat and IVF-PQ do; HNSW does not, and the scalar
    quantizers of ``flat-fp16`` and ``ivf-sq8`` are kept on the CPU here: their bound and memory are stated for
    faiss's CPU code)."""
    return isinstance(faiss.downcast_index(index), (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexIVFPQ))


def gpu_mode(use_gpu) -> str:
    mode = str(use_gpu).strip().lower()
    if mode not in ("auto", "true", "false"):
        raise ConfigError(f"index.use_gpu must be one of auto, true, false; got {use_gpu!r}")
    return mode


def num_gpus() -> int:
    """GPUs faiss can use (0 without faiss-gpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def maybe_to_gpu(index: faiss.Index, use_gpu="auto") -> faiss.Index:
    """``index`` moved to GPU 0 when asked and possible, else ``index`` itself.

    ``auto``: GPU when faiss sees one and has a GPU version of the index kind, else CPU (with a warning when a
    GPU is there but could not be used). ``true``: GPU or a ``ConfigError`` saying why not. ``false``: CPU.
    Call it on the empty index: training and adding then run on the GPU (the pattern of faiss's GPU tutorial).
    """
    mode = gpu_mode(use_gpu)
    if mode == "false":
        return index
    gpus = num_gpus()
    if gpus == 0 or not hasattr(faiss, "StandardGpuResources"):
        if mode == "true":
            raise ConfigError("index.use_gpu=true, but faiss sees no GPU (is faiss-gpu installed and a GPU "
                              "visible to this process?); use index.use_gpu=auto or false to search on CPU")
        return index
    if not gpu_supported(index):
        reason = f"faiss has no GPU version of {type(faiss.downcast_index(index)).__name__}"
        if mode == "true":
            raise ConfigError(f"index.use_gpu=true: {reason}; use index.kind=flat, ivf-flat or ivf-pq")
        log.info("%s; searching on CPU", reason)
        return index
    # NOTE: unverified on the development machine (no GPU there); kept to the documented faiss calls.
    try:
        res = faiss.StandardGpuResources()
        gpu_index = faiss.index_cpu_to_gpu(res, 0, index)
    except Exception as e:  # e.g. a PQ code size / nbits that the GPU kernels do not support
        if mode == "true":
            raise ConfigError(f"index.use_gpu=true, but faiss could not move the index to GPU: {e}") from None
        warnings.warn(f"faiss could not move the index to GPU ({e}); searching on CPU")
        return index
    if hasattr(index, "nprobe"):  # copied by index_cpu_to_gpu too; set explicitly to be sure
        gpu_index.nprobe = index.nprobe
    # the GPU resources must live as long as the index
    gpu_index.referenced_objects = list(getattr(gpu_index, "referenced_objects", None) or []) + [res]
    return gpu_index


def set_search_threads(n) -> None:
    """faiss's OpenMP thread count for this process (an actor's CPU share); ``None``/0 leaves it alone."""
    if n and faiss is not None:
        faiss.omp_set_num_threads(max(1, int(n)))
