"""The CIFAR python archive: .tar.gz and unpacked folder alike, the official test batch, and refused archives."""

from __future__ import annotations

import io
import pickle
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch

from archetype.errors import SpecError
from archetype.runtime.data import load_dataset


@pytest.fixture(autouse=True)
def _fresh_cache():
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


def _members(path) -> dict[str, dict]:
    with tarfile.open(path) as archive:
        return {m.name: pickle.loads(archive.extractfile(m).read(), encoding="bytes") for m in archive if m.isfile()}


def _write_tar(path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as archive:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return str(path)


def test_cifar10_archive_loads_the_official_test_batch_and_holds_out_validation(digits_cifar10):
    batches = _members(digits_cifar10)
    test = batches["cifar-10-batches-py/test_batch"]
    dataset = load_dataset(f"cifar10:{digits_cifar10}", seed=0)
    assert str(dataset.input_type) == "Image[3,32,32]" and dataset.num_classes == 10
    assert dataset.class_names == tuple(f"digit{c}" for c in range(10))
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (90, 10, 20)
    assert torch.equal(dataset.test.samples, torch.from_numpy(test[b"data"].reshape(-1, 3, 32, 32)))
    assert dataset.test.y.tolist() == test[b"labels"]
    assert Counter(dataset.val.y.tolist()) == dict.fromkeys(range(10), 1)
    trained = {r.tobytes() for s in (dataset.train, dataset.val) for r in s.samples.numpy()}
    rows = [batches[f"cifar-10-batches-py/data_batch_{n}"][b"data"] for n in range(1, 6)]
    given = {r.reshape(3, 32, 32).tobytes() for batch in rows for r in batch}
    assert trained == given
    assert torch.allclose(dataset.train.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)


def test_the_unpacked_folder_and_its_parent_give_the_same_data(tmp_path, digits_cifar10):
    with tarfile.open(digits_cifar10) as archive:
        archive.extractall(tmp_path, filter="data")
    packed = load_dataset(f"cifar10:{digits_cifar10}", seed=3)
    for folder in (tmp_path / "cifar-10-batches-py", tmp_path):
        unpacked = load_dataset(f"cifar10:{folder}", seed=3)
        pairs = zip((packed.train, packed.val, packed.test), (unpacked.train, unpacked.val, unpacked.test), strict=True)
        for a, b in pairs:
            assert torch.equal(a.samples, b.samples) and torch.equal(a.y, b.y)


def test_cifar100_uses_the_fine_labels(tmp_path, make_cifar_archive):
    path = make_cifar_archive(tmp_path / "cifar-100-python.tar.gz", per_class=120, classes=100)
    dataset = load_dataset(f"cifar100:{path}")
    assert dataset.num_classes == 100 and (len(dataset.train), len(dataset.val), len(dataset.test)) == (900, 100, 200)
    assert dataset.class_names[:2] == ("class0", "class1") and len(dataset.class_names) == 100
    assert Counter(dataset.val.y.tolist()) == dict.fromkeys(range(100), 1)


class _CreatesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _batch(fields: dict | None = None) -> bytes:
    batch = {b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3], **(fields or {})}
    return pickle.dumps(batch, protocol=2)


def _cifar10(batches: dict[str, bytes]) -> dict[str, bytes]:
    good = _batch()
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    return {f"cifar-10-batches-py/{n}": batches.get(n, good) for n in names}


def test_a_pickle_carrying_anything_but_arrays_is_refused_and_runs_nothing(tmp_path):
    victim = tmp_path / "created-by-the-pickle"
    archive = _write_tar(tmp_path / "evil.tar.gz", _cifar10({"data_batch_3": _batch({b"x": _CreatesAFile(victim)})}))
    with pytest.raises(SpecError, match=r"evil\.tar\.gz:cifar-10-batches-py/data_batch_3: not a CIFAR batch: refused"):
        load_dataset(f"cifar10:{archive}")
    assert not victim.exists()


@pytest.mark.parametrize(
    ("batches", "message"),
    [
        ({"test_batch": _batch({b"data": np.zeros((4, 1024), dtype=np.uint8)})}, r"test_batch: 'data' must be uint8"),
        ({"data_batch_1": _batch({b"labels": [0, 1, 2]})}, r"data_batch_1: 4 images but 'labels' has shape"),
        ({"data_batch_2": _batch({b"labels": [0, 1, 2, 10]})}, r"data_batch_2: labels must lie in 0\.\.9"),
        ({"data_batch_4": pickle.dumps([1, 2, 3], protocol=2)}, r"data_batch_4: not a CIFAR batch: holds a list"),
        ({"data_batch_5": b"\x80\x02garbage"}, r"data_batch_5: not a CIFAR batch"),
    ],
    ids=["shape", "label-count", "label-range", "not-a-dict", "not-a-pickle"],
)
def test_bad_batches_are_refused_naming_the_member(tmp_path, batches, message):
    archive = _write_tar(tmp_path / "bad.tar.gz", _cifar10(batches))
    with pytest.raises(SpecError, match=message):
        load_dataset(f"cifar10:{archive}")


def test_a_meta_file_without_one_name_per_class_is_refused(tmp_path):
    meta = pickle.dumps({b"label_names": [b"cat", b"dog"]}, protocol=2)
    archive = _write_tar(tmp_path / "meta.tar.gz", {**_cifar10({}), "cifar-10-batches-py/batches.meta": meta})
    with pytest.raises(SpecError, match=r"batches\.meta: 'label_names' must list 10 class names"):
        load_dataset(f"cifar10:{archive}")


def test_a_class_missing_from_train_is_refused(tmp_path):
    archive = _write_tar(tmp_path / "few.tar.gz", _cifar10({}))  # labels 0..3 only
    message = r"few\.tar\.gz \(data_batch_1 \+ .* \+ data_batch_5\): no sample of class\(es\) 4, 5, 6, 7, 8, 9"
    with pytest.raises(SpecError, match=message):
        load_dataset(f"cifar10:{archive}")


def test_files_that_are_not_cifar_archives_are_refused(tmp_path, digits_cifar10):
    text = tmp_path / "notes.tar.gz"
    text.write_text("not an archive")
    with pytest.raises(SpecError, match=r"notes\.tar\.gz: not a readable CIFAR python archive"):
        load_dataset(f"cifar10:{text}")
    other = _write_tar(tmp_path / "other.tar.gz", {"photos/a.txt": b"hello"})
    with pytest.raises(SpecError, match=r"other\.tar\.gz: not a CIFAR python archive: missing data_batch_1"):
        load_dataset(f"cifar10:{other}")
    with pytest.raises(SpecError, match=r"not a CIFAR python archive: missing train, test"):
        load_dataset(f"cifar100:{digits_cifar10}")
    with pytest.raises(SpecError, match="no such file or folder"):
        load_dataset(f"cifar10:{tmp_path / 'absent'}")
