"""Rescoring rows in a scratch file (index/vector_rows.py): the same bits as in memory, against float64 brute
force, in the shard's local order, nothing left on disk after a crash, and the shard's memory without them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from helpers import one_faiss_thread  # noqa: F401 - autouse fixture
from streammine.config import IndexConfig
from streammine.index.merge import merge_topk
from streammine.index.shard import IndexShard, ShardDocs
from streammine.index.vector_rows import FileRows, MemoryRows
from streammine.keys import keys64

KINDS = ["flat", "ivf-flat", "hnsw", "ivf-pq", "flat-fp16", "ivf-sq8"]


def corpus(n, d, seed=0, kind="clusters"):
    """ShardDocs d<i> at ordinals 0..n-1: clustered unit vectors, or small multiples of 1/4 with exact copies
    (every product exact in any order, so ties stay ties), or a near-duplicate cluster larger than any oversample."""
    rng = np.random.default_rng(seed)
    if kind == "ties":
        vecs = rng.integers(-3, 4, (n, d)).astype(np.float32) / 4
        vecs[[900, 20, 1300, 3]] = vecs[5]
    else:
        centers = rng.normal(size=(20, d))
        vecs = centers[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))
        if kind == "near-duplicates":  # 80 documents within 1e-4 of document 7, scattered over the ordinals
            at = rng.choice(np.arange(8, n), 80, replace=False)
            vecs[at] = vecs[7] + 1e-4 * rng.normal(size=(80, d))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.array([f"d{i}" for i in range(n)], dtype=object)
    return ShardDocs(ids, np.arange(n), keys64([f"text {i}" for i in range(n)]), vecs.astype(np.float32),
                     np.array([f"corpus.jsonl:{i + 1}" for i in range(n)], dtype=object))


def build(docs, cfg, n_shards=2, seed=0):
    """Shards of ``docs`` (round robin by ordinal), each fed in shuffled chunks (arrival order != local order)."""
    rng = np.random.default_rng(seed)
    shards = []
    for s in range(n_shards):
        sel = np.flatnonzero(np.arange(len(docs)) % n_shards == s)
        rng.shuffle(sel)
        shard = IndexShard(cfg, docs.vectors.shape[1], s)
        for part in np.array_split(sel, 3):
            shard.add(docs.take(part))
        assert shard.build() == []
        shards.append(shard)
    return shards


def brute_force(queries, docs, k):
    s = (queries.astype(np.float64) @ docs.vectors.astype(np.float64).T).astype(np.float32)
    ords = np.broadcast_to(docs.ordinals, s.shape)
    order = np.lexsort((ords, -s), axis=-1)[:, :k]
    return np.take_along_axis(ords, order, 1), np.take_along_axis(s, order, 1)


def answers(shards, queries, k):
    """Everything a miner gets: merged candidates, positives' scores, random documents' scores, stored vectors."""
    positives = [[f"d{7 * i + 1}", f"d{3 * i}"] for i in range(len(queries))]
    randoms = np.random.default_rng(5).integers(0, 2000, (len(queries), 6))
    out = [s.answer(queries, k, positives, randoms) for s in shards]
    merged = merge_topk([a.candidates for a in out], k)
    vecs = [s.vectors_of(np.arange(0, 2000, 7)) for s in shards]
    return merged, [(a.positives.scores, a.random.scores) for a in out], vecs


def _queries(docs, n=24, seed=2):
    rng = np.random.default_rng(seed)
    q = docs.vectors[rng.integers(0, len(docs), n)] + 0.05 * rng.normal(size=(n, docs.vectors.shape[1]))
    return q.astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_disk_rows_give_the_bits_of_memory_rows(kind, tmp_path):
    docs = corpus(2000, 32, seed=1)
    queries = _queries(docs)
    base = dict(kind=kind, nlist=16, nprobe=4, pq_m=8, oversample=8)
    mem = build(docs, IndexConfig(**base, rescore_vectors="memory"))
    disk = build(docs, IndexConfig(**base, rescore_vectors="disk", scratch_dir=str(tmp_path)))
    assert all(not s.rows.on_disk for s in mem) and all(s.rows.on_disk for s in disk)
    a, b = answers(mem, queries, 20), answers(disk, queries, 20)
    for name in ("ordinals", "scores", "doc_ids", "text_keys"):
        np.testing.assert_array_equal(getattr(a[0], name), getattr(b[0], name))
    for (pa_, ra), (pb, rb) in zip(a[1], b[1]):
        for x, y in zip(pa_, pb):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(ra, rb)
    for (ha, va), (hb, vb) in zip(a[2], b[2]):
        np.testing.assert_array_equal(ha, hb)
        np.testing.assert_array_equal(va, vb)
    # the returned scores are the float64 brute force's, rounded once, for every document returned
    got = a[0]
    exact = np.einsum("bd,bkd->bk", queries.astype(np.float64),
                      docs.vectors[np.maximum(got.ordinals, 0)].astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(np.where(got.ordinals >= 0, got.scores, 0), np.where(got.ordinals >= 0, exact, 0))
    assert os.listdir(tmp_path) == []  # the scratch files have no names


@pytest.mark.parametrize("data", ["ties", "near-duplicates"])
def test_disk_rows_flat_is_the_exact_top_k(data, tmp_path):
    """Flat with the rows on disk: the exact top k by float64 brute force, ties by ordinal, and a near-duplicate
    cluster larger than the oversample (the certificate searches deeper, reading the file)."""
    d = 16 if data == "ties" else 32
    docs = corpus(2000, d, seed=3, kind=data)
    queries = np.vstack([docs.vectors[[5, 7]], _queries(docs, 14)]).astype(np.float32)
    cfg = IndexConfig(kind="flat", oversample=2, rescore_vectors="disk", scratch_dir=str(tmp_path))
    shards = build(docs, cfg, n_shards=3)
    k = 40
    got = merge_topk([s.search(queries, k) for s in shards], k)
    ref_ords, ref_scores = brute_force(queries, docs, k)
    np.testing.assert_array_equal(got.ordinals, ref_ords)
    np.testing.assert_array_equal(got.scores, ref_scores)


def test_rows_are_written_in_local_order(tmp_path):
    """Documents arrive shuffled; the file holds row i = the i-th document by ordinal (what rescoring reads)."""
    docs = corpus(1000, 8, seed=4)
    shard = build(docs, IndexConfig(kind="ivf-flat", nlist=8, rescore_vectors="disk", scratch_dir=str(tmp_path)),
                  n_shards=1)[0]
    np.testing.assert_array_equal(shard.ordinals, np.arange(1000))
    np.testing.assert_array_equal(shard.rows.take(np.arange(1000)), docs.vectors)
    blocks = np.vstack([b for _, b in shard.rows.blocks(step=97)])
    np.testing.assert_array_equal(blocks, docs.vectors)


def test_file_rows_write_and_read_back(tmp_path):
    rows = FileRows.allocate(50, 3, str(tmp_path))
    data = np.arange(150, dtype=np.float32).reshape(50, 3)
    order = np.random.default_rng(0).permutation(50)
    rows.write(order[:20], data[order[:20]])
    rows.write(order[20:], data[order[20:]])
    rows.seal()
    np.testing.assert_array_equal(rows.take([49, 0, 7, 7]), data[[49, 0, 7, 7]])
    np.testing.assert_array_equal(np.asarray(rows), data)
    assert rows.memory_bytes == 0 and rows.disk_bytes == 600
    rows.close()
    assert os.listdir(tmp_path) == []


def test_disk_rows_leave_the_shard_memory(tmp_path):
    docs = corpus(3000, 64, seed=5)
    mem = build(docs, IndexConfig(kind="ivf-flat", nlist=16, rescore_vectors="memory"), n_shards=1)[0]
    disk = build(docs, IndexConfig(kind="ivf-flat", nlist=16, rescore_vectors="auto", scratch_dir=str(tmp_path)),
                 n_shards=1)[0]
    assert disk.rows.on_disk  # auto: IVF keeps its vectors in list order, not the shard's
    assert mem.memory_bytes() - disk.memory_bytes() == 3000 * 64 * 4
    assert disk.disk_bytes() == 3000 * 64 * 4 and mem.disk_bytes() == 0
    flat = build(docs, IndexConfig(kind="flat", scratch_dir=str(tmp_path)), n_shards=1)[0]
    assert not flat.rows.on_disk and flat._shares_storage  # auto: Flat's own copy is the rows


CRASHING_SHARD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from streammine.config import IndexConfig
    from streammine.index.shard import IndexShard, ShardDocs
    n, d = 5000, 32
    v = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    shard = IndexShard(IndexConfig(kind="ivf-flat", nlist=8, rescore_vectors="disk", scratch_dir=sys.argv[1]), d)
    shard.add(ShardDocs(np.array([f"d{i}" for i in range(n)], object), np.arange(n), np.arange(n, dtype=np.uint64),
                        v, np.array(["x"] * n, object)))
    shard.build()
    shard.search(v[:3], 5)
    print("ready", flush=True)
    time.sleep(600)
""")


def test_a_killed_shard_leaves_no_scratch_file(tmp_path):
    scratch = tmp_path / "scratch"
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_SHARD, str(scratch)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        # the file is there (an open descriptor into the scratch directory's filesystem) but has no name
        held = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
        assert any(h.startswith(str(scratch)) and "(deleted)" in h for h in held), held
        assert os.listdir(scratch) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    time.sleep(0.1)
    assert os.listdir(scratch) == []


def test_memory_rows_are_rows():
    rows = MemoryRows(np.arange(12, dtype=np.float32).reshape(4, 3))
    np.testing.assert_array_equal(rows.take([3, 1]), [[9, 10, 11], [3, 4, 5]])
    assert [a for a, _ in rows.blocks(step=3)] == [0, 3]


def test_compressed_kinds_hold_their_codes_not_float32(tmp_path):
    """flat-fp16 and ivf-sq8 keep only their codes (and the bookkeeping) in memory; the float32 rows go to disk."""
    docs = corpus(4000, 32, seed=6)
    size = {kind: build(docs, IndexConfig(kind=kind, nlist=16, scratch_dir=str(tmp_path)), n_shards=1)[0]
            for kind in ("flat", "flat-fp16", "ivf-sq8", "ivf-flat")}
    assert size["flat-fp16"].rows.on_disk and size["ivf-sq8"].rows.on_disk
    assert size["flat-fp16"].memory_bytes() < size["flat"].memory_bytes() - 4000 * 32 * 2 + 1
    assert size["ivf-sq8"].memory_bytes() < size["ivf-flat"].memory_bytes() / 2


@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-sq8", "ivf-pq"])
def test_presized_lists_are_the_lists_faiss_adds(kind):
    """The IVF build sizes each list once (kinds._add_presized): the same lists, in the same order, as index.add."""
    import faiss
    from streammine.index.kinds import make_proposer
    docs = corpus(3000, 32, seed=8)
    cfg = IndexConfig(kind=kind, nlist=16, nprobe=16, pq_m=8)
    proposer = make_proposer(cfg, 32, 3000)
    proposer.build(docs.vectors)
    plain = faiss.clone_index(proposer.index)
    plain.reset()
    plain.add(docs.vectors)
    a, b = faiss.extract_index_ivf(proposer.index).invlists, faiss.extract_index_ivf(plain).invlists
    for lst in range(16):
        n = a.list_size(lst)
        assert n == b.list_size(lst)
        np.testing.assert_array_equal(faiss.rev_swig_ptr(a.get_ids(lst), n), faiss.rev_swig_ptr(b.get_ids(lst), n))
        size = n * a.code_size
        np.testing.assert_array_equal(faiss.rev_swig_ptr(a.get_codes(lst), size),
                                      faiss.rev_swig_ptr(b.get_codes(lst), size))

