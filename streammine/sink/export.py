"""Runs the configured exporters on a finished output, in a Ray task (the id->text map stays off the driver)."""
from __future__ import annotations


import ray

from ..io import fs


def corpus_texts(cfg) -> dict:
    """doc id -> document text (title + " " + text), for exporters that write texts. Memory: the corpus text."""
    from ..io import readers
    from ..io.records import Quarantine, document_text
    i = cfg.input
    # lenient runs: bad rows were quarantined while mining; here they are only skipped again
    quarantine = Quarantine() if i.lenient else None
    blocks = (readers.iter_beir_corpus(dir_url=i.path, quarantine=quarantine) if i.format == "beir"
              else readers.iter_pairs_corpus(url=i.path, columns=i.columns, corpus_url=i.corpus,
                                             quarantine=quarantine))
    texts = {}
    for block in blocks:
        for doc_id, title, text in zip(block.column("doc_id").to_pylist(), block.column("title").to_pylist(),
                                       block.column("text").to_pylist()):
            texts.setdefault(doc_id, document_text(title, text))
    return texts


EXPORT_FILES = {"st-triplet": "st-triplet.parquet", "st-ntuple": "st-ntuple.parquet",
                "flagembedding": "flagembedding.jsonl"}


@ray.remote(num_cpus=0.25)
def _export_task(cfg, out_url: str) -> dict:
    from . import exporters
    from .parts import list_parts
    texts = corpus_texts(cfg)
    parts = list_parts(out_url)
    functions = {"st-triplet": exporters.export_st_triplet, "st-ntuple": exporters.export_st_ntuple,
                 "flagembedding": exporters.export_flagembedding}
    results = {}
    for fmt in cfg.output.export:
        target = fs.join(out_url, "export", EXPORT_FILES[fmt])
        fs.makedirs(fs.join(out_url, "export"))
        results[fmt] = dict(functions[fmt](parts, texts, target), path=target)
    return results


def run_exports(cfg, out_url: str) -> dict:
    if cfg.encoder.kind == "precomputed":
        return {"skipped": "precomputed vectors carry no texts to export"}
    return ray.get(_export_task.remote(cfg, out_url))
