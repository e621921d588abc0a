"""Prometheus export of the engine's statistics, built at scrape time only.

The hot path never calls prometheus_client: it increments plain counters in
:class:`cache_runtime.stats.EngineStats`. At scrape time :class:`EngineCollector` asks for one
:class:`cache_runtime.stats.Snapshot` (the same dict the health evaluation and the admin API read)
and turns it into metric families. One snapshot per scrape also means every family of a scrape is
consistent with the others.

Hit rate is deliberately not exported as a gauge: a ratio of cumulative counters hides recent
changes. Use PromQL over the counters, e.g.
``sum(rate(cachewarden_cache_hits_total[5m])) / (sum(rate(cachewarden_cache_hits_total[5m]))
+ rate(cachewarden_cache_misses_total[5m]))``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from cache_runtime.stats import (
    ERROR_KINDS,
    EngineStats,
    HistogramSnapshot,
    Snapshot,
    build_snapshot,
    normalize_l2_stats,
)

log = logging.getLogger(__name__)

BREAKER_STATES: tuple[str, ...] = ("closed", "open", "half_open")

SnapshotSource = Callable[[], Snapshot | Mapping[str, Any]]


def _histogram(name: str, documentation: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=labels, unit="seconds")


def _add_histogram(family: HistogramMetricFamily, labels: list[str], data: HistogramSnapshot) -> None:
    buckets: list[tuple[str, float]] = [
        (repr(float(bound)), float(count)) for bound, count in data["buckets"]
    ]
    buckets.append(("+Inf", float(data["count"])))
    family.add_metric(labels, buckets, sum_value=float(data["sum"]))


class EngineCollector(Collector):
    """A custom collector that renders one engine snapshot into Prometheus metric families.

    ``snapshot_source`` is called once per scrape and must return a :class:`Snapshot`
    (for example the facade's ``cache.stats`` or a closure over :func:`build_snapshot`).
    A failing source does not fail the scrape: the error is logged and
    ``cachewarden_cache_snapshot_errors_total`` goes up, so the other collectors of the
    registry (process, platform) still export.
    """

    def __init__(self, snapshot_source: SnapshotSource, prefix: str = "cachewarden") -> None:
        self._source = snapshot_source
        self._prefix = prefix
        self._snapshot_errors = 0

    def describe(self) -> Iterator[Metric]:
        """The families this collector exports (so registering does not call the source)."""
        template = build_snapshot(EngineStats(), l2=normalize_l2_stats({}), config={"hash": "", "preset": ""})
        yield from self._families(template)

    def collect(self) -> Iterator[Metric]:
        """Take one snapshot and yield every family built from it."""
        try:
            snapshot = self._source()
        except Exception:
            # A scrape must not take the endpoint down with it; the counter makes the failure visible.
            self._snapshot_errors += 1
            log.exception("engine snapshot failed during a Prometheus scrape")
            snapshot = None
        errors = CounterMetricFamily(
            f"{self._prefix}_cache_snapshot_errors",
            "Scrapes whose engine snapshot could not be taken.",
            value=self._snapshot_errors,
        )
        yield errors
        if snapshot is not None:
            yield from self._families(snapshot)

    def _families(self, snapshot: Snapshot | Mapping[str, Any]) -> Iterator[Metric]:
        p = f"{self._prefix}_cache"
        requests = snapshot["requests"]

        hits = CounterMetricFamily(f"{p}_hits", "Lookups answered from the cache, by tier.", labels=["tier"])
        hits.add_metric(["l1"], requests["hits_l1"])
        hits.add_metric(["l2"], requests["hits_l2"])
        yield hits
        yield CounterMetricFamily(f"{p}_misses", "Lookups that missed both tiers.", value=requests["misses"])
        yield CounterMetricFamily(f"{p}_sets", "Values written.", value=requests["sets"])
        yield CounterMetricFamily(f"{p}_deletes", "Keys deleted.", value=requests["deletes"])
        yield CounterMetricFamily(
            f"{p}_decode_failures",
            "Stored bytes that failed to decode (counted as misses, never executed).",
            value=requests["decode_failures"],
        )
        yield CounterMetricFamily(
            f"{p}_writes_rejected_isolated",
            "Writes refused while the pod was isolated.",
            value=requests["writes_rejected_isolated"],
        )
        yield GaugeMetricFamily(
            f"{p}_isolated", "1 while the pod is isolated (emergency).", value=int(bool(snapshot["isolated"]))
        )

        op_hits = CounterMetricFamily(f"{p}_operation_hits", "Hits per AI operation.", labels=["operation"])
        op_misses = CounterMetricFamily(
            f"{p}_operation_misses", "Misses per AI operation.", labels=["operation"]
        )
        for name, op in snapshot["operations"].items():
            op_hits.add_metric([name], op["hits"])
            op_misses.add_metric([name], op["misses"])
        yield op_hits
        yield op_misses

        latency = _histogram(f"{p}_operation_duration", "Engine operation latency.", ["op"])
        for name, data in snapshot["latency"].items():
            _add_histogram(latency, [name], data)
        yield latency

        l1 = snapshot["l1"]
        yield GaugeMetricFamily(f"{p}_l1_entries", "Entries in L1.", value=l1["entries"])
        yield GaugeMetricFamily(f"{p}_l1_bytes", "Memory held by L1 entries (decoded values, keys, entries).",
                                value=l1["bytes"], unit="bytes")
        yield GaugeMetricFamily(f"{p}_l1_max_entries", "L1 entry limit.", value=l1["max_entries"])
        yield GaugeMetricFamily(f"{p}_l1_max_bytes", "L1 byte budget.", value=l1["max_bytes"], unit="bytes")
        yield CounterMetricFamily(f"{p}_l1_inserts", "Entries written into L1.", value=l1["inserts"])
        yield CounterMetricFamily(
            f"{p}_l1_evictions", "L1 entries evicted to respect its budgets.", value=l1["evictions"]
        )
        yield CounterMetricFamily(
            f"{p}_l1_expirations", "L1 entries dropped because their TTL ran out.", value=l1["expirations"]
        )

        comp = snapshot["compression"]
        yield CounterMetricFamily(
            f"{p}_compression_attempts",
            "Values compressed (at or above the threshold).",
            value=comp["attempts"],
        )
        yield CounterMetricFamily(
            f"{p}_compression_skipped",
            "Compressions dropped because they did not pay.",
            value=comp["skipped"],
        )
        compressed_bytes = CounterMetricFamily(
            f"{p}_compression_bytes",
            "Bytes before (in) and after (out) kept compressions.",
            labels=["direction"],
            unit="bytes",
        )
        compressed_bytes.add_metric(["in"], comp["bytes_in"])
        compressed_bytes.add_metric(["out"], comp["bytes_out"])
        yield compressed_bytes
        yield CounterMetricFamily(
            f"{p}_compression", "Time spent compressing.", value=comp["seconds"], unit="seconds"
        )
        ratio = comp["ratio"]
        yield GaugeMetricFamily(
            f"{p}_compression_ratio",
            "Bytes in / bytes out of kept compressions since start (0 before any).",
            value=ratio if ratio is not None else 0.0,
        )
        yield CounterMetricFamily(
            f"{p}_stored_bytes", "Encoded bytes written.", value=comp["stored_bytes"], unit="bytes"
        )

        inval = snapshot["invalidation"]
        invalidations = CounterMetricFamily(f"{p}_invalidations", "Invalidations, by kind.", labels=["kind"])
        invalidations.add_metric(["pattern"], inval["pattern"])
        invalidations.add_metric(["namespace"], inval["namespace"])
        yield invalidations
        yield CounterMetricFamily(
            f"{p}_keys_invalidated", "Keys removed by pattern invalidations.", value=inval["keys_invalidated"]
        )
        coherence = CounterMetricFamily(
            f"{p}_coherence_messages", "Cross-pod invalidation messages.", labels=["direction"]
        )
        coherence.add_metric(["published"], inval["coherence_messages_published"])
        coherence.add_metric(["received"], inval["coherence_messages_received"])
        yield coherence
        yield CounterMetricFamily(
            f"{p}_coherence_resets",
            "Coherence subscription drops (L1 cleared or epoch-bumped).",
            value=inval["coherence_resets"],
        )
        lag = _histogram(f"{p}_coherence_lag", "Publish-to-apply lag of invalidation messages.", [])
        _add_histogram(lag, [], snapshot["coherence_lag"])
        yield lag

        stampede = snapshot["stampede"]
        yield CounterMetricFamily(
            f"{p}_computes", "Loader calls by get_or_compute.", value=stampede["computes"]
        )
        yield CounterMetricFamily(
            f"{p}_singleflight_merges",
            "Callers that waited for another caller's load instead of loading.",
            value=stampede["singleflight_merges"],
        )
        yield CounterMetricFamily(
            f"{p}_early_refreshes", "Background refreshes before expiry.", value=stampede["early_refreshes"]
        )
        yield CounterMetricFamily(
            f"{p}_lease_waits", "Waits on another pod's Redis lease.", value=stampede["lease_waits"]
        )

        config = snapshot["config"]
        info = InfoMetricFamily(
            f"{p}_config", "The config in force (hash and preset).", labels=["hash", "preset"]
        )
        info.add_metric([str(config.get("hash", "")), str(config.get("preset", ""))], {})
        yield info

        yield from self._redis_families(snapshot.get("l2"))

    def _redis_families(self, l2: Mapping[str, Any] | None) -> Iterator[Metric]:
        p = f"{self._prefix}_redis"
        yield GaugeMetricFamily(
            f"{p}_up",
            "1 while L2 is usable (configured and available).",
            value=int(bool(l2 and l2["enabled"] and l2["available"])),
        )
        breaker = GaugeMetricFamily(
            f"{p}_breaker_state", "Circuit breaker state (1 for the current state).", labels=["state"]
        )
        current = l2["breaker_state"] if l2 else None
        for state in BREAKER_STATES:
            breaker.add_metric([state], int(state == current))
        yield breaker
        errors = CounterMetricFamily(f"{p}_errors", "Redis failures, by kind.", labels=["kind"])
        by_kind = l2["errors"] if l2 else {}
        for kind in ERROR_KINDS:
            errors.add_metric([kind], by_kind.get(kind, 0))
        yield errors
        yield CounterMetricFamily(f"{p}_operations", "Redis calls made.", value=l2["ops"] if l2 else 0)
        yield CounterMetricFamily(
            f"{p}_round_trips", "Network round trips to Redis.", value=l2.get("round_trips", 0) if l2 else 0
        )
        yield CounterMetricFamily(
            f"{p}_round_trip",
            "Total time of the round trips to Redis.",
            value=l2.get("round_trip_seconds", 0.0) if l2 else 0.0,
            unit="seconds",
        )
        yield CounterMetricFamily(
            f"{p}_pool_waits",
            "Times a caller waited for a free pooled connection.",
            value=l2["pool_waits"] if l2 else 0,
        )
        rtt = l2.get("rtt_seconds") if l2 else None
        if rtt is not None:
            yield GaugeMetricFamily(f"{p}_rtt", "Recent typical Redis round trip.", value=rtt, unit="seconds")
        memory = (l2.get("memory") if l2 else None) or {}
        if "used_memory" in memory:
            yield GaugeMetricFamily(
                f"{p}_used_memory", "Redis used_memory.", value=memory["used_memory"], unit="bytes"
            )
        if "maxmemory" in memory:
            yield GaugeMetricFamily(
                f"{p}_maxmemory", "Redis maxmemory (0 = unlimited).", value=memory["maxmemory"], unit="bytes"
            )


def register_engine_collector(
    snapshot_source: SnapshotSource,
    registry: CollectorRegistry = REGISTRY,
    prefix: str = "cachewarden",
) -> EngineCollector:
    """Create an :class:`EngineCollector` over ``snapshot_source`` and register it.

    Returns the collector so the caller can ``registry.unregister(collector)`` when the engine
    is closed (a process that builds several engines must use one registry per engine or
    unregister the previous one: metric names are unique per registry).
    """
    collector = EngineCollector(snapshot_source, prefix=prefix)
    registry.register(collector)
    return collector
