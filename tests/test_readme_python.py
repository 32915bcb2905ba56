"""The README's Python flow (the block after ``<!-- readme-python-flow -->``) runs as written, in a fresh process
with the core install: it mines the packaged slice, reads the exported triplets and makes one training step. So
the README cannot drift from the API.

Slow by nature (~70 s on this 2-core machine: a private Ray, the model loaded in the encoder actors and again for the
training step, 300 documents encoded): it is the product's whole Python path, end to end, once."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- readme-python-flow -->"


def readme_python_flow() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert text.count(MARKER) == 1, f"README.md must hold {MARKER} exactly once"
    m = re.match(r"\s*```python\n(.*?)\n```", text.split(MARKER, 1)[1], re.S)
    assert m, f"no ```python block right after {MARKER}"
    return m.group(1)


@pytest.mark.slow
def test_readme_python_flow_runs(tmp_path):
    code = readme_python_flow()
    assert "streammine.demo_data_path()" in code and "MultipleNegativesRankingLoss" in code
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               STREAMMINE_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)  # the README's run starts its own private Ray
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    m = re.search(r"^(\d+) queries mined into (.+)$", out, re.M)
    assert m and int(m.group(1)) > 0, out
    assert os.path.realpath(os.path.join(tmp_path, m.group(2))) == os.path.realpath(tmp_path / "negatives")
    assert os.path.exists(tmp_path / "negatives" / "export" / "st-triplet.parquet")
    loss = re.search(r"^one training step: loss (\d+\.\d+)$", out, re.M)
    assert loss and float(loss.group(1)) > 0, out
