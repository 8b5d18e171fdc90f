"""INT8 quantization: the runtime's static QDQ recipe (calibrated on real images) in ONNX Runtime, and PyTorch PT2E.

The mixed-precision policy keeps in fp32 the layers whose quantization costs
the most accuracy, one at a time, until the accuracy is within the allowed drop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archetype.compress.step import (
    CompressionContext,
    DeployedModel,
    StepReport,
    count_params_and_macs,
    register_step,
)
from archetype.errors import ArchetypeError, SpecError
from archetype.result import megabytes
from archetype.runtime.data import Split
from archetype.runtime.onnx_export import export_onnx_bytes
from archetype.runtime.quantization import (
    accuracy_of,
    cpu_session,
    quantizable_nodes,
    quantize_onnx_static,
    session_outputs,
)
from archetype.runtime.targets import OnnxRuntimeCpuTarget, Target
from archetype.searchspace.types import TensorType


class OrtInt8Model(DeployedModel):
    """An int8 ONNX model that runs in ONNX Runtime; forward takes and returns torch tensors (batch of any size)."""

    def __init__(
        self,
        onnx_model: bytes,
        fp32_model: nn.Module | None = None,
        params: int = 0,
        macs: int = 0,
        fp32_layers: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.onnx_model = onnx_model
        self.fp32_model = fp32_model  # the PyTorch module it was quantized from
        self.params, self.macs = params, macs
        self.fp32_layers = list(fp32_layers)
        self._session = cpu_session(onnx_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return session_outputs(self._session, x)

    def deployed_size_mb(self) -> float:
        return megabytes(len(self.onnx_model))

    def measure_on(self, target: Target, input_type: TensorType) -> tuple[float, float]:
        if not isinstance(target, OnnxRuntimeCpuTarget):
            raise SpecError(f"an ONNX Runtime int8 model is measured on cpu-ort, not {target.name}")
        latency = target.measure_onnx(self.onnx_model, input_type)
        return latency.median_ms, latency.spread

    def runner_on(self, target: Target, input_type: TensorType) -> Callable[[], object]:
        if not isinstance(target, OnnxRuntimeCpuTarget):
            raise SpecError(f"an ONNX Runtime int8 model runs on cpu-ort, not {target.name}")
        return target.onnx_runner(self.onnx_model, input_type)

    def counts(self) -> tuple[int, int]:
        return self.params, self.macs

    def save_deployment(self, folder: Path, example: torch.Tensor) -> list[str]:
        (folder / "model.onnx").write_bytes(self.onnx_model)
        return ["model.onnx"]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_session", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session = cpu_session(self.onnx_model)


class OnnxSourceModel(OrtInt8Model):
    """An fp32 ONNX classifier handed to ``compress`` as the source: it runs in ONNX Runtime and only the ONNX steps
    (quantize) apply to it; its MACs are not counted."""


@dataclass(frozen=True)
class QuantizationConfig:
    """How the quantize step calibrates and which layers it may keep in fp32."""

    calibration_samples: int = 256
    per_channel: bool = True
    max_fp32_layers: int = 4  # the mixed-precision policy keeps at most this many layers fp32
    sensitivity_layers: int = 32  # layers whose sensitivity is measured (the first ones)


@dataclass(frozen=True)
class MixedPrecision:
    """The chosen int8 model, the layers kept fp32, and the accuracies that chose them."""

    onnx_model: bytes
    fp32_layers: list[str]
    accuracy: float
    fp32_accuracy: float
    sensitivity: dict[str, float]


def mixed_precision_policy(
    onnx_fp32: bytes, calibration: Split, validation: Split, max_drop: float, config: QuantizationConfig
) -> MixedPrecision:
    """Quantize everything; while validation accuracy is more than ``max_drop`` (a fraction) below fp32, keep fp32
    the next most sensitive layer (the one whose quantization alone costs the most accuracy, measured)."""

    def quantize(exclude: Sequence[str] = ()) -> bytes:
        return quantize_onnx_static(onnx_fp32, calibration.x, samples=config.calibration_samples, exclude=exclude,
                                    per_channel=config.per_channel)

    fp32_accuracy = accuracy_of(onnx_fp32, validation)
    min_accuracy = fp32_accuracy - max_drop
    int8 = quantize()
    accuracy = accuracy_of(int8, validation)
    kept: list[str] = []
    sensitivity: dict[str, float] = {}
    if accuracy < min_accuracy and config.max_fp32_layers > 0:
        nodes = quantizable_nodes(onnx_fp32)[: config.sensitivity_layers]
        for node in nodes:  # the accuracy lost by quantizing this node alone
            sensitivity[node] = fp32_accuracy - accuracy_of(quantize([n for n in nodes if n != node]), validation)
        for node in sorted(sensitivity, key=sensitivity.__getitem__, reverse=True)[: config.max_fp32_layers]:
            kept.append(node)
            int8 = quantize(kept)
            accuracy = accuracy_of(int8, validation)
            if accuracy >= min_accuracy:
                break
    return MixedPrecision(int8, kept, accuracy, fp32_accuracy, sensitivity)


@register_step("quantize")
def quantize_step(model: nn.Module, context: CompressionContext) -> tuple[nn.Module, StepReport]:
    """INT8: ONNX Runtime static QDQ on cpu-ort, PT2E (torchao, x86 inductor) on cpu-torch; mixed precision."""
    config = context.config("quantize", QuantizationConfig())
    if isinstance(model, OnnxSourceModel):
        return _quantize_onnx_source(model, context, config)
    if isinstance(model, DeployedModel):
        return model, StepReport("quantize", message="the model is already quantized")
    example = context.example()
    if not isinstance(context.target, OnnxRuntimeCpuTarget):
        from archetype.compress.pt2e import quantize_pt2e

        quantized = quantize_pt2e(model, context.dataset.train, example, config.calibration_samples)
        return quantized, StepReport("quantize", {"flow": "pt2e"}, "int8 by PT2E (X86InductorQuantizer)")
    quantized, details = quantize_module(model, context, context.budget.max_accuracy_drop / 100, config)
    kept = f", {len(quantized.fp32_layers)} layers kept fp32" if quantized.fp32_layers else ""
    return quantized, StepReport("quantize", details, f"int8 QDQ, per-channel weights{kept}; "
                                 f"top-1 agrees with PyTorch on {details['top1_agreement']:.1%}")


def quantize_module(
    model: nn.Module, context: CompressionContext, max_drop: float, config: QuantizationConfig
) -> tuple[OrtInt8Model, dict[str, Any]]:
    """``model`` in int8 by the one recipe on cpu-ort, layers kept fp32 while validation accuracy is more than
    ``max_drop`` (a fraction) below the module's; its details. ArchetypeError if it disagrees with PyTorch."""
    example = context.example()
    onnx_fp32 = export_onnx_bytes(model, example, dynamic_batch=True)  # the int8 file keeps a free batch
    policy = mixed_precision_policy(onnx_fp32, context.dataset.train, context.dataset.val, max_drop, config)
    agreement = _top1_agreement(model, policy.onnx_model, context.dataset.val.x[:256])
    if agreement < 0.9:
        raise ArchetypeError(f"the int8 model agrees with PyTorch on only {agreement:.0%} of validation samples")
    params, macs = count_params_and_macs(model, example)
    quantized = OrtInt8Model(policy.onnx_model, model, params, macs, policy.fp32_layers)
    details = {"flow": "onnxruntime-qdq", "per_channel": config.per_channel, "fp32_layers": policy.fp32_layers,
               "val_accuracy_int8": policy.accuracy, "val_accuracy_fp32": policy.fp32_accuracy,
               "top1_agreement": agreement, "sensitivity": policy.sensitivity}
    return quantized, details


def _quantize_onnx_source(
    model: OnnxSourceModel, context: CompressionContext, config: QuantizationConfig
) -> tuple[nn.Module, StepReport]:
    """The quantize step on an ONNX graph: the same static QDQ and mixed-precision policy, with no PyTorch module."""
    if not isinstance(context.target, OnnxRuntimeCpuTarget):
        raise SpecError(f"an ONNX model is quantized and measured on cpu-ort, not {context.target.name}")
    policy = mixed_precision_policy(model.onnx_model, context.dataset.train, context.dataset.val,
                                    context.budget.max_accuracy_drop / 100, config)
    agreement = _top1_agreement(model, policy.onnx_model, context.dataset.val.x[:256])
    if agreement < 0.9:
        raise ArchetypeError(f"the int8 model agrees with the fp32 ONNX model on only {agreement:.0%} of validation "
                             f"samples")
    quantized = OrtInt8Model(policy.onnx_model, None, model.params, model.macs, policy.fp32_layers)
    details = {"flow": "onnxruntime-qdq", "source": "onnx", "per_channel": config.per_channel,
               "fp32_layers": policy.fp32_layers, "val_accuracy_int8": policy.accuracy,
               "val_accuracy_fp32": policy.fp32_accuracy, "top1_agreement": agreement}
    return quantized, StepReport("quantize", details, f"int8 QDQ of the ONNX graph; top-1 agrees with fp32 on "
                                 f"{agreement:.1%}")


def _top1_agreement(model: nn.Module, onnx_model: bytes, x: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        expected = model(x).argmax(1)
    return float((OrtInt8Model(onnx_model)(x).argmax(1) == expected).float().mean())
