"""The one latency protocol: warm up, calibrate blocks, take the median of block means, keep the spread.

Every latency Archetype stores comes from ``measure_latency``; targets decide
what one run is (an ONNX Runtime session call, an eager forward pass) and how
many threads it gets, never how it is timed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    """A measured latency per run.

    ``median_ms`` is the median over blocks of each block's mean time per run.
    ``spread`` is the relative interquartile range of those per-block times,
    ``(p75 - p25) / median``: 0.05 means the middle half of the blocks lie
    within 5% of the median.
    """

    median_ms: float
    spread: float
    blocks: int
    runs_per_block: int


@dataclass(frozen=True)
class MeasureProtocol:
    """The settings of ``measure_latency``, so a target carries one protocol."""

    warmup: int = 20  # untimed runs before calibration
    blocks: int = 7  # timed blocks; the median is taken over them
    min_block_ms: float = 20.0  # each block runs long enough to take at least this
    max_spread: float = 0.1  # re-measure when the spread is above this
    retries: int = 2  # re-measurements at most; the one with the smallest spread is kept

    def measure(self, run: Callable[[], object]) -> Latency:
        return measure_latency(
            run,
            warmup=self.warmup,
            blocks=self.blocks,
            min_block_ms=self.min_block_ms,
            max_spread=self.max_spread,
            retries=self.retries,
        )


def measure_latency(
    run: Callable[[], object],
    *,
    warmup: int = 20,
    blocks: int = 7,
    min_block_ms: float = 20.0,
    max_spread: float = 0.1,
    retries: int = 2,
) -> Latency:
    """Time ``run()``: ``warmup`` untimed calls, then ``blocks`` blocks of calibrated length.

    A block repeats ``run`` enough times to last at least ``min_block_ms``. When
    the spread exceeds ``max_spread`` the blocks are timed again, up to
    ``retries`` times, and the measurement with the smallest spread is returned.
    """
    if warmup < 0 or blocks < 1 or retries < 0 or min_block_ms < 0 or max_spread < 0:
        raise ValueError(
            f"invalid protocol: warmup={warmup}, blocks={blocks}, min_block_ms={min_block_ms}, "
            f"max_spread={max_spread}, retries={retries}"
        )
    for _ in range(warmup):
        run()
    runs_per_block = _calibrate(run, min_block_ms * 1e6)
    best = _time_blocks(run, blocks, runs_per_block)
    for _ in range(retries):
        if best.spread <= max_spread:
            break
        latency = _time_blocks(run, blocks, runs_per_block)
        if latency.spread < best.spread:
            best = latency
    return best


def _calibrate(run: Callable[[], object], min_block_ns: float) -> int:
    """The number of runs that makes one block last at least ``min_block_ns``."""
    runs = 1
    for _ in range(8):
        elapsed = _time_runs(run, runs)
        if elapsed >= min_block_ns:
            return runs
        # aim 10% above the minimum so that a slightly faster block still qualifies
        runs = max(runs + 1, math.ceil(runs * 1.1 * min_block_ns / max(elapsed, 1)))
    return runs


def _time_blocks(run: Callable[[], object], blocks: int, runs_per_block: int) -> Latency:
    per_run_ms = np.array([_time_runs(run, runs_per_block) / runs_per_block / 1e6 for _ in range(blocks)])
    median = float(np.median(per_run_ms))
    p25, p75 = np.percentile(per_run_ms, [25, 75])
    spread = float((p75 - p25) / median) if median > 0 else 0.0
    return Latency(median_ms=median, spread=spread, blocks=blocks, runs_per_block=runs_per_block)


def _time_runs(run: Callable[[], object], runs: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(runs):
        run()
    return time.perf_counter_ns() - start
