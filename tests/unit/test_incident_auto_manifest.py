"""Automatic incidents built from real engine diagnoses (health_scenarios drive real EngineStats)."""

from __future__ import annotations

from typing import Any

import pytest
from health_scenarios import (
    Scenario,
    healthy,
    with_expiring_reuse,
    with_large_uncompressed_values,
    with_low_hit_rate,
    with_redis_down,
)

from cache_operator.api.cacheincident import CacheIncidentSpec, CacheIncidentStatus
from cache_operator.incidents.auto_manifest import auto_incident_status, causes_for, render_auto_incident
from cache_operator.incidents.detection import DetectionSettings, observe, summarize_probe
from cache_runtime.health import evaluate
from cache_runtime.timefmt import rfc3339

HASH = "a" * 64
NOW = 1_800_000_000.0


def pod_report(scenario: Scenario, config_hash: str = HASH) -> dict[str, Any]:
    """What GET /internal/cache/health carries, as far as detection and diagnosis read it."""
    return {"config_hash": config_hash, "diagnosis": evaluate(scenario.snapshot()).to_dict()}


def opened_event(reports: dict[str, Any], symptom: str) -> Any:
    settings = DetectionSettings(open_after=2, clear_after=2)
    probe = summarize_probe(reports, HASH)
    state, _, _ = observe(None, probe, NOW, settings)
    _, opened, _ = observe(state, probe, NOW + 15, settings)
    return next(event for event in opened if event.name == symptom)


@pytest.mark.parametrize(
    ("scenario", "symptom", "action", "parameters", "cause", "severity"),
    [
        (with_redis_down(healthy()), "RedisUnavailable", "reconnect-redis", None, "RedisUnreachable", None),
        # A setting fix becomes apply-override carrying the exact change (the spec stays GitOps').
        (
            with_large_uncompressed_values(healthy()),
            "HighMemory",
            "apply-override",
            {"overrides": {"compression": {"threshold_bytes": 4096}}},
            "LargeUncompressedEntries",
            None,
        ),
        (
            with_expiring_reuse(with_low_hit_rate(healthy())),
            "LowHitRate",
            "apply-override",
            "ttl",
            "TtlTooShort",
            None,
        ),
    ],
)
def test_incident_from_real_diagnosis(
    scenario: Scenario, symptom: str, action: str, parameters: Any, cause: str, severity: str | None
) -> None:
    reports = {"web-0": pod_report(scenario), "web-1": pod_report(healthy()), "web-2": None}
    event = opened_event(reports, symptom)
    manifest = render_auto_incident(
        policy="web", namespace="shop", event=event, reports=reports, now=NOW + 15, policy_uid="uid-1"
    )
    assert manifest["metadata"]["name"] == f"web-{symptom.lower()}-{int(NOW // 3600)}"
    assert manifest["metadata"]["labels"]["cachewarden.io/incident-source"] == "auto"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec = CacheIncidentSpec.model_validate(manifest["spec"])  # valid against the API model
    assert spec.action == action
    if parameters == "ttl":
        assert spec.parameters is not None and spec.parameters.overrides is not None
        assert spec.parameters.overrides["ttl"]["default_s"] > 0
    else:
        given = spec.parameters.model_dump(by_alias=True, exclude_none=True) if spec.parameters else None
        assert given == parameters
    status = auto_incident_status(event, reports, NOW + 15, "web", namespace="shop")
    CacheIncidentStatus.model_validate(status)
    assert status["detection"]["symptom"] == symptom and status["detection"]["source"] == "Auto"
    assert status["detection"]["evidence"]["pods"] == ["web-0"]
    assert status["cause"] == cause and status["recommendedAction"] == action
    assert status["diagnosis"]["causes"][0]["evidence"]["pods"] == ["web-0"]
    if cause == "TtlTooShort":
        assert status["diagnosis"]["causes"][0]["evidence"]["suggestedOverrides"]["ttl"]["default_s"] > 0
    proposed = status["remediation"]
    assert proposed["action"] == action and proposed["state"] == "Proposed"
    if action == "apply-override":
        # Recommend mode shows the exact override, and the same change as a ready spec patch.
        assert spec.parameters is not None and proposed["override"] == spec.parameters.overrides
        assert proposed["permanentPatch"]["command"].startswith("kubectl -n shop patch cachepolicy web")
        assert "overrides:" in proposed["permanentPatch"]["yaml"]
        assert proposed["before"] is not None


def test_a_setting_fix_the_spec_refuses_is_not_proposed() -> None:
    """bound() says no (e.g. out of the spec's ranges): the next runnable recommendation is chosen."""
    reports = {"web-0": pod_report(with_large_uncompressed_values(healthy()))}
    event = opened_event(reports, "HighMemory")
    manifest = render_auto_incident(
        policy="web", namespace="shop", event=event, reports=reports, now=NOW, bound=lambda o: (None, ["no"])
    )
    assert manifest["spec"]["action"] == "compress-existing"


def test_a_later_detection_of_the_same_episode_gets_the_same_name() -> None:
    reports = {"web-0": pod_report(with_redis_down(healthy()))}
    event = opened_event(reports, "RedisUnavailable")
    first = render_auto_incident(policy="web", namespace="shop", event=event, reports=reports, now=NOW + 15)
    later = render_auto_incident(policy="web", namespace="shop", event=event, reports=reports, now=NOW + 4000)
    assert first["metadata"]["name"] == later["metadata"]["name"]
    assert event.since == rfc3339(NOW)


def test_critical_redis_symptoms_are_critical_incidents() -> None:
    reports = {"web-0": pod_report(with_redis_down(healthy()))}
    event = opened_event(reports, "RedisUnavailable")
    manifest = render_auto_incident(policy="web", namespace="shop", event=event, reports=reports, now=NOW)
    assert event.evidence["severity"] == "critical" and manifest["spec"]["severity"] == "critical"


def test_config_drift_diagnoses_without_acting() -> None:
    reports = {"web-0": pod_report(healthy(), config_hash="b" * 64)}
    event = opened_event(reports, "ConfigDrift")
    manifest = render_auto_incident(policy="web", namespace="shop", event=event, reports=reports, now=NOW)
    assert manifest["spec"]["action"] == "diagnose"
    assert [c["name"] for c in causes_for(reports, "ConfigDrift")] == ["ConfigNotApplied"]
    CacheIncidentStatus.model_validate(auto_incident_status(event, reports, NOW, "web"))


def test_causes_merge_over_pods_keeping_the_best_score() -> None:
    down = pod_report(with_redis_down(healthy()))
    merged = causes_for({"a": down, "b": down, "c": None}, "RedisUnavailable")
    assert [c["name"] for c in merged] == ["RedisUnreachable"] and merged[0]["pods"] == ["a", "b"]
    assert causes_for({"a": down}, "HighMemory") == []
