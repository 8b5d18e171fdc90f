"""Hardware/runtime targets: where a model's batch-1 latency is measured, always with the one protocol."""

from __future__ import annotations

import functools
import platform
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from archetype.compress.onnx_export import export_onnx
from archetype.errors import SpecError
from archetype.searchspace.types import TensorType
from archetype.worker.measure import Latency, MeasureProtocol
from archetype.worker.training import torch_threads

_TARGETS: dict[str, type[Target]] = {}
TargetClass = TypeVar("TargetClass", bound="type[Target]")


class Target(ABC):
    """A named runtime on this machine that measures a model with ``protocol`` on ``threads`` threads."""

    name: ClassVar[str]
    runtime: ClassVar[str]  # the inference runtime's distribution name, e.g. "onnxruntime"

    def __init__(self, threads: int = 1, protocol: MeasureProtocol | None = None) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise SpecError(f"target {self.name!r}: threads must be a positive integer, got {threads!r}")
        self.threads = threads
        self.protocol = protocol or MeasureProtocol()

    @abstractmethod
    def measure(self, model: nn.Module, input_type: TensorType) -> Latency:
        """The latency of one forward pass of ``model`` on a batch of one ``input_type``."""

    def fingerprint(self) -> dict[str, str]:
        """The device and software versions a latency depends on, as strings."""
        return {
            **_machine_fingerprint(),
            "target": self.name,
            "runtime": self.runtime,
            "threads": str(self.threads),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={self.threads})"


def register_target(name: str) -> Callable[[TargetClass], TargetClass]:
    """Register a ``Target`` subclass under ``name`` (also set as its ``name``)."""

    def decorate(cls: TargetClass) -> TargetClass:
        cls.name = name
        _TARGETS[name] = cls
        return cls

    return decorate


def list_targets() -> list[str]:
    return sorted(_TARGETS)


def get_target(name: str, **options: Any) -> Target:
    """A fresh target by name; ``options`` go to its constructor (``threads``, ``protocol``)."""
    cls = _TARGETS.get(name)
    if cls is None:
        raise SpecError(f"unknown target {name!r}; known: {', '.join(list_targets())}")
    try:
        return cls(**options)
    except TypeError as exc:
        raise SpecError(f"target {name!r}: bad options {sorted(options)}: {exc}") from None


def example_input(input_type: TensorType, seed: int = 0) -> torch.Tensor:
    """A fixed random batch of one ``input_type``, the input every target times."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(input_type.shape(batch=1), generator=generator)


@register_target("cpu-ort")
class OnnxRuntimeCpuTarget(Target):
    """ONNX Runtime's CPU execution provider: full graph optimisation, sequential, ``threads`` intra-op threads."""

    runtime = "onnxruntime"

    def measure(self, model: nn.Module, input_type: TensorType) -> Latency:
        with tempfile.TemporaryDirectory(prefix="archetype-ort-") as folder:
            path = export_onnx(model, example_input(input_type), Path(folder) / "model.onnx")
            return self.measure_onnx(path.read_bytes(), input_type)

    def measure_onnx(self, onnx_model: bytes, input_type: TensorType) -> Latency:
        """The latency of an ONNX model (serialised bytes) on a batch of one ``input_type``."""
        import onnxruntime as ort

        example = example_input(input_type)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: example.numpy()}
        return self.protocol.measure(lambda: session.run(None, feed))


@register_target("cpu-torch")
class TorchCpuTarget(Target):
    """PyTorch eager mode on the CPU, eval mode under ``torch.inference_mode``, ``threads`` intra-op threads."""

    runtime = "torch"

    def measure(self, model: nn.Module, input_type: TensorType) -> Latency:
        example = example_input(input_type)
        was_training = model.training
        model.eval()
        try:
            with torch_threads(self.threads), torch.inference_mode():
                return self.protocol.measure(lambda: model(example))
        finally:
            model.train(was_training)


@functools.cache
def _machine_fingerprint() -> dict[str, str]:
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "numpy": np.__version__,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"
