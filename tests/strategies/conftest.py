"""The nni-* strategies run where nni is installed (``make test-nni``, run by ``make test``); elsewhere they skip."""

from __future__ import annotations

import importlib.util

import pytest

NNI_MISSING = "nni is not installed here: the nni-* strategies are tested in .venv-nni by 'make test-nni'"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if importlib.util.find_spec("nni") is not None:
        return
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if str(params.get("name", "")).startswith("nni-") or item.get_closest_marker("nni"):
            item.add_marker(pytest.mark.skip(reason=NNI_MISSING))
