"""The CacheIncident an opened symptom becomes: manifest and initial status, as plain data.

The pods' health answers already carry the engine's diagnosis (causes per symptom with evidence
and recommendations), so the incident is created knowing its cause: ``spec.action`` is the top
cause's first recommendation that is a runbook action with valid parameters, else ``diagnose``
(always safe: it only reads). A ``config-change`` recommendation (the fix is a setting) becomes
``apply-override`` with the change, bounded by :func:`cache_operator.incidents.remediation.bounded_override`
(given as ``bound``), so even Recommend mode shows the exact override. Whether that action then runs
is :func:`safety.may_run`'s call.

The operator's cross-layer view of Redis (:mod:`.redis_cluster`: Redis scaled to 0, OOMKilled,
crash-looping, a Service without a ready pod) comes in as ``cluster_causes``, ahead of the pods'
causes; when one of them is the top cause the incident carries ``diagnose``: no runbook action on the
cache pods fixes a Redis that is not running.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from cache_operator.api.cacheincident import CacheIncidentSpec
from cache_operator.api.common import API_VERSION
from cache_operator.incidents.detection import CONFIG_DRIFT, SymptomEvent
from cache_operator.incidents.naming import DEFAULT_WINDOW_SECONDS, auto_incident_labels, auto_incident_name
from cache_operator.incidents.redis_cluster import LAYER
from cache_operator.incidents.remediation import OVERRIDE_ACTION, proposal, symptom_figure
from cache_runtime.actions import INCIDENT_ACTIONS
from cache_runtime.timefmt import parse_rfc3339, rfc3339

FALLBACK_ACTION = "diagnose"
_CAMEL = {"duration_seconds": "durationSeconds", "max_entries": "maxEntries"}
_REDIS_SYMPTOMS = frozenset({"RedisUnavailable", "RedisAuthFailure", "RedisOutOfMemory"})
# bound(overrides) -> (bounded overrides or None when it cannot be applied, notes)
Bound = Callable[[Mapping[str, Any]], tuple[dict[str, Any] | None, list[str]]]


def _unbounded(overrides: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    return dict(overrides), []


def causes_for(
    reports: Mapping[str, Mapping[str, Any] | None],
    symptom: str,
    cluster_causes: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The engine's causes of ``symptom`` over every pod's health answer, merged by name (highest
    score kept, pods listed), most likely first; ``cluster_causes`` (the operator's view of Redis in
    the cluster, :func:`.redis_cluster.diagnose_cluster`) ahead of them."""
    merged: dict[str, dict[str, Any]] = {str(c["name"]): {**c, "pods": []} for c in cluster_causes}
    for pod in sorted(reports):
        report = reports[pod]
        diagnosis = (report or {}).get("diagnosis") or {}
        for cause in diagnosis.get("causes") or []:
            if not isinstance(cause, Mapping) or symptom not in (cause.get("symptoms") or []):
                continue
            name = str(cause.get("name"))
            current = merged.get(name)
            if current is None or float(cause.get("score") or 0) > float(current.get("score") or 0):
                merged[name] = {**cause, "pods": [*(current or {}).get("pods", []), pod]}
            else:
                current["pods"].append(pod)
    if symptom == CONFIG_DRIFT and not merged:
        merged["ConfigNotApplied"] = {
            "name": "ConfigNotApplied",
            "symptoms": [CONFIG_DRIFT],
            "summary": "pods run a config other than the policy's: the operator re-pushes it every pass; "
            "a pod that keeps another hash refuses it (see its recent-errors) or runs a config set by hand",
            "score": 0.5,
            "evidence": {},
            "recommendations": [],
        }
    return sorted(
        merged.values(),
        key=lambda c: (c.get("layer") != LAYER, -float(c.get("score") or 0), str(c.get("name"))),
    )


def _incident_action(
    recommendation: Mapping[str, Any], policy: str, bound: Bound = _unbounded
) -> tuple[str, dict[str, Any]] | None:
    action = recommendation.get("action")
    if action == "config-change":
        overrides = (recommendation.get("parameters") or {}).get("overrides")
        if not isinstance(overrides, Mapping) or not overrides:
            return None
        bounded, _ = bound(overrides)
        return (OVERRIDE_ACTION, {"overrides": bounded}) if bounded else None
    if action not in INCIDENT_ACTIONS:
        return None  # a person's job
    parameters = {
        _CAMEL.get(str(key), str(key)): value
        for key, value in (recommendation.get("parameters") or {}).items()
        if value is not None
    }
    try:
        CacheIncidentSpec.model_validate(
            {"policyRef": {"name": policy}, "action": action, "parameters": parameters or None}
        )
    except ValidationError:
        return None  # e.g. invalidate without a pattern: nothing the operator could run
    return str(action), parameters


def choose_action(
    causes: list[dict[str, Any]], policy: str, bound: Bound = _unbounded
) -> tuple[str, dict[str, Any], str | None]:
    """(action, parameters, cause name) the incident carries: the first runnable recommendation of the
    most likely cause that has one (a ``config-change`` becomes ``apply-override`` when ``bound``
    leaves a change to apply), else ``diagnose``; ``diagnose`` too when the most likely cause is in the
    cluster (Redis scaled to 0...): a person's fix, nothing to run on the cache pods."""
    if causes and causes[0].get("layer") == LAYER:
        return FALLBACK_ACTION, {}, str(causes[0].get("name"))
    for cause in causes:
        for recommendation in cause.get("recommendations") or []:
            chosen = _incident_action(recommendation, policy, bound)
            if chosen is not None:
                return chosen[0], chosen[1], str(cause.get("name"))
    return FALLBACK_ACTION, {}, None


def _severity(event: SymptomEvent) -> str:
    worst = str(event.evidence.get("severity", "warning"))
    if worst == "critical":
        return "critical" if event.name in _REDIS_SYMPTOMS else "high"
    return "medium"


def render_auto_incident(
    *,
    policy: str,
    namespace: str,
    event: SymptomEvent,
    reports: Mapping[str, Mapping[str, Any] | None],
    now: float,
    policy_uid: str | None = None,
    window_seconds: int = DEFAULT_WINDOW_SECONDS,
    cluster_causes: Sequence[Mapping[str, Any]] = (),
    bound: Bound = _unbounded,
) -> dict[str, Any]:
    """The CacheIncident manifest for an opened symptom (create it; a 409 means it exists already).

    Named from the episode's start (``event.since``, else ``now``), so every detection of one episode
    yields the same name. Owned by the policy (when ``policy_uid`` is given) so it goes with it.
    ``bound`` bounds a setting change for the policy (see :func:`choose_action`).
    """
    opened_at = parse_rfc3339(event.since, "event.since") if event.since is not None else now
    causes = causes_for(reports, event.name, cluster_causes)
    action, parameters, _ = choose_action(causes, policy, bound)
    message = event.evidence.get("message") or f"{event.name} held over consecutive probes"
    spec: dict[str, Any] = {
        "policyRef": {"name": policy},
        "action": action,
        "reason": f"{event.name} detected automatically: {message}"[:4096],
        "severity": _severity(event),
    }
    if parameters:
        spec["parameters"] = parameters
    metadata: dict[str, Any] = {
        "name": auto_incident_name(policy, event.name, opened_at, window_seconds),
        "namespace": namespace,
        "labels": auto_incident_labels(policy, event.name),
    }
    if policy_uid:
        metadata["ownerReferences"] = [
            {"apiVersion": API_VERSION, "kind": "CachePolicy", "name": policy, "uid": policy_uid}
        ]
    return {"apiVersion": API_VERSION, "kind": "CacheIncident", "metadata": metadata, "spec": spec}


def auto_incident_status(
    event: SymptomEvent,
    reports: Mapping[str, Mapping[str, Any] | None],
    now: float,
    policy: str,
    cluster_causes: Sequence[Mapping[str, Any]] = (),
    cluster_view: Mapping[str, Any] | None = None,
    *,
    namespace: str = "default",
    spec_overrides: Mapping[str, Any] | None = None,
    bound: Bound = _unbounded,
) -> dict[str, Any]:
    """The status to write right after creating an automatic incident: detection (symptom, when,
    evidence), diagnosis (causes in the CRD's shape, ``cluster_causes`` first), the top cause, the
    recommended action, ``symptoms`` and ``remediation`` (Proposed: the action, the exact override for
    a setting fix with its permanent patch, the symptom's figure now). ``cluster_view`` (what the
    operator read about Redis in the cluster) goes into the detection evidence as ``redisCluster``;
    ``namespace`` and ``spec_overrides`` (the policy's) make the permanent patch; ``bound`` as for
    :func:`render_auto_incident`."""
    causes = causes_for(reports, event.name, cluster_causes)
    action, parameters, chosen_cause = choose_action(causes, policy, bound)
    crd_causes = []
    for cause in causes[:10]:
        runnable = next(
            (
                (rec, picked)
                for rec in cause.get("recommendations") or []
                if (picked := _incident_action(rec, policy, bound)) is not None
            ),
            None,
        )
        first = runnable[0] if runnable else next(iter(cause.get("recommendations") or []), None)
        cause_evidence: dict[str, Any] = {**(cause.get("evidence") or {}), "score": cause.get("score")}
        if cause.get("layer") == LAYER:
            cause_evidence["layer"] = LAYER
        else:
            cause_evidence["pods"] = cause.get("pods", [])
        entry: dict[str, Any] = {
            "name": str(cause.get("name")),
            "evidence": cause_evidence,
            "recommendation": "; ".join(
                part for part in (cause.get("summary"), (first or {}).get("description")) if part
            )[:4096]
            or None,
        }
        change = next(
            (rec for rec in cause.get("recommendations") or [] if rec.get("action") == "config-change"), None
        )
        if change is not None:
            # A spec change is the user's (GitOps) call: carried as evidence for the person to apply.
            entry["evidence"]["suggestedOverrides"] = (change.get("parameters") or {}).get("overrides")
        if runnable:
            entry["action"] = runnable[1][0]
            if runnable[1][1]:
                entry["parameters"] = runnable[1][1]
        crd_causes.append(entry)
    stamp = rfc3339(now)
    evidence: dict[str, Any] = {**dict(event.evidence), "since": event.since}
    if cluster_view:
        evidence["redisCluster"] = dict(cluster_view)
    override = parameters.get("overrides") if action == OVERRIDE_ACTION else None
    remediation = proposal(
        action,
        override,
        symptom=event.name,
        before=symptom_figure(event.name, reports),
        policy=policy,
        namespace=namespace,
        spec_overrides=spec_overrides,
    )
    return {
        "phase": "Pending",
        "symptoms": [event.name],
        "detection": {
            "source": "Auto",
            "symptom": event.name,
            "detectedAt": stamp,
            "evidence": evidence,
        },
        "diagnosis": {"causes": crd_causes, "diagnosedAt": stamp},
        "cause": chosen_cause or (crd_causes[0]["name"] if crd_causes else None),
        "recommendedAction": action,
        "remediation": remediation,
    }
