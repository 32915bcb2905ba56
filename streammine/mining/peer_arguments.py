"""The peer's arguments, translated: its aliases and warnings, its prompt choice, its score filters as
streammine's filter config (pure; no Ray, no model loading)."""
from __future__ import annotations

import json
import logging
import os
from typing import Optional, Sequence

from ..sink.peer_columns import OUTPUT_FORMATS

logger = logging.getLogger("streammine.compat")  # the peer's warnings (deprecated arguments, include_positives)


def peer_argument_rules(output_format, output_scores, as_triplets, include_positives, margin, absolute_margin,
                         changed: bool) -> tuple:
    """(output_format, output_scores, absolute_margin) after the peer's deprecated aliases and its
    include_positives rule, with the peer's warnings (``changed``: a window, filter or sampler argument set)."""
    if as_triplets is not None:
        output_format = "triplet" if as_triplets else "n-tuple"
        logger.warning("The `as_triplets` parameter is deprecated. Use the `output_format` parameter instead. "
                       f"Setting `output_format` to `{output_format}`.")
    if include_positives:
        if changed:
            logger.warning("When using `include_positives=True`, updating `range_min`, `range_max`, `max_score`, "
                           "`min_score`, `absolute_margin`, `relative_margin`, or `sampling_strategy` from the "
                           "default values may still discard the positive values.")
        if output_format != "n-tuple":
            logger.warning('When using `include_positives=True`, `output_format` will be set to `"n-tuple"` to '
                           'ensure that the ranking order is preserved.')
            output_format = "n-tuple"
    if output_format == "n-tuple-scores":
        logger.warning('`output_format="n-tuple-scores"` is deprecated. Use `output_format="n-tuple"` with '
                       "`output_scores=True` instead for equivalent output formats.")
        output_format, output_scores = "n-tuple", True
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"Invalid output_format: {output_format}. Must be one of 'triplet', 'n-tuple', "
                         f"'labeled-pair', or 'labeled-list'.")
    if margin is not None:
        absolute_margin = margin
        logger.warning("The `margin` parameter is deprecated. Use the `absolute_margin` and/or `relative_margin` "
                       f"parameter instead. Setting `absolute_margin` to `{absolute_margin}`.")
    return output_format, output_scores, absolute_margin


def model_prompts(model) -> tuple:
    """(prompts dict, default prompt name) of a SentenceTransformer, or of a model directory (its
    ``config_sentence_transformers.json``)."""
    if isinstance(model, (str, os.PathLike)):
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


def faiss_gpu_cap(range_max: int, max_positives: int, use_faiss: bool) -> tuple:
    """(range_max, note for the errors): the peer's cap on a derived ``range_max`` when ``use_faiss`` and a GPU
    is visible to faiss (faiss on a GPU returns at most 2048 neighbours, max_positives + 1 of them reserved for
    excluded candidates). Kept so that the same arguments give the same window, and the same errors, as there."""
    if not use_faiss or range_max + max_positives + 1 <= 2048:
        return range_max, ""
    import faiss
    if getattr(faiss, "get_num_gpus", lambda: 0)() <= 0:
        return range_max, ""
    capped = 2048 - max_positives - 1
    return capped, (f" Note that range_max was capped to {capped} because FAISS on GPU can only retrieve up to"
                    " 2048 documents per query, some of which are reserved for excluded candidates. Passing "
                    "use_faiss=False lifts that cap, although it can cost a lot more memory.")
