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
        (
            with_large_uncompressed_values(healthy()),
            "HighMemory",
            "compress-existing",
            None,
            "LargeUncompressedEntries",
            None,
        ),
        # TTL too short: the fix is a spec change (the user's), so the incident only diagnoses.
        (
            with_expiring_reuse(with_low_hit_rate(healthy())),
            "LowHitRate",
            "diagnose",
            None,
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
    assert spec.action == action and spec.parameters == parameters
    status = auto_incident_status(event, reports, NOW + 15, "web")
    CacheIncidentStatus.model_validate(status)
    assert status["detection"]["symptom"] == symptom and status["detection"]["source"] == "Auto"
    assert status["detection"]["evidence"]["pods"] == ["web-0"]
    assert status["cause"] == cause and status["recommendedAction"] == action
    assert status["diagnosis"]["causes"][0]["evidence"]["pods"] == ["web-0"]
    if cause == "TtlTooShort":
        assert status["diagnosis"]["causes"][0]["evidence"]["suggestedOverrides"]["ttl"]["default_s"] > 0


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
