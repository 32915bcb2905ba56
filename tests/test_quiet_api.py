"""A quiet Python API (issue 30, item 3): ``streammine.mine`` and ``compat.mine_hard_negatives`` print only
streammine's own lines with their output going to a file, Ray's logs only when asked; ``streammine.shutdown``;
progress ETAs counted from the first batch; ``console.api_call`` restores what it changes.

Two end-to-end runs, each a fresh process with a private Ray (tests/quiet_api_script.py: ~1 min each here), and
fast in-process checks of the pieces.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import warnings

import pytest

from streammine import StreamMineWarning, console

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "quiet_api_script.py")
OWN_LINE = re.compile(r"^(encode|mine): |^streammine: ")          # streammine's progress and summary lines
RAY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+\s+(INFO|WARNING)|\(MapWorker|core_worker\.cc")


# ---- the pieces ----------------------------------------------------------------------------------------------

def test_eta_is_counted_from_the_first_batch_not_from_the_start():
    # 30 s of model loading, then 100 documents in 10 s: 10 documents/s, so 168 left take 16.8 s
    first = (30.0, 32)
    assert console.throughput(None, 0, 29.0, 0.0) is None
    assert console.throughput(first, 32, 30.0, 0.0) is None           # one look at a batch is no rate yet
    rate = console.throughput(first, 132, 40.0, 0.0)
    assert rate == pytest.approx(10.0)
    text = console.progress_text("encode", 132, 300, 40.0, "documents", rate)
    assert text == "encode: 132/300 documents, 10.0 documents/s, ETA 17s"
    assert "ETA" not in console.progress_text("encode", 0, 300, 29.0, "documents", None)
    assert "ETA" not in console.progress_text("encode", 32, 300, 30.0, "documents", None)
    final = console.progress_text("encode", 300, 300, 65.0, "documents", rate, final=True)
    assert final == "encode: 300/300 documents, 10.0 documents/s, 1m05s"


class _Pipe(io.StringIO):
    def isatty(self):
        return False


def test_a_quiet_call_writes_one_final_line_per_phase_to_a_file():
    counts = iter(range(0, 10_000, 7))
    with console.api_call(False):
        p = console.Progress("mine", lambda: next(counts), 40, "queries", stream=_Pipe())
        time.sleep(1.3)   # several polls
        p.close()
    lines = p.stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mine: ") and "ETA" not in lines[0]
    with console.api_call(True):   # verbose: a line every interval
        p = console.Progress("mine", lambda: next(counts), 40, "queries", stream=_Pipe(), interval=0.5)
        time.sleep(1.3)
        p.close()
    assert len(p.stream.getvalue().splitlines()) >= 3


def test_api_call_is_quiet_and_restores_the_process_state(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setattr(console, "_private_ray", {"quiet": False, "levels": {}})   # no private Ray of ours up
    for k in console.QUIET_ENV:
        monkeypatch.delenv(k, raising=False)
    logging.getLogger("ray.data").setLevel(logging.INFO)
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with console.api_call(False):
            assert console.quiet() and console.show_progress() and console.show_summary()
            assert os.environ["RAY_BACKEND_LOG_LEVEL"] == "fatal"
            assert logging.getLogger("ray").level == logging.ERROR
            console.silence_ray_loggers()
            assert logging.getLogger("ray.data").level == logging.ERROR
            with console.api_call(True):   # nested (compat calling mine): the outer call decides
                assert console.quiet()
            warnings.warn("a library's chatter", UserWarning)
            warnings.warn("act on this", StreamMineWarning)
        assert [str(w.message) for w in seen] == ["act on this"]
    assert "RAY_BACKEND_LOG_LEVEL" not in os.environ and "TQDM_DISABLE" not in os.environ
    assert logging.getLogger("ray.data").level == logging.INFO
    assert list(warnings.filters) == filters_before
    assert not console.configured() and console._state["owner"] is None
    monkeypatch.setenv(console.VERBOSE_ENV, "1")
    with console.api_call(False):
        assert not console.quiet()   # STREAMMINE_VERBOSE=1 wins over verbose=False
    with console.api_call(False, progress=False):
        assert console.quiet() is False and not console.show_progress()


def test_rays_loggers_stay_quiet_while_the_private_ray_a_quiet_call_started_runs(monkeypatch):
    """A dataset from ``committed_dataset`` runs after the call returned: Ray's loggers stay quiet until
    ``streammine.shutdown()`` stops that Ray; the other loggers are restored at once."""
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setattr(console, "_private_ray", {"quiet": False, "levels": {}})
    logging.getLogger("ray.data").setLevel(logging.INFO)
    logging.getLogger("transformers").setLevel(logging.WARNING)
    with console.api_call(False):
        console.private_ray_started(console.quiet())   # what ensure_ray does when it starts one
    assert logging.getLogger("ray.data").level == logging.ERROR
    assert logging.getLogger("transformers").level == logging.WARNING
    with console.api_call(False):   # a second quiet call on the same Ray: the first levels are the ones kept
        pass
    console.private_ray_stopped()   # what streammine.shutdown() does
    assert logging.getLogger("ray.data").level == logging.INFO


def test_run_finished_prints_one_line_and_warns_about_rows_set_aside(capsys):
    summary = {"counts": {"queries_out": 38, "queries_in": 40, "negatives": 190, "queries_short_of_negatives": 1,
                          "quarantined_total": 2}, "seconds": {"total": 12.34}}
    with pytest.warns(StreamMineWarning, match=r"2 input rows were set aside.*/out/_quarantine"):
        with console.api_call(False):
            console.run_finished("/tmp/x/out", summary)
    assert capsys.readouterr().out == ("streammine: 38 queries mined of 40 read, 190 negatives, 1 queries short of "
                                       "negatives, 2 rows quarantined in 12.3 s -> /tmp/x/out\n")
    with console.api_call(False, summary=False):   # compat: its own lines instead
        console.run_finished("/tmp/x/out", dict(summary, counts=dict(summary["counts"], quarantined_total=0)))
    assert capsys.readouterr().out == ""


# ---- end to end: a user's script with its output going to a file -----------------------------------------------

@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One embedding cache (and compat cache_folder) for both runs: the second one encodes nothing again."""
    return str(tmp_path_factory.mktemp("quiet-cache"))


def _run_script(tmp_path, shared_cache, verbose: bool):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "STREAMMINE_", "TQDM", "AWS_")) and k not in console.QUIET_ENV}
    env.update(PYTHONPATH=ROOT, HF_HUB_OFFLINE="1", STREAMMINE_CACHE=shared_cache)
    log = tmp_path / "output.txt"
    with open(log, "wb") as f:
        proc = subprocess.run([sys.executable, SCRIPT, "1" if verbose else "0", str(tmp_path),
                               os.path.join(shared_cache, "compat")], stdout=f,
                              stderr=subprocess.STDOUT, env=env, timeout=600)
    text = log.read_bytes()
    assert proc.returncode == 0, text.decode(errors="replace")[-3000:]
    info = json.loads((tmp_path / "sizes.json").read_text())
    s = info["sizes"]
    parts = {"mine": text[s["start"]:s["after_mine"]], "compat": text[s["after_mine"]:s["after_compat"]],
             "consume": text[s["after_compat"]:s["after_consume"]], "after": text[s["after_consume"]:]}
    return text.decode(errors="replace"), {k: v.decode(errors="replace") for k, v in parts.items()}, info


def _slice_queries() -> int:
    from streammine import demo_data_path
    with open(os.path.join(demo_data_path(), "qrels", "train.tsv")) as f:
        return len({line.split("\t")[0] for line in list(f)[1:]})


def test_a_script_calling_mine_then_compat_prints_at_most_three_lines(tmp_path, shared_cache):
    text, parts, info = _run_script(tmp_path, shared_cache, verbose=False)
    lines = text.splitlines()
    assert len(lines) <= 3, text
    assert all(OWN_LINE.match(line) for line in lines), text
    assert re.search(rf"^streammine: {_slice_queries()} queries mined of", parts["mine"], re.M), text
    assert parts["compat"] == "" and parts["after"] == "", text     # compat(verbose=False): nothing at all
    assert parts["consume"] == "", text
    assert info["mined_queries"] == info["consumed"] == _slice_queries() and info["compat_rows"] > 0
    assert info["shutdown"] is True and info["ray_after_shutdown"] is False and info["shutdown_again"] is False


def test_verbose_shows_streammine_progress_and_rays_logs(tmp_path, shared_cache):
    text, parts, info = _run_script(tmp_path, shared_cache, verbose=True)
    assert re.search(r"^mine: \d+/\d+ queries, ", parts["mine"], re.M), text
    assert re.search(rf"^streammine: {_slice_queries()} queries mined of", parts["mine"], re.M), text
    if info["executor"] == "ray":  # a small run executes in-process (run/in_process.py): no Ray to hear from
        assert RAY_LOG_LINE.search(parts["mine"]) or "Started a local Ray" in parts["mine"], text
    # compat's verbose is the peer's: streammine's progress and compat's summary, not Ray's logs
    assert re.search(r"^mine: \d+/\d+ queries, ", parts["compat"], re.M), text
    assert not any(RAY_LOG_LINE.search(line) for line in parts["compat"].splitlines()), parts["compat"]
    assert info["shutdown"] is True
