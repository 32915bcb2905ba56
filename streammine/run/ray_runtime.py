"""Ray for a run, in one place: joining a cluster or starting a private local Ray, what workers get in their
environment, Ray Data's execution settings and the silencing of Ray's loggers (``start_ray``)."""
from __future__ import annotations

import atexit
import json
import logging
import os
from contextlib import contextmanager
from typing import Optional

import ray

from .. import console

log = logging.getLogger("streammine")

# Passed to workers in the runtime env: settings only, never a secret. Ray writes runtime envs into its logs and
# job table, so credentials must reach workers another way: a local Ray's workers inherit the driver's
# environment; a cluster's workers use their node's credential chain (IRSA role, a Kubernetes Secret as env).
S3_ENV_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
               "STREAMMINE_S3_ENDPOINT", "HF_HUB_OFFLINE")
SECRET_ENV_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# The Ray this process's calls started or joined: None (none, or the caller's own ray.init), else its kind
# ("private" or "joined") and whether its workers' logs are forwarded (fixed when Ray starts).
_ours: dict = {"kind": None, "log_to_driver": None}


def worker_env() -> dict:
    """The settings workers must share with the driver (the object-store endpoint...): S3_ENV_VARS that are set."""
    return {k: os.environ[k] for k in S3_ENV_VARS if k in os.environ}


def start_ray(run_cfg) -> None:
    """Ray for a run (``run_cfg``: the config's ``run`` section): joined or started (``ensure_ray``), with Ray
    Data's progress bars as ``run.progress`` and the console's verbosity say, a stage's own exception raised as
    itself, and Ray's loggers quiet."""
    ensure_ray(run_cfg.address, run_cfg.object_store_memory)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(run_cfg.progress) and console.verbose()
    ctx.raise_original_map_exception = True  # a stage's InputError reaches the caller as itself
    # Ray Data's per-operator reservation holds part of the cluster back for each operator; it throttled the read
    # tasks to about one core in two (benchmarks/read_scale.py). A run's actor pools take their resources when they
    # start and the encoder plan leaves a CPU for one task, so no operator can starve another without it.
    ctx.op_resource_reservation_enabled = False
    if console.quiet():
        ctx.print_on_execution_start = False
    console.silence_ray_loggers()


@contextmanager
def quiet_data_context():
    """Quiet mode: Ray Data datasets made inside the block run without progress output or execution plans (a
    dataset copies the current context when it is made); the current context is restored after."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start)
    if console.quiet():
        ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
        # Ray Data says once, when such a dataset runs (after this call), that its progress bars are off: that
        # line is marked as said already (the dataset may run with Ray's loggers at their own levels again)
        from ray.util.debug import log_once
        log_once("ray_data_progress_manager_disabled")
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved


def local_object_store_bytes(configured: Optional[int] = None) -> Optional[int]:
    """A private local Ray's object store: ``run.object_store_memory``, else 10 % of the machine's memory, at least
    1 GiB. Blocks pass through it; a worker keeps resident every page of it that it has written (Ray's allocator
    reuses them), so its size is a floor on a long run's memory, and Ray's default (30 %) is more than streaming
    needs (README "Scale past RAM")."""
    if configured:
        return int(configured)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no such figure here: Ray's default
        return None
    return max(1 << 30, int(0.10 * total))


def ensure_ray(address: Optional[str] = None, object_store_memory: Optional[int] = None) -> None:
    """Join the given cluster (or RAY_ADDRESS), else start a private local Ray. One code path either way.

    Without an address the run starts and owns its own local Ray (``address="local"``): it never attaches to
    another instance that happens to run on the machine (a ``ray start --head``, another tool's). With an address
    it joins that cluster and passes nothing that conflicts with it (no CPU or GPU counts)."""
    if ray.is_initialized():
        if _ours["kind"] != "private" or _ours["log_to_driver"] == console.verbose():
            return
        # The private Ray was started by a call of the other verbosity: its workers' log forwarding is fixed at
        # start, so it starts again (a few seconds) rather than hide a verbose call's logs or print a quiet one's.
        shutdown_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Workers must see the same object-store endpoint as the driver. Credentials are not passed (see S3_ENV_VARS).
    # Inside a `ray job submit` job, Ray merges the job's runtime env into ours and refuses a variable set in
    # both: pass only what the job does not already give its workers.
    env = dict(worker_env(), **(console.QUIET_WORKER_ENV if console.quiet() else {}))
    env = {k: v for k, v in env.items() if k not in _job_env_vars()}
    kwargs = dict(include_dashboard=False, log_to_driver=console.verbose(),
                  runtime_env={"env_vars": env} if env else None)
    if console.quiet():
        kwargs["logging_level"] = logging.ERROR
    with console.native_stderr_muted():  # quiet: the C++ core's start-up lines
        if address:
            ray.init(address=address, **kwargs)
        else:
            # A local Ray gets at least 2 logical CPUs: requests only schedule, and a 1-core machine must still fit
            # an encoder beside a 1-CPU read or write task (see encode/plan.py).
            ray.init(address="local", num_cpus=max(2, os.cpu_count() or 1),
                     object_store_memory=local_object_store_bytes(object_store_memory), **kwargs)
            if not _ours.get("atexit"):
                atexit.register(_stop_local_autoscaler)  # runs before Ray's exit hook (atexit: last in, first out)
                _ours["atexit"] = True
    _ours.update(kind="joined" if address else "private", log_to_driver=kwargs["log_to_driver"])
    if not address:
        console.private_ray_started(console.quiet())
    console.silence_ray_loggers()


def shutdown_ray() -> bool:
    """Stops the private local Ray started here (or leaves the cluster joined here); True when there was one. A Ray
    the caller started itself (``ray.init`` before the first call) is not ours and stays."""
    from ..encode.model_object import forget_ray
    if _ours["kind"] is None or not ray.is_initialized():
        _ours.update(kind=None, log_to_driver=None)
        return False
    if _ours["kind"] == "private":
        _stop_local_autoscaler()
    with console.native_stderr_muted():
        ray.shutdown()
    forget_ray()  # the model objects shipped to that Ray's object store are gone with it
    _ours.update(kind=None, log_to_driver=None)
    console.private_ray_stopped()
    return True


def _stop_local_autoscaler() -> None:
    """Ray's shutdown stops the GCS before the autoscaler monitor, whose SIGTERM handler then tries to report to
    that GCS and is killed only after a 1-s grace period: every local run ended 1 s late. A local Ray has nothing to
    autoscale, so the monitor is stopped first, at once. Best effort: this reaches into Ray's node object."""
    node = getattr(ray._private.worker, "_global_node", None)
    try:
        if node is not None and ray.is_initialized():
            node.kill_monitor(check_alive=False)
    except Exception as e:  # noqa: BLE001 - a Ray without this method: its own shutdown still runs
        log.debug("could not stop the local autoscaler monitor early: %s", e)


def _job_env_vars() -> dict:
    """The env_vars of the Ray job this driver runs in (Ray's job manager passes its config in this variable)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return {}
