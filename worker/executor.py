"""Executors: run evaluations in parallel and hand back results as they finish.

``RayExecutor`` is the default: a local Ray runtime sized to the machine, or an
existing cluster given its address. ``InlineExecutor`` runs in the calling
process, for debugging and for tests of the search loop itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from abc import ABC, abstractmethod
from collections import deque
from typing import Any

from archetype.errors import ArchetypeError
from archetype.result import Result
from archetype.searchspace.architecture import Architecture
from archetype.worker.evaluator import Budget, Evaluator


class Executor(ABC):
    """Runs ``evaluator.evaluate(arch, budget)`` somewhere; ``next_result`` returns them as they end."""

    slots: int
    """How many evaluations may run at once."""

    @abstractmethod
    def submit(self, tag: Any, evaluator: Evaluator, arch: Architecture, budget: Budget) -> None:
        """Start an evaluation; ``tag`` comes back with its result."""

    @abstractmethod
    def next_result(self) -> tuple[Any, Result]:
        """Block until one submitted evaluation ends; its tag and result."""

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


def _evaluate_remote(evaluator: Evaluator, arch: Architecture, budget: Budget) -> Result:
    return evaluator.evaluate(arch, budget)


class RayExecutor(Executor):
    """Evaluations as Ray tasks, ``workers`` at a time, each given ``cpus_per_trial`` CPUs."""

    def __init__(self, workers: int = 1, cpus_per_trial: float = 1.0, address: str | None = None) -> None:
        import ray

        if workers < 1:
            raise ArchetypeError(f"--workers must be at least 1, got {workers}")
        self.slots = workers
        self._ray = ray
        self._temp_dir: str | None = None
        self._owns_runtime = not ray.is_initialized()
        if self._owns_runtime:
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
        self._task = ray.remote(num_cpus=cpus_per_trial, max_retries=0)(_evaluate_remote)
        self._running: dict[Any, Any] = {}  # ObjectRef -> tag

    def submit(self, tag: Any, evaluator: Evaluator, arch: Architecture, budget: Budget) -> None:
        self._running[self._task.remote(evaluator, arch, budget)] = tag

    def next_result(self) -> tuple[Any, Result]:
        if not self._running:
            raise RuntimeError("next_result() with nothing submitted")
        [ref], _ = self._ray.wait(list(self._running), num_returns=1)
        tag = self._running.pop(ref)
        try:
            return tag, self._ray.get(ref)
        except Exception as exc:  # the worker process died or Ray lost the task
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip().splitlines()[-1]
            return tag, Result.failed(f"worker failed: {detail}")

    def pending(self) -> int:
        return len(self._running)

    def shutdown(self) -> None:
        for ref in list(self._running):
            self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._owns_runtime and self._ray.is_initialized():
            self._ray.shutdown()
        self._cleanup_temp()

    def _cleanup_temp(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
