"""Safety decisions for incidents, from facts kept in the cluster only.

Everything a decision needs is read from the CachePolicy (``spec.paused``, ``spec.remediation``,
``status.lastActions``) and the list of the policy's CacheIncidents, so an operator restart, or two
operator replicas, decide the same way. Reasons are stable CamelCase strings: they become condition
reasons and Event reasons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cache_operator.api.cacheincident import RECOMMEND_ONLY_SYMPTOMS, TERMINAL_PHASES
from cache_operator.api.cachepolicy import RemediationSpec
from cache_operator.incidents.lifecycle import tracks_symptom
from cache_operator.incidents.naming import LABEL_SOURCE, SOURCE_AUTO
from cache_runtime.actions import DISRUPTIVE_ACTIONS, INCIDENT_ACTIONS
from cache_runtime.timefmt import parse_rfc3339, rfc3339

# How soon to look again when an action waits for another incident to finish: about a probe interval.
RECHECK_SECONDS = 15.0

ALLOWED = "Allowed"
DRY_RUN = "DryRun"
PAUSED = "PolicyPaused"
REMEDIATION_OFF = "RemediationOff"
RECOMMEND_ONLY = "RecommendOnly"
ACTION_NOT_ALLOWED = "ActionNotAllowed"
COOLDOWN = "CooldownActive"
DISRUPTIVE_RUNNING = "DisruptiveActionRunning"
STORM_LIMIT = "StormLimitReached"
UNKNOWN_ACTION = "UnknownAction"
SAME_ACTION_RUNNING = "SameActionRunning"

Source = Literal["Manual", "Auto"]


@dataclass(frozen=True)
class Decision:
    """Whether to go ahead; ``reason`` is stable CamelCase, ``retry_after_s`` None = do not retry."""

    allowed: bool
    reason: str
    message: str = ""
    retry_after_s: float | None = None


@dataclass(frozen=True)
class PolicyState:
    """The facts of a policy that safety reads: paused, and the last automatic run per action."""

    name: str
    paused: bool = False
    last_actions: Mapping[str, tuple[str, float]] = field(default_factory=dict)  # action → (incident, at)

    @classmethod
    def from_policy(cls, policy: Mapping[str, Any]) -> PolicyState:
        """From a CachePolicy object (``metadata``, ``spec``, ``status``); bad status entries raise."""
        spec = policy.get("spec") or {}
        status = policy.get("status") or {}
        last: dict[str, tuple[str, float]] = {}
        for index, record in enumerate(status.get("lastActions") or []):
            where = f"status.lastActions[{index}]"
            if not isinstance(record, Mapping) or record.get("action") not in INCIDENT_ACTIONS:
                raise ValueError(
                    f"{where}={str(record)[:80]!r} is invalid; accepted: {{action, incident, at}} with "
                    f"action one of {', '.join(INCIDENT_ACTIONS)}"
                )
            last[record["action"]] = (
                str(record.get("incident", "")),
                parse_rfc3339(record.get("at"), f"{where}.at"),
            )
        return cls(
            name=str((policy.get("metadata") or {}).get("name", "")),
            paused=bool(spec.get("paused", False)),
            last_actions=last,
        )


def record_action(
    last_actions: Sequence[Mapping[str, Any]] | None, action: str, incident: str, now: float
) -> list[dict[str, Any]]:
    """``status.lastActions`` with ``action``'s entry set to (incident, now); write it before running."""
    kept = [dict(record) for record in last_actions or [] if record.get("action") != action]
    kept.append({"action": action, "incident": incident, "at": rfc3339(now)})
    return sorted(kept, key=lambda record: str(record.get("action")))


def _phase(incident: Mapping[str, Any]) -> str:
    return str((incident.get("status") or {}).get("phase") or "Pending")


def _name(incident: Mapping[str, Any]) -> str:
    return str((incident.get("metadata") or {}).get("name", ""))


def is_automatic(incident: Mapping[str, Any]) -> bool:
    """Opened by the operator (label, or status.detection.source Auto)."""
    labels = (incident.get("metadata") or {}).get("labels") or {}
    detection = (incident.get("status") or {}).get("detection") or {}
    return labels.get(LABEL_SOURCE) == SOURCE_AUTO or detection.get("source") == "Auto"


def is_open(incident: Mapping[str, Any]) -> bool:
    """Not in a terminal phase (Recommended incidents wait for a person: they are open)."""
    return _phase(incident) not in TERMINAL_PHASES


def _running_disruptive(incidents: Sequence[Mapping[str, Any]], exclude: str | None) -> list[str]:
    names = []
    for incident in incidents:
        spec = incident.get("spec") or {}
        if (
            _name(incident) != exclude
            and _phase(incident) == "Running"
            and spec.get("action") in DISRUPTIVE_ACTIONS
            and not spec.get("dryRun", False)
        ):
            names.append(_name(incident))
    return sorted(names)


def _running_same(incidents: Sequence[Mapping[str, Any]], exclude: str | None, action: str) -> list[str]:
    """Other incidents of the policy running ``action`` now (dry runs aside)."""
    return sorted(
        _name(i)
        for i in incidents
        if _name(i) != exclude
        and _phase(i) == "Running"
        and (i.get("spec") or {}).get("action") == action
        and not (i.get("spec") or {}).get("dryRun", False)
    )


def may_run(
    action: str,
    policy_state: PolicyState,
    incidents: Sequence[Mapping[str, Any]],
    now: float,
    remediation: RemediationSpec,
    *,
    source: Source = "Auto",
    incident: str | None = None,
    dry_run: bool = False,
    symptom: str | None = None,
) -> Decision:
    """May the incident ``incident`` run ``action`` on the policy's pods now?

    Checked in this order: paused; for automatic incidents the remediation mode, allowedActions and
    the per-action cooldown (a cooldown started by this very incident does not hold it back, so a
    resumed incident continues); then at most ``maxConcurrent`` (default 1) disruptive actions
    running per policy. A person's (Manual) incident is not subject to mode, allowedActions or
    cooldown. A dry run changes nothing, so only pause holds it back. ``incidents`` are the
    policy's CacheIncident objects (this one may be among them). An automatic incident of a
    recommend-only ``symptom`` (RedisOutOfMemory) is only ever recommended, even in Auto mode.
    """
    if action not in INCIDENT_ACTIONS:
        return Decision(
            False, UNKNOWN_ACTION, f"action {action!r} is not one of {', '.join(INCIDENT_ACTIONS)}"
        )
    if policy_state.paused:
        return Decision(False, PAUSED, f"CachePolicy {policy_state.name} has spec.paused: true")
    if dry_run:
        return Decision(True, DRY_RUN, "dry run: planned and recorded, nothing changes")
    if source == "Auto":
        if remediation.mode == "Off":
            return Decision(False, REMEDIATION_OFF, "spec.remediation.mode is Off: detect only")
        if symptom in RECOMMEND_ONLY_SYMPTOMS:
            return Decision(
                False,
                RECOMMEND_ONLY,
                f"{symptom} is never remediated automatically (the fix is Redis's maxmemory or "
                f"maxmemory-policy, see the diagnosis): {action} is recommended, not run",
            )
        if remediation.mode == "Recommend":
            return Decision(
                False, RECOMMEND_ONLY, f"spec.remediation.mode is Recommend: {action} is recommended, not run"
            )
        if action not in remediation.allowed_actions:
            return Decision(
                False,
                ACTION_NOT_ALLOWED,
                f"{action} is not in spec.remediation.allowedActions "
                f"({', '.join(remediation.allowed_actions) or 'none'})",
            )
        last = policy_state.last_actions.get(action)
        if last is not None and last[0] != incident:
            remaining = last[1] + remediation.cooldown_seconds - now
            if remaining > 0:
                return Decision(
                    False,
                    COOLDOWN,
                    f"{action} ran automatically at {rfc3339(last[1])} (incident {last[0]}); "
                    f"cooldown {remediation.cooldown_seconds}s",
                    retry_after_s=remaining,
                )
        # Two automatic incidents never run the same action on one policy at once (the cooldown
        # covers the time after; with cooldownSeconds 0 this is what still holds).
        same = _running_same(incidents, incident, action)
        if same:
            return Decision(
                False,
                SAME_ACTION_RUNNING,
                f"{action} is already running on this policy: {', '.join(same)}",
                retry_after_s=RECHECK_SECONDS,
            )
    if action in DISRUPTIVE_ACTIONS:
        running = _running_disruptive(incidents, incident)
        if len(running) >= remediation.max_concurrent:
            return Decision(
                False,
                DISRUPTIVE_RUNNING,
                f"disruptive action already running on this policy: {', '.join(running)}",
                retry_after_s=RECHECK_SECONDS,
            )
    return Decision(True, ALLOWED, f"{action} may run")


def may_open(
    policy_state: PolicyState, incidents: Sequence[Mapping[str, Any]], remediation: RemediationSpec
) -> Decision:
    """May the operator open one more automatic incident? No when the open automatic ones reach
    ``spec.remediation.stormLimit`` (a storm of symptoms is one problem, not fifty incidents).

    An automatic incident is open while its phase is not terminal *or* its symptom has not cleared
    (no ``status.resolvedAt``): one whose action already ran still stands for an ongoing symptom."""
    open_auto = sorted(_name(i) for i in incidents if is_automatic(i) and (is_open(i) or tracks_symptom(i)))
    if len(open_auto) >= remediation.storm_limit:
        return Decision(
            False,
            STORM_LIMIT,
            f"{len(open_auto)} automatic incidents open (stormLimit {remediation.storm_limit})",
            retry_after_s=RECHECK_SECONDS,
        )
    return Decision(True, ALLOWED, "below the storm limit")


def incidents_to_delete(
    incidents: Sequence[Mapping[str, Any]],
    now: float,
    ttl: float,
    history_limit: int,
    min_age: float = 0.0,
) -> list[str]:
    """Names of finished incidents to delete: ended more than ``ttl`` seconds ago, or beyond the
    newest ``history_limit`` finished ones of their policy. Open incidents, and automatic ones whose
    symptom has not cleared, are never deleted; a finished incident without a valid
    ``status.completedAt`` is kept only by the history limit. The history limit spares incidents that
    ended less than ``min_age`` seconds ago (a person or a pipeline still reading the outcome); the TTL
    does not."""
    by_policy: dict[str, list[tuple[float, str]]] = {}
    doomed: set[str] = set()
    for incident in incidents:
        if is_open(incident) or tracks_symptom(incident):
            continue
        name = _name(incident)
        policy = str(((incident.get("spec") or {}).get("policyRef") or {}).get("name", ""))
        try:
            ended = parse_rfc3339((incident.get("status") or {}).get("completedAt"), "status.completedAt")
        except ValueError:
            ended = float("-inf")  # oldest first when the history limit trims
        else:
            if now - ended >= ttl:
                doomed.add(name)
                continue
        by_policy.setdefault(policy, []).append((ended, name))
    for finished in by_policy.values():
        finished.sort(key=lambda item: (item[0], item[1]), reverse=True)
        doomed.update(name for ended, name in finished[history_limit:] if now - ended >= min_age)
    return sorted(doomed)
