"""Safety decisions: every reason, from cluster-kept state only."""

from __future__ import annotations

from typing import Any

import pytest

from cache_operator.api.cachepolicy import RemediationSpec
from cache_operator.incidents import safety
from cache_operator.incidents.safety import (
    PolicyState,
    incidents_to_delete,
    may_open,
    may_run,
    record_action,
)
from cache_runtime.timefmt import rfc3339

NOW = 1_800_000_000.0


def remediation(**fields: Any) -> RemediationSpec:
    """A remediation spec as the API server would default it, with these camelCase fields."""
    return RemediationSpec.model_validate(
        {"mode": "Auto", "allowedActions": ["gc", "clear", "isolate"], **fields}
    )


def incident(
    name: str,
    action: str = "clear",
    phase: str = "Running",
    *,
    policy: str = "web",
    auto: bool = False,
    dry_run: bool = False,
    completed: float | None = None,
) -> dict[str, Any]:
    """A CacheIncident object as the API returns it (only the fields safety reads)."""
    status: dict[str, Any] = {"phase": phase}
    if completed is not None:
        status["completedAt"] = rfc3339(completed)
    labels = {"cachewarden.io/incident-source": "auto"} if auto else {}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"policyRef": {"name": policy}, "action": action, "dryRun": dry_run},
        "status": status,
    }


def policy(paused: bool = False, last: list[dict[str, Any]] | None = None) -> PolicyState:
    return PolicyState.from_policy(
        {"metadata": {"name": "web"}, "spec": {"paused": paused}, "status": {"lastActions": last or []}}
    )


RECENT_CLEAR = [{"action": "clear", "incident": "web-old", "at": rfc3339(NOW - 100)}]


@pytest.mark.parametrize(
    ("case", "action", "state", "incidents", "spec", "kwargs", "reason", "allowed", "retry"),
    [
        ("auto allowed", "gc", policy(), [], remediation(), {}, "Allowed", True, None),
        ("paused beats all", "gc", policy(paused=True), [], remediation(), {}, "PolicyPaused", False, None),
        (
            "paused manual",
            "gc",
            policy(paused=True),
            [],
            remediation(),
            {"source": "Manual"},
            "PolicyPaused",
            False,
            None,
        ),
        (
            "paused dry run",
            "gc",
            policy(paused=True),
            [],
            remediation(),
            {"dry_run": True},
            "PolicyPaused",
            False,
            None,
        ),
        ("off", "gc", policy(), [], remediation(mode="Off"), {}, "RemediationOff", False, None),
        ("recommend", "gc", policy(), [], remediation(mode="Recommend"), {}, "RecommendOnly", False, None),
        ("not allowed", "reconnect-redis", policy(), [], remediation(), {}, "ActionNotAllowed", False, None),
        (
            "manual ignores mode",
            "reconnect-redis",
            policy(),
            [],
            remediation(mode="Off"),
            {"source": "Manual"},
            "Allowed",
            True,
            None,
        ),
        (
            "cooldown",
            "clear",
            policy(last=RECENT_CLEAR),
            [],
            remediation(cooldownSeconds=300),
            {},
            "CooldownActive",
            False,
            200.0,
        ),
        (
            "cooldown over",
            "clear",
            policy(last=RECENT_CLEAR),
            [],
            remediation(cooldownSeconds=100),
            {},
            "Allowed",
            True,
            None,
        ),
        (
            "own cooldown resumes",
            "clear",
            policy(last=RECENT_CLEAR),
            [],
            remediation(),
            {"incident": "web-old"},
            "Allowed",
            True,
            None,
        ),
        (
            "manual ignores cooldown",
            "clear",
            policy(last=RECENT_CLEAR),
            [],
            remediation(),
            {"source": "Manual"},
            "Allowed",
            True,
            None,
        ),
        (
            "cooldown is per action",
            "gc",
            policy(last=RECENT_CLEAR),
            [],
            remediation(),
            {},
            "Allowed",
            True,
            None,
        ),
        (
            "disruptive running",
            "clear",
            policy(),
            [incident("other", "isolate")],
            remediation(),
            {},
            "DisruptiveActionRunning",
            False,
            safety.RECHECK_SECONDS,
        ),
        (
            "manual waits too",
            "clear",
            policy(),
            [incident("other", "isolate")],
            remediation(),
            {"source": "Manual"},
            "DisruptiveActionRunning",
            False,
            safety.RECHECK_SECONDS,
        ),
        (
            "itself does not count",
            "clear",
            policy(),
            [incident("me", "clear")],
            remediation(),
            {"incident": "me"},
            "Allowed",
            True,
            None,
        ),
        (
            "finished does not count",
            "clear",
            policy(),
            [incident("o", "clear", "Succeeded")],
            remediation(),
            {},
            "Allowed",
            True,
            None,
        ),
        (
            "dry-run other does not count",
            "clear",
            policy(),
            [incident("o", "clear", dry_run=True)],
            remediation(),
            {},
            "Allowed",
            True,
            None,
        ),
        (
            "non-disruptive others do not count",
            "clear",
            policy(),
            [incident("o", "gc")],
            remediation(),
            {},
            "Allowed",
            True,
            None,
        ),
        (
            "non-disruptive runs beside",
            "gc",
            policy(),
            [incident("o", "isolate")],
            remediation(),
            {},
            "Allowed",
            True,
            None,
        ),
        (
            "maxConcurrent 2",
            "clear",
            policy(),
            [incident("o", "isolate")],
            remediation(maxConcurrent=2),
            {},
            "Allowed",
            True,
            None,
        ),
        (
            "dry run skips limits",
            "clear",
            policy(last=RECENT_CLEAR),
            [incident("o", "isolate")],
            remediation(mode="Off"),
            {"dry_run": True},
            "DryRun",
            True,
            None,
        ),
        ("unknown action", "reboot", policy(), [], remediation(), {}, "UnknownAction", False, None),
    ],
)
def test_may_run(
    case: str,
    action: str,
    state: PolicyState,
    incidents: list[dict[str, Any]],
    spec: RemediationSpec,
    kwargs: dict[str, Any],
    reason: str,
    allowed: bool,
    retry: float | None,
) -> None:
    decision = may_run(action, state, incidents, NOW, spec, **kwargs)
    assert (decision.allowed, decision.reason, decision.retry_after_s) == (allowed, reason, retry), case
    assert decision.message


def test_storm_limit_counts_open_automatic_incidents_only() -> None:
    spec = remediation(stormLimit=2)
    calm = [incident("a", auto=True), incident("b", phase="Resolved", auto=True), incident("m")]
    assert may_open(policy(), calm, spec).reason == "Allowed"
    storm = [*calm, incident("c", phase="Recommended", auto=True)]
    decision = may_open(policy(), storm, spec)
    assert (decision.allowed, decision.reason) == (False, "StormLimitReached")
    by_status = {**incident("d"), "status": {"phase": "Pending", "detection": {"source": "Auto"}}}
    assert not may_open(policy(), [incident("a", auto=True), by_status], spec).allowed


def test_record_action_replaces_that_actions_entry() -> None:
    first = record_action(None, "clear", "web-a", NOW)
    again = record_action(
        [*first, {"action": "gc", "incident": "x", "at": rfc3339(NOW)}], "clear", "web-b", NOW + 5
    )
    assert [r["action"] for r in again] == ["clear", "gc"]
    assert again[0] == {"action": "clear", "incident": "web-b", "at": rfc3339(NOW + 5)}
    state = PolicyState.from_policy({"metadata": {"name": "web"}, "status": {"lastActions": again}})
    assert state.last_actions["clear"] == ("web-b", NOW + 5)


@pytest.mark.parametrize(
    ("last", "field"),
    [
        ([{"action": "reboot", "incident": "x", "at": "2026-01-01T00:00:00Z"}], r"lastActions\[0\]="),
        (["clear"], r"lastActions\[0\]="),
        ([{"action": "clear", "incident": "x", "at": "soon"}], r"lastActions\[0\]\.at="),
    ],
)
def test_bad_last_actions_name_the_field(last: list[Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PolicyState.from_policy({"status": {"lastActions": last}})


def test_gc_ttl_and_history_limit() -> None:
    hour = 3600.0
    incidents = [
        incident("open", phase="Running"),
        incident("recommended", phase="Recommended"),
        incident("expired", phase="Succeeded", completed=NOW - 2 * hour),
        incident("new1", phase="Failed", completed=NOW - 60),
        incident("new2", phase="Resolved", completed=NOW - 120),
        incident("new3", phase="Skipped", completed=NOW - 180),
        incident("no-time", phase="Succeeded"),
        incident("other-policy", phase="Succeeded", completed=NOW - 300, policy="api"),
    ]
    assert incidents_to_delete(incidents, NOW, hour, 10) == ["expired"]
    assert incidents_to_delete(incidents, NOW, hour, 2) == ["expired", "new3", "no-time"]
    assert incidents_to_delete(incidents, NOW, hour, 0) == [
        "expired",
        "new1",
        "new2",
        "new3",
        "no-time",
        "other-policy",
    ]
    assert incidents_to_delete(incidents, NOW, 60, 10) == ["expired", "new1", "new2", "new3", "other-policy"]
    # A grace period spares recently ended incidents from the history limit (not from the TTL).
    assert incidents_to_delete(incidents, NOW, hour, 0, min_age=150) == [
        "expired",
        "new3",
        "no-time",
        "other-policy",
    ]
    assert incidents_to_delete(incidents, NOW, 60, 0, min_age=1000) == [
        "expired",
        "new1",
        "new2",
        "new3",
        "no-time",
        "other-policy",
    ]


def test_recommend_only_symptom_is_never_run_automatically() -> None:
    spec = remediation()
    auto = may_run("clear", policy(), [], NOW, spec, symptom="RedisOutOfMemory")
    assert (auto.allowed, auto.reason) == (False, "RecommendOnly") and "maxmemory" in auto.message
    off = may_run("clear", policy(), [], NOW, remediation(mode="Off"), symptom="RedisOutOfMemory")
    assert off.reason == "RemediationOff"
    manual = may_run("clear", policy(), [], NOW, spec, source="Manual", symptom="RedisOutOfMemory")
    assert manual.allowed  # a person's incident runs
    assert may_run("clear", policy(), [], NOW, spec, symptom="HighMemory").allowed


def test_two_automatic_incidents_never_run_the_same_action_at_once() -> None:
    """Even a non-disruptive action, with cooldown 0: an automatic incident waits while another
    incident of the policy runs the same action; another action, a dry run or a person's incident
    is not held back by it."""
    spec = remediation(cooldownSeconds=0)
    running = [incident("web-a", "gc", "Running", auto=True)]
    held = may_run("gc", policy(), running, NOW, spec, incident="web-b")
    assert (held.allowed, held.reason) == (False, "SameActionRunning") and "web-a" in held.message
    assert may_run("gc", policy(), running, NOW, spec, incident="web-a").allowed  # itself
    assert may_run("clear", policy(), running, NOW, spec, incident="web-b").allowed
    assert may_run("gc", policy(), running, NOW, spec, incident="web-b", dry_run=True).allowed
    assert may_run("gc", policy(), running, NOW, spec, incident="web-b", source="Manual").allowed
    finished = [incident("web-a", "gc", "Succeeded", auto=True)]
    assert may_run("gc", policy(), finished, NOW, spec, incident="web-b").allowed
