"""Ray runtime: resource sizing (pure), starting/joining Ray, a real head with `ray job submit`,
and the shipped Ray configs."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from cemr.config import ClusterConfig, SelfTrainConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "ray_configs").rglob("*.yaml"))


def project_pins() -> set[str]:
    """The ``name==version`` requirements of pyproject.toml (Python 3.10 has no tomllib)."""
    return set(re.findall(r'^\s*"([A-Za-z0-9_.\[\],-]+==[^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"),
                          re.M))


# --- pure pieces ------------------------------------------------------------------------------


def test_actor_resources_ask_for_the_configured_gpus(caplog):
    from cluster.runtime import GPUUnavailable, actor_device, actor_resources

    cfg = ClusterConfig(actors=2, actor_num_cpus=0.5, actor_num_gpus=0.5)
    assert actor_resources(cfg, {"CPU": 8.0, "GPU": 1.0}) == {"num_cpus": 0.5, "num_gpus": 0.5, "memory": None,
                                                              "cpu_fallback": False}
    # no GPU: an error naming what was asked for and the keys, not actors quietly on the CPU
    with pytest.raises(GPUUnavailable, match=r"pseudo-labeling .* asked for 1 CPU, 1 GPU .* the cluster has 2 CPU"
                                             r".*cluster.actor_num_gpus.*cluster.cpu_fallback=true") as err:
        actor_resources(cfg, {"CPU": 2.0})
    assert err.value.needed == {"CPU": 1.0, "GPU": 1.0} and err.value.present == {"CPU": 2.0}
    with pytest.raises(GPUUnavailable, match="asked for 2 CPU, 4 GPU"):  # 2 actors x 2 GPUs
        actor_resources(replace(cfg, actor_num_gpus=2.0, actor_num_cpus=1.0), {"CPU": 8.0, "GPU": 1.0})
    # ... unless the config asks for the fallback: then it says so, loudly and in the result
    with caplog.at_level("WARNING", logger="cluster.runtime"):
        fell = actor_resources(replace(cfg, cpu_fallback=True), {"CPU": 2.0})
    assert fell == {"num_cpus": 0.5, "num_gpus": 0.0, "memory": None, "cpu_fallback": True}
    assert any("CPU FALLBACK" in r.getMessage() for r in caplog.records)
    assert actor_resources(replace(cfg, actor_num_gpus=0.0), {"CPU": 2.0})["cpu_fallback"] is False

    mem = replace(cfg, actor_memory_mb=1536, actor_num_gpus=0.0)
    assert actor_resources(mem, {"CPU": 2.0, "memory": 8 * 2**30})["memory"] == 1536 * 2**20
    with pytest.raises(ValueError, match="actor_memory_mb=1536 but the cluster has 1024 MiB"):
        actor_resources(mem, {"CPU": 2.0, "memory": 2**30})
    with pytest.raises(ValueError, match="actor_memory_mb must be > 0"):
        actor_resources(replace(mem, actor_memory_mb=0), {"CPU": 2.0})
    assert actor_device(0.0) == "cpu" and actor_device(0.5) == "cuda"
    with pytest.raises(ValueError, match="actor_num_cpus=4.0 but the cluster has 2 CPUs"):
        actor_resources(replace(mem, actor_num_cpus=4.0), {"CPU": 2.0})
    with pytest.raises(ValueError, match=">= 0"):
        actor_resources(replace(cfg, actor_num_cpus=-1.0), {"CPU": 2.0})


def test_worker_resources_ask_for_a_gpu_per_worker():
    from cluster.runtime import GPUUnavailable, worker_resources

    cfg = ClusterConfig(num_workers=2, use_gpu=True, cpus_per_worker=0.5)
    assert worker_resources(cfg, {"CPU": 2.0, "GPU": 2.0}) == {"num_workers": 2, "use_gpu": True,
                                                               "cpus_per_worker": 0.5, "cpu_fallback": False}
    with pytest.raises(GPUUnavailable, match=r"Ray Train .* asked for 1 CPU, 2 GPU .* has 2 CPU, 1 GPU"
                                             r".*cluster.num_workers, cluster.use_gpu"):
        worker_resources(cfg, {"CPU": 2.0, "GPU": 1.0})
    assert worker_resources(replace(cfg, cpu_fallback=True), {"CPU": 2.0}) == {
        "num_workers": 2, "use_gpu": False, "cpus_per_worker": 0.5, "cpu_fallback": True}
    assert worker_resources(replace(cfg, use_gpu=False), {"CPU": 2.0})["use_gpu"] is False


class FakeCluster:
    """Cluster totals that change at given poll counts, a request log and a fake clock (no sleep)."""

    def __init__(self, totals: list[dict]):
        self.totals, self.polls, self.requests, self.now = totals, 0, [], 0.0

    def resources(self) -> dict:
        out = self.totals[min(self.polls, len(self.totals) - 1)]
        self.polls += 1
        return out

    def sleep(self, s: float) -> None:
        self.now += s


def _wait(cluster: FakeCluster, bundles, wait_s: float):
    from cluster.runtime import wait_for_resources

    return wait_for_resources(bundles, what="stage", keys="cluster.x", wait_s=wait_s, poll_s=1.0,
                              resources_fn=cluster.resources, request_fn=cluster.requests.append,
                              sleep=cluster.sleep, clock=lambda: cluster.now)


def test_wait_for_resources_asks_the_autoscaler_and_waits_for_the_gpus():
    bundles = [{"CPU": 1.0, "GPU": 1.0}] * 2
    head, one, two = {"CPU": 4.0}, {"CPU": 8.0, "GPU": 1.0}, {"CPU": 12.0, "GPU": 2.0}
    up = FakeCluster([head, head, one, two])
    assert _wait(up, bundles, wait_s=60) == two
    assert up.requests == [bundles, []]  # asked for the bundles, withdrawn once they came
    assert up.now == 3.0  # three polls of 1 s
    ready = FakeCluster([two])
    assert _wait(ready, bundles, wait_s=60) == two and ready.requests == []  # enough: no request, no wait


def test_wait_for_resources_gives_up_after_the_wait_naming_the_resources():
    from cluster.runtime import GPUUnavailable

    never = FakeCluster([{"CPU": 4.0, "node:10.0.0.1": 1.0, "memory": 1e9}])
    with pytest.raises(GPUUnavailable, match=r"stage asked for 2 CPU, 2 GPU \(2 x \{'CPU': 1.0, 'GPU': 1.0\}\) but "
                                             r"the cluster has 4 CPU after waiting 5 s \(cluster.gpu_wait_s=5\)"
                                             r".*\(cluster.x\).*cluster.cpu_fallback=true") as err:
        _wait(never, [{"CPU": 1.0, "GPU": 1.0}] * 2, wait_s=5)
    assert never.requests == [[{"CPU": 1.0, "GPU": 1.0}] * 2, []]  # the request is withdrawn on failure too
    assert never.now == 5.0 and err.value.waited_s == 5.0
    with pytest.raises(ValueError, match="gpu_wait_s must be a finite number >= 0"):
        _wait(FakeCluster([{}]), [{"GPU": 1.0}], wait_s=-1)


def test_shortfall_and_totals():
    from cluster.runtime import shortfall, total_resources

    assert total_resources([{"CPU": 0.1, "GPU": 0.0}] * 10) == {"CPU": pytest.approx(1.0)}
    assert shortfall(total_resources([{"CPU": 0.1}] * 10), {"CPU": 1.0}) == {}  # float sums still fit
    assert shortfall({"CPU": 1.0, "GPU": 2.0}, {"CPU": 4.0, "GPU": 0.5}) == {"GPU": 1.5}


@pytest.mark.parametrize(
    "requested, gpu_ids, visible, device",
    [
        ("cpu", [], None, "cpu"),
        ("cpu", [1], "1", "cpu"),
        ("cuda", [2], "2", "cuda:0"),  # Ray narrows CUDA_VISIBLE_DEVICES to the assigned GPU
        ("cuda", ["3"], "1,2,3", "cuda:2"),  # several visible: the assigned one's index
        ("cuda", [1], None, "cuda:1"),  # Ray told not to set the variable: the GPU id itself
        ("cuda", [0], "", "cuda:0"),
    ],
)
def test_assigned_device_is_the_gpu_ray_gave(requested, gpu_ids, visible, device):
    from cluster.runtime import assigned_device

    assert assigned_device(requested, gpu_ids, visible) == device


def test_assigned_device_refuses_a_gpu_it_was_not_given():
    from cluster.runtime import assigned_device, check_worker_device

    with pytest.raises(RuntimeError, match="assigned no GPU"):
        assigned_device("cuda", [], "0")
    with pytest.raises(RuntimeError, match="CUDA_VISIBLE_DEVICES='0,1' does not list it"):
        assigned_device("cuda", [2], "0,1")
    with pytest.raises(ValueError, match="expected 'cpu' or 'cuda'"):
        assigned_device("mps", [], None)
    with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
        check_worker_device([0], "cpu")
    check_worker_device([0], "cuda")
    check_worker_device([], "cpu")


def test_target_address_prefers_the_config_then_the_environment():
    from cluster.runtime import target_address

    assert target_address(ClusterConfig(), {}) is None
    assert target_address(ClusterConfig(), {"RAY_ADDRESS": "10.0.0.1:6379"}) == "10.0.0.1:6379"
    assert target_address(ClusterConfig(address="head:6379"), {"RAY_ADDRESS": "x:1"}) == "head:6379"
    assert target_address(ClusterConfig(address="local"), {"RAY_ADDRESS": "x:1"}) is None
    assert target_address(ClusterConfig(), {"RAY_ADDRESS": ""}) is None


def test_ray_version_is_the_pinned_one():
    from cluster.runtime import ray_version

    ray_pin = next(p for p in project_pins() if p.startswith("ray["))
    assert ray_pin.endswith("==" + ray_version())


# --- a local instance: start, fake GPUs, shut down --------------------------------------------


@pytest.mark.ray
def test_init_ray_local_with_fake_gpus_schedules_gpu_actors(tmp_path, monkeypatch):
    """GPU settings on a CPU machine: a local instance declaring 1 (fake) GPU; a one-worker Ray
    Train sizing gets it, a two-worker one waits and fails; two actors with 0.5 GPU each get
    scheduled and their predictor is built for the GPU Ray assigned (``cuda:0``)."""
    import ray

    import fakes
    from cemr.corpus.shards import write_shards
    from cluster.pseudolabel import pseudo_label
    from cluster.runtime import GPUUnavailable, init_ray, shutdown_if_owned, worker_resources
    from cluster.train import scaling_config

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized(), "an earlier test module left Ray initialised"
    here = str(Path(__file__).parent)
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), here])}}
    ctx = init_ray(ClusterConfig(num_cpus=2), num_gpus=1, runtime_env=env, log_to_driver=False)
    try:
        assert ctx.owned and ctx.local and ctx.num_cpus == 2 and ctx.num_gpus == 1
        again = init_ray(ClusterConfig(num_cpus=2))  # already connected: reused, not owned
        assert not again.owned and again.address == ctx.address
        assert shutdown_if_owned(again) is False and ray.is_initialized()

        # Ray Train: the GPU per worker is asked for; two workers do not fit on one GPU
        train_cfg = load_config(None, ["cluster.use_gpu=true", "cluster.num_workers=1", "cluster.gpu_wait_s=0.5"])
        workers = worker_resources(train_cfg.cluster)
        assert workers["use_gpu"] and not workers["cpu_fallback"]
        assert scaling_config(train_cfg, workers).use_gpu
        with pytest.raises(GPUUnavailable, match="asked for 2 CPU, 2 GPU .* has 2 CPU, 1 GPU after waiting"):
            worker_resources(replace(train_cfg.cluster, num_workers=2))

        write_shards(fakes.corpus(40), tmp_path / "u", rows_per_shard=40, source="unlabeled")
        (tmp_path / "m").mkdir()
        cfg = ClusterConfig(actors=2, actor_num_cpus=0.5, actor_num_gpus=0.5, batch_size=16,
                            max_failed_fraction=0.5)  # a fifth of fakes.corpus fails by design
        res = pseudo_label(tmp_path / "u", tmp_path / "m", tmp_path / "out", 0.7, cfg, SelfTrainConfig(), 1,
                           predictor="fakes:KeywordPredictor")
        assert res.num_gpus_per_actor == 0.5 and sum(res.counts.values()) == 40 and not res.cpu_fallback
        devices = (tmp_path / "m" / "loads.log").read_text(encoding="utf-8").split()[1::2]
        assert devices == ["cuda:0", "cuda:0"]  # the (logical) GPU Ray assigned, shared at 0.5 each
    finally:
        assert shutdown_if_owned(ctx) is True
    assert not ray.is_initialized()


# --- a real head: ray start --head, ray job submit, joining it --------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_to_a_real_head(ray_head):
    ray_exe = str(Path(sys.executable).parent / "ray")
    cmd = [ray_exe, "job", "submit", "--address", ray_head.dashboard_url, "--", "python", "-c", "print(1)"]
    out = subprocess.run(cmd, env=ray_head.env, capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert re.search(r"^1$", out.stdout, re.M), log
    assert "succeeded" in log.lower(), log


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_without_the_token_is_refused(ray_head):
    """Token auth is on: a client without the token is turned away (the head is not open)."""
    ray_exe = str(Path(sys.executable).parent / "ray")
    env = {k: v for k, v in ray_head.env.items() if k != "RAY_AUTH_TOKEN"}
    env["RAY_AUTH_TOKEN_PATH"] = "/nonexistent/cemr_no_token"
    cmd = [ray_exe, "job", "submit", "--address", ray_head.dashboard_url, "--", "python", "-c", "print(1)"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0


JOIN_SCRIPT = """
import json, ray
from cemr.config import ClusterConfig
from cluster.runtime import init_ray, shutdown_if_owned
ctx = init_ray(ClusterConfig(), log_to_driver=False)
answer = ray.get(ray.remote(lambda: 41 + 1).remote())
print(json.dumps({"owned": ctx.owned, "local": ctx.local, "cpus": ctx.num_cpus, "answer": answer,
                  "shut": shutdown_if_owned(ctx), "after": ray.is_initialized()}))
"""


@pytest.mark.ray
@pytest.mark.slow
def test_init_ray_joins_the_cluster_named_by_ray_address(ray_head):
    """In a fresh interpreter (Ray caches the auth token per process), as a job driver would."""
    env = dict(ray_head.env, RAY_ADDRESS=ray_head.gcs_address)
    out = subprocess.run([sys.executable, "-c", JOIN_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # joined (not started): the head's single CPU, not this machine's
    assert got == {"owned": True, "local": False, "cpus": 1.0, "answer": 42, "shut": True, "after": False}


# --- shipped Ray configs ----------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "ray_configs")))
def test_every_ray_config_parses(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data


def test_cluster_launcher_config_has_a_gpu_worker_type():
    cfg = yaml.safe_load((ROOT / "ray_configs" / "cluster.yaml").read_text(encoding="utf-8"))
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    gpu_types = [name for name, t in types.items() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_types and all(types[n]["max_workers"] >= 1 for n in gpu_types)
    assert sum(types[n]["max_workers"] for n in gpu_types) <= cfg["max_workers"]
    assert any("pip install" in c for c in cfg["setup_commands"])
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])


def test_rayjob_manifest_runs_the_bootstrap_with_the_pinned_stack():
    import ray

    job = yaml.safe_load((ROOT / "ray_configs" / "rayjob.yaml").read_text(encoding="utf-8"))
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "jobs.bootstrap"]
    config = argv[argv.index("--config") + 1]
    overrides = [a for a in argv[argv.index("--config") + 2:] if "=" in a]
    cfg = load_config(ROOT / config, overrides)  # the config exists, and the overrides are valid keys
    assert cfg.name == "yidu_s4k" and cfg.run_dir.startswith("/")

    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] and runtime_env["env_vars"]["CEMR_DATA_DIR"]
    assert {p for p in runtime_env["pip"] if "==" in p} <= project_pins()  # same pins as the project
    spec = job["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray.__version__
    images = [c["image"] for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
              for c in g["template"]["spec"]["containers"]]
    assert all(img.split(":")[1].startswith(ray.__version__) for img in images)
    gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for g in spec["workerGroupSpecs"]
            for c in g["template"]["spec"]["containers"]]
    assert any(gpus)
