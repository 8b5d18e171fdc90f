"""The store's schema: every table, in one module. Changing it means adding an Alembic revision."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from archetype.result import TrialState

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class StudyStatus(enum.StrEnum):
    """Where a study stands: still running, or ended complete, failed or interrupted by the user."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class CompressionStatus(enum.StrEnum):
    """Where a compression run stands: running, or ended complete (budget met), unmet (best reached) or failed."""

    RUNNING = "running"
    COMPLETE = "complete"
    UNMET = "unmet"
    FAILED = "failed"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend, although SQLite stores no zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; store times in UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _one_of(column: str, choices: type[enum.StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(choice.value) for choice in choices)})"


class Base(DeclarativeBase):
    """The declarative base whose metadata Alembic migrates."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Study(Base):
    """One search: its space, target, objectives and constraints, and the run spec that launched it."""

    __tablename__ = "studies"
    __table_args__ = (CheckConstraint(_one_of("status", StudyStatus), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    space: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    objectives: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{name, direction}]
    constraints: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{name, op, bound}]
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    strategy_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the last Strategy.state_dict()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    trials: Mapped[list[Trial]] = relationship(back_populates="study", passive_deletes=True)


class Trial(Base):
    """One evaluation of one architecture in a study, numbered 1, 2, ... within the study."""

    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number"),
        Index("ix_trials_study_id_arch_key", "study_id", "arch_key"),
        Index("ix_trials_study_id_state", "study_id", "state"),  # counts by state read the index alone
        CheckConstraint(_one_of("state", TrialState), name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    arch: Mapped[dict[str, Any]] = mapped_column(JSON)
    arch_key: Mapped[str] = mapped_column(String(16))
    operators: Mapped[str] = mapped_column(Text, default="", server_default="")  # of arch, in slot order
    state: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    timings: Mapped[dict[str, float]] = mapped_column(JSON)  # seconds per phase
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    target: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[dict[str, str]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    study: Mapped[Study] = relationship(back_populates="trials")
    metrics: Mapped[list[TrialMetric]] = relationship(back_populates="trial", passive_deletes=True)


class TrialMetric(Base):
    """One measured value of a trial (a ``Result.values`` entry); NULL where it was not finite."""

    __tablename__ = "trial_metrics"
    __table_args__ = (UniqueConstraint("trial_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[float | None] = mapped_column(Double)

    trial: Mapped[Trial] = relationship(back_populates="metrics")


class CompressionRun(Base):
    """One ``archetype compress`` run: the source model, the budget, the pipeline and where the output went."""

    __tablename__ = "compression_runs"
    __table_args__ = (CheckConstraint(_one_of("status", CompressionStatus), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    source: Mapped[str] = mapped_column(Text)  # what the user named: a file, a factory or STUDY:TRIAL
    source_trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id", ondelete="SET NULL"), index=True)
    target: Mapped[str] = mapped_column(Text)
    budget: Mapped[dict[str, Any]] = mapped_column(JSON)  # {latency_ms, max_size_mb, max_accuracy_drop}
    pipeline: Mapped[list[str]] = mapped_column(JSON)  # step names in order
    status: Mapped[str] = mapped_column(String(16))
    out_dir: Mapped[str | None] = mapped_column(Text)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)  # the run's final summary
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    steps: Mapped[list[CompressionStep]] = relationship(
        back_populates="run", passive_deletes=True, order_by="CompressionStep.position"
    )


class CompressionStep(Base):
    """One step of a compression run, numbered from 0 (the source model as measured) in pipeline order."""

    __tablename__ = "compression_steps"
    __table_args__ = (UniqueConstraint("run_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("compression_runs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    accepted: Mapped[bool] = mapped_column(Boolean)  # False: the step was tried and its model rejected
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)  # latency_ms, size_mb, params, macs, accuracy, ...
    details: Mapped[dict[str, Any]] = mapped_column(JSON)  # step-specific: ranks, ratios, merged spans, policy
    message: Mapped[str | None] = mapped_column(Text)  # why a step was rejected, or a note
    seconds: Mapped[float] = mapped_column(Double)

    run: Mapped[CompressionRun] = relationship(back_populates="steps")


class LatencyEntry(Base):
    """One operator instance measured alone on a target and device: a row of a latency table.

    ``device`` is a hash of the target's fingerprint (machine, runtime versions,
    threads); ``instance_key`` a hash of ``instance``, the operator's name, its
    hyperparameters and its input type. The key ``overhead`` holds the fixed
    cost of one run of an empty model on the target.
    """

    __tablename__ = "latency_entries"
    __table_args__ = (UniqueConstraint("target", "device", "instance_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(64))
    instance_key: Mapped[str] = mapped_column(String(64))
    instance: Mapped[dict[str, Any]] = mapped_column(JSON)  # {op, params, input}
    median_ms: Mapped[float] = mapped_column(Double)
    spread: Mapped[float] = mapped_column(Double)
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LatencySample(Base):
    """A whole architecture of a space measured on a target and device, what a latency predictor learns from."""

    __tablename__ = "latency_samples"
    __table_args__ = (UniqueConstraint("target", "device", "space", "arch_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(64))
    space: Mapped[str] = mapped_column(String(255))
    arch_key: Mapped[str] = mapped_column(String(16))
    arch: Mapped[dict[str, Any]] = mapped_column(JSON)
    median_ms: Mapped[float] = mapped_column(Double)
    spread: Mapped[float] = mapped_column(Double)
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime)
