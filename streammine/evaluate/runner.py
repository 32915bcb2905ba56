"""``run_eval``: mine with several configurations, fine-tune a copy of the model on each, score them side by side.

The order of work, so that held-out queries never reach mining or training and the corpus is encoded once for
mining:

1. carve the held-out queries out of the source split (``split.py``) into ``<output>/data`` (a BEIR directory:
   ``qrels/train.tsv`` and ``qrels/heldout.tsv``);
2. mine every variant that has hard negatives with ``streammine.mine`` on ``qrels/train.tsv`` only, with the base
   model, all variants sharing one embedding store (``<output>/_work``): the corpus is encoded by the first and
   reused by the others; a held-out query id in a mining output stops the run;
3. score the base model on the held-out queries (its corpus vectors are the mining store's when the encoding
   settings match, otherwise it encodes the corpus);
4. per variant: fine-tune a fresh copy of the base model (``train.py``) on its (query, positive[, negatives])
   rows, fixed seed and budget, and score it on the held-out queries against the whole corpus (``metrics.py``).
   Under the fair protocol (``base.short_rows: keep``, the default) every variant's rows are the training
   split's (query, positive) pairs, checked; a query a variant could not fill trains with the negatives it has.

With ``base.folds`` = k the whole of it runs once per fold (fold i of the split's queries held out, ``split.py``),
all folds sharing one embedding store, and the rows are merged (``folds.py``): every query judged once.

:class:`EvalRunner` does these as named steps (``split``, ``mine_variants``, ``score_base``, ``train`` and
``score`` per variant, ``report``); :func:`run_eval` runs them in that order.

The result is a list of rows (one per model), printed as a markdown table and written to ``<output>/eval.json``
with the timings, the split, the resolved configs and the machine.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import platform
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .. import api
from ..config import ConfigBase, flatten_keys, load_section
from ..encode.base import default_model_path
from ..errors import ConfigError, StreamMineError
from ..index.store import NUM_BUCKETS, read_buckets, read_manifest
from ..vectors import from_arrow
from . import metrics as M
from .folds import merge_folds
# the tables live in tables.py; format_table, seed_summary, format_seed_table, TABLE_NOTE are importable from here
from .tables import BASE_ROW, TABLE_NOTE, format_seed_table, format_table, seed_summary  # noqa: F401
from .split import HELDOUT_SPLIT, TRAIN_SPLIT, carve_heldout, read_corpus, read_queries
from .train import (LOSSES, SHORT_ROWS, TrainConfig, fine_tune, load_model, pairs_from_split, pick_device,
                    tuples_from_mined)

log = logging.getLogger("streammine")

# mining must read the carved training split and write where the evaluation expects it
RESERVED_MINE_KEYS = ("input.path", "input.split", "input.format", "input.corpus", "output.path")


@dataclass
class BaseConfig:
    model: Optional[str] = None             # path or name; None -> the packaged all-MiniLM-L6-v2
    data: Optional[str] = None              # a BEIR directory (any fsspec URL) with qrels/<split>.tsv
    split: str = "train"                    # the source split the held-out part is carved from
    heldout_fraction: float = 0.2           # the single carve (folds unset)
    folds: Optional[int] = None             # k >= 2: k-fold over the split's queries, every query judged once
    short_rows: str = "keep"                # keep: a query short of negatives keeps its rows; drop: skipped
    seed: int = 0                           # split, batches, dropout, mining
    split_seed: Optional[int] = None        # the held-out carve's seed; None -> seed (fixed across a seed sweep)
    max_seq_length: Optional[int] = 128     # tokens, for mining, training and evaluation alike; None: the model's
    max_queries: Optional[int] = None       # smoke runs: this many queries of the split (seeded hash order)
    max_docs: Optional[int] = None          # smoke runs: the queries' positives plus others up to this many docs
    device: str = "auto"                    # training and evaluation: auto -> cuda when there is one
    eval_batch_size: int = 64
    bootstrap_samples: int = 2000           # paired bootstrap of the nDCG@10 difference to the base model
    include_base: bool = True               # the row for the model before fine-tuning
    reference_models: dict = field(default_factory=dict)  # name -> model path: scored as they are (e.g. a teacher)
    output: str = "streammine-eval"         # local directory: data/, mined/, _work/, eval.json
    train: TrainConfig = field(default_factory=TrainConfig)
    mine: dict = field(default_factory=dict)  # streammine.mine overrides shared by every variant


@dataclass
class Variant:
    name: str
    mine: Optional[dict] = None             # None: no hard negatives, (anchor, positive) pairs only
    train: dict = field(default_factory=dict)  # base.train overrides for this variant, e.g. {loss: marginmse}
    compare_to: Optional[str] = None        # an earlier variant: the paired ΔnDCG@10 against it is reported too


@dataclass
class EvalConfig(ConfigBase):
    base: BaseConfig = field(default_factory=BaseConfig)
    variants: list = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> "EvalConfig":
        """ConfigBase's loading for ``base``; ``variants`` entries read by :func:`_variant`."""
        data = dict(data or {})
        variants = data.pop("variants", None) or []
        cfg = super().from_dict(data)
        cfg.variants = [_variant(v, i) for i, v in enumerate(variants)]
        return cfg

    def validate(self) -> None:
        validate(self)


@dataclass
class EvalResult:
    rows: List[dict]
    table: str
    json_path: str
    report: dict


# ---- configuration -------------------------------------------------------------------------------------------

def load_eval_config(config: Union[EvalConfig, dict, str, None] = None,
                     overrides: Optional[Dict[str, Any]] = None) -> EvalConfig:
    """An EvalConfig from a YAML path, a dict or an EvalConfig, with dotted overrides (``base.train.max_steps``)
    on top. Values given as strings (from ``--set``) are converted to the field's type."""
    return EvalConfig.from_sources(config, overrides)


def _variant(v: Any, i: int) -> Variant:
    if isinstance(v, Variant):
        return v
    if not isinstance(v, dict) or not v.get("name"):
        raise ConfigError(f"variants[{i}] must be a mapping with a name, got {v!r}")
    unknown = set(v) - {"name", "mine", "train", "compare_to"}
    if unknown:
        raise ConfigError(f"variants[{i}]: unknown key(s) {', '.join(sorted(unknown))} (name, mine, train, "
                          f"compare_to)")
    train = _variant_train(v.get("train"), i)
    compare_to = None if v.get("compare_to") is None else str(v["compare_to"])
    mine = v.get("mine")
    if mine is None or (isinstance(mine, str) and mine.lower() in ("none", "null", "")):
        if train.get("loss", "mnrl") != "mnrl":
            raise ConfigError(f"variants[{i}]: train.loss {train['loss']} needs mined negatives (set mine)")
        return Variant(str(v["name"]), None, train, compare_to)
    if not isinstance(mine, dict):
        raise ConfigError(f"variants[{i}].mine must be a mapping of streammine config keys or none, got {mine!r}")
    return Variant(str(v["name"]), flatten_keys(mine), train, compare_to)


def _variant_train(train: Any, i: int) -> dict:
    """A variant's ``train`` overrides: base.train keys, each coerced to its field's type; ``loss`` in LOSSES."""
    if not train:
        return {}
    if not isinstance(train, dict):
        raise ConfigError(f"variants[{i}].train must be a mapping of base.train keys, got {train!r}")
    built = load_section(TrainConfig, train, f"variants[{i}].train.")
    out = {k: getattr(built, k) for k in train}
    if "loss" in out:
        out["loss"] = str(out["loss"]).lower()
        if out["loss"] not in LOSSES:
            raise ConfigError(f"variants[{i}].train.loss must be one of {', '.join(LOSSES)}, got {train['loss']!r}")
    return out


def variant_train_config(cfg: EvalConfig, v: Variant) -> TrainConfig:
    """base.train with the variant's overrides on top."""
    return dataclasses.replace(cfg.base.train, **v.train) if v.train else cfg.base.train


def validate(cfg: EvalConfig) -> None:
    b = cfg.base
    if not b.data:
        raise ConfigError("base.data is required (a BEIR directory)")
    if not 0.0 < float(b.heldout_fraction) < 1.0:
        raise ConfigError(f"base.heldout_fraction must be in (0, 1), got {b.heldout_fraction}")
    if b.folds is not None and int(b.folds) < 2:
        raise ConfigError(f"base.folds must be >= 2 (or unset for the single held-out carve), got {b.folds}")
    if b.short_rows not in SHORT_ROWS:
        raise ConfigError(f"base.short_rows must be one of {', '.join(SHORT_ROWS)}, got {b.short_rows!r}")
    if not cfg.variants:
        raise ConfigError("give at least one entry under variants")
    names = [v.name for v in cfg.variants]
    if not isinstance(b.reference_models or {}, dict):
        raise ConfigError(f"base.reference_models must map a row name to a model path, got {b.reference_models!r}")
    if set(b.reference_models or {}) & set(names + [BASE_ROW]):
        raise ConfigError(f"base.reference_models names must differ from the variants' and {BASE_ROW!r}")
    if b.reference_models and not b.include_base:
        raise ConfigError("base.reference_models needs base.include_base (they are paired with the base model)")
    if len(set(names)) != len(names) or BASE_ROW in names:
        raise ConfigError(f"variant names must be unique and not {BASE_ROW!r}: {names}")
    if len({_slug(n) for n in names}) != len(names):
        raise ConfigError(f"variant names must differ in more than punctuation and case: {names}")
    for i, v in enumerate(cfg.variants):
        if v.compare_to is not None and v.compare_to not in names[:i]:
            raise ConfigError(f"variant {v.name!r}: compare_to {v.compare_to!r} must name an earlier variant "
                              f"({', '.join(map(repr, names[:i])) or 'there is none'})")
    t = b.train
    if t.max_steps is None and not t.epochs:
        raise ConfigError("set base.train.max_steps or base.train.epochs")
    if t.max_steps is not None and int(t.max_steps) < 1:
        raise ConfigError(f"base.train.max_steps must be >= 1, got {t.max_steps}")
    if int(t.batch_size) < 1:
        raise ConfigError(f"base.train.batch_size must be >= 1, got {t.batch_size}")
    for where, mine in [("base.mine", flatten_keys(b.mine))] + [(f"variant {v.name!r}", v.mine or {})
                                                             for v in cfg.variants]:
        bad = sorted(set(mine) & set(RESERVED_MINE_KEYS))
        if bad:
            raise ConfigError(f"{where}: {', '.join(bad)} cannot be set: mining always reads the carved training "
                              f"split (held-out queries are never mined)")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "variant"


def mine_overrides(cfg: EvalConfig, variant: Variant, split_dir: str, out: str, model_path: str,
                   work_dir: Optional[str] = None) -> dict:
    """The streammine.mine settings of a variant; ``work_dir`` (default ``<out>/_work``): the embedding store,
    shared by every variant (and every fold)."""
    b = cfg.base
    overrides = {"input.path": split_dir, "input.split": TRAIN_SPLIT, "input.format": "beir",
                 "encoder.model": model_path, "encoder.max_length": b.max_seq_length,
                 # fp32 on a GPU too: the base model's evaluation reuses these corpus vectors
                 "encoder.precision": "float32",
                 "mining.seed": b.seed, "output.path": os.path.join(out, "mined", _slug(variant.name)),
                 "output.overwrite": True, "output.export": [], "run.work_dir": work_dir or os.path.join(out, "_work"),
                 "run.progress": False}
    overrides.update(flatten_keys(b.mine))
    overrides.update(variant.mine or {})
    return overrides


# ---- the run -------------------------------------------------------------------------------------------------

def run_eval(config: Union[EvalConfig, dict, str, None] = None,
             overrides: Optional[Dict[str, Any]] = None) -> EvalResult:
    """Loads the config (:func:`load_eval_config`) and runs an :class:`EvalRunner` on it, or with ``base.folds``
    = k one per fold (each its own carve, mining and training; one embedding store) and merges their rows
    (``folds.merge_folds``): every query of the split is scored once, by models that never saw it."""
    cfg = load_eval_config(config, overrides)
    if not cfg.base.folds:
        return EvalRunner(cfg).run()
    t0, started = time.perf_counter(), time.time()
    results = []
    for i in range(int(cfg.base.folds)):
        log.info("eval: fold %d of %d", i + 1, cfg.base.folds)
        results.append(EvalRunner(cfg, fold=i).run())
    return fold_report(cfg, results, started, time.perf_counter() - t0)


class EvalRunner:
    """The evaluation as named steps, run in this order by :meth:`run`: :meth:`split` (carve and read),
    :meth:`mine_variants`, :meth:`score_base`, then per variant :meth:`train` and :meth:`score`, and
    :meth:`report`. Invariant: held-out queries reach neither mining nor training (checked after the split and
    after every mining run)."""

    def __init__(self, cfg: EvalConfig, fold: Optional[int] = None):
        self.cfg = cfg
        b = cfg.base
        self.fold = fold
        root = os.path.abspath(b.output)
        # fold i of k: its carve, mining outputs and eval.json under fold-<i>/, the embedding store shared
        self.out = root if fold is None else os.path.join(root, f"fold-{fold}")
        self.data_dir = os.path.join(root, "data") if fold is None else os.path.join(root, "data", f"fold-{fold}")
        self.work_dir = os.path.join(root, "_work")
        os.makedirs(self.out, exist_ok=True)
        self.started = time.time()
        self.t_run = time.perf_counter()
        self.model_path = str(b.model or default_model_path())
        self.model_name = b.model or "all-MiniLM-L6-v2 (packaged)"
        self.device = pick_device(b.device)
        self.phases: Dict[str, float] = {}
        self.mined: Dict[str, dict] = {}
        self.rows: List[dict] = []
        self.base_per_query: Optional[Dict[str, Dict[str, float]]] = None
        self.ndcg_by_variant: Dict[str, Dict[str, float]] = {}  # per-query nDCG@10, for compare_to
        # (rows, margins, train settings) -> (the variant trained on them, means, per-query metrics, training stats)
        self.trained: Dict[tuple, tuple] = {}

    def run(self) -> EvalResult:
        self.split()
        self.mine_variants()
        if self.cfg.base.include_base:
            self.score_base()
        for v in self.cfg.variants:
            self.train_and_score(v)
        return self.report()

    # ---- 1. split ---------------------------------------------------------------------------------------------
    def split(self) -> None:
        b = self.cfg.base
        split = carve_heldout(b.data, self.data_dir, float(b.heldout_fraction),
                              b.seed if b.split_seed is None else b.split_seed, b.split, b.max_queries, b.max_docs,
                              None if self.fold is None else (self.fold, int(b.folds)))
        heldout_ids, train_ids = set(split.heldout_ids), set(split.train_ids)
        self.doc_ids, self.doc_texts = read_corpus(split.path)
        self.texts = dict(zip(self.doc_ids, self.doc_texts))
        self.train_q, self.train_pos = read_queries(split.path, TRAIN_SPLIT)
        self.held_q, self.held_pos = read_queries(split.path, HELDOUT_SPLIT)
        if set(self.train_q) & set(self.held_q) or set(self.held_q) != heldout_ids or set(self.train_q) != train_ids:
            raise StreamMineError(f"{split.path}: the carved splits overlap or do not match split.json")
        log.info("eval: %d training queries, %d held-out queries, %d documents (%s)", len(self.train_q),
                 len(self.held_q), len(self.doc_ids), split.path)
        self.carved, self.heldout_ids, self.train_ids = split, heldout_ids, train_ids
        self.phases["carve_and_read_seconds"] = round(time.perf_counter() - self.t_run, 1)

    # ---- 2. mining: every variant with hard negatives, one embedding store ------------------------------------
    def mine_variants(self) -> None:
        import ray  # the Ray boundary: only mining needs it, and it is shut down before training
        t_mining = time.perf_counter()
        ray_was_up = ray.is_initialized()
        try:
            for v in self.cfg.variants:
                if v.mine is not None:
                    self.mined[v.name] = self.mine(v)
        finally:
            if not ray_was_up and ray.is_initialized():
                ray.shutdown()  # frees the cores (and a GPU) for training
        self.phases["mining_seconds"] = round(time.perf_counter() - t_mining, 1)

    def mine(self, v: Variant) -> dict:
        mcfg = api.load_config(None, mine_overrides(self.cfg, v, self.carved.path, self.out, self.model_path,
                                                    self.work_dir))
        log.info("eval: mining %r", v.name)
        t = time.perf_counter()
        result = api.mine(mcfg)
        seconds = time.perf_counter() - t
        examples = tuples_from_mined(result.output, self.texts, mcfg.mining.sampler.num_negatives,
                                     self.heldout_ids, margins=variant_train_config(self.cfg, v).loss == "marginmse",
                                     split=(self.train_q, self.train_pos), short=self.cfg.base.short_rows)
        if self.cfg.base.short_rows == "keep":
            self.check_same_pairs(v, examples)
        mined_ids = set(examples.mined_query_ids)
        if mined_ids - self.train_ids:
            raise StreamMineError(f"{result.output}: mined queries outside the training split")
        return {"examples": examples, "seconds": seconds, "cfg": mcfg, "summary": result.summary,
                "queries_mined": len(mined_ids)}

    def check_same_pairs(self, v: Variant, examples) -> None:
        """The fair protocol's invariant: a variant's (query, positive) rows are the training split's."""
        pairs = pairs_from_split(self.train_q, self.train_pos, self.texts)
        if [r[:2] for r in examples.rows] != pairs.rows:
            raise StreamMineError(f"variant {v.name!r}: its training rows are not the training split's "
                                  f"{len(pairs.rows)} (query, positive) pairs ({len(examples.rows)} rows)")

    # ---- 3. the model before fine-tuning ----------------------------------------------------------------------
    def score_base(self) -> None:
        b = self.cfg.base
        t = time.perf_counter()
        model = load_model(self.model_path, self.device, b.max_seq_length)
        vectors, source = _store_vectors(self.mined, self.doc_ids, self.model_path, b.max_seq_length)
        means, self.base_per_query = self.score(model, vectors)
        self.rows.append(_row(BASE_ROW, means, None, None, None, time.perf_counter() - t, None, None,
                              extra={"corpus_vectors": source,
                                     "ndcg@10_per_query": _per_query_ndcg(self.base_per_query)}))
        del model
        gc.collect()
        for name, path in (b.reference_models or {}).items():
            self.score_reference(str(name), str(path))
        self.phases["base_eval_seconds"] = round(time.perf_counter() - t, 1)

    def score_reference(self, name: str, path: str) -> None:
        """Another model scored as it is (e.g. the teacher a variant mines with), paired with the base model; its
        corpus vectors come from a variant's mining store when that variant mined with it."""
        b = self.cfg.base
        t = time.perf_counter()
        model = load_model(path, self.device, b.max_seq_length)
        vectors, source = _store_vectors(self.mined, self.doc_ids, path, b.max_seq_length)
        means, per_query = self.score(model, vectors)
        delta = M.paired_bootstrap({q: m["ndcg@10"] for q, m in self.base_per_query.items()},
                                   {q: m["ndcg@10"] for q, m in per_query.items()}, b.bootstrap_samples, b.seed)
        self.rows.append(_row(name, means, delta, None, None, time.perf_counter() - t, None, None,
                              extra={"corpus_vectors": source, "reference_model": path,
                                     "ndcg@10_per_query": _per_query_ndcg(per_query)}))
        del model
        gc.collect()

    # ---- 4. fine-tune and score every variant -----------------------------------------------------------------
    def examples(self, v: Variant):
        """The variant's training rows: its mining output's tuples, or (query, positive) pairs without mining."""
        info = self.mined.get(v.name)
        return info["examples"] if info else pairs_from_split(self.train_q, self.train_pos, self.texts)

    def train(self, v: Variant, examples=None):
        """A fresh copy of the base model fine-tuned on the variant's rows: (model, stats, examples)."""
        b = self.cfg.base
        examples = self.examples(v) if examples is None else examples
        log.info("eval: fine-tuning for %r on %d rows (%d negatives each)", v.name, len(examples.rows),
                 len(examples.columns) - 2)
        model, stats = fine_tune(self.model_path, examples, variant_train_config(self.cfg, v), b.seed, self.device,
                                 b.max_seq_length)
        return model, stats, examples

    def score(self, model, vectors: Optional[np.ndarray] = None) -> Tuple[dict, Dict[str, Dict[str, float]]]:
        """(mean metrics, per-query metrics) of ``model`` on the held-out queries against the whole corpus."""
        return M.evaluate_model(model, self.held_q, self.held_pos, self.doc_ids, self.doc_texts, vectors,
                                self.cfg.base.eval_batch_size)

    def train_and_score(self, v: Variant) -> None:
        b = self.cfg.base
        info = self.mined.get(v.name)
        examples = self.examples(v)
        # the same rows, teacher margins and training settings under a fixed seed make the same model: an earlier
        # variant's (e.g. a filter that removed nothing) is reused instead of trained and scored again
        key = (tuple(examples.columns), tuple(examples.rows),
               None if examples.labels is None else tuple(examples.labels), repr(variant_train_config(self.cfg, v)))
        same_as = self.trained[key][0] if key in self.trained else None
        if same_as is None:
            model, stats, examples = self.train(v, examples)
            t = time.perf_counter()
            means, per_query = self.score(model)
            eval_seconds = time.perf_counter() - t
            del model
            gc.collect()
            self.trained[key] = (v.name, means, per_query, stats)
            log.info("eval: %r trained in %.1f s, scored in %.1f s: nDCG@10 %.4f", v.name, stats["train_seconds"],
                     eval_seconds, means["ndcg@10"])
        else:
            _, means, per_query, stats = self.trained[key]
            stats, eval_seconds = dict(stats, train_seconds=0.0), 0.0
            log.info("eval: %r has the same training rows and settings as %r: its model and scores are reused",
                     v.name, same_as)
        base = self.base_per_query
        delta = (M.paired_bootstrap({q: m["ndcg@10"] for q, m in base.items()},
                                    {q: m["ndcg@10"] for q, m in per_query.items()}, b.bootstrap_samples, b.seed)
                 if base else None)
        ndcg = _per_query_ndcg(per_query)
        self.ndcg_by_variant[v.name] = ndcg
        extra = {"training": stats, "examples": examples.counts, "ndcg@10_per_query": ndcg,
                 "rows_full_negatives": examples.counts.get("rows_full_negatives")}
        if same_as is not None:
            extra["same_training_as"] = same_as
        if v.compare_to is not None:
            extra["delta_vs"] = self.delta_vs(v.compare_to, ndcg)
        if examples.labels is not None:  # MarginMSE: whose scores the margins came from
            extra["teacher_scores"] = examples.counts["teacher_scores"]
        if info:
            s = info["summary"]
            extra["mining"] = {"queries_mined": info["queries_mined"], "heldout_queries_mined": 0,
                               "counts": s.get("counts"), "store_reused": s.get("index", {}).get("store_reused"),
                               "seconds": s.get("seconds"), "output": s.get("output"),
                               "mining_config": info["cfg"].to_dict()["mining"]}
        self.rows.append(_row(v.name, means, delta, len(examples.rows), info["seconds"] if info else None,
                              eval_seconds, stats["train_seconds"], len(examples.columns) - 2, extra))

    def delta_vs(self, reference: str, ndcg: Dict[str, float]) -> dict:
        """The paired-bootstrap ΔnDCG@10 of the per-query scores ``ndcg`` against an earlier variant's."""
        b = self.cfg.base
        d = M.paired_bootstrap(self.ndcg_by_variant[reference], ndcg, b.bootstrap_samples, b.seed)
        return {"reference": reference, "delta_ndcg@10": [round(x, 4) for x in d]}

    # ---- 5. report --------------------------------------------------------------------------------------------
    def report(self) -> EvalResult:
        rows, phases = self.rows, self.phases
        phases["training_seconds"] = round(sum(r["train_seconds"] or 0 for r in rows), 1)
        phases["fine_tuned_eval_seconds"] = round(sum(r["eval_seconds"] or 0 for r in rows
                                                      if r["model"] != BASE_ROW), 1)
        report = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                  "total_seconds": round(time.perf_counter() - self.t_run, 1), "phases": phases,
                  "machine": machine_info(self.device),
                  "model": self.model_name,
                  "split": {k: v for k, v in self.carved.to_dict().items() if k != "train_ids"},
                  "metrics_library": "sentence-transformers InformationRetrievalEvaluator.compute_metrics",
                  "rows": rows, "config": self.cfg.to_dict()}
        table = format_table(rows)
        report["table"] = table
        json_path = os.path.join(self.out, "eval.json")
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1, default=str)
        with open(os.path.join(self.out, "eval.md"), "w") as f:
            f.write(table + "\n")
        return EvalResult(rows, table, json_path, report)


def _store_vectors(mined: Dict[str, dict], doc_ids, model_path: str, max_len: Optional[int]):
    """The base model's corpus vectors from a mining run's embedding store, when that run encoded exactly as the
    evaluation does (same model, max length, no prompts, normalized, fp32); else (None, "encoded")."""
    for info in mined.values():
        e = info["cfg"].encoder
        if (e.kind != "sentence-transformers" or str(e.model) != model_path or e.max_length != max_len
                or e.query_prompt or e.document_prompt or not e.normalize or e.precision != "float32"):
            continue
        store_url = os.path.join(info["cfg"].run.work_dir, "embeddings", str(info["summary"].get("model_version")))
        manifest = read_manifest(store_url)
        if manifest is None:
            continue
        found = {}
        for table in read_buckets(store_url, list(range(NUM_BUCKETS)), manifest):
            for doc_id, v in zip(table.column("doc_id").to_pylist(), from_arrow(table.column("vector"))):
                found[doc_id] = v
        if all(d in found for d in doc_ids):
            return np.stack([found[d] for d in doc_ids]).astype(np.float32), "mining embedding store"
    return None, "encoded"


def _per_query_ndcg(per_query: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """Each held-out query's nDCG@10 (kept in eval.json so that runs over several seeds can be paired)."""
    return {q: round(float(m["ndcg@10"]), 6) for q, m in sorted(per_query.items())}


def _row(name, means, delta, rows, mine_s, eval_s, train_s, negatives, extra=None) -> dict:
    row = {"model": name, **{k: round(v, 4) for k, v in means.items()},
           "delta_ndcg@10": None if delta is None else [round(x, 4) for x in delta],
           "negatives_per_row": negatives, "train_rows": rows,
           "mine_seconds": None if mine_s is None else round(mine_s, 1),
           "train_seconds": None if train_s is None else round(train_s, 1),
           "eval_seconds": None if eval_s is None else round(eval_s, 1)}
    row.update(extra or {})
    return row


def fold_report(cfg: EvalConfig, results: List[EvalResult], started: float, seconds: float) -> EvalResult:
    """One EvalResult from the k folds' (``folds.merge_folds``), written to ``<output>/eval.json`` and eval.md."""
    b = cfg.base
    rows = merge_folds([r.rows for r in results], b.bootstrap_samples, b.seed)
    splits = [r.report["split"] for r in results]
    split = {"folds": len(results), "path": os.path.join(os.path.abspath(b.output), "data"),
             "heldout_queries": sum(s["heldout_queries"] for s in splits),
             "heldout_ids": sorted(q for s in splits for q in s["heldout_ids"]),
             "train_queries": round(float(np.mean([s["train_queries"] for s in splits])), 1),
             "train_queries_per_fold": [s["train_queries"] for s in splits], "docs": splits[0]["docs"],
             "seed": splits[0]["seed"], "source": splits[0]["source"]}
    phases: Dict[str, float] = {}
    for r in results:
        for k, v in r.report["phases"].items():
            phases[k] = round(phases.get(k, 0.0) + v, 1)
    report = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "total_seconds": round(seconds, 1), "phases": phases, "machine": results[0].report["machine"],
              "model": results[0].report["model"], "split": split, "rows": rows, "config": cfg.to_dict(),
              "metrics_library": results[0].report["metrics_library"],
              "fold_reports": [r.json_path for r in results]}
    table = format_table(rows)
    report["table"] = table
    json_path = os.path.join(os.path.abspath(b.output), "eval.json")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(os.path.join(os.path.abspath(b.output), "eval.md"), "w") as f:
        f.write(table + "\n")
    return EvalResult(rows, table, json_path, report)


def machine_info(device: str) -> dict:
    import torch
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "device": device,
            "torch_threads": torch.get_num_threads()}
    try:
        import sentence_transformers
        info["sentence_transformers"] = sentence_transformers.__version__
    except Exception:  # pragma: no cover
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return info
