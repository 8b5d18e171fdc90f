"""INT8 with ONNX Runtime: the QDQ model runs, agrees with fp32 on real digits, and the policy keeps layers fp32."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import pytest
import torch

from archetype.compress.quantization import OrtInt8Model, QuantizationConfig, mixed_precision_policy
from archetype.runtime.onnx_export import export_onnx
from archetype.runtime.quantization import accuracy_of, quantizable_nodes, quantize_onnx_static
from archetype.runtime.training import evaluate_accuracy


def _fp32_onnx(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return export_onnx(model, example, Path(folder) / "m.onnx").read_bytes()


def test_int8_model_runs_and_agrees_with_fp32_on_digits(digits, trained_conv_net) -> None:
    fp32 = _fp32_onnx(trained_conv_net, digits.train.x[:1])
    int8 = quantize_onnx_static(fp32, digits.train.x, samples=128)
    ops = {n.op_type for n in onnx.load_from_string(int8).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [t for t in onnx.load_from_string(int8).graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert any(len(t.dims) == 4 for t in weights)  # conv weights stored int8
    model = OrtInt8Model(int8)
    x = digits.test.x[:200]
    with torch.inference_mode():
        expected = trained_conv_net(x)
        got = model(x)
    assert got.shape == expected.shape
    agreement = float((got.argmax(1) == expected.argmax(1)).float().mean())
    assert agreement >= 0.95
    assert abs(accuracy_of(int8, digits.test) - evaluate_accuracy(trained_conv_net, digits.test)) < 0.03
    assert len(int8) < 0.6 * len(fp32)


def test_mixed_precision_keeps_the_most_sensitive_layers_fp32(digits, trained_conv_net) -> None:
    fp32 = _fp32_onnx(trained_conv_net, digits.train.x[:1])
    nodes = quantizable_nodes(fp32)
    assert len(nodes) == 4  # three convs and the linear head
    val = digits.val
    config = QuantizationConfig(calibration_samples=64, max_fp32_layers=2)
    policy = mixed_precision_policy(fp32, digits.train, val, max_drop=-0.5, config=config)  # unreachable
    assert set(policy.sensitivity) == set(nodes)  # unreachable target: every layer is measured
    ranked = sorted(policy.sensitivity, key=policy.sensitivity.__getitem__, reverse=True)
    assert policy.fp32_layers == ranked[:2]
    kept = {n.name for n in onnx.load_from_string(policy.onnx_model).graph.node if n.op_type in ("Conv", "Gemm")}
    assert set(policy.fp32_layers) <= kept
    relaxed = mixed_precision_policy(fp32, digits.train, val, max_drop=1.0, config=config)
    assert relaxed.fp32_layers == [] and relaxed.sensitivity == {}


@pytest.mark.slow
def test_pt2e_int8_model_agrees_with_fp32_on_digits(digits, trained_conv_net) -> None:
    pytest.importorskip("torchao", reason="PT2E needs the int8-torch extra")
    from archetype.compress.pt2e import quantize_pt2e

    quantized = quantize_pt2e(trained_conv_net, digits.train, digits.train.x[:1], samples=64, compile_graph=False)
    x = digits.test.x[:100]
    with torch.inference_mode():
        expected = trained_conv_net(x).argmax(1)
        got = quantized(x).argmax(1)
    assert float((got == expected).float().mean()) >= 0.95
    assert quantized.deployed_size_mb() < 0.5 * sum(p.numel() * 4 for p in trained_conv_net.parameters()) / 1e6


def test_an_int8_model_with_a_free_batch_runs_batches_as_it_runs_rows(trained_conv_net, digits) -> None:
    from archetype.runtime.onnx_export import export_onnx_bytes

    int8 = quantize_onnx_static(export_onnx_bytes(trained_conv_net, digits.train.x[:1], dynamic_batch=True),
                                digits.train.x, samples=64)
    model = OrtInt8Model(int8)
    x = digits.test.x[:300]  # more than one chunk of 256
    rows = torch.cat([model(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(model(x), rows, atol=1e-5)
