"""Training a candidate: AdamW with a cosine schedule, cross-entropy, deterministic by seed."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from archetype.worker.data import Dataset, Split


class TrainingError(RuntimeError):
    """Training diverged: the loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """How a candidate is trained."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-3  # peak learning rate; cosine-annealed to 0 over all steps
    weight_decay: float = 1e-4
    seed: int = 0  # fixes the shuffling and any randomness inside the model
    threads: int = 1  # torch intra-op threads while training

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.threads < 1 or not self.lr > 0:
            raise ValueError(
                f"invalid training config: epochs={self.epochs}, batch_size={self.batch_size}, "
                f"lr={self.lr}, threads={self.threads}"
            )


@dataclass(frozen=True)
class TrainReport:
    """What a training run did: epochs run, mean training loss per epoch, wall time."""

    epochs: int
    losses: list[float]
    seconds: float


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(logits, x, y)``: a training loss that may look at the inputs (distillation does)."""


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    on_epoch: Callable[[int, float], bool | None] | None = None,
    loss: LossFn | None = None,
) -> TrainReport:
    """Train ``model`` on ``dataset.train`` in place; ``on_epoch(epoch, mean_loss)`` after each epoch (from 1).

    ``on_epoch`` returning True stops training there (early stopping); ``loss``
    replaces the cross-entropy. TrainingError names the epoch in which the loss
    stopped being finite.
    """
    start = time.perf_counter()
    x, y = dataset.train.x, dataset.train.y
    steps_per_epoch = len(batch_slices(len(y), config.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs * steps_per_epoch))
    shuffle = torch.Generator().manual_seed(config.seed)
    cross_entropy = nn.CrossEntropyLoss()

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, y) if loss is None else loss(logits, x, y)
    losses: list[float] = []
    model.train()
    with torch_threads(config.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(len(y), generator=shuffle)
            total, seen = 0.0, 0
            for batch in batch_slices(len(y), config.batch_size):
                index = order[batch]
                batch_loss = loss_fn(model(x[index]), x[index], y[index])  # logits (B, classes)
                value = batch_loss.item()
                if not math.isfinite(value):
                    raise TrainingError(f"loss became {value} in epoch {epoch} of {config.epochs}")
                optimizer.zero_grad(set_to_none=True)
                batch_loss.backward()
                optimizer.step()
                schedule.step()
                total += value * len(index)
                seen += len(index)
            losses.append(total / seen)
            if on_epoch is not None and on_epoch(epoch, losses[-1]):
                break
    return TrainReport(epochs=len(losses), losses=losses, seconds=time.perf_counter() - start)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Slices covering ``range(n)``; a last batch of one sample is dropped (batch norm needs two)."""
    batches = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(batches) > 1 and n % batch_size == 1:
        batches.pop()
    return batches


def evaluate_accuracy(model: nn.Module, split: Split, batch_size: int = 512) -> float:
    """The fraction of ``split`` that ``model`` classifies correctly, in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for start in range(0, len(split), batch_size):
                logits = model(split.x[start : start + batch_size])  # (B, classes)
                correct += int((logits.argmax(dim=1) == split.y[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(split) if len(split) else 0.0
