"""A sentence-transformers cross-encoder that scores (query, candidate document) pairs, for RocketQA denoising.

It runs inside the miner actors. The candidates arrive as document ids, so each such actor holds the corpus texts
(id -> text): about the corpus's text size in memory per actor, which bounds this option to corpora whose texts
fit in a miner's memory (cross-encoding is the expensive part long before that: see the README).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..config import CrossEncoderConfig, MineConfig
from ..errors import StreamMineError


def document_texts(cfg: MineConfig) -> dict:
    """Every corpus document's text as it is embedded (title + text), by id, read from the run's input."""
    from ..io.readers import corpus_texts
    try:
        return corpus_texts(cfg.input)
    except FileNotFoundError as e:
        raise StreamMineError(f"mining.cross_encoder needs the corpus texts, and the input has none: {e}") from e


class CrossEncoderScorer:
    """``scores(queries, doc_ids, mask)`` -> (B, K) float32 cross-encoder scores where ``mask``, NaN elsewhere."""

    def __init__(self, cfg: CrossEncoderConfig, texts: dict, device: Optional[str] = None):
        from sentence_transformers import CrossEncoder

        from .base import resolve_model_dir
        from .sentence_transformer import pick_device
        self.cfg, self.texts = cfg, texts
        self.model = CrossEncoder(resolve_model_dir(cfg.model), device=device or pick_device(),
                                  max_length=cfg.max_length)
        if cfg.cpu_onednn and str(self.model.device) == "cpu":
            from .cpu_kernels import accelerate_linears
            accelerate_linears(self.model)
        labels = getattr(self.model, "num_labels", 1)
        if labels != 1:
            raise StreamMineError(f"cross-encoder {cfg.model} has {labels} labels; denoising needs a one-score "
                                  f"(relevance) model")

    def _text(self, doc_id: str) -> str:
        try:
            return self.texts[doc_id]
        except KeyError:
            raise StreamMineError(f"cross-encoder: document {doc_id!r} has no text in the corpus") from None

    def scores(self, queries: Sequence[str], doc_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = np.full(mask.shape, np.nan, np.float32)
        rows, cols = np.nonzero(mask)
        if len(rows):
            pairs = [(queries[r], self._text(doc_ids[r, c])) for r, c in zip(rows, cols)]
            predicted = self.model.predict(pairs, batch_size=self.cfg.batch_size, show_progress_bar=False,
                                           convert_to_numpy=True)
            out[rows, cols] = np.asarray(predicted, np.float32).reshape(-1)
        return out
