"""The index kinds: one proposer class per ``index.kind``, and the registry that names them.

A proposer is what a shard searches to *propose* candidates; the shard (``shard.IndexShard``) owns everything else
(dedupe, the float32 vectors, exact rescoring, the certificate, lookups). The kind is turned into an object once,
in ``make_proposer``; nothing downstream tests a kind again. Every proposer has:

* ``build(vectors)``: train if needed and add rows ``0..n-1`` in that order (labels are local rows);
  ``vectors`` is an array or ``vector_rows`` rows (possibly a scratch file), read block by block;
* ``keeps_rows``: whether ``stored_vectors()`` will give the float32 rows (then the shard keeps no copy);
* ``propose(queries, k) -> Proposal``: per query up to ``k`` rows and their approximate scores (-1 / -inf
  padding; sorted or not: the shard ranks after rescoring);
* ``error_bound(max_norm)``: a bound on |approximate - exact score| per unit of query norm, None where none holds
  (the shard then rescores every candidate and cannot certify);
* ``max_k``: the most candidates per query it can return (None: no limit);
* ``memory_bytes(n, d)``: bytes it holds for ``n`` rows of dimension ``d``, its own copy of the vectors included;
* ``stored_vectors()``: a read-only (n, d) float32 view of its own copy of the rows, in local order, or None
  (the shard then rescores from that copy instead of keeping a second one);
* ``index``: the object searched (a faiss index or a ``torch_flat.TorchFlatIndex``), for inspection.

A new kind is one class here (or anywhere: ``register``) and one line in ``KINDS``. Built-in entries name their
class as ``"module:Class"`` so that reading the names (config validation, the CLI's choices) imports neither
faiss nor torch.
"""
from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..errors import ConfigError
from .answers import Proposal
from .vector_rows import as_rows

if TYPE_CHECKING:
    from ..config import IndexConfig

log = logging.getLogger(__name__)

# The IVF batch scan's candidate buffer (index/ivf_scan.py), per chunk of queries.
SCAN_BYTES = 64 << 20
ADD_BLOCK_ROWS = 1 << 16  # rows added to a faiss index at once (the build never copies a shard whole)
_U32 = 2.0 ** -24  # float32 unit roundoff


def float32_bound(dim: int, max_norm: float) -> float:
    """Uncompressed float32 scoring (Flat, IVF-Flat, HNSW on a CPU): any summation order errs by at most
    d·u·Σ|q_i v_i| <= d·u·|q|·|v| (u = 2^-24); doubled, which also covers the rounding of the exact score."""
    return 2.0 * dim * _U32 * max_norm


class FaissProposer:
    """A CPU faiss index that assigns sequential ids on ``add``. Subclasses make the empty index (``new_index``)."""
    max_k: Optional[int] = None
    keeps_rows = False  # whether stored_vectors() gives the float32 rows in local order (the shard shares them)

    def __init__(self, cfg: "IndexConfig", dim: int, n: int):
        self.cfg, self.d = cfg, int(dim)
        self.index = self.new_index(cfg, self.d, int(n))

    @classmethod
    def make(cls, cfg: "IndexConfig", dim: int, n: int):
        """The proposer to build for a shard of ``n`` rows (a subclass may pick another, e.g. a fallback)."""
        return cls(cfg, dim, n)

    @classmethod
    def torch_device(cls, cfg: "IndexConfig") -> Optional[str]:
        """The torch device on which ``torch-flat`` stands in for this kind, or None (faiss)."""
        return None

    @staticmethod
    def new_index(cfg, dim: int, n: int):
        raise NotImplementedError

    def placed(self, use_gpu):
        """This proposer, or a ``GpuProposer`` over its index moved to the GPU (``factory.maybe_to_gpu``)."""
        from .factory import maybe_to_gpu
        moved = maybe_to_gpu(self.index, use_gpu)
        return self if moved is self.index else GpuProposer(moved, self)

    def build(self, vectors) -> None:
        """Train on ``training_sample`` (if the index needs training), then add the rows block by block, in
        order: ``vectors`` is an (n, d) array or rows of ``vector_rows``, never copied whole."""
        rows = as_rows(vectors)
        if not self.index.is_trained:
            self.index.train(training_sample(rows, self.training_size()))
        if not _add_presized(self.index, rows):
            for _, block in rows.blocks(ADD_BLOCK_ROWS):
                self.index.add(np.ascontiguousarray(block, dtype=np.float32))
        if self.index.ntotal != len(rows):
            raise RuntimeError(f"faiss index holds {self.index.ntotal} vectors, expected {len(rows)}")

    def training_size(self) -> int:
        """The most rows training uses: ``index.train_points_per_list`` per IVF list and per PQ centroid (faiss
        itself samples k-means input down to 256 per centroid)."""
        per = int(self.cfg.train_points_per_list)
        ivf = _faiss().try_extract_index_ivf(self.index)
        lists = int(ivf.nlist) if ivf is not None else 1
        pq = getattr(_faiss().downcast_index(self.index), "pq", None)
        centroids = (1 << int(pq.nbits)) if pq is not None else 1
        return per * max(lists, centroids)

    def propose(self, queries: np.ndarray, k: int) -> Proposal:
        scores, rows = self.index.search(queries, k)
        return Proposal(rows, scores)

    def error_bound(self, max_norm: float) -> Optional[float]:
        return float32_bound(self.d, max_norm)

    def memory_bytes(self, n: int, d: int) -> int:
        return n * d * 4

    def stored_vectors(self) -> Optional[np.ndarray]:
        return None

    @staticmethod
    def _flat_view(storage, d: int) -> Optional[np.ndarray]:
        import faiss
        storage = faiss.downcast_index(storage)
        if not isinstance(storage, faiss.IndexFlat):
            return None
        view = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * d).reshape(-1, d)
        view.flags.writeable = False
        return view  # valid while the index lives (the proposer holds it)


class FlatProposer(FaissProposer):
    """``flat``: exact float32 inner products, scanned query by query (faiss ``IndexFlatIP``)."""
    keeps_rows = True

    @staticmethod
    def new_index(cfg, dim, n):
        return _faiss(cfg).IndexFlatIP(dim)

    @classmethod
    def torch_device(cls, cfg):
        # a GPU that faiss cannot use (no faiss-gpu) but torch can: the same exact search with torch-flat there
        from . import factory, torch_flat
        if factory.gpu_mode(cfg.use_gpu) != "false" and factory.num_gpus() == 0 and torch_flat.cuda_available():
            log.info("faiss has no GPU support here (faiss-gpu absent); index.kind=flat searches with torch-flat "
                     "on the GPU")
            return "cuda"
        return None

    def stored_vectors(self):
        return self._flat_view(self.index, self.d)


class HnswProposer(FaissProposer):
    """``hnsw``: a graph over the raw float32 vectors (faiss ``IndexHNSWFlat``)."""
    keeps_rows = True

    @staticmethod
    def new_index(cfg, dim, n):
        faiss = _faiss(cfg)
        index = faiss.IndexHNSWFlat(dim, int(cfg.hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = int(cfg.ef_search)
        return index

    def memory_bytes(self, n, d):
        # the vectors, level-0 links (2M) plus ~1/M upper levels, int32 each; offsets and levels
        return int(n * d * 4 + n * (2 * self.cfg.hnsw_m * 4 * 1.1 + 12))

    def stored_vectors(self):
        return self._flat_view(self.index.storage, self.d)


class IvfFlatProposer(FaissProposer):
    """``ivf-flat``: inverted lists of raw float32 vectors; a large batch is scanned list by list
    (``ivf_scan``, with ``index.ivf_batch_scan``), the same lists and vectors as faiss's query-by-query search."""

    def __init__(self, cfg, dim, n):
        super().__init__(cfg, dim, n)
        self.lists = None  # ivf_scan.InvertedListViews once built, when batches are scanned list by list

    @staticmethod
    def new_index(cfg, dim, n):
        faiss = _faiss(cfg)
        return _ivf(cfg, dim, n, lambda quantizer, nlist: faiss.IndexIVFFlat(
            quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT))

    def build(self, vectors):
        super().build(vectors)
        if self.cfg.ivf_batch_scan:
            from .ivf_scan import InvertedListViews
            self.lists = InvertedListViews.of(self.index)

    def propose(self, queries, k):
        from .ivf_scan import MIN_BATCH, ivf_batch_search
        if self.lists is None or len(queries) < MIN_BATCH:
            return super().propose(queries, k)
        ivf = _faiss().extract_index_ivf(self.index)
        # the scan holds nprobe * k candidates per query (12 bytes each): chunks keep that under SCAN_BYTES
        step = max(MIN_BATCH, SCAN_BYTES // (12 * ivf.nprobe * max(1, k)))
        scores, labels = [], []
        for a in range(0, len(queries), step):
            _, probes = ivf.quantizer.search(queries[a:a + step], ivf.nprobe)
            s, lab = ivf_batch_search(probes, self.lists, queries[a:a + step], k)
            scores.append(s)
            labels.append(lab)
        return Proposal(np.concatenate(labels), np.concatenate(scores))

    def memory_bytes(self, n, d):
        return int(n * (self.index.code_size + 8) + self.index.nlist * d * 4)


class IvfPqProposer(FaissProposer):
    """``ivf-pq``: inverted lists of product-quantized codes. Their scores have no error bound; a shard too small
    to train a product quantizer gets an ``IvfFlatProposer`` instead (with that index's bound)."""

    @classmethod
    def make(cls, cfg, dim, n):
        from .factory import MIN_PQ_NBITS, resolve_pq
        m, nbits = resolve_pq(cfg, dim, n)
        if nbits < MIN_PQ_NBITS:
            log.info("ivf-pq on %d vectors: too few to train a product quantizer; using ivf-flat", n)
            return IvfFlatProposer(cfg, dim, n)
        if (m, nbits) != (cfg.pq_m, cfg.pq_nbits):
            log.info("ivf-pq on %d vectors of dim %d: using m=%d nbits=%d (configured m=%d nbits=%d)",
                     n, dim, m, nbits, cfg.pq_m, cfg.pq_nbits)
        return cls(cfg, dim, n)

    @staticmethod
    def new_index(cfg, dim, n):
        from .factory import resolve_pq
        faiss = _faiss(cfg)
        m, nbits = resolve_pq(cfg, dim, n)
        return _ivf(cfg, dim, n, lambda quantizer, nlist: faiss.IndexIVFPQ(
            quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT))

    def error_bound(self, max_norm):
        return None

    def memory_bytes(self, n, d):
        ivf = self.index
        return int(n * (ivf.code_size + 8) + ivf.nlist * d * 4 + d * (1 << ivf.pq.nbits) * 4
                   + int(ivf.precomputed_table.size()) * 4)


FP16_MAX = 65504.0  # the largest finite float16
_U16 = 2.0 ** -11   # float16 unit roundoff (round to nearest: relative error <= 2^-11 for normal values)
_FP16_SUB = 2.0 ** -25 * (1 + 2.0 ** -12)  # half the subnormal spacing 2^-24 (and a double rounding's 2^-37)


def fp16_bound(dim: int, max_norm: float) -> float:
    """``flat-fp16``: a bound on |faiss score - exact score| per unit of query norm, for stored vectors of norm
    at most ``max_norm`` whose components are within float16's range.

    Encoding rounds each component to the nearest float16 (faiss: F16C ``cvtps_ph``, ties to even, or its
    portable encoder, ties away from zero, which faiss 1.15's wheels use; either errs by at most half a unit in
    the last place, checked in tests/test_index_kinds_compressed.py): |v~_i - v_i| <= 2^-11·|v_i|
    where float16 is normal (|v_i| >= 2^-14), <= 2^-25 (+ a double rounding's 2^-37 in the portable path) in
    its subnormal range. So |v~ - v| <= 2^-11·|v| + s·sqrt(d) with s = 2^-25·(1 + 2^-12), and by Cauchy-Schwarz
    |q·v~ - q·v| <= |q|·(2^-11·max_norm + s·sqrt(d)). Decoding is exact (float16 -> float32); faiss then sums
    q·v~ in float32 (fused multiply-adds in SIMD lanes and a lane reduction: under d roundings on any path),
    which errs by at most d·2^-24·|q|·|v~| with |v~| <= max_norm·(1 + 2^-11) + s·sqrt(d); doubled, as in
    ``float32_bound``, which also covers the rounding of the exact score to float32. A relative 2^-10 on top
    absorbs the float64 arithmetic of this formula and of the shard's norms. It assumes the CPU's flush-to-zero
    mode is off (the default), which faiss's portable encoder needs for float16's subnormals.
    """
    sub = _FP16_SUB * np.sqrt(dim)
    encode = max_norm * _U16 + sub
    arith = 2.0 * dim * _U32 * (max_norm * (1 + _U16) + sub)
    return float((encode + arith) * (1 + 2.0 ** -10))


class FlatFp16Proposer(FaissProposer):
    """``flat-fp16``: every vector, stored as float16 codes (faiss ``IndexScalarQuantizer`` QT_fp16), half of
    ``flat``'s index memory (the shard still keeps its own float32 copy for rescoring, which a ``flat`` shard
    shares with its index: ``stored_vectors`` is None here). Its scores err by at most ``fp16_bound``, so the shard's certificate still returns
    the exact top k (no approximation of which documents are found). Components beyond float16's range
    (|v_i| > 65504) cannot be stored: ``build`` refuses them with a ``ConfigError``. No GPU version here."""

    @staticmethod
    def new_index(cfg, dim, n):
        faiss = _faiss(cfg)
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)

    def build(self, vectors):
        top = fp16_magnitude(vectors)
        if top > FP16_MAX:
            raise ConfigError(f"index.kind=flat-fp16: an embedding has a component of magnitude {top:.6g}, beyond "
                              f"float16's range ({FP16_MAX:g}); use index.kind=flat, or scale the embeddings")
        super().build(vectors)

    def error_bound(self, max_norm):
        return fp16_bound(self.d, max_norm)

    def memory_bytes(self, n, d):
        return n * d * 2


def fp16_magnitude(vectors) -> float:
    """The largest |component| of ``vectors`` (an array or ``vector_rows`` rows; 0 when empty), block by block."""
    top = 0.0
    for _, block in as_rows(vectors).blocks():
        if block.size:
            top = max(top, float(np.max(block)), -float(np.min(block)))
    return top


class IvfSq8Proposer(FaissProposer):
    """``ivf-sq8``: inverted lists of 8-bit scalar-quantized codes (faiss ``IndexIVFScalarQuantizer`` QT_8bit,
    d bytes a document), ``nlist``/``nprobe`` as ``ivf-flat``. Approximate candidates and no error bound: each
    dimension is quantized within the range trained on the vectors (their residuals to the list's centroid), and
    a vector outside that range (one not in the training sample, or a query-time drift) is clamped to it, with an
    error the codes do not bound. Every candidate is rescored exactly. No GPU version here."""

    @staticmethod
    def new_index(cfg, dim, n):
        faiss = _faiss(cfg)
        return _ivf(cfg, dim, n, lambda quantizer, nlist: faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT))

    def error_bound(self, max_norm):
        return None

    def memory_bytes(self, n, d):
        ivf = self.index
        # codes and ids, the centroids, the quantizer's trained per-dimension minimum and range
        return int(n * (ivf.code_size + 8) + ivf.nlist * d * 4 + int(ivf.sq.trained.size()) * 4)


class GpuProposer:
    """A faiss index on the GPU, made from a CPU proposer's empty index (``FaissProposer.placed``). Its kernels
    may use reduced precision: no error bound; at most ``GPU_MAX_K`` candidates per query."""

    def __init__(self, gpu_index, cpu: FaissProposer):
        from .factory import GPU_MAX_K
        self.index, self.cpu, self.d, self.max_k = gpu_index, cpu, cpu.d, GPU_MAX_K

    keeps_rows = False
    build = FaissProposer.build
    propose = FaissProposer.propose

    def training_size(self):
        return self.cpu.training_size()

    def error_bound(self, max_norm):
        return None

    def memory_bytes(self, n, d):
        return n * d * 4  # device memory of its copy of the vectors (codes are smaller; an upper estimate)

    def stored_vectors(self):
        return None


class TorchFlatProposer:
    """``torch-flat``: exact candidates from a matrix product on a torch tensor (``torch_flat.TorchFlatIndex``);
    states its own error bound (it depends on the device's precision)."""
    max_k: Optional[int] = None

    def __init__(self, cfg: "IndexConfig", dim: int, device: str = "cpu"):
        from .torch_flat import TorchFlatIndex
        self.index = TorchFlatIndex(dim, device=device, dtype=cfg.torch_dtype)
        self.keeps_rows = device == "cpu"  # on a GPU its host copy is dropped

    @classmethod
    def make(cls, cfg, dim, n):
        return cls(cfg, dim, cls.torch_device(cfg))

    @classmethod
    def torch_device(cls, cfg):
        """The GPU when torch sees one (``use_gpu`` auto/true), else the CPU (``true``: an error)."""
        from . import factory, torch_flat
        mode = factory.gpu_mode(cfg.use_gpu)
        if mode == "false":
            return "cpu"
        if torch_flat.cuda_available():
            return "cuda"
        if mode == "true":
            raise ConfigError("index.use_gpu=true, but torch sees no GPU (is a CUDA build of torch installed and a "
                              "GPU visible to this process?); use index.use_gpu=auto or false to search on CPU")
        return "cpu"

    def placed(self, use_gpu):
        return self  # its device was chosen when made

    def build(self, vectors):
        self.index.add(as_rows(vectors).whole())  # the kind holds every row in memory (its choice)

    def propose(self, queries, k):
        scores, rows = self.index.search(queries, k)
        return Proposal(rows, scores)

    def error_bound(self, max_norm):
        return self.index.error_bound()

    def memory_bytes(self, n, d):
        return n * d * 4 + self.index.device_bytes()  # the host array it was given, and any device copy

    def stored_vectors(self):
        host = self.index.host_vectors()
        if host is None:
            return None
        view = host.view()
        view.flags.writeable = False
        return view


# ---- the registry --------------------------------------------------------------------------------------------

KINDS: dict = {
    "flat": "streammine.index.kinds:FlatProposer",
    "ivf-flat": "streammine.index.kinds:IvfFlatProposer",
    "hnsw": "streammine.index.kinds:HnswProposer",
    "ivf-pq": "streammine.index.kinds:IvfPqProposer",
    "flat-fp16": "streammine.index.kinds:FlatFp16Proposer",
    "ivf-sq8": "streammine.index.kinds:IvfSq8Proposer",
    "torch-flat": "streammine.index.kinds:TorchFlatProposer",
}


def register(name: str, proposer_class) -> None:
    """Add (or replace) an index kind: ``proposer_class`` has ``make(cfg, dim, n)``, ``torch_device(cfg)`` and
    makes objects with the proposer surface (see the module docstring)."""
    KINDS[str(name)] = proposer_class


def proposer_class(kind: str):
    entry = KINDS.get(kind)
    if entry is None:
        raise ConfigError(f"index.kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
    return entry


def torch_flat_device(cfg: "IndexConfig"):
    """The torch device a shard of ``cfg`` searches with ``torch-flat`` on, or None when it uses faiss.

    Each kind says (``torch_device`` of its proposer class): ``torch-flat`` the GPU when torch sees one
    (``use_gpu`` auto/true), else the CPU (``true``: an error); ``flat`` with ``use_gpu`` auto/true on a GPU that
    faiss cannot use (no faiss-gpu) the GPU, the same exact search; the approximate kinds stay with faiss on the
    CPU (they exist to save memory or time in ways torch-flat does not).
    """
    from .factory import gpu_mode
    gpu_mode(cfg.use_gpu)
    return proposer_class(cfg.kind).torch_device(cfg)


def make_index(cfg: "IndexConfig", dim: int, n: int):
    """The empty index that a shard of ``n`` vectors of ``cfg`` would search (placed on the GPU or not): a faiss
    index, or a ``torch_flat.TorchFlatIndex`` (see ``torch_flat_device``)."""
    return make_proposer(cfg, dim, n).index


def make_proposer(cfg: "IndexConfig", dim: int, n: int):
    """The proposer a shard of ``n`` rows of ``cfg`` searches, placed (GPU or CPU) and still empty: the one place
    where a kind is looked at."""
    cls = proposer_class(cfg.kind)
    device = torch_flat_device(cfg)
    if device is not None:
        return TorchFlatProposer(cfg, dim, device)
    proposer = cls.make(cfg, dim, n)
    return proposer.placed(cfg.use_gpu)


def _add_presized(index, rows) -> bool:
    """Adds ``rows`` to a CPU IVF index with every inverted list allocated once at its final size (False: not an
    IVF index with array lists; nothing added). Growing lists by appending reserve up to twice their size; this
    assigns the rows to lists first (8 bytes a row), sizes the lists, then adds with those assignments: the same
    lists in the same order as ``index.add``."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or ivf is not index or index.ntotal:
        return False
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(lists, faiss.ArrayInvertedLists):
        return False
    assigned = np.empty(len(rows), np.int64)
    for a, block in rows.blocks(ADD_BLOCK_ROWS):
        _, nearest = ivf.quantizer.search(np.ascontiguousarray(block, dtype=np.float32), 1)
        assigned[a:a + len(block)] = nearest[:, 0]
    for lst, count in enumerate(np.bincount(assigned, minlength=ivf.nlist).tolist()):
        lists.resize(lst, count)  # from empty: capacity exactly count
        lists.resize(lst, 0)      # size back to 0, capacity kept
    for a, block in rows.blocks(ADD_BLOCK_ROWS):
        block = np.ascontiguousarray(block, dtype=np.float32)
        lists_of = np.ascontiguousarray(assigned[a:a + len(block)])
        ivf.add_core(len(block), faiss.swig_ptr(block), None, faiss.swig_ptr(lists_of))
    return True


def training_sample(rows, size: int) -> np.ndarray:
    """The rows an index trains on: all of them when there are at most ``size`` (as faiss would use them), else a
    seeded sample of ``size`` rows in local order, read row by row from wherever the rows are."""
    n = len(rows)
    if n <= size:
        return np.ascontiguousarray(rows.whole(), dtype=np.float32)
    pick = np.sort(np.random.default_rng(1234).choice(n, int(size), replace=False))
    return np.ascontiguousarray(rows.take(pick), dtype=np.float32)


def _faiss(cfg=None):
    try:
        import faiss
    except ImportError:  # torch-flat needs no faiss
        kind = f"index.kind={cfg.kind}" if cfg is not None else "this index.kind"
        raise ConfigError(f"{kind} needs faiss (pip install faiss-cpu); index.kind=torch-flat does not") from None
    return faiss


def _ivf(cfg, dim: int, n: int, make_ivf):
    """An IVF index from ``make_ivf(quantizer, nlist)``, with ``resolve_nlist`` lists and nprobe clamped to them."""
    from .factory import resolve_nlist
    nlist = resolve_nlist(cfg, n)
    index = make_ivf(_faiss(cfg).IndexFlatIP(dim), nlist)
    index.nprobe = max(1, min(int(cfg.nprobe), nlist))
    return index  # faiss's Python wrapper keeps the quantizer alive with the index
