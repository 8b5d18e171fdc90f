"""The latency protocol: warm-up honoured, calibrated blocks, median close to the truth, retries on spread."""

from __future__ import annotations

import math
import time

import pytest

from archetype.runtime.measure import Latency, MeasureProtocol, measure_latency


class CountingRun:
    """A callable that sleeps ``slow_s`` for its first ``slow_calls`` calls and ``fast_s`` after."""

    def __init__(self, fast_s: float = 0.0, slow_s: float = 0.0, slow_calls: int = 0) -> None:
        self.calls = 0
        self.fast_s, self.slow_s, self.slow_calls = fast_s, slow_s, slow_calls

    def __call__(self) -> None:
        self.calls += 1
        delay = self.slow_s if self.calls <= self.slow_calls else self.fast_s
        if delay:
            time.sleep(delay)


def test_median_of_a_sleep_is_close_to_the_sleep():
    latency = measure_latency(lambda: time.sleep(0.002), warmup=20, blocks=5, min_block_ms=20.0)
    assert 2.0 <= latency.median_ms < 3.0
    assert 0.0 <= latency.spread < 0.15
    assert latency.blocks == 5
    assert latency.runs_per_block * latency.median_ms >= 20.0 * 0.9, "a block lasts about min_block_ms"


def test_warmup_calls_are_made_and_not_timed():
    run = CountingRun(fast_s=0.0002, slow_s=0.005, slow_calls=25)  # a slow cold start
    latency = measure_latency(run, warmup=25, blocks=3, min_block_ms=2.0, retries=0)
    assert latency.median_ms < 1.0, "the slow warm-up calls must not be timed"
    assert run.calls >= 25 + 3 * latency.runs_per_block


class AlternatingRun(CountingRun):
    """Every other call sleeps 1 ms, so one-run blocks always have a large spread."""

    def __call__(self) -> None:
        self.calls += 1
        if self.calls % 2:
            time.sleep(0.001)


@pytest.mark.parametrize(("max_spread", "measurements"), [(math.inf, 1), (0.0, 3)])
def test_calls_are_warmup_calibration_and_blocks_with_retries(max_spread, measurements):
    run = AlternatingRun()
    latency = measure_latency(run, warmup=20, blocks=4, min_block_ms=0.0, max_spread=max_spread, retries=2)
    assert latency.runs_per_block == 1  # any block satisfies a 0 ms minimum
    assert run.calls == 20 + 1 + measurements * 4  # warm-up, one calibration run, the blocks of each measurement
    assert latency.spread > 0


def test_protocol_carries_the_settings():
    run = CountingRun()
    latency = MeasureProtocol(warmup=7, blocks=3, min_block_ms=0.0, retries=0).measure(run)
    assert isinstance(latency, Latency) and latency.blocks == 3
    assert run.calls == 7 + 1 + 3


@pytest.mark.parametrize(
    "setting", [{"warmup": -1}, {"blocks": 0}, {"retries": -1}, {"min_block_ms": -1.0}, {"max_spread": -0.1}]
)
def test_impossible_settings_are_refused(setting):
    with pytest.raises(ValueError, match="invalid protocol"):
        measure_latency(lambda: None, **setting)


class FakeClock:
    """``perf_counter_ns`` that advances only when a run is called: each run costs a fixed number of ns."""

    def __init__(self) -> None:
        self.now = 0
        self.calls: list[str] = []

    def run(self, name: str, cost_ns: int):
        def call() -> None:
            self.calls.append(name)
            self.now += cost_ns
        return call


def test_side_by_side_alternates_blocks_and_reports_the_ratio(monkeypatch):
    from archetype.runtime import measure

    clock = FakeClock()
    monkeypatch.setattr(measure.time, "perf_counter_ns", lambda: clock.now)
    slow, fast = clock.run("slow", 3_000_000), clock.run("fast", 1_000_000)
    result = measure.measure_side_by_side(slow, fast, warmup=2, rounds=4, min_block_ms=5.0)
    assert result.ratio == pytest.approx(3.0) and result.ratio_low == pytest.approx(3.0)
    assert result.first.median_ms == pytest.approx(3.0) and result.second.median_ms == pytest.approx(1.0)
    assert result.rounds == 4 and result.first.blocks == 4
    timed = clock.calls[-(4 * result.first.runs_per_block + 4 * result.second.runs_per_block):]
    runs = [name for i, name in enumerate(timed) if i == 0 or timed[i - 1] != name]
    assert runs == ["slow", "fast", "slow", "fast", "slow"]  # blocks in ABBA order: slow fast | fast slow | ...


def test_side_by_side_refuses_a_bad_protocol():
    from archetype.runtime.measure import measure_side_by_side

    with pytest.raises(ValueError, match="rounds=0"):
        measure_side_by_side(lambda: None, lambda: None, rounds=0)
