"""Fixtures shared across the suite: a throwaway PostgreSQL server for the session, a small conv-small architecture
for digits and a quick latency protocol."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from archetype.runtime.measure import MeasureProtocol
from archetype.searchspace import Architecture, Image, get_space

QUICK = MeasureProtocol(warmup=5, blocks=3, min_block_ms=2.0, retries=0)
"""A short latency protocol: tests check that targets measure, not what they measure."""

TINY = {
    "input": "Image[1,8,8]",
    "slots": [
        {"slot": "stem", "op": "conv_bn_act", "params": {"width": 16, "kernel": 3, "stride": 1}},
        {"slot": "stage1.block1", "op": "conv_bn_act", "params": {"width": 24, "kernel": 3, "stride": 1}},
        {"slot": "stage1.down", "op": "pool", "params": {"kind": "max"}},
        {"slot": "stage2.block1", "op": "conv_bn_act", "params": {"width": 32, "kernel": 3, "stride": 1}},
        {"slot": "stage2.block2", "op": "identity", "params": {}},
        {"slot": "head", "op": "classifier_head", "params": {"classes": 10}},
    ],
}


@pytest.fixture(scope="module")
def tiny_arch() -> Architecture:
    """A three-conv network of conv-small for 8x8 digits, validated against the space."""
    space = get_space("conv-small", Image(1, 8, 8), 10)
    return space.validate(Architecture.from_json(TINY, space))


def _load_postgres_server() -> ModuleType:
    name = "archetype_tests_postgres_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("postgres_server.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


postgres_server_module = _load_postgres_server()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A PostgreSQL server started for this test session and removed after it; skips if none can start."""
    module = postgres_server_module
    try:
        server = module.PostgresServer()
    except module.PostgresUnavailable as exc:  # only a machine without the server binaries skips
        print(f"\nPostgreSQL tests skipped: {exc}", file=sys.stderr)
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: object) -> Iterator[str]:
    """The URL of a new empty PostgreSQL schema (a store of its own), dropped after the test."""
    url = postgres_server.create_schema()  # type: ignore[attr-defined]
    try:
        yield url
    finally:
        postgres_server.drop_schema(url)  # type: ignore[attr-defined]


def digits_rgb32(per_class: int) -> tuple[object, object]:
    """``per_class`` scikit-learn digits of each class as RGB 32x32 uint8 images (N, 3, 32, 32) and their labels."""
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    chosen = np.concatenate([np.flatnonzero(bunch.target == c)[:per_class] for c in range(10)])
    grey = (bunch.images[chosen] * (255 / 16)).round().astype(np.uint8)  # (N, 8, 8)
    grey = grey.repeat(4, axis=1).repeat(4, axis=2)  # (N, 32, 32)
    rgb = np.stack([grey, grey // 2 + 64, 255 - grey], axis=1)  # three distinct channels
    return rgb, bunch.target[chosen].astype(np.int64)


def write_image_folder(root: Path, per_class: int = 20) -> Path:
    """A folder ``root/digit<d>/<n>.png`` of digits as RGB 32x32 PNG images."""
    from archetype.runtime.image_folder import write_image_folder as write

    images, labels = digits_rgb32(per_class)
    return write(root, images, labels, [f"digit{d}" for d in range(10)])


def write_cifar_archive(path: Path, per_class: int = 12, classes: int = 10) -> Path:
    """A CIFAR-10 (``classes=10``) or CIFAR-100 python ``.tar.gz`` of digits, a sixth of them the test batch.

    For CIFAR-100 the labels are the row number modulo 100 (``per_class=120`` gives
    10 of each class in train, enough for a stratified validation holdout).
    """
    import numpy as np

    from archetype.runtime.cifar import CIFAR10, CIFAR100
    from archetype.runtime.cifar import write_cifar_archive as write

    images, labels = digits_rgb32(per_class)
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    if classes == 100:  # every fine class in turn, so that both splits hold each class
        labels = np.arange(len(labels)) % 100
    test = len(labels) // 6
    layout, names = (CIFAR10, [f"digit{c}" for c in range(10)]) if classes == 10 else (CIFAR100, None)
    return write(path, (images[test:], labels[test:]), (images[:test], labels[:test]), layout, names)


@pytest.fixture(scope="session")
def digits_image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention folder of 200 digit PNGs (RGB 32x32, 10 classes); copy it before changing it."""
    return write_image_folder(tmp_path_factory.mktemp("images") / "digits")


@pytest.fixture(scope="session")
def digits_cifar10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CIFAR-10 format archive of 120 digits (100 train in five batches, 20 test)."""
    return write_cifar_archive(tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz")


@pytest.fixture(scope="session")
def make_image_folder() -> object:
    """``write_image_folder(root, per_class=20)`` for tests that need a folder of their own."""
    return write_image_folder


@pytest.fixture(scope="session")
def make_cifar_archive() -> object:
    """``write_cifar_archive(path, per_class=12, classes=10)`` for tests that need an archive of their own."""
    return write_cifar_archive


@pytest.fixture(scope="session")
def listed_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``(url, study)``: a SQLite store with one study of 40 trials of sampled conv-small architectures,
    complete, pruned and failed, some over the latency budget; the same trials on every run."""
    import random

    import numpy as np

    from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
    from archetype.result import Result, TrialState
    from archetype.searchspace import get_space, parse_type
    from archetype.store import Store

    url = f"sqlite:///{tmp_path_factory.mktemp('listing') / 'listing.db'}"
    space = get_space("conv-small", parse_type("Image[1,8,8]"), 10)
    rng, sampler = random.Random(3), np.random.default_rng(3)
    trials = []
    for number in range(1, 41):
        arch = space.sample(sampler)
        values = {"latency_ms": rng.uniform(0.1, 1.0), "params": float(arch.params())}
        if number % 7 == 0:
            result = Result(TrialState.FAILED, error=f"RuntimeError: trial {number}", timings={"train": 1.0})
        elif number % 5 == 0:
            result = Result(TrialState.PRUNED, values, timings={"train": 0.5})
        else:
            result = Result(TrialState.COMPLETE, {**values, "accuracy": rng.uniform(0.5, 0.95)},
                            timings={"train": 2.0, "measure": 0.25}, target="cpu-ort")
        trials.append((arch.to_json(), arch.key, result))
    with Store.open(url) as store:
        store.create_study("listed", space=space.name, target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                           constraints=[Constraint.parse("latency_ms<=0.7")], spec={"space": space.name})
        store.record_trials("listed", trials)
    return url, "listed"


class DecodeCounter:
    """Stands in for the ``json`` module of ``archetype.store.storage``, counting the architectures decoded."""

    def __init__(self) -> None:
        import json

        self.decoded = 0
        self._json = json

    def loads(self, text: str) -> object:
        self.decoded += 1
        return self._json.loads(text)

    def __getattr__(self, name: str) -> object:
        return getattr(self._json, name)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> DecodeCounter:
    """Counts the architectures the store decodes from their JSON text while a test runs."""
    from archetype.store import storage

    counter = DecodeCounter()
    monkeypatch.setattr(storage, "json", counter)
    return counter
