"""Behaviour specific to the MLP mixers: RepMLP's re-parameterisation, gMLP's near-identity gate, token mixing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archetype.searchspace import Image, Tokens, make_operator
from archetype.searchspace.operator import OperatorTypeError

DROP_PATH_BLOCKS = {
    "mixer_block": ({"token_hidden": 16}, Tokens(9, 8)),
    "resmlp_block": ({}, Tokens(9, 8)),
    "gmlp_block": ({}, Tokens(9, 8)),
    "repmlp_block": ({"partition": 4, "groups": 2}, Image(4, 8, 8)),
}


def _randomise_batch_norms(module: nn.Module) -> None:
    gen = torch.Generator().manual_seed(3)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=gen))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


@pytest.mark.parametrize(
    ("hparams", "x"),
    [
        ({"partition": 4, "groups": 2, "max_kernel": 3}, Image(4, 8, 8)),
        ({"partition": 4, "groups": 1, "max_kernel": 5}, Image(3, 8, 4)),
        ({"partition": 2, "groups": 3, "max_kernel": 1}, Image(6, 6, 4)),
    ],
)
def test_repmlp_reparameterised_block_matches_its_training_form(hparams: dict, x: Image) -> None:
    torch.manual_seed(0)
    module = make_operator("repmlp_block", hparams).build(x)
    _randomise_batch_norms(module)
    module.eval()
    inp = torch.randn(x.shape(3))
    with torch.no_grad():
        before = module(inp)
        module.reparameterize()
        after = module(inp)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    convs = [m for m in module.partition.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (1, 1) and convs[0].bias is not None
    module.reparameterize()  # a second call changes nothing
    with torch.no_grad():
        torch.testing.assert_close(module(inp), after)


def test_repmlp_refuses_maps_it_cannot_partition_or_group() -> None:
    op = make_operator("repmlp_block", {"partition": 4, "groups": 2})
    with pytest.raises(OperatorTypeError, match=r"Image\[4,6,8\]"):
        op.output_type(Image(4, 6, 8))
    with pytest.raises(OperatorTypeError, match=r"Image\[3,8,8\].*groups=2"):
        op.output_type(Image(3, 8, 8))


def test_gmlp_spatial_gate_starts_near_identity() -> None:
    torch.manual_seed(0)
    module = make_operator("gmlp_block", {"mlp_ratio": 2}).build(Tokens(16, 8))
    z = torch.randn(2, 16, 16)
    u = z[..., :8]
    torch.testing.assert_close(module.gate(z), u, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("name", ["mixer_block", "resmlp_block", "gmlp_block"])
def test_token_mixers_mix_across_tokens(name: str) -> None:
    hparams, x = DROP_PATH_BLOCKS[name]
    torch.manual_seed(0)
    module = make_operator(name, hparams).build(x).eval()
    if name == "gmlp_block":
        nn.init.normal_(module.gate.spatial.weight)  # the gate starts almost token-independent
    inp = torch.randn(x.shape(1))
    moved = inp.clone()
    moved[:, 0] += torch.randn(x.C)
    with torch.no_grad():
        change = (module(moved) - module(inp))[:, 1:].abs().max()
    assert change > 1e-3  # changing token 0 changes the other tokens' outputs


@pytest.mark.parametrize("name", sorted(DROP_PATH_BLOCKS))
def test_drop_path_is_identity_in_eval(name: str) -> None:
    hparams, x = DROP_PATH_BLOCKS[name]
    torch.manual_seed(0)
    plain = make_operator(name, hparams).build(x).eval()
    noisy = make_operator(name, {**hparams, "drop_path": 0.5}).build(x).eval()
    noisy.load_state_dict(plain.state_dict())
    inp = torch.randn(x.shape(4))
    with torch.no_grad():
        assert torch.equal(noisy(inp), plain(inp))
