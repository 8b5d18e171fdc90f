"""Elastic operator modules: one set of weights serves every width, kernel and input width of an operator.

A narrower width is the first channels of the largest weight, a smaller kernel its centre, and each
output width keeps its own batch norm. ``export`` copies the slice an operator choice uses into the
module that ``Operator.build`` makes, so a standalone network computes what the shared path computes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archetype.searchspace.operator import Operator
from archetype.searchspace.ops.layers import ACTIVATIONS, drop_path_or_identity
from archetype.searchspace.types import Image, TensorType


class ElasticConvBn(nn.Module):
    """Conv2d (no bias, 'same' padding) holding the largest weight, a batch norm per output width, an activation."""

    def __init__(
        self, max_in: int, max_out: int, max_kernel: int, widths: Iterable[int], act: str | None,
        depthwise: bool = False,
    ) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.max_kernel = max_kernel
        self.weight = nn.Parameter(torch.empty(max_out, 1 if depthwise else max_in, max_kernel, max_kernel))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # Conv2d's default initialisation
        self.norms = nn.ModuleDict({str(w): nn.BatchNorm2d(w) for w in sorted(set(widths))})
        self.act = ACTIVATIONS[act]() if act is not None else nn.Identity()

    def sliced_weight(self, cin: int, cout: int, kernel: int) -> torch.Tensor:
        """The first ``cout`` filters over the first ``cin`` inputs, centre ``kernel`` x ``kernel``."""
        start = (self.max_kernel - kernel) // 2
        inputs = 1 if self.depthwise else cin
        return self.weight[:cout, :inputs, start : start + kernel, start : start + kernel]

    def forward(self, x: torch.Tensor, cout: int, kernel: int, stride: int = 1) -> torch.Tensor:
        cin = x.shape[1]
        if self.depthwise:
            cout = cin
        weight = self.sliced_weight(cin, cout, kernel)
        y = F.conv2d(x, weight, None, stride, (kernel - 1) // 2, groups=cin if self.depthwise else 1)
        return self.act(self.norms[str(cout)](y))  # (B, cout, H/s, W/s)

    @torch.no_grad()
    def export_into(self, conv_bn: nn.Sequential, cin: int) -> None:
        """Copy this module's slice into a ``conv_bn`` Sequential (conv, batch norm, optional activation)."""
        conv, norm = conv_bn[0], conv_bn[1]
        conv.weight.copy_(self.sliced_weight(cin, conv.out_channels, conv.kernel_size[0]))
        norm.load_state_dict(self.norms[str(conv.out_channels)].state_dict())


class ElasticLinear(nn.Module):
    """A linear layer holding the largest input width; a narrower input uses the first columns."""

    def __init__(self, max_in: int, out: int) -> None:
        super().__init__()
        template = nn.Linear(max_in, out)
        self.weight, self.bias = template.weight, template.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[-1]], self.bias)

    @torch.no_grad()
    def export_into(self, linear: nn.Linear) -> None:
        linear.weight.copy_(self.weight[:, : linear.in_features])
        linear.bias.copy_(self.bias)


Use = tuple[Operator, Image]
"""An operator choice and the input type it receives in some architecture."""


class ElasticOp(nn.Module):
    """Shared weights of one operator over several choices; ``forward(x, op)`` runs the choice ``op``."""

    def forward(self, x: torch.Tensor, op: Any) -> torch.Tensor:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def export(self, op: Any, x: Image) -> nn.Module:
        """A standalone ``op.build(x)`` holding the weights this module uses for ``op`` at input ``x``."""
        raise NotImplementedError


class ElasticConvBnAct(ElasticOp):
    """conv_bn_act, pointwise_conv and strided_conv: elastic width, kernel and input width."""

    def __init__(self, uses: list[Use]) -> None:
        super().__init__()
        op = uses[0][0]
        self.stride, self.act = _conv_stride(op), op.act
        self.conv = ElasticConvBn(
            max(x.C for _, x in uses), max(o.width for o, _ in uses), max(_conv_kernel(o) for o, _ in uses),
            [o.width for o, _ in uses], op.act,
        )

    def forward(self, x: torch.Tensor, op: Any) -> torch.Tensor:
        return self.conv(x, op.width, _conv_kernel(op), self.stride)

    def export(self, op: Any, x: Image) -> nn.Module:
        module = op.build(x)
        self.conv.export_into(module, x.C)
        return module


class ElasticDepthwiseSeparable(ElasticOp):
    """dwsep_conv: elastic kernel (depthwise), width (pointwise) and input width."""

    def __init__(self, uses: list[Use]) -> None:
        super().__init__()
        self.stride = uses[0][0].stride
        max_in = max(x.C for _, x in uses)
        self.depthwise = ElasticConvBn(
            max_in, max_in, max(o.kernel for o, _ in uses), [x.C for _, x in uses], "relu", depthwise=True
        )
        self.pointwise = ElasticConvBn(max_in, max(o.width for o, _ in uses), 1, [o.width for o, _ in uses], "relu")

    def forward(self, x: torch.Tensor, op: Any) -> torch.Tensor:
        x = self.depthwise(x, x.shape[1], op.kernel, self.stride)  # (B, C, H/s, W/s)
        return self.pointwise(x, op.width, 1)  # (B, width, H/s, W/s)

    def export(self, op: Any, x: Image) -> nn.Module:
        module = op.build(x)
        self.depthwise.export_into(module[0], x.C)
        self.pointwise.export_into(module[1], x.C)
        return module


class ElasticInvertedResidual(ElasticOp):
    """inverted_residual: elastic width, expansion (hidden = the first C*e channels), kernel and input width."""

    def __init__(self, uses: list[Use]) -> None:
        super().__init__()
        op = uses[0][0]
        self.stride, self.activation, self.expands = op.stride, op.activation, op.expand != 1
        max_in = max(x.C for _, x in uses)
        hidden = [x.C * o.expand for o, x in uses]
        self.expand = ElasticConvBn(max_in, max(hidden), 1, hidden, self.activation) if self.expands else None
        self.depthwise = ElasticConvBn(
            max(hidden), max(hidden), max(o.kernel for o, _ in uses), hidden, self.activation, depthwise=True
        )
        self.project = ElasticConvBn(max(hidden), max(o.width for o, _ in uses), 1, [o.width for o, _ in uses], None)

    def forward(self, x: torch.Tensor, op: Any) -> torch.Tensor:
        cin = x.shape[1]
        hidden = cin * op.expand
        y = self.expand(x, hidden, 1) if self.expand is not None else x  # (B, C*e, H, W)
        y = self.depthwise(y, hidden, op.kernel, self.stride)  # (B, C*e, H/s, W/s)
        y = self.project(y, op.width, 1)  # (B, width, H/s, W/s)
        return x + y if self.stride == 1 and cin == op.width else y

    def export(self, op: Any, x: Image) -> nn.Module:
        module = op.build(x)
        layers = list(module.body)
        hidden = x.C * op.expand
        if self.expand is not None:
            self.expand.export_into(layers.pop(0), x.C)
        self.depthwise.export_into(layers[0], hidden)
        self.project.export_into(layers[-1], hidden)
        return module


class ElasticBasicBlock(ElasticOp):
    """basic_block: elastic width and input width; the projection shortcut is shared where it is used."""

    def __init__(self, uses: list[Use]) -> None:
        super().__init__()
        op = uses[0][0]
        self.stride = op.stride
        max_in, widths = max(x.C for _, x in uses), [o.width for o, _ in uses]
        self.conv1 = ElasticConvBn(max_in, max(widths), 3, widths, "relu")
        self.conv2 = ElasticConvBn(max(widths), max(widths), 3, widths, None)
        self.shortcut = ElasticConvBn(max_in, max(widths), 1, widths, None)
        self.act = nn.ReLU()
        self.drop = drop_path_or_identity(op.drop_path)

    def forward(self, x: torch.Tensor, op: Any) -> torch.Tensor:
        body = self.conv2(self.conv1(x, op.width, 3, self.stride), op.width, 3)  # (B, width, H/s, W/s)
        projected = self.stride != 1 or x.shape[1] != op.width
        shortcut = self.shortcut(x, op.width, 1, self.stride) if projected else x
        return self.act(self.drop(body) + shortcut)

    def export(self, op: Any, x: Image) -> nn.Module:
        module = op.build(x)
        self.conv1.export_into(module.body[0], x.C)
        self.conv2.export_into(module.body[1], op.width)
        if isinstance(module.shortcut, nn.Sequential):
            self.shortcut.export_into(module.shortcut, x.C)
        return module


class ElasticClassifierHead(ElasticOp):
    """classifier_head: global average pooling then a linear layer elastic in its input width."""

    def __init__(self, uses: list[Use]) -> None:
        super().__init__()
        self.fc = ElasticLinear(max(x.C for _, x in uses), uses[0][0].classes)

    def forward(self, x: torch.Tensor, op: Any) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))  # (B, C, H, W) -> (B, classes)

    def export(self, op: Any, x: Image) -> nn.Module:
        module = op.build(x)
        self.fc.export_into(module.fc)
        return module


class FixedOp(ElasticOp):
    """The fallback: one operator choice at one input type, its module built once and shared."""

    def __init__(self, uses: list[Use]) -> None:
        super().__init__()
        op, x = uses[0]
        self.module = op.build(x)

    def forward(self, x: torch.Tensor, op: Any) -> torch.Tensor:
        return self.module(x)

    def export(self, op: Any, x: TensorType) -> nn.Module:
        return copy.deepcopy(self.module)


def _conv_kernel(op: Any) -> int:
    return {"pointwise_conv": 1, "strided_conv": 3}.get(op.name, getattr(op, "kernel", 3))


def _conv_stride(op: Any) -> int:
    return {"pointwise_conv": 1, "strided_conv": 2}.get(op.name, getattr(op, "stride", 1))


ElasticFactory = Callable[[list[Use]], ElasticOp]

ELASTIC: dict[str, tuple[tuple[str, ...], ElasticFactory]] = {
    "conv_bn_act": (("width", "kernel"), ElasticConvBnAct),
    "pointwise_conv": (("width",), ElasticConvBnAct),
    "strided_conv": (("width",), ElasticConvBnAct),
    "dwsep_conv": (("width", "kernel"), ElasticDepthwiseSeparable),
    "inverted_residual": (("width", "kernel"), ElasticInvertedResidual),
    "basic_block": (("width",), ElasticBasicBlock),
    "classifier_head": ((), ElasticClassifierHead),
}
"""Operator -> (hyperparameters that share one module, the module's factory); the input width is always elastic.

inverted_residual shares its module across expansion ratios other than 1 (expand 1 has no expansion conv).
"""


def sharing_key(op: Operator, x: TensorType) -> tuple[Any, ...]:
    """Choices with equal keys in one slot share one module."""
    if op.name in ELASTIC and isinstance(x, Image):
        elastic, _ = ELASTIC[op.name]
        fixed = tuple((k, v) for k, v in sorted(op.hparams().items()) if k not in elastic and k != "expand")
        if op.name == "inverted_residual":
            fixed += (("expands", op.expand != 1),)
        return (op.name, "elastic", fixed)
    return (op.name, "fixed", tuple(sorted(op.hparams().items())), str(x))


def make_shared(key: tuple[Any, ...], uses: list[Use]) -> ElasticOp:
    """The shared module for the choices ``uses`` that have the sharing ``key``."""
    if key[1] == "elastic":
        return ELASTIC[key[0]][1](uses)
    return FixedOp(uses)
