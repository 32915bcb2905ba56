"""Fine-tuning a fresh copy of a sentence-transformers model with MultipleNegativesRankingLoss (or MarginMSELoss on
teacher margins), on a fixed budget.

Training examples are ``(anchor, positive)`` pairs (in-batch negatives only) or ``(anchor, positive,
negative_1 .. negative_k)`` rows built from a streammine mining output, k <= n (with ``loss: marginmse`` each row
also carries its teacher margins score(q, positive) - score(q, negative_j): the mining output's cross-encoder
scores when it has them, else the bi-encoder's exact scores; :func:`teacher_margins`). Under the fair protocol
(:func:`tuples_from_mined`, ``short="keep"``) the rows are the training split's (query, positive) pairs whatever
the mining found, and a row short of negatives trains with the ones it has (``losses.py``). Rows are sorted by
(query id, positive id), so the mining output's part order does not change what is trained.

The loop is a plain torch loop over the losses of ``losses.py`` (sentence-transformers' MNRL and MarginMSE when
every row is full; no ``SentenceTransformerTrainer``, which would add ``datasets`` and ``accelerate`` as
dependencies): AdamW with the Hugging Face Trainer's defaults (no weight decay on biases and LayerNorm weights),
linear warm-up and decay, gradient clipping at 1.0, batches that never hold the same text twice (what sentence-transformers' ``NO_DUPLICATES`` sampler does: an anchor's other
positive, or a text that is also another row's negative, is never an in-batch negative by accident), and a fixed
number of optimizer steps. Seeded: the same seed gives the same batches and the same dropout masks on a CPU.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from ..device import pick_device, set_seed
from ..errors import StreamMineError
from ..sink.exporters import ntuple_columns, resolve_parts
from ..sink.mined import iter_mined_rows
from .losses import flatten_batch, ragged_margin_mse, ragged_mnrl


@dataclass
class TrainConfig:
    max_steps: Optional[int] = 40       # optimizer steps; None -> epochs
    epochs: Optional[float] = None      # used only when max_steps is None
    batch_size: int = 32
    lr: float = 5e-5                    # the Hugging Face / sentence-transformers trainer default
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    scale: float = 20.0                 # MultipleNegativesRankingLoss' default (temperature 0.05)
    loss: str = "mnrl"                  # mnrl | marginmse (teacher margins from the mining output's scores)


LOSSES = ("mnrl", "marginmse")


@dataclass
class Examples:
    columns: List[str]
    rows: List[Tuple[str, ...]]
    query_ids: List[str]
    counts: Dict[str, int] = field(default_factory=dict)
    mined_query_ids: List[str] = field(default_factory=list)  # every query id the mining output holds
    labels: Optional[List[Tuple[float, ...]]] = None  # marginmse: per row, one teacher margin per negative


def pairs_from_split(queries: Mapping[str, str], positives: Mapping[str, Sequence[str]],
                     texts: Mapping[str, str]) -> Examples:
    """(anchor, positive): one row per (query, positive) of a split."""
    rows, qids = [], []
    for qid in sorted(positives):
        for pid in sorted(positives[qid]):
            if pid not in texts:
                raise StreamMineError(f"positive {pid!r} of query {qid!r} is not in the corpus")
            rows.append((queries[qid], texts[pid]))
            qids.append(qid)
    return Examples(["anchor", "positive"], rows, qids,
                    {"queries": len(set(qids)), "rows": len(rows), "queries_skipped": 0})


def teacher_margins(positive_scores: Sequence[float], negative_scores: Sequence[float],
                    num_negatives: int) -> np.ndarray:
    """(P, n) float64: ``margins[i, j] = positive_scores[i] - negative_scores[j]`` for the first ``n`` negatives
    (MarginMSE's label: the teacher's score of the positive minus its score of the negative, for the same query)."""
    pos = np.asarray(positive_scores, np.float64).reshape(-1, 1)
    neg = np.asarray(negative_scores, np.float64)[:num_negatives].reshape(1, -1)
    return pos - neg


def teacher_source(has_cross_encoder: Sequence[bool]) -> str:
    """Which scores are the teacher's: "cross-encoder" when every mined row has cross-encoder scores, "bi-encoder"
    when none has (an output mined without mining.cross_encoder); a mixture is an error (two runs in one output)."""
    if has_cross_encoder and all(has_cross_encoder):
        return "cross-encoder"
    if not any(has_cross_encoder):
        return "bi-encoder"
    raise StreamMineError("some mined rows have cross-encoder scores and some do not: mixed outputs cannot be "
                          "a MarginMSE teacher")


SHORT_ROWS = ("keep", "drop")  # keep: the fair protocol; drop: the earlier one (queries short of n skipped)


def tuples_from_mined(output: str, texts: Mapping[str, str], num_negatives: int,
                      forbidden_query_ids: Set[str] = frozenset(), margins: bool = False,
                      split: Optional[Tuple[Mapping[str, str], Mapping[str, Sequence[str]]]] = None,
                      short: str = "keep") -> Examples:
    """(anchor, positive, negative_1 .. negative_k) rows from a mining output, k <= n: each query's first n
    negatives (best-ranked).

    The rows are fixed before the negatives are looked at: with ``split`` = (query texts, positives) of the
    training split, one row per (query, positive) of the split (a query the output lacks keeps its rows with no
    negative); without it, one per (query, positive) of the output. ``short="keep"`` (the fair protocol) keeps a
    row with fewer than n negatives, and the losses of ``losses.py`` train on it as it is, so every variant trains
    on the same (query, positive) rows; ``counts["rows_full_negatives"]`` says how many had all n. ``"drop"`` is
    the earlier protocol: such queries are skipped, counted.

    A query id in ``forbidden_query_ids`` (the held-out queries) in the output is an error: they must never have
    been mined. With ``margins``: each row's ``labels`` entry is :func:`teacher_margins` of its positive against
    its negatives, from the scores named by :func:`teacher_source` (``counts["teacher_scores"]``); a row whose
    teacher score is missing (NaN) keeps its (query, positive) without negatives, counted."""
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    if short not in SHORT_ROWS:
        raise StreamMineError(f"short rows must be one of {', '.join(SHORT_ROWS)}, got {short!r}")
    rows = list(iter_mined_rows(resolve_parts(output), ("bi-encoder", "cross-encoder") if margins else ()))
    leaked = sorted({row.query_id for row in rows if row.query_id in forbidden_query_ids})
    if leaked:
        raise StreamMineError(f"{output}: {len(leaked)} held-out quer(y/ies) were mined, e.g. {leaked[0]!r}")
    if margins:
        for row in rows:
            row.require_scores("bi-encoder")  # every output has them; the cross-encoder's only with one
    source = teacher_source([row.scores("cross-encoder") is not None for row in rows if row.positive_ids]) \
        if margins else None
    by_query = {}
    for row in rows:
        by_query.setdefault(row.query_id, row)  # one row per query in a mining output
    if split is None:
        split_queries = {r.query_id: r.query for r in rows}
        split_positives = {r.query_id: list(r.positive_ids) for r in rows}
    else:
        split_queries, split_positives = split
    counts = {"queries_mined": len(by_query), "queries_not_mined": 0, "queries_short_of_negatives": 0,
              "queries_dropped": 0, "rows_without_teacher_score": 0}
    found = []
    for qid in sorted(split_positives):
        pids = sorted(split_positives[qid])
        if not pids:
            continue
        row = by_query.get(qid)
        if row is None:
            counts["queries_not_mined"] += 1
        negative_ids = list(row.negative_ids[:num_negatives]) if row is not None else []
        if len(negative_ids) < num_negatives:
            counts["queries_short_of_negatives"] += 1
            if short == "drop":
                counts["queries_dropped"] += 1
                continue
        negatives = tuple(texts[d] for d in negative_ids)
        table = None
        if margins and row is not None and negative_ids:
            pos, neg = row.scores(source)
            score_of = dict(zip(row.positive_ids, pos))
            table = {pid: teacher_margins([score_of.get(pid, float("nan"))], neg, len(negative_ids))[0]
                     for pid in pids}
        for pid in pids:
            if pid not in texts:
                raise StreamMineError(f"positive {pid!r} of query {qid!r} is not in the corpus")
            own, label = negatives, (() if margins else None)
            if table is not None:
                if np.isfinite(table[pid]).all():
                    label = tuple(float(x) for x in table[pid])
                else:  # no teacher margin to fit: the pair stays, its negatives go (drop: the row goes)
                    counts["rows_without_teacher_score"] += 1
                    if short == "drop":
                        continue
                    own, label = (), ()
            found.append((qid, (split_queries[qid], texts[pid]) + own, label))
    by_k: Dict[int, int] = {}
    for _, r, _ in found:
        by_k[len(r) - 2] = by_k.get(len(r) - 2, 0) + 1
    counts.update(queries=len({q for q, _, _ in found}), rows=len(found),
                  rows_full_negatives=by_k.get(num_negatives, 0),
                  rows_by_negatives={str(k): by_k[k] for k in sorted(by_k)}, short_rows=short)
    if margins:
        counts["teacher_scores"] = source
    return Examples(ntuple_columns(num_negatives), [r for _, r, _ in found], [q for q, _, _ in found],
                    counts, sorted(by_query), [lab for _, _, lab in found] if margins else None)


def no_duplicate_batches(rows: Sequence[Tuple[str, ...]], batch_size: int, seed: int) -> Iterator[List[int]]:
    """Endless batches of row indices: each epoch a seeded permutation, packed greedily so no text appears twice
    in a batch (rows that would repeat a text wait for a later batch). The last batch of an epoch may be short."""
    if not rows:
        raise StreamMineError("no training examples")
    rng = np.random.default_rng(seed)
    while True:
        remaining = rng.permutation(len(rows)).tolist()
        while remaining:
            batch, seen, deferred = [], set(), []
            for i in remaining:
                if len(batch) < batch_size and not seen.intersection(rows[i]):
                    batch.append(i)
                    seen.update(rows[i])
                else:
                    deferred.append(i)
            yield batch
            remaining = deferred


def batches_per_epoch(rows: Sequence[Tuple[str, ...]], batch_size: int, seed: int) -> int:
    gen, n, covered = no_duplicate_batches(rows, batch_size, seed), 0, 0
    while covered < len(rows):
        covered += len(next(gen))
        n += 1
    return n


def resolve_steps(cfg: TrainConfig, examples: Examples, seed: int) -> int:
    if cfg.max_steps is not None:
        return int(cfg.max_steps)
    if not cfg.epochs:
        raise StreamMineError("set train.max_steps or train.epochs")
    return max(1, math.ceil(cfg.epochs * batches_per_epoch(examples.rows, cfg.batch_size, seed)))


def load_model(model_path: str, device: str, max_seq_length: Optional[int] = None):
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(model_path), device=device)
    if max_seq_length:
        model.max_seq_length = int(max_seq_length)
    return model


def fine_tune(model_path: str, examples: Examples, cfg: TrainConfig, seed: int = 0, device: str = "auto",
              max_seq_length: Optional[int] = None):
    """A fresh copy of ``model_path`` trained on ``examples``; returns (model, stats). Nothing is saved."""
    import torch

    if not examples.rows:
        raise StreamMineError("no training examples")
    if cfg.loss not in LOSSES:
        raise StreamMineError(f"train.loss must be one of {', '.join(LOSSES)}, got {cfg.loss!r}")
    if cfg.loss == "marginmse" and (examples.labels is None or len(examples.labels) != len(examples.rows)):
        raise StreamMineError("train.loss marginmse needs mined negatives with teacher margins")
    device = pick_device(device)
    set_seed(seed)
    model = load_model(model_path, device, max_seq_length)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    steps = resolve_steps(cfg, examples, seed)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not _no_decay(n)]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and _no_decay(n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    warmup = int(math.ceil(cfg.warmup_ratio * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _linear(s, warmup, steps))
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    batches = no_duplicate_batches(examples.rows, cfg.batch_size, seed)
    losses, seen_rows = [], 0
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        idx = next(batches)
        seen_rows += len(idx)
        loss = batch_loss(model, preprocess, [examples.rows[i] for i in idx],
                          [examples.labels[i] for i in idx] if cfg.loss == "marginmse" else None, cfg, device)
        loss.backward()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        num = sum(float(((v.float() - initial[k].float()) ** 2).sum()) for k, v in model.state_dict().items()
                  if k in initial)
        den = sum(float((v.float() ** 2).sum()) for v in initial.values())
    stats = {"steps": steps, "rows": len(examples.rows), "rows_seen": seen_rows,
             "epochs_seen": round(seen_rows / len(examples.rows), 3), "negatives_per_row": len(examples.columns) - 2,
             "rows_full_negatives": examples.counts.get("rows_full_negatives", len(examples.rows)),
             "loss_first": losses[0], "loss_last": losses[-1],
             "loss_mean_last_10": float(np.mean(losses[-10:])), "weight_relative_change": math.sqrt(num / den),
             "device": device, "train_seconds": round(seconds, 3), "loss": cfg.loss}
    return model, stats


def batch_loss(model, preprocess, rows: Sequence[Tuple[str, ...]], labels, cfg: TrainConfig, device: str):
    """The loss of one batch of rows with 0 .. n negatives each (``losses.py``): the anchors in one forward pass,
    the positives and all negatives in another (documents share a length profile)."""
    anchors, positives, negatives, owner, margins = flatten_batch(rows, labels)

    def embed(texts):
        features = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in preprocess(list(texts)).items()}
        return model(features)["sentence_embedding"]

    a = embed(anchors)
    docs = embed(positives + negatives)
    p, n = docs[:len(positives)], docs[len(positives):]
    if cfg.loss == "marginmse":
        return ragged_margin_mse(a, p, n, owner, margins)
    return ragged_mnrl(a, p, n, cfg.scale)


def _no_decay(name: str) -> bool:
    return name.endswith(".bias") or "LayerNorm.weight" in name or "layer_norm.weight" in name


def _linear(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))
