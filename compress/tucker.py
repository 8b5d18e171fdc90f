"""Tucker-2 convolutions and low-rank linear layers, ranks by singular-value truncation, adapted while training.

A weight W (O, I, kh, kw) is held as a core S (r_o, r_i, kh, kw) and two
orthonormal bases U_o (O, r_o), U_i (I, r_i): W = S x1 U_o x2 U_i. It runs as
a 1x1 conv (input basis), the core conv and a 1x1 conv (output basis). A
linear weight (O, I) is the same with an empty kernel. The rank of a mode is
the smallest j with ||d[j:]|| < tau * ||d||, d the singular values of that mode's
unfolding. During fine-tuning the ranks adapt (rank-adaptive spectral pruning,
TDLRT): augment each basis with its gradient through a QR, train the core,
truncate the core's unfoldings by tau and rotate the bases.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from archetype.compress.fine_tune import FineTuneConfig, distillation_loss
from archetype.compress.step import CompressionContext, StepReport, register_step
from archetype.runtime.data import Dataset, sample_dataset
from archetype.runtime.training import LossFn, TrainConfig, TrainingError, torch_threads


def truncated_rank(singular_values: torch.Tensor, tau: float, min_rank: int = 1) -> int:
    """The smallest j with ||d[j:]|| < tau * ||d|| (j = len(d) when tau is 0), at least ``min_rank``."""
    d = singular_values.detach().double()
    total = float(d.norm())
    if total == 0.0:
        return min_rank
    tails = torch.flip(torch.cumsum(torch.flip(d**2, [0]), 0), [0]).sqrt()  # tails[j] = ||d[j:]||
    tails = torch.cat([tails, tails.new_zeros(1)])
    for j in range(len(d) + 1):
        if float(tails[j]) < tau * total or (tau == 0.0 and j == len(d)):
            return max(min_rank, min(j, len(d)))
    return len(d)


def _unfold(tensor: torch.Tensor, mode: int) -> torch.Tensor:
    """The mode-``mode`` unfolding: that mode's index by the rest, (n_mode, prod of the others)."""
    return tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)


def _mode_product(tensor: torch.Tensor, matrix: torch.Tensor, mode: int) -> torch.Tensor:
    """``tensor`` x_mode ``matrix``: mode ``mode`` of size n becomes ``matrix.shape[0]`` (matrix is (m, n))."""
    moved = tensor.movedim(mode, 0)
    shape = moved.shape
    result = (matrix @ moved.reshape(shape[0], -1)).reshape(matrix.shape[0], *shape[1:])
    return result.movedim(0, mode)


class _TuckerFactors(nn.Module):
    """The core and the output / input bases of a low-rank weight, with rank augmentation and truncation."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, tau: float) -> None:
        super().__init__()
        weight = weight.detach()
        bases = []
        for mode in (0, 1):
            u, d, _ = torch.linalg.svd(_unfold(weight, mode), full_matrices=False)
            bases.append(u[:, : truncated_rank(d, tau)])
        core = _mode_product(_mode_product(weight, bases[0].T, 0), bases[1].T, 1)
        self.out_basis = nn.Parameter(bases[0].contiguous())  # (O, r_o)
        self.in_basis = nn.Parameter(bases[1].contiguous())  # (I, r_i)
        self.core = nn.Parameter(core.contiguous())  # (r_o, r_i, *kernel)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.tau = tau

    @property
    def ranks(self) -> tuple[int, int]:
        return self.core.shape[0], self.core.shape[1]

    def full_weight(self) -> torch.Tensor:
        """W = S x1 U_o x2 U_i."""
        return _mode_product(_mode_product(self.core, self.out_basis, 0), self.in_basis, 1)

    @torch.no_grad()
    def augment(self) -> None:
        """U <- QR([U, grad U]) (rank at most 2r, capped at full); the core is projected onto the new bases."""
        bases = [self.out_basis, self.in_basis]
        core = self.core.detach()
        new_bases = []
        for mode, basis in enumerate(bases):
            grad = basis.grad if basis.grad is not None else torch.zeros_like(basis)
            q, _ = torch.linalg.qr(torch.cat([basis.detach(), -grad], dim=1))
            q = q[:, : min(2 * basis.shape[1], basis.shape[0])]
            core = _mode_product(core, q.T @ basis.detach(), mode)
            new_bases.append(q)
        self._set(core, new_bases)

    @torch.no_grad()
    def truncate(self, tau: float | None = None) -> None:
        """New rank per mode by truncating the core's unfolding to ``tau``; bases and core rotated to match."""
        tau = self.tau if tau is None else tau
        core = self.core.detach()
        bases = [self.out_basis.detach(), self.in_basis.detach()]
        for mode in (0, 1):
            p, d, _ = torch.linalg.svd(_unfold(core, mode), full_matrices=False)
            p = p[:, : truncated_rank(d, tau)]
            core = _mode_product(core, p.T, mode)
            bases[mode] = bases[mode] @ p
        self._set(core, bases)

    def _set(self, core: torch.Tensor, bases: list[torch.Tensor]) -> None:
        self.core = nn.Parameter(core.contiguous())
        self.out_basis = nn.Parameter(bases[0].contiguous())
        self.in_basis = nn.Parameter(bases[1].contiguous())


class TuckerConv2d(_TuckerFactors):
    """A Tucker-2 convolution: 1x1 conv into the input basis, the core conv, 1x1 conv out of the output basis."""

    def __init__(self, conv: nn.Conv2d, tau: float = 0.1) -> None:
        if conv.groups != 1:
            raise ValueError("TuckerConv2d takes a dense convolution (groups=1)")
        super().__init__(conv.weight, conv.bias, tau)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.in_basis.T[:, :, None, None])  # (B, r_i, H, W)
        x = F.conv2d(x, self.core, None, self.stride, self.padding, self.dilation)  # (B, r_o, H', W')
        return F.conv2d(x, self.out_basis[:, :, None, None], self.bias)  # (B, O, H', W')


class LowRankLinear(_TuckerFactors):
    """A linear layer W = U_o S U_i^T run as three small matrix products."""

    def __init__(self, linear: nn.Linear, tau: float = 0.1) -> None:
        super().__init__(linear.weight, linear.bias, tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(F.linear(x, self.in_basis.T), self.core), self.out_basis, self.bias)


def _macs_ratio(layer: _TuckerFactors, full: int) -> float:
    r_o, r_i = layer.ranks
    kernel = math.prod(layer.core.shape[2:])
    out_c, in_c = layer.out_basis.shape[0], layer.in_basis.shape[0]
    return (in_c * r_i + r_o * r_i * kernel + r_o * out_c) / full


def decompose(model: nn.Module, tau: float = 0.1, max_macs_ratio: float = 0.8) -> dict[str, tuple[int, int]]:
    """Replace in place each dense conv (kernel > 1) and linear layer whose low-rank form costs under
    ``max_macs_ratio`` of its multiply-accumulates per output position; returns the ranks by layer name."""
    ranks = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d) and module.groups == 1 and max(module.kernel_size) > 1:
            layer: _TuckerFactors = TuckerConv2d(module, tau)
        elif isinstance(module, nn.Linear) and min(module.in_features, module.out_features) > 1:
            layer = LowRankLinear(module, tau)
        else:
            continue
        if _macs_ratio(layer, module.weight.numel()) < max_macs_ratio:
            model.set_submodule(name, layer)
            ranks[name] = layer.ranks
    return ranks


def low_rank_layers(model: nn.Module) -> dict[str, _TuckerFactors]:
    return {name: m for name, m in model.named_modules() if isinstance(m, _TuckerFactors)}


def rank_adaptive_fine_tune(
    model: nn.Module, dataset: Dataset, config: TrainConfig, adapt_every: int = 10, tau: float | None = None,
    loss: LossFn | None = None,
) -> list[dict[str, tuple[int, int]]]:
    """Fine-tune in place; every ``adapt_every`` steps the low-rank layers augment, train, truncate.

    Returns the ranks after each truncation.
    """
    layers = list(low_rank_layers(model).values())
    x, y = dataset.train.x, dataset.train.y
    shuffle = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, tuple[int, int]]] = []
    model.train()

    def optimizer_without_bases() -> torch.optim.Optimizer:
        bases = {id(p) for layer in layers for p in (layer.out_basis, layer.in_basis)}
        params = [p for p in model.parameters() if id(p) not in bases]
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    optimizer = optimizer_without_bases()
    step = 0
    with torch_threads(config.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(len(y), generator=shuffle)
            batch = config.batch_for(torch.device("cpu"), len(y))
            for start in range(0, len(y) - 1, batch):
                index = order[start : start + batch]
                if len(index) < 2:
                    continue
                if step % adapt_every == 0 and layers:
                    model.zero_grad(set_to_none=True)
                    F.cross_entropy(model(x[index]), y[index]).backward()
                    for layer in layers:
                        layer.augment()
                    optimizer = optimizer_without_bases()
                logits = model(x[index])
                batch_loss = F.cross_entropy(logits, y[index]) if loss is None else loss(logits, x[index], y[index])
                if not math.isfinite(batch_loss.item()):
                    raise TrainingError(f"loss became {batch_loss.item()} in epoch {epoch} of {config.epochs}")
                optimizer.zero_grad(set_to_none=True)
                batch_loss.backward()
                optimizer.step()
                step += 1
                if step % adapt_every == 0 and layers:
                    for layer in layers:
                        layer.truncate(tau)
                    optimizer = optimizer_without_bases()
                    history.append({name: m.ranks for name, m in low_rank_layers(model).items()})
        if layers and step % adapt_every != 0:  # end on a truncation, never on augmented bases
            for layer in layers:
                layer.truncate(tau)
            history.append({name: m.ranks for name, m in low_rank_layers(model).items()})
    model.zero_grad(set_to_none=True)
    model.eval()
    return history


@dataclass(frozen=True)
class TuckerConfig:
    """How the tucker step decomposes and adapts."""

    initial_tau: float = 0.3  # relative singular-value tail dropped by the first decomposition
    tau: float = 0.05  # the same at each truncation while fine-tuning (kept small: truncations compound)
    max_macs_ratio: float = 0.9  # decompose a layer only if its low-rank form costs less than this
    adapt_every: int = 10  # optimizer steps between augment/truncate rounds


@register_step("tucker")
def tucker_step(model: nn.Module, context: CompressionContext) -> tuple[nn.Module, StepReport]:
    """Tucker-2 / low-rank decomposition by SVD truncation, then rank-adaptive fine-tuning."""
    config = context.config("tucker", TuckerConfig())
    candidate = copy.deepcopy(model)
    initial = decompose(candidate, config.initial_tau, config.max_macs_ratio)
    if not initial:
        return model, StepReport("tucker", {"initial_tau": config.initial_tau},
                                 f"no layer gets cheaper in low-rank form at tau {config.initial_tau}")
    tune = context.config("fine_tune", FineTuneConfig())
    teacher = context.teacher if tune.distill_weight > 0 else None
    loss = distillation_loss(teacher, tune.temperature, tune.distill_weight) if teacher is not None else None
    context.say("tucker: rank-adaptive fine-tuning")
    generator = torch.Generator().manual_seed(context.fine_tune.seed)
    data = context.dataset
    subset = sample_dataset(data, tune.train_samples, None, generator)
    history = rank_adaptive_fine_tune(candidate, subset, context.fine_tune, config.adapt_every, config.tau, loss)
    final = history[-1] if history else initial
    details = {"initial_tau": config.initial_tau, "tau": config.tau,
               "initial_ranks": {k: list(v) for k, v in initial.items()},
               "final_ranks": {k: list(v) for k, v in final.items()}}
    return candidate, StepReport("tucker", details, f"{len(initial)} layers in low-rank form (tau "
                                 f"{config.initial_tau}), ranks adapted over {len(history)} rounds of fine-tuning")
