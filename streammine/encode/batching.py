"""Forward-pass batches cut by a token budget instead of a fixed number of texts.

On a CPU a transformer runs faster when a batch's activations stay in the core's cache: small batches of long
texts beat batches of 32 (README, "How it is built"). A fixed small batch would slow short
texts (queries) down with per-call overhead, so the batch size follows the texts' length: about
``budget // tokens`` texts per batch, longest first (sentence-transformers sorts by length too).
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

CPU_TOKENS_PER_BATCH = 1024   # 4 texts of 256 tokens, 32 of 32
MAX_TEXTS_PER_BATCH = 64


def token_budget_batches(token_counts: Sequence[int], budget: int = CPU_TOKENS_PER_BATCH,
                         max_batch: int = MAX_TEXTS_PER_BATCH) -> List[np.ndarray]:
    """Indices of the texts in batches, longest first: each batch holds at most ``max_batch`` texts and, padded to
    its longest text, at most ``budget`` tokens (a single text longer than the budget is a batch of its own)."""
    counts = np.maximum(np.asarray(token_counts, np.int64), 1)
    order = np.argsort(-counts, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = int(counts[order[start]])       # sorted longest first: a batch's first text is its longest
        size = int(min(max(budget // longest, 1), max_batch))
        batches.append(order[start:start + size])
        start += size
    return batches


def estimated_token_counts(texts: Sequence[str], max_tokens: int, tokenizer=None) -> np.ndarray:
    """Tokens per text after truncation: the model's own tokenizer when there is one, else ~4 characters a token."""
    if tokenizer is not None:
        try:
            ids = tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]
            return np.fromiter((len(x) for x in ids), np.int64, len(ids))
        except (TypeError, KeyError):  # a tokenizer without this call signature: fall back to the estimate
            pass
    chars = np.fromiter((len(t) for t in texts), np.int64, len(texts))
    return np.minimum(chars // 4 + 2, max_tokens)
