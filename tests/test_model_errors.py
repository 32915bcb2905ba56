"""A model that cannot be loaded is the user's mistake: one InputError naming the model and why, raised in the
caller's process within seconds and before Ray starts (Python API, both model keys), and one line with exit 2 from
the CLI. Each case runs in a fresh process, so "Ray was not started" is the process's own state, not the test
session's Ray."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys, time
import ray, streammine
from streammine.api import demo_data_path
results = []
for key, model in json.loads(sys.argv[1]):
    t = time.time()
    try:
        streammine.mine(input__path=demo_data_path(), output__path=sys.argv[2], run__progress=False,
                        **({key: model, "mining__cross_encoder__threshold": 0.1} if "cross" in key
                           else {key: model}))
        results.append({"error": None})
    except Exception as e:
        results.append({"type": type(e).__name__, "is_input_error": isinstance(e, streammine.InputError),
                        "error": str(e), "seconds": time.time() - t, "ray": ray.is_initialized()})
print(json.dumps(results))
"""


def _env(**extra):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's streammine
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **extra)


@pytest.fixture
def not_a_model(tmp_path):
    d = tmp_path / "not-a-model"
    d.mkdir()
    (d / "README.md").write_text("weights elsewhere\n")
    return str(d)


def test_unloadable_models_raise_input_error_before_ray(tmp_path, not_a_model):
    missing = str(tmp_path / "no-such-model")
    cases = [("encoder__model", "sentence-transformers/not-cached-here"),
             ("encoder__model", missing),
             ("encoder__model", not_a_model),
             ("mining__cross_encoder__model", "cross-encoder/not-cached-here"),
             ("mining__cross_encoder__model", not_a_model)]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cases), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = [("sentence-transformers/not-cached-here", "not a local directory and the hub is offline "
                                                          "(HF_HUB_OFFLINE=1)"),
                (missing, "model directory not found"),
                (not_a_model, "not a sentence-transformers model directory"),
                ("cross-encoder/not-cached-here", "not a local directory and the hub is offline"),
                (not_a_model, "not a sentence-transformers model directory")]
    for (key, _), (model, reason), r in zip(cases, expected, results):
        assert r["error"] is not None, f"{key}={model} did not raise"
        assert r["is_input_error"], r
        assert r["error"].startswith(f"{model}: {reason}"), r["error"]
        assert key.replace("__", ".") in r["error"], r["error"]  # names the config key too
        assert r["ray"] is False, f"Ray was started before {model} was refused"
        assert r["seconds"] < 10, r
    assert not os.path.exists(tmp_path / "out")


def test_cli_unloadable_model_is_one_line_exit_2(tmp_path):
    from streammine.api import demo_data_path
    proc = subprocess.run([sys.executable, "-m", "streammine.cli", "mine", "--input", demo_data_path(),
                           "--output", str(tmp_path / "out"), "--model", "sentence-transformers/not-cached-here"],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == ["streammine: error: sentence-transformers/not-cached-here: not a local directory and the hub "
                     "is offline (HF_HUB_OFFLINE=1), and the hub cache does not hold it (encoder.model); pass a "
                     "model directory"], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
