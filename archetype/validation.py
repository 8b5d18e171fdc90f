"""Checked dataclasses: pydantic validates every field once, and a bad value becomes one SpecError line naming it."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pydantic
from pydantic import ConfigDict, Field, ValidationError

from archetype.errors import SpecError

Model = TypeVar("Model", bound=type)

_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden", "unexpected_positional_argument")
_MISSING = ("missing", "missing_argument", "missing_keyword_only_argument")


def checked(
    *, frozen: bool = True, subject: str | None = None, option_names: bool = False
) -> Callable[[Model], Model]:
    """A pydantic dataclass (so ``dataclasses.replace`` and ``fields`` keep working) that raises SpecError.

    ``subject`` prefixes every message (``"invalid training config: ..."``); with ``option_names`` a field
    is named as its command-line flag (``latency_ms`` as ``--latency-ms``).
    """

    def decorate(cls: Model) -> Model:
        model = pydantic.dataclasses.dataclass(cls, frozen=frozen, config=ConfigDict(extra="forbid"))
        validate = model.__init__
        names = [f.name for f in dataclasses.fields(model)]

        @functools.wraps(validate)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                validate(self, *args, **kwargs)
            except ValidationError as exc:
                values = {**dict(zip(names, args)), **kwargs}
                raise spec_error(exc, model, values, subject=subject, option_names=option_names) from None

        model.__init__ = __init__
        return model

    return decorate


def spec_error(
    exc: ValidationError, model: type, values: Mapping[str, Any], *, subject: str | None = None,
    option_names: bool = False,
) -> SpecError:
    """The first of pydantic's errors as the one line a user reads: ``<field> must <description>, got <value>``."""
    ranks = {kind: 0 for kind in _UNKNOWN} | {kind: 1 for kind in _MISSING}
    error = min(exc.errors(include_url=False), key=lambda e: ranks.get(e["type"], 2))
    kind, loc = error["type"], error["loc"]
    fields = getattr(model, "__pydantic_fields__", {})
    name = str(loc[0]) if loc else ""
    if loc and isinstance(loc[0], int) and loc[0] < len(fields):
        name = list(fields)[loc[0]]  # a value given by position
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, Exception):
        message = str(cause)  # a validator's own message, which names its field
    elif kind in _UNKNOWN:
        message = f"unknown field {name!r}; fields: {', '.join(sorted(fields))}"
    elif kind in _MISSING:
        message = f"field {name!r} is required"
    else:
        shown = f"--{name.replace('_', '-')}" if option_names else name
        got = values.get(name, error.get("input"))
        info = fields.get(name)
        requirement = info.description if info is not None else None
        if kind == "less_than_equal" and isinstance(got, int) and not isinstance(got, bool):
            message = f"{shown} must be at most {error['ctx']['le']:,}, got {got:,}"
        elif requirement:
            message = f"{shown} must {requirement}, got {got!r}"
        else:
            message = f"{shown}: {error['msg'].lower()}, got {got!r}"
    return SpecError(f"{subject}: {message}" if subject else message)


def field_default(model: type, name: str) -> Any:
    """The default of field ``name`` of a (checked or plain) dataclass: help text shows it, never a copy of it."""
    fields = getattr(model, "__pydantic_fields__", None)
    if fields is not None:
        return fields[name].get_default(call_default_factory=True)
    field = next(f for f in dataclasses.fields(model) if f.name == name)
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def text(default: Any = ...) -> Any:
    """A non-empty string field (None allowed where the annotation says so)."""
    return Field(default, strict=True, pattern=r"\S", description="be a non-empty string")


def count(default: Any, *, minimum: int = 1, ceiling: int | None = None, requirement: str | None = None) -> Any:
    """An integer field of at least ``minimum`` and at most ``ceiling``; a bool is not a count."""
    what = requirement or ("be a positive integer" if minimum == 1 else "be a non-negative integer")
    return Field(default, strict=True, ge=minimum, le=ceiling, description=what)


def number(default: Any, *, positive: bool = True, requirement: str | None = None) -> Any:
    """A finite number field, above 0 (``positive``) or at least 0; an integer is taken as a float, a bool is not."""
    what = requirement or ("be a positive number" if positive else "be a non-negative number")
    bound = {"gt": 0} if positive else {"ge": 0}
    return Field(default, strict=True, allow_inf_nan=False, description=what, **bound)


def share(default: float) -> Any:
    """A share from 0 up to, not including, 1."""
    return Field(default, strict=True, ge=0, lt=1, allow_inf_nan=False, description="be a share from 0 up to 1 (not 1)")
