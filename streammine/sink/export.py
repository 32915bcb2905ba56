"""Runs the configured exporters on a finished output, in a Ray task (the id->text map stays off the driver)."""
from __future__ import annotations


import ray

from ..io import fs


EXPORT_FILES = {"st-triplet": "st-triplet.parquet", "st-ntuple": "st-ntuple.parquet",
                "flagembedding": "flagembedding.jsonl"}


@ray.remote(num_cpus=0.25)
def _export_task(cfg, out_url: str) -> dict:
    from . import exporters
    from .parts import list_parts
    from ..io.readers import corpus_texts
    texts = corpus_texts(cfg.input)  # doc id -> text, for the exporters that write texts (memory: the corpus text)
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
