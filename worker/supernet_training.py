"""Training supernets (single-path uniform sampling, optionally the sandwich rule) and scoring with inherited weights.

One step trains one path: an architecture drawn uniformly from the space (SPOS). With ``sandwich`` a
step trains the largest path on the labels and the smallest and a random path on the largest one's
soft predictions (in-place distillation). With ``supernets`` K > 1 a balanced mixture is trained:
each step draws a configuration uniformly, a supernet for it from the balanced assignment, and
updates the assignment with the path's validation-batch accuracy. Checkpoints are written whole or
not at all (a temporary file renamed into place) and carry a version; a trainer given an existing
checkpoint resumes from it, step for step as if never stopped. Scoring recalibrates the path's
batch-norm statistics on a few training batches, then measures validation accuracy.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from archetype.errors import SpecError
from archetype.runtime.data import Dataset, Split
from archetype.runtime.devices import check_device_name, resolve_device
from archetype.runtime.training import (
    TrainingError,
    batch_slices,
    evaluate_accuracy,
    recalibrate_batch_norm,
    torch_threads,
)
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.space import SearchSpace
from archetype.searchspace.supernet import Supernet, extreme_architecture
from archetype.searchspace.supernet_mixture import BalancedAssignment, downsampling_pattern

CHECKPOINT_VERSION = 1
CONFIG_POOL = 256  # architectures drawn once to find the configurations a mixture balances over
CONFIG_REDRAWS = 64  # draws to find a fresh architecture of a chosen configuration


@dataclass(frozen=True)
class SupernetConfig:
    """How supernets are trained and scored."""

    epochs: int = 10  # passes over the training split; one path (or one sandwich) per batch
    batch_size: int = 64
    lr: float = 3e-3  # AdamW peak learning rate, cosine-annealed to 0
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1  # torch intra-op threads
    sandwich: bool = False  # largest + smallest + random path a step, distilled from the largest
    supernets: int = 1  # K > 1: a balanced mixture of K supernets
    checkpoint_every: int = 100  # steps between checkpoints (and one at the end)
    bn_batches: int = 4  # training batches that recalibrate batch norm before scoring
    device: str = "auto"  # where the supernets train and score: auto (CUDA when present), cpu, cuda, cuda:N

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads", "supernets", "checkpoint_every", "bn_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"supernet training: {name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise SpecError(f"supernet training: lr must be positive, got {self.lr!r}")
        check_device_name(self.device)


@dataclass(frozen=True)
class SupernetTrainReport:
    """What training did: steps run in total, mean loss per epoch run now, wall time of this call."""

    steps: int
    losses: list[float]
    seconds: float


class SupernetTrainer:
    """Trains one supernet (or a balanced mixture) of ``space`` on ``dataset`` and scores architectures."""

    def __init__(
        self,
        space: SearchSpace,
        dataset: Dataset,
        config: SupernetConfig | None = None,
        checkpoint: str | Path | None = None,
        configuration: Callable[[Architecture], Hashable] = downsampling_pattern,
    ) -> None:
        self.space = space
        self.dataset = dataset
        self.config = config = config or SupernetConfig()
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.configuration = configuration
        self.device = resolve_device(config.device)
        with torch.random.fork_rng(devices=[]):
            self.supernets = []
            for k in range(config.supernets):
                torch.manual_seed(config.seed * 1000 + k)
                self.supernets.append(Supernet(space).to(self.device))
        self.optimizers = [
            torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            for net in self.supernets
        ]
        self.steps_per_epoch = len(batch_slices(len(dataset.train), config.batch_size))
        self.total_steps = config.epochs * self.steps_per_epoch
        self.schedules = [
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.total_steps)) for opt in self.optimizers
        ]
        self.assignment = BalancedAssignment(config.supernets) if config.supernets > 1 else None
        self.step = 0
        setup = np.random.default_rng([config.seed, 7])
        self.largest = extreme_architecture(space, True, setup)
        self.smallest = extreme_architecture(space, False, setup)
        self._pool: dict[Hashable, list[Architecture]] = {}
        if self.assignment is not None:
            for arch in (space.sample(setup) for _ in range(CONFIG_POOL)):
                self._pool.setdefault(configuration(arch), []).append(arch)
        if self.checkpoint is not None and self.checkpoint.exists():
            self.load(self.checkpoint)

    def train(self, on_step: Callable[[int, int], None] | None = None) -> SupernetTrainReport:
        """Train up to ``epochs`` from where the trainer stands; ``on_step(step, total)`` after each step."""
        start = time.perf_counter()
        for net in self.supernets:
            net.train()
        losses: list[float] = []
        total, seen = 0.0, 0
        with torch_threads(self.config.threads), torch.random.fork_rng(devices=[]):
            while self.step < self.total_steps:
                loss = self._train_step()
                total, seen = total + loss, seen + 1
                self.step += 1
                if self.step % self.steps_per_epoch == 0:
                    losses.append(total / seen)
                    total, seen = 0.0, 0
                if self.checkpoint is not None and (
                    self.step % self.config.checkpoint_every == 0 or self.step == self.total_steps
                ):
                    self.save(self.checkpoint)
                if on_step is not None:
                    on_step(self.step, self.total_steps)
        return SupernetTrainReport(self.step, losses, time.perf_counter() - start)

    def _train_step(self) -> float:
        config, step = self.config, self.step
        rng = np.random.default_rng([config.seed, step])
        torch.manual_seed(config.seed * 1_000_003 + step)
        x, y = self._batch(step)
        arch, config_key = self._sample(rng)
        k = 0 if self.assignment is None else self.assignment.sample(config_key, step / self.total_steps, rng)
        net, optimizer = self.supernets[k], self.optimizers[k]
        optimizer.zero_grad(set_to_none=True)
        if config.sandwich:
            net.activate(self.largest)
            logits = net(x)  # (B, classes)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            teacher = F.softmax(logits.detach(), dim=1)
            for student in (self.smallest, arch):
                net.activate(student)
                F.kl_div(F.log_softmax(net(x), dim=1), teacher, reduction="batchmean").backward()
        else:
            net.activate(arch)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(f"supernet loss became {value} at step {step} of {self.total_steps}")
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        optimizer.step()
        self.schedules[k].step()
        if self.assignment is not None:
            net.activate(arch)
            self.assignment.update(config_key, k, self._batch_accuracy(net, step))
        return value

    def _sample(self, rng: np.random.Generator) -> tuple[Architecture, Hashable]:
        """A uniform path; for a mixture, a uniform configuration and then an architecture of it."""
        if self.assignment is None:
            return self.space.sample(rng), None
        configs = list(self._pool)
        wanted = configs[int(rng.integers(len(configs)))]
        for _ in range(CONFIG_REDRAWS):
            arch = self.space.sample(rng)
            if self.configuration(arch) == wanted:
                return arch, wanted
        pool = self._pool[wanted]
        return pool[int(rng.integers(len(pool)))], wanted

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = divmod(step, self.steps_per_epoch)
        shuffle = torch.Generator().manual_seed(self.config.seed * 7919 + epoch)
        order = torch.randperm(len(self.dataset.train), generator=shuffle)
        chosen = order[batch_slices(len(self.dataset.train), self.config.batch_size)[index]]
        return (self.dataset.train.x[chosen].to(self.device, non_blocking=True),
                self.dataset.train.y[chosen].to(self.device, non_blocking=True))

    def _batch_accuracy(self, net: Supernet, step: int) -> float:
        """Accuracy of the active path on one validation batch, with batch statistics (as in training)."""
        val, size = self.dataset.val, self.config.batch_size
        start = (step * size) % max(1, len(val) - size + 1)
        x, y = (t[start : start + size].to(self.device, non_blocking=True) for t in (val.x, val.y))
        with torch.no_grad():
            logits = net(x)  # (B, classes)
        return float((logits.argmax(dim=1) == y).float().mean())

    def supernet_for(self, arch: Architecture) -> int:
        """The supernet that scores ``arch``: 0, or its configuration's best in the mixture."""
        if self.assignment is None:
            return 0
        best = self.assignment.best(self.configuration(arch))
        return 0 if best is None else best

    def recalibrate(self, arch: Architecture, supernet: int | None = None) -> Supernet:
        """Activate ``arch`` and re-estimate its batch-norm statistics on ``bn_batches`` training batches."""
        net = self.supernets[self.supernet_for(arch) if supernet is None else supernet]
        net.activate(arch)
        norms = [m for shared in net.active_modules() for m in shared.modules() if isinstance(m, nn.BatchNorm2d)]
        train, size = self.dataset.train, self.config.batch_size
        batches = (train.x[i * size : (i + 1) * size].to(self.device, non_blocking=True)
                   for i in range(self.config.bn_batches) if i * size < len(train))
        with torch_threads(self.config.threads):
            recalibrate_batch_norm(net, batches, norms)
        return net

    def score(self, arch: Architecture, split: Split | None = None) -> float:
        """Validation accuracy of ``arch`` with inherited weights and recalibrated batch norm."""
        if self.assignment is not None and self.assignment.best(self.configuration(arch)) is None:
            return max(self._score_on(arch, k, split) for k in range(len(self.supernets)))
        return self._score_on(arch, None, split)

    def _score_on(self, arch: Architecture, supernet: int | None, split: Split | None) -> float:
        net = self.recalibrate(arch, supernet)
        with torch_threads(self.config.threads):
            return evaluate_accuracy(net, split if split is not None else self.dataset.val)

    def extract(self, arch: Architecture) -> nn.Module:
        """A standalone network of ``arch`` with inherited, recalibrated weights, in eval mode."""
        return self.recalibrate(arch).extract(arch).cpu().eval()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed trainer needs, with the checkpoint format's version (tensors on the CPU)."""
        return _on_cpu({
            "version": CHECKPOINT_VERSION,
            "space": self.space.name,
            "config": _portable(self.config),
            "step": self.step,
            "supernets": [net.state_dict() for net in self.supernets],
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "schedules": [s.state_dict() for s in self.schedules],
            "assignment": self.assignment.state_dict() if self.assignment is not None else None,
        })

    def load_state_dict(self, state: dict[str, Any], where: str = "supernet state") -> None:
        """Restore what ``state_dict`` returned; SpecError if it is of another version, space or config."""
        if state.get("version") != CHECKPOINT_VERSION:
            raise SpecError(f"{where}: checkpoint version {state.get('version')!r}, expected {CHECKPOINT_VERSION}")
        if state.get("space") != self.space.name or state.get("config") != _portable(self.config):
            raise SpecError(
                f"{where}: written for space {state.get('space')!r} with {state.get('config')}, "
                f"not {self.space.name!r} with {_portable(self.config)}"
            )
        for net, sd in zip(self.supernets, state["supernets"], strict=True):
            net.load_state_dict(sd)
        for opt, sd in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(sd)
        for schedule, sd in zip(self.schedules, state["schedules"], strict=True):
            schedule.load_state_dict(sd)
        if self.assignment is not None:
            self.assignment.load_state_dict(state["assignment"])
        self.step = int(state["step"])

    def save(self, path: str | Path) -> None:
        """Write a checkpoint atomically: to a temporary file beside ``path``, then renamed over it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as file:
                torch.save(self.state_dict(), file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def load(self, path: str | Path) -> None:
        """Resume from a checkpoint ``save`` wrote."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file, or one holding more than tensors (never unpickled)
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
            raise SpecError(f"{path}: cannot read the supernet checkpoint: {reason}") from None
        self.load_state_dict(state, where=str(path))


def _on_cpu(state: Any) -> Any:
    """``state`` with every tensor in it copied to the CPU, so it loads on a machine without the training device."""
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {k: _on_cpu(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_on_cpu(v) for v in state)
    return state


def _portable(config: SupernetConfig) -> dict[str, Any]:
    """The settings a checkpoint must match to resume: all but the device, so training may move between devices."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "device"}


def train_on_ray(
    space: SearchSpace,
    data: str,
    config: SupernetConfig,
    checkpoint: str | Path | None = None,
    ray_address: str | None = None,
    cpus: float = 1.0,
    gpus: float = 0.0,
) -> dict[str, Any]:
    """Train in one Ray task (local runtime or the cluster at ``ray_address``); the trained state comes back."""
    import ray

    from archetype.worker.executor import RayRuntime

    runtime = RayRuntime(1, cpus, ray_address)
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_train_task)
        return ray.get(task.remote(space, data, config, None if checkpoint is None else str(checkpoint)))
    finally:
        runtime.stop()


def _train_task(space: SearchSpace, data: str, config: SupernetConfig, checkpoint: str | None) -> dict[str, Any]:
    from archetype.runtime.data import load_dataset

    trainer = SupernetTrainer(space, load_dataset(data, config.seed), config, checkpoint)
    trainer.train()
    return trainer.state_dict()
