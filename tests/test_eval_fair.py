"""The fair evaluation protocol: every variant trains on the training split's (query, positive) rows, a query short
of negatives keeps its rows (the row accounting), the ragged losses equal sentence-transformers' on full rows and a
brute-force reference on short ones, and the k-fold split judges every query exactly once."""
from __future__ import annotations

import os

import numpy as np
import pytest

from streammine.api import demo_data_path
from streammine.evaluate import metrics as M
from streammine.evaluate.folds import merge_folds
from streammine.evaluate.losses import flatten_batch, ragged_margin_mse, ragged_mnrl
from streammine.evaluate.split import assign_fold, assign_folds, carve_heldout, read_queries
from streammine.evaluate.train import pairs_from_split, tuples_from_mined
from streammine.io.readers import beir_qrels_url, read_qrels

MINI = demo_data_path()


def _write_mined(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from streammine.sink.schema import MINED_SCHEMA
    os.makedirs(path, exist_ok=True)
    cols = {f.name: [r.get(f.name) for r in rows] for f in MINED_SCHEMA}
    pq.write_table(pa.table(cols, schema=MINED_SCHEMA), os.path.join(path, "part-00000.parquet"))
    return path


# ---- the row accounting -------------------------------------------------------------------------------------

def test_a_variant_with_short_queries_keeps_every_row(tmp_path):
    """Two negatives asked for: q1 has both, q2 one, q3 none (a filter removed every candidate), q4 is not in the
    mining output at all. Every (query, positive) row of the split stays, with the negatives it has."""
    queries = {"q1": "query one", "q2": "query two", "q3": "query three", "q4": "query four"}
    positives = {"q1": ["p1", "p2"], "q2": ["p3"], "q3": ["p4"], "q4": ["p5"]}
    texts = {d: f"text {d}" for d in ("p1", "p2", "p3", "p4", "p5", "n1", "n2", "n3", "n4")}
    mined = [{"query_id": "q1", "query": "query one", "positive_ids": ["p1", "p2"], "positive_scores": [0.9, 0.8],
              "negative_ids": ["n1", "n2", "n3"], "negative_scores": [0.7, 0.6, 0.5]},
             {"query_id": "q2", "query": "query two", "positive_ids": ["p3"], "positive_scores": [0.9],
              "negative_ids": ["n4"], "negative_scores": [0.85]},
             {"query_id": "q3", "query": "query three", "positive_ids": ["p4"], "positive_scores": [0.4],
              "negative_ids": [], "negative_scores": []}]
    out = _write_mined(str(tmp_path / "mined"), mined)
    ex = tuples_from_mined(out, texts, 2, split=(queries, positives))

    # brute force: the split's pairs, in (query, positive) order, each with its query's first two negatives
    negatives_of = {"q1": ["n1", "n2"], "q2": ["n4"], "q3": [], "q4": []}
    expected = [(queries[q], texts[p]) + tuple(texts[n] for n in negatives_of[q])
                for q in sorted(positives) for p in sorted(positives[q])]
    assert ex.rows == expected
    pairs = pairs_from_split(queries, positives, texts)
    assert [r[:2] for r in ex.rows] == pairs.rows                   # the same rows as the no-negatives variant
    assert ex.query_ids == ["q1", "q1", "q2", "q3", "q4"]
    c = ex.counts
    assert (c["rows"], c["rows_full_negatives"], c["rows_by_negatives"]) == (5, 2, {"0": 2, "1": 1, "2": 2})
    assert (c["queries_short_of_negatives"], c["queries_not_mined"], c["queries_dropped"]) == (3, 1, 0)
    # MarginMSE: a margin per negative each row has (teacher = the bi-encoder scores), by hand
    mm = tuples_from_mined(out, texts, 2, margins=True, split=(queries, positives))
    assert mm.rows == ex.rows
    assert mm.labels == [pytest.approx((0.2, 0.3)), pytest.approx((0.1, 0.2)), pytest.approx((0.05,)), (), ()]
    # the earlier protocol stays reachable: short queries dropped, counted
    old = tuples_from_mined(out, texts, 2, split=(queries, positives), short="drop")
    assert old.rows == expected[:2] and old.counts["queries_dropped"] == 3


def test_the_training_step_takes_rows_of_any_length():
    rows = [("a1", "p1", "n1", "n2"), ("a2", "p2"), ("a3", "p3", "n3")]
    anchors, positives, negatives, owner, margins = flatten_batch(rows, [(0.1, 0.2), (), (0.3,)])
    assert (anchors, positives, negatives) == (["a1", "a2", "a3"], ["p1", "p2", "p3"], ["n1", "n2", "n3"])
    assert owner == [0, 0, 2] and margins == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="margins"):
        flatten_batch(rows, [(0.1,), (), (0.3,)])


# ---- the losses ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def st_model():
    from streammine.encode.base import default_model_path
    from streammine.evaluate.train import load_model
    return load_model(default_model_path(), "cpu", 32)


def test_ragged_losses_equal_the_library_on_full_rows(st_model):
    import torch
    from sentence_transformers.sentence_transformer import losses
    g = torch.Generator().manual_seed(0)
    a, p, n1, n2 = (torch.randn(5, 8, generator=g) for _ in range(4))
    mnrl = losses.MultipleNegativesRankingLoss(st_model, scale=20.0)
    expected = mnrl.compute_loss_from_embeddings([a, p, n1, n2], None)
    # the ragged layout: row i's negatives n1[i], n2[i] side by side
    flat = torch.stack([n1, n2], dim=1).reshape(-1, 8)
    assert float(ragged_mnrl(a, p, flat, 20.0)) == pytest.approx(float(expected), rel=1e-5)
    labels = torch.randn(5, 2, generator=g)
    expected_mm = losses.MarginMSELoss(st_model).compute_loss_from_embeddings([a, p, n1, n2], labels)
    owner = [i for i in range(5) for _ in range(2)]
    got = ragged_margin_mse(a, p, flat, owner, labels.reshape(-1).tolist())
    assert float(got) == pytest.approx(float(expected_mm), rel=1e-5)


def test_ragged_losses_against_a_brute_force_reference():
    import torch
    rng = np.random.default_rng(1)
    a, p = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    negatives, owner = rng.normal(size=(2, 4)), [0, 2]            # row 1 has no negative
    cos = lambda x, y: x @ y / np.linalg.norm(x) / np.linalg.norm(y)  # noqa: E731
    pool = list(p) + list(negatives)
    by_hand = np.mean([-(20 * cos(a[i], p[i])) + np.log(sum(np.exp(20 * cos(a[i], c)) for c in pool))
                       for i in range(3)])
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    assert float(ragged_mnrl(t(a), t(p), t(negatives), 20.0)) == pytest.approx(by_hand, rel=1e-9)
    margins = [0.5, -0.25]
    mm = np.mean([(a[i] @ p[i] - a[i] @ negatives[j] - margins[j]) ** 2 for j, i in enumerate(owner)])
    assert float(ragged_margin_mse(t(a), t(p), t(negatives), owner, margins)) == pytest.approx(mm, rel=1e-9)
    # no negative anywhere: in-batch only, and MarginMSE has nothing to fit
    pairs_only = np.mean([-(20 * cos(a[i], p[i])) + np.log(sum(np.exp(20 * cos(a[i], c)) for c in p))
                          for i in range(3)])
    assert float(ragged_mnrl(t(a), t(p), t(np.zeros((0, 4))), 20.0)) == pytest.approx(pairs_only, rel=1e-9)
    assert float(ragged_margin_mse(t(a), t(p), t(np.zeros((0, 4))), [], [])) == 0.0


# ---- k-fold -------------------------------------------------------------------------------------------------

def test_folds_are_disjoint_and_cover_every_query_once(tmp_path):
    ids = [f"q{i}" for i in range(23)]
    folds = assign_folds(reversed(ids), 5, seed=2)
    # brute force: count how often each id appears over all folds
    seen = {q: 0 for q in ids}
    for f in folds:
        for q in f:
            seen[q] += 1
    assert set(seen.values()) == {1} and sum(len(f) for f in folds) == len(ids)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert folds == assign_folds(ids, 5, seed=2) and folds != assign_folds(ids, 5, seed=3)
    for i, f in enumerate(folds):
        train, held = assign_fold(ids, 5, i, 2)
        assert held == f and set(train) == set(ids) - set(f)

    # the carves of a 3-fold run on the demo data: every query held out by exactly one carve, trained by the others
    every = set(read_qrels(beir_qrels_url(MINI, "train")))
    held_by = {q: [] for q in every}
    for i in range(3):
        info = carve_heldout(MINI, str(tmp_path / f"fold-{i}"), 0.2, seed=0, fold=(i, 3))
        train_q, _ = read_queries(info.path, "train")
        held_q, _ = read_queries(info.path, "heldout")
        assert not set(train_q) & set(held_q) and set(train_q) | set(held_q) == every
        assert info.fold == [i, 3]
        for q in held_q:
            held_by[q].append(i)
    assert all(len(v) == 1 for v in held_by.values())


def test_merging_folds_scores_every_query_once(tmp_path):
    def row(name, per_query, **extra):
        vals = list(per_query.values())
        return {"model": name, "ndcg@10": float(np.mean(vals)), "mrr@10": float(np.mean(vals)),
                "recall@100": 1.0, "delta_ndcg@10": None, "negatives_per_row": extra.pop("neg", None),
                "train_rows": extra.pop("rows", None), "rows_full_negatives": extra.pop("full", None),
                "mine_seconds": None, "train_seconds": 1.0, "eval_seconds": 1.0, "ndcg@10_per_query": per_query,
                **extra}
    fold0 = [row("before fine-tuning", {"a": 0.2, "b": 0.4}),
             row("top", {"a": 0.5, "b": 0.4}, neg=1, rows=10, full=8)]
    fold1 = [row("before fine-tuning", {"c": 0.6}),
             row("top", {"c": 0.9}, neg=1, rows=11, full=11)]
    base, top = merge_folds([fold0, fold1], samples=200)
    # means over the union of the queries (not the mean of the fold means): (0.5 + 0.4 + 0.9) / 3
    assert top["ndcg@10"] == pytest.approx(0.6, abs=1e-4) and base["ndcg@10"] == pytest.approx(0.4, abs=1e-4)
    assert top["ndcg@10_per_query"] == {"a": 0.5, "b": 0.4, "c": 0.9}
    assert (top["train_rows"], top["rows_full_negatives"], top["heldout_per_fold"]) == (21, 19, [2, 1])
    assert top["delta_ndcg@10"][0] == pytest.approx((0.3 + 0.0 + 0.3) / 3, abs=1e-4)
    with pytest.raises(ValueError, match="earlier fold"):
        merge_folds([fold0, fold0])
    assert M.paired_bootstrap(base["ndcg@10_per_query"], top["ndcg@10_per_query"], 200)[0] == \
        pytest.approx(top["delta_ndcg@10"][0], abs=1e-4)


# ---- end to end ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_fold_eval_keeps_every_row_through_the_real_pipeline(ray_session, tmp_path):
    """2 folds over 12 demo queries, through real mining (a local Ray), training (1 step) and scoring: a filter
    strict enough to leave queries without a negative still trains on every (query, positive) row, and the merged
    rows score each query once."""
    from streammine.evaluate import run_eval
    config = {"base": {"data": MINI, "folds": 2, "max_queries": 12, "max_docs": 30, "max_seq_length": 32,
                       "output": str(tmp_path / "eval"), "eval_batch_size": 16, "bootstrap_samples": 100,
                       "train": {"max_steps": 1, "batch_size": 4},
                       "mine": {"index": {"shards": 1}, "encoder": {"num_actors": 1},
                                "mining": {"sampler": {"num_negatives": 1}}}},
              "variants": [{"name": "strict percpos",  # of the top 2 candidates only those below 0.5 s+
                            "mine": {"mining": {"filter": {"method": "topk-percpos", "perc": 0.5},
                                                "sampler": {"method": "top", "range_max": 2}}}}]}
    result = run_eval(config)
    base, strict = result.rows
    every = set(result.report["split"]["heldout_ids"])
    assert len(every) == 12 and result.report["split"]["folds"] == 2
    for r in result.rows:
        assert set(r["ndcg@10_per_query"]) == every and r["heldout_per_fold"] == [6, 6]
    # the fair protocol: each fold trained on every (query, positive) pair of its training qrels (read back from
    # the carved files), though some queries had no negative left
    pairs_per_fold = [sum(len(p.ids) for p in read_qrels(beir_qrels_url(str(tmp_path / "eval" / "data" / f"fold-{i}"),
                                                                        "train")).values()) for i in range(2)]
    assert [f["train_rows"] for f in strict["per_fold"]] == pairs_per_fold
    assert strict["train_rows"] == sum(pairs_per_fold)
    assert strict["rows_full_negatives"] < strict["train_rows"]
    assert base["delta_ndcg@10"] is None and strict["delta_ndcg@10"] is not None
    assert f"| {strict['train_rows']} ({strict['rows_full_negatives']}) |" in result.table


def test_shipped_fair_config_mines_with_the_teacher_and_scores_it(monkeypatch):
    """benchmarks/eval_scifact_fair.yaml: 5 folds, rows kept, the teacher-mined variants train the student, and the
    teacher's directory (as eval_scifact.py resolves it) is the same string in the variants and the reference row
    (so the reference row takes its corpus vectors from the teacher's mining store)."""
    import importlib.util
    from streammine.evaluate import load_eval_config
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.syspath_prepend(os.path.join(here, "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_eval_scifact", os.path.join(here, "benchmarks",
                                                                                     "eval_scifact.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    import teacher
    monkeypatch.setattr(teacher, "teacher_model_path", lambda out_dir=teacher.DEFAULT_DIR: out_dir)  # no assembly
    data = bench.resolve_teacher(bench.load_yaml(os.path.join(here, "benchmarks", "eval_scifact_fair.yaml")))
    cfg = load_eval_config(data)
    assert (cfg.base.folds, cfg.base.short_rows, cfg.base.model) == (5, "keep", None)
    taught = [v for v in cfg.variants if v.mine and v.mine.get("encoder.model")]
    assert [v.name for v in taught] == ["teacher naive top-k", "teacher topk-percpos 0.95", "teacher SimANS",
                                        "MarginMSE mpnet teacher"]
    assert {v.mine["encoder.model"] for v in taught} == set(cfg.base.reference_models.values()) \
        == {teacher.DEFAULT_DIR}
    assert taught[1].mine["mining.filter.perc"] == 0.95 and taught[3].train == {"loss": "marginmse"}
    old = load_eval_config(os.path.join(here, "benchmarks", "eval_scifact.yaml"))
    assert (old.base.folds, old.base.short_rows) == (None, "drop")  # the recorded table's protocol


def test_config_checks_folds_short_rows_and_reference_models():
    from streammine.errors import ConfigError
    from streammine.evaluate import load_eval_config
    base = {"data": MINI}
    pairs = [{"name": "pairs", "mine": "none"}]
    for bad, match in (({"folds": 1}, "folds"), ({"short_rows": "pad"}, "short_rows"),
                       ({"reference_models": {"pairs": "x"}}, "differ"),
                       ({"reference_models": {"t": "x"}, "include_base": False}, "include_base")):
        with pytest.raises(ConfigError, match=match):
            load_eval_config({"base": dict(base, **bad), "variants": pairs})
    cfg = load_eval_config({"base": base, "variants": pairs}, {"base.folds": "4"})
    assert (cfg.base.folds, cfg.base.short_rows) == (4, "keep")
