"""Spaces written in YAML load, and every mistake in a file is one SpecError line at file:line."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archetype.errors import SpecError
from archetype.searchspace import Image, SearchSpace, Vector, get_space, list_operators
from archetype.searchspace.operator import CATEGORIES
from archetype.searchspace.yaml_space import load_space_yaml

INPUT = Image(1, 8, 8)
VALID = """\
name: tiny
description: a stem and a head
input: Image[1,8,8]
output: Vector[10]
slots:
  - name: stem
    categories: [channel-changing, downsampling]
    candidates:
      - op: conv_bn_act
        width: [8, 16]
        kernel: 3
      - op: dwsep_conv
        width: 8
        stride: [1, 2]
  - name: head
    categories: head
    candidates:
      - op: classifier_head
        classes: $classes
"""


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_valid_file_loads_and_samples(tmp_path: Path) -> None:
    space = load_space_yaml(_write(tmp_path, VALID), INPUT, 10)
    assert isinstance(space, SearchSpace)
    assert (space.name, space.description) == ("tiny", "a stem and a head")
    assert (space.input, space.output) == (INPUT, Vector(10))
    assert [s.name for s in space.slots] == ["stem", "head"]
    assert space.slots[0].categories == ("channel-changing", "downsampling")
    assert space.slots[1].categories == ("head",)
    conv = dict(space.slots[0].candidates[0].domain)
    assert conv["width"] == (8, 16) and conv["kernel"] == (3,)
    rng = np.random.default_rng(1)
    for _ in range(20):
        arch = space.sample(rng)
        assert space.validate(arch).typing()[-1].output == Vector(10)


def test_defaults_name_input_output_from_file_and_data(tmp_path: Path) -> None:
    text = "\n".join(line for line in VALID.splitlines() if not line.startswith(("name:", "input:", "output:")))
    space = load_space_yaml(_write(tmp_path, text, "my-space.yml"), Image(1, 28, 28), 7)
    assert (space.name, space.input, space.output) == ("my-space", Image(1, 28, 28), Vector(7))
    assert dict(space.slots[1].candidates[0].domain)["classes"] == (7,)


def test_classes_substitution_in_lists_and_output(tmp_path: Path) -> None:
    text = VALID.replace("classes: $classes", "classes: [$classes]").replace("Vector[10]", "Vector[3]")
    space = load_space_yaml(_write(tmp_path, text), INPUT, 3)
    assert dict(space.slots[1].candidates[0].domain)["classes"] == (3,)


def test_merge_keys_and_anchors_are_honoured(tmp_path: Path) -> None:
    text = """\
    slots:
      - name: stem
        candidates:
          - &conv {op: conv_bn_act, width: 8, kernel: 3, stride: 1}
      - name: body
        candidates:
          - {<<: *conv, width: 16}
      - name: head
        candidates: [{op: classifier_head, classes: $classes}]
    """
    space = load_space_yaml(_write(tmp_path, text), INPUT, 10)
    assert dict(space.slots[1].candidates[0].domain)["width"] == (16,)


def test_get_space_routes_paths_to_the_yaml_loader(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID)
    assert get_space(str(path), INPUT, 10).name == "tiny"
    other = _write(tmp_path, VALID, "space.txt")  # an existing file is read whatever its suffix
    assert get_space(str(other), INPUT, 10).name == "tiny"
    with pytest.raises(SpecError, match=r"missing\.yaml"):
        get_space(str(tmp_path / "missing.yaml"), INPUT, 10)


ERRORS: dict[str, tuple[str, str]] = {
    # case: (file text with '#<' on the line the message must name, expected part of the message)
    "not YAML": ("slots:\n  - name: [stem\n    candidates: []  #<\n", "not valid YAML"),
    "tab indentation": ("slots:\n\t- name: a  #<\n", "not valid YAML"),
    "two documents": ("slots: []\n---  #<\nslots: []\n", "expected a single document"),
    "python tag": (VALID.replace("kernel: 3", "kernel: !!python/name:os.system 3"), "could not determine"),
    "top level a list": ("- name: stem  #<\n", "the top level must be a mapping"),
    "top level a string": ("just text  #<\n", "the top level must be a mapping"),
    "unknown top key": (VALID.replace("output:", "outptu:"), "unknown key 'outptu'.*allowed: name, description"),
    "duplicate top key": (VALID.replace("output: Vector[10]", "name: again"), "key 'name' appears twice"),
    "missing slots": ("name: x  #<\ndescription: y\n", "missing 'slots'"),
    "slots not a list": ("slots: stem  #<\n", "'slots' must be a non-empty list"),
    "slots empty": ("slots: []  #<\n", "'slots' must be a non-empty list"),
    "slot not a mapping": ("slots:\n  - stem  #<\n", "a slot must be a mapping"),
    "slot without name": ("slots:\n  - candidates: [{op: identity}]  #<\n", "a slot has no 'name'"),
    "slot name not text": ("slots:\n  - name: [a]  #<\n    candidates: [{op: identity}]\n", "slot name must be a"),
    "odd slot name": (VALID.replace("name: stem", "name: stem one"), "slot name 'stem one' may hold only"),
    "duplicate slot": (
        VALID.replace("  - name: head", "  - name: stem"),
        "slot 'stem': another slot has this name",
    ),
    "unknown slot key": (VALID.replace("    categories: head", "    category: head"), "unknown key 'category'"),
    "duplicate slot key": (
        VALID.replace("classes: $classes", "classes: $classes\n    candidates: []  #<"),
        "key 'candidates' appears twice in a slot",
    ),
    "no candidates": ("slots:\n  - name: a\n    candidates: []  #<\n", "slot 'a': 'candidates' must be a non-empty"),
    "candidates missing": ("slots:\n  - name: a  #<\n", "slot 'a': 'candidates' must be a non-empty"),
    "candidate without op": (
        "slots:\n  - name: a\n    candidates:\n      - width: 8  #<\n",
        "slot 'a': a candidate has no 'op'",
    ),
    "unknown operator": (VALID.replace("op: dwsep_conv", "op: dwsep_convv"), "unknown operator 'dwsep_convv'; known: "),
    "op not text": (
        "slots:\n  - name: a\n    candidates:\n      - op: 3  #<\n",
        "op must be a non-empty one-line string",
    ),
    "unknown hyperparameter": (
        VALID.replace("kernel: 3", "kernal: 3"),
        "slot 'stem': operator 'conv_bn_act' has no hyperparameter 'kernal'",
    ),
    "bad first value": (
        VALID.replace("width: [8, 16]", "width: [eight, 16]"),
        "hyperparameter 'width' must be int, got 'eight'",
    ),
    "bad later value": (
        VALID.replace("width: [8, 16]", "width:\n          - 8\n          - 16.5  #<"),
        "hyperparameter 'width' must be int, got 16.5",
    ),
    "bad scalar value": (VALID.replace("width: 8\n", "width: true\n"), "slot 'stem': .*'width' must be int, got True"),
    "invalid value": (VALID.replace("kernel: 3", "kernel: 4"), "odd kernel"),
    "empty value list": (VALID.replace("kernel: 3", "kernel: []"), "hyperparameter 'kernel' has no values"),
    "missing required": (
        VALID.replace("op: classifier_head\n        classes: $classes", "op: classifier_head  #<"),
        "slot 'head': operator 'classifier_head'.*classes",
    ),
    "bad category": (
        VALID.replace("categories: head", "categories: heads"),
        "slot 'head': unknown category 'heads'; known:",
    ),
    "bad category in list": (
        VALID.replace("[channel-changing, downsampling]", "[channel-changing, down]"),
        "unknown category 'down'",
    ),
    "bad input type": (VALID.replace("Image[1,8,8]", "Image[1,8]"), "bad input type: Image takes 3 dimensions"),
    "bad output type": (VALID.replace("Vector[10]", "Vektor[10]"), "bad output type: unknown tensor layout 'Vektor'"),
    "input mismatch": (
        VALID.replace("Image[1,8,8]", "Image[3,8,8]"),
        r"input Image\[3,8,8\] does not match .*Image\[1,8,8\]",
    ),
    "bad timestamp": (VALID.replace("kernel: 3", "kernel: 2001-02-31"), "bad value"),
}


def _expected_line(text: str) -> int | None:
    """The line a case marks with '#<', if it marks one."""
    for number, line in enumerate(text.splitlines(), start=1):
        if "#<" in line:
            return number
    return None


def _changed_line(case_text: str) -> int:
    """The first line where a case differs from VALID (the line its mistake is on)."""
    for number, (a, b) in enumerate(zip(case_text.splitlines(), VALID.splitlines(), strict=False), start=1):
        if a != b:
            return number
    raise AssertionError("the case does not change VALID")


@pytest.mark.parametrize(("text", "message"), list(ERRORS.values()), ids=list(ERRORS))
def test_error_names_file_line_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text, "broken-space.yaml")
    line = _expected_line(text) or _changed_line(text)
    with pytest.raises(SpecError) as exc:
        load_space_yaml(path, INPUT, 10)
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1
    assert msg.startswith(f"{path}:{line}: "), msg
    assert re.search(message, msg), msg


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: cannot read the space file"):
        load_space_yaml(tmp_path / "nope.yaml", INPUT, 10)


def test_absurd_nesting_is_a_spec_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "slots: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(SpecError, match="nested too deeply"):
        load_space_yaml(path, INPUT, 10)


def test_unsatisfiable_space_names_the_file_and_last_type_error(tmp_path: Path) -> None:
    text = VALID.replace("classes: $classes", "classes: 4")
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as exc:
        load_space_yaml(path, INPUT, 10)
    assert str(exc.value) == (
        f"{path}: no well-typed architecture: slot 'head' produces Vector[4], but the space's output type is Vector[10]"
    )


OPS = [cls.name for cls in list_operators()]
HPARAMS = sorted({h for cls in list_operators() for h in cls.hyperparameters()})
HEAD = {"name": "head", "candidates": [{"op": "classifier_head", "classes": "$classes"}]}
scalars = st.one_of(
    st.integers(-3, 70),
    st.sampled_from([0, 0.5, 3.0, True, None, "$classes", "relu", "max", "x", "", "a\nb"]),
    st.text(max_size=4),
)
values = st.deferred(
    lambda: st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=3), scalars, max_size=1))
)


def _mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` nine times in ten, else ``odd``."""
    return st.integers(0, 9).flatmap(lambda i: usual if i < 9 else odd)


def _candidate(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    """A candidate of ``cls`` with values mostly from its own domain, so that it is often valid."""
    domain = {
        k: _mostly(st.one_of(st.sampled_from(v), st.lists(st.sampled_from(v), min_size=1, max_size=2)), values)
        for k, v in cls.domain.items()
    }
    required = {
        f.name: st.just("$classes" if f.name == "classes" else 8)
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.name not in cls.domain
    }
    return st.fixed_dictionaries({"op": st.just(cls.name), **required}, optional=domain)


plausible_candidates = st.deferred(lambda: st.one_of(*(_candidate(c) for c in list_operators())))
odd_candidates = st.one_of(
    st.tuples(st.sampled_from([*OPS, "nope", 3]), st.dictionaries(st.sampled_from([*HPARAMS, "bogus"]), values))
    .map(lambda t: {"op": t[0], **t[1]}),
    values,
)
slot = st.fixed_dictionaries(
    {
        "name": _mostly(st.sampled_from(["stem", "body", "down", "a.b", "x-1"]), values),
        "candidates": st.lists(_mostly(plausible_candidates, odd_candidates), min_size=1, max_size=3),
    },
    optional={
        "categories": st.lists(_mostly(st.sampled_from(CATEGORIES), values), min_size=1, max_size=2),
        "skip": _mostly(st.sampled_from(["input", "stem", "body", "down"]), values),
        "repeat": _mostly(st.one_of(st.integers(0, 3), st.lists(st.integers(-1, 3), min_size=2, max_size=2)), values),
    },
)


def _distinct_then_head(slots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The slots whose name is new, then the head: a list that is often a valid space."""
    kept: list[dict[str, Any]] = []
    for s in slots:
        if all(s["name"] != k["name"] for k in kept):
            kept.append(s)
    return [*kept, HEAD]


slots = _mostly(
    st.lists(slot, max_size=3).map(_distinct_then_head),
    st.one_of(values, st.lists(_mostly(slot, values), max_size=3)),
)
specs = _mostly(
    st.fixed_dictionaries(
        {"slots": slots},
        optional={
            "name": _mostly(st.text(min_size=1, max_size=5), values),
            "input": st.sampled_from(["Image[1,8,8]", "Image[3,8,8]", "Tokens[4,4]", "Image[1,8]", "?"]),
            "output": st.sampled_from(["Vector[10]", "Vector[3]", "Image[8,4,4]"]),
        },
    ),
    st.one_of(values, st.fixed_dictionaries({"slots": slots, "extra": values})),
)


@st.composite
def space_files(draw: st.DrawFn) -> str:
    """The YAML text of a random spec, cut short one time in ten."""
    text = yaml.safe_dump(draw(specs), sort_keys=False)
    return text[: draw(st.integers(0, len(text)))] if draw(st.integers(0, 9)) == 9 else text


def test_random_specs_load_or_raise_spec_error(tmp_path: Path) -> None:
    """Whatever a file holds, the loader returns a space or raises one SpecError line: nothing else."""
    path = tmp_path / "random.yaml"
    outcomes: Counter[str] = Counter()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(text=space_files())
    def load(text: str) -> None:
        path.write_text(text, encoding="utf-8")
        try:
            space = load_space_yaml(path, INPUT, 10)
        except SpecError as exc:
            assert len(str(exc).splitlines()) == 1 and str(exc).startswith(str(path)), str(exc)
            outcomes["error"] += 1
        else:
            assert isinstance(space, SearchSpace)
            space.sample(np.random.default_rng(1))
            outcomes["space"] += 1

    load()
    assert outcomes["error"] and outcomes["space"], outcomes


def test_category_candidates_expand_to_every_registered_operator_of_that_category(tmp_path: Path) -> None:
    from archetype.searchspace.relations import operators_in_category
    from archetype.searchspace.types import Tokens

    path = tmp_path / "any.yaml"
    path.write_text(
        "slots:\n"
        "  - name: stem\n    candidates:\n      - {op: conv_bn_act, width: 16, stride: 1}\n"
        "  - name: mixer\n    candidates:\n      - category: shape-preserving\n"
        "  - name: tokens\n    candidates:\n      - {op: patchify, patch: 2, width: 32}\n"
        "  - name: token_mixer\n    candidates:\n      - {category: shape-preserving, layout: Tokens}\n"
        "  - name: head\n    candidates:\n      - {category: head, layout: Tokens}\n"
    )
    space = load_space_yaml(path, Image(1, 8, 8), 10)
    slots = {s.name: s for s in space.slots}
    assert {c.op for c in slots["mixer"].candidates} == {o.name for o in operators_in_category("shape-preserving")}
    assert {c.op for c in slots["token_mixer"].candidates} == {
        o.name for o in operators_in_category("shape-preserving", Tokens)
    }
    assert slots["mixer"].categories == ("shape-preserving",)
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.sample(rng)
        assert arch.typing()[1].input == arch.typing()[1].output


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        ("{category: sideways}", "unknown category 'sideways'"),
        ("{category: head, layout: Matrix}", "unknown layout 'Matrix'"),
        ("{category: upsampling}", "no registered operator is upsampling on Image"),
        ("{category: head, colour: red}", "unknown key 'colour' in a category candidate"),
    ],
)
def test_bad_category_candidates_name_the_line(tmp_path: Path, candidate: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"slots:\n  - name: s\n    candidates:\n      - {candidate}\n")
    with pytest.raises(SpecError, match=rf"bad.yaml:4: slot 's': {message}"):
        load_space_yaml(path, Image(1, 8, 8), 10)
