"""Every predefined space, fitted to digits and MNIST inputs, gives well-typed architectures that build."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from archetype.searchspace import Image, Vector, get_space, list_spaces
from archetype.searchspace.sample_check import check_samples

INPUTS = {"digits": Image(1, 8, 8), "mnist": Image(1, 28, 28)}


def test_the_issue_spaces_are_predefined():
    assert {"mobile", "resnet", "convnext", "vit", "hybrid", "mlp", "conv-small"} <= set(list_spaces())


@pytest.mark.parametrize("name", list_spaces())
def test_200_samples_type_check_and_build(name):
    space = get_space(name, INPUTS["digits"], 10)
    report = check_samples(space, 200, seed=0, run=False)
    assert report.failures == []
    assert report.built == 200
    assert report.unique > 150, "a space should not keep drawing the same few architectures"
    drawn = set(report.operators)
    offered = {c.op for slot in space.slots for c in slot.candidates}
    assert drawn == offered, f"never drawn: {offered - drawn}"


@pytest.mark.parametrize("name", list_spaces())
def test_samples_run_on_mnist_sized_input(name):
    space = get_space(name, INPUTS["mnist"], 10)
    report = check_samples(space, 10, seed=1, run=True)
    assert report.failures == [] and report.ran == 10


@pytest.mark.parametrize("name", list_spaces())
def test_output_type_and_encoding(name):
    space = get_space(name, INPUTS["digits"], 7)
    assert space.output == Vector(7)
    rng = np.random.default_rng(3)
    archs = [space.sample(rng) for _ in range(20)]
    lengths = {len(a.encode()) for a in archs}
    assert len(lengths) == 1
    model = archs[0].build().eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 8, 8)).shape == (3, 7)
