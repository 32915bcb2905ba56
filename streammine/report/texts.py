"""Document texts for the example queries: one streaming pass over the run's corpus, keeping only wanted ids.

The output holds query texts but only document ids; the run config (in summary.json) says where the corpus was.
Memory: the wanted ids and their texts (a few hundred documents for the default sample), never the corpus.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

from ..config import ColumnsConfig
from ..errors import StreamMineError


def corpus_blocks(input_cfg: dict):
    """The corpus of a run's ``input`` config section as CORPUS_SCHEMA blocks (raises if it cannot be read)."""
    from ..config import InputConfig
    from ..io.formats import format_of
    from ..io.records import Quarantine
    path = input_cfg.get("path")
    if not path:
        raise StreamMineError("the run config names no input path")
    columns = ColumnsConfig(**{k: v for k, v in (input_cfg.get("columns") or {}).items()
                               if k in ColumnsConfig.__dataclass_fields__})
    fmt = format_of(InputConfig(format=input_cfg.get("format", "beir"), path=path, corpus=input_cfg.get("corpus"),
                                columns=columns))
    fmt.require_text_corpus()
    # bad rows were reported (or quarantined) when mining; here they are only skipped
    return fmt.corpus_blocks(quarantine=Quarantine())


def fetch_texts(input_cfg: Optional[dict], wanted: Iterable[str]) -> Tuple[Dict[str, str], Optional[str]]:
    """(doc id -> document text for the wanted ids found, None) or ({}, why no texts could be read).

    Stops reading as soon as every wanted id was found."""
    from ..io.records import document_text
    wanted = set(wanted)
    if not wanted:
        return {}, None
    if not input_cfg:
        return {}, "the output has no summary.json with the run config, so the corpus is unknown"
    texts: Dict[str, str] = {}
    try:
        for block in corpus_blocks(input_cfg):
            ids = block.column("doc_id").to_pylist()
            hit = [i for i, d in enumerate(ids) if d in wanted and d not in texts]
            if not hit:
                continue
            titles, bodies = block.column("title").to_pylist(), block.column("text").to_pylist()
            for i in hit:
                texts[ids[i]] = document_text(titles[i], bodies[i])
            if len(texts) == len(wanted):
                break
    except (StreamMineError, OSError, ValueError) as e:
        return texts, f"document texts could not be read from the run's corpus: {e}"
    return texts, None
