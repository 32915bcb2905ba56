"""Per-query search depth: a query's window, negatives and counts do not depend on the block it is mined in.

Everything runs through the real mining stage (``MineQueries``) over real ``IndexShard``s, with the in-process
fan-out (``index.local.LocalShardedIndex``) in place of the Ray actors (no Ray). Same-text copies of positives (other ids, the same normalized text,
hence the same vector) take candidate slots ahead of the rank window, as boilerplate pages do in real corpora.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from helpers import one_faiss_thread  # noqa: F401 - autouse fixture
from streammine.config import FilterConfig, IndexConfig, MineConfig, MiningConfig, SamplerConfig
from streammine.index.local import LocalShardedIndex
from streammine.index.shard import ShardDocs
from streammine.keys import normalize_text, text_key
from streammine.mining import (SAME_TEXT_SLACK, CandidateBatch, PositiveBatch, first_depths, search_to_depth,
                               truncate, window_full)
from streammine.run.mine_stage import MineQueries
from streammine.vectors import to_arrow

DIM = 32
WORDS = ("protein binding cell tumour growth signal receptor kinase dose trial patients outcome risk gene "
         "expression pathway mouse model therapy response survival").split()


def sentence(rng) -> str:
    return " ".join(rng.choice(WORDS, 8)).capitalize() + "."


def make_world(seed=0, n_base=500, copies=(20, 20, 20, 20, 40, 40), n_plain=6):
    """A corpus with same-text copies of some queries' positives, and queries of every kind.

    Queries 0..len(copies)-1: one positive (a top-3 document) with ``copies[i]`` same-text copies (case and
    whitespace changed, so only the normalized text is the same); then one query with 12 positives; then
    ``n_plain`` queries with 1-3 positives; last, ``q-missing`` whose only positive is not in the corpus.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, DIM))
    vecs = centers[rng.integers(0, 4, n_base)] + 0.8 * rng.normal(size=(n_base, DIM))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    texts = [sentence(rng) + f" Study {i}." for i in range(n_base)]
    n_q = len(copies) + 1 + n_plain
    qv = vecs[rng.choice(n_base, n_q, replace=False)] + 0.3 * rng.normal(size=(n_q, DIM))
    qv = (qv / np.linalg.norm(qv, axis=1, keepdims=True)).astype(np.float32)
    top = np.argsort(-(vecs @ qv.T), axis=0, kind="stable")  # (n_base, n_q): each query's ranking
    positives, extra_vecs, extra_texts = [], [], []
    for i in range(n_q):
        if i < len(copies):
            p = [int(top[2, i])]
            for c in range(copies[i]):  # same text up to case and spacing; the same vector, as a model gives
                extra_vecs.append(vecs[p[0]])
                t = texts[p[0]].upper() if c % 2 else "  " + texts[p[0]].replace(" ", "   ")
                assert normalize_text(t) == normalize_text(texts[p[0]])
                extra_texts.append(t)
        elif i == len(copies):
            p = sorted(int(x) for x in top[[0, 1, 3, 4, 6, 8, 9, 12, 15, 20, 30, 44], i])
        else:
            p = sorted(int(x) for x in rng.choice(top[:10, i], rng.integers(1, 4), replace=False))
        positives.append([f"d{x}" for x in p])
    all_vecs = np.vstack([vecs, np.array(extra_vecs).reshape(-1, DIM)]).astype(np.float32)
    all_texts = texts + extra_texts
    # the copies get ordinals scattered among the base documents (ties with the positive go by ordinal)
    perm = rng.permutation(len(all_vecs))
    n = len(all_vecs)
    ids = np.array([f"d{i}" for i in range(n)], object)
    docs = ShardDocs(ids[perm], np.arange(n), np.array([text_key(all_texts[j]) for j in perm], np.uint64),
                     all_vecs[perm], np.array([f"corpus.jsonl:{j + 1}" for j in perm], object))
    qids = [f"q{i}" for i in range(n_q)] + ["q-missing"]
    positives.append(["not-in-corpus"])
    qv = np.vstack([qv, qv[:1]])
    return docs, qids, positives, qv


def build_index(docs, n_shards):
    return LocalShardedIndex.build(IndexConfig(kind="flat", shards=n_shards), docs)


def block_of(qids, positives, qv, rows):
    return pa.table({"query_id": [qids[i] for i in rows], "query": [f"query {qids[i]}" for i in rows],
                     "positive_ids": [positives[i] for i in rows],
                     "positive_locations": [[f"qrels/train.tsv:{i + 2}"] * len(positives[i]) for i in rows],
                     "location": [f"queries.jsonl:{i + 1}" for i in rows], "vector": to_arrow(qv[rows])})


def stage(docs, index, mining: MiningConfig, tmp_path, lenient=False):
    cfg = MineConfig.from_dict({"input": {"path": "x", "lenient": lenient}})
    cfg.mining = mining
    mq = MineQueries(cfg, [], len(docs), "v1", str(tmp_path / "_quarantine"))
    mq.index = index
    return mq


def rows_by_query(table) -> dict:
    return {r["query_id"]: r for r in table.to_pylist()}


def reference_window(docs, q, positive_ids, lo, hi):
    """Brute force: every document scored in float64 (as float32), ranked by (score desc, ordinal asc); the
    query's positives and documents with a positive's normalized text removed; ranks [lo, hi) of the rest."""
    s = (docs.vectors.astype(np.float64) @ q.astype(np.float64)).astype(np.float32)
    order = np.lexsort((docs.ordinals, -s))
    pos = set(positive_ids)
    pos_texts = {int(docs.text_keys[j]) for j in range(len(docs)) if docs.doc_ids[j] in pos}
    eligible = [j for j in order if docs.doc_ids[j] not in pos and int(docs.text_keys[j]) not in pos_texts]
    return [docs.doc_ids[j] for j in eligible[lo:hi]]


# ---- the stage, end to end without Ray -----------------------------------------------------------------------

def test_window_is_filled_past_same_text_copies_and_matches_brute_force(tmp_path):
    """The window [42, 50) with the top sampler is exactly ranks 42..49 among non-positive, non-same-text
    documents, also for queries with 20 and 40 same-text copies (more than SAME_TEXT_SLACK), mined alone."""
    docs, qids, positives, qv = make_world(seed=1)
    index = build_index(docs, 2)
    mining = MiningConfig(filter=FilterConfig(method="none"),
                          sampler=SamplerConfig(method="top", num_negatives=8, range_min=42, range_max=50))
    mq = stage(docs, index, mining, tmp_path)
    for i in range(len(qids) - 1):
        row = rows_by_query(mq(block_of(qids, positives, qv, [i])))[qids[i]]
        assert row["negative_ids"] == reference_window(docs, qv[i], positives[i], 42, 50), qids[i]
        assert not row["short"]
        if i < 6:
            assert row["n_removed_same_text"] >= 20 > SAME_TEXT_SLACK  # the copies were in the way
        if i in (4, 5):  # 40 copies: 50 + 1 + 16 candidates cannot hold a window of 50; searched deeper
            assert row["n_candidates"] > 50 + 1 + SAME_TEXT_SLACK


@pytest.mark.parametrize("mode", ["exclude", "include"])
def test_window_is_filled_past_supplied_negatives(tmp_path, mode):
    """A query whose labels keep its 30 top-ranked documents out of the mined negatives (supplied negatives; more
    than SAME_TEXT_SLACK) is searched past them: the window [0, 20) is exactly the first 20 of the brute-force
    ranking without positives, same-text copies and those documents, and the query is not short."""
    docs, qids, positives, qv = make_world(seed=3, copies=(), n_plain=4)
    index = build_index(docs, 2)
    mining = MiningConfig(filter=FilterConfig(method="none"), supplied_negatives=mode,
                          sampler=SamplerConfig(method="top", num_negatives=20 if mode == "exclude" else 40,
                                                range_min=0, range_max=20))
    mq = stage(docs, index, mining, tmp_path)
    for i in range(len(qids) - 1):
        ranked = reference_window(docs, qv[i], positives[i], 0, 30)
        block = block_of(qids, positives, qv, [i])
        block = block.append_column("supplied_negative_ids", pa.array([ranked], pa.list_(pa.string()))) \
            .append_column("supplied_negative_locations", pa.array([[f"qrels/train.tsv:{k}" for k in range(30)]],
                                                                    pa.list_(pa.string())))
        row = rows_by_query(mq(block))[qids[i]]
        expected = [d for d in reference_window(docs, qv[i], positives[i], 0, 60) if d not in set(ranked)][:20]
        mined = row["negative_ids"]
        if mode == "include":  # the 30 supplied first, in file order; the mined ones fill the other 10 slots
            assert row["negative_ids"][:30] == ranked
            mined, expected = row["negative_ids"][30:], expected[:10]
        assert mined == expected, qids[i]
        assert not row["short"]


def test_same_negatives_and_counts_whatever_the_block(tmp_path):
    """SimANS + random corpus negatives: every query's row (negatives, scores, ranks, removed, counts, short) is
    the same mined alone, in blocks of 7 beside the 12-positive query, in one block of all, on 1 or 4 shards,
    and through the lenient path (a query whose positive is missing is dropped and the block searched again)."""
    docs, qids, positives, qv = make_world(seed=2)
    mining = MiningConfig(filter=FilterConfig(method="topk-percpos", perc=0.98),
                          sampler=SamplerConfig(method="simans", num_negatives=6, range_max=50, simans_a=30.0,
                                                random_share=0.34),
                          seed=5)
    minable = list(range(len(qids) - 1))
    index2 = build_index(docs, 2)
    alone_stage = stage(docs, index2, mining, tmp_path)
    alone = {}
    for i in minable:
        alone.update(rows_by_query(alone_stage(block_of(qids, positives, qv, [i]))))
    many = 6  # the 12-positive query, placed first in every block of 7
    layouts = {"sevens": [[many] + [j for j in minable if j != many][a:a + 6] for a in range(0, len(minable) - 1, 6)],
               "all": [minable[::-1]]}
    for name, blocks in layouts.items():
        for n_shards in (1, 4):
            mq = stage(docs, build_index(docs, n_shards), mining, tmp_path)
            got = {}
            for rows in blocks:
                got.update(rows_by_query(mq(block_of(qids, positives, qv, rows))))
            assert got.keys() == alone.keys()
            for q in alone:
                assert got[q] == alone[q], (name, n_shards, q)
    lenient = stage(docs, index2, mining, tmp_path, lenient=True)
    got = rows_by_query(lenient(block_of(qids, positives, qv, [len(qids) - 1] + minable)))
    assert "q-missing" not in got and got == alone
    # the data exercises what the property is about: windows that needed more than the first depth
    assert all(alone[f"q{i}"]["n_removed_same_text"] >= 20 for i in range(6))
    assert all(alone[q]["n_candidates"] - alone[q]["n_removed_positive"] - alone[q]["n_removed_same_text"] >= 50
               for q in alone)
    assert any(-1 in alone[q]["negative_ranks"] for q in alone)


# ---- the pure functions ----------------------------------------------------------------------------------------

def batch(ords, text_keys):
    ords = np.asarray(ords, np.int64)
    return CandidateBatch(ords, np.where(ords >= 0, -ords.astype(np.float32), -np.inf).astype(np.float32),
                          np.asarray(text_keys, np.uint64),
                          np.where(ords >= 0, np.char.add("d", ords.astype(str)), "").astype(object))


def test_first_depths_and_truncate():
    np.testing.assert_array_equal(first_depths(50, [1, 12, 0], 10_000), [67, 78, 66])
    np.testing.assert_array_equal(first_depths(50, [1, 12], 70), [67, 70])
    b = batch([[0, 1, 2, 3], [4, 5, 6, -1]], [[1, 2, 3, 4], [5, 6, 7, 0]])
    t = truncate(b, np.array([2, 3]))
    assert t.ordinals.tolist() == [[0, 1, -1], [4, 5, 6]]
    assert t.doc_ids.tolist() == [["d0", "d1", ""], ["d4", "d5", "d6"]]
    assert np.isneginf(t.scores[0, 2]) and t.text_keys[0, 2] == 0


def test_search_to_depth_doubles_only_where_the_window_is_short():
    """A reference world: query row i has ``copies[i]`` same-text copies right after its positive; the search
    callable returns the true top k. Depths double per query until the window (range_max = 5) is full."""
    n_total, range_max = 200, 5
    copies = [0, 3, 20, 150]

    def ranking(i):  # ordinals in score order: the positive 0, its copies, then the rest
        return list(range(n_total))

    def text_of(i, o):
        return 7 if 0 < o <= copies[i] else 1000 + o

    def search(rows, k):
        ords = np.array([ranking(i)[:k] for i in rows])
        return batch(ords, [[text_of(i, o) for o in r] for i, r in zip(rows, ords)])

    positives = PositiveBatch([np.array([0])] * 4, [np.zeros(1, np.float32)] * 4, [np.array([7], np.uint64)] * 4,
                              [["d0"]] * 4)
    depths = first_depths(range_max, [1] * 4, n_total)  # 22 each
    calls = []

    def counted(rows, k):
        calls.append((rows.tolist(), k))
        return search(rows, k)

    cands, final, n_deeper = search_to_depth(counted, search(np.arange(4), int(depths.max())), positives, depths,
                                             range_max, True, 64, n_total)
    # rows 0, 1 fit in 22; row 2 (20 copies) needs 44; row 3 (150 copies) would need 156 > the cap of 64
    assert final.tolist() == [22, 22, 44, 64]
    assert calls == [([2, 3], 44), ([3], 64)] and n_deeper == 3
    assert window_full(cands, positives, True, range_max).tolist() == [True, True, True, False]
    for i in range(4):
        assert cands.ordinals[i, :final[i]].tolist() == ranking(i)[:final[i]]
        assert (cands.ordinals[i, final[i]:] == -1).all()
    # alone, each row comes out the same
    for i in range(4):
        def search_alone(rows, k, i=i):  # rows index the one-query block
            return search(np.array([i])[rows], k)
        one = search_to_depth(search_alone, search(np.array([i]), int(depths[i])), PositiveBatch(
            *[[getattr(positives, f)[i]] for f in ("ordinals", "scores", "text_keys", "doc_ids")]),
            depths[i:i + 1], range_max, True, 64, n_total)
        assert one[1].tolist() == [final[i]]
        assert one[0].ordinals[0, :final[i]].tolist() == cands.ordinals[i, :final[i]].tolist()
    # without same-text exclusion, the copies count as negatives and nothing is searched again
    assert search_to_depth(search, search(np.arange(4), 22), positives, depths, range_max, False, 64,
                           n_total)[2] == 0


def test_max_search_depth_is_validated():
    from streammine.errors import ConfigError
    with pytest.raises(ConfigError, match="max_search_depth"):
        MineConfig.from_sources(None, {"input.path": "x", "mining.max_search_depth": 0})
    assert MineConfig.from_sources(None, {"input.path": "x"}).mining.max_search_depth == 1024
