"""Behaviour specific to the state-space mixers: the matmul forms equal their recurrences, and causality holds."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from archetype.searchspace import Tokens, make_operator
from archetype.searchspace.operator import OperatorTypeError


def _scan(seq: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, backward: bool) -> torch.Tensor:
    """sum_n c_n h_n with h_n[t] = a_n h_n[t-1] + b_n u[t], a Python loop over one sequence."""
    order = range(len(seq) - 1, -1, -1) if backward else range(len(seq))
    state = torch.zeros_like(a)
    out = torch.zeros_like(seq)
    for t in order:
        state = a * state + b * seq[t]
        out[t] = (c * state).sum()
    return out


def test_ssm2d_equals_row_and_column_recurrences() -> None:
    side, channels, state = 4, 3, 2
    torch.manual_seed(0)
    module = make_operator("ssm2d", {"state": state}).build(Tokens(side * side, channels))
    with torch.no_grad():
        module.decay.normal_()
        module.b.normal_()
        module.d.normal_()
    inp = torch.randn(1, side * side, channels)
    with torch.no_grad():
        got = module(inp)[0].T.reshape(channels, side, side)
    a = torch.sigmoid(module.decay).detach()
    b, c = module.b.detach(), module.c_gain.detach()
    grid = inp[0].T.reshape(channels, side, side)
    want = torch.zeros_like(grid)
    for ch in range(channels):
        u = grid[ch]
        vertical = torch.stack([
            sum(_scan(u[:, j], a[0, d, :, ch], b[0, d, :, ch], c[0, d, :, ch], backward=bool(d)) for d in (0, 1))
            for j in range(side)
        ], dim=1)
        both = torch.stack([
            sum(_scan(vertical[i], a[1, d, :, ch], b[1, d, :, ch], c[1, d, :, ch], backward=bool(d)) for d in (0, 1))
            for i in range(side)
        ])
        want[ch] = both + module.d[ch].detach() * u
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_ssm2d_refuses_a_grid_that_is_not_square() -> None:
    with pytest.raises(OperatorTypeError, match=r"square.*Tokens\[20,8\]"):
        make_operator("ssm2d", {}).output_type(Tokens(20, 8))


def test_mlstm_parallel_form_equals_the_recurrent_form() -> None:
    n, heads, dh = 7, 2, 4
    torch.manual_seed(0)
    module = make_operator("mlstm_block", {"heads": heads, "expand": 1}).build(Tokens(n, heads * dh))
    q, k, v = (torch.randn(1, n, heads * dh) for _ in range(3))
    i_pre, f_pre = torch.randn(1, heads, n) * 2, torch.randn(1, heads, n) * 2
    with torch.no_grad():
        got = module.cell(q, k, v, i_pre, f_pre)
    want = torch.zeros(1, n, heads, dh)
    for h in range(heads):
        cell, norm = torch.zeros(dh, dh), torch.zeros(dh)
        sl = slice(h * dh, (h + 1) * dh)
        for t in range(n):
            f, i = torch.sigmoid(f_pre[0, h, t]), torch.exp(i_pre[0, h, t])
            key = k[0, t, sl] / math.sqrt(dh)
            cell = f * cell + i * torch.outer(v[0, t, sl], key)
            norm = f * norm + i * key
            hidden = cell @ q[0, t, sl] / torch.clamp(torch.abs(norm @ q[0, t, sl]), min=1.0)
            want[0, t, h] = F.layer_norm(hidden, (dh,))
    torch.testing.assert_close(got, want.flatten(-2), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "hparams"), [
    ("mlstm_block", {"reverse": False}),
    ("mlstm_block", {"reverse": True}),
    ("hyena_block", {}),
    ("hyena_block", {"order": 3}),
])
def test_causal_mixers_do_not_see_the_future(name: str, hparams: dict) -> None:
    x = Tokens(12, 16)
    torch.manual_seed(0)
    module = make_operator(name, hparams).build(x).eval()
    inp = torch.randn(x.shape(1))
    moved = inp.clone()
    t = 5
    moved[:, t] += torch.randn(x.C)
    with torch.no_grad():
        change = (module(moved) - module(inp)).abs().amax(dim=(0, 2))  # (N,)
    past, future = (change[t + 1:], change[:t]) if hparams.get("reverse") else (change[:t], change[t + 1:])
    assert past.max() < 1e-6  # a token in the scan's past is untouched
    assert future.min() > 1e-6  # every later token sees it


def test_hyena_long_convolution_is_the_causal_convolution() -> None:
    torch.manual_seed(0)
    module = make_operator("hyena_block", {}).build(Tokens(10, 4))
    z, h = torch.randn(2, 4, 10), torch.randn(4, 10)
    want = torch.zeros_like(z)
    for t in range(10):
        for s in range(t + 1):
            want[..., t] += h[:, t - s] * z[..., s]
    torch.testing.assert_close(module.long_conv(z, h), want, atol=1e-5, rtol=1e-5)


def test_hyena_inference_filter_follows_new_weights() -> None:
    x = Tokens(16, 8)
    torch.manual_seed(0)
    module = make_operator("hyena_block", {}).build(x).eval()
    torch.manual_seed(1)
    other = make_operator("hyena_block", {}).build(x)
    inp = torch.randn(x.shape(2))
    with torch.no_grad():
        module(inp)  # uses the filter generated when eval() was called
        module.load_state_dict(other.state_dict())
        got = module(inp)
    assert torch.equal(module.filter.generate(), other.filter.generate())
    torch.testing.assert_close(got, other.eval()(inp).detach())


@pytest.mark.parametrize(("name", "x"), [
    ("ssm2d_block", Tokens(16, 8)), ("mlstm_block", Tokens(10, 8)), ("hyena_block", Tokens(10, 8)),
])
def test_drop_path_is_identity_in_eval(name: str, x: Tokens) -> None:
    torch.manual_seed(0)
    plain = make_operator(name, {}).build(x).eval()
    noisy = make_operator(name, {"drop_path": 0.5}).build(x).eval()
    noisy.load_state_dict(plain.state_dict())
    inp = torch.randn(x.shape(4))
    with torch.no_grad():
        assert torch.equal(noisy(inp), plain(inp))
