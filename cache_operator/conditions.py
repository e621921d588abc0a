"""Pure kstatus condition logic: set conditions the Kubernetes way and compute a policy's and an
incident's conditions from what the operator observed.

Conventions (Kubernetes API conventions, kstatus): conditions are keyed by ``type``; ``status`` is
True/False/Unknown; ``reason`` is a stable CamelCase word; ``lastTransitionTime`` changes only when the
status changes; ``observedGeneration`` says which spec they describe. ``Reconciling`` and ``Stalled``
are "abnormal-true" (True only while it applies) so kstatus, Flux and Argo CD read health from them;
``Ready`` (policies) and ``Succeeded`` (incidents) are the summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONFIG_APPLIED = "ConfigApplied"
HEALTHY = "Healthy"
REDIS_CONNECTED = "RedisConnected"
SUCCEEDED = "Succeeded"
RUNNING = "Running"
SYMPTOMS_TRACKED = "SymptomsTracked"
RESOLVED = "Resolved"
# Auto incidents whose action ran: Unknown while its effect is verified, True when the symptom's figure
# improved, False (RemediationIneffective) when it did not (cache_operator.incidents.remediation).
REMEDIATED = "Remediated"
POLICY_CONDITION_TYPES = (READY, RECONCILING, STALLED, CONFIG_APPLIED, HEALTHY, REDIS_CONNECTED)
# Set by automatic detection (cache_operator.incidents.automatic_io), only on passes that count a probe, and
# carried over unchanged by policy_conditions on the others.
DETECTION_CONDITION_TYPES = (SYMPTOMS_TRACKED,)
INCIDENT_CONDITION_TYPES = (SUCCEEDED, RUNNING, RESOLVED, REMEDIATED)
# kstatus (sigs.k8s.io/cli-utils: Helm 4 --wait, Flux without healthCheckExprs, kpt) reads only these
# two "abnormal-true" conditions and status.observedGeneration: CacheIncidents carry them too, derived
# from the phase by incident_kstatus_conditions.
INCIDENT_KSTATUS_TYPES = (RECONCILING, STALLED)
STATUSES = ("True", "False", "Unknown")


def get_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    """The condition of ``type_``, or None."""
    for condition in conditions or ():
        if condition.get("type") == type_:
            return dict(condition)
    return None


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    """Whether the condition of ``type_`` is present with status True."""
    condition = get_condition(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def set_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str, status: str, reason: str,
                  message: str, now: str, observed_generation: int | None = None) -> list[dict[str, Any]]:
    """A new list with the condition of ``type_`` set; the others unchanged and in place.

    ``lastTransitionTime`` is kept when the status did not change (only reason/message moved), so a
    condition that has been True for an hour still says so after every reconcile.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} of condition {type_}: accepted: {', '.join(STATUSES)}")
    if not reason or not reason[0].isalpha() or not reason.replace("_", "").isalnum():
        raise ValueError(f"reason {reason!r} of condition {type_}: a CamelCase word is required")
    entry: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message,
                             "lastTransitionTime": now}
    if observed_generation is not None:
        entry["observedGeneration"] = observed_generation
    result: list[dict[str, Any]] = []
    replaced = False
    for existing in conditions or ():
        if existing.get("type") != type_:
            result.append(dict(existing))
            continue
        if existing.get("status") == status and existing.get("lastTransitionTime"):
            entry["lastTransitionTime"] = existing["lastTransitionTime"]
        result.append(entry)
        replaced = True
    if not replaced:
        result.append(entry)
    return result


def conditions_changed(before: Sequence[Mapping[str, Any]] | None,
                       after: Sequence[Mapping[str, Any]] | None) -> bool:
    """Whether a status patch is needed (order-insensitive comparison)."""
    def keyed(items: Sequence[Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
        return {str(item.get("type")): dict(item) for item in items or ()}
    return keyed(before) != keyed(after)


# ------------------------------------------------------------------------------------------------
# CachePolicy


@dataclass(frozen=True, slots=True)
class PolicyObservation:
    """What one reconcile pass of a CachePolicy saw; the input of :func:`policy_conditions`.

    ``spec_error`` is set when the spec was rejected (then nothing else matters: Stalled), with
    ``spec_error_reason`` (``InvalidSpec``, or ``InvalidTokenSecret`` when the policy's token Secret
    holds a value that is not a token list: a person must fix it, as with a bad spec).
    ``apply_error`` is a transient failure applying children or listing pods (Reconciling, retried).
    ``child_rejected`` is the message of a child the API server refused as invalid (HTTP 422): the
    spec cannot be acted on as it is (Stalled, reason ``ChildRejected``); the pods' own conditions are
    still computed from what was observed of them.
    ``health`` is the aggregated verdict (Healthy/Degraded/Unhealthy/Unknown); ``redis`` the
    aggregated Redis state (Connected/Degraded/Disconnected/Disabled/Unknown).
    """

    generation: int | None
    spec_error: str | None = None
    spec_error_reason: str = "InvalidSpec"
    paused: bool = False
    apply_error: str | None = None
    child_rejected: str | None = None
    config_hash: str | None = None
    pods_desired: int = 0
    pods_ready: int = 0
    pods_configured: int = 0
    probed: bool = False
    health: str = "Unknown"
    health_message: str = ""
    redis: str = "Unknown"
    redis_message: str = ""


def _short(config_hash: str | None) -> str:
    return (config_hash or "?")[:12]


def policy_conditions(observed: PolicyObservation, previous: Sequence[Mapping[str, Any]] | None,
                      now: str) -> list[dict[str, Any]]:
    """All six policy conditions for ``observed``, keeping transition times from ``previous``; the
    detection condition (``SymptomsTracked``) is carried over from ``previous`` as it was."""
    gen = observed.generation
    kept = POLICY_CONDITION_TYPES + DETECTION_CONDITION_TYPES
    conditions = [dict(c) for c in previous or () if c.get("type") in kept]

    def put(type_: str, status: str, reason: str, message: str = "") -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, status, reason, message, now, gen)

    if observed.spec_error is not None:
        # No retry loop: the spec must change. Everything else is unknown until then.
        reason = observed.spec_error_reason
        put(STALLED, "True", reason, observed.spec_error)
        put(RECONCILING, "False", reason, "waiting for a corrected spec")
        put(READY, "False", reason, observed.spec_error)
        put(CONFIG_APPLIED, "Unknown", reason, "no config could be resolved from the spec")
        put(HEALTHY, "Unknown", reason, "")
        put(REDIS_CONNECTED, "Unknown", reason, "")
        return _ordered(conditions)

    rejected = observed.child_rejected if not observed.paused else None  # paused: nothing is applied
    if rejected is None:
        put(STALLED, "False", "SpecAccepted")
    desired, ready, configured = observed.pods_desired, observed.pods_ready, observed.pods_configured
    hash_text = _short(observed.config_hash)

    if desired == 0:
        put(CONFIG_APPLIED, "True", "NoTargets", "no target pods; the ConfigMap holds config " + hash_text)
    else:
        progress = f"{configured}/{desired} pods run config {hash_text}"
        if configured >= desired:
            put(CONFIG_APPLIED, "True", "AllPodsConfigured", progress)
        else:
            put(CONFIG_APPLIED, "False", "PodsPending", progress)

    if not observed.probed or desired == 0:
        put(HEALTHY, "Unknown", "NotProbed" if desired else "NoTargets", observed.health_message)
    elif observed.health == "Healthy":
        put(HEALTHY, "True", "Healthy", observed.health_message)
    elif observed.health in ("Degraded", "Unhealthy"):
        put(HEALTHY, "False", observed.health, observed.health_message)
    else:
        put(HEALTHY, "Unknown", "NoVerdict", observed.health_message)

    redis_states = {
        "Connected": ("True", "Connected"),
        "Disabled": ("True", "MemoryOnly"),
        "Degraded": ("False", "Degraded"),
        "Disconnected": ("False", "RedisUnavailable"),
    }
    status, reason = redis_states.get(observed.redis, ("Unknown", "NotProbed"))
    put(REDIS_CONNECTED, status, reason, observed.redis_message)

    blocking: tuple[str, str] | None = None
    if observed.apply_error is not None:
        blocking = ("ApplyFailed", observed.apply_error)
    elif ready < desired:
        blocking = ("PodsNotReady", f"{ready}/{desired} pods ready")
    elif configured < desired:
        blocking = ("ConfigPending", f"{configured}/{desired} pods run config {hash_text}")

    if rejected is not None:
        # Not retried in a loop: the same spec renders the same refused object. The reconciler tries
        # again on the next spec change and once per probe interval (an admission policy may change).
        put(STALLED, "True", "ChildRejected", rejected)
        put(RECONCILING, "False", "ChildRejected", "waiting for a corrected spec")
        put(READY, "False", "ChildRejected", rejected)
        return _ordered(conditions)
    if observed.paused:
        put(RECONCILING, "False", "Paused", "spec.paused is true: the operator changes nothing")
    elif blocking is not None:
        put(RECONCILING, "True", *blocking)
    else:
        put(RECONCILING, "False", "Converged")

    if blocking is None:
        put(READY, "True", "Ready", f"{ready}/{desired} pods ready, config {hash_text} applied")
    else:
        reason, message = blocking
        put(READY, "False", "Paused" if observed.paused else reason, message)
    return _ordered(conditions)


def _ordered(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {
        name: index
        for index, name in enumerate(
            POLICY_CONDITION_TYPES + DETECTION_CONDITION_TYPES + INCIDENT_CONDITION_TYPES
        )
    }
    return sorted(conditions, key=lambda c: order.get(str(c.get("type")), len(order)))


def pods_summary(ready: int, desired: int) -> str:
    """``ready/desired`` for the Pods printer column."""
    return f"{ready}/{desired}"


def percent(rate: float | None) -> str | None:
    """A 0..1 rate as ``93.1%`` for the Hit Rate printer column; None stays None."""
    if rate is None:
        return None
    return f"{rate * 100:.1f}%"


# ------------------------------------------------------------------------------------------------
# CacheIncident


def incident_conditions(phase: str, message: str, previous: Sequence[Mapping[str, Any]] | None, now: str,
                        generation: int | None = None, reason: str | None = None) -> list[dict[str, Any]]:
    """``Succeeded``, ``Running``, ``Reconciling`` and ``Stalled`` for an incident in ``phase``: the one
    mapping every writer uses.

    Succeeded: True for Succeeded/Resolved, False for Failed (reason Failed) and Skipped, Unknown while
    Pending/Running/Recommended (a recommendation awaits a person: not finished, not failed).
    Running: True only while Running. ``reason`` (the executor's, e.g. ``CooldownActive``) replaces
    the phase's default reason on both conditions. Reconciling and Stalled: see
    :func:`incident_kstatus_conditions`.
    """
    kept = INCIDENT_CONDITION_TYPES + INCIDENT_KSTATUS_TYPES
    conditions = [dict(c) for c in previous or () if c.get("type") in kept]
    succeeded = {
        "Succeeded": ("True", "Succeeded"),
        "Resolved": ("True", "Resolved"),
        "Failed": ("False", "Failed"),
        "Skipped": ("False", "Skipped"),
        "Recommended": ("Unknown", "AwaitingApproval"),
        "Running": ("Unknown", "Running"),
        "Pending": ("Unknown", "Pending"),
    }
    if phase not in succeeded:
        raise ValueError(f"phase {phase!r}: accepted: {', '.join(succeeded)}")
    status, default_reason = succeeded[phase]
    conditions = set_condition(conditions, SUCCEEDED, status, reason or default_reason, message, now,
                               generation)
    running = ("True", reason or "Running") if phase == "Running" else ("False", reason or phase)
    conditions = set_condition(conditions, RUNNING, *running, message if phase == "Running" else "", now,
                               generation)
    conditions = incident_kstatus_conditions(conditions, phase, message, now, generation, reason)
    return _ordered(conditions)


def incident_kstatus_conditions(conditions: Sequence[Mapping[str, Any]] | None, phase: str, message: str,
                                now: str, generation: int | None = None,
                                reason: str | None = None) -> list[dict[str, Any]]:
    """``conditions`` with the incident's ``Reconciling`` and ``Stalled`` set from ``phase``, so that
    kstatus reads what the Argo CD health.lua and the Flux healthCheckExprs read:

    - Pending, Running (the action waits or runs): Reconciling=True -> kstatus InProgress;
    - Failed, Skipped (the action did not do its work): Stalled=True -> kstatus Failed;
    - Succeeded, Resolved, Recommended (done, or waiting for a person, not failing a sync): both
      False -> kstatus Current.
    """
    if phase in ("Pending", "Running"):
        reconciling, stalled = ("True", reason or phase), ("False", phase)
    elif phase in ("Failed", "Skipped"):
        reconciling, stalled = ("False", phase), ("True", reason or phase)
    else:
        reconciling, stalled = ("False", phase), ("False", phase)
    out = set_condition(conditions, RECONCILING, reconciling[0], reconciling[1],
                        message if reconciling[0] == "True" else "", now, generation)
    return set_condition(out, STALLED, stalled[0], stalled[1], message if stalled[0] == "True" else "", now,
                         generation)
