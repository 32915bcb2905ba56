"""encoder.precision (encode/precision.py): what auto resolves to, the CPU detection, the store key, the old key's
error, and bf16-autocast's vectors (close to float32's, the same precision on the query and the document side)."""
import numpy as np
import pytest

import streammine
from streammine.config import PRECISIONS, EncoderConfig, MineConfig
from streammine.encode import precision as prec
from streammine.errors import ConfigError
from streammine.index.store_naming import model_key, query_cache_key, store_key

SENTENCES = ["Aspirin lowers the risk of a second heart attack in patients with coronary disease.",
             "Vitamin D deficiency is associated with an increased risk of fractures in older adults.",
             "The BRCA1 gene is involved in DNA repair, and mutations raise breast cancer risk.",
             "short", "Microglia prune synapses during the development of the mouse visual cortex."]


def _cfg(tmp_path, **more):
    return streammine.load_config(overrides=dict({"input.path": streammine.demo_data_path(),
                                                  "output.path": str(tmp_path / "out"),
                                                  "run.cache_dir": str(tmp_path / "cache")}, **more))


# ---- resolution and detection ---------------------------------------------------------------------------------

def test_auto_resolves_by_device_and_cpu(monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(prec, "AUTO_CPU_AUTOCAST", True)
    assert prec.resolve_precision("auto", "cpu") == "float32"      # no bfloat16 instructions
    assert prec.resolve_precision("auto", "cuda") == prec.resolve_precision("auto", "cuda:1") == "float16"
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: True)
    assert prec.resolve_precision("auto", "cpu") == "bf16-autocast"
    assert prec.resolve_precision("auto", "cuda") == "float16"
    monkeypatch.setattr(prec, "AUTO_CPU_AUTOCAST", False)          # the shipped default: float32 on every CPU
    assert prec.resolve_precision("auto", "cpu") == "float32"
    for p in PRECISIONS[1:]:                                        # a named precision is kept on any device
        assert prec.resolve_precision(p, "cpu") == prec.resolve_precision(p, "cuda") == p


def test_the_cpu_flags_decide_bf16(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert "avx512_bf16" in prec._cpuinfo_flags(str(info))
    assert prec._cpuinfo_flags(str(tmp_path / "missing")) is None
    detect = prec.cpu_has_bf16.__wrapped__
    for flags, want in [({"avx512f", "avx2"}, False), ({"avx512_bf16"}, True), ({"amx_bf16", "amx_tile"}, True)]:
        monkeypatch.setattr(prec, "_cpuinfo_flags", lambda flags=flags: flags)
        assert detect() is want


def test_planned_precision_guesses_the_gpu_from_the_config(monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(prec, "AUTO_CPU_AUTOCAST", True)
    assert prec.planned_precision(EncoderConfig(gpus_per_actor=1.0)) == "float16"
    assert prec.planned_precision(EncoderConfig(gpus_per_actor=0.0)) == "bf16-autocast"
    assert prec.planned_precision(EncoderConfig(), on_gpu=False) == "bf16-autocast"
    assert prec.planned_precision(EncoderConfig(precision="float32"), on_gpu=True) == "float32"


# ---- the store key and the config -----------------------------------------------------------------------------

def test_the_store_key_holds_the_resolved_precision(tmp_path, monkeypatch):
    monkeypatch.setattr(prec, "AUTO_CPU_AUTOCAST", True)
    f32 = _cfg(tmp_path, **{"encoder.precision": "float32"})
    ac = _cfg(tmp_path, **{"encoder.precision": "bf16-autocast"})
    for key in (store_key, model_key, query_cache_key):
        assert key(f32) != key(ac)
    auto = _cfg(tmp_path, **{"encoder.gpus_per_actor": 0.0})
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: False)
    assert store_key(auto) == store_key(_cfg(tmp_path, **{"encoder.precision": "float32",
                                                         "encoder.gpus_per_actor": 0.0}))
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: True)
    assert store_key(auto) == store_key(_cfg(tmp_path, **{"encoder.precision": "bf16-autocast",
                                                         "encoder.gpus_per_actor": 0.0}))
    # a run resolves auto once, and its encoders get the resolved value (what the key says)
    assert prec.pin_precision(auto).encoder.precision == "bf16-autocast"
    assert auto.encoder.precision == "auto" and f32.config_hash() == ac.config_hash()  # outputs' hash: unchanged


def test_the_old_fp16_key_names_its_replacement(tmp_path):
    for bad in ({"encoder.fp16": "true"}, {"encoder.fp16": "auto"}):
        with pytest.raises(ConfigError, match="encoder.fp16 is replaced by encoder.precision.*float16.*bfloat16"):
            _cfg(tmp_path, **bad)
    with pytest.raises(ConfigError, match="encoder.precision"):
        MineConfig.from_dict({"input": {"path": "x"}, "encoder": {"fp16": "bf16"}})
    with pytest.raises(ConfigError, match="encoder.precision must be one of auto, float32, bf16-autocast"):
        _cfg(tmp_path, **{"encoder.precision": "fp16"})
    assert _cfg(tmp_path).encoder.precision == "auto"


# ---- the vectors ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def float32_vectors():
    from streammine.encode.sentence_transformer import SentenceTransformerEncoder
    enc = SentenceTransformerEncoder(EncoderConfig(precision="float32"), device="cpu", torch_threads=1)
    return enc.encode_documents(SENTENCES)


@pytest.fixture(scope="module", params=[True, False], ids=["onednn", "stock-layers"])
def autocast_encoder(request):
    from streammine.encode.sentence_transformer import SentenceTransformerEncoder
    return SentenceTransformerEncoder(EncoderConfig(precision="bf16-autocast", cpu_onednn=request.param),
                                      device="cpu", torch_threads=1)


def test_bf16_autocast_vectors_are_within_cosine_0_9999_of_float32(autocast_encoder, float32_vectors):
    import torch
    assert next(autocast_encoder.model.parameters()).dtype == torch.float32   # float32 weights
    v = autocast_encoder.encode_documents(SENTENCES)
    assert v.dtype == np.float32 and np.isfinite(v).all()
    cos = (v * float32_vectors).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(float32_vectors, axis=1)
    assert cos.min() >= 0.9999
    assert np.abs(v - float32_vectors).max() > 1e-5   # bfloat16 products really ran (not float32 again)


def test_queries_and_documents_run_under_the_same_precision(autocast_encoder):
    """Both sides under the same autocast: the same text (no prompts) gives the same vector as a query and as a
    document. A query side left in float32 differs by bfloat16's rounding (~1e-3), far beyond 1e-6."""
    import torch
    seen = {}

    def record(side):
        def hook(module, args):
            seen.setdefault(side, set()).add(torch.is_autocast_enabled("cpu"))
        return hook
    first = autocast_encoder.model[0]
    handle = first.register_forward_pre_hook(record("query"))
    q = autocast_encoder.encode_queries(SENTENCES)
    handle.remove()
    handle = first.register_forward_pre_hook(record("document"))
    d = autocast_encoder.encode_documents(SENTENCES)
    handle.remove()
    assert seen == {"query": {True}, "document": {True}}
    assert np.abs(q - d).max() < 1e-6


# ---- what a run records ---------------------------------------------------------------------------------------

def test_the_summary_and_the_store_say_which_precision_ran(tmp_path):
    import json
    from streammine.index.store import read_manifest
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(SENTENCES + ["Statins lower LDL."])]
    (data / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": "q0", "text": "does aspirin prevent heart attacks"}, {"_id": "q1", "text": "vitamin D bones"}]
    (data / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n")
    result = streammine.mine(overrides={"input.path": str(data), "output.path": str(tmp_path / "out"),
                                        "run.cache_dir": str(tmp_path / "cache"), "run.executor": "in-process",
                                        "encoder.precision": "bf16-autocast", "mining.sampler.num_negatives": 2,
                                        "run.progress": False})
    assert result.summary["encoder"] == {"precision": "bf16-autocast"}
    store = tmp_path / "cache" / "embeddings"
    manifests = [read_manifest(str(p)) for p in store.iterdir()]
    assert [m["precision"] for m in manifests] == ["bf16-autocast"]
