"""Executors: run evaluations in parallel and hand back results as they finish.

``RayExecutor`` is the default: a pool of Ray actors on a local Ray runtime sized
to the machine, or on an existing cluster given its address. Actors are reused
from one evaluation to the next, so each keeps its data set and imports loaded.
``InlineExecutor`` runs in the calling process, for debugging and for tests of
the search loop itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archetype.errors import ArchetypeError
from archetype.result import Result
from archetype.searchspace.architecture import Architecture
from archetype.worker.evaluator import Budget, Evaluator

MEMORY_POLL_S = 0.5
"""How often the workers' memory is read while a memory limit is set."""


@dataclass(frozen=True)
class TrialLimits:
    """What one evaluation may use before its worker is stopped and the trial stored as failed with the reason."""

    timeout_s: float | None = None  # wall-clock seconds from the moment a worker starts it
    memory_mb: float | None = None  # resident memory of its worker process (local runtime only)


def default_trial_timeout_s(epochs: int, train_samples: int) -> float:
    """Ten minutes, plus 20 ms per training sample and epoch: generous for any sane candidate on one CPU."""
    return 600.0 + 0.02 * epochs * train_samples


def default_trial_memory_mb(workers: int) -> float | None:
    """Four fifths of this machine's memory shared by ``workers``; None where it cannot be read."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return 0.8 * total / 2**20 / max(1, workers)


def resident_mb(pid: int) -> float | None:
    """The resident memory of process ``pid`` in MB (Linux ``/proc``); None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Executor(ABC):
    """Runs ``evaluator.evaluate(arch, budget)`` somewhere; ``next_result`` returns them as they end."""

    slots: int
    """How many evaluations may run at once."""

    @abstractmethod
    def submit(self, tag: Any, evaluator: Evaluator, arch: Architecture, budget: Budget) -> None:
        """Start an evaluation; ``tag`` comes back with its result."""

    @abstractmethod
    def next_result(self) -> tuple[Any, Result]:
        """Block until one submitted evaluation ends; its tag and result.

        A worker lost during the evaluation (its process killed, its node gone)
        gives a FAILED result with ``retryable`` set, so the caller may run it again.
        """

    @abstractmethod
    def pending(self) -> int:
        """Evaluations submitted and not yet returned."""

    def shutdown(self) -> None:  # noqa: B027  (optional hook)
        """Release processes and temporary files."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class InlineExecutor(Executor):
    """Evaluates in the calling process when the result is asked for."""

    slots = 1

    def __init__(self) -> None:
        self._queue: deque[tuple[Any, Evaluator, Architecture, Budget]] = deque()

    def submit(self, tag: Any, evaluator: Evaluator, arch: Architecture, budget: Budget) -> None:
        self._queue.append((tag, evaluator, arch, budget))

    def next_result(self) -> tuple[Any, Result]:
        tag, evaluator, arch, budget = self._queue.popleft()
        return tag, evaluator.evaluate(arch, budget)

    def pending(self) -> int:
        return len(self._queue)


class EvaluationActor:
    """A long-lived worker process that evaluates one architecture at a time."""

    def evaluate(self, evaluator: Evaluator, arch: Architecture, budget: Budget) -> Result:
        return evaluator.evaluate(arch, budget)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor(Executor):
    """A pool of ``workers`` Ray actors, each given ``cpus_per_trial`` CPUs (and ``gpus_per_trial`` of a GPU, a
    share so that several trials train on one GPU), reused across evaluations.

    An evaluation goes only to an actor that has started: one that cannot be placed (its
    node was lost and no other node has the CPUs) holds no work, and the evaluations
    wait for the actors that remain. ``start_timeout_s`` bounds how long the pool may
    have no running actor at all.
    """

    def __init__(
        self,
        workers: int = 1,
        cpus_per_trial: float = 1.0,
        address: str | None = None,
        start_timeout_s: float = 600.0,
        limits: TrialLimits | None = None,
        gpus_per_trial: float = 0.0,
    ) -> None:
        import ray

        if workers < 1:
            raise ArchetypeError(f"--workers must be at least 1, got {workers}")
        self.slots = workers
        self._ray = ray
        self._cpus = cpus_per_trial
        self._gpus = gpus_per_trial
        self._start_timeout_s = start_timeout_s
        self._runtime = RayRuntime(workers, cpus_per_trial, address)
        self._actor_class = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_restarts=0,
                                        max_task_retries=0)(EvaluationActor)
        self._idle: list[Any] = []
        self._starting: dict[Any, Any] = {}  # ObjectRef of the actor's first call -> actor
        self._start_failures = 0
        self._queue: deque[tuple[Any, Evaluator, Architecture, Budget]] = deque()
        self._running: dict[Any, tuple[Any, Any]] = {}  # ObjectRef -> (tag, actor)
        self._limits = limits or TrialLimits()
        self._deadlines: dict[Any, float] = {}  # ObjectRef -> monotonic time its evaluation must end by
        self._pids: dict[Any, int] = {}  # actor -> its process id (read only on a local runtime)
        self._local = address is None
        for _ in range(workers):
            self._start_actor()

    def submit(self, tag: Any, evaluator: Evaluator, arch: Architecture, budget: Budget) -> None:
        self._queue.append((tag, evaluator, arch, budget))
        self._dispatch()

    def next_result(self) -> tuple[Any, Result]:
        if not self._running and not self._queue:
            raise RuntimeError("next_result() with nothing submitted")
        while True:
            ref = self._next_ready()
            if isinstance(ref, _Stopped):
                return self._stop(ref)
            if ref in self._running:
                break
            self._started(ref)
        tag, actor = self._running.pop(ref)
        self._deadlines.pop(ref, None)
        try:
            result = self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:  # the call itself raised: running it again will not help
            result = Result.failed(f"evaluation raised in the worker: {_last_line(exc)}")
            self._idle.append(actor)
        except Exception as exc:  # the actor's process died, or its node
            result = Result.failed(f"worker lost: {_last_line(exc)}", retryable=True)
            self._pids.pop(actor, None)
            self._ray.kill(actor, no_restart=True)
            self._start_actor()
        else:
            self._idle.append(actor)
        self._dispatch()
        return tag, result

    def pending(self) -> int:
        return len(self._running) + len(self._queue)

    def worker_pids(self) -> list[int]:
        """The process ids of the idle workers, once those starting have started (for tests and diagnostics)."""
        while self._starting:
            ready, _ = self._ray.wait(list(self._starting), num_returns=1, timeout=self._start_timeout_s)
            if not ready:
                raise ArchetypeError(self._cannot_start())
            self._started(ready[0])
        return self._ray.get([actor.pid.remote() for actor in self._idle])

    def shutdown(self) -> None:
        self._deadlines.clear()
        for actor in [*self._idle, *self._starting.values(), *(actor for _, actor in self._running.values())]:
            self._ray.kill(actor, no_restart=True)
        self._idle.clear()
        self._starting.clear()
        self._running.clear()
        self._queue.clear()
        self._runtime.stop()

    def _start_actor(self) -> None:
        actor = self._actor_class.remote()
        self._starting[actor.pid.remote()] = actor

    def _next_ready(self) -> Any:
        """The first evaluation to end or actor to start, or an evaluation over its limits as ``_Stopped``;
        ArchetypeError if none runs and none starts in time."""
        started = time.monotonic()
        while True:
            now = time.monotonic()
            over = self._over_limits(now)
            if over is not None:
                return over
            waits = [] if self._running else [started + self._start_timeout_s - now]
            waits += [deadline - now for deadline in self._deadlines.values()]
            if self._running and self._limits.memory_mb is not None and self._local:
                waits.append(MEMORY_POLL_S)
            timeout = max(0.0, min(waits)) if waits else None
            ready, _ = self._ray.wait([*self._running, *self._starting], num_returns=1, timeout=timeout)
            if ready:
                return ready[0]
            if not self._running and time.monotonic() >= started + self._start_timeout_s:
                raise ArchetypeError(self._cannot_start())

    def _over_limits(self, now: float) -> _Stopped | None:
        """The first running evaluation past its deadline or over the memory limit, if any."""
        for ref, deadline in self._deadlines.items():
            if now >= deadline:
                return _Stopped(ref, f"stopped after {self._limits.timeout_s:g} s: over the trial's wall-clock "
                                     f"limit (trial_timeout_s)")
        limit = self._limits.memory_mb
        if limit is None or not self._local:
            return None
        for ref, (_, actor) in self._running.items():
            pid = self._pids.get(actor)
            used = resident_mb(pid) if pid is not None else None
            if used is not None and used > limit:
                return _Stopped(ref, f"stopped at {used:.0f} MB: over the trial's memory limit of {limit:.0f} MB "
                                     f"(trial_memory_mb)")
        return None

    def _stop(self, stopped: _Stopped) -> tuple[Any, Result]:
        """End an evaluation over its limits: its worker is killed and replaced, the trial failed (not retried)."""
        tag, actor = self._running.pop(stopped.ref)
        self._deadlines.pop(stopped.ref, None)
        self._pids.pop(actor, None)
        self._ray.kill(actor, no_restart=True)
        self._start_actor()
        self._dispatch()
        return tag, Result.failed(stopped.reason)

    def _started(self, ref: Any) -> None:
        """An actor's first call returned: it takes work now; one that died starting is replaced (a few times)."""
        actor = self._starting.pop(ref)
        try:
            self._pids[actor] = self._ray.get(ref)
        except Exception as exc:
            self._ray.kill(actor, no_restart=True)
            self._start_failures += 1
            if self._start_failures > 3 * self.slots:
                raise ArchetypeError(f"Ray workers keep dying as they start: {_last_line(exc)}") from None
            self._start_actor()
            return
        self._idle.append(actor)
        self._dispatch()

    def _cannot_start(self) -> str:
        gpus = f" and {self._gpus:g} of a free GPU (--gpus-per-trial)" if self._gpus else ""
        return (f"no Ray worker could start within {self._start_timeout_s:g} s: the cluster has no node with "
                f"{self._cpus:g} free CPUs (--cpus-per-trial){gpus} left")

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            tag, evaluator, arch, budget = self._queue.popleft()
            actor = self._idle.pop()
            ref = actor.evaluate.remote(evaluator, arch, budget)
            self._running[ref] = (tag, actor)
            if self._limits.timeout_s is not None:
                self._deadlines[ref] = time.monotonic() + self._limits.timeout_s


@dataclass(frozen=True)
class _Stopped:
    """A running evaluation that went over its limits, and why."""

    ref: Any
    reason: str


class RayRuntime:
    """Ray for a search: a local runtime sized to the machine in a private temp dir, or a cluster's address.

    A runtime that was already initialised (by the caller) is used as it is and left running.
    """

    def __init__(self, workers: int = 1, cpus_per_trial: float = 1.0, address: str | None = None) -> None:
        import ray

        self._ray = ray
        self._temp_dir: str | None = None
        self._owns_runtime = not ray.is_initialized()
        if not self._owns_runtime:
            return
        init: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": "ERROR",
            "configure_logging": True,
        }
        if address is None:
            # a short private temp dir: Ray's socket paths must stay under ~100 characters
            self._temp_dir = tempfile.mkdtemp(prefix="arc-ray-")
            init.update(num_cpus=max(os.cpu_count() or 1, int(workers * cpus_per_trial)), _temp_dir=self._temp_dir)
        else:
            init["address"] = address
        try:
            ray.init(**init)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            self._cleanup_temp()
            raise ArchetypeError(f"cannot start Ray ({address or 'local'}): {exc}") from None

    def stop(self) -> None:
        """Shut down the runtime if this object started it, and remove its temp dir."""
        if self._owns_runtime and self._ray.is_initialized():
            self._ray.shutdown()
        self._cleanup_temp()

    def _cleanup_temp(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def _last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip().splitlines()[-1]
