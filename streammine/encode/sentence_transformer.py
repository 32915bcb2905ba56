"""A sentence-transformers bi-encoder: prompts, max length, normalization, fp16 on GPU."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..config import EncoderConfig
from .base import resolve_model_dir


def pick_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEncoder:
    def __init__(self, cfg: EncoderConfig, device: Optional[str] = None, torch_threads: Optional[int] = None):
        import torch
        from sentence_transformers import SentenceTransformer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.cfg = cfg
        self.device = device or pick_device()
        self.name = cfg.model or "all-MiniLM-L6-v2"
        self.model = SentenceTransformer(resolve_model_dir(cfg.model), device=self.device)
        if cfg.max_length:
            self.model.max_seq_length = cfg.max_length
        fp16 = str(cfg.fp16).lower()
        self.fp16 = fp16 == "true" or (fp16 == "auto" and self.device.startswith("cuda"))
        if self.fp16:
            self.model.half()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def _encode(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.encode(list(texts), prompt=prompt or None, batch_size=self.cfg.batch_size,
                                    normalize_embeddings=self.cfg.normalize, convert_to_numpy=True,
                                    show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.cfg.query_prompt)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.cfg.document_prompt)

