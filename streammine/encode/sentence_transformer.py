"""A sentence-transformers bi-encoder: prompts, max length, normalization, fp16 (or bf16) on GPU."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..config import EncoderConfig
from ..device import pick_device
from .base import resolve_model_dir
from .batching import estimated_token_counts, token_budget_batches
from .cpu_kernels import accelerate_linears

GPU_AUTO_BATCH_SIZE = 32  # sentence-transformers' default; batch_size 0 on a GPU


class SentenceTransformerEncoder:
    def __init__(self, cfg: EncoderConfig, device: Optional[str] = None, torch_threads: Optional[int] = None,
                 model=None, copy_model: bool = True):
        """``model``: an already-built SentenceTransformer (its in-memory weights encode) instead of loading
        ``cfg.model``. With ``copy_model`` it is deep-copied first (one more copy of the weights in memory, ~0.1 s
        and ~90 MB for a MiniLM): the layer, precision and mode changes below never reach the caller's object."""
        import copy
        import torch
        from sentence_transformers import SentenceTransformer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.cfg = cfg
        self.device = device or pick_device()
        self.name = cfg.model or "all-MiniLM-L6-v2"
        if model is not None:
            self.model = (copy.deepcopy(model) if copy_model else model).to(self.device)
        else:
            self.model = SentenceTransformer(resolve_model_dir(cfg.model), device=self.device)
        if cfg.max_length:
            self.model.max_seq_length = cfg.max_length
        fp16 = str(cfg.fp16).lower()
        # the weights' precision: float16 on a GPU by default; "bf16": bfloat16 (its range is float32's, so
        # models whose activations overflow float16 still work); the vectors are returned as float32 either way
        self.half_dtype = ("bfloat16" if fp16 == "bf16" else
                           "float16" if fp16 == "true" or (fp16 == "auto" and self.device.startswith("cuda"))
                           else None)
        self.fp16 = self.half_dtype is not None
        if self.half_dtype == "float16":
            self.model.half()
        elif self.half_dtype == "bfloat16":
            self.model.to(torch.bfloat16)
        else:  # float32 means float32, also for a checkpoint saved in half precision
            self.model.float()
        # fp32 on a CPU: oneDNN linear layers, faster than the stock ones (encode/cpu_kernels.py)
        self.onednn_layers = 0
        if cfg.cpu_onednn and not self.fp16 and self.device == "cpu":
            self.onednn_layers = accelerate_linears(self.model)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def _encode(self, texts: Sequence[str], prompt: str, side: str) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        texts = list(texts)
        if self.cfg.batch_size or not self.device.startswith("cpu"):
            return self._forward(texts, prompt, self.cfg.batch_size or GPU_AUTO_BATCH_SIZE, side)
        # batch_size 0 on a CPU: batches cut by a token budget (encode/batching.py)
        counts = estimated_token_counts([prompt + t for t in texts] if prompt else texts, self.model.max_seq_length,
                                        getattr(self.model, "tokenizer", None))
        vectors = np.empty((len(texts), self.dim), np.float32)
        for rows in token_budget_batches(counts):
            vectors[rows] = self._forward([texts[i] for i in rows], prompt, len(rows), side)
        return vectors

    def _forward(self, texts: list, prompt: str, batch_size: int, side: str) -> np.ndarray:
        """``side``: "query" or "document". The model's own ``encode_query`` / ``encode_document`` where it has
        them (as the peer calls it: a model that routes the two sides differently gets its route), with the prompt
        the config resolved given explicitly ("" for none: the model's default prompt is not added again)."""
        encode = getattr(self.model, f"encode_{side}", None)
        kwargs = dict(batch_size=batch_size, normalize_embeddings=self.cfg.normalize, convert_to_numpy=True,
                      show_progress_bar=False)
        vectors = encode(texts, prompt=prompt or "", **kwargs) if encode is not None else \
            self.model.encode(texts, prompt=prompt or None, **kwargs)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.cfg.query_prompt, "query")

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.cfg.document_prompt, "document")

