"""A search on a two-node Ray cluster with a PostgreSQL store loses its worker node midway and still completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archetype.result import TrialState
from archetype.store import Store

pytestmark = pytest.mark.slow

TRIALS = 7


def test_a_search_survives_losing_a_node_and_stores_every_trial_once(
    ray_cluster, postgres_url: str, tmp_path: Path
) -> None:
    address, env, worker_node = ray_cluster.address, ray_cluster.env, ray_cluster.worker_node
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
    assert ray_cluster.alive_nodes() == 1
