"""Where the model to compress comes from: a .pt2 or .onnx file, a factory with a state dict, or a study's trial.

A model file is data, never code: ``.pt2`` (``torch.export.save``) is read with every pickle inside it
limited to tensors, its graph's operators and shape expressions checked before it runs; ``.onnx`` runs in
ONNX Runtime; a state dict is loaded with ``weights_only=True``. A pickled whole module
(``torch.save(module)``) can run any code as it loads, so it is loaded only with an explicit opt-in.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import operator
import os
import pickle
import re
import types
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archetype.errors import SpecError
from archetype.runtime.data import Dataset
from archetype.runtime.onnx_export import quiet_torch
from archetype.runtime.training import TrainConfig, recipe, train
from archetype.searchspace.bounds import ArchitectureLimits

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TRIAL = re.compile(r"^(?P<study>[^:]+):(?P<number>\d+)$")

TRUST_PICKLE_ENV = "ARCHETYPE_TRUST_PICKLE"
"""Set to 1 to load pickled whole modules (the same as ``--trust-pickle``)."""
MAX_MODEL_BYTES = 2 * 1024**3
"""The largest model file read (and the largest a ``.pt2`` archive may unpack to)."""
ONNX_STEPS = ("quantize",)
"""The steps that work on an ONNX graph; the others need a PyTorch module (.pt2, factory, trial)."""

_SAFE_ALTERNATIVES = ("save it with torch.export.save as .pt2, export it to .onnx, or give pkg.module:factory "
                      "with --weights (a state dict)")
_SYMBOL = re.compile(r"[A-Za-z_]\w*")
_EXPRESSION = re.compile(r"^[\w\s+\-*/%(),.<>=!&|~^]*$")
_ARITHMETIC = {getattr(operator, name) for name in (
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne", "lt",
    "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift")}
_MATH = {getattr(math, name) for name in ("ceil", "floor", "trunc", "sqrt", "exp", "log", "sin", "cos", "tanh")}

_SYMPY_NAMES = frozenset((
    "FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural "
    "FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt "
    "RoundDecimal ToFloat Identity Max Min Abs Eq Ne Lt Le Gt Ge And Or Not True False oo Integer Rational Float "
    "floor ceiling sqrt Symbol positive negative nonnegative nonzero integer real finite").split())
_SHAPE_SYMBOL = re.compile(r"^[a-z]+\d+$")
_QUOTED_SYMBOL = re.compile(r"'[a-z]+\d+'")


@dataclass
class LoadedModel:
    """The model to compress, what it was loaded from, and a note for the user (e.g. that it was trained here)."""

    model: nn.Module
    source: str
    source_trial: tuple[str, int] | None = None
    note: str | None = None

    @property
    def is_onnx(self) -> bool:
        """Whether the model is an ONNX graph, so that only ``ONNX_STEPS`` apply to it."""
        from archetype.compress.quantization import OnnxSourceModel

        return isinstance(self.model, OnnxSourceModel)


def trust_pickle_from_env() -> bool:
    """Whether ``ARCHETYPE_TRUST_PICKLE`` opts in to loading pickled whole modules."""
    return os.environ.get(TRUST_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


def load_model(
    spec: str,
    *,
    weights: str | None = None,
    store: Any = None,
    dataset: Dataset | None = None,
    train_config: TrainConfig | None = None,
    trust_pickle: bool = False,
) -> LoadedModel:
    """``spec`` is a ``.pt2`` or ``.onnx`` file, ``pkg.mod:factory`` (+ ``weights``), ``STUDY:TRIAL``, or (with
    ``trust_pickle``) a ``.pt`` file of ``torch.save(module)``."""
    if _TRIAL.match(spec) and not Path(spec).exists():
        if weights is not None:
            raise SpecError("--weights goes with a pkg.module:factory MODEL, not a study trial")
        match = _TRIAL.match(spec)
        assert match is not None
        return _from_trial(match["study"], int(match["number"]), store, dataset, train_config)
    if _FACTORY.match(spec) and not Path(spec).exists():
        return LoadedModel(_from_factory(spec, weights), spec)
    if weights is not None:
        raise SpecError("--weights goes with a pkg.module:factory MODEL, not a model file")
    path = Path(spec)
    if not path.is_file():
        raise SpecError(f"MODEL {path}: no such file (give a .pt2 or .onnx file, pkg.module:factory or STUDY:TRIAL)")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise SpecError(f"MODEL {path}: {size / 1e9:.1f} GB is over the {MAX_MODEL_BYTES / 1e9:.1f} GB a model "
                        f"file may have")
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        model = load_exported_program(path)
    elif suffix == ".onnx":
        model = load_onnx(path)
    else:
        model = _from_pickle(path, trust_pickle or trust_pickle_from_env())
    return LoadedModel(model, str(path.absolute()))


def _from_pickle(path: Path, trusted: bool) -> nn.Module:
    """A ``torch.save`` file: refused unless ``trusted`` when it holds more than tensors."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _looks_pickled(path):
            raise _not_a_model(path, exc) from None
        if not trusted:
            raise SpecError(f"MODEL {path}: a pickled whole module (torch.save(module)) can run any code as it loads, "
                            f"so it is not loaded; {_SAFE_ALTERNATIVES}; or, if you trust who made this file, pass "
                            f"--trust-pickle (or set {TRUST_PICKLE_ENV}=1)") from None
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as again:
            raise _not_a_model(path, again) from None
    except Exception as exc:
        raise _not_a_model(path, exc) from None
    if isinstance(loaded, dict):
        raise SpecError(f"MODEL {path}: holds a state dict, not a module; give pkg.module:factory and "
                        f"--weights {path}")
    if not isinstance(loaded, nn.Module):
        raise SpecError(f"MODEL {path}: holds a {type(loaded).__name__}, not a torch.nn.Module")
    return loaded.eval()


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (the type alone for an empty message)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _looks_pickled(path: Path) -> bool:
    """Whether ``path`` is a ``torch.save`` zip or a bare pickle (protocol 2 or later), by its first bytes."""
    with path.open("rb") as file:
        head = file.read(2)
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _not_a_model(path: Path, exc: BaseException) -> SpecError:
    return SpecError(f"MODEL {path}: not a saved PyTorch model ({_first_line(exc)})")


def load_exported_program(path: Path) -> nn.Module:
    """The module of a ``torch.export.save`` file, loaded without running code from it; SpecError otherwise."""
    _check_pt2_archive(path)
    try:
        with tensors_only_unpickling(), quiet_torch():  # torch logs a traceback on a file it cannot read
            program = torch.export.load(path)
        _check_graph_targets(path, program.graph_module)  # the graph as read, before torch adds its input guards
        module = program.module()
        for name in ("train", "eval"):  # torch refuses these on the instance; the graph computes as exported either way
            module.__dict__.pop(name, None)
        return module.eval()
    except SpecError as exc:
        message = str(exc)
        raise SpecError(message if message.startswith("MODEL ") else f"MODEL {path}: {message}") from None
    except Exception as exc:
        raise SpecError(f"MODEL {path}: not a loadable torch.export program ({_first_line(exc)})") from None


def _check_pt2_archive(path: Path) -> None:
    """SpecError unless ``path`` is a zip of bounded size whose shape expressions are plain arithmetic."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if sum(m.file_size for m in members) > MAX_MODEL_BYTES:
                raise SpecError(f"MODEL {path}: unpacks to more than {MAX_MODEL_BYTES / 1e9:.1f} GB")
            for member in members:
                if member.filename.endswith(".json") and "/models/" in f"/{member.filename}":
                    _check_expressions(path, json.loads(archive.read(member)))
    except SpecError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, RecursionError, EOFError) as exc:
        raise SpecError(f"MODEL {path}: not a torch.export .pt2 archive ({_first_line(exc)})") from None


def _check_expressions(path: Path, node: Any) -> None:
    """Every ``expr_str`` (parsed by sympy, which evaluates it) names only shape symbols and sympy functions."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            expr = item.get("expr_str")
            if expr is not None and not _plain_expression(expr):
                raise SpecError(f"MODEL {path}: a shape expression is not plain arithmetic: {str(expr)[:80]!r}")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _plain_expression(expr: Any) -> bool:
    if not isinstance(expr, str) or len(expr) > 10_000:
        return False
    expr = _QUOTED_SYMBOL.sub("s0", expr)  # Symbol('s31', integer=True): a quoted name is only ever a symbol
    if not _EXPRESSION.match(expr) or "__" in expr:
        return False
    names = _SYMBOL.findall(expr)
    return all(name in _SYMPY_NAMES or _SHAPE_SYMBOL.match(name) for name in names)


@contextlib.contextmanager
def tensors_only_unpickling() -> Iterator[None]:
    """While ``torch.export.load`` runs: each ``torch.load`` it makes loads tensors only, and its raw pickle loads
    (custom and opaque objects) refuse. Not thread-safe: it swaps module attributes for the duration."""
    from torch.export.pt2_archive import _package

    real_load, real_pickle_load_obj, real_pickle = torch.load, torch._C._pickle_load_obj, _package.pickle

    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise SpecError("holds a pickled Python object, which is not loaded (it could run code)")

    torch.load = load  # type: ignore[assignment]
    torch._C._pickle_load_obj = refuse
    _package.pickle = types.SimpleNamespace(loads=refuse, load=refuse)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.load = real_load  # type: ignore[assignment]
        torch._C._pickle_load_obj = real_pickle_load_obj
        _package.pickle = real_pickle  # type: ignore[assignment]


def _check_graph_targets(path: Path, module: nn.Module) -> None:
    """SpecError unless every call in the program's graphs is a torch operator or plain arithmetic."""
    operators = (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)
    for sub in module.modules():
        graph = getattr(sub, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            target = node.target
            allowed = node.op == "call_function" and (
                isinstance(target, operators) or target in _ARITHMETIC or target in _MATH
            )
            if not allowed:
                raise SpecError(f"MODEL {path}: node {node.name!r} calls {node.op} {target!r}, which is not a torch "
                                f"operator; it is not run")


def load_onnx(path: Path) -> nn.Module:
    """An ``.onnx`` classifier to run in ONNX Runtime; SpecError for a broken file or one with external data."""
    import onnx

    from archetype.compress.quantization import OnnxSourceModel

    data = path.read_bytes()
    try:
        graph_model = onnx.load_from_string(data)
        onnx.checker.check_model(graph_model)
    except Exception as exc:
        raise SpecError(f"MODEL {path}: not a valid ONNX model ({_first_line(exc)})") from None
    initializers = list(graph_model.graph.initializer)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in initializers):
        raise SpecError(f"MODEL {path}: keeps weights in external files; save it as one file "
                        f"(onnx.save(model, path, save_as_external_data=False))")
    inputs = {i.name for i in initializers}
    feeds = [i for i in graph_model.graph.input if i.name not in inputs]
    if len(feeds) != 1:
        raise SpecError(f"MODEL {path}: takes {len(feeds)} inputs; a classifier takes one batch of samples")
    params = sum(math.prod(t.dims) for t in initializers)
    try:
        return OnnxSourceModel(data, params=params)
    except Exception as exc:
        raise SpecError(f"MODEL {path}: ONNX Runtime cannot run it ({_first_line(exc)})") from None


def _from_factory(spec: str, weights: str | None) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise SpecError(f"MODEL {spec}: cannot import {module_name!r}: {_first_line(exc)}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SpecError(f"MODEL {spec}: {module_name!r} has no callable {attr!r}")
    try:
        model = factory()
    except Exception as exc:
        raise SpecError(f"MODEL {spec}: calling {attr}() failed: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"MODEL {spec}: {attr}() returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except FileNotFoundError:
            raise SpecError(f"--weights {weights}: no such file") from None
        except Exception as exc:
            raise SpecError(f"--weights {weights}: not a state dict of {attr}(): {_first_line(exc)}") from None
    return model.eval()


def _from_trial(
    study: str, number: int, store: Any, dataset: Dataset | None, config: TrainConfig | None
) -> LoadedModel:
    from archetype.searchspace import Architecture

    if store is None or dataset is None:
        raise SpecError(f"MODEL {study}:{number}: a study trial needs the store and --data")
    trial = store.trial(study, number)
    arch = Architecture.from_json(trial.arch)
    if str(arch.input) != str(dataset.input_type):
        raise SpecError(f"--data {dataset.name}: its samples are {dataset.input_type}, trial {number} of study "
                        f"'{study}' takes {arch.input}")
    spec = store.get_study(study).spec
    try:
        limits = ArchitectureLimits(spec.get("max_params", ArchitectureLimits.max_params),
                                    spec.get("max_activation_mb", ArchitectureLimits.max_activation_mb))
        limits.check_architecture(arch)  # a stored row is input too: nothing absurd is built from it
    except SpecError as exc:
        raise SpecError(f"MODEL {study}:{number}: {exc}") from None
    model = arch.build()
    config = config or recipe(str(spec.get("recipe", "plain")), epochs=int(spec.get("epochs", 5)),
                              seed=int(spec.get("seed", 0)), device=str(spec.get("device", "auto")))
    train(model, dataset, config)
    note = (f"trial {number} of study '{study}' has no saved weights: its architecture was trained here on "
            f"{dataset.name} for {config.epochs} epochs")
    return LoadedModel(model.eval(), f"{study}:{number}", (study, number), note)
