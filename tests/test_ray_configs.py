"""The cluster YAMLs of ray_configs/: the cluster launcher config validates against the schema of the
installed Ray; the KubeRay RayJob uses only fields KubeRay's v1 API has, asks for the GPUs its
entrypoint needs, and its entrypoint names a job, a config and overrides that load; both say how to
run the GPU path (cluster.use_gpu / actor_num_gpus) on the GPU nodes they define."""
from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from cemr.config import load_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "ray_configs" / "cluster.yaml"
RAYJOB = REPO / "ray_configs" / "rayjob.yaml"
SHARED = "/mnt/cemr"  # the storage every node sees, in both configs

# KubeRay ray.io/v1 (ray-operator/apis/ray/v1/rayjob_types.go, raycluster_types.go)
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
               "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint", "runtimeEnvYAML",
               "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
               "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend", "schedule"}
CLUSTER_SPEC = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions",
                "headServiceAnnotations", "suspend", "gcsFaultToleranceOptions", "managedBy", "upgradeStrategy"}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams", "template",
                "scaleStrategy", "suspend", "idleTimeoutSeconds"}
AUTOSCALER = {"resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts", "securityContext",
              "idleTimeoutSeconds", "upscalingMode", "version"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
GPU = "nvidia.com/gpu"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _pins() -> dict[str, str]:
    """``name -> version`` of the ``==`` pins of pyproject.toml's dependencies."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    return dict(re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)$", d).groups() for d in deps if "==" in d)


def entrypoint_problems(command: str) -> tuple[list[str], object]:
    """What is wrong with ``python -m jobs.<name> --config PATH key=value ...`` (the job module and
    the config must exist, the overrides must load), and the loaded config."""
    words = shlex.split(command)
    if words[:2] != ["python", "-m"] or not words[2].startswith("jobs."):
        return [f"{command!r}: not 'python -m jobs.<name> ...'"], None
    problems = []
    if not (REPO / "jobs" / f"{words[2][5:]}.py").is_file():
        problems.append(f"{words[2]}: no such job module")
    config, overrides = None, []
    rest = iter(words[3:])
    for w in rest:
        if w == "--config":
            config = next(rest, None)
        elif "=" in w and not w.startswith("-"):
            overrides.append(w)
    if config is None or not (REPO / config).is_file():
        return problems + [f"--config {config}: no such file in the checkout"], None
    try:
        return problems, load_config(REPO / config, overrides)
    except Exception as exc:  # noqa: BLE001 - reported as a problem
        return problems + [f"{config} {overrides}: {exc}"], None


# ----------------------------------------------------------------------------------------------
# The cluster launcher config
# ----------------------------------------------------------------------------------------------


def _launcher_schema() -> dict:
    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text(encoding="utf-8"))


def test_the_cluster_launcher_config_validates_against_rays_schema():
    cfg = _load(CLUSTER)
    jsonschema.validate(cfg, _launcher_schema())
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["gpu_worker"]["min_worker"] = 0  # a typo: the check can fail
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _launcher_schema())


def test_the_cluster_launcher_has_gpu_workers_the_documented_job_asks_for():
    cfg = _load(CLUSTER)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types and types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no node type with a GPU"
    for name, t in gpu_types.items():
        assert re.match(r"(g|p)\d", t["node_config"]["InstanceType"]), f"{name}: not a GPU instance type"
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cfg["max_workers"]
    gpus = sum(t["resources"]["GPU"] * t["max_workers"] for t in gpu_types.values())
    # the command of the header comment: the job, its config and overrides, and that it uses the GPUs
    commands = re.findall(r"^#\s+(python -m jobs\.\S+.*?)$", CLUSTER.read_text(encoding="utf-8"), re.MULTILINE)
    assert commands, "the header comment shows no `python -m jobs...` command"
    for command in commands:
        problems, job = entrypoint_problems(command)
        assert not problems, problems
        assert job.cluster.use_gpu and job.cluster.actor_num_gpus > 0, f"{command}: leaves the GPU workers idle"
        assert job.cluster.num_workers <= gpus and job.cluster.actors * job.cluster.actor_num_gpus <= gpus
        assert str(job.run_dir).startswith(SHARED + "/"), f"{command}: run_dir is not on the shared storage"
    setup = "\n".join(cfg["setup_commands"])
    assert f" {SHARED} " in setup + " " and "pip install -e ~/cemr" in setup
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])


# ----------------------------------------------------------------------------------------------
# The KubeRay RayJob
# ----------------------------------------------------------------------------------------------


def rayjob_problems(job: dict) -> list[str]:
    """Fields KubeRay's v1 API does not have, and settings that do not fit together."""
    problems = []

    def unknown(where: str, given: dict, known: set[str]) -> None:
        problems.extend(f"{where}.{k}: not a KubeRay v1 field" for k in sorted(set(given) - known))

    if (job.get("apiVersion"), job.get("kind")) != ("ray.io/v1", "RayJob"):
        problems.append("not a ray.io/v1 RayJob")
    spec = job.get("spec", {})
    unknown("spec", spec, RAYJOB_SPEC)
    if spec.get("submissionMode", "K8sJobMode") not in SUBMISSION_MODES:
        problems.append(f"spec.submissionMode {spec['submissionMode']!r}")
    cluster = spec.get("rayClusterSpec", {})
    unknown("spec.rayClusterSpec", cluster, CLUSTER_SPEC)
    unknown("spec.rayClusterSpec.headGroupSpec", cluster.get("headGroupSpec", {}), HEAD_GROUP)
    unknown("spec.rayClusterSpec.autoscalerOptions", cluster.get("autoscalerOptions", {}), AUTOSCALER)
    autoscaling = cluster.get("enableInTreeAutoscaling") is True
    for group in cluster.get("workerGroupSpecs", []):
        where = f"workerGroupSpecs[{group.get('groupName')}]"
        unknown(where, group, WORKER_GROUP)
        lo, n, hi = group.get("minReplicas", 0), group.get("replicas", 0), group.get("maxReplicas", 2**31 - 1)
        if not lo <= n <= hi:
            problems.append(f"{where}: replicas {n} outside minReplicas {lo} .. maxReplicas {hi}")
        if lo != hi and not autoscaling:
            problems.append(f"{where}: minReplicas {lo} != maxReplicas {hi} but enableInTreeAutoscaling is not "
                            f"true: KubeRay keeps {n} replicas and nothing scales")
    if cluster.get("rayVersion") != ray.__version__:
        problems.append(f"rayVersion {cluster.get('rayVersion')!r}, installed ray {ray.__version__}")
    for c in _containers(cluster):
        tag = c["image"].rsplit(":", 1)[-1]
        if not tag.startswith(ray.__version__ + "-"):
            problems.append(f"{c['name']}: image {c['image']} is not ray {ray.__version__}")
    return problems


def _containers(cluster: dict) -> list[dict]:
    groups = [cluster.get("headGroupSpec", {})] + cluster.get("workerGroupSpecs", [])
    return [c for g in groups for c in g.get("template", {}).get("spec", {}).get("containers", [])]


def _gpus(group: dict) -> float:
    res = [c.get("resources", {}) for c in group["template"]["spec"]["containers"]]
    return sum(float(r.get("limits", {}).get(GPU, 0)) for r in res)


def test_the_rayjob_uses_kuberay_fields_and_scales_its_gpu_workers():
    job = _load(RAYJOB)
    assert rayjob_problems(job) == []
    bad = copy.deepcopy(job)
    del bad["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"]
    bad["spec"]["shutdownAfterJobFinish"] = True
    assert rayjob_problems(bad) == ["spec.shutdownAfterJobFinish: not a KubeRay v1 field",
                                    ("workerGroupSpecs[gpu]: minReplicas 0 != maxReplicas 4 but "
                                     "enableInTreeAutoscaling is not true: KubeRay keeps 2 replicas and nothing scales")]


def test_the_rayjob_requests_the_gpus_its_entrypoint_needs_and_mounts_the_shared_volume():
    job = _load(RAYJOB)
    spec, cluster = job["spec"], job["spec"]["rayClusterSpec"]
    problems, cfg = entrypoint_problems(spec["entrypoint"])
    assert not problems, problems
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"].get("num-gpus") == "0" and _gpus(head) == 0  # no training on the head
    gpu_groups = [g for g in cluster["workerGroupSpecs"] if _gpus(g) > 0]
    assert gpu_groups, "no worker group asks for a GPU"
    for g in gpu_groups:
        for c in g["template"]["spec"]["containers"]:
            r = c["resources"]
            assert r["requests"].get(GPU) == r["limits"].get(GPU), f"{c['name']}: GPU requests != limits"
            assert c["image"].endswith("-gpu"), f"{c['name']}: a CPU image on a GPU pod"
        assert any(t.get("key") == GPU for t in g["template"]["spec"].get("tolerations", []))
    gpus = sum(_gpus(g) * g["maxReplicas"] for g in gpu_groups)
    assert cfg.cluster.use_gpu and cfg.cluster.actor_num_gpus > 0
    assert cfg.cluster.num_workers <= gpus and cfg.cluster.actors * cfg.cluster.actor_num_gpus <= gpus
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] and env["env_vars"]["CEMR_DATA_DIR"].startswith(SHARED + "/")
    assert str(cfg.run_dir).startswith(SHARED + "/")
    pins = _pins()
    for req in env["pip"]:
        name, _, version = req.partition("==")
        if version:
            assert pins.get(name) == version, f"runtimeEnvYAML pins {req}, pyproject.toml {pins.get(name)}"
    for g in [head, *cluster["workerGroupSpecs"]]:
        pod = g["template"]["spec"]
        claims = {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        for c in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert mounts.get(SHARED) in claims, f"{c['name']}: {SHARED} is not the shared volume claim"
