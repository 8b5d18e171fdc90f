"""Shared pieces of the compression tests: tiny digits models and a deterministic latency target."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from archetype.compress.step import Budget, CompressionContext, count_params_and_macs
from archetype.runtime.data import Dataset, load_dataset
from archetype.runtime.measure import Latency
from archetype.runtime.targets import Target, example_input
from archetype.runtime.training import TrainConfig, train
from archetype.searchspace.types import TensorType


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


class InvertedResidual(nn.Module):
    """MobileNetV2's block as a user writes it: expand 1x1, depthwise 3x3, linear 1x1; a skip when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class UserMobileNetV2(nn.Module):
    """A small MobileNetV2 for 1-channel images, written as plain PyTorch."""

    def __init__(self, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6(inplace=True)),
            InvertedResidual(width, width, 1, 1), InvertedResidual(width, 2 * width, 2, 2),
            InvertedResidual(2 * width, 2 * width, 1, 2),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(2 * width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C)
        return self.classifier(x)


class BasicBlock(nn.Module):
    """ResNet's basic block as a user writes it: functional ReLU, a projection shortcut when the shape changes."""

    def __init__(self, inp: int, oup: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, oup, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(oup)
        self.conv2 = nn.Conv2d(oup, oup, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(oup)
        self.shortcut = nn.Sequential()
        if stride != 1 or inp != oup:
            self.shortcut = nn.Sequential(nn.Conv2d(inp, oup, 1, stride, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class UserResNet(nn.Module):
    """A small ResNet-18-style network (stem, two stages of basic blocks, the second strided)."""

    def __init__(self, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def user_vgg(classes: int = 10, width: int = 8) -> nn.Module:
    """A VGG-style nn.Sequential: conv-bn-relu pairs, max pooling between, a linear head."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes),
    )


USER_MODELS: dict[str, Callable[[], nn.Module]] = {
    "mobilenetv2": UserMobileNetV2, "resnet": UserResNet, "vgg": user_vgg,
}


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


@pytest.fixture
def user_models() -> dict[str, Callable[[], nn.Module]]:
    """Factories of small MobileNetV2-, ResNet- and VGG-style models written as plain PyTorch (1-channel input)."""
    return USER_MODELS
