"""Connecting to Ray: join a cluster or start a local instance, and size actors from the config.

``init_ray`` joins ``cluster.address`` (or ``RAY_ADDRESS``) when one is given, else starts a local
instance with ``cluster.num_cpus`` CPUs. It always says which explicitly (``address="local"`` for a
local start): a bare ``ray.init()`` would silently join whatever cluster the last ``ray start`` on
this machine left in ``/tmp/ray``. When Ray is already initialised in this process (a test fixture,
a job running under ``ray job submit``), that connection is reused and left alone on shutdown.

GPU settings are honoured only when the cluster has GPUs: ``actor_resources`` asks for
``actor_num_gpus`` per actor when ``GPU`` is among the cluster's resources and for 0 otherwise, so
one config runs on a laptop and on a GPU cluster.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import ray

log = logging.getLogger(__name__)


@dataclass
class RayContext:
    """What :func:`init_ray` did: the address, whether this process owns the connection (and so
    shuts it down), and the cluster's total resources at start."""

    address: str
    owned: bool
    local: bool
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def num_gpus(self) -> float:
        return float(self.resources.get("GPU", 0.0))

    @property
    def num_cpus(self) -> float:
        return float(self.resources.get("CPU", 0.0))


def ray_version() -> str:
    return ray.__version__


def target_address(cluster_cfg: Any, environ: Mapping[str, str] | None = None) -> str | None:
    """The cluster to join: ``cluster.address``, else ``RAY_ADDRESS``, else None (start local)."""
    environ = os.environ if environ is None else environ
    address = getattr(cluster_cfg, "address", None) or environ.get("RAY_ADDRESS") or None
    if address == "local":
        return None
    return address


def init_ray(
    cluster_cfg: Any,
    *,
    runtime_env: Mapping[str, Any] | None = None,
    namespace: str | None = None,
    log_to_driver: bool = True,
    include_dashboard: bool = False,
    num_gpus: float | None = None,
    quiet: bool = True,
) -> RayContext:
    """Join the configured cluster or start a local Ray instance; returns a :class:`RayContext`.

    ``cluster_cfg``: a :class:`cemr.config.ClusterConfig` (``address``, ``num_cpus``).
    ``num_gpus``: for a local start only (None: detect; a number declares that many, e.g. fake
    GPUs to test GPU scheduling on a CPU machine). ``quiet``: :func:`quiet_data_context`.
    Raises ``ConnectionError`` naming the address when the cluster cannot be reached.
    """
    if quiet:
        quiet_data_context()
    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return RayContext(address=ctx.gcs_address, owned=False, local=False, resources=_resources())
    address = target_address(cluster_cfg)
    kwargs: dict[str, Any] = {"log_to_driver": log_to_driver}
    if runtime_env:
        kwargs["runtime_env"] = dict(runtime_env)
    if namespace:
        kwargs["namespace"] = namespace
    if address is not None:
        try:
            info = ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConnectionError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc
        local = False
    else:
        num_cpus = getattr(cluster_cfg, "num_cpus", None)
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
        info = ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard, **kwargs)
        local = True
    gcs = getattr(info, "address_info", {}).get("gcs_address") or ray.get_runtime_context().gcs_address
    ctx = RayContext(address=gcs, owned=True, local=local, resources=_resources())
    log.info("ray %s %s at %s: %s", ray_version(), "started" if local else "joined", gcs, ctx.resources)
    return ctx


def quiet_data_context() -> None:
    """Ray Data without progress bars nor the context dump it prints at each execution start
    (job logs stay readable); the driver's current ``DataContext`` is changed."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def shutdown_if_owned(ctx: RayContext | None) -> bool:
    """``ray.shutdown()`` when :func:`init_ray` opened the connection; returns whether it did."""
    if ctx is not None and ctx.owned and ray.is_initialized():
        ray.shutdown()
        return True
    return False


def _resources() -> dict[str, float]:
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def cluster_has_gpus(resources: Mapping[str, float] | None = None) -> bool:
    resources = _resources() if resources is None else resources
    return float(resources.get("GPU", 0.0)) > 0


def actor_resources(cluster_cfg: Any, resources: Mapping[str, float] | None = None) -> dict[str, float]:
    """``{"num_cpus", "num_gpus", "memory"}`` for one pseudo-labeling actor (``memory`` in bytes
    from ``actor_memory_mb``, None when unset: Ray's ``memory=`` argument).

    ``actor_num_gpus`` is used only when ``resources`` (default: the connected cluster's) has GPUs;
    a request for more GPUs, CPUs or memory per actor than the whole cluster has is a
    ``ValueError`` rather than an actor that never starts.
    """
    resources = _resources() if resources is None else resources
    cpus = float(cluster_cfg.actor_num_cpus)
    gpus = float(cluster_cfg.actor_num_gpus)
    if cpus < 0 or gpus < 0:
        raise ValueError(f"cluster.actor_num_cpus/actor_num_gpus must be >= 0, got {cpus}/{gpus}")
    total_cpus = float(resources.get("CPU", 0.0))
    if cpus > total_cpus:
        raise ValueError(f"cluster.actor_num_cpus={cpus} but the cluster has {total_cpus:g} CPUs")
    if gpus > 0 and not cluster_has_gpus(resources):
        log.warning("cluster.actor_num_gpus=%s but the cluster has no GPU: actors run on CPU", gpus)
        gpus = 0.0
    total_gpus = float(resources.get("GPU", 0.0))
    if gpus > total_gpus:
        raise ValueError(f"cluster.actor_num_gpus={gpus} but the cluster has {total_gpus:g} GPUs")
    memory = None
    mb = getattr(cluster_cfg, "actor_memory_mb", None)
    if mb is not None:
        if not float(mb) > 0:
            raise ValueError(f"cluster.actor_memory_mb must be > 0 (or null), got {mb}")
        memory = float(mb) * 2**20
        total_memory = resources.get("memory")
        if total_memory is not None and memory > float(total_memory):
            raise ValueError(f"cluster.actor_memory_mb={float(mb):g} but the cluster has "
                             f"{float(total_memory) / 2**20:.0f} MiB of memory for tasks and actors")
    return {"num_cpus": cpus, "num_gpus": gpus, "memory": memory}


def actor_device(num_gpus: float) -> str:
    """The torch device an actor should use given its GPU share."""
    return "cuda" if num_gpus > 0 else "cpu"


def worker_resources(cluster_cfg: Any, resources: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Ray Train sizing: ``{"num_workers", "use_gpu", "cpus_per_worker"}``; ``use_gpu`` only with GPUs."""
    resources = _resources() if resources is None else resources
    use_gpu = bool(cluster_cfg.use_gpu) and cluster_has_gpus(resources)
    if cluster_cfg.use_gpu and not use_gpu:
        log.warning("cluster.use_gpu=true but the cluster has no GPU: training on CPU")
    return {
        "num_workers": int(cluster_cfg.num_workers),
        "use_gpu": use_gpu,
        "cpus_per_worker": float(cluster_cfg.cpus_per_worker),
    }
