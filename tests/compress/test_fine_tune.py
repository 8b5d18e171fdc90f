"""Fine-tuning after a step: distillation from the source, a subset per epoch, early stopping on validation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from archetype.compress.fine_tune import (
    FineTuneConfig,
    distillation_loss,
    fine_tune,
    logits_of,
    looked_up_distillation_loss,
)
from archetype.errors import SpecError
from archetype.runtime.training import TrainConfig, evaluate_accuracy


def test_distillation_follows_the_teacher_not_the_labels(digits, trained_conv_net) -> None:
    teacher = copy.deepcopy(trained_conv_net)
    head = teacher[-1]
    with torch.no_grad():  # the teacher calls class c what the labels call c - 1
        head.weight.copy_(head.weight.roll(1, 0))
        head.bias.copy_(head.bias.roll(1, 0))
    torch.manual_seed(1)
    student = copy.deepcopy(trained_conv_net)
    report = fine_tune(student, digits, TrainConfig(epochs=3, lr=3e-3), FineTuneConfig(distill_weight=1.0, patience=3,
                                                                                       val_samples=None), teacher)
    assert report.distilled and report.epochs == 3
    x = digits.test.x
    with torch.no_grad():
        agree_teacher = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean()
    assert agree_teacher > 0.8
    assert evaluate_accuracy(student, digits.test) < 0.3  # it learnt the teacher's shifted classes


def test_distillation_weight_zero_is_the_cross_entropy(trained_conv_net, digits) -> None:
    x, y = digits.train.x[:16], digits.train.y[:16]
    logits = torch.randn(16, 10)
    plain = distillation_loss(trained_conv_net, 4.0, 0.0)(logits, x, y)
    assert torch.allclose(plain, nn.functional.cross_entropy(logits, y))
    assert not torch.allclose(distillation_loss(trained_conv_net, 4.0, 0.5)(logits, x, y), plain)


def test_looked_up_teacher_logits_give_the_live_teachers_loss(trained_conv_net, digits) -> None:
    x, y = digits.train.x[:16], digits.train.y[:16]
    logits = torch.randn(16, 10)
    live = distillation_loss(trained_conv_net, 4.0, 0.6)(logits, x, y)
    positions = torch.tensor([3, 0, 7])  # a batch of three samples, by their positions in the split
    looked_up = looked_up_distillation_loss(y, logits_of(trained_conv_net, x), 4.0, 0.6)
    assert torch.allclose(looked_up(logits[positions], x[positions], positions),
                          distillation_loss(trained_conv_net, 4.0, 0.6)(logits[positions], x[positions], y[positions]))
    assert torch.allclose(looked_up(logits, x, torch.arange(16)), live, atol=1e-6)


def test_the_teacher_runs_once_per_cache_unless_the_recipe_augments(digits, trained_conv_net) -> None:
    teacher = copy.deepcopy(trained_conv_net)
    images: list[int] = []
    teacher.register_forward_hook(lambda module, inputs, output: images.append(len(inputs[0])))
    config = FineTuneConfig(train_samples=200, val_samples=100)
    cache: dict = {}
    students = [copy.deepcopy(trained_conv_net) for _ in range(3)]
    fine_tune(students[0], digits, TrainConfig(epochs=2, lr=1e-3), config, teacher, cache=cache)
    assert sum(images) == 200 and len(cache) == 1  # both epochs' 200 images looked up from one pass
    fine_tune(students[1], digits, TrainConfig(epochs=2, lr=1e-3), config, teacher, cache=cache)
    assert sum(images) == 200  # the second fine-tune ran no teacher
    fine_tune(students[2], digits, TrainConfig(epochs=2, lr=1e-3, crop="pad"), config, teacher, cache=cache)
    assert sum(images) == 600  # cropped images differ every epoch: the teacher sees each batch
    assert all(torch.equal(a, b) for a, b in zip(students[0].state_dict().values(),
                                                 students[1].state_dict().values()))  # the same seeded fine-tune


def test_early_stopping_keeps_the_best_epoch(digits, trained_conv_net) -> None:
    model = copy.deepcopy(trained_conv_net)
    config = FineTuneConfig(patience=1, min_delta=1.0, distill_weight=0.0, train_samples=256, val_samples=512)
    epochs: list[tuple[int, int, float]] = []
    report = fine_tune(model, digits, TrainConfig(epochs=6, lr=1e-2), config,
                       on_epoch=lambda e, n, a: epochs.append((e, n, a)))
    assert report.epochs == 2 and report.best_epoch == 1  # no gain of a whole 1.0: stops after one more epoch
    assert [(e, n) for e, n, _ in epochs] == [(1, 6), (2, 6)]
    generator = torch.Generator().manual_seed(0)  # the same validation subset fine_tune drew
    from archetype.runtime.data import sample_split

    sample_split(digits.train, 256, generator)
    val = sample_split(digits.val, 512, generator)
    assert evaluate_accuracy(model, val) == pytest.approx(report.val_accuracy[0])  # epoch 1's weights restored


def test_a_fine_tune_below_the_give_up_accuracy_stops_after_that_epoch(digits, trained_conv_net) -> None:
    config = FineTuneConfig(patience=5, distill_weight=0.0, train_samples=256, val_samples=256)
    recipe = TrainConfig(epochs=3, lr=1e-3)
    first = fine_tune(copy.deepcopy(trained_conv_net), digits, recipe, config)
    floor = max(first.val_accuracy) + 0.01  # above what any epoch reaches
    stopped = fine_tune(copy.deepcopy(trained_conv_net), digits, recipe, config, give_up_below=floor)
    assert (first.epochs, first.gave_up) == (3, False)
    assert (stopped.epochs, stopped.gave_up) == (1, True)
    assert stopped.val_accuracy == first.val_accuracy[:1]  # the same seeded epoch, then nothing more
    kept = fine_tune(copy.deepcopy(trained_conv_net), digits, recipe, config, give_up_below=min(first.val_accuracy))
    assert (kept.epochs, kept.gave_up) == (3, False)  # never below: every epoch runs
    assert stopped.to_json()["gave_up"] is True


def test_zero_epochs_change_nothing_and_bad_settings_are_refused(digits, trained_conv_net) -> None:
    model = copy.deepcopy(trained_conv_net)
    report = fine_tune(model, digits, TrainConfig(epochs=0), FineTuneConfig(), trained_conv_net)
    assert report.epochs == 0
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained_conv_net.state_dict().values()))
    with pytest.raises(SpecError, match="distill_weight"):
        FineTuneConfig(distill_weight=1.5)
