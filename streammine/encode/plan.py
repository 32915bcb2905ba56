"""How many encoder actors, with which resources and threads, and how many texts per encoder call.

A pure function of the encoder config and what the cluster has, so the choice is testable without Ray.

Why several single-threaded encoders on a CPU: intra-op threading of a small transformer's matmuls scales worse
than independent processes with one torch thread each (README, "How it is built"). Small blocks keep the
actors evenly loaded: one actor call holds its block to the end, so a big last block leaves the others idle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..config import EncoderConfig
from ..errors import ConfigError

# More CPU encoders than this multiplies the model's memory for little gain; beyond it, threads per actor grow.
MAX_AUTO_CPU_ACTORS = 4
LOCAL_TASK_CPUS = 1.0      # one 1-CPU Ray Data task (read, repartition, write) must always fit
MINER_CPUS = 0.25          # each miner actor's request (run.query_pass.mine_queries)
LOOKUP_CPUS = 0.25         # the precomputed query-vector lookup actor's request
MIN_CPU_REQUEST = 0.05
CPU_BLOCK_ROWS = 256      # tens of seconds of MiniLM work on one core: small tail, many blocks to balance
GPU_BLOCK_ROWS = 4096     # a GPU encodes this in about a second: bigger blocks amortize per-call overhead


@dataclass(frozen=True)
class ClusterView:
    cpus: float           # logical CPUs Ray may schedule on, whole cluster
    gpus: float
    nodes: int
    host_cpus: int        # cores of this machine (what local actors share)


@dataclass(frozen=True)
class EncoderPlan:
    num_actors: int
    cpus_per_actor: float     # Ray's logical request: scheduling only
    gpus_per_actor: float
    torch_threads: int        # what each actor really uses
    block_rows: int           # texts per encoder call, and rows per read block
    max_tasks_in_flight: Optional[int]  # per actor; 1 on CPU so no actor queues blocks another could take

    @property
    def on_gpu(self) -> bool:
        return self.gpus_per_actor > 0


def plan_encoders(e: EncoderConfig, cluster: ClusterView, block_rows: int = 0, miner_actors: int = 1) -> EncoderPlan:
    """``e.num_actors`` 0, ``e.cpus_per_actor`` None and ``block_rows`` 0 mean "choose"; set values are kept.
    ``miner_actors``: the miners that run beside the query encoders (their requests are left free)."""
    gpus_per_actor = e.gpus_per_actor if e.gpus_per_actor is not None else (1.0 if cluster.gpus > 0 else 0.0)
    if gpus_per_actor > 0:
        actors = e.num_actors or max(1, int(cluster.gpus // gpus_per_actor))
        cpus = e.cpus_per_actor if e.cpus_per_actor is not None else 1.0
        return EncoderPlan(actors, cpus, gpus_per_actor, max(1, int(cpus)), block_rows or GPU_BLOCK_ROWS, None)
    if cluster.nodes <= 1:
        # One machine: the actors share its cores. Their logical requests must leave room for a 1-CPU Ray Data
        # task (read, repartition, write) beside the miner actors, or those tasks never get scheduled and the
        # run waits forever.
        actors = e.num_actors or max(1, min(cluster.host_cpus, MAX_AUTO_CPU_ACTORS))
        threads = max(1, cluster.host_cpus // actors)
        free = cluster.cpus - LOCAL_TASK_CPUS - MINER_CPUS * max(1, miner_actors)
        cpus = e.cpus_per_actor if e.cpus_per_actor is not None else \
            min(float(threads), max(MIN_CPU_REQUEST, math.floor(100 * free / actors) / 100))
        return EncoderPlan(actors, cpus, 0.0, threads, block_rows or CPU_BLOCK_ROWS, 1)
    # a CPU cluster: actors of a few cores each, on three quarters of the cluster's CPUs
    cpus = e.cpus_per_actor if e.cpus_per_actor is not None else 4.0
    actors = e.num_actors or max(1, int(cluster.cpus * 0.75 // cpus))
    return EncoderPlan(actors, cpus, 0.0, max(1, int(cpus)), block_rows or CPU_BLOCK_ROWS, 1)


def check_local_fit(plan: EncoderPlan, cluster: ClusterView, miner_actors: int, precomputed: bool) -> None:
    """On one machine, the query pass's actors (query encoders or the vector lookup, and the miners) plus one
    1-CPU Ray Data task must fit the logical CPUs, else that task is never scheduled and the run waits forever:
    a ``ConfigError`` says so up front instead."""
    if cluster.nodes > 1:
        return  # a cluster may grow (autoscaler); k8s/ tests check the shipped manifests' sizes instead
    vectors = LOOKUP_CPUS if precomputed else plan.num_actors * plan.cpus_per_actor
    demand = vectors + MINER_CPUS * miner_actors + LOCAL_TASK_CPUS
    if demand > cluster.cpus + 1e-9:
        raise ConfigError(f"the query pass asks for {demand:g} CPUs on a {cluster.cpus:g}-CPU local Ray "
                          f"({'the vector lookup' if precomputed else f'{plan.num_actors} encoders'} "
                          f"{vectors:g}, {miner_actors} miners x {MINER_CPUS:g}, one {LOCAL_TASK_CPUS:g}-CPU read/"
                          f"write task) and would never finish: lower run.miner_actors or encoder.cpus_per_actor")
