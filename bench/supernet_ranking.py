"""How well supernets rank architectures: stand-alone training vs inherited weights, one supernet vs a mixture.

On the digits data and the ``pool-positions`` space (where the downsampling positions are searched),
``--archs`` distinct architectures are each trained stand-alone and scored on the validation split;
the same architectures are then scored with inherited weights (batch norm recalibrated) from one
supernet and from a balanced mixture of ``--supernets`` supernets. The mixture is trained
twice: with the single supernet's number of steps (each supernet gets about 1/K of them) and with K
times as many. Prints Kendall tau and Spearman rho between the stand-alone and inherited-weight
accuracies, and the wall time of each way.

    .venv/bin/python bench/supernet_ranking.py [--archs 32] [--epochs 10] [--supernet-epochs 40] [--supernets 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import stats

from archetype.runtime.data import load_dataset
from archetype.runtime.training import TrainConfig, evaluate_accuracy, train
from archetype.searchspace import get_space
from archetype.searchspace.supernet_mixture import downsampling_pattern
from archetype.worker.supernet_training import SupernetConfig, SupernetTrainer


def distinct_architectures(space, count: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    chosen: dict[str, object] = {}
    while len(chosen) < count:
        arch = space.sample(rng)
        chosen.setdefault(arch.key, arch)
    return list(chosen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10, help="stand-alone training epochs per architecture")
    parser.add_argument("--supernet-epochs", type=int, default=40)
    parser.add_argument("--supernets", type=int, default=3, help="supernets in the mixture")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1,
                        help="stand-alone runs per architecture (seed, seed+1, ...): the reference is their mean, "
                        "and with 2 or more the tau between two stand-alone runs shows how noisy the reference is")
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = load_dataset("digits", args.seed)
    space = get_space("pool-positions", data.input_type, data.num_classes)
    archs = distinct_architectures(space, args.archs, args.seed)
    configs = {downsampling_pattern(a) for a in archs}
    print(f"space {space.name}: {space.size()} architectures; {len(archs)} drawn, {len(configs)} pooling patterns")

    start = time.perf_counter()
    runs_by_seed = []
    for seed in range(args.seed, args.seed + args.seeds):
        accuracies = []
        for i, arch in enumerate(archs):
            torch.manual_seed(seed)
            model = arch.build()
            train(model, data, TrainConfig(epochs=args.epochs, seed=seed))
            accuracies.append(evaluate_accuracy(model, data.val))
            print(f"  stand-alone seed {seed}, {i + 1}/{len(archs)}: val accuracy {accuracies[-1]:.3f}", flush=True)
        runs_by_seed.append(accuracies)
    standalone = list(np.mean(runs_by_seed, axis=0))
    standalone_s = (time.perf_counter() - start) / args.seeds  # the cost of one stand-alone run of each

    rows = []
    k = args.supernets
    runs = (
        ("one supernet", 1, args.supernet_epochs),
        (f"mixture of {k}", k, args.supernet_epochs),  # the same steps in all, shared by the K supernets
        (f"mixture of {k}, {k}x", k, k * args.supernet_epochs),  # as many steps per supernet as the single one
    )
    for label, k, epochs in runs:
        config = SupernetConfig(epochs=epochs, seed=args.seed, supernets=k)
        start = time.perf_counter()
        trainer = SupernetTrainer(space, data, config)
        trainer.train()
        trained = time.perf_counter()
        inherited = [trainer.score(arch) for arch in archs]
        scored = time.perf_counter()
        tau = stats.kendalltau(standalone, inherited).statistic
        rho = stats.spearmanr(standalone, inherited).statistic
        best = int(np.argmax(inherited))
        rows.append((label, tau, rho, float(np.mean(inherited)), standalone[best], trained - start, scored - trained))
        print(f"  {label}: trained in {trained - start:.1f} s, {len(archs)} scored in {scored - trained:.1f} s",
              flush=True)

    print()
    print(f"{len(archs)} architectures of {space.name} on digits (validation split, {len(data.val)} images)")
    print(f"stand-alone: {args.epochs} epochs each, mean val accuracy {np.mean(standalone):.3f}, "
          f"best {max(standalone):.3f}, total {standalone_s:.1f} s "
          f"({standalone_s / len(archs):.2f} s per architecture)")
    if args.seeds > 1:
        tau = stats.kendalltau(runs_by_seed[0], runs_by_seed[1]).statistic
        rho = stats.spearmanr(runs_by_seed[0], runs_by_seed[1]).statistic
        print(f"stand-alone seed {args.seed} vs seed {args.seed + 1}: kendall tau {tau:.3f}, spearman {rho:.3f} "
              f"(the reference below is the mean of {args.seeds} seeds)")
    header = (f"{'scored with':<19} {'kendall tau':>11} {'spearman':>9} {'mean inh. acc':>13} "
              f"{'stand-alone acc of top pick':>27} {'train s':>8} {'score s':>8} {'total s':>8}")
    print(header)
    print("-" * len(header))
    for label, tau, rho, mean, top, train_s, score_s in rows:
        print(f"{label:<19} {tau:>11.3f} {rho:>9.3f} {mean:>13.3f} {top:>27.3f} {train_s:>8.1f} {score_s:>8.1f} "
              f"{train_s + score_s:>8.1f}")
    per_arch = standalone_s / len(archs)
    for label, *_, train_s, score_s in rows:
        per_score = score_s / len(archs)
        breakeven = train_s / max(per_arch - per_score, 1e-9)
        print(f"{label}: one-shot cost {train_s:.1f} s training + {per_score:.3f} s per candidate, vs {per_arch:.2f} s "
              f"per candidate stand-alone: cheaper from {breakeven:.0f} candidates on "
              f"(1000 candidates: {train_s + 1000 * per_score:.0f} s vs {1000 * per_arch:.0f} s)")


if __name__ == "__main__":
    main()
