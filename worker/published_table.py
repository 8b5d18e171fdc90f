"""Published benchmark tables (NAS-Bench-201 CSV, FBNet latency JSON): architectures and their measured columns.

A table is data handed in by a user or read from ``../shared/benchmarks/``: it is
parsed as CSV or JSON only, its size is bounded before it is read, and every
error names the file and the row or column.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from archetype.errors import SpecError
from archetype.searchspace.nb201 import format_fbnet, format_nb201, parse_fbnet, parse_nb201

MAX_TABLE_BYTES = 1 << 30
"""The largest table read (after decompression): larger is refused before it fills memory."""

LATENCY_PREFIX = "latency_ms_"


@dataclass(frozen=True)
class PublishedTable:
    """One row per architecture (``arch``: its canonical string) and named numeric columns."""

    path: Path
    space: str  # "nb201" or "fbnet"
    archs: tuple[str, ...]
    columns: Mapping[str, np.ndarray]
    _rows: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._rows.update({a: i for i, a in enumerate(self.archs)})

    def __len__(self) -> int:
        return len(self.archs)

    def __contains__(self, arch: object) -> bool:
        return arch in self._rows

    def column(self, name: str) -> np.ndarray:
        """A column by name (``latency_ms_`` may be left off a device's); SpecError lists the known ones."""
        for candidate in (name, LATENCY_PREFIX + name):
            if candidate in self.columns:
                return self.columns[candidate]
        raise SpecError(f"{self.path}: no column {name!r}; columns: {', '.join(sorted(self.columns))}")

    def devices(self) -> list[str]:
        """Device names of the ``latency_ms_<device>`` columns."""
        return sorted(c[len(LATENCY_PREFIX):] for c in self.columns if c.startswith(LATENCY_PREFIX))

    def row(self, arch: str) -> int:
        """The row of an architecture string (any accepted spelling); SpecError if the table lacks it."""
        key = canonical_arch(self.space, arch)
        try:
            return self._rows[key]
        except KeyError:
            raise SpecError(f"{self.path}: architecture {key} is not in the table") from None


def canonical_arch(space: str, arch: str | list[str]) -> str:
    """The one spelling of an architecture string that tables are keyed by."""
    if space == "nb201":
        return format_nb201(parse_nb201(arch if isinstance(arch, str) else "".join(arch)))
    return format_fbnet(parse_fbnet(arch))


def _read_bounded(path: Path) -> bytes:
    try:
        raw = path.read_bytes() if path.stat().st_size <= MAX_TABLE_BYTES else None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the table: {exc.strerror or exc}") from None
    if raw is None:
        raise SpecError(f"{path}: larger than {MAX_TABLE_BYTES >> 20} MiB, refused")
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
                raw = f.read(MAX_TABLE_BYTES + 1)
        except (OSError, EOFError) as exc:
            raise SpecError(f"{path}: not a readable gzip file: {exc}") from None
        if len(raw) > MAX_TABLE_BYTES:
            raise SpecError(f"{path}: decompresses to more than {MAX_TABLE_BYTES >> 20} MiB, refused")
    return raw


def _number(path: Path, row: int, column: str, text: str) -> float:
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise SpecError(f"{path}: row {row}, column {column!r}: {text!r} is not a number") from None


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_csv(path: Path, raw: bytes) -> PublishedTable:
    try:
        reader = csv.reader(io.StringIO(raw.decode("utf-8")))
        header = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SpecError(f"{path}: not a CSV text file: {exc}") from None
    if not header or "arch" not in header:
        raise SpecError(f"{path}: no 'arch' column in the header (a CSV with one NB201 arch string per row)")
    at = header.index("arch")
    names = [h for k, h in enumerate(header) if k != at]
    archs: list[str] = []
    values: list[list[str]] = []
    lines: list[int] = []
    try:
        for n, line in enumerate(reader, start=2):
            if not line:
                continue
            if len(line) != len(header):
                raise SpecError(f"{path}: row {n} has {len(line)} fields, the header {len(header)}")
            try:
                archs.append(canonical_arch("nb201", line[at]))
            except SpecError as exc:
                raise SpecError(f"{path}: row {n}: {exc}") from None
            values.append([v for k, v in enumerate(line) if k != at])
            lines.append(n)
    except csv.Error as exc:
        raise SpecError(f"{path}: not a CSV text file: {exc}") from None
    if not archs:
        raise SpecError(f"{path}: no rows")
    columns: dict[str, np.ndarray] = {}
    for k, name in enumerate(names):
        texts = [row[k] for row in values]
        if not name.startswith(LATENCY_PREFIX) and not any(_numeric(t) for t in texts):
            continue  # a text column (notes, labels) is left out
        columns[name] = np.array([_number(path, n, name, t) for n, t in zip(lines, texts, strict=True)])
    return PublishedTable(path, "nb201", tuple(archs), columns)


def _load_fbnet_json(path: Path, raw: bytes) -> PublishedTable:
    try:
        data = json.loads(raw)
        entries = data["metainfo"]["arch"]
        latencies = data["latency_ms"]
        archs = tuple(format_fbnet(e["arch_str"]) for e in entries)
        columns = {LATENCY_PREFIX + str(d): np.asarray(v, dtype=np.float64) for d, v in dict(latencies).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"{path}: not an FBNet latency file (metainfo.arch[].arch_str, latency_ms{{device}}): "
                        f"{exc!r}") from None
    for name, col in columns.items():
        if col.shape != (len(archs),):
            raise SpecError(f"{path}: column {name!r} has {col.size} values for {len(archs)} architectures")
    return PublishedTable(path, "fbnet", archs, columns)


def load_published_table(path: str | Path) -> PublishedTable:
    """Read an NB201-style CSV (``arch`` + numeric columns, gzip or plain) or an FBNet latency JSON."""
    path = Path(path)
    raw = _read_bounded(path)
    if raw.lstrip()[:1] == b"{":
        return _load_fbnet_json(path, raw)
    return _load_csv(path, raw)


def shared_benchmarks_dir() -> Path | None:
    """``$ARCHETYPE_BENCHMARKS``, else the ``shared/benchmarks`` folder beside this checkout, if present."""
    env = os.environ.get("ARCHETYPE_BENCHMARKS")
    candidates = [Path(env)] if env else []
    root = Path(__file__).resolve().parent.parent
    candidates += [root.parent / "shared" / "benchmarks", root / "shared" / "benchmarks"]
    return next((p for p in candidates if (p / "nb201.csv.gz").is_file()), None)
