"""The CIFAR-10/100 python archive (``.tar.gz`` or its unpacked folder), unpickled into arrays and nothing else."""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from archetype.array_pickle import load_array_pickle
from archetype.errors import SpecError
from archetype.runtime.data import (
    Dataset,
    check_labels,
    register_file_format,
    standardised_dataset,
    stratified_indices,
)

MAX_BATCH_BYTES = 512 * 2**20  # one pickled batch of the real archives is 31 MB (CIFAR-10) or 155 MB (CIFAR-100 train)
VAL_FRACTION = 0.1  # of the official train split, held out by seed for validation
SIDE = 32


@dataclass(frozen=True)
class CifarLayout:
    """Which files of an archive hold the train and test batches, and which key holds their labels."""

    train: tuple[str, ...]
    test: str
    labels: str
    num_classes: int
    meta: str  # the file that names the classes (optional)
    names: str  # its key for the class names
    folder: str  # the archive's top folder


CIFAR10 = CifarLayout(tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "labels", 10, "batches.meta",
                      "label_names", "cifar-10-batches-py")
CIFAR100 = CifarLayout(("train",), "test", "fine_labels", 100, "meta", "fine_label_names", "cifar-100-python")


@register_file_format("cifar10")
def load_cifar10(path: str, seed: int) -> Dataset:
    """CIFAR-10, 3x32x32: the 50k train images less a stratified 10% validation holdout by ``seed``; the 10k test."""
    return _load(f"cifar10:{path}", Path(path).expanduser(), CIFAR10, seed)


@register_file_format("cifar100")
def load_cifar100(path: str, seed: int) -> Dataset:
    """CIFAR-100 (fine labels), 3x32x32, split like CIFAR-10."""
    return _load(f"cifar100:{path}", Path(path).expanduser(), CIFAR100, seed)


def _load(name: str, path: Path, layout: CifarLayout, seed: int) -> Dataset:
    wanted = (*layout.train, layout.test)
    if path.is_file():
        raw = _members_of_tar(path, wanted, layout.meta)
    elif path.is_dir():
        raw = _members_of_folder(path, wanted, layout.meta)
    else:
        raise SpecError(f"data set {name!r}: no such file or folder {str(path)!r}")
    names = _class_names(*raw[layout.meta], layout) if layout.meta in raw else ()
    batches = {member: _batch(raw[member][1], raw[member][0], layout) for member in wanted}
    train_x = np.concatenate([batches[m][0] for m in layout.train])
    train_y = np.concatenate([batches[m][1] for m in layout.train])
    check_labels(train_y, layout.num_classes, f"{path} ({' + '.join(layout.train)})")
    train, val = stratified_indices(train_y, seed, f"data set {name!r}", (1 - VAL_FRACTION, VAL_FRACTION))
    test_x, test_y = batches[layout.test]
    splits = (train_x[train], train_y[train]), (train_x[val], train_y[val]), (test_x, test_y)
    return standardised_dataset(name, *splits, layout.num_classes, names)


def _members_of_tar(path: Path, required: tuple[str, ...], optional: str) -> dict[str, tuple[str, bytes]]:
    """``{basename: (where, bytes)}`` of the wanted members of a tar archive, read without extracting anything."""
    wanted = (*required, optional)
    found: dict[str, tuple[str, bytes]] = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                if base not in wanted or not member.isfile():
                    continue
                where = f"{path}:{member.name}"
                if base in found:
                    raise SpecError(f"{where}: a second {base!r} in the archive (first {found[base][0]})")
                if member.size > MAX_BATCH_BYTES:
                    raise SpecError(f"{where}: {member.size} bytes, more than a CIFAR batch ({MAX_BATCH_BYTES})")
                stream = archive.extractfile(member)
                if stream is None:
                    continue
                found[base] = (where, stream.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SpecError(f"{path}: not a readable CIFAR python archive (.tar.gz): {exc}") from None
    return _complete(found, required, str(path))


def _members_of_folder(path: Path, required: tuple[str, ...], optional: str) -> dict[str, tuple[str, bytes]]:
    """The wanted batch files in ``path`` or in its one sub-folder that holds them (the archive's top folder)."""
    folders = [path, *sorted(p for p in path.iterdir() if p.is_dir())]
    folder = next((f for f in folders if (f / required[0]).is_file()), path)
    found: dict[str, tuple[str, bytes]] = {}
    for base in (*required, optional):
        file = folder / base
        if not file.is_file():
            continue
        size = file.stat().st_size
        if size > MAX_BATCH_BYTES:
            raise SpecError(f"{file}: {size} bytes, more than a CIFAR batch ({MAX_BATCH_BYTES})")
        found[base] = (str(file), file.read_bytes())
    return _complete(found, required, str(folder))


def _complete(found: dict[str, tuple[str, bytes]], wanted: tuple[str, ...], where: str) -> dict[str, tuple[str, bytes]]:
    missing = [base for base in wanted if base not in found]
    if missing:
        raise SpecError(f"{where}: not a CIFAR python archive: missing {', '.join(missing)}")
    return found


def _fields(raw: bytes, where: str) -> dict[str, Any]:
    """The dict pickled in one file of the archive, its keys as str."""
    try:
        content = load_array_pickle(io.BytesIO(raw))
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise SpecError(f"{where}: not a CIFAR batch: {exc}") from None
    if not isinstance(content, dict):
        raise SpecError(f"{where}: not a CIFAR batch: holds a {type(content).__name__}, not a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in content.items()}


def _class_names(where: str, raw: bytes, layout: CifarLayout) -> tuple[str, ...]:
    """The class names of the meta file, checked to be one per class."""
    names = _fields(raw, where).get(layout.names)
    if not isinstance(names, list) or len(names) != layout.num_classes:
        raise SpecError(f"{where}: '{layout.names}' must list {layout.num_classes} class names")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)


def _batch(raw: bytes, where: str, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one pickled batch, checked."""
    fields = _fields(raw, where)
    data, labels = fields.get("data"), fields.get(layout.labels)
    if not isinstance(data, np.ndarray) or labels is None:
        raise SpecError(f"{where}: not a CIFAR batch: needs an array 'data' and labels '{layout.labels}'")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise SpecError(f"{where}: 'data' must be uint8 of shape (N, {3 * SIDE * SIDE}), got {data.dtype} {data.shape}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"{where}: '{layout.labels}' must be a list of integer labels") from None
    if y.shape != (len(data),):
        raise SpecError(f"{where}: {len(data)} images but '{layout.labels}' has shape {y.shape}")
    check_labels(y, layout.num_classes, where, every_class=False)
    return data.reshape(-1, 3, SIDE, SIDE), y


def write_cifar_archive(
    path: Path,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    layout: CifarLayout = CIFAR10,
    class_names: Sequence[str] | None = None,
) -> Path:
    """uint8 images (N, 3, 32, 32) and labels as a python ``.tar.gz`` laid out and pickled as the real archive."""
    names = class_names or [f"class{c}" for c in range(layout.num_classes)]
    parts = np.array_split(np.arange(len(train[1])), len(layout.train))
    batches = {member: (train[0][rows], train[1][rows]) for member, rows in zip(layout.train, parts, strict=True)}
    files: dict[str, dict[bytes, Any]] = {
        member: {b"batch_label": member.encode(), layout.labels.encode(): [int(v) for v in y],
                 b"data": x.reshape(len(x), -1)}  # (N, 3072): the red plane, then green, then blue
        for member, (x, y) in {**batches, layout.test: test}.items()
    }
    files[layout.meta] = {layout.names.encode(): [str(n).encode() for n in names]}
    with tarfile.open(path, "w:gz") as archive:
        for member, content in files.items():
            raw = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"{layout.folder}/{member}")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return path
