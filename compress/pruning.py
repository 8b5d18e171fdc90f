"""Structured channel pruning with torch-pruning's dependency graph, ratios chosen by measured latency.

1. Probe: prune each block alone by ``probe_ratio`` and measure it on the target;
   blocks whose pruning saves less than ``min_gain`` of the model's time keep
   all their channels (pruning them costs accuracy and buys nothing here).
2. Ratio: the smallest of ``ratios`` (applied to the blocks that pay off) that
   meets the latency budget as measured, else the largest.
3. Fine-tune briefly; while the validation accuracy drops by more than the
   budget allows, fall back to the next smaller ratio.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from archetype.compress.step import CompressionContext, StepReport, register_step
from archetype.errors import SpecError
from archetype.runtime.training import evaluate_accuracy

IMPORTANCES = ("magnitude", "taylor", "bn_scale")


@dataclass(frozen=True)
class PruningConfig:
    """How the prune step chooses what to remove."""

    importance: str = "magnitude"  # magnitude (L2 of the group), taylor (first order), bn_scale (|gamma|)
    global_pruning: bool = False  # rank channels across layers instead of within each layer
    ratios: tuple[float, ...] = (0.25, 0.375, 0.5, 0.625)  # channel fractions tried, smallest first
    probe_ratio: float = 0.5  # the ratio each block is probed with
    min_gain: float = 0.02  # a block is pruned only if pruning it alone saves this fraction of the time
    per_block: bool = True  # probe blocks by latency; False prunes every block by the same ratio


def importance_of(name: str) -> object:
    """A torch-pruning importance criterion by name."""
    import torch_pruning as tp

    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise SpecError(f"pruning importance {name!r} is not one of {', '.join(IMPORTANCES)}")


def prune_channels(
    model: nn.Module,
    example: torch.Tensor,
    ratios: dict[nn.Module, float],
    *,
    importance: str = "magnitude",
    global_pruning: bool = False,
    ignored: list[nn.Module] | None = None,
    taylor_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> nn.Module:
    """Prune ``model`` in place: each module of ``ratios`` (a block or layer) loses that fraction of its channels."""
    import torch_pruning as tp

    criterion = importance_of(importance)
    model.eval()
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=criterion,
        pruning_ratio=0.0,
        pruning_ratio_dict=dict(ratios),
        global_pruning=global_pruning,
        ignored_layers=ignored or [],
    )
    if importance == "taylor":
        if taylor_batch is None:
            raise SpecError("taylor importance needs a batch of data for its gradients")
        model.zero_grad()
        nn.functional.cross_entropy(model(taylor_batch[0]), taylor_batch[1]).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model


def output_layers(model: nn.Module, classes: int) -> list[nn.Module]:
    """The layers whose outputs are the classes: their output channels must stay."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == classes] or [
        m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == classes
    ]


def pruning_groups(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module]) -> list[str]:
    """The names of the layers that root torch-pruning's channel groups (channels that must be pruned together,
    across residual additions and depthwise layers), in graph order; groups touching ``ignored`` are left out."""
    import torch_pruning as tp

    names = {module: name for name, module in model.named_modules()}
    order = {module: index for index, module in enumerate(names)}
    graph = tp.DependencyGraph().build_dependency(model.eval(), example_inputs=example)
    roots = [group[0].dep.target.module for group in graph.get_all_groups(ignored_layers=ignored,
                                                                       root_module_types=[nn.Conv2d, nn.Linear])]
    return [names[m] for m in sorted((m for m in roots if m in names), key=order.__getitem__)]


def prunable_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks holding convolutions: the children with a conv, below any module in which only one child has one.

    A user's ``features`` / ``classifier`` split descends into ``features``.
    """

    def with_conv(module: nn.Module) -> list[nn.Module]:
        return [c for c in module.children() if any(isinstance(m, nn.Conv2d) for m in c.modules())]

    module = model
    while len(with_conv(module)) == 1 and not isinstance(with_conv(module)[0], nn.Conv2d):
        module = with_conv(module)[0]
    return with_conv(module)


@register_step("prune")
def prune_step(model: nn.Module, context: CompressionContext) -> tuple[nn.Module, StepReport]:
    """Structured pruning with per-block ratios chosen by measured latency, then a short fine-tuning."""
    config = context.config("prune", PruningConfig())
    example = context.example()
    data = context.dataset
    batch = (data.train.x[:128], data.train.y[:128])

    def pruned(ratios_by_index: dict[int, float]) -> nn.Module:
        candidate = copy.deepcopy(model)
        blocks = prunable_blocks(candidate)
        ratios = {blocks[i]: r for i, r in ratios_by_index.items() if r > 0}
        return prune_channels(candidate, example, ratios, importance=config.importance,
                              global_pruning=config.global_pruning,
                              ignored=output_layers(candidate, data.num_classes), taylor_batch=batch)

    blocks = prunable_blocks(model)
    if not blocks:
        return model, StepReport("prune", message="no convolutional blocks to prune")
    base_ms = context.latency_ms(model)
    gains: dict[int, float] = {}
    if config.per_block and len(blocks) > 1:
        for index in range(len(blocks)):
            context.say(f"prune: probing block {index + 1}/{len(blocks)}")
            gains[index] = (base_ms - context.latency_ms(pruned({index: config.probe_ratio}))) / base_ms
        chosen = [i for i, gain in gains.items() if gain >= config.min_gain]
    else:
        chosen = list(range(len(blocks)))
    details = {"importance": config.importance, "global": config.global_pruning, "base_ms": base_ms,
               "probe_gain": {str(i): round(g, 4) for i, g in gains.items()}, "blocks": chosen}
    if not chosen:
        return model, StepReport("prune", details, f"pruning any block alone saves under {config.min_gain:.0%} "
                                 f"of the time on {context.target.name}; nothing pruned")
    candidates: list[tuple[float, nn.Module, float]] = []
    for ratio in sorted(config.ratios):
        candidate = pruned(dict.fromkeys(chosen, ratio))
        candidates.append((ratio, candidate, context.latency_ms(candidate)))
        if candidates[-1][2] <= context.budget.limit_ms_for(base_ms):
            break
    source_accuracy = evaluate_accuracy(model, data.val)
    details["tried_ms"] = {str(r): ms for r, _, ms in candidates}
    details["val_accuracy"] = {}
    for ratio, candidate, _ in reversed(candidates):  # the fastest first; back off while accuracy is lost
        context.say(f"prune: fine-tuning {ratio:.0%} of the channels pruned")
        details.setdefault("fine_tune", {})[str(ratio)] = context.fine_tune_model(candidate, "prune").to_json()
        candidate.eval()
        accuracy = evaluate_accuracy(candidate, data.val)
        details["val_accuracy"][str(ratio)] = accuracy
        if 100 * (source_accuracy - accuracy) <= context.budget.max_accuracy_drop or ratio == candidates[0][0]:
            break
    details["ratio"] = ratio
    return candidate, StepReport("prune", details, f"pruned {ratio:.0%} of the channels of {len(chosen)} of "
                                 f"{len(blocks)} blocks ({config.importance} importance), fine-tuned")
