"""An image folder (one sub-folder of PNG/JPEG images per class), decoded once into uint8 pixels.

Layouts: ``PATH/<class>/...`` split 60/20/20 stratified by seed, or
``PATH/train/<class>/...`` with ``val/`` and ``test/`` beside it (a missing one
is held out of train, stratified by seed). Every image becomes the most common
image size and mode (grey when all images are grey, else RGB). Pixels up to
``IN_MEMORY_BYTES`` stay in memory; larger ones go to a memory-mapped file in
``PATH/.archetype-cache`` keyed by the files' names, sizes and times, so a
changed folder is decoded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archetype.errors import SpecError
from archetype.runtime.data import Dataset, register_file_format, standardised_dataset, stratified_indices

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
SPLITS = ("train", "val", "test")
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
MAX_IMAGES = 5_000_000
MAX_IMAGE_PIXELS = 50_000_000  # per image, checked from its header before it is decoded
MAX_PIXEL_BYTES = 64 * 2**30  # all decoded pixels together
IN_MEMORY_BYTES = 2**30  # above this the pixels are a memory-mapped cache file next to the data
CACHE_FOLDER = ".archetype-cache"
_CACHE_VERSION = "1"
_EXIF_ORIENTATION = 0x0112
_EXIF_QUARTER_TURNS = frozenset({5, 6, 7, 8})  # orientations that swap width and height
_PROGRESS_FROM = 2000  # images; fewer are decoded without a word
_BLOCK = 256  # images decoded by one thread task
_DECODE_THREADS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class ImageFile:
    """One image of the folder and the index of its class."""

    path: Path
    label: int


@register_file_format("folder")
def load_image_folder(path: str, seed: int) -> Dataset:
    """Images from ``PATH/<class>/`` or ``PATH/{train,val,test}/<class>/``, standardised with train statistics."""
    name = f"folder:{path}"
    root = Path(path).expanduser()
    if not root.is_dir():
        raise SpecError(f"data set {name!r}: no such folder {str(root)!r}")
    splits, classes = _ordered_files(root, name, seed)
    files = [f for part in splits for f in part]
    if len(files) > MAX_IMAGES:
        raise SpecError(f"{root}: {len(files)} images, more than {MAX_IMAGES}")
    pixels = _pixels(root, files)
    labels = np.array([f.label for f in files], dtype=np.int64)
    bounds = np.cumsum([0, *(len(part) for part in splits)])
    train, val, test = ((pixels[a:b], labels[a:b]) for a, b in itertools.pairwise(bounds))
    return standardised_dataset(name, train, val, test, len(classes), classes)


def _ordered_files(root: Path, name: str, seed: int) -> tuple[list[list[ImageFile]], list[str]]:
    """The images of train, val and test (in that order) and the class names, from the layout of ``root``."""
    folders = _subfolders(root)
    split_layout = "train" in folders
    others = sorted(set(folders) - set(SPLITS))
    if split_layout and others:
        raise SpecError(f"{root}: holds train/ beside {', '.join(others)}/; give either train/ val/ test/ "
                        "(class folders inside) or class folders alone")
    top = root / "train" if split_layout else root
    classes = _subfolders(top)
    if not classes:
        raise SpecError(f"{top}: no class sub-folders of PNG/JPEG images")
    if len(classes) < 2:
        raise SpecError(f"{top}: one class folder ({classes[0]}); need two or more")
    given = {split: _class_files(root / split, classes) for split in SPLITS if split in folders} if split_layout else {}
    if not split_layout:
        given["train"] = _class_files(root, classes)
    missing = [split for split in SPLITS if split not in given]
    if not missing:
        return [given[split] for split in SPLITS], classes
    pool = given["train"]
    shares = {"train": 1.0 - 0.2 * len(missing), **{split: 0.2 for split in missing}}
    drawn = [s for s in SPLITS if s == "train" or s in missing]
    where = f"data set {name!r}"
    parts = stratified_indices(np.array([f.label for f in pool]), seed, where, [shares[s] for s in drawn])
    given.update({split: [pool[i] for i in part] for split, part in zip(drawn, parts, strict=True)})
    return [given[split] for split in SPLITS], classes


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_files(folder: Path, classes: list[str]) -> list[ImageFile]:
    """Every image under ``folder/<class>/``; a class folder without images, or an unknown one, is refused."""
    index = {c: i for i, c in enumerate(classes)}
    files: list[ImageFile] = []
    for name in _subfolders(folder):
        if name not in index:
            raise SpecError(f"{folder / name}: class {name!r} is not among the train classes ({', '.join(classes)})")
        images = sorted(
            p for p in (folder / name).rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder / name).parts)
        )
        if not images:
            raise SpecError(f"{folder / name}: class folder holds no PNG/JPEG images")
        files.extend(ImageFile(p, index[name]) for p in images)
    if not files:
        raise SpecError(f"{folder}: no class sub-folders of PNG/JPEG images")
    return files


def _pixels(root: Path, files: list[ImageFile]) -> np.ndarray:
    """All images as uint8 (N, C, H, W): from the cache when the folder is unchanged, else decoded."""
    digest = hashlib.sha256(_CACHE_VERSION.encode())
    for f in files:
        stat = f.path.stat()
        digest.update(f"{f.path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{f.label}\n".encode())
    cache = root / CACHE_FOLDER / f"pixels-{digest.hexdigest()[:24]}.npy"
    if cache.is_file():
        try:
            cached = np.load(cache, mmap_mode="c")
            if cached.dtype == np.uint8 and cached.ndim == 4 and len(cached) == len(files):
                return cached
        except (OSError, ValueError):
            pass
    shape = _decoded_shape(files)
    size = int(np.prod(shape))
    if size > MAX_PIXEL_BYTES:
        raise SpecError(f"{root}: {len(files)} images of {shape[1:]} need {size / 2**30:.1f} GiB, "
                        f"more than {MAX_PIXEL_BYTES / 2**30:.0f} GiB")
    if size <= IN_MEMORY_BYTES:
        pixels = np.empty(shape, dtype=np.uint8)
        _decode_into(pixels, files, root)
        return pixels
    return _decode_to_cache(cache, shape, files, root)


def _decoded_shape(files: list[ImageFile]) -> tuple[int, int, int, int]:
    """(N, C, H, W) from the images' headers: the most common size, one channel only if every image is grey."""
    from PIL import Image

    sizes: Counter[tuple[int, int]] = Counter()
    grey = True
    for f in files:
        try:
            with Image.open(f.path) as image:
                width, height = image.size
                if image.getexif().get(_EXIF_ORIENTATION, 1) in _EXIF_QUARTER_TURNS:
                    width, height = height, width
                grey = grey and image.mode in GREY_MODES
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise SpecError(f"{f.path}: not a readable PNG/JPEG image ({exc})") from None
        if width * height > MAX_IMAGE_PIXELS or width < 1 or height < 1:
            raise SpecError(f"{f.path}: {width}x{height} pixels, more than {MAX_IMAGE_PIXELS}")
        sizes[(width, height)] += 1
    (width, height), _ = sizes.most_common(1)[0]
    return (len(files), 1 if grey else 3, height, width)


def _decode_into(pixels: np.ndarray, files: list[ImageFile], root: Path) -> None:
    """Decode ``files`` into the rows of ``pixels`` (N, C, H, W) in blocks on threads: Pillow decodes off the GIL."""
    blocks = [range(start, min(start + _BLOCK, len(files))) for start in range(0, len(files), _BLOCK)]
    progress = len(files) >= _PROGRESS_FROM
    if progress:
        print(f"decoding {len(files)} images of {root} (once) ...", file=sys.stderr, flush=True)
    done, reported = 0, 0
    with ThreadPoolExecutor(max_workers=max(1, min(_DECODE_THREADS, len(blocks)))) as pool:
        pending = [pool.submit(_decode_block, pixels, files, rows) for rows in blocks]
        try:
            for finished in as_completed(pending):
                done += finished.result()
                if progress and done - reported >= len(files) // 10:
                    reported = done
                    print(f"  {done}/{len(files)} images decoded", file=sys.stderr, flush=True)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _decode_block(pixels: np.ndarray, files: list[ImageFile], rows: range) -> int:
    """Decode ``files[rows]`` into ``pixels[rows]``, resized to its H x W where they differ; the count decoded."""
    from PIL import Image, ImageOps

    _, channels, height, width = pixels.shape
    mode = "L" if channels == 1 else "RGB"
    for row in rows:
        path = files[row].path
        try:
            with Image.open(path) as image:
                image.draft(mode, (max(width, height),) * 2)  # JPEG: decode at a reduced scale when enough
                image = ImageOps.exif_transpose(image).convert(mode)  # upright, as a photo viewer shows it
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)  # (H, W) or (H, W, C)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise SpecError(f"{path}: not a readable PNG/JPEG image ({exc})") from None
        pixels[row] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return len(rows)


def _decode_to_cache(cache: Path, shape: tuple[int, int, int, int], files: list[ImageFile], root: Path) -> np.ndarray:
    """Decode into a memory-mapped ``.npy`` written beside the data and renamed into place when whole."""
    partial = cache.with_name(f".{cache.stem}-{os.getpid()}.partial.npy")
    made = not cache.parent.exists()
    try:
        cache.parent.mkdir(exist_ok=True)
        pixels = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
    except OSError as exc:
        print(f"cannot write a pixel cache in {cache.parent} ({exc}); decoding into memory", file=sys.stderr)
        pixels = np.empty(shape, dtype=np.uint8)
        _decode_into(pixels, files, root)
        return pixels
    try:
        _decode_into(pixels, files, root)
        pixels.flush()
        del pixels
        os.replace(partial, cache)
    except BaseException:
        partial.unlink(missing_ok=True)
        if made:
            with contextlib.suppress(OSError):
                cache.parent.rmdir()
        raise
    for stale in cache.parent.glob("pixels-*.npy"):
        if stale != cache:
            stale.unlink(missing_ok=True)
    return np.load(cache, mmap_mode="c")


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> Path:
    """Save uint8 images (N, C, H, W), C 1 or 3, as ``root/<class name>/<n>.png``: the layout ``folder:`` reads."""
    from PIL import Image

    for n, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(folder / f"{n:06d}.png")
    return root
