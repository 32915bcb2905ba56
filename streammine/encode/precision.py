"""``encoder.precision``: what each setting runs, and what ``auto`` resolves to where the encoders run.

- ``float32``: float32 weights and arithmetic (on a CPU through oneDNN's float32 kernels, ``encode/cpu_kernels.py``,
  unless ``encoder.cpu_onednn: false``).
- ``bf16-autocast``: float32 weights; the matrix products (linear layers, attention) in bfloat16 under
  ``torch.autocast``, layer norms, softmax and the pooling in float32. Both sides, the documents and the queries,
  run under it (``SentenceTransformerEncoder._forward``). On a CPU the linear layers run through oneDNN with
  bfloat16 weights packed once (``cpu_kernels.accelerate_linears(dtype=bfloat16)``): what autocast does at every
  call (cast the float32 weight to bfloat16) done once, plus the fused GELU. The cross-encoder
  (``mining.cross_encoder``) stays float32 in every mode: its scores meet a threshold.
- ``float16`` / ``bfloat16``: the whole model cast (weights and activations), as ``encoder.fp16: true`` / ``bf16``
  did.
- ``auto``: ``float16`` on a GPU; ``float32`` on a CPU. With ``AUTO_CPU_AUTOCAST`` (off, see there):
  ``bf16-autocast`` on a CPU with bfloat16 instructions (AVX512_BF16 or AMX-BF16, from the CPU's flags:
  ``cpu_has_bf16``).

Measured (``benchmarks/precision.py``, ``benchmarks/results/precision.json``; 300 SciFact abstracts, one thread, a
shared 2-core Xeon with AVX512_BF16 and AMX-BF16; docs per CPU-second, wall time within 5 % of it): float32 17.2
(stock layers) / 19.6 (oneDNN); bf16-autocast 44.1 with the stock layers under autocast, 48.8 with the oneDNN
bfloat16 layers, min cosine to float32 0.99997 either way (every document above 0.9999); bfloat16 (whole model)
54.8, min cosine 0.99992 here (0.9964 on an AMD EPYC without AMX). The oneDNN bfloat16 layers are the faster bf16-autocast path and give the same
vectors whether or not autocast is on (they cast their input themselves, and the attention then gets bfloat16
inputs): autocast still wraps the forward for whatever is not replaced, such as a model whose layers oneDNN
cannot take (those keep the stock layers, which autocast runs in bfloat16). The vectors are float32 in every mode.

The embedding store's key holds the resolved precision (``index/store_naming.py``), so a store written under one
precision is never read by a run under another. A run resolves ``auto`` once, on the driver
(``planned_precision``), and its encoders run that value, so every actor of a run encodes alike.
"""
from __future__ import annotations

import functools
from typing import Optional

AUTOCAST = "bf16-autocast"
# ``auto`` on a CPU with bfloat16 instructions: bf16-autocast when True. False for now: every vector is within
# cosine 0.9999 of float32's (300 SciFact abstracts: min 0.99997), but a query-document score moves by up to
# ~2e-3 (20 queries x 300 abstracts: max 2.1e-3, median 3.3e-4), beyond the 2e-5 to 2e-4 the compatibility and
# pipeline tests hold streammine to against float32 sentence-transformers, and a config's output would depend on
# the CPU it ran on (the config hash does not hold the precision). Ask for bf16-autocast by name; flipping this
# flips the default (and those tests then need encoder.precision: float32).
AUTO_CPU_AUTOCAST = False
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bfloat16 dot-product instructions


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> Optional[set]:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this machine's CPU has bfloat16 instructions: the CPU's own flags (Linux), else what torch reports
    where its build says (``torch._C._cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``); False when
    neither can tell. Detected, never guessed from the CPU's name."""
    flags = _cpuinfo_flags()
    if flags is not None:
        return any(f in flags for f in BF16_FLAGS)
    try:
        import torch
        cpu = getattr(torch._C, "_cpu", None)
        return any(bool(getattr(cpu, name)()) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
                   if hasattr(cpu, name))
    except Exception:  # noqa: BLE001 - no torch, or a build without these probes: not detected
        return False


def resolve_precision(precision: str, device: str) -> str:
    """``precision`` as run on ``device`` ("cpu", "cuda", "cuda:1", ...): ``auto`` resolved, anything else as given."""
    p = str(precision).lower()
    if p != "auto":
        return p
    if device.startswith("cuda"):
        return "float16"
    if device.startswith("cpu") and AUTO_CPU_AUTOCAST and cpu_has_bf16():
        return AUTOCAST
    return "float32"


def planned_precision(e, on_gpu: Optional[bool] = None) -> str:
    """The precision a run's encoders run (``e``: the EncoderConfig): ``auto`` resolved for a GPU when ``on_gpu``,
    for this machine's CPU otherwise. ``on_gpu`` None (before the encoder plan exists: the store key): a GPU when
    ``encoder.gpus_per_actor`` > 0, or when it is unset and this machine sees one (on a cluster whose driver sees
    no GPU but whose workers have one, set ``encoder.precision`` or ``gpus_per_actor``)."""
    if str(e.precision).lower() != "auto":
        return str(e.precision).lower()
    if on_gpu is None:
        if e.gpus_per_actor is not None:
            on_gpu = e.gpus_per_actor > 0
        else:
            from ..device import pick_device
            on_gpu = pick_device().startswith("cuda")
    return resolve_precision("auto", "cuda" if on_gpu else "cpu")


def pin_precision(cfg):
    """``cfg`` (a MineConfig) with ``encoder.precision`` resolved once, here (``planned_precision``): every encoder
    of the run, on whichever machine, then runs what the store's key says. A precomputed run is left as it is."""
    import dataclasses
    if cfg.encoder.kind != "sentence-transformers":
        return cfg
    return dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, precision=planned_precision(cfg.encoder)))
