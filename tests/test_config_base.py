"""ConfigBase: one loader for every config class, values read by their resolved type hints (not by searching the
annotation's text), with the same one-line errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Union

import pytest

from streammine.config import ConfigBase, MineConfig
from streammine.errors import ConfigError
from streammine.evaluate import EvalConfig, load_eval_config
from streammine.train import OnlineTrainerConfig


@dataclass
class Inner:
    count: "int | None" = 3          # PEP 604 spelling: no "[int]" in the annotation's text
    ratio: Union[None, float] = None  # None first: no "Optional[" either
    name: Optional[str] = "x"        # a name whose default is not None: "none" stays a name
    flag: bool = False


@dataclass
class Outer(ConfigBase):
    inner: Inner = field(default_factory=Inner)
    sizes: List[str] = field(default_factory=list)
    steps: int = 1
    rate: float = 0.5


def test_strings_are_read_as_the_type_hint_says():
    cfg = Outer.from_sources(None, {"inner.count": "7", "inner.ratio": "0.25", "inner.flag": "yes",
                                    "sizes": "a,b", "steps": "4", "rate": "2"})
    assert (cfg.inner.count, cfg.inner.ratio, cfg.inner.flag, cfg.sizes, cfg.steps, cfg.rate) == \
        (7, 0.25, True, ["a", "b"], 4, 2.0)
    assert type(cfg.inner.count) is int and type(cfg.inner.ratio) is float and type(cfg.rate) is float


def test_none_words_clear_optional_fields_but_not_names():
    cfg = Outer.from_sources(None, {"inner.count": "none", "inner.ratio": "null", "inner.name": "none"})
    assert cfg.inner.count is None and cfg.inner.ratio is None and cfg.inner.name == "none"


def test_an_int_for_a_float_becomes_a_float_only_where_the_field_is_not_optional():
    cfg = Outer.from_dict({"rate": 1, "inner": {"ratio": 1}})
    assert type(cfg.rate) is float and type(cfg.inner.ratio) is int  # config hashes stay what they were


def test_errors_are_one_line_and_name_the_key():
    for overrides, expected in (({"inner.count": "many"}, "inner.count: cannot read 'many' as int"),
                                ({"inner.flag": "maybe"}, "inner.flag: cannot read 'maybe' as bool"),
                                ({"inner.nope": 1}, "unknown config key(s): inner.nope"),
                                ({"inner": 3}, "inner must be a mapping, got 3")):
        with pytest.raises(ConfigError) as e:
            Outer.from_sources(None, overrides)
        assert str(e.value) == expected


def test_every_config_class_loads_through_the_base(tmp_path):
    for cls in (MineConfig, OnlineTrainerConfig, EvalConfig):
        assert issubclass(cls, ConfigBase)
    online = OnlineTrainerConfig.from_sources(None, {"last_versions": "none", "max_steps": "5"}, validate=False)
    assert online.last_versions is None and online.max_steps == 5
    (tmp_path / "eval.yaml").write_text("base:\n  data: somewhere\n  max_seq_length: 64\n"
                                        "variants:\n  - name: top\n    mine: {mining: {seed: 1}}\n")
    ev = load_eval_config(str(tmp_path / "eval.yaml"), {"base.max_seq_length": "none", "base.train.lr": "1e-4"})
    assert ev.base.max_seq_length is None and ev.base.train.lr == 1e-4
    assert [(v.name, v.mine) for v in ev.variants] == [("top", {"mining.seed": 1})]
