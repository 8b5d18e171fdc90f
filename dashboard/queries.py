"""What each dashboard page shows, as dataclasses computed from the store; the API serialises them, pages draw them."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from archetype.dashboard.progress import ProgressPoint, search_progress
from archetype.errors import ArchetypeError
from archetype.objectives import Direction
from archetype.pareto import is_feasible, pareto_front
from archetype.result import TrialState
from archetype.store import (
    CompressionRunRecord,
    CompressionStepRecord,
    Store,
    StudyRecord,
    TrialOutcome,
    operator_summary,
)

WATERFALL_METRICS = ("latency_ms", "size_mb", "accuracy")


@dataclass(frozen=True)
class StudyRow:
    """A study as the studies page lists it."""

    name: str
    space: str
    target: str
    status: str
    objectives: list[dict[str, str]]
    budget: list[str]  # the constraints, as "latency_ms<=2"
    counts: dict[str, int]  # trials by state
    total: int
    best_objective: str | None  # the study's first objective
    best: float | None  # its best value among complete trials within budget
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class CompressionRow:
    """A compression run as the studies page lists it."""

    name: str
    source: str
    source_study: str | None
    source_trial: int | None
    target: str
    status: str
    budget: dict[str, Any]
    steps: int
    created_at: datetime


@dataclass(frozen=True)
class Overview:
    """Everything in the store, for the front page."""

    studies: list[StudyRow]
    compressions: list[CompressionRow]


@dataclass(frozen=True)
class TrialPoint:
    """A trial with measured values, as one point of the study's scatter."""

    number: int
    state: str
    values: dict[str, float]
    feasible: bool
    on_front: bool
    summary: str  # the operators in order, for hover text


@dataclass(frozen=True)
class OperatorCount:
    """How many front members chose ``op`` in ``slot``."""

    slot: str
    op: str
    count: int


@dataclass(frozen=True)
class StudyView:
    """The study page: its front, progress and the operators its front members chose."""

    study: StudyRow
    metrics: list[str]  # every value name measured in the study, for the scatter's axes
    points: list[TrialPoint]
    front: list[int]  # numbers of the feasible non-dominated trials (the study's objectives and constraints)
    progress: list[ProgressPoint]
    hypervolume_objectives: list[str]
    hypervolume_reference: dict[str, float]
    operators: list[OperatorCount]


@dataclass(frozen=True)
class TrialRow:
    """A trial as one row of the trials table."""

    number: int
    state: str
    values: dict[str, float]
    attempt: int
    within_budget: bool
    summary: str
    error: str | None


@dataclass(frozen=True)
class TrialTable:
    """One page of the trials table."""

    total: int
    offset: int
    limit: int
    rows: list[TrialRow]


@dataclass(frozen=True)
class SlotView:
    """One slot of an architecture: the operator chosen, its parameters, and its type and costs where known."""

    slot: str
    op: str
    params: dict[str, Any]
    category: str | None
    n_params: int | None
    macs: int | None
    skip_from: str | None


@dataclass(frozen=True)
class ConstraintCheck:
    """A constraint of the study and whether this trial meets it."""

    constraint: str
    value: float | None
    satisfied: bool


@dataclass(frozen=True)
class TrialView:
    """The trial page: architecture, measured values against the budget, and what went wrong if it failed."""

    study: str
    number: int
    state: str
    arch_key: str
    attempt: int
    values: dict[str, float]
    budget: list[ConstraintCheck]
    target: str | None
    fingerprint: dict[str, str]
    timings: dict[str, float]
    error: str | None
    input: str | None
    slots: list[SlotView]
    svg: str | None
    graph_error: str | None  # why the graph could not be drawn (an architecture the operator library refuses)
    compressions: list[str]  # compression runs made from this trial
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Waterfall:
    """One metric through a compression run: the source value, each step's change, and the final value."""

    metric: str
    labels: list[str]
    measures: list[str]  # Plotly waterfall measures: absolute, relative, total
    values: list[float]
    notes: list[str]  # per bar: accepted, rejected (and why) or not measured


@dataclass(frozen=True)
class CompressionView:
    """The compression page: the run, its steps, and waterfalls of latency, size and accuracy."""

    name: str
    source: str
    source_study: str | None
    source_trial: int | None
    target: str
    status: str
    budget: dict[str, Any]
    pipeline: list[str]
    out_dir: str | None
    report: dict[str, Any]
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    steps: list[CompressionStepRecord]
    waterfalls: list[Waterfall]


def overview(store: Store) -> Overview:
    """Every study with its counts and best value within budget, and every compression run."""
    studies = [study_row(store, summary, summary.counts) for summary in store.list_studies()]
    compressions = [
        CompressionRow(
            name=run.name, source=run.source, source_study=run.source_study, source_trial=run.source_trial,
            target=run.target, status=run.status.value, budget=run.budget, steps=len(run.steps),
            created_at=run.created_at,
        )
        for run in store.compression_runs()
    ]
    return Overview(studies, compressions)


def study_row(store: Store, study: StudyRecord, counts: dict[str, int]) -> StudyRow:
    """A study's listing row; its best value is read in SQL, one row per study."""
    primary = study.objectives[0] if study.objectives else None
    best = None
    if primary is not None:
        page = store.trial_page(
            study.name, within_budget=True, sort=primary.name,
            descending=primary.direction is Direction.MAXIMIZE, limit=1,
        )
        if page.trials and primary.name in page.trials[0].values:
            best = page.trials[0].values[primary.name]
    return _study_row(study, counts, best)


def _study_row(study: StudyRecord, counts: dict[str, int], best: float | None) -> StudyRow:
    primary = study.objectives[0] if study.objectives else None
    return StudyRow(
        name=study.name, space=study.space, target=study.target, status=study.status.value,
        objectives=[o.to_json() for o in study.objectives], budget=[str(c) for c in study.constraints],
        counts=dict(counts), total=sum(counts.values()), best_objective=primary.name if primary else None, best=best,
        created_at=study.created_at, updated_at=study.updated_at,
    )


def study_view(store: Store, name: str) -> StudyView:
    """The study page's data: every measured trial as a point, the feasible front, progress and front operators."""
    study = store.get_study(name)
    trials = store.trial_outcomes(name)
    feasible_trials = [t for t in trials if is_feasible(t, study.constraints)]
    feasible = {t.number for t in feasible_trials}
    front = [feasible_trials[i] for i in pareto_front([t.values for t in feasible_trials], study.objectives)]
    front_numbers = {t.number for t in front}
    counts = Counter(str(t.state) for t in trials)
    metrics = sorted({metric for t in trials for metric in t.values})
    summary_of = functools.cache(operator_summary)  # many trials share their operators
    points = [
        TrialPoint(
            number=t.number, state=str(t.state), values=t.values, feasible=t.number in feasible,
            on_front=t.number in front_numbers, summary=summary_of(t.operators),
        )
        for t in trials if t.values
    ]
    progress = search_progress(trials, study.objectives, study.constraints, feasible)
    return StudyView(
        study=_study_row(study, dict(counts), progress.points[-1].best if progress.points else None),
        metrics=metrics,
        points=points,
        front=sorted(front_numbers),
        progress=progress.points,
        hypervolume_objectives=progress.hypervolume_objectives,
        hypervolume_reference=progress.reference,
        operators=operator_counts(front),
    )


def operator_counts(trials: Sequence[TrialOutcome]) -> list[OperatorCount]:
    """How often each operator was chosen in each slot among ``trials``, slots in architecture order."""
    counts: Counter[tuple[str, str]] = Counter()
    slot_order: dict[str, int] = {}
    for trial in trials:
        for position, slot in enumerate(trial.arch.get("slots", [])):
            slot_order.setdefault(slot["slot"], position)
            counts[slot["slot"], slot["op"]] += 1
    ordered = sorted(counts.items(), key=lambda item: (slot_order[item[0][0]], item[0][1]))
    return [OperatorCount(slot, op, count) for (slot, op), count in ordered]


def trial_table(
    store: Store,
    name: str,
    *,
    states: Sequence[TrialState] | None = None,
    within_budget: bool | None = None,
    sort: str = "number",
    descending: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> TrialTable:
    """One page of the study's trials, sorted and filtered by the store in SQL."""
    study = store.get_study(name)
    page = store.trial_page(
        name, states=states, within_budget=within_budget, sort=sort, descending=descending, offset=offset, limit=limit,
    )
    rows = [
        TrialRow(
            number=t.number, state=t.state.value, values=t.values, attempt=t.attempt,
            within_budget=is_feasible(t, study.constraints), summary=operator_summary(t.operators), error=t.error,
        )
        for t in page.trials
    ]
    return TrialTable(page.total, page.offset, limit, rows)


def trial_view(store: Store, name: str, number: int) -> TrialView:
    """The trial page's data; the architecture is drawn from its networkx graph where the operator library knows it."""
    study = store.get_study(name)
    trial = store.trial(name, number)
    slots, svg, graph_error = _architecture(trial.arch)
    budget = [ConstraintCheck(str(c), trial.values.get(c.name), c.satisfied(trial.values)) for c in study.constraints]
    compressions = [
        run.name for run in store.compression_runs() if (run.source_study, run.source_trial) == (name, number)
    ]
    return TrialView(
        study=name, number=trial.number, state=trial.state.value, arch_key=trial.arch_key, attempt=trial.attempt,
        values=trial.values, budget=budget, target=trial.target, fingerprint=trial.fingerprint,
        timings=trial.timings, error=trial.error, input=trial.arch.get("input"), slots=slots, svg=svg,
        graph_error=graph_error, compressions=compressions, started_at=trial.started_at,
        finished_at=trial.finished_at,
    )


def compression_view(store: Store, name: str) -> CompressionView:
    """The compression page's data: the run, its steps and a waterfall per metric."""
    run = store.compression_run(name)
    return CompressionView(
        name=run.name, source=run.source, source_study=run.source_study, source_trial=run.source_trial,
        target=run.target, status=run.status.value, budget=run.budget, pipeline=run.pipeline, out_dir=run.out_dir,
        report=run.report, error=run.error, created_at=run.created_at, finished_at=run.finished_at,
        steps=list(run.steps),
        waterfalls=[w for metric in WATERFALL_METRICS if (w := waterfall(run, metric)) is not None],
    )


def waterfall(run: CompressionRunRecord, metric: str) -> Waterfall | None:
    """``metric`` from the source model through each step to the model kept; None if the source lacks it.

    An accepted step moves the value to what was measured after it; a rejected one changes nothing.
    """
    if not run.steps or metric not in run.steps[0].metrics:
        return None
    first = run.steps[0]
    kept = float(first.metrics[metric])
    labels, measures, values, notes = [first.name], ["absolute"], [kept], ["source"]
    for step in run.steps[1:]:
        labels.append(f"{step.position}. {step.name}")
        measures.append("relative")
        if not step.accepted:
            values.append(0.0)
            notes.append(f"rejected: {step.message}" if step.message else "rejected")
        elif metric not in step.metrics:
            values.append(0.0)
            notes.append("not measured")
        else:
            value = float(step.metrics[metric])
            values.append(value - kept)
            notes.append("accepted")
            kept = value
    labels.append("kept")
    measures.append("total")
    values.append(kept)
    notes.append("the model kept")
    return Waterfall(metric, labels, measures, values, notes)


def _architecture(arch: dict[str, Any]) -> tuple[list[SlotView], str | None, str | None]:
    """The slots of ``arch`` with types and costs from its graph, and the graph as SVG (or why it cannot be drawn)."""
    from archetype.dashboard.graph_svg import architecture_svg
    from archetype.searchspace import Architecture

    skips = {str(k): str(v) for k, v in dict(arch.get("skips", {})).items()}
    plain = [
        SlotView(s["slot"], s["op"], dict(s.get("params", {})), None, None, None, skips.get(s["slot"]))
        for s in arch.get("slots", [])
    ]
    try:
        graph = Architecture.from_json(arch).graph()
    except (ArchetypeError, KeyError, ValueError, TypeError) as exc:
        return plain, None, f"the architecture cannot be typed by this version's operators: {exc}"
    infos = [_slot_info(graph, s.slot) for s in plain]
    slots = [
        SlotView(s.slot, s.op, s.params, info.get("category"), info.get("n_params"), info.get("macs"), s.skip_from)
        for s, info in zip(plain, infos, strict=True)
    ]
    return slots, architecture_svg(graph), None



def _slot_info(graph: Any, slot: str) -> dict[str, Any]:
    """A slot's category and costs: its node in a chain's graph; in a cell space's, summed over every placed copy
    of the cell edge the slot chooses."""
    if slot in graph.nodes:
        return dict(graph.nodes[slot])
    placed = [d for d in graph.nodes.values() if d.get("slot") == slot]
    if not placed:
        return {}
    return {"category": placed[0].get("category"), "n_params": sum(d.get("n_params", 0) for d in placed),
            "macs": sum(d.get("macs", 0) for d in placed)}
