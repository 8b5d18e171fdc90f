"""Training learns, is deterministic by seed, stops on a diverging loss and leaves torch's threads as it found them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from archetype.runtime.data import load_dataset
from archetype.runtime.training import TrainConfig, TrainingError, evaluate_accuracy, recalibrate_batch_norm, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def tiny_model(tiny_arch) -> Callable[[], nn.Module]:
    """Builds a freshly initialised copy of the tiny architecture, the same weights each time."""

    def build() -> nn.Module:
        torch.manual_seed(0)
        return tiny_arch.build()

    return build


def test_a_tiny_convnet_learns_digits_in_three_epochs(digits, tiny_model):
    model = tiny_model()
    epochs: list[int] = []
    report = train(model, digits, TrainConfig(epochs=3, seed=0), on_epoch=lambda epoch, loss: epochs.append(epoch))
    assert epochs == [1, 2, 3] and report.epochs == 3 and len(report.losses) == 3
    assert report.losses[-1] < report.losses[0]
    assert report.seconds > 0
    accuracy = evaluate_accuracy(model, digits.val)
    assert accuracy > 0.8, f"validation accuracy {accuracy:.3f} after 3 epochs"


def test_training_is_deterministic_by_seed(digits, tiny_model):
    runs = [train(tiny_model(), digits, TrainConfig(epochs=1, seed=seed)).losses for seed in (5, 5, 6)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_a_diverging_loss_raises_training_error_with_the_epoch(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # (B, 1, 8, 8) -> (B, 10)
    with pytest.raises(TrainingError, match=r"loss became (nan|inf) in epoch 1 of 2"):
        train(model, digits, TrainConfig(epochs=2, lr=1e30))


def test_threads_are_set_while_training_and_restored_after(digits, tiny_model):
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        during: list[int] = []

        def record_threads(epoch: int, loss: float) -> None:
            during.append(torch.get_num_threads())

        train(tiny_model(), digits, TrainConfig(epochs=1, threads=1), on_epoch=record_threads)
        assert during == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_evaluate_accuracy_restores_the_training_mode(digits, tiny_model):
    model = tiny_model().train()
    accuracy = evaluate_accuracy(model, digits.test, batch_size=100)
    assert 0.0 <= accuracy <= 1.0
    assert model.training


@pytest.mark.parametrize("field", [{"epochs": -1}, {"batch_size": 0}, {"lr": 0.0}, {"threads": 0}])
def test_train_config_refuses_impossible_settings(field):
    with pytest.raises(ValueError, match="invalid training config"):
        TrainConfig(**field)


def test_batch_norm_statistics_are_re_estimated_on_the_data_given() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)).eval()
    x = torch.randn(64, 1, 6, 6) * 2 + 1
    recalibrate_batch_norm(model, [x])
    with torch.no_grad():
        conv = model[0](x)
    assert not model.training
    torch.testing.assert_close(model[1].running_mean, conv.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(model[1].running_var, conv.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    assert model[1].momentum == 0.1  # the caller's momentum is put back
