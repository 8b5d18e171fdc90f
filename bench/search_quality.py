"""Search quality of every strategy on the tabular digits benchmark, at equal budgets, over seeds.

Each strategy (and Optuna's default sampler driven by plain ``study.optimize``)
searches the table ``bench/data/digits-tabular.json.gz`` for accuracy (maximize)
and latency (minimize) under a latency budget (by default the table's 30th
percentile latency). Per budget and seed it records the hypervolume of the
feasible front found, as a ratio to the true feasible front of the whole table
(reference point: the table's lowest accuracy and the latency budget), and the
best accuracy found within the budget. The table prints medians over seeds.

No strategy here knows its budget, so one run of the largest budget gives the
smaller budgets as its prefixes. The nni-* strategies run where nni is
installed (``make setup-nni``); elsewhere they are listed as skipped. Run:
``.venv-nni/bin/python bench/search_quality.py [--budgets 25 50 100] [--seeds 10] [--skip gp]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from archetype.errors import SpecError
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.pareto import feasible_front, hypervolume
from archetype.result import Result
from archetype.strategies import list_strategies, make_strategy
from archetype.worker.tabular import DEFAULT_TABLE, TabularBenchmark

OPTUNA_DEFAULT = "optuna-default"


def run_strategy(name: str, table: TabularBenchmark, constraint: Constraint, budget: int, seed: int) -> list[Result]:
    """The results, in order, of ``budget`` evaluations proposed by strategy ``name``."""
    if name == OPTUNA_DEFAULT:
        return run_optuna_default(table, constraint, budget, seed)
    strategy = make_strategy(name, table.space, DEFAULT_OBJECTIVES, (constraint,), seed=seed)
    results = []
    for _ in range(budget):
        arch = strategy.ask()
        result = table.lookup(arch)
        strategy.tell(arch, result)
        results.append(result)
    strategy.close()  # the NNI strategies run a thread
    return results


def run_optuna_default(table: TabularBenchmark, constraint: Constraint, budget: int, seed: int) -> list[Result]:
    """Optuna as a user would call it: the default sampler of a two-objective study, ``study.optimize``."""
    import optuna

    from archetype.strategies.optuna_sampler import suggest_architecture

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [o.direction.value for o in DEFAULT_OBJECTIVES]
    default = optuna.create_study(directions=directions).sampler
    study = optuna.create_study(directions=directions, sampler=type(default)(seed=seed))
    results: list[Result] = []

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        arch = suggest_architecture(table.space, trial)
        result = table.lookup(arch)  # ill-typed draws are not in the table: they count as failed evaluations
        results.append(result)
        if result.error:
            raise optuna.TrialPruned(result.error)
        trial.set_constraint("latency", result.values["latency_ms"] - constraint.bound)
        return result.values["accuracy"], result.values["latency_ms"]

    study.optimize(objective, n_trials=budget, catch=(Exception,))
    return results


def scores(
    results: list[Result], constraint: Constraint, true_volume: float, reference: dict[str, float]
) -> tuple[float, float]:
    """(hypervolume ratio to the true feasible front, best feasible accuracy or 0)."""
    front = feasible_front(results, DEFAULT_OBJECTIVES, (constraint,))
    volume = hypervolume([r.values for r in front], DEFAULT_OBJECTIVES, reference) if front else 0.0
    best = max((r.values["accuracy"] for r in front), default=0.0)
    return volume / true_volume, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(DEFAULT_TABLE))
    parser.add_argument("--budgets", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--latency-quantile", type=float, default=0.3)
    parser.add_argument("--strategies", nargs="+", default=None, help="default: every registered one and Optuna's")
    parser.add_argument("--skip", nargs="+", default=[], help="strategies left out")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)

    table = TabularBenchmark.load(args.table)
    rows = list(table.values.values())
    bound = float(np.quantile([r["latency_ms"] for r in rows], args.latency_quantile))
    constraint = Constraint("latency_ms", "<=", bound)
    reference = {"accuracy": min(r["accuracy"] for r in rows), "latency_ms": bound}
    feasible = [r for r in rows if constraint.satisfied(r)]
    true_results = [Result.from_json({"state": "complete", "values": r}) for r in feasible]
    true_front = feasible_front(true_results, DEFAULT_OBJECTIVES, (constraint,))
    true_volume = hypervolume([r.values for r in true_front], DEFAULT_OBJECTIVES, reference)
    best_possible = max(r["accuracy"] for r in feasible)
    print(f"table: {len(table)} architectures ({table.protocol.get('data')}, {table.protocol.get('epochs')} epochs, "
          f"latency on {table.protocol.get('target')}); budget latency_ms <= {bound:.4f} "
          f"({len(feasible)} feasible, true front {len(true_front)} points, "
          f"best feasible accuracy {best_possible:.4f})")
    print(f"medians over {args.seeds} seeds; HV = hypervolume of the feasible front found / of the true one")

    names = args.strategies or [*list_strategies(), OPTUNA_DEFAULT]
    names = [n for n in names if n not in args.skip]
    budgets = sorted(args.budgets)
    header = ["strategy", *(f"HV@{b}" for b in budgets), *(f"best acc@{b}" for b in budgets), "s/run"]
    print(" | ".join(f"{h:>14}" for h in header))
    for name in names:
        if name != OPTUNA_DEFAULT:
            try:
                make_strategy(name, table.space, DEFAULT_OBJECTIVES, (constraint,))
            except SpecError as exc:
                print(f"{name:>14} | skipped: {exc}", flush=True)
                continue
        hv: dict[int, list[float]] = {b: [] for b in budgets}
        acc: dict[int, list[float]] = {b: [] for b in budgets}
        start = time.perf_counter()
        for seed in range(args.seeds):
            results = run_strategy(name, table, constraint, budgets[-1], seed)
            for b in budgets:
                ratio, best = scores(results[:b], constraint, true_volume, reference)
                hv[b].append(ratio)
                acc[b].append(best)
        per_run = (time.perf_counter() - start) / args.seeds
        cells = [f"{np.median(hv[b]):.3f}" for b in budgets] + [f"{np.median(acc[b]):.4f}" for b in budgets]
        print(" | ".join(f"{c:>14}" for c in [name, *cells, f"{per_run:.1f}"]), flush=True)


if __name__ == "__main__":
    main()
