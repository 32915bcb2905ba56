"""``index.kind: torch-flat``: exact inner-product candidates from a matrix product on a torch tensor.

The object has the small faiss surface ``IndexShard`` uses (``ntotal``, ``is_trained``, ``train``, ``add``,
``search(q, k) -> (D, I)`` padded with -inf / -1), so the shard's exact float64 rescoring, its pruned two-round
rescoring and its ordinal tie order apply unchanged. It needs torch only (no faiss, no faiss-gpu): on a GPU the
products run in float16 (or bfloat16) with float32 accumulation; on a CPU in float32.

Invariants:

* ``search`` returns, per query, the ``k`` largest *approximate* scores, ties broken by the lower row (the rule
  faiss's Flat heap follows), sorted by (score desc, row asc) -- the same set whatever the query chunk size, given
  the same approximate scores.
* Queries are processed in chunks of at most ``chunk_bytes // (4 * ntotal)`` (the chunk's float32 score matrix),
  so memory stays bounded whatever the batch size.
* ``error_bound()`` bounds |approximate score - exact score| per unit of query norm (see its docstring), or is
  None where no bound holds; ``IndexShard.faiss_error_bound`` returns it (via ``kinds.TorchFlatProposer``).
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import sys
from typing import Optional

import numpy as np

from ..config import TORCH_DTYPES
from ..errors import ConfigError

log = logging.getLogger(__name__)

# Working set of one query chunk's float32 score matrix (chunk x ntotal x 4 bytes).
CPU_CHUNK_BYTES = 64 << 20
GPU_CHUNK_BYTES = 512 << 20
MAX_CHUNK = 4096
# unit roundoff u and the largest absolute rounding error of a subnormal (eta) of each input precision
_ROUNDING = {"float16": (2.0 ** -11, 2.0 ** -25), "bfloat16": (2.0 ** -8, 2.0 ** -134),
             "float32": (2.0 ** -24, 2.0 ** -150)}


def cuda_possible() -> bool:
    """Cheap check before importing torch (seconds in every shard actor): torch already loaded, or signs of an
    NVIDIA driver on this machine."""
    return ("torch" in sys.modules or os.path.exists("/proc/driver/nvidia/version")
            or shutil.which("nvidia-smi") is not None)


def cuda_available() -> bool:
    if not cuda_possible():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def reduced_precision_bound(dim: int, max_norm: float, u: float, eta: float, u_acc: float = 2.0 ** -24) -> float:
    """A bound C·M on |approximate - exact| per unit of query norm for inputs rounded to a precision of unit
    roundoff ``u`` (absolute error ``eta`` below its normal range), products summed in float32 (``u_acc``).

    The inputs are first scaled by powers of two (exact) so that |q'| and the largest document norm M' lie in
    [1/2, 1): nothing overflows, and the subnormal terms are bounded relative to |q'|·M'. Per component,
    |x~ - x| <= u|x| + eta, so with A = (1+u)^2 + 4·eta·(1+u)·sqrt(d) + 4·d·eta^2 (Cauchy-Schwarz, |q'|,M' >= 1/2):

        |q~·v~ - q'·v'| <= (2u + u^2 + 4·eta·(1+u)·sqrt(d) + 4·d·eta^2) |q'| M'      (input rounding)
        float32 sum of the d exact products (11+11 or 8+8 bits fit float32):  <= 2·d·u_acc·A·|q'|·M'

    (the factor 2 on the sum allows the truncating adders of tensor cores, which err by up to one ulp). Scaling
    back is exact. The result is doubled, as for Flat, to cover the float32 rounding of the exact score.
    """
    sd = math.sqrt(dim)
    a = (1 + u) ** 2 + 4 * eta * (1 + u) * sd + 4 * dim * eta ** 2
    c = 2 * u + u * u + 4 * eta * (1 + u) * sd + 4 * dim * eta ** 2 + 2 * dim * u_acc * a
    return 2.0 * c * float(max_norm)


class TorchFlatIndex:
    """Exact inner-product candidates over vectors held as a torch tensor (see the module docstring).

    ``device``: "cpu" or "cuda[:i]"; ``dtype``: the GPU products' input precision. A CPU uses float32, except
    with ``EMULATE_ON_CPU`` (tests): a reduced ``dtype`` is then emulated (inputs rounded to it, multiplied in
    float32: the GPU's arithmetic), which checks the scaling, the ties and the bound without a GPU.
    ``query_chunk``: queries per matrix product (None: from the memory budget ``chunk_bytes``).
    """
    is_trained = True
    EMULATE_ON_CPU = False  # tests: honour a reduced dtype on a CPU (emulated; see the class docstring)

    def __init__(self, dim: int, device: str = "cpu", dtype: str = "float16", query_chunk: Optional[int] = None,
                 chunk_bytes: Optional[int] = None):
        import torch
        if dtype not in TORCH_DTYPES:
            raise ConfigError(f"index.torch_dtype must be one of {', '.join(TORCH_DTYPES)}; got {dtype!r}")
        self.d = int(dim)
        self.device = torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        self.dtype_name = dtype if self.on_gpu or self.EMULATE_ON_CPU else "float32"
        self._dtype = getattr(torch, self.dtype_name)
        self.query_chunk = query_chunk
        self.chunk_bytes = chunk_bytes or (GPU_CHUNK_BYTES if self.on_gpu else CPU_CHUNK_BYTES)
        self.ntotal = 0
        self.max_norm = 0.0
        self._host_parts: list = []
        self._xb = None          # (n, d) tensor on the device, in _dtype (scaled by 2^-_doc_exp when reduced)
        self._doc_exp = 0
        self._fp32_out = True    # reduced inputs: products summed and returned in float32 (else no bound)
        self._reduced = self.dtype_name != "float32"
        if self._reduced and self.on_gpu:
            self._fp32_out = self._probe_fp32_out()

    # ---- faiss surface -----------------------------------------------------------------------------------
    def train(self, x) -> None:  # nothing to train (faiss's Flat neither)
        return None

    def add(self, x) -> None:
        """Append rows (float32, (m, d)); rows are numbered in the order added, from 0."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ValueError(f"TorchFlatIndex.add: vectors must be (n, {self.d}), got shape {x.shape}")
        if not len(x):
            return
        self._host_parts.append(x)
        self.ntotal += len(x)
        norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
        self.max_norm = max(self.max_norm, float(norms.max()))
        self._xb = None  # rebuilt (once) at the next search

    def search(self, queries, k: int):
        """``(D, I)``: (B, k) float32 approximate scores and int64 rows, best first; -inf / -1 past ``ntotal``."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.d:
            raise ValueError(f"TorchFlatIndex.search: queries must be (B, {self.d}), got shape {q.shape}")
        b, k = q.shape[0], int(k)
        dist = np.full((b, max(k, 0)), -np.inf, np.float32)
        rows = np.full((b, max(k, 0)), -1, np.int64)
        kk = min(k, self.ntotal)
        if b == 0 or kk <= 0:
            return dist, rows
        xb = self._device_vectors()
        step = self.chunk_size()
        for a in range(0, b, step):
            s, r = self._search_chunk(xb, q[a:a + step], kk)
            dist[a:a + len(s), :kk] = s
            rows[a:a + len(s), :kk] = r
        return dist, rows

    def chunk_size(self) -> int:
        if self.query_chunk:
            return max(1, int(self.query_chunk))
        return int(max(1, min(MAX_CHUNK, self.chunk_bytes // (4 * max(1, self.ntotal)))))

    def host_vectors(self) -> Optional[np.ndarray]:
        """The (ntotal, d) float32 rows as added (the array given, when added once), or None when empty."""
        if not self._host_parts:
            return None
        if len(self._host_parts) > 1:
            self._host_parts = [np.concatenate(self._host_parts)]
        return self._host_parts[0]

    # ---- accounting and the bound ------------------------------------------------------------------------
    def device_bytes(self) -> int:
        """Bytes this index holds beyond the float32 array it was given (``add`` once, as ``IndexShard`` does):
        none on a CPU in float32 (the tensor shares that array's memory), else its copy on the device."""
        if not self.ntotal or (not self.on_gpu and not self._reduced):
            return 0
        return self.ntotal * self.d * (2 if self._reduced and self.on_gpu else 4)

    def error_bound(self) -> Optional[float]:
        """A bound on |candidate score - exact score| per unit of query norm, or None where there is none.

        float32 (every CPU, or a GPU with ``index.torch_dtype: float32``): the products are exact in float32 and
        any summation order errs by at most d·u·|q|·|v| (u = 2^-24): Flat's bound, 2·d·2^-24·max|v|. This holds
        only while torch computes float32 matrix products in full precision; with
        ``torch.set_float32_matmul_precision`` at "high" or "medium" (TF32 / bfloat16 inside) the bfloat16
        bound of ``reduced_precision_bound`` is used instead, which covers both.

        float16 / bfloat16 on a GPU: ``reduced_precision_bound`` with u = 2^-11 / 2^-8, valid because the
        products are summed and returned in float32 (``torch.mm(..., out_dtype=float32)``). Where this torch
        cannot do that, the float16 sums could be rounded at any step and no useful bound holds: None, and the
        shard rescores every candidate.
        """
        if self.ntotal == 0:
            return None
        if not self._reduced:
            import torch
            if torch.get_float32_matmul_precision() == "highest":
                return 2.0 * self.d * 2.0 ** -24 * self.max_norm
            return reduced_precision_bound(self.d, self.max_norm, *_ROUNDING["bfloat16"])
        if not self._fp32_out:
            return None
        return reduced_precision_bound(self.d, self.max_norm, *_ROUNDING[self.dtype_name])

    # ---- internals ---------------------------------------------------------------------------------------
    def _probe_fp32_out(self) -> bool:
        import torch
        a = torch.ones((2, 2), dtype=self._dtype, device=self.device)
        try:
            return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
        except (TypeError, RuntimeError, NotImplementedError):
            log.warning("torch-flat: this torch cannot sum %s products in float32; candidates get no error bound "
                        "and every one is rescored", self.dtype_name)
            return False

    def _device_vectors(self):
        import torch
        if self._xb is not None:
            return self._xb
        host = self._host_parts[0] if len(self._host_parts) == 1 else np.concatenate(self._host_parts)
        self._host_parts = [host]
        t = torch.from_numpy(host)  # shares the array's memory: on a CPU in float32 nothing is copied
        if self._reduced:
            # scale by a power of two so the largest norm lies in [1/2, 1): exact, and no float16 overflow
            self._doc_exp = math.frexp(self.max_norm)[1] if self.max_norm > 0 else 0
            t = torch.ldexp(t.to(self.device), torch.tensor(-self._doc_exp, device=self.device)).to(self._dtype)
            if not self.on_gpu:  # emulated: the rounded values, multiplied in float32
                t = t.float()
        else:
            t = t.to(self.device)
        self._xb = t
        return t

    def _scores(self, xb, q: np.ndarray):
        """(c, n) float32 scores of a query chunk, and per query the power of two they must be scaled by."""
        import torch
        qt = torch.from_numpy(q).to(self.device)
        if not self._reduced:
            return torch.mm(qt, xb.T), None
        # per query a power of two putting |q| in [1/2, 1): exact, so the bound is relative to |q|
        norms = torch.linalg.vector_norm(qt, dim=1)
        exp = torch.frexp(norms).exponent
        qs = torch.ldexp(qt, -exp[:, None]).to(self._dtype)
        if not self.on_gpu:
            s = torch.mm(qs.float(), xb.T)
        elif self._fp32_out:
            s = torch.mm(qs, xb.T, out_dtype=torch.float32)
        else:
            s = torch.mm(qs, xb.T).float()
        return s, exp + self._doc_exp

    def _search_chunk(self, xb, q: np.ndarray, kk: int):
        import torch
        s, exp = self._scores(xb, q)
        vals, idx = torch.topk(s, kk, dim=1, largest=True, sorted=False)
        thr = vals.min(dim=1).values
        # ties at the k-th score: torch.topk picks any of them; take the lowest rows, as faiss does
        tie = (s >= thr[:, None]).sum(dim=1) > kk
        if bool(tie.any()):
            tie_rows = torch.nonzero(tie).squeeze(1)
            sub = max(1, int(self.chunk_bytes // (8 * s.shape[1])))  # bool masks + int32 cumsum per row
            for a in range(0, len(tie_rows), sub):
                r = tie_rows[a:a + sub]
                sr, t = s[r], thr[r][:, None]
                gt = sr > t
                need = kk - gt.sum(dim=1, dtype=torch.int32)
                eq = sr == t
                take = gt | (eq & (torch.cumsum(eq, dim=1, dtype=torch.int32) <= need[:, None]))
                cols = torch.nonzero(take)[:, 1].view(len(r), kk)  # row-major: columns ascending per row
                idx[r] = cols
                vals[r] = torch.gather(sr, 1, cols)
        # best first, ties by row: sort by row, then a stable sort by score
        idx, perm = torch.sort(idx, dim=1)
        vals = torch.gather(vals, 1, perm)
        vals, perm = torch.sort(vals, dim=1, descending=True, stable=True)
        idx = torch.gather(idx, 1, perm)
        if exp is not None:
            vals = torch.ldexp(vals, exp[:, None].to(vals.dtype))
        return vals.cpu().numpy().astype(np.float32, copy=False), idx.cpu().numpy().astype(np.int64, copy=False)
