"""A search joins a real two-node Ray cluster (``ray start --head`` and ``ray start --address``) on this machine."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from archetype.store import Store

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    probe = "import ray; ray.init(address=%r, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    run = subprocess.run([sys.executable, "-c", probe % address], env=env, capture_output=True, text=True, timeout=120)
    return int(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else 0


@pytest.fixture()
def cluster():
    """A head node and a worker node of one CPU each, stopped (and only they) at the end."""
    temp = tempfile.mkdtemp(prefix="arc-rc-", dir="/tmp")  # Ray's socket paths must stay short
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--block", "--num-cpus", "1", "--disable-usage-stats"]
    nodes = [subprocess.Popen(
        [RAY, "start", "--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard", "false", *common],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )]
    try:
        deadline = time.monotonic() + 180
        while _alive_nodes(address, env) < 1:
            assert nodes[0].poll() is None and time.monotonic() < deadline, "the head node did not start"
            time.sleep(1)
        nodes.append(subprocess.Popen(
            [RAY, "start", "--address", address, *common],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        ))
        while _alive_nodes(address, env) < 2:
            assert nodes[1].poll() is None and time.monotonic() < deadline, "the worker node did not join"
            time.sleep(1)
        yield address, env
    finally:
        for node in reversed(nodes):  # ``ray start --block`` stops what it started on SIGTERM
            os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_search_runs_on_a_two_node_cluster(cluster, tmp_path: Path) -> None:
    address, env = cluster
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    run = subprocess.run(
        [sys.executable, "-m", "archetype", "search", "--space", "conv-small", "--latency-ms", "5", "--trials", "4",
         "--epochs", "1", "--workers", "2", "--ray-address", address, "--storage", url, "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    with Store.open(url) as store:
        trials = store.trials(json.loads(run.stdout)["study"])
    assert [t.number for t in trials] == [1, 2, 3, 4]
    assert all(t.state.value in ("complete", "pruned") and t.attempt == 1 for t in trials), [t.error for t in trials]
    assert _alive_nodes(address, env) == 2  # the search used the cluster and left it running
