"""Image folders: both layouts, stratified seeded splits, the uint8 cache and its invalidation, and bad folders."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from archetype.errors import SpecError
from archetype.runtime import image_folder
from archetype.runtime.data import load_dataset


@pytest.fixture(autouse=True)
def _fresh_cache():
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


def _rows(split) -> set[bytes]:
    return {row.tobytes() for row in split.samples.reshape(len(split), -1).numpy()}


def _png_rows(root) -> set[bytes]:
    return {np.asarray(Image.open(p)).transpose(2, 0, 1).tobytes() for p in sorted(root.rglob("*.png"))}


def test_class_folders_load_as_rgb_split_60_20_20_by_class(digits_image_folder):
    dataset = load_dataset(f"folder:{digits_image_folder}", seed=0)
    assert str(dataset.input_type) == "Image[3,32,32]" and dataset.num_classes == 10
    assert dataset.class_names == tuple(f"digit{c}" for c in range(10))
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (120, 40, 40)
    for split, per_class in ((dataset.train, 12), (dataset.val, 4), (dataset.test, 4)):
        assert split.samples.dtype == torch.uint8 and split.x.dtype == torch.float32
        assert Counter(split.y.tolist()) == dict.fromkeys(range(10), per_class)
    # every PNG once, pixels as decoded, labelled by its folder's place in sorted order
    splits = (dataset.train, dataset.val, dataset.test)
    for label, folder in enumerate(sorted(p for p in digits_image_folder.iterdir() if p.is_dir())):
        labelled = {s.samples[i].numpy().tobytes() for s in splits for i in torch.nonzero(s.y == label).flatten()}
        assert labelled == _png_rows(folder)
    # standardised with train statistics, per channel
    assert torch.allclose(dataset.train.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(dataset.train.x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2)
    index = torch.tensor([5, 0, 17])
    assert torch.equal(dataset.val.batch(index), dataset.val.x[index])


def test_splits_follow_the_seed(digits_image_folder):
    first = load_dataset(f"folder:{digits_image_folder}", seed=0)
    load_dataset.cache_clear()
    again = load_dataset(f"folder:{digits_image_folder}", seed=0)
    other = load_dataset(f"folder:{digits_image_folder}", seed=1)
    assert torch.equal(first.test.samples, again.test.samples) and torch.equal(first.test.y, again.test.y)
    assert _rows(first.test) != _rows(other.test)


def test_train_val_test_sub_folders_are_kept_and_a_missing_one_is_held_out_of_train(tmp_path, make_image_folder):
    make_image_folder(tmp_path / "full" / "train", per_class=10)
    make_image_folder(tmp_path / "full" / "val", per_class=3)
    make_image_folder(tmp_path / "full" / "test", per_class=4)
    full = load_dataset(f"folder:{tmp_path / 'full'}")
    assert (len(full.train), len(full.val), len(full.test)) == (100, 30, 40)
    assert _rows(full.val) == _png_rows(tmp_path / "full" / "val")

    make_image_folder(tmp_path / "two" / "train", per_class=10)
    make_image_folder(tmp_path / "two" / "test", per_class=4)
    two = load_dataset(f"folder:{tmp_path / 'two'}")
    assert (len(two.train), len(two.val), len(two.test)) == (80, 20, 40)
    assert Counter(two.val.y.tolist()) == dict.fromkeys(range(10), 2)
    assert _rows(two.test) == _png_rows(tmp_path / "two" / "test")


def test_grey_images_give_one_channel_odd_sizes_are_resized_and_hidden_files_skipped(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for n in range(10):
            size = (12, 10) if n else (30, 7)  # one image of another size
            Image.fromarray(rng.integers(0, 256, size=size[::-1], dtype=np.uint8), mode="L").save(
                tmp_path / label / f"{n}.jpg")
    (tmp_path / "cat" / ".thumbnails").mkdir()
    (tmp_path / "cat" / ".thumbnails" / "0.png").write_bytes(b"hidden: never read")
    dataset = load_dataset(f"folder:{tmp_path}")
    assert str(dataset.input_type) == "Image[1,10,12]" and dataset.num_classes == 2
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 20


def test_large_folders_decode_once_into_a_memory_mapped_cache_renewed_when_the_folder_changes(
    tmp_path, digits_image_folder, monkeypatch
):
    root = shutil.copytree(digits_image_folder, tmp_path / "digits")
    monkeypatch.setattr(image_folder, "IN_MEMORY_BYTES", 0)
    dataset = load_dataset(f"folder:{root}")
    caches = list((root / image_folder.CACHE_FOLDER).glob("pixels-*.npy"))
    assert len(caches) == 1 and not list((root / image_folder.CACHE_FOLDER).glob("*.partial*"))
    if Path("/proc/self/maps").exists():
        assert _mapped_from(dataset.train.samples) == _mapped_from(dataset.test.samples) == str(caches[0])
    assert _rows(dataset.train) | _rows(dataset.val) | _rows(dataset.test) == _png_rows(digits_image_folder)

    def no_decoding(*args):
        raise AssertionError("an unchanged folder must be read from its cache")

    load_dataset.cache_clear()
    with monkeypatch.context() as patch:
        patch.setattr(image_folder, "_decode_into", no_decoding)
        cached = load_dataset(f"folder:{root}")
    assert torch.equal(cached.train.samples, dataset.train.samples) and torch.equal(cached.test.y, dataset.test.y)

    changed = sorted((root / "digit0").glob("*.png"))[0]
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))
    load_dataset.cache_clear()
    renewed = load_dataset(f"folder:{root}")
    after = list((root / image_folder.CACHE_FOLDER).glob("pixels-*.npy"))
    assert len(after) == 1 and after != caches, "the stale cache is replaced"
    black = np.zeros((3, 32, 32), dtype=np.uint8).tobytes()
    assert black in _rows(renewed.train) | _rows(renewed.val) | _rows(renewed.test)


def _mapped_from(samples: torch.Tensor) -> str:
    """The file whose mapping holds ``samples`` (Linux), or "" when they are in ordinary memory."""
    address = samples.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)  # range, permissions, offset, device, inode, [path]
        start, end = (int(a, 16) for a in fields[0].split("-"))
        if start <= address < end:
            return fields[5].strip() if len(fields) == 6 else ""
    return ""


def _truncated(folder) -> None:
    path = sorted(folder.glob("digit2/*.png"))[0]
    path.write_bytes(path.read_bytes()[:-40])  # the header reads; the pixels do not


def _not_an_image(folder) -> None:
    (folder / "digit4" / "notes.png").write_text("a text file with an image's name")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: [shutil.rmtree(p) for p in f.iterdir()], r"digits: no class sub-folders of PNG/JPEG images"),
        (lambda f: (f / "digit10").mkdir(), r"digit10: class folder holds no PNG/JPEG images"),
        (lambda f: [p.unlink() for p in (f / "digit7").iterdir()], r"digit7: class folder holds no PNG/JPEG images"),
        (_truncated, r"digit2/\d+\.png: not a readable PNG/JPEG image"),
        (_not_an_image, r"digit4/notes\.png: not a readable PNG/JPEG image"),
        (lambda f: [shutil.rmtree(p) for p in f.iterdir() if p.name != "digit1"], r"one class folder \(digit1\)"),
    ],
    ids=["no-images", "new-empty-class", "emptied-class", "truncated", "not-an-image", "one-class"],
)
def test_bad_folders_are_refused_naming_the_path(tmp_path, digits_image_folder, monkeypatch, damage, message):
    root = shutil.copytree(digits_image_folder, tmp_path / "digits")
    damage(root)
    monkeypatch.setattr(image_folder, "IN_MEMORY_BYTES", 0)  # the cache path: a failure must leave nothing behind
    with pytest.raises(SpecError, match=message):
        load_dataset(f"folder:{root}")
    assert not (root / image_folder.CACHE_FOLDER).exists()


def test_a_val_class_unknown_to_train_and_a_missing_folder_are_refused(tmp_path, make_image_folder):
    make_image_folder(tmp_path / "train", per_class=5)
    make_image_folder(tmp_path / "val", per_class=2)
    (tmp_path / "val" / "digit0").rename(tmp_path / "val" / "zero")
    with pytest.raises(SpecError, match=r"val/zero: class 'zero' is not among the train classes"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "extra").mkdir()
    with pytest.raises(SpecError, match=r"holds train/ beside extra/; give either train/ val/ test/"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(SpecError, match=r"no such folder"):
        load_dataset(f"folder:{tmp_path / 'absent'}")


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    rng = np.random.default_rng(1)
    upright = rng.integers(0, 256, size=(12, 10), dtype=np.uint8)  # (H, W)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for n in range(10):
            Image.fromarray(rng.integers(0, 256, size=(12, 10), dtype=np.uint8)).save(tmp_path / label / f"{n}.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "a" / "turned.png", exif=exif)
    dataset = load_dataset(f"folder:{tmp_path}")
    assert str(dataset.input_type) == "Image[1,12,10]"
    rows = _rows(dataset.train) | _rows(dataset.val) | _rows(dataset.test)
    assert upright[None].tobytes() in rows
