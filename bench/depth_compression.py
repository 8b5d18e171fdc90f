"""Depth compression benchmark: DP solve time, and measured latency / accuracy before and after on MNIST.

    .venv/bin/python bench/depth_compression.py [--data mnist] [--budgets 0.85,0.7,0.55] [--train-samples 12000]

1. Solve time of both DP stages on a MobileNetV2-sized chain (stem + 17 inverted
   residuals, 51 conv units, 224x224) with a MACs cost model and random importance.
2. A MobileNetV2-like network from the operator library trained on MNIST
   (1x28x28: on 8x8 digits every layer costs about the same per-call overhead);
   T(i, j) measured on cpu-ort, 1 thread, with the repo's protocol; I(i, j) from
   a brief fine-tuning per span; plans for fractions of the predicted original
   time; each plan fine-tuned, merged, then measured and scored on the test split.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from archetype.compress.conv_chain import extract_chain, merge_network
from archetype.compress.depth_compression import (
    FineTuneScore,
    ImportanceTable,
    apply_plan,
    importance_spans,
    measure_importance_table,
    measure_latency_table,
    optimal_merges,
    solve,
)
from archetype.runtime.data import Dataset, Split, load_dataset
from archetype.runtime.targets import get_target
from archetype.runtime.training import TrainConfig, evaluate_accuracy, train
from archetype.searchspace import Architecture, Image


def _mobilenet_v2(input_type: str, stem_stride: int, blocks: list[tuple[int, int, int, int]], classes: int) -> dict:
    slots = [{"slot": "stem", "op": "conv_bn_act", "params": {"width": 32 if stem_stride == 2 else 16,
                                                               "stride": stem_stride, "act": "relu6"}}]
    n = 0
    for expand, width, repeats, stride in blocks:
        for r in range(repeats):
            n += 1
            slots.append({"slot": f"block{n}", "op": "inverted_residual",
                          "params": {"width": width, "expand": expand, "stride": stride if r == 0 else 1}})
    slots.append({"slot": "head", "op": "classifier_head", "params": {"classes": classes}})
    return {"input": input_type, "slots": slots}


MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]
MNIST_NET = [(1, 16, 1, 1), (3, 24, 2, 2), (3, 32, 2, 2), (3, 48, 1, 1)]


def macs_ms(module: nn.Module, shape: tuple[int, ...]) -> float:
    """A cost model for the solve-time run: 1 ms per 100 M MACs plus a per-layer constant."""
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return 0.02  # the head
    h = (shape[2] + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
    w = (shape[3] + 2 * conv.padding[1] - conv.kernel_size[1]) // conv.stride[1] + 1
    macs = h * w * conv.out_channels * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    return macs / 1e8 + 0.02


def solve_time() -> None:
    arch = Architecture.from_json(_mobilenet_v2("Image[3,224,224]", 2, MOBILENET_V2, 1000))
    chain = extract_chain(arch.build())
    start = time.perf_counter()
    latency = measure_latency_table(chain, macs_ms, max_kernel=7)
    table_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    merges = optimal_merges(latency)
    stage1 = time.perf_counter() - start
    importance = ImportanceTable({s: float(rng.uniform(-1, 0)) for s in importance_spans(chain, merges)})
    full = sum(latency.entries[(k - 1, k)] for k in range(1, chain.layers + 1))
    print(f"MobileNetV2-1.0 chain: {chain.layers} conv units, {len(latency.entries)} latency entries "
          f"(cost model, built in {table_s:.2f} s), {len(importance.entries)} importance entries")
    for fraction in (0.8, 0.6):
        start = time.perf_counter()
        plan = solve(chain, latency, importance, fraction * full, merges=merges, steps_per_ms=20)
        stage2 = time.perf_counter() - start
        print(f"  budget {fraction:.0%} of {full:.1f} ms ({int(fraction * full * 20)} steps): stage 1 {stage1:.3f} s, "
              f"stage 2 {stage2:.3f} s, total {stage1 + stage2:.3f} s; {len(plan.blocks)} blocks, "
              f"{len(plan.removed_activations)} activations removed")


def _subset(dataset: Dataset, samples: int, seed: int = 0) -> Dataset:
    index = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))[:samples]
    return Dataset(dataset.name, Split(dataset.train.x[index], dataset.train.y[index]), dataset.val, dataset.test,
                   dataset.input_type, dataset.num_classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--budgets", default="0.85,0.7,0.55", help="fractions of the predicted original time")
    parser.add_argument("--train-samples", type=int, default=4000)
    parser.add_argument("--max-span", type=int, default=4)
    parser.add_argument("--steps-per-ms", type=float, default=2000.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    solve_time()

    dataset = load_dataset(args.data)
    data = _subset(dataset, args.train_samples)
    t = dataset.input_type
    arch = Architecture.from_json(_mobilenet_v2(f"Image[{t.C},{t.H},{t.W}]", 1, MNIST_NET, dataset.num_classes))
    model = arch.build()
    start = time.perf_counter()
    train(model, data, TrainConfig(epochs=3, lr=3e-3))
    model.eval()
    print(f"\n{args.data}: MobileNetV2-like network trained in {time.perf_counter() - start:.0f} s")

    target = get_target("cpu-ort", threads=1)

    def latency_of(module: nn.Module, shape: tuple[int, ...]) -> float:
        return target.measure(module.eval(), Image(*shape[1:])).median_ms

    chain = extract_chain(model)
    start = time.perf_counter()
    latency = measure_latency_table(chain, latency_of, max_span=args.max_span, max_kernel=7)
    merges = optimal_merges(latency)
    print(f"{chain.layers} conv units; latency table: {len(latency.entries)} entries measured on cpu-ort "
          f"in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    score = FineTuneScore(dataset, TrainConfig(epochs=1, lr=1e-3), train_samples=1024, val_samples=1000)
    importance = measure_importance_table(chain, merges, score, max_span=args.max_span)
    print(f"importance table: {len(importance.entries)} spans fine-tuned in {time.perf_counter() - start:.0f} s")

    original_ms = target.measure(model, dataset.input_type).median_ms
    original_acc = evaluate_accuracy(model, dataset.test)
    predicted_original = sum(latency.entries[(k - 1, k)] for k in range(1, chain.layers + 1)) + latency.fixed_ms
    rows = [("original", "-", f"{predicted_original:.4f}", f"{original_ms:.4f}", "1.00x", "-", f"{original_acc:.4f}",
             "-", f"{chain.layers}")]
    for fraction in (float(f) for f in args.budgets.split(",")):
        budget = fraction * predicted_original
        start = time.perf_counter()
        plan = solve(chain, latency, importance, budget, merges=merges, steps_per_ms=args.steps_per_ms)
        solve_s = time.perf_counter() - start
        applied = apply_plan(model, plan)
        before_ft = evaluate_accuracy(applied.merged, dataset.test)
        train(applied.removed, data, TrainConfig(epochs=1, lr=1e-3))
        applied.removed.eval()
        deployed = merge_network(applied.removed)
        measured = target.measure(deployed, dataset.input_type).median_ms
        rows.append((f"{fraction:.0%} budget", f"{solve_s * 1000:.1f} ms", f"{plan.predicted_ms:.4f}",
                     f"{measured:.4f}", f"{original_ms / measured:.2f}x", f"{before_ft:.4f}",
                     f"{evaluate_accuracy(deployed, dataset.test):.4f}",
                     f"{len(plan.removed_activations)}/{len(chain.activation_boundaries())}", f"{len(plan.blocks)}"))
    header = ("network", "DP solve", "predicted ms", "measured ms", "speed-up", "acc merged, no FT", "acc after FT",
              "acts removed", "convs")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).rjust(w) for v, w in zip(row, widths)))




if __name__ == "__main__":
    main()
