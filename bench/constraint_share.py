"""Do strategies learn a latency budget? The share of proposals within budget after each strategy's initial phase.

A candidate over the budget is stored as pruned and never trained, but its latency was
measured: a strategy should learn the bound from it. Two settings:

- ``nb201`` (seconds): every strategy searches the ``nb201`` space, answered from the published
  table (``../shared/benchmarks/nb201.csv.gz``: CIFAR-10 test accuracy, device latency), on
  devices of three kinds at budgets leaving 10% and 30% of the cells feasible. As in a real
  search, a cell over the budget comes back pruned with its latency and no accuracy.
- ``mnist`` (a long, timed run): a user's first search, ``conv-small`` on MNIST with every
  candidate trained ``--epochs`` and timed on ``cpu-ort``; the budget is a third of the
  measured latency of a MobileNetV2 built from the operator library (unless ``--latency-ms``).

Per strategy it prints the share of candidates ``--initial``+1 .. N within budget (median and
IQR over seeds for nb201), how many were trained, and the best accuracy within budget.
Run: ``.venv/bin/python bench/constraint_share.py nb201 [--evaluations 100] [--seeds 10]``
and ``.venv/bin/python bench/constraint_share.py mnist [--trials 40] [--epochs 2] [--strategies simq]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.result import Result, TrialState
from archetype.searchspace import Architecture, Image
from archetype.searchspace.spaces.nb201 import nb201_space
from archetype.strategies import list_strategies, make_strategy
from archetype.worker.evaluator import Budget
from archetype.worker.published_table import shared_benchmarks_dir
from archetype.worker.tabular import PublishedTableEvaluator

SEARCHING = [n for n in list_strategies() if n != "oneshot" and not n.startswith("nni-")]
DEVICES = ("raspi4", "pixel2", "1080ti_1")
MOBILENET_V2_MNIST = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]
"""MobileNetV2's inverted residual stages (expansion, width, repeats, stride), the last two left out for 28x28."""


def as_trained(result: Result, constraint: Constraint) -> Result:
    """What the training evaluator stores: a candidate over the budget is pruned, its latency kept, never trained."""
    if result.state is TrialState.COMPLETE and not constraint.satisfied(result.values):
        kept = {k: v for k, v in result.values.items() if k != "accuracy"}
        return Result(TrialState.PRUNED, kept, error="over the latency budget: not trained")
    return result


def nb201_share(name: str, device: str, feasible: float, evaluations: int, initial: int, seed: int,
                evaluator: PublishedTableEvaluator) -> tuple[float, float]:
    """(share of proposals after ``initial`` within budget, best feasible accuracy %) of one search."""
    bound = float(np.quantile(evaluator.latency, feasible))
    constraint = Constraint("latency_ms", "<=", bound)
    strategy = make_strategy(name, evaluator_space(), DEFAULT_OBJECTIVES, (constraint,), seed=seed)
    within, best = [], 0.0
    for _ in range(evaluations):
        arch = strategy.ask()
        result = as_trained(evaluator.evaluate(arch, Budget(epochs=0)), constraint)
        within.append(result.state is TrialState.COMPLETE)
        if result.state is TrialState.COMPLETE:
            best = max(best, 100 * result.values["accuracy"])
        strategy.tell(arch, result)
    strategy.close()
    return float(np.mean(within[initial:])), best


def evaluator_space():
    return nb201_space(Image(3, 32, 32), 10)


def run_nb201(args: argparse.Namespace) -> None:
    shared = shared_benchmarks_dir()
    if shared is None:
        raise SystemExit("no ../shared/benchmarks folder: the NB201 table is not here")
    table = shared / "nb201.csv.gz"
    names = args.strategies or SEARCHING
    print(f"NB201 (CIFAR-10 test accuracy; device latency from HELP / HW-NAS-Bench); {args.evaluations} "
          f"evaluations, {args.seeds} seeds; share = proposals {args.initial + 1}..{args.evaluations} within budget, "
          "median [IQR]; over-budget cells come back pruned without accuracy", flush=True)
    print(f"{'strategy':>10} | {'device':>9} | feasible | {'in budget':>17} | {'best acc':>20} | s/100", flush=True)
    for device in args.devices:
        evaluator = PublishedTableEvaluator.open(table, evaluator_space(), "cifar10_test", device)
        for feasible in args.feasible:
            for name in names:
                start = time.perf_counter()
                runs = [nb201_share(name, device, feasible, args.evaluations, args.initial, seed, evaluator)
                        for seed in range(args.seeds)]
                per100 = (time.perf_counter() - start) / args.seeds / args.evaluations * 100
                shares, bests = np.array([r[0] for r in runs]), np.array([r[1] for r in runs])
                print(f"{name:>10} | {device:>9} | {feasible:>8.0%} | {iqr(shares, '.2f'):>17} | "
                      f"{iqr(bests, '.2f'):>20} | {per100:.1f}", flush=True)
    print("next: .venv/bin/python bench/constraint_share.py mnist --trials 40 --epochs 2")


def iqr(values: np.ndarray, fmt: str) -> str:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return f"{med:{fmt}} [{q1:{fmt}}, {q3:{fmt}}]"


def mobilenet_v2(input_type: Image, classes: int) -> Architecture:
    """MobileNetV2 (stride-1 stem for small inputs) written as an architecture of the operator library."""
    slots = [{"slot": "stem", "op": "conv_bn_act", "params": {"width": 32, "stride": 1, "act": "relu6"}}]
    for expand, width, repeats, stride in MOBILENET_V2_MNIST:
        for r in range(repeats):
            slots.append({"slot": f"block{len(slots)}", "op": "inverted_residual",
                          "params": {"width": width, "expand": expand, "stride": stride if r == 0 else 1}})
    slots.append({"slot": "head", "op": "classifier_head", "params": {"classes": classes}})
    return Architecture.from_json({"input": str(input_type), "slots": slots})


def run_mnist(args: argparse.Namespace) -> None:
    import torch

    from archetype.runtime.data import load_dataset
    from archetype.runtime.targets import get_target
    from archetype.search import run_search
    from archetype.spec import RunSpec
    from archetype.store import Store
    from archetype.worker.executor import InlineExecutor

    torch.set_num_threads(1)
    data = load_dataset("mnist", 0)
    budget = args.latency_ms
    if budget is None:
        reference = mobilenet_v2(data.input_type, data.num_classes)
        latency = get_target("cpu-ort", threads=1).measure(reference.build().eval(), reference.input).median_ms
        budget = latency / 3
        print(f"MobileNetV2 on {data.input_type}: {latency:.3f} ms on cpu-ort (1 thread); budget {budget:.3f} ms",
              flush=True)
    print(f"{'strategy':>10} | in budget {args.initial + 1}..{args.trials} | trained | best val acc | best test acc "
          "| minutes", flush=True)
    with tempfile.TemporaryDirectory(prefix="archetype-share-") as folder:
        for name in args.strategies or ["simq"]:
            spec = RunSpec(space="conv-small", data="mnist", trials=args.trials, epochs=args.epochs, strategy=name,
                           constraints=(Constraint("latency_ms", "<=", budget),), seed=args.seed, study=name)
            start = time.perf_counter()
            with Store.open(f"sqlite:///{Path(folder) / 'share.db'}") as store:
                report = run_search(spec, store, executor=InlineExecutor())
            trials = sorted(report.trials, key=lambda t: t.number)
            within = [t.state is TrialState.COMPLETE for t in trials]
            trained = [t for t in trials if "accuracy" in t.values and t.state is TrialState.COMPLETE]
            best = max(trained, key=lambda t: t.values["accuracy"], default=None)
            share = sum(within[args.initial:]) / max(1, len(within[args.initial:]))
            print(f"{name:>10} | {sum(within[args.initial:]):>3} of {len(within[args.initial:])} ({share:.0%}) "
                  f"| {len(trained):>7} | {best.values['accuracy'] if best else float('nan'):.4f} "
                  f"| {best.values.get('test_accuracy', float('nan')) if best else float('nan'):.4f} "
                  f"| {(time.perf_counter() - start) / 60:.1f}", flush=True)
    print("next: archetype search --space conv-small --data mnist --latency-ms B --strategy simq --trials 40")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setting", choices=["nb201", "mnist"])
    parser.add_argument("--strategies", nargs="+", default=None, help=f"default: {' '.join(SEARCHING)} (mnist: simq)")
    parser.add_argument("--initial", type=int, default=20, help="proposals of the initial phase, not counted")
    parser.add_argument("--evaluations", type=int, default=100, help="nb201: evaluations per search")
    parser.add_argument("--seeds", type=int, default=10, help="nb201: seeds per strategy")
    parser.add_argument("--devices", nargs="+", default=list(DEVICES))
    parser.add_argument("--feasible", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--trials", type=int, default=40, help="mnist: trials per search")
    parser.add_argument("--epochs", type=int, default=2, help="mnist: training epochs per trial")
    parser.add_argument("--latency-ms", type=float, default=None, help="mnist: the budget (default: MobileNetV2 / 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    run_nb201(args) if args.setting == "nb201" else run_mnist(args)


if __name__ == "__main__":
    main()
