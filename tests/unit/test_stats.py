"""EngineStats, histograms, evidence samplers and the snapshot contract."""

from __future__ import annotations

import enum
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache_runtime.stats import (
    COUNTED_OPERATIONS,
    LARGE_VALUE_BYTES,
    LATENCY_BUCKETS_SECONDS,
    LATENCY_OPERATIONS,
    EngineStats,
    Histogram,
    KeyVariantSampler,
    LatencyHistogram,
    ReuseTracker,
    SnapshotWindow,
    build_snapshot,
    diff_snapshots,
    histogram_from_dict,
    normalize_l2_stats,
)
from tests.fakes import FakeClock

# --- histograms ------------------------------------------------------------------------------


def test_value_equal_to_a_bound_lands_in_that_bucket_like_prometheus_le() -> None:
    histogram = LatencyHistogram()
    histogram.observe(0.02)
    index = LATENCY_BUCKETS_SECONDS.index(0.02)
    assert histogram.counts[index] == 1
    assert histogram.count == 1
    assert histogram.sum == pytest.approx(0.02)


def test_overflow_goes_to_the_last_slot_and_quantile_reports_the_last_bound() -> None:
    histogram = LatencyHistogram()
    histogram.observe(60.0)
    assert histogram.counts[-1] == 1
    assert histogram.quantile(0.99) == LATENCY_BUCKETS_SECONDS[-1]


def test_quantile_interpolates_inside_the_bucket() -> None:
    histogram = Histogram((1.0, 2.0, 4.0))
    for _ in range(10):
        histogram.observe(1.5)  # all in (1, 2]
    assert histogram.quantile(0.5) == pytest.approx(1.5)
    assert histogram.quantile(1.0) == pytest.approx(2.0)


def test_empty_histogram_has_no_quantile() -> None:
    assert LatencyHistogram().quantile(0.95) is None
    assert LatencyHistogram().to_dict()["p95"] is None


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5])
def test_quantile_outside_unit_interval_is_rejected(q: float) -> None:
    with pytest.raises(ValueError, match="quantile q must be in"):
        LatencyHistogram().quantile(q)


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0)])
def test_histogram_bounds_must_ascend(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="strictly ascending"):
        Histogram(bounds)


@given(st.lists(st.floats(min_value=0.0, max_value=20.0), min_size=1, max_size=200), st.floats(0.01, 1.0))
def test_quantile_estimate_lies_in_the_bucket_of_the_true_quantile(values: list[float], q: float) -> None:
    histogram = LatencyHistogram()
    for value in values:
        histogram.observe(value)
    estimate = histogram.quantile(q)
    assert estimate is not None
    ordered = sorted(values)
    true_value = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    bounds = LATENCY_BUCKETS_SECONDS
    # The bucket holding the true quantile: (bounds[i-1], bounds[i]]; overflow reports the last bound.
    index = next((i for i, bound in enumerate(bounds) if true_value <= bound), len(bounds) - 1)
    lower = bounds[index - 1] if index > 0 else 0.0
    upper = bounds[index]
    assert lower - 1e-12 <= estimate <= upper + 1e-12


def test_to_dict_buckets_are_cumulative_and_round_trip() -> None:
    histogram = LatencyHistogram()
    for value in (0.00001, 0.0003, 0.0003, 0.04, 30.0):
        histogram.observe(value)
    data = histogram.to_dict()
    cumulative = [count for _, count in data["buckets"]]
    assert cumulative == sorted(cumulative)
    assert cumulative[-1] == 4  # the 30 s observation is only in +Inf (count)
    assert data["count"] == 5
    rebuilt = histogram_from_dict(data)
    assert rebuilt.counts == histogram.counts
    assert rebuilt.sum == pytest.approx(histogram.sum)


def test_merge_requires_same_bounds() -> None:
    first, second = LatencyHistogram(), LatencyHistogram()
    first.observe(0.001)
    second.observe(0.002)
    first.merge_from(second)
    assert first.count == 2
    with pytest.raises(ValueError, match="different bounds"):
        first.merge_from(Histogram((1.0, 2.0)))


# --- EngineStats -----------------------------------------------------------------------------


def test_every_latency_operation_has_its_own_histogram() -> None:
    stats = EngineStats()
    for index, name in enumerate(LATENCY_OPERATIONS):
        for _ in range(index + 1):
            stats.observe(name, 0.001)
    for index, name in enumerate(LATENCY_OPERATIONS):
        assert stats.latency[name].count == index + 1
        assert getattr(stats, f"latency_{name}") is stats.latency[name]


def test_unknown_latency_operation_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        EngineStats().observe("not-an-op", 0.1)


def test_engine_stats_has_slots_so_typos_fail_loudly() -> None:
    stats = EngineStats()
    with pytest.raises(AttributeError):
        stats.hits_l3 = 1  # type: ignore[attr-defined]


def test_unknown_ai_operation_counts_as_default() -> None:
    stats = EngineStats()
    stats.count_operation("summarize", hit=True)
    stats.count_operation("translate", hit=False)
    assert stats.op_hits["summarize"] == 1
    assert stats.op_misses["default"] == 1


def test_compression_and_stored_value_accounting() -> None:
    stats = EngineStats()
    stats.record_compression(10_000, 2_000, 0.001, kept=True)
    stats.record_compression(1_000, 990, 0.0005, kept=False)
    assert (stats.compress_attempts, stats.compressed_values, stats.compress_skipped) == (2, 1, 1)
    assert (stats.compressed_bytes_in, stats.compressed_bytes_out) == (10_000, 2_000)
    stats.record_stored_value(LARGE_VALUE_BYTES, compressed=False, compression_tried=False)
    stats.record_stored_value(LARGE_VALUE_BYTES, compressed=False, compression_tried=True)  # did not pay
    stats.record_stored_value(100, compressed=False, compression_tried=False)
    assert stats.large_values_uncompressed == 1
    assert stats.stored_values == 3
    assert stats.stored_bytes_max == LARGE_VALUE_BYTES


# --- key variants ----------------------------------------------------------------------------


def _variants(text: str) -> list[str]:
    variants = [
        text,
        "  " + text.replace(" ", "   ") + "\n",
        text.replace(" ", " \u200b"),
        text.replace(" ", "\r\n"),
        "\ufeff" + text,
    ]
    # Upper-casing is a variant only where case folding maps it back (not for e.g. dotless i).
    if text.upper().casefold() == text.casefold():
        variants.append(text.upper())
    return variants


@given(st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "P"]), min_size=1, max_size=60))
def test_sampling_gate_gives_one_answer_for_all_variants_of_a_text(word: str) -> None:
    sampler = KeyVariantSampler(sample_every=2)
    text = f"{word} and some words after it"
    decisions = {sampler.should_sample(variant) for variant in _variants(text)}
    assert len(decisions) == 1


def test_sampling_gate_samples_about_one_in_k() -> None:
    sampler = KeyVariantSampler(sample_every=16)
    sampled = sum(sampler.should_sample(f"question number {i} about the invoice") for i in range(4000))
    assert 4000 / 16 / 2 < sampled < 4000 / 16 * 2


def test_sample_every_one_samples_everything() -> None:
    assert KeyVariantSampler(sample_every=1).should_sample("anything")


@pytest.mark.parametrize("value", [0, 3, 12, -4])
def test_sample_every_must_be_a_power_of_two(value: int) -> None:
    with pytest.raises(ValueError, match="sample_every must be a power of two >= 1, got"):
        KeyVariantSampler(sample_every=value)
    with pytest.raises(ValueError, match="sample_every must be a power of two >= 1, got"):
        ReuseTracker(sample_every=value)


def test_variants_collapse_and_only_hashes_are_kept() -> None:
    sampler = KeyVariantSampler(sample_every=1)
    secret = "Patient John Smith has diabetes"
    for variant in _variants(secret):
        sampler.record(raw_key=f"ai:summarize:{variant}", normalized_key="ai:summarize:patient john smith")
    sampler.record(raw_key="ai:qa:other", normalized_key="ai:qa:other")
    sampler.record(raw_key="ai:qa:other", normalized_key="ai:qa:other")
    summary = sampler.to_dict()
    assert summary["sampled_requests"] == 8
    assert summary["distinct_raw_keys"] == 7
    assert summary["distinct_normalized_keys"] == 2
    assert summary["groups_with_variants"] == 1
    assert summary["new_variant_requests"] == 5
    assert summary["top_groups"][0]["raw_variants"] == 6
    assert "John" not in json.dumps(summary)
    assert all(isinstance(fp, int) for group in sampler._groups.values() for fp in group)


def test_groups_are_bounded_oldest_first() -> None:
    sampler = KeyVariantSampler(sample_every=1, max_groups=3, max_variants=2)
    for index in range(5):
        sampler.record(f"raw{index}", f"norm{index}")
    for index in range(4):
        sampler.record(f"raw4-{index}", "norm4")
    summary = sampler.to_dict()
    assert summary["distinct_normalized_keys"] == 3
    assert summary["groups_dropped"] == 2
    assert summary["top_groups"][0]["raw_variants"] == 2  # capped at max_variants
    assert summary["new_variant_requests"] == 4


# --- TTL reuse -------------------------------------------------------------------------------


def test_reuse_tracker_tells_expired_unexpired_and_cold_misses_apart() -> None:
    clock = FakeClock()
    tracker = ReuseTracker(sample_every=1, clock=clock)
    tracker.on_store("a", ttl_seconds=60)
    tracker.on_store("b", ttl_seconds=60)
    clock.now += 30
    tracker.on_miss("b")  # evicted or invalidated while its TTL ran
    clock.now += 270
    tracker.on_miss("a")  # asked again 300 s after storing: TTL too short for this reuse
    tracker.on_miss("never-stored")
    summary = tracker.to_dict()
    assert (summary["expired_misses"], summary["unexpired_misses"], summary["cold_misses"]) == (1, 1, 1)
    assert summary["reuse_gap"]["count"] == 1
    assert summary["reuse_gap"]["p50"] is not None and 120 < summary["reuse_gap"]["p50"] <= 300


def test_reuse_tracker_is_bounded() -> None:
    tracker = ReuseTracker(sample_every=1, max_tracked=10, clock=FakeClock())
    for index in range(100):
        tracker.on_store(f"k{index}", 60)
    assert tracker.to_dict()["tracked_keys"] == 10
    tracker.on_miss("k0")
    assert tracker.cold_misses == 1


def test_reuse_tracker_handles_non_utf8_safe_text() -> None:
    tracker = ReuseTracker(sample_every=1, clock=FakeClock())
    tracker.on_store("key-\ud800-lone-surrogate", 10)
    tracker.on_miss("key-\ud800-lone-surrogate")
    assert tracker.unexpired_misses == 1


# --- snapshots -------------------------------------------------------------------------------


class Breaker(enum.Enum):
    HALF_OPEN = "half-open"


def _driven_stats() -> EngineStats:
    stats = EngineStats(key_sample_every=1, reuse_sample_every=1)
    stats.hits_l1 += 6
    stats.hits_l2 += 2
    stats.misses += 2
    stats.sets += 4
    stats.observe("get", 0.001)
    return stats


def test_snapshot_rates_and_json_readiness() -> None:
    snapshot = build_snapshot(
        _driven_stats(),
        l1={"entries": 5, "bytes": 500, "max_entries": 100, "max_bytes": 10_000},
        l2={
            "errors": {"timeout": 2, "moved": 1},
            "rtt_samples": [0.001, 0.003, 0.002],
            "breaker_state": Breaker.HALF_OPEN,
            "pool_waits": 4,
            "max_connections": 20,
        },
        redis_memory={"used_memory": 1000, "maxmemory": 0, "maxmemory_policy": "noeviction"},
        config={"hash": "abc", "preset": "ai-production"},
    )
    json.dumps(snapshot)  # JSON-ready
    requests = snapshot["requests"]
    assert requests["lookups"] == 10
    assert requests["hit_rate"] == pytest.approx(0.8)
    assert requests["l1_hit_rate"] == pytest.approx(0.6)
    assert requests["l2_hit_rate"] == pytest.approx(0.5)
    assert snapshot["l1"]["entries"] == 5
    assert set(snapshot["operations"]) == set(COUNTED_OPERATIONS)
    assert set(snapshot["latency"]) == set(LATENCY_OPERATIONS)
    l2 = snapshot["l2"]
    assert l2 is not None
    assert l2["breaker_state"] == "half_open"
    assert l2["errors"]["timeout"] == 2 and l2["errors"]["other"] == 1
    assert l2["rtt_seconds"] == pytest.approx(0.002)
    assert l2["memory"] == {"used_memory": 1000, "maxmemory": 0, "maxmemory_policy": "noeviction"}


def test_snapshot_without_traffic_has_no_rates_and_memory_only_engine_has_no_l2() -> None:
    snapshot = build_snapshot(EngineStats())
    assert snapshot["requests"]["hit_rate"] is None
    assert snapshot["l2"] is None
    assert normalize_l2_stats(None) is None


def test_window_subtracts_counters_and_histograms_and_keeps_gauges() -> None:
    stats = _driven_stats()
    older = build_snapshot(stats, l1={"entries": 5}, now=stats.started_at + 10)
    stats.misses += 10
    stats.observe("get", 0.04)
    stats.observe("get", 0.04)
    newer = build_snapshot(stats, l1={"entries": 7}, now=stats.started_at + 70)
    window = diff_snapshots(newer, older)
    assert window["window_seconds"] == pytest.approx(60)
    assert window["requests"]["lookups"] == 10
    assert window["requests"]["hit_rate"] == 0.0
    assert window["latency"]["get"]["count"] == 2
    assert window["latency"]["get"]["p50"] is not None and window["latency"]["get"]["p50"] > 0.02
    assert window["l1"]["entries"] == 7
    json.dumps(window)


def test_window_across_a_restart_is_the_newer_snapshot() -> None:
    old_engine = _driven_stats()
    older = build_snapshot(old_engine, now=old_engine.started_at + 500)
    new_engine = _driven_stats()
    newer = build_snapshot(new_engine, now=new_engine.started_at + 5)
    assert diff_snapshots(newer, older) is newer


def test_redis_l2_stats_shape_is_normalized() -> None:
    l2_stats = {
        "available": True,
        "breaker": {"state": "half_open", "opened_total": 2},
        "ops": {"get": 70, "set": 30},
        "errors": {"timeout": 1, "tls": 2, "pool": 3},
        "last_error": {"op": "get", "at": 1.0, "message": "Timeout reading from 127.0.0.1:6379"},
        "round_trips": 80,
        "round_trip_seconds_total": 0.08,
        "rtt_seconds": {"last": 0.004, "samples": [0.001, 0.002, 0.004]},
        "pool": {"max_connections": 20, "waits": 9, "timeouts": 3},
    }
    l2 = normalize_l2_stats(
        l2_stats, {"used_memory": 10, "maxmemory": None, "maxmemory_policy": "noeviction"}
    )
    assert l2 is not None
    assert l2["breaker_state"] == "half_open"
    assert l2["ops"] == 100
    assert (l2["errors"]["timeout"], l2["errors"]["tls"], l2["errors"]["pool"]) == (1, 2, 3)
    assert l2["last_error"] == "Timeout reading from 127.0.0.1:6379"
    assert l2["round_trip_mean_seconds"] == pytest.approx(0.001)
    assert l2["rtt_seconds"] == pytest.approx(0.002)  # median of the PING samples
    assert l2["rtt_p95_seconds"] == pytest.approx(0.004)
    assert (l2["pool_waits"], l2["pool_max_connections"]) == (9, 20)
    assert l2["memory"] == {"used_memory": 10, "maxmemory_policy": "noeviction"}  # None values dropped


def test_stats_of_a_real_redis_l2_normalize_without_a_server() -> None:
    from cache_runtime.l2 import RedisL2, RedisSettings

    l2 = normalize_l2_stats(RedisL2(RedisSettings(url="redis://127.0.0.1:1/0")).stats())
    assert l2 is not None
    assert l2["breaker_state"] == "closed"
    assert l2["pool_max_connections"] == 20
    assert set(l2["errors"]) >= {"timeout", "connection", "auth", "oom"}
    json.dumps(l2)


def test_l1_store_counters_win_over_engine_counters() -> None:
    stats = EngineStats()
    stats.l1_evictions = 1
    snapshot = build_snapshot(stats, l1={"entries": 1, "evictions": 7, "expirations": 3, "rejected": 2})
    assert (snapshot["l1"]["evictions"], snapshot["l1"]["expirations"], snapshot["l1"]["rejections"]) == (
        7,
        3,
        2,
    )
    assert build_snapshot(stats)["l1"]["evictions"] == 1


def test_snapshot_window_keeps_a_baseline_about_one_window_old() -> None:
    stats = EngineStats()
    window = SnapshotWindow(window_seconds=60)
    first = window.observe(build_snapshot(stats, now=stats.started_at + 0))
    assert first["requests"]["lookups"] == 0
    results = []
    for minute in range(1, 6):  # one probe every 30 s, 20 misses between probes
        for half in (0, 30):
            stats.misses += 20
            results.append(
                window.observe(build_snapshot(stats, now=stats.started_at + 60 * minute + half - 30))
            )
    # Once warmed up, each window covers 60 s = two probes = 40 misses (not the cumulative 200).
    assert results[-1]["window_seconds"] == pytest.approx(60)
    assert results[-1]["requests"]["misses"] == 40
    assert len(window._history) <= 4


def test_snapshot_window_is_bounded_and_survives_a_restart() -> None:
    stats = EngineStats()
    window = SnapshotWindow(window_seconds=10_000, max_snapshots=3)
    for second in range(10):
        stats.misses += 1
        window.observe(build_snapshot(stats, now=stats.started_at + second + 1))
    assert len(window._history) == 3
    restarted = EngineStats()
    restarted.misses = 1
    fresh = window.observe(build_snapshot(restarted, now=restarted.started_at + 1))
    assert fresh["requests"]["misses"] == 1
    with pytest.raises(ValueError, match="window_seconds must be > 0"):
        SnapshotWindow(window_seconds=0)
