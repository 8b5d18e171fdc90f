"""Run specs are validated once, with errors that name the field and the file."""

from __future__ import annotations

import dataclasses

import pytest

from archetype.errors import SpecError
from archetype.objectives import Constraint, Direction
from archetype.spec import RunSpec, parse_duration


def test_defaults_and_budget():
    spec = RunSpec(space="conv-small", constraints=(Constraint.parse("latency_ms<=0.5"),))
    assert spec.trials == 20 and spec.data == "digits" and spec.target == "cpu-ort"
    assert spec.latency_budget() == 0.5
    assert [o.direction for o in spec.objectives] == [Direction.MAXIMIZE, Direction.MINIMIZE]


def test_json_round_trip():
    spec = RunSpec.from_mapping(
        {"space": "conv-small", "trials": 3, "constraints": ["latency_ms<=0.2"], "objectives": ["accuracy:maximize"]}
    )
    assert RunSpec.from_mapping(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"space": "s", "trials": 0}, "trials must be a positive integer, got 0"),
        ({"space": "s", "epochs": -1}, "epochs must be a positive integer"),
        ({"space": "s", "trials": "many"}, "trials must be a positive integer"),
        ({"space": "s", "trials": True}, "trials must be a positive integer"),
        ({"space": "s", "colour": "red"}, "unknown field 'colour'"),
        ({"trials": 3}, "field 'space' is required"),
        ({"space": "s", "constraints": ["latency_ms<2"]}, "not of the form"),
        ({"space": "s", "constraints": ["latency_ms<=-1"]}, "must be positive"),
        ({"space": "s", "objectives": ["accuracy:upwards"]}, "maximize"),
        ({"space": "s", "objectives": ["a:maximize", "a:minimize"]}, "distinct"),
        ({"space": "s", "trials": 10**9}, "trials must be at most 1,000,000, got 1,000,000,000"),
        ({"space": "s", "epochs": 10**6}, "epochs must be at most 10,000"),
        ({"space": "s", "max_params": 0}, "max_params must be a positive integer"),
        ({"space": "s", "max_activation_mb": float("inf")}, "max_activation_mb must be a positive number"),
        ({"space": "s", "trial_timeout_s": 0}, "trial_timeout_s must be a positive number"),
        ({"space": "s", "trial_timeout_s": float("nan")}, "trial_timeout_s must be a positive number"),
        ({"space": "s", "trial_memory_mb": -5}, "trial_memory_mb must be a positive number"),
    ],
)
def test_bad_fields_name_the_field(data, message):
    with pytest.raises(SpecError, match=message):
        RunSpec.from_mapping(data, where="spec.yaml")


def test_yaml_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("space: conv-small\ntrials: [1,\n")
    with pytest.raises(SpecError, match=r"run.yaml:\d+: not valid YAML"):
        RunSpec.from_yaml(bad)
    with pytest.raises(SpecError, match="cannot read run spec"):
        RunSpec.from_yaml(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("space: conv-small\ntrials: 4\nconstraints: [latency_ms<=0.3]\n")
    assert RunSpec.from_yaml(good).trials == 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"space": "s", "device": "gpu"}, "device 'gpu': expected auto, cpu, cuda or cuda:N"),
        ({"space": "s", "recipe": "slow"}, "unknown recipe 'slow'; known: quick, full, plain"),
        ({"space": "s", "gpus_per_trial": -0.5}, "gpus_per_trial must be a share"),
        ({"space": "s", "gpus_per_trial": 1.5}, "gpus_per_trial must be a share"),
        ({"space": "s", "gpus_per_trial": 0.5, "device": "cpu"}, "with device 'cpu'"),
        ({"space": "s", "cpus_per_trial": 0}, "cpus_per_trial must be a positive number"),
    ],
)
def test_training_fields_are_checked_at_the_edge(data, message):
    with pytest.raises(SpecError, match=message):
        RunSpec.from_mapping(data, where="spec.yaml")


def test_one_local_worker_trains_on_every_core_and_several_on_one_each(monkeypatch):
    import archetype.spec

    monkeypatch.setattr(archetype.spec, "available_cpus", lambda: 6)
    assert RunSpec(space="s").trial_cpus() == 6.0
    assert RunSpec(space="s", workers=2).trial_cpus() == 1.0
    assert RunSpec(space="s", ray_address="10.0.0.1:6379").trial_cpus() == 1.0
    assert RunSpec(space="s", workers=2, cpus_per_trial=3).trial_cpus() == 3.0
    assert RunSpec(space="s", device="cpu").trial_gpus() == 0.0
    assert RunSpec(space="s", gpus_per_trial=0.5).trial_gpus() == 0.5


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1h30m", 5400.0), ("1h30m15s", 5415.0), ("1.5h", 5400.0),
     ("45", 45.0), (" 2h ", 7200.0), (600, 600.0), (0.5, 0.5)],
)
def test_a_time_budget_reads_as_seconds(given, seconds):
    assert parse_duration(given) == seconds
    assert RunSpec.from_mapping({"space": "s", "time_budget": given}).time_budget_s == seconds


@pytest.mark.parametrize("given", ["", "2x", "h", "1m30h", "-5m", "0", "0s", 0, -1, True, float("inf"), "1e999", [1]])
def test_a_bad_time_budget_is_one_line_naming_the_field(given):
    with pytest.raises(SpecError) as caught:
        RunSpec.from_mapping({"space": "s", "time_budget": given}, where="run.yaml")
    message = str(caught.value)
    assert message.startswith("run.yaml: time_budget must be a positive duration") and "\n" not in message


def test_a_time_budget_survives_yaml_and_the_stored_json(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("space: conv-small\ntime_budget: 2h\nconstraints: [latency_ms<=1]\n")
    spec = RunSpec.from_yaml(path)
    assert spec.time_budget_s == 7200.0 and RunSpec(space="s").time_budget_s is None
    stored = spec.to_json()
    assert stored["time_budget_s"] == 7200.0
    assert RunSpec.from_mapping(stored) == spec
    assert dataclasses.replace(spec, time_budget_s=60).time_budget_s == 60.0
