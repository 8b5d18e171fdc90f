"""Random run spec mappings: a valid RunSpec that survives a JSON round trip, or a one-line SpecError."""

from __future__ import annotations

import dataclasses
import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from archetype.errors import SpecError
from archetype.spec import RunSpec

EXAMPLES = 3000 if os.environ.get("ARCHETYPE_FUZZ") == "full" else 100
FIELDS = [field.name for field in dataclasses.fields(RunSpec)]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-3, 50), st.floats(), st.text(max_size=20),
    st.sampled_from(["conv-small", "digits", "cpu-ort", "random", "asha", "latency_ms<=2", "accuracy:maximize",
                     "latency_ms>=", "nan", "inf", "1e999", "-0", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4),
                            st.fixed_dictionaries({"name": inner, "op": inner, "bound": inner}),
                            st.fixed_dictionaries({"name": inner, "direction": inner})),
    max_leaves=8,
)
mappings = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=8).map(lambda d: {"space": "conv-small", **d}),
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=8),
    st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), values, max_size=6),
    values,
)


@settings(settings.get_profile("archetype-fuzz"), max_examples=EXAMPLES)
@given(mappings)
def test_a_run_spec_is_valid_or_refused_in_one_line(data: object) -> None:
    try:
        spec = RunSpec.from_mapping(data, where="fuzz.yaml")  # type: ignore[arg-type]
    except SpecError as exc:
        message = str(exc)
        assert message.startswith("fuzz.yaml") and "\n" not in message, message
        return
    stored = json.loads(json.dumps(spec.to_json(), allow_nan=False))  # what the store keeps, exactly
    assert RunSpec.from_mapping(stored, where="stored") == spec
    for field in dataclasses.fields(RunSpec):
        value = getattr(spec, field.name)
        if field.type in ("int", "str"):
            assert type(value).__name__ == field.type, (field.name, value)
        elif field.type == "str | None":
            assert value is None or isinstance(value, str), (field.name, value)
