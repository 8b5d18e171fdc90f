"""Per-trial overhead of the search loop on Ray: scheduling, result transfer, store writes, strategy state.

Each trial is a synthetic evaluation that sleeps one second; the overhead per trial is
(wall time - ideal time) / trials, where the ideal is trials x 1 s / workers. Ray's start-up
is timed apart. Run: ``.venv/bin/python bench/worker_overhead.py [--trials 20]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import ray.cloudpickle

from archetype.result import Result, TrialState
from archetype.search import prepare_search
from archetype.searchspace import Architecture
from archetype.spec import RunSpec
from archetype.store import Store
from archetype.worker.evaluator import Budget, Evaluator
from archetype.worker.executor import RayExecutor

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class SleepEvaluator(Evaluator):
    """A synthetic trial: ``seconds`` of sleep, then values derived from the architecture."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def evaluate(self, arch: Architecture, budget: Budget, on_epoch=None) -> Result:
        time.sleep(self.seconds)
        return Result(TrialState.COMPLETE, {"accuracy": int(arch.key[:4], 16) / 65536, "latency_ms": 1.0})


def measure(workers: int, trials: int, seconds: float, folder: Path) -> dict[str, float]:
    spec = RunSpec(space="conv-small", trials=trials, workers=workers, seed=workers)
    search = prepare_search(spec, SleepEvaluator(seconds))
    start = time.perf_counter()
    executor = RayExecutor(workers=workers)
    executor.worker_pids()  # the actors are up
    startup = time.perf_counter() - start
    with Store.open(f"sqlite:///{folder / f'overhead-{workers}.db'}") as store:
        start = time.perf_counter()
        report = search.run(store, executor=executor)
        wall = time.perf_counter() - start
    executor.shutdown()
    assert len(report.trials) == trials
    ideal = trials * seconds / workers
    per_trial = (wall - ideal) / trials
    return {"workers": workers, "startup_s": startup, "wall_s": wall, "ideal_s": ideal,
            "overhead_ms": per_trial * 1e3, "share": per_trial / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(workers, args.trials, args.seconds, Path(folder)) for workers in (1, 2)]
    print(f"{args.trials} synthetic trials of {args.seconds:g} s each; SQLite store; Ray actors reused")
    print(f"{'workers':>7} {'ray start s':>11} {'wall s':>8} {'ideal s':>8} {'overhead/trial ms':>18} {'share':>7}")
    for r in rows:
        print(f"{r['workers']:>7} {r['startup_s']:>11.1f} {r['wall_s']:>8.2f} {r['ideal_s']:>8.1f} "
              f"{r['overhead_ms']:>18.1f} {r['share']:>7.1%}")


if __name__ == "__main__":
    main()
