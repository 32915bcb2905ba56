"""The run configuration: small dataclasses, loadable from YAML and overridable by dotted flags.

``MineConfig.from_sources(yaml_path, overrides)`` is what the CLI and the Python API both use, so a YAML file and
its command-line equivalent resolve to the same config (and the same ``config_hash``).

:class:`ConfigBase` is the one loader every top-level config class shares (``MineConfig`` here,
``OnlineTrainerConfig`` in ``train/online.py``, ``EvalConfig`` in ``evaluate/runner.py``): ``from_dict``,
``from_yaml``, ``from_sources`` with dotted overrides, values read as the type their field's type hint names.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping, Optional, Tuple

import yaml

from .errors import ConfigError, StreamMineError
from .io.fs import exists, open_url

TORCH_DTYPES = ("float16", "bfloat16", "float32")
SUPPLIED_NEGATIVES = ("include", "exclude", "ignore")
ENCODER_KINDS = ("sentence-transformers", "precomputed")
EXECUTORS = ("auto", "ray", "in-process")  # run.executor (run/in_process.py: runs_in_process)
RESCORE_VECTORS = ("auto", "memory", "disk")  # index.rescore_vectors (index/vector_rows.py)
# encoder.precision (encode/precision.py says what each runs and what auto resolves to)
PRECISIONS = ("auto", "float32", "bf16-autocast", "float16", "bfloat16")


class ConfigBase:
    """Loading for a top-level config dataclass (nested sections are plain dataclasses).

    Values are read as their field's type hint says (``typing.get_type_hints``): a nested dataclass from a
    mapping; from a string (a ``--set`` flag), a ``bool`` (true/false, yes/no, on/off, 1/0), an ``int``, a
    ``float`` or a comma-separated ``list``; ``none``/``null``/empty for an ``Optional`` field is None (except an
    ``Optional[str]`` whose default is not None, where it stays a name). An ``int`` for a ``float`` field becomes a
    float; for an ``Optional[float]`` it stays an int (so config hashes stay what they were). Unknown keys, a
    section that is not a mapping or an unreadable value raise a one-line :class:`ConfigError` naming the key.
    """

    @classmethod
    def from_dict(cls, data: Optional[Mapping]):
        return _build(cls, data or {}, "")

    @classmethod
    def from_yaml(cls, url: str):
        return cls.from_dict(load_yaml_mapping(url))

    @classmethod
    def from_sources(cls, source: Any = None, overrides: Optional[dict] = None, validate: bool = True):
        """``source`` (a YAML URL, a mapping, an instance, or None for the defaults) with dotted overrides on top,
        e.g. ``{"index.shards": 4}``; validated unless ``validate`` is False."""
        if isinstance(source, cls):
            data = source.to_dict()
        elif isinstance(source, Mapping):
            data = copy.deepcopy(dict(source))
        elif source:
            data = cls.from_yaml(source).to_dict()
        else:
            data = {}
        for dotted, value in (overrides or {}).items():
            set_dotted(data, dotted, value)
        cfg = cls.from_dict(data)
        if validate:
            cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raises a one-line ConfigError for an invalid value; each class states its own rules."""

    def check_types(self) -> None:
        """Numbers are numbers: an int key takes an int (not a bool, not 2.5), a float key a finite int or float
        (not a bool, NaN or inf), a bool key a bool. One line naming the key otherwise."""
        _check_types(self, "")


@dataclass
class ColumnsConfig:
    """Column names of user tables (pairs input and corpus tables)."""
    query_id: Optional[str] = None      # pairs: absent -> content hash of the query text
    query: str = "anchor"
    positive_id: Optional[str] = None   # pairs: a corpus id, or ...
    positive: Optional[str] = "positive"  # ... the positive's text (added to the corpus under a content-hash id)
    doc_id: Optional[str] = "_id"       # corpus table: absent -> content hash of the text
    text: str = "text"
    title: Optional[str] = "title"
    negative: Optional[str] = None      # pairs: known negatives' texts (one or a list; added to the corpus), or ...
    negative_id: Optional[str] = None   # ... their corpus ids (see mining.supplied_negatives)
    prompt: Optional[str] = None        # pairs: a per-query instruction column, carried to the output


@dataclass
class InputConfig:
    format: str = "beir"
    path: Optional[str] = None          # beir: dataset directory URL; pairs: the pairs table URL
    split: str = "train"                # beir: qrels/<split>.tsv
    corpus: Optional[str] = None        # pairs: optional separate corpus table URL
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    lenient: bool = False               # bad rows go to the quarantine instead of failing the run
    max_queries: Optional[int] = None   # mine only the first N queries (smoke runs)
    read_tasks: int = 0                 # corpus read tasks: 0 -> one per split; N -> N tasks (1: a single task)
    read_split_mb: float = 64.0         # a larger file is read as splits of about this size (JSONL: byte ranges,
                                        # Parquet: row groups); read_tasks never changes the output


@dataclass
class EncoderConfig:
    kind: str = "sentence-transformers"
    model: Optional[str] = None         # path or name; None -> the packaged all-MiniLM-L6-v2
    query_prompt: str = ""
    document_prompt: str = ""
    max_length: Optional[int] = None
    batch_size: int = 0                 # texts per forward pass; 0: by a token budget on CPU, 32 on GPU
    normalize: bool = True
    # auto: float16 on a GPU, float32 on a CPU (encode/precision.py); float32; bf16-autocast (float32 weights,
    # matrix products in bfloat16: ~2.5x float32 on a CPU with bfloat16 instructions); float16 / bfloat16 (the
    # whole model cast)
    precision: str = "auto"
    cpu_onednn: bool = True             # fp32 on a CPU: linear layers through oneDNN (encode/cpu_kernels.py)
    num_actors: int = 0                 # 0 -> one per GPU; on a CPU machine one per core, up to 4 (encode/plan.py)
    cpus_per_actor: Optional[float] = None  # None -> chosen with num_actors (encode/plan.py)
    gpus_per_actor: Optional[float] = None  # None -> 1 if the cluster has GPUs else 0
    corpus_vectors: Optional[str] = None    # precomputed: parquet (id, vector) or .npy (+ .ids.txt)
    query_vectors: Optional[str] = None

    # keys that are gone, and what to write instead (_build says so instead of "unknown config key")
    REPLACED_KEYS: ClassVar[dict] = {"fp16": "encoder.fp16 is replaced by encoder.precision: use float16 / "
                                             "bfloat16 / float32 / bf16-autocast / auto (fp16 true -> float16, "
                                             "bf16 -> bfloat16, false -> float32)"}


@dataclass
class IndexConfig:
    kind: str = "flat"
    shards: int = 2
    nlist: Optional[int] = None         # IVF lists; None -> about 4*sqrt(n) per shard
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 128
    pq_m: int = 16
    pq_nbits: int = 8
    use_gpu: str = "auto"               # auto | true | false
    torch_dtype: str = "float16"        # torch-flat on a GPU: the products' input precision (a CPU: float32)
    oversample: int = 16                # extra candidates per shard, so exact rescoring can reorder the boundary
    # Where the float32 rows for exact rescoring live (index/vector_rows.py): auto (a scratch file on the node
    # unless the kind keeps the float32 rows itself: flat, hnsw), memory, or disk. The same scores either way.
    rescore_vectors: str = "auto"
    scratch_dir: Optional[str] = None   # node-local directory of those files; None: $STREAMMINE_SCRATCH or /tmp
    # Training sample of an IVF (and PQ) index: this many rows per list at most (faiss's own default; a larger
    # shard trains on a seeded sample of nlist * this rows, read from the rows without holding the shard).
    train_points_per_list: int = 256
    # Several shards: rescore exactly only the candidates whose faiss score can reach the global top k (two
    # rounds per query block; the same result, far fewer vectors rescored). Off: every candidate, one round.
    prune_rescoring: bool = True
    # IVF-Flat on a CPU: score each probed list once per query batch with a matrix product (index/ivf_scan.py)
    # instead of faiss's query-by-query scan; the same candidates, much faster on large batches (README).
    ivf_batch_scan: bool = True
    # Logical CPUs reserved per shard actor. 0 by default: shards mostly hold memory and search in short bursts,
    # and reserving cores for them would starve the encoders on small machines. Raise it on a cluster.
    cpus_per_shard: float = 0.0
    # GPUs reserved per shard actor (Ray then shows each shard its own GPU, where faiss-gpu or torch-flat places
    # it). 0: none reserved; a shard actor still sees the node's GPUs and puts its index on the first.
    gpus_per_shard: float = 0.0


@dataclass
class FilterConfig:
    method: str = "topk-percpos"
    max_score: float = 1.0              # topk-abs: keep s < max_score
    margin: float = 0.05                # topk-marginpos: keep s < s+ - margin
    perc: float = 0.95                  # topk-percpos: keep s < perc * s+ (s+ < 0: s+ - |s+|(1-perc))
    min_score: Optional[float] = None   # also drop s < min_score


@dataclass
class SamplerConfig:
    method: str = "top"
    num_negatives: int = 5
    range_min: int = 0                  # rank window [range_min, range_max) over the ranked non-positive candidates
    range_max: Optional[int] = None     # None: the sampler's own default (mining/samplers.window_end)
    simans_a: float = 0.5
    simans_b: float = 0.0
    random_share: float = 0.0           # STAR: this share of the negatives is uniform random corpus documents
    # Off: random documents never exceed their share, and a query short of hard negatives is `short`. On: random
    # documents also take the hard slots the window could not fill (summary: random_fill_negatives).
    fill_with_random: bool = False



@dataclass
class CrossEncoderConfig:
    """RocketQA's denoising: a cross-encoder scores (query, candidate) pairs that passed the filters; a candidate
    stays a possible negative only if its score is below ``threshold`` (a high score: probably a false negative)
    and, when set, below ``c+ - margin`` and ``c+ - |c+| * relative_margin``, c+ being the minimum cross-encoder
    score of the query's positives (sentence-transformers' absolute_margin / relative_margin on cross-encoder
    scores). Its scores of every positive and kept negative are in the output (teacher scores)."""
    model: Optional[str] = None         # a sentence-transformers CrossEncoder directory or URL; None: off
    threshold: Optional[float] = None   # on the scale the model's predict() returns (one of the three rules
                                        # threshold / margin / relative_margin is required with a model)
    margin: Optional[float] = None      # keep c < c+ - margin
    relative_margin: Optional[float] = None  # keep c < c+ - |c+| * relative_margin
    pool: int = 0                       # score only the first `pool` survivors by rank (0: all in the window);
                                        # survivors past the pool are not sampled, as they were not checked
    batch_size: int = 32
    max_length: Optional[int] = None
    gpus_per_actor: float = 0.0         # GPUs for each miner actor (where the cross-encoder runs)
    cpu_onednn: bool = True             # on a CPU: linear layers through oneDNN (encode/cpu_kernels.py)


@dataclass
class NearDuplicateConfig:
    """Near-duplicate guards on the shards' exact vectors (mining/near_duplicate.py); None: off."""
    positive: Optional[float] = None    # drop a window candidate with cosine >= this to any of the query's positives
    negatives: Optional[float] = None   # among the chosen negatives, skip one with cosine >= this to a kept one

    @property
    def enabled(self) -> bool:
        return self.positive is not None or self.negatives is not None


@dataclass
class MiningConfig:
    filter: FilterConfig = field(default_factory=FilterConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    cross_encoder: CrossEncoderConfig = field(default_factory=CrossEncoderConfig)
    exclude_same_text: bool = True      # a document whose normalized text equals a positive's is a positive
    seed: int = 0
    # A query's candidates: range_max + its positives + 16, searched again at twice the depth while its rank window
    # is not full after excluding positives and same-text copies, up to this many (mining/depth.py)
    max_search_depth: int = 1024
    near_duplicate: NearDuplicateConfig = field(default_factory=NearDuplicateConfig)
    # known negatives (qrels score <= 0, a negatives column): first among the negatives, never, or ordinary documents
    supplied_negatives: str = "include"
    min_positive_grade: float = 1.0     # graded qrels: a positive has grade >= this; 0 < grade < this: neither


@dataclass
class OutputConfig:
    path: str = "streammine-out"
    export: list = field(default_factory=list)   # names in sink/exporters.FORMATS, written beside the parquet parts
    export_scores: bool = False         # exports carry the bi-encoder's scores (always the cross-encoder's, if on)
    overwrite: bool = False


@dataclass
class RunConfig:
    address: Optional[str] = None       # None -> RAY_ADDRESS, else a local Ray
    # A private local Ray's object store, bytes; None: 10 % of the machine's memory, at least 1 GiB (Ray's own
    # default, 30 %, is shared memory that the workers writing into it keep resident: README "Scale past RAM").
    object_store_memory: Optional[int] = None
    query_batch_size: int = 256         # queries per block through encode -> search -> mine
    corpus_batch_size: int = 0          # documents per encoder call (sorted by length inside: less padding);
                                        # 0 -> 256 on CPU (keeps actors evenly busy), 4096 on GPU
    # Two: while one block is merged and mined, the next one is searched (the shards idle less; README, 1M-vector
    # scale benchmark); a miner is a light actor (0.25 CPU) that mostly waits on the shards.
    miner_actors: int = 2
    work_dir: Optional[str] = None      # embedding store and query vectors; None -> cache_dir
    cache_dir: Optional[str] = None     # the cache shared by runs; None -> $STREAMMINE_CACHE, ~/.cache/streammine
    cache_queries: bool = True          # reuse query vectors of an unchanged model (in the cache)
    progress: bool = True
    # where the run executes (run/in_process.py): "auto" runs a small local run in the calling process (no Ray),
    # "ray" always uses Ray, "in-process" always the calling process; $STREAMMINE_EXECUTOR replaces "auto"
    executor: str = "auto"
    in_process_max_texts: int = 20000   # "auto": documents + queries up to this run in-process


@dataclass
class ServeConfig:
    """Continuous mining (``streammine serve``): follow the trainer's checkpoints and the query files."""
    checkpoints: Optional[str] = None   # URL of the checkpoint location; None -> only encoder.model (and forced)
    poll_seconds: float = 5.0           # how often to look for new checkpoints and query files
    chunk_factor: int = 1               # 1: every query per version; C: a rolling 1/C slice per version (ANCE)
    complete_versions: bool = True      # finish a version's queries before swapping in a newer one
    max_versions: int = 0               # stop after this many versions were mined completely (0: run until stopped)
    idle_exit_seconds: float = 0.0      # stop when nothing new appeared for this long (0: never)
    retention: int = 2                  # embedding stores kept: the last N model versions'
    retries: int = 6                    # attempts per unit of work / refresh before the run fails (backoff)
    backoff_max_seconds: float = 30.0


@dataclass
class MineConfig(ConfigBase):
    input: InputConfig = field(default_factory=InputConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    run: RunConfig = field(default_factory=RunConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    # ---- construction -------------------------------------------------------------------------------------
    # from_dict, from_yaml, from_sources (a YAML file with dotted overrides on top), to_dict: ConfigBase

    def config_hash(self) -> str:
        """A hash of what determines the negatives (not where they are written or how parallel the run is)."""
        d = self.to_dict()
        relevant = {"input": {k: v for k, v in d["input"].items()
                              if k not in ("lenient", "read_tasks", "read_split_mb")},
                    "encoder": {k: d["encoder"][k] for k in ("kind", "model", "query_prompt", "document_prompt",
                                                             "max_length", "normalize", "corpus_vectors",
                                                             "query_vectors")},
                    "index": {k: v for k, v in d["index"].items()
                              if k not in ("shards", "use_gpu", "cpus_per_shard", "prune_rescoring",
                                           "ivf_batch_scan", "torch_dtype", "gpus_per_shard")},
                    "mining": d["mining"]}
        # Compatibility, in one place: an option added after the first release is left out of the hash while it
        # is off or at its default, so outputs and caches made before it existed keep their hash.
        relevant["input"]["columns"] = {k: v for k, v in relevant["input"]["columns"].items()
                                        if not (k in ("negative", "negative_id", "prompt") and v is None)}
        mining = dict(d["mining"])
        omitted_at = {"supplied_negatives": "include", "min_positive_grade": 1.0}
        for key, default in omitted_at.items():
            if mining.get(key) == default:
                del mining[key]
        if not self.mining.near_duplicate.enabled:
            del mining["near_duplicate"]
        if not self.mining.cross_encoder.model:
            del mining["cross_encoder"]
        else:  # the kernels it runs on (cpu_onednn) change its scores only by float noise; unset margins as before
            mining["cross_encoder"] = {k: v for k, v in mining["cross_encoder"].items()
                                       if k != "cpu_onednn" and not (k in ("margin", "relative_margin") and v is None)}
        relevant["mining"] = mining
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> None:
        """The schema's own rules. Names held by a plug-in registry (format, index kind, filter, sampler, exports)
        are checked by ``registries.check_names``: config imports no registry."""
        self.check_types()
        for key, (low, high, low_open) in NUMERIC_RANGES.items():
            _in_range(key, _get_dotted(self, key), low, high, low_open)
        if not self.input.path:
            raise ConfigError("input.path is required (a BEIR directory or a pairs table URL)")
        _choice("encoder.kind", self.encoder.kind, ENCODER_KINDS)
        if self.encoder.kind == "precomputed" and not (self.encoder.corpus_vectors and self.encoder.query_vectors):
            raise ConfigError("encoder.kind=precomputed needs encoder.corpus_vectors and encoder.query_vectors")
        _choice("encoder.precision", self.encoder.precision, PRECISIONS)
        _choice("index.use_gpu", str(self.index.use_gpu).lower(), ("auto", "true", "false"))
        _choice("index.torch_dtype", self.index.torch_dtype, TORCH_DTYPES)
        _choice("index.rescore_vectors", self.index.rescore_vectors, RESCORE_VECTORS)
        _choice("mining.supplied_negatives", self.mining.supplied_negatives, SUPPLIED_NEGATIVES)
        if self.input.columns.negative and self.input.columns.negative_id:
            raise ConfigError("set columns.negative (negative texts) or columns.negative_id (corpus ids), not both")
        s = self.mining.sampler
        _positive("index.shards", self.index.shards)
        if self.encoder.num_actors < 0:
            raise ConfigError(f"encoder.num_actors must be >= 0 (0: automatic), got {self.encoder.num_actors}")
        if self.encoder.batch_size < 0:
            raise ConfigError(f"encoder.batch_size must be >= 0 (0: automatic), got {self.encoder.batch_size}")
        if self.run.corpus_batch_size < 0:
            raise ConfigError(f"run.corpus_batch_size must be >= 0 (0: automatic), got {self.run.corpus_batch_size}")
        _positive("run.miner_actors", self.run.miner_actors)
        _choice("run.executor", self.run.executor, EXECUTORS)
        _positive("run.query_batch_size", self.run.query_batch_size)
        _positive("mining.sampler.num_negatives", s.num_negatives)
        if s.range_min < 0 or (s.range_max is not None and s.range_min >= s.range_max):  # unset: registries.py
            raise ConfigError(f"mining.sampler.range_min must satisfy 0 <= range_min < range_max, got "
                              f"[{s.range_min}, {s.range_max})")
        _positive("mining.max_search_depth", self.mining.max_search_depth)
        if not 0.0 <= s.random_share <= 1.0:
            raise ConfigError(f"mining.sampler.random_share must be in [0, 1], got {s.random_share}")
        if not 0.0 < self.mining.filter.perc <= 1.0:
            raise ConfigError(f"mining.filter.perc must be in (0, 1], got {self.mining.filter.perc}")
        if s.simans_a <= 0:
            raise ConfigError(f"mining.sampler.simans_a must be > 0, got {s.simans_a}")
        ce = self.mining.cross_encoder
        if ce.model:
            if ce.threshold is None and ce.margin is None and ce.relative_margin is None:
                raise ConfigError("mining.cross_encoder.threshold is required with mining.cross_encoder.model "
                                  "(a candidate is kept only if the cross-encoder scores it below the threshold), "
                                  "or mining.cross_encoder.margin / relative_margin")
            if ce.pool < 0:
                raise ConfigError(f"mining.cross_encoder.pool must be >= 0 (0: the whole window), got {ce.pool}")
            _positive("mining.cross_encoder.batch_size", ce.batch_size)
        _positive("serve.chunk_factor", self.serve.chunk_factor)
        _positive("serve.retention", self.serve.retention)
        _positive("serve.retries", self.serve.retries)
        if self.serve.poll_seconds <= 0:
            raise ConfigError(f"serve.poll_seconds must be > 0, got {self.serve.poll_seconds}")


# ---- helpers -------------------------------------------------------------------------------------------------

# key -> (low, high, low is exclusive); None: unbounded on that side. A None value (an Optional key left unset)
# is not checked. Every numeric key is listed here or checked in validate() (tests/test_config.py checks that).
NUMERIC_RANGES = {
    "run.in_process_max_texts": (0, None, False),
    "input.max_queries": (1, None, False), "input.read_tasks": (0, None, False),
    "input.read_split_mb": (0, None, True),
    "encoder.max_length": (1, None, False), "encoder.cpus_per_actor": (0, None, True),
    "encoder.gpus_per_actor": (0, None, False),
    "index.nlist": (1, None, False), "index.nprobe": (1, None, False), "index.hnsw_m": (2, None, False),
    "index.ef_search": (1, None, False), "index.pq_m": (1, None, False), "index.pq_nbits": (1, 16, False),
    "run.object_store_memory": (80 << 20, None, False), "index.oversample": (0, None, False), "index.train_points_per_list": (1, None, False), "index.cpus_per_shard": (0, None, False),
    "index.gpus_per_shard": (0, None, False),
    "mining.filter.margin": (0, None, False), "mining.filter.max_score": (None, None, False),
    "mining.filter.min_score": (None, None, False), "mining.sampler.range_max": (1, None, False),
    "mining.sampler.simans_b": (None, None, False), "mining.seed": (0, None, False),
    "mining.cross_encoder.threshold": (None, None, False), "mining.cross_encoder.max_length": (1, None, False),
    "mining.cross_encoder.gpus_per_actor": (0, None, False),
    "mining.min_positive_grade": (0, None, True),
    "mining.near_duplicate.positive": (0, 1, True), "mining.near_duplicate.negatives": (0, 1, True),
    "mining.cross_encoder.margin": (0, None, False), "mining.cross_encoder.relative_margin": (0, None, False),
    "serve.max_versions": (0, None, False), "serve.idle_exit_seconds": (0, None, False),
    "serve.backoff_max_seconds": (0, None, True),
}


def _get_dotted(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _check_types(node, prefix: str) -> None:
    hints = _hints(type(node))
    for f in fields(node):
        value, key = getattr(node, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            _check_types(value, key + ".")
            continue
        if value is None:
            continue
        kind = _unwrap_optional(hints[f.name])[0]
        if kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")


def _in_range(key: str, value, low, high, low_open: bool) -> None:
    if value is None:
        return
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"{key} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{key} must be <= {high}, got {value!r}")

def load_yaml_mapping(url: str) -> dict:
    """The mapping a YAML config file holds (any fsspec URL); a clear error for bad YAML or another top level."""
    if not exists(url):
        raise ConfigError(f"{url}: config file not found")
    with open_url(url, "rt") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{url}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{url}: the top level must be a mapping")
    return data


def _choice(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


NONE_WORDS = ("none", "null", "")


def _hints(cls) -> dict:
    """Field name -> its resolved type hint (the annotations are strings under ``from __future__ import
    annotations``; ``get_type_hints`` evaluates them in the class's module)."""
    return typing.get_type_hints(cls)


def _unwrap_optional(hint) -> Tuple[Any, bool]:
    """``Optional[X]`` (or ``X | None``) -> (X, True); any other hint -> (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def load_section(cls, data: Mapping, key_prefix: str = ""):
    """A section dataclass ``cls`` from a mapping, read as ``ConfigBase`` reads one; ``key_prefix``: where the
    section sits in a larger file, for the error lines (``variants[0].train.``)."""
    return _build(cls, dict(data), key_prefix)


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    replaced = [k for k in unknown if k in getattr(cls, "REPLACED_KEYS", {})]
    if replaced:
        raise ConfigError(cls.REPLACED_KEYS[replaced[0]])
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        f, hint = known[name], hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{prefix}{name}.")
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            kwargs[name] = _coerce(f"{prefix}{name}", value, hint, default)
    return cls(**kwargs)


def _coerce(name: str, value: Any, hint: Any, default: Any = None) -> Any:
    """A value as the type ``hint`` names. Values from flags arrive as strings; YAML values keep their type
    (an int for a float field becomes a float)."""
    kind, optional = _unwrap_optional(hint)
    if value is None:
        return None
    if not isinstance(value, str):
        if kind is float and not optional and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    if optional and value.strip().lower() in NONE_WORDS and (kind is not str or default is None):
        return None
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        if kind is list or typing.get_origin(kind) is list:
            return [v for v in value.split(",") if v]
    except ValueError:
        raise ConfigError(f"{name}: cannot read {value!r} as {getattr(kind, '__name__', kind)}") from None
    return value


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``dotted == "a.b.c"``, creating the sections on the way."""
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {p} is not a section")
    node[parts[-1]] = value


def parse_set_items(items) -> dict:
    """``["a.b=1", "c=x"]`` (repeated ``--set KEY=VALUE`` flags) -> ``{"a.b": "1", "c": "x"}``; values are coerced
    later, against the field they set."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise StreamMineError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def flatten_keys(d: Optional[dict], prefix: str = "") -> dict:
    """Nested and dotted keys alike -> dotted keys: ``{"a": {"b": 1}, "c.d": 2} -> {"a.b": 1, "c.d": 2}``."""
    flat = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            flat.update(flatten_keys(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat
