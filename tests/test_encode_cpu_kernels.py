"""oneDNN linear layers (encode/cpu_kernels.py): same outputs as the stock layers, fallbacks, and the real model."""
import numpy as np
import pytest
import torch

from streammine.encode import cpu_kernels
from streammine.encode.cpu_kernels import accelerate_linears, onednn_linear_available

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="this PyTorch build has no oneDNN linear op")


class BertIntermediate(torch.nn.Module):
    """Named like Hugging Face's block (dense, then an exact GELU), so its activation is fused."""

    def __init__(self, d, h):
        super().__init__()
        self.dense = torch.nn.Linear(d, h)
        self.intermediate_act_fn = torch.nn.GELU()

    def forward(self, x):
        return self.intermediate_act_fn(self.dense(x))


class OtherBlock(BertIntermediate):
    """Same layers, another name and forward: its GELU must stay where it is."""

    def forward(self, x):
        return self.intermediate_act_fn(self.dense(x)) * 2.0


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(24, 48), BertIntermediate(48, 96), OtherBlock(96, 32),
                               torch.nn.Linear(32, 8, bias=False), torch.nn.Sequential(torch.nn.Linear(8, 8)))


def _close(a, b, tol=1e-5):
    return torch.allclose(a, b, rtol=1e-4, atol=tol)


@needs_onednn
@pytest.mark.parametrize("shape", [(5, 24), (3, 4, 24), (1, 1, 24)])
def test_accelerated_model_matches_the_stock_one(shape):
    stock, fast = _model(), _model()
    assert accelerate_linears(fast) == 5
    x = torch.randn(*shape)
    with torch.inference_mode():
        want, got = stock(x), fast(x)
    assert got.shape == want.shape and _close(got, want)
    assert type(fast[0]).__name__ == "OneDnnLinear"
    assert fast[1].dense.activation == "gelu" and isinstance(fast[1].intermediate_act_fn, torch.nn.Identity)
    assert fast[2].dense.activation == "none" and isinstance(fast[2].intermediate_act_fn, torch.nn.GELU)


@needs_onednn
def test_empty_inputs_pass_and_what_oneDNN_is_not_given_is_refused():
    fast = _model()
    accelerate_linears(fast)
    layer = fast[1].dense
    assert layer(torch.zeros(0, 48)).shape == (0, 96)
    for x in (torch.randn(2, 48, dtype=torch.float64), torch.randn(2, 48, requires_grad=True)):
        with pytest.raises(RuntimeError, match="float32 CPU inference only"):
            layer(x)
    assert not any(n.endswith(".weight") for n, _ in fast[1].named_buffers())  # no second, plain copy


def test_a_missing_op_or_a_disagreement_leaves_the_model_as_it_was(monkeypatch):
    x = torch.randn(2, 24)
    with torch.inference_mode():
        want = _model()(x)
    for patch in ("onednn_linear_available", "_agrees"):
        model = _model()
        with monkeypatch.context() as m:
            m.setattr(cpu_kernels, patch, lambda *a: False)
            assert accelerate_linears(model) == 0
        assert not any(type(mod).__name__ == "OneDnnLinear" for mod in model.modules())
        assert isinstance(model[1].intermediate_act_fn, torch.nn.GELU)
        with torch.inference_mode():
            assert torch.equal(model(x), want)


@needs_onednn
def test_the_packaged_encoder_gives_the_stock_vectors():
    from streammine.config import EncoderConfig
    from streammine.encode.sentence_transformer import SentenceTransformerEncoder
    texts = ["Aspirin lowers the risk of a second heart attack.", "short", "", "x " * 400,
             "Vitamin D deficiency is associated with an increased risk of fractures in older adults."]
    stock = SentenceTransformerEncoder(EncoderConfig(cpu_onednn=False, precision="float32"), device="cpu", torch_threads=1)
    fast = SentenceTransformerEncoder(EncoderConfig(precision="float32"), device="cpu", torch_threads=1)
    assert stock.onednn_layers == 0 and fast.onednn_layers == 37  # 6 layers x 6 + the pooler
    a, b = stock.encode_documents(texts), fast.encode_documents(texts)
    assert a.shape == b.shape == (5, 384)
    assert np.abs(a - b).max() < 1e-5


@needs_onednn
def test_bfloat16_layers_match_the_stock_layers_under_autocast():
    """accelerate_linears(dtype=bfloat16), as bf16-autocast uses it: bfloat16 weights packed once, a bfloat16
    result like a stock layer's under autocast, within bfloat16's rounding of it; a float64 input is refused."""
    stock, fast = _model(), _model()
    assert accelerate_linears(fast, torch.bfloat16) == 5
    x = torch.randn(4, 24, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = stock(x), fast(x)
    assert got.dtype == want.dtype == torch.bfloat16
    assert torch.allclose(got.float(), want.float(), rtol=2e-2, atol=2e-2)
    assert fast[1].dense(torch.zeros(0, 48)).shape == (0, 96)
    with pytest.raises(RuntimeError, match="bfloat16 .* CPU inference only"):
        fast[1].dense(torch.randn(2, 48, dtype=torch.float64))
