"""``archetype front`` and ``--strategy-option`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from archetype.cli import main
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.result import Result, TrialState
from archetype.store import Store

VALUES = [(0.5, 0.5), (0.9, 0.6), (0.97, 3.0), (0.92, 1.5), (0.8, 1.0)]


@pytest.fixture
def study_db(tmp_path):
    url = f"sqlite:///{tmp_path / 'front.db'}"
    with Store.open(url) as store:
        store.create_study("s", space="conv-small", target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                           constraints=(Constraint.parse("latency_ms<=2"),), spec={"space": "conv-small"})
        for i, (acc, lat) in enumerate(VALUES):
            store.record_trial("s", {"input": "Image[1,8,8]", "slots": []}, f"{i:016d}",
                               Result(TrialState.COMPLETE, {"accuracy": acc, "latency_ms": lat}))
    return url


@pytest.mark.slow
def test_front_prints_the_feasible_front_knee_and_hypervolume(study_db, tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    run = subprocess.run([sys.executable, "-m", "archetype", "front", "s", "--storage", study_db, "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert [t["values"]["accuracy"] for t in printed["front"]] == [0.5, 0.9, 0.92]
    assert printed["knee"] == printed["front"][1]["number"]
    assert printed["reference"] == {"accuracy": 0.5, "latency_ms": 2.0}  # the latency budget, the worst accuracy
    assert printed["hypervolume"] == pytest.approx(0.4 * 1.4 + 0.02 * 0.5)
    table = subprocess.run([sys.executable, "-m", "archetype", "front", "s", "--storage", study_db],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr
    assert "3 of 5 trials on the front" in table.stdout and "hypervolume 0.57" in table.stdout


def test_front_of_a_missing_study_is_one_line(study_db, capsys):
    assert main(["front", "nope", "--storage", study_db]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nope" in err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["population=many"], "strategy 'evolution': option 'population' must be an integer >= 2, got 'many'"),
        (["colour=red"], "strategy 'evolution': unknown option 'colour'; options: population, sample"),
        (["population"], "--strategy-option 'population': expected KEY=VALUE"),
    ],
)
def test_bad_strategy_options_are_named_before_anything_is_stored(tmp_path, capsys, options, message):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    argv = ["search", "--space", "conv-small", "--latency-ms", "1", "--strategy", "evolution", "--storage", url]
    for option in options:
        argv += ["--strategy-option", option]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    with Store.open(url) as store:
        assert store.list_studies() == []


def test_strategy_options_in_a_run_spec_reach_the_strategy(tmp_path):
    from archetype.search import prepare_search
    from archetype.spec import RunSpec

    path = tmp_path / "spec.yaml"
    path.write_text("space: conv-small\nstrategy: simq\nstrategy_options: {predictor: svr, batch: 3}\n"
                    "constraints: ['latency_ms<=1']\n")
    search = prepare_search(RunSpec.from_yaml(path))
    assert (search.strategy.predictor, search.strategy.batch) == ("svr", 3)
    path.write_text("space: conv-small\nstrategy_options: [1, 2]\n")
    with pytest.raises(Exception, match="strategy_options must map option names to values"):
        RunSpec.from_yaml(path)


@pytest.mark.slow
def test_simq_searches_the_precision_per_slot_from_the_command_line(tmp_path):
    """``--precision fp32,int8``: the stored architectures carry a precision per weighted slot, and the
    trials with int8 slots were scored quantized (their fp32 accuracy is kept beside)."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    run = subprocess.run(
        [sys.executable, "-m", "archetype", "search", "--space", "conv-small", "--precision", "fp32,int8",
         "--strategy", "simq", "--strategy-option", "initial=2", "--strategy-option", "batch=1",
         "--trials", "3", "--epochs", "1", "--latency-ms", "50", "--storage", url, "--study", "q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    with Store.open(url) as store:
        trials = store.trials("q")
    assert len(trials) == 3 and all(t.state is TrialState.COMPLETE for t in trials), [t.error for t in trials]
    for t in trials:
        int8 = [s["slot"] for s in t.arch["slots"] if s["params"].get("precision") == "int8"]
        assert ("accuracy_fp32" in t.values) == bool(int8)
    assert any("accuracy_fp32" in t.values for t in trials)


def test_precision_on_another_target_is_refused_before_anything_is_stored(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    code = main(["search", "--space", "conv-small", "--precision", "fp32,int8", "--target", "cpu-torch",
                 "--latency-ms", "1", "--storage", url])
    assert code == 2
    assert "a per-slot precision is measured on target 'cpu-ort', not 'cpu-torch'" in capsys.readouterr().err
