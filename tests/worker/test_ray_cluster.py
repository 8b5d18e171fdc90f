"""A search joins a real two-node Ray cluster (``ray start --head`` and ``ray start --address``) on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from archetype.store import Store

pytestmark = pytest.mark.slow


def test_search_runs_on_a_two_node_cluster(ray_cluster, tmp_path: Path) -> None:
    address, env = ray_cluster.address, ray_cluster.env
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
    assert ray_cluster.alive_nodes() == 2  # the search used the cluster and left it running
