"""Ray fixtures: an in-process local instance, and a real head started with ``ray start``.

Both stay on this machine and on loopback. Neither touches Ray instances of other processes:
``ray.init(address="local")`` never joins a cluster found in /tmp/ray, and the head gets its own
``--temp-dir``, its own free ports and its own auth token (``RAY_AUTH_TOKEN`` in its environment,
not ~/.ray/auth_token). It is stopped by killing exactly the processes whose command line names
that temp dir; ``ray stop`` is not used because it kills every Ray process of the user on the
machine, other sessions' included.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance with 2 CPUs for the module (no dashboard, progress bars off)."""
    import ray

    from cluster.runtime import quiet_data_context

    if ray.is_initialized():
        ray.shutdown()
    # workers import cemr/cluster from the checkout, whether or not it is installed, and the
    # fakes of these tests (``fakes:KeywordPredictor``)
    pythonpath = os.pathsep.join(p for p in [str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")] if p)
    info = ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
    )
    quiet_data_context()
    try:
        yield info
    finally:
        ray.shutdown()


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together while picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class RayHead:
    dashboard_url: str  # http://127.0.0.1:<port>, for `ray job submit --address`
    gcs_address: str  # 127.0.0.1:<port>, for ray.init(address=...)
    env: dict  # environment with the head's auth token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN)
    temp_dir: str


def _start_time(pid: int) -> int | None:
    """Start time of ``pid`` (clock ticks since boot), or None when it is gone: with the pid, it
    identifies a process even if the pid is reused later."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _process_table() -> dict[int, tuple[int, str]]:
    """``{pid: (parent pid, command line)}`` of every process, from /proc (Linux)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry)] = (ppid, cmdline)
    return table


def head_pids(temp_dir: str) -> list[int]:
    """The processes of the head started with ``--temp-dir=temp_dir``: those whose command line
    names that (unique) directory, and all their descendants (Ray workers rename themselves
    ``ray::...`` and no longer show it)."""
    table = _process_table()
    named = re.compile(re.escape(temp_dir.rstrip("/")) + r"(/|\s|$)")
    ours = {pid for pid, (_, cmd) in table.items() if named.search(cmd) and pid != os.getpid()}
    grew = True
    while grew:
        kids = {pid for pid, (ppid, _) in table.items() if ppid in ours and pid not in ours}
        ours |= kids
        grew = bool(kids)
    return sorted(ours)


def _stop_head(temp_dir: str, timeout: float = 8.0) -> None:
    """Stop the head started with ``--temp-dir=temp_dir``: SIGTERM its processes, then SIGKILL
    those still alive (checked by pid and start time, so a reused pid is never hit)."""
    procs = [(pid, _start_time(pid)) for pid in head_pids(temp_dir)]
    procs = [(pid, st) for pid, st in procs if st is not None]

    def alive() -> list[int]:
        return [pid for pid, st in procs if _start_time(pid) == st]

    for pid in alive():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in alive():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:  # answered (e.g. 401 without a token): it is up
            return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answered at {url} after {timeout:.0f} s") from None
            time.sleep(0.5)


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray head (``ray start --head``) with the dashboard / job server on loopback."""
    ray_exe = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    gcs_port, dash_port, client_port, agent_port, agent_grpc, env_agent, metrics = free_ports(7)
    temp_dir = tempfile.mkdtemp(prefix="cemr_rh_", dir="/tmp")  # short: Unix socket paths
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_USAGE_STATS_ENABLED="0",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p),
    )
    cmd = [
        ray_exe, "start", "--head",
        f"--port={gcs_port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash_port}",
        f"--ray-client-server-port={client_port}",
        f"--dashboard-agent-listen-port={agent_port}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={env_agent}",
        f"--metrics-export-port={metrics}",
        "--num-cpus=1",
        "--object-store-memory=100000000",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    try:
        try:
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"ray start --head did not return in 180 s: {exc.stdout}\n{exc.stderr}")
        if out.returncode != 0:
            pytest.fail(f"ray start --head failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        url = f"http://127.0.0.1:{dash_port}"
        _wait_http(f"{url}/api/version", timeout=60)
        yield RayHead(dashboard_url=url, gcs_address=f"127.0.0.1:{gcs_port}", env=env, temp_dir=temp_dir)
    finally:
        _stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
