"""SimQ-NAS: does searching each slot's precision (fp32/int8) with the architecture pay on this machine?

The predictor-guided strategy (``simq``) searches conv-small on digits twice at
equal budgets and seeds: once in fp32 only, once with a per-slot precision
(``SearchSpace.with_precision()``; int8 slots run as static QDQ in ONNX Runtime,
calibrated on training images). Every architecture is trained and measured for
real on ``cpu-ort`` at one thread. Per run it prints the best validation
accuracy within the latency budget, the hypervolume of the feasible
(accuracy, latency) front (reference: accuracy 0, the budget), and how many of
the front's weighted slots run int8. Run:
``.venv/bin/python bench/simq_precision.py [--evaluations 24] [--seeds 0 1] [--latency-ms 0.1]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.pareto import feasible_front, hypervolume
from archetype.result import Result
from archetype.searchspace import Image, get_space
from archetype.strategies import make_strategy
from archetype.worker.evaluator import Budget, TrainingEvaluator


def search(space, constraint: Constraint, evaluations: int, epochs: int, seed: int) -> list[tuple[object, Result]]:
    """(architecture, result) of each evaluation simq asks for."""
    strategy = make_strategy("simq", space, DEFAULT_OBJECTIVES, (constraint,), seed=seed,
                             initial=max(2, evaluations // 2), batch=max(1, evaluations // 6))
    evaluator = TrainingEvaluator("digits", "cpu-ort", seed=seed)
    runs = []
    for _ in range(evaluations):
        arch = strategy.ask()
        result = evaluator.evaluate(arch, Budget(epochs))
        if result.error:
            print(f"    {arch.key}: {result.state.value}: {result.error}", flush=True)
        strategy.tell(arch, result)
        runs.append((arch, result))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    constraint = Constraint("latency_ms", "<=", args.latency_ms)
    reference = {"accuracy": 0.0, "latency_ms": args.latency_ms}
    fp32_space = get_space("conv-small", Image(1, 8, 8), 10)
    spaces = {"fp32 only": fp32_space, "fp32/int8 per slot": fp32_space.with_precision()}
    print(f"simq on conv-small, digits, {args.epochs} epochs, cpu-ort 1 thread; budget {constraint}; "
          f"{args.evaluations} evaluations per run")
    print(f"{'space':>20} | seed | best acc | front HV | front pts | int8 slots on front | feasible | "
          f"median ms |  min")
    summary: dict[str, list[tuple[float, float]]] = {name: [] for name in spaces}
    for seed in args.seeds:
        for name, space in spaces.items():
            start = time.perf_counter()
            runs = search(space, constraint, args.evaluations, args.epochs, seed)
            results = [r for _, r in runs]
            front = feasible_front(results, DEFAULT_OBJECTIVES, (constraint,))
            volume = hypervolume([r.values for r in front], DEFAULT_OBJECTIVES, reference) if front else 0.0
            best = max((r.values["accuracy"] for r in front), default=0.0)
            on_front = [a for a, r in runs if any(r is f for f in front)]
            weighted = sum(1 for a in on_front for c in a.choices if "precision" in dict(c.params))
            int8 = sum(len(a.int8_slots()) for a in on_front)
            feasible = sum(1 for r in results if "latency_ms" in r.values and constraint.satisfied(r.values))
            latency = float(np.median([r.values["latency_ms"] for r in results if "latency_ms" in r.values]))
            summary[name].append((best, volume))
            minutes = (time.perf_counter() - start) / 60
            print(f"{name:>20} | {seed:>4} | {best:8.4f} | {volume:8.5f} | {len(front):>9} | "
                  f"{int8:>3} of {weighted:<15} | {feasible:>8} | {latency:9.4f} | {minutes:4.1f}", flush=True)
    for name, rows in summary.items():
        best, volume = np.median(np.array(rows), axis=0)
        print(f"median {name:>13}: best acc {best:.4f}, front HV {volume:.5f}")


if __name__ == "__main__":
    main()
