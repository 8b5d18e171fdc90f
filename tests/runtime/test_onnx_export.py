"""ONNX export: the file matches PyTorch in ONNX Runtime, appears whole or not at all, and failures are one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from archetype.errors import ArchetypeError
from archetype.runtime.onnx_export import ExportError, export_onnx


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )  # (B, 3, 12, 12) -> (B, 5)


class RaisesInForward(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("cannot run on this input")


class DataDependentBranch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


class RandomOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rand_like(x)


def test_round_trip_matches_pytorch_and_replaces_the_file_whole(tmp_path):
    model = _convnet().train()
    example = torch.randn(1, 3, 12, 12)
    (tmp_path / "model.onnx").write_bytes(b"an older export")
    path = export_onnx(model, example, tmp_path / "model.onnx")
    assert path == tmp_path / "model.onnx"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"], "no temporary or external data file left"
    assert model.training, "export restores the training mode"

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert all(not init.external_data for init in proto.graph.initializer)

    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 12, 12)
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.inference_mode():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (RaisesInForward(), r"cannot export RaisesInForward to ONNX: RuntimeError: cannot run on this input"),
        (DataDependentBranch(), r"cannot export DataDependentBranch to ONNX: \w+"),
        (RandomOutput(), r"ONNX output 0 differs from PyTorch: max abs difference [0-9.e+-]+ \(atol"),
    ],
)
def test_failures_raise_a_one_line_export_error_and_write_nothing(tmp_path, module, message):
    with pytest.raises(ExportError, match=message) as raised:
        export_onnx(module, torch.randn(1, 4, 4), tmp_path / "model.onnx")
    assert isinstance(raised.value, ArchetypeError)
    assert "\n" not in str(raised.value)
    assert list(tmp_path.iterdir()) == [], "a failed export leaves no file behind"


def test_the_timing_export_computes_what_pytorch_computes_at_batch_one() -> None:
    import onnxruntime as ort

    from archetype.runtime.onnx_export import export_onnx_for_timing

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).train()
    example = torch.randn(5, 1, 6, 6)
    graph = export_onnx_for_timing(model, example)
    assert model.training  # the caller's mode is restored
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == 1  # a batch of one: what the targets time
    (got,) = session.run(None, {session.get_inputs()[0].name: example[:1].numpy()})
    with torch.inference_mode():
        want = model.eval()(example[:1]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
