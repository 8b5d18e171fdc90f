"""Training speed and the quick recipe's accuracy, side by side with the old loop.

Parts (``--parts``, comma-separated):

- ``speed``: images per second of training for a typical architecture of each of ``--spaces`` (the
  median-MACs one of 25 seeded samples): the old loop (the ``plain`` recipe, one thread, batch 64),
  the ``quick`` recipe on 1 and 2 CPU threads (and every core when there are more; and every core with
  bfloat16 autocast, which pays only where the CPU computes in bfloat16), and, where a
  CUDA device is present, ``quick`` on the GPU with and without mixed precision. Each row also gives
  the data path's share of the training time (fetching and augmenting batches; exact on a CPU), and
  on the CPU the arithmetic rate it reaches (a training step counted as three forward passes'
  MACs, two FLOPs each) as a share of the rate of a large float32 matrix product at the same
  thread count: the ceiling no loop on these cores passes.
- ``trial``: the wall time of one search trial (build, latency on cpu-ort, train ``--trial-epochs``,
  validation and test accuracy) of the conv-small typical architecture, old settings against new.
- ``accuracy``: validation accuracy after each of ``--epochs-list`` epochs, ``quick`` against the old
  schedule, for the three typical architectures (each epoch count is its own run: the schedule
  spans the run).

``--data synthetic`` trains on random 1x28x28 images in memory (for machines without MNIST; only
speed figures mean anything there). ``--gpu-only`` keeps the GPU rows of ``speed``.

    .venv/bin/python bench/training_speed.py [--data mnist] [--parts speed,trial,accuracy]
        [--spaces conv-small,mobile,resnet] [--images 8192] [--trial-epochs 2] [--epochs-list 1,3,10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from archetype.runtime.data import Dataset, Split, load_dataset
from archetype.runtime.devices import available_cpus, default_batch_size
from archetype.runtime.training import TrainConfig, evaluate_accuracy, recipe, torch_threads, train
from archetype.searchspace import Architecture, Image, get_space

OLD = {"recipe": "plain", "threads": 1}  # the loop before recipes: bare AdamW + cosine, batch 64, one thread


def synthetic(images: int, seed: int = 0) -> Dataset:
    """Random 1x28x28 images with random labels of 10 classes: a stand-in for MNIST's shapes, not its content."""
    g = torch.Generator().manual_seed(seed)
    splits = [Split(torch.randn(images, 1, 28, 28, generator=g), torch.randint(0, 10, (images,), generator=g))
              for _ in range(3)]
    return Dataset("synthetic", *splits, Image(1, 28, 28), 10)


def subset(data: Dataset, images: int) -> Dataset:
    """The first ``images`` training samples of ``data`` (the other splits as they are)."""
    train_split = Split(data.train.x[:images].contiguous(), data.train.y[:images].contiguous())
    return Dataset(data.name, train_split, data.val, data.test, data.input_type, data.num_classes)


def typical(space_name: str, data: Dataset, seed: int) -> Architecture:
    """The architecture of median MACs among 25 seeded samples of the space."""
    space = get_space(space_name, data.input_type, data.num_classes)
    rng = np.random.default_rng(seed)
    samples = sorted((space.sample(rng) for _ in range(25)), key=lambda a: a.macs())
    return samples[len(samples) // 2]


def images_per_second(arch: Architecture, data: Dataset, config: TrainConfig) -> tuple[float, float]:
    """Training images per second over one epoch of ``data``, and the data path's share of that time."""
    warm = subset(data, min(len(data.train), 512 if config.device == "cpu" else 2048))
    train(arch.build(), warm, config)  # first calls (kernels chosen, memory pools filled) stay out of the timing
    torch.manual_seed(config.seed)
    model = arch.build()
    report = train(model, data, config)
    if report.device.startswith("cuda"):
        torch.cuda.synchronize()
    return report.images / report.seconds, report.data_seconds / report.seconds


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """The float32 GFLOP/s of a large matrix product at ``threads``: what the cores can compute at best."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    with torch_threads(threads):
        for _ in range(3):
            a @ b
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        seconds = time.perf_counter() - start
    return 2 * size**3 * repeats / seconds / 1e9


def speed_rows(archs: dict[str, Architecture], data: Dataset, gpu_only: bool, seed: int, full: int) -> list[dict]:
    """Rows at the batch a trial on the ``full`` training split would use, though timed on ``data``, a subset."""
    cpu, gpu = default_batch_size(torch.device("cpu"), full), default_batch_size(torch.device("cuda"), full)
    settings: list[tuple[str, TrainConfig]] = []
    if not gpu_only:
        settings.append(("old loop: plain, 1 thread, batch 64", recipe("plain", epochs=1, threads=1, device="cpu",
                                                                        seed=seed)))
        for threads in sorted({1, 2, available_cpus()}):
            settings.append((f"quick, CPU {threads} thread(s)", recipe("quick", epochs=1, threads=threads,
                                                                       device="cpu", seed=seed, batch_size=cpu)))
        settings.append((f"quick, CPU {available_cpus()} thread(s), bf16", recipe("quick", epochs=1, device="cpu",
                                                                                  amp=True, seed=seed, batch_size=cpu)))
    if torch.cuda.is_available():
        for amp in (True, False):
            for layout in (True, False):
                label = f"quick, GPU, {'bf16' if amp else 'float32'}, {'channels_last' if layout else 'contiguous'}"
                settings.append((label, recipe("quick", epochs=1, device="cuda", amp=amp, channels_last=layout,
                                               seed=seed, batch_size=gpu)))
    elif gpu_only:
        print("no CUDA device: no GPU rows", file=sys.stderr)
    peak = {} if gpu_only else {t: matmul_gflops(t) for t in sorted({1, 2, available_cpus()})}
    if peak:
        print("  float32 matrix product: " + ", ".join(f"{g:.0f} GFLOP/s at {t} thread(s)" for t, g in peak.items()))
    rows = []
    for space, arch in archs.items():
        for label, config in settings:
            print(f"speed: {space} / {label} ...", file=sys.stderr, flush=True)
            rate, share = images_per_second(arch, data, config)
            gflops = rate * 3 * arch.macs() * 2 / 1e9
            rows.append({"space": space, "setting": label, "images_per_s": rate, "data_share": share,
                         "batch": config.batch_size, "gflops": gflops})
            threads = config.threads or available_cpus()
            of_peak = f"   {gflops:5.0f} GFLOP/s, {gflops / peak[threads]:4.0%} of the product's" \
                if config.device == "cpu" and threads in peak else ""
            print(f"  {space:11s} {label:38s} {rate:9.0f} images/s   data path {100 * share:4.1f}%{of_peak}",
                  flush=True)
    return rows


def trial_rows(arch: Architecture, data_name: str, epochs: int, seed: int) -> list[dict]:
    from archetype.worker.evaluator import Budget, TrainingEvaluator

    rows = []
    for label, config in (("old: plain, 1 thread", recipe("plain", seed=seed, threads=1, device="cpu")),
                          ("new: quick, every core", recipe("quick", seed=seed))):
        print(f"trial: {label} ...", file=sys.stderr, flush=True)
        evaluator = TrainingEvaluator(dataset=data_name, target="cpu-ort", seed=seed, train=config)
        result = evaluator.evaluate(arch, Budget(epochs=epochs))
        if result.error:
            raise SystemExit(f"trial failed: {result.error}")
        row = {"setting": label, "total_s": result.timings["total_s"], "train_s": result.timings["train_s"],
               "accuracy": result.values["accuracy"], "test_accuracy": result.values["test_accuracy"]}
        rows.append(row)
        print(f"  {label:24s} trial {row['total_s']:7.1f} s (training {row['train_s']:7.1f} s)  "
              f"val accuracy {row['accuracy']:.4f}  test {row['test_accuracy']:.4f}", flush=True)
    print(f"  speed-up per trial: {rows[0]['total_s'] / rows[1]['total_s']:.2f}x", flush=True)
    return rows


def accuracy_rows(archs: dict[str, Architecture], data: Dataset, epochs_list: list[int], seed: int) -> list[dict]:
    rows = []
    for space, arch in archs.items():
        for epochs in epochs_list:
            for name, config in (("old", recipe("plain", epochs=epochs, seed=seed)),
                                 ("quick", recipe("quick", epochs=epochs, seed=seed))):
                print(f"accuracy: {space} / {name} / {epochs} epoch(s) ...", file=sys.stderr, flush=True)
                torch.manual_seed(seed)
                model = arch.build()
                start = time.perf_counter()
                train(model, data, config)
                accuracy = evaluate_accuracy(model, data.val)
                rows.append({"space": space, "recipe": name, "epochs": epochs, "accuracy": accuracy,
                             "seconds": time.perf_counter() - start})
                print(f"  {space:11s} {name:6s} {epochs:3d} epoch(s)  val accuracy {accuracy:.4f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist", help="mnist (default), digits, npz:PATH, or synthetic")
    parser.add_argument("--parts", default="speed,trial", help="speed, trial, accuracy (comma-separated)")
    parser.add_argument("--spaces", default="conv-small,mobile,resnet")
    parser.add_argument("--images", type=int, default=8192, help="training images per speed row")
    parser.add_argument("--trial-epochs", type=int, default=2)
    parser.add_argument("--epochs-list", default="1,3,10")
    parser.add_argument("--gpu-only", action="store_true", help="only the GPU rows of the speed part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="also write every row to FILE")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    data = synthetic(max(args.images, 1024), args.seed) if args.data == "synthetic" else load_dataset(args.data,
                                                                                                       args.seed)
    archs = {space: typical(space, data, args.seed) for space in args.spaces.split(",")}
    print(f"data {data.name} {data.input_type}, {len(data.train)} training images; {available_cpus()} cores; "
          f"torch {torch.__version__}; CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    for space, arch in archs.items():
        print(f"  {space}: {' > '.join(c.op for c in arch.choices)} ({arch.macs() / 1e6:.2f} M MACs)")
    rows: dict[str, list[dict]] = {}
    if "speed" in parts:
        rows["speed"] = speed_rows(archs, subset(data, args.images), args.gpu_only, args.seed, len(data.train))
    if "trial" in parts and not args.gpu_only:
        if args.data == "synthetic":
            raise SystemExit("--parts trial needs a registered data set (mnist, digits, npz:PATH)")
        rows["trial"] = trial_rows(archs[next(iter(archs))], args.data, args.trial_epochs, args.seed)
    if "accuracy" in parts and not args.gpu_only:
        rows["accuracy"] = accuracy_rows(archs, data, [int(e) for e in args.epochs_list.split(",")], args.seed)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=2)


if __name__ == "__main__":
    main()
