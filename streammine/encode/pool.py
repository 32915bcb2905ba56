"""The encoder actor pool on the cluster Ray sees: the plan (``plan.plan_encoders``) from Ray's resources, and the
``map_batches`` arguments that start an encoder stage with it."""
from __future__ import annotations

import os

import ray

from ..config import MineConfig
from ..io.formats import input_format
from ..run.ray_runtime import worker_env
from .plan import ClusterView, EncoderPlan, check_local_fit, plan_encoders


def cluster_view() -> ClusterView:
    res = ray.cluster_resources()
    return ClusterView(cpus=float(res.get("CPU", 1.0)), gpus=float(res.get("GPU", 0.0)),
                       nodes=len([n for n in ray.nodes() if n.get("Alive")]), host_cpus=os.cpu_count() or 1)


def encoder_plan(cfg: MineConfig) -> EncoderPlan:
    """The encoder plan for this cluster; on one machine, checked to leave room for the rest of the run."""
    cluster = cluster_view()
    plan = plan_encoders(cfg.encoder, cluster, cfg.run.corpus_batch_size, cfg.run.miner_actors)
    check_local_fit(plan, cluster, cfg.run.miner_actors, input_format(cfg).precomputed)
    return plan


def encoder_map_args(cfg: MineConfig, plan: EncoderPlan, metrics, *constructor_args) -> dict:
    """map_batches arguments for an encoder stage: the actor pool, its resources and its environment. The stage
    is constructed with ``(cfg.encoder, plan.torch_threads, metrics, *constructor_args)``."""
    # Ray starts workers with OMP_NUM_THREADS=<their CPU request>; torch's OpenMP kernels follow that variable
    # even after torch.set_num_threads, so an encoder given more threads must be given the variable too.
    threads = str(plan.torch_threads)
    env = worker_env()
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return dict(batch_format="pyarrow", fn_constructor_args=(cfg.encoder, plan.torch_threads, metrics)
                + tuple(constructor_args),
                compute=ray.data.ActorPoolStrategy(size=plan.num_actors,
                                                   max_tasks_in_flight_per_actor=plan.max_tasks_in_flight),
                num_cpus=plan.cpus_per_actor, num_gpus=plan.gpus_per_actor, runtime_env={"env_vars": env})
