"""Batched data augmentation on tensors: padded or random-resized crops, flips, mixup and cutmix.

Every function takes a whole batch (B, C, H, W) on any device and draws its random
numbers from a CPU generator, so that a seed gives the same augmentation on every device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def padded_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by up to ``padding`` pixels either way, the border filled with zeros (the mean)."""
    if padding <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device)
    rows = (offsets[0][:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (offsets[1][:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def random_resized_crop(
    x: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Each image cropped to a random area share in ``scale`` and aspect in ``ratio``, resized back (bilinear)."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    sx = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width as a share of the image
    sy = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sx)  # crop centre in [-1, 1] coordinates
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sy)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability one half."""
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(3), x)


def mix_batch(
    x: torch.Tensor, mixup: float, cutmix: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (alpha ``mixup``) or cutmix (alpha ``cutmix``), one drawn per batch when both are on.

    Returns the mixed batch, the permutation whose labels were mixed in, and the share
    ``lam`` of the original labels: the loss is ``lam * CE(y) + (1 - lam) * CE(y[perm])``.
    """
    b, _, h, w = x.shape
    perm = torch.randperm(b, generator=generator).to(x.device)
    draws = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
    use_cutmix = cutmix > 0 and (mixup <= 0 or draws.random() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(draws.beta(alpha, alpha)) if alpha > 0 else 1.0
    if not use_cutmix:
        return lam * x + (1 - lam) * x[perm], perm, lam
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(draws.integers(h)), int(draws.integers(w))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
    return mixed, perm, 1.0 - (bottom - top) * (right - left) / (h * w)
