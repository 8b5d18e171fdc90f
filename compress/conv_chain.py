"""Networks as chains of conv units, and consecutive convolutions merged into one equivalent convolution.

A chain is a list of units ``conv [-> batch norm] [-> activation] [-> pooling]``
with boundaries 0..L: boundary 0 is the input, boundary k the output of unit k.
A residual ``(a, b)`` adds the tensor at boundary ``a`` to unit ``b``'s output
before its activation. A merge block ``(i, j)`` replaces units i+1..j, with no
activation between them, by one convolution. Composing zero-padded convolutions
is exact only if the block's input is zero-padded once, by the merged padding,
and the convolutions inside run unpadded: ``PaddedSpan`` computes a block that
way (trainable, the network to fine-tune) and ``PaddedSpan.merged()`` gives the
single ``nn.Conv2d`` that equals it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from archetype.errors import SpecError
from archetype.searchspace.network import ArchitectureNetwork
from archetype.searchspace.ops.mobile import InvertedResidualModule
from archetype.searchspace.ops.residual import ResidualModule

Pair = tuple[int, int]
Shape = tuple[int, int, int]  # (C, H, W) of one sample

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Sigmoid, nn.Tanh,
)
POOLING_TYPES: tuple[type[nn.Module], ...] = (nn.MaxPool2d, nn.AvgPool2d)


class UnsupportedNetworkError(SpecError):
    """A network, or a part of it, cannot be represented as a chain of conv units."""


@dataclass
class ConvUnit:
    """One convolution with its batch norm, the activation after it and a pooling layer after that."""

    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None = None
    act: nn.Module | None = None
    post: nn.Module | None = None  # pooling: no merge block crosses it
    name: str = ""


@dataclass
class ConvChain:
    """A network as conv units, residuals between boundaries, and a conv-free tail (the head)."""

    units: list[ConvUnit]
    residuals: list[Pair]  # (a, b): boundary a's tensor is added to unit b's output before its activation
    tail: nn.Module
    input_shape: Shape
    shapes: list[Shape] = field(default_factory=list)  # tensor shape at each boundary 0..L
    shortcuts: dict[Pair, ConvUnit] = field(default_factory=dict)  # residual -> the conv (+ bn) on its skip path
    insertable: dict[int, nn.Module] = field(default_factory=dict)  # boundary without an activation -> the one a
    # merged block ending there takes in place of those it removed (``with_moved_activations``)

    def __post_init__(self) -> None:
        if not self.units:
            raise UnsupportedNetworkError("the network has no convolution to compress")
        if not self.shapes:
            self.shapes = _boundary_shapes(self)

    @property
    def layers(self) -> int:
        return len(self.units)

    def has_activation(self, boundary: int) -> bool:
        """Whether the unit ending at ``boundary`` (1..L) has an activation."""
        return self.units[boundary - 1].act is not None

    def activation_boundaries(self) -> list[int]:
        """The boundaries 1..L-1 that carry an activation: the choices of depth compression."""
        return [b for b in range(1, self.layers) if self.has_activation(b)]

    def ends(self) -> list[int]:
        """The boundaries a depth compression span may start or end at: activations, insertable ones, 0 and L."""
        return sorted({0, *self.activation_boundaries(), *self.insertable, self.layers})

    def removed_by(self, span: Pair) -> list[int]:
        """The activations of the source that merging ``span`` into one convolution removes."""
        i, j = span
        return [b for b in self.activation_boundaries() if i < b < j]

    def with_moved_activations(self) -> ConvChain:
        """This chain where a merged block that removes activations may end in one at a boundary that has none
        (a linear bottleneck's output, a residual sum): a copy of the nearest activation before it.

        Merging a whole inverted residual block is one dense convolution, and far faster; without an activation
        at its output the network around it would be linear."""
        insertable: dict[int, nn.Module] = {}
        last: nn.Module | None = None
        for k, unit in enumerate(self.units[:-1], start=1):
            if unit.act is not None:
                last = unit.act
            elif unit.post is None and last is not None:
                insertable[k] = copy.deepcopy(last)
        return dataclasses.replace(self, insertable=insertable)

    def inner_residuals(self, span: Pair) -> list[Pair]:
        """The identity residuals wholly inside ``span``, relative to its first boundary."""
        i, j = span
        return [(a - i, b - i) for a, b in self.residuals if i <= a and b <= j and (a, b) not in self.shortcuts]

    def mergeable(self, span: Pair) -> bool:
        """Whether units i+1..j can become one convolution: no pooling between, no residual cut in two."""
        i, j = span
        if not 0 <= i < j <= self.layers:
            return False
        if any(self.units[k - 1].post is not None for k in range(i + 1, j)):
            return False
        for a, b in self.residuals:
            if (i < a < j and b > j) or (a < i and i < b < j):
                return False
            if (a, b) in self.shortcuts and i <= a and b <= j and (a, b) != (i, j):  # projected: block input only
                return False
        return True

    def geometry(self, span: Pair) -> ConvGeometry:
        """The merged convolution's channels, kernel, stride, padding and groups for ``span``."""
        i, j = span
        return span_geometry([u.conv for u in self.units[i:j]], self.inner_residuals(span))


# ---------------------------------------------------------------------------------------------- extraction


def extract_chain(model: nn.Module, input_shape: Sequence[int] | None = None) -> ConvChain:
    """The conv chain of any model whose ``torch.fx`` graph is a chain of conv units, residuals and a head.

    The units share their modules with ``model``. ``input_shape`` is (C, H, W);
    an ArchitectureNetwork knows its own. UnsupportedNetworkError names the
    first graph node that does not fit.
    """
    from archetype.compress.conv_graph import extract_graph_chain

    if isinstance(model, ArchitectureNetwork) and input_shape is None:
        t = model.input_type
        input_shape = (t.C, t.H, t.W)  # type: ignore[attr-defined]
    if input_shape is None or len(input_shape) != 3:
        raise UnsupportedNetworkError(f"input_shape must be (C, H, W), got {input_shape!r}")
    return extract_graph_chain(model, input_shape)


class _ChainBuilder:
    def __init__(self) -> None:
        self.units: list[ConvUnit] = []
        self.residuals: list[Pair] = []

    @staticmethod
    def accepts(module: nn.Module) -> bool:
        kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Sequential, nn.Identity, InvertedResidualModule, ResidualModule)
        return isinstance(module, kinds + ACTIVATION_TYPES + POOLING_TYPES)

    def walk(self, name: str, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            self._conv(name, module)
        elif isinstance(module, nn.BatchNorm2d):
            unit = self._last(name, module)
            if unit.bn is not None or unit.act is not None or unit.post is not None:
                raise UnsupportedNetworkError(f"module '{name}': batch norm must follow a convolution directly")
            unit.bn = module
        elif isinstance(module, ACTIVATION_TYPES):
            unit = self._last(name, module)
            if unit.act is not None or unit.post is not None:
                raise UnsupportedNetworkError(f"module '{name}': a second activation after one convolution")
            unit.act = module
        elif isinstance(module, POOLING_TYPES):
            unit = self._last(name, module)
            if unit.post is not None:
                raise UnsupportedNetworkError(f"module '{name}': two pooling layers after one convolution")
            unit.post = module
        elif isinstance(module, nn.Identity):
            return
        elif isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                self.walk(f"{name}.{child_name}", child)
        elif isinstance(module, InvertedResidualModule):
            self._residual(name, module.body, module.residual, None)
        elif isinstance(module, ResidualModule):
            if not isinstance(module.shortcut, nn.Identity):
                raise UnsupportedNetworkError(
                    f"module '{name}': a residual block with a projection shortcut is not a chain"
                )
            if not isinstance(module.drop_path, nn.Identity):
                raise UnsupportedNetworkError(f"module '{name}': drop path inside a residual block is not supported")
            self._residual(name, module.body, True, module.act)
        else:
            raise UnsupportedNetworkError(f"module '{name}' ({type(module).__name__}) is not a conv unit")

    def _conv(self, name: str, conv: nn.Conv2d) -> None:
        self.units.append(ConvUnit(zero_padded(name, conv), name=name))

    def _last(self, name: str, module: nn.Module) -> ConvUnit:
        if not self.units:
            raise UnsupportedNetworkError(f"module '{name}' ({type(module).__name__}) comes before any convolution")
        return self.units[-1]

    def _residual(self, name: str, body: nn.Module, residual: bool, act: nn.Module | None) -> None:
        start = len(self.units)
        self.walk(f"{name}.body", body)
        end = len(self.units)
        if end == start:
            raise UnsupportedNetworkError(f"module '{name}': a residual block without a convolution")
        last = self.units[-1]
        if last.act is not None or last.post is not None:
            raise UnsupportedNetworkError(f"module '{name}': the residual body ends in an activation or pooling")
        if residual:
            self.residuals.append((start, end))
        last.act = act


def zero_padded(name: str, conv: nn.Conv2d) -> nn.Conv2d:
    """``conv`` with a string padding written as numbers; UnsupportedNetworkError if it cannot merge."""
    if conv.padding_mode != "zeros":
        raise UnsupportedNetworkError(f"module '{name}': padding mode {conv.padding_mode!r}, only zeros merge")
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            padding = (0, 0)
        elif all(s == 1 for s in conv.stride) and all(d * (k - 1) % 2 == 0
                                                       for d, k in zip(conv.dilation, conv.kernel_size)):
            padding = tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))
        else:
            raise UnsupportedNetworkError(f"module '{name}': padding 'same' with an even kernel is asymmetric")
        conv.padding = padding
    return conv


def _boundary_shapes(chain: ConvChain) -> list[Shape]:
    """Shapes at boundaries 0..L from a forward pass of zeros; checks that each residual adds equal shapes."""
    shapes: list[Shape] = [chain.input_shape]
    with torch.no_grad():
        x = torch.zeros(1, *chain.input_shape)
        for k, unit in enumerate(chain.units, start=1):
            try:
                x = unit.conv(x)
            except RuntimeError as exc:
                raise UnsupportedNetworkError(f"module '{unit.name}': {exc}".splitlines()[0]) from None
            for a, b in chain.residuals:
                if b != k:
                    continue
                skip = shapes[a]
                if (a, b) in chain.shortcuts:
                    skip = tuple(chain.shortcuts[(a, b)].conv(torch.zeros(1, *shapes[a])).shape[1:])
                if skip != tuple(x.shape[1:]):
                    raise UnsupportedNetworkError(
                        f"module '{unit.name}': residual adds shape {skip} to {tuple(x.shape[1:])}"
                    )
            if unit.post is not None:
                x = unit.post(x)
            shapes.append(tuple(x.shape[1:]))  # type: ignore[arg-type]
    return shapes


# ------------------------------------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class ConvGeometry:
    """The shape of a (merged) convolution."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_geometry(conv: nn.Conv2d) -> ConvGeometry:
    """A Conv2d's geometry, its dilation expanded into the kernel."""
    kernel = tuple(d * (k - 1) + 1 for d, k in zip(_pair(conv.dilation), _pair(conv.kernel_size)))
    return ConvGeometry(
        conv.in_channels, conv.out_channels, kernel, _pair(conv.stride), _pair(conv.padding), conv.groups  # type: ignore[arg-type]
    )


def _compose(a: ConvGeometry, b: ConvGeometry) -> ConvGeometry:
    """b after a: kernel sa(kb-1)+ka, stride sa*sb, padding sa*pb+pa, groups gcd(ga, gb)."""
    kernel = tuple(sa * (kb - 1) + ka for sa, ka, kb in zip(a.stride, a.kernel, b.kernel))
    stride = tuple(sa * sb for sa, sb in zip(a.stride, b.stride))
    padding = tuple(sa * pb + pa for sa, pa, pb in zip(a.stride, a.padding, b.padding))
    return ConvGeometry(a.in_channels, b.out_channels, kernel, stride, padding, math.gcd(a.groups, b.groups))  # type: ignore[arg-type]


def _identity_geometry(channels: int) -> ConvGeometry:
    return ConvGeometry(channels, channels, (1, 1), (1, 1), (0, 0), channels)


def span_geometry(convs: Sequence[nn.Conv2d], residuals: Iterable[Pair] = ()) -> ConvGeometry:
    """The geometry of ``convs`` merged into one, with ``residuals`` (relative boundaries) folded in."""
    ends = {b: a for a, b in residuals}
    prefix = [_identity_geometry(convs[0].in_channels)]
    for k, conv in enumerate(convs, start=1):
        g = _compose(prefix[-1], conv_geometry(conv))
        if k in ends:
            g = _fold_geometry(g, prefix[ends[k]])
        prefix.append(g)
    return prefix[-1]


def _fold_geometry(total: ConvGeometry, skip: ConvGeometry) -> ConvGeometry:
    if total.stride != skip.stride or total.out_channels != skip.out_channels:
        raise UnsupportedNetworkError("a residual inside a merge block spans a stride or a change of channels")
    for k_total, k_skip, p_total, p_skip in zip(total.kernel, skip.kernel, total.padding, skip.padding):
        offset = p_total - p_skip
        if offset < 0 or offset + k_skip > k_total:
            raise UnsupportedNetworkError("a residual inside a merge block is not aligned with the merged kernel")
    return ConvGeometry(
        total.in_channels, total.out_channels, total.kernel, total.stride, total.padding,
        math.gcd(total.groups, skip.groups),
    )


# ----------------------------------------------------------------------------------------- kernel algebra


@dataclass(frozen=True)
class AffineConv:
    """y = conv(x, weight) + bias in float64: the algebra of merging (BN folding, composition, residual folding)."""

    weight: torch.Tensor  # (O, I/groups, kh, kw)
    bias: torch.Tensor  # (O,)
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) * self.groups

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @classmethod
    def identity(cls, channels: int) -> AffineConv:
        """x itself: a 1x1 depthwise kernel of ones."""
        return cls(torch.ones(channels, 1, 1, 1, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64),
                   (1, 1), (0, 0), channels)

    @classmethod
    def of(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> AffineConv:
        """A Conv2d (dilation expanded into the kernel) with an eval-mode batch norm folded in."""
        g = conv_geometry(conv)
        w = conv.weight.detach().to(torch.float64)
        dh, dw = _pair(conv.dilation)
        weight = w.new_zeros(w.shape[0], w.shape[1], *g.kernel)
        weight[:, :, ::dh, ::dw] = w  # (O, I/g, d(k-1)+1, ...) with zeros between the taps
        bias = conv.bias.detach().to(torch.float64) if conv.bias is not None else w.new_zeros(w.shape[0])
        if bn is not None:
            scale = bn.weight.detach().to(torch.float64) if bn.affine else w.new_ones(w.shape[0])
            shift = bn.bias.detach().to(torch.float64) if bn.affine else w.new_zeros(w.shape[0])
            if bn.running_var is None or bn.running_mean is None:
                raise UnsupportedNetworkError("a batch norm without running statistics cannot be folded")
            scale = scale / torch.sqrt(bn.running_var.to(torch.float64) + bn.eps)
            weight = weight * scale[:, None, None, None]
            bias = (bias - bn.running_mean.to(torch.float64)) * scale + shift
        return cls(weight, bias, g.stride, g.padding, g.groups)

    def regrouped(self, groups: int) -> AffineConv:
        """The same convolution written with ``groups`` groups, a divisor of its own (block-diagonal expansion)."""
        if groups == self.groups:
            return self
        if self.groups % groups:
            raise ValueError(f"cannot write a {self.groups}-group convolution with {groups} groups")
        per, cin_g = self.groups // groups, self.weight.shape[1]
        out_g = self.out_channels // self.groups
        weight = self.weight.new_zeros(self.out_channels, cin_g * per, *self.kernel)
        for k in range(self.groups):
            offset = (k % per) * cin_g
            weight[k * out_g:(k + 1) * out_g, offset:offset + cin_g] = self.weight[k * out_g:(k + 1) * out_g]
        return AffineConv(weight, self.bias, self.stride, self.padding, groups)

    def then(self, other: AffineConv) -> AffineConv:
        """``other`` applied after ``self`` as one convolution (exact on an input zero-padded once)."""
        if other.in_channels != self.out_channels:
            raise ValueError(f"cannot compose: {self.out_channels} channels into {other.in_channels}")
        g = math.gcd(self.groups, other.groups)
        a, b = self.regrouped(g), other.regrouped(g)
        (sh, sw), (ka_h, ka_w), (kb_h, kb_w) = a.stride, a.kernel, b.kernel
        wa = a.weight.reshape(g, a.out_channels // g, *a.weight.shape[1:])  # (g, M/g, C/g, ka_h, ka_w)
        wb = b.weight.reshape(g, b.out_channels // g, *b.weight.shape[1:])  # (g, O/g, M/g, kb_h, kb_w)
        k_h, k_w = sh * (kb_h - 1) + ka_h, sw * (kb_w - 1) + ka_w
        weight = wa.new_zeros(g, wb.shape[1], wa.shape[2], k_h, k_w)
        for qh in range(kb_h):
            for qw in range(kb_w):
                tap = torch.einsum("gom,gmchw->gochw", wb[..., qh, qw], wa)
                weight[..., sh * qh:sh * qh + ka_h, sw * qw:sw * qw + ka_w] += tap
        carried = torch.einsum("gom,gm->go", wb.sum(dim=(3, 4)), a.bias.reshape(g, -1)).reshape(-1)
        return AffineConv(
            weight.reshape(b.out_channels, wa.shape[2], k_h, k_w),
            b.bias + carried,
            (sh * b.stride[0], sw * b.stride[1]),
            (sh * b.padding[0] + a.padding[0], sw * b.padding[1] + a.padding[1]),
            g,
        )

    def plus(self, skip: AffineConv) -> AffineConv:
        """``self + skip`` as one convolution: ``skip``'s kernel is added where its taps align (a residual fold)."""
        if skip.stride != self.stride or skip.out_channels != self.out_channels:
            raise ValueError("a residual fold needs equal strides and channels")
        g = math.gcd(self.groups, skip.groups)
        a, b = self.regrouped(g), skip.regrouped(g)
        oh, ow = a.padding[0] - b.padding[0], a.padding[1] - b.padding[1]
        weight = a.weight.clone()
        weight[:, :, oh:oh + b.kernel[0], ow:ow + b.kernel[1]] += b.weight
        return AffineConv(weight, a.bias + b.bias, a.stride, a.padding, g)

    def to_conv2d(self) -> nn.Conv2d:
        """A float32 ``nn.Conv2d`` with bias computing this convolution."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel, self.stride, self.padding,
                         groups=self.groups, bias=True)
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            conv.bias.copy_(self.bias)
        return conv


def merge_units(units: Sequence[tuple[nn.Conv2d, nn.BatchNorm2d | None]], residuals: Iterable[Pair] = ()) -> AffineConv:
    """Convs (with eval-mode batch norm) and ``residuals`` between their relative boundaries as one convolution."""
    ends = {b: a for a, b in residuals}
    prefix = [AffineConv.identity(units[0][0].in_channels)]
    for k, (conv, bn) in enumerate(units, start=1):
        merged = prefix[-1].then(AffineConv.of(conv, bn))
        if k in ends:
            merged = merged.plus(prefix[ends[k]])
        prefix.append(merged)
    return prefix[-1]


# ----------------------------------------------------------------------------------------------- modules


class PaddedSpan(nn.Module):
    """Units of one merge block, no activation between: input zero-padded once, convs run unpadded, skips cropped.

    This is the trainable form of a merge block; ``merged()`` is the one
    convolution that computes exactly the same thing.
    """

    def __init__(self, units: Sequence[ConvUnit], residuals: Iterable[Pair] = ()) -> None:
        super().__init__()
        residuals = list(residuals)
        geometry = span_geometry([u.conv for u in units], residuals)
        self.padding = geometry.padding
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        remaining = [geometry.padding]  # padding still to be consumed at each relative boundary
        for unit in units:
            conv = copy.deepcopy(unit.conv)
            g = conv_geometry(conv)
            (ph, pw), (sh, sw) = remaining[-1], g.stride
            remaining.append(((ph - g.padding[0]) // sh, (pw - g.padding[1]) // sw))
            self.convs.append(conv)  # keeps its padding for merging; forward runs it unpadded
            self.norms.append(copy.deepcopy(unit.bn) if unit.bn is not None else nn.Identity())
        self.adds: list[list[tuple[int, int, int]]] = [[] for _ in range(len(units) + 1)]
        for a, b in residuals:
            crop = (remaining[a][0] - remaining[b][0], remaining[a][1] - remaining[b][1])
            self.adds[b].append((a, *crop))
        self.sources = sorted({a for a, _ in residuals})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding
        x = F.pad(x, (pw, pw, ph, ph))  # (B, C, H + 2P, W + 2P)
        saved = {0: x}
        for k, (conv, norm) in enumerate(zip(self.convs, self.norms), start=1):
            x = norm(F.conv2d(x, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups))
            for source, ch, cw in self.adds[k]:
                skip = saved[source]
                x = x + skip[..., ch:skip.shape[-2] - ch, cw:skip.shape[-1] - cw]
            if k in self.sources:
                saved[k] = x
        return x

    def merged(self) -> nn.Conv2d:
        """The single convolution equal to this block (batch norm folded with its running statistics)."""
        norms = [norm if isinstance(norm, nn.BatchNorm2d) else None for norm in self.norms]
        units = list(zip(self.convs, norms))
        residuals = [(a, b) for b, adds in enumerate(self.adds) for a, _, _ in adds]
        merged = merge_units(units, residuals)
        ph, pw = self.padding
        return AffineConv(merged.weight, merged.bias, merged.stride, (ph, pw), merged.groups).to_conv2d()


class ChainNetwork(nn.Module):
    """A conv chain cut into merge blocks: block, residual adds, kept activation, pooling; then the tail."""

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        spans: Sequence[Pair],
        acts: Sequence[nn.Module | None],
        posts: Sequence[nn.Module | None],
        skips: Sequence[Sequence[int]],
        tail: nn.Module,
        shortcuts: dict[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.spans = [tuple(s) for s in spans]
        self.blocks = nn.ModuleList(blocks)
        self.acts = nn.ModuleList(a if a is not None else nn.Identity() for a in acts)
        self.posts = nn.ModuleList(p if p is not None else nn.Identity() for p in posts)
        self.skips = [list(s) for s in skips]  # per block: boundaries whose tensor is added to its output
        self.sources = sorted({a for s in self.skips for a in s})
        self.shortcuts = nn.ModuleDict(shortcuts or {})  # "a_b": the projection of boundary a's tensor into block b
        self.tail = tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        saved = {0: x}
        for (_, end), block, act, post, skips in zip(self.spans, self.blocks, self.acts, self.posts, self.skips):
            y = block(x)
            for source in skips:
                key = f"{source}_{end}"
                y = y + (self.shortcuts[key](saved[source]) if key in self.shortcuts else saved[source])
            x = post(act(y))
            if end in self.sources:
                saved[end] = x
        return self.tail(x)


def chain_network(chain: ConvChain, spans: Sequence[Pair], kept: Iterable[int] | None = None,
                  inserted: Iterable[int] = ()) -> ChainNetwork:
    """A trainable network of ``chain`` cut into merge blocks ``spans``, keeping activations at ``kept`` only and
    adding the chain's insertable ones at ``inserted`` (block ends).

    ``kept`` defaults to every block end. Modules are copied, so training it
    leaves the chain's model as it was.
    """
    spans = [tuple(s) for s in spans]
    if not spans or spans[0][0] != 0 or spans[-1][1] != chain.layers or any(
        s[1] != t[0] for s, t in itertools.pairwise(spans)
    ) or any(i >= j for i, j in spans):
        raise SpecError(f"merge blocks {spans} do not cover units 1..{chain.layers} in order")
    for span in spans:
        if not chain.mergeable(span):
            raise SpecError(f"merge block {span} crosses a pooling layer or cuts a residual in two")
    ends = {j for _, j in spans}
    kept_set = set(ends if kept is None else kept)
    inserted = set(inserted)
    if not inserted <= ends & set(chain.insertable):
        raise SpecError(f"activations inserted at {sorted(inserted)}: not block ends without an activation")
    blocks, acts, posts = [], [], []
    skips: list[list[int]] = [[] for _ in spans]
    shortcuts: dict[str, nn.Module] = {}
    for n, (i, j) in enumerate(spans):
        blocks.append(PaddedSpan(chain.units[i:j], chain.inner_residuals((i, j))))
        last = chain.units[j - 1]
        act = last.act if last.act is not None and j in kept_set else chain.insertable.get(j) if j in inserted else None
        acts.append(copy.deepcopy(act))
        posts.append(copy.deepcopy(last.post) if last.post is not None else None)
        for a, b in chain.residuals:
            if b == j and (a < i or (a == i and (a, b) in chain.shortcuts)):
                if a not in ends and a != 0:
                    raise SpecError(f"residual {(a, b)}: its source is inside a merge block")
                skips[n].append(a)
                if (a, b) in chain.shortcuts:
                    unit = chain.shortcuts[(a, b)]
                    parts = [unit.conv] if unit.bn is None else [unit.conv, unit.bn]
                    shortcuts[f"{a}_{b}"] = copy.deepcopy(nn.Sequential(*parts))
    return ChainNetwork(blocks, spans, acts, posts, skips, copy.deepcopy(chain.tail), shortcuts)


def merge_network(network: ChainNetwork) -> ChainNetwork:
    """The deployable network: every block of ``network`` (in eval mode) replaced by its single convolution."""
    blocks = [b.merged() if isinstance(b, PaddedSpan) else copy.deepcopy(b) for b in network.blocks]
    acts = [copy.deepcopy(a) if not isinstance(a, nn.Identity) else None for a in network.acts]
    posts = [copy.deepcopy(p) if not isinstance(p, nn.Identity) else None for p in network.posts]
    shortcuts = {key: _folded(module) for key, module in network.shortcuts.items()}
    merged = ChainNetwork(blocks, network.spans, acts, posts, network.skips, copy.deepcopy(network.tail), shortcuts)
    return merged.eval()


def renormalized(network: ChainNetwork, x: torch.Tensor) -> ChainNetwork:
    """``network`` (merged) with a batch norm after each block that is the identity on ``x``'s statistics.

    Merging folds the source's batch norms away; pruning (statistics re-estimated
    after cutting channels) and fine-tuning then lose them. Restored this way, a
    later step treats the merged network as it treats the source; the exporter
    folds them again.
    """
    outputs: dict[int, torch.Tensor] = {}
    hooks = [block.register_forward_hook(lambda _m, _i, out, k=k: outputs.__setitem__(k, out))
             for k, block in enumerate(network.blocks)]
    try:
        with torch.no_grad():
            network.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    blocks: list[nn.Module] = []
    for k, block in enumerate(network.blocks):
        mean, var = outputs[k].mean((0, 2, 3)), outputs[k].var((0, 2, 3), unbiased=False)
        norm = nn.BatchNorm2d(mean.numel())
        with torch.no_grad():
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.weight.copy_(torch.sqrt(var + norm.eps))
            norm.bias.copy_(mean)
        blocks.append(nn.Sequential(block, norm))
    network.blocks = nn.ModuleList(blocks)
    return network.eval()


def _folded(shortcut: nn.Module) -> nn.Module:
    """A shortcut's conv with its batch norm folded in (eval mode)."""
    layers = list(shortcut.children()) if isinstance(shortcut, nn.Sequential) else [shortcut]
    if not isinstance(layers[0], nn.Conv2d) or len(layers) > 2:
        return copy.deepcopy(shortcut)
    bn = layers[1] if len(layers) == 2 and isinstance(layers[1], nn.BatchNorm2d) else None
    return AffineConv.of(layers[0], bn).to_conv2d()
