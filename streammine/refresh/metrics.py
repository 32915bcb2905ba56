"""Serve metrics through Ray's metrics API: scraped by Prometheus from every node's metrics agent.

Per model version (tag ``version``): refresh time, documents encoded and taken from the embedding cache, queries
mined, negatives, negatives per second; and the age of the model the negatives being committed were mined with.
The same figures are in ``serve_summary.json``.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger("streammine")


class Exporter:
    def __init__(self):
        try:
            from ray.util.metrics import Counter, Gauge
        except ImportError:  # pragma: no cover - ray without metrics support
            self.enabled = False
            return
        self.enabled = True
        tags = ("version",)
        self.refresh_seconds = Gauge("streammine_refresh_seconds", "time to re-encode the corpus and build shards",
                                     tag_keys=tags)
        self.docs_encoded = Counter("streammine_docs_encoded", "documents encoded by a refresh", tag_keys=tags)
        self.docs_cached = Counter("streammine_docs_cached", "documents taken from the embedding cache",
                                   tag_keys=tags)
        self.queries = Counter("streammine_queries_mined", "queries mined and committed", tag_keys=tags)
        self.negatives = Counter("streammine_negatives", "negatives committed", tag_keys=tags)
        self.rate = Gauge("streammine_negatives_per_second", "negatives per second of the last unit",
                          tag_keys=tags)
        self.age = Gauge("streammine_model_age_seconds",
                         "age of the model version the last committed negatives were mined with", tag_keys=tags)
        self.refresh_by_version: dict = {}

    def refreshed(self, version) -> None:
        if not self.enabled:
            return
        t = {"version": version.version.name}
        self.refresh_seconds.set(version.refresh_seconds, tags=t)
        self.refresh_by_version[t["version"]] = version.refresh_seconds
        if version.docs_encoded:
            self.docs_encoded.inc(version.docs_encoded, tags=t)
        if version.docs_cached:
            self.docs_cached.inc(version.docs_cached, tags=t)

    def committed(self, entry: dict, seconds: float) -> None:
        if not self.enabled:
            return
        t = {"version": entry["version"]}
        if entry["rows"]:
            self.queries.inc(entry["rows"], tags=t)
        if entry["negatives"]:
            self.negatives.inc(entry["negatives"], tags=t)
        self.rate.set(entry["negatives"] / max(seconds, 1e-9), tags=t)
        if t["version"] in self.refresh_by_version:
            # recorded again with every commit, like the other gauges: a gauge recorded once can be gone from
            # the node's Prometheus endpoint by the time it is scraped
            self.refresh_seconds.set(self.refresh_by_version[t["version"]], tags=t)
        if entry.get("version_created"):
            self.age.set(time.time() - float(entry["version_created"]), tags=t)
