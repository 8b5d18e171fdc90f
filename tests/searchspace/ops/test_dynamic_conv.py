"""Behaviour specific to the dynamic convolutions: involution's per-pixel kernels, DCNv2's sampling."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from archetype.searchspace import Image, make_operator
from archetype.searchspace.operator import OperatorTypeError


def _seeded(name: str, hparams: dict, x: Image) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_operator(name, hparams).build(x).eval()


@pytest.mark.parametrize("groups", [1, 2])
def test_involution_weights_each_neighbourhood_by_the_kernel_generated_at_its_centre(groups: int) -> None:
    x, k = Image(4, 5, 6), 3
    module = _seeded("involution", {"kernel": k, "groups": groups}, x)
    inp = torch.randn(x.shape(2))
    with torch.no_grad():
        out = module(inp)
        kernels = module.span(module.reduce(inp)).reshape(2, groups, k * k, 5, 6)
    padded = F.pad(inp, (1, 1, 1, 1))
    want = torch.zeros_like(inp)
    for c in range(4):
        g = c // (4 // groups)
        for i in range(k):
            for j in range(k):
                want[:, c] += kernels[:, g, i * k + j] * padded[:, c, i : i + 5, j : j + 6]
    assert torch.allclose(out, want, atol=1e-5)


def test_involution_refuses_channels_not_divisible_by_groups() -> None:
    with pytest.raises(OperatorTypeError, match=r"'involution'.*Image\[6,8,8\]"):
        make_operator("involution", {"groups": 4}).output_type(Image(6, 8, 8))


def test_deform_conv_v2_starts_as_half_a_plain_convolution() -> None:
    x = Image(3, 6, 7)
    deform = _seeded("deform_conv_v2", {"width": 5}, x)[0]
    inp = torch.randn(x.shape(2))
    with torch.no_grad():
        plain = F.conv2d(inp, deform.weight.reshape(5, 3, 3, 3), padding=1)
        assert torch.allclose(deform(inp), 0.5 * plain, atol=1e-5)  # zero offsets, masks sigmoid(0)


def test_deform_conv_v2_samples_at_the_predicted_offsets() -> None:
    x = Image(3, 6, 7)
    deform = _seeded("deform_conv_v2", {"width": 5}, x)[0]
    weight = deform.weight.reshape(5, 3, 3, 3)
    inp = torch.randn(x.shape(2))
    with torch.no_grad():
        plain = F.conv2d(inp, weight, padding=1)
        one_right = F.conv2d(F.pad(inp, (0, 2, 1, 1)), weight)  # every tap one column further right
        deform.offset_mask.bias[18:] = 30.0  # masks ~1
        deform.offset_mask.bias[9:18] = 1.0  # dx of every tap
        assert torch.allclose(deform(inp), one_right, atol=1e-5)
        deform.offset_mask.bias[9:18] = 0.5  # half a column: bilinear gives the mean of the two neighbours
        assert torch.allclose(deform(inp), (plain + one_right) / 2, atol=1e-5)


def test_deform_conv_v2_with_learned_offsets_exports_to_onnx_grid_sample() -> None:
    x = Image(4, 6, 6)
    module = _seeded("deform_conv_v2", {"width": 8}, x)
    with torch.no_grad():
        module[0].offset_mask.weight.normal_(0, 0.3)  # fractional offsets, some pointing off the map
    inp = torch.randn(x.shape(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (inp,), dynamo=True, verbose=False)
    assert "GridSample" in {node.op_type for node in program.model_proto.graph.node}
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: inp.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, module(inp).numpy(), atol=1e-4, rtol=1e-4)
