"""``streammine report``: a readable HTML page and PNG figures about a mining output, computed by streaming.

``run_report(output_url, report_dir=None, sample=20, seed=0)`` (see :mod:`.build`). Importing this package is
cheap: matplotlib and the figures load only when a report is made.
"""
from __future__ import annotations


def run_report(output_url: str, report_dir=None, sample: int = 20, seed: int = 0, **kwargs) -> dict:
    from .build import run_report as _run
    return _run(output_url, report_dir=report_dir, sample=sample, seed=seed, **kwargs)


__all__ = ["run_report"]
