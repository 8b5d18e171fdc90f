"""The depth step: depth compression's two-stage DP as a pipeline step, tables measured on the context's target."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from archetype.compress.conv_chain import ConvChain, Pair, extract_chain, merge_network, renormalized
from archetype.compress.depth_compression import (
    FineTuneScore,
    ImportanceTable,
    LatencyTable,
    apply_plan,
    fastest_ms,
    importance_spans,
    measure_importance_table,
    measure_latency_table,
    optimal_merges,
    solve,
)
from archetype.compress.step import CompressionContext, DeployedModel, StepReport, register_step
from archetype.errors import SpecError
from archetype.runtime.data import sample_split
from archetype.runtime.targets import OnnxRuntimeCpuTarget
from archetype.runtime.training import TrainConfig
from archetype.searchspace.types import Image


@dataclass(frozen=True)
class DepthConfig:
    """How the depth step builds its tables and solves."""

    max_span: int = 4  # conv units one merged block may hold
    max_kernel: int = 7  # widest merged kernel timed
    penalty: float = 1.4  # importance: minus this times the mean score of the minimal spans
    importance_epochs: int = 1  # fine-tuning per importance entry
    importance_samples: int = 256  # training samples per importance entry
    importance_val_samples: int = 512  # validation samples scoring each importance entry
    knapsack_steps: int = 2000  # time steps the budget is cut into
    min_speedup: float = 1.25  # out of the budget's reach, the fastest plan is applied only if it is predicted
    # this much faster: a smaller gain is not worth the accuracy it costs the steps after it
    fine_tune_longer: int = 2  # the activation-removed network is fine-tuned this many times the epochs: removing
    # activations changes what a network computes far more than pruning channels does
    renormalization_samples: int = 512  # training images giving each merged convolution's batch norm its statistics
    move_activations: bool = True  # a merged block may end in an activation where the source has none (a linear
    # bottleneck): merging a whole inverted residual block then leaves the network non-linear


def conv_block_onnx(block: nn.Module, shape: tuple[int, ...]) -> bytes | None:
    """The ONNX graph of a merged block (a conv and its activation) written directly, or None if it is not one.

    What the exporter would write for it, without its seconds of tracing per block:
    the latency table times dozens of blocks.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layers = list(block.children()) if isinstance(block, nn.Sequential) else [block]
    conv, act = layers[0], layers[1] if len(layers) > 1 else None
    if not isinstance(conv, nn.Conv2d) or len(layers) > 2 or conv.padding_mode != "zeros" or isinstance(
        conv.padding, str
    ):
        return None
    tensors = [numpy_helper.from_array(conv.weight.detach().numpy(), "w")]
    inputs = ["x", "w"]
    if conv.bias is not None:
        tensors.append(numpy_helper.from_array(conv.bias.detach().numpy(), "b"))
        inputs.append("b")
    ph, pw = conv.padding
    nodes = [helper.make_node("Conv", inputs, ["c"], kernel_shape=list(conv.kernel_size), strides=list(conv.stride),
                              pads=[ph, pw, ph, pw], dilations=list(conv.dilation), group=conv.groups)]
    if act is None:
        nodes[0].output[0] = "y"
    elif type(act) is nn.ReLU:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    elif type(act) is nn.ReLU6:
        tensors += [helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
                    helper.make_tensor("hi", TensorProto.FLOAT, [], [6.0])]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    elif type(act) is nn.Hardswish:
        nodes.append(helper.make_node("HardSwish", ["c"], ["y"]))
    elif type(act) is nn.SiLU:
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    else:
        return None
    with torch.inference_mode():
        out_shape = list(conv(torch.zeros(shape)).shape)
    graph = helper.make_graph(nodes, "merged_block",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def importance_score(context: CompressionContext, config: DepthConfig, chain: ConvChain,
                     spans: Sequence[Pair]) -> Callable[[nn.Module], float]:
    """Brief fine-tuning then validation accuracy, with a progress line per network scored."""
    score = FineTuneScore(context.dataset, TrainConfig(epochs=config.importance_epochs, lr=context.fine_tune.lr),
                          train_samples=config.importance_samples, val_samples=config.importance_val_samples)
    total = sum(bool(chain.removed_by(span)) for span in spans) + 1  # spans removing nothing: scored once
    scored = 0

    def counted(network: nn.Module) -> float:
        nonlocal scored
        scored += 1
        context.say(f"depth: scoring network {scored}/{total} of the importance table")
        return score(network)

    return counted


@register_step("depth")
def depth_step(model: nn.Module, context: CompressionContext) -> tuple[nn.Module, StepReport]:
    """Remove activations and merge the convolutions between them, by the two-stage DP under the budget."""
    config = context.config("depth", DepthConfig())
    if isinstance(model, DeployedModel):
        return model, StepReport("depth", message="the model is already int8; depth compression merges fp32 "
                                 "convolutions (run depth before joint or quantize to merge them)")
    try:
        chain = extract_chain(model, context.input_type.dims())
    except SpecError as exc:
        return model, StepReport("depth", message=f"not a conv chain, depth compression skipped: {exc}")
    if not chain.activation_boundaries():
        return model, StepReport("depth", message="no activation between convolutions to remove")
    if config.move_activations:
        chain = chain.with_moved_activations()

    def latency_of(module: nn.Module, shape: tuple[int, ...]) -> float:
        if isinstance(context.target, OnnxRuntimeCpuTarget):
            direct = conv_block_onnx(module.eval(), shape)
            if direct is not None:
                return context.target.measure_onnx(direct, Image(*shape[1:])).median_ms
        return context.target.measure(module.eval(), Image(*shape[1:])).median_ms

    context.say(f"depth: timing merged blocks of {chain.layers} conv units")
    blocks = measure_latency_table(chain, latency_of, max_span=config.max_span, max_kernel=config.max_kernel,
                                   time_fixed=False)
    singles = sum(blocks.entries[(k - 1, k)] for k in range(1, chain.layers + 1))
    measured = context.latency_ms(model)
    # what merging cannot change (pooling, shortcuts, the head, per-call overhead): the whole model minus its convs
    latency = LatencyTable(chain.layers, blocks.entries, max(0.0, measured - singles))
    merges = optimal_merges(latency)
    spans = importance_spans(chain, merges, config.max_span)
    predicted = singles + latency.fixed_ms
    scale = measured / predicted  # 1 unless the convs alone take longer than the whole model
    budget = context.budget.limit_ms_for(measured) / scale
    floor = fastest_ms(merges, spans) + latency.fixed_ms
    reached = budget >= floor
    if budget < floor * (1 + chain.layers / config.knapsack_steps):  # room for each span's time rounded up
        if predicted < config.min_speedup * floor:
            return model, StepReport("depth", {"predicted_ms": floor, "predicted_original_ms": predicted},
                                     f"the budget is out of depth compression's reach and its fastest plan is "
                                     f"predicted only {predicted / floor:.2f}x faster (under {config.min_speedup:g}x): "
                                     "left to the steps after it")
        budget = floor / (1 - chain.layers / config.knapsack_steps) * (1 + 1e-6)
        # only the fastest plans fit: no span is scored; among them, the one removing the fewest activations
        importance = ImportanceTable({span: -float(len(chain.removed_by(span))) for span in spans})
    else:
        importance = measure_importance_table(chain, merges, importance_score(context, config, chain, spans),
                                              penalty=config.penalty, spans=spans)
    plan = solve(chain, latency, importance, budget, merges=merges, steps_per_ms=config.knapsack_steps / budget)
    details = {"units": chain.layers, "latency_entries": len(latency.entries),
               "importance_entries": len(importance.entries), "predicted_ms": plan.predicted_ms,
               "predicted_original_ms": predicted, "plan": plan.to_json()}
    if not plan.removed_activations and all(j - i == 1 for i, j in plan.blocks):
        return model, StepReport("depth", details, "the best plan keeps every activation; nothing merged")
    applied = apply_plan(model, plan, context.input_type.dims())
    # fine-tuned unmerged: its factored convolutions learn faster than the merged ones (measured on MobileNetV2)
    details["fine_tune"] = context.fine_tune_model(applied.removed, "depth", longer=config.fine_tune_longer).to_json()
    merged = renormalized(merge_network(applied.removed.eval()),
                          sample_split(context.dataset.train, config.renormalization_samples,
                                       torch.Generator().manual_seed(context.seed)).x)
    note = "" if reached else " (the fastest plan: the budget is below what merging alone reaches)"
    moved = f" ({len(plan.inserted_activations)} moved to a merged block's output)" if plan.inserted_activations else ""
    return merged, StepReport("depth", details, f"removed {len(plan.removed_activations)} of "
                              f"{len(chain.activation_boundaries())} activations{moved}, {chain.layers} convs merged "
                              f"into {len(plan.blocks)}{note}, fine-tuned")
