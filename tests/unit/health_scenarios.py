"""Engine states for the health and diagnosis tables, produced by driving real EngineStats.

Each scenario starts from a healthy engine and changes what a real workload would change; the
snapshot is then built by ``stats.build_snapshot`` exactly as the facade builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cache_runtime.stats import LARGE_VALUE_BYTES, EngineStats, Snapshot, build_snapshot
from tests.fakes import FakeClock

MIB = 1024 * 1024


@dataclass
class Scenario:
    """One engine's counters plus the gauges the facade would pass to build_snapshot."""

    stats: EngineStats
    clock: FakeClock
    l1: dict[str, int]
    l2: dict[str, Any] | None
    redis_memory: dict[str, Any] | None
    config: dict[str, Any]
    isolated: bool = False
    notes: list[str] = field(default_factory=list)

    def snapshot(self) -> Snapshot:
        """The snapshot the facade would build right now."""
        return build_snapshot(
            self.stats,
            l1=self.l1,
            l2=self.l2,
            redis_memory=self.redis_memory,
            config=self.config,  # type: ignore[arg-type]
            isolated=self.isolated,
            now=self.stats.started_at + 300,
        )


def healthy() -> Scenario:
    """A production-like engine: 90% hit rate, fast, small, Redis fine."""
    clock = FakeClock(10_000.0)
    stats = EngineStats(key_sample_every=1, reuse_sample_every=1, clock=clock)
    stats.hits_l1 = 700
    stats.hits_l2 = 200
    stats.misses = 100
    stats.sets = 100
    stats.l1_inserts = 300
    stats.l1_evictions = 10
    for _ in range(200):
        stats.observe("get", 0.0004)
        stats.observe("l2_get", 0.0008)
    for _ in range(100):
        stats.observe("set", 0.001)
        stats.record_compression(2000, 800, 0.0001, kept=True)
        stats.record_stored_value(800, compressed=True, compression_tried=True)
    for index in range(100):
        stats.key_variants.record(f"raw-{index}", f"norm-{index}")
    return Scenario(
        stats=stats,
        clock=clock,
        l1={"entries": 300, "bytes": 2 * MIB, "max_entries": 1000, "max_bytes": 32 * MIB},
        l2={
            "errors": {},
            "ops": 400,
            "pool_waits": 0,
            "rtt_seconds": 0.0005,
            "breaker_state": "closed",
            "available": True,
            "max_connections": 20,
        },
        redis_memory={"used_memory": 10 * MIB, "maxmemory": 1024 * MIB, "maxmemory_policy": "volatile-lru"},
        config={
            "hash": "0123abcd",
            "preset": "production",
            "enabled": True,
            "ttl_default_s": 7200,
            "l1_max_entries": 1000,
            "l1_max_bytes": 32 * MIB,
            "compression_threshold_bytes": 500,
            "compression_level": 9,
            "redis_max_connections": 20,
            "normalize": {
                "whitespace": False,
                "line_endings": False,
                "invisible_chars": False,
                "case": False,
            },
        },
    )


def with_low_hit_rate(scenario: Scenario, hit_rate: float = 0.15, lookups: int = 1000) -> Scenario:
    """Replace the lookup counters by a workload with the given hit rate (hits split 2:1 L1:L2)."""
    hits = round(hit_rate * lookups)
    scenario.stats.hits_l1 = hits * 2 // 3
    scenario.stats.hits_l2 = hits - scenario.stats.hits_l1
    scenario.stats.misses = lookups - hits
    scenario.stats.sets = scenario.stats.misses
    return scenario


def with_text_variants(scenario: Scenario, texts: int = 20, variants: int = 5) -> Scenario:
    """Clients send each text in several spellings (whitespace, case): keys differ, texts do not."""
    for text in range(texts):
        for variant in range(variants):
            scenario.stats.key_variants.record(
                f"ai:summarize:t{text}-spelling{variant}", f"ai:summarize:t{text}"
            )
    return scenario


def with_expiring_reuse(
    scenario: Scenario, keys: int = 40, ttl_s: float = 60, gap_s: float = 250
) -> Scenario:
    """Keys stored with a short TTL and asked for again ``gap_s`` later, after they expired."""
    scenario.config["ttl_default_s"] = ttl_s
    reuse = scenario.stats.reuse
    for index in range(keys):
        reuse.on_store(f"k{index}", ttl_s)
    scenario.clock.now += gap_s
    for index in range(keys):
        reuse.on_miss(f"k{index}")
        scenario.stats.l1_expirations += 1
    return scenario


def with_cold_misses(scenario: Scenario, keys: int = 40) -> Scenario:
    """Every miss is the first request for its key."""
    for index in range(keys):
        scenario.stats.reuse.on_miss(f"never-seen-{index}")
    return scenario


def with_redis_down(scenario: Scenario, errors: int = 12) -> Scenario:
    """Connection refused until the breaker opened."""
    assert scenario.l2 is not None
    scenario.l2.update(
        breaker_state="open",
        available=False,
        errors={"connection": errors},
        last_error="Error 111 connecting to 127.0.0.1:6399. Connection refused.",
    )
    return scenario


def with_large_uncompressed_values(scenario: Scenario, count: int = 300) -> Scenario:
    """Compression effectively off (threshold 100 MiB) and 64 KiB values stored raw: memory fills."""
    scenario.config["compression_threshold_bytes"] = 100 * MIB
    for _ in range(count):
        scenario.stats.record_stored_value(4 * LARGE_VALUE_BYTES, compressed=False, compression_tried=False)
    scenario.l1.update(bytes=60 * MIB, entries=900)
    return scenario


def with_latency(scenario: Scenario, operation: str, seconds: float, count: int = 200) -> Scenario:
    """``count`` observations of ``operation`` at ``seconds`` each (p95 lands in that bucket)."""
    for _ in range(count):
        scenario.stats.observe(operation, seconds)
    return scenario
