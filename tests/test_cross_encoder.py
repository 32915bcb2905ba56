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


@pytest.mark.slow
def test_cross_encoder_keeps_only_negatives_scored_below_threshold(ray_session, tmp_path, cross_encoder_dir):
    from sentence_transformers import CrossEncoder
    data = tiny_scifact(str(tmp_path / "beir"), n_docs=60)
    base = dict(input={"path": data["path"]}, index={"shards": 2},
                run={"work_dir": str(tmp_path / "work"), "progress": False})
    # every survivor of the filters, in rank order: a run that asks for all of them and has no cross-encoder
    survivors_out = streammine.mine(dict(base, output={"path": str(tmp_path / "all")},
                                         mining={"sampler": {"method": "top", "num_negatives": 50}})).output
    survivors = {q: r["negative_ids"] for q, r in rows_of(survivors_out).items()}
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
