"""benchmarks/compare.py on a synthetic peer JSON and a synthetic streammine output (two parts, one of them with
only query_id and negative_ids). Expected numbers are worked out by hand in the comments."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_compare():
    spec = importlib.util.spec_from_file_location("bench_compare", ROOT / "benchmarks" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cmp = load_compare()


def cands(*entries):
    """(doc, score, status) triples -> the peer JSON's three parallel candidate lists."""
    return {"candidate_ids": [e[0] for e in entries], "candidate_scores": [e[1] for e in entries],
            "candidate_status": [e[2] for e in entries]}


def peer_query(negatives, short=False, threshold=None, candidates=None, positive_ids=(), merged=()):
    q = {"negative_ids": [] if short else list(negatives), "short": short, "survivor_ids": list(negatives),
         "threshold": threshold, "positive_ids": list(positive_ids), "merged_query_ids": list(merged)}
    q.update(candidates or {})
    return q


PEER = {
    "params": {"range_max": 4, "num_negatives": 2, "relative_margin": 0.05},
    "wall_seconds": 12.5,
    "doc_text_duplicates": {"d7b": "d7"},
    "queries": {
        "qA": peer_query(["a1", "a2"]),
        # b2 is the 5th non-positive candidate (rank 4 >= range_max 4): only reachable because k = range_max + max_pos
        "qB": peer_query(["b1", "b2"], threshold=0.5, candidates=cands(
            ("pB", 0.9, "positive"), ("m1", 0.8, "margin"), ("m2", 0.7, "margin"), ("b1", 0.45, "kept"),
            ("m3", 0.6, "margin"), ("b2", 0.4, "kept"))),
        # x sits on the threshold (ours removed it); y is the peer's 3rd survivor
        "qC": peer_query(["x", "c1"], threshold=0.95, candidates=cands(
            ("pC", 0.99, "positive"), ("x", 0.94999, "kept"), ("c1", 0.9, "kept"), ("y", 0.85, "kept"))),
        "qD": peer_query(["d1", "d7"]),  # no diagnostics; d7b has d7's text
        # duplicate query texts: p9 is the other query id's positive, masked by the peer
        "qE": peer_query(["e1", "z"], threshold=0.9, merged=["qE2"], candidates=cands(
            ("e1", 0.8, "kept"), ("p9", 0.79, "positive"), ("z", 0.7, "kept"))),
        "qF": peer_query(["f1"], short=True),
        "qG": peer_query(["g1", "g2"]),
        "qI": peer_query(["i1", "i2"]),
        "qJ": peer_query(["j1", "j2"], threshold=0.9, candidates=cands(("j1", 0.6, "kept"), ("j2", 0.5, "kept"))),
        "qK": peer_query(["k1", "k2"], threshold=0.8, candidates=cands(
            ("v", 0.9, "margin"), ("k1", 0.5, "kept"), ("k2", 0.4, "kept"))),
        "qL": peer_query(["l1", "l2"], threshold=0.95, candidates=cands(("l1", 0.5, "kept"), ("l2", 0.31, "kept"))),
    },
}

# query_id, negative_ids, negative_ranks, negative_scores, removed_ids, removed_scores, positive_ref, short
RICH_ROWS = [
    ("qA", ["a1", "a2", "r1"], [0, 1, -1], [0.5, 0.4, 0.1], [], [], 1.0, False),   # r1: random, not compared
    ("qB", ["b1"], [2], [0.45], ["m1", "m2", "m3"], [0.8, 0.7, 0.6], 0.52, True),
    ("qC", ["c1", "y"], [1, 2], [0.9, 0.85], ["x"], [0.95001], 1.0, False),
    ("qE", ["e1", "p9"], [0, 1], [0.8, 0.79], [], [], 0.95, False),
    ("qF", [], [], [], [], [], 0.2, True),
    ("qJ", ["j1", "w"], [0, 1], [0.6, 0.55], [], [], 1.0, False),
    ("qK", ["v", "k1"], [0, 1], [0.9, 0.5], [], [], 1.0, False),
    ("qL", ["l1"], [0], [0.5], ["l2"], [0.3], 1.0, True),
]
MINIMAL_ROWS = [("qD", ["d1", "d7b"]), ("qG", ["g2", "g1"]), ("qH", ["h1", "h2"])]


@pytest.fixture
def ours_dir(tmp_path):
    out = tmp_path / "ours"
    out.mkdir()
    names = ["query_id", "negative_ids", "negative_ranks", "negative_scores", "removed_ids", "removed_scores",
             "positive_ref", "short"]
    rich = pa.table({n: [r[i] for r in RICH_ROWS] for i, n in enumerate(names)},
                    schema=pa.schema([("query_id", pa.string()), ("negative_ids", pa.list_(pa.string())),
                                      ("negative_ranks", pa.list_(pa.int32())),
                                      ("negative_scores", pa.list_(pa.float32())),
                                      ("removed_ids", pa.list_(pa.string())),
                                      ("removed_scores", pa.list_(pa.float32())),
                                      ("positive_ref", pa.float32()), ("short", pa.bool_())]))
    pq.write_table(rich, out / "part-00000-a.parquet")
    pq.write_table(pa.table({"query_id": [r[0] for r in MINIMAL_ROWS], "negative_ids": [r[1] for r in MINIMAL_ROWS]}),
                   out / "part-00001-b.parquet")
    return out


def test_compare_end_to_end(ours_dir, tmp_path, capsys):
    peer_path = tmp_path / "peer.json"
    peer_path.write_text(json.dumps(PEER))
    result = cmp.main(["--peer", str(peer_path), "--ours", str(ours_dir), "--label", "synthetic", "--header",
                       "--out", str(tmp_path / "diff.json")])
    # compared: A B C D E G J K L (F: peer short; I: only in peer; H: only in ours)
    assert result["queries_compared"] == 9
    # |ours ∩ peer|: A2 B1 C1 D1 E1 G2 J1 K1 L1 = 11, |peer| = 9 * 2
    assert result["overlap"] == pytest.approx(11 / 18)
    assert result["exact_set_share"] == pytest.approx(2 / 9)      # A, G
    assert result["exact_order_share"] == pytest.approx(1 / 9)    # A
    assert result["queries_differing"] == 8  # all but A (G differs in order only)
    assert (result["peer_short"], result["peer_short_ours_short_too"]) == (1, 1)
    assert result["only_in_peer"] == ["qI"] and result["only_in_ours"] == ["qH"]
    by_query = {d["query_id"]: d for d in result["differences"]}
    assert by_query["qB"]["peer_only"] == {"b2": cmp.PEER_WINDOW}
    assert by_query["qC"]["peer_only"] == {"x": cmp.TIE} and by_query["qC"]["ours_only"] == {"y": cmp.DISPLACED}
    assert by_query["qD"]["peer_only"] == {"d7": cmp.DUPLICATE_TEXT}
    assert by_query["qD"]["ours_only"] == {"d7b": cmp.DUPLICATE_TEXT}
    assert by_query["qE"]["ours_only"] == {"p9": cmp.PEER_MERGED_QUERY}
    assert by_query["qE"]["peer_only"] == {"z": cmp.DISPLACED}
    assert by_query["qG"]["same_set"] and not by_query["qG"]["peer_only"]
    assert by_query["qJ"]["ours_only"] == {"w": cmp.NOT_IN_PEER_CANDIDATES}
    assert by_query["qK"]["ours_only"] == {"v": cmp.PEER_FILTERED}
    assert by_query["qL"]["peer_only"] == {"l2": cmp.OURS_FILTERED}
    assert result["reasons"][cmp.DISPLACED] == 4 and result["reasons"][cmp.ORDER_ONLY] == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3].startswith("| run |")
    assert lines[-1] == "| synthetic | 9 | 61.11% | 22.22% | 11.11% | 8 | 1 (1) | 12.5 |"
    assert "- query qB: peer ['b1', 'b2'] / ours ['b1']" in lines
    assert json.loads((tmp_path / "diff.json").read_text())["queries_differing"] == 8


def test_random_negatives_are_left_out(ours_dir):
    ours = cmp.read_ours(str(ours_dir))
    assert ours["qA"].negative_ids == ["a1", "a2"] and ours["qD"].negative_ids == ["d1", "d7b"]


def test_manifest_selects_parts(ours_dir):
    (ours_dir / "_parts.json").write_text(json.dumps({"parts": [{"part": "part-00001-b.parquet", "rows": 3}]}))
    assert sorted(cmp.read_ours(str(ours_dir))) == ["qD", "qG", "qH"]


def test_duplicate_query_id_is_an_error(tmp_path):
    pq.write_table(pa.table({"query_id": ["q", "q"], "negative_ids": [["a"], ["b"]]}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="appears twice"):
        cmp.read_ours(str(tmp_path))


def test_same_text_as_positive_is_duplicate_text():
    ctx = cmp.Context(canonical={"dupe": "pos"})
    peer_q = peer_query(["n1"], positive_ids=["pos"])
    assert cmp.classify_difference("dupe", "ours_only", peer_q, cmp.OurQuery(["dupe"]), ctx) == cmp.DUPLICATE_TEXT


def test_tie_on_our_side_only():
    # the peer kept it well below its threshold, ours removed it right at ours (s+ 0.8 -> cut 0.76)
    ctx = cmp.Context(tie_eps=1e-4)
    peer_q = peer_query(["t"], threshold=0.9, candidates=cands(("t", 0.76, "kept")))
    ours_q = cmp.OurQuery([], removed={"t": 0.76003}, positive_ref=0.8)
    assert cmp.classify_difference("t", "peer_only", peer_q, ours_q, ctx) == cmp.TIE
    assert math.isclose(cmp.our_threshold(ours_q, 0.05), 0.76)
