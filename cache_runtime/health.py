"""Health evaluation: the runbook's thresholds over an engine snapshot, plus the diagnosis.

Pure functions over the plain :class:`cache_runtime.stats.Snapshot` dict: no I/O, no clock
except an optional ``now``. ``evaluate(snapshot, thresholds)`` returns a :class:`HealthReport`
with a status (healthy / degraded / unhealthy), the symptoms found (each with the measured
value and the threshold it crossed) and the causes the decision tree of
:mod:`cache_runtime.diagnosis` finds for them, each with evidence and recommended actions.

Evaluate a *window* (``stats.diff_snapshots(now, earlier)``) rather than the cumulative
snapshot, or a long healthy history hides a fresh problem. Hysteresis over consecutive probes is
the operator's job, not this module's: one evaluation judges one window.

Which window: :func:`detection_window` picks, from windows of :data:`DETECTION_WINDOWS_S` (shortest
first), the shortest that holds ``min_requests`` lookups for the workload symptoms (hit rate, L1,
latency, memory), so a busy pod is judged on its last 10-15 s and a workload fault crosses its
threshold seconds after its onset; a quiet pod on up to a minute. The Redis figures (errors, pool
waits, RTT) are always the longest window's, and whether Redis is down is judged on the engine's
state (breaker, its own checks, the subscription: :func:`cache_runtime.symptoms.redis_outage`), not
on errors counted in a window, which an open breaker leaves empty.

Memory is the cache's own memory: what L1's entries take in memory, decoded values included
(``snapshot["l1"]["bytes"]``, see :mod:`cache_runtime.sizing`);
MB in the thresholds means MiB (1,048,576 bytes), as the runbook computed it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cache_runtime.diagnosis import Cause, diagnose, merge_causes
from cache_runtime.stats import Snapshot
from cache_runtime.symptoms import (
    JUDGED_LATENCY_OPERATIONS,
    Severity,
    SnapshotError,
    Symptom,
    SymptomName,
    ThresholdError,
    Thresholds,
    check_snapshot,
    detect_symptoms,
    redis_outage,
    redis_state,
    worst_p95,
)

__all__ = [
    "DETECTION_WINDOWS_S",
    "JUDGED_LATENCY_OPERATIONS",
    "HealthReport",
    "Severity",
    "SnapshotError",
    "Status",
    "Symptom",
    "SymptomName",
    "ThresholdError",
    "Thresholds",
    "check_snapshot",
    "detect_symptoms",
    "detection_window",
    "evaluate",
    "redis_outage",
    "redis_state",
]

# The windows health judges, shortest first (seconds; see detection_window). The shortest makes a
# workload fault show within seconds: at the CRD's default probes (every 15 s, 3 in a row, confirming
# probes every 5 s) it is detected within 30 s of its onset. The longest is the Redis figures' window
# and the engine's snapshot history must cover it (cache_runtime.cache._HEALTH_WINDOW_S).
DETECTION_WINDOWS_S: tuple[float, ...] = (10.0, 30.0, 60.0)


class Status(StrEnum):
    """Overall health. ``unhealthy`` if any critical symptom, ``degraded`` if any warning."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class HealthReport:
    """The result of one evaluation: status, headline figures, symptoms, diagnosed causes."""

    status: Status
    evaluated_at: float
    window_seconds: float
    summary: Mapping[str, Any]
    symptoms: tuple[Symptom, ...]
    causes: tuple[Cause, ...]
    thresholds: Thresholds

    def causes_for(self, symptom: SymptomName | str) -> tuple[Cause, ...]:
        """The causes that explain ``symptom``, most likely first."""
        name = str(symptom)
        return tuple(cause for cause in self.causes if name in cause.symptoms)

    def symptom(self, name: SymptomName | str) -> Symptom | None:
        """The symptom called ``name`` if present."""
        return next((s for s in self.symptoms if s.name == str(name)), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form returned by ``/internal/cache/health`` and copied into CacheIncident status."""
        return {
            "status": self.status.value,
            "evaluated_at": self.evaluated_at,
            "window_seconds": self.window_seconds,
            "summary": dict(self.summary),
            "symptoms": [symptom.to_dict() for symptom in self.symptoms],
            "causes": [cause.to_dict() for cause in self.causes],
            "thresholds": self.thresholds.to_dict(),
        }


# ---------------------------------------------------------------------------------------------


def detection_window(windows: Sequence[Snapshot], min_requests: int) -> Snapshot:
    """The snapshot health judges, from ``windows`` (shortest first, each a window of the same
    engine ending now): the shortest holding ``min_requests`` lookups (else the longest), with the
    longest window's ``l2`` section and its length as ``redis_window_seconds``.

    Gauges (breaker state, L1 entries, config) are the same in every window; only the counters
    differ. Redis errors are counted over the longest window so that a flapping Redis (breaker
    closing and opening again) is judged on enough calls; an outage shows in the engine's state."""
    if not windows:
        raise ValueError("detection_window needs at least one window; got none")
    if not isinstance(min_requests, int) or isinstance(min_requests, bool) or min_requests < 0:
        raise ThresholdError("min_requests", min_requests, "an integer >= 0")
    longest = windows[-1]
    chosen = next((w for w in windows if w["requests"]["lookups"] >= min_requests), longest)
    judged: dict[str, Any] = dict(chosen)
    judged["l2"] = longest.get("l2")
    judged["redis_window_seconds"] = float(longest.get("window_seconds", 0.0))
    return judged  # type: ignore[return-value]


def evaluate(
    snapshot: Snapshot | Mapping[str, Any],
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    *,
    now: float | None = None,
    evidence: Snapshot | Mapping[str, Any] | None = None,
) -> HealthReport:
    """Judge one snapshot (preferably a window) against the thresholds and diagnose the symptoms.

    ``evidence`` is a second window the causes are also diagnosed on (the facade passes the longest);
    both diagnoses are merged (:func:`cache_runtime.diagnosis.merge_causes`, highest score first). A
    cause's evidence may have been recorded when the fault began (values written uncompressed), which
    a short window no longer holds when the symptom is confirmed; other evidence (key variants of a
    fresh fault) is diluted in a long window by the healthy traffic before it. Each window finds its
    own, and the stronger evidence ranks first."""
    checked = check_snapshot(snapshot)
    limits = thresholds if isinstance(thresholds, Thresholds) else Thresholds.from_mapping(thresholds)
    symptoms = detect_symptoms(checked, limits)
    causes = diagnose(checked, symptoms, limits)
    if evidence is not None and evidence is not snapshot:
        causes = merge_causes(causes, diagnose(check_snapshot(evidence), symptoms, limits))
    if any(s.severity is Severity.CRITICAL for s in symptoms):
        status = Status.UNHEALTHY
    elif symptoms:
        status = Status.DEGRADED
    else:
        status = Status.HEALTHY
    _, p95, _ = worst_p95(checked, limits)
    requests = checked["requests"]
    summary = {
        "lookups": requests["lookups"],
        "hit_rate": requests.get("hit_rate"),
        "l1_hit_rate": requests.get("l1_hit_rate"),
        "l2_hit_rate": requests.get("l2_hit_rate"),
        "memory_bytes": checked["l1"]["bytes"],
        "l1_entries": checked["l1"]["entries"],
        "p95_latency_ms": p95 * 1000 if p95 is not None else None,
        "redis": redis_state(checked),
        "config_hash": checked["config"].get("hash"),
        "isolated": bool(checked.get("isolated", False)),
        "redis_window_seconds": checked.get("redis_window_seconds", checked.get("window_seconds")),
    }
    return HealthReport(
        status=status,
        evaluated_at=time.time() if now is None else now,
        window_seconds=float(checked.get("window_seconds", 0.0)),
        summary=summary,
        symptoms=tuple(symptoms),
        causes=tuple(causes),
        thresholds=limits,
    )
