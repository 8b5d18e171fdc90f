"""Depth compression by two-stage dynamic programming (Kim et al., ICML 2023).

Which activations stay, and which consecutive convolutions merge into one:

1. ``measure_latency_table``: T(i, j), the target's time of units i+1..j merged
   into one convolution (+ its activation), at its real input shape.
2. ``optimal_merges`` (stage 1): T_opt(i, j) = min(T(i, j), min_k T_opt(i, k) + T_opt(k, j)),
   the fastest way to run units i+1..j with no activation between them.
3. ``measure_importance_table``: I(i, j), the score of the network with only the
   activations inside (i, j) removed, minus ``penalty`` times the mean score of
   the spans that remove nothing.
4. ``solve`` (stage 2): a knapsack over discretised time,
   D[t, m] = max_i D[t - T_opt(i, m), i] + I(i, m); ties go to the faster plan.
5. ``apply_plan``: the activation-removed network (to fine-tune) and the merged one (to deploy).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from archetype.compress.conv_chain import (
    AffineConv,
    ChainNetwork,
    ConvChain,
    Pair,
    chain_network,
    extract_chain,
    merge_network,
)
from archetype.compress.fine_tune import fine_tune_recipe
from archetype.errors import SpecError
from archetype.runtime.data import Dataset, sample_dataset
from archetype.runtime.training import TrainConfig, evaluate_accuracy, train

LatencyOf = Callable[[nn.Module, tuple[int, ...]], float]
"""``latency_of(module, input_shape) -> ms`` for a batch-1 input of shape (1, C, H, W)."""

ScoreOf = Callable[[ChainNetwork], float]
"""``score_of(network) -> accuracy`` of a network with some activations removed (higher is better)."""


@dataclass(frozen=True)
class LatencyTable:
    """T(i, j) in ms for every span that may become one convolution, plus what every plan pays anyway."""

    layers: int
    entries: Mapping[Pair, float]
    fixed_ms: float = 0.0  # pooling layers and the tail


@dataclass(frozen=True)
class OptimalMerges:
    """Stage 1: the fastest merge pattern of every span with no activation inside."""

    layers: int
    time: Mapping[Pair, float]  # T_opt(i, j); spans missing here cannot be run without an activation
    split: Mapping[Pair, int | None]  # the breakpoint k, or None when (i, j) is one convolution

    def blocks(self, span: Pair) -> list[Pair]:
        """The merge blocks of ``span`` in order."""
        k = self.split[span]
        if k is None:
            return [span]
        return self.blocks((span[0], k)) + self.blocks((k, span[1]))


@dataclass(frozen=True)
class ImportanceTable:
    """I(i, j) for the spans the knapsack may choose (endpoints at activations, 0 or L)."""

    entries: Mapping[Pair, float]
    scores: Mapping[Pair, float] = field(default_factory=dict)  # raw scores before the penalty
    penalty: float = 0.0


@dataclass(frozen=True)
class DepthCompressionPlan:
    """Which activations stay and which units merge into one convolution, with what the tables predict."""

    layers: int  # conv units in the chain
    blocks: tuple[Pair, ...]  # merge blocks (i, j): units i+1..j become one convolution
    kept_activations: tuple[int, ...]  # boundaries whose activation stays
    removed_activations: tuple[int, ...]  # boundaries whose activation becomes the identity
    predicted_ms: float  # sum of T over the blocks plus the fixed time
    importance: float  # sum of I over the chosen spans
    budget_ms: float
    inserted_activations: tuple[int, ...] = ()  # block ends without one in the source that take one (moved there)

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "blocks": [list(b) for b in self.blocks],
            "kept_activations": list(self.kept_activations),
            "removed_activations": list(self.removed_activations),
            "predicted_ms": self.predicted_ms,
            "importance": self.importance,
            "budget_ms": self.budget_ms,
            "inserted_activations": list(self.inserted_activations),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DepthCompressionPlan:
        try:
            return cls(
                int(data["layers"]),
                tuple((int(i), int(j)) for i, j in data["blocks"]),
                tuple(int(b) for b in data["kept_activations"]),
                tuple(int(b) for b in data["removed_activations"]),
                float(data["predicted_ms"]),
                float(data["importance"]),
                float(data["budget_ms"]),
                tuple(int(b) for b in data.get("inserted_activations", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"not a depth compression plan: {exc!r}") from None


# ------------------------------------------------------------------------------------------------ tables


def merged_block_module(chain: ConvChain, span: Pair) -> nn.Module:
    """A freshly initialised module shaped like ``span``'s merged convolution and its activation: what T times."""
    g = chain.geometry(span)
    conv = nn.Conv2d(g.in_channels, g.out_channels, g.kernel, g.stride, g.padding, groups=g.groups, bias=True)
    act = chain.units[span[1] - 1].act
    return nn.Sequential(conv, type(act)()) if act is not None else nn.Sequential(conv)


def latency_spans(chain: ConvChain, max_span: int | None = None, max_kernel: int | None = None) -> list[Pair]:
    """The spans that may become one convolution: mergeable, at most ``max_span`` units and ``max_kernel`` wide."""
    spans = []
    for i in range(chain.layers):
        for j in range(i + 1, chain.layers + 1):
            if max_span is not None and j - i > max_span:
                break
            if not chain.mergeable((i, j)):
                continue
            if j - i > 1 and max_kernel is not None and max(chain.geometry((i, j)).kernel) > max_kernel:
                continue
            spans.append((i, j))
    return spans


def measure_latency_table(
    chain: ConvChain,
    latency_of: LatencyOf,
    *,
    max_span: int | None = None,
    max_kernel: int | None = None,
    spans: Iterable[Pair] | None = None,
    time_fixed: bool = True,
) -> LatencyTable:
    """T(i, j) from ``latency_of`` for each span (``latency_spans`` by default); equal merged blocks timed once.

    With ``time_fixed`` False the pooling layers, shortcuts and tail are not timed (``fixed_ms`` is 0):
    the caller knows the whole model's time and takes the rest from it.
    """
    cache: dict[tuple[Any, ...], float] = {}
    entries: dict[Pair, float] = {}
    for span in latency_spans(chain, max_span, max_kernel) if spans is None else spans:
        g = chain.geometry(span)
        act = chain.units[span[1] - 1].act
        shape = (1, *chain.shapes[span[0]])
        key = (g, type(act).__name__ if act is not None else None, shape)
        if key not in cache:
            cache[key] = float(latency_of(merged_block_module(chain, span), shape))
        entries[span] = cache[key]
    if not time_fixed:
        return LatencyTable(chain.layers, entries, 0.0)
    fixed = 0.0
    for k, unit in enumerate(chain.units, start=1):
        if unit.post is not None:
            g = chain.geometry((k - 1, k))
            _c, h, w = chain.shapes[k - 1]
            out_h = (h + 2 * g.padding[0] - g.kernel[0]) // g.stride[0] + 1
            out_w = (w + 2 * g.padding[1] - g.kernel[1]) // g.stride[1] + 1
            fixed += float(latency_of(unit.post, (1, g.out_channels, out_h, out_w)))
    for (a, _b), unit in chain.shortcuts.items():
        fixed += float(latency_of(nn.Sequential(AffineConv.of(unit.conv, unit.bn).to_conv2d()), (1, *chain.shapes[a])))
    if not isinstance(chain.tail, nn.Identity):
        fixed += float(latency_of(chain.tail, (1, *chain.shapes[-1])))
    return LatencyTable(chain.layers, entries, fixed)


def optimal_merges(table: LatencyTable) -> OptimalMerges:
    """Stage 1: T_opt(i, j) = min(T(i, j), min_k T_opt(i, k) + T_opt(k, j)); a single block wins ties."""
    n = table.layers
    best = np.full((n + 1, n + 1), np.inf)
    split = np.full((n + 1, n + 1), -1, dtype=np.int64)
    for (i, j), t in table.entries.items():
        best[i, j] = t
    for length in range(2, n + 1):
        for i in range(0, n - length + 1):
            j = i + length
            ks = np.arange(i + 1, j)
            sums = best[i, ks] + best[ks, j]
            k = int(np.argmin(sums))
            if sums[k] < best[i, j]:
                best[i, j], split[i, j] = sums[k], ks[k]
    time = {(i, j): float(best[i, j]) for i in range(n) for j in range(i + 1, n + 1) if np.isfinite(best[i, j])}
    splits = {span: (int(split[span]) if split[span] >= 0 else None) for span in time}
    return OptimalMerges(n, time, splits)


def importance_spans(chain: ConvChain, merges: OptimalMerges, max_span: int | None = None) -> list[Pair]:
    """The spans stage 2 chooses from: both ends at an activation, an insertable boundary, 0 or L; runnable; at
    most ``max_span`` units."""
    ends = chain.ends()
    return [
        (i, j) for x, i in enumerate(ends) for j in ends[x + 1:]
        if (i, j) in merges.time and (max_span is None or j - i <= max_span)
    ]


def span_network(chain: ConvChain, merges: OptimalMerges, span: Pair) -> ChainNetwork:
    """The trainable network with only the activations inside ``span`` removed (moved to its end where the chain
    may insert one there), ``span`` in its stage-1 blocks."""
    i, j = span
    blocks = [(k - 1, k) for k in range(1, i + 1)] + merges.blocks(span)
    blocks += [(k - 1, k) for k in range(j + 1, chain.layers + 1)]
    kept = [b for b in range(1, chain.layers + 1) if not i < b < j]
    return chain_network(chain, blocks, kept, inserted_at(chain, [span]))


def inserted_at(chain: ConvChain, spans: Iterable[Pair]) -> tuple[int, ...]:
    """The ends of ``spans`` that take an insertable activation: those of spans that remove one."""
    return tuple(j for i, j in spans if j in chain.insertable and chain.removed_by((i, j)))


def measure_importance_table(
    chain: ConvChain,
    merges: OptimalMerges,
    score_of: ScoreOf,
    *,
    penalty: float = 1.4,
    max_span: int | None = None,
    spans: Iterable[Pair] | None = None,
) -> ImportanceTable:
    """I(i, j) = score with only span (i, j) compressed, minus ``penalty`` times the mean score of minimal spans.

    The minimal spans (between consecutive activations) remove no activation:
    on a plain chain they are the single layers. Spans that remove none compute
    what the source does, so one of them is scored for all.
    """
    spans = importance_spans(chain, merges, max_span) if spans is None else list(spans)
    scores: dict[Pair, float] = {}
    unchanged: float | None = None
    for span in spans:
        if chain.removed_by(span):
            scores[span] = float(score_of(span_network(chain, merges, span)))
        else:
            if unchanged is None:
                unchanged = float(score_of(span_network(chain, merges, span)))
            scores[span] = unchanged
    ends = chain.ends()
    minimal = [scores[(a, b)] for a, b in itertools.pairwise(ends) if (a, b) in scores]
    if not minimal:
        raise SpecError("the importance table needs the spans between consecutive activations")
    base = penalty * float(np.mean(minimal))
    return ImportanceTable({span: s - base for span, s in scores.items()}, scores, penalty)


# ------------------------------------------------------------------------------------------------- stage 2


def time_steps(ms: float, steps_per_ms: float) -> int:
    """A span's time in knapsack steps, rounded up so that a plan within budget in steps is within it in ms."""
    return max(0, math.ceil(ms * steps_per_ms - 1e-9))


def solve(
    chain: ConvChain,
    latency: LatencyTable,
    importance: ImportanceTable,
    budget_ms: float,
    *,
    merges: OptimalMerges | None = None,
    steps_per_ms: float = 20.0,
) -> DepthCompressionPlan:
    """Stage 2: the kept activations and merge blocks of highest importance whose predicted time fits the budget.

    Time is discretised to ``steps_per_ms`` steps per ms (each span rounded up);
    among plans of equal importance the one of fewest steps wins. SpecError if
    no plan fits.
    """
    if latency.layers != chain.layers:
        raise SpecError(f"the latency table has {latency.layers} layers, the chain {chain.layers}")
    merges = optimal_merges(latency) if merges is None else merges
    n = chain.layers
    free_ms = budget_ms - latency.fixed_ms
    budget = math.floor(free_ms * steps_per_ms + 1e-9)
    by_end: dict[int, list[tuple[int, int, float]]] = {}
    for (i, j), value in importance.entries.items():
        if (i, j) in merges.time:
            by_end.setdefault(j, []).append((i, time_steps(merges.time[(i, j)], steps_per_ms), value))
    if budget < 0:
        raise SpecError(f"budget {budget_ms:g} ms is below the fixed time {latency.fixed_ms:.4g} ms")
    table = np.full((budget + 1, n + 1), -np.inf)
    table[:, 0] = 0.0  # D[t, m]: best importance of units 1..m within t steps
    for m in range(1, n + 1):
        column = table[:, m]
        for i, steps, value in by_end.get(m, ()):
            if steps <= budget:
                np.maximum(column[steps:], table[: budget + 1 - steps, i] + value, out=column[steps:])
    if not np.isfinite(table[budget, n]):
        fastest = fastest_ms(merges, importance.entries)
        raise SpecError(
            f"no depth compression plan fits {budget_ms:g} ms; the fastest predicted is "
            f"{fastest + latency.fixed_ms:.4g} ms"
        )
    best = table[budget, n]
    t = int(np.argmax(table[:, n] == best))  # fewest steps with the best importance
    spans: list[Pair] = []
    m = n
    while m > 0:
        options = [(steps, -i, i) for i, steps, value in by_end.get(m, ())
                   if steps <= t and table[t - steps, i] + value == table[t, m]]
        steps, _, i = min(options)
        spans.append((i, m))
        t, m = t - steps, i
    spans.reverse()
    blocks = tuple(b for span in spans for b in merges.blocks(span))
    ends = {j for _, j in spans}
    acts = chain.activation_boundaries()
    return DepthCompressionPlan(
        layers=n,
        blocks=blocks,
        kept_activations=tuple(b for b in acts if b in ends),
        removed_activations=tuple(b for b in acts if b not in ends),
        predicted_ms=sum(latency.entries[b] for b in blocks) + latency.fixed_ms,
        importance=float(sum(importance.entries[s] for s in spans)),
        budget_ms=budget_ms,
        inserted_activations=inserted_at(chain, spans),
    )


def fastest_ms(merges: OptimalMerges, spans: Iterable[Pair]) -> float:
    """The predicted time of the fastest plan made of ``spans`` (fixed time excluded; inf if none covers the
    chain)."""
    by_end: dict[int, list[int]] = {}
    for i, j in spans:
        if (i, j) in merges.time:
            by_end.setdefault(j, []).append(i)
    fastest = [0.0] + [math.inf] * merges.layers
    for m in range(1, merges.layers + 1):
        for i in by_end.get(m, ()):
            fastest[m] = min(fastest[m], fastest[i] + merges.time[(i, m)])
    return fastest[-1]


# -------------------------------------------------------------------------------------------------- apply


@dataclass
class AppliedPlan:
    """A plan applied to a model: the network to fine-tune and the merged network to deploy."""

    removed: ChainNetwork  # activations removed, blocks as PaddedSpan: train this
    merged: ChainNetwork  # one convolution per block, equal to ``removed`` in eval mode


def apply_plan(model: nn.Module, plan: DepthCompressionPlan, input_shape: Sequence[int] | None = None) -> AppliedPlan:
    """Apply ``plan`` to ``model`` (left unchanged); after fine-tuning ``removed``, call ``merge_network`` on it."""
    chain = extract_chain(model, input_shape)
    if chain.layers != plan.layers:
        raise SpecError(f"the plan is for {plan.layers} conv units, the model has {chain.layers}")
    if plan.inserted_activations:
        chain = chain.with_moved_activations()
    removed = chain_network(chain, plan.blocks, [*plan.kept_activations, chain.layers], plan.inserted_activations)
    removed.train(model.training)
    merged = merge_network(removed)
    return AppliedPlan(removed, merged)


# ------------------------------------------------------------------------------------------ default score


class FineTuneScore:
    """Score a network by its validation accuracy after a brief fine-tuning on (a subset of) ``dataset``."""

    def __init__(
        self,
        dataset: Dataset,
        config: TrainConfig | None = None,
        train_samples: int | None = 2048,
        val_samples: int | None = 1024,
    ) -> None:
        self.config = config or fine_tune_recipe(1)
        generator = torch.Generator().manual_seed(self.config.seed)
        self.dataset = sample_dataset(dataset, train_samples, val_samples, generator)

    def __call__(self, network: nn.Module) -> float:
        if self.config.epochs:
            train(network, self.dataset, self.config)
        return evaluate_accuracy(network, self.dataset.val)
