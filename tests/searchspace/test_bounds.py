"""Architecture ceilings by formula: predefined spaces pass, an absurd choice is named, nothing is built to find out."""

from __future__ import annotations

import pytest

from archetype.errors import SpecError
from archetype.result import TrialState
from archetype.searchspace import Architecture, Candidate, Choice, Image, SearchSpace, Slot, get_space, list_spaces
from archetype.searchspace.bounds import ArchitectureLimits, activation_mb
from archetype.worker.evaluator import Budget, TrainingEvaluator


def _space(width: int) -> SearchSpace:
    return SearchSpace("wide", Image(1, 8, 8), None, (
        Slot("stem", (Candidate.of("conv_bn_act", {"width": (8, width), "kernel": 3}),)),
        Slot("head", (Candidate.of("classifier_head", {"classes": 10}),)),
    ))


def _arch(width: int) -> Architecture:
    return _space(width).architecture((Choice.of("stem", "conv_bn_act", {"width": width, "kernel": 3}),
                                       Choice.of("head", "classifier_head", {"classes": 10})))


@pytest.mark.parametrize("name", list_spaces())
@pytest.mark.parametrize("sample", [Image(1, 8, 8), Image(1, 28, 28), Image(3, 32, 32)])
def test_every_predefined_space_is_within_the_default_ceilings(name: str, sample: Image) -> None:
    ArchitectureLimits().check_space(get_space(name, sample, 10))


def test_a_choice_over_the_parameter_ceiling_is_named_with_its_slot_and_value() -> None:
    with pytest.raises(SpecError) as caught:
        ArchitectureLimits(max_params=10_000).check_space(_space(4096))
    message = str(caught.value)
    assert "slot 'stem' (conv_bn_act kernel=3, stride=1, width=4096) on Image[1,8,8]" in message
    assert f"alone has {9 * 4096 + 2 * 4096:.3g} parameters, over max_params 1e+04" in message
    ArchitectureLimits(max_params=10_000).check_space(_space(64))  # 64 * 11 parameters: within


def test_a_choice_over_the_activation_ceiling_is_named() -> None:
    assert activation_mb(Image(1000, 8, 8)) == pytest.approx(0.256)
    with pytest.raises(SpecError, match=r"slot 'stem' .* alone outputs 0\.256 MB per sample, over max_activation"):
        ArchitectureLimits(max_activation_mb=0.1).check_space(_space(1000))


def test_an_architecture_over_a_ceiling_is_named_at_the_slot_that_passes_it() -> None:
    limits = ArchitectureLimits(max_params=50_000)
    limits.check_architecture(_arch(64))
    with pytest.raises(SpecError, match=r"slot 'stem' \(conv_bn_act kernel=3, width=8192\): the architecture "
                                        r"reaches 9.01e\+04 parameters"):
        limits.check_architecture(_arch(8192))


def test_the_evaluator_fails_an_architecture_over_a_ceiling_without_building_it() -> None:
    evaluator = TrainingEvaluator("digits", "cpu-torch", limits=ArchitectureLimits(max_params=1000))
    result = evaluator.evaluate(_arch(10**7), Budget(epochs=1))  # built, it would take 100 million parameters
    assert result.state is TrialState.FAILED and "over max_params 1e+03" in result.error
    assert "build_s" not in result.timings and "params" not in result.values


@pytest.mark.parametrize("field, value", [
    ("max_params", 0), ("max_params", 1.5), ("max_params", True), ("max_activation_mb", float("nan")),
    ("max_activation_mb", float("inf")), ("max_activation_mb", -1),
])
def test_ceilings_themselves_are_checked(field: str, value: object) -> None:
    with pytest.raises(SpecError, match=field):
        ArchitectureLimits(**{field: value})
