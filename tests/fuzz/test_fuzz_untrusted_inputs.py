"""Untrusted inputs: hostile pickles run nothing, oversized dimensions are refused by formula, alias bombs stop at
composition, and model files truncated at any offset fail with one SpecError line.

``ARCHETYPE_FUZZ=full`` draws more cases and truncates every file at every offset (CI: every 7th offset, and
every one of the first and last 256 bytes, where the headers and the zip directory are).
"""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.export.pt2_archive.constants import OPAQUE_OBJ_FILENAME_PREFIX

from archetype.compress.model_source import load_model
from archetype.errors import SpecError
from archetype.searchspace import Candidate, Image, SearchSpace, Slot
from archetype.searchspace.bounds import ArchitectureLimits, activation_mb
from archetype.searchspace.yaml_space import MAX_YAML_VALUES, load_space_yaml
from archetype.spec import RunSpec

FULL = os.environ.get("ARCHETYPE_FUZZ") == "full"
EXAMPLES = 1000 if FULL else 40


class Payload:
    """Unpickling it calls ``action(*args)``: each action would leave ``marker`` behind."""

    def __init__(self, action: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.action, self.args = action, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.action, self.args


def _payload(kind: str, marker: Path) -> Payload:
    if kind == "open":
        return Payload(open, (str(marker), "w"))
    if kind == "mkdir":
        return Payload(os.mkdir, (str(marker),))
    if kind == "exec":
        return Payload(exec, (f"open({str(marker)!r}, 'w').close()",))
    return Payload(shutil.copyfile, (__file__, str(marker)))


def _wrapped(payload: Payload, how: str) -> object:
    if how == "alone":
        return payload
    if how == "state dict":
        return {"0.weight": torch.zeros(2, 2), "0.bias": payload}
    if how == "nested":
        return [{"a": (1, [payload])}]
    return nn.Sequential(nn.Linear(2, 2)), payload


def _torch_saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@functools.cache
def _pt2_bytes() -> bytes:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    program = torch.export.export(model, (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("b")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _pt2_with(payload_bytes: bytes, where: str) -> bytes:
    """The tiny .pt2 with ``payload_bytes`` as a pickled weight or an opaque constant."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(_pt2_bytes())) as old, zipfile.ZipFile(out, "w") as new:
        for name in old.namelist():
            data = old.read(name)
            if where == "weight" and name.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                new.writestr(name, json.dumps(config))
                weight = name.rsplit("/", 1)[0] + "/" + config["config"][first]["path_name"]
                continue
            if where == "constant" and name.endswith("model_constants_config.json"):
                entry = {"path_name": f"{OPAQUE_OBJ_FILENAME_PREFIX}0", "is_param": False, "use_pickle": True,
                         "tensor_meta": None}
                new.writestr(name, json.dumps({"config": {"c": entry}}))
                new.writestr(name.rsplit("/", 1)[0] + f"/{OPAQUE_OBJ_FILENAME_PREFIX}0", payload_bytes)
                continue
            new.writestr(name, data)
    if where != "weight":
        return out.getvalue()
    rewritten = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as old, zipfile.ZipFile(rewritten, "w") as new:
        for name in old.namelist():
            new.writestr(name, payload_bytes if name == weight else old.read(name))
    return rewritten.getvalue()


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="arc-untrusted-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@settings(settings.get_profile("archetype-fuzz"), max_examples=EXAMPLES)
@given(kind=st.sampled_from(["open", "mkdir", "exec", "copy"]),
       how=st.sampled_from(["alone", "state dict", "nested", "beside a module"]),
       container=st.sampled_from(["torch.save", "pickle", "pt2 weight", "pt2 constant", "--weights"]),
       protocol=st.integers(2, 5))
def test_a_hostile_pickle_runs_nothing(kind: str, how: str, container: str, protocol: int) -> None:
    with tempfile.TemporaryDirectory(prefix="arc-hostile-") as name:
        folder = Path(name)
        marker = folder / "created"
        hostile = _wrapped(_payload(kind, marker), how)
        if container == "pickle":
            path, data = folder / "model.pt", pickle.dumps(hostile, protocol=protocol)
        elif container.startswith("pt2"):
            inner = _torch_saved(hostile) if container == "pt2 weight" else pickle.dumps(hostile, protocol=protocol)
            path, data = folder / "model.pt2", _pt2_with(inner, container.split()[1])
        else:
            path, data = folder / "model.pt", _torch_saved(hostile)
        path.write_bytes(data)
        with pytest.raises(SpecError) as caught:
            if container == "--weights":
                load_model("torch.nn:Identity", weights=str(path))
            else:
                load_model(str(path))
        assert len(str(caught.value).splitlines()) == 1
        assert not marker.exists()


huge = st.one_of(st.integers(1, 64), st.integers(1, 10**12), st.sampled_from([10**6, 10**8, 2**31, 2**63]))


@settings(settings.get_profile("archetype-fuzz"), max_examples=EXAMPLES)
@given(widths=st.lists(huge, min_size=1, max_size=3), kernels=st.lists(st.sampled_from([1, 3, 5, 7, 31, 1001]),
       min_size=1, max_size=2), hidden=huge, max_params=st.integers(10**3, 10**9),
       max_activation_mb=st.floats(0.01, 4096))
def test_oversized_dimensions_are_refused_by_formula(widths: list[int], kernels: list[int], hidden: int,
                                                     max_params: int, max_activation_mb: float) -> None:
    space = SearchSpace("fuzz", Image(3, 32, 32), None, (
        Slot("stem", (Candidate.of("conv_bn_act", {"width": tuple(widths), "kernel": tuple(kernels)}),)),
        Slot("body", (Candidate.of("dwsep_conv", {"width": tuple(widths), "kernel": tuple(kernels)}),
                      Candidate.of("identity"))),
        Slot("head", (Candidate.of("classifier_head", {"classes": 10}),)),
    ))
    limits = ArchitectureLimits(max_params, max_activation_mb)
    try:
        limits.check_space(space)
    except SpecError as exc:
        message = str(exc)
        assert message.startswith("space 'fuzz': slot '") and ("over max_params" in message or
                                                               "over max_activation_mb" in message)
        assert len(message.splitlines()) == 1
        return
    rng = np.random.default_rng(0)
    for _ in range(5):  # a space that passes has no single choice over a ceiling
        try:
            arch = space.sample(rng)
        except SpecError:
            return
        for typing in arch.typing():
            assert typing.params <= max_params
            assert activation_mb(typing.output) <= max_activation_mb


def _alias_bomb(depth: int, fan_out: int, flow: bool) -> str:
    lines = ["a0: &a0 [x]"]
    for level in range(1, depth + 1):
        refs = ", ".join([f"*a{level - 1}"] * fan_out)
        lines.append(f"a{level}: &a{level} [{refs}]")
    body = ("{" + ", ".join(lines) + "}") if flow else "\n  ".join(lines)
    return body


@settings(settings.get_profile("archetype-fuzz"), max_examples=EXAMPLES)
@given(depth=st.integers(1, 14), fan_out=st.integers(2, 12), flow=st.booleans(),
       where=st.sampled_from(["run spec", "space", "self"]))
def test_nested_yaml_aliases_stop_at_composition(depth: int, fan_out: int, flow: bool, where: str) -> None:
    expanded = sum(fan_out**level for level in range(depth + 1))
    with tempfile.TemporaryDirectory(prefix="arc-yaml-") as name:
        path = Path(name) / "file.yaml"
        bomb = _alias_bomb(depth, fan_out, flow)
        if where == "run spec":
            path.write_text(f"space: conv-small\nstrategy_options:\n  {bomb}\n" if not flow else
                            f"space: conv-small\nstrategy_options: {bomb}\n")
            load: Callable[[], object] = lambda: RunSpec.from_yaml(path)  # noqa: E731
        elif where == "space":
            path.write_text(f"description: x\nslots:\n  - name: stem\n    candidates: [{{op: identity}}]\n"
                            f"    extra: {{{bomb.strip('{}')}}}\n" if flow else
                            f"slots:\n  - name: stem\n    candidates: [{{op: identity}}]\n    extra:\n      "
                            f"{bomb.replace(chr(10) + '  ', chr(10) + '      ')}\n")
            load = lambda: load_space_yaml(path, Image(1, 8, 8), 10)  # noqa: E731
        else:  # an anchor inside itself
            path.write_text("space: conv-small\nstrategy_options: &s {loop: *s}\n")
            load = lambda: RunSpec.from_yaml(path)  # noqa: E731
        try:
            load()
        except SpecError as exc:
            assert len(str(exc).splitlines()) == 1 and str(path) in str(exc)
            if where == "self" or expanded > MAX_YAML_VALUES:
                assert "expands to more than" in str(exc)
            return
        assert where != "self" and expanded <= MAX_YAML_VALUES


def _offsets(size: int) -> list[int]:
    if FULL:
        return list(range(size))
    return sorted(set(range(0, size, 7)) | set(range(min(256, size))) | set(range(max(0, size - 256), size)))


@functools.cache
def _originals() -> dict[str, bytes]:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    with tempfile.TemporaryDirectory(prefix="arc-orig-") as name:
        from archetype.runtime.onnx_export import export_onnx

        onnx = export_onnx(model, torch.randn(1, 1, 8, 8), Path(name) / "m.onnx").read_bytes()
    return {".pt2": _pt2_bytes(), ".onnx": onnx, "weights": _torch_saved(model.state_dict()),
            ".pt": _torch_saved(model)}


@pytest.mark.parametrize("kind", [".pt2", ".onnx", "weights", ".pt"])
def test_a_model_file_truncated_at_any_offset_fails_in_one_line(kind: str, folder: Path) -> None:
    data = _originals()[kind]
    path = folder / ("weights.pt" if kind == "weights" else f"model{kind}")
    for offset in _offsets(len(data)):
        path.write_bytes(data[:offset])
        with pytest.raises(SpecError) as caught:
            if kind == "weights":
                load_model("torch.nn:Identity", weights=str(path))  # no truncation of these weights fits Identity
            else:
                load_model(str(path), trust_pickle=kind == ".pt")
        message = str(caught.value)
        assert len(message.splitlines()) == 1 and path.name in message, (offset, message)
