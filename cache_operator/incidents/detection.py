"""Symptom detection over consecutive health probes, with hysteresis, as a pure state machine.

Each probe pass, the operator collects every target pod's ``GET /internal/cache/health`` answer (or
``None`` when the pod could not be probed) and calls :func:`summarize_probe`, then :func:`observe`.
A symptom **opens** after ``open_after`` consecutive probes that show it and **clears** after
``clear_after`` consecutive probes that do not; any probe that disagrees resets the count. So a signal
that flaps faster than that neither opens nor closes anything.

The state is a small JSON document, ``{"symptoms": [SymptomState...]}`` in the shape of the
CachePolicy's ``status.symptoms`` (camelCase keys), so it survives an operator restart in the cluster.
A probe pass in which no pod answered tells nothing about any symptom and leaves the state unchanged
(neither a bad nor a good probe): a restarting Deployment must not clear RedisUnavailable.

:func:`observe` counts every call as one probe: call it once per probe pass, not per reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cache_operator.api.cachepolicy import CachePolicySpec
from cache_operator.incidents.naming import SYMPTOMS
from cache_runtime.timefmt import rfc3339

CONFIG_DRIFT = "ConfigDrift"
# Symptoms the runtime's health report names and the operator turns into incidents (all but ConfigDrift,
# which the operator judges from hashes). RedisOutOfMemory is one of them, recommend-only (see
# cache_operator.api.cacheincident.RECOMMEND_ONLY_SYMPTOMS).
REPORTED_SYMPTOMS: tuple[str, ...] = tuple(name for name in SYMPTOMS if name != CONFIG_DRIFT)
# While a symptom is pending (shown by a probe, not open yet) the confirming probes come this often.
CONFIRM_INTERVAL_S = 5.0
_SEVERITY_ORDER = {"warning": 1, "critical": 2}


@dataclass(frozen=True)
class DetectionSettings:
    """How many consecutive probes open (``open_after``) and clear (``clear_after``) a symptom."""

    open_after: int = 3
    clear_after: int = 3

    def __post_init__(self) -> None:
        for name in ("open_after", "clear_after"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
                raise ValueError(f"{name}={value!r} is invalid; accepted: an integer from 1 to 100")

    @classmethod
    def from_policy(cls, spec: CachePolicySpec) -> DetectionSettings:
        """``spec.health.consecutiveProbes`` both ways (the CRD has one knob for both directions)."""
        probes = spec.health.consecutive_probes
        return cls(open_after=probes, clear_after=probes)


@dataclass(frozen=True)
class ProbeSummary:
    """One probe pass over a policy's pods: which symptoms showed, on which pods, with what figures.

    ``symptoms`` maps a symptom name to its evidence (``pods``, worst ``severity``, ``value``,
    ``threshold``, ``unit``, ``message``; for ConfigDrift the expected and reported hashes).
    ``answered`` is the number of pods that answered; 0 means the pass tells nothing.
    """

    answered: int
    unreachable: tuple[str, ...] = ()
    symptoms: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class SymptomEvent:
    """A symptom that opened or cleared at this probe, with when its episode began and the evidence.

    ``incident`` is the automatic incident recorded for the episode (cleared events only; None when
    none was opened)."""

    name: str
    since: str | None
    evidence: Mapping[str, Any]
    incident: str | None = None


def _symptom_entries(report: Mapping[str, Any], pod: str) -> list[Mapping[str, Any]]:
    diagnosis = report.get("diagnosis")
    if diagnosis is None:
        return []
    if not isinstance(diagnosis, Mapping) or not isinstance(diagnosis.get("symptoms", []), list):
        raise ValueError(
            f"health of pod {pod}: diagnosis={str(diagnosis)[:80]!r} is invalid; accepted: an object "
            "with a symptoms list (the runtime's /internal/cache/health answer)"
        )
    entries = []
    for entry in diagnosis.get("symptoms", []):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ValueError(
                f"health of pod {pod}: diagnosis.symptoms entry {str(entry)[:80]!r} is invalid; "
                "accepted: an object with a string name"
            )
        entries.append(entry)
    return entries


def summarize_probe(
    reports: Mapping[str, Mapping[str, Any] | None], expected_hash: str | None
) -> ProbeSummary:
    """Aggregate per-pod health answers (pod name → answer, ``None`` = not probed) into one summary.

    A symptom shows when any pod reports it; the evidence keeps the pods and the worst figures.
    ConfigDrift shows when a pod reports a ``config_hash`` other than ``expected_hash`` (no
    expectation, e.g. before the first render, means no drift is judged).
    """
    symptoms: dict[str, dict[str, Any]] = {}
    unreachable: list[str] = []
    drifted: dict[str, str | None] = {}
    answered = 0
    for pod in sorted(reports):
        report = reports[pod]
        if report is None:
            unreachable.append(pod)
            continue
        if not isinstance(report, Mapping):
            raise ValueError(
                f"health of pod {pod}={str(report)[:80]!r} is invalid; accepted: the JSON object of "
                "/internal/cache/health or None"
            )
        answered += 1
        for entry in _symptom_entries(report, pod):
            name = entry["name"]
            if name not in REPORTED_SYMPTOMS:
                continue
            current = symptoms.setdefault(name, {"pods": []})
            current["pods"].append(pod)
            severity = str(entry.get("severity", "warning"))
            if _SEVERITY_ORDER.get(severity, 0) >= _SEVERITY_ORDER.get(current.get("severity", ""), 0):
                # Keep the worst pod's figures: they are what an on-call engineer would look at first.
                current.update(
                    severity=severity,
                    value=entry.get("value"),
                    threshold=entry.get("threshold"),
                    unit=entry.get("unit"),
                    message=entry.get("message"),
                    worstPod=pod,
                )
        reported_hash = report.get("config_hash")
        if expected_hash is not None and reported_hash != expected_hash:
            drifted[pod] = reported_hash if isinstance(reported_hash, str) else None
    if drifted:
        symptoms[CONFIG_DRIFT] = {
            "pods": sorted(drifted),
            "severity": "warning",
            "expectedHash": expected_hash,
            "reportedHashes": drifted,
            "message": f"{len(drifted)} pod(s) run a config other than the policy's",
        }
    return ProbeSummary(answered=answered, unreachable=tuple(unreachable), symptoms=symptoms)


def _entries(state: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if state is None:
        return {}
    raw = state.get("symptoms") if isinstance(state, Mapping) else None
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ValueError(f"status.symptoms={str(raw)[:80]!r} is invalid; accepted: a list of symptom states")
    entries: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping) or item.get("name") not in SYMPTOMS:
            raise ValueError(
                f"status.symptoms[{index}]={str(item)[:80]!r} is invalid; accepted: "
                f"{{name: one of {', '.join(SYMPTOMS)}, active, consecutive, since}}"
            )
        consecutive = item.get("consecutive", 0)
        if not isinstance(consecutive, int) or isinstance(consecutive, bool) or consecutive < 0:
            raise ValueError(
                f"status.symptoms[{index}].consecutive={consecutive!r} is invalid; accepted: an integer >= 0"
            )
        incident = item.get("incident")
        if incident is not None and not isinstance(incident, str):
            raise ValueError(
                f"status.symptoms[{index}].incident={incident!r} is invalid; accepted: a CacheIncident name"
            )
        entries[item["name"]] = {
            "name": item["name"],
            "active": bool(item.get("active", False)),
            "consecutive": consecutive,
            "since": item.get("since"),
        }
        if incident and entries[item["name"]]["active"]:
            entries[item["name"]]["incident"] = incident
    return entries


def observe(
    state: Mapping[str, Any] | None, probe: ProbeSummary, now: float, settings: DetectionSettings
) -> tuple[dict[str, Any], list[SymptomEvent], list[SymptomEvent]]:
    """Advance the detection state by one probe: ``(new_state, opened, cleared)``.

    ``state`` is the previous return value (or ``{"symptoms": status.symptoms}``; None = nothing yet).
    The input is not modified. Events come in the fixed order of :data:`SYMPTOMS`. An active entry
    keeps its ``incident`` (the automatic incident recorded for the episode, see :func:`with_incident`)
    until it clears.
    """
    entries = _entries(state)
    if probe.answered == 0:
        return {"symptoms": [entries[name] for name in SYMPTOMS if name in entries]}, [], []
    stamp = rfc3339(now)
    opened: list[SymptomEvent] = []
    cleared: list[SymptomEvent] = []
    new_entries: list[dict[str, Any]] = []
    for name in SYMPTOMS:
        entry = entries.get(name) or {"name": name, "active": False, "consecutive": 0, "since": None}
        bad = name in probe.symptoms
        evidence = dict(probe.symptoms.get(name, {}))
        if not entry["active"]:
            if bad:
                since = entry["since"] if entry["consecutive"] else stamp
                count = entry["consecutive"] + 1
                if count >= settings.open_after:
                    entry = {"name": name, "active": True, "consecutive": 0, "since": since}
                    opened.append(SymptomEvent(name, since, evidence))
                else:
                    entry = {"name": name, "active": False, "consecutive": count, "since": since}
            else:
                # A good probe ends the bad streak: the next bad one starts counting from scratch.
                entry = {"name": name, "active": False, "consecutive": 0, "since": None}
        else:
            if bad:
                entry = {**entry, "consecutive": 0}
            else:
                count = entry["consecutive"] + 1
                if count >= settings.clear_after:
                    cleared.append(SymptomEvent(name, entry["since"], evidence, entry.get("incident")))
                    entry = {"name": name, "active": False, "consecutive": 0, "since": None}
                else:
                    entry = {**entry, "consecutive": count}
        # Quiet symptoms are dropped so the status stays small.
        if entry["active"] or entry["consecutive"]:
            new_entries.append(entry)
    return {"symptoms": new_entries}, opened, cleared


def with_incident(state: Mapping[str, Any], symptom: str, incident: str) -> dict[str, Any]:
    """``state`` with ``incident`` recorded on the active entry of ``symptom`` (so a later pass knows
    the episode has its incident and never opens another, even if a person deleted it)."""
    entries = []
    for entry in (state or {}).get("symptoms") or []:
        entry = dict(entry)
        if entry.get("name") == symptom and entry.get("active"):
            entry["incident"] = incident
        entries.append(entry)
    return {"symptoms": entries}


def probe_interval(symptoms: Any, interval_s: float) -> float:
    """Seconds until the next probe: the policy's ``interval_s``, or :data:`CONFIRM_INTERVAL_S` while a
    symptom is pending in ``symptoms`` (``status.symptoms``: an entry not active with a consecutive
    count). Hysteresis is unchanged (the same number of consecutive probes opens a symptom); the
    confirming probes only come sooner, so a fault seen once is confirmed in seconds, not in
    ``consecutiveProbes`` x ``probeIntervalSeconds``. A malformed list counts as nothing pending."""
    if not isinstance(symptoms, list):
        return interval_s
    pending = any(
        isinstance(entry, Mapping) and not entry.get("active") and (entry.get("consecutive") or 0) > 0
        for entry in symptoms
    )
    return min(interval_s, CONFIRM_INTERVAL_S) if pending else interval_s


def active_symptoms(state: Mapping[str, Any] | None) -> list[str]:
    """Names of the symptoms currently open in ``state``."""
    return [name for name, entry in _entries(state).items() if entry["active"]]
