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
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import api
from ..config import ConfigBase, flatten_keys, load_section
from ..encode.base import default_model_path
from ..errors import ConfigError, StreamMineError
from ..index.store import NUM_BUCKETS, read_buckets, read_manifest
from ..vectors import from_arrow
from . import metrics as M
from .split import HELDOUT_SPLIT, TRAIN_SPLIT, carve_heldout, read_corpus, read_queries
from .train import LOSSES, TrainConfig, fine_tune, load_model, pairs_from_split, pick_device, tuples_from_mined

log = logging.getLogger("streammine")

BASE_ROW = "before fine-tuning"
# mining must read the carved training split and write where the evaluation expects it
RESERVED_MINE_KEYS = ("input.path", "input.split", "input.format", "input.corpus", "output.path")


@dataclass
class BaseConfig:
    model: Optional[str] = None             # path or name; None -> the packaged all-MiniLM-L6-v2
    data: Optional[str] = None              # a BEIR directory (any fsspec URL) with qrels/<split>.tsv
    split: str = "train"                    # the source split the held-out part is carved from
    heldout_fraction: float = 0.2
    seed: int = 0                           # split, batches, dropout, mining
    split_seed: Optional[int] = None        # the held-out carve's seed; None -> seed (fixed across a seed sweep)
    max_seq_length: Optional[int] = 128     # tokens, for mining, training and evaluation alike; None: the model's
    max_queries: Optional[int] = None       # smoke runs: this many queries of the split (seeded hash order)
    max_docs: Optional[int] = None          # smoke runs: the queries' positives plus others up to this many docs
    device: str = "auto"                    # training and evaluation: auto -> cuda when there is one
    eval_batch_size: int = 64
    bootstrap_samples: int = 2000           # paired bootstrap of the nDCG@10 difference to the base model
    include_base: bool = True               # the row for the model before fine-tuning
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
    if not cfg.variants:
        raise ConfigError("give at least one entry under variants")
    names = [v.name for v in cfg.variants]
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


def mine_overrides(cfg: EvalConfig, variant: Variant, split_dir: str, out: str, model_path: str) -> dict:
    b = cfg.base
    overrides = {"input.path": split_dir, "input.split": TRAIN_SPLIT, "input.format": "beir",
                 "encoder.model": model_path, "encoder.max_length": b.max_seq_length,
                 # fp32 on a GPU too: the base model's evaluation reuses these corpus vectors
                 "encoder.fp16": "false",
                 "mining.seed": b.seed, "output.path": os.path.join(out, "mined", _slug(variant.name)),
                 "output.overwrite": True, "output.export": [], "run.work_dir": os.path.join(out, "_work"),
                 "run.progress": False}
    overrides.update(flatten_keys(b.mine))
    overrides.update(variant.mine or {})
    return overrides


# ---- the run -------------------------------------------------------------------------------------------------

def run_eval(config: Union[EvalConfig, dict, str, None] = None,
             overrides: Optional[Dict[str, Any]] = None) -> EvalResult:
    """Loads the config (:func:`load_eval_config`) and runs an :class:`EvalRunner` on it."""
    return EvalRunner(load_eval_config(config, overrides)).run()


class EvalRunner:
    """The evaluation as named steps, run in this order by :meth:`run`: :meth:`split` (carve and read),
    :meth:`mine_variants`, :meth:`score_base`, then per variant :meth:`train` and :meth:`score`, and
    :meth:`report`. Invariant: held-out queries reach neither mining nor training (checked after the split and
    after every mining run)."""

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        b = cfg.base
        self.out = os.path.abspath(b.output)
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
        split = carve_heldout(b.data, os.path.join(self.out, "data"), float(b.heldout_fraction),
                              b.seed if b.split_seed is None else b.split_seed, b.split, b.max_queries, b.max_docs)
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
        mcfg = api.load_config(None, mine_overrides(self.cfg, v, self.carved.path, self.out, self.model_path))
        log.info("eval: mining %r", v.name)
        t = time.perf_counter()
        result = api.mine(mcfg)
        seconds = time.perf_counter() - t
        examples = tuples_from_mined(result.output, self.texts, mcfg.mining.sampler.num_negatives,
                                     self.heldout_ids, margins=variant_train_config(self.cfg, v).loss == "marginmse")
        mined_ids = set(examples.mined_query_ids)
        if mined_ids - self.train_ids:
            raise StreamMineError(f"{result.output}: mined queries outside the training split")
        return {"examples": examples, "seconds": seconds, "cfg": mcfg, "summary": result.summary,
                "queries_mined": len(mined_ids)}

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
        self.phases["base_eval_seconds"] = round(time.perf_counter() - t, 1)
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
        extra = {"training": stats, "examples": examples.counts, "ndcg@10_per_query": ndcg}
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
                or e.query_prompt or e.document_prompt or not e.normalize or str(e.fp16).lower() != "false"):
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


def _interval(d: Optional[Sequence[float]]) -> str:
    return "" if d is None else f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]"


def format_table(rows: List[dict]) -> str:
    vs = any(r.get("delta_vs") for r in rows)  # the column only when a variant names compare_to
    head = ("| model | nDCG@10 | MRR@10 | Recall@100 | ΔnDCG@10 vs before (95% CI) "
            + ("| ΔnDCG@10 vs compare_to (95% CI) " if vs else "")
            + "| negatives/row | train rows | mine s | train s | eval s |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        cell = lambda x: "" if x is None else str(x)  # noqa: E731
        ref = r.get("delta_vs")
        vs_cell = (f"| {_interval(ref['delta_ndcg@10'])} vs {ref['reference']} " if ref else "| ") if vs else ""
        lines.append(f"| {r['model']} | {r['ndcg@10']:.4f} | {r['mrr@10']:.4f} | {r['recall@100']:.4f} "
                     f"| {_interval(r['delta_ndcg@10'])} {vs_cell}"
                     f"| {cell(r['negatives_per_row'])} | {cell(r['train_rows'])} | {cell(r['mine_seconds'])} "
                     f"| {cell(r['train_seconds'])} | {cell(r['eval_seconds'])} |")
    return "\n".join(lines)


def seed_summary(per_seed: Dict[int, List[dict]], samples: int = 2000) -> List[dict]:
    """Rows of several runs that differ only in ``base.seed`` (same held-out split) -> one row per model: the mean
    and every seed's nDCG@10, every seed's ΔnDCG@10 interval vs the model before fine-tuning (each run's own paired
    bootstrap) and, where the rows carry per-query nDCG@10, the pooled intervals over all seeds
    (:func:`metrics.pooled_paired_bootstrap`) vs the model before fine-tuning and vs the variant's ``compare_to``.
    Models in the order of the first seed's rows; a model missing from a seed is an error."""
    seeds = sorted(per_seed)
    if not seeds:
        raise ValueError("no seeds")
    by_seed = {s: {r["model"]: r for r in per_seed[s]} for s in seeds}

    def pooled(reference: str, name: str) -> Optional[List[float]]:
        runs = [(by_seed[s].get(reference, {}).get("ndcg@10_per_query"), by_seed[s][name].get("ndcg@10_per_query"))
                for s in seeds]
        if any(a is None or b is None for a, b in runs):
            return None
        d = M.pooled_paired_bootstrap([a for a, _ in runs], [b for _, b in runs], samples, seeds[0])
        return [round(x, 4) for x in d]

    out = []
    for r in per_seed[seeds[0]]:
        name = r["model"]
        missing = [s for s in seeds if name not in by_seed[s]]
        if missing:
            raise StreamMineError(f"model {name!r} has no row for seed(s) {missing}")
        values = [by_seed[s][name]["ndcg@10"] for s in seeds]
        row = {"model": name, "seeds": seeds, "ndcg@10_mean": round(float(np.mean(values)), 4),
               "ndcg@10_per_seed": values,
               "delta_ndcg@10_per_seed": [by_seed[s][name]["delta_ndcg@10"] for s in seeds],
               "delta_ndcg@10_pooled": None if name == BASE_ROW else pooled(BASE_ROW, name)}
        reference = (r.get("delta_vs") or {}).get("reference")
        if reference is not None:
            row["delta_vs_pooled"] = {"reference": reference, "delta_ndcg@10": pooled(reference, name)}
        out.append(row)
    return out


def format_seed_table(summary: List[dict]) -> str:
    lines = ["| model | mean nDCG@10 | nDCG@10 per seed | ΔnDCG@10 vs before, all seeds (95% CI) "
             "| ΔnDCG@10 vs compare_to, all seeds (95% CI) | ΔnDCG@10 vs before per seed (95% CI) |",
             "|---|---|---|---|---|---|"]
    for r in summary:
        deltas = "; ".join(_interval(d) for d in r["delta_ndcg@10_per_seed"])
        per = ", ".join(f"{v:.4f}" for v in r["ndcg@10_per_seed"])
        vs = r.get("delta_vs_pooled")
        vs_cell = f"{_interval(vs['delta_ndcg@10'])} vs {vs['reference']}" if vs and vs["delta_ndcg@10"] else ""
        lines.append(f"| {r['model']} | {r['ndcg@10_mean']:.4f} | {per} | {_interval(r.get('delta_ndcg@10_pooled'))} "
                     f"| {vs_cell} | {deltas if deltas.strip('; ') else ''} |")
    return "\n".join(lines)


TABLE_NOTE = ("mine s: the first mining run encodes the corpus into the shared embedding store, the others reuse "
              "it; eval s: encoding the corpus and the held-out queries, ranking, scoring (the model before "
              "fine-tuning takes its corpus vectors from the store when it can)")


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
