"""The operator's own Prometheus metrics (not the cache's: those are on each runtime pod's /metrics).

One registry per operator process (not the global default), so tests can build several and the
runtime's collectors never mix in. ``PolicyConditions`` keeps the last conditions seen per policy in
memory and turns them into ``cachewarden_operator_policies{condition,status}`` at scrape time, so a
policy that is deleted stops counting without bookkeeping in every handler.
"""

from __future__ import annotations

import threading
from collections import Counter as _Tally
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PolicyConditions(Collector):
    """Last known conditions of every policy, exported as a gauge per (condition type, status), and
    each policy's finished reconcile passes (status is written only when it changes, so its
    timestamps do not count passes; this does)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_policy: dict[str, dict[str, str]] = {}
        self._passes: dict[str, int] = {}

    def record(self, policy: str, conditions: Iterable[Mapping[str, Any]]) -> None:
        """Remember ``policy``'s conditions (``namespace/name``) after a finished pass; a pass whose
        patch carried no conditions keeps the ones known."""
        seen = {str(c.get("type")): str(c.get("status")) for c in conditions if c.get("type")}
        with self._lock:
            if seen or policy not in self._by_policy:
                self._by_policy[policy] = seen
            self._passes[policy] = self._passes.get(policy, 0) + 1

    def forget(self, policy: str) -> None:
        """Drop a deleted policy."""
        with self._lock:
            self._by_policy.pop(policy, None)
            self._passes.pop(policy, None)

    def count(self) -> int:
        """How many policies are tracked."""
        with self._lock:
            return len(self._by_policy)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Called by the registry at scrape time."""
        with self._lock:
            tally = _Tally(
                (ctype, status) for conds in self._by_policy.values() for ctype, status in conds.items()
            )
            total = len(self._by_policy)
            pass_counts = dict(self._passes)
        family = GaugeMetricFamily(
            "cachewarden_operator_policies",
            "CachePolicies by condition type and status.",
            labels=["condition", "status"],
        )
        for (ctype, status), count in sorted(tally.items()):
            family.add_metric([ctype, status], count)
        yield family
        yield GaugeMetricFamily(
            "cachewarden_operator_policies_total", "CachePolicies known to this operator.", value=total
        )
        passes = CounterMetricFamily(
            "cachewarden_operator_policy_passes",
            "Finished reconcile passes per policy (namespace/name) since the operator started.",
            labels=["policy"],
        )
        for policy, count in sorted(pass_counts.items()):
            passes.add_metric([policy], count)
        yield passes


class OperatorMetrics:
    """Every metric the operator records."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "cachewarden_operator_reconciles",
            "Reconciles of CachePolicies by trigger and outcome.",
            ["trigger", "outcome"],
            registry=self.registry,
        )
        self.errors = Counter(
            "cachewarden_operator_errors",
            "Errors by kind (kubernetes, pod, spec).",
            ["kind"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "cachewarden_operator_reconcile_seconds",
            "Duration of one reconcile.",
            ["trigger"],
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.probes = Counter(
            "cachewarden_operator_pod_probes",
            "Health probes of runtime pods by result.",
            ["result"],
            registry=self.registry,
        )
        self.pushes = Counter(
            "cachewarden_operator_config_pushes",
            "config/apply pushes to pods by result.",
            ["result"],
            registry=self.registry,
        )
        self.auto_incidents = Counter(
            "cachewarden_operator_auto_incidents",
            "Automatic incident events by kind (opened, found, reopened, joined, resolved, blocked) "
            "and symptom.",
            ["event", "symptom"],
            registry=self.registry,
        )
        self.remediations = Counter(
            "cachewarden_operator_remediations",
            "Automatic actions verified by their effect on the symptom's figure, by verdict (Remediated, "
            "Ineffective: rolled back and escalated) and symptom.",
            ["verdict", "symptom"],
            registry=self.registry,
        )
        self.incidents_deleted = Counter(
            "cachewarden_operator_incidents_deleted",
            "Finished CacheIncidents deleted by garbage collection (TTL or history limit).",
            registry=self.registry,
        )
        self.status_writes = Counter(
            "cachewarden_operator_status_writes",
            "CachePolicy status patches sent (a pass that changes nothing but its own clock sends none).",
            registry=self.registry,
        )
        self.policies = PolicyConditions()
        self.registry.register(self.policies)

    def serve(self, port: int, address: str = "127.0.0.1") -> None:
        """Serve /metrics on ``address:port`` from a daemon thread."""
        start_http_server(port, addr=address, registry=self.registry)
