"""``streammine eval``: the held-out carve, the metrics on a hand-checked case, the training batches, and a tiny
end-to-end run through the real pipeline (mining on a local Ray, fine-tuning, scoring)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from streammine.api import demo_data_path
from streammine.errors import ConfigError
from streammine.evaluate import load_eval_config, run_eval
from streammine.evaluate import metrics as M
from streammine.evaluate.split import assign_heldout, carve_heldout, read_queries
from streammine.evaluate.train import no_duplicate_batches, teacher_margins, teacher_source, tuples_from_mined
from streammine.io.readers import beir_qrels_url, read_qrels

MINI = demo_data_path()


def _qrels_ids(path: str, split: str) -> set:
    return set(read_qrels(beir_qrels_url(path, split)))


# ---- the split ----------------------------------------------------------------------------------------------

def test_split_is_deterministic_disjoint_and_complete(tmp_path):
    a = carve_heldout(MINI, str(tmp_path / "a"), fraction=0.25, seed=3)
    b = carve_heldout(MINI, str(tmp_path / "b"), fraction=0.25, seed=3)
    every = _qrels_ids(MINI, "train")
    assert (a.train_ids, a.heldout_ids) == (b.train_ids, b.heldout_ids)             # deterministic
    assert not set(a.train_ids) & set(a.heldout_ids)                               # disjoint
    assert set(a.train_ids) | set(a.heldout_ids) == every                          # complete
    assert len(a.heldout_ids) == round(0.25 * len(every))
    # what is written is what was assigned; the held-out file never names a training query and vice versa
    assert _qrels_ids(a.path, "train") == set(a.train_ids)
    assert _qrels_ids(a.path, "heldout") == set(a.heldout_ids)
    # positives are carried over unchanged
    source = read_qrels(beir_qrels_url(MINI, "train"))
    _, train_pos = read_queries(a.path, "train")
    _, held_pos = read_queries(a.path, "heldout")
    assert {q: p for q, p in {**train_pos, **held_pos}.items()} == {q: p.ids for q, p in source.items()}
    # another seed, another carve; the file order does not matter, only the ids
    c = carve_heldout(MINI, str(tmp_path / "c"), fraction=0.25, seed=4)
    assert c.heldout_ids != a.heldout_ids
    assert assign_heldout(list(reversed(sorted(every))), 0.25, 3) == (a.train_ids, a.heldout_ids)


def test_split_rewrites_nothing_when_unchanged_and_subsets_keep_positives(tmp_path):
    out = str(tmp_path / "s")
    carve_heldout(MINI, out, fraction=0.2, seed=0, max_queries=12, max_docs=30)
    files = [os.path.join(out, f) for f in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/heldout.tsv")]
    stamps = [os.stat(f).st_mtime_ns for f in files]
    info = carve_heldout(MINI, out, fraction=0.2, seed=0, max_queries=12, max_docs=30)
    assert [os.stat(f).st_mtime_ns for f in files] == stamps  # the mining embedding store stays valid
    assert len(info.train_ids) + len(info.heldout_ids) == 12
    docs = {json.loads(line)["_id"] for line in open(files[0])}
    positives = read_qrels(beir_qrels_url(out, "train"))
    positives.update(read_qrels(beir_qrels_url(out, "heldout")))
    assert all(d in docs for p in positives.values() for d in p.ids)
    assert len(docs) == max(30, len({d for p in positives.values() for d in p.ids}))


# ---- the metrics --------------------------------------------------------------------------------------------

def test_metrics_match_a_hand_checked_case():
    others = [(f"x{i}", 0.5 - i / 1000) for i in range(200)]  # non-relevant filler, in descending score
    run = {
        # q1: its one relevant document at rank 2
        "q1": [("x-a", 0.99), ("d1", 0.98)] + others[:98],
        # q2: two relevant, one at rank 1, the other at rank 4; both in the top 100
        "q2": [("d2", 0.99), ("x-a", 0.98), ("x-b", 0.97), ("d3", 0.96)] + others[:96],
        # q3: its relevant document at rank 11 (outside the top 10, inside the top 100)
        "q3": [(f"y{i}", 0.9 - i / 100) for i in range(10)] + [("d4", 0.5)] + others[:89],
        # q4: two relevant, one at rank 3, the other not retrieved in the top 100
        "q4": [("x-a", 0.99), ("x-b", 0.98), ("d5", 0.97)] + others[:97],
    }
    qrels = {"q1": ["d1"], "q2": ["d2", "d3"], "q3": ["d4"], "q4": ["d5", "d6"]}
    means, per_query = M.evaluate_run(run, qrels, per_query=True)

    # by hand: DCG = sum over relevant hits of 1 / log2(rank + 1); IDCG puts every relevant document first
    expected = {
        "q1": {"ndcg@10": (1 / math.log2(3)) / 1, "mrr@10": 1 / 2, "recall@100": 1 / 1},
        "q2": {"ndcg@10": (1 / math.log2(2) + 1 / math.log2(5)) / (1 / math.log2(2) + 1 / math.log2(3)),
               "mrr@10": 1 / 1, "recall@100": 2 / 2},
        "q3": {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 1 / 1},
        "q4": {"ndcg@10": (1 / math.log2(4)) / (1 / math.log2(2) + 1 / math.log2(3)), "mrr@10": 1 / 3,
               "recall@100": 1 / 2},
    }
    for q in expected:
        for m in M.METRICS:
            assert per_query[q][m] == pytest.approx(expected[q][m], abs=1e-12), (q, m)
    for m in M.METRICS:  # the library's all-query figure is the mean of the per-query values
        assert means[m] == pytest.approx(np.mean([expected[q][m] for q in expected]), abs=1e-12), m
    # the same in numbers: q1 0.6309, q2 0.8772, q3 0, q4 0.3066; MRR (1/2 + 1 + 0 + 1/3) / 4; recall 3.5 / 4
    assert means["ndcg@10"] == pytest.approx((0.6309297536 + 0.8772153153 + 0.0 + 0.3065735964) / 4, abs=1e-9)
    assert means["mrr@10"] == pytest.approx((0.5 + 1 + 0 + 1 / 3) / 4) and means["recall@100"] == 0.875


def test_rank_is_exact_and_breaks_ties_by_corpus_position():
    docs = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], np.float32)  # d0 and d2 tie for a query along x
    run = M.rank(np.array([[1, 0]], np.float32), ["q"], docs, ["d0", "d1", "d2", "d3"], k=3)
    assert [d for d, _ in run["q"]] == ["d0", "d2", "d3"]
    assert [s for _, s in run["q"]] == pytest.approx([1.0, 1.0, 0.6])


def test_paired_bootstrap():
    a = {f"q{i}": 0.5 for i in range(50)}
    assert M.paired_bootstrap(a, {q: v + 0.1 for q, v in a.items()}) == pytest.approx((0.1, 0.1, 0.1))
    mean, lo, hi = M.paired_bootstrap(a, {q: v + (0.2 if i % 2 else -0.2) for i, (q, v) in enumerate(a.items())})
    assert mean == pytest.approx(0.0) and lo < 0 < hi


def test_pooled_paired_bootstrap_averages_the_seeds_before_resampling_queries():
    rng = np.random.default_rng(5)
    qids = [f"q{i}" for i in range(60)]
    a_runs = [dict(zip(qids, rng.random(60))) for _ in range(3)]
    b_runs = [dict(zip(qids, rng.random(60))) for _ in range(3)]
    # one run: the plain paired bootstrap
    assert M.pooled_paired_bootstrap(a_runs[:1], b_runs[:1], 500, 3) == M.paired_bootstrap(a_runs[0], b_runs[0], 500, 3)
    # the point estimate is the mean over seeds of each seed's mean difference (brute force over the dicts)
    by_seed = [np.mean([b[q] - a[q] for q in qids]) for a, b in zip(a_runs, b_runs)]
    assert M.pooled_paired_bootstrap(a_runs, b_runs)[0] == pytest.approx(float(np.mean(by_seed)), abs=1e-12)
    # seeds whose per-query luck cancels: each seed alone has a wide interval, pooled there is no difference
    flat = {q: 0.5 for q in qids}
    up_down = {q: 0.5 + (0.2 if i % 2 else -0.2) for i, q in enumerate(qids)}
    down_up = {q: 0.5 - (0.2 if i % 2 else -0.2) for i, q in enumerate(qids)}
    lo, hi = M.paired_bootstrap(flat, up_down)[1:]
    assert lo < -0.05 and hi > 0.05
    assert M.pooled_paired_bootstrap([flat, flat], [up_down, down_up]) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)
    # only queries that every run scored are paired; the run counts must match
    partial = dict(list(b_runs[1].items())[:30])
    mean = M.pooled_paired_bootstrap(a_runs[:2], [b_runs[0], partial])[0]
    shared = list(partial)
    assert mean == pytest.approx(np.mean([(b_runs[0][q] - a_runs[0][q] + partial[q] - a_runs[1][q]) / 2
                                          for q in shared]), abs=1e-12)
    with pytest.raises(ValueError, match="same number"):
        M.pooled_paired_bootstrap(a_runs, b_runs[:2])


# ---- training batches ---------------------------------------------------------------------------------------

def test_batches_never_repeat_a_text_and_cover_every_row_each_epoch():
    rows = [("query a", "doc 1", "doc 2"), ("query a", "doc 3", "doc 4"), ("query b", "doc 1", "doc 5"),
            ("query c", "doc 6", "doc 7"), ("query d", "doc 8", "doc 2"), ("query e", "doc 9", "doc 10")]
    gen = no_duplicate_batches(rows, 3, seed=0)
    for _ in range(3):  # epochs
        covered = []
        while len(covered) < len(rows):
            batch = next(gen)
            texts = [t for i in batch for t in rows[i]]
            assert len(texts) == len(set(texts))
            covered += batch
        assert sorted(covered) == list(range(len(rows)))
    first = [next(no_duplicate_batches(rows, 3, seed=0)) for _ in range(2)]
    assert first[0] == first[1]  # seeded


# ---- MarginMSE teacher margins ------------------------------------------------------------------------------

def _write_mined(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from streammine.sink.schema import MINED_SCHEMA
    os.makedirs(path, exist_ok=True)
    cols = {f.name: [r.get(f.name) for r in rows] for f in MINED_SCHEMA}
    pq.write_table(pa.table(cols, schema=MINED_SCHEMA), os.path.join(path, "part-00000.parquet"))
    return path


def test_teacher_margins_by_hand():
    # positives 0.9 and 0.7 against negatives 0.6, 0.75, 0.1 (only the first two taken): pos_i - neg_j
    m = teacher_margins([0.9, 0.7], [0.6, 0.75, 0.1], 2)
    assert m.shape == (2, 2) and m.ravel().tolist() == pytest.approx([0.9 - 0.6, 0.9 - 0.75, 0.7 - 0.6, 0.7 - 0.75])
    assert teacher_source([True, True]) == "cross-encoder" and teacher_source([False]) == "bi-encoder"
    with pytest.raises(Exception, match="mixed"):
        teacher_source([True, False])


def test_tuples_from_mined_carry_the_teacher_margin(tmp_path):
    texts = {d: f"text {d}" for d in ("p1", "p2", "n1", "n2", "p3", "n3")}
    rows = [{"query_id": "q1", "query": "query one", "positive_ids": ["p1", "p2"], "positive_scores": [0.8, 0.6],
             "negative_ids": ["n1", "n2"], "negative_scores": [0.5, 0.4],
             "positive_ce_scores": [7.0, 3.0], "negative_ce_scores": [-2.0, 1.0]},
            {"query_id": "q2", "query": "query two", "positive_ids": ["p3"], "positive_scores": [0.9],
             "negative_ids": ["n3"], "negative_scores": [0.95],
             "positive_ce_scores": [4.0], "negative_ce_scores": [0.5]}]
    ce = tuples_from_mined(_write_mined(str(tmp_path / "ce"), rows), texts, 1, margins=True)
    # by hand, cross-encoder scores, first negative: q1/p1 7 - (-2), q1/p2 3 - (-2), q2/p3 4 - 0.5
    assert ce.rows == [("query one", "text p1", "text n1"), ("query one", "text p2", "text n1"),
                       ("query two", "text p3", "text n3")]
    assert ce.labels == [(9.0,), (5.0,), (3.5,)] and ce.counts["teacher_scores"] == "cross-encoder"
    bare = [{k: v for k, v in r.items() if "_ce_" not in k} for r in rows]  # mined without a cross-encoder
    bi = tuples_from_mined(_write_mined(str(tmp_path / "bi"), bare), texts, 1, margins=True)
    # bi-encoder exact scores: 0.8 - 0.5, 0.6 - 0.5, 0.9 - 0.95 (a negative above its positive: negative margin)
    assert [lab[0] for lab in bi.labels] == pytest.approx([0.3, 0.1, -0.05], abs=1e-6)
    assert bi.counts["teacher_scores"] == "bi-encoder" and bi.rows == ce.rows
    two = tuples_from_mined(str(tmp_path / "ce"), texts, 2, margins=True)  # q2 is short of 2 negatives
    assert two.labels == [(9.0, 6.0), (5.0, 2.0), (3.5,)] and two.counts["queries_short_of_negatives"] == 1
    assert two.rows[2] == ("query two", "text p3", "text n3") and two.counts["rows_full_negatives"] == 2
    dropped = tuples_from_mined(str(tmp_path / "ce"), texts, 2, margins=True, short="drop")  # the earlier protocol
    assert dropped.labels == [(9.0, 6.0), (5.0, 2.0)] and dropped.counts["queries_dropped"] == 1
    assert tuples_from_mined(str(tmp_path / "ce"), texts, 1).labels is None  # mnrl: unchanged


# ---- several seeds ------------------------------------------------------------------------------------------

def test_seed_summary_by_hand_and_the_split_seed_holds_the_carve(tmp_path):
    from streammine.evaluate.runner import EvalRunner, format_seed_table, seed_summary
    runs = {1: [{"model": "before fine-tuning", "ndcg@10": 0.5, "delta_ndcg@10": None},
                {"model": "top", "ndcg@10": 0.6, "delta_ndcg@10": [0.1, 0.05, 0.15]}],
            0: [{"model": "before fine-tuning", "ndcg@10": 0.5, "delta_ndcg@10": None},
                {"model": "top", "ndcg@10": 0.7, "delta_ndcg@10": [0.2, 0.1, 0.3]}]}
    base, top = seed_summary(runs)
    assert (base["ndcg@10_mean"], top["ndcg@10_mean"]) == (0.5, 0.65)
    assert top["seeds"] == [0, 1] and top["ndcg@10_per_seed"] == [0.7, 0.6]      # in seed order
    assert top["delta_ndcg@10_per_seed"] == [[0.2, 0.1, 0.3], [0.1, 0.05, 0.15]]
    assert top["delta_ndcg@10_pooled"] is None and "delta_vs_pooled" not in top  # rows without per-query scores
    assert "| top | 0.6500 | 0.7000, 0.6000 |  |  | +0.2000 [+0.1000, +0.3000]; +0.1000" in format_seed_table([base, top])
    with pytest.raises(Exception, match="no row for seed"):
        seed_summary({0: runs[0], 1: runs[1][:1]})

    # with per-query nDCG@10: pooled over the seeds, vs the model before and vs the variant's compare_to
    def rows(before, top, guard):
        return [{"model": "before fine-tuning", "ndcg@10": np.mean(list(before.values())), "delta_ndcg@10": None,
                 "ndcg@10_per_query": before},
                {"model": "top", "ndcg@10": np.mean(list(top.values())), "delta_ndcg@10": [0, 0, 0],
                 "ndcg@10_per_query": top},
                {"model": "guard", "ndcg@10": np.mean(list(guard.values())), "delta_ndcg@10": [0, 0, 0],
                 "ndcg@10_per_query": guard, "delta_vs": {"reference": "top", "delta_ndcg@10": [0, 0, 0]}}]
    before = {"a": 0.2, "b": 0.4, "c": 0.6}
    runs = {0: rows(before, {"a": 0.3, "b": 0.5, "c": 0.6}, {"a": 0.4, "b": 0.5, "c": 0.6}),
            1: rows(before, {"a": 0.3, "b": 0.6, "c": 0.6}, {"a": 0.3, "b": 0.6, "c": 0.9})}
    _, top, guard = seed_summary(runs, samples=300)
    # by hand: top - before per query, mean over seeds: a 0.1, b 0.15, c 0 -> 0.0833; guard - top: 0.05, 0, 0.15
    assert top["delta_ndcg@10_pooled"][0] == pytest.approx(0.25 / 3, abs=1e-4)
    assert guard["delta_vs_pooled"]["reference"] == "top"
    assert guard["delta_vs_pooled"]["delta_ndcg@10"][0] == pytest.approx(0.2 / 3, abs=1e-4)
    lo, hi = guard["delta_vs_pooled"]["delta_ndcg@10"][1:]
    assert 0.0 <= lo <= 0.2 / 3 <= hi <= 0.15
    assert "vs top" in format_seed_table([top, guard])

    def heldout(seed, split_seed):
        cfg = load_eval_config({"base": {"data": MINI, "seed": seed, "split_seed": split_seed, "heldout_fraction": 0.3,
                                         "output": str(tmp_path / f"{seed}-{split_seed}")},
                                "variants": [{"name": "pairs", "mine": "none"}]})
        runner = EvalRunner(cfg)
        runner.split()
        return runner.heldout_ids
    assert heldout(0, None) == heldout(5, 0) == heldout(7, 0)                     # the carve is the split seed's
    assert heldout(5, None) != heldout(0, None)                                   # without it, the seed's


# ---- the config ---------------------------------------------------------------------------------------------

def test_config_refuses_mining_anything_but_the_training_split(tmp_path):
    base = {"base": {"data": MINI}, "variants": [{"name": "none", "mine": "none"},
                                                 {"name": "top", "mine": {"mining": {"sampler": {"method": "top"}}}}]}
    cfg = load_eval_config(base, {"base.train.max_steps": "3"})
    assert cfg.variants[0].mine is None and cfg.variants[1].mine == {"mining.sampler.method": "top"}
    assert cfg.base.train.max_steps == 3
    for bad in ({"input": {"split": "heldout"}}, {"input.path": "/elsewhere"}):
        with pytest.raises(ConfigError, match="never mined"):
            load_eval_config({"base": {"data": MINI}, "variants": [{"name": "x", "mine": bad}]})
    with pytest.raises(ConfigError, match="unique"):
        load_eval_config({"base": {"data": MINI}, "variants": [{"name": "x"}, {"name": "x"}]})
    mm = load_eval_config({"base": {"data": MINI}, "variants": [
        {"name": "m", "mine": {"mining.sampler.method": "top"}, "train": {"loss": "MarginMSE", "lr": 1}}]})
    assert mm.variants[0].train == {"loss": "marginmse", "lr": 1.0}
    from streammine.evaluate.runner import variant_train_config
    assert (variant_train_config(mm, mm.variants[0]).loss, mm.base.train.loss) == ("marginmse", "mnrl")
    for bad, match in (({"loss": "kl"}, "one of"), ({"los": "mnrl"}, "unknown"), ({"lr": "fast"}, "lr")):
        with pytest.raises(ConfigError, match=match):
            load_eval_config({"base": {"data": MINI}, "variants": [{"name": "m", "mine": {}, "train": bad}]})
    with pytest.raises(ConfigError, match="needs mined negatives"):
        load_eval_config({"base": {"data": MINI}, "variants": [{"name": "m", "train": {"loss": "marginmse"}}]})
    two = [{"name": "a", "mine": "none"}, {"name": "b", "mine": "none"}]
    # compare_to is against the named variant's per-query scores, not the model before fine-tuning
    from streammine.evaluate.runner import EvalRunner
    runner = EvalRunner(load_eval_config({"base": {"data": MINI, "output": str(tmp_path / "e")},
                                          "variants": two[:1] + [dict(two[1], compare_to="a")]}))
    runner.base_per_query = {q: {"ndcg@10": 0.0} for q in ("q1", "q2", "q3")}
    runner.ndcg_by_variant["a"] = {"q1": 0.5, "q2": 0.25, "q3": 1.0}
    d = runner.delta_vs("a", {"q1": 0.75, "q2": 0.25, "q3": 0.5})
    assert d["reference"] == "a" and d["delta_ndcg@10"][0] == pytest.approx((0.25 + 0 - 0.5) / 3, abs=1e-4)
    # compare_to names an earlier variant: a later one, itself or an unknown name is refused
    assert load_eval_config({"base": {"data": MINI},
                             "variants": [two[0], dict(two[1], compare_to="a")]}).variants[1].compare_to == "a"
    for variants in ([dict(two[0], compare_to="b"), two[1]], [two[0], dict(two[1], compare_to="b")],
                     [two[0], dict(two[1], compare_to="c")]):
        with pytest.raises(ConfigError, match="must name an earlier variant"):
            load_eval_config({"base": {"data": MINI}, "variants": variants})


def test_shipped_scifact_config_loads():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_eval_config(os.path.join(here, "benchmarks", "eval_scifact.yaml"))
    assert [v.mine is None for v in cfg.variants] == [True, False, False, False, False, False, False]
    assert {v.mine["mining.sampler.method"] for v in cfg.variants if v.mine} == {"top", "simans"}
    guard, guard_low, margin = cfg.variants[4:]
    assert guard.mine["mining.near_duplicate.positive"] == 0.98 and not guard.train
    assert guard_low.mine["mining.near_duplicate.positive"] == 0.8
    assert margin.train == {"loss": "marginmse"} and margin.mine["mining.sampler.method"] == "top"
    assert [v.compare_to for v in cfg.variants] == [None, "no hard negatives"] + ["naive top-k"] * 5


# ---- end to end ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_eval_end_to_end(ray_session, tmp_path):
    """40 documents, 16 queries (4 held out), 3 variants (the third: MarginMSE on bi-encoder teacher margins with
    the near-duplicate guard on), 2 optimizer steps, through the real mining pipeline."""
    from streammine.evaluate.split import read_corpus
    from streammine.evaluate.train import load_model
    from streammine.sink.parts import iter_rows

    out = str(tmp_path / "eval")
    config = {"base": {"data": MINI, "heldout_fraction": 0.25, "max_queries": 16, "max_docs": 40,
                       "max_seq_length": 32, "output": out, "eval_batch_size": 16, "bootstrap_samples": 200,
                       "train": {"max_steps": 2, "batch_size": 4},
                       "mine": {"index": {"shards": 1}, "encoder": {"num_actors": 1},
                                "mining": {"sampler": {"num_negatives": 1}}}},
              "variants": [{"name": "no hard negatives", "mine": "none"},
                           {"name": "naive top-k", "mine": {"mining": {"filter": {"method": "none"},
                                                                       "sampler": {"method": "top"}}}},
                           {"name": "marginmse guarded", "train": {"loss": "marginmse"}, "compare_to": "naive top-k",
                            "mine": {"mining": {"filter": {"method": "none"}, "sampler": {"method": "top"},
                                                "near_duplicate": {"positive": 0.98}}}},
                           {"name": "naive top-k again", "compare_to": "naive top-k",
                            "mine": {"mining": {"filter": {"method": "none"}, "sampler": {"method": "top"}}}}]}
    result = run_eval(config)

    assert [r["model"] for r in result.rows] == ["before fine-tuning", "no hard negatives", "naive top-k",
                                                 "marginmse guarded", "naive top-k again"]
    for r in result.rows:
        assert all(0.0 <= r[m] <= 1.0 for m in M.METRICS), r
        assert r["model"] in result.table
    base, pairs, mined, margin, again = result.rows

    # the same rows and settings: the model is not trained twice, its scores are the earlier variant's
    assert again["same_training_as"] == "naive top-k" and "same_training_as" not in margin
    assert again["train_seconds"] == 0.0 and again["ndcg@10_per_query"] == mined["ndcg@10_per_query"]
    assert again["delta_vs"] == {"reference": "naive top-k", "delta_ndcg@10": [0.0, 0.0, 0.0]}
    # compare_to: the paired difference of the stored per-query scores (an independent mean, by hand)
    assert set(margin["ndcg@10_per_query"]) == set(mined["ndcg@10_per_query"]) == set(base["ndcg@10_per_query"])
    by_hand = np.mean([margin["ndcg@10_per_query"][q] - mined["ndcg@10_per_query"][q] for q in mined["ndcg@10_per_query"]])
    assert margin["delta_vs"]["reference"] == "naive top-k"
    assert margin["delta_vs"]["delta_ndcg@10"][0] == pytest.approx(by_hand, abs=1e-4)
    assert np.mean(list(mined["ndcg@10_per_query"].values())) == pytest.approx(mined["ndcg@10"], abs=1e-4)
    assert "vs compare_to" in result.table
    assert base["corpus_vectors"] == "mining embedding store"
    assert pairs["negatives_per_row"] == 0 and mined["negatives_per_row"] == 1
    for r in (pairs, mined, margin):  # fine-tuning changed the weights
        assert r["training"]["steps"] == 2 and r["training"]["weight_relative_change"] > 0

    # the held-out queries were never mined: the mining output holds exactly the training queries
    split = result.report["split"]
    heldout = set(split["heldout_ids"])
    train = set(read_qrels(beir_qrels_url(split["path"], "train")))
    assert len(heldout) == 4 and len(train) == 12 and not heldout & train
    mined_ids = {q for batch in iter_rows(mined["mining"]["output"], columns=["query_id"])
                 for q in batch.column("query_id").to_pylist()}
    assert mined_ids == train
    assert mined["mining"]["heldout_queries_mined"] == 0

    # the base row's corpus vectors came from the mining store: scoring with freshly encoded ones agrees
    held_q, held_pos = read_queries(split["path"], "heldout")
    doc_ids, doc_texts = read_corpus(split["path"])
    means, _ = M.evaluate_model(load_model(_model_path(), "cpu", 32), held_q, held_pos, doc_ids,
                                doc_texts)
    for m in M.METRICS:
        assert means[m] == pytest.approx(base[m], abs=1e-3), m

    # MarginMSE: the teacher is the bi-encoder (no cross-encoder configured); its margins are the base model's
    # cosine(q, p) - cosine(q, n), checked against a fresh encoding; the guard reached mining through `mine:`
    assert margin["teacher_scores"] == "bi-encoder" and margin["training"]["loss"] == "marginmse"
    assert mined["training"]["loss"] == "mnrl" and "teacher_scores" not in mined
    assert margin["mining"]["mining_config"]["near_duplicate"]["positive"] == 0.98
    assert "removed_near_duplicate_of_positive" in margin["mining"]["counts"]
    texts = dict(zip(doc_ids, doc_texts))
    ex = tuples_from_mined(margin["mining"]["output"], texts, 1, margins=True)
    assert ex.rows and len(ex.labels) == len(ex.rows) == margin["train_rows"]
    base_model = load_model(_model_path(), "cpu", 32)
    for (q, p, n), (label,) in list(zip(ex.rows, ex.labels))[:4]:
        vq, vp, vn = M.encode(base_model, [q, p, n])
        assert label == pytest.approx(float(vq @ vp - vq @ vn), abs=1e-3)

    with open(result.json_path) as f:
        saved = json.load(f)
    assert saved["rows"][2]["ndcg@10"] == mined["ndcg@10"] and saved["machine"]["cpus"] >= 1


def _model_path() -> str:
    from streammine.encode.base import default_model_path
    return default_model_path()


def test_cli_module_parses_flags_and_prints_the_table(monkeypatch, capsys):
    import argparse
    from streammine.evaluate import cli as eval_cli
    from streammine.evaluate import runner
    parser = argparse.ArgumentParser(prog="streammine")
    eval_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--config", "x.yaml", "--data", "d", "--max-steps", "5",
                              "--set", "base.heldout_fraction=0.3", "--set", "base.mine.index.shards=4"])
    assert eval_cli.overrides_from_args(args) == {"base.data": "d", "base.train.max_steps": "5",
                                                  "base.heldout_fraction": "0.3", "base.mine.index.shards": "4"}
    cfg = load_eval_config({"base": {}, "variants": [{"name": "pairs", "mine": "none"}]},
                           eval_cli.overrides_from_args(args))
    assert (cfg.base.train.max_steps, cfg.base.heldout_fraction, cfg.base.mine) == (5, 0.3, {"index": {"shards": "4"}})
    row = {"model": "before fine-tuning", "ndcg@10": 0.5, "mrr@10": 0.5, "recall@100": 1.0, "delta_ndcg@10": None,
           "negatives_per_row": None, "train_rows": None, "mine_seconds": None, "train_seconds": None,
           "eval_seconds": 1.0}
    report = {"split": {"heldout_queries": 2, "train_queries": 8, "docs": 30}, "machine": {"cpus": 2, "device": "cpu"},
              "total_seconds": 3.0}
    seen = {}

    def fake_run_eval(config, overrides):
        seen.update(config=config, overrides=overrides)
        return runner.EvalResult([row], runner.format_table([row]), "/tmp/eval.json", report)

    monkeypatch.setattr(runner, "run_eval", fake_run_eval)
    assert eval_cli.run(args) == 0
    assert seen["config"] == "x.yaml" and seen["overrides"]["base.data"] == "d"
    printed = capsys.readouterr().out
    assert "| before fine-tuning | 0.5000 | 0.5000 | 1.0000 |" in printed and "/tmp/eval.json" in printed
