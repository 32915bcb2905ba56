"""jobs/serve.py, jobs/refresh.py and jobs/serve.yaml: the entrypoints `ray job submit` and the k8s/ RayJobs run.

Fast: no Ray, no model. The scripts run as a job runs them (`python jobs/...`, in a subprocess); jobs/serve.py's
supervisor (--restarts) is exercised with small stand-in commands.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVE = os.path.join(REPO, "jobs", "serve.py")
REFRESH = os.path.join(REPO, "jobs", "refresh.py")
SERVE_YAML = os.path.join(REPO, "jobs", "serve.yaml")
TRAINER_YAML = os.path.join(REPO, "jobs", "online_trainer.yaml")


def run_job(*args, timeout=120):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def serve_module():
    spec = importlib.util.spec_from_file_location("jobs_serve", SERVE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the scripts parse ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("script,flags", [(SERVE, ["--restarts", "--config", "--checkpoints", "--set"]),
                                          (REFRESH, ["--model", "--stop", "--name"])])
def test_help_exits_0(script, flags):
    """jobs/serve.py shows its own flags (the supervisor's) and those of `streammine serve`."""
    proc = run_job(script, "--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ["--output", *flags]:
        assert flag in proc.stdout


# ---- jobs/refresh.py --------------------------------------------------------------------------------------------

def serve_run(path) -> str:
    """A folder as `streammine serve` leaves it once started (its commit log exists): refresh and stop refuse
    anything else."""
    os.makedirs(os.path.join(path, "_log"), exist_ok=True)
    return str(path)


def test_refresh_writes_the_request_serve_reads(tmp_path):
    from streammine.refresh.watch import CONTROL_DIR, FORCE_FILE, VersionSource

    run = serve_run(tmp_path / "run")
    model = str(tmp_path / "checkpoints" / "my-model")
    os.makedirs(model)
    before = time.time()
    proc = run_job(REFRESH, "--output", run, "--model", model, "--name", "v7")
    assert proc.returncode == 0, proc.stderr
    path = os.path.join(run, CONTROL_DIR, FORCE_FILE)
    with open(path) as f:
        request = yaml.safe_load(f)  # JSON
    assert request["model"] == model and request["name"] == "v7" and request["requested_at"] >= before - 1
    # what a running serve of that run makes of it (streammine.refresh.watch)
    forced = VersionSource(run, checkpoints=None, initial_model=None).forced()
    assert forced.url == model and forced.name == "v7"
    assert VersionSource(run, checkpoints=None, initial_model=None).latest() == forced


def test_refresh_names_the_version_when_no_name_is_given(tmp_path):
    from streammine.refresh.watch import VersionSource

    model = str(tmp_path / "models" / "x" / "step-000000100")
    os.makedirs(model)
    run = serve_run(tmp_path / "run")
    proc = run_job(REFRESH, "--output", run, "--model", model)
    assert proc.returncode == 0, proc.stderr
    forced = VersionSource(run, None, None).forced()
    assert forced.url == model and forced.name.startswith("manual-")


def test_refresh_stop_asks_serve_to_stop(tmp_path):
    from streammine.refresh.watch import stop_requested

    before = time.time() - 1
    serve_run(tmp_path)
    proc = run_job(REFRESH, "--output", str(tmp_path), "--stop")
    assert proc.returncode == 0, proc.stderr
    assert stop_requested(str(tmp_path), since=before)
    assert not os.path.exists(os.path.join(tmp_path, "_control", "refresh.json"))


@pytest.mark.parametrize("args", [[], ["--model", "m", "--stop"], ["--stop", "--name", "v1"]])
def test_refresh_refuses_ambiguous_requests(tmp_path, args):
    proc = run_job(REFRESH, "--output", str(tmp_path), *args)
    assert proc.returncode == 2
    assert not os.path.exists(os.path.join(tmp_path, "_control"))


# ---- jobs/serve.yaml ----------------------------------------------------------------------------------------------

def test_serve_yaml_loads_once_input_and_output_are_given(tmp_path):
    from streammine.api import load_config
    from streammine.errors import ConfigError

    with pytest.raises(ConfigError, match="input.path"):
        load_config(SERVE_YAML)  # the input is the job's to give
    cfg = load_config(SERVE_YAML, {"input.path": str(tmp_path / "beir"), "output.path": str(tmp_path / "run")})
    assert cfg.output.path == str(tmp_path / "run") and cfg.input.format == "beir"
    assert cfg.serve.checkpoints and cfg.serve.max_versions == 0 and cfg.serve.poll_seconds > 0
    with open(SERVE_YAML) as f:
        written = yaml.safe_load(f)
    # every key of the serve section is written out (the file documents them)
    assert set(written["serve"]) == set(cfg.to_dict()["serve"])


def test_serve_yaml_and_the_trainer_yaml_make_a_loop():
    """Their local defaults meet: the trainer follows serve's run and publishes where serve looks."""
    if not os.path.exists(TRAINER_YAML):
        pytest.skip("jobs/online_trainer.yaml is not in this checkout")
    with open(SERVE_YAML) as f:
        serve = yaml.safe_load(f)
    with open(TRAINER_YAML) as f:
        trainer = yaml.safe_load(f)
    assert trainer["feed"] == serve["output"]["path"]
    assert trainer["checkpoints"] == serve["serve"]["checkpoints"]


# ---- jobs/serve.py: running serve, and restarting it --------------------------------------------------------------

@pytest.mark.parametrize("restarts", ["0", "3"])
def test_a_config_error_is_not_retried(tmp_path, restarts):
    """No --input: `streammine serve` exits 2 (a config error); the supervisor does not restart it."""
    t0 = time.monotonic()
    proc = run_job(SERVE, "--restarts", restarts, "--restart-delay", "30", "--config", SERVE_YAML,
                   "--output", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    assert "input.path is required" in proc.stderr
    assert "restart" not in proc.stderr and time.monotonic() - t0 < 30


def _counting_child(tmp_path, code: str) -> list:
    """A command that appends a line to a file each time it runs, then runs `code` (with `n`: the run number)."""
    count = tmp_path / "runs"
    script = (f"import os, signal, sys, time\nwith open({str(count)!r}, 'a') as f: f.write('x')\n"
              f"n = len(open({str(count)!r}).read())\n{code}\n")
    return [sys.executable, "-c", script], count


@pytest.mark.parametrize("code,expected", [("sys.exit(0)", 0), ("sys.exit(2)", 2)])
def test_supervisor_does_not_restart_a_clean_exit_or_a_config_error(tmp_path, code, expected):
    cmd, count = _counting_child(tmp_path, code)
    assert serve_module().supervise(cmd, restarts=3, delay=0.01) == expected
    assert count.read_text() == "x"


def test_supervisor_restarts_a_failure_up_to_the_limit(tmp_path):
    cmd, count = _counting_child(tmp_path, "sys.exit(1)")
    assert serve_module().supervise(cmd, restarts=2, delay=0.01) == 1
    assert count.read_text() == "xxx"  # the first run and 2 restarts


def test_supervisor_restarts_a_killed_child_and_stops_once_it_succeeds(tmp_path):
    cmd, count = _counting_child(tmp_path, "os.kill(os.getpid(), signal.SIGKILL) if n < 3 else sys.exit(0)")
    assert serve_module().supervise(cmd, restarts=5, delay=0.01) == 0
    assert count.read_text() == "xxx"


def test_supervisor_counts_consecutive_failures_only(tmp_path):
    """A child that ran for healthy_seconds before failing starts the count again."""
    cmd, count = _counting_child(tmp_path, "time.sleep(0.5); sys.exit(1 if n < 4 else 0)")
    assert serve_module().supervise(cmd, restarts=1, delay=0.01, healthy_seconds=0.3) == 0
    assert count.read_text() == "xxxx"


def test_supervisor_gives_up_after_fast_consecutive_failures(tmp_path):
    cmd, count = _counting_child(tmp_path, "sys.exit(1 if n < 4 else 0)")
    assert serve_module().supervise(cmd, restarts=1, delay=0.01, healthy_seconds=60) == 1
    assert count.read_text() == "xx"


def test_sigterm_stops_the_child_and_is_not_followed_by_a_restart(tmp_path):
    """`ray job stop` signals the supervisor (and its child): the child is stopped, not restarted, even if it exits
    with an error on the way out."""
    marker = tmp_path / "runs"
    child = (f"import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(1))\n"
             f"open({str(marker)!r}, 'a').write('x')\ntime.sleep(60)\n")
    driver = (f"import importlib.util, sys\nspec = importlib.util.spec_from_file_location('s', {SERVE!r})\n"
              f"m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
              f"sys.exit(m.supervise([sys.executable, '-c', {child!r}], restarts=5, delay=0.01))\n")
    proc = subprocess.Popen([sys.executable, "-c", driver])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the child never started"
        proc.send_signal(signal.SIGTERM)  # to the supervisor only: it forwards it
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.2)
    assert marker.read_text() == "x"
