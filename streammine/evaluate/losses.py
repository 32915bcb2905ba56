"""The training losses for rows with any number of mined negatives (0 .. n), so that a query a mining variant could
not fill keeps its (query, positive) row instead of leaving the comparison.

A batch is flattened into anchors, positives and one list of every row's negatives with the row each belongs to
(:func:`flatten_batch`). :func:`ragged_mnrl` is MultipleNegativesRankingLoss over that pool: each anchor against
every positive and every negative of the batch (its own and the others', as in-batch negatives), so a row short
of negatives still learns from its positive against everything else in the batch. :func:`ragged_margin_mse` is
MarginMSE over the (row, negative) pairs that exist; a row without a negative has no margin and adds no term.
With every row full both equal sentence-transformers' MultipleNegativesRankingLoss (cosine, ``scale``) and
MarginMSELoss (dot product) (checked against the library in the tests): the order of the candidates does not
change a softmax, and the MSE is the same mean over the same pairs.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple


def flatten_batch(rows: Sequence[Tuple[str, ...]], labels: Optional[Sequence[Sequence[float]]] = None):
    """(anchors, positives, negatives, owner, margins): ``rows[i]`` is (anchor, positive, negative_1 ..
    negative_k) with any k >= 0; ``negatives`` lists every row's negatives in row order, ``owner[j]`` the row of
    ``negatives[j]``; ``margins`` the matching flattened labels (None without labels)."""
    anchors, positives, negatives, owner, margins = [], [], [], [], ([] if labels is not None else None)
    for i, row in enumerate(rows):
        if len(row) < 2:
            raise ValueError(f"a training row needs an anchor and a positive, got {row!r}")
        anchors.append(row[0])
        positives.append(row[1])
        negatives.extend(row[2:])
        owner.extend([i] * (len(row) - 2))
        if labels is not None:
            if len(labels[i]) != len(row) - 2:
                raise ValueError(f"row {i}: {len(row) - 2} negatives but {len(labels[i])} margins")
            margins.extend(float(x) for x in labels[i])
    return anchors, positives, negatives, owner, margins


def ragged_mnrl(anchors, positives, negatives, scale: float):
    """Cross-entropy of ``scale`` * cosine(anchor_i, candidate) over the candidates [positives; negatives], the
    right answer for anchor i being positive i. ``negatives`` may be empty (in-batch negatives only)."""
    import torch
    import torch.nn.functional as F
    candidates = torch.cat([positives, negatives]) if len(negatives) else positives
    logits = scale * (F.normalize(anchors, dim=-1) @ F.normalize(candidates, dim=-1).T)
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))


def ragged_margin_mse(anchors, positives, negatives, owner: List[int], margins):
    """Mean over the (row, negative) pairs of (a.p - a.n - margin)^2, dot products of the embeddings. A batch
    without any negative gives a zero loss that still has a graph (the step then only decays the weights)."""
    import torch
    if not len(owner):
        return (anchors.sum() + positives.sum()) * 0.0
    idx = torch.as_tensor(owner, device=anchors.device)
    a = anchors[idx]
    predicted = (a * positives[idx]).sum(-1) - (a * negatives).sum(-1)
    target = torch.as_tensor(margins, dtype=predicted.dtype, device=predicted.device)
    return torch.mean((predicted - target) ** 2)
