"""Automatic incidents, driven by the CachePolicy's probe pass: detection, opening, resolution, GC.

:func:`cache_operator.reconcile.handle_reconcile` calls :func:`run_detection` after it probed the pods,
at most once per ``spec.health.probeIntervalSeconds`` (:func:`detection_due`, from
``status.lastDetectionTime``: a wake-up for a spec change or a converging pass is not a probe). One call:

1. **detect**: :func:`~cache_operator.incidents.detection.summarize_probe` over the pods' health answers
   (with the hash each pod runs after this pass's push, so ConfigDrift means "still another config
   after the operator pushed ours") and :func:`~cache_operator.incidents.detection.observe`, whose
   state is ``status.symptoms``: hysteresis survives an operator restart;
2. **open**: every active symptom without an incident gets one, named deterministically from the
   policy, the symptom and the episode's start (:mod:`~cache_operator.incidents.auto_manifest`); a
   create that answers 409 finds the incident (reopened if it was resolved). Refused while the policy
   is paused or the storm limit is reached (:func:`~cache_operator.incidents.safety.may_open`): the
   ``SymptomsTracked`` condition says why and an Event is posted when that reason appears; the
   next pass tries again. The incident's name is then recorded on the symptom's entry in
   ``status.symptoms`` so the episode never gets a second one (not even after a person deleted it).
   A symptom that shares a diagnosed cause with an open incident of the policy **joins** it instead
   (:func:`joinable_incident`: LowHitRate and RedisUnavailable during a Redis outage are one incident,
   listed in its ``status.symptoms``), so one cause never gets two incidents racing for one action.
   Redis symptoms open first, so the incident is named after the one nearest the cause. When the
   symptom points at Redis, the operator first reads Redis's Kubernetes state
   (:mod:`~cache_operator.incidents.redis_cluster_io`: Service, EndpointSlices, Deployment/StatefulSet,
   pods, Events) and puts the cluster-level cause (Redis scaled to 0, OOMKilled...) ahead of the pods';
3. **verify**: every automatic incident whose action ran (``status.remediation.state`` Verifying)
   gets this probe's figure of its symptom (:mod:`~cache_operator.incidents.remediation`); after
   ``spec.remediation.verifyProbes`` probes (or as soon as its symptom cleared) it is ``Remediated``,
   or ``RemediationIneffective``: its override leaves the policy's status (the next pass pushes the
   base config), the incident fails and a Warning Event and a metric escalate it;
4. **resolve**: every automatic incident of the policy that no active symptom holds is resolved
   (:mod:`~cache_operator.incidents.lifecycle`), a Running one on a later pass;
5. **collect garbage**: finished incidents beyond ``spec.remediation.incidentTtlSeconds`` or the
   newest ``historyLimit`` are deleted (never open ones nor automatic ones whose symptom is active).

Incidents are listed only when something can change (a symptom event, an untracked symptom, open
incidents in ``status.activeIncidents``, or a garbage collection due), so a healthy policy costs no API
call here. Running the action is the incident executor's job (:mod:`cache_operator.incidents.executor_io`,
started by the CacheIncident handler): it applies ``spec.remediation.mode`` and every safety rule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cache_operator import conditions as conds
from cache_operator.api.cachepolicy import CachePolicySpec
from cache_operator.api.common import API_VERSION
from cache_operator.incidents import lifecycle, remediation, safety
from cache_operator.incidents.auto_manifest import auto_incident_status, causes_for, render_auto_incident
from cache_operator.incidents.detection import (
    DetectionSettings,
    SymptomEvent,
    observe,
    summarize_probe,
    with_incident,
)
from cache_operator.incidents.naming import SYMPTOMS
from cache_operator.incidents.redis_cluster import REDIS_SYMPTOMS, wants_cluster_view
from cache_operator.incidents.redis_cluster_io import cluster_causes
from cache_operator.k8s import KubeError
from cache_operator.ports import KubeIO
from cache_runtime.timefmt import parse_rfc3339, rfc3339

# A pass counts as a probe when at least this share of the probe interval passed since the last one
# (the daemon wakes at the interval; timestamps in status have whole seconds).
DETECTION_FRACTION = 0.8
GC_INTERVAL_S = 60.0
# The history limit never deletes an incident that ended less than this long ago: a burst of incidents
# (a person's runbook, a test suite) stays readable for a while; the TTL applies as set.
HISTORY_GRACE_S = 300.0
CREATE_FAILED = "CreateFailed"
NAME_TAKEN = "NameTaken"
NO_SYMPTOMS = "NoSymptoms"
SYMPTOM_JOINED = "SymptomJoined"
# Causes that say nothing about what went wrong: sharing one of them is no reason to join incidents.
GENERIC_CAUSES = frozenset({"Undetermined", "LowReuseWorkload"})
TRACKED = "Tracked"

EventSink = Callable[[str, str, str], Awaitable[None] | None]  # (Normal/Warning, reason, message)


@dataclass
class DetectionOutcome:
    """What one detection pass did; ``status`` holds the policy status fields to merge."""

    status: dict[str, Any] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)  # "symptom -> incident"
    resolved: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)  # symptom -> reason
    listed: bool = False
    transitions: list[tuple[str, str]] = field(default_factory=list)  # (event, symptom), for metrics
    verdicts: list[tuple[str, str]] = field(default_factory=list)  # (Remediated/Ineffective, symptom)


def detection_due(status: Mapping[str, Any], now_s: float, interval_s: float) -> bool:
    """Whether this pass counts as a probe for detection: none counted yet, or the last one (status
    ``lastDetectionTime``) is at least 80% of the probe interval ago (a malformed time counts)."""
    last = status.get("lastDetectionTime")
    if not last:
        return True
    try:
        last_s = parse_rfc3339(last, "status.lastDetectionTime")
    except ValueError:
        return True
    return now_s - last_s >= max(1.0, interval_s * DETECTION_FRACTION) or now_s < last_s


def gc_due(status: Mapping[str, Any], now_s: float) -> bool:
    """Whether finished incidents should be looked at: every minute, from
    ``status.lastGarbageCollectionTime`` (kept in the cluster like everything else). A policy never
    collected starts its clock now (:func:`run_detection` writes the time): a new policy has no
    finished incident, and 300 new policies cost no list call for it."""
    last = status.get("lastGarbageCollectionTime")
    if not last:
        return False
    try:
        return now_s - parse_rfc3339(last, "status.lastGarbageCollectionTime") >= GC_INTERVAL_S
    except ValueError:
        return True


def probe_reports(views: Sequence[Any]) -> dict[str, Mapping[str, Any] | None]:
    """Pod name -> health answer (None = not answered), with the hash the pod runs after this pass's
    push in place of the one it reported before it."""
    reports: dict[str, Mapping[str, Any] | None] = {}
    for view in views:
        if view.health is None:
            reports[view.name] = None
        else:
            reports[view.name] = {**view.health, "config_hash": view.config_hash}
    return reports


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _policy_of(incident: Mapping[str, Any]) -> str:
    return str(((incident.get("spec") or {}).get("policyRef") or {}).get("name", ""))


async def _post(events: EventSink | None, type_: str, reason: str, message: str) -> None:
    if events is None:
        return
    outcome = events(type_, reason, message[:1000])
    if outcome is not None:
        await outcome


def incident_symptoms(incident: Mapping[str, Any]) -> list[str]:
    """The symptoms an automatic incident stands for: ``status.symptoms``, else its own symptom."""
    listed = (incident.get("status") or {}).get("symptoms")
    if isinstance(listed, list) and listed:
        return [str(s) for s in listed]
    own = lifecycle.symptom_of(incident)
    return [own] if own else []


def joinable_incident(
    incidents: Sequence[Mapping[str, Any]],
    held: Mapping[str, str],
    symptom: str,
    causes: Sequence[Mapping[str, Any]],
) -> Mapping[str, Any] | None:
    """The open automatic incident ``symptom`` should join, or None: one held by an active symptom of
    this episode (``held``: incident name -> symptom) that one of ``symptom``'s diagnosed ``causes``
    also explains: the cause lists that incident's own symptom (the one it was opened for, not the
    ones that joined it: a cause of a joined LowHitRate, such as L1TooSmall, says nothing about a
    Redis outage), or the incident's diagnosis names the same cause. Generic causes (Undetermined,
    LowReuseWorkload) join nothing."""
    specific = [c for c in causes if c.get("name") not in GENERIC_CAUSES]
    if not specific:
        return None
    for incident in incidents:
        name = _name(incident)
        if name not in held or not lifecycle.is_automatic(incident) or lifecycle.is_resolved(incident):
            continue
        if symptom in incident_symptoms(incident):
            continue
        own = lifecycle.symptom_of(incident)
        theirs = {own} if own else set()
        diagnosed = {
            str(c.get("name"))
            for c in ((incident.get("status") or {}).get("diagnosis") or {}).get("causes") or []
            if isinstance(c, Mapping)
        } - GENERIC_CAUSES
        for cause in specific:
            if theirs & set(cause.get("symptoms") or []) or cause.get("name") in diagnosed:
                return incident
    return None


def _open_order(entries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Redis symptoms first, the specific ones (authentication, out of memory) before the plain
    RedisUnavailable they also cause: the symptom nearest a shared cause names the incident (a wrong
    password is a RedisAuthFailure incident that RedisUnavailable joins). Then SYMPTOMS order."""
    return sorted(
        entries,
        key=lambda e: (
            e["name"] not in REDIS_SYMPTOMS and e["name"] not in _SPECIFIC_REDIS_SYMPTOMS,
            e["name"] not in _SPECIFIC_REDIS_SYMPTOMS,
            SYMPTOMS.index(e["name"]) if e["name"] in SYMPTOMS else len(SYMPTOMS),
        ),
    )


_SPECIFIC_REDIS_SYMPTOMS = ("RedisAuthFailure", "RedisOutOfMemory")


def tracked_condition(
    active: Sequence[Mapping[str, Any]], blocked: Mapping[str, tuple[str, str]]
) -> tuple[str, str, str]:
    """(status, reason, message) of the policy's ``SymptomsTracked`` condition."""
    if blocked:
        first = sorted(blocked)[0]
        reason = blocked[first][0]
        message = "; ".join(f"{symptom}: {text}" for symptom, (_, text) in sorted(blocked.items()))
        return "False", reason, f"no incident opened for {message}"
    if not active:
        return "True", NO_SYMPTOMS, "no symptom held over the configured consecutive probes"
    listed = ", ".join(f"{e['name']} ({e.get('incident')})" for e in active)
    return "True", TRACKED, f"every active symptom has its incident: {listed}"


async def run_detection(
    policy: Any,
    model: CachePolicySpec,
    status: Mapping[str, Any],
    views: Sequence[Any],
    config_hash: str,
    conditions: list[dict[str, Any]],
    *,
    kube: KubeIO,
    now_s: float,
    events: EventSink | None,
    logger: Any,
) -> DetectionOutcome:
    """One detection pass for ``policy`` (a :class:`cache_operator.reconcile.PolicyRef`); returns the
    status fields to merge (``symptoms``, ``lastDetectionTime``, ``activeIncidents``,
    ``lastGarbageCollectionTime``, ``conditions``). Raises ValueError on a malformed health answer or
    ``status.symptoms`` (the caller logs it and skips detection for the pass); Kubernetes errors are
    logged and retried on the next pass, the detection state is kept either way."""
    out = DetectionOutcome()
    stamp = rfc3339(now_s)
    reports = probe_reports(views)
    summary = summarize_probe(reports, config_hash)
    state, opened, cleared = observe(
        {"symptoms": list(status.get("symptoms") or [])}, summary, now_s, DetectionSettings.from_policy(model)
    )
    for event in opened:
        logger.info(f"symptom {event.name} opened (since {event.since}): {event.evidence.get('message')}")
    for event in cleared:
        logger.info(f"symptom {event.name} cleared (episode since {event.since})")
    out.status["lastDetectionTime"] = stamp
    active = [e for e in state["symptoms"] if e.get("active")]
    untracked = [e for e in active if not e.get("incident")]
    collect = gc_due(status, now_s) and not model.paused
    if not status.get("lastGarbageCollectionTime"):
        out.status["lastGarbageCollectionTime"] = stamp
    blocked: dict[str, tuple[str, str]] = {}
    need_list = bool(opened or cleared or untracked or status.get("activeIncidents") or collect)
    if need_list:
        try:
            state = await _open_resolve_collect(
                policy,
                model,
                state,
                summary,
                reports,
                untracked,
                collect,
                blocked,
                out,
                kube=kube,
                now_s=now_s,
                events=events,
                override=status.get("override"),
            )
        except KubeError as exc:
            logger.error(f"automatic incidents: {exc}")
            for entry in untracked:
                if not entry.get("incident") and entry["name"] not in blocked:
                    blocked[entry["name"]] = (CREATE_FAILED, f"Kubernetes API: {str(exc)[:300]}")
    out.status["symptoms"] = state["symptoms"]
    active = [e for e in state["symptoms"] if e.get("active")]
    previous = conds.get_condition(conditions, conds.SYMPTOMS_TRACKED) or {}
    cond_status, reason, message = tracked_condition(active, blocked)
    if cond_status == "False" and previous.get("reason") != reason:
        await _post(events, "Warning", reason, message)
    out.status["conditions"] = conds.set_condition(
        conditions, conds.SYMPTOMS_TRACKED, cond_status, reason, message, stamp, policy.generation
    )
    out.blocked = {symptom: why for symptom, (why, _) in blocked.items()}
    out.transitions.extend(("blocked", symptom) for symptom in sorted(blocked))
    return out


async def _open_resolve_collect(
    policy: Any,
    model: CachePolicySpec,
    state: dict[str, Any],
    summary: Any,
    reports: Mapping[str, Mapping[str, Any] | None],
    untracked: Sequence[Mapping[str, Any]],
    collect: bool,
    blocked: dict[str, tuple[str, str]],
    out: DetectionOutcome,
    *,
    kube: KubeIO,
    now_s: float,
    events: EventSink | None,
    override: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Steps 2-5 of :func:`run_detection` (open, verify, resolve, collect) over the policy's incidents;
    ``override`` is the policy's ``status.override`` (rolled back when its incident's change did not
    help)."""
    stamp = rfc3339(now_s)
    namespace = policy.namespace
    incidents = [
        i
        for i in await kube.list_objects(API_VERSION, "CacheIncident", namespace)
        if _policy_of(i) == policy.name
    ]
    out.listed = True
    policy_state = safety.PolicyState(name=policy.name, paused=model.paused)
    spec_dict = model.model_dump(by_alias=True, exclude_none=True)
    memory_limit = remediation.pod_memory_limit(model)

    def bound(overrides: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
        return remediation.bounded_override(overrides, spec_dict, memory_limit)

    # 2. join, open (or find) the incident of every active symptom that has none
    for entry in _open_order(untracked):
        symptom = str(entry["name"])
        event = SymptomEvent(symptom, entry.get("since"), dict(summary.symptoms.get(symptom) or {}))
        if model.paused:
            blocked[symptom] = (safety.PAUSED, "spec.paused is true")
            continue
        engine_causes = causes_for(reports, symptom)
        held = {
            str(e["incident"]): str(e["name"])
            for e in state["symptoms"]
            if e.get("active") and e.get("incident")
        }
        target = joinable_incident(incidents, held, symptom, engine_causes)
        if target is not None:
            name = _name(target)
            symptoms = [*incident_symptoms(target), symptom]
            if await kube.patch_status(API_VERSION, "CacheIncident", namespace, name, {"symptoms": symptoms}):
                incidents = [
                    {**i, "status": {**(i.get("status") or {}), "symptoms": symptoms}}
                    if _name(i) == name
                    else i
                    for i in incidents
                ]
                out.joined.append(f"{symptom} -> {name}")
                out.transitions.append(("joined", symptom))
                await _post(
                    events,
                    "Normal",
                    SYMPTOM_JOINED,
                    f"{symptom} held over {model.health.consecutive_probes} probes and shares its cause with "
                    f"CacheIncident {name} ({', '.join(symptoms)}): joined it, no second incident",
                )
                state = with_incident(state, symptom, name)
                continue
        decision = safety.may_open(policy_state, incidents, model.remediation)
        if not decision.allowed:
            blocked[symptom] = (decision.reason, decision.message)
            continue
        cluster: list[dict[str, Any]] = []
        view: dict[str, Any] | None = None
        if wants_cluster_view(symptom, engine_causes):
            try:
                cluster, view = await cluster_causes(kube, model, namespace, now_s, [symptom])
            except (KubeError, ValueError) as exc:
                view = {"error": str(exc)[:300]}
        manifest = render_auto_incident(
            policy=policy.name,
            namespace=namespace,
            event=event,
            reports=reports,
            now=now_s,
            policy_uid=policy.uid or None,
            cluster_causes=cluster,
            bound=bound,
        )
        name = _name(manifest)
        initial = auto_incident_status(
            event,
            reports,
            now_s,
            policy.name,
            cluster,
            view,
            namespace=namespace,
            spec_overrides=model.overrides,
            bound=bound,
        )
        # The executor (started by the create) owns the phase: writing Pending here could overwrite
        # a phase it already wrote. Detection and diagnosis are ours alone.
        initial.pop("phase", None)
        initial["detection"]["occurrences"] = 1
        initial["detection"]["lastDetectedAt"] = stamp
        if await kube.create(manifest):
            await kube.patch_status(API_VERSION, "CacheIncident", namespace, name, initial)
            incidents.append({**manifest, "status": initial})
            out.opened.append(name)
            out.transitions.append(("opened", symptom))
            await _post(
                events,
                "Normal",
                "IncidentOpened",
                f"{symptom} held over {model.health.consecutive_probes} probes: CacheIncident {name} "
                f"(action {manifest['spec']['action']}, cause {initial.get('cause') or 'undetermined'}, "
                f"remediation {model.remediation.mode})",
            )
        else:
            existing = await kube.get(API_VERSION, "CacheIncident", namespace, name)
            if existing is None:
                blocked[symptom] = (CREATE_FAILED, f"CacheIncident {name} exists and vanished; retried")
                continue
            if _policy_of(existing) != policy.name or not lifecycle.is_automatic(existing):
                blocked[symptom] = (
                    NAME_TAKEN,
                    f"CacheIncident {name} exists and is not this policy's automatic incident",
                )
                continue
            existing_status = existing.get("status") or {}
            generation = (existing.get("metadata") or {}).get("generation")
            if lifecycle.is_resolved(existing):
                patch = lifecycle.recurrence_status(existing_status, stamp, event.evidence, generation)
                await kube.patch_status(API_VERSION, "CacheIncident", namespace, name, patch)
                out.reopened.append(name)
                out.transitions.append(("reopened", symptom))
                await _post(
                    events, "Warning", lifecycle.SYMPTOM_RECURRED, f"CacheIncident {name}: {patch['message']}"
                )
                existing = {**existing, "status": {**existing_status, **patch}}
            elif not existing_status.get("detection", {}).get("symptom"):
                # Created by an earlier pass that stopped before writing its status.
                await kube.patch_status(API_VERSION, "CacheIncident", namespace, name, initial)
                existing = {**existing, "status": {**existing_status, **initial}}
            out.found.append(name)
            out.transitions.append(("found", symptom))
            incidents = [i for i in incidents if _name(i) != name] + [existing]
        state = with_incident(state, symptom, name)

    # An incident is held by its own symptom (the one it was opened for): when that clears, the cause's
    # episode is over and the incident resolves, even if a symptom that joined it is still active (its
    # cause may have changed: an L1 thrashing under the workload outlives the Redis outage it joined).
    own_symptom = {_name(i): lifecycle.symptom_of(i) for i in incidents}
    holding = {
        str(e.get("incident"))
        for e in state["symptoms"]
        if e.get("active") and e.get("incident")
        and own_symptom.get(str(e.get("incident"))) in (None, e.get("name"))
    }

    # 3. verify by effect the actions that ran
    for position, incident in enumerate(incidents):
        verified = await _verify(
            policy, incident, summary, reports, holding, override, out, kube=kube, now_s=now_s, events=events
        )
        if verified is not None:
            incidents[position] = verified

    # 4. resolve automatic incidents that no active symptom holds any more
    for position, incident in enumerate(incidents):
        name = _name(incident)
        if not lifecycle.is_automatic(incident) or name in holding:
            continue
        incident_status = incident.get("status") or {}
        generation = (incident.get("metadata") or {}).get("generation")
        resolution: dict[str, Any] | None
        if lifecycle.is_resolved(incident):
            resolution = lifecycle.tidy_status(incident_status)
        else:
            symptom = lifecycle.symptom_of(incident) or "symptom"
            message = f"{symptom} no longer detected: cleared over {model.health.consecutive_probes} probes"
            resolution = lifecycle.resolution_status(incident_status, stamp, message, generation)
        if resolution is None:
            continue
        await kube.patch_status(API_VERSION, "CacheIncident", namespace, name, resolution)
        incidents[position] = {**incident, "status": {**incident_status, **resolution}}
        if resolution.get("resolvedAt"):
            out.resolved.append(name)
            out.transitions.append(("resolved", lifecycle.symptom_of(incident) or "unknown"))
            await _post(
                events, "Normal", "IncidentResolved", f"CacheIncident {name}: {resolution['message']}"
            )

    # 5. garbage collection of finished incidents (TTL and history limit per policy)
    if collect:
        settings = model.remediation
        doomed = safety.incidents_to_delete(
            incidents,
            now_s,
            float(settings.incident_ttl_seconds),
            settings.history_limit,
            min_age=HISTORY_GRACE_S,
        )
        for name in doomed:
            if await kube.delete(API_VERSION, "CacheIncident", namespace, name):
                out.deleted.append(name)
        if doomed:
            await _post(
                events,
                "Normal",
                "IncidentsDeleted",
                f"deleted {len(doomed)} finished incident(s) (ttl {settings.incident_ttl_seconds}s, "
                f"historyLimit {settings.history_limit}): {', '.join(doomed)}",
            )
        incidents = [i for i in incidents if _name(i) not in set(doomed)]
        out.status["lastGarbageCollectionTime"] = stamp

    out.status["activeIncidents"] = lifecycle.active_incident_names(incidents)
    return state


async def _verify(
    policy: Any,
    incident: Mapping[str, Any],
    summary: Any,
    reports: Mapping[str, Mapping[str, Any] | None],
    held: set[str],
    override: Mapping[str, Any] | None,
    out: DetectionOutcome,
    *,
    kube: KubeIO,
    now_s: float,
    events: EventSink | None,
) -> dict[str, Any] | None:
    """Step 3 for one incident: add this probe's figure to a Verifying remediation and, at the
    verdict, keep (Remediated) or roll back and escalate (RemediationIneffective). Returns the
    incident with its new status, or None when nothing changed."""
    status = incident.get("status") or {}
    current = status.get("remediation")
    if not lifecycle.is_automatic(incident) or not isinstance(current, Mapping):
        return None
    if current.get("state") != remediation.VERIFYING:
        return None
    name = _name(incident)
    symptom = lifecycle.symptom_of(incident) or ""
    figure, counts, baseline = remediation.probe_figure(symptom, reports, current.get("baseline"))
    shown = symptom in summary.symptoms
    if name not in held:
        # The symptom cleared over the configured probes: the figure recovered.
        if figure is None:
            figure = remediation.symptom_figure(symptom, reports)
        probes = [*(current.get("probes") or []), *([figure] if figure is not None else [])][-100:]
        updated, decided = remediation.conclude({**current, "probes": probes}, symptom, figure, False, now_s)
        verdict: str | None = decided
    else:
        updated, verdict = remediation.verify_step(
            current, symptom, figure, shown, now_s, counts=counts, baseline=baseline
        )
    stamp = rfc3339(now_s)
    generation = (incident.get("metadata") or {}).get("generation")
    namespace = policy.namespace
    patch: dict[str, Any] = {"remediation": updated}
    conditions = list(status.get("conditions") or [])
    if verdict == remediation.REMEDIATED:
        message = str(updated["message"])
        patch["conditions"] = conds.set_condition(
            conditions, conds.REMEDIATED, "True", remediation.IMPROVED_REASON, message, stamp, generation
        )
        permanent = (updated.get("permanentPatch") or {}).get("command")
        if permanent:
            message += f"; the override expires at {updated.get('expiresAt')}: make it permanent: {permanent}"
        await _post(events, "Normal", remediation.REMEDIATED, f"CacheIncident {name}: {message}")
    elif verdict == remediation.INEFFECTIVE:
        if isinstance(override, Mapping) and override.get("incident") == name:
            out.status["override"] = None  # the next pass renders and pushes the spec's own config
            updated["rolledBack"] = True
            updated["message"] = f"{updated['message']}; override rolled back"
        message = f"{updated['message']}; escalated to a person"
        conditions = conds.incident_conditions(
            "Failed", message, conditions, stamp, generation, remediation.INEFFECTIVE_REASON
        )
        patch["conditions"] = conds.set_condition(
            conditions, conds.REMEDIATED, "False", remediation.INEFFECTIVE_REASON, message, stamp, generation
        )
        patch["remediation"] = updated
        patch["message"] = message
        if not status.get("resolvedAt"):
            patch["phase"] = "Failed"
        else:
            patch["resolvedFromPhase"] = "Failed"
        await _post(events, "Warning", remediation.INEFFECTIVE_REASON, f"CacheIncident {name}: {message}")
    if verdict is not None:
        out.verdicts.append((verdict, symptom or "unknown"))
    await kube.patch_status(API_VERSION, "CacheIncident", namespace, name, patch)
    return {**incident, "status": {**status, **patch}}
