"""The GPU pieces without Ray, in one process: the torch-flat shard kind, the encoder's device and precision, and
the mining of a block. Each test runs on the CPU (so CI exercises the same code) and on CUDA where there is one;
a reduced precision on the CPU is emulated (TorchFlatIndex.EMULATE_ON_CPU): the GPU's arithmetic, checked here.
"""
from __future__ import annotations

import numpy as np
import pytest

from streammine.config import FilterConfig, IndexConfig, MiningConfig, SamplerConfig
from streammine.errors import ConfigError
from streammine.index import factory, kinds
from streammine.index.local import LocalShardedIndex, mine_block
from streammine.index.merge import merge_topk, rescore_floor
from streammine.index.shard import ShardDocs
from streammine.index.torch_flat import TorchFlatIndex, cuda_available
from streammine.keys import keys64

CUDA = cuda_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device"))]


# ---- helpers (independent of the code under test: float64 brute force) -----------------------------------

def corpus(n, d, seed=0, quantized=False, spread_norms=False, clusters=None):
    rng = np.random.default_rng(seed)
    if quantized:  # multiples of 1/4: every product sums exactly, in any order and in float16 (ties stay ties)
        v = rng.integers(-3, 4, (n, d)) / 4
    elif clusters:
        centers = rng.normal(size=(clusters, d))
        v = centers[rng.integers(0, clusters, n)] + 0.02 * rng.normal(size=(n, d))
    else:
        v = rng.normal(size=(n, d))
    if spread_norms:
        v = v * rng.uniform(0.01, 300, (n, 1))
    return ShardDocs(np.array([f"d{i}" for i in range(n)], object), np.arange(n),
                     keys64([f"text {i}" for i in range(n)]), v.astype(np.float32),
                     np.array([f"corpus.jsonl:{i + 1}" for i in range(n)], object))


def reference_topk(queries, docs, k):
    s = (queries.astype(np.float64) @ docs.vectors.astype(np.float64).T).astype(np.float32)
    ords = np.broadcast_to(docs.ordinals, s.shape)
    order = np.lexsort((ords, -s), axis=-1)[:, :k]
    return np.take_along_axis(ords, order, 1), np.take_along_axis(s, order, 1)


@pytest.fixture
def torch_kind(request, monkeypatch):
    """(device, dtype): torch-flat shards built on that device; a reduced dtype on the CPU is emulated."""
    device, dtype = request.param
    if device == "cuda" and not CUDA:
        pytest.skip("no CUDA device")
    monkeypatch.setattr(TorchFlatIndex, "EMULATE_ON_CPU", True)
    monkeypatch.setattr(kinds, "torch_flat_device", lambda cfg: device)
    return device, dtype


KINDS = [(d, t) for d in ("cpu", "cuda") for t in ("float32", "float16", "bfloat16")]


def build(docs, n_shards, dtype, chunk=None, oversample=16):
    cfg = IndexConfig(kind="torch-flat", shards=n_shards, torch_dtype=dtype, oversample=oversample)
    index = LocalShardedIndex.build(cfg, docs)
    for s in index.shards:
        if s.index is not None:
            s.index.query_chunk = chunk
    return index


def search_all(index, queries, k):
    return merge_topk([s.search(queries, k) for s in index.shards], k)


# ---- torch-flat against brute force ----------------------------------------------------------------------

@pytest.mark.parametrize("torch_kind", KINDS, indirect=True, ids=lambda p: "-".join(p))
@pytest.mark.parametrize("n_shards,chunk", [(1, None), (2, 7), (3, 1), (4, 30)])
def test_torch_flat_matches_brute_force(torch_kind, n_shards, chunk):
    docs = corpus(2000, 32, seed=1, spread_norms=True)
    queries = (np.random.default_rng(2).normal(size=(30, 32)) * 3).astype(np.float32)
    k = 25
    index = build(docs, n_shards, torch_kind[1], chunk)
    assert all(s.index.on_gpu == (torch_kind[0] == "cuda") for s in index.shards)
    ref_ords, ref_scores = reference_topk(queries, docs, k)
    for got in (search_all(index, queries, k), index.answer(queries, k, [[]] * 30)[0]):  # full and pruned
        np.testing.assert_array_equal(got.ordinals, ref_ords)
        np.testing.assert_array_equal(got.scores, ref_scores)
        np.testing.assert_array_equal(got.doc_ids, docs.doc_ids[ref_ords])


@pytest.mark.parametrize("torch_kind", KINDS, indirect=True, ids=lambda p: "-".join(p))
@pytest.mark.parametrize("n_shards,chunk", [(1, 5), (2, None), (4, 3)])
def test_torch_flat_exact_ties_by_ordinal(torch_kind, n_shards, chunk):
    docs = corpus(1500, 16, seed=3, quantized=True)
    src = np.array([5, 5, 5, 77, 77, 400, 1200, 1499])
    dst = np.array([900, 20, 1300, 3, 1100, 401, 0, 750])
    docs.vectors[dst] = docs.vectors[src]
    queries = np.vstack([docs.vectors[[5, 77, 400, 1200]],
                         np.random.default_rng(4).integers(-3, 4, (12, 16)) / 4]).astype(np.float32)
    k = 30
    # oversample 0: the ties at the k-th candidate must be resolved by the index itself (lowest rows first)
    for oversample in (0, 16):
        index = build(docs, n_shards, torch_kind[1], chunk, oversample=oversample)
        got = search_all(index, queries, k)
        ref_ords, ref_scores = reference_topk(queries, docs, k)
        np.testing.assert_array_equal(got.ordinals, ref_ords)
        np.testing.assert_array_equal(got.scores, ref_scores)
        first = got.ordinals[0][got.scores[0] == got.scores[0, 0]]
        assert list(first) == sorted(first) and {5, 20, 900, 1300} <= set(first)


@pytest.mark.parametrize("device", DEVICES)
def test_index_search_surface_and_chunking(device):
    """search(q, k) -> (D, I) like faiss: best first, ties by row, -inf/-1 past ntotal; any chunk size, including
    one set by the memory budget, gives the same answer."""
    rng = np.random.default_rng(5)
    x = (rng.integers(-2, 3, (500, 8)) / 2).astype(np.float32)
    q = (rng.integers(-2, 3, (23, 8)) / 2).astype(np.float32)
    exact = q.astype(np.float64) @ x.astype(np.float64).T
    rows = np.broadcast_to(np.arange(500), exact.shape)
    ref = np.lexsort((rows, -exact), axis=-1)
    answers = []
    for chunk, budget in ((None, None), (1, None), (4, None), (23, None), (None, 4 * 500 * 6)):
        ix = TorchFlatIndex(8, device=device, dtype="float32", query_chunk=chunk, chunk_bytes=budget)
        ix.add(x[:200])
        ix.add(x[200:])  # rows numbered in the order added
        if budget:
            assert ix.chunk_size() == 6
        d, i = ix.search(q, 510)
        np.testing.assert_array_equal(i[:, :500], ref)
        np.testing.assert_array_equal(d[:, :500], np.take_along_axis(exact, ref, 1).astype(np.float32))
        assert (i[:, 500:] == -1).all() and np.isneginf(d[:, 500:]).all()
        answers.append(ix.search(q, 17))
    for d, i in answers[1:]:
        np.testing.assert_array_equal(i, answers[0][1])
    empty = TorchFlatIndex(8, device=device)
    d, i = empty.search(q, 3)
    assert (i == -1).all() and np.isneginf(d).all() and empty.error_bound() is None


@pytest.mark.parametrize("torch_kind", KINDS, indirect=True, ids=lambda p: "-".join(p))
def test_error_bound_holds_and_pruning_is_exact(torch_kind):
    """Every candidate's score is within bound·|q| of the exact one (norms over four decades), and the pruned
    two-round search, which trusts that bound, gives the same top k as rescoring everything."""
    docs = corpus(3000, 48, seed=8, spread_norms=True)
    queries = (np.random.default_rng(9).normal(size=(30, 48)) * np.array([1e-3, 1, 50])[np.arange(30) % 3, None])
    for scale in (1.0, 1e4):  # 1e4: components far past float16's range (65504), unless scaled first
        docs.vectors *= np.float32(scale)
        q = (queries * scale).astype(np.float32)
        index = build(docs, 1, torch_kind[1])
        d, i = index.shards[0].index.search(q, len(docs))
        exact = np.take_along_axis(q.astype(np.float64) @ docs.vectors.astype(np.float64).T,
                                   index.shards[0].ordinals[i], 1)
        err = np.abs(d - exact) / np.linalg.norm(q.astype(np.float64), axis=1)[:, None]
        bound = index.shards[0].faiss_error_bound
        assert bound is not None and err.max() <= bound, (scale, err.max(), bound)
        if torch_kind[1] != "float32":  # not vacuous: the errors reach a sizeable part of the bound
            assert err.max() > bound / 30

    docs = corpus(3000, 32, seed=1, clusters=15)  # near-duplicates: many candidates within the bound
    queries = (docs.vectors[:40] + 0.01 * np.random.default_rng(2).normal(size=(40, 32))).astype(np.float32)
    index, k = build(docs, 4, torch_kind[1]), 25
    full = search_all(index, queries, k)
    proposals = [s.propose(queries, k) for s in index.shards]
    floor = rescore_floor([p[0][1] for p in proposals], [p[1] for p in proposals], queries, k)
    assert floor is not None
    pruned = merge_topk([s.search(queries, k, p[0], floor) for s, p in zip(index.shards, proposals)], k)
    np.testing.assert_array_equal(pruned.ordinals, full.ordinals)
    np.testing.assert_array_equal(pruned.scores, full.scores)


def test_factory_placement(monkeypatch):
    gpu = IndexConfig(kind="torch-flat", use_gpu="auto")
    import streammine.index.torch_flat as tf
    monkeypatch.setattr(tf, "cuda_available", lambda: False)
    assert kinds.torch_flat_device(gpu) == "cpu"
    assert kinds.torch_flat_device(IndexConfig(kind="torch-flat", use_gpu="false")) == "cpu"
    with pytest.raises(ConfigError, match="torch sees no GPU"):
        kinds.torch_flat_device(IndexConfig(kind="torch-flat", use_gpu="true"))
    assert kinds.torch_flat_device(IndexConfig(kind="flat")) is None  # faiss on the CPU
    # a GPU that torch sees and faiss cannot use: flat searches with torch-flat there; approximate kinds stay
    monkeypatch.setattr(tf, "cuda_available", lambda: True)
    monkeypatch.setattr(factory, "num_gpus", lambda: 0)
    assert kinds.torch_flat_device(IndexConfig(kind="flat")) == "cuda"
    assert kinds.torch_flat_device(IndexConfig(kind="flat", use_gpu="true")) == "cuda"
    assert kinds.torch_flat_device(IndexConfig(kind="flat", use_gpu="false")) is None
    assert kinds.torch_flat_device(IndexConfig(kind="ivf-flat")) is None
    assert kinds.torch_flat_device(gpu) == "cuda"
    monkeypatch.setattr(factory, "num_gpus", lambda: 1)  # faiss-gpu present: faiss's GPU Flat
    assert kinds.torch_flat_device(IndexConfig(kind="flat")) is None


def test_config_accepts_torch_flat():
    from streammine.config import MineConfig
    cfg = MineConfig.from_sources(None, {"input.path": "x", "index.kind": "torch-flat",
                                         "index.torch_dtype": "bfloat16"})
    assert cfg.index.kind == "torch-flat" and cfg.index.torch_dtype == "bfloat16"
    with pytest.raises(ConfigError, match="torch_dtype"):
        MineConfig.from_sources(None, {"input.path": "x", "index.torch_dtype": "float8"})
    base = MineConfig.from_sources(None, {"input.path": "x", "index.kind": "torch-flat"})
    assert base.config_hash() == cfg.config_hash()  # precision changes candidates, never the exact result
    placed = MineConfig.from_sources(None, {"input.path": "x", "index.kind": "torch-flat", "index.gpus_per_shard": 1})
    assert placed.index.gpus_per_shard == 1 and placed.config_hash() == base.config_hash()


# ---- the mining of a block in one process ---------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_mine_block_in_one_process(device, monkeypatch):
    """Sharded torch-flat search + mining in this process: the candidates are the brute-force top k, and the
    negatives are those a brute-force ranking gives to mine_batch (and Flat's, where faiss is installed)."""
    from streammine.mining import mine_batch, num_random, random_corpus_ordinals
    from streammine.mining.types import CandidateBatch
    monkeypatch.setattr(kinds, "torch_flat_device", lambda cfg: device)
    docs = corpus(2000, 24, seed=11, clusters=40)
    rng = np.random.default_rng(12)
    pos = rng.integers(0, 2000, (30, 2))
    queries = (docs.vectors[pos[:, 0]] + 0.3 * rng.normal(size=(30, 24))).astype(np.float32)
    query_ids = [f"q{i}" for i in range(30)]
    positive_ids = [[f"d{p}" for p in row] for row in pos]
    cfg = MiningConfig(filter=FilterConfig(method="none"), sampler=SamplerConfig(method="simans", random_share=0.2))
    index = LocalShardedIndex.build(IndexConfig(kind="torch-flat", shards=3, torch_dtype="float16"), docs)
    mined, cands, positives = mine_block(index, queries, query_ids, positive_ids, cfg, len(docs))
    k = cands.ordinals.shape[1]
    ref_ords, ref_scores = reference_topk(queries, docs, k)
    np.testing.assert_array_equal(cands.ordinals, ref_ords)
    ref = CandidateBatch(ref_ords, ref_scores, docs.text_keys[ref_ords], docs.doc_ids[ref_ords])
    # random negatives come from the same shards in both: pass the answer's own to the reference
    drawn = random_corpus_ordinals(cfg.seed, keys64(query_ids), len(docs), 2 * num_random(cfg.sampler) + 4)
    random_docs = index.answer(queries, k, positive_ids, drawn)[2]
    expect = mine_batch(keys64(query_ids), ref, positives, cfg, random_docs)
    assert [list(x) for x in mined.negative_doc_ids] == [list(x) for x in expect.negative_doc_ids]
    assert all(len(x) == cfg.sampler.num_negatives for x in mined.negative_doc_ids)
    try:
        import faiss  # noqa: F401
    except ImportError:
        return
    flat = LocalShardedIndex.build(IndexConfig(kind="flat", shards=2, use_gpu="false"), docs)
    other, _, _ = mine_block(flat, queries, query_ids, positive_ids, cfg, len(docs))
    assert [list(x) for x in other.negative_doc_ids] == [list(x) for x in mined.negative_doc_ids]
    np.testing.assert_array_equal(np.concatenate(other.negative_scores), np.concatenate(mined.negative_scores))


# ---- the encoder: device, precision, batch sizing --------------------------------------------------------

TEXTS = ["Aspirin reduces the risk of myocardial infarction.", "short", "cells " * 20,
         "Protein folding is driven by the hydrophobic effect.", "", "BRCA1 mutations and breast cancer risk"]


def model_dir() -> str:
    """The packaged MiniLM, or ``STREAMMINE_MODEL_DIR`` (the GPU check machine has no package, a carried copy)."""
    import os
    if os.environ.get("STREAMMINE_MODEL_DIR"):
        return os.environ["STREAMMINE_MODEL_DIR"]
    from streammine.encode.base import default_model_path
    return default_model_path()


@pytest.fixture(scope="module")
def reference_vectors():
    """sentence-transformers' own encode, float32 on the CPU: the vectors others are compared with."""
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(model_dir(), device="cpu")
    model.float()
    return model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True).astype(np.float64)


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("device,precision,min_cos", [("cpu", "float32", 0.99999), ("cpu", "bf16-autocast", 0.9999),
                                                 ("cpu", "bfloat16", 0.995),
                                                 pytest.param("cuda", "auto", 0.999, marks=pytest.mark.skipif(
                                                     not CUDA, reason="no CUDA device")),
                                                 pytest.param("cuda", "bfloat16", 0.995, marks=pytest.mark.skipif(
                                                     not CUDA, reason="no CUDA device"))])
def test_encoder_device_and_precision(reference_vectors, device, precision, min_cos):
    import torch
    from streammine.config import EncoderConfig
    from streammine.encode.sentence_transformer import SentenceTransformerEncoder
    enc = SentenceTransformerEncoder(EncoderConfig(model=model_dir(), precision=precision, batch_size=0), device=device)
    param = next(enc.model.parameters())
    # bf16-autocast keeps float32 weights (its products run in bfloat16)
    want = {"float32": torch.float32, "bf16-autocast": torch.float32, "auto": torch.float16}.get(precision,
                                                                                               torch.bfloat16)
    assert param.dtype == want and param.device.type == device
    vecs = enc.encode_documents(TEXTS)
    assert vecs.dtype == np.float32 and vecs.shape == (len(TEXTS), enc.dim) and np.isfinite(vecs).all()
    assert cosines(vecs, reference_vectors).min() >= min_cos
    # batch sizing (a token budget on the CPU, 32 texts on a GPU) does not change the vectors beyond noise
    one_by_one = np.vstack([enc.encode_documents([t]) for t in TEXTS[:3]])
    assert cosines(one_by_one, vecs[:3]).min() >= min_cos


# ---- the prepared device check, dry run ------------------------------------------------------------------

def test_gpu_check_dry_run(tmp_path):
    """benchmarks/gpu_check.py --cpu, smaller still: every step that runs passes and the JSON has its figures."""
    import importlib.util
    import json
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(root, "benchmarks", "gpu_check.py"))
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gpu_check.json"
    rc = gpu_check.main(["--cpu", "--out", str(out), "--n-docs", "3000", "--n-queries", "96", "--ref-queries", "32",
                         "--max-docs", "4", "--k", "20", "--block", "64"])
    report = json.loads(out.read_text())
    assert rc == 0 and report["ok"], report
    steps = report["steps"]
    assert "skipped" in steps["tests"] and "skipped" in steps["mine_e2e"]
    search = steps["search"]
    assert search["torch_flat_cpu_float32_vs_brute_force"] == {"queries": 32, "identical_queries": 32,
                                                               "identical": True}
    assert search["torch_flat_cpu_float32"]["queries_per_s"] > 0
    assert steps["encode"]["runs"]["streammine_float32_batchauto"]["min_cos_to_st_fp32"] > 0.9999


def test_torch_flat_needs_neither_faiss_nor_ray():
    """The GPU check machine has neither: the shard kinds, the in-process mining and the encoder import and run
    without them, and a faiss kind says what it needs."""
    import os
    import subprocess
    import sys
    code = r'''
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("faiss", "ray"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
import streammine.encode.sentence_transformer
from streammine.config import IndexConfig, MiningConfig
from streammine.errors import ConfigError
from streammine.index.local import LocalShardedIndex, mine_block
from streammine.index.shard import ShardDocs
from streammine.keys import keys64
n = 500
v = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
docs = ShardDocs(np.array(["d%d" % i for i in range(n)], object), np.arange(n), keys64(["t%d" % i for i in range(n)]),
                 v, np.array(["x"] * n, object))
index = LocalShardedIndex.build(IndexConfig(kind="torch-flat", shards=2, use_gpu="false"), docs)
mined = mine_block(index, v[:3], ["q0", "q1", "q2"], [["d0"], ["d1"], ["d2"]], MiningConfig(), n)[0]
assert all(len(x) for x in mined.negative_doc_ids)
try:
    LocalShardedIndex.build(IndexConfig(kind="flat", shards=1, use_gpu="false"), docs)
except ConfigError as e:
    assert "needs faiss" in str(e)
else:
    raise AssertionError("flat without faiss")
print("ok")
'''
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
