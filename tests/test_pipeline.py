"""End-to-end invariants of a mining run on a real local Ray: exactness against a brute-force reference,
determinism whatever the parallelism, completeness."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import streammine
from helpers import precomputed_overrides, read_output, write_synthetic_beir


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_beir(str(tmp_path_factory.mktemp("synthetic")))


def brute_force_negatives(data: dict, perc: float, n: int, range_max: int) -> dict:
    """An independent reference: full score matrix, ranking by (score desc, ordinal asc), positives removed,
    rank window over the non-positives, TopK-PercPos against the weakest positive, then the top n."""
    docs, queries = data["docs"].astype(np.float64), data["queries"].astype(np.float64)
    expected = {}
    for qi, positives in enumerate(data["positives"]):
        scores = (docs @ queries[qi]).astype(np.float32)
        order = sorted(range(len(docs)), key=lambda d: (-scores[d], d))
        s_pos = min(float(scores[p]) for p in positives)
        bound = perc * s_pos if s_pos >= 0 else s_pos - abs(s_pos) * (1 - perc)
        ranked = [d for d in order if d not in positives][:range_max]
        kept = [d for d in ranked if float(scores[d]) < bound][:n]
        expected[f"q{qi}"] = ([f"d{d}" for d in kept], [float(scores[d]) for d in kept])
    return expected


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_flat_shards_match_brute_force(ray_session, synthetic, tmp_path, shards):
    out = str(tmp_path / "out")
    result = streammine.mine(overrides=precomputed_overrides(
        synthetic, out, **{"index.shards": shards, "mining.sampler.num_negatives": 6,
                           "mining.sampler.range_max": 40, "run.query_batch_size": 16}))
    rows = read_output(out)
    expected = brute_force_negatives(synthetic, perc=0.95, n=6, range_max=40)
    assert set(rows) == set(expected)  # completeness: every query exactly once
    for qid, (ids, scores) in expected.items():
        assert rows[qid]["negative_ids"] == ids, qid
        np.testing.assert_allclose(rows[qid]["negative_scores"], scores, rtol=0, atol=1e-6)
        assert not set(rows[qid]["negative_ids"]) & set(rows[qid]["positive_ids"])
    assert result.summary["counts"]["queries_out"] == len(expected)


def test_same_negatives_whatever_the_parallelism(ray_session, synthetic, tmp_path):
    """SimANS + random corpus negatives (both random): the same seed gives the same negatives for 1 shard and
    batches of 7 as for 4 shards, 2 miner actors and batches of 32."""
    base = {"mining.sampler.method": "simans", "mining.sampler.num_negatives": 5, "mining.sampler.simans_a": 20.0,
            "mining.sampler.random_share": 0.4, "mining.filter.method": "none", "mining.seed": 11}
    a = streammine.mine(overrides=precomputed_overrides(
        synthetic, str(tmp_path / "a"), **base, **{"index.shards": 1, "run.query_batch_size": 7}))
    b = streammine.mine(overrides=precomputed_overrides(
        synthetic, str(tmp_path / "b"), **base, **{"index.shards": 4, "run.query_batch_size": 32,
                                                     "run.miner_actors": 2}))
    rows_a, rows_b = read_output(a.output), read_output(b.output)
    assert rows_a.keys() == rows_b.keys()
    assert all(rows_a[q]["negative_ids"] == rows_b[q]["negative_ids"] for q in rows_a)
    assert any(-1 in rows_a[q]["negative_ranks"] for q in rows_a)  # random corpus negatives were mixed in
    # random_share 0.4 of 5: two random negatives, never more (a query short of hard ones is short)
    assert all(rows_a[q]["negative_ranks"].count(-1) <= 2 for q in rows_a)
    assert a.summary["counts"]["random_negatives"] == sum(r["negative_ranks"].count(-1) for r in rows_a.values())
    c = streammine.mine(overrides=precomputed_overrides(
        synthetic, str(tmp_path / "c"), **dict(base, **{"mining.seed": 12})))
    rows_c = read_output(c.output)
    assert any(rows_a[q]["negative_ids"] != rows_c[q]["negative_ids"] for q in rows_a)  # the seed matters


def test_approximate_index_reports_exact_scores(ray_session, synthetic, tmp_path):
    result = streammine.mine(overrides=precomputed_overrides(
        synthetic, str(tmp_path / "ivf"), **{"index.kind": "ivf-pq", "index.shards": 2, "index.nlist": 4,
                                               "index.pq_m": 4}))
    docs, queries = synthetic["docs"].astype(np.float64), synthetic["queries"].astype(np.float64)
    for qid, row in read_output(result.output).items():
        q = queries[int(qid[1:])]
        exact = [float((docs[int(d[1:])] @ q)) for d in row["negative_ids"]]
        np.testing.assert_allclose(row["negative_scores"], exact, atol=1e-6)
        exact_pos = [float(docs[int(d[1:])] @ q) for d in row["positive_ids"]]
        np.testing.assert_allclose(row["positive_scores"], exact_pos, atol=1e-6)


def test_summary_counts_match_output(ray_session, synthetic, tmp_path):
    result = streammine.mine(overrides=precomputed_overrides(
        synthetic, str(tmp_path / "s"), **{"mining.sampler.num_negatives": 30, "mining.sampler.range_max": 35}))
    rows = read_output(result.output)
    counts = json.load(open(os.path.join(result.output, "summary.json")))["counts"]
    assert counts["queries_out"] == len(rows) == counts["queries_in"]
    assert counts["negatives"] == sum(len(r["negative_ids"]) for r in rows.values())
    assert counts["queries_short_of_negatives"] == sum(len(r["negative_ids"]) < 30 for r in rows.values()) > 0
    assert counts["removed_probable_false_negatives"] == sum(len(r["removed_ids"]) for r in rows.values())
    assert counts["removed_known_positives"] == sum(r["n_removed_positive"] for r in rows.values())
    assert counts["random_negatives"] == sum(r["negative_ranks"].count(-1) for r in rows.values()) == 0
    assert counts["random_fill_negatives"] == 0
    assert counts["deeper_searches"] == 0 and isinstance(counts["certificate_researches"], int)  # unique texts
    assert "deeper_searches" not in result.summary["stages"]


@pytest.mark.slow
def test_real_model_scores_are_the_models(ray_session, tmp_path):
    """With the packaged MiniLM: the scores written are inner products of that model's embeddings."""
    from sentence_transformers import SentenceTransformer
    from streammine.api import demo_data_path
    from streammine.encode.base import default_model_path
    data = demo_data_path()
    result = streammine.mine(overrides={"input.path": data, "input.max_queries": 12, "output.path": str(tmp_path / "o"),
                                        "run.progress": False, "index.shards": 2})
    rows = read_output(result.output)
    assert len(rows) == 12
    docs = {d["_id"]: d for d in map(json.loads, open(os.path.join(data, "corpus.jsonl")))}
    model = SentenceTransformer(default_model_path(), device="cpu")
    for row in list(rows.values())[:4]:
        q = model.encode(row["query"], normalize_embeddings=True)
        texts = [f"{docs[d]['title']} {docs[d]['text']}" for d in row["negative_ids"] + row["positive_ids"]]
        e = model.encode(texts, normalize_embeddings=True)
        expected = e @ q
        n = len(row["negative_ids"])
        np.testing.assert_allclose(row["negative_scores"], expected[:n], atol=2e-4)
        np.testing.assert_allclose(row["positive_scores"], expected[n:], atol=2e-4)
        # TopK-PercPos exactly as the methods state it: s < 0.95 s+ (s+ >= 0), s < s+ - 0.05 |s+| (s+ < 0)
        s_plus = float(row["positive_ref"])
        bound = 0.95 * s_plus if s_plus >= 0 else s_plus - 0.05 * abs(s_plus)
        assert all(float(s) < bound for s in row["negative_scores"])


def write_titles_with_same_text_copies(root, copies=(20, 20, 40), n_queries=12, n_docs=150) -> dict:
    """A BEIR directory from the shipped SciFact slice, documents as their titles only (real text, fast to
    encode): the first ``n_queries`` queries with positives, ``n_docs`` documents, and for the first queries
    ``copies[i]`` same-text copies of their positive (other ids; case and spacing changed); the next query has
    10+ positives. One more query names a positive that is not in the corpus (lenient runs quarantine it and
    search its block again)."""
    from streammine.api import demo_data_path
    from streammine.keys import normalize_text
    src = demo_data_path()
    docs = [json.loads(x) for x in open(os.path.join(src, "corpus.jsonl"))]
    queries = {q["_id"]: q for q in map(json.loads, open(os.path.join(src, "queries.jsonl")))}
    qrels = [x.rstrip("\n").split("\t") for x in open(os.path.join(src, "qrels", "train.tsv"))][1:]
    by_query: dict = {}
    for qid, did, _ in qrels:
        by_query.setdefault(qid, []).append(did)
    chosen = [q for q in by_query if q in queries][:n_queries + 1]
    needed = {d for q in chosen for d in by_query[q]}
    # one query with 9 more positives: blocks holding it would have been searched deeper than blocks without
    extra = [d["_id"] for d in docs if d["_id"] not in needed][:9]
    by_query[chosen[len(copies)]] = by_query[chosen[len(copies)]] + extra
    needed |= set(extra)
    kept = [d for d in docs if d["_id"] in needed] + [d for d in docs if d["_id"] not in needed]
    kept = [{"_id": d["_id"], "title": "", "text": d["title"]} for d in kept[:n_docs]]
    copied = {}
    for i, n in enumerate(copies):
        original = next(d for d in kept if d["_id"] == by_query[chosen[i]][0])
        for c in range(n):
            text = original["text"].upper() if c % 2 else "  " + original["text"].replace(" ", "  ")
            assert normalize_text(text) == normalize_text(original["text"])
            kept.insert((7 * c + 3 * i) % len(kept), {"_id": f"copy-{i}-{c}", "title": "", "text": text})
        copied[chosen[i]] = original["_id"]
    os.makedirs(os.path.join(root, "qrels"))
    with open(os.path.join(root, "corpus.jsonl"), "w") as f:
        f.writelines(json.dumps(d) + "\n" for d in kept)
    with open(os.path.join(root, "queries.jsonl"), "w") as f:
        f.writelines(json.dumps(queries[q]) + "\n" for q in chosen)
    with open(os.path.join(root, "qrels", "train.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t1\n" for q in chosen[:-1] for d in by_query[q])
        f.write(f"{chosen[-1]}\tnot-in-the-corpus\t1\n")
    return {"path": root, "copied": copied, "missing_query": chosen[-1], "n_docs": len(kept)}


@pytest.mark.slow
def test_same_text_copies_whatever_the_blocks_with_the_real_model(ray_session, tmp_path):
    """Real texts and the real model, same-text copies of positives beyond SAME_TEXT_SLACK: every query's row is
    the same whether its block holds 1 query (1 shard), 7 or all (2 and 4 shards, the block of the query with a
    missing positive searched again without it); the copies are excluded and each window is full."""
    data = write_titles_with_same_text_copies(str(tmp_path / "beir"))
    base = {"input.path": data["path"], "input.lenient": True, "run.progress": False,
            "run.work_dir": str(tmp_path / "w"),
            "mining.sampler.method": "simans", "mining.sampler.simans_a": 20.0, "mining.sampler.range_max": 30,
            "mining.sampler.num_negatives": 5, "mining.sampler.random_share": 0.4, "mining.seed": 3}
    runs = {}
    for batch, shards in ((1, 1), (7, 2), (256, 4)):
        result = streammine.mine(overrides=dict(base, **{"output.path": str(tmp_path / f"o{batch}"),
                                                         "run.query_batch_size": batch, "index.shards": shards}))
        runs[batch] = (read_output(result.output), result.summary["counts"])
    rows, counts = runs[1]
    assert data["missing_query"] not in rows and len(rows) == 12
    for batch in (7, 256):
        assert runs[batch][0] == rows, batch
        # how many searches that took depends on the blocks (a deep block may already hold a doubled depth)
        assert runs[batch][1]["deeper_searches"] > 0
    assert counts["deeper_searches"] >= 3  # each query with copies, alone, needed a deeper search
    texts = {d["_id"]: d["text"] for d in map(json.loads, open(os.path.join(data["path"], "corpus.jsonl")))}
    from streammine.keys import normalize_text
    for qid, positive in data["copied"].items():
        row = rows[qid]
        assert row["n_removed_same_text"] >= 20, qid
        assert not any(normalize_text(texts[d]) == normalize_text(texts[positive]) for d in row["negative_ids"])
    for row in rows.values():
        assert row["n_candidates"] - row["n_removed_positive"] - row["n_removed_same_text"] >= 30
    assert "certificate_researches" in counts and counts["random_fill_negatives"] == 0


@pytest.mark.slow
def test_demo_command(tmp_path, streammine_cache):
    """`streammine demo` runs the whole path on the shipped slice in its own local Ray and prints a summary: at
    most 25 lines on a pipe, none of them Ray's (stderr stays empty). A second demo into another output folder
    takes the corpus vectors from the cache (this test's temporary STREAMMINE_CACHE): 0 documents encoded, said in
    one line. The demo ends with the output folder and the command to run next."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled", STREAMMINE_CACHE=streammine_cache)
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "streammine.cli", "demo", "--output", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "queries:  40 mined of 40 read" in proc.stdout
    assert proc.stderr == "", proc.stderr[-3000:]
    assert len(proc.stdout.splitlines()) <= 25, proc.stdout
    assert "encode: 300/300 documents" in proc.stdout and "mine: 40/40 queries" in proc.stdout
    lines = proc.stdout.splitlines()
    assert [x for x in lines if x.startswith("corpus:")] == [
        next(x for x in lines if x.startswith("corpus:   300 documents, all encoded in "))]
    assert lines[-2:] == [f"mined into {out}", f"next:     streammine report {out}"]
    assert any(x.startswith("cache:    ") and "in 2 entries at" in x for x in lines), lines
    rows = read_output(str(out))
    assert len(rows) == 40 and all(len(r["negative_ids"]) == 5 for r in rows.values())
    lines = [json.loads(x) for x in open(out / "export" / "flagembedding.jsonl")]
    assert len(lines) == 40 and all(len(x["neg"]) == 5 and x["pos"] for x in lines)
    assert not (out / "_work").exists()  # the store lives in the cache, not in the output

    again = subprocess.run([sys.executable, "-m", "streammine.cli", "demo", "--output", str(tmp_path / "demo2")],
                           env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [x for x in again.stdout.splitlines() if x.startswith("corpus:")] == [
        next(x for x in again.stdout.splitlines()
             if x.startswith("corpus:   300 documents, all from the cache; none encoded (store ready in "))]
    assert "from the cache" not in proc.stdout and "encode: " not in again.stdout
    assert read_output(str(tmp_path / "demo2")) == rows


@pytest.mark.slow
def test_queries_prefetched_by_the_corpus_encoders_change_nothing(ray_session, tmp_path):
    """Cold run: the document encoders encode the queries into the query cache after the corpus, so the query pass
    encodes none; the output equals a run without the query cache (queries encoded in the query pass)."""
    from streammine.api import demo_data_path
    base = {"input.path": demo_data_path(), "input.max_queries": 16, "run.progress": False, "index.shards": 2}
    pre = streammine.mine(overrides=dict(base, **{"output.path": str(tmp_path / "pre")}))
    plain = streammine.mine(overrides=dict(base, **{"output.path": str(tmp_path / "plain"),
                                                     "run.cache_queries": False}))
    stages = pre.summary["stages"]
    assert stages["prefetch_queries"]["rows"] >= 16            # every query read (max_queries stops the reader)
    assert stages["queries_cached"]["rows"] == 16 and stages["encode_queries"]["rows"] == 0
    # the miners looked the vectors up: the query pass ran no encoder stage
    assert pre.summary["query_vectors"] == "prefetched" and plain.summary["query_vectors"] == "encoder-actors"
    assert pre.summary["counts"]["queries_in"] == 16 == plain.summary["counts"]["queries_in"]
    assert "prefetch_queries" not in plain.summary["stages"]
    a, b = read_output(pre.output), read_output(plain.output)
    assert a.keys() == b.keys()
    for qid in a:
        assert a[qid]["negative_ids"] == b[qid]["negative_ids"]
        np.testing.assert_allclose(a[qid]["negative_scores"], b[qid]["negative_scores"], atol=1e-5)
    # Warm (the store is reused, nothing prefetched): the cold pass marked the cache complete for this input, so
    # the miners read it again.
    warm = streammine.mine(overrides=dict(base, **{"output.path": str(tmp_path / "pre"), "output.overwrite": True}))
    assert warm.summary["index"]["store_reused"] and warm.summary["query_vectors"] == "cache"
    assert warm.summary["stages"]["queries_cached"]["rows"] == 16 and warm.summary["counts"]["queries_encoded"] == 0
    assert read_output(warm.output) == a
    # Another query limit has no such mark, but its 12 queries are among the 16 cached: the miners look them up
    other = streammine.mine(overrides=dict(base, **{"output.path": str(tmp_path / "pre"), "output.overwrite": True,
                                                     "input.max_queries": 12}))
    assert other.summary["query_vectors"] == "cache" and other.summary["counts"]["queries_in"] == 12
    assert other.summary["counts"]["queries_encoded"] == 0


def test_local_ray_stops_its_autoscaler_monitor_first(tmp_path):
    """A local Ray started by streammine stops Ray's autoscaler monitor before Ray's own shutdown (which would
    otherwise wait out the monitor's grace period): the monitor process is gone, and Ray still shuts down."""
    script = """
import ray
from streammine.run.ray_runtime import _stop_local_autoscaler, ensure_ray
ensure_ray()
node = ray._private.worker._global_node
monitor = node.all_processes["monitor"][0].process
assert monitor.poll() is None
_stop_local_autoscaler()
assert monitor.poll() is not None, "monitor still running"
ray.shutdown()
print("ok")
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=str(tmp_path))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
