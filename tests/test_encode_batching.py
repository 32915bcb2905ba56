"""Token-budget batches (encode/batching.py): every text exactly once, budgets kept, longest first."""
import numpy as np
import pytest

from streammine.encode.batching import estimated_token_counts, token_budget_batches


@pytest.mark.parametrize("seed", range(5))
def test_batches_cover_every_text_once_within_budget(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 300, size=int(rng.integers(0, 200)))
    budget, max_batch = 1024, 16
    batches = token_budget_batches(counts, budget, max_batch)
    flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    assert sorted(flat.tolist()) == list(range(len(counts)))
    for b in batches:
        assert 1 <= len(b) <= max_batch
        assert len(b) == 1 or len(b) * counts[b].max() <= budget
        # greedy: one more text (the next longest) would have broken a limit
    assert np.all(np.diff(counts[flat]) <= 0)  # longest first


def test_batch_sizes_follow_length():
    counts = [256] * 8 + [32] * 64
    sizes = [len(b) for b in token_budget_batches(counts, 1024, 64)]
    assert sizes == [4, 4, 32, 32]
    assert [len(b) for b in token_budget_batches([5000, 10], 1024, 64)] == [1, 1]  # over-budget text: alone


def test_estimated_counts_without_tokenizer_are_truncated():
    counts = estimated_token_counts(["a" * 40, "b" * 4000, ""], max_tokens=256)
    assert counts.tolist() == [12, 256, 2]
