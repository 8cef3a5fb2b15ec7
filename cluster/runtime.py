"""Connecting to Ray: join a cluster or start a local instance, and size actors from the config.

``init_ray`` joins ``cluster.address`` (or ``RAY_ADDRESS``) when one is given, else starts a local
instance with ``cluster.num_cpus`` CPUs. It always says which explicitly (``address="local"`` for a
local start): a bare ``ray.init()`` would silently join whatever cluster the last ``ray start`` on
this machine left in ``/tmp/ray``. When Ray is already initialised in this process (a test fixture,
a job running under ``ray job submit``), that connection is reused and left alone on shutdown.

GPUs are asked for exactly as configured (``cluster.use_gpu``: one per Ray Train worker;
``cluster.actor_num_gpus`` per pseudo-labeling actor). Before a stage that needs GPUs starts,
:func:`wait_for_resources` checks the cluster's totals; when they fall short it asks the
autoscaler for the stage's bundles (``ray.autoscaler.sdk.request_resources``: nothing is pending
yet, so nothing else would tell it) and polls ``ray.cluster_resources()`` for up to
``cluster.gpu_wait_s`` seconds (GPU worker nodes of ``ray_configs/cluster.yaml`` start at 0).
If the GPUs do not come, :class:`GPUUnavailable` names what was asked for, what the cluster has and
the keys to change, unless ``cluster.cpu_fallback`` is true: then the stage runs on the CPU, a
warning says so, and the returned sizing carries ``cpu_fallback: True`` for the run's records.
Inside a worker or actor, the device is the one Ray assigned (:func:`assigned_device`).
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

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


# ----------------------------------------------------------------------------------------------
# Asking for GPUs: exactly what is configured, waited for, or a clear error
# ----------------------------------------------------------------------------------------------

GPU_KEYS = "cluster.use_gpu / cluster.actor_num_gpus"


class GPUUnavailable(RuntimeError):
    """The GPUs a stage was configured to use did not appear within ``cluster.gpu_wait_s`` (and
    ``cluster.cpu_fallback`` is false). ``needed`` / ``present``: total resources asked for and
    those the cluster had at the end of the wait."""

    def __init__(self, message: str, *, what: str, needed: Mapping[str, float], present: Mapping[str, float],
                 waited_s: float):
        super().__init__(message)
        self.what = what
        self.needed = dict(needed)
        self.present = dict(present)
        self.waited_s = float(waited_s)


def total_resources(bundles: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The sum of ``bundles`` per resource (zero amounts left out)."""
    out: dict[str, float] = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            if float(amount) > 0:
                out[name] = out.get(name, 0.0) + float(amount)
    return out


def shortfall(needed: Mapping[str, float], resources: Mapping[str, float]) -> dict[str, float]:
    """``{name: missing amount}`` of the ``needed`` totals that ``resources`` (a cluster's totals)
    does not cover; empty when everything fits. A small tolerance absorbs float sums (0.1 x 10)."""
    out = {}
    for name, amount in needed.items():
        missing = float(amount) - float(resources.get(name, 0.0))
        if missing > 1e-6:
            out[name] = missing
    return out


def _format(resources: Mapping[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if k in ("CPU", "GPU") or not (k.startswith("node:") or
                                                                             k.endswith("memory"))}
    return ", ".join(f"{float(v):g} {k}" for k, v in sorted(shown.items())) or "nothing"


def _request_resources(bundles: list[dict[str, float]]) -> None:
    """Tell the autoscaler which resource shapes are coming (an empty list withdraws the request;
    a request persists until replaced). A no-op where no autoscaler runs."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)


def wait_for_resources(
    bundles: Sequence[Mapping[str, float]],
    *,
    what: str,
    keys: str,
    wait_s: float,
    poll_s: float = 2.0,
    resources_fn: Callable[[], Mapping[str, float]] | None = None,
    request_fn: Callable[[list[dict[str, float]]], None] | None = _request_resources,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, float]:
    """Wait until the cluster's total resources cover the sum of ``bundles``; returns them.

    When they do not at once, the bundles are requested from the autoscaler (``request_fn``; the
    request is withdrawn again when the wait ends, either way) and the totals are polled every
    ``poll_s`` seconds for up to ``wait_s``. Then :class:`GPUUnavailable` says what ``what``
    (e.g. "Ray Train (cluster.num_workers=2 workers)") asked for, what the cluster has, and
    which ``keys`` to change. ``resources_fn``: the totals (default ``ray.cluster_resources()``).
    """
    if not math.isfinite(float(wait_s)) or float(wait_s) < 0:
        raise ValueError(f"cluster.gpu_wait_s must be a finite number >= 0, got {wait_s!r}")
    resources_fn = _resources if resources_fn is None else resources_fn
    bundles = [{k: float(v) for k, v in b.items() if float(v) > 0} for b in bundles]
    needed = total_resources(bundles)
    present = dict(resources_fn())
    if not shortfall(needed, present):
        return present
    start = clock()
    log.warning("%s needs %s; the cluster has %s: asking the autoscaler and waiting up to %g s "
                "(cluster.gpu_wait_s)", what, _format(needed), _format(present), float(wait_s))
    requested = request_fn is not None
    if requested:
        request_fn(bundles)
    try:
        while shortfall(needed, present) and clock() - start < float(wait_s):
            sleep(max(0.0, min(float(poll_s), float(wait_s) - (clock() - start))))
            present = dict(resources_fn())
    finally:
        if requested:
            request_fn([])
    waited = clock() - start
    if not shortfall(needed, present):
        log.info("%s: %s available after %.0f s", what, _format(needed), waited)
        return present
    raise GPUUnavailable(
        f"{what} asked for {_format(needed)} ({len(bundles)} x {bundles[0] if bundles else {}}) but the "
        f"cluster has {_format(present)} after waiting {waited:.0f} s (cluster.gpu_wait_s={float(wait_s):g}). "
        f"Add GPU nodes (or let the autoscaler start them: a longer cluster.gpu_wait_s), ask for fewer "
        f"({keys}), or set cluster.cpu_fallback=true to run on the CPU when the GPUs do not come.",
        what=what, needed=needed, present=present, waited_s=waited)


def _acquire(bundles: list[dict[str, float]], cluster_cfg: Any, resources: Mapping[str, float] | None, *,
             what: str, keys: str) -> tuple[dict[str, float], bool]:
    """``(cluster totals, cpu_fallback)`` for a stage needing ``bundles`` with GPUs: waited for
    (:func:`wait_for_resources`; a given ``resources`` snapshot is checked once, not waited on),
    or, with ``cluster.cpu_fallback``, a loud warning and ``cpu_fallback=True``."""
    wait_s = float(getattr(cluster_cfg, "gpu_wait_s", 600.0))
    kwargs: dict[str, Any] = {}
    if resources is not None:
        kwargs = {"resources_fn": lambda: dict(resources), "request_fn": None}
        wait_s = 0.0
    try:
        return wait_for_resources(bundles, what=what, keys=keys, wait_s=wait_s, **kwargs), False
    except GPUUnavailable as exc:
        if not getattr(cluster_cfg, "cpu_fallback", False):
            raise
        log.warning("CPU FALLBACK (cluster.cpu_fallback=true): %s; %s runs on the CPU instead", exc, what)
        return exc.present, True


def actor_resources(cluster_cfg: Any, resources: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``{"num_cpus", "num_gpus", "memory", "cpu_fallback"}`` for one pseudo-labeling actor, as
    configured (``memory`` in bytes from ``actor_memory_mb``, None when unset: Ray's ``memory=``).

    ``actor_num_gpus`` > 0: the cluster must have ``cluster.actors`` x ``actor_num_gpus`` GPUs,
    waited for up to ``cluster.gpu_wait_s`` (:func:`wait_for_resources`); else
    :class:`GPUUnavailable`, or with ``cluster.cpu_fallback`` ``num_gpus`` 0 and
    ``cpu_fallback`` True. ``resources``: a snapshot of the cluster's totals to check instead of
    the connected cluster (not waited on). A request for more CPUs or memory per actor than the
    whole cluster has is a ``ValueError`` rather than an actor that never starts.
    """
    cpus = float(cluster_cfg.actor_num_cpus)
    gpus = float(cluster_cfg.actor_num_gpus)
    if cpus < 0 or gpus < 0:
        raise ValueError(f"cluster.actor_num_cpus/actor_num_gpus must be >= 0, got {cpus}/{gpus}")
    fallback = False
    if gpus > 0:
        actors = int(getattr(cluster_cfg, "actors", 1))
        resources, fallback = _acquire(
            [{"CPU": cpus, "GPU": gpus}] * actors, cluster_cfg, resources,
            what=f"pseudo-labeling ({actors} actor(s), cluster.actors x cluster.actor_num_gpus={gpus:g})",
            keys="cluster.actors, cluster.actor_num_gpus")
        if fallback:
            gpus = 0.0
    resources = _resources() if resources is None else resources
    total_cpus = float(resources.get("CPU", 0.0))
    if cpus > total_cpus:
        raise ValueError(f"cluster.actor_num_cpus={cpus} but the cluster has {total_cpus:g} CPUs")
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
    return {"num_cpus": cpus, "num_gpus": gpus, "memory": memory, "cpu_fallback": fallback}


def actor_device(num_gpus: float) -> str:
    """The torch device kind an actor is given on the driver for its GPU share (``cuda`` or
    ``cpu``); the actor turns ``cuda`` into the device Ray assigned it (:func:`assigned_device`)."""
    return "cuda" if num_gpus > 0 else "cpu"


def assigned_device(requested: str, gpu_ids: Sequence[Any], cuda_visible_devices: str | None) -> str:
    """The torch device of a Ray worker or actor (pure): ``requested`` ``cpu`` stays ``cpu``;
    ``cuda`` becomes ``cuda:<i>``, ``i`` the position of the first GPU Ray assigned
    (``ray.get_gpu_ids()``) in ``CUDA_VISIBLE_DEVICES`` (which Ray sets to the assigned GPUs, so
    usually ``cuda:0``), or the GPU id itself when the variable is unset (Ray told not to set it).

    ``RuntimeError`` when ``cuda`` is asked for but Ray assigned no GPU, or the assigned GPU is not
    visible, rather than work landing on the CPU or on another worker's GPU.
    """
    if requested == "cpu":
        return "cpu"
    if not str(requested).startswith("cuda"):
        raise ValueError(f"device {requested!r}: expected 'cpu' or 'cuda'")
    ids = [str(i) for i in gpu_ids]
    if not ids:
        raise RuntimeError(f"device {requested!r} asked for but Ray assigned no GPU to this process "
                           f"(ray.get_gpu_ids() is empty): check cluster.actor_num_gpus / cluster.use_gpu")
    visible = (cuda_visible_devices or "").strip()
    if not visible:
        if not ids[0].isdigit():
            raise RuntimeError(f"Ray assigned GPU {ids[0]!r} but CUDA_VISIBLE_DEVICES is unset: "
                               f"cannot tell its torch index")
        return f"cuda:{ids[0]}"
    order = [v.strip() for v in visible.split(",")]
    if ids[0] not in order:
        raise RuntimeError(f"Ray assigned GPU {ids[0]} but CUDA_VISIBLE_DEVICES={visible!r} does not "
                           f"list it: was CUDA_VISIBLE_DEVICES overridden?")
    return f"cuda:{order.index(ids[0])}"


def check_worker_device(gpu_ids: Sequence[Any], device_type: str) -> None:
    """Refuse to train on the CPU when Ray assigned this worker GPUs (pure): ``device_type`` is
    the type of the device the worker got (``ray.train.torch.get_device().type``), which is
    ``cpu`` when torch cannot see CUDA (a CPU-only torch build, a driver problem)."""
    if gpu_ids and device_type == "cpu":
        raise RuntimeError(
            f"Ray assigned GPU(s) {[str(i) for i in gpu_ids]} to this training worker but torch sees no CUDA "
            f"device (torch.cuda.is_available() is False: a CPU-only torch build or a driver problem), so it "
            f"would train on the CPU. Install a CUDA build of torch on the GPU nodes, or set cluster.use_gpu=false.")


def worker_resources(cluster_cfg: Any, resources: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Ray Train sizing, as configured: ``{"num_workers", "use_gpu", "cpus_per_worker",
    "cpu_fallback"}``.

    ``cluster.use_gpu``: one GPU per worker, ``cluster.num_workers`` GPUs waited for up to
    ``cluster.gpu_wait_s`` (:func:`wait_for_resources`); else :class:`GPUUnavailable`, or with
    ``cluster.cpu_fallback`` ``use_gpu`` False and ``cpu_fallback`` True. ``resources``: a
    snapshot of the cluster's totals to check instead of the connected cluster (not waited on).
    """
    workers = int(cluster_cfg.num_workers)
    cpus = float(cluster_cfg.cpus_per_worker)
    use_gpu = bool(cluster_cfg.use_gpu)
    fallback = False
    if use_gpu:
        _, fallback = _acquire(
            [{"CPU": cpus, "GPU": 1.0}] * workers, cluster_cfg, resources,
            what=f"Ray Train ({workers} worker(s) with cluster.use_gpu=true: 1 GPU each)",
            keys="cluster.num_workers, cluster.use_gpu")
        use_gpu = not fallback
    return {"num_workers": workers, "use_gpu": use_gpu, "cpus_per_worker": cpus, "cpu_fallback": fallback}
