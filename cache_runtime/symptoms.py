"""Symptoms: the runbook's thresholds over an engine snapshot.

Pure functions over the plain :class:`cache_runtime.stats.Snapshot` dict, no I/O.
:func:`detect_symptoms` finds what crosses a threshold (each symptom with the measured value and the
threshold it crossed); :mod:`cache_runtime.diagnosis` explains the symptoms, and
:mod:`cache_runtime.health` puts both into a report. Dependencies point one way:
symptoms <- diagnosis <- health.

Memory is the cache's own memory: what L1's entries take in memory, decoded values included
(``snapshot["l1"]["bytes"]``, see :mod:`cache_runtime.sizing`);
MB in the thresholds means MiB (1,048,576 bytes), as the runbook computed it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cache_runtime.stats import Snapshot

MIB = 1024 * 1024

# The client-facing operations whose p95 the runbook judges. `compute` is the caller's loader
# (an LLM call) and `invalidate` is a SCAN by design: neither says the cache is slow.
JUDGED_LATENCY_OPERATIONS: tuple[str, ...] = ("get", "set", "get_many", "set_many", "delete")


class Severity(StrEnum):
    """How far a measurement is past its threshold."""

    WARNING = "warning"
    CRITICAL = "critical"


class SymptomName(StrEnum):
    """Stable symptom names (CamelCase: they become condition reasons and incident names)."""

    LOW_HIT_RATE = "LowHitRate"
    HIGH_MEMORY = "HighMemory"
    SLOW_OPERATIONS = "SlowOperations"
    REDIS_UNAVAILABLE = "RedisUnavailable"
    REDIS_AUTH_FAILURE = "RedisAuthFailure"
    REDIS_OUT_OF_MEMORY = "RedisOutOfMemory"
    L1_THRASHING = "L1Thrashing"


class ThresholdError(ValueError):
    """A threshold value that cannot be used; names the field, the value and what is accepted."""

    def __init__(self, field_name: str, value: Any, accepted: str) -> None:
        super().__init__(f"health threshold {field_name}={value!r} is invalid: accepted {accepted}")
        self.field = field_name
        self.value = value
        self.accepted = accepted


class SnapshotError(ValueError):
    """A snapshot that does not have the shape of :class:`cache_runtime.stats.Snapshot`."""

    def __init__(self, field_name: str, value: Any, accepted: str) -> None:
        super().__init__(f"snapshot field {field_name}={value!r} is invalid: accepted {accepted}")
        self.field = field_name
        self.value = value
        self.accepted = accepted


_SHARES = (
    "hit_rate_warning",
    "hit_rate_critical",
    "l1_thrash_eviction_ratio",
    "l1_full_ratio",
    "key_variant_share",
    "ttl_expired_share",
    "low_reuse_cold_share",
    "invalidated_keys_per_set",
    "large_value_share",
    "redis_rtt_share",
    "pool_wait_share",
    "compression_cost_share",
    "redis_error_share",
)


@dataclass(frozen=True)
class Thresholds:
    """The runbook's thresholds (first block, same names as the config's ``health`` group) and
    the decision tree's evidence thresholds (second block). All configurable; defaults are the
    runbook's. Shares are fractions in [0, 1]."""

    hit_rate_warning: float = 0.60
    hit_rate_critical: float = 0.40
    memory_warning_mb: float = 50.0
    memory_critical_mb: float = 100.0
    latency_warning_ms: float = 20.0
    latency_critical_ms: float = 50.0
    min_requests: int = 100  # lookups in the window before a hit rate is judged

    min_latency_samples: int = 50  # observations of an operation before its p95 is judged
    l1_thrash_eviction_ratio: float = 0.5  # L1 evictions per L1 insert
    l1_full_ratio: float = 0.9  # L1 entries (or bytes) / limit that counts as "at budget"
    key_min_samples: int = 30  # sampled key_for calls before key inconsistency is judged
    key_variant_share: float = 0.10  # sampled requests that were a new variant of a known text
    ttl_min_sampled_misses: int = 20
    ttl_expired_share: float = 0.25  # sampled misses that were re-requests after the TTL ran out
    low_reuse_cold_share: float = 0.8  # sampled misses that were first requests
    invalidation_min_events: int = 2
    invalidations_per_100_sets: float = 1.0
    invalidated_keys_per_set: float = 0.3
    large_value_share: float = 0.2  # stored values >= 16 KiB written without trying compression
    redis_rtt_share: float = 0.5  # Redis RTT (or l2 p95) >= this share of the latency warning
    pool_wait_share: float = 0.02  # pool waits per Redis operation
    pool_min_waits: int = 5
    compression_cost_share: float = 0.25  # compress time per write >= this share of the latency warning
    redis_error_share: float = 0.5  # connection+timeout errors per Redis operation (breaker closed)
    redis_min_errors: int = 5

    def __post_init__(self) -> None:
        for name in _SHARES:
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ThresholdError(name, value, "a number from 0 to 1")
        for name in (
            "memory_warning_mb",
            "memory_critical_mb",
            "latency_warning_ms",
            "latency_critical_ms",
            "invalidations_per_100_sets",
        ):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not value > 0
                or math.isinf(value)
            ):
                raise ThresholdError(name, value, "a finite number above 0")
        for name in (
            "min_requests",
            "min_latency_samples",
            "key_min_samples",
            "ttl_min_sampled_misses",
            "invalidation_min_events",
            "pool_min_waits",
            "redis_min_errors",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ThresholdError(name, value, "an integer >= 0")
        if self.hit_rate_critical > self.hit_rate_warning:
            raise ThresholdError(
                "hit_rate_critical",
                self.hit_rate_critical,
                f"at most hit_rate_warning ({self.hit_rate_warning})",
            )
        if self.memory_warning_mb > self.memory_critical_mb:
            raise ThresholdError(
                "memory_warning_mb",
                self.memory_warning_mb,
                f"at most memory_critical_mb ({self.memory_critical_mb})",
            )
        if self.latency_warning_ms > self.latency_critical_ms:
            raise ThresholdError(
                "latency_warning_ms",
                self.latency_warning_ms,
                f"at most latency_critical_ms ({self.latency_critical_ms})",
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Thresholds:
        """Build from a mapping (e.g. ``config.health.model_dump()`` or a CachePolicy's
        ``spec.health.thresholds``); missing keys keep their defaults, unknown keys are an error."""
        if values is None:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ThresholdError(str(key), values[key], f"one of {', '.join(sorted(known))}")
        return cls(**dict(values))

    @property
    def memory_warning_bytes(self) -> int:
        """The memory warning threshold in bytes (MB = MiB)."""
        return int(self.memory_warning_mb * MIB)

    @property
    def memory_critical_bytes(self) -> int:
        """The memory critical threshold in bytes (MB = MiB)."""
        return int(self.memory_critical_mb * MIB)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of every threshold."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Symptom:
    """A threshold crossed: what was measured, against which threshold, how badly."""

    name: SymptomName
    severity: Severity
    value: float | None
    threshold: float | None
    unit: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the operator copies it into CacheIncident status.detection)."""
        return {
            "name": self.name.value,
            "severity": self.severity.value,
            "value": self.value,
            "threshold": self.threshold,
            "unit": self.unit,
            "message": self.message,
            "details": dict(self.details),
        }


_REQUIRED_SECTIONS = (
    "config",
    "requests",
    "l1",
    "compression",
    "invalidation",
    "latency",
    "key_analysis",
    "ttl",
)


def check_snapshot(snapshot: Any) -> Snapshot:
    """Check the parts of the snapshot the evaluation reads; raise :class:`SnapshotError` naming the field."""
    if not isinstance(snapshot, Mapping):
        raise SnapshotError("snapshot", type(snapshot).__name__, "a mapping shaped like stats.Snapshot")
    for section in _REQUIRED_SECTIONS:
        if not isinstance(snapshot.get(section), Mapping):
            raise SnapshotError(section, snapshot.get(section), "a mapping (see stats.Snapshot)")
    for name in ("lookups", "hits_l1", "hits_l2", "misses", "sets"):
        value = snapshot["requests"].get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SnapshotError(f"requests.{name}", value, "an integer >= 0")
    for name in ("bytes", "entries", "max_entries", "max_bytes", "inserts", "evictions"):
        value = snapshot["l1"].get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SnapshotError(f"l1.{name}", value, "an integer >= 0")
    l2 = snapshot.get("l2")
    if l2 is not None:
        if not isinstance(l2, Mapping):
            raise SnapshotError("l2", l2, "null or a mapping (see stats.L2Snapshot)")
        if not isinstance(l2.get("errors"), Mapping):
            raise SnapshotError("l2.errors", l2.get("errors"), "a mapping of error kind to count")
    return snapshot  # type: ignore[return-value]


# The engine checks Redis on its own every maintenance interval (10 s): this many failed checks in a
# row say Redis is unavailable even while the breaker reads closed (one failed check is a blip).
REDIS_FAILED_CHECKS = 2


def redis_outage(snapshot: Snapshot) -> dict[str, Any] | None:
    """The engine-state evidence that Redis is down, or None: the breaker open or half-open, the
    engine's own periodic checks failing (:data:`REDIS_FAILED_CHECKS` in a row) or the coherence
    subscription down. Gauges only, never errors counted in a window: with the breaker open the
    engine makes almost no Redis call, so a short window of an outage holds no error at all."""
    l2 = snapshot.get("l2")
    if not l2 or not l2.get("enabled", True):
        return None
    breaker = l2.get("breaker_state", "closed")
    failed_checks = int(l2.get("failed_checks") or 0)
    subscription = l2.get("subscription_connected")
    reasons = []
    if breaker != "closed":
        reasons.append(f"breaker {breaker}")
    elif not l2.get("available", True):
        reasons.append("no client")
    if failed_checks >= REDIS_FAILED_CHECKS:
        reasons.append(f"{failed_checks} checks failed in a row")
    if subscription is False:
        reasons.append("coherence subscription down")
    if not reasons:
        return None
    return {
        "breaker_state": breaker,
        "failed_checks": failed_checks,
        "seconds_since_ok": l2.get("seconds_since_ok"),
        "subscription_connected": subscription,
        "reasons": reasons,
    }


def redis_state(snapshot: Snapshot) -> str:
    """``disabled`` | ``connected`` | ``recovering`` (breaker half-open yet ``available``, nothing else
    wrong; RedisL2 itself reports half-open as not available) | ``unavailable`` (breaker open, or the
    engine's checks or subscription down: :func:`redis_outage`)."""
    l2 = snapshot.get("l2")
    if not l2 or not l2.get("enabled", True):
        return "disabled"
    outage = redis_outage(snapshot)
    if outage is None:
        return "connected"
    if outage["reasons"] == ["breaker half_open"] and l2.get("available", True):
        return "recovering"
    return "unavailable"


def worst_p95(
    snapshot: Snapshot, thresholds: Thresholds
) -> tuple[str | None, float | None, dict[str, float]]:
    """The judged operation with the worst p95 latency, that p95 (seconds), and every judged p95."""
    per_operation: dict[str, float] = {}
    for name in JUDGED_LATENCY_OPERATIONS:
        histogram = snapshot["latency"].get(name)
        if not histogram or histogram.get("count", 0) < max(1, thresholds.min_latency_samples):
            continue
        p95 = histogram.get("p95")
        if p95 is not None:
            per_operation[name] = float(p95)
    if not per_operation:
        return None, None, per_operation
    worst = max(per_operation, key=per_operation.__getitem__)
    return worst, per_operation[worst], per_operation


def detect_symptoms(snapshot: Snapshot, thresholds: Thresholds) -> list[Symptom]:
    """Compare the snapshot with the thresholds; one :class:`Symptom` per threshold crossed."""
    symptoms: list[Symptom] = []
    requests = snapshot["requests"]
    config = snapshot["config"]
    lookups = requests["lookups"]
    hit_rate = requests.get("hit_rate")

    # A disabled cache misses by design: judging its hit rate would raise a false alarm.
    if config.get("enabled", True) and lookups >= thresholds.min_requests and hit_rate is not None:
        if hit_rate < thresholds.hit_rate_critical:
            severity, threshold = Severity.CRITICAL, thresholds.hit_rate_critical
        elif hit_rate < thresholds.hit_rate_warning:
            severity, threshold = Severity.WARNING, thresholds.hit_rate_warning
        else:
            severity = None
        if severity is not None:
            symptoms.append(
                Symptom(
                    SymptomName.LOW_HIT_RATE,
                    severity,
                    hit_rate,
                    threshold,
                    "ratio",
                    f"hit rate {hit_rate:.1%} over {lookups} lookups is below {threshold:.0%}",
                    {
                        "lookups": lookups,
                        "l1_hit_rate": requests.get("l1_hit_rate"),
                        "l2_hit_rate": requests.get("l2_hit_rate"),
                    },
                )
            )

    memory = snapshot["l1"]["bytes"]
    if memory >= thresholds.memory_warning_bytes:
        critical = memory >= thresholds.memory_critical_bytes
        limit_mb = thresholds.memory_critical_mb if critical else thresholds.memory_warning_mb
        symptoms.append(
            Symptom(
                SymptomName.HIGH_MEMORY,
                Severity.CRITICAL if critical else Severity.WARNING,
                memory / MIB,
                limit_mb,
                "MiB",
                f"cache memory {memory / MIB:.1f} MiB is above {limit_mb:g} MiB",
                {
                    "bytes": memory,
                    "entries": snapshot["l1"]["entries"],
                    "max_bytes": snapshot["l1"]["max_bytes"],
                },
            )
        )

    operation, p95, per_operation = worst_p95(snapshot, thresholds)
    if p95 is not None and p95 * 1000 > thresholds.latency_warning_ms:
        critical = p95 * 1000 > thresholds.latency_critical_ms
        limit_ms = thresholds.latency_critical_ms if critical else thresholds.latency_warning_ms
        symptoms.append(
            Symptom(
                SymptomName.SLOW_OPERATIONS,
                Severity.CRITICAL if critical else Severity.WARNING,
                p95 * 1000,
                limit_ms,
                "ms",
                f"p95 latency of {operation} is {p95 * 1000:.1f} ms, above {limit_ms:g} ms",
                {"operation": operation, "p95_ms": {op: v * 1000 for op, v in per_operation.items()}},
            )
        )

    l2 = snapshot.get("l2")
    state = redis_state(snapshot)
    outage = redis_outage(snapshot)
    if l2 and outage is not None:
        since_ok = outage["seconds_since_ok"]
        last_ok = f"; last successful check {since_ok:.0f} s ago" if since_ok is not None else ""
        symptoms.append(
            Symptom(
                SymptomName.REDIS_UNAVAILABLE,
                Severity.CRITICAL if state == "unavailable" else Severity.WARNING,
                None,
                None,
                "state",
                f"Redis is {state} ({', '.join(outage['reasons'])}{last_ok}); the cache serves from L1 only",
                {**outage, "errors": dict(l2["errors"])},
            )
        )
    elif l2 and state == "connected":
        # Breaker closed but most calls failing: flapping between timeouts and recoveries.
        failures = l2["errors"].get("connection", 0) + l2["errors"].get("timeout", 0)
        ops = l2.get("ops", 0)
        if failures >= thresholds.redis_min_errors and failures >= thresholds.redis_error_share * max(ops, 1):
            symptoms.append(
                Symptom(
                    SymptomName.REDIS_UNAVAILABLE,
                    Severity.WARNING,
                    failures / max(ops, 1),
                    thresholds.redis_error_share,
                    "ratio",
                    f"{failures} connection/timeout errors over {ops} Redis operations",
                    {"breaker_state": l2.get("breaker_state"), "errors": dict(l2["errors"])},
                )
            )
    credential_errors = (l2["errors"].get("auth", 0) + l2["errors"].get("permission", 0)) if l2 else 0
    if l2 and credential_errors > 0:
        symptoms.append(
            Symptom(
                SymptomName.REDIS_AUTH_FAILURE,
                Severity.CRITICAL,
                credential_errors,
                0,
                "errors",
                f"Redis rejected the credentials or the ACL user's rights {credential_errors} times",
                {
                    "auth": l2["errors"].get("auth", 0),
                    "permission": l2["errors"].get("permission", 0),
                    "last_error": l2.get("last_error"),
                },
            )
        )
    if l2 and l2["errors"].get("oom", 0) > 0:
        symptoms.append(
            Symptom(
                SymptomName.REDIS_OUT_OF_MEMORY,
                Severity.CRITICAL,
                l2["errors"]["oom"],
                0,
                "errors",
                f"Redis refused writes {l2['errors']['oom']} times: out of memory",
                {"memory": dict(l2.get("memory") or {})},
            )
        )

    l1 = snapshot["l1"]
    l1_hit_rate = requests.get("l1_hit_rate")
    inserts = l1["inserts"]
    if (
        lookups >= thresholds.min_requests
        and inserts > 0
        and l1_hit_rate is not None
        and l1_hit_rate < thresholds.hit_rate_warning
        and l1["evictions"] >= thresholds.l1_thrash_eviction_ratio * inserts
    ):
        ratio = l1["evictions"] / inserts
        symptoms.append(
            Symptom(
                SymptomName.L1_THRASHING,
                Severity.WARNING,
                ratio,
                thresholds.l1_thrash_eviction_ratio,
                "evictions/insert",
                f"L1 evicted {l1['evictions']} entries for {inserts} inserts; L1 hit rate {l1_hit_rate:.1%}",
                {"evictions": l1["evictions"], "inserts": inserts, "l1_hit_rate": l1_hit_rate},
            )
        )
    return symptoms
