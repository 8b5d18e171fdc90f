"""Compression benchmark on MNIST: three user-written models (bench/user_models.py), ours against the tools a user
would pick instead, every result timed side by side with its source on cpu-ort, 1 thread.

    .venv-peers/bin/python bench/compress.py [--models mobilenetv2,resnet18,vgg] [--epochs 3] [--fine-tune-epochs 2]
        [--fine-tune-lr LR] [--max-accuracy-drop 0.3] [--pipeline STEPS] [--sources DIR] [--train-samples N]
        [--peers ours,ort-int8,torch-pruning,nncf,modelopt,modelopt-fastnas,mct]

Per model: train the source on MNIST (seeded), then one row per method:

- ours: ``archetype compress``'s default pipeline (or ``--pipeline``) with the budget ``--speedup X`` over the
  source (default per model: 4x for MobileNetV2 and ResNet-18, 8x for VGG), judged side by side, and at most
  ``--max-accuracy-drop`` pp of test accuracy lost;
- ort-int8: ONNX Runtime static INT8 (QDQ, per-channel, 256 calibration images) of the source alone;
- torch-pruning: Torch-Pruning's magnitude recipe (group L2 magnitude, iterative steps) down to the MACs our
  result has, then the same fine-tuning epochs with plain cross-entropy;
- nncf: NNCF post-training quantization of the source's ONNX graph;
- modelopt: NVIDIA Model Optimizer's ONNX INT8 post-training quantization of the source's ONNX graph, calibrated
  on the CPU (its route to ONNX Runtime; its torch quantizers export QDQ pairs ONNX Runtime runs in fp32);
- modelopt-fastnas: Model Optimizer's FastNAS pruning (channel step 8) down to the MACs our result has, scored on
  2,000 validation images, then the same fine-tuning epochs with plain cross-entropy;
- mct: Sony MCT mixed-precision post-training quantization (where it imports: it needs torchvision).

nncf and Model Optimizer live in .venv-peers (``make setup-peers``); run the bench there to get their rows.

Each result and its source are timed in alternating blocks (the project's side-by-side protocol); the speedup
is the median ratio with its interquartile range. Accuracy is on the MNIST test set; wall time is the method's
own (training the source excluded). Our per-step times follow the table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
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
    "mobilenetv2": ("MobileNetV2-style", MobileNetV2, 4.0),
    "resnet18": ("ResNet-18-style", ResNet18, 4.0),
    "vgg": ("VGG-style", vgg, 8.0),
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


def macs_goal(source: nn.Module, context: CompressionContext, state: dict) -> int:
    """The pruning peers' goal: the MACs our result has (half the source's when ours did not run or shrink nothing)."""
    result = state.get("ours")
    _, source_macs = count_params_and_macs(source, context.example())
    return result.metrics.macs if result is not None and result.metrics.macs < source_macs else source_macs // 2


def fine_tuned(model: nn.Module, context: CompressionContext, goal: int, state: dict) -> nn.Module:
    """The pruning peers' ending: the same fine-tuning epochs with plain cross-entropy, the MACs reached noted."""
    train(model, context.dataset, context.fine_tune)
    macs = count_params_and_macs(model, context.example())[1]
    state["note"] = f"{macs / 1e6:.2f} MMACs (goal {goal / 1e6:.2f})"
    return model.eval()


def not_installed(module: str | None) -> PeerUnavailable:
    """The row of a peer tool this environment lacks, with how to get it."""
    return PeerUnavailable(f"not installed ({module}): make setup-peers, then run under .venv-peers")


def peer_module(name: str) -> Any:
    """A peer tool's module, or the row's reason why it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise not_installed(exc.name) from None


def torch_pruning(source: nn.Module, context: CompressionContext, state: dict) -> nn.Module:
    import torch_pruning as tp

    example = context.example()
    goal = macs_goal(source, context, state)
    model = copy.deepcopy(source).eval()
    steps = 40
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.95, iterative_steps=steps,
                                  ignored_layers=output_layers(model, context.dataset.num_classes))
    for _ in range(steps):
        if count_params_and_macs(model, example)[1] <= goal:
            break
        pruner.step()
    return fine_tuned(model, context, goal, state)


def modelopt_fastnas(source: nn.Module, context: CompressionContext, state: dict) -> nn.Module:
    mtp = peer_module("modelopt.torch.prune")
    example = context.example()
    goal = macs_goal(source, context, state)
    share = 100 * goal / count_params_and_macs(source, example)[1]
    score_split = sample_split(context.dataset.val, 2000, torch.Generator().manual_seed(0))
    calibration = context.dataset.train.x[:2560]

    def calibrate(model: nn.Module) -> None:
        with torch.no_grad():
            for batch in calibration.split(128):
                model(batch)

    # its default channel step is 32, coarser than these models' layers: 8 lets it reach the same MACs
    rules = {"nn.Conv2d": {"*": {"channel_divisor": 8}}, "nn.Linear": {"*": {"feature_divisor": 8}},
             "nn.BatchNorm2d": {"*": {"feature_divisor": 8}}}
    with contextlib.redirect_stdout(sys.stderr):  # its search tables are progress; stdout keeps the bench's table
        model, _ = mtp.prune(copy.deepcopy(source).eval(), [("fastnas", rules)], {"flops": f"{share:.2f}%"},
                             example[:1], {"forward_loop": calibrate,
                                           "score_func": lambda m: evaluate_accuracy(m, score_split)})
    return fine_tuned(model, context, goal, state)


def nncf_ptq(source: nn.Module, context: CompressionContext, state: dict) -> nn.Module:
    nncf = peer_module("nncf")
    example = context.example()
    fp32 = onnx.load_from_string(export_onnx_bytes(source, example, dynamic_batch=True))
    name = fp32.graph.input[0].name
    images = [context.dataset.train.x[i:i + 1].numpy() for i in range(300)]
    with contextlib.redirect_stdout(sys.stderr):  # its progress bars; stdout keeps the bench's table
        quantized = nncf.quantize(fp32, nncf.Dataset(images, lambda x: {name: x}), subset_size=300)
    params, macs = count_params_and_macs(source, example)
    return OrtInt8Model(quantized.SerializeToString(), source, params, macs)


MODELOPT_PTQ = """
import sys, numpy, onnx, modelopt.onnx.quantization as moq
fp32, images, int8 = sys.argv[1:]
name = onnx.load(fp32).graph.input[0].name
moq.quantize(fp32, quantize_mode="int8", calibration_data={name: numpy.load(images)}, calibration_eps=["cpu"],
             high_precision_dtype="fp32", dq_only=True, output_path=int8, log_level="ERROR")
"""


def modelopt_int8(source: nn.Module, context: CompressionContext, state: dict) -> nn.Module:
    if importlib.util.find_spec("modelopt") is None:  # imported only in the child process below
        raise not_installed("modelopt")
    example = context.example()
    params, macs = count_params_and_macs(source, example)
    with tempfile.TemporaryDirectory(prefix="bench-modelopt-") as folder:
        fp32, images, int8 = Path(folder) / "fp32.onnx", Path(folder) / "images.npy", Path(folder) / "int8.onnx"
        fp32.write_bytes(export_onnx_bytes(source, example, dynamic_batch=True))
        np.save(images, context.dataset.train.x[:256].numpy())
        # in a process of its own: importing it patches ONNX Runtime's quantizer, which ours and ort-int8 then use
        done = subprocess.run([sys.executable, "-c", MODELOPT_PTQ, str(fp32), str(images), str(int8)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise PeerUnavailable(f"failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"[:160])
        return OrtInt8Model(int8.read_bytes(), source, params, macs)


def mct_mixed_precision(source: nn.Module, context: CompressionContext, state: dict) -> nn.Module:
    try:
        import model_compression_toolkit as mct
    except Exception as exc:  # it raises its own error when torchvision is missing or broken
        raise PeerUnavailable(f"does not import here: {str(exc).strip().splitlines()[-1]} (it needs torchvision, "
                              "whose registry build fails on CPU torch)") from None
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


def int8_kernels(onnx_model: bytes) -> str:
    """How many of the graph's convolutions and matrix products ONNX Runtime's CPU provider runs in int8."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="bench-ort-") as folder:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        kinds = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
    int8 = sum(kind in {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul"}
               or kind.startswith("QGemm") for kind in kinds)
    fp32 = sum(kind in {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"} for kind in kinds)
    return f"int8 kernels in ORT: {int8} of {int8 + fp32}"


PEERS: dict[str, Callable[[nn.Module, CompressionContext, dict], nn.Module]] = {
    "ours": ours, "ort-int8": ort_int8, "torch-pruning": torch_pruning, "nncf": nncf_ptq,
    "modelopt": modelopt_int8, "modelopt-fastnas": modelopt_fastnas, "mct": mct_mixed_precision,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--models", default="mobilenetv2,resnet18,vgg")
    parser.add_argument("--speedup", type=float, help="our budget: times faster than the source (default per model)")
    parser.add_argument("--reports", type=Path, help="folder to write our report.json per model into")
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
        label, factory, default_speedup = MODELS[key]
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
        budget = Budget(speedup=args.speedup or default_speedup, max_accuracy_drop=args.max_accuracy_drop)
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
            note = state.pop("note", "")
            if name == "ours":
                result = state["ours"]
                if args.reports:
                    args.reports.mkdir(parents=True, exist_ok=True)
                    (args.reports / f"{key}.json").write_text(json.dumps(result.to_json(), indent=1, default=str))
                note = "+".join(s.name for s in result.steps[1:] if s.accepted) or "nothing kept"
                step_lines += [f"  {label}: {s.name} {s.seconds:.0f} s: {s.message}" for s in result.steps[1:]]
            if isinstance(model, OrtInt8Model):
                note = "; ".join(filter(None, [note, int8_kernels(model.onnx_model)]))
            rows.append([label, name, f"{timing.ratio:.2f}x", f"{timing.ratio_low:.2f}-{timing.ratio_high:.2f}",
                         f"{timing.first.median_ms:.4f}", f"{timing.second.median_ms:.4f}", f"{accuracy:.4f}",
                         f"{100 * (source_accuracy - accuracy):+.2f}", f"{deployed_size_mb(model):.3f}",
                         f"{seconds:.0f}", note])
            print(f"  {label} / {name}: {rows[-1][2]} ({rows[-1][3]}), drop {rows[-1][7]} pp, {seconds:.0f} s",
                  file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{cpu_description()}\nours: --pipeline {args.pipeline}")
    speedups = ", ".join(f"{MODELS[k][0]} {args.speedup or MODELS[k][2]:g}x" for k in args.models.split(","))
    print(f"{args.data}, cpu-ort 1 thread, side by side over {args.rounds} rounds; our budget {speedups}; at most "
          f"{args.max_accuracy_drop:g} pp; fine-tuning {args.fine_tune_epochs} epochs")
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) if i in (0, 1, 10) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if step_lines:
        print("\nour steps:")
        print("\n".join(step_lines))


if __name__ == "__main__":
    main()
