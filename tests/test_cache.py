"""The cache tells one true story: a run whose every document the cache holds starts no encoder and reports no
encoder time, its vectors equal the model's own; `cache prune` removes the oldest first down to a size, lists
without removing on a dry run, and never touches what is not streammine's; `cache ls` shows sizes.

The runs use the real MiniLM model on 40 documents of the packaged slice and the session's Ray; the prune tests
use a hand-built cache folder (no Ray)."""
from __future__ import annotations

import itertools
import os
import shutil
import time

import numpy as np
import pytest

from serve_helpers import tiny_scifact
from streammine import cache
from streammine.encode.base import default_model_path
from streammine.errors import ConfigError

KEY = "0123456789abcdef"


def _run_cli(argv, capfd):
    from test_first_contact import _run_cli as run  # restores the process-wide state the CLI's quiet mode sets
    return run(argv, capfd)


# ---- prune: the choice (pure) ------------------------------------------------------------------------------

def _fake_entries(rng, n):
    return [{"kind": "embeddings" if i % 2 else "query_vectors", "key": f"{i:016x}",
             "bytes": int(rng.integers(1, 1000)), "modified": float(rng.integers(0, 10 ** 6))} for i in range(n)]


def test_choose_prune_meets_each_limit_oldest_first_and_no_more():
    """Against properties checked on every subset-free reference: after a prune by size the rest fits the limit,
    every entry removed for size is older than every entry kept, and keeping the newest of them would break the
    limit (nothing removed that need not be); by age exactly the entries older than the limit go."""
    rng = np.random.default_rng(3)
    now = 2.0 * 10 ** 6
    for trial in range(200):
        entries = _fake_entries(rng, int(rng.integers(0, 12)))
        older = [None, float(rng.integers(0, 2 * 10 ** 6))][trial % 2]
        limit = [None, float(rng.integers(0, 6000))][(trial // 2) % 2]
        chosen = cache.choose_prune(entries, now, older, limit)
        keys = [e["key"] for e in chosen]
        assert len(keys) == len(set(keys))
        kept = [e for e in entries if e["key"] not in keys]
        if older is None and limit is None:
            assert len(chosen) == len(entries)
            continue
        by_age = {e["key"] for e in entries if older is not None and now - e["modified"] > older}
        assert by_age <= set(keys)
        for_size = [e for e in chosen if e["key"] not in by_age]
        if limit is None:
            assert not for_size
            continue
        assert sum(e["bytes"] for e in kept) <= limit
        assert all(s["modified"] <= k["modified"] for s, k in itertools.product(for_size, kept))
        if for_size:
            newest = max(for_size, key=lambda e: e["modified"])
            assert sum(e["bytes"] for e in kept) + newest["bytes"] > limit
    # the order: oldest first
    entries = _fake_entries(rng, 8)
    assert [e["modified"] for e in cache.choose_prune(entries, now)] == sorted(e["modified"] for e in entries)


def test_sizes_and_ages_read_or_fail_in_one_line():
    assert cache.parse_size("1048576") == 2 ** 20
    assert cache.parse_size("10GiB") == 10 * 2 ** 30 == cache.parse_size("10G") == cache.parse_size("10 gib")
    assert cache.parse_size("500MB") == 500 * 10 ** 6 and cache.parse_size("1.5K") == 1536
    assert cache.parse_age("12h") == 12 * 3600 and cache.parse_age("2") == 2 * 86400
    for bad in ("", "ten", "10X", "-5G", "5GB/s"):
        with pytest.raises(ConfigError, match="--max-size"):
            cache.parse_size(bad)
    with pytest.raises(ConfigError, match="--older-than"):
        cache.parse_age("soon")


def test_corpus_line_says_what_came_from_where():
    assert cache.corpus_line(300, 0, 300, 0.4) == "300 documents, all from the cache; none encoded (store ready in 0.4 s)"
    assert cache.corpus_line(300, 300, 0, 36.0) == "300 documents, all encoded in 36.0 s"
    assert cache.corpus_line(43, 4, 39, 3.0) == "43 documents: 39 from the cache, 4 encoded in 3.0 s"
    assert "others" not in cache.corpus_line(300, 300, 0, 1.0)


# ---- prune and ls on a real folder -----------------------------------------------------------------------

def _entry(root, kind, key, size, age_s, now):
    d = os.path.join(root, kind, key)
    os.makedirs(os.path.join(d, "bucket=00"), exist_ok=True)
    path = os.path.join(d, "bucket=00", "part.parquet")
    with open(path, "wb") as f:
        f.write(b"x" * size)
    os.utime(path, (now - age_s, now - age_s))
    return d


def _tree(root):
    return sorted(os.path.relpath(os.path.join(r, f), root) for r, _, files in os.walk(root) for f in files)


@pytest.fixture
def fake_cache(tmp_path):
    """Four entries of 1, 2, 3, 4 KiB, modified 40, 30, 20, 10 days ago; beside them, in the cache's folders,
    a folder that is not streammine's and a link to a folder outside the cache, and a file outside."""
    root = str(tmp_path / "cache")
    now = time.time()
    keys = [f"{k:016x}" for k in (0xa1, 0xb2, 0xc3, 0xd4)]
    for i, key in enumerate(keys):
        _entry(root, "embeddings" if i % 2 == 0 else "query_vectors", key, 1024 * (i + 1), (40 - 10 * i) * 86400,
               now)
    os.makedirs(os.path.join(root, "embeddings", "my-notes"))
    open(os.path.join(root, "embeddings", "my-notes", "keep.txt"), "w").write("mine")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not the cache's")
    os.utime(outside / "precious.txt", (now - 99 * 86400, now - 99 * 86400))
    os.symlink(str(outside), os.path.join(root, "embeddings", "ffffffffffffffff"))
    return {"root": root, "keys": keys, "outside": str(outside)}


def test_cache_ls_shows_each_size_and_the_total(fake_cache, capfd):
    rc, out, err = _run_cli(["cache", "ls", "--cache-dir", fake_cache["root"]], capfd)
    assert rc == 0 and err == ""
    for i, key in enumerate(fake_cache["keys"]):
        line = next(x for x in out.splitlines() if f"/{key}" in x)
        assert line.split()[:2] == [f"{float(i + 1):.1f}", "KiB"], line
    assert "my-notes" not in out
    total = out.strip().splitlines()[-1]
    assert "total in" in total and "(5 entries)" in total  # the link is an entry (prune removes the link only)


def test_prune_dry_run_lists_and_removes_nothing(fake_cache, capfd):
    before = _tree(fake_cache["root"])
    rc, out, _ = _run_cli(["cache", "prune", "--max-size", "7KiB", "--dry-run", "--cache-dir", fake_cache["root"]],
                          capfd)
    assert rc == 0
    # the oldest go first: the link's (99 days), then 40 and 30 days old, until 3 + 4 KiB are left
    listed = [x.split()[-1] for x in out.splitlines() if x.startswith("would remove ") and "/" in x.split()[-1]]
    assert listed == ["embeddings/ffffffffffffffff"] + [f"{k}/{key}" for k, key in
                                                        zip(("embeddings", "query_vectors"), fake_cache["keys"][:2])]
    assert "nothing removed" in out
    assert _tree(fake_cache["root"]) == before


def test_prune_removes_the_oldest_down_to_the_size_and_only_the_caches_own(fake_cache, capfd):
    root = fake_cache["root"]
    rc, out, _ = _run_cli(["cache", "prune", "--max-size", "7KiB", "--cache-dir", root], capfd)
    assert rc == 0 and "removed 3 entries" in out
    left = {e["key"] for e in cache.entries(root)}
    assert left == set(fake_cache["keys"][2:])
    assert sum(e["bytes"] for e in cache.entries(root)) <= 7 * 1024
    assert os.path.exists(os.path.join(root, "embeddings", "my-notes", "keep.txt"))  # not streammine's
    assert open(os.path.join(fake_cache["outside"], "precious.txt")).read() == "not the cache's"  # link not followed
    rc, out, _ = _run_cli(["cache", "prune", "--older-than", "15d", "--cache-dir", root], capfd)
    assert rc == 0 and {e["key"] for e in cache.entries(root)} == {fake_cache["keys"][3]}


def test_prune_mistakes_are_one_line(fake_cache, capfd, tmp_path):
    for argv, reason in ((["--max-size", "lots"], "--max-size: cannot read 'lots'"),
                         (["--older-than", "soon"], "--older-than: cannot read 'soon'")):
        rc, out, err = _run_cli(["cache", "prune", *argv, "--cache-dir", fake_cache["root"]], capfd)
        assert rc == 2 and err.strip() == f"streammine: error: {reason} " \
            f"({'e.g. 10GiB, 500MB, 2G' if 'size' in reason else 'e.g. 30d, 12h, 45m'})", err
    (tmp_path / "a-file").write_text("x")
    rc, _, err = _run_cli(["cache", "prune", "--cache-dir", str(tmp_path / "a-file")], capfd)
    assert rc == 2 and err.count("\n") == 1 and "not a directory" in err
    rc, _, err = _run_cli(["cache", "ls", "--dry-run", "--cache-dir", fake_cache["root"]], capfd)
    assert rc == 2 and "go with `cache prune`" in err
    assert len(cache.entries(fake_cache["root"])) == 5


# ---- a run whose every document is cached ------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    """The model, loaded once in this process: the reference encoder, and compat's model object."""
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(default_model_path(), device="cpu")


def _encoder_actors_started() -> int:
    """Encoder actors (document or query stages) this Ray has started, alive or not."""
    from ray._private import state
    return sum(1 for a in state.actors().values()
               if "EncodeDocuments" in a["ActorClassName"] or "EncodeQueries" in a["ActorClassName"])


@pytest.mark.slow
def test_a_fully_cached_run_starts_no_encoder_and_says_so(ray_session, minilm, tmp_path, capsys):
    """The same corpus under another path (a new store key): every document comes from the first run's store.
    No encoder actor starts, the stage metrics hold no encoder time, the summary and its line say so, and the
    copied vectors are the model's own (encoded here, in the test, as the reference)."""
    import pyarrow.parquet as pq
    from streammine.api import load_config
    from streammine.cli import print_summary
    from streammine.index.store import read_manifest
    from streammine.run.mine import mine
    from streammine.vectors import from_arrow
    first = tiny_scifact(str(tmp_path / "a"), n_docs=40)
    shutil.copytree(first["path"], str(tmp_path / "b"))
    common = {"run.cache_dir": str(tmp_path / "cache"), "index.shards": 1, "run.progress": False,
              "mining.sampler.num_negatives": 3, "encoder.num_actors": 1}
    cold = mine(load_config(None, dict(common, **{"input.path": first["path"], "output.path": str(tmp_path / "o1")})))
    assert cold.summary["counts"]["documents_encoded"] == 40 and cold.summary["counts"]["documents_from_cache"] == 0
    started = _encoder_actors_started()
    assert started >= 1
    warm = mine(load_config(None, dict(common, **{"input.path": str(tmp_path / "b"),
                                                  "output.path": str(tmp_path / "o2")})))
    s = warm.summary
    assert not s["index"]["store_reused"]  # another store key: the cached-documents path, not a reused store
    assert s["counts"]["documents_encoded"] == 0 and s["counts"]["documents_from_cache"] == 40
    assert _encoder_actors_started() == started, "an encoder actor was started for a fully cached corpus"
    assert s["stages"].get("encode_corpus", {}).get("busy_seconds", 0.0) == 0.0
    assert "encode_corpus" not in s["stages"] and s["stages"]["corpus_cached"]["rows"] == 40
    assert s["query_vectors"] == "cache" and s["counts"]["queries_encoded"] == 0
    assert s["seconds"]["corpus_encode_seconds"] < cold.summary["seconds"]["corpus_encode_seconds"]
    print_summary(warm)
    out = capsys.readouterr().out
    corpus_lines = [x for x in out.splitlines() if x.startswith("corpus:")]
    assert corpus_lines == [f"corpus:   40 documents, all from the cache; none encoded (store ready in "
                            f"{s['seconds']['corpus_encode_seconds']:.1f} s)"]
    # the copied vectors against the model itself, and the new store names the new files
    store = os.path.join(str(tmp_path / "cache"), "embeddings", s["model_version"])
    manifest = read_manifest(store)
    got, where = {}, set()
    for f in manifest["files"]:
        t = pq.read_table(os.path.join(store, f))
        got.update(zip(t.column("doc_id").to_pylist(), from_arrow(t.column("vector"))))
        where.update(x.rsplit(":", 1)[0] for x in t.column("location").to_pylist())
    assert where == {str(tmp_path / "b" / "corpus.jsonl")}
    ids = sorted(first["docs"])
    reference = minilm.encode([first["docs"][d] for d in ids], normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(np.stack([got[d] for d in ids]), reference, atol=1e-4)


@pytest.mark.slow
def test_a_second_compat_call_on_the_same_texts_and_model_object_encodes_nothing(ray_session, minilm, tmp_path):
    """compat without cache_folder: the second call with the same model object and texts reuses the first call's
    embedding store (no encoder actor starts, no document or query encoded) and returns the same rows."""
    import json
    pytest.importorskip("datasets")
    from datasets import Dataset
    from streammine.compat import mine_hard_negatives
    data = tiny_scifact(str(tmp_path / "data"), n_docs=40)
    qids = sorted(data["qrels"])[:8]
    dataset = Dataset.from_dict({"query": [data["queries"][q] for q in qids],
                                 "answer": [data["docs"][data["qrels"][q][0]] for q in qids]})
    model = minilm
    kw = dict(corpus=list(data["docs"].values()), num_negatives=2, verbose=False,
              overrides={"encoder.num_actors": 1})
    first = mine_hard_negatives(dataset, model, output_path=str(tmp_path / "o1"), **kw)
    started = _encoder_actors_started()
    second = mine_hard_negatives(dataset, model, output_path=str(tmp_path / "o2"), **kw)
    one, two = (json.load(open(tmp_path / o / "summary.json")) for o in ("o1", "o2"))
    assert one["counts"]["documents_encoded"] == 40
    assert two["index"]["store_reused"] and two["counts"]["documents_encoded"] == 0
    assert two["counts"]["queries_encoded"] == 0 and two["query_vectors"] == "cache"
    assert _encoder_actors_started() == started
    assert second.to_dict() == first.to_dict()
