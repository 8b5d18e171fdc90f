"""The Store: the only code that reads and writes studies, trials and metrics in SQL."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from types import TracebackType
from typing import Any, Self, TypeVar

from pydantic import BaseModel
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    Text,
    and_,
    cast,
    exists,
    func,
    insert,
    not_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, aliased

from archetype.errors import StorageError
from archetype.objectives import Constraint, Objective
from archetype.result import Result, TrialState
from archetype.store.engine import describe_failure, masked_url, open_engine, resolve_url, session_scope
from archetype.store.models import (
    CompressionRun,
    CompressionStatus,
    CompressionStep,
    LatencyEntry,
    LatencySample,
    Study,
    StudyStatus,
    Trial,
    TrialMetric,
)

_IN_CHUNK = 500  # keys per IN (...) list, below every backend's limit on bound parameters
STUDIES = Study.__table__
TRIALS = Trial.__table__
METRICS = TrialMetric.__table__
_NUMBERING_TRIES = 5  # concurrent writers may pick the same trial number; the unique constraint makes one retry
_Written = TypeVar("_Written")
_ARCH_TEXT = cast(TRIALS.c.arch, Text).label("arch")  # the architecture as stored, decoded only when used
_TRIAL_COLUMNS = [_ARCH_TEXT if column.key == "arch" else column for column in TRIALS.c]


class StudyExistsError(StorageError):
    """A study of that name is already in the store."""

TRIAL_SORT_COLUMNS = ("number", "state", "attempt", "started_at", "finished_at")
"""Trial columns a trial page may be sorted by; any other sort key names a metric (``accuracy``, ``latency_ms``)."""
MAX_PAGE_SIZE = 1000
_METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")


class ArchOutline(BaseModel):
    """A stored architecture's macro settings, read from its JSON text without building its slots."""

    macro: dict[str, Any] = {}


def arch_operators(arch: Mapping[str, Any]) -> str:
    """The operators of ``arch``'s slots in order, space-separated: stored beside the architecture so that
    listings and the dashboard of big studies show them without decoding it."""
    slots = arch.get("slots")
    if not isinstance(slots, list):
        return ""
    return " ".join(str(slot["op"]) for slot in slots if isinstance(slot, Mapping) and "op" in slot)


def _stored_operators(text: str) -> tuple[str, ...]:
    """The operators ``arch_operators`` stored, back as a tuple."""
    return tuple(text.split())


def operator_summary(operators: Sequence[str]) -> str:
    """``conv_bn_act > inverted_residual > ...``: stored operators as listings show them, skipping identities."""
    return " > ".join(op for op in operators if op != "identity")


@dataclass(frozen=True)
class StudyRecord:
    """A stored study: what it searches, on which target, for which objectives, and how it stands."""

    id: int
    name: str
    space: str
    target: str
    status: StudyStatus
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StudySummary(StudyRecord):
    """A stored study with how many of its trials are in each state, for listings."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class TrialRecord:
    """A stored trial: the architecture evaluated and, once finished, what was measured."""

    id: int
    study_id: int
    number: int
    arch_key: str
    state: TrialState
    values: dict[str, float]
    error: str | None
    timings: dict[str, float]
    attempt: int
    target: str | None
    fingerprint: dict[str, str]
    started_at: datetime
    finished_at: datetime | None
    arch_json: str = field(repr=False)  # decoded on first use of ``arch``: listings of big studies skip it
    operators: tuple[str, ...] = ()  # the architecture's operators in slot order, stored beside it

    @cached_property
    def arch(self) -> dict[str, Any]:
        """The architecture evaluated, as JSON data."""
        return dict(json.loads(self.arch_json))

    @cached_property
    def outline(self) -> ArchOutline:
        """The architecture's macro settings, read without decoding the rest."""
        return ArchOutline.model_validate_json(self.arch_json)

    def result(self) -> Result:
        """The trial's outcome as the Result a strategy is told."""
        return Result(
            state=self.state,
            values=dict(self.values),
            error=self.error,
            timings=dict(self.timings),
            target=self.target,
            fingerprint=dict(self.fingerprint),
        )


@dataclass(frozen=True)
class CompressionStepRecord:
    """One stored compression step: the model after it, as measured, and whether it was kept."""

    position: int
    name: str
    accepted: bool
    metrics: dict[str, float]
    details: dict[str, Any]
    message: str | None
    seconds: float


@dataclass(frozen=True)
class CompressionRunRecord:
    """A stored compression run with its steps in pipeline order (position 0 is the source model)."""

    id: int
    name: str
    source: str
    source_study: str | None
    source_trial: int | None  # the trial's number within ``source_study``
    target: str
    budget: dict[str, Any]
    pipeline: list[str]
    status: CompressionStatus
    out_dir: str | None
    report: dict[str, Any]
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    steps: tuple[CompressionStepRecord, ...]


@dataclass(frozen=True)
class TrialOutcome:
    """A trial's number, state, architecture and values: what fronts and plots need, read without the rest."""

    number: int
    state: TrialState
    arch_json: str = field(repr=False)  # decoded on first use of ``arch``
    values: dict[str, float] = field(default_factory=dict)
    operators: tuple[str, ...] = ()  # the architecture's operators in slot order, stored beside it

    @cached_property
    def arch(self) -> dict[str, Any]:
        """The architecture, as JSON data."""
        return dict(json.loads(self.arch_json))

    @cached_property
    def outline(self) -> ArchOutline:
        """The architecture's macro settings, read without decoding the rest."""
        return ArchOutline.model_validate_json(self.arch_json)


@dataclass(frozen=True)
class TrialPage:
    """One page of a study's trials as sorted and filtered, with how many trials match in all."""

    total: int
    offset: int
    trials: list[TrialRecord]


@dataclass(frozen=True)
class LatencyRecord:
    """A stored latency on a target and device: of one operator instance, or of a whole architecture."""

    key: str  # the instance key, or the architecture key
    item: dict[str, Any]  # the instance {op, params, input}, or the architecture JSON
    median_ms: float
    spread: float  # relative interquartile range of the timed blocks
    measured_at: datetime | None = None  # set by the store


class Store:
    """Studies, trials and their metrics in one SQL database (SQLite file or any SQLAlchemy URL)."""

    def __init__(self, engine: Engine, url: str) -> None:
        self._engine = engine
        self.url = masked_url(url)

    @classmethod
    def open(cls, url: str | None = None, *, migrate: bool = True) -> Store:
        """Open (creating or migrating as needed) the store at ``url``, ``$ARCHETYPE_STORAGE`` or the default.

        ``migrate=False`` is for readers: an older schema raises SchemaOutdatedError instead of being upgraded.
        """
        resolved = resolve_url(url)
        return cls(open_engine(resolved, migrate=migrate), resolved)

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # studies

    def create_study(
        self,
        name: str,
        *,
        space: str,
        target: str,
        objectives: Iterable[Objective],
        constraints: Iterable[Constraint],
        spec: Mapping[str, Any],
    ) -> StudyRecord:
        """Store a new running study; StorageError if the name is taken."""
        now = _utcnow()
        row = Study(
            name=name,
            space=space,
            target=target,
            status=StudyStatus.RUNNING.value,
            objectives=[objective.to_json() for objective in objectives],
            constraints=[constraint.to_json() for constraint in constraints],
            spec=_json_safe(spec),
            created_at=now,
            updated_at=now,
        )
        with self._storage_errors(f"create study {name!r}"), session_scope(self._engine, write=True) as session:
            if session.scalar(select(Study.id).where(Study.name == name)) is not None:
                raise self._duplicate(name)
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:
                raise self._duplicate(name) from exc
            return _study_record(row)

    def get_study(self, name: str) -> StudyRecord:
        """The study called ``name``; StorageError if there is none."""
        with self._storage_errors(f"read study {name!r}"), session_scope(self._engine) as session:
            return _study_record(self._study_row(session, name))

    def list_studies(self) -> list[StudySummary]:
        """Every study, newest first, with its trial counts by state."""
        with self._storage_errors("list the studies"), session_scope(self._engine) as session:
            rows = session.scalars(select(Study).order_by(Study.created_at.desc(), Study.id.desc())).all()
            counts: dict[int, dict[str, int]] = defaultdict(dict)
            by_state = select(Trial.study_id, Trial.state, func.count()).group_by(Trial.study_id, Trial.state)
            for study_id, state, count in session.execute(by_state):
                counts[study_id][state] = count
            return [StudySummary(**vars(_study_record(row)), counts=counts[row.id]) for row in rows]

    def set_study_status(self, name: str, status: StudyStatus | str) -> None:
        """Mark the study called ``name`` running, complete, failed or interrupted."""
        status = StudyStatus(status)
        with (
            self._storage_errors(f"set the status of study {name!r}"),
            session_scope(self._engine, write=True) as session,
        ):
            row = self._study_row(session, name)
            row.status = status.value
            row.updated_at = _utcnow()

    def save_strategy_state(self, name: str, state: Mapping[str, Any]) -> None:
        """Keep the strategy's ``state_dict()`` with the study, so that ``--resume`` restores it."""
        with (
            self._storage_errors(f"save the strategy state of study {name!r}"),
            session_scope(self._engine, write=True) as session,
        ):
            changed = session.execute(
                update(STUDIES).where(STUDIES.c.name == name).values(strategy_state=_json_safe(state))
            ).rowcount
            if not changed:
                raise StorageError(f"no study named {name!r} in {self.url}")

    def strategy_state(self, name: str) -> dict[str, Any] | None:
        """The strategy state last saved with the study, or None."""
        with self._storage_errors(f"read the strategy state of study {name!r}"), session_scope(self._engine) as session:
            return session.scalar(select(Study.strategy_state).where(Study.name == name))

    def next_study_name(self, prefix: str) -> str:
        """The first of ``prefix-1``, ``prefix-2``, ... that no study is called yet."""
        with self._storage_errors("list the study names"), session_scope(self._engine) as session:
            taken = set(session.scalars(select(Study.name).where(Study.name.startswith(f"{prefix}-", autoescape=True))))
        number = 1
        while f"{prefix}-{number}" in taken:
            number += 1
        return f"{prefix}-{number}"

    # trials

    def start_trial(self, study_name: str, arch: Mapping[str, Any], arch_key: str, attempt: int = 1) -> TrialRecord:
        """Store a running trial of ``arch``, numbered one past the study's last trial."""

        def write(connection: Connection) -> TrialRecord:
            return _trial_record(_insert_trial(connection, self._lock_study(connection, study_name), arch, arch_key,
                                               attempt), {})

        return self._write_numbered(f"start a trial of study {study_name!r}", write)

    def finish_trial(self, trial_id: int, result: Result) -> TrialRecord:
        """Store the outcome of a running trial; StorageError if it has already finished."""
        _check_finished(result)
        with self._storage_errors(f"finish trial {trial_id}"), session_scope(self._engine, write=True) as session:
            connection = session.connection()
            now = _utcnow()
            row = connection.execute(
                update(TRIALS).where(TRIALS.c.id == trial_id, TRIALS.c.state == TrialState.RUNNING.value)
                .values(**_result_columns(result, now)).returning(*TRIALS.c)
            ).first()
            if row is None:
                raise self._not_running(connection, trial_id, in_url=True)
            values = _write_metrics(connection, row.id, result)
            connection.execute(update(STUDIES).where(STUDIES.c.id == row.study_id).values(updated_at=now))
            return _trial_record(row, values)

    def requeue_trial(self, trial_id: int) -> TrialRecord:
        """Start a running trial again, as its next attempt (after its worker or the driver died)."""
        with self._storage_errors(f"re-queue trial {trial_id}"), session_scope(self._engine, write=True) as session:
            connection = session.connection()
            now = _utcnow()
            row = connection.execute(
                update(TRIALS).where(TRIALS.c.id == trial_id, TRIALS.c.state == TrialState.RUNNING.value)
                .values(attempt=TRIALS.c.attempt + 1, started_at=now).returning(*TRIALS.c)
            ).first()
            if row is None:
                raise self._not_running(connection, trial_id, in_url=False)
            connection.execute(update(STUDIES).where(STUDIES.c.id == row.study_id).values(updated_at=now))
            return _trial_record(row, {})

    def record_trial(
        self, study_name: str, arch: Mapping[str, Any], arch_key: str, result: Result, attempt: int = 1
    ) -> TrialRecord:
        """Store a trial and its outcome at once, as start_trial then finish_trial would."""
        _check_finished(result)

        def write(connection: Connection) -> TrialRecord:
            study_id = self._lock_study(connection, study_name)
            row = _insert_trial(connection, study_id, arch, arch_key, attempt, result)
            return _trial_record(row, _write_metrics(connection, row.id, result))

        return self._write_numbered(f"record a trial of study {study_name!r}", write)

    def record_trials(
        self, study_name: str, trials: Iterable[tuple[Mapping[str, Any], str, Result]], batch: int = 5000
    ) -> int:
        """Store many finished trials ``(arch, arch_key, result)`` at once, numbered after the last; how many.

        For imports and benchmarks: batches of ``batch`` trials, each batch in one transaction.
        """
        pending = list(trials)
        for result in (r for _, _, r in pending):
            _check_finished(result)
        for start in range(0, len(pending), batch):
            chunk = pending[start:start + batch]

            def write(connection: Connection, chunk: list[tuple[Mapping[str, Any], str, Result]] = chunk) -> None:
                study_id = self._lock_study(connection, study_name)
                last = connection.scalar(select(func.max(TRIALS.c.number)).where(TRIALS.c.study_id == study_id))
                now = _utcnow()
                rows = [
                    {"study_id": study_id, "number": (last or 0) + i + 1, "arch": _json_safe(arch),
                     "arch_key": arch_key, "operators": arch_operators(arch), "attempt": 1, "started_at": now,
                     **_result_columns(result, now)}
                    for i, (arch, arch_key, result) in enumerate(chunk)
                ]
                ids = connection.execute(
                    insert(TRIALS).returning(TRIALS.c.id, sort_by_parameter_order=True), rows
                ).scalars().all()
                metrics = [
                    {"trial_id": trial_id, "name": name, "value": float(value) if math.isfinite(value) else None}
                    for trial_id, (_, _, result) in zip(ids, chunk, strict=True)
                    for name, value in result.values.items()
                ]
                if metrics:
                    connection.execute(insert(METRICS), metrics)

            self._write_numbered(f"record trials of study {study_name!r}", write)
        return len(pending)

    def trials(
        self,
        study_name: str,
        states: Iterable[TrialState] | None = None,
        *,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[TrialRecord]:
        """The study's trials in ``states`` (all if None), ordered by number, with their values.

        ``offset`` and ``limit`` read one page of them; each architecture is decoded only when used.
        """
        _check_page(offset, limit, None)
        with self._storage_errors(f"read the trials of study {study_name!r}"), session_scope(self._engine) as session:
            connection = session.connection()
            chosen = select(*_TRIAL_COLUMNS).where(TRIALS.c.study_id == self._study_id(connection, study_name))
            if states is not None:
                chosen = chosen.where(TRIALS.c.state.in_([TrialState(state).value for state in states]))
            chosen = chosen.order_by(TRIALS.c.number)
            if offset or limit is not None:
                chosen = chosen.offset(offset).limit(limit)
            rows = connection.execute(chosen).all()
            values = _values_of(connection, chosen.with_only_columns(TRIALS.c.id))
            return [_trial_record(row, values[row.id]) for row in rows]

    def trial(self, study_name: str, number: int) -> TrialRecord:
        """Trial ``number`` of the study; StorageError if there is none."""
        with (
            self._storage_errors(f"read trial {number} of study {study_name!r}"),
            session_scope(self._engine) as session,
        ):
            connection = session.connection()
            study_id = self._study_id(connection, study_name)
            chosen = select(TRIALS).where(TRIALS.c.study_id == study_id, TRIALS.c.number == number)
            row = connection.execute(chosen).first()
            if row is None:
                raise StorageError(f"no trial number {number} in study {study_name!r} in {self.url}")
            return _trial_record(row, _values_of(connection, chosen.with_only_columns(TRIALS.c.id))[row.id])

    def trial_outcomes(self, study_name: str) -> list[TrialOutcome]:
        """Every trial of the study, ordered by number, with its values: lighter to read than ``trials``."""
        with self._storage_errors(f"read the trials of study {study_name!r}"), session_scope(self._engine) as session:
            connection = session.connection()
            study_id = self._study_id(connection, study_name)
            chosen = select(TRIALS.c.id, TRIALS.c.number, TRIALS.c.state, _ARCH_TEXT, TRIALS.c.operators).where(
                TRIALS.c.study_id == study_id
            )
            rows = connection.execute(chosen.order_by(TRIALS.c.number)).all()
            values = _values_of(connection, select(TRIALS.c.id).where(TRIALS.c.study_id == study_id))
            states = {state.value: state for state in TrialState}
            return [
                TrialOutcome(number, states[state], arch, values[id_], _stored_operators(operators))
                for id_, number, state, arch, operators in rows
            ]

    def trial_page(
        self,
        study_name: str,
        *,
        states: Iterable[TrialState] | None = None,
        within_budget: bool | None = None,
        sort: str = "number",
        descending: bool = False,
        offset: int = 0,
        limit: int = 50,
    ) -> TrialPage:
        """A page of the study's trials, sorted and filtered in SQL (for studies of tens of thousands of trials).

        ``sort`` is one of ``TRIAL_SORT_COLUMNS`` or a metric name (trials without it come last);
        ``within_budget`` keeps the complete trials that meet every constraint of the study (True)
        or every other trial (False). Ties are broken by trial number, in the same direction.
        """
        if sort not in TRIAL_SORT_COLUMNS and not _METRIC_NAME.fullmatch(sort):
            raise ValueError(f"sort: {sort!r} is neither a trial column ({', '.join(TRIAL_SORT_COLUMNS)}) nor a metric")
        _check_page(offset, limit, MAX_PAGE_SIZE)
        with self._storage_errors(f"read the trials of study {study_name!r}"), session_scope(self._engine) as session:
            study = self._study_row(session, study_name)
            where: list[ColumnElement[bool]] = [Trial.study_id == study.id]
            if states is not None:
                where.append(Trial.state.in_([TrialState(state).value for state in states]))
            if within_budget is not None:
                feasible = _within_budget(study)
                where.append(feasible if within_budget else not_(feasible))
            total = session.scalar(select(func.count()).select_from(Trial).where(*where)) or 0
            chosen = select(Trial.id).where(*where)  # sorted by id alone; only the page's rows are read whole
            if sort in TRIAL_SORT_COLUMNS:
                column = getattr(Trial, sort)
                chosen = chosen.order_by(column.desc() if descending else column.asc())
            else:
                metric = aliased(TrialMetric)
                chosen = chosen.outerjoin(metric, and_(metric.trial_id == Trial.id, metric.name == sort))
                chosen = chosen.order_by(
                    metric.value.is_(None), metric.value.desc() if descending else metric.value.asc()
                )
            chosen = chosen.order_by(Trial.number.desc() if descending else Trial.number.asc())
            ids = list(session.scalars(chosen.offset(offset).limit(limit)))
            rows = {
                row.id: row for start in range(0, len(ids), _IN_CHUNK)
                for row in session.scalars(select(Trial).where(Trial.id.in_(ids[start:start + _IN_CHUNK])))
            }
            values = _values_of_ids(session.connection(), ids)
            return TrialPage(total, offset, [_trial_record(rows[id_], values[id_]) for id_ in ids])

    # compression runs

    def create_compression_run(
        self,
        name: str,
        *,
        source: str,
        target: str,
        budget: Mapping[str, Any],
        pipeline: Iterable[str],
        source_trial: tuple[str, int] | None = None,
        out_dir: str | None = None,
    ) -> CompressionRunRecord:
        """Store a running compression run, linked to ``(study, trial number)`` where it came from one."""
        with (
            self._storage_errors(f"create compression run {name!r}"),
            session_scope(self._engine, write=True) as session,
        ):
            if session.scalar(select(CompressionRun.id).where(CompressionRun.name == name)) is not None:
                raise StorageError(f"compression run {name!r} already exists in {self.url}; pick another name")
            trial_id = None
            if source_trial is not None:
                study_name, number = source_trial
                study = self._study_row(session, study_name)
                trial_id = session.scalar(select(Trial.id).where(Trial.study_id == study.id, Trial.number == number))
                if trial_id is None:
                    raise StorageError(f"no trial number {number} in study {study_name!r} in {self.url}")
            row = CompressionRun(
                name=name,
                source=source,
                source_trial_id=trial_id,
                target=target,
                budget=_json_safe(budget),
                pipeline=list(pipeline),
                status=CompressionStatus.RUNNING.value,
                out_dir=out_dir,
                report={},
                created_at=_utcnow(),
            )
            session.add(row)
            session.flush()
            return _compression_record(session, row)

    def add_compression_step(
        self,
        run_name: str,
        *,
        name: str,
        accepted: bool,
        metrics: Mapping[str, float],
        details: Mapping[str, Any] | None = None,
        message: str | None = None,
        seconds: float = 0.0,
    ) -> CompressionStepRecord:
        """Append a step to a running compression run, at the next position."""
        with (
            self._storage_errors(f"add a step to compression run {run_name!r}"),
            session_scope(self._engine, write=True) as session,
        ):
            run = self._compression_row(session, run_name)
            last = session.scalar(select(func.max(CompressionStep.position)).where(CompressionStep.run_id == run.id))
            row = CompressionStep(
                run_id=run.id,
                position=0 if last is None else last + 1,
                name=name,
                accepted=accepted,
                metrics=_json_safe(dict(metrics)),
                details=_json_safe(dict(details or {})),
                message=message,
                seconds=float(seconds),
            )
            session.add(row)
            session.flush()
            return _step_record(row)

    def finish_compression_run(
        self,
        run_name: str,
        status: CompressionStatus | str,
        report: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """End a compression run complete, unmet (best reached kept) or failed, with its summary."""
        status = CompressionStatus(status)
        if status is CompressionStatus.RUNNING:
            raise ValueError("a compression run ends complete, unmet or failed, not running")
        with (
            self._storage_errors(f"finish compression run {run_name!r}"),
            session_scope(self._engine, write=True) as session,
        ):
            row = self._compression_row(session, run_name)
            row.status = status.value
            row.report = _json_safe(dict(report or {}))
            row.error = error
            row.finished_at = _utcnow()

    def compression_runs(self) -> list[CompressionRunRecord]:
        """Every compression run, newest first, with its steps."""
        with self._storage_errors("list the compression runs"), session_scope(self._engine) as session:
            chosen = select(CompressionRun).order_by(CompressionRun.created_at.desc(), CompressionRun.id.desc())
            return [_compression_record(session, row) for row in session.scalars(chosen)]

    def compression_run(self, name: str) -> CompressionRunRecord:
        """The compression run called ``name``; StorageError if there is none."""
        with self._storage_errors(f"read compression run {name!r}"), session_scope(self._engine) as session:
            return _compression_record(session, self._compression_row(session, name))

    def next_compression_name(self, prefix: str) -> str:
        """The first of ``prefix-1``, ``prefix-2``, ... that no compression run is called yet."""
        with self._storage_errors("list the compression run names"), session_scope(self._engine) as session:
            taken = set(
                session.scalars(
                    select(CompressionRun.name).where(CompressionRun.name.startswith(f"{prefix}-", autoescape=True))
                )
            )
        number = 1
        while f"{prefix}-{number}" in taken:
            number += 1
        return f"{prefix}-{number}"

    # latency tables

    def put_latency_entries(self, target: str, device: str, entries: Iterable[LatencyRecord]) -> int:
        """Store operator-instance latencies, replacing those of the same keys; how many were written."""
        entries = list(entries)
        with (
            self._storage_errors(f"store latency entries of target {target!r}"),
            session_scope(self._engine, write=True) as session,
        ):
            scope = (LatencyEntry.target == target, LatencyEntry.device == device)
            _upsert(session, LatencyEntry, LatencyEntry.instance_key, scope, entries,
                    lambda e, now: LatencyEntry(target=target, device=device, instance_key=e.key, instance={},
                                                median_ms=0.0, spread=0.0, measured_at=now),
                    "instance")
        return len(entries)

    def latency_entries(
        self, target: str, device: str, keys: Iterable[str] | None = None
    ) -> dict[str, LatencyRecord]:
        """The stored operator-instance latencies of a target and device by key (only ``keys`` if given)."""
        with self._storage_errors(f"read latency entries of target {target!r}"), session_scope(self._engine) as session:
            chosen = select(LatencyEntry).where(LatencyEntry.target == target, LatencyEntry.device == device)
            if keys is None:
                rows = list(session.scalars(chosen))
            else:
                wanted = sorted(set(keys))
                rows = []
                for start in range(0, len(wanted), _IN_CHUNK):
                    chunk = wanted[start : start + _IN_CHUNK]
                    rows.extend(session.scalars(chosen.where(LatencyEntry.instance_key.in_(chunk))))
            return {
                row.instance_key: LatencyRecord(row.instance_key, dict(row.instance), row.median_ms, row.spread,
                                                row.measured_at)
                for row in rows
            }

    def put_latency_samples(self, target: str, device: str, space: str, samples: Iterable[LatencyRecord]) -> int:
        """Store whole-architecture latencies of a space, replacing those of the same architectures."""
        samples = list(samples)
        with (
            self._storage_errors(f"store latency samples of space {space!r}"),
            session_scope(self._engine, write=True) as session,
        ):
            scope = (LatencySample.target == target, LatencySample.device == device, LatencySample.space == space)
            _upsert(session, LatencySample, LatencySample.arch_key, scope, samples,
                    lambda e, now: LatencySample(target=target, device=device, space=space, arch_key=e.key, arch={},
                                                 median_ms=0.0, spread=0.0, measured_at=now),
                    "arch")
        return len(samples)

    def latency_samples(self, target: str, device: str, space: str) -> list[LatencyRecord]:
        """The whole-architecture latencies stored for a space on a target and device, oldest first."""
        with self._storage_errors(f"read latency samples of space {space!r}"), session_scope(self._engine) as session:
            chosen = select(LatencySample).where(
                LatencySample.target == target, LatencySample.device == device, LatencySample.space == space
            ).order_by(LatencySample.id)
            return [
                LatencyRecord(row.arch_key, dict(row.arch), row.median_ms, row.spread, row.measured_at)
                for row in session.scalars(chosen)
            ]

    # helpers

    def _compression_row(self, session: Session, name: str) -> CompressionRun:
        row = session.scalar(select(CompressionRun).where(CompressionRun.name == name))
        if row is None:
            raise StorageError(f"no compression run named {name!r} in {self.url}")
        return row

    def _study_row(self, session: Session, name: str) -> Study:
        row = session.scalar(select(Study).where(Study.name == name))
        if row is None:
            raise StorageError(f"no study named {name!r} in {self.url}")
        return row

    def _study_id(self, connection: Connection, name: str) -> int:
        found = connection.scalar(select(STUDIES.c.id).where(STUDIES.c.name == name))
        if found is None:
            raise StorageError(f"no study named {name!r} in {self.url}")
        return found

    def _lock_study(self, connection: Connection, name: str) -> int:
        """Touch study ``name``'s ``updated_at``, which locks its row until commit so trials are numbered in turn."""
        found = connection.scalar(
            update(STUDIES).where(STUDIES.c.name == name).values(updated_at=_utcnow()).returning(STUDIES.c.id)
        )
        if found is None:
            raise StorageError(f"no study named {name!r} in {self.url}")
        return found

    def _not_running(self, connection: Connection, trial_id: int, *, in_url: bool) -> StorageError:
        """Why trial ``trial_id`` cannot be finished or re-queued: there is none, or it has finished."""
        row = connection.execute(
            select(TRIALS.c.number, TRIALS.c.state, STUDIES.c.name).join(STUDIES, STUDIES.c.id == TRIALS.c.study_id)
            .where(TRIALS.c.id == trial_id)
        ).first()
        if row is None:
            return StorageError(f"no trial with id {trial_id} in {self.url}")
        where = f" in {self.url}" if in_url else ""
        return StorageError(f"trial {row.number} of study {row.name!r}{where} already finished ({row.state})")

    def _duplicate(self, name: str) -> StudyExistsError:
        return StudyExistsError(f"study {name!r} already exists in {self.url}; pick another name")

    def _write_numbered(self, action: str, write: Callable[[Connection], _Written]) -> _Written:
        """Run ``write`` in a write transaction, again if a concurrent writer took the same trial number."""
        tries_left = _NUMBERING_TRIES
        with self._storage_errors(action):
            while True:
                try:
                    with session_scope(self._engine, write=True) as session:
                        return write(session.connection())
                except IntegrityError:
                    tries_left -= 1
                    if tries_left == 0:
                        raise

    @contextmanager
    def _storage_errors(self, action: str) -> Iterator[None]:
        """Turn a database failure during ``action`` into a one-line StorageError."""
        try:
            yield
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot {action} in {self.url}: {describe_failure(exc)}") from exc


def _insert_trial(
    connection: Connection,
    study_id: int,
    arch: Mapping[str, Any],
    arch_key: str,
    attempt: int,
    result: Result | None = None,
) -> Row[Any]:
    """Insert a trial numbered one past the study's last, running or with ``result``; the new row.

    The number is taken in the INSERT itself, after the study's row is locked: a fresh
    snapshot on PostgreSQL, so concurrent writers see each other's trials.
    """
    now = _utcnow()
    columns: dict[str, Any] = {
        "state": TrialState.RUNNING.value, "error": None, "timings": {}, "target": None, "fingerprint": {},
        "finished_at": None,
    }
    if result is not None:
        columns.update(_result_columns(result, now))
    number = select(func.coalesce(func.max(TRIALS.c.number), 0) + 1).where(TRIALS.c.study_id == study_id)
    return connection.execute(
        insert(TRIALS).values(
            study_id=study_id, number=number.scalar_subquery(), arch=_json_safe(arch), arch_key=arch_key,
            operators=arch_operators(arch), attempt=attempt, started_at=now, **columns,
        ).returning(*TRIALS.c)
    ).one()


def _result_columns(result: Result, now: datetime) -> dict[str, Any]:
    """The trial columns that hold ``result`` (its values go to the metric rows)."""
    return {
        "state": result.state.value,
        "error": result.error,
        "timings": {name: float(s) for name, s in result.timings.items() if math.isfinite(s)},
        "target": result.target,
        "fingerprint": {str(name): str(value) for name, value in result.fingerprint.items()},
        "finished_at": now,
    }


def _write_metrics(connection: Connection, trial_id: int, result: Result) -> dict[str, float]:
    """Store ``result.values`` as the trial's metric rows (NULL where not finite); the finite values."""
    stored = {name: float(value) for name, value in result.values.items()}
    if stored:
        connection.execute(insert(METRICS), [
            {"trial_id": trial_id, "name": name, "value": value if math.isfinite(value) else None}
            for name, value in stored.items()
        ])
    return {name: value for name, value in stored.items() if math.isfinite(value)}


def _upsert(
    session: Session,
    model: type[LatencyEntry] | type[LatencySample],
    key_column: Any,
    scope: tuple[Any, ...],
    records: list[LatencyRecord],
    new_row: Callable[[LatencyRecord, datetime], Any],
    item_field: str,
) -> None:
    """Write ``records`` into the rows of ``model`` within ``scope``: update a row of the same key, else add one."""
    now = _utcnow()
    keys = sorted({r.key for r in records})
    existing: dict[str, Any] = {}
    for start in range(0, len(keys), _IN_CHUNK):
        chosen = select(model).where(*scope, key_column.in_(keys[start : start + _IN_CHUNK]))
        existing.update({getattr(row, key_column.key): row for row in session.scalars(chosen)})
    for record in records:
        if not (math.isfinite(record.median_ms) and math.isfinite(record.spread)):
            raise ValueError(f"latency of {record.key} is not finite: {record.median_ms} ms, spread {record.spread}")
        row = existing.get(record.key)
        if row is None:
            row = existing[record.key] = new_row(record, now)
            session.add(row)
        setattr(row, item_field, _json_safe(record.item))
        row.median_ms, row.spread, row.measured_at = float(record.median_ms), float(record.spread), now
    session.flush()


def _values_of(connection: Connection, trial_ids: Select[tuple[int]]) -> defaultdict[int, dict[str, float]]:
    """The finite metric values of the trials that ``trial_ids`` selects, by trial id, in one query."""
    values: defaultdict[int, dict[str, float]] = defaultdict(dict)
    metrics = select(METRICS.c.trial_id, METRICS.c.name, METRICS.c.value).where(
        METRICS.c.trial_id.in_(trial_ids), METRICS.c.value.is_not(None)
    )
    for trial_id, name, value in connection.execute(metrics).all():
        values[trial_id][name] = value
    return values


def _values_of_ids(connection: Connection, trial_ids: list[int]) -> defaultdict[int, dict[str, float]]:
    """The finite metric values of the trials ``trial_ids`` (a page of them), by trial id."""
    values: defaultdict[int, dict[str, float]] = defaultdict(dict)
    for start in range(0, len(trial_ids), _IN_CHUNK):
        chunk = select(TRIALS.c.id).where(TRIALS.c.id.in_(trial_ids[start:start + _IN_CHUNK]))
        values.update(_values_of(connection, chunk))
    return values


def _check_page(offset: int, limit: int | None, most: int | None) -> None:
    """Refuse a negative offset, or a limit below 1 (or above ``most``)."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
    if limit is None and most is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1 or (most is not None and limit > most):
        upper = f" to {most}" if most is not None else " or more"
        raise ValueError(f"limit must be an integer from 1{upper}, got {limit!r}")


def _within_budget(study: Study) -> ColumnElement[bool]:
    """SQL for: the trial is complete and every constraint of ``study`` holds on its stored, finite value."""
    conditions: list[ColumnElement[bool]] = [Trial.state == TrialState.COMPLETE.value]
    for item in study.constraints:
        constraint = Constraint.from_json(item)
        value = TrialMetric.value
        bound = value <= constraint.bound if constraint.op == "<=" else value >= constraint.bound
        conditions.append(
            exists().where(TrialMetric.trial_id == Trial.id, TrialMetric.name == constraint.name, bound)
        )
    return and_(*conditions)


def _check_finished(result: Result) -> None:
    if not result.state.finished:
        raise ValueError(f"a trial ends complete, failed or pruned, not {result.state.value}")


def _study_record(row: Study) -> StudyRecord:
    return StudyRecord(
        id=row.id,
        name=row.name,
        space=row.space,
        target=row.target,
        status=StudyStatus(row.status),
        objectives=tuple(Objective.from_json(item) for item in row.objectives),
        constraints=tuple(Constraint.from_json(item) for item in row.constraints),
        spec=dict(row.spec),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _trial_record(row: Trial | Row[Any], values: dict[str, float]) -> TrialRecord:
    """The record of a trial row whose ``arch`` is JSON text (read with ``_ARCH_TEXT``) or already decoded."""
    arch = row.arch
    return TrialRecord(
        id=row.id,
        study_id=row.study_id,
        number=row.number,
        arch_json=arch if isinstance(arch, str) else json.dumps(arch),
        arch_key=row.arch_key,
        state=TrialState(row.state),
        values=dict(values),
        error=row.error,
        timings=dict(row.timings),
        attempt=row.attempt,
        target=row.target,
        fingerprint=dict(row.fingerprint),
        started_at=row.started_at,
        finished_at=row.finished_at,
        operators=_stored_operators(row.operators),
    )


def _step_record(row: CompressionStep) -> CompressionStepRecord:
    return CompressionStepRecord(
        position=row.position,
        name=row.name,
        accepted=row.accepted,
        metrics=dict(row.metrics),
        details=dict(row.details),
        message=row.message,
        seconds=row.seconds,
    )


def _compression_record(session: Session, row: CompressionRun) -> CompressionRunRecord:
    study_name, number = None, None
    if row.source_trial_id is not None:
        found = session.execute(
            select(Study.name, Trial.number).join(Trial, Trial.study_id == Study.id).where(
                Trial.id == row.source_trial_id
            )
        ).first()
        if found is not None:
            study_name, number = found
    return CompressionRunRecord(
        id=row.id,
        name=row.name,
        source=row.source,
        source_study=study_name,
        source_trial=number,
        target=row.target,
        budget=dict(row.budget),
        pipeline=list(row.pipeline),
        status=CompressionStatus(row.status),
        out_dir=row.out_dir,
        report=dict(row.report),
        error=row.error,
        created_at=row.created_at,
        finished_at=row.finished_at,
        steps=tuple(_step_record(step) for step in row.steps),
    )


def _json_safe(value: Any) -> Any:
    """``value`` as JSON data, with non-finite floats as None (JSON and PostgreSQL have no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _utcnow() -> datetime:
    return datetime.now(UTC)
