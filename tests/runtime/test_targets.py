"""Every registered target measures a built architecture and says what it ran on."""

from __future__ import annotations

import math

import pytest
import torch

from archetype.errors import SpecError
from archetype.runtime.targets import Target, get_target, list_targets, usable_targets
from archetype.searchspace import Architecture, Image, get_space

from ..conftest import QUICK

ARCH = {
    "input": "Image[1,8,8]",
    "slots": [
        {"slot": "stem", "op": "conv_bn_act", "params": {"width": 16, "kernel": 3, "stride": 1}},
        {
            "slot": "stage1.block1",
            "op": "inverted_residual",
            "params": {"width": 24, "expand": 3, "kernel": 3, "stride": 1},
        },
        {"slot": "stage1.down", "op": "pool", "params": {"kind": "avg"}},
        {"slot": "stage2.block1", "op": "dwsep_conv", "params": {"width": 32, "kernel": 5, "stride": 1}},
        {"slot": "stage2.block2", "op": "basic_block", "params": {"width": 32, "stride": 1}},
        {"slot": "head", "op": "classifier_head", "params": {"classes": 10}},
    ],
}


@pytest.fixture(scope="module")
def arch() -> Architecture:
    space = get_space("conv-small", Image(1, 8, 8), 10)
    return space.validate(Architecture.from_json(ARCH, space))


def test_the_registry_has_the_cpu_and_cuda_runtimes():
    assert {"cpu-ort", "cpu-ort-int8", "cpu-torch", "cuda-ort", "cuda-torch"} <= set(list_targets())
    assert {"cpu-ort", "cpu-ort-int8", "cpu-torch"} <= set(usable_targets())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_targets_refuse_a_machine_without_cuda():
    with pytest.raises(SpecError, match=r"target 'cuda-torch' needs a CUDA device, and torch .* sees none"):
        get_target("cuda-torch")
    with pytest.raises(SpecError, match=r"target 'cuda-ort' needs ONNX Runtime's CUDAExecutionProvider, which this "
                       r"installation lacks \(it has .*CPUExecutionProvider"):
        get_target("cuda-ort")
    assert not {"cuda-ort", "cuda-torch"} & set(usable_targets())


@pytest.mark.slow
def test_int8_target_runs_the_one_int8_recipe(arch, tmp_path):
    import onnx

    from archetype.runtime.onnx_export import export_onnx
    from archetype.runtime.quantization import RECIPE
    from archetype.runtime.targets import example_input

    target = get_target("cpu-ort-int8", protocol=QUICK)
    assert target.fingerprint()["quantization"] == RECIPE and "int8" in RECIPE
    exported = export_onnx(arch.build(), example_input(arch.input), tmp_path / "model.onnx")
    graph = onnx.load(str(target.prepare(exported, arch.input))).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    initializers = {t.name: t for t in graph.initializer}
    zero_points = [initializers[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    activations = [z for z in zero_points if not z.dims]  # a weight's zero points are per channel
    assert activations and {z.data_type for z in activations} == {onnx.TensorProto.UINT8}  # the recipe's uint8
    assert any(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4 for t in graph.initializer)


@pytest.mark.parametrize("name", usable_targets())
def test_target_measures_a_built_architecture(name, arch):
    target = get_target(name, protocol=QUICK)
    assert isinstance(target, Target) and target.name == name
    model = arch.build().train()
    previous_threads = torch.get_num_threads()
    latency = target.measure(model, arch.input)
    assert latency.median_ms > 0 and math.isfinite(latency.median_ms)
    assert latency.spread >= 0 and math.isfinite(latency.spread)
    assert latency.blocks == 3 and latency.runs_per_block >= 1
    assert model.training, "measuring leaves the model's mode as it was"
    assert torch.get_num_threads() == previous_threads


@pytest.mark.parametrize("name", usable_targets())
def test_fingerprint_names_the_machine_and_versions(name):
    fingerprint = get_target(name, threads=2).fingerprint()
    assert fingerprint["target"] == name and fingerprint["threads"] == "2"
    assert fingerprint["torch"] == torch.__version__
    assert fingerprint["onnxruntime"][0].isdigit() and fingerprint["python"][0].isdigit()
    assert fingerprint["cpu"] and fingerprint["machine"] and fingerprint["runtime"]
    assert all(isinstance(value, str) for value in fingerprint.values())


def test_unknown_target_lists_the_known_ones():
    known = "cpu-ort, cpu-ort-int8, cpu-torch, cuda-ort, cuda-torch"
    with pytest.raises(SpecError, match=rf"unknown target 'tpu-v9'; known: {known}"):
        get_target("tpu-v9")


@pytest.mark.parametrize(
    ("options", "message"),
    [({"threads": 0}, "threads must be a positive integer"), ({"cores": 2}, r"bad options \['cores'\]")],
)
def test_bad_target_options_are_spec_errors(options, message):
    with pytest.raises(SpecError, match=message):
        get_target("cpu-torch", **options)
