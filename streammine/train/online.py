"""The online trainer: fine-tunes a sentence-transformers model on the hard negatives a continuous run mines, and
publishes checkpoints that the run (``streammine serve``) picks up to mine the next negatives with.

The loop::

    checkpoints/step-000000000/   <- published first (the base model) when the root has no version yet
        serve mines with it -> <feed>/_log + data parts (rows tagged model_version="step-000000000")
    trainer reads the feed (streammine.consume.NegativesFeed, freshest ``last_versions`` versions only),
        builds (anchor, positive, negative_1..n) examples, trains with MultipleNegativesRankingLoss,
    checkpoints/step-<publish_every>/ ... published every ``publish_every`` steps and at the end
        serve follows the root and mines with the new version, and so on.

Pieces:

* :func:`load_texts`: doc id -> the document text the miner encodes (``document_text(title, text)``).
* :func:`training_examples`: mined rows -> :class:`Example` tuples; one positive and ``negatives_per_query``
  negatives per row, drawn with a random generator seeded by ``(seed, query_id)`` only, so a row gives the same
  example whatever else the feed holds and in whatever order it comes. Negatives never include a positive of the
  row (nor a document with a positive's text). Rows with no positive, no negative, or fewer negatives
  than asked for are skipped and counted.
* :func:`pack_batches`: examples -> batches in which no text appears twice (an in-batch negative that is in fact
  the anchor's positive would teach the wrong thing); a colliding example waits for the next batch.
* :class:`OnlineTrainer`: the loop as a recipe with named steps (``setup`` -> ``train`` -> ``save_checkpoint``
  -> ``cleanup``); a plain torch loop (AdamW, constant learning rate, fp32, gradient clipping) over
  sentence-transformers' own loss. :func:`train_online` runs it.

Steps are global: a trainer started on a root that already holds versions resumes from the latest one (its
weights and its step; not its optimizer state) and ``max_steps`` caps the global step, so a restarted job neither
overwrites published versions nor trains past its budget.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Tuple

from ..config import ConfigBase
from ..consume import NegativesFeed
from ..device import pick_device, set_seed
from ..encode.base import resolve_model_dir
from ..errors import ConfigError, StreamMineError
from ..io import fs
from ..refresh.versions import latest_version, local_model_dir, publish_checkpoint

log = logging.getLogger(__name__)

# the columns of a mined row the trainer reads (the feed adds "_seq")
FEED_COLUMNS = ["query_id", "query", "positive_ids", "negative_ids", "model_version"]
# written beside the weights of every checkpoint the trainer publishes: where a restarted trainer resumes
TRAINER_STATE = "streammine_trainer.json"


# ---- config --------------------------------------------------------------------------------------------------

@dataclass
class OnlineTrainerConfig(ConfigBase):
    feed: Optional[str] = None            # the continuous run's output URL (the one holding _log/)
    corpus: Optional[str] = None          # BEIR directory (corpus.jsonl) the run mines over: the document texts
    checkpoints: Optional[str] = None     # the versions root the run follows (<root>/step-XXXXXXXXX/)
    base_model: Optional[str] = None      # path, URL or name; None -> the packaged all-MiniLM-L6-v2
    batch_size: int = 32                  # examples per optimizer step
    negatives_per_query: int = 1          # hard negatives per example (besides the in-batch ones)
    lr: float = 2e-5                      # constant (the stream has no known end to decay towards)
    weight_decay: float = 0.01            # AdamW; none on biases and LayerNorm weights
    max_grad_norm: float = 1.0            # 0 -> no clipping
    scale: float = 20.0                   # MultipleNegativesRankingLoss scale (temperature 0.05)
    max_seq_length: Optional[int] = None  # truncation while training; None -> the model's own (checkpoints
                                          # always keep the model's own: the miner encodes with it)
    publish_every: int = 100              # steps between published checkpoints (and one at the end)
    max_steps: Optional[int] = None       # global step to stop at; None -> until the feed ends
    last_versions: Optional[int] = 1      # train only on rows mined by the freshest N versions; None -> all
    follow: bool = True                   # wait for new commits until the run closes its log
    poll_seconds: float = 5.0             # how often a follower looks for new commits
    idle_timeout_s: Optional[float] = None  # stop after this long without a new row; None -> never
    start_after_seq: Optional[int] = None  # skip log entries up to this seq; None -> 0, or where the checkpoint
                                          # resumed from says its trainer stopped (same feed only)
    feed_batch_rows: int = 1024           # rows the feed reads per batch
    consumed_log: Optional[str] = None    # JSONL, one line per trained example (local paths are appended to)
    seed: int = 0
    device: str = "auto"                  # auto: cuda when available, else cpu; or cpu / cuda / cuda:N

    # from_dict, from_yaml, from_sources (a YAML file with ``key: value`` overrides on top), to_dict: ConfigBase

    def validate(self) -> None:
        for name in ("feed", "corpus", "checkpoints"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is required")
        for name in ("batch_size", "negatives_per_query", "publish_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_steps", "last_versions"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or null, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if self.start_after_seq is not None and self.start_after_seq < 0:
            raise ConfigError(f"start_after_seq must be >= 0, got {self.start_after_seq!r}")
        if self.device != "auto" and not str(self.device).startswith(("cpu", "cuda")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")


# ---- texts and examples --------------------------------------------------------------------------------------

def load_texts(corpus_url: str) -> Dict[str, str]:
    """doc id -> the text the miner encodes for it (``document_text(title, text)``), from a BEIR directory, read
    through the input format (strict: a bad row raises); the first row of an id wins, as in the index."""
    from ..config import InputConfig
    from ..io.formats import format_of
    return format_of(InputConfig(format="beir", path=corpus_url)).corpus_texts(lenient=False)


class Example(NamedTuple):
    texts: Tuple[str, ...]        # (anchor, positive, negative_1 .. negative_n)
    query_id: str
    model_version: Optional[str]  # the version that mined the row
    seq: Optional[int]            # the commit-log entry the row came from ("_seq")


def example_rng(seed: int, query_id: str) -> random.Random:
    """The generator a query's example is drawn with: depends on (seed, query id) only (string seeds are hashed
    with SHA-512 by ``random``, so this is stable across processes and Python's hash randomization)."""
    return random.Random(f"{int(seed)}:{query_id}")


def training_examples(rows: Iterable[Mapping], texts: Mapping[str, str], negatives_per_query: int = 1,
                      seed: int = 0, counts: Optional[Counter] = None) -> Iterator[Example]:
    """Mined rows -> examples, lazily (rows can be an endless feed).

    Per row: one positive drawn from ``positive_ids``, and ``negatives_per_query`` negatives drawn without
    replacement from ``negative_ids`` minus the row's positives and minus documents with a positive's text
    (kept in the miner's rank order), both with :func:`example_rng`. ``counts`` (a Counter, updated in
    place) gets ``rows``, ``examples``, ``skipped_no_positive``, ``skipped_no_negatives`` and
    ``skipped_short_of_negatives`` (some negatives, fewer than asked for). A document id missing from ``texts``
    is an error: the corpus is not the one the run mines over.
    """
    if negatives_per_query < 1:
        raise ValueError(f"negatives_per_query must be >= 1, got {negatives_per_query}")
    counts = counts if counts is not None else Counter()
    for row in rows:
        counts["rows"] += 1
        qid = str(row["query_id"])
        positives = list(dict.fromkeys(row.get("positive_ids") or []))
        if not positives:
            counts["skipped_no_positive"] += 1
            continue
        rng = example_rng(seed, qid)
        pid = positives[rng.randrange(len(positives))]
        positive_texts = {_text(texts, p, row) for p in positives}
        excluded = set(positives)
        candidates = [d for d in dict.fromkeys(row.get("negative_ids") or [])
                      if d not in excluded and _text(texts, d, row) not in positive_texts]
        if not candidates:
            counts["skipped_no_negatives"] += 1
            continue
        if len(candidates) < negatives_per_query:
            counts["skipped_short_of_negatives"] += 1
            continue
        chosen = sorted(rng.sample(range(len(candidates)), negatives_per_query))
        counts["examples"] += 1
        yield Example(texts=(row["query"], texts[pid], *(texts[candidates[i]] for i in chosen)),
                      query_id=qid, model_version=row.get("model_version"), seq=row.get("_seq"))


def _text(texts: Mapping[str, str], doc_id: str, row: Mapping) -> str:
    try:
        return texts[doc_id]
    except KeyError:
        raise StreamMineError(f"document {doc_id!r} (query {row.get('query_id')!r}, version "
                              f"{row.get('model_version')!r}) is not in the corpus: is it the corpus the run "
                              f"mines over?") from None


def pack_batches(examples: Iterable[Example], batch_size: int,
                 max_waiting: Optional[int] = None) -> Iterator[List[Example]]:
    """Batches of ``batch_size`` examples in which no text appears twice. An example that shares a text with the
    batch being filled waits (in order) and goes first into the next batch, so nothing waits for long. When
    ``max_waiting`` (default ``4 * batch_size``) examples wait, the batch goes out short rather than reading on;
    the batches at the end of the examples may be short too."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_waiting = max_waiting or 4 * batch_size
    source = iter(examples)
    waiting: deque = deque()
    exhausted = False
    while True:
        batch, seen, still_waiting = [], set(), deque()
        for ex in waiting:
            if len(batch) < batch_size and not seen.intersection(ex.texts):
                batch.append(ex)
                seen.update(ex.texts)
            else:
                still_waiting.append(ex)
        waiting = still_waiting
        while len(batch) < batch_size and not exhausted and len(waiting) < max_waiting:
            ex = next(source, None)
            if ex is None:
                exhausted = True
            elif seen.intersection(ex.texts):
                waiting.append(ex)
            else:
                batch.append(ex)
                seen.update(ex.texts)
        if batch:
            yield batch
        if exhausted and not waiting:
            return


# ---- the model -----------------------------------------------------------------------------------------------

def load_model(path: str, device: str):
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(path), device=device)
    model.float()  # fp32 training, whatever dtype the checkpoint was saved in
    return model


def make_loss(model, scale: float = 20.0):
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    return MultipleNegativesRankingLoss(model, scale=scale)


def make_optimizer(model, lr: float, weight_decay: float):
    import torch
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if not _no_decay(n)]
    no_decay = [p for n, p in named if _no_decay(n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def _no_decay(name: str) -> bool:
    return name.endswith(".bias") or "LayerNorm.weight" in name or "layer_norm.weight" in name


def train_step(model, loss_fn, optimizer, batch: List[Example], device: str, max_grad_norm: float = 1.0) -> float:
    """One optimizer step on a batch: each column (anchors, positives, negatives_i) tokenized, on the device."""
    import torch
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    features = []
    for column in zip(*(ex.texts for ex in batch)):
        tokens = preprocess(list(column))
        features.append({k: (v.to(device) if hasattr(v, "to") else v) for k, v in tokens.items()})
    model.train()
    loss = loss_fn(features, None)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


# ---- the loop ------------------------------------------------------------------------------------------------

def train_online(cfg: OnlineTrainerConfig, stop: Optional[threading.Event] = None) -> dict:
    """Runs the trainer until ``max_steps``, the end of the feed, or ``stop`` is set; returns a summary:

    ``steps`` (the global step reached), ``start_step``, ``steps_trained`` (in this call), ``stopped``
    (``max_steps`` | ``feed_end`` | ``stop``), ``base_published``, ``checkpoints`` (``[{"name", "step",
    "url"}]`` in publication order, the base included), ``rows_consumed`` and ``rows_per_version`` (rows read
    from the feed), ``examples_per_version`` (examples trained), ``counts`` (see :func:`training_examples`),
    ``losses`` (one per step), ``device``, ``start_after_seq`` (where the feed started), ``resume_after_seq``
    (where a restarted trainer's feed should start: every example of the entries up to it was trained),
    ``feed_position``, ``feed_stats``, ``seconds``.

    Each published checkpoint holds ``streammine_trainer.json`` (step, feed URL, ``resume_after_seq``); a trainer
    resuming from it with ``start_after_seq`` unset starts its feed there (at-least-once: the rows of a partly
    trained entry are trained again).

    ``stop`` is handed to the feed (so a follower waiting for commits ends when it is set) and is set when the
    trainer returns.
    """
    trainer = OnlineTrainer(cfg, stop)
    trainer.setup()
    try:
        trainer.train()
        if trainer.step > trainer.last_published:
            trainer.save_checkpoint()
    finally:
        trainer.cleanup()
    return trainer.summary()


class OnlineTrainer:
    """The online trainer as a recipe with named steps, run in this order by :func:`train_online`:

    * :meth:`setup`: device and seed; the starting point (the latest published version, or the base model,
      published first as step 0); the document texts, loss, optimizer and the consumed-examples log;
    * :meth:`train`: feed rows -> examples -> batches -> optimizer steps, publishing every ``publish_every``
      steps, until ``max_steps``, the end of the feed or ``stop``;
    * :meth:`save_checkpoint`: publishes the current weights as ``step-<step>`` with the trainer's state;
    * :meth:`cleanup`: sets ``stop`` (a feed still polling ends) and closes the consumed log;
    * :meth:`summary`: what :func:`train_online` returns.

    Invariant: ``resume_after_seq()`` never passes a log entry with an example read but not trained yet
    (``pending``), so a trainer restarted there loses no example (at-least-once).
    """

    def __init__(self, cfg: OnlineTrainerConfig, stop: Optional[threading.Event] = None):
        cfg.validate()
        self.cfg = cfg
        self.stop = stop if stop is not None else threading.Event()
        self.t0 = time.time()
        self.counts: Counter = Counter()
        self.rows_per_version: Counter = Counter()
        self.examples_per_version: Counter = Counter()
        self.pending: Counter = Counter()  # seq -> examples read from the feed but not trained yet
        self.feed = None
        self.consumed = None
        self.stopped = "feed_end"

    # ---- setup ------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        self.device = pick_device(cfg.device)
        set_seed(cfg.seed)
        self.checkpoints: List[dict] = []
        self.losses: List[float] = []
        self.base_published = False
        # where the trainer starts: the latest published version, or the base model (published first, as step 0)
        latest = latest_version(cfg.checkpoints)
        start_after_seq = cfg.start_after_seq
        if latest is None:
            self.model = load_model(resolve_model_dir(cfg.base_model), self.device)
            self.start_step = 0
            start_after_seq = start_after_seq or 0
            self.checkpoints.append(publish_trained(self.model, cfg, 0, start_after_seq))
            self.base_published = True
        else:
            log.info("resuming from %s (step %d)", latest.name, latest.step)
            self.model = load_model(local_model_dir(latest.url), self.device)
            self.start_step = latest.step
            if start_after_seq is None:
                state = read_trainer_state(latest.url) or {}
                same_feed = state.get("feed") == cfg.feed
                start_after_seq = int(state.get("resume_after_seq") or 0) if same_feed else 0
        self.start_after_seq = start_after_seq
        self.step = self.last_published = self.start_step
        self.own_length = self.model.max_seq_length  # what checkpoints are saved with: what the miner encodes with
        if cfg.max_seq_length:  # for training only
            self.model.max_seq_length = int(cfg.max_seq_length)

        self.texts = load_texts(cfg.corpus)
        self.loss_fn = make_loss(self.model, cfg.scale)
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        self.consumed = _open_consumed_log(cfg.consumed_log)

    # ---- train ------------------------------------------------------------------------------------------------
    def train(self) -> None:
        cfg = self.cfg
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            self.stopped = "max_steps"
            return
        self.feed = open_feed(cfg, self.stop, self.start_after_seq)
        for batch in pack_batches(self._examples(), cfg.batch_size):
            if self.stop.is_set():
                self.stopped = "stop"
                return
            self._train_batch(batch)
            if self.step % cfg.publish_every == 0:
                self.save_checkpoint()
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                self.stopped = "max_steps"
                return
        if self.stop.is_set():
            self.stopped = "stop"

    def _rows(self) -> Iterator[dict]:
        for row in self.feed:
            self.rows_per_version[row.get("model_version")] += 1
            yield row

    def _examples(self) -> Iterator[Example]:
        for ex in training_examples(self._rows(), self.texts, self.cfg.negatives_per_query, self.cfg.seed,
                                    self.counts):
            self.pending[ex.seq] += 1
            yield ex

    def _train_batch(self, batch: List[Example]) -> None:
        loss = train_step(self.model, self.loss_fn, self.optimizer, batch, self.device, self.cfg.max_grad_norm)
        if not math.isfinite(loss):
            raise StreamMineError(f"step {self.step + 1}: the loss is {loss}; lower lr?")
        self.step += 1
        self.losses.append(loss)
        for ex in batch:
            self.pending[ex.seq] -= 1
            self.examples_per_version[ex.model_version] += 1
            if self.consumed is not None:
                self.consumed.write(json.dumps({"query_id": ex.query_id, "model_version": ex.model_version,
                                                "_seq": ex.seq, "step": self.step}) + "\n")
        if self.consumed is not None:
            self.consumed.flush()
        log.info("step %d: loss %.4f (%d examples)", self.step, loss, len(batch))

    def resume_after_seq(self) -> int:
        done = self.feed.position if self.feed is not None else self.start_after_seq
        waiting = [seq for seq, n in self.pending.items() if n > 0 and seq is not None]
        return min([done] + [seq - 1 for seq in waiting])

    # ---- save_checkpoint --------------------------------------------------------------------------------------
    def save_checkpoint(self) -> dict:
        entry = publish_trained(self.model, self.cfg, self.step, self.resume_after_seq(), self.own_length)
        self.checkpoints.append(entry)
        self.last_published = self.step
        return entry

    # ---- cleanup ----------------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        self.stop.set()  # lets a feed that is still polling end
        if self.consumed is not None:
            self.consumed.close()

    def summary(self) -> dict:
        feed = self.feed
        return {"device": self.device, "base_published": self.base_published, "checkpoints": self.checkpoints,
                "losses": self.losses, "start_step": self.start_step, "start_after_seq": self.start_after_seq,
                "steps": self.step, "steps_trained": self.step - self.start_step, "stopped": self.stopped,
                "rows_consumed": sum(self.rows_per_version.values()),
                "rows_per_version": dict(self.rows_per_version),
                "examples_per_version": dict(self.examples_per_version), "counts": dict(self.counts),
                "resume_after_seq": self.resume_after_seq(),
                "feed_position": getattr(feed, "position", None),
                "feed_stats": _jsonable(getattr(feed, "stats", None)),
                "seconds": round(time.time() - self.t0, 3)}


def open_feed(cfg: OnlineTrainerConfig, stop: threading.Event, start_after_seq: int):
    return NegativesFeed(cfg.feed, follow=cfg.follow, last_versions=cfg.last_versions,
                         poll_seconds=cfg.poll_seconds, idle_timeout_s=cfg.idle_timeout_s, stop=stop,
                         columns=FEED_COLUMNS, start_after_seq=start_after_seq, batch_rows=cfg.feed_batch_rows)


def publish_trained(model, cfg: OnlineTrainerConfig, step: int, resume_after_seq: int,
                    max_seq_length: Optional[int] = None) -> dict:
    """Publishes ``model`` as version ``step-<step>`` (marker last), with the trainer's state beside the weights;
    saved with ``max_seq_length`` when given (the model's own, when it trains with a shorter one)."""
    with tempfile.TemporaryDirectory(prefix="streammine-train-") as tmp:
        training_length = model.max_seq_length
        if max_seq_length:
            model.max_seq_length = max_seq_length
        try:
            model.save(tmp)
        finally:
            model.max_seq_length = training_length
        with open(os.path.join(tmp, TRAINER_STATE), "w", encoding="utf-8") as f:
            json.dump({"step": int(step), "feed": cfg.feed, "resume_after_seq": int(resume_after_seq),
                       "seed": cfg.seed}, f, indent=1)
        version = publish_checkpoint(tmp, cfg.checkpoints, step)
    log.info("published %s (step %d)", version.name, step)
    return {"name": version.name, "step": version.step, "url": version.url}


def read_trainer_state(version_url: str) -> Optional[dict]:
    try:
        return fs.read_json(fs.join(version_url, TRAINER_STATE))
    except ValueError:  # not JSON
        return None


def _open_consumed_log(url: Optional[str]):
    if not url:
        return None
    if fs.is_local(url):
        path = fs.resolve(url)[1]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return open(path, "a", encoding="utf-8")
    return fs.open_url(url, "wt")  # an object store has no append: written (whole) when the trainer ends


def _jsonable(value):
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)
