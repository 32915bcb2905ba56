"""FlagEmbedding input (``input.format: flagembedding``): the JSONL that FlagEmbedding's ``hn_mine.py`` reads.

Each line is ``{"query": str, "pos": [str, ...], "neg": [str, ...] (optional), "prompt": str (optional)}``; other
keys are ignored. It is a pairs table with fixed columns (query ``query``, positive texts ``pos``, supplied negative
texts ``neg``, per-query instruction ``prompt``), so everything else is :mod:`.pairs`: queries are grouped by the
content hash of their text, texts get content-hash ids, bad lines are reported or quarantined (kind ``pairs``).

The corpus:
- without a candidate pool: every distinct ``pos`` and ``neg`` text of the file, as ``hn_mine.py`` builds it;
- with one (``input.corpus``, FlagEmbedding's ``candidate_pool``: JSONL of ``{"text": str}`` lines, ids the content
  hash of the text): the pool, plus the file's distinct ``pos`` and ``neg`` texts. ``hn_mine.py`` searches the
  pool alone and drops a positive by comparing texts; here the positives are in the corpus so that they are
  excluded by id (a pool line that repeats a positive's text is that positive, not a second document), and the
  ``neg`` texts so that they can be scored and kept as supplied negatives (``mining.supplied_negatives``; with
  ``ignore`` they are ordinary documents of the corpus).

``prompt`` reaches the output's ``prompt`` column and the ``flagembedding`` export (it wins over the run's
``encoder.query_prompt`` there). It is not prepended when the query is encoded for mining: as in ``hn_mine.py``,
the mining instruction is the run's ``encoder.query_prompt`` (``--query_instruction_for_retrieval``).
"""
from __future__ import annotations

import dataclasses

from ...config import ColumnsConfig, InputConfig
from .pairs import PairsFormat

COLUMNS = ColumnsConfig(query_id=None, query="query", positive_id=None, positive="pos", doc_id=None, text="text",
                        title=None, negative="neg", negative_id=None, prompt="prompt")


class FlagEmbeddingFormat(PairsFormat):
    """``input.format: flagembedding``: a pairs table with FlagEmbedding's columns (``input.columns`` is not
    read), and optionally a candidate pool (``input.corpus``)."""

    name = "flagembedding"

    def __init__(self, input_cfg: InputConfig, vectors=None):
        super().__init__(dataclasses.replace(input_cfg, columns=COLUMNS), vectors)
