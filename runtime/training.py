"""Training a candidate by one recipe: AdamW or LAMB, warm-up + cosine, label smoothing, batched augmentation,
mixup/cutmix, stochastic depth and a weight average, on the CPU or a CUDA device, deterministic by seed.

The recipe follows "ResNet strikes back" (Wightman et al., arXiv:2110.00476) in kind, scaled to short
search budgets; ``RECIPES`` names its presets: ``quick`` for search trials (the dataclass defaults),
``full`` for final training, ``plain`` for the bare AdamW + cosine schedule of earlier versions.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from archetype.errors import SpecError
from archetype.runtime.augmentation import mix_batch, padded_crop, random_flip, random_resized_crop
from archetype.runtime.data import Dataset, Split
from archetype.runtime.devices import (
    autocast_dtype,
    available_cpus,
    check_device_name,
    default_batch_size,
    inference_batch_size,
    resolve_device,
)
from archetype.validation import checked, count, number, share

Optimizer = Literal["adamw", "lamb"]
Crop = Literal["none", "pad", "resized"]  # none | pad (shift by up to 1/8 of the side) | resized (random-resized crop)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
CROPS: tuple[str, ...] = get_args(Crop)
RESIDENT_SHARE = 0.25  # a training split up to this share of free device memory is copied to the device once


class TrainingError(RuntimeError):
    """Training diverged: the loss became NaN or infinite."""


@checked(frozen=True, subject="invalid training config")
class TrainConfig:
    """How a candidate is trained: the recipe. The defaults are the ``quick`` preset, for short search budgets."""

    epochs: int = count(5, minimum=0)
    batch_size: int | None = count(None)  # None: what suits the device and data (devices.default_batch_size)
    lr: float = number(3e-3)  # peak learning rate, reached after the warm-up, then cosine-annealed to 0
    weight_decay: float = Field(0.02, strict=True)  # decoupled; biases and norm scales are not decayed
    optimizer: Optimizer = Field("adamw", description=f"be one of {', '.join(OPTIMIZERS)}")
    warmup: float = share(0.1)  # share of all steps over which the learning rate rises linearly from 0
    label_smoothing: float = share(0.1)
    crop: Crop = Field("none", description=f"be one of {', '.join(CROPS)}")
    flip: bool = False  # left-right mirroring: for natural images, not for digits or text
    mixup: float = number(0.0, positive=False)  # Beta(alpha, alpha) of mixup; 0 is off
    cutmix: float = number(0.0, positive=False)  # Beta(alpha, alpha) of cutmix; 0 is off (with both on, one per batch)
    drop_path: float = share(0.0)  # stochastic depth of the last residual block, decaying linearly to 0 at the first
    ema: float = share(0.0)  # decay of the weight average the model ends with; 0 is off
    clip_grad: float | None = number(2.0)  # gradient norm clipped to this; None is off
    seed: int = count(0, minimum=0)  # fixes the shuffling, the augmentation and any randomness inside the model
    threads: int | None = count(None)  # torch intra-op threads while training; None: every core this process may use
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    amp: bool = False  # mixed precision (bfloat16, or float16 where CUDA lacks it); off: slower on small nets
    channels_last: bool | None = None  # NHWC tensors for the convolutions; None: on CUDA only

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_device_name(value)

    def batch_for(self, device: torch.device, samples: int) -> int:
        """The batch size: as set, else what suits ``device`` and a training split of ``samples``."""
        return self.batch_size or default_batch_size(device, samples)


RECIPES: dict[str, dict[str, Any]] = {
    "quick": {},
    "full": {"weight_decay": 0.05, "crop": "pad", "mixup": 0.2, "drop_path": 0.1, "ema": 0.999, "warmup": 0.05},
    "plain": {"batch_size": 64, "weight_decay": 1e-4, "warmup": 0.0, "label_smoothing": 0.0, "clip_grad": None},
}
"""Named presets: fields that differ from the ``TrainConfig`` defaults (which are ``quick``)."""


def recipe(name: str, **fields: Any) -> TrainConfig:
    """The preset ``name`` with ``fields`` set over it; SpecError naming --recipe for an unknown preset."""
    if name not in RECIPES:
        raise SpecError(f"--recipe {name!r}: unknown recipe; known: {', '.join(RECIPES)}")
    return TrainConfig(**{**RECIPES[name], **fields})


@dataclass(frozen=True)
class TrainReport:
    """What a training run did: epochs, mean training loss per epoch, wall time, time in the data path, where."""

    epochs: int
    losses: list[float]
    seconds: float
    data_seconds: float = 0.0  # fetching, moving and augmenting batches (exact on a CPU, a lower bound on CUDA)
    images: int = 0  # training images seen
    device: str = "cpu"


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: every core), then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or available_cpus())
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

    ``on_epoch`` returning True stops training there (early stopping); ``loss`` replaces the recipe's
    cross-entropy. The model trains on ``config.device`` and comes back on the device it was on.
    TrainingError names the epoch in which the loss stopped being finite.
    """
    start = time.perf_counter()
    device = resolve_device(config.device)
    batch_size = config.batch_for(device, len(dataset.train))
    amp = bool(config.amp)
    dtype = autocast_dtype(device)
    wanted = device.type == "cuda" if config.channels_last is None else config.channels_last
    # channels_last applies to 4-D kernels only: a network holding 5-D weights (CondConv's experts) stays contiguous
    memory_format = torch.channels_last if wanted and all(p.dim() != 5 for p in model.parameters()) \
        else torch.contiguous_format
    home = device_of(model)
    n = len(dataset.train)
    steps_per_epoch = len(batch_slices(n, batch_size))
    total_steps = max(1, config.epochs * steps_per_epoch)
    losses: list[float] = []
    data_seconds, images = 0.0, 0
    with (torch_threads(config.threads), torch.random.fork_rng(devices=[]),
          stochastic_depth(model, config.drop_path)):
        torch.manual_seed(config.seed)
        model.to(device=device, memory_format=memory_format)
        try:
            optimizer = make_optimizer(model, config)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, config.warmup))
            scaler = torch.amp.GradScaler(device.type, enabled=amp and dtype == torch.float16)
            average = WeightAverage(model, config.ema) if config.ema > 0 else None
            batches = TrainBatches(dataset.train, device, batch_size, config.seed)
            augment = torch.Generator().manual_seed(config.seed * 7919 + 17)
            model.train()
            for epoch in range(1, config.epochs + 1):
                total = torch.zeros((), device=device, dtype=torch.float64)
                seen = 0
                fetch = time.perf_counter()
                for x, y in batches.epoch(epoch):
                    x, mixed = augment_batch(x, config, augment)
                    x = x.contiguous(memory_format=memory_format)
                    data_seconds += time.perf_counter() - fetch
                    with torch.autocast(device.type, dtype=dtype, enabled=amp):
                        logits = model(x)  # (B, classes)
                        batch_loss = (recipe_loss(logits.float(), y, mixed, config.label_smoothing) if loss is None
                                      else loss(logits.float(), x, y))
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(batch_loss).backward()
                    if config.clip_grad is not None:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    schedule.step()
                    if average is not None:
                        average.update()
                    total += batch_loss.detach().double() * len(y)
                    seen += len(y)
                    fetch = time.perf_counter()
                mean = float(total) / max(1, seen)
                images += seen
                if not math.isfinite(mean):
                    raise TrainingError(f"loss became {mean} in epoch {epoch} of {config.epochs}")
                losses.append(mean)
                if on_epoch is not None and on_epoch(epoch, mean):
                    break
            if average is not None:
                average.copy_to(model)
        finally:
            model.to(device=home, memory_format=torch.contiguous_format)
    return TrainReport(len(losses), losses, time.perf_counter() - start, data_seconds, images, str(device))


def augment_batch(
    x: torch.Tensor, config: TrainConfig, generator: torch.Generator
) -> tuple[torch.Tensor, tuple[torch.Tensor, float] | None]:
    """The batch after the recipe's crop, flip and mixing; with mixing, the permutation and share of labels kept."""
    if config.crop == "pad":
        x = padded_crop(x, max(1, x.shape[-1] // 8), generator)
    elif config.crop == "resized":
        x = random_resized_crop(x, generator)
    if config.flip:
        x = random_flip(x, generator)
    if config.mixup > 0 or config.cutmix > 0:
        x, perm, lam = mix_batch(x, config.mixup, config.cutmix, generator)
        return x, (perm, lam)
    return x, None


def recipe_loss(
    logits: torch.Tensor, y: torch.Tensor, mixed: tuple[torch.Tensor, float] | None, label_smoothing: float
) -> torch.Tensor:
    """Cross-entropy with label smoothing; for a mixed batch, the two labels' losses weighted by their shares."""
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    if mixed is None:
        return loss
    perm, lam = mixed
    return lam * loss + (1 - lam) * F.cross_entropy(logits, y[perm], label_smoothing=label_smoothing)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or LAMB with weight decay on the weight matrices and kernels only (not biases, not norm scales)."""
    decayed = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    plain = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    if config.optimizer == "lamb":
        from archetype.runtime.lamb import Lamb

        return Lamb(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def warmup_cosine(total_steps: int, warmup: float) -> Callable[[int], float]:
    """The learning-rate factor of step s: linear from 1/W to 1 over W = ``warmup`` of the steps, then cosine to 0."""
    warm = int(warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

    return factor


class TrainBatches:
    """Shuffled training batches on the device: the split copied there once when it fits, else moved per batch."""

    def __init__(self, split: Split, device: torch.device, batch_size: int, seed: int) -> None:
        self.device, self.batch_size, self.seed = device, batch_size, seed
        self.x, self.y = split.x, split.y
        self.resident = device.type == "cpu"
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if split.x.numel() * split.x.element_size() <= RESIDENT_SHARE * free:
                self.x = split.x.pin_memory().to(device, non_blocking=True)
                self.y = split.y.pin_memory().to(device, non_blocking=True)
                self.resident = True
        self.shuffle = torch.Generator().manual_seed(seed)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch (a fresh permutation from the seeded generator)."""
        order = torch.randperm(len(self.y), generator=self.shuffle)
        for batch in batch_slices(len(self.y), self.batch_size):
            index = order[batch]
            if self.resident:
                index = index.to(self.device, non_blocking=True)
                yield self.x[index], self.y[index]
            else:
                yield (self.x[index].pin_memory().to(self.device, non_blocking=True),
                       self.y[index].pin_memory().to(self.device, non_blocking=True))


class WeightAverage:
    """An exponential moving average of a model's weights and buffers, its decay warmed up over the first steps."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay, self.steps = decay, 0
        self.live = model.state_dict()
        self.shadow = {k: v.detach().clone() for k, v in self.live.items()}

    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        with torch.no_grad():
            for key, value in self.live.items():
                shadow = self.shadow[key]
                if shadow.dtype.is_floating_point:
                    shadow.lerp_(value, 1 - decay)
                else:
                    shadow.copy_(value)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)


@contextlib.contextmanager
def stochastic_depth(model: nn.Module, rate: float) -> Iterator[None]:
    """While the block runs, residual branches drop per sample with a rate rising linearly to ``rate`` at the last.

    A residual block is a module with a ``drop_path`` branch (identity or DropPath); one whose own
    drop rate (a searched hyperparameter) is higher keeps it. Restored afterwards.
    """
    from archetype.searchspace.ops.layers import DropPath

    owners = [m for m in model.modules() if isinstance(getattr(m, "drop_path", None), nn.Identity | DropPath)]
    saved = [m.drop_path for m in owners]
    if rate > 0:
        for depth, module in enumerate(owners, 1):
            own = getattr(module.drop_path, "p", 0.0)
            module.drop_path = DropPath(max(own, rate * depth / len(owners)))
    try:
        yield
    finally:
        for module, branch in zip(owners, saved):
            module.drop_path = branch


def recalibrate_batch_norm(
    model: nn.Module, batches: Iterable[torch.Tensor], norms: Sequence[nn.Module] | None = None
) -> None:
    """Re-estimate the running statistics of ``norms`` (every batch norm of ``model`` by default) as the plain
    average over ``batches``, weights unchanged: what inherited or pruned weights need before they are scored.
    Leaves ``model`` in eval mode, each norm with its momentum back."""
    if norms is None:
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.train()
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    model.eval()


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Slices covering ``range(n)``; a last batch of one sample is dropped (batch norm needs two)."""
    batches = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(batches) > 1 and n % batch_size == 1:
        batches.pop()
    return batches


def evaluate_accuracy(model: nn.Module, split: Split, batch_size: int | None = None) -> float:
    """The fraction of ``split`` that ``model`` classifies correctly, in eval mode, on the model's device."""
    was_training = model.training
    model.eval()
    device = device_of(model)
    batch_size = batch_size or inference_batch_size(device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        with torch.inference_mode():
            for start in range(0, len(split), batch_size):
                x = split.x[start : start + batch_size].to(device, non_blocking=True)
                y = split.y[start : start + batch_size].to(device, non_blocking=True)
                correct += (model(x).argmax(dim=1) == y).sum()  # logits (B, classes)
    finally:
        model.train(was_training)
    return int(correct) / len(split) if len(split) else 0.0

