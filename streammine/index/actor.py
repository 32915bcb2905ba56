"""Index shards as Ray actors, and the fan-out that queries all of them at once."""
from __future__ import annotations

import time
import uuid

import numpy as np
import ray
from ray.exceptions import ActorUnavailableError

from ..config import IndexConfig
from ..errors import StreamMineError
from .answers import MergedAnswer, ProposalScores


# Round-one candidates a shard keeps for round two (one per query block in flight; a few more for miners that died).
MAX_KEPT_PROPOSALS = 16


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
        try:
            import faiss  # noqa: F401  (paid here, while the corpus is encoded, not at build time)
        except ImportError:  # index.kind=torch-flat needs none; a faiss kind says so when the shard is built
            pass
        from .shard import IndexShard  # noqa: F401
        self.args = (store_url, shard_id, n_shards, cfg, lenient, quarantine_url, search_threads)
        self.shard_id = shard_id
        self.shard = None
        self.error = None
        self.proposals: dict = {}  # token -> faiss candidates of round one, until round two takes them

    def _build(self) -> None:
        from .factory import set_search_threads
        from .local import build_shard
        store_url, shard_id, n_shards, cfg, lenient, quarantine_url, search_threads = self.args
        try:
            if search_threads:
                set_search_threads(search_threads)
            self.shard = build_shard(store_url, shard_id, n_shards, cfg, lenient, quarantine_url)
        except StreamMineError as e:  # surfaced by ready(), as the user's error rather than an actor crash
            self.error = e

    def ready(self) -> dict:
        if self.shard is None and self.error is None:
            self._build()
        if self.error is not None:
            raise self.error
        return {"shard": self.shard_id, "docs": len(self.shard), "bytes": self.shard.memory_bytes()}

    def propose(self, token: str, queries: np.ndarray, k: int):
        """Round one of a pruned search (``IndexShard.propose``): keeps faiss' candidates under ``token`` for
        round two and returns only their faiss scores and the error bound."""
        if self.shard is None:
            self.ready()
        proposal, bound = self.shard.propose(queries, k)
        self.proposals[token] = proposal
        while len(self.proposals) > MAX_KEPT_PROPOSALS:  # a miner that died between the rounds leaves one
            self.proposals.pop(next(iter(self.proposals)))
        return ProposalScores(proposal.scores, bound)

    def answer(self, queries: np.ndarray, k: int, positive_ids: list, random_ordinals=None,
               token: str | None = None, floor=None):
        if self.shard is None:
            self.ready()
        proposal = self.proposals.pop(token, None) if token else None
        if proposal is None:
            # restarted (or retried) since round one: search again and rescore everything, since the floor was
            # computed from candidates this process no longer has
            floor = None
        return self.shard.answer(queries, k, positive_ids, random_ordinals, proposal, floor)

    def vectors_of(self, ordinals: np.ndarray):
        """``IndexShard.vectors_of``: the stored vectors of the ordinals this shard holds."""
        if self.shard is None:
            self.ready()
        return self.shard.vectors_of(ordinals)


class ShardedIndex:
    """The shard actors of one model version; ``answer`` fans a query batch out to all and merges."""

    def __init__(self, handles: list, prune_rescoring: bool = True):
        self.handles = handles
        self.prune_rescoring = prune_rescoring
        self.certificate_researches = 0  # (query, shard) searches repeated deeper to certify a top k, so far

    @classmethod
    def start(cls, store_url: str, cfg: IndexConfig, lenient: bool, quarantine_url: str,
              search_threads: int | None = None) -> "ShardedIndex":
        """Starts the actors; they build their shards when the store is committed and they are first asked."""
        # SPREAD: on a cluster, shards land on different nodes (memory adds up, and one lost node loses one
        # shard, which restarts elsewhere and rebuilds from the store); on one machine it changes nothing
        handles = [ShardActor.options(num_cpus=cfg.cpus_per_shard, num_gpus=cfg.gpus_per_shard,
                                      scheduling_strategy="SPREAD")
                   .remote(store_url, i, cfg.shards, cfg, lenient, quarantine_url, search_threads)
                   for i in range(cfg.shards)]
        return cls(handles, cfg.prune_rescoring)

    def wait_ready(self) -> list:
        return ray.get([h.ready.remote() for h in self.handles])

    def answer(self, queries: np.ndarray, k: int, positive_ids: list, random_ordinals=None,
               unavailable_timeout_s: float = 600.0) -> MergedAnswer:
        """The merged answer of all shards. With several shards and ``prune_rescoring``, in two rounds: faiss
        scores first, then exact rescoring of only the candidates that can reach the global top k
        (``IndexShard.propose``); the result is the same as rescoring all."""
        from .merge import merge_answers, rescore_floor
        queries_ref = ray.put(np.ascontiguousarray(queries, dtype=np.float32))  # one copy for every call
        token, floor = None, None
        if self.prune_rescoring and len(self.handles) > 1:
            token = uuid.uuid4().hex
            proposals = self._call_all("propose", (token, queries_ref, k), unavailable_timeout_s)
            floor = rescore_floor([p.scores for p in proposals], [p.error_bound for p in proposals], queries, k)
            if any(p.error_bound is None for p in proposals):
                # a kind without an error bound can never prune: later blocks go in one round (same result)
                self.prune_rescoring = False
        answers = self._call_all("answer", (queries_ref, k, positive_ids, random_ordinals, token, floor),
                                 unavailable_timeout_s)
        self.certificate_researches += sum(int(getattr(a, "researches", 0)) for a in answers)
        return merge_answers(answers, k)

    def vectors_of(self, ordinals: np.ndarray, unavailable_timeout_s: float = 600.0) -> np.ndarray:
        """(m, d) float32 stored vectors of corpus ``ordinals`` (m,), each shard answering those it holds (zeros
        where none does): for the near-duplicate guards (mining/near_duplicate.py)."""
        from .shard import assemble_vectors
        ordinals = np.asarray(ordinals, np.int64).reshape(-1)
        parts = self._call_all("vectors_of", (ordinals,), unavailable_timeout_s)
        dim = max((int(v.shape[1]) for _, v in parts), default=0)
        return assemble_vectors(parts, len(ordinals), dim)

    def _call_all(self, method: str, args: tuple, unavailable_timeout_s: float) -> list:
        """``method(*args)`` on every shard actor; results in shard order."""
        refs = [getattr(h, method).remote(*args) for h in self.handles]
        results = [None] * len(refs)
        deadline = time.monotonic() + unavailable_timeout_s
        pending = list(range(len(refs)))
        while pending:
            retry = []
            for i in pending:
                try:
                    results[i] = ray.get(refs[i])
                except ActorUnavailableError:
                    # the shard's node or process is gone and the actor is restarting elsewhere; Ray gives up
                    # on a call it could not deliver in time, so ask again until the restarted shard answers
                    if time.monotonic() > deadline:
                        raise
                    retry.append(i)
            if retry:
                time.sleep(1.0)
                for i in retry:
                    refs[i] = getattr(self.handles[i], method).remote(*args)
            pending = retry
        return results

    def shutdown(self) -> None:
        for h in self.handles:
            ray.kill(h)
