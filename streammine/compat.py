"""Drop-ins for the tools people already call, running on streammine's pipeline underneath.

``mine_hard_negatives`` takes the arguments of sentence-transformers' ``util.mine_hard_negatives`` (the 6.x
release) and returns a ``datasets.Dataset`` in the same columns. This module only translates: one
``streammine.mine`` run over a temporary ``pairs`` input returns, for every query, its positives and every
non-positive candidate of a rank window wide enough for both selection rules; the per-query selection is
``mining.peer_selection``, the columns ``sink.peer_columns``, the verbose report ``mining.peer_summary``, the
``cache_folder`` files ``sink.peer_cache``; the run's output is read by ``sink.mined``.

Invariants (tested against the installed sentence-transformers in ``tests/test_compat.py``): with
``candidate_window="sentence-transformers"``, ``exclude_same_text=False`` and, for random sampling, ``seed=None``
after the same ``random.seed``, the rows are the peer's rows (up to float noise in near-tied scores); with the
defaults, every difference follows one of the documented rules.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random as _random
import shutil
import tempfile
from typing import Optional

from . import console
from .cache import process_inputs_dir
from .encode.model_object import publish
from .keys import content_id
from .mining import peer_summary as summary
from .mining.peer_arguments import faiss_gpu_cap, model_prompts, peer_argument_rules, pipeline_filter, resolve_prompt
from .mining.peer_selection import (WINDOWS, QueryCandidates, candidates_from_row, rescore, score_keep_mask,
                                    select_negatives, teacher_scores)
from .sink.peer_columns import QueryResult, build_columns, rows_by_query

logger = logging.getLogger(__name__)


def texts_of(values, what: str) -> list:
    """``values`` (a list, a dataset column, an array) as a list of strings; anything else in it is a
    ValueError naming where (the peer's message type: "Unsupported input type"), never stringified."""
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f"Unsupported input type: {type(v).__name__} ({what}, row {i}: {v!r})")
    return values



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

    Mapped onto streammine: ``cache_folder`` holds the run's work directory (its embedding store and query
    cache, reused by a later call with the same model and texts) and, as the peer's, ``query_embeddings_<sha>.npy``
    / ``corpus_embeddings_<sha>.npy`` (normalized; the peer's names, so either tool reuses them). ``batch_size``
    sets ``encoder.batch_size`` unless 32 (then streammine chooses). ``verbose``: the run's progress and the
    peer's report (its lines, streammine's counts); its warnings go to the ``streammine.compat`` logger. Accepted
    with no meaning here: ``faiss_batch_size``, ``use_faiss`` (shards always use faiss), ``use_multi_process``.
    A non-string text in the dataset or corpus is a ValueError naming its row.

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
    Empty anchor or positive texts: ValueError; empty corpus strings are skipped. Score ties at a filter bound are
    kept by the peer (and its window) and dropped by the default "streammine" window.
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
    output_format, output_scores, absolute_margin = peer_argument_rules(
        output_format, output_scores, as_triplets, include_positives, margin, absolute_margin,
        changed=range_min != 0 or range_max is not None or sampling_strategy != "top" or any(
            v is not None for v in (max_score, min_score, absolute_margin, relative_margin, margin)))
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, got num_negatives={num_negatives}.")
    if sampling_strategy not in ("top", "random"):
        raise ValueError(f"sampling_strategy must be 'top' or 'random', got {sampling_strategy!r}")

    queries = texts_of(dataset[anchor_column_name], f"dataset column {anchor_column_name!r}")
    positives = texts_of(dataset[positive_column_name], f"dataset column {positive_column_name!r}")
    given_corpus = texts_of(corpus, "corpus") if corpus is not None else None
    if any(not t.strip() for t in queries + positives):
        raise ValueError("streammine needs non-empty anchor and positive texts")
    positives_of: dict = {}
    for q, p in zip(queries, positives):
        positives_of.setdefault(q, []).append(p)
    max_positives = max(len(v) for v in positives_of.values())
    any_filter = (absolute_margin is not None or relative_margin is not None or max_score is not None
                  or (cross_encoder is not None and min_score is not None))
    derived_range_max, cap_note = None, ""
    if range_max is None:
        range_max, cap_note = faiss_gpu_cap(range_min + num_negatives * (10 if any_filter else 1) + max_positives,
                                            max_positives, use_faiss)
        derived_range_max = range_max
    if range_min < 0:
        raise ValueError(f"range_min must be non-negative, got range_min={range_min}.")
    if range_min >= range_max:
        raise ValueError(f"range_min must be smaller than range_max, got range_min={range_min} and "
                         f"range_max={range_max}.{cap_note}")
    if num_negatives > range_max - range_min:
        raise ValueError(f"Cannot mine {num_negatives} negatives per query: only {range_max - range_min} candidates "
                         f"remain after skipping the first range_min={range_min} of range_max={range_max}. Consider "
                         f"decreasing num_negatives or range_min, or increasing range_max.{cap_note}")
    pool = range_max + max_positives + 1  # the peer's candidate count
    say = print if verbose else (lambda *a: None)
    for line in summary.opening_lines(len(positives_of), len(queries), [len(v) for v in positives_of.values()],
                                      derived_range_max):
        say(line)

    extra = [t for t in (given_corpus or []) if t.strip()]
    texts = {content_id(t): t for t in positives + extra}
    prompts, default_name = model_prompts(model)
    q_prompt = resolve_prompt(prompts, default_name, query_prompt, query_prompt_name, ("query",))
    d_prompt = resolve_prompt(prompts, default_name, corpus_prompt, corpus_prompt_name,
                              ("document", "passage", "corpus"))

    private = tempfile.mkdtemp(prefix="streammine-compat-")
    try:
        # an object's current in-memory weights encode (named by their digest); a path is loaded as given
        model_name = str(model) if isinstance(model, (str, os.PathLike)) else publish(model)
        # a folder of this process, not of this call: a second call on the same texts reuses the first's store
        in_dir = _content_dir(cache_folder or process_inputs_dir(), queries, positives, extra)
        pairs_url = os.path.join(in_dir, "pairs.parquet")
        _write_table(pairs_url, {"anchor": queries, "positive": positives})
        corpus_url = None
        if extra:
            corpus_url = os.path.join(in_dir, "corpus.parquet")
            _write_table(corpus_url, {"text": extra})
        cfg = {
            "input.format": "pairs", "input.path": pairs_url, "input.corpus": corpus_url,
            "input.columns.query": "anchor", "input.columns.positive": "positive",
            "encoder.model": model_name, "encoder.query_prompt": q_prompt, "encoder.document_prompt": d_prompt,
            "index.kind": "flat", "index.shards": shards,
            "mining.sampler.method": "top", "mining.sampler.num_negatives": pool,
            "mining.sampler.range_min": 0, "mining.sampler.range_max": pool,
            "mining.exclude_same_text": exclude_same_text,
            "output.path": output_path or os.path.join(private, "out"), "output.overwrite": True,
            "run.progress": bool(verbose),
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
        rows = rows_by_query(result.output)
        if cache_folder:
            _export_cache(cfg, cache_folder, model, queries, positives, given_corpus, query_prompt,
                          query_prompt_name, corpus_prompt, corpus_prompt_name, say)
    finally:
        shutil.rmtree(private, ignore_errors=True)

    results, skipped = [], {}
    rng = _random if seed is None else None
    given_filters = {k: v for k, v in filters.items() if v is not None}
    for q in positives_of:  # first appearance order
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
                                 filters=given_filters, seed=seed, rng=rng, skipped=skipped)
        pos_scores, neg_scores = [float(s) for s in c.positive_scores], [float(c.scores[i]) for i in picks]
        if cross_encoder is None and row.get("negative_ce_scores") is not None:
            pos_scores, neg_scores = teacher_scores(row, c.positive_ids, [c.doc_ids[i] for i in picks])
        results.append(QueryResult(
            query=q, positives=[texts[p] for p in c.positive_ids], positive_scores=pos_scores,
            negatives=[texts[c.doc_ids[i]] for i in picks], negative_scores=neg_scores))
    say(summary.MINED_LINE)

    keep_short = short_queries == "keep"
    data = build_columns(results, anchor_column_name, positive_column_name, output_format, output_scores,
                         num_negatives, keep_short=keep_short)
    if verbose:
        n_pairs = sum(len(r.positives) for r in results)
        arrays = summary.score_arrays([(r.positive_scores, r.negative_scores) for r in results], output_format,
                                      num_negatives, keep_short)
        maximum = summary.maximum_samples(output_format, n_pairs, len(results), num_negatives, len(queries))
        for line in (summary.score_table(*arrays) + summary.skipped_lines(skipped, len(results) * pool, filters)
                     + summary.missing_line(maximum - len(data[anchor_column_name]), maximum, range_min, filters)):
            print(line)
    try:
        from datasets import Dataset
    except ImportError as e:  # pragma: no cover - a core dependency
        raise ImportError("streammine.compat returns a datasets.Dataset: pip install datasets") from e
    return Dataset.from_dict(data)


def _export_cache(cfg: dict, cache_folder: str, model, queries, positives, given_corpus, query_prompt,
                  query_prompt_name, corpus_prompt, corpus_prompt_name, say) -> None:
    """The run's vectors as the peer's ``cache_folder`` files (``sink.peer_cache``), under the peer's names."""
    from .api import load_config
    from .run.paths import RunPaths
    from .sink.peer_cache import export_peer_cache, peer_cache_files
    unique_queries = list(dict.fromkeys(queries))
    peer_corpus = list(dict.fromkeys((positives if given_corpus is None else given_corpus) + positives))
    card = getattr(model, "model_card_data", None)
    base = (getattr(card, "base_model", None) or "") if card is not None else ""
    q_file, d_file = peer_cache_files(cache_folder, base, query_prompt, query_prompt_name, unique_queries,
                                      corpus_prompt, corpus_prompt_name, peer_corpus)
    paths = RunPaths.for_mine(load_config(overrides=cfg))
    try:
        for side, path in export_peer_cache(paths.store, paths.query_cache, unique_queries, peer_corpus, q_file,
                                            d_file):
            say(f"[Cache] Saved {side} embeddings to {path}")
    except KeyError as e:  # e.g. an empty corpus string, which streammine does not encode
        logger.warning("streammine.compat: embeddings not saved to cache_folder (%s)", e)


__all__ = ["mine_hard_negatives", "select_negatives", "score_keep_mask", "build_columns", "candidates_from_row",
           "texts_of", "QueryCandidates"]
