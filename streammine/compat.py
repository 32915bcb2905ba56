"""Drop-ins for the tools people already call, running on streammine's pipeline underneath.

``mine_hard_negatives`` takes the arguments of sentence-transformers' ``util.mine_hard_negatives`` (the 6.x
release) and returns a ``datasets.Dataset`` in the same columns. Underneath, one ``streammine.mine`` run over a
temporary ``pairs`` input (Ray, shards, exact scores, the embedding store) returns, for every query, its positives
and every non-positive candidate of a rank window wide enough for both selection rules below; the selection
(exclusions, score filters, rank window, sampler) is then made per query by the pure functions of this module,
so one pipeline run serves every rule exactly.

Invariants (tested against the installed sentence-transformers in ``tests/test_compat.py``): with
``candidate_window="sentence-transformers"``, ``exclude_same_text=False`` and, for random sampling, ``seed=None``
after the same ``random.seed``, the rows are the peer's rows (up to float noise in near-tied scores); with the
defaults, every difference follows one of the documented rules.
"""
from __future__ import annotations

import hashlib
import os
import random as _random
import shutil
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from . import console
from .cache import process_inputs_dir
from .encode.model_object import publish
from .keys import content_id, key64, uniform_keys
from .mining.samplers import sample_random, sample_top

OUTPUT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
WINDOWS = ("streammine", "sentence-transformers")


# ---- selection: pure, one query at a time ------------------------------------------------------------------

@dataclass
class QueryCandidates:
    """One query's candidates, sorted by score descending (ties: the pipeline's order, positives after).

    Holds the query's positives and every non-positive document the pipeline returned (its rank window, less the
    documents under ``min_score``, which all score below anything that can be selected, so ranks stay exact)."""
    doc_ids: List[str]
    scores: np.ndarray        # (m,) float64
    is_positive: np.ndarray   # (m,) bool
    positive_ids: List[str]   # in the query's order (first appearance in the dataset)
    positive_scores: np.ndarray  # (p,) float64, aligned with positive_ids


def candidates_from_row(row: dict) -> QueryCandidates:
    """A mined output row -> QueryCandidates. Non-positives are the sampled survivors and the filter's removed
    candidates; positives are added at their own scores."""
    neg_ids = list(row["negative_ids"]) + list(row["removed_ids"])
    neg_scores = list(row["negative_scores"]) + list(row["removed_scores"])
    pos_ids = list(row["positive_ids"])
    pos_scores = np.asarray(row["positive_scores"], np.float64)
    ids = neg_ids + pos_ids
    scores = np.asarray(neg_scores + list(pos_scores), np.float64)
    is_pos = np.r_[np.zeros(len(neg_ids), bool), np.ones(len(pos_ids), bool)]
    order = np.lexsort((np.arange(len(ids)), -scores))  # score descending; stable
    return QueryCandidates([ids[i] for i in order], scores[order], is_pos[order], pos_ids, pos_scores)


def positive_reference(positive_scores: np.ndarray) -> float:
    """s+: the minimum positive score (the weakest positive decides what is too close), as both tools use."""
    return float(np.min(positive_scores)) if len(positive_scores) else float("nan")


def score_keep_mask(scores: np.ndarray, pos_ref: float, *, absolute_margin: Optional[float] = None,
                    relative_margin: Optional[float] = None, max_score: Optional[float] = None,
                    min_score: Optional[float] = None, inclusive: bool = False) -> np.ndarray:
    """(m,) bool: the candidates every configured score filter keeps.

    absolute_margin: s < s+ - margin. relative_margin: s < s+ - |s+| * margin (= streammine's ``topk-percpos``
    with perc = 1 - margin, including its rule for s+ < 0). max_score: s < max_score. min_score: s >= min_score.
    ``inclusive``: keep s <= bound instead (the peer's comparison; the two differ only on exact float ties).
    """
    s = np.asarray(scores, np.float64)
    bound = np.inf
    if absolute_margin is not None:
        bound = min(bound, pos_ref - float(absolute_margin))
    if relative_margin is not None:
        bound = min(bound, pos_ref - abs(pos_ref) * float(relative_margin))
    if max_score is not None:
        bound = min(bound, float(max_score))
    keep = (s <= bound) if inclusive else (s < bound)
    if min_score is not None:
        keep &= s >= float(min_score)
    return keep


def select_negatives(c: QueryCandidates, query_id: str, *, num_negatives: int, range_min: int, range_max: int,
                     pool: int, window: str, include_positives: bool, sampling_strategy: str,
                     filters: dict, seed: Optional[int], rng: Optional[_random.Random] = None) -> np.ndarray:
    """Indices into ``c`` of the query's negatives, by score descending.

    Exclusions: positives (unless ``include_positives``) and the document whose text is the query's own
    (its id is the query's id, as both are content hashes), unless it is one of the query's positives.

    ``window="streammine"``: rank the remaining candidates, keep ranks [range_min, range_max), then the score
    filters -- the window counts candidates before they are filtered (streammine's order of operations).
    ``window="sentence-transformers"``: the peer's rule -- only the first ``pool`` candidates of the whole
    ranking (positives and the query's own text included) are considered, the score filters apply, and ranks
    [range_min, range_max) are taken among the filters' survivors.

    Sampling: "top" takes the first ``num_negatives``; "random" takes ``num_negatives`` uniformly without
    replacement -- with an int ``seed``, the ones with the smallest keys ``uniform_keys(seed, query, document)``
    (a pure function of the seed and the texts, as in streammine's sampler); with ``seed=None``, drawn from
    ``rng`` (Python's ``random``) exactly as the peer draws them.
    """
    m = len(c.doc_ids)
    is_self = np.array([d == query_id for d in c.doc_ids], bool) & ~c.is_positive
    eligible = ~is_self & (include_positives | ~c.is_positive)
    inclusive = window == "sentence-transformers"
    keep = eligible & score_keep_mask(c.scores, positive_reference(c.positive_scores), inclusive=inclusive,
                                      **filters)
    if window == "streammine":
        rank = np.cumsum(eligible) - 1
        options = np.flatnonzero(keep & (rank >= range_min) & (rank < range_max))
    elif window == "sentence-transformers":
        options = np.flatnonzero(keep & (np.arange(m) < pool))[range_min:range_max]
    else:
        raise ValueError(f"candidate_window must be one of {WINDOWS}, got {window!r}")
    if sampling_strategy == "top":
        mask = np.zeros((1, m), bool)
        mask[0, options] = True
        cols = sample_top(mask, num_negatives)[0]
        return cols[cols >= 0]
    if sampling_strategy != "random":
        raise ValueError(f"sampling_strategy must be 'top' or 'random', got {sampling_strategy!r}")
    if seed is None:
        # the peer: random.sample over max(#options, n) slots; slots past the options are empty
        slots = (rng or _random).sample(range(max(len(options), num_negatives)), k=num_negatives)
        return np.sort(np.array([options[k] for k in slots if k < len(options)], np.int64))
    mask = np.zeros((1, m), bool)
    mask[0, options] = True
    u = uniform_keys(seed, np.array([[key64(query_id)]], np.uint64),
                     np.array([[key64(d) for d in c.doc_ids]], np.uint64)) if m else np.zeros((1, 0))
    cols = sample_random(mask, num_negatives, u)[0]
    return cols[cols >= 0]


# ---- output: the peer's formats ----------------------------------------------------------------------------

@dataclass
class QueryResult:
    query: str
    positives: List[str]          # texts, the query's order
    positive_scores: List[float]
    negatives: List[str]          # texts, score descending
    negative_scores: List[float]


def build_columns(results: Sequence[QueryResult], anchor: str, positive: str, output_format: str,
                  output_scores: bool, num_negatives: int, keep_short: bool) -> dict:
    """The peer's Dataset columns (and their order) for each output format; see ``mine_hard_negatives``."""
    data: dict = {anchor: [], positive: []}
    if output_format == "triplet":
        data["negative"] = []
        if output_scores:
            data["scores"] = []
        for r in results:
            for p, ps in zip(r.positives, r.positive_scores):
                pairs = list(zip(r.negatives, r.negative_scores))
                if not pairs and keep_short:
                    pairs = [(None, None)]
                for n, ns in pairs:
                    data[anchor].append(r.query)
                    data[positive].append(p)
                    data["negative"].append(n)
                    if output_scores:
                        data["scores"].append([ps] if ns is None else [ps, ns])
    elif output_format == "labeled-pair":
        data["score" if output_scores else "label"] = []
        key = "score" if output_scores else "label"
        for r in results:
            for text, score, label in ([(p, s, 1) for p, s in zip(r.positives, r.positive_scores)]
                                       + [(n, s, 0) for n, s in zip(r.negatives, r.negative_scores)]):
                data[anchor].append(r.query)
                data[positive].append(text)
                data[key].append(score if output_scores else label)
    elif output_format == "n-tuple":
        for i in range(1, num_negatives + 1):
            data[f"negative_{i}"] = []
        if output_scores:
            data["scores"] = []
        for r in results:
            if len(r.negatives) < num_negatives and not keep_short:
                continue
            for p, ps in zip(r.positives, r.positive_scores):
                data[anchor].append(r.query)
                data[positive].append(p)
                for i in range(num_negatives):
                    data[f"negative_{i + 1}"].append(r.negatives[i] if i < len(r.negatives) else None)
                if output_scores:
                    data["scores"].append([ps] + list(r.negative_scores))
    elif output_format == "labeled-list":
        data["scores" if output_scores else "labels"] = []
        for r in results:
            if not r.negatives and not keep_short:
                continue
            for p, ps in zip(r.positives, r.positive_scores):
                data[anchor].append(r.query)
                data[positive].append([p] + list(r.negatives))
                if output_scores:
                    data["scores"].append([ps] + list(r.negative_scores))
                else:
                    data["labels"].append([1] + [0] * len(r.negatives))
    else:
        raise ValueError(f"Invalid output_format: {output_format}. Must be one of {', '.join(OUTPUT_FORMATS)}.")
    return data


# ---- the model and the input files -------------------------------------------------------------------------

def model_prompts(model) -> tuple:
    """(prompts dict, default prompt name) of a SentenceTransformer, or of a model directory (its
    ``config_sentence_transformers.json``)."""
    if isinstance(model, (str, os.PathLike)):
        import json
        path = os.path.join(str(model), "config_sentence_transformers.json")
        if not os.path.isfile(path):
            return {}, None
        with open(path) as f:
            conf = json.load(f)
        return dict(conf.get("prompts") or {}), conf.get("default_prompt_name")
    return dict(getattr(model, "prompts", None) or {}), getattr(model, "default_prompt_name", None)


def resolve_prompt(prompts: dict, default_name: Optional[str], prompt: Optional[str], prompt_name: Optional[str],
                   defaults: Sequence[str]) -> str:
    """The text prepended before encoding, as the peer's ``encode_query`` / ``encode_document`` choose it: the raw
    prompt, else the named one, else the first of ``defaults`` the model defines, else its default prompt."""
    if prompt is not None:
        return prompt
    if prompt_name is None:
        prompt_name = next((d for d in defaults if d in prompts), None)
    if prompt_name is not None:
        if prompt_name not in prompts:
            raise ValueError(f"Prompt name '{prompt_name}' not found in the configured prompts dictionary with keys "
                             f"{list(prompts)!r}.")
        return prompts[prompt_name]
    return prompts.get(default_name, "") if default_name else ""


def _write_table(path: str, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    if not os.path.exists(path):  # content-addressed: an existing file is this content (keeps its stamps)
        tmp = f"{path}.tmp-{os.getpid()}"
        pq.write_table(pa.table(columns), tmp)
        os.replace(tmp, path)


def _content_dir(root: str, queries: list, positives: list, corpus: list) -> str:
    h = hashlib.sha256()
    for part in (queries, positives, corpus):
        for t in part:
            h.update(t.encode("utf-8"))
            h.update(b"\x00")
        h.update(b"\x01")
    path = os.path.join(root, "inputs", h.hexdigest()[:16])
    os.makedirs(path, exist_ok=True)
    return path


# ---- the drop-in -------------------------------------------------------------------------------------------

def mine_hard_negatives(
    dataset,
    model,
    anchor_column_name: Optional[str] = None,
    positive_column_name: Optional[str] = None,
    corpus: Optional[list] = None,
    cross_encoder=None,
    range_min: int = 0,
    range_max: Optional[int] = None,
    max_score: Optional[float] = None,
    min_score: Optional[float] = None,
    absolute_margin: Optional[float] = None,
    relative_margin: Optional[float] = None,
    num_negatives: int = 3,
    sampling_strategy: str = "top",
    query_prompt_name: Optional[str] = None,
    query_prompt: Optional[str] = None,
    corpus_prompt_name: Optional[str] = None,
    corpus_prompt: Optional[str] = None,
    include_positives: bool = False,
    output_format: str = "triplet",
    output_scores: bool = False,
    batch_size: int = 32,
    faiss_batch_size: int = 16384,
    use_faiss: bool = False,
    use_multi_process=False,
    verbose: bool = True,
    cache_folder: Optional[str] = None,
    as_triplets: Optional[bool] = None,
    margin: Optional[float] = None,
    *,
    candidate_window: str = "streammine",
    seed: Optional[int] = 0,
    exclude_same_text: bool = True,
    short_queries: str = "drop",
    shards: int = 1,
    output_path: Optional[str] = None,
    overrides: Optional[dict] = None,
):
    """sentence-transformers' ``util.mine_hard_negatives``, on streammine: same arguments, same output columns.

    Switch with one line: ``from streammine.compat import mine_hard_negatives`` instead of
    ``from sentence_transformers.util import mine_hard_negatives``. ``dataset`` is a ``datasets.Dataset`` of
    (anchor, positive) rows; ``model`` a ``SentenceTransformer`` or a model directory. Rows with the same anchor
    text are one query with several positives (as in the peer). Returns a ``datasets.Dataset``:

    - "triplet": (anchor, positive, negative[, scores=[s_pos, s_neg]]), one row per (query, positive, negative)
    - "n-tuple": (anchor, positive, negative_1..negative_n[, scores]), one row per (query, positive)
    - "labeled-pair": (anchor, positive-column, label | score): the positives (1) then the negatives (0)
    - "labeled-list": (anchor, [positive, negatives...], labels | scores)

    The peer's arguments mean what they mean there: ``range_min``/``range_max`` (rank window; ``range_max=None``
    is resolved as the peer does: ``range_min + num_negatives + max_positives``, or with a score filter
    ``range_min + 10 * num_negatives + max_positives``), ``max_score``/``min_score``, ``absolute_margin``
    (keep s < s+ - margin), ``relative_margin`` (keep s < s+ - |s+| * margin, i.e. streammine's ``topk-percpos``
    with perc = 1 - margin; s+ is the query's minimum positive score in both), ``num_negatives``,
    ``sampling_strategy`` ("top" or "random"), the prompts (resolved as the peer's ``encode_query`` /
    ``encode_document`` do, then passed to streammine's encoder), ``include_positives`` (positives stay among the
    candidates; forces "n-tuple"), ``output_format``, ``output_scores``, ``as_triplets``/``margin``
    (deprecated aliases, as there). Same errors for invalid combinations (ValueError).

    Mapped onto streammine: ``cache_folder`` is the run's work directory (``run.work_dir``): the embedding store
    and query-vector cache live there and are reused by a later call with the same model and texts.
    ``batch_size`` sets ``encoder.batch_size`` when it is not the default 32 (at 32 streammine chooses: a token
    budget on a CPU, 32 on a GPU). ``verbose`` turns the run's progress bars and a short summary on.
    Accepted with no meaning here: ``faiss_batch_size`` (streammine sizes its query blocks itself:
    ``run.query_batch_size``), ``use_faiss`` (shards always use faiss; exact Flat by default),
    ``use_multi_process`` (encoders are Ray actors, one per core or GPU).

    ``cross_encoder`` (a ``CrossEncoder``): as in the peer, it rescores the candidates and the positives, and its
    scores decide the order, the filters and the output scores. That is not streammine's cross-encoder denoising
    (``mining.cross_encoder``: a threshold and margins on the cross-encoder score, bi-encoder order kept), so it is
    done here, in this process, on the candidates the pipeline returned -- those the candidate window admits (in
    "sentence-transformers" mode: the first range_max + max_positives + 1 of the ranking, as the peer). Without
    it, ``overrides`` may turn streammine's own denoising on (``mining.cross_encoder.model`` and its
    ``threshold`` / ``margin`` / ``relative_margin``): only the candidates it kept can then be negatives, and
    ``output_scores`` gives its teacher scores (the output's ``positive_ce_scores`` / ``negative_ce_scores``)
    instead of the bi-encoder's.

    Where streammine deliberately differs, an argument chooses (the default first):

    - ``candidate_window="streammine"``: ranks [range_min, range_max) are counted among the non-positive
      candidates *before* the score filters, then the filters apply. ``"sentence-transformers"``: the peer's rule:
      of the first range_max + max_positives + 1 candidates of the whole ranking (positives and a document equal
      to the query included), the filters' survivors are ranked and [range_min, range_max) of *those* are kept.
      With range_min = 0 and "top" (and no same-text copy passing the filters), the defaults' negatives are a
      prefix of the peer's; the peer finds more only where the filters thinned the streammine window out (it
      looks further down the ranking).
    - ``seed=0``: random sampling is a pure function of (seed, query text, document text) -- the same rows on every
      call. ``seed=None``: drawn with Python's ``random`` module in the peer's order, so after the same
      ``random.seed(...)`` the same negatives as the peer.
    - ``exclude_same_text=True``: a document whose case- and space-normalized text equals a positive's is excluded
      like the positive (streammine's rule). ``False``: only the exact positive texts (the peer).
    - ``short_queries="drop"``: as the peer, an "n-tuple" row needs all ``num_negatives`` negatives, a
      "labeled-list" row at least one, a "triplet" row one negative. ``"keep"``: streammine keeps every query:
      missing n-tuple negatives are None (scores list shorter), labeled-list rows hold only the positive, a
      positive without negatives is one triplet row with negative None.

    The run itself: ``shards`` (index shards, default 1), ``output_path`` (keep streammine's output there, with
    its ``summary.json``; default: a private temporary directory, removed afterwards), ``overrides`` (any
    streammine config keys, dotted, applied last). Both tools exclude the document whose text is the query's.
    Not accepted here (streammine's input rules): empty anchor or positive texts (ValueError); empty corpus
    strings are skipped. Score ties at a filter bound (s exactly equal to it) are kept by the peer and dropped by
    the default "streammine" window; the peer's window uses its inclusive comparison.
    """
    import streammine

    if len(dataset) == 0:
        raise ValueError("The dataset is empty. Please provide a non-empty dataset.")
    if faiss_batch_size <= 0:
        raise ValueError(f"faiss_batch_size must be a positive integer, got {faiss_batch_size}.")
    if candidate_window not in WINDOWS:
        raise ValueError(f"candidate_window must be one of {WINDOWS}, got {candidate_window!r}")
    if short_queries not in ("drop", "keep"):
        raise ValueError(f"short_queries must be 'drop' or 'keep', got {short_queries!r}")
    columns = list(dataset.column_names)
    if not anchor_column_name or anchor_column_name not in columns:
        anchor_column_name = columns[0]
    if not positive_column_name or positive_column_name not in columns:
        if len(columns) < 2:
            raise ValueError("Dataset must contain at least two columns to select the positive column automatically.")
        positive_column_name = columns[1]
    if as_triplets is not None:
        output_format = "triplet" if as_triplets else "n-tuple"
    if include_positives:
        output_format = "n-tuple"  # the peer's rule: keeps the ranking order
    if output_format == "n-tuple-scores":
        output_format, output_scores = "n-tuple", True
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"Invalid output_format: {output_format}. Must be one of 'triplet', 'n-tuple', "
                         f"'labeled-pair', or 'labeled-list'.")
    if margin is not None:
        absolute_margin = margin
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, got num_negatives={num_negatives}.")
    if sampling_strategy not in ("top", "random"):
        raise ValueError(f"sampling_strategy must be 'top' or 'random', got {sampling_strategy!r}")

    queries = [str(q) for q in dataset[anchor_column_name]]
    positives = [str(p) for p in dataset[positive_column_name]]
    if any(not t.strip() for t in queries + positives):
        raise ValueError("streammine needs non-empty anchor and positive texts")
    rows_per_query: dict = {}
    for q in queries:
        rows_per_query[q] = rows_per_query.get(q, 0) + 1
    max_positives = max(rows_per_query.values())
    any_filter = (absolute_margin is not None or relative_margin is not None or max_score is not None
                  or (cross_encoder is not None and min_score is not None))
    if range_max is None:
        range_max = range_min + num_negatives * (10 if any_filter else 1) + max_positives
    if range_min < 0:
        raise ValueError(f"range_min must be non-negative, got range_min={range_min}.")
    if range_min >= range_max:
        raise ValueError(f"range_min must be smaller than range_max, got range_min={range_min} and "
                         f"range_max={range_max}.")
    if num_negatives > range_max - range_min:
        raise ValueError(f"Cannot mine {num_negatives} negatives per query: only {range_max - range_min} candidates "
                         f"remain after skipping the first range_min={range_min} of range_max={range_max}.")
    pool = range_max + max_positives + 1  # the peer's candidate count

    extra = [t for t in (str(x) for x in (corpus or [])) if t.strip()]
    texts = {content_id(t): t for t in positives + extra}

    prompts, default_name = model_prompts(model)
    q_prompt = resolve_prompt(prompts, default_name, query_prompt, query_prompt_name, ("query",))
    d_prompt = resolve_prompt(prompts, default_name, corpus_prompt, corpus_prompt_name,
                              ("document", "passage", "corpus"))

    private = tempfile.mkdtemp(prefix="streammine-compat-")
    try:
        # an object's current in-memory weights encode (named by their digest); a path is loaded as given
        model_name = str(model) if isinstance(model, (str, os.PathLike)) else publish(model)
        # without cache_folder the texts go to a folder of this process (not of this call): a second call on the
        # same texts and model reuses the first one's embedding store in the cache
        in_dir = _content_dir(cache_folder or process_inputs_dir(), queries, positives, extra)
        pairs_url = os.path.join(in_dir, "pairs.parquet")
        _write_table(pairs_url, {"anchor": queries, "positive": positives})
        corpus_url = None
        if extra:
            corpus_url = os.path.join(in_dir, "corpus.parquet")
            _write_table(corpus_url, {"text": extra})
        out = output_path or os.path.join(private, "out")
        cfg = {
            "input.format": "pairs", "input.path": pairs_url, "input.corpus": corpus_url,
            "input.columns.query": "anchor", "input.columns.positive": "positive",
            "encoder.model": model_name, "encoder.query_prompt": q_prompt, "encoder.document_prompt": d_prompt,
            "index.kind": "flat", "index.shards": shards,
            "mining.sampler.method": "top", "mining.sampler.num_negatives": pool,
            "mining.sampler.range_min": 0, "mining.sampler.range_max": pool,
            "mining.exclude_same_text": exclude_same_text,
            "output.path": out, "output.overwrite": True, "run.progress": bool(verbose),
        }
        if cache_folder:
            cfg["run.work_dir"] = os.path.join(cache_folder, "streammine-work")
        if batch_size != 32:
            cfg["encoder.batch_size"] = batch_size
        filters = {"absolute_margin": absolute_margin, "relative_margin": relative_margin,
                   "max_score": max_score, "min_score": min_score}
        if cross_encoder is not None:
            cfg["mining.filter.method"] = "none"  # the cross-encoder's scores decide, after the pipeline
        elif candidate_window == "sentence-transformers":
            # the peer keeps s <= bound: a strict filter in the pipeline would drop a candidate exactly at it
            cfg.update({"mining.filter.method": "none", "mining.filter.min_score": min_score})
        else:
            cfg.update(pipeline_filter(absolute_margin, relative_margin, max_score, min_score))
        cfg.update(overrides or {})
        # the peer's verbose: streammine's progress, the peer's summary; Ray's logs only with STREAMMINE_VERBOSE=1
        with console.api_call(False, progress=bool(verbose), summary=False):
            result = streammine.mine(overrides=cfg)
        rows = _read_rows(result.output)
    finally:
        shutil.rmtree(private, ignore_errors=True)

    order = list(dict.fromkeys(queries))
    results = []
    rng = _random if seed is None else None
    for q in order:
        row = rows[content_id(q)]
        c = candidates_from_row(row)
        q_pool = pool
        if cross_encoder is not None:
            c = rescore(c, q, texts, cross_encoder, batch_size, pool if candidate_window != "streammine"
                        else None, range_max, include_positives)
            q_pool = len(c.doc_ids)  # the pool was taken by the bi-encoder's ranking, before the rescoring
        picks = select_negatives(c, content_id(q), num_negatives=num_negatives, range_min=range_min,
                                 range_max=range_max, pool=q_pool, window=candidate_window,
                                 include_positives=include_positives, sampling_strategy=sampling_strategy,
                                 filters={k: v for k, v in filters.items() if v is not None}, seed=seed, rng=rng)
        pos_scores, neg_scores = [float(s) for s in c.positive_scores], [float(c.scores[i]) for i in picks]
        if cross_encoder is None and row.get("negative_ce_scores") is not None:
            pos_scores, neg_scores = teacher_scores(row, c.positive_ids, [c.doc_ids[i] for i in picks])
        results.append(QueryResult(
            query=q, positives=[texts[p] for p in c.positive_ids], positive_scores=pos_scores,
            negatives=[texts[c.doc_ids[i]] for i in picks], negative_scores=neg_scores))

    data = build_columns(results, anchor_column_name, positive_column_name, output_format, output_scores,
                         num_negatives, keep_short=short_queries == "keep")
    if verbose:
        n_neg = sum(len(r.negatives) for r in results)
        short = sum(len(r.negatives) < num_negatives for r in results)
        print(f"streammine: {len(results)} queries, {n_neg} negatives, {short} queries short of "
              f"{num_negatives} negatives; {len(data[anchor_column_name])} {output_format} rows")
    from datasets import Dataset
    return Dataset.from_dict(data)


def pipeline_filter(absolute_margin, relative_margin, max_score, min_score) -> dict:
    """The streammine filter config for the peer's score filters, when one streammine filter expresses them (the
    pipeline then counts the removed candidates); with several, the pipeline filters nothing and the selection
    applies them all (``score_keep_mask`` applies every filter in any case, so this only prunes)."""
    given = [(k, v) for k, v in (("absolute_margin", absolute_margin), ("relative_margin", relative_margin),
                                 ("max_score", max_score)) if v is not None]
    cfg = {"mining.filter.min_score": min_score}
    if not given:
        cfg["mining.filter.method"] = "none"
    elif len(given) > 1:
        cfg["mining.filter.method"] = "none"
    elif given[0][0] == "absolute_margin":
        cfg.update({"mining.filter.method": "topk-marginpos", "mining.filter.margin": float(absolute_margin)})
    elif given[0][0] == "relative_margin" and 0.0 <= relative_margin < 1.0:
        cfg.update({"mining.filter.method": "topk-percpos", "mining.filter.perc": 1.0 - float(relative_margin)})
    elif given[0][0] == "max_score":
        cfg.update({"mining.filter.method": "topk-abs", "mining.filter.max_score": float(max_score)})
    else:
        cfg["mining.filter.method"] = "none"  # a relative margin outside [0, 1): applied by the selection only
    return cfg


def rescore(c: QueryCandidates, query: str, texts: dict, cross_encoder, batch_size: int, pool: Optional[int],
            range_max: int, include_positives: bool) -> QueryCandidates:
    """The candidates the window admits, rescored by the cross-encoder and re-sorted by its scores; the
    positives' scores (s+ and the output scores) are the cross-encoder's too.

    ``pool``: the peer's rule, the first ``pool`` of the bi-encoder ranking. None: streammine's, the first
    ``range_max + 1`` candidates that may be negatives (one more for a document equal to the query)."""
    m = len(c.doc_ids)
    if pool is not None:
        admit = np.arange(m) < pool
    else:
        counted = np.ones(m, bool) if include_positives else ~c.is_positive
        admit = counted & (np.cumsum(counted) <= range_max + 1)
    others = [c.doc_ids[i] for i in np.flatnonzero(admit & ~c.is_positive)]
    pairs = [(query, texts[d]) for d in others + list(c.positive_ids)]
    ce = np.asarray(cross_encoder.predict(pairs, batch_size=batch_size, show_progress_bar=False),
                    np.float64).reshape(-1)
    pos_scores = ce[len(others):]
    by_id = dict(zip(others, ce[:len(others)]))
    by_id.update(zip(c.positive_ids, pos_scores))
    ids = [c.doc_ids[i] for i in np.flatnonzero(admit)]
    scores = np.array([by_id[d] for d in ids], np.float64)
    is_pos = c.is_positive[admit]
    order = np.lexsort((np.arange(len(ids)), -scores))
    return QueryCandidates([ids[i] for i in order], scores[order], is_pos[order], list(c.positive_ids), pos_scores)


def teacher_scores(row: dict, positive_ids: Sequence[str], negative_ids: Sequence[str]) -> tuple:
    """(positive scores, negative scores) from a row mined with streammine's cross-encoder denoising: its teacher
    scores (``positive_ce_scores`` / ``negative_ce_scores``) of the given ids; NaN for an id it did not score (a
    candidate only the bi-encoder filter saw)."""
    by_id = dict(zip(row["negative_ids"], row["negative_ce_scores"]))
    by_id.update(zip(row["positive_ids"], row["positive_ce_scores"]))
    return ([float(by_id.get(d, float("nan"))) for d in positive_ids],
            [float(by_id.get(d, float("nan"))) for d in negative_ids])


def _read_rows(out_url: str) -> dict:
    """query id -> mined row (dict of lists) from a run's committed parts."""
    import pyarrow.parquet as pq
    from .io import fs
    from .consume.committed import list_parts
    cols = ["query_id", "positive_ids", "positive_scores", "negative_ids", "negative_scores", "removed_ids",
            "removed_scores", "positive_ce_scores", "negative_ce_scores"]
    rows = {}
    for url in list_parts(out_url):
        with fs.open_url(url, "rb") as f:
            for r in pq.read_table(f, columns=cols).to_pylist():
                rows[r["query_id"]] = r
    return rows


__all__ = ["mine_hard_negatives", "select_negatives", "score_keep_mask", "build_columns", "candidates_from_row"]
