"""Cross-encoder denoising (RocketQA) end to end, with a real sentence-transformers CrossEncoder.

No trained cross-encoder installs offline, so the test builds one from the packaged MiniLM weights with a freshly
initialized (seeded) one-score head and saves it: its scores carry no relevance meaning. What is checked is the
plumbing and the rule: only the first ``pool`` filter survivors are scored, with the query and the document text;
a negative is kept only if the model, reloaded here independently, scores it below the threshold; the counts add up.
"""
from __future__ import annotations

import numpy as np
import pytest

import streammine
from serve_helpers import tiny_scifact
from streammine.encode.base import default_model_path
from streammine.sink.parts import iter_rows

POOL = 6


def rows_of(out: str) -> dict:
    return {r["query_id"]: r for batch in iter_rows(out) for r in batch.to_pylist()}


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory) -> str:
    import torch
    from sentence_transformers import CrossEncoder
    torch.manual_seed(0)
    model = CrossEncoder(default_model_path(), num_labels=1, device="cpu")
    path = str(tmp_path_factory.mktemp("ce") / "minilm-untrained-head")
    model.save(path)
    return path


@pytest.fixture(scope="module")
def plain_run(ray_session, tmp_path_factory):
    """The tiny set mined without a cross-encoder, asking for every survivor of the filters (in rank order), with
    the bi-encoder's scores exported (``output.export_scores``)."""
    tmp = tmp_path_factory.mktemp("plain")
    data = tiny_scifact(str(tmp / "beir"), n_docs=60)
    base = dict(input={"path": data["path"]}, index={"shards": 2},
                run={"work_dir": str(tmp / "work"), "progress": False})
    result = streammine.mine(dict(base, output={"path": str(tmp / "all"), "export": ["st-ntuple", "flagembedding"],
                                                "export_scores": True},
                                  mining={"sampler": {"method": "top", "num_negatives": 50}}))
    return data, base, result


@pytest.mark.slow
def test_cross_encoder_keeps_only_negatives_scored_below_threshold(plain_run, tmp_path, cross_encoder_dir):
    from sentence_transformers import CrossEncoder
    data, base, plain = plain_run
    survivors = {q: r["negative_ids"] for q, r in rows_of(plain.output).items()}
    assert sum(len(s) > POOL for s in survivors.values()) >= 3  # the pool cuts some lists

    model = CrossEncoder(cross_encoder_dir, device="cpu")
    pairs = [(q, d) for q, ids in survivors.items() for d in ids[:POOL]]
    scores = dict(zip(pairs, model.predict([(data["queries"][q], data["docs"][d]) for q, d in pairs],
                                           show_progress_bar=False)))
    # about half the pooled candidates go; the threshold sits halfway between two neighbouring scores, so scores
    # that differ in the last bits (another batch, the oneDNN layers in the miner) fall on the same side
    ordered = np.unique(np.asarray(list(scores.values()), np.float64))
    near = range(max(1, len(ordered) // 2 - 3), min(len(ordered), len(ordered) // 2 + 4))
    gap = max(near, key=lambda i: ordered[i] - ordered[i - 1])  # the widest gap near the median
    threshold = float((ordered[gap - 1] + ordered[gap]) / 2)

    result = streammine.mine(dict(base, output={"path": str(tmp_path / "ce")},
                                  mining={"sampler": {"method": "top", "num_negatives": 3},
                                          "cross_encoder": {"model": cross_encoder_dir, "threshold": threshold,
                                                            "pool": POOL}}))
    rows = rows_of(result.output)
    assert set(rows) == set(survivors)
    removed = 0
    for q, row in rows.items():
        pooled = survivors[q][:POOL]
        kept = [d for d in pooled if scores[(q, d)] < threshold]
        assert row["negative_ids"] == kept[:3], q
        assert row["n_removed_cross_encoder"] == len(pooled) - len(kept), q
        assert row["short"] == (len(kept) < 3)
        removed += len(pooled) - len(kept)
    assert 0 < removed == result.summary["counts"]["removed_by_cross_encoder"]
    assert result.summary["stages"]["cross_encoder"]["rows"] == sum(len(s[:POOL]) for s in survivors.values())
    # teacher scores: the model's score of every positive and kept negative, aligned with the id lists
    for q, row in rows.items():
        assert row["negative_ce_scores"] == pytest.approx([scores[(q, d)] for d in row["negative_ids"]], abs=1e-5)
        want = model.predict([(data["queries"][q], data["docs"][d]) for d in row["positive_ids"]],
                             show_progress_bar=False)
        assert row["positive_ce_scores"] == pytest.approx(want.tolist(), abs=1e-5), q


def bi_encoder_scores(data: dict) -> dict:
    """(query text, document text) -> the exact inner product of the normalized embeddings, brute force."""
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(default_model_path(), device="cpu")
    qs, ds = list(data["queries"].values()), list(data["docs"].values())
    q, d = (model.encode(t, normalize_embeddings=True, convert_to_numpy=True) for t in (qs, ds))
    sims = q.astype(np.float64) @ d.astype(np.float64).T
    return {(qs[i], ds[j]): sims[i, j] for i in range(len(qs)) for j in range(len(ds))}


@pytest.mark.slow
def test_export_scores_without_cross_encoder_are_the_bi_encoder_scores(plain_run):
    import json
    import pyarrow.parquet as pq
    data, _, plain = plain_run
    exact = bi_encoder_scores(data)
    rows = rows_of(plain.output)
    assert all(r["negative_ce_scores"] is None and r["positive_ce_scores"] is None for r in rows.values())
    lines = [json.loads(line) for line in open(plain.summary["exports"]["flagembedding"]["path"])]
    assert len(lines) == len(rows) and all("prompt" not in line for line in lines)
    for line in lines:  # matched by text: each score is the one of the text beside it
        assert line["pos_scores"] == pytest.approx([exact[(line["query"], t)] for t in line["pos"]], abs=1e-4)
        assert line["neg_scores"] == pytest.approx([exact[(line["query"], t)] for t in line["neg"]], abs=1e-4)
        assert line["neg_scores"] == sorted(line["neg_scores"], reverse=True)
    table = pq.read_table(plain.summary["exports"]["st-ntuple"]["path"]).to_pylist()
    assert table
    for r in table:
        texts = [r["positive"]] + [r[k] for k in r if k.startswith("negative_")]
        assert r["scores"] == pytest.approx([exact[(r["anchor"], t)] for t in texts], abs=1e-4)


@pytest.mark.slow
def test_cross_encoder_margins_random_negatives_and_exports(plain_run, tmp_path, cross_encoder_dir):
    """Margins relative to the positives' minimum cross-encoder score (no threshold), a random share (the random
    negatives are scored, not denoised), and the teacher scores in the exports, matched by text."""
    import json
    import pyarrow.parquet as pq
    from sentence_transformers import CrossEncoder
    data, base, plain = plain_run
    survivors = {q: r["negative_ids"] for q, r in rows_of(plain.output).items()}
    model = CrossEncoder(cross_encoder_dir, device="cpu")

    def ce(q, d):
        return float(model.predict([(data["queries"][q], data["docs"][d])], show_progress_bar=False)[0])

    # the seeded head's scores sit within about 0.01 of 0.5: margins on that scale keep about a third
    margin, relative = 0.0005, 0.002
    result = streammine.mine(dict(base, output={"path": str(tmp_path / "ce"), "export": ["st-triplet", "flagembedding"]},
                                  mining={"sampler": {"method": "top", "num_negatives": 3, "random_share": 0.34},
                                          "cross_encoder": {"model": cross_encoder_dir, "margin": margin,
                                                            "relative_margin": relative, "pool": POOL}}))
    rows = rows_of(result.output)
    n_random = decided = n_hard = 0
    by_text = {}
    for q, row in rows.items():
        c_plus = min(ce(q, p) for p in row["positive_ids"])
        bound = min(c_plus - margin, c_plus - abs(c_plus) * relative)
        pooled = {d: ce(q, d) for d in survivors[q][:POOL]}
        hard = [d for d, r in zip(row["negative_ids"], row["negative_ranks"]) if r >= 0]
        n_hard += len(hard)
        if all(abs(s - bound) > 1e-5 for s in pooled.values()):  # no score within float noise of the bound
            decided += 1
            assert hard == [d for d, s in pooled.items() if s < bound][:2], q
            assert row["n_removed_cross_encoder"] == sum(s >= bound for s in pooled.values()), q
        n_random += sum(r < 0 for r in row["negative_ranks"])
        want = [ce(q, d) for d in row["negative_ids"]]  # random negatives included
        assert row["negative_ce_scores"] == pytest.approx(want, abs=1e-5), q
        assert row["positive_ce_scores"] == pytest.approx([ce(q, p) for p in row["positive_ids"]], abs=1e-5), q
        for d, s in zip(row["positive_ids"] + row["negative_ids"], row["positive_ce_scores"] + row["negative_ce_scores"]):
            by_text[(data["queries"][q], data["docs"][d])] = s
    assert decided >= len(rows) - 1 and n_random > 0 and n_hard > 0
    assert result.summary["counts"]["removed_by_cross_encoder"] > 0
    lines = [json.loads(line) for line in open(result.summary["exports"]["flagembedding"]["path"])]
    assert lines
    for line in lines:
        assert line["pos_scores"] == [by_text[(line["query"], t)] for t in line["pos"]]
        assert line["neg_scores"] == [by_text[(line["query"], t)] for t in line["neg"]]
    triplets = pq.read_table(result.summary["exports"]["st-triplet"]["path"]).to_pylist()
    assert triplets and all(r["scores"] == [by_text[(r["anchor"], r["positive"])], by_text[(r["anchor"], r["negative"])]]
                            for r in triplets)


def test_cross_encoder_config_is_checked_and_hashed_only_when_on():
    from streammine.config import MineConfig
    from streammine.errors import ConfigError
    with pytest.raises(ConfigError, match="threshold is required"):
        MineConfig.from_sources(overrides={"input.path": "x", "mining.cross_encoder.model": "some/dir"})
    plain = MineConfig.from_sources(overrides={"input.path": "x"})
    unused = MineConfig.from_sources(overrides={"input.path": "x", "mining.cross_encoder.pool": 7})
    on = MineConfig.from_sources(overrides={"input.path": "x", "mining.cross_encoder.model": "d",
                                            "mining.cross_encoder.threshold": 0.5})
    stricter = MineConfig.from_sources(overrides={"input.path": "x", "mining.cross_encoder.model": "d",
                                                  "mining.cross_encoder.threshold": 0.4})
    assert plain.config_hash() == unused.config_hash()  # off: the option leaves existing hashes alone
    assert len({plain.config_hash(), on.config_hash(), stricter.config_hash()}) == 3


def test_margins_alone_are_enough_and_the_flags_reach_the_config():
    from streammine.cli import build_parser, overrides_from_args
    from streammine.config import MineConfig
    from streammine.errors import ConfigError
    args = build_parser().parse_args(["mine", "--input", "x", "--cross-encoder", "d", "--ce-margin", "0.1",
                                      "--ce-relative-margin", "0.05", "--export-scores"])
    cfg = MineConfig.from_sources(overrides=overrides_from_args(args))
    assert (cfg.mining.cross_encoder.threshold, cfg.mining.cross_encoder.margin,
            cfg.mining.cross_encoder.relative_margin, cfg.output.export_scores) == (None, 0.1, 0.05, True)
    with pytest.raises(ConfigError, match=r"mining.cross_encoder.margin must be >= 0") as e:
        MineConfig.from_sources(overrides={"input.path": "x", "mining.cross_encoder.model": "d",
                                           "mining.cross_encoder.margin": "-0.1"})
    assert "\n" not in str(e.value)
    plain = MineConfig.from_sources(overrides={"input.path": "x", "mining.cross_encoder.model": "d",
                                               "mining.cross_encoder.threshold": 0.5})
    with_margin = MineConfig.from_sources(overrides={"input.path": "x", "mining.cross_encoder.model": "d",
                                                     "mining.cross_encoder.threshold": 0.5,
                                                     "mining.cross_encoder.margin": 0.0})
    assert plain.config_hash() != with_margin.config_hash()
