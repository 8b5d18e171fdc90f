"""Hardware/runtime targets: where a model's batch-1 latency is measured, always with the one protocol."""

from __future__ import annotations

import copy
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

from archetype.errors import SpecError
from archetype.registry import Registry
from archetype.runtime.measure import Latency, MeasureProtocol, SideBySide
from archetype.runtime.onnx_export import export_onnx
from archetype.runtime.quantization import RECIPE, quantize_onnx_static
from archetype.runtime.training import torch_threads
from archetype.searchspace.types import TensorType

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

    def runner(self, model: nn.Module, input_type: TensorType) -> Callable[[], object]:
        """One forward pass of ``model`` as this target runs it, ready to be timed (the model left in eval mode)."""
        raise SpecError(f"target {self.name!r} cannot time two models side by side")

    def compare(self, first: Callable[[], object], second: Callable[[], object], rounds: int = 15) -> SideBySide:
        """Two runners (from ``runner``) timed in alternating blocks by the protocol, on this target's threads."""
        with torch_threads(self.threads), torch.inference_mode():
            return self.protocol.side_by_side(first, second, rounds)

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


TARGETS: Registry[type[Target]] = Registry("target")
"""Every target class by name (``--target``)."""


def register_target(name: str) -> Callable[[TargetClass], TargetClass]:
    """Register a ``Target`` subclass under ``name`` (also set as its ``name``)."""
    return TARGETS.register_named(name)


def list_targets() -> list[str]:
    return TARGETS.names()


def usable_targets() -> list[str]:
    """The registered targets this machine can measure on (a CUDA target needs a CUDA device)."""
    usable = []
    for name in list_targets():
        try:
            get_target(name)
        except SpecError:
            continue
        usable.append(name)
    return usable


def get_target(name: str, **options: Any) -> Target:
    """A fresh target by name; ``options`` go to its constructor (``threads``, ``protocol``)."""
    cls = TARGETS.get(name)
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
    provider: ClassVar[str] = "CPUExecutionProvider"

    def __init__(self, threads: int = 1, protocol: MeasureProtocol | None = None) -> None:
        super().__init__(threads, protocol)
        available = _onnxruntime().get_available_providers()
        if self.provider not in available:
            raise SpecError(
                f"target {self.name!r} needs ONNX Runtime's {self.provider}, which this installation lacks "
                f"(it has {', '.join(available)}); install onnxruntime-gpu on a machine with a CUDA device"
            )

    def measure(self, model: nn.Module, input_type: TensorType) -> Latency:
        return self.protocol.measure(self.runner(model, input_type))

    def runner(self, model: nn.Module, input_type: TensorType) -> Callable[[], object]:
        with tempfile.TemporaryDirectory(prefix="archetype-ort-") as folder:
            path = export_onnx(model, example_input(input_type), Path(folder) / "model.onnx")
            path = self.prepare(path, input_type)
            return self.onnx_runner(path.read_bytes(), input_type)

    def measure_onnx(self, onnx_model: bytes, input_type: TensorType) -> Latency:
        """The latency of an ONNX model (serialised bytes, run as it is) on a batch of one ``input_type``."""
        return self.protocol.measure(self.onnx_runner(onnx_model, input_type))

    def onnx_runner(self, onnx_model: bytes, input_type: TensorType) -> Callable[[], object]:
        """One session run of an ONNX model (serialised bytes) on a batch of one ``input_type``."""
        ort = _onnxruntime()
        example = example_input(input_type)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        session = ort.InferenceSession(onnx_model, options, providers=[self.provider])
        feed = {session.get_inputs()[0].name: example.numpy()}
        return lambda: session.run(None, feed)

    def prepare(self, path: Path, input_type: TensorType) -> Path:
        """The ONNX file the session runs, made from the exported ``path`` (as it is here)."""
        return path


@register_target("cpu-ort-int8")
class OnnxRuntimeInt8CpuTarget(OnnxRuntimeCpuTarget):
    """ONNX Runtime on the CPU after the one INT8 recipe (``runtime.quantization``), calibrated on
    ``synthetic_calibration``: a target has no data, so its activation scales come from noise."""

    CALIBRATION_SAMPLES: ClassVar[int] = 8

    def prepare(self, path: Path, input_type: TensorType) -> Path:
        quantized = path.with_name("model.int8.onnx")
        calibration = synthetic_calibration(input_type, self.CALIBRATION_SAMPLES)
        quantized.write_bytes(quantize_onnx_static(path.read_bytes(), calibration, samples=len(calibration)))
        return quantized

    def fingerprint(self) -> dict[str, str]:
        return {**super().fingerprint(), "quantization": RECIPE}


def synthetic_calibration(input_type: TensorType, samples: int) -> torch.Tensor:
    """``samples`` seeded noise inputs of ``input_type``: the calibration of a target, which has no real data.

    The quantized graph runs the same kernels whatever its scales, so a latency
    measured after it is right; an accuracy of it is not what real calibration reaches.
    """
    return torch.cat([example_input(input_type, seed=seed) for seed in range(1, samples + 1)])


@register_target("cuda-ort")
class OnnxRuntimeCudaTarget(OnnxRuntimeCpuTarget):
    """ONNX Runtime's CUDA execution provider (onnxruntime-gpu and a CUDA device); the input is copied in each run."""

    provider = "CUDAExecutionProvider"

    def fingerprint(self) -> dict[str, str]:
        return {**super().fingerprint(), "gpu": _gpu_name()}


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

    def runner(self, model: nn.Module, input_type: TensorType) -> Callable[[], object]:
        example = example_input(input_type)
        model.eval()
        return lambda: model(example)


@register_target("cuda-torch")
class TorchCudaTarget(Target):
    """PyTorch eager mode on the first CUDA device, eval mode; each run waits for the device to finish."""

    runtime = "torch"

    def __init__(self, threads: int = 1, protocol: MeasureProtocol | None = None) -> None:
        super().__init__(threads, protocol)
        if not torch.cuda.is_available():
            raise SpecError(
                f"target {self.name!r} needs a CUDA device, and torch {torch.__version__} sees none on this machine"
            )

    def measure(self, model: nn.Module, input_type: TensorType) -> Latency:
        device = torch.device("cuda")
        example = example_input(input_type).to(device)
        on_device = copy.deepcopy(model).to(device).eval()

        def run() -> None:
            on_device(example)
            torch.cuda.synchronize(device)

        with torch_threads(self.threads), torch.inference_mode():
            return self.protocol.measure(run)

    def fingerprint(self) -> dict[str, str]:
        return {**super().fingerprint(), "gpu": _gpu_name(), "cuda": str(torch.version.cuda)}


def _onnxruntime() -> Any:
    import onnxruntime

    return onnxruntime


def _gpu_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


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


def cpu_description() -> str:
    """The CPU's model and SIMD flags, printed beside every timing: figures from other CPUs are not comparable."""
    flags: list[str] = []
    try:
        line = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
        flags = line.partition(":")[2].split()
    except OSError:
        pass
    simd = sorted(flag for flag in flags if flag.startswith(("avx2", "avx512", "amx", "neon", "asimd")))
    return f"{_cpu_model()} ({' '.join(simd) or 'no SIMD flags read'})"


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"
