"""Latency tables in the store: entries keyed by target, device and instance, written in bulk, replaced by key."""

from __future__ import annotations

import math

import pytest

from archetype.store import LatencyRecord, Store


def _entry(i: int, ms: float = 0.1) -> LatencyRecord:
    instance = {"op": "conv_bn_act", "params": {"width": 8 + i}, "input": "Image[1,8,8]"}
    return LatencyRecord(f"k{i:04d}", instance, ms + i / 1000, 0.02)


def test_entries_are_kept_apart_by_target_and_device(store: Store) -> None:
    assert store.put_latency_entries("cpu-ort", "dev-a", [_entry(i) for i in range(3)]) == 3
    store.put_latency_entries("cpu-ort", "dev-b", [_entry(0, ms=9.0)])
    store.put_latency_entries("cpu-torch", "dev-a", [_entry(1, ms=5.0)])
    table = store.latency_entries("cpu-ort", "dev-a")
    assert sorted(table) == ["k0000", "k0001", "k0002"]
    assert table["k0001"].median_ms == pytest.approx(0.101) and table["k0001"].spread == 0.02
    assert table["k0001"].item == {"op": "conv_bn_act", "params": {"width": 9}, "input": "Image[1,8,8]"}
    assert table["k0001"].measured_at is not None and table["k0001"].measured_at.tzinfo is not None
    assert store.latency_entries("cpu-ort", "dev-b")["k0000"].median_ms == 9.0
    assert store.latency_entries("cpu-torch", "dev-a").keys() == {"k0001"}
    assert store.latency_entries("cpu-ort", "dev-c") == {}


def test_bulk_reads_by_key_and_rewrites_replace(store: Store) -> None:
    store.put_latency_entries("cpu-ort", "dev", [_entry(i) for i in range(1200)])  # more than one IN (...) chunk
    wanted = [f"k{i:04d}" for i in range(0, 1200, 2)] + ["absent"]
    assert sorted(store.latency_entries("cpu-ort", "dev", wanted)) == sorted(wanted[:-1])
    store.put_latency_entries("cpu-ort", "dev", [_entry(5, ms=3.0)])
    table = store.latency_entries("cpu-ort", "dev")
    assert len(table) == 1200 and table["k0005"].median_ms == pytest.approx(3.005)


def test_a_non_finite_latency_writes_nothing(store: Store) -> None:
    bad = LatencyRecord("nan", {}, math.nan, 0.0)
    with pytest.raises(ValueError, match="latency of nan is not finite"):
        store.put_latency_entries("cpu-ort", "dev", [_entry(0), bad])
    assert store.latency_entries("cpu-ort", "dev") == {}


def test_samples_are_kept_per_space(store: Store) -> None:
    arch = {"input": "Image[1,8,8]", "slots": []}
    store.put_latency_samples("cpu-ort", "dev", "conv-small", [LatencyRecord("a1", arch, 0.5, 0.01),
                                                              LatencyRecord("a2", arch, 0.7, 0.03)])
    store.put_latency_samples("cpu-ort", "dev", "conv-small", [LatencyRecord("a1", arch, 0.6, 0.01)])
    store.put_latency_samples("cpu-ort", "dev", "mobile", [LatencyRecord("a1", arch, 2.0, 0.01)])
    samples = store.latency_samples("cpu-ort", "dev", "conv-small")
    assert [(s.key, s.median_ms) for s in samples] == [("a1", 0.6), ("a2", 0.7)]
    assert samples[0].item == arch
    assert store.latency_samples("cpu-ort", "other", "conv-small") == []

