"""Faster fp32 inference on a CPU: the encoder's linear layers through oneDNN with pre-packed weights.

PyTorch runs an fp32 ``nn.Linear`` on a CPU through its BLAS (MKL in the official wheels); oneDNN, which PyTorch
also ships, multiplies the same fp32 numbers with weights reordered once into its blocked layout, and can apply
an exact (erf) GELU inside the same kernel: about half the time of the stock layers for MiniLM on an AVX-512
CPU (figures in the README), with vectors within 2e-7 of the stock ones (the size of the differences a different
batch composition makes). Nothing changes on a GPU or in a model cast to float16 / bfloat16.

Under ``encoder.precision: bf16-autocast`` the same layers run in bfloat16 (``accelerate_linears(model,
torch.bfloat16)``): the weights packed in bfloat16 once instead of cast by autocast at every call, the GELU still
fused; on an AVX512_BF16/AMX CPU the fastest bf16-autocast path, with the same vectors as the stock layers under
autocast to within bfloat16's rounding (encode/precision.py has the figures).

The op used (``torch.ops.mkldnn._linear_pointwise``, the one torch.compile's CPU backend emits) is not a public
API: every replaced layer is checked against the layer it replaces on a random input, and a build of PyTorch
without it, or one whose results differ, keeps the stock layers (``accelerate_linears`` returns 0).
"""
from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

# Blocks whose forward is exactly ``intermediate_act_fn(dense(x))`` (Hugging Face BERT-style encoders): with an
# exact GELU the activation runs inside the matrix product. Any other module keeps its own activation.
_GELU_BLOCKS = ("BertIntermediate", "RobertaIntermediate", "XLMRobertaIntermediate", "MPNetIntermediate",
                "ElectraIntermediate", "DistilBertIntermediate", "CamembertIntermediate")

# The replaced layers' self-check: |oneDNN - stock| <= ATOL + RTOL·|stock| on a random input.
_RTOL, _ATOL = 1e-4, 1e-5
_BF16_TOL = 2e-2   # bfloat16 layers: a bfloat16 result holds 8 significant bits


def onednn_linear_available() -> bool:
    import torch
    return bool(torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
                and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def _is_exact_gelu(act) -> bool:
    import torch
    if isinstance(act, torch.nn.GELU):
        return act.approximate == "none"
    # transformers.activations.GELUActivation wraps torch's exact gelu unless told to use a Python version
    return type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is torch.nn.functional.gelu


@functools.lru_cache(maxsize=1)
def _make_linear_class():
    """The layer class, defined on first use so that importing this module does not import torch."""
    import torch

    class OneDnnLinear(torch.nn.Module):
        """``activation(x @ W.T + b)`` for CPU inference through oneDNN, in ``dtype``: float32, or bfloat16 (the
        weight packed in bfloat16 once, a float32 or bfloat16 input cast to bfloat16, a bfloat16 result: what a
        stock layer does under ``torch.autocast(dtype=bfloat16)``, without casting the weight at every call).

        Only the packed weight is kept (a second, plain copy would double the layers' memory), so this layer
        does inference on CPU tensors and nothing else: training or moving the model needs the stock
        layers (``encoder.cpu_onednn: false``).
        """

        def __init__(self, linear: torch.nn.Linear, activation: str = "none", dtype=torch.float32):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.activation, self.dtype = activation, dtype
            weight = linear.weight.detach().to(dtype).contiguous()
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(dtype).clone())
            self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, None))

        def forward(self, x):
            allowed = (torch.float32,) if self.dtype == torch.float32 else (torch.float32, self.dtype)
            if x.dtype not in allowed or x.device.type != "cpu" or x.requires_grad:
                what = "float32" if self.dtype == torch.float32 else "bfloat16 (float32 or bfloat16 input)"
                raise RuntimeError(f"OneDnnLinear does {what} CPU inference only; got a {x.dtype} tensor on "
                                   f"{x.device} (requires_grad={x.requires_grad}); load the model with "
                                   "encoder.cpu_onednn: false for anything else")
            x = x.to(self.dtype)
            if x.numel() == 0:
                return x.new_zeros(*x.shape[:-1], self.out_features)
            if self.activation == "gelu":
                return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed_weight, self.bias, "gelu", [],
                                                          "none")
            return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed_weight, self.bias, "none", [], "")

        def extra_repr(self) -> str:
            return (f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}, "
                    f"dtype={self.dtype}")

    return OneDnnLinear


def _agrees(new, old, in_features: int, dtype) -> bool:
    """``new`` against the stock ``old`` on a random input: float32 to ``_RTOL``/``_ATOL``; bfloat16 against the
    stock layer under autocast, to ``_BF16_TOL`` (both round the same inputs to bfloat16; the sums may differ in
    order)."""
    import contextlib
    import torch
    x = torch.randn(3, 7, in_features, generator=torch.Generator().manual_seed(0))
    bf16 = dtype != torch.float32
    with torch.inference_mode(), (torch.autocast("cpu", dtype=dtype) if bf16 else contextlib.nullcontext()):
        want, got = old(x).float(), new(x).float()
    rtol, atol = (_BF16_TOL, _BF16_TOL) if bf16 else (_RTOL, _ATOL)
    return got.shape == want.shape and bool(torch.all((got - want).abs() <= atol + rtol * want.abs()))


def accelerate_linears(model, dtype=None) -> int:
    """Replace, in place, the fp32 CPU ``nn.Linear`` layers of an inference-only ``model`` by oneDNN ones (and
    fuse an exact GELU that directly follows one in a BERT-style intermediate block). Returns how many layers were
    replaced: 0 where the op is missing or a replaced layer disagrees with the original (the model is then left
    exactly as it was). ``dtype``: the layers' arithmetic, float32 (the default) or bfloat16 (for a model run
    under bf16 autocast, encode/precision.py: the weights packed in bfloat16 once)."""
    import torch
    dtype = dtype or torch.float32
    if not onednn_linear_available():
        return 0
    try:
        linear_class = _make_linear_class()
        plan = []  # (parent, attribute, replacement, module to check it against, input width), then GELU removals
        for parent in model.modules():
            fused = (type(parent).__name__ in _GELU_BLOCKS and isinstance(getattr(parent, "dense", None),
                                                                         torch.nn.Linear)
                     and _is_exact_gelu(getattr(parent, "intermediate_act_fn", None)))
            for name, child in parent.named_children():
                if not isinstance(child, torch.nn.Linear) or child.weight.dtype != torch.float32 \
                        or child.weight.device.type != "cpu":
                    continue
                if fused and name == "dense":
                    reference = torch.nn.Sequential(child, parent.intermediate_act_fn)
                    plan.append((parent, name, linear_class(child, "gelu", dtype), reference, child.in_features))
                else:
                    plan.append((parent, name, linear_class(child, dtype=dtype), child, child.in_features))
        for _, _, new, reference, width in plan:
            if not _agrees(new, reference, width, dtype):
                log.warning("oneDNN linear layers disagree with PyTorch's here; keeping the stock layers")
                return 0
    except (RuntimeError, TypeError, AttributeError) as e:  # an op that exists but is not usable in this build
        log.warning("oneDNN linear layers unavailable (%s); keeping the stock layers", e)
        return 0
    for parent, name, new, _, _ in plan:
        setattr(parent, name, new)
        if new.activation == "gelu":
            parent.intermediate_act_fn = torch.nn.Identity()
    return len(plan)
