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

    def side_by_side(self, first: Callable[[], object], second: Callable[[], object], rounds: int = 15) -> SideBySide:
        """``measure_side_by_side`` with this protocol's warm-up and block length."""
        return measure_side_by_side(first, second, warmup=self.warmup, rounds=rounds, min_block_ms=self.min_block_ms)

    def measure(self, run: Callable[[], object]) -> Latency:
        return measure_latency(
            run,
            warmup=self.warmup,
            blocks=self.blocks,
            min_block_ms=self.min_block_ms,
            max_spread=self.max_spread,
            retries=self.retries,
        )


@dataclass(frozen=True)
class SideBySide:
    """Two runs timed in alternating blocks: each one's latency, and the ratio first / second per round."""

    first: Latency
    second: Latency
    ratio: float  # median over rounds of (first block time / second block time)
    ratio_low: float  # 25th percentile of the per-round ratios
    ratio_high: float  # 75th percentile
    rounds: int

    def to_json(self) -> dict[str, float]:
        return {"first_ms": self.first.median_ms, "second_ms": self.second.median_ms, "ratio": self.ratio,
                "ratio_low": self.ratio_low, "ratio_high": self.ratio_high, "rounds": float(self.rounds)}


def measure_side_by_side(
    first: Callable[[], object],
    second: Callable[[], object],
    *,
    warmup: int = 20,
    rounds: int = 15,
    min_block_ms: float = 20.0,
) -> SideBySide:
    """Time two runs in alternating blocks (ABBA order), so that load drifting over time hits both alike.

    Each round times one calibrated block of each; the ratio of a round is the
    first's time per run over the second's, and its median over rounds is what
    a speedup is reported as, with the interquartile range beside it.
    """
    if warmup < 0 or rounds < 1 or min_block_ms < 0:
        raise ValueError(f"invalid side-by-side protocol: warmup={warmup}, rounds={rounds}, "
                         f"min_block_ms={min_block_ms}")
    for _ in range(warmup):
        first()
        second()
    runs = [_calibrate(first, min_block_ms * 1e6), _calibrate(second, min_block_ms * 1e6)]
    times: list[list[float]] = [[], []]
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for index in order:
            run = (first, second)[index]
            times[index].append(_time_runs(run, runs[index]) / runs[index] / 1e6)
    a, b = np.array(times[0]), np.array(times[1])
    ratios = a / b
    low, high = np.percentile(ratios, [25, 75])
    return SideBySide(_summary(a, runs[0]), _summary(b, runs[1]), float(np.median(ratios)), float(low),
                      float(high), rounds)


def _summary(per_run_ms: np.ndarray, runs_per_block: int) -> Latency:
    median = float(np.median(per_run_ms))
    p25, p75 = np.percentile(per_run_ms, [25, 75])
    spread = float((p75 - p25) / median) if median > 0 else 0.0
    return Latency(median_ms=median, spread=spread, blocks=len(per_run_ms), runs_per_block=runs_per_block)


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
    return _summary(per_run_ms, runs_per_block)


def _time_runs(run: Callable[[], object], runs: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(runs):
        run()
    return time.perf_counter_ns() - start
