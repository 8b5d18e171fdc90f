"""The CLI as a user runs it: a real search on the digits data through Ray, then the store read back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from archetype.objectives import DEFAULT_OBJECTIVES
from archetype.pareto import pareto_front
from archetype.store import Store

pytestmark = pytest.mark.slow


def _archetype(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "archetype", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_search_stores_trials_and_prints_the_front(tmp_path):
    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    budget = 0.2
    run = _archetype("search", "--space", "conv-small", "--latency-ms", str(budget), "--trials", "5",
                     "--epochs", "3", "--storage", url, "--seed", "1", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["trials"] == 5

    with Store.open(url) as store:
        study = store.get_study(printed["study"])
        trials = store.trials(study.name)
    assert study.status == "complete"
    assert [t.number for t in trials] == [1, 2, 3, 4, 5]
    assert len({t.arch_key for t in trials}) == 5
    for t in trials:
        assert t.state.value in ("complete", "pruned"), t.error
        assert t.values["latency_ms"] > 0 and t.values["params"] > 0 and t.values["macs"] > 0
        assert t.target == "cpu-ort" and "onnxruntime" in t.fingerprint
        if t.state.value == "complete":
            assert 0.0 <= t.values["accuracy"] <= 1.0 and t.values["latency_ms"] <= budget
        else:
            assert t.values["latency_ms"] > budget and "accuracy" not in t.values

    feasible = [t for t in trials if t.state.value == "complete"]
    assert feasible, "the budget is loose enough that some conv-small model on digits meets it"
    expected = {feasible[i].number for i in pareto_front([t.values for t in feasible], DEFAULT_OBJECTIVES)}
    assert {t["number"] for t in printed["front"]} == expected
    assert max(t.values["accuracy"] for t in feasible) > 0.5  # trained, not guessing (chance is 0.1)

    table = _archetype("show", study.name, "--storage", url, cwd=tmp_path)
    assert table.returncode == 0 and study.name in table.stdout and "conv_bn_act" in table.stdout
    listing = _archetype("studies", "--storage", url, "--json", cwd=tmp_path)
    assert [s["name"] for s in json.loads(listing.stdout)] == [study.name]

    # a budget no architecture can meet: one line, exit 2, the first study untouched
    impossible = _archetype("search", "--space", "conv-small", "--latency-ms", "0.000001", "--trials", "2",
                            "--storage", url, cwd=tmp_path)
    assert impossible.returncode == 2
    last = impossible.stderr.strip().splitlines()[-1]
    assert "no trial met the latency budget of 1e-06 ms" in last
    with Store.open(url) as store:
        assert [t.values for t in store.trials(study.name)] == [t.values for t in trials]
        assert len(store.list_studies()) == 2


def test_a_killed_search_resumes_without_running_or_storing_a_trial_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    driver = subprocess.Popen(
        [sys.executable, "-m", "archetype", "search", "--space", "conv-small", "--latency-ms", "5", "--trials", "3",
         "--epochs", "2", "--study", "cut", "--storage", url],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )

    def states() -> list[str]:
        try:
            with Store.open(url) as store:
                return [t.state.value for t in store.trials("cut")]
        except Exception:  # the study is not created yet
            return []

    deadline = time.monotonic() + 300
    while states()[-2:] != ["complete", "running"]:  # one trial done, the next one under way
        assert driver.poll() is None and time.monotonic() < deadline, states()
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started, as a crash would
    driver.wait()
    with Store.open(url) as store:
        before = store.trials("cut")
    finished = [t for t in before if t.state.value != "running"]
    assert before[-1].state.value == "running" and store.get_study("cut").status == "running"

    run = _archetype("search", "--resume", "cut", "--storage", url, "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with Store.open(url) as store:
        after = store.trials("cut")
        assert store.get_study("cut").status == "complete"
    assert [t.number for t in after] == [1, 2, 3] and len({t.arch_key for t in after}) == 3
    assert all(t.state.value in ("complete", "pruned") for t in after)
    assert after[: len(finished)] == finished  # finished trials are kept as they were, not run again
    requeued = after[len(before) - 1]
    assert requeued.arch_key == before[-1].arch_key and requeued.attempt == 2

    refused = _archetype("search", "--resume", "cut", "--space", "mobile", "--storage", url, cwd=tmp_path)
    assert refused.returncode == 2 and "drop --space" in refused.stderr
