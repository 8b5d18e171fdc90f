"""The joint step: a prune ratio per channel group and the precision, chosen together under the latency budget.

1. Latency table, measured once on the target: the model with one channel group
   pruned by each ratio, or one residual block dropped whole (a depth choice), in
   fp32 and (on cpu-ort) in int8. A policy's latency is predicted from the base
   and the savings of its choices.
2. Accuracy proxy table: the distillation loss (KL divergence to the source's
   logits) on validation images of the model with one group pruned by each
   ratio, batch-norm statistics re-estimated first; the int8 source's loss too.
3. For each precision a multiple-choice knapsack picks one ratio per group, the
   smallest summed proxy whose predicted latency fits; the pick is built and
   measured, and the knapsack solved again with the miss added (measured
   feedback, as NetAdapt does). Tables and picks time the fast tracer's graph,
   scaled by how much slower the deployed export runs (side by side, once).
4. Only the finalist with the best proxy is fine-tuned (distilled), an int8 one
   then quantized with the mixed-precision policy; a fine-tune far beyond repair
   after an epoch stops there. A near miss on accuracy is
   fine-tuned again for longer; one that still loses too much moves the latency
   target towards the source's, to where the proxy, scaled by that failure's
   drop, predicts the accuracy limit (within a quarter to three quarters of the
   way, in log space, between what kept its accuracy and what did not), and the
   next finalist is solved, before anything is rejected. One that keeps its
   accuracy yet misses the budget as deployed is followed by one aimed lower by
   the miss.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from archetype.compress.conv_graph import removable_blocks, remove_blocks
from archetype.compress.fine_tune import kl_to_teacher, logits_of
from archetype.compress.pruning import output_layers, prune_channels, pruning_groups
from archetype.compress.quantization import OrtInt8Model, QuantizationConfig, quantize_module
from archetype.compress.step import CompressionContext, StepReport, register_step
from archetype.errors import SpecError
from archetype.runtime.data import sample_split
from archetype.runtime.onnx_export import export_onnx_bytes, export_onnx_for_timing
from archetype.runtime.quantization import quantize_onnx_static
from archetype.runtime.targets import OnnxRuntimeCpuTarget
from archetype.runtime.training import evaluate_accuracy, recalibrate_batch_norm

PRECISIONS = ("fp32", "int8")
BLOCK_REMOVED = 1.0
"""The ratio of a residual block dropped whole (its channels all gone): the one choice a block has besides 0."""
TIMING_NOISE = 0.03
"""Relative latency difference taken as timing noise: a policy this close to its target meets it."""
AIM_UNDER = 0.05
"""Share under its target a policy is planned for: the policy is timed once, the kept model again after its
fine-tune, each with the timing noise; landing near a target aimed at exactly would miss it about half the time."""


@dataclass(frozen=True)
class JointConfig:
    """How the joint step builds its tables, solves and fine-tunes."""

    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 0.875)  # channel fractions a group may lose (0 is always a choice)
    precisions: tuple[str, ...] = PRECISIONS  # int8 only where the target runs the int8 recipe (cpu-ort)
    proxy_samples: int = 256  # validation images scoring each proxy entry
    recalibration_samples: int = 256  # training images re-estimating batch-norm statistics
    feedback_rounds: int = 3  # measured re-solves of one policy
    max_fine_tunes: int = 4  # fine-tuned policies at most, repairs included
    repair_within: float = 3.0  # a policy whose drop is at most this many times the limit is fine-tuned again
    give_up_within: float = 6.0  # a fine-tune whose drop after an epoch is over this many times the limit stops
    knapsack_steps: int = 600  # the latency saving needed is cut into this many steps
    remove_blocks: bool = True  # residual blocks (x + f(x)) may also be dropped whole: a depth choice


@dataclass(frozen=True)
class Policy:
    """One choice: a ratio per channel group (by the group's root layer name) and the precision."""

    ratios: dict[str, float]
    precision: str
    predicted_ms: float
    proxy: float
    measured_ms: float = math.nan

    def rank(self, target_ms: float, tolerance: float = TIMING_NOISE) -> tuple[int, float]:
        """Sort key: the best proxy among policies within the target (give or take the timing noise), then the
        fastest of the rest."""
        if self.measured_ms <= target_ms * (1 + tolerance):
            return 0, self.proxy
        return 1, self.measured_ms

    def to_json(self) -> dict[str, Any]:
        return {"precision": self.precision, "ratios": {k: v for k, v in self.ratios.items() if v > 0},
                "predicted_ms": self.predicted_ms, "measured_ms": self.measured_ms, "proxy": self.proxy}


@dataclass
class PolicyTables:
    """The measured latency savings and proxy losses of one group at one ratio, and the bases they are taken from."""

    groups: list[str]
    base_ms: dict[str, float]  # precision -> the unpruned model's latency
    saving_ms: dict[str, dict[tuple[str, float], float]]  # precision -> (group, ratio) -> ms saved
    proxy: dict[tuple[str, float], float]  # (group, ratio) -> distillation loss added
    int8_proxy: float = 0.0  # distillation loss the int8 recipe adds to the unpruned model
    export_bias: dict[str, float] = field(default_factory=dict)  # precision -> deployed over timing graph latency


def choose_ratios(
    groups: Sequence[str],
    ratios: Sequence[float],
    saving: dict[tuple[str, float], float],
    proxy: dict[tuple[str, float], float],
    need_ms: float,
    steps: int = 600,
) -> dict[str, float]:
    """One ratio per group (0 included) with the smallest summed proxy whose summed saving reaches ``need_ms``;
    the largest saving when none reaches it. A multiple-choice knapsack over savings cut into ``steps``; a group
    chooses among the ``ratios`` that ``saving`` has an entry for."""
    choices = {g: [0.0, *sorted(r for r in set(ratios) if r > 0 and (g, r) in saving)] for g in groups}
    if need_ms <= 0:
        return dict.fromkeys(groups, 0.0)
    reachable = sum(max(max(saving.get((g, r), 0.0), 0.0) for r in choices[g]) for g in groups)
    if reachable < need_ms:  # the fastest by the table: the most saved, ties (within 5%) to the larger ratio
        top = {g: max(saving.get((g, r), 0.0) for r in choices[g]) for g in groups}
        return {g: max(r for r in choices[g] if saving.get((g, r), 0.0) >= 0.95 * top[g]) for g in groups}
    unit = need_ms / steps
    # best[s]: (summed proxy, choice per group so far) reaching min(saving, need) of s steps
    best: list[tuple[float, tuple[float, ...]] | None] = [None] * (steps + 1)
    best[0] = (0.0, ())
    for group in groups:
        layer: list[tuple[float, tuple[float, ...]] | None] = [None] * (steps + 1)
        for s, entry in enumerate(best):
            if entry is None:
                continue
            for r in choices[group]:
                gain = 0 if r == 0 else math.floor(max(saving.get((group, r), 0.0), 0.0) / unit)
                cost = entry[0] + (0.0 if r == 0 else max(proxy.get((group, r), math.inf), 0.0))
                to = min(steps, s + gain)
                if layer[to] is None or cost < layer[to][0]:
                    layer[to] = (cost, (*entry[1], r))
        best = layer
    if best[steps] is None:  # rounding down lost the last step: the largest reached
        reached = max(s for s, entry in enumerate(best) if entry is not None)
        return dict(zip(groups, best[reached][1]))
    return dict(zip(groups, best[steps][1]))


class JointSearch:
    """The tables and the policies of one model in one context."""

    def __init__(self, model: nn.Module, context: CompressionContext, config: JointConfig) -> None:
        self.model, self.context, self.config = model.eval(), context, config
        self.example = context.example()
        self.blocks = removable_blocks(model) if config.remove_blocks else {}
        self.groups = pruning_groups(model, self.example, output_layers(model, context.dataset.num_classes))
        self.groups += list(self.blocks)
        int8 = isinstance(context.target, OnnxRuntimeCpuTarget)
        self.precisions = [p for p in config.precisions if p == "fp32" or int8]
        generator = torch.Generator().manual_seed(context.seed)
        self.proxy_split = sample_split(context.dataset.val, config.proxy_samples, generator)
        self.recalibration = sample_split(context.dataset.train, config.recalibration_samples, generator).x
        self.teacher = context.teacher if context.teacher is not None else model
        self.teacher_logits = logits_of(self.teacher, self.proxy_split.x)
        self.measurements = 0
        self.export_bias = dict.fromkeys(self.precisions, 1.0)

    def pruned(self, ratios: dict[str, float]) -> nn.Module:
        """A copy of the model with each named residual block dropped and each named channel group pruned by its
        ratio (magnitude importance); a group rooted inside a dropped block is not pruned (its root is gone; the
        built policy is measured, so its latency says so)."""
        candidate = remove_blocks(copy.deepcopy(self.model), {name: self.blocks[name] for name, r in ratios.items()
                                                               if r > 0 and name in self.blocks})
        modules = dict(candidate.named_modules())
        chosen = {modules[name]: r for name, r in ratios.items() if r > 0 and name not in self.blocks
                  and name in modules}
        if chosen:
            prune_channels(candidate, self.example, chosen, ignored=output_layers(candidate,
                                                                                  self.context.dataset.num_classes))
        return candidate.eval()

    def timing_graph(self, model: nn.Module, precision: str, deployed: bool = False) -> bytes:
        """The ONNX graph timed for ``model`` in ``precision``: the fast tracer's, or the one a kept model deploys."""
        graph = (export_onnx_bytes(model, self.example, dynamic_batch=precision == "int8") if deployed
                 else export_onnx_for_timing(model, self.example))
        return quantize_onnx_static(graph, self.recalibration, samples=16) if precision == "int8" else graph

    def latency_ms(self, model: nn.Module, precision: str) -> float:
        """The model's latency on the target in ``precision`` (int8 by the one recipe, few calibration images), as
        its deployed graph would run (the tracer's graph, corrected by the export bias)."""
        self.measurements += 1
        target = self.context.target
        if not isinstance(target, OnnxRuntimeCpuTarget):
            return self.context.latency_ms(model)
        graph = self.timing_graph(model, precision)
        return target.measure_onnx(graph, self.context.input_type).median_ms * self.export_bias[precision]

    def measure_export_bias(self) -> None:
        """How much slower the deployed export of the model runs than the tracer's, side by side per precision (a
        few percent on MobileNetV2 and ResNet-18: enough to miss a budget that the tables say is met)."""
        target = self.context.target
        if not isinstance(target, OnnxRuntimeCpuTarget):
            return
        for precision in self.precisions:
            runners = [target.onnx_runner(self.timing_graph(self.model, precision, deployed), self.context.input_type)
                       for deployed in (True, False)]
            self.export_bias[precision] = target.compare(*runners).ratio

    def proxy(self, model: nn.Module) -> float:
        """The distillation loss to the source on the proxy images, after re-estimating batch-norm statistics."""
        recalibrate_batch_norm(model, self.recalibration.split(128))
        return float(kl_to_teacher(logits_of(model, self.proxy_split.x), self.teacher_logits))

    def tables(self) -> PolicyTables:
        """Measure the latency savings and the proxy of every group at every ratio."""
        config, say = self.config, self.context.say
        self.measure_export_bias()
        base = {p: self.latency_ms(self.model, p) for p in self.precisions}
        base_proxy = self.proxy(copy.deepcopy(self.model))
        saving: dict[str, dict[tuple[str, float], float]] = {p: {} for p in self.precisions}
        proxy: dict[tuple[str, float], float] = {}
        for index, group in enumerate(self.groups):
            kind = "residual block" if group in self.blocks else "channel group"
            say(f"joint: timing and scoring {kind} {index + 1}/{len(self.groups)} ({group})")
            for ratio in (BLOCK_REMOVED,) if group in self.blocks else config.ratios:
                candidate = self.pruned({group: ratio})
                for precision in self.precisions:
                    saving[precision][(group, ratio)] = base[precision] - self.latency_ms(candidate, precision)
                proxy[(group, ratio)] = self.proxy(candidate) - base_proxy
        int8_proxy = 0.0
        if "int8" in self.precisions:
            int8 = quantize_onnx_static(export_onnx_for_timing(self.model, self.example), self.context.dataset.train.x)
            with torch.inference_mode():
                plain = float(kl_to_teacher(logits_of(self.model, self.proxy_split.x), self.teacher_logits))
                int8_proxy = float(kl_to_teacher(OrtInt8Model(int8)(self.proxy_split.x), self.teacher_logits)) - plain
        return PolicyTables(self.groups, base, saving, proxy, max(int8_proxy, 0.0), dict(self.export_bias))

    def plan(self, tables: PolicyTables, precision: str, need: float) -> tuple[dict[str, float], float, float]:
        """The knapsack's ratios for ``need`` (log of the speedup wanted), their predicted latency and summed proxy.

        Savings compose multiplicatively (a layer pruned on both sides keeps the product of its shares), so the
        knapsack runs on log-savings: ``-log(1 - saving / base)`` per entry, ``log(base / target)`` needed.
        """
        base = tables.base_ms[precision]
        gains = {key: -math.log(max(1.0 - ms / base, 1e-3)) for key, ms in tables.saving_ms[precision].items()}
        ratios = choose_ratios(tables.groups, (*self.config.ratios, BLOCK_REMOVED), gains, tables.proxy, need,
                               self.config.knapsack_steps)
        predicted = base * math.exp(-sum(max(gains[(g, r)], 0.0) for g, r in ratios.items() if r > 0))
        score = sum(tables.proxy[(g, r)] for g, r in ratios.items() if r > 0) + (
            tables.int8_proxy if precision == "int8" else 0.0)
        return ratios, predicted, score

    @staticmethod
    def need(tables: PolicyTables, precision: str, target_ms: float) -> float:
        """The log-speedup a policy of ``precision`` is planned for: ``AIM_UNDER`` under ``target_ms``, so that what
        lands near its aim meets the target when timed again."""
        return math.log(tables.base_ms[precision] / (target_ms * (1 - AIM_UNDER)))

    def solve(self, tables: PolicyTables, precision: str, target_ms: float) -> Policy:
        """The policy of ``precision`` under ``target_ms``: planned, built, measured, planned again with the miss."""
        aim = target_ms * (1 - AIM_UNDER)
        need = self.need(tables, precision, target_ms)
        tried: list[Policy] = []
        for _ in range(self.config.feedback_rounds):
            ratios, predicted, score = self.plan(tables, precision, need)
            measured = self.latency_ms(self.pruned(ratios), precision)
            tried.append(Policy(ratios, precision, predicted, score, measured))
            miss = math.log(measured / aim)
            if abs(miss) <= TIMING_NOISE or (miss < 0 and need <= 0):
                break
            need += miss
        return min(tried, key=lambda p: p.rank(aim))

    def calibrated_target(self, tables: PolicyTables, failing_ms: float, passing_ms: float,
                          allowed_proxy: float) -> float:
        """The fastest target between what failed and what passed whose planned policy's proxy is within
        ``allowed_proxy`` (the proxy calibrated on a fine-tuned failure); a bisection in log space over plans."""
        low, high = math.log(failing_ms), math.log(passing_ms)
        for _ in range(12):
            middle = (low + high) / 2
            proxy = min(self.plan(tables, p, self.need(tables, p, math.exp(middle)))[2] for p in self.precisions)
            low, high = (low, middle) if proxy <= allowed_proxy else (middle, high)
        return math.exp(high)


@register_step("joint")
def joint_step(model: nn.Module, context: CompressionContext) -> tuple[nn.Module, StepReport]:
    """Per-group prune ratios and the precision chosen together by measured tables; only finalists fine-tuned."""
    config = context.config("joint", JointConfig())
    search = JointSearch(model, context, config)
    if not search.groups:
        return model, StepReport("joint", message="no channel groups to prune: no nn.Conv2d or nn.Linear layers "
                                 "outside the output layer (a .pt2 graph has none; a factory with --weights has them)")
    tables = search.tables()
    val = context.dataset.val
    reference = evaluate_accuracy(search.teacher, val)
    max_drop = context.budget.max_accuracy_drop / 100
    input_ms = tables.base_ms.get("fp32", max(tables.base_ms.values()))
    budget_ms = context.budget.limit_ms_for(input_ms)

    def deployed_ms(deployed: nn.Module) -> float:
        """The kept model's latency in the units of ``budget_ms``: for a speedup budget, from its speedup over the
        step's input timed side by side (as the pipeline judges it), else as measured."""
        if context.budget.speedup is not None:
            try:
                return input_ms / context.side_by_side(model, deployed).ratio
            except SpecError:  # a target that cannot hold two models at once
                pass
        return context.latency_ms(deployed)

    details: dict[str, Any] = {"groups": tables.groups, "base_ms": tables.base_ms, "int8_proxy": tables.int8_proxy,
                               "export_bias": tables.export_bias, "tried": []}
    best: tuple[nn.Module, Policy, float] | None = None  # the fastest policy within the accuracy limit
    failed = (0.0, math.inf)  # the proxy and the drop of the latest policy that lost too much
    passing_ms, failing_ms = max(tables.base_ms.values()), None  # the unpruned model keeps its accuracy
    target, fine_tunes = budget_ms, 0
    while fine_tunes < config.max_fine_tunes:
        policy = min((search.solve(tables, p, target) for p in search.precisions),
                     key=lambda p: p.rank(target * (1 - AIM_UNDER)))
        if best is not None and policy.measured_ms >= best[1].measured_ms:
            break  # no faster than what is already kept
        candidate = search.pruned(policy.ratios)
        tried: dict[str, Any] = {**policy.to_json(), "target_ms": target}
        drop = math.inf
        for attempt in ("fine-tune", "repair"):
            if attempt == "repair" and (drop <= max_drop or drop > config.repair_within * max_drop
                                        or fine_tunes >= config.max_fine_tunes):
                break  # a repair only for a near miss
            fine_tunes += 1
            context.say(f"joint: {attempt} of a {policy.precision} policy at {policy.measured_ms:.4f} ms "
                        f"(fine-tune {fine_tunes} of at most {config.max_fine_tunes})")
            report = context.fine_tune_model(candidate, "joint", longer=2 if attempt == "repair" else 1,
                                             give_up_below=reference - config.give_up_within * max_drop)
            tried[attempt] = report.to_json()
            drop = reference - evaluate_accuracy(candidate.eval(), val)
        deployed: nn.Module = candidate
        if policy.precision == "int8" and drop <= max_drop:
            deployed, tried["quantize"] = quantize_module(candidate, context, max_drop - drop,
                                                          context.config("quantize", QuantizationConfig()))
            drop = reference - evaluate_accuracy(deployed, val)
        tried["val_accuracy_drop_pp"] = 100 * drop
        details["tried"].append(tried)
        if drop <= max_drop:
            measured = tried["deployed_ms"] = deployed_ms(deployed)
            if best is None or measured < best[1].measured_ms:
                best = (deployed, dataclasses.replace(policy, measured_ms=measured), reference - drop)
            if measured <= budget_ms or (failing_ms is None and policy.measured_ms > target * (1 + TIMING_NOISE)):
                break  # the budget is met, or this is as fast as the tables allow
            if failing_ms is None:  # kept its accuracy yet missed as deployed (quantized, timed again): aim lower
                target *= budget_ms / measured
                tried["next_target_ms"] = target
                continue
            passing_ms = min(passing_ms, target)
        else:
            failing_ms, failed = target, (policy.proxy, drop)
        if passing_ms <= failing_ms * 1.05:
            break
        # the next target between what failed and what passed: where the proxy, scaled by the failure's drop,
        # predicts the accuracy limit, kept a quarter to three quarters of the way in log space
        allowed = failed[0] * max_drop / failed[1]
        span = passing_ms / failing_ms
        target = min(max(search.calibrated_target(tables, failing_ms, passing_ms, allowed), failing_ms * span**0.25),
                     failing_ms * span**0.75)
        tried["next_target_ms"] = target
    details["measurements"] = search.measurements
    details["fine_tunes"] = fine_tunes
    if best is None:
        return model, StepReport("joint", details, f"no policy kept the validation accuracy within "
                                 f"{context.budget.max_accuracy_drop:g} pp after {fine_tunes} fine-tunes")
    deployed, policy, accuracy = best
    details["policy"] = policy.to_json()
    details["val_accuracy"] = accuracy
    pruned = sum(1 for g, r in policy.ratios.items() if r > 0 and g not in search.blocks)
    dropped = sum(1 for g, r in policy.ratios.items() if r > 0 and g in search.blocks)
    blocks = f", {dropped} of {len(search.blocks)} residual blocks dropped" if search.blocks else ""
    return deployed, StepReport("joint", details, f"{policy.precision}, {pruned} of "
                                f"{len(tables.groups) - len(search.blocks)} channel groups pruned{blocks}; chosen "
                                f"from {search.measurements} measurements and {fine_tunes} fine-tunes")
