"""Fine-tuning after a compression step: distilled from the source model, on a subset, stopped when it stops paying.

Every step fine-tunes through ``fine_tune``: the loss is the cross-entropy
blended with the KL divergence to the teacher's (the source model's) softened
logits at ``temperature``; each epoch runs on a fixed random subset of the
training split (the teacher's logits on it computed once when the recipe does
not augment, and shared by the fine-tunes given the same ``cache``); after each
epoch the validation accuracy (on a subset) is taken, the best weights are
kept, and training stops after ``patience`` epochs without a gain of
``min_delta``, or as soon as the accuracy is below a caller's ``give_up_below``
(a policy beyond repair: its remaining epochs would be wasted).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archetype.errors import SpecError
from archetype.runtime.data import Dataset, Split, sample_dataset
from archetype.runtime.devices import inference_batch_size
from archetype.runtime.training import LossFn, TrainConfig, device_of, evaluate_accuracy, torch_threads, train

FINE_TUNE_LR = 1e-3
"""Peak learning rate of a fine-tune after a compression step (the recipe's warm-up and cosine schedule)."""


def fine_tune_recipe(epochs: int = 2, **options: Any) -> TrainConfig:
    """The training recipe every compression fine-tune starts from: ``epochs`` at ``FINE_TUNE_LR``."""
    return TrainConfig(epochs=epochs, lr=FINE_TUNE_LR, **options)


@dataclass(frozen=True)
class FineTuneConfig:
    """How every step fine-tunes its result."""

    distill_weight: float = 0.7  # share of the distillation term in the loss; 0 trains on labels alone
    temperature: float = 4.0  # softening of both logits in the distillation term
    train_samples: int | None = 20000  # training samples per fine-tune (a fixed random subset); None: all
    val_samples: int | None = 2000  # validation samples scored after each epoch
    patience: int = 1  # epochs without a gain before stopping
    min_delta: float = 0.0005  # a validation accuracy gain smaller than this is no gain

    def __post_init__(self) -> None:
        if not 0 <= self.distill_weight <= 1 or not self.temperature > 0 or self.patience < 1:
            raise SpecError(f"fine-tuning: distill_weight in [0, 1], temperature > 0 and patience >= 1, got "
                            f"{self.distill_weight}, {self.temperature}, {self.patience}")


def kl_to_teacher(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(teacher_T || model_T)`` of the softened outputs, mean over the batch: the distillation term."""
    return F.kl_div(F.log_softmax(logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                    log_target=True, reduction="batchmean") * temperature**2


def blended_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, temperature: float,
                 weight: float) -> torch.Tensor:
    """``(1 - weight) * CE(logits, y) + weight * T^2 * KL(teacher_T || student_T)``: the distillation objective."""
    return (1 - weight) * F.cross_entropy(logits, y) + weight * kl_to_teacher(logits, teacher_logits, temperature)


def distillation_loss(teacher: nn.Module, temperature: float, weight: float) -> LossFn:
    """The distillation objective with the teacher run frozen on each batch (for augmented batches)."""
    teacher.eval()

    def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x)  # (B, classes)
        return blended_loss(logits, teacher_logits, y, temperature, weight)

    return loss


def looked_up_distillation_loss(labels: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                                weight: float) -> LossFn:
    """The distillation objective on batches whose ``y`` holds sample positions: labels and the teacher's logits
    looked up there, not recomputed (the teacher's forward pass is a fifth of a fine-tune's time otherwise)."""

    def loss(logits: torch.Tensor, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        index = positions.cpu()
        return blended_loss(logits, teacher_logits[index].to(logits.device), labels[index].to(logits.device),
                            temperature, weight)

    return loss


def logits_of(model: nn.Module, x: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """``model``'s logits on every sample of ``x``, in eval mode, on the CPU."""
    was_training = model.training
    model.eval()
    device = device_of(model)
    batch_size = inference_batch_size(device)
    try:
        with torch_threads(threads), torch.inference_mode():
            return torch.cat([model(x[i : i + batch_size].to(device)).float().cpu()
                              for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def augments(recipe: TrainConfig) -> bool:
    """Whether ``recipe`` changes the training images from one epoch to the next (crops, flips, mixing)."""
    return recipe.crop != "none" or recipe.flip or recipe.mixup > 0 or recipe.cutmix > 0


TeacherCache = dict[tuple[int, int, int, int | None], torch.Tensor]
"""The teacher's logits on a fine-tune's training subset, by (teacher, training split, seed, subset size)."""


@dataclass
class FineTuneReport:
    """What a fine-tune did: epochs run, validation accuracy after each, the epoch whose weights were kept."""

    epochs: int
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = 0
    distilled: bool = False
    gave_up: bool = False  # stopped early below ``give_up_below``

    def to_json(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "val_accuracy": self.val_accuracy, "best_epoch": self.best_epoch,
                "distilled": self.distilled, "gave_up": self.gave_up}


def fine_tune(
    model: nn.Module,
    dataset: Dataset,
    recipe: TrainConfig,
    config: FineTuneConfig,
    teacher: nn.Module | None = None,
    on_epoch: Any = None,
    give_up_below: float | None = None,
    cache: TeacherCache | None = None,
) -> FineTuneReport:
    """Fine-tune ``model`` in place for at most ``recipe.epochs``, distilled from ``teacher``, early-stopped.

    ``on_epoch(epoch, epochs, val_accuracy)`` after each epoch (progress); an epoch whose validation accuracy is
    below ``give_up_below`` ends the fine-tune; the teacher's logits are kept in ``cache`` for the next fine-tune.
    """
    if recipe.epochs == 0:
        return FineTuneReport(0)
    generator = torch.Generator().manual_seed(recipe.seed)
    subset = sample_dataset(dataset, config.train_samples, config.val_samples, generator)
    distilled = teacher is not None and config.distill_weight > 0
    loss = None
    if distilled and augments(recipe):
        loss = distillation_loss(teacher, config.temperature, config.distill_weight)
    elif distilled:
        key = (id(teacher), id(dataset.train), recipe.seed, config.train_samples)
        cached = cache.get(key) if cache is not None else None
        if cached is None:
            cached = logits_of(teacher, subset.train.x, recipe.threads)
            if cache is not None:
                cache[key] = cached
        loss = looked_up_distillation_loss(subset.train.y, cached, config.temperature, config.distill_weight)
        subset = replace(subset, train=Split(subset.train.x, torch.arange(len(subset.train))))
    report = FineTuneReport(0, distilled=distilled)
    best: dict[str, torch.Tensor] | None = None
    best_accuracy = -1.0

    def after_epoch(epoch: int, _loss: float) -> bool:
        nonlocal best, best_accuracy
        accuracy = evaluate_accuracy(model, subset.val)
        report.epochs, report.val_accuracy = epoch, [*report.val_accuracy, accuracy]
        if on_epoch is not None:
            on_epoch(epoch, recipe.epochs, accuracy)
        if accuracy > best_accuracy + config.min_delta or best is None:
            best, best_accuracy, report.best_epoch = copy.deepcopy(model.state_dict()), accuracy, epoch
        model.train()
        report.gave_up = give_up_below is not None and accuracy < give_up_below and epoch < recipe.epochs
        return epoch - report.best_epoch >= config.patience or report.gave_up

    train(model, subset, recipe, on_epoch=after_epoch, loss=loss)
    if best is not None:
        model.load_state_dict(best)
    return report
