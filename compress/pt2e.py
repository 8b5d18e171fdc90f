"""INT8 for PyTorch deployment: the PT2E flow of torchao (X86InductorQuantizer), compiled by inductor with freezing.

torchao is the optional extra ``int8-torch``; it is imported only here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from archetype.compress.step import DeployedModel, count_params_and_macs
from archetype.errors import ArchetypeError, SpecError
from archetype.result import megabytes
from archetype.runtime.data import Split
from archetype.runtime.targets import Target, TorchCpuTarget
from archetype.searchspace.types import TensorType


class Pt2eInt8Model(DeployedModel):
    """A PT2E-quantized graph (quantize/dequantize around int8 ops) for batch-1 inputs, compiled by inductor."""

    def __init__(self, graph: nn.Module, fp32_model: nn.Module, compile_graph: bool = True) -> None:
        super().__init__()
        self.graph = graph
        self.fp32_model = fp32_model  # the PyTorch module it was quantized from
        self._compiled: object | None = None
        self.compile_graph = compile_graph
        self._example_shape: tuple[int, ...] = (1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compile_graph and self._compiled is None:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # constant-fold the int8 weights into the compiled kernels
            self._compiled = torch.compile(self.graph)
        run = self._compiled if self._compiled is not None else self.graph
        with torch.no_grad():  # the graph was exported for a batch of one
            return torch.cat([run(row) for row in x.split(1)])  # type: ignore[operator]

    def deployed_size_mb(self) -> float:
        """The int8 weights, fp32 biases and quantization parameters (the fp32 weights the graph still holds
        beside their int8 copies are never read once it is compiled with freezing)."""
        named = [*self.graph.named_parameters(), *self.graph.named_buffers()]
        used = [t for name, t in named if not (name.endswith("weight") and t.is_floating_point())]
        return megabytes(sum(t.numel() * t.element_size() for t in used))

    def measure_on(self, target: Target, input_type: TensorType) -> tuple[float, float]:
        if not isinstance(target, TorchCpuTarget):
            raise SpecError(f"a PT2E int8 model is measured on cpu-torch, not {target.name}")
        latency = target.measure(self, input_type)
        return latency.median_ms, latency.spread

    def runner_on(self, target: Target, input_type: TensorType) -> Callable[[], object]:
        if not isinstance(target, TorchCpuTarget):
            raise SpecError(f"a PT2E int8 model runs on cpu-torch, not {target.name}")
        return target.runner(self, input_type)

    def counts(self) -> tuple[int, int]:
        assert self.fp32_model is not None
        example = torch.zeros(self._example_shape)
        return count_params_and_macs(self.fp32_model, example)

    def save_deployment(self, folder: Path, example: torch.Tensor) -> list[str]:
        torch.export.save(torch.export.export(self.graph, (example,)), folder / "model_int8.pt2")
        return ["model_int8.pt2"]


def quantize_pt2e(
    model: nn.Module, calibration: Split, example: torch.Tensor, samples: int = 256, compile_graph: bool = True
) -> Pt2eInt8Model:
    """Export ``model``, insert X86InductorQuantizer observers, calibrate on real samples, convert to int8."""
    try:
        from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    except ImportError as exc:
        raise ArchetypeError(
            f"PT2E quantization needs torchao: pip install 'archetype-nas[int8-torch]' ({exc})"
        ) from None
    model = model.eval()
    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    exported = torch.export.export(model, (example,)).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in calibration.x[:samples].split(1):
            prepared(batch)
    converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    allow_exported_model_train_eval(converted)  # so that .eval() on the wrapper reaches it harmlessly
    quantized = Pt2eInt8Model(converted, model, compile_graph)
    quantized._example_shape = tuple(example.shape)
    return quantized
