"""Latency tables: the operator instances of a space, a resumable build into the store, table-sum prediction,
the learned correction, and the screen that prunes a search's candidates on predicted latency."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from archetype.errors import SpecError
from archetype.latency_predictor import LatencyPredictor, check_predictions, draw_architectures
from archetype.latency_screen import LatencyScreen, open_latency_screen
from archetype.latency_tables import OVERHEAD_KEY, LatencyTable, arch_instances, space_instances
from archetype.result import TrialState
from archetype.runtime.measure import Latency
from archetype.runtime.targets import Target
from archetype.searchspace import Image, SearchSpace, Vector, get_space
from archetype.searchspace.space import Candidate, Slot
from archetype.store import Store

OVERHEAD_MS = 0.01


class FormulaTarget(Target):
    """A latency from the parameter count, ``0.01 + (params / 1e4) ** 1.3`` ms: exact, instant, and not additive,
    so a table sum misses what a whole network costs as a real runtime's fusion and memory effects do."""

    name = "formula"
    runtime = "none"

    def __init__(self, fail_op: type[nn.Module] | None = None) -> None:
        super().__init__()
        self.fail_op = fail_op
        self.calls = 0

    def measure(self, model: nn.Module, input_type) -> Latency:
        self.calls += 1
        if self.fail_op is not None and any(isinstance(m, self.fail_op) for m in model.modules()):
            raise RuntimeError("this operator does not run here")
        params = sum(p.numel() for p in model.parameters())
        return Latency(OVERHEAD_MS + (params / 1e4) ** 1.3, 0.01, 1, 1)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    """A small conv space (72 architectures, 35 operator instances) so that tests build whole tables."""
    return SearchSpace(
        name="small",
        input=Image(1, 8, 8),
        output=Vector(10),
        slots=(
            Slot("stem", (Candidate.of("conv_bn_act", {"width": (8, 16), "kernel": 3, "stride": 1}),)),
            Slot("stage1.block1", (Candidate.of("conv_bn_act", {"width": (8, 16, 24), "kernel": (1, 3), "stride": 1}),
                                   Candidate.of("dwsep_conv", {"width": (8, 16, 24), "kernel": 3, "stride": 1}))),
            Slot("stage1.down", (Candidate.of("pool", {"kind": ("max", "avg")}),
                                 Candidate.of("conv_bn_act", {"width": (16, 24), "kernel": 3, "stride": 2})),
                 categories=("downsampling",)),
            Slot("head", (Candidate.of("classifier_head", {"classes": 10}),), categories=("head",)),
        ),
    )


@pytest.fixture()
def store(tmp_path: Path):
    with Store.open(f"sqlite:///{tmp_path / 'latency.db'}") as store:
        yield store


def test_space_instances_cover_every_architecture_and_only_reachable_types():
    space = get_space("conv-small", Image(1, 8, 8), 10)
    instances = {inst.key: inst for inst in space_instances(space)}
    assert len(instances) == len(space_instances(space))  # no duplicates
    used = {inst.key for arch in draw_architectures(space, 60, seed=1) for inst in arch_instances(arch)}
    assert used <= set(instances)
    heads = [inst for inst in instances.values() if inst.op == "classifier_head"]
    stage1_widths = {inst.input.C for inst in instances.values() if inst.op == "pool"}
    assert stage1_widths == {16, 24, 32}  # what stage1.block1 may produce, nothing else
    assert {h.input.H for h in heads} == {4}  # only the downsampled maps reach the head
    assert all(inst.input.H == 8 for inst in instances.values() if inst.op == "pool")


def test_build_stores_every_instance_once_and_resumes(space, store):
    target = FormulaTarget()
    table = LatencyTable(store, target)
    total = len(space_instances(space))

    seen = []

    def stop_after_five(inst) -> None:
        seen.append(inst)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        table.build(space, on_instance=stop_after_five)
    fresh = LatencyTable(store, FormulaTarget())
    report = fresh.build(space)
    assert report.stored_before == 5 and report.measured == total - 5 and not report.failed
    assert fresh.target.calls == total - 5  # the overhead was stored by the first build
    again = LatencyTable(store, FormulaTarget()).build(space)
    assert again.measured == 0 and again.stored_before == total
    assert len(store.latency_entries("formula", table.device)) == total + 1  # and the overhead
    assert fresh.covers(space)


def test_table_prediction_is_overhead_plus_each_instance_above_it(space, store):
    table = LatencyTable(store, FormulaTarget())
    table.build(space)
    arch = draw_architectures(space, 1, seed=4)[0]
    entries = store.latency_entries("formula", table.device)
    expected = entries[OVERHEAD_KEY].median_ms + sum(
        entries[inst.key].median_ms - OVERHEAD_MS for inst in arch_instances(arch)
    )
    assert table.predict(arch) == pytest.approx(expected)
    assert entries[OVERHEAD_KEY].median_ms == pytest.approx(OVERHEAD_MS)


def test_a_failing_instance_is_reported_and_its_architectures_are_not_predicted(space, store):
    table = LatencyTable(store, FormulaTarget(fail_op=nn.MaxPool2d))
    report = table.build(space)
    assert report.failed and all("RuntimeError: this operator does not run here" in e for e in report.failed.values())
    assert all(key.startswith("pool(kind=max)") for key in report.failed)
    archs = draw_architectures(space, 40, seed=2)
    with_max = [a for a in archs if a.choice("stage1.down").to_json() == {"slot": "stage1.down", "op": "pool",
                                                                           "params": {"kind": "max"}}]
    assert with_max and all(table.predict(a) is None for a in with_max)
    assert all(table.predict(a) is not None for a in archs if a not in with_max)


def test_the_learned_correction_beats_the_table_on_a_non_additive_target(space, store):
    table = LatencyTable(store, FormulaTarget())
    table.build(space)
    check = check_predictions(table, space, 60, seed=0)
    assert check.architectures == 60 and check.instances_measured == 0
    assert check.overhead_ms == pytest.approx(OVERHEAD_MS)
    assert check.within_predictor > check.within_table + 0.2, check
    assert check.median_error_predictor < check.median_error_table
    assert len(store.latency_samples("formula", table.device, "small")) == 60

    stored = LatencyPredictor(table, space).fit_stored()
    assert stored.learned and stored.model_name in ("gbdt", "gcn")
    assert {"gbdt", "gcn"} <= set(stored.validation)  # 60 samples: the graph network competes
    arch = draw_architectures(space, 1, seed=99)[0]
    measured = FormulaTarget().measure(arch.build(), arch.input).median_ms
    assert abs(stored(arch) / measured - 1) < abs(table.predict(arch) / measured - 1)


def test_screen_prunes_only_beyond_the_margin(space):
    arch = draw_architectures(space, 1)[0]
    for predicted, pruned in ((1.19, False), (1.21, True), (None, False)):
        verdict = LatencyScreen(lambda _, p=predicted: p, budget_ms=1.0, margin=0.2).verdict(arch)
        assert (verdict is not None) is pruned
        if pruned:
            assert verdict.state is TrialState.PRUNED and verdict.values["predicted_latency_ms"] == 1.21
            assert verdict.error == "predicted latency_ms 1.21 > budget 1 + 20%: not trained or measured"
            assert "latency_ms" not in verdict.values and verdict.values["macs"] == arch.macs()


def test_no_screen_without_a_table_unless_asked(space, store):
    assert open_latency_screen(store, space, "cpu-torch", 1.0) is None
    assert open_latency_screen(store, space, "cpu-torch", None, required=True) is None
    with pytest.raises(SpecError, match=r"no latency table for target 'cpu-torch'.*archetype latency build"):
        open_latency_screen(store, space, "cpu-torch", 1.0, required=True)


def test_instance_keys_are_stable(space):
    first = space_instances(space)[0]
    assert first.key == type(first).from_json(first.to_json()).key and len(first.key) == 32
