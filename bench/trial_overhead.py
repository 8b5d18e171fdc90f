"""The search driver's own cost per trial at trial 100, 1,000 and 10,000 of a tabular study, for every strategy.

Each strategy searches the digits table (``worker/tables/digits-tabular.json.gz``: evaluation is a
lookup) through ``Search.run`` on a SQLite store, one trial at a time on the inline executor. Per trial
it splits the wall time between two trials stored into: the strategy's ``ask`` + ``tell`` (the
sampler's inherent cost), the lookup, and the rest, which is the driver's overhead (screen, start,
finish, saving the strategy state, the store's writes). Each figure is the median over the
``--window`` trials up to the checkpoint. The table has 300 architectures, so past trial 300
strategies propose repeats after their redraws: that cost is the sampler's.

Only public APIs that also exist before the strategy state was made small are used, so the same
file measures the old driver too: run it from a checkout of the old code with
``cd OLD && .venv/bin/python NEW/bench/trial_overhead.py``. Run (alone on the machine):
``.venv/bin/python bench/trial_overhead.py [--checkpoints 100 1000 10000] [--skip gp] [--strategies tpe evolution]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from archetype.errors import SpecError
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.runtime.targets import cpu_description
from archetype.search import Search
from archetype.spec import RunSpec
from archetype.store import Store
from archetype.strategies import list_strategies, make_strategy
from archetype.worker.executor import InlineExecutor
from archetype.worker.tabular import DEFAULT_TABLE, TabularBenchmark, TabularEvaluator


class Clock:
    """Seconds spent inside the wrapped calls since the last ``take``."""

    def __init__(self) -> None:
        self.spent = 0.0

    def wrap(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - start

        return timed

    def take(self) -> float:
        spent, self.spent = self.spent, 0.0
        return spent


def measure(name: str, table: TabularBenchmark, trials: int, folder: Path, seed: int = 0) -> list[tuple[float, float]]:
    """Per stored trial: (driver overhead s, sampler s) of strategy ``name`` over ``trials`` trials."""
    budget = float(np.percentile([v["latency_ms"] for v in table.values.values()], 30))
    constraints = (Constraint("latency_ms", "<=", budget),)
    # the one-shot strategy's scorer is a supernet; here it is driven by the plain loop on the table
    spec = RunSpec(space=table.space.name, strategy="random" if name == "oneshot" else name, trials=trials,
                   constraints=constraints, seed=seed, study=f"overhead-{name}")
    strategy = make_strategy(name, table.space, DEFAULT_OBJECTIVES, constraints, seed)
    sampler, lookup = Clock(), Clock()
    strategy.ask = sampler.wrap(strategy.ask)  # type: ignore[method-assign]
    strategy.tell = sampler.wrap(strategy.tell)  # type: ignore[method-assign]
    evaluator = TabularEvaluator(table)
    evaluator.evaluate = lookup.wrap(evaluator.evaluate)  # type: ignore[method-assign]
    rows: list[tuple[float, float]] = []
    last = time.perf_counter()

    def on_trial(_record: Any) -> None:
        nonlocal last
        now = time.perf_counter()
        spent_sampling = sampler.take()
        rows.append((now - last - spent_sampling - lookup.take(), spent_sampling))
        if len(rows) % 1000 == 0:
            print(f"  {name}: {len(rows)} of {trials} trials", file=sys.stderr)
        last = time.perf_counter()

    with Store.open(f"sqlite:///{folder / f'{name}.db'}") as store:
        Search(spec, table.space, strategy, evaluator).run(store, executor=InlineExecutor(), on_trial=on_trial)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--window", type=int, default=50, help="trials up to each checkpoint the median is over")
    parser.add_argument("--strategies", nargs="+", help="default: every registered strategy")
    parser.add_argument("--skip", nargs="+", default=[], help="strategies left out (gp takes seconds an ask)")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    args = parser.parse_args(argv)
    table = TabularBenchmark.load(args.table)
    names = [n for n in (args.strategies or list_strategies()) if n not in args.skip]
    checkpoints = sorted(args.checkpoints)
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="arc-overhead-") as folder:
        for name in names:
            print(f"{name}: {checkpoints[-1]} trials ...", file=sys.stderr)
            try:
                results[name] = measure(name, table, checkpoints[-1], Path(folder))
            except (ImportError, SpecError) as exc:  # nni-* need the nni extra
                print(f"  {name}: skipped ({exc})", file=sys.stderr)
    print(f"CPU: {cpu_description()}")
    header = "".join(f"{f'driver@{n}':>14}{f'sampler@{n}':>15}" for n in checkpoints)
    print(f"{'strategy (ms/trial)':<20}{header}")
    for name, rows in results.items():
        cells = []
        for n in checkpoints:
            window = rows[max(0, n - args.window):n]
            cells.append(f"{statistics.median(r[0] for r in window) * 1e3:>14.2f}")
            cells.append(f"{statistics.median(r[1] for r in window) * 1e3:>15.2f}")
        print(f"{name:<20}{''.join(cells)}")
    print("\nnext: the old driver: cd OLD && .venv/bin/python NEW/bench/trial_overhead.py", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
