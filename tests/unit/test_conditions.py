"""kstatus condition helpers and the policy/incident condition tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cache_operator import conditions as c
from cache_operator.api.common import Condition
from cache_runtime.timefmt import rfc3339

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"


def by_type(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["type"]: item for item in items}


def test_rfc3339() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert rfc3339(moment) == "2026-01-02T01:04:05Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        rfc3339(dt.datetime(2026, 1, 1))


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    first = c.set_condition([], "Ready", "False", "PodsNotReady", "0/2", T0, 1)
    second = c.set_condition(first, "Ready", "False", "ConfigPending", "1/2", T1, 2)
    assert second == [{"type": "Ready", "status": "False", "reason": "ConfigPending", "message": "1/2",
                       "lastTransitionTime": T0, "observedGeneration": 2}]
    third = c.set_condition(second, "Ready", "True", "Ready", "", T1, 2)
    assert third[0]["lastTransitionTime"] == T1
    assert first[0]["reason"] == "PodsNotReady"  # the input is not mutated


def test_set_condition_leaves_other_conditions_alone() -> None:
    items = c.set_condition([], "Ready", "True", "Ready", "", T0)
    items = c.set_condition(items, "Stalled", "False", "SpecAccepted", "", T0)
    items = c.set_condition(items, "Ready", "False", "ApplyFailed", "boom", T1)
    assert [item["type"] for item in items] == ["Ready", "Stalled"]
    assert "observedGeneration" not in items[0]
    assert c.get_condition(items, "Stalled") == items[1]
    assert c.get_condition(items, "Healthy") is None
    assert not c.is_true(items, "Ready") and not c.is_true(None, "Ready")


@pytest.mark.parametrize(("status", "reason", "match"), [
    ("Yes", "Ready", "accepted: True, False, Unknown"),
    ("True", "", "CamelCase"),
    ("True", "not ready!", "CamelCase"),
])
def test_set_condition_rejects_bad_values(status: str, reason: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        c.set_condition([], "Ready", status, reason, "", T0)


def test_conditions_changed_ignores_order() -> None:
    a = c.set_condition(c.set_condition([], "A", "True", "X", "", T0), "B", "True", "Y", "", T0)
    assert not c.conditions_changed(a, list(reversed(a)))
    assert c.conditions_changed(a, c.set_condition(a, "A", "True", "X", "new message", T0))


def healthy_observation(**changes: Any) -> c.PolicyObservation:
    base: dict[str, Any] = {"generation": 4, "config_hash": "f" * 64, "pods_desired": 2, "pods_ready": 2,
                            "pods_configured": 2, "probed": True, "health": "Healthy", "redis": "Connected"}
    base.update(changes)
    return c.PolicyObservation(**base)


def test_all_good_is_ready() -> None:
    result = by_type(c.policy_conditions(healthy_observation(), [], T0))
    expected = {"Ready": ("True", "Ready"), "Reconciling": ("False", "Converged"),
                "Stalled": ("False", "SpecAccepted"), "ConfigApplied": ("True", "AllPodsConfigured"),
                "Healthy": ("True", "Healthy"), "RedisConnected": ("True", "Connected")}
    assert {k: (v["status"], v["reason"]) for k, v in result.items()} == expected
    assert all(v["observedGeneration"] == 4 for v in result.values())
    assert result["Ready"]["message"] == "2/2 pods ready, config ffffffffffff applied"
    for item in result.values():
        Condition.model_validate(item)  # the CRD's condition shape


@pytest.mark.parametrize(("changes", "expected"), [
    ({"spec_error": "spec.redis: set exactly one of url or secretRef"},
     {"Stalled": ("True", "InvalidSpec"), "Ready": ("False", "InvalidSpec"),
      "Reconciling": ("False", "InvalidSpec"), "ConfigApplied": ("Unknown", "InvalidSpec")}),
    ({"apply_error": "Deployment: 409 conflict"},
     {"Reconciling": ("True", "ApplyFailed"), "Ready": ("False", "ApplyFailed"),
      "Stalled": ("False", "SpecAccepted")}),
    ({"pods_ready": 1},
     {"Reconciling": ("True", "PodsNotReady"), "Ready": ("False", "PodsNotReady")}),
    ({"pods_configured": 1},
     {"Reconciling": ("True", "ConfigPending"), "Ready": ("False", "ConfigPending"),
      "ConfigApplied": ("False", "PodsPending")}),
    ({"paused": True, "pods_ready": 1},
     {"Reconciling": ("False", "Paused"), "Ready": ("False", "Paused")}),
    ({"paused": True}, {"Reconciling": ("False", "Paused"), "Ready": ("True", "Ready")}),
    ({"pods_desired": 0, "pods_ready": 0, "pods_configured": 0, "probed": False, "redis": "Unknown"},
     {"Ready": ("True", "Ready"), "ConfigApplied": ("True", "NoTargets"), "Healthy": ("Unknown", "NoTargets"),
      "RedisConnected": ("Unknown", "NotProbed")}),
    ({"probed": False}, {"Healthy": ("Unknown", "NotProbed")}),
    ({"health": "Degraded", "health_message": "hit rate 0.5 < 0.6"},
     {"Healthy": ("False", "Degraded"), "Ready": ("True", "Ready")}),
    ({"health": "Unhealthy"}, {"Healthy": ("False", "Unhealthy")}),
    ({"redis": "Disconnected", "redis_message": "connection refused"},
     {"RedisConnected": ("False", "RedisUnavailable"), "Ready": ("True", "Ready")}),
    ({"redis": "Degraded"}, {"RedisConnected": ("False", "Degraded")}),
    ({"redis": "Disabled"}, {"RedisConnected": ("True", "MemoryOnly")}),
])
def test_policy_condition_table(changes: dict[str, Any], expected: dict[str, tuple[str, str]]) -> None:
    result = by_type(c.policy_conditions(healthy_observation(**changes), [], T0))
    assert set(result) == set(c.POLICY_CONDITION_TYPES)
    assert {k: (result[k]["status"], result[k]["reason"]) for k in expected} == expected


def test_policy_conditions_keep_transition_times_and_drop_foreign_types() -> None:
    before = c.policy_conditions(healthy_observation(), [{"type": "Legacy", "status": "True"}], T0)
    assert "Legacy" not in by_type(before)
    after = by_type(c.policy_conditions(healthy_observation(pods_ready=1), before, T1))
    assert after["Healthy"]["lastTransitionTime"] == T0
    assert after["Ready"]["lastTransitionTime"] == T1
    assert [item["type"] for item in c.policy_conditions(healthy_observation(), [], T0)] == list(
        c.POLICY_CONDITION_TYPES)


def test_printer_column_helpers() -> None:
    assert c.pods_summary(2, 3) == "2/3"
    assert c.percent(0.9312) == "93.1%"
    assert c.percent(None) is None


@pytest.mark.parametrize(("phase", "succeeded", "running"), [
    ("Pending", ("Unknown", "Pending"), ("False", "Pending")),
    ("Running", ("Unknown", "Running"), ("True", "Running")),
    ("Recommended", ("Unknown", "AwaitingApproval"), ("False", "Recommended")),
    ("Succeeded", ("True", "Succeeded"), ("False", "Succeeded")),
    ("Resolved", ("True", "Resolved"), ("False", "Resolved")),
    ("Failed", ("False", "Failed"), ("False", "Failed")),
    ("Skipped", ("False", "Skipped"), ("False", "Skipped")),
])
def test_incident_conditions(phase: str, succeeded: tuple[str, str], running: tuple[str, str]) -> None:
    result = by_type(c.incident_conditions(phase, "msg", [], T0, 1))
    assert (result["Succeeded"]["status"], result["Succeeded"]["reason"]) == succeeded
    assert (result["Running"]["status"], result["Running"]["reason"]) == running


def test_incident_conditions_reject_unknown_phase() -> None:
    with pytest.raises(ValueError, match="phase 'Exploded': accepted: Succeeded"):
        c.incident_conditions("Exploded", "", [], T0)


@pytest.mark.parametrize(("phase", "reconciling", "stalled"), [
    ("Pending", "True", "False"), ("Running", "True", "False"), ("Failed", "False", "True"),
    ("Skipped", "False", "True"), ("Succeeded", "False", "False"), ("Resolved", "False", "False"),
    ("Recommended", "False", "False"),
])
def test_incident_kstatus_conditions(phase: str, reconciling: str, stalled: str) -> None:
    """kstatus reads Reconciling (InProgress) and Stalled (Failed): every phase sets both."""
    result = by_type(c.incident_conditions(phase, "msg", [], T0, 4))
    assert result["Reconciling"]["status"] == reconciling and result["Stalled"]["status"] == stalled
    assert result["Reconciling"]["observedGeneration"] == result["Stalled"]["observedGeneration"] == 4
    if "True" in (reconciling, stalled):
        true_one = result["Reconciling"] if reconciling == "True" else result["Stalled"]
        assert true_one["message"] == "msg"
