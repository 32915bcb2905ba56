"""Index shards as Ray actors, and the fan-out that queries all of them at once."""
from __future__ import annotations

import time

import numpy as np
import ray
from ray.exceptions import ActorUnavailableError

from ..config import IndexConfig
from ..errors import StreamMineError
from ..vectors import from_arrow
from .store import buckets_of_shard, file_offsets, read_buckets


def _shard_docs_from_store(store_url: str, manifest: dict, shard_id: int, n_shards: int):
    from .shard import ShardDocs
    offsets = file_offsets(manifest)
    for table in read_buckets(store_url, buckets_of_shard(shard_id, n_shards), manifest):
        file_idx = table.column("file_idx").to_numpy()
        rows = table.column("row").to_numpy().astype(np.int64)
        ordinals = np.fromiter((offsets[int(f)] for f in file_idx), np.int64, len(file_idx)) + rows
        yield ShardDocs(doc_ids=np.asarray(table.column("doc_id").to_pylist(), dtype=object),
                        ordinals=ordinals,
                        text_keys=table.column("text_key").to_numpy().astype(np.uint64),
                        vectors=from_arrow(table.column("vector")),
                        locations=np.asarray(table.column("location").to_pylist(), dtype=object))


# A shard's answer is a pure read of data rebuilt from the store, so retrying a call is always safe: the actor
# restarts wherever Ray can place it and the calls wait for it.
@ray.remote(max_restarts=-1, max_task_retries=-1)
class ShardActor:
    """Holds one faiss shard, built from the embedding store on first use.

    Building lazily lets the actors start (process, imports) while the corpus is still being encoded, and makes a
    restarted actor rebuild the same shard from the store by itself.
    """

    def __init__(self, store_url: str, shard_id: int, n_shards: int, cfg: IndexConfig, lenient: bool = False,
                 quarantine_url: str | None = None, search_threads: int | None = None):
        import faiss  # noqa: F401  (paid here, while the corpus is encoded, not at build time)
        from .shard import IndexShard  # noqa: F401
        self.args = (store_url, shard_id, n_shards, cfg, lenient, quarantine_url, search_threads)
        self.shard_id = shard_id
        self.shard = None
        self.error = None

    def _build(self) -> None:
        from ..io.records import Quarantine
        from .factory import set_search_threads
        from .shard import IndexShard
        from .store import read_manifest
        store_url, shard_id, n_shards, cfg, lenient, quarantine_url, search_threads = self.args
        try:
            manifest = read_manifest(store_url)
            if manifest is None:
                raise StreamMineError(f"no committed embedding store at {store_url}")
            if search_threads:
                set_search_threads(search_threads)
            shard = IndexShard(cfg, int(manifest["dim"]), shard_id)
            for docs in _shard_docs_from_store(store_url, manifest, shard_id, n_shards):
                shard.add(docs)
            dropped = shard.build(lenient=lenient)
            if dropped and quarantine_url:
                q = Quarantine()
                for record in dropped:
                    q.add(record["kind"], record["location"], record["reason"], record.get("raw", ""))
                q.write(quarantine_url)
            self.shard = shard
        except StreamMineError as e:  # surfaced by ready(), as the user's error rather than an actor crash
            self.error = e

    def ready(self) -> dict:
        if self.shard is None and self.error is None:
            self._build()
        if self.error is not None:
            raise self.error
        return {"shard": self.shard_id, "docs": len(self.shard), "bytes": self.shard.memory_bytes()}

    def answer(self, queries: np.ndarray, k: int, positive_ids: list, random_ordinals=None):
        if self.shard is None:
            self.ready()
        return self.shard.answer(queries, k, positive_ids, random_ordinals)


class ShardedIndex:
    """The shard actors of one model version; ``answer`` fans a query batch out to all and merges."""

    def __init__(self, handles: list):
        self.handles = handles

    @classmethod
    def start(cls, store_url: str, cfg: IndexConfig, lenient: bool, quarantine_url: str,
              search_threads: int | None = None) -> "ShardedIndex":
        """Starts the actors; they build their shards when the store is committed and they are first asked."""
        # SPREAD: on a cluster, shards land on different nodes (memory adds up, and one lost node loses one
        # shard, which restarts elsewhere and rebuilds from the store); on one machine it changes nothing
        handles = [ShardActor.options(num_cpus=cfg.cpus_per_shard, scheduling_strategy="SPREAD")
                   .remote(store_url, i, cfg.shards, cfg, lenient, quarantine_url, search_threads)
                   for i in range(cfg.shards)]
        return cls(handles)

    def wait_ready(self) -> list:
        return ray.get([h.ready.remote() for h in self.handles])

    def answer(self, queries: np.ndarray, k: int, positive_ids: list, random_ordinals=None,
               unavailable_timeout_s: float = 600.0):
        from .merge import merge_answers
        args = (queries, k, positive_ids, random_ordinals)
        refs = [h.answer.remote(*args) for h in self.handles]
        answers = [None] * len(refs)
        deadline = time.monotonic() + unavailable_timeout_s
        pending = list(range(len(refs)))
        while pending:
            retry = []
            for i in pending:
                try:
                    answers[i] = ray.get(refs[i])
                except ActorUnavailableError:
                    # the shard's node or process is gone and the actor is restarting elsewhere; Ray gives up
                    # on a call it could not deliver in time, so ask again until the restarted shard answers
                    if time.monotonic() > deadline:
                        raise
                    retry.append(i)
            if retry:
                time.sleep(1.0)
                for i in retry:
                    refs[i] = self.handles[i].answer.remote(*args)
            pending = retry
        return merge_answers(answers, k)

    def shutdown(self) -> None:
        for h in self.handles:
            ray.kill(h)
