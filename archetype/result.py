"""Result: what evaluating one architecture measured, as plain JSON-able data."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BYTES_PER_MB = 1_000_000


def megabytes(n_bytes: float) -> float:
    """``n_bytes`` in MB of 10**6 bytes: the one unit of every ``size_mb``, searched or compressed."""
    return n_bytes / BYTES_PER_MB


class TrialState(enum.StrEnum):
    """Where a trial stands: running, or ended complete, failed or pruned (stopped early)."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    PRUNED = "pruned"

    @property
    def finished(self) -> bool:
        return self is not TrialState.RUNNING


@dataclass
class Result:
    """Measured values by name (``accuracy``, ``latency_ms``, ``params``, ``macs``, ``size_mb``, ...)."""

    state: TrialState
    values: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    target: str | None = None
    fingerprint: dict[str, str] = field(default_factory=dict)  # device and runtime versions
    retryable: bool = field(default=False, compare=False)  # the worker was lost, not the evaluation: run again

    @classmethod
    def failed(cls, error: str, **kwargs: Any) -> Result:
        return cls(TrialState.FAILED, error=error, **kwargs)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "values": {k: _finite_or_none(v) for k, v in self.values.items()},
            "error": self.error,
            "timings": dict(self.timings),
            "target": self.target,
            "fingerprint": dict(self.fingerprint),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Result:
        return cls(
            state=TrialState(data["state"]),
            values={k: float(v) for k, v in (data.get("values") or {}).items() if v is not None},
            error=data.get("error"),
            timings=dict(data.get("timings") or {}),
            target=data.get("target"),
            fingerprint=dict(data.get("fingerprint") or {}),
        )


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
