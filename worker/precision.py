"""Per-slot precision in deployment: the slots an architecture marks ``int8`` run as static int8 QDQ in
ONNX Runtime (per-channel weights, activations calibrated on training images), the others stay fp32.

The ONNX exporter records each node's module path (``slots.<slot>...``), which
maps the convolutions and matrix products of the graph back to their slots.
"""

from __future__ import annotations

import onnx
from torch import nn

from archetype.errors import SpecError
from archetype.runtime.data import Split
from archetype.runtime.measure import Latency
from archetype.runtime.onnx_export import export_onnx_bytes
from archetype.runtime.quantization import QUANTIZED_OPS, accuracy_of, quantize_onnx_static
from archetype.runtime.targets import OnnxRuntimeCpuTarget, Target, example_input
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.network import module_name

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
LATENCY_CALIBRATION = 16
"""Calibration images before training, when only the int8 kernels' latency matters, not their scales."""
ACCURACY_CALIBRATION = 256


def check_precision_target(arch: Architecture, target: Target) -> None:
    """SpecError unless ``target`` can run ``arch``'s int8 slots beside its fp32 ones."""
    if arch.int8_slots() and type(target) is not OnnxRuntimeCpuTarget:
        raise SpecError(
            f"slots {arch.int8_slots()} are int8: a per-slot precision is measured on target 'cpu-ort', "
            f"not {target.name!r}"
        )


def quantizable_nodes_by_slot(onnx_model: bytes) -> dict[str, list[str]]:
    """Module name of each slot -> the names of its convolutions and matrix products."""
    by_slot: dict[str, list[str]] = {}
    for node in onnx.load_from_string(onnx_model).graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        scopes = next((p.value for p in node.metadata_props if p.key == NAME_SCOPES), "")
        slot = next((s.removeprefix("slots.") for s in _scopes(scopes) if s.startswith("slots.")), "")
        by_slot.setdefault(slot.split(".")[0], []).append(node.name)
    return by_slot


def quantize_slots(onnx_fp32: bytes, arch: Architecture, calibration: Split, samples: int) -> bytes:
    """``onnx_fp32`` with the nodes of ``arch``'s int8 slots quantized; the rest are left fp32."""
    int8 = {module_name(slot) for slot in arch.int8_slots()}
    if not int8:
        return onnx_fp32
    by_slot = quantizable_nodes_by_slot(onnx_fp32)
    exclude = [name for slot, names in by_slot.items() if slot not in int8 for name in names]
    return quantize_onnx_static(onnx_fp32, calibration.x, samples=samples, exclude=exclude)


def mixed_latency(model: nn.Module, arch: Architecture, target: OnnxRuntimeCpuTarget, calibration: Split) -> Latency:
    """The latency of ``model`` with ``arch``'s int8 slots quantized (scales need not be trained for this)."""
    int8 = quantize_slots(export_onnx_bytes(model, example_input(arch.input)), arch, calibration, LATENCY_CALIBRATION)
    return target.measure_onnx(int8, arch.input)


def mixed_accuracy(model: nn.Module, arch: Architecture, calibration: Split, *splits: Split) -> list[float]:
    """Top-1 accuracy on each of ``splits`` of the trained ``model`` with ``arch``'s int8 slots quantized."""
    int8 = quantize_slots(export_onnx_bytes(model, example_input(arch.input)), arch, calibration, ACCURACY_CALIBRATION)
    return [accuracy_of(int8, split) for split in splits]


def _scopes(value: str) -> list[str]:
    """The module paths the exporter wrote, a Python list literal of strings."""
    import ast

    try:
        parsed = ast.literal_eval(value) if value else []
    except (ValueError, SyntaxError):
        return []
    return [str(s) for s in parsed] if isinstance(parsed, list) else []
