"""Shared fixtures of the worker tests: a real two-node Ray cluster."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).parent / "ray")


@dataclass(frozen=True)
class RayCluster:
    """A head node and a worker node started with ``ray start``; ``env`` holds the cluster's auth token."""

    address: str
    env: dict[str, str]
    worker_node: subprocess.Popen[bytes]  # its process group: kill it to lose the node

    def alive_nodes(self) -> int:
        """How many nodes the cluster sees alive, asked from a fresh driver process."""
        probe = "import ray; ray.init(address=%r, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
        run = subprocess.run([sys.executable, "-c", probe % self.address], env=self.env, capture_output=True,
                             text=True, timeout=120)
        return int(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else 0


@pytest.fixture()
def ray_cluster() -> Iterator[RayCluster]:
    """A head node and a worker node of one CPU each on this machine, stopped (and only they) at the end."""
    temp = tempfile.mkdtemp(prefix="arc-rc-", dir="/tmp")  # Ray's socket paths must stay short
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0",
           # notice a dead node within seconds rather than the default half minute
           "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
           "RAY_health_check_failure_threshold": "3"}
    common = ["--block", "--num-cpus", "1", "--disable-usage-stats"]
    nodes = [subprocess.Popen(
        [RAY, "start", "--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard", "false", *common],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )]
    try:
        deadline = time.monotonic() + 180
        cluster = RayCluster(address, env, nodes[0])
        while cluster.alive_nodes() < 1:
            assert nodes[0].poll() is None and time.monotonic() < deadline, "the head node did not start"
            time.sleep(1)
        nodes.append(subprocess.Popen(
            [RAY, "start", "--address", address, *common],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        ))
        cluster = RayCluster(address, env, nodes[1])
        while cluster.alive_nodes() < 2:
            assert nodes[1].poll() is None and time.monotonic() < deadline, "the worker node did not join"
            time.sleep(1)
        yield cluster
    finally:
        for node in reversed(nodes):  # ``ray start --block`` stops what it started on SIGTERM
            _stop(node)
        shutil.rmtree(temp, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(node: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(node.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        node.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)
