"""ONNX export: one self-contained ``.onnx`` file per model, checked against PyTorch in ONNX Runtime.

The exporter is torch's ``torch.export``-based one (the default since torch 2.9):
it handles the FFT and attention operators the search spaces use, and refuses
data-dependent control flow instead of silently tracing one branch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from archetype.errors import ArchetypeError

OPSET = 18
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ExportError(ArchetypeError):
    """A model cannot be exported to ONNX, or the export computes something else than PyTorch."""


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    dynamic_batch: bool = False,
) -> Path:
    """Write ``model`` (in eval mode, for inputs shaped like ``example``) to ``path`` whole or not at all.

    With ``verify`` the file is run in ONNX Runtime on ``example`` before it is
    moved into place; ExportError if any output differs beyond ``atol + rtol * |torch|``.
    With ``dynamic_batch`` the first dimension is left free (exported and checked at batch 2).
    """
    dynamic_shapes = None
    if dynamic_batch:
        example = torch.cat([example[:1], example[:1].flip(-1)])  # batch 2: torch.export fixes a dimension of 1
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temp = Path(temp_name)
    try:
        try:
            with quiet_torch():
                program = torch.onnx.export(
                    model, (example,), None, dynamo=True, opset_version=OPSET, external_data=False, verbose=False,
                    dynamic_shapes=dynamic_shapes,
                )
                program.save(temp, external_data=False)
        except Exception as exc:
            raise ExportError(f"cannot export {type(model).__name__} to ONNX: {_root_cause(exc)}") from exc
        if verify:
            with torch.inference_mode():
                expected = _flat_outputs(model(example))
            _check_outputs(temp, example, expected, atol, rtol)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
        model.train(was_training)
    return path


def export_onnx_bytes(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> bytes:
    """``export_onnx`` (verified) to a temporary file, read back: the serialised model."""
    with tempfile.TemporaryDirectory(prefix="archetype-onnx-") as folder:
        return export_onnx(model, example, Path(folder) / "model.onnx", dynamic_batch=dynamic_batch).read_bytes()


def export_onnx_for_timing(model: nn.Module, example: torch.Tensor) -> bytes:
    """A batch-of-one ONNX graph of ``model`` made for timing only, by the TorchScript tracer: some 20x faster than
    ``export_onnx`` and times the same on ONNX Runtime, for tables that time hundreds of variants of one model.
    Unverified and unfit for deployment (it traces one branch of any control flow): never written as a result."""
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with quiet_torch(), torch.inference_mode():
            torch.onnx.export(model, (example[:1],), buffer, dynamo=False, opset_version=OPSET)
    except Exception as exc:
        raise ExportError(f"cannot export {type(model).__name__} to ONNX: {_root_cause(exc)}") from exc
    finally:
        model.train(was_training)
    return buffer.getvalue()


def _check_outputs(
    onnx_path: Path, example: torch.Tensor, expected: list[np.ndarray], atol: float, rtol: float
) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: example.detach().cpu().numpy()}
        actual = session.run(None, feed)
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot run the exported model: {_one_line(exc)}") from exc
    if len(actual) != len(expected):
        raise ExportError(f"the ONNX model has {len(actual)} outputs, PyTorch {len(expected)}")
    for index, (got, want) in enumerate(zip(actual, expected)):
        if got.shape != want.shape:
            raise ExportError(f"ONNX output {index} has shape {got.shape}, PyTorch {want.shape}")
        got, want = got.astype(np.float64), want.astype(np.float64)
        diff = np.abs(got - want)
        both_nan = np.isnan(got) & np.isnan(want)
        if not np.all((diff <= atol + rtol * np.abs(want)) | both_nan):
            worst = np.where(both_nan, 0.0, np.nan_to_num(diff, nan=np.inf)).max()
            raise ExportError(
                f"ONNX output {index} differs from PyTorch: max abs difference {worst:.3g} "
                f"(atol {atol:g}, rtol {rtol:g})"
            )


def _flat_outputs(output: object) -> list[np.ndarray]:
    if isinstance(output, torch.Tensor):
        return [output.detach().cpu().numpy()]
    if isinstance(output, list | tuple):
        return [array for item in output for array in _flat_outputs(item)]
    raise ExportError(f"the model returns {type(output).__name__}; export needs tensors")


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Silence the exporter's progress lines, warnings and logged graph dumps."""
    torch_logger = logging.getLogger("torch")
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_logger.setLevel(level)


def _root_cause(exc: BaseException) -> str:
    """The innermost cause of an exporter error, as ``Type: first line``."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
