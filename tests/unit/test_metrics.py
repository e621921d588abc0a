"""The Prometheus collector, scraped through a real CollectorRegistry and parsed back."""

from __future__ import annotations

import enum

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cache_runtime.metrics import EngineCollector, register_engine_collector
from cache_runtime.stats import EngineStats, Snapshot, build_snapshot

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Breaker(enum.Enum):
    OPEN = "open"


def scrape(registry: CollectorRegistry) -> Samples:
    """Scrape the registry as Prometheus would and index every sample by name and labels."""
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def drive(stats: EngineStats) -> None:
    """A small, known workload."""
    stats.hits_l1 += 7
    stats.hits_l2 += 2
    stats.misses += 3
    stats.sets += 4
    stats.decode_failures += 1
    stats.count_operation("summarize", hit=True)
    stats.count_operation("qa", hit=False)
    for _ in range(3):
        stats.observe("get", 0.003)
    stats.observe("get", 0.04)
    stats.observe("l2_get", 0.0004)
    stats.coherence_lag.observe(0.0015)
    stats.l1_evictions += 5
    stats.record_compression(10_000, 2_500, 0.002, kept=True)
    stats.record_compression(600, 590, 0.001, kept=False)
    stats.invalidations_pattern += 2
    stats.invalidations_namespace += 1
    stats.keys_invalidated += 40
    stats.singleflight_merges += 9


def make_source(stats: EngineStats, **overrides: object):  # type: ignore[no-untyped-def]
    def source() -> Snapshot:
        arguments: dict[str, object] = {
            "l1": {"entries": 12, "bytes": 3456, "max_entries": 100, "max_bytes": 1 << 20},
            "l2": {  # the shape of RedisL2.stats()
                "errors": {"timeout": 4, "connection": 2},
                "breaker": {"state": Breaker.OPEN},
                "available": False,
                "ops": {"get": 30, "set": 20},
                "round_trips": 40,
                "round_trip_seconds_total": 0.036,
                "pool": {"max_connections": 20, "waits": 6},
                "rtt_seconds": {"last": 0.0009, "samples": [0.0009]},
            },
            "redis_memory": {"used_memory": 2048, "maxmemory": 4096, "maxmemory_policy": "noeviction"},
            "config": {"hash": "cafe01", "preset": "ai-production"},
        }
        arguments.update(overrides)
        return build_snapshot(stats, **arguments)  # type: ignore[arg-type]

    return source


def test_scrape_reflects_the_driven_counters() -> None:
    stats = EngineStats()
    drive(stats)
    registry = CollectorRegistry()
    register_engine_collector(make_source(stats), registry)
    samples = scrape(registry)

    assert value(samples, "cachewarden_cache_hits_total", tier="l1") == 7
    assert value(samples, "cachewarden_cache_hits_total", tier="l2") == 2
    assert value(samples, "cachewarden_cache_misses_total") == 3
    assert value(samples, "cachewarden_cache_sets_total") == 4
    assert value(samples, "cachewarden_cache_decode_failures_total") == 1
    assert value(samples, "cachewarden_cache_operation_hits_total", operation="summarize") == 1
    assert value(samples, "cachewarden_cache_operation_misses_total", operation="qa") == 1
    assert value(samples, "cachewarden_cache_l1_entries") == 12
    assert value(samples, "cachewarden_cache_l1_bytes") == 3456
    assert value(samples, "cachewarden_cache_l1_evictions_total") == 5
    assert value(samples, "cachewarden_cache_compression_attempts_total") == 2
    assert value(samples, "cachewarden_cache_compression_skipped_total") == 1
    assert value(samples, "cachewarden_cache_compression_bytes_total", direction="in") == 10_000
    assert value(samples, "cachewarden_cache_compression_ratio") == pytest.approx(4.0)
    assert value(samples, "cachewarden_cache_compression_seconds_total") == pytest.approx(0.003)
    assert value(samples, "cachewarden_cache_invalidations_total", kind="pattern") == 2
    assert value(samples, "cachewarden_cache_invalidations_total", kind="namespace") == 1
    assert value(samples, "cachewarden_cache_keys_invalidated_total") == 40
    assert value(samples, "cachewarden_cache_singleflight_merges_total") == 9
    assert value(samples, "cachewarden_cache_config_info", hash="cafe01", preset="ai-production") == 1
    assert value(samples, "cachewarden_redis_up") == 0
    assert value(samples, "cachewarden_redis_breaker_state", state="open") == 1
    assert value(samples, "cachewarden_redis_breaker_state", state="closed") == 0
    assert value(samples, "cachewarden_redis_errors_total", kind="timeout") == 4
    assert value(samples, "cachewarden_redis_errors_total", kind="connection") == 2
    assert value(samples, "cachewarden_redis_errors_total", kind="auth") == 0
    assert value(samples, "cachewarden_redis_pool_waits_total") == 6
    assert value(samples, "cachewarden_redis_operations_total") == 50
    assert value(samples, "cachewarden_redis_round_trips_total") == 40
    assert value(samples, "cachewarden_redis_round_trip_seconds_total") == pytest.approx(0.036)
    assert value(samples, "cachewarden_redis_rtt_seconds") == pytest.approx(0.0009)
    assert value(samples, "cachewarden_redis_used_memory_bytes") == 2048
    assert value(samples, "cachewarden_redis_maxmemory_bytes") == 4096


def test_latency_histograms_come_from_the_fixed_buckets() -> None:
    stats = EngineStats()
    drive(stats)
    registry = CollectorRegistry()
    register_engine_collector(make_source(stats), registry)
    samples = scrape(registry)
    name = "cachewarden_cache_operation_duration_seconds"
    assert value(samples, f"{name}_bucket", op="get", le="0.002") == 0
    assert value(samples, f"{name}_bucket", op="get", le="0.005") == 3
    assert value(samples, f"{name}_bucket", op="get", le="0.02") == 3
    assert value(samples, f"{name}_bucket", op="get", le="0.05") == 4
    assert value(samples, f"{name}_bucket", op="get", le="+Inf") == 4
    assert value(samples, f"{name}_count", op="get") == 4
    assert value(samples, f"{name}_sum", op="get") == pytest.approx(0.049)
    assert value(samples, f"{name}_count", op="l2_get") == 1
    assert value(samples, f"{name}_count", op="invalidate") == 0
    assert value(samples, "cachewarden_cache_coherence_lag_seconds_bucket", le="0.002") == 1


def test_each_scrape_reads_the_counters_at_that_moment() -> None:
    stats = EngineStats()
    registry = CollectorRegistry()
    register_engine_collector(make_source(stats), registry)
    assert value(scrape(registry), "cachewarden_cache_misses_total") == 0
    stats.misses += 11
    assert value(scrape(registry), "cachewarden_cache_misses_total") == 11


def test_memory_only_engine_reports_redis_down_without_a_breaker_state() -> None:
    stats = EngineStats()
    registry = CollectorRegistry()
    register_engine_collector(make_source(stats, l2=None, redis_memory=None), registry)
    samples = scrape(registry)
    assert value(samples, "cachewarden_redis_up") == 0
    assert all(value(samples, "cachewarden_redis_breaker_state", state=s) == 0 for s in ("closed", "open"))
    assert ("cachewarden_redis_rtt_seconds", ()) not in samples


def test_registering_does_not_take_a_snapshot_and_a_failing_snapshot_does_not_fail_the_scrape() -> None:
    calls = 0

    def broken() -> Snapshot:
        nonlocal calls
        calls += 1
        raise RuntimeError("engine closed")

    registry = CollectorRegistry()
    register_engine_collector(broken, registry)
    assert calls == 0
    samples = scrape(registry)
    assert calls == 1
    assert value(samples, "cachewarden_cache_snapshot_errors_total") == 1
    assert ("cachewarden_cache_hits_total", (("tier", "l1"),)) not in samples


def test_two_engines_in_one_registry_collide_by_name() -> None:
    registry = CollectorRegistry()
    register_engine_collector(make_source(EngineStats()), registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register_engine_collector(make_source(EngineStats()), registry)
    # A different prefix (or a registry per engine) is the way to export two engines.
    registry.register(EngineCollector(make_source(EngineStats()), prefix="other"))
    assert value(scrape(registry), "other_cache_misses_total") == 0
