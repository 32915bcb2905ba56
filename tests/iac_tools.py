"""Locating the infrastructure-as-code checkers the k8s/ and terraform/ tests run.

checkov pins old boto3/botocore/packaging releases that conflict with the project's own (s3fs, ray), so it is
not a test extra: like pre-commit, it gets its own virtual environment, made once under .cache/ in the checkout
(or taken from $CHECKOV_BIN / PATH when a user already has it). kubectl (for `kubectl kustomize`) and terraform
are system tools; tests that need them skip with the reason when they are missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKOV_VERSION = "3.3.30"
CHECKOV_VENV = os.path.join(REPO, ".cache", f"checkov-{CHECKOV_VERSION}")


def checkov_bin() -> str:
    """Path of a checkov executable; builds the isolated venv on first use (a minute, from the package registry)."""
    explicit = os.environ.get("CHECKOV_BIN")
    if explicit:
        return explicit
    exe = os.path.join(CHECKOV_VENV, "bin", "checkov")
    if os.path.exists(exe):
        return exe
    on_path = shutil.which("checkov")
    if on_path:
        return on_path
    subprocess.run([sys.executable, "-m", "venv", CHECKOV_VENV], check=True)
    # quiet: pip prints a warning per package index location on some machines; the tail is kept for failures
    proc = subprocess.run([os.path.join(CHECKOV_VENV, "bin", "pip"), "install", "-q",
                           f"checkov=={CHECKOV_VERSION}"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"installing checkov into {CHECKOV_VENV} failed: {proc.stderr[-2000:]}")
    return exe


def run_checkov(directory: str, framework: str, extra: list[str] | None = None) -> dict:
    """Runs checkov on a directory and returns its JSON report (a dict, merged when checkov returns a list)."""
    import json
    cmd = [checkov_bin(), "-d", directory, "--framework", framework, "-o", "json", "--quiet", "--compact",
           "--skip-download"] + (extra or [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise RuntimeError(f"checkov failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    if isinstance(report, list):
        # one report per framework: concatenate the check lists, add up the summary counts
        merged = {"results": {"failed_checks": [], "passed_checks": []}, "summary": {}}
        for part in report:
            for key in ("failed_checks", "passed_checks"):
                merged["results"][key] += part.get("results", {}).get(key, [])
            for key, value in part.get("summary", {}).items():
                if isinstance(value, int):
                    merged["summary"][key] = merged["summary"].get(key, 0) + value
        return merged
    return report
