"""The life of an automatic incident after it was opened, as pure status computations.

An automatic incident stands for one symptom episode. Its ``phase`` first follows its action (the
executor: Pending, Running, Succeeded, Failed, Recommended, Skipped); when the symptom clears the
policy's reconciler **resolves** it: phase ``Resolved``, ``resolvedAt``, ``resolvedFromPhase`` (the
phase it had), a ``Resolved=True`` condition (reason ``SymptomCleared``). When the same symptom comes
back inside the incident's naming window, the deterministic name finds the resolved incident; it is
**reopened** as a record (phase back to ``resolvedFromPhase``, ``resolvedAt`` removed, ``Resolved=False``
reason ``SymptomRecurred``, ``detection.occurrences`` + 1): its action is not run a second time,
which damps a flapping symptom beyond what hysteresis does.

A ``Running`` incident is never resolved (its executor owns the status until the action ends); the
next probe pass resolves it. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cache_operator.api.cacheincident import TERMINAL_PHASES
from cache_operator.conditions import RESOLVED, RUNNING, SUCCEEDED, incident_kstatus_conditions, set_condition
from cache_operator.incidents.naming import LABEL_SOURCE, LABEL_SYMPTOM, SOURCE_AUTO

SYMPTOM_CLEARED = "SymptomCleared"
SYMPTOM_RECURRED = "SymptomRecurred"
_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Recommended", "Skipped")


def _status(incident: Mapping[str, Any]) -> Mapping[str, Any]:
    return incident.get("status") or {}


def is_automatic(incident: Mapping[str, Any]) -> bool:
    """Opened by the operator: the ``cachewarden.io/incident-source: auto`` label (set at creation,
    so it is there before any status), or ``status.detection.source`` Auto."""
    labels = (incident.get("metadata") or {}).get("labels") or {}
    return (
        labels.get(LABEL_SOURCE) == SOURCE_AUTO
        or (_status(incident).get("detection") or {}).get("source") == "Auto"
    )


def symptom_of(incident: Mapping[str, Any]) -> str | None:
    """The symptom an automatic incident stands for (label, else status.detection.symptom)."""
    labels = (incident.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_SYMPTOM) or (_status(incident).get("detection") or {}).get("symptom")


def is_resolved(incident: Mapping[str, Any]) -> bool:
    """The symptom of this automatic incident cleared (``resolvedAt`` set or phase Resolved)."""
    status = _status(incident)
    return bool(status.get("resolvedAt")) or status.get("phase") == "Resolved"


def tracks_symptom(incident: Mapping[str, Any]) -> bool:
    """An automatic incident whose symptom has not cleared yet: it is open for the storm limit and
    never garbage-collected, whatever its action's phase."""
    return is_automatic(incident) and not is_resolved(incident)


def resolution_status(
    status: Mapping[str, Any], now: str, message: str, generation: int | None
) -> dict[str, Any] | None:
    """The status patch that resolves an automatic incident, or None while it is Running (the
    executor writes its status then; the next pass resolves it) or already resolved."""
    phase = str(status.get("phase") or "Pending")
    if phase == "Running" or status.get("resolvedAt"):
        return None
    conditions = list(status.get("conditions") or [])
    conditions = set_condition(conditions, RESOLVED, "True", SYMPTOM_CLEARED, message, now, generation)
    conditions = set_condition(conditions, RUNNING, "False", SYMPTOM_CLEARED, "", now, generation)
    succeeded = next((c for c in conditions if c.get("type") == SUCCEEDED), None)
    if succeeded is None or succeeded.get("status") == "Unknown":
        # The action never ran to an end (waiting, recommended, detect-only): the episode is over.
        conditions = set_condition(conditions, SUCCEEDED, "True", SYMPTOM_CLEARED, message, now, generation)
    conditions = incident_kstatus_conditions(conditions, "Resolved", message, now, generation)
    return {
        "phase": "Resolved",
        "resolvedAt": now,
        "resolvedFromPhase": phase if phase in _PHASES else "Pending",
        "completedAt": status.get("completedAt") or now,
        "message": message,
        "conditions": conditions,
    }


def tidy_status(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """A resolved incident whose executor wrote a later phase (it was Running when the symptom
    cleared) is put back to phase Resolved, keeping the executor's phase in resolvedFromPhase."""
    phase = status.get("phase")
    if not status.get("resolvedAt") or phase in ("Resolved", "Running"):
        return None
    return {"phase": "Resolved", "resolvedFromPhase": phase if phase in _PHASES else "Pending"}


def recurrence_status(
    status: Mapping[str, Any], now: str, evidence: Mapping[str, Any], generation: int | None
) -> dict[str, Any]:
    """The status patch that reopens a resolved automatic incident whose symptom came back within
    its window (the action is not run again)."""
    detection = dict(status.get("detection") or {})
    occurrences = int(detection.get("occurrences") or 1) + 1
    phase = str(status.get("resolvedFromPhase") or "Pending")
    message = (
        f"symptom recurred at {now} (occurrence {occurrences} in this incident's window); "
        "its action is not run again"
    )
    conditions = set_condition(
        list(status.get("conditions") or []), RESOLVED, "False", SYMPTOM_RECURRED, message, now, generation
    )
    if phase not in TERMINAL_PHASES:
        conditions = set_condition(
            conditions, SUCCEEDED, "Unknown", SYMPTOM_RECURRED, message, now, generation
        )
    conditions = incident_kstatus_conditions(conditions, phase if phase in _PHASES else "Pending", message,
                                             now, generation)
    return {
        "phase": phase,
        "resolvedAt": None,
        "resolvedFromPhase": None,
        "completedAt": status.get("completedAt") if phase in TERMINAL_PHASES else None,
        "message": message,
        "conditions": conditions,
        "detection": {
            "occurrences": occurrences,
            "lastDetectedAt": now,
            "evidence": {**dict(evidence)},
        },
    }


def active_incident_names(incidents: Sequence[Mapping[str, Any]], extra: Sequence[str] = ()) -> list[str]:
    """``status.activeIncidents``: incidents not in a terminal phase, and automatic ones whose symptom
    has not cleared, plus ``extra`` (created this pass), sorted."""
    names = set(extra)
    for incident in incidents:
        phase = str(_status(incident).get("phase") or "Pending")
        if phase not in TERMINAL_PHASES or tracks_symptom(incident):
            names.add(str((incident.get("metadata") or {}).get("name", "")))
    return sorted(names)
