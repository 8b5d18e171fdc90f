"""Context clusters: an image as a set of points, grouped around a few centres and mixed within each group."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from archetype.searchspace.cost import bn_params, linear_params, mlp_params
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_positive, check_probability, require
from archetype.searchspace.ops.layers import ConvMlp, PreNormBlock
from archetype.searchspace.types import Image, TensorType


def _pooling_matrix(h: int, w: int, side: int) -> torch.Tensor:
    """(H*W, side²): the adaptive average pooling of a row-major H x W map to a side x side grid, as a matmul."""
    def bins(n: int) -> torch.Tensor:
        rows = torch.zeros(n, side)
        for j in range(side):
            lo, hi = (j * n) // side, -(-(j + 1) * n // side)
            rows[lo:hi, j] = 1.0 / (hi - lo)
        return rows

    return torch.einsum("ia,jb->ijab", bins(h), bins(w)).reshape(h * w, side * side)


class _ContextCluster(nn.Module):
    """Points (features and x, y position) clustered to the most similar of the pooled centres; mixed per cluster."""

    def __init__(self, c: int, h: int, w: int, side: int, heads: int) -> None:
        super().__init__()
        self.c, self.heads = c, heads
        ys, xs = torch.meshgrid(torch.linspace(-0.5, 0.5, h), torch.linspace(-0.5, 0.5, w), indexing="ij")
        self.register_buffer("position", torch.stack([xs, ys])[None], persistent=False)  # (1, 2, H, W)
        self.register_buffer("pool", _pooling_matrix(h, w, side), persistent=False)  # (N, M)
        self.fc = nn.Conv2d(c + 2, 2 * c, 1)  # to the points that are clustered and the values that are mixed
        self.alpha = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(()))
        self.proj = nn.Conv2d(c, c, 1)

    def similarity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each point's gated similarity to its own centre, zero to the others (B*heads, M, N); values and centres."""
        b, _, h, w = x.shape
        z = self.fc(torch.cat([x, self.position.expand(b, -1, -1, -1)], dim=1))  # (B, 2C, H, W)
        z = z.reshape(b, 2, self.heads, self.c // self.heads, h * w).transpose(0, 1).flatten(1, 2)  # (2, B*h, d, N)
        centres = z @ self.pool  # (2, B*heads, d, M)
        points, values = z.transpose(2, 3).unbind(0)  # (B*heads, N, d)
        point_centres, value_centres = centres.transpose(2, 3).unbind(0)  # (B*heads, M, d)
        cosine = F.normalize(point_centres, dim=-1) @ F.normalize(points, dim=-1).transpose(1, 2)  # (B*h, M, N)
        sim = torch.sigmoid(self.beta + self.alpha * cosine)
        own = sim == sim.max(dim=1, keepdim=True).values  # each point's most similar centre
        return sim * own, values, value_centres

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        b, c, h, w = x.shape
        sim, values, value_centres = self.similarity(x)
        weight = sim.sum(dim=-1, keepdim=True) + 1.0  # the value centre counts as one more member
        clusters = (sim @ values + value_centres) / weight  # (B*heads, M, d)
        out = sim.transpose(1, 2) @ clusters  # (B*heads, N, d): each point gets its own cluster back
        return self.proj(out.transpose(1, 2).reshape(b, c, h, w))


@operator(
    "context_cluster_block",
    family="clustering",
    paper="Image as Set of Points (Context Clusters), arXiv:2303.01494",
)
@dataclass(frozen=True)
class ContextClusterBlock(Operator):
    """Context cluster block: points clustered to pooled centres and mixed within clusters, then an MLP; residual."""

    centres: int = 4
    heads: int = 1
    mlp_ratio: int = 4
    drop_path: float = 0.0
    domain: ClassVar = {"centres": (4, 16), "heads": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "centres", "heads", "mlp_ratio")
        check_probability(self, "drop_path")
        side = math.isqrt(self.centres)
        require(self, "centres", side * side == self.centres, "a square number (a side x side grid of centres)")

    def _side(self) -> int:
        return math.isqrt(self.centres)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        if min(x.H, x.W) < self._side():  # type: ignore[attr-defined]
            raise OperatorTypeError(f"operator '{self.name}' cannot pool {x} to a {self._side()}x{self._side()} grid")
        if x.C % self.heads:  # type: ignore[attr-defined]
            raise OperatorTypeError(f"operator '{self.name}' cannot split the channels of {x} into {self.heads} heads")
        return x  # type: ignore[return-value]

    def build(self, x: Image) -> nn.Module:
        self.output_type(x)
        mixer = _ContextCluster(x.C, x.H, x.W, self._side(), self.heads)
        mlp = ConvMlp(x.C, x.C * self.mlp_ratio)
        return PreNormBlock(nn.GroupNorm(1, x.C), mixer, nn.GroupNorm(1, x.C), mlp, self.drop_path)

    def params(self, x: Image) -> int:
        c = x.C
        mixer = linear_params(c + 2, 2 * c) + 2 + linear_params(c, c)
        return 2 * bn_params(c) + mixer + mlp_params(c, c * self.mlp_ratio)

    def macs(self, x: Image) -> int:
        c, n, m = x.C, x.H * x.W, self.centres
        convs = n * ((c + 2) * 2 * c + c * c + 2 * c * c * self.mlp_ratio)
        return convs + 2 * c * n * m + 3 * m * n * c  # pooling points and values; similarity, gather, dispatch
