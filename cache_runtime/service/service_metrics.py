"""Prometheus metrics of the service itself (requests, actions, config), read at scrape time.

Like the engine's collector, nothing here calls prometheus_client on the request path: the access
middleware bumps plain counters and a fixed-bucket histogram, and :class:`ServiceCollector` renders
them when Prometheus scrapes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from cache_runtime.stats import LatencyHistogram


class RequestStats:
    """Per-route request counts and one latency histogram per route template."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.latency: dict[str, LatencyHistogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request (route is the template, never the raw path)."""
        self.requests[(method, route, str(status))] += 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = LatencyHistogram()
        histogram.observe(seconds)


class ServiceCollector(Collector):
    """Renders request stats, the action journal and the config state as metric families."""

    def __init__(
        self, requests: RequestStats, state: Callable[[], dict[str, Any]], prefix: str = "cachewarden_runtime"
    ) -> None:
        self._requests = requests
        self._state = state
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        """One family per concern; the state callable is read once per scrape."""
        p = self._prefix
        requests = CounterMetricFamily(
            f"{p}_http_requests",
            "HTTP requests by route template and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in sorted(self._requests.requests.items()):
            requests.add_metric([method, route, status], count)
        yield requests
        latency = HistogramMetricFamily(
            f"{p}_http_request_duration_seconds", "HTTP request duration by route template.", labels=["route"]
        )
        for route, histogram in sorted(self._requests.latency.items()):
            cumulative = 0
            buckets = []
            for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
                cumulative += count
                buckets.append((repr(float(bound)), cumulative))
            buckets.append(("+Inf", histogram.count))
            latency.add_metric([route], buckets, sum_value=histogram.sum)
        yield latency
        state = self._state()
        actions = CounterMetricFamily(
            f"{p}_actions",
            "Admin actions by outcome (executed, replayed, failed, dry_run).",
            labels=["action", "outcome"],
        )
        for outcome, counts in state.get("actions", {}).items():
            for action, count in sorted(counts.items()):
                actions.add_metric([action, outcome], count)
        yield actions
        ready = GaugeMetricFamily(f"{p}_ready", "1 when the engine runs with a loaded config.")
        ready.add_metric([], 1.0 if state.get("ready") else 0.0)
        yield ready
        config = GaugeMetricFamily(
            f"{p}_config_info",
            "The config in force (value is always 1).",
            labels=["hash", "origin", "preset"],
        )
        if state.get("config_hash"):
            config.add_metric(
                [state["config_hash"], state.get("config_origin") or "", state.get("preset") or ""], 1.0
            )
        yield config
        rejected = GaugeMetricFamily(
            f"{p}_config_file_rejected", "1 while the mounted config file is refused (last good config runs)."
        )
        rejected.add_metric([], 1.0 if state.get("config_rejected") else 0.0)
        yield rejected
        changes = CounterMetricFamily(f"{p}_config_changes", "Configs applied to the engine since start.")
        changes.add_metric([], state.get("config_changes", 0))
        yield changes
