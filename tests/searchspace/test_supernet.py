"""Supernet: shared weights, elastic slicing, and extracted networks equal to the active path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from archetype.errors import SpecError
from archetype.searchspace import Architecture, Image, get_space, list_spaces
from archetype.searchspace.cell import CellSpace
from archetype.searchspace.elastic import ElasticConvBn, FixedOp
from archetype.searchspace.supernet import Supernet, extreme_architecture

DIGITS = Image(1, 8, 8)


def _check_extract_equals_path(net: Supernet, arch: Architecture, x: torch.Tensor) -> None:
    net.activate(arch)
    net.train()
    with torch.no_grad():
        net(x)  # moves the path's batch-norm statistics away from their initial values
    net.eval()
    with torch.no_grad():
        expected = net(x)
        got = net.extract(arch).eval()(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list_spaces())
def test_extract_equals_active_path_in_every_predefined_space(name: str) -> None:
    space = get_space(name, DIGITS, 10)
    if isinstance(space, CellSpace):
        with pytest.raises(SpecError, match="is a cell space"):
            Supernet(space, lazy=True)
        return
    torch.manual_seed(0)
    net = Supernet(space, lazy=True)  # builds only the modules the samples use
    rng = np.random.default_rng(1)
    x = torch.randn(4, 1, 8, 8)
    for arch in [space.sample(rng) for _ in range(3)]:
        _check_extract_equals_path(net, arch, x)


def test_extreme_architectures_are_the_largest_and_smallest_of_conv_small() -> None:
    space = get_space("conv-small", DIGITS, 10)
    rng = np.random.default_rng(0)
    largest, smallest = extreme_architecture(space, True, rng), extreme_architecture(space, False, rng)
    samples = [space.sample(rng) for _ in range(200)]
    assert largest.params() >= max(a.params() for a in samples)
    assert smallest.params() <= min(a.params() for a in samples)
    net = Supernet(space)
    for arch in (largest, smallest):
        _check_extract_equals_path(net, arch, torch.randn(2, 1, 8, 8))


def _arch(space, changes: dict[str, dict[str, int]] | None = None) -> Architecture:
    slots = {
        "stem": ("conv_bn_act", {"width": 16, "kernel": 3, "stride": 1}),
        "stage1.block1": ("dwsep_conv", {"width": 24, "kernel": 5, "stride": 1}),
        "stage1.down": ("inverted_residual", {"width": 32, "expand": 3, "kernel": 3, "stride": 2}),
        "stage2.block1": ("basic_block", {"width": 48, "stride": 1}),
        "stage2.block2": ("identity", {}),
        "head": ("classifier_head", {"classes": 10}),
    }
    for slot, params in (changes or {}).items():
        slots[slot][1].update(params)
    data = {"input": str(DIGITS), "slots": [{"slot": s, "op": op, "params": p} for s, (op, p) in slots.items()]}
    return space.validate(Architecture.from_json(data, space))


def test_choices_that_differ_in_width_or_kernel_share_one_module() -> None:
    space = get_space("conv-small", DIGITS, 10)
    net = Supernet(space)
    net.activate(_arch(space))
    first = net.active_modules()
    net.activate(_arch(space, {"stem": {"width": 24}, "stage1.block1": {"kernel": 3}, "stage1.down": {"expand": 6}}))
    second = net.active_modules()
    assert all(a is b for a, b in zip(first, second))
    x = torch.randn(3, 1, 8, 8)
    net.train()
    net(x).sum().backward()
    stem = net.active_modules()[0].conv.weight
    assert stem.grad is not None
    assert stem.grad[:24].abs().sum() > 0  # the 24 channels in use got gradients


def test_elastic_conv_slices_first_channels_and_kernel_centre() -> None:
    torch.manual_seed(0)
    conv = ElasticConvBn(max_in=8, max_out=16, max_kernel=5, widths=(8, 16), act=None)
    conv.eval()
    x = torch.randn(2, 6, 7, 7)
    expected = torch.nn.functional.conv2d(x, conv.weight[:8, :6, 1:4, 1:4], padding=1)
    expected = conv.norms["8"](expected)
    torch.testing.assert_close(conv(x, 8, 3), expected)
    assert conv.sliced_weight(6, 8, 1).shape == (8, 6, 1, 1)
    torch.testing.assert_close(conv.sliced_weight(6, 8, 1)[..., 0, 0], conv.weight[:8, :6, 2, 2])
    assert set(conv.norms) == {"8", "16"}  # one batch norm per width


def test_conv_small_is_served_by_elastic_modules_only() -> None:
    net = Supernet(get_space("conv-small", DIGITS, 10))
    fixed = [
        name for slot in net.slots.values() for name, module in slot.items()
        if isinstance(module, FixedOp) and any(True for _ in module.parameters())
    ]
    assert fixed == []
    # one module per slot, operator and structural choice (stride, expansion or not), not per width or kernel
    assert net.shared_modules() == 27
