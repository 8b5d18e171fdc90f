"""Where training runs: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``, and what that device supports."""

from __future__ import annotations

import math
import os
import re

import torch

from archetype.errors import SpecError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d{1,3})?)$")


def check_device_name(name: str, option: str = "--device") -> str:
    """``name`` if it is a device name at all (whether this machine has it is asked later, where training runs)."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise SpecError(f"{option} {name!r}: expected {DEVICE_CHOICES}")
    return name


def resolve_device(name: str = "auto", option: str = "--device") -> torch.device:
    """The torch device ``name`` stands for on this machine; SpecError naming ``option`` if it has no such device."""
    check_device_name(name, option)
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise SpecError(f"{option} {name}: this machine has no CUDA device (torch {torch.__version__}, {build})")
    index = int(name.partition(":")[2] or torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise SpecError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def autocast_dtype(device: torch.device) -> torch.dtype:
    """The mixed-precision dtype of ``device``: bfloat16 where it computes in it natively, else float16 (CUDA)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


MIN_STEPS_PER_EPOCH = 500
"""A short budget needs steps: one MNIST epoch at batch 512 left a ResNet-like net at 95.0%, at batch 64 at 98.0%."""


def inference_batch_size(device: torch.device) -> int:
    """Samples per forward pass when only scoring: 512 on CUDA; 32 on a CPU, where larger batches spill the
    activations out of cache (a small MobileNetV2 on MNIST: 0.65 ms a sample at 32, 2.5 ms at 512)."""
    return 512 if device.type == "cuda" else 32


def default_batch_size(device: torch.device, samples: int) -> int:
    """A batch that keeps ``device`` busy (512 on CUDA, 128 on a CPU) yet gives an epoch MIN_STEPS_PER_EPOCH steps."""
    busy = 512 if device.type == "cuda" else 128
    fits = 2 ** max(4, int(math.log2(max(1, samples // MIN_STEPS_PER_EPOCH))))
    return min(busy, fits)


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def cuda_present() -> bool:
    """Whether torch sees a CUDA device here."""
    return torch.cuda.is_available()
