"""Shared pieces of the compression tests: tiny digits models and a deterministic latency target."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from archetype.compress.step import Budget, CompressionContext, count_params_and_macs
from archetype.searchspace.types import TensorType
from archetype.worker.data import Dataset, load_dataset
from archetype.worker.measure import Latency
from archetype.worker.targets import Target, example_input
from archetype.worker.training import TrainConfig, train


class MacsTarget(Target):
    """Latency = ``ms_per_mmac`` per million MACs + ``ms_per_layer`` per module with weights: exact and repeatable."""

    name = "macs"
    runtime = "none"

    def __init__(self, ms_per_mmac: float = 1.0, ms_per_layer: float = 0.01) -> None:
        super().__init__()
        self.ms_per_mmac, self.ms_per_layer = ms_per_mmac, ms_per_layer

    def measure(self, model: nn.Module, input_type: TensorType) -> Latency:
        _, macs = count_params_and_macs(model, example_input(input_type))
        layers = sum(any(True for _ in m.parameters(recurse=False)) for m in model.modules())
        return Latency(macs / 1e6 * self.ms_per_mmac + self.ms_per_layer * layers, 0.0, 1, 1)



def conv_net(width: int = 16, classes: int = 10) -> nn.Module:
    """A plain conv chain for 1x8x8 digits: three conv-bn-relu units (the last strided), a linear head."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, stride=2), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Flatten(), nn.Linear(width * 16, classes),
    )  # (B, 1, 8, 8) -> (B, classes)


def _save_pt2(model: nn.Module, path: Path, sample_shape: tuple[int, ...]) -> Path:
    """``model`` as users hand it over: ``torch.export.save`` of its program, with a dynamic batch."""
    example = torch.randn(2, *sample_shape)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, path)
    return path


@pytest.fixture
def save_pt2() -> Callable[[nn.Module, Path, tuple[int, ...]], Path]:
    """Writes a model to a ``.pt2`` file the way the README tells users to."""
    return _save_pt2


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def trained_conv_net(digits: Dataset) -> nn.Module:
    torch.manual_seed(0)
    model = conv_net()
    torch.set_num_threads(1)
    train(model, digits, TrainConfig(epochs=4, lr=3e-3))
    return model.eval()


@pytest.fixture
def macs_target() -> type[MacsTarget]:
    return MacsTarget


ContextFor = Callable[..., CompressionContext]


@pytest.fixture
def context_for(digits: Dataset) -> ContextFor:
    """``context_for(latency_ms, epochs, step=config...)``: a context on digits with the MACs target."""

    def make(
        latency_ms: float = 0.01, epochs: int = 1, drop: float = 5.0, target: Target | None = None, **settings: object
    ) -> CompressionContext:
        return CompressionContext(target or MacsTarget(), digits, Budget(latency_ms, max_accuracy_drop=drop),
                                  TrainConfig(epochs=epochs, lr=1e-3), dict(settings))

    return make


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
