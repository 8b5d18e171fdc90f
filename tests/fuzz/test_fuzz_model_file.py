"""Corrupted model files (truncated, bit-flipped): loading ends in an ordinary exception or a whole module.

The ``compress`` command's loader wraps any ``Exception`` from ``torch.load`` into a one-line SpecError;
this checks the property it relies on, on files that ``torch.save`` wrote and that were then damaged.
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

EXAMPLES = 2000 if os.environ.get("ARCHETYPE_FUZZ") == "full" else 60


def _saved(module: nn.Module, weights_only: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save(module.state_dict() if weights_only else module, buffer)
    return buffer.getvalue()


MODEL = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
ORIGINALS = {weights_only: _saved(MODEL, weights_only) for weights_only in (False, True)}


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bool, bytes]:
    weights_only = draw(st.booleans())
    data = bytearray(ORIGINALS[weights_only])
    how = draw(st.integers(0, 2))
    if how == 0:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == 1:
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
    else:
        start = draw(st.integers(0, len(data) - 1))
        data[start:start + draw(st.integers(1, 64))] = draw(st.binary(min_size=1, max_size=64))
    return weights_only, bytes(data)


@pytest.fixture(scope="module")
def model_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="arc-fuzz-") as folder:
        yield Path(folder) / "model.pt"


@settings(settings.get_profile("archetype-fuzz"), max_examples=EXAMPLES)
@given(case=damaged())
def test_a_damaged_model_file_fails_with_an_ordinary_exception(model_path: Path, case: tuple[bool, bytes]) -> None:
    weights_only, data = case
    model_path.write_bytes(data)
    try:  # what a loader does: a saved module, or a factory's fresh module given the saved weights
        loaded = torch.load(model_path, map_location="cpu", weights_only=weights_only)
        if weights_only:
            fresh = copy.deepcopy(MODEL)
            fresh.load_state_dict(loaded)  # a damaged key or shape fails here
            loaded = fresh
    except Exception:  # what a loader turns into its one-line error
        return
    # a flip in a tensor's bytes or in unread padding still loads (torch.load reads no checksums)
    assert isinstance(loaded, nn.Module)
