"""Health evaluation: the runbook's thresholds over an engine snapshot, plus the diagnosis.

Pure functions over the plain :class:`cache_runtime.stats.Snapshot` dict: no I/O, no clock
except an optional ``now``. ``evaluate(snapshot, thresholds)`` returns a :class:`HealthReport`
with a status (healthy / degraded / unhealthy), the symptoms found (each with the measured
value and the threshold it crossed) and the causes the decision tree of
:mod:`cache_runtime.diagnosis` finds for them, each with evidence and recommended actions.

Evaluate a *window* (``stats.diff_snapshots(now, earlier)``) rather than the cumulative
snapshot, or a long healthy history hides a fresh problem. Hysteresis over consecutive probes is
the operator's job, not this module's: one evaluation judges one window.

Memory is the cache's own memory: what L1's entries take in memory, decoded values included
(``snapshot["l1"]["bytes"]``, see :mod:`cache_runtime.sizing`);
MB in the thresholds means MiB (1,048,576 bytes), as the runbook computed it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cache_runtime.diagnosis import Cause, diagnose
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
    redis_state,
    worst_p95,
)

__all__ = [
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
    "evaluate",
    "redis_state",
]


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


def evaluate(
    snapshot: Snapshot | Mapping[str, Any],
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    *,
    now: float | None = None,
) -> HealthReport:
    """Judge one snapshot (preferably a window) against the thresholds and diagnose the symptoms."""
    checked = check_snapshot(snapshot)
    limits = thresholds if isinstance(thresholds, Thresholds) else Thresholds.from_mapping(thresholds)
    symptoms = detect_symptoms(checked, limits)
    causes = diagnose(checked, symptoms, limits)
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
