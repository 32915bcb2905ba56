"""Config values: every numeric key is type-checked (no bool for a number, no NaN/inf) and range-checked, with
the key named in a one-line ConfigError."""
from __future__ import annotations

import dataclasses

import pytest

from streammine.config import NUMERIC_RANGES, MineConfig
from streammine.errors import ConfigError

# numeric keys whose range validate() checks by its own rule (not through NUMERIC_RANGES); with a bad value each
CHECKED_IN_VALIDATE = {
    "index.shards": "0", "encoder.num_actors": "-1", "encoder.batch_size": "-1", "run.corpus_batch_size": "-1",
    "run.miner_actors": "0", "run.query_batch_size": "0", "mining.sampler.num_negatives": "0",
    "mining.sampler.range_min": "-1", "mining.sampler.random_share": "1.5", "mining.filter.perc": "0",
    "mining.sampler.simans_a": "0", "mining.cross_encoder.pool": "-1", "mining.cross_encoder.batch_size": "0",
    "serve.chunk_factor": "0", "serve.retention": "0", "serve.retries": "0", "serve.poll_seconds": "0",
    "mining.max_search_depth": "0",
}
BASE = {"input.path": "data", "mining.cross_encoder.model": "ce", "mining.cross_encoder.threshold": "0.5"}


def numeric_keys(node=None, prefix=""):
    node = node or MineConfig()
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield from numeric_keys(value, f"{prefix}{f.name}.")
        elif str(f.type).replace("Optional[", "").rstrip("]") in ("int", "float"):
            yield f"{prefix}{f.name}", str(f.type)


def reject(key, value):
    with pytest.raises(ConfigError) as e:
        MineConfig.from_sources(None, dict(BASE, **{key: value}))
    msg = str(e.value)
    assert key in msg and "\n" not in msg, msg


def test_every_numeric_key_has_a_range_check():
    keys = {k for k, _ in numeric_keys()}
    assert keys == set(NUMERIC_RANGES) | set(CHECKED_IN_VALIDATE), keys ^ (set(NUMERIC_RANGES) | set(CHECKED_IN_VALIDATE))


@pytest.mark.parametrize("key,annotation", list(numeric_keys()))
def test_numbers_refuse_booleans_nan_inf_and_out_of_range(key, annotation):
    reject(key, True)
    if "float" in annotation:
        for bad in ("nan", "inf", "-inf", float("nan")):
            reject(key, bad)
    else:
        reject(key, 2.5)
    low, high, low_open = NUMERIC_RANGES.get(key, (None, None, False))
    if key in CHECKED_IN_VALIDATE:
        reject(key, CHECKED_IN_VALIDATE[key])
    if low is not None:
        reject(key, str(low if low_open else low - 1))
    if high is not None:
        reject(key, str(high + 1))


def test_defaults_and_edge_values_are_accepted():
    MineConfig.from_sources(None, BASE)
    MineConfig.from_sources(None, dict(BASE, **{"index.oversample": "0", "mining.filter.margin": "0",
                                                "mining.filter.min_score": "-0.5", "input.max_queries": "1",
                                                "index.pq_nbits": "16", "mining.sampler.simans_b": "-0.1"}))


def test_booleans_are_booleans():
    reject("input.lenient", 1)
    reject("index.prune_rescoring", "maybe")
