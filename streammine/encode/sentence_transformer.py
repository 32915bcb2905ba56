"""A sentence-transformers bi-encoder: prompts, max length, normalization, precision (encode/precision.py)."""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import numpy as np

from ..config import EncoderConfig
from ..device import pick_device
from .base import resolve_model_dir
from .batching import estimated_token_counts, token_budget_batches
from .cpu_kernels import accelerate_linears
from .precision import AUTOCAST, resolve_precision

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
        # encode/precision.py: what each precision runs; the vectors are returned as float32 in every one
        self.precision = resolve_precision(cfg.precision, self.device)
        if self.precision == "float16":
            self.model.half()
        elif self.precision == "bfloat16":
            self.model.to(torch.bfloat16)
        else:  # float32 weights (also under bf16-autocast), also for a checkpoint saved in half precision
            self.model.float()
        # a CPU: the linear layers through oneDNN, faster than the stock ones (encode/cpu_kernels.py); under
        # bf16-autocast with their weights packed in bfloat16 once, instead of cast by autocast at every call
        self.onednn_layers = 0
        if cfg.cpu_onednn and self.device == "cpu" and self.precision in ("float32", AUTOCAST):
            self.onednn_layers = accelerate_linears(
                self.model, torch.bfloat16 if self.precision == AUTOCAST else torch.float32)
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
        with self.precision_context():  # both sides: a query and a document vector must be comparable
            vectors = encode(texts, prompt=prompt or "", **kwargs) if encode is not None else \
                self.model.encode(texts, prompt=prompt or None, **kwargs)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def precision_context(self):
        """Where the model runs: under ``torch.autocast`` to bfloat16 for bf16-autocast, as it is otherwise."""
        if self.precision != AUTOCAST:
            return contextlib.nullcontext()
        import torch
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.cfg.query_prompt, "query")

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.cfg.document_prompt, "document")

