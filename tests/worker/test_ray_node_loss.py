"""A search on a two-node Ray cluster with a PostgreSQL store loses its worker node midway and still completes."""

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
from pathlib import Path

import pytest

from archetype.result import TrialState
from archetype.store import Store

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")
TRIALS = 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    probe = "import ray; ray.init(address=%r, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    run = subprocess.run([sys.executable, "-c", probe % address], env=env, capture_output=True, text=True, timeout=120)
    return int(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else 0


def _stop(node: subprocess.Popen[bytes], how: signal.Signals) -> None:
    try:
        os.killpg(node.pid, how)
    except ProcessLookupError:
        return
    try:
        node.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)


@pytest.fixture()
def cluster() -> Iterator[tuple[str, dict[str, str], subprocess.Popen[bytes]]]:
    """A head node and a worker node of one CPU each; the worker node's process group is handed to the test."""
    temp = tempfile.mkdtemp(prefix="arc-nl-", dir="/tmp")  # Ray's socket paths must stay short
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
        yield address, env, nodes[1]
    finally:
        for node in reversed(nodes):  # ``ray start --block`` stops what it started on SIGTERM
            _stop(node, signal.SIGTERM)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_search_survives_losing_a_node_and_stores_every_trial_once(
    cluster: tuple[str, dict[str, str], subprocess.Popen[bytes]], postgres_url: str, tmp_path: Path
) -> None:
    address, env, worker_node = cluster
    search = subprocess.Popen(
        [sys.executable, "-m", "archetype", "search", "--space", "conv-small", "--latency-ms", "5",
         "--trials", str(TRIALS), "--epochs", "1", "--workers", "2", "--ray-address", address,
         "--storage", postgres_url, "--study", "node-loss", "--json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:  # both workers started and busy: one of them is on the worker node
            assert search.poll() is None, search.communicate()[1]
            assert time.monotonic() < deadline, "the search never had two trials running"
            try:
                with Store.open(postgres_url) as store:
                    states = [t.state for t in store.trials("node-loss")]
            except Exception:  # the study is not created yet
                states = []
            if states.count(TrialState.RUNNING) == 2 and len(states) - 2 >= 2:
                break
            time.sleep(0.2)
        os.killpg(worker_node.pid, signal.SIGKILL)  # the raylet and its workers, at once
        worker_node.wait(timeout=30)
        out, err = search.communicate(timeout=420)
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 0, err
    assert '"study": "node-loss"' in out  # Ray may print its own lines before the JSON
    with Store.open(postgres_url) as store:
        trials = store.trials("node-loss")
        assert store.get_study("node-loss").status == "complete"
    assert [t.number for t in trials] == list(range(1, TRIALS + 1))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.error for t in trials]
    assert any(t.attempt == 2 for t in trials), "no trial was lost with the node and run again"
    assert _alive_nodes(address, env) == 1
