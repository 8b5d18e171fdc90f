"""Every registered operator keeps its typed contract: shapes, counts, gradients and ONNX export.

The cases come from the registry, so a new operator is tested without new test code.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from archetype.errors import SpecError
from archetype.runtime.onnx_export import OPSET
from archetype.searchspace import (
    Image,
    Operator,
    TensorType,
    Tokens,
    Vector,
    Volume,
    list_operators,
    make_operator,
    operator,
)
from archetype.searchspace.operator import OperatorTypeError, get_operator

INPUTS: tuple[TensorType, ...] = (Image(8, 8, 8), Image(3, 16, 16), Tokens(16, 32), Vector(32), Volume(3, 4, 8, 8))
REQUIRED: dict[str, dict[str, Any]] = {"classifier_head": {"classes": 10}}
"""Values for hyperparameters that have neither a default nor a domain."""
BATCH = 2


def _settings(cls: type[Operator]) -> dict[str, dict[str, Any]]:
    """A few hyperparameter settings: every domain at its first and at its last value."""
    fixed = dict(REQUIRED.get(cls.name, {}))
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and f.name not in cls.domain and f.name not in fixed and int in cls.hparam_types[f.name]:
            fixed[f.name] = 8
    first = {**fixed, **{k: v[0] for k, v in cls.domain.items()}}
    last = {**fixed, **{k: v[-1] for k, v in cls.domain.items()}}
    return {"first": first} if first == last else {"first": first, "last": last}


def _cases() -> list[Any]:
    cases = []
    for cls in list_operators():
        for label, hparams in _settings(cls).items():
            for x in INPUTS:
                if not isinstance(x, cls.accepts):
                    continue
                try:
                    make_operator(cls.name, hparams).output_type(x)
                except OperatorTypeError:
                    continue  # this input is too small or of the wrong size for this setting
                except Exception:  # kept: the test itself then shows the error
                    pass
                cases.append(pytest.param(cls.name, hparams, x, id=f"{cls.name}-{label}-{x}"))
    return cases


CASES = _cases()


def _batch(x: TensorType, seed: int = 0) -> torch.Tensor:
    return torch.randn(x.shape(BATCH), generator=torch.Generator().manual_seed(seed))


def _randomise_norm_stats(module: nn.Module) -> None:
    """Give batch norms non-trivial running statistics so that eval mode really differs from train."""
    gen = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def test_every_operator_has_a_case() -> None:
    covered = {case.values[0] for case in CASES}
    assert covered == {cls.name for cls in list_operators()}


@pytest.mark.parametrize(("name", "hparams", "x"), CASES)
def test_forward_backward_shape_and_params(name: str, hparams: dict[str, Any], x: TensorType) -> None:
    op = make_operator(name, hparams)
    module = op.build(x).train()
    inp = _batch(x).requires_grad_(True)
    out = module(inp)
    assert tuple(out.shape) == op.output_type(x).shape(BATCH)
    (out * torch.randn_like(out)).sum().backward()
    assert inp.grad is not None and torch.isfinite(inp.grad).all()
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"parameter {pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"parameter {pname} has a non-finite gradient"
    assert op.params(x) == sum(p.numel() for p in module.parameters())
    assert type(op).weighted == (op.params(x) > 0), "'weighted' says whether a precision may be searched"


@pytest.mark.parametrize(("name", "hparams", "x"), CASES)
def test_macs_formula_matches_flop_counter(name: str, hparams: dict[str, Any], x: TensorType) -> None:
    op = make_operator(name, hparams)
    module = op.build(x).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(_batch(x))
    counted = counter.get_total_flops() / 2 / BATCH
    if counted == 0:
        return  # the counter sees none of this operator's work (pooling, element-wise, identity)
    assert op.macs(x) == pytest.approx(counted, rel=0.05)


class _Zoo(nn.Module):
    """Every case's module side by side, so one ONNX export covers them all."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(modules)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(m(x) for m, x in zip(self.members, xs, strict=True))


def _onnx_outputs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """Export with the project's exporter settings and run the result in ONNX Runtime."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, inputs, dynamo=True, opset_version=OPSET, verbose=False)
    assert program is not None
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(inputs)
    return session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})


def _case_module(name: str, hparams: dict[str, Any], x: TensorType) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    module = make_operator(name, hparams).build(x).eval()
    _randomise_norm_stats(module)
    return module, _batch(x, seed=2)


def _onnx_cases() -> list[Any]:
    """One case per operator (its last setting where there is one): an export takes about a second."""
    chosen: dict[str, Any] = {}
    for case in CASES:
        if case.values[0] not in chosen or ("-last-" in case.id and "-last-" not in chosen[case.values[0]].id):
            chosen[case.values[0]] = case
    return list(chosen.values())


ONNX_CASES = _onnx_cases()


@pytest.fixture(scope="module")
def zoo_outputs() -> dict[str, np.ndarray]:
    """Every ONNX case exported as one model, much faster than one export each; empty if that export fails."""
    modules, inputs = zip(*(_case_module(*case.values) for case in ONNX_CASES), strict=True)
    try:
        outputs = _onnx_outputs(_Zoo(list(modules)), tuple(inputs))
    except Exception:  # each case then exports alone, so the failing operator shows its own error
        return {}
    return {case.id: out for case, out in zip(ONNX_CASES, outputs, strict=True)}


@pytest.mark.slow  # one export of every operator together: about 30 s on 2 cores
@pytest.mark.parametrize(("name", "hparams", "x"), ONNX_CASES)
def test_onnx_export_matches_pytorch(
    name: str, hparams: dict[str, Any], x: TensorType, zoo_outputs: dict[str, np.ndarray], request
) -> None:
    module, inp = _case_module(name, hparams, x)
    got = zoo_outputs.get(request.node.callspec.id)
    if got is None:
        got = _onnx_outputs(module, (inp,))[0]
    with torch.no_grad():
        want = module(inp).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("cls", [c for c in list_operators() if c.hyperparameters()], ids=lambda c: c.name)
def test_wrong_hyperparameter_type_names_operator_and_hyperparameter(cls: type[Operator]) -> None:
    hparams = _settings(cls)["first"]
    for field in cls.hyperparameters():
        with pytest.raises(SpecError, match=rf"'{cls.name}'.*'{field}'"):
            make_operator(cls.name, {**hparams, field: object()})


def test_unknown_hyperparameter_and_operator_are_spec_errors() -> None:
    with pytest.raises(SpecError, match=r"conv_bn_act.*'widht'"):
        make_operator("conv_bn_act", {"widht": 8})
    with pytest.raises(SpecError, match=r"unknown operator 'conv9'; known: .*conv_bn_act"):
        get_operator("conv9")
    with pytest.raises(SpecError, match="classifier_head"):
        make_operator("classifier_head", {})  # a required hyperparameter is missing


def test_registering_a_malformed_operator_raises() -> None:
    class NotADataclass(Operator):
        pass

    @dataclasses.dataclass
    class Mutable(Operator):
        width: int = 1

    @dataclasses.dataclass(frozen=True)
    class StrayDomain(Operator):
        width: int = 1
        domain = {"widht": (1, 2)}

    @dataclasses.dataclass(frozen=True)
    class WellFormed(Operator):
        width: int = 1

    with pytest.raises(TypeError, match="frozen dataclass"):
        operator("_test_not_a_dataclass", family="test", paper="-")(NotADataclass)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="frozen dataclass"):
        operator("_test_mutable", family="test", paper="-")(Mutable)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="domain names unknown hyperparameters"):
        operator("_test_stray_domain", family="test", paper="-")(StrayDomain)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="already registered"):
        operator("conv_bn_act", family="test", paper="-")(WellFormed)  # type: ignore[type-var]
    assert get_operator("conv_bn_act").family != "test" and not hasattr(WellFormed, "name")
    assert not {"_test_not_a_dataclass", "_test_mutable", "_test_stray_domain"} & {c.name for c in list_operators()}


@pytest.mark.parametrize("cls", list_operators(), ids=lambda c: c.name)
def test_operator_metadata_and_domain(cls: type[Operator]) -> None:
    assert cls.family and cls.paper
    assert cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("), "the class needs its own docstring"
    for name, values in cls.domain.items():
        assert values, f"{cls.name}.{name} has an empty domain"
        for value in values:  # every default value must build
            make_operator(cls.name, {**_settings(cls)["first"], name: value})
