"""Checked dataclasses: one SpecError line naming the field, whatever pydantic found wrong."""

from __future__ import annotations

import dataclasses

import pytest

from archetype.compress.step import Budget as CompressionBudget
from archetype.errors import SpecError
from archetype.runtime.training import TrainConfig
from archetype.validation import checked, count, field_default, number, text
from archetype.worker.evaluator import Budget


@checked(frozen=True, subject="demo")
class Demo:
    name: str = text()
    size: int = count(3, ceiling=10)
    scale: float | None = number(None)


@dataclasses.dataclass
class Plain:
    pipeline: tuple[str, ...] = ("a", "b")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "x", "size": 0}, "demo: size must be a positive integer, got 0"),
        ({"name": "x", "size": True}, "demo: size must be a positive integer, got True"),
        ({"name": "x", "size": 11}, "demo: size must be at most 10, got 11"),
        ({"name": " "}, "demo: name must be a non-empty string, got ' '"),
        ({"name": "x", "scale": float("inf")}, "demo: scale must be a positive number, got inf"),
        ({"size": 2}, "demo: field 'name' is required"),
        ({"name": "x", "colour": 1}, "demo: unknown field 'colour'; fields: name, scale, size"),
    ],
)
def test_each_kind_of_error_becomes_one_line_naming_the_field(fields, message):
    with pytest.raises(SpecError) as caught:
        Demo(**fields)
    assert str(caught.value) == message


def test_a_copy_is_validated_like_the_original():
    demo = Demo(name="x")
    assert dataclasses.replace(demo, size=4).size == 4
    with pytest.raises(SpecError, match="size must be at most 10"):
        dataclasses.replace(demo, size=12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        demo.size = 5  # type: ignore[misc]


def test_defaults_are_read_from_checked_and_plain_dataclasses():
    assert field_default(Demo, "size") == 3 and field_default(Demo, "scale") is None
    assert field_default(TrainConfig, "lr") == TrainConfig().lr
    assert field_default(Plain, "pipeline") == ("a", "b")


def test_budgets_name_their_field_and_keep_their_meaning():
    with pytest.raises(SpecError, match=r"^budget: epochs must be a non-negative integer, got -1$"):
        Budget(epochs=-1)
    assert Budget(0).epochs == 0
    with pytest.raises(SpecError, match=r"^--latency-ms must be a positive number of milliseconds, got -1$"):
        CompressionBudget(-1)
    with pytest.raises(SpecError, match=r"^--max-size-mb must be a positive number of megabytes, got 0$"):
        CompressionBudget(1.0, max_size_mb=0)
    budget = CompressionBudget(2, max_accuracy_drop=0)
    assert budget.latency_ms == 2.0 and budget.to_json()["max_accuracy_drop"] == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epochs": 2.5}, "invalid training config: epochs must be a non-negative integer, got 2.5"),
        ({"optimizer": "sgd"}, "invalid training config: optimizer must be one of adamw, lamb, got 'sgd'"),
        ({"warmup": 1.0}, "invalid training config: warmup must be a share from 0 up to 1 (not 1), got 1.0"),
        ({"device": "tpu"}, "invalid training config: --device 'tpu': expected"),
    ],
)
def test_training_config_errors_name_the_field(fields, message):
    with pytest.raises(SpecError) as caught:
        TrainConfig(**fields)
    assert str(caught.value).startswith(message)
