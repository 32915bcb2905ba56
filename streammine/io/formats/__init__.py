"""Input formats as plug-ins: one object per format, chosen once from the config.

    fmt = input_format(cfg)          # MineConfig: the format, with the precomputed vectors as its corpus if any
    fmt = format_of(cfg.input)       # InputConfig: the text format alone (texts, queries)

Adding a format: a module here with an :class:`~.base.InputFormat` subclass, and one line in ``FORMATS``. The rest
of streammine asks the object (read tasks, sources for errors, corpus identity, query units, preflight files) and
never tests the format's name.
"""
from __future__ import annotations

from typing import Dict, Type

from ...errors import ConfigError
from .base import InputFormat
from .beir import BeirFormat
from .flagembedding import FlagEmbeddingFormat
from .pairs import PairsFormat
from .vectors import PrecomputedVectors

FORMATS: Dict[str, Type[InputFormat]] = {"beir": BeirFormat, "pairs": PairsFormat,
                                         "flagembedding": FlagEmbeddingFormat}


def format_of(input_cfg) -> InputFormat:
    """The text format of an InputConfig."""
    try:
        cls = FORMATS[input_cfg.format]
    except KeyError:
        raise ConfigError(f"input.format must be one of {', '.join(FORMATS)}; got {input_cfg.format!r}") from None
    return cls(input_cfg)


def input_format(cfg) -> InputFormat:
    """The run's input (a MineConfig): its format, with the precomputed corpus vectors standing in for the text
    corpus when ``encoder.kind`` is ``precomputed``."""
    fmt = format_of(cfg.input)
    fmt.min_positive_grade = cfg.mining.min_positive_grade  # graded qrels (beir): what counts as a positive
    if cfg.encoder.kind == "precomputed":
        fmt.vectors = PrecomputedVectors(cfg.encoder.corpus_vectors, check_finite=not cfg.input.lenient,
                                         query_url=cfg.encoder.query_vectors)
    return fmt


__all__ = ["FORMATS", "InputFormat", "format_of", "input_format"]
