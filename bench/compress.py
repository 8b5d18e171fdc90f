"""Compression benchmark on MNIST: three user-written models (bench/user_models.py), ours against the tools a user
would pick instead, every result timed side by side with its source on cpu-ort, 1 thread.

    .venv/bin/python bench/compress.py [--models mobilenetv2,resnet18,vgg] [--epochs 3] [--fine-tune-epochs 2]
        [--fine-tune-lr LR] [--max-accuracy-drop 0.3] [--pipeline STEPS] [--sources DIR] [--train-samples N]
        [--peers ours,ort-int8,torch-pruning,nncf,modelopt,mct]

Per model: train the source on MNIST (seeded), then one row per method:

- ours: ``archetype compress``'s default pipeline (or ``--pipeline``) with the latency budget
  ``--budget`` x the source's latency (default per model: 1/4 for MobileNetV2 and ResNet-18, 1/8 for VGG)
  and at most ``--max-accuracy-drop`` pp of test accuracy lost;
- ort-int8: ONNX Runtime static INT8 (QDQ, per-channel, 256 calibration images) of the source alone;
- torch-pruning: Torch-Pruning's magnitude recipe (group L2 magnitude, iterative steps) down to the MACs our
  result has, then the same fine-tuning epochs with plain cross-entropy;
- nncf: NNCF post-training quantization of the source's ONNX graph (if nncf is installed);
- modelopt: NVIDIA Model Optimizer INT8 quantization (if nvidia-modelopt is installed);
- mct: Sony MCT mixed-precision post-training quantization (if model-compression-toolkit is installed).

Each result and its source are timed in alternating blocks (the project's side-by-side protocol); the speedup
is the median ratio with its interquartile range. Accuracy is on the MNIST test set; wall time is the method's
own (training the source excluded). Our per-step times follow the table.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from user_models import MobileNetV2, ResNet18, vgg

from archetype.compress.command import CompressOptions
from archetype.compress.fine_tune import fine_tune_recipe
from archetype.compress.pipeline import CompressionPipeline, CompressionResult
from archetype.compress.pruning import output_layers
from archetype.compress.quantization import OrtInt8Model
from archetype.compress.step import (
    Budget,
    CompressionContext,
    count_params_and_macs,
    deployed_size_mb,
)
from archetype.runtime.data import Dataset, load_dataset, sample_split
from archetype.runtime.onnx_export import export_onnx_bytes
from archetype.runtime.quantization import quantize_onnx_static
from archetype.runtime.targets import cpu_description, get_target
from archetype.runtime.training import TrainConfig, evaluate_accuracy, train
from archetype.validation import field_default

MODELS: dict[str, tuple[str, Callable[[], nn.Module], float]] = {
    "mobilenetv2": ("MobileNetV2-style", MobileNetV2, 0.25),
    "resnet18": ("ResNet-18-style", ResNet18, 0.25),
    "vgg": ("VGG-style", vgg, 0.125),
}
PIPELINE = list(field_default(CompressOptions, "pipeline"))


class PeerUnavailable(Exception):
    """A peer tool that does not install or run here; the row says why."""


def ours(source: nn.Module, context: CompressionContext, state: dict) -> nn.Module:
    result: CompressionResult = CompressionPipeline(state["pipeline"], context).run(source)
    state["ours"] = result
    return result.model


def ort_int8(source: nn.Module, context: CompressionContext, state: dict) -> nn.Module:
    example = context.example()
    int8 = quantize_onnx_static(export_onnx_bytes(source, example, dynamic_batch=True), context.dataset.train.x)
    params, macs = count_params_and_macs(source, example)
    return OrtInt8Model(int8, source, params, macs)


def torch_pruning(source: nn.Module, context: CompressionContext, state: dict) -> nn.Module:
    import torch_pruning as tp

    example = context.example()
    result = state.get("ours")
    _, source_macs = count_params_and_macs(source, example)
    goal = result.metrics.macs if result is not None and result.metrics.macs < source_macs else source_macs // 2
    model = copy.deepcopy(source).eval()
    steps = 40
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.95, iterative_steps=steps,
                                  ignored_layers=output_layers(model, context.dataset.num_classes))
    for _ in range(steps):
        if count_params_and_macs(model, example)[1] <= goal:
            break
        pruner.step()
    train(model, context.dataset, context.fine_tune)
    state["torch-pruning-macs"] = (count_params_and_macs(model, example)[1], goal)
    return model.eval()


def nncf_ptq(source: nn.Module, context: CompressionContext, state: dict) -> nn.Module:
    try:
        import nncf
        import onnx
    except ImportError as exc:
        raise PeerUnavailable(f"not installed ({exc.name})") from None
    example = context.example()
    fp32 = onnx.load_from_string(export_onnx_bytes(source, example, dynamic_batch=True))
    name = fp32.graph.input[0].name
    images = [context.dataset.train.x[i:i + 1].numpy() for i in range(300)]
    quantized = nncf.quantize(fp32, nncf.Dataset(images, lambda x: {name: x}), subset_size=300)
    params, macs = count_params_and_macs(source, example)
    return OrtInt8Model(quantized.SerializeToString(), source, params, macs)


def modelopt_int8(source: nn.Module, context: CompressionContext, state: dict) -> nn.Module:
    try:
        import modelopt.torch.quantization as mtq
    except ImportError as exc:
        raise PeerUnavailable(f"not installed ({exc.name})") from None
    model = copy.deepcopy(source).eval()
    calibration = context.dataset.train.x[:256]

    def forward_loop(m: nn.Module) -> None:
        for batch in calibration.split(32):
            m(batch)

    model = mtq.quantize(model, mtq.INT8_DEFAULT_CFG, forward_loop)
    example = context.example()
    params, macs = count_params_and_macs(source, example)
    try:
        onnx_model = export_onnx_bytes(model, example, dynamic_batch=True)
    except Exception as exc:
        raise PeerUnavailable(f"its INT8 model does not export to ONNX here: {str(exc).splitlines()[0]}") from None
    return OrtInt8Model(onnx_model, source, params, macs)


def mct_mixed_precision(source: nn.Module, context: CompressionContext, state: dict) -> nn.Module:
    try:
        import model_compression_toolkit as mct
    except ImportError as exc:
        raise PeerUnavailable(f"not installed ({exc.name})") from None
    calibration = context.dataset.train.x[:256]

    def representative() -> object:
        for batch in calibration.split(32):
            yield [batch.numpy()]

    config = mct.core.CoreConfig(mixed_precision_config=mct.core.MixedPrecisionQuantizationConfig())
    weights_kb = sum(p.numel() for p in source.parameters()) * 0.75 / 1024  # 6 bits a weight on average
    quantized, _ = mct.ptq.pytorch_post_training_quantization(
        copy.deepcopy(source).eval(), representative, target_resource_utilization=mct.core.ResourceUtilization(
            weights_memory=weights_kb * 1024), core_config=config)
    example = context.example()
    params, macs = count_params_and_macs(source, example)
    try:
        onnx_model = export_onnx_bytes(quantized, example, dynamic_batch=True)
    except Exception as exc:
        raise PeerUnavailable(f"its quantized model does not export to ONNX here: {str(exc).splitlines()[0]}") from None
    return OrtInt8Model(onnx_model, source, params, macs)


PEERS: dict[str, Callable[[nn.Module, CompressionContext, dict], nn.Module]] = {
    "ours": ours, "ort-int8": ort_int8, "torch-pruning": torch_pruning, "nncf": nncf_ptq,
    "modelopt": modelopt_int8, "mct": mct_mixed_precision,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--models", default="mobilenetv2,resnet18,vgg")
    parser.add_argument("--budget", type=float, help="latency budget as a fraction of the source's (default per model)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the source models")
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--fine-tune-lr", type=float, help="peak learning rate of fine-tunes (default: the command's)")
    parser.add_argument("--max-accuracy-drop", type=float, default=0.3)
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--pipeline", default=",".join(PIPELINE), help="our steps (default: the command's)")
    parser.add_argument("--train-samples", type=int, help="train on this many samples only (a smoke run)")
    parser.add_argument("--test-samples", type=int, help="score on this many test samples only (a smoke run)")
    parser.add_argument("--sources", type=Path, help="keep the trained source models here and reuse them")
    parser.add_argument("--rounds", type=int, default=15, help="side-by-side timing rounds")
    args = parser.parse_args()
    # torch trains and fine-tunes on every core, as the command does; ONNX Runtime times at 1 thread
    dataset: Dataset = load_dataset(args.data)
    generator = torch.Generator().manual_seed(0)
    if args.train_samples or args.test_samples:
        dataset = Dataset(dataset.name, sample_split(dataset.train, args.train_samples, generator),
                          sample_split(dataset.val, args.train_samples, generator),
                          sample_split(dataset.test, args.test_samples, generator), dataset.input_type,
                          dataset.num_classes)
    target = get_target("cpu-ort", threads=1)
    recipe = fine_tune_recipe(args.fine_tune_epochs)
    if args.fine_tune_lr is not None:
        recipe = replace(recipe, lr=args.fine_tune_lr)
    header = ["model", "method", "speedup", "IQR", "source ms", "result ms", "accuracy", "drop pp", "size MB",
              "wall s", "note"]
    rows: list[list[str]] = []
    step_lines: list[str] = []
    for key in args.models.split(","):
        label, factory, default_budget = MODELS[key]
        torch.manual_seed(0)
        source = factory()
        start = time.perf_counter()
        cached = args.sources / f"{key}-{args.epochs}.pt" if args.sources else None
        how = f"loaded from {cached}" if cached is not None and cached.exists() else "trained"
        if cached is not None and cached.exists():
            source.load_state_dict(torch.load(cached, weights_only=True))
        else:
            train(source, dataset, TrainConfig(epochs=args.epochs, lr=3e-3))
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.save(source.state_dict(), cached)
        source.eval()
        source_accuracy = evaluate_accuracy(source, dataset.test)
        print(f"{label}: {how} in {time.perf_counter() - start:.0f} s, test accuracy {source_accuracy:.4f}",
              file=sys.stderr, flush=True)
        probe = CompressionContext(target, dataset, Budget(1.0))
        source_ms = sorted(probe.latency_ms(source) for _ in range(3))[1]
        budget = Budget((args.budget or default_budget) * source_ms, max_accuracy_drop=args.max_accuracy_drop)
        state: dict = {"pipeline": args.pipeline.split(",")}
        for name in args.peers.split(","):
            context = CompressionContext(target, dataset, budget, recipe,
                                         progress=lambda text: print(f"  {text}", file=sys.stderr, flush=True))
            start = time.perf_counter()
            try:
                model = PEERS[name](source, context, state)
            except PeerUnavailable as exc:
                rows.append([label, name, "-", "-", "-", "-", "-", "-", "-", "-", str(exc)])
                continue
            except Exception as exc:  # a peer that fails on this model is a row, not the end of the bench
                text = str(exc).splitlines()[0] if str(exc) else ""
                rows.append([label, name, "-", "-", "-", "-", "-", "-", "-", "-", f"failed: {type(exc).__name__}: "
                             f"{text}"[:120]])
                continue
            seconds = time.perf_counter() - start
            timing = context.side_by_side(source, model, rounds=args.rounds)
            accuracy = evaluate_accuracy(model, dataset.test)
            note = ""
            if name == "ours":
                result = state["ours"]
                note = "+".join(s.name for s in result.steps[1:] if s.accepted) or "nothing kept"
                step_lines += [f"  {label}: {s.name} {s.seconds:.0f} s: {s.message}" for s in result.steps[1:]]
            if name == "torch-pruning":
                macs, goal = state["torch-pruning-macs"]
                note = f"{macs / 1e6:.2f} MMACs (goal {goal / 1e6:.2f})"
            rows.append([label, name, f"{timing.ratio:.2f}x", f"{timing.ratio_low:.2f}-{timing.ratio_high:.2f}",
                         f"{timing.first.median_ms:.4f}", f"{timing.second.median_ms:.4f}", f"{accuracy:.4f}",
                         f"{100 * (source_accuracy - accuracy):+.2f}", f"{deployed_size_mb(model):.3f}",
                         f"{seconds:.0f}", note])
            print(f"  {label} / {name}: {rows[-1][2]} ({rows[-1][3]}), drop {rows[-1][7]} pp, {seconds:.0f} s",
                  file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{cpu_description()}\nours: --pipeline {args.pipeline}")
    print(f"{args.data}, cpu-ort 1 thread, side by side over {args.rounds} rounds; budget per model; at most "
          f"{args.max_accuracy_drop:g} pp; fine-tuning {args.fine_tune_epochs} epochs")
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) if i in (0, 1, 10) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if step_lines:
        print("\nour steps:")
        print("\n".join(step_lines))


if __name__ == "__main__":
    main()
