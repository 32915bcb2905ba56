"""The compressed index kinds: ``flat-fp16`` (float16 codes, a stated error bound, the exact top k certified) and
``ivf-sq8`` (8-bit codes in IVF lists, approximate candidates, exact scores)."""
from __future__ import annotations

import argparse

import faiss
import numpy as np
import pytest

from helpers import one_faiss_thread  # noqa: F401 - autouse fixture
from streammine import registries
from streammine.api import load_config
from streammine.config import IndexConfig
from streammine.errors import ConfigError
from streammine.index import factory, kinds
from streammine.index.shard import IndexShard, ShardDocs
from streammine.keys import keys64


# ---- helpers -------------------------------------------------------------------------------------------------

def docs_of(vectors) -> ShardDocs:
    """ShardDocs with ids d<i>, ordinals 0..n-1 and distinct texts."""
    n = len(vectors)
    return ShardDocs(np.array([f"d{i}" for i in range(n)], dtype=object), np.arange(n),
                     keys64([f"text {i}" for i in range(n)]), np.asarray(vectors, np.float32),
                     np.array([f"corpus.jsonl:{i + 1}" for i in range(n)], dtype=object))


def shard_of(vectors, cfg) -> IndexShard:
    shard = IndexShard(cfg, vectors.shape[1])
    docs = docs_of(vectors)
    for part in np.array_split(np.random.default_rng(0).permutation(len(docs)), 3):  # arrival order is no matter
        shard.add(docs.take(part))
    assert shard.build() == []
    return shard


def reference_topk(queries, vectors, k):
    """Brute force: float64 full-matrix scores (as float32), ranked by (-score, ordinal)."""
    s = (queries.astype(np.float64) @ np.asarray(vectors, np.float64).T).astype(np.float32)
    ords = np.broadcast_to(np.arange(len(vectors)), s.shape)
    order = np.lexsort((ords, -s), axis=-1)[:, :k]
    return np.take_along_axis(ords, order, 1), np.take_along_axis(s, order, 1)


def assert_exact(got, queries, vectors, k):
    ref_ords, ref_scores = reference_topk(queries, vectors, k)
    np.testing.assert_array_equal(got.ordinals, ref_ords)
    np.testing.assert_array_equal(got.scores.view(np.uint32), ref_scores.view(np.uint32))  # the same bits


def near_duplicate_data(d=16, seed=0):
    """Three clusters of 60 unit vectors that differ in the 4th decimal (float16 rounds each component by up to
    ~2.4e-4: it scrambles their order), five exact copies of one vector (ties), and 300 others."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    clusters = [c + 1e-4 * rng.normal(size=(60, d)) for c in centers]
    copies = np.repeat(rng.normal(size=(1, d)) / 2, 5, axis=0)
    vectors = np.concatenate(clusters + [copies, rng.normal(size=(300, d)) / 4]).astype(np.float32)
    queries = np.concatenate([centers[rng.integers(0, 3, 40)] + 0.05 * rng.normal(size=(40, d)),
                              copies[:1] * 1.5, copies[:1] + 0.01 * rng.normal(size=(3, d))]).astype(np.float32)
    return vectors, queries


FP16 = IndexConfig(kind="flat-fp16", oversample=2)


# ---- flat-fp16: the exact top k ------------------------------------------------------------------------------

def test_flat_fp16_is_the_exact_top_k_on_near_duplicates_and_ties():
    vectors, queries = near_duplicate_data()
    shard = shard_of(vectors, FP16)
    assert isinstance(faiss.downcast_index(shard.index), faiss.IndexScalarQuantizer)
    got, researches = shard._search(queries, 10)
    assert_exact(got, queries, vectors, 10)
    assert researches > 0  # 60 near-duplicates, oversample 2: the certificate had to search deeper
    # the five copies tie: ranked by ordinal
    tie_rows = got.ordinals[40]
    assert list(tie_rows[:5]) == [180, 181, 182, 183, 184]
    for batch in (1, 7):  # any batch size
        parts = [shard.search(queries[a:a + batch], 10) for a in range(0, len(queries), batch)]
        np.testing.assert_array_equal(np.concatenate([p.ordinals for p in parts]), got.ordinals)
        np.testing.assert_array_equal(np.concatenate([p.scores for p in parts]), got.scores)


def test_flat_fp16_exact_with_large_tiny_and_non_unit_vectors():
    """Components up to 6e4 (near float16's largest, 65504) and below 2^-14 (float16's subnormals), norms from
    1e-3 to 1e4; queries of several scales."""
    rng = np.random.default_rng(1)
    d = 16
    base = rng.normal(size=(400, d))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    vectors = base * 10.0 ** rng.uniform(-3, 4, (400, 1))          # non-unit norms over seven decades
    vectors[:40] = rng.normal(size=(40, d)) * 1e-6                 # every component in float16's subnormal range
    vectors[40:60, 0] = rng.uniform(3e4, 6e4, 20)                  # one large component, the others tiny
    vectors[40:60, 1:] = rng.normal(size=(20, d - 1)) * 1e-6
    vectors[60:70] = vectors[60]                                   # ties
    vectors = vectors.astype(np.float32)
    queries = np.concatenate([rng.normal(size=(10, d)), rng.normal(size=(5, d)) * 1e-5,
                              rng.normal(size=(5, d)) * 1e3, vectors[60:61] * 1.01]).astype(np.float32)
    shard = shard_of(vectors, FP16)
    assert_exact(shard.search(queries, 12), queries, vectors, 12)


def test_flat_fp16_refuses_components_beyond_float16_range():
    vectors = np.random.default_rng(2).normal(size=(20, 8)).astype(np.float32)
    vectors[3, 5] = -65520.0
    shard = IndexShard(FP16, 8)
    shard.add(docs_of(vectors))
    with pytest.raises(ConfigError, match="float16's range"):
        shard.build()
    vectors[3, 5] = -65504.0  # the largest float16 is fine
    assert_exact(shard_of(vectors, FP16).search(vectors[:4], 5), vectors[:4], vectors, 5)


# ---- flat-fp16: the bound ------------------------------------------------------------------------------------

def test_faiss_float16_codes_round_within_the_stated_per_component_error():
    """What the bound assumes of faiss: each stored component is within 2^-11·|v| (normal) plus 2^-25·(1+2^-12)
    (subnormal) of the float32 value, and decodes exactly."""
    rng = np.random.default_rng(3)
    d = 37
    v = rng.normal(size=(3000, d)) * 10.0 ** rng.uniform(-9, 4.8, (3000, d))
    v = np.clip(v, -65504, 65504).astype(np.float32)
    p = kinds.FlatFp16Proposer(FP16, d, len(v))
    p.build(v)
    decoded = p.index.reconstruct_n(0, len(v)).astype(np.float64)
    err = np.abs(decoded - v.astype(np.float64))
    assert (err <= 2.0 ** -11 * np.abs(v) + 2.0 ** -25 * (1 + 2.0 ** -12)).all()
    # round to nearest: where numpy's float16 (ties to even) differs, the value lies half-way (faiss's portable
    # encoder rounds ties away from zero)
    nearest = v.astype(np.float16).astype(np.float64)
    differ = decoded != nearest
    assert differ.mean() < 1e-3
    np.testing.assert_array_equal(err[differ], np.abs(nearest - v.astype(np.float64))[differ])


def test_flat_fp16_bound_holds_and_is_not_loose():
    """max |faiss score - exact| / |q| over many pairs stays under ``fp16_bound``; queries aligned with a
    document's rounding error (the worst case) come within a small factor of it."""
    rng = np.random.default_rng(4)
    ratios = {}
    for d in (16, 37, 96):  # 37: faiss's scalar (not SIMD) path
        n = 1500
        v = rng.normal(size=(n, d))
        v *= (10.0 ** rng.uniform(-2, 0, (n, 1))) / np.linalg.norm(v, axis=1, keepdims=True)
        v[:20] /= np.linalg.norm(v[:20], axis=1, keepdims=True)  # the largest norms: 1
        v = v.astype(np.float32)
        p = kinds.FlatFp16Proposer(FP16, d, n)
        p.build(v)
        max_norm = float(np.sqrt(np.max(np.einsum("ij,ij->i", v, v, dtype=np.float64))))
        bound = p.error_bound(max_norm)
        assert bound == kinds.fp16_bound(d, max_norm)
        delta = p.index.reconstruct_n(0, 20).astype(np.float64) - v[:20]
        aligned = (np.sign(delta) * np.abs(v[:20])).astype(np.float32)  # q·(v~ - v) = Σ|v_i||δ_i|
        for name, q in (("random", rng.normal(size=(60, d)) * 10.0 ** rng.uniform(-3, 3, (60, 1))),
                        ("aligned", aligned)):
            q = q.astype(np.float32)
            scores, rows = p.index.search(q, n)
            exact = np.take_along_axis(q.astype(np.float64) @ v.astype(np.float64).T, rows, 1)
            observed = float((np.abs(scores - exact) / np.linalg.norm(q.astype(np.float64), axis=1)[:, None]).max())
            assert observed <= bound, (d, name, observed, bound)
            ratios[d, name] = bound / observed
    print({key: round(r, 2) for key, r in ratios.items()})
    assert all(r < 100 for r in ratios.values()), ratios
    assert all(ratios[d, "aligned"] < 4 for d in (16, 37, 96)), ratios


def test_a_shrunk_fp16_bound_misses_documents_of_the_exact_top_k(monkeypatch):
    """Mutation: with the bound divided by 10 the certificate stops too early on near-duplicates and the top k
    is no longer exact; the true bound gives the exact top k on the same data (the bound is what makes it so)."""
    vectors, queries = near_duplicate_data(seed=5)
    ref_ords, _ = reference_topk(queries, vectors, 10)
    assert_exact(shard_of(vectors, FP16).search(queries, 10), queries, vectors, 10)
    true_bound = kinds.fp16_bound
    monkeypatch.setattr(kinds, "fp16_bound", lambda d, max_norm: true_bound(d, max_norm) / 10)
    got = shard_of(vectors, FP16).search(queries, 10)
    wrong = (got.ordinals != ref_ords).any(axis=1)
    assert wrong.sum() >= 3, wrong.sum()


# ---- ivf-sq8 -------------------------------------------------------------------------------------------------

def clustered(n, d, clusters, seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    v = centers[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_ivf_sq8_recall_exact_scores_and_memory():
    n, d = 4000, 32
    vectors = clustered(n, d, 40, seed=6)
    rng = np.random.default_rng(7)
    queries = (vectors[rng.integers(0, n, 60)] + 0.1 * rng.normal(size=(60, d))).astype(np.float32)
    cfg = IndexConfig(kind="ivf-sq8", nlist=32, nprobe=24, oversample=16)
    shard = shard_of(vectors, cfg)
    index = faiss.downcast_index(shard.index)
    assert isinstance(index, faiss.IndexIVFScalarQuantizer) and index.nlist == 32 and index.nprobe == 24
    assert index.code_size == d and shard.faiss_error_bound is None  # no certificate: every candidate rescored
    got = shard.search(queries, 10)
    assert got.valid.all()
    ref_ords, _ = reference_topk(queries, vectors, 10)
    recall = np.mean([len(set(g) & set(r)) / 10 for g, r in zip(got.ordinals, ref_ords)])
    assert recall >= 0.9, recall
    # the scores returned are the float32 bits of a float64 brute force of the documents found
    brute = np.einsum("bd,bkd->bk", queries.astype(np.float64), vectors[got.ordinals].astype(np.float64))
    np.testing.assert_array_equal(got.scores.view(np.uint32), brute.astype(np.float32).view(np.uint32))
    # codes d bytes + an 8-byte id a document, the centroids, the quantizer's per-dimension min and range
    own = shard.proposer.memory_bytes(n, d)
    assert own == n * (d + 8) + 32 * d * 4 + 2 * d * 4
    ivf_flat = shard_of(vectors, IndexConfig(kind="ivf-flat", nlist=32, nprobe=24)).proposer.memory_bytes(n, d)
    assert own < ivf_flat / 2, (own, ivf_flat)


def test_compressed_kinds_on_tiny_shards():
    """A handful of vectors: one IVF list (ivf-sq8 trains its ranges on them) — both exhaustive and exact."""
    vectors = np.random.default_rng(8).normal(size=(50, 12)).astype(np.float32)
    queries = np.random.default_rng(9).normal(size=(5, 12)).astype(np.float32)
    for kind in ("flat-fp16", "ivf-sq8"):
        shard = shard_of(vectors, IndexConfig(kind=kind, nprobe=8, oversample=16))
        assert_exact(shard.search(queries, 5), queries, vectors, 5)
    assert shard_of(vectors, FP16).proposer.memory_bytes(50, 12) == 50 * 12 * 2


# ---- config, CLI, GPU placement ------------------------------------------------------------------------------

def test_compressed_kinds_are_config_and_cli_choices_and_stay_on_cpu(monkeypatch):
    from streammine.cli import build_parser
    for kind in ("flat-fp16", "ivf-sq8"):
        assert kind in registries.names("index.kind")
        assert load_config(None, {"input.path": "x", "index.kind": kind}).index.kind == kind
        # use_gpu=auto on a machine without a GPU: faiss on the CPU
        cfg = IndexConfig(kind=kind, use_gpu="auto")
        proposer = kinds.make_proposer(cfg, 16, 1000)
        assert type(proposer) is kinds.proposer_class(kind) and kinds.torch_flat_device(cfg) is None
        assert not factory.gpu_supported(proposer.index)  # kept on the CPU where faiss has a GPU
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    index_flag = next(a for a in commands.choices["mine"]._actions if "--index" in a.option_strings)
    assert "flat-fp16" in index_flag.help and "ivf-sq8" in index_flag.help  # the --index choices
    with pytest.raises(ConfigError, match="flat-fp16, ivf-sq8"):
        load_config(None, {"input.path": "x", "index.kind": "sq4"})
    # a GPU that faiss reports: auto stays on the CPU, true says why not
    monkeypatch.setattr(factory, "num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: None, raising=False)
    for kind in ("flat-fp16", "ivf-sq8"):
        cpu = kinds.proposer_class(kind).make(IndexConfig(kind=kind), 16, 1000)
        assert factory.maybe_to_gpu(cpu.index, "auto") is cpu.index
        with pytest.raises(ConfigError, match="no GPU version"):
            factory.maybe_to_gpu(cpu.index, "true")
