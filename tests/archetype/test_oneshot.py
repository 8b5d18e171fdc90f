"""One-shot search: supernet-scored candidates stored as trials, the best retrained and measured, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archetype.errors import SpecError
from archetype.objectives import Constraint
from archetype.runtime.measure import MeasureProtocol
from archetype.runtime.training import TrainConfig
from archetype.search import prepare_search, stored_spec
from archetype.spec import RunSpec
from archetype.store import Store
from archetype.worker.evaluator import TrainingEvaluator
from archetype.worker.executor import InlineExecutor

QUICK = MeasureProtocol(warmup=5, blocks=3, min_block_ms=2.0, retries=0)

SPEC = RunSpec(
    space="pool-positions", strategy="oneshot", trials=6, epochs=1, supernet_epochs=1, finalists=2, seed=1,
    constraints=(Constraint("latency_ms", "<=", 0.5),),
)


def _macs_latency(arch) -> float:
    """A stand-in latency predictor: 1 ms per million MACs."""
    return arch.macs() / 1e6


@pytest.fixture()
def store(tmp_path: Path):
    with Store.open(f"sqlite:///{tmp_path / 'oneshot.db'}") as store:
        yield store


@pytest.mark.slow
def test_oneshot_stores_scored_candidates_then_retrained_finalists(store: Store) -> None:
    evaluator = TrainingEvaluator(dataset="digits", target="cpu-torch", seed=1, train=TrainConfig(epochs=1, seed=1),
                                  protocol=QUICK)
    search = prepare_search(SPEC, evaluator)
    search.scoring.latency = _macs_latency
    report = search.run(store, executor=InlineExecutor())
    assert report.study.status == "complete"
    scored = [t for t in report.trials if "supernet_accuracy" in t.values]
    measured = [t for t in report.trials if "accuracy" in t.values]
    assert len(scored) == 6 and len(measured) == 2
    for t in scored:
        assert t.state.value == "complete" and 0.0 <= t.values["supernet_accuracy"] <= 1.0
        assert t.values["latency_ms"] == pytest.approx(t.values["macs"] / 1e6)
        assert "supernet_score_s" in t.timings and "accuracy" not in t.values
    best = sorted(scored, key=lambda t: -t.values["supernet_accuracy"])
    feasible = [t.arch_key for t in best if t.values["latency_ms"] <= 0.5]
    assert [t.arch_key for t in measured] == list(dict.fromkeys(feasible))[:2]
    assert all(t.number > 6 for t in measured)
    assert {t.number for t in report.front} <= {t.number for t in measured}
    assert store.strategy_state(report.study.name)["strategy"] == "oneshot"

    resumed = prepare_search(stored_spec(store, report.study.name, trials=9), evaluator)
    resumed.scoring.latency = _macs_latency
    again = resumed.run(store, executor=InlineExecutor(), resume=True)
    rescored = [t for t in again.trials if "supernet_accuracy" in t.values]
    remeasured = [t for t in again.trials if "accuracy" in t.values]
    assert len(rescored) == 9 and [t.number for t in rescored[:6]] == [t.number for t in scored]
    best = sorted(rescored, key=lambda t: -t.values["supernet_accuracy"])
    top = list(dict.fromkeys(t.arch_key for t in best if t.values["latency_ms"] <= 0.5))[:2]
    assert set(top) <= {t.arch_key for t in remeasured}
    assert len(remeasured) == len({t.arch_key for t in remeasured})  # a finalist is trained once


@pytest.mark.slow
def test_cli_oneshot_with_a_mixture_runs_on_ray(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    (tmp_path / "run.yaml").write_text("space: pool-positions\nsupernet_epochs: 1\nfinalists: 1\n")
    env = {**os.environ, "COLUMNS": "200"}
    run = subprocess.run(
        [sys.executable, "-m", "archetype", "search", "--spec", "run.yaml", "--strategy", "oneshot",
         "--supernets", "2", "--trials", "4", "--epochs", "1", "--latency-ms", "5", "--target", "cpu-torch",
         "--storage", url, "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["trials"] == 4 + 1
    with Store.open(url) as store:
        study = store.get_study(printed["study"])
        trials = store.trials(study.name)
    assert study.spec["supernets"] == 2 and study.spec["strategy"] == "oneshot"
    assert sum("supernet_accuracy" in t.values for t in trials) == 4
    assert sum("accuracy" in t.values for t in trials) == 1
    assert printed["front"] and all("accuracy" in t["values"] for t in printed["front"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"supernets": 0, "strategy": "oneshot"}, "supernets must be a positive integer"),
        ({"supernets": 2}, "needs strategy 'oneshot'"),
        ({"strategy": "oneshot", "scheduler": "asha"}, "runs without a scheduler"),
        ({"strategy": "oneshot", "supernet_epochs": 0}, "supernet_epochs must be a positive integer"),
    ],
)
def test_bad_oneshot_settings_are_one_clear_error(fields, message) -> None:
    with pytest.raises(SpecError, match=message):
        RunSpec.from_mapping({"space": "pool-positions", **fields})
