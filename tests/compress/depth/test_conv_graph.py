"""Conv chains read from the fx graph of models written as plain PyTorch: structure, equality, and refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from archetype.compress.conv_chain import (
    UnsupportedNetworkError,
    chain_network,
    extract_chain,
    merge_network,
    renormalized,
)
from archetype.compress.conv_graph import removable_blocks, remove_blocks
from archetype.compress.depth_compression import latency_spans
from archetype.errors import SpecError

SHAPE = (1, 12, 12)


def _longest_plan(chain) -> list[tuple[int, int]]:
    """Greedy: from each boundary, the longest mergeable span (every activation inside it removed)."""
    spans, i = [], 0
    while i < chain.layers:
        j = max(j for (a, j) in latency_spans(chain) if a == i)
        spans.append((i, j))
        i = j
    return spans


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet", "vgg"])
def test_user_models_read_as_chains_that_merge_exactly(name: str, user_models, randomise_bn) -> None:
    torch.manual_seed(0)
    model = randomise_bn(user_models[name]())
    chain = extract_chain(model, SHAPE)
    assert chain.layers == sum(isinstance(m, nn.Conv2d) for m in model.modules()) - len(chain.shortcuts)
    assert chain.activation_boundaries()
    plan = _longest_plan(chain)
    assert len(plan) < chain.layers  # something merges
    kept = [j for _, j in plan]
    removed = chain_network(chain, plan, kept).eval()
    merged = merge_network(removed)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(merged(x), removed(x), atol=1e-4)
        singles = chain_network(chain, [(k - 1, k) for k in range(1, chain.layers + 1)]).eval()
        assert torch.allclose(singles(x), model(x), atol=1e-4)
    assert sum(isinstance(m, nn.Conv2d) for m in merged.modules()) < sum(
        isinstance(m, nn.Conv2d) for m in model.modules())


def test_mobilenetv2_residuals_and_resnet_projections_are_found(user_models) -> None:
    mobile = extract_chain(user_models["mobilenetv2"](), SHAPE)
    # stem; block 1 (expand 1: dw, project, skip); block 2 (expand, dw s2, project); block 3 (expand, dw, project, skip)
    assert mobile.layers == 1 + 2 + 3 + 3
    assert mobile.residuals == [(1, 3), (6, 9)]
    assert not mobile.shortcuts
    resnet = extract_chain(user_models["resnet"](), SHAPE)
    assert resnet.layers == 9
    assert resnet.residuals == [(1, 3), (3, 5), (5, 7), (7, 9)]
    assert list(resnet.shortcuts) == [(5, 7)]  # the strided block's 1x1 projection
    assert resnet.mergeable((5, 7)) and resnet.mergeable((6, 7)) and not resnet.mergeable((4, 7))


def test_shortcut_written_before_the_body_is_a_shortcut() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.down = nn.Conv2d(4, 6, 1, stride=2)
            self.body = nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.stem(x))
            skip = self.down(x)
            return (self.body(x) + skip).relu().mean((2, 3))

    chain = extract_chain(Block(), SHAPE)
    assert chain.layers == 3 and list(chain.shortcuts) == [(1, 3)]


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        return torch.cat([y, self.b(y)], 1)


class _Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) * torch.sigmoid(self.b(x))


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return y if y.sum() > 0 else -y


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(torch.relu(self.a(torch.relu(self.stem(x)))))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_Concat(), "'b'.*reads 'b'|head reads|'cat'"),
        (_Branching(), "'sigmoid'"),
        (_DataDependent(), "cannot be traced.*--pipeline without depth"),
        (_Shared(), "second call of module 'a'"),
        (nn.Sequential(nn.Flatten(), nn.Linear(144, 4)), "'0' \\(Flatten\\) comes before any convolution"),
    ],
)
def test_graphs_that_cannot_merge_are_refused_naming_the_node(model: nn.Module, message: str) -> None:
    with pytest.raises(UnsupportedNetworkError, match=message) as caught:
        extract_chain(model, SHAPE)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("name", "expected"), [
    ("mobilenetv2", {"features.1": nn.Identity, "features.3": nn.Identity}),
    # x + f(x) under a ReLU: the ReLU stays; projected shortcuts (layer2.0) are not identities
    ("resnet", {"layer1.0": nn.ReLU, "layer1.1": nn.ReLU, "layer2.1": nn.ReLU}),
    ("vgg", {}),
])
def test_residual_blocks_are_found_and_dropping_one_computes_its_skip_alone(name, expected, user_models,
                                                                           randomise_bn) -> None:
    torch.manual_seed(0)
    model = randomise_bn(user_models[name]()).eval()
    blocks = removable_blocks(model)
    assert {k: type(v) for k, v in blocks.items()} == expected
    x = torch.randn(2, *SHAPE)
    for block in blocks:
        silenced = copy.deepcopy(model)
        last_norm = [m for m in silenced.get_submodule(block).modules() if isinstance(m, nn.BatchNorm2d)][-1]
        nn.init.zeros_(last_norm.weight)
        nn.init.zeros_(last_norm.bias)  # f(x) = 0: the block computes its skip alone
        dropped = remove_blocks(copy.deepcopy(model), {block: blocks[block]})
        assert sum(isinstance(m, nn.Conv2d) for m in dropped.modules()) < sum(
            isinstance(m, nn.Conv2d) for m in model.modules())
        with torch.no_grad():
            torch.testing.assert_close(dropped(x), silenced(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "insertable"), [("mobilenetv2", [3, 6]), ("resnet", []), ("vgg", [])])
def test_activations_may_move_only_to_linear_boundaries(name: str, insertable: list[int], user_models) -> None:
    chain = extract_chain(user_models[name](), SHAPE)
    moved = chain.with_moved_activations()
    assert not chain.insertable
    assert sorted(moved.insertable) == insertable  # MobileNetV2: the projections' outputs, never the last unit
    assert all(type(act) is nn.ReLU6 for act in moved.insertable.values())
    assert moved.ends() == sorted({0, *chain.activation_boundaries(), *insertable, chain.layers})


def test_a_whole_inverted_residual_merges_into_one_conv_ending_in_the_moved_activation(user_models,
                                                                                       randomise_bn) -> None:
    torch.manual_seed(0)
    model = randomise_bn(user_models["mobilenetv2"]())
    chain = extract_chain(model, SHAPE).with_moved_activations()
    # block 2 (units 4-6: expand, depthwise, projection) becomes one conv; its two ReLU6 move to its output
    spans = [(k - 1, k) for k in range(1, 4)] + [(3, 6)] + [(k - 1, k) for k in range(7, chain.layers + 1)]
    assert chain.removed_by((3, 6)) == [4, 5] and chain.removed_by((2, 3)) == []
    kept = [b for b in chain.activation_boundaries() if b not in (4, 5)] + [chain.layers]
    removed = chain_network(chain, spans, kept, inserted=[6]).eval()
    assert type(removed.acts[spans.index((3, 6))]) is nn.ReLU6
    merged = merge_network(removed)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), removed(x), atol=1e-4, rtol=1e-4)
        plain = chain_network(chain, spans, kept).eval()  # the same blocks without the moved activation
        assert not torch.allclose(plain(x), removed(x), atol=1e-3)
    assert sum(isinstance(m, nn.Conv2d) for m in merged.modules()) == chain.layers - 2
    with pytest.raises(SpecError, match="inserted at \\[5\\]"):
        chain_network(chain, spans, kept, inserted=[5])  # 5 has an activation of its own


def test_renormalized_merged_blocks_compute_the_same_in_eval_and_on_the_batch_in_training(user_models,
                                                                                          randomise_bn) -> None:
    torch.manual_seed(0)
    chain = extract_chain(randomise_bn(user_models["resnet"]()), SHAPE)
    merged = merge_network(chain_network(chain, _longest_plan(chain)).eval())
    x = torch.randn(32, *SHAPE)
    with torch.no_grad():
        expected = merged(x)
    renormed = renormalized(copy.deepcopy(merged), x)
    assert all(isinstance(block[-1], nn.BatchNorm2d) for block in renormed.blocks)
    with torch.no_grad():
        torch.testing.assert_close(renormed(x), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(renormed.train()(x), expected, atol=1e-3, rtol=1e-3)  # batch statistics = x's
        assert not torch.allclose(renormed(x[:4] * 3), merged(x[:4] * 3), atol=1e-2)  # other data: normalised
