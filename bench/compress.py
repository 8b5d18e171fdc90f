"""Compression benchmark: each step alone and the whole pipeline on digits-trained MobileNetV2-like and ResNet-like
models, measured on cpu-ort with 1 thread by the project's protocol.

    .venv/bin/python bench/compress.py [--data digits] [--budget 0.6] [--epochs 8] [--models mobile,resnet]

For each model: each step run alone and the pipeline prune,tucker,depth,quantize,
with the latency budget ``--budget`` x the source's latency (median of three
measurements taken just before each run) and at most 1 pp of test accuracy lost (a step that loses more,
or is not faster, is rejected and the model kept as it was). Columns: the
source's latency as measured in that run, the result's latency, speedup, size,
parameters, test accuracy and its drop in percentage points, which steps were kept.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from archetype.compress.pipeline import CompressionPipeline, CompressionResult
from archetype.compress.step import Budget, CompressionContext
from archetype.searchspace import Architecture
from archetype.worker.data import Dataset, load_dataset
from archetype.worker.targets import get_target
from archetype.worker.training import TrainConfig, train


def mobilenet_v2_like(input_type: str, classes: int) -> dict:
    """A stem and six inverted residuals (expand 1-4), MobileNetV2's pattern at digits scale."""
    blocks = [(1, 16, 1), (4, 24, 1), (4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 48, 1)]
    slots = [{"slot": "stem", "op": "conv_bn_act", "params": {"width": 32, "act": "relu6"}}]
    for n, (expand, width, stride) in enumerate(blocks, start=1):
        slots.append({"slot": f"block{n}", "op": "inverted_residual",
                      "params": {"width": width, "expand": expand, "stride": stride}})
    slots.append({"slot": "head", "op": "classifier_head", "params": {"classes": classes}})
    return {"input": input_type, "slots": slots}


def resnet_like(input_type: str, classes: int) -> dict:
    """A stem, basic blocks (two 3x3 conv-bn each, identity shortcuts) and a strided conv between the stages:
    ResNet's pattern at digits scale, and a chain depth compression can read (no projection shortcuts)."""
    slots = [{"slot": "stem", "op": "conv_bn_act", "params": {"width": 32}},
             {"slot": "block1", "op": "basic_block", "params": {"width": 32}},
             {"slot": "block2", "op": "basic_block", "params": {"width": 32}},
             {"slot": "down", "op": "conv_bn_act", "params": {"width": 64, "stride": 2}},
             {"slot": "block3", "op": "basic_block", "params": {"width": 64}},
             {"slot": "block4", "op": "basic_block", "params": {"width": 64}},
             {"slot": "head", "op": "classifier_head", "params": {"classes": classes}}]
    return {"input": input_type, "slots": slots}


MODELS = {"mobile": ("MobileNetV2-like", mobilenet_v2_like), "resnet": ("ResNet-like", resnet_like)}
RUNS = [("prune",), ("tucker",), ("depth",), ("quantize",), ("prune", "tucker", "depth", "quantize")]


def row(model: str, run: str, result: CompressionResult, seconds: float) -> list[str]:
    m, s = result.metrics, result.source
    kept = "+".join(step.name for step in result.steps[1:] if step.accepted) or "none"
    return [model, run, f"{s.latency_ms:.4f}", f"{m.latency_ms:.4f}", f"{s.latency_ms / m.latency_ms:.2f}x",
            f"{m.size_mb:.3f}", f"{s.size_mb / m.size_mb:.2f}x", f"{m.params:,}", f"{m.accuracy:.4f}",
            f"{100 * (s.accuracy - m.accuracy):+.2f}", kept, f"{seconds:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--budget", type=float, default=0.6, help="latency budget as a fraction of the source's")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of the source models")
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--models", default="mobile,resnet")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset: Dataset = load_dataset(args.data)
    t = dataset.input_type
    target = get_target("cpu-ort", threads=1)
    header = ["model", "run", "source ms", "latency ms", "speedup", "size MB", "smaller", "params", "accuracy",
              "drop pp", "kept", "s"]
    rows = []
    for key in args.models.split(","):
        label, spec = MODELS[key]
        torch.manual_seed(0)
        source: nn.Module = Architecture.from_json(spec(f"Image[{t.C},{t.H},{t.W}]", dataset.num_classes)).build()
        start = time.perf_counter()
        train(source, dataset, TrainConfig(epochs=args.epochs, lr=3e-3))
        source.eval()
        print(f"{label}: trained on {args.data} in {time.perf_counter() - start:.0f} s", flush=True)
        probe = CompressionContext(target, dataset, Budget(1.0))
        for steps in RUNS:
            source_ms = sorted(probe.latency_ms(source) for _ in range(3))[1]  # just before: the load drifts
            budget = Budget(args.budget * source_ms, max_accuracy_drop=1.0)
            context = CompressionContext(target, dataset, budget, TrainConfig(epochs=args.fine_tune_epochs, lr=1e-3))
            start = time.perf_counter()
            result = CompressionPipeline(list(steps), context).run(source)
            seconds = time.perf_counter() - start
            name = ",".join(steps)
            rows.append(row(label, name, result, seconds))
            for step in result.steps[1:]:
                print(f"  {name}: {step.name}: {step.message}", flush=True)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\ncpu-ort, 1 thread; latency budget {args.budget:g} x source; fine-tuning {args.fine_tune_epochs} "
          f"epochs per step; accuracy on the {args.data} test split")
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


if __name__ == "__main__":
    main()
