"""Search quality of every strategy on NAS-Bench-201 (15,625 cells, published accuracy and device latency).

The field's protocol: each strategy searches the ``nb201`` space, every evaluation answered
from the published table (``../shared/benchmarks/nb201.csv.gz``: 200-epoch test accuracy, and
latency measured on real devices by HW-NAS-Bench and HELP), at budgets of 25..500
evaluations over 20 seeds. Two settings:

- ``unconstrained``: maximize CIFAR-10 accuracy. The table's accuracy is *test* accuracy, so
  this is the oracle setting (the NB201 paper's searches see validation accuracy); the
  paper's figures are printed as reference rows.
- ``constrained``: maximize accuracy and minimize latency under a latency budget on a device,
  the budget set so that 10% or 30% of the cells are feasible. Scores: the best feasible
  accuracy and the hypervolume ratio of the feasible front found to the true feasible front
  (reference point: the median accuracy of the feasible cells, ``--hv-quantile``, and the budget).

Each cell of a table is ``median [IQR]`` over seeds. ``opt`` counts the seeds that found the
optimum (unconstrained) or the best feasible cell; ``in-budget`` is the share of proposals
after the first ``--initial`` that are within the latency budget; ``s/100`` the seconds a
strategy spends per 100 evaluations (lookups are microseconds, so this is the strategy's
own cost). No strategy knows its budget, so one run of the largest budget gives the smaller
ones as prefixes. The nni-* strategies run where nni is installed (``.venv-nni``).

Run: ``python bench/search_quality.py [--setting both] [--budgets 25 50 100 200 500] [--seeds 20]
[--strategies ...] [--skip ...] [--devices raspi4 pixel2 1080ti_1] [--feasible 0.1 0.3] [--jobs N]
[--json results.json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archetype.errors import SpecError
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint, Direction, Objective
from archetype.pareto import hypervolume, pareto_front
from archetype.searchspace import Image
from archetype.searchspace.spaces.nb201 import nb201_space
from archetype.strategies import list_strategies, make_strategy
from archetype.worker.evaluator import Budget
from archetype.worker.published_table import shared_benchmarks_dir
from archetype.worker.tabular import PublishedTableEvaluator

OPTUNA_DEFAULT = "optuna-default"
ACCURACY_ONLY = (Objective("accuracy", Direction.MAXIMIZE),)
PUBLISHED = {  # NAS-Bench-201 paper, CIFAR-10 test accuracy after search (mean +- std), validation-guided
    "REA (paper)": "93.92 +- 0.30", "random (paper)": "93.70 +- 0.36", "REINFORCE (paper)": "93.85 +- 0.37",
    "BOHB (paper)": "93.61 +- 0.52",
}
NOT_SEARCHING = ("oneshot",)  # trains a supernet: no table can answer it


@dataclass(frozen=True)
class Setting:
    """One search problem on the table: objectives, and a latency budget on a device (or none)."""

    name: str
    device: str | None = None
    feasible: float | None = None  # share of cells the budget leaves feasible
    bound: float | None = None

    @property
    def objectives(self) -> tuple[Objective, ...]:
        return ACCURACY_ONLY if self.bound is None else DEFAULT_OBJECTIVES

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        return () if self.bound is None else (Constraint("latency_ms", "<=", self.bound),)


_EVALUATORS: dict[tuple[str, str | None], PublishedTableEvaluator] = {}


def evaluator_for(table: str, device: str | None) -> PublishedTableEvaluator:
    """The table evaluator of a device (cached per process)."""
    if (table, device) not in _EVALUATORS:
        space = nb201_space(Image(3, 32, 32), 10)
        _EVALUATORS[(table, device)] = PublishedTableEvaluator.open(table, space, "cifar10_test", device)
    return _EVALUATORS[(table, device)]


def run_strategy(name: str, table: str, setting: Setting, budget: int, seed: int) -> tuple[np.ndarray, float]:
    """(accuracy %, latency ms) of each of ``budget`` evaluations proposed by ``name``, and the seconds spent."""
    evaluator = evaluator_for(table, setting.device)
    space = nb201_space(Image(3, 32, 32), 10)
    start = time.perf_counter()
    if name == OPTUNA_DEFAULT:
        points = run_optuna_default(evaluator, space, setting, budget, seed)
    else:
        strategy = make_strategy(name, space, setting.objectives, setting.constraints, seed=seed)
        points = []
        for _ in range(budget):
            arch = strategy.ask()
            result = evaluator.evaluate(arch, Budget(epochs=0))
            strategy.tell(arch, result)
            points.append((100 * result.values.get("accuracy", np.nan), result.values.get("latency_ms", np.nan)))
        strategy.close()
    return np.asarray(points, dtype=np.float64).reshape(-1, 2), time.perf_counter() - start


def run_optuna_default(evaluator, space, setting: Setting, budget: int, seed: int) -> list[tuple[float, float]]:
    """Optuna as a user would call it: the default sampler of the study, ``study.optimize``."""
    import optuna

    from archetype.strategies.optuna_sampler import suggest_architecture

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [o.direction.value for o in setting.objectives]
    sampler_cls = type(optuna.create_study(directions=directions).sampler)
    bound = setting.bound
    kwargs = {"constraints_func": lambda t: [t.user_attrs["latency"] - bound]} if bound is not None else {}
    try:
        sampler = sampler_cls(seed=seed, **kwargs)
    except TypeError:
        sampler = sampler_cls(seed=seed)
    study = optuna.create_study(directions=directions, sampler=sampler)
    points: list[tuple[float, float]] = []

    def objective(trial: optuna.Trial):
        result = evaluator.evaluate(suggest_architecture(space, trial), Budget(epochs=0))
        acc, lat = result.values["accuracy"], result.values.get("latency_ms", 0.0)
        points.append((100 * acc, lat))
        trial.set_user_attr("latency", lat)
        return acc if bound is None else (acc, lat)

    study.optimize(objective, n_trials=budget)
    return points


def run_one(job: tuple[str, str, Setting, int, int]) -> tuple[np.ndarray, float]:
    warnings.filterwarnings("ignore")
    return run_strategy(*job)


@dataclass(frozen=True)
class Truth:
    """What the whole table holds for a setting: the best (feasible) accuracy and the true front's volume."""

    best: float
    volume: float
    reference: dict[str, float]


def truth(accuracy: np.ndarray, latency: np.ndarray | None, setting: Setting, quantile: float) -> Truth:
    if setting.bound is None or latency is None:
        return Truth(float(np.nanmax(accuracy)), 0.0, {})
    ok = latency <= setting.bound
    points = [{"accuracy": a, "latency_ms": t} for a, t in zip(accuracy[ok], latency[ok], strict=True)]
    front = [points[i] for i in pareto_front(points, DEFAULT_OBJECTIVES)]
    reference = {"accuracy": float(np.nanquantile(accuracy[ok], quantile)), "latency_ms": setting.bound}
    return Truth(float(np.nanmax(accuracy[ok])), hypervolume(front, DEFAULT_OBJECTIVES, reference), reference)


def scores(points: np.ndarray, setting: Setting, true: Truth, initial: int) -> dict[str, float]:
    """Best (feasible) accuracy, whether it is the optimum, the hypervolume ratio and the in-budget share."""
    acc, lat = points[:, 0], points[:, 1]
    ok = np.ones(len(acc), bool) if setting.bound is None else lat <= setting.bound
    best = float(np.nanmax(acc[ok])) if ok.any() else 0.0
    out = {"best": best, "opt": float(best >= true.best - 1e-9)}
    if setting.bound is not None:
        front = [{"accuracy": a / 100, "latency_ms": t} for a, t in zip(acc[ok], lat[ok], strict=True)]
        out["hv"] = hypervolume(front, DEFAULT_OBJECTIVES, true.reference) / true.volume if front else 0.0
        later = ok[initial:]
        out["in_budget"] = float(later.mean()) if len(later) else float("nan")
    return out


def cell(values: list[float], digits: int = 2) -> str:
    q1, med, q3 = np.nanpercentile(values, [25, 50, 75])
    return f"{med:.{digits}f} [{q3 - q1:.{digits}f}]"


def print_table(title: str, rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    print(f"\n{title}")
    print(" | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = shared_benchmarks_dir()
    parser.add_argument("--table", default=str(shared / "nb201.csv.gz") if shared else None,
                        help="the NB201 table (default ../shared/benchmarks/nb201.csv.gz)")
    parser.add_argument("--setting", choices=("unconstrained", "constrained", "both"), default="both")
    parser.add_argument("--budgets", type=int, nargs="+", default=[25, 50, 100, 200, 500])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--devices", nargs="+", default=["raspi4", "pixel2", "1080ti_1"])
    parser.add_argument("--feasible", type=float, nargs="+", default=[0.1, 0.3],
                        help="shares of the cells each latency budget leaves feasible")
    parser.add_argument("--strategies", nargs="+", default=None, help="default: every registered one and Optuna's")
    parser.add_argument("--skip", nargs="+", default=[], help="strategies left out")
    parser.add_argument("--hv-quantile", type=float, default=0.5,
                        help="the hypervolume's reference accuracy: this quantile of the feasible cells' accuracy "
                        "(0 = the worst; the default median keeps the ratio from saturating on the many poor cells)")
    parser.add_argument("--initial", type=int, default=20, help="proposals not counted in the in-budget share")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (processes)")
    parser.add_argument("--json", metavar="FILE", help="also write every run's scores here")
    args = parser.parse_args()
    if args.table is None:
        parser.error("no --table given and ../shared/benchmarks/nb201.csv.gz not found")
    warnings.filterwarnings("ignore")

    base = evaluator_for(args.table, None)
    accuracy = 100 * base.accuracy
    settings = []
    if args.setting in ("unconstrained", "both"):
        settings.append(Setting("unconstrained"))
    if args.setting in ("constrained", "both"):
        for device, share in itertools.product(args.devices, args.feasible):
            latency = base.table.column(device)
            bound = float(np.quantile(latency, share))
            settings.append(Setting(f"{device} <= {bound:.4g} ms", device, float((latency <= bound).mean()), bound))
    names = args.strategies or [*list_strategies(), OPTUNA_DEFAULT]
    names = [n for n in names if n not in args.skip and n not in NOT_SEARCHING]
    budgets = sorted(args.budgets)
    space = nb201_space(Image(3, 32, 32), 10)
    runnable = []
    for name in names:
        try:
            if name != OPTUNA_DEFAULT:
                make_strategy(name, space, DEFAULT_OBJECTIVES, ()).close()
            runnable.append(name)
        except (SpecError, ImportError) as exc:
            print(f"{name}: skipped: {str(exc).splitlines()[0]}", file=sys.stderr)

    print(f"NAS-Bench-201, {len(accuracy)} cells, CIFAR-10 test accuracy (oracle setting); optimum "
          f"{np.nanmax(accuracy):.2f}, mean {np.nanmean(accuracy):.2f}; {args.seeds} seeds; median [IQR]")
    record = []
    for setting in settings:
        latency = base.table.column(setting.device) if setting.device else None
        true = truth(accuracy / 100, latency, setting, args.hv_quantile)
        true = Truth(100 * true.best, true.volume, true.reference)
        rows = []
        for name in runnable:
            jobs = [(name, args.table, setting, budgets[-1], seed) for seed in range(args.seeds)]
            if args.jobs > 1:
                with ProcessPoolExecutor(args.jobs) as pool:
                    runs = list(pool.map(run_one, jobs))
            else:
                runs = [run_one(j) for j in jobs]
            per_budget = {b: [scores(points[:b], setting, true, args.initial) for points, _ in runs] for b in budgets}
            seconds = sum(s for _, s in runs) / (args.seeds * budgets[-1]) * 100
            row = [name, *(cell([s["best"] for s in per_budget[b]]) for b in budgets)]
            if setting.bound is not None:
                row += [cell([s["hv"] for s in per_budget[b]], 3) for b in budgets]
                row.append(f"{np.nanmedian([s['in_budget'] for s in per_budget[budgets[-1]]]):.0%}")
            row += [f"{int(sum(s['opt'] for s in per_budget[budgets[-1]]))}/{args.seeds}", f"{seconds:.2f}"]
            rows.append(row)
            record.append({"setting": setting.name, "strategy": name, "seconds_per_100": seconds,
                           "scores": {str(b): per_budget[b] for b in budgets}})
            print(f"  done {setting.name}: {name}", file=sys.stderr, flush=True)
        header = ["strategy", *(f"best@{b}" for b in budgets)]
        if setting.bound is not None:
            header += [*(f"HV@{b}" for b in budgets), "in-budget"]
        header += [f"opt@{budgets[-1]}", "s/100"]
        if setting.bound is None:
            title = f"(a) unconstrained CIFAR-10 best test accuracy (oracle); optimum {true.best:.2f}"
        else:
            title = (f"(b) {setting.name} ({setting.feasible:.0%} of cells feasible): best feasible accuracy "
                     f"(optimum {true.best:.2f}), HV ratio to the true feasible front")
        print_table(title, rows, header)
        if setting.bound is None:
            print("published reference (NB201 paper, searches guided by validation accuracy, CIFAR-10 test "
                  "accuracy, mean +- std): " + "; ".join(f"{k} {v}" for k, v in PUBLISHED.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(record))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
