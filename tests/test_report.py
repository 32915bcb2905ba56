"""streammine report: the streaming accumulators against numpy on the whole data, and the report of a small
output (written part by part with the output schema) against numbers computed independently from its Parquet."""
from __future__ import annotations

import argparse
import base64
import collections
import html
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streammine.config import MineConfig
from streammine.report import run_report
from streammine.report import cli as report_cli
from streammine.report.accumulators import BottomK, Histogram, IntCounts, common_edges
from streammine.sink.schema import MINED_SCHEMA

PERC, NUM_NEG = 0.95, 5
NASTY = '<script>alert("x")</script> & <b>bold</b>'


# ---- accumulators ---------------------------------------------------------------------------------------------

def _batches(values, rng):
    cuts = np.sort(rng.choice(np.arange(1, len(values)), size=min(12, len(values) - 1), replace=False))
    return np.split(values, cuts)


@pytest.mark.parametrize("max_bins", [4096, 37, 2])
def test_histogram_equals_numpy_on_the_whole_data(max_bins):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.3, 0.2, 3000), rng.uniform(-1, 1, 500), [0.0, -0.5, 1.0, 7.25, -3.0]])
    h = Histogram(max_bins=max_bins)
    h.add([np.nan, np.inf])
    for part in _batches(rng.permutation(values), rng):  # batches in any order
        h.add(part)
    assert h.counts.size <= max_bins
    np.testing.assert_array_equal(h.counts, np.histogram(values, bins=h.edges)[0])
    assert h.counts.sum() == h.n == values.size and h.nonfinite == 2
    assert (h.min, h.max) == (values.min(), values.max())
    assert h.mean == pytest.approx(values.mean())
    # the same values in other batches and order give the same histogram
    h2 = Histogram(max_bins=max_bins)
    for part in _batches(values, np.random.default_rng(5)):
        h2.add(part)
    assert (h2.width, h2.lo) == (h.width, h.lo) and np.array_equal(h2.counts, h.counts)


def test_common_edges_keep_every_count():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 0.1, 1000), rng.normal(3, 2, 400)
    ha, hb, empty = Histogram(), Histogram(max_bins=64), Histogram()
    ha.add(a)
    hb.add(b)
    edges, (ca, cb, ce) = common_edges([ha, hb, empty], max_bins=50)
    assert len(edges) - 1 <= 50 and ce.sum() == 0
    np.testing.assert_array_equal(ca, np.histogram(a, bins=edges)[0])
    np.testing.assert_array_equal(cb, np.histogram(b, bins=edges)[0])


def test_int_counts_equal_numpy_unique():
    rng = np.random.default_rng(2)
    values = rng.integers(-1, 60, 5000)
    c = IntCounts()
    for part in _batches(values, rng):
        c.add(part)
    c.add([])
    u, n = np.unique(values, return_counts=True)
    assert c.items() == list(zip(u.tolist(), n.tolist())) and c.total == values.size
    assert c[-1] == int((values == -1).sum()) and c[999] == 0


def test_bottom_k_is_a_seeded_sample_independent_of_batches():
    ids = [f"q{i}" for i in range(1000)]

    def sample(k, seed, order, batch):
        s = BottomK(k, seed)
        for i in range(0, len(order), batch):
            chunk = [ids[j] for j in order[i:i + batch]]
            pick = s.candidates(chunk)
            s.offer([chunk[j] for j in pick], [{"id": chunk[j]} for j in pick])
        return [r["id"] for r in s.rows()]

    rng = np.random.default_rng(3)
    a = sample(25, 7, np.arange(1000), 64)
    assert len(a) == len(set(a)) == 25
    assert a == sample(25, 7, rng.permutation(1000), 13)       # any order, any batching
    assert a != sample(25, 8, np.arange(1000), 64)             # the seed matters
    u = BottomK(25, 7).keys(ids)
    assert sorted(a) == sorted(ids[i] for i in np.argsort(u)[:25])  # the 25 smallest keys of all
    assert sorted(sample(2000, 7, np.arange(1000), 100)) == sorted(ids)
    assert sample(0, 7, np.arange(1000), 100) == []


# ---- a small output -------------------------------------------------------------------------------------------

def _doc_text(d: str) -> str:
    return f"Document {d} text, with {NASTY} inside" if d.endswith("7") else f"Document {d} plain text"


def write_output(root: str, n_queries: int = 90, parts: int = 3, seed: int = 0, summary: bool = True) -> str:
    """A mining output as the pipeline writes it (several parts, a manifest, summary.json), consistent with a
    TopK-PercPos 0.95 filter: removed candidates score >= 0.95·s⁺, kept negatives below it. Returns its URL."""
    rng = np.random.default_rng(seed)
    out, beir = os.path.join(root, "out"), os.path.join(root, "beir")
    os.makedirs(out)
    os.makedirs(beir)
    rows, docs = [], set()
    for qi in range(n_queries):
        n_pos = int(rng.integers(1, 4))
        pos_scores = rng.uniform(0.35, 0.9, n_pos).astype(np.float32)
        if n_pos > 1 and qi % 11 == 0:
            pos_scores[-1] = np.nan  # a positive not found in the corpus
        ref = np.float32(np.nanmin(pos_scores))
        bound = PERC * float(ref)
        n_rem = int(rng.choice([0, 0, 1, 2, 7]))
        removed = np.sort(bound + 0.005 + rng.uniform(0, 0.15, n_rem)).astype(np.float32)[::-1]
        n_hard = int(rng.choice([0, 2, 4, 5, 5, 5])) if qi % 13 else 0
        n_rand = int(rng.choice([0, 0, 1])) if n_hard < NUM_NEG else 0
        hard = np.sort(bound - 0.005 - rng.uniform(0, 0.4, n_hard)).astype(np.float32)[::-1]
        rand = (bound - 0.3 - rng.uniform(0, 0.3, n_rand)).astype(np.float32)
        ranks = (n_rem + np.sort(rng.choice(np.arange(0, 30), n_hard, replace=False))).tolist() + [-1] * n_rand
        neg_ids = [f"d{qi}-{j}" for j in range(n_hard + n_rand)]
        rem_ids = [f"r{qi}-{j}" for j in range(n_rem)]
        pos_ids = [f"p{qi}-{j}" for j in range(n_pos)]
        docs.update(neg_ids + rem_ids + pos_ids[: n_pos - int(np.isnan(pos_scores[-1]))])
        rows.append({"query_id": f"q{qi}", "query": f"query {qi} " + (NASTY if qi % 3 == 0 else "plain"),
                     "positive_ids": pos_ids, "positive_scores": pos_scores.tolist(), "positive_ref": float(ref),
                     "negative_ids": neg_ids, "negative_scores": np.concatenate([hard, rand]).tolist(),
                     "negative_ranks": ranks, "removed_ids": rem_ids, "removed_scores": removed.tolist(),
                     "n_candidates": 60, "n_removed_positive": n_pos, "n_removed_same_text": int(qi % 7 == 0),
                     "n_removed_filter": n_rem, "n_removed_min_score": 0,
                     "n_removed_near_duplicate_of_positive": int(qi % 5 == 0),
                     "n_removed_near_duplicate_negative": 2 * int(qi % 4 == 0),
                     "n_supplied_negatives": int(qi % 3 == 1), "n_below_grade": 3 * int(qi % 6 == 0),
                     "short": n_hard + n_rand < NUM_NEG, "model": "m", "model_version": "v", "config_hash": "h"})
    names = []
    for i, chunk in enumerate(np.array_split(np.arange(n_queries), parts)):
        name = f"part-{i:05d}-test.parquet"
        pq.write_table(pa.Table.from_pylist([rows[j] for j in chunk], schema=MINED_SCHEMA),
                       os.path.join(out, name), row_group_size=7)
        names.append({"part": name, "rows": len(chunk)})
    pq.write_table(pa.Table.from_pylist(rows[:2], schema=MINED_SCHEMA), os.path.join(out, "part-orphan.parquet"))
    with open(os.path.join(out, "_parts.json"), "w") as f:
        json.dump({"parts": names, "rows": n_queries}, f)
    with open(os.path.join(beir, "corpus.jsonl"), "w") as f:
        for d in sorted(docs):
            f.write(json.dumps({"_id": d, "title": f"T{d}", "text": _doc_text(d)}) + "\n")
    if summary:
        cfg = MineConfig.from_dict({"input": {"path": beir}, "output": {"path": out},
                                    "mining": {"filter": {"method": "topk-percpos", "perc": PERC},
                                               "sampler": {"num_negatives": NUM_NEG, "range_max": 30}}})
        counts = {"queries_out": n_queries, "negatives": sum(len(r["negative_ids"]) for r in rows),
                  "queries_short_of_negatives": sum(r["short"] for r in rows),
                  "removed_probable_false_negatives": sum(r["n_removed_filter"] for r in rows),
                  "removed_near_duplicate_of_positive": sum(r["n_removed_near_duplicate_of_positive"] for r in rows),
                  "removed_near_duplicate_negative": sum(r["n_removed_near_duplicate_negative"] for r in rows),
                  "supplied_negatives_used": sum(r["n_supplied_negatives"] for r in rows),
                  "judged_below_positive_grade": sum(r["n_below_grade"] for r in rows)}
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump({"output": out, "model": "m", "model_version": "v", "config_hash": "h", "counts": counts,
                       "config": cfg.to_dict()}, f)
    return out


def expected_from_parquet(out: str) -> dict:
    """The report's numbers, computed independently: the committed parts read whole with pyarrow."""
    with open(os.path.join(out, "_parts.json")) as f:
        t = pa.concat_tables([pq.read_table(os.path.join(out, p["part"])) for p in json.load(f)["parts"]])
    d = t.to_pydict()
    flat = lambda col: np.array([x for xs in d[col] for x in xs], np.float64)  # noqa: E731
    bounds = PERC * np.array(d["positive_ref"], np.float64)
    neg, ranks = flat("negative_scores"), flat("negative_ranks").astype(int)
    pos = flat("positive_scores")
    return {"queries": t.num_rows, "negatives": sum(map(len, d["negative_ids"])), "short": sum(d["short"]),
            "removed": sum(map(len, d["removed_ids"])),
            "queries_with_removed": sum(1 for x in d["removed_ids"] if x),
            "random_negatives": int((ranks == -1).sum()),
            "positives": pos.size, "positives_not_found": int(np.isnan(pos).sum()),
            "counts": {c: sum(d[c]) for c in ("n_candidates", "n_removed_positive", "n_removed_same_text",
                                              "n_removed_filter", "n_removed_min_score",
                                              "n_removed_near_duplicate_of_positive",
                                              "n_removed_near_duplicate_negative", "n_supplied_negatives",
                                              "n_below_grade")},
            "negatives_per_query": collections.Counter(map(len, d["negative_ids"])),
            "removed_per_query": collections.Counter(map(len, d["removed_ids"])),
            "negative_ranks": collections.Counter(ranks.tolist()),
            "scores": {"positive_scores": pos[~np.isnan(pos)], "negative_scores": neg,
                       "hard_scores": neg[ranks >= 0], "random_scores": neg[ranks < 0],
                       "removed_scores": flat("removed_scores"), "thresholds": bounds,
                       "kept_margin": neg - np.repeat(bounds, list(map(len, d["negative_ids"]))),
                       "removed_margin": flat("removed_scores") - np.repeat(bounds, list(map(len, d["removed_ids"])))},
            "rows": {q: r for q, r in zip(d["query_id"], t.to_pylist())}}


def check_numbers(stats: dict, want: dict) -> None:
    for key in ("queries", "negatives", "short", "removed", "queries_with_removed", "random_negatives", "positives",
                "positives_not_found", "counts"):
        assert stats[key] == want[key], key
    for key in ("negatives_per_query", "removed_per_query", "negative_ranks"):
        assert {int(k): v for k, v in stats[key].items()} == dict(want[key]), key
    for name, values in want["scores"].items():
        h = stats["histograms"][name]
        assert h["n"] == values.size and sum(h["counts"]) == values.size, name
        if values.size:
            edges = h["first_edge"] + h["bin_width"] * np.arange(len(h["counts"]) + 1)
            np.testing.assert_array_equal(h["counts"], np.histogram(values, bins=edges)[0], err_msg=name)
            assert (h["min"], h["max"]) == (values.min(), values.max()), name
    # the threshold the report derived from the config separates kept from removed, as the filter did
    assert stats["histograms"]["kept_margin"]["max"] < 0 <= stats["histograms"]["removed_margin"]["min"]


def comparable(stats: dict) -> dict:
    """The stats less where they were written, the time taken and the means (float sums: order-dependent bits)."""
    out = {k: v for k, v in stats.items() if k not in ("seconds", "report", "figures", "output")}
    out["histograms"] = {name: {k: v for k, v in h.items() if k != "mean"} for name, h in stats["histograms"].items()}
    return out


@pytest.fixture(scope="module")
def small_output(tmp_path_factory):
    return write_output(str(tmp_path_factory.mktemp("report")))


@pytest.fixture(scope="module")
def small_report(small_output):
    return run_report(small_output, sample=8, seed=3, batch_rows=16)  # small batches: many per part


def test_report_numbers_match_the_parquet(small_output, small_report):
    want = expected_from_parquet(small_output)
    check_numbers(small_report, want)
    assert small_report["parts"] == 3  # the orphan part the manifest does not name is not read
    assert all(v["agree"] for v in small_report["summary_agreement"].values())
    assert small_report["notes"] == []
    # the example sample: 8 distinct queries, the same for another batch size, another for another seed
    assert len(set(small_report["sample"])) == 8 and set(small_report["sample"]) <= set(want["rows"])
    other = run_report(small_output, report_dir=os.path.join(small_output, "r2"), sample=8, seed=3, batch_rows=1000)
    assert other["sample"] == small_report["sample"]
    assert comparable(other) == comparable(small_report)
    assert run_report(small_output, report_dir=os.path.join(small_output, "r3"), sample=8, seed=4,
                      texts=False)["sample"] != small_report["sample"]


def test_report_files(small_output, small_report):
    report_dir = os.path.join(small_output, "report")
    assert small_report["report"] == os.path.join(report_dir, "report.html")
    names = sorted(os.listdir(report_dir))
    assert names == ["negative_ranks.png", "per_query.png", "report.html", "scores.png", "stats.json",
                     "threshold_margin.png"]
    page = open(small_report["report"], encoding="utf-8").read()
    uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(uris) == 4
    for fig, uri in zip(small_report["figures"], uris):  # each embedded figure is the PNG file beside the page
        png = open(fig, "rb").read()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and base64.b64decode(uri) == png
    with open(os.path.join(report_dir, "stats.json")) as f:
        assert json.load(f)["negatives"] == small_report["negatives"]
    # the sampled queries, side by side, every text escaped
    rows = expected_from_parquet(small_output)["rows"]
    assert NASTY not in page and "<script>" not in page
    for qid in small_report["sample"]:
        row = rows[qid]
        assert html.escape(row["query"]) in page
        for d in (row["positive_ids"] + row["negative_ids"] + row["removed_ids"])[:10]:
            if not d.startswith("p") or d.endswith(("0", "1")):  # positive p..-2 of some queries is not in the corpus
                assert f"id {html.escape(d)}" in page
    sampled_docs = {d for q in small_report["sample"] for key in ("negative_ids", "removed_ids")
                    for d in rows[q][key][:10]}
    assert small_report["texts_found"] >= len(sampled_docs)
    for d in sampled_docs:
        assert html.escape(f"T{d} {_doc_text(d)}") in page
    assert html.escape(NASTY) in page


def test_report_without_summary_or_corpus(tmp_path):
    out = write_output(str(tmp_path), n_queries=30, parts=2, seed=1, summary=False)
    stats = run_report(out, report_dir=str(tmp_path / "rep"), sample=5)
    want = expected_from_parquet(out)
    for key in ("queries", "negatives", "removed", "random_negatives", "counts"):
        assert stats[key] == want[key]
    assert stats["histograms"]["thresholds"]["n"] == 0 and stats["summary_agreement"] is None
    assert len(stats["figures"]) == 3  # no threshold, no distance-to-threshold figure
    assert any("summary.json" in n for n in stats["notes"]) and stats["texts_found"] == 0
    page = open(stats["report"], encoding="utf-8").read()
    assert all(html.escape(want["rows"][q]["query"]) in page for q in stats["sample"])


def test_cli(small_output, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="streammine")
    report_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", small_output, "--report-dir", str(tmp_path / "r"), "--sample", "3",
                              "--no-texts"])
    assert report_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and os.path.exists(tmp_path / "r" / "report.html")
    assert report_cli.run(parser.parse_args(["report", str(tmp_path / "missing")])) == 2
    assert "not found" in capsys.readouterr().err


def test_report_on_s3(small_output, small_report, s3_bucket):
    import fsspec
    from streammine.io import fs
    s3, _ = fs.resolve(f"s3://{s3_bucket}")
    names = ["_parts.json", "summary.json"] + [n for n in os.listdir(small_output) if n.startswith("part-")]
    for name in names:
        s3.put_file(os.path.join(small_output, name), f"{s3_bucket}/run/{name}")
    stats = run_report(f"s3://{s3_bucket}/run", sample=8, seed=3)
    assert stats["report"] == f"s3://{s3_bucket}/run/report/report.html"
    assert comparable(stats) == comparable(small_report)
    with fsspec.open(stats["figures"][0], "rb", **fs.storage_options(stats["report"])) as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert s3.cat_file(f"{s3_bucket}/run/report/report.html").count(b"data:image/png;base64,") == 4


# ---- a real run ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_report_on_a_pipeline_output(ray_session, tmp_path):
    """A run with relative filtering and random corpus negatives: the report agrees with the summary and with the
    rows, and the threshold it rebuilds from the config is the one the mining stage applied."""
    import streammine
    from helpers import precomputed_overrides, read_output, write_synthetic_beir
    data = write_synthetic_beir(str(tmp_path / "data"), n_docs=300, n_queries=50)
    result = streammine.mine(overrides=precomputed_overrides(
        data, str(tmp_path / "out"), **{"mining.sampler.num_negatives": 6, "mining.sampler.range_max": 30,
                                        "mining.sampler.random_share": 0.34, "mining.filter.perc": 0.9,
                                        "index.shards": 2}))
    stats = run_report(result.output, sample=5)
    rows = read_output(result.output)
    c = result.summary["counts"]
    assert (stats["queries"], stats["negatives"], stats["short"]) == \
        (c["queries_out"], c["negatives"], c["queries_short_of_negatives"])
    assert stats["removed"] == c["removed_probable_false_negatives"] == stats["counts"]["n_removed_filter"]
    assert stats["random_negatives"] == sum(r["negative_ranks"].count(-1) for r in rows.values()) > 0
    assert {int(k): v for k, v in stats["negatives_per_query"].items()} == \
        dict(collections.Counter(len(r["negative_ids"]) for r in rows.values()))
    assert stats["histograms"]["kept_margin"]["max"] < 0 <= stats["histograms"]["removed_margin"]["min"]
    assert stats["histograms"]["removed_margin"]["n"] == stats["removed"] > 0
    # precomputed vectors: the BEIR directory has no corpus.jsonl, so the examples show ids only, and say why
    assert stats["texts_found"] == 0 and any("by id only" in n for n in stats["notes"])
    assert len(stats["figures"]) == 4


def test_example_lists_are_capped_and_escaped():
    from streammine.report.html import SHOWN_PER_COLUMN, example_html
    n = SHOWN_PER_COLUMN + 3
    row = {"query_id": "<q>", "query": NASTY, "positive_ids": ["p"], "positive_scores": [float("nan")],
           "positive_ref": 0.5, "negative_ids": ["n1", "n2"], "negative_scores": [0.2, 0.1],
           "negative_ranks": [4, -1], "removed_ids": [f"r{i}" for i in range(n)], "removed_scores": [0.6] * n,
           "threshold": 0.475, "short": True}
    page = example_html(row, {"n1": NASTY})
    assert "… and 3 more, not shown" in page and f"id r{SHOWN_PER_COLUMN - 1}" in page and f"id r{n - 1}" not in page
    assert "<script>" not in page and page.count(html.escape(NASTY)) == 2 and "query &lt;q&gt;" in page
    assert "rank 4" in page and "random corpus document" in page and "not found in the corpus" in page
    assert "keep s &lt; 0.4750" in page and "(short)" in page
