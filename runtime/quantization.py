"""The one INT8 recipe: ONNX Runtime static quantization in QDQ format, per-channel int8 weights, uint8
activations calibrated on the inputs the caller passes (real training images wherever there are some).

Compression, per-slot precision and the ``cpu-ort-int8`` latency target all quantize through
``quantize_onnx_static``, so a latency measured on the target is the latency of the graph they deploy.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archetype.runtime.data import Split

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
"""The node types static quantization turns int8 (convolutions and matrix products)."""

RECIPE = "static int8 QDQ, per-channel int8 weights, uint8 activations"
"""The recipe in words, as a target's fingerprint carries it (a different recipe is a different device key)."""

CHUNK_ROWS = 256
"""Rows per session run when a model's batch dimension is free."""


def quantizable_nodes(onnx_model: bytes) -> list[str]:
    """The names of the nodes static quantization turns int8 (convolutions and matrix products)."""
    import onnx

    return [n.name for n in onnx.load_from_string(onnx_model).graph.node if n.op_type in QUANTIZED_OPS]


def quantize_onnx_static(
    onnx_model: bytes,
    calibration: torch.Tensor,
    *,
    samples: int = 256,
    exclude: Sequence[str] = (),
    per_channel: bool = True,
) -> bytes:
    """``onnx_model`` quantized by the recipe, its activation ranges taken from the first ``samples`` rows of
    ``calibration`` (network inputs, one row per sample); the nodes named in ``exclude`` stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = onnx.load_from_string(onnx_model).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="archetype-int8-") as folder:
        fp32, prepared, int8 = (Path(folder) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(onnx_model)
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing only helps; quantize the export as it is
            prepared = fp32
        quantize_static(
            str(prepared), str(int8), _calibration_reader(calibration[:samples], input_name),
            quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
        )
        return int8.read_bytes()


def _calibration_reader(inputs: torch.Tensor, input_name: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class InputsReader(CalibrationDataReader):
        """The calibration inputs, one at a time, for the activation ranges."""

        def __init__(self) -> None:
            self._rows: Iterator[torch.Tensor] = iter(inputs.split(1))

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self._rows, None)
            return None if row is None else {input_name: row.numpy()}

    return InputsReader()


def cpu_session(onnx_model: bytes) -> Any:
    """An ONNX Runtime session of ``onnx_model`` on the CPU, one thread, logging errors only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


def session_outputs(session: Any, x: torch.Tensor) -> torch.Tensor:
    """The first output of ``session`` on a batch ``x`` of any size (run a row at a time when the batch is fixed)."""
    first = session.get_inputs()[0]
    rows = 1 if first.shape[0] == 1 else CHUNK_ROWS
    chunks = [session.run(None, {first.name: x[i : i + rows].detach().numpy()})[0] for i in range(0, len(x), rows)]
    return torch.from_numpy(np.concatenate(chunks))


def accuracy_of(onnx_model: bytes, split: Split) -> float:
    """Top-1 accuracy of an ONNX classifier on ``split``, run in ONNX Runtime."""
    with torch.inference_mode():
        return float((session_outputs(cpu_session(onnx_model), split.x).argmax(1) == split.y).float().mean())
