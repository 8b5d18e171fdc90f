"""Behaviour specific to the context cluster block: a point is mixed only with the points of its own cluster."""

from __future__ import annotations

import pytest
import torch

from archetype.searchspace import Image, make_operator
from archetype.searchspace.operator import OperatorTypeError


def test_context_cluster_point_sees_only_its_own_cluster() -> None:
    x = Image(8, 8, 8)
    torch.manual_seed(0)
    block = make_operator("context_cluster_block", {"centres": 4}).build(x).eval()
    inp = torch.randn(x.shape(1))
    normed = block.norm1(inp)
    with torch.no_grad():
        sim, _, _ = block.mixer.similarity(normed)
    owner = sim[0].argmax(dim=0)  # (N,): each point's cluster
    assert torch.equal((sim[0] > 0).sum(dim=0), torch.ones(64, dtype=torch.long))  # exactly one cluster each
    p = 0
    m = int(owner[p])  # its centre pools the 4 x 4 region (m // 2, m % 2) of the 2 x 2 grid
    region = {(m // 2 * 4 + r) * 8 + m % 2 * 4 + c for r in range(4) for c in range(4)}
    outsiders = [q for q in range(64) if owner[q] != m and q not in region]  # neither in its cluster nor its centre
    assert outsiders, "every point fell in one cluster; reseed"
    q = outsiders[0]
    with torch.no_grad():
        base = block.mixer(normed)
        moved = normed.clone()
        moved[0, :, q // 8, q % 8] += 0.01
        sim_moved, _, _ = block.mixer.similarity(moved)
        assert torch.equal(sim_moved > 0, sim > 0)  # the assignment is unchanged by the small move
        out = block.mixer(moved)
    pr, pc = p // 8, p % 8
    assert torch.allclose(out[0, :, pr, pc], base[0, :, pr, pc], atol=1e-6)
    assert not torch.allclose(out[0, :, q // 8, q % 8], base[0, :, q // 8, q % 8], atol=1e-6)


def test_context_cluster_refuses_a_map_smaller_than_its_centre_grid() -> None:
    with pytest.raises(OperatorTypeError, match=r"Image\[8,3,8\]"):
        make_operator("context_cluster_block", {"centres": 16}).output_type(Image(8, 3, 8))
