"""Faster fp32 inference on a CPU: the encoder's linear layers through oneDNN with pre-packed weights.

PyTorch runs an fp32 ``nn.Linear`` on a CPU through its BLAS (MKL in the official wheels); oneDNN, which PyTorch
also ships, multiplies the same fp32 numbers with weights reordered once into its blocked layout, and can apply
an exact (erf) GELU inside the same kernel: about half the time of the stock layers for MiniLM on an AVX-512
CPU (figures in the README), with vectors within 2e-7 of the stock ones (the size of the differences a different
batch composition makes). Nothing changes on a GPU or in fp16.

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
        """``activation(x @ W.T + b)`` for float32 CPU inference through oneDNN.

        Only the packed weight is kept (a second, plain copy would double the layers' memory), so this layer
        does inference on float32 CPU tensors and nothing else: training or moving the model needs the stock
        layers (``encoder.cpu_onednn: false``).
        """

        def __init__(self, linear: torch.nn.Linear, activation: str = "none"):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.activation = activation
            weight = linear.weight.detach().contiguous()
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
            self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, None))

        def forward(self, x):
            if x.dtype != torch.float32 or x.device.type != "cpu" or x.requires_grad:
                raise RuntimeError(f"OneDnnLinear does float32 CPU inference only; got a {x.dtype} tensor on "
                                   f"{x.device} (requires_grad={x.requires_grad}); load the model with "
                                   "encoder.cpu_onednn: false for anything else")
            if x.numel() == 0:
                return x.new_zeros(*x.shape[:-1], self.out_features)
            if self.activation == "gelu":
                return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed_weight, self.bias, "gelu", [],
                                                          "none")
            return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed_weight, self.bias, "none", [], "")

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"

    return OneDnnLinear


def _agrees(new, old, in_features: int) -> bool:
    import torch
    x = torch.randn(3, 7, in_features, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, got = old(x), new(x)
    return got.shape == want.shape and bool(torch.all((got - want).abs() <= _ATOL + _RTOL * want.abs()))


def accelerate_linears(model) -> int:
    """Replace, in place, the fp32 CPU ``nn.Linear`` layers of an inference-only ``model`` by oneDNN ones (and
    fuse an exact GELU that directly follows one in a BERT-style intermediate block). Returns how many layers were
    replaced: 0 where the op is missing or a replaced layer disagrees with the original (the model is then left
    exactly as it was)."""
    import torch
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
                    plan.append((parent, name, linear_class(child, "gelu"), reference, child.in_features))
                else:
                    plan.append((parent, name, linear_class(child), child, child.in_features))
        for _, _, new, reference, width in plan:
            if not _agrees(new, reference, width):
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
