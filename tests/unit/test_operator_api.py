"""The CachePolicy / CacheIncident models: valid specs parse with the CRD's defaults, invalid ones fail
with a SpecError naming the field, the value and what is accepted."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cache_operator.api import (
    CacheIncidentSpec,
    CacheIncidentStatus,
    CachePolicySpec,
    CachePolicyStatus,
    SpecError,
    spec_error_from,
)
from cache_operator.api.cacheincident import ACTION_PARAMETERS
from cache_operator.api.cachepolicy import DEFAULT_IMAGE, IncidentAction
from cache_runtime.config import resolve_config


def parse_policy(spec: dict[str, Any]) -> CachePolicySpec:
    try:
        return CachePolicySpec.model_validate(spec)
    except ValidationError as exc:
        raise spec_error_from(exc) from None


def parse_incident(spec: dict[str, Any]) -> CacheIncidentSpec:
    try:
        return CacheIncidentSpec.model_validate(spec)
    except ValidationError as exc:
        raise spec_error_from(exc) from None


def test_minimal_policy_gets_the_crd_defaults() -> None:
    spec = parse_policy({"runtime": {}})
    assert spec.preset == "production"
    assert spec.runtime is not None and spec.runtime.replicas == 2 and spec.runtime.image == DEFAULT_IMAGE
    assert spec.runtime.port == 8080
    assert spec.health.probe_interval_seconds == 15
    assert spec.remediation.mode == "Recommend"
    assert spec.paused is False and spec.redis is None


def test_api_names_are_camel_case_both_ways() -> None:
    spec = parse_policy({"selector": {"matchLabels": {"app": "web"}, "adminPath": "/cache"},
                         "redis": {"secretRef": {"name": "r", "key": "url"},
                                   "passwordSecretRef": {"name": "r", "key": "pw"}},
                         "health": {"probeIntervalSeconds": 30, "thresholds": {"hitRateWarning": 0.7}}})
    dumped = spec.to_api()
    assert dumped["selector"] == {"matchLabels": {"app": "web"}, "port": 8080, "adminPath": "/cache"}
    assert dumped["redis"]["passwordSecretRef"] == {"name": "r", "key": "pw"}
    assert dumped["health"]["thresholds"] == {"hitRateWarning": 0.7}
    assert parse_policy(dumped) == spec


@pytest.mark.parametrize(("spec", "field", "fragment"), [
    ({"runtime": {}, "selector": {"matchLabels": {"a": "b"}}}, "spec", "exactly one of spec.runtime"),
    ({}, "spec", "exactly one of spec.runtime"),
    ({"runtime": {}, "redis": {"url": "redis://r", "secretRef": {"name": "s", "key": "k"}}}, "spec.redis",
     "exactly one of url"),
    ({"runtime": {}, "redis": {"username": "u"}}, "spec.redis", "exactly one of url"),
    ({"runtime": {}, "redis": {"url": "redis://u:pw@r:6379"}}, "spec.redis.url", "must not carry a password"),
    ({"runtime": {}, "redis": {"url": "redis://r", "tls": {"enabled": True}}}, "spec.redis.url", "rediss://"),
    ({"runtime": {}, "redis": {"url": "http://r"}}, "spec.redis.url", "should match pattern"),
    ({"runtime": {}, "redis": {"url": "rediss://r", "tls": {"insecureSkipVerify": True,
                                                              "caSecretRef": {"name": "c", "key": "ca"}}}},
     "spec.redis.tls", "contradict"),
    ({"selector": {"port": 80}}, "spec.selector", "needs matchLabels or matchExpressions"),
    ({"runtime": {"replicas": 101}}, "spec.runtime.replicas", "less than or equal to 100"),
    ({"runtime": {"port": 80}}, "spec.runtime.port", "greater than or equal to 1024"),
    ({"runtime": {"respPort": 80}}, "spec.runtime.respPort", "greater than or equal to 1024"),
    ({"runtime": {"respPort": 8080}}, "spec.runtime.respPort", "8080 is spec.runtime.port too"),
    ({"runtime": {}, "preset": "turbo"}, "spec.preset", "'production'"),
    ({"runtime": {}, "paused": "maybe"}, "spec.paused", "boolean"),
    ({"runtime": {}, "surprise": 1}, "spec.surprise", "Extra inputs are not permitted"),
    ({"runtime": {}, "overrides": {"ttl": {"nonsense_s": 1}}}, "spec.overrides.ttl.nonsense_s",
     "unknown key"),
    ({"runtime": {}, "overrides": {"ttl": {"default_s": 0}}}, "spec.overrides.ttl.default_s",
     "1 s to 7 days"),
    ({"runtime": {}, "overrides": {"redis": {"url": "redis://x"}}}, "spec.overrides.redis.url",
     "belong in spec.redis"),
    ({"runtime": {}, "overrides": {"preset": "minimal"}}, "spec.overrides.preset", "spec.preset"),
    ({"runtime": {}, "overrides": {"turbo": {True: True}}}, "spec.overrides.turbo", "not a parameter name"),
    ({"runtime": {}, "health": {"thresholds": {"hitRateWarning": 0.3, "hitRateCritical": 0.5}}},
     "spec.health.thresholds.hitRateCritical", "at most hit_rate_warning"),
    ({"runtime": {}, "health": {"probeIntervalSeconds": 2}}, "spec.health.probeIntervalSeconds",
     "greater than or equal to 5"),
    ({"runtime": {}, "remediation": {"mode": "Sometimes"}}, "spec.remediation.mode", "'Recommend'"),
    ({"runtime": {}, "remediation": {"allowedActions": ["format-disk"]}}, "spec.remediation.allowedActions.0",
     "'apply-preset'"),
])
def test_invalid_policy_names_the_field(spec: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_policy(spec)
    assert caught.value.field == field, str(caught.value)
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(field)


def test_engine_overrides_merge_thresholds_and_redis_settings() -> None:
    spec = parse_policy({"runtime": {},
                         "overrides": {"health": {"hit_rate_warning": 0.8}, "ttl.default_s": 60},
                         "health": {"thresholds": {"hitRateWarning": 0.7, "memoryCriticalMb": 200}},
                         "redis": {"url": "rediss://r:6380", "username": "cache",
                                   "tls": {"enabled": True, "insecureSkipVerify": True}}})
    merged = spec.engine_overrides()
    assert merged["health"] == {"hit_rate_warning": 0.7, "memory_critical_mb": 200}  # thresholds win
    assert merged["ttl"] == {"default_s": 60}
    assert merged["redis"] == {"username": "cache", "tls_verify": False}
    config = resolve_config(spec.preset, merged)
    assert config.health.hit_rate_warning == 0.7 and config.ttl.default_s == 60


def test_incident_defaults_and_parameters() -> None:
    spec = parse_incident({"policyRef": {"name": "web"}, "action": "apply-preset",
                           "parameters": {"preset": "conservative", "durationSeconds": 600}})
    assert spec.severity == "medium" and spec.dry_run is False and spec.target_pods is None
    assert spec.to_api()["parameters"] == {"preset": "conservative", "durationSeconds": 600}


@pytest.mark.parametrize(("spec", "field", "fragment"), [
    ({"policyRef": {"name": "web"}, "action": "apply-preset"}, "spec.parameters.preset", "is required"),
    ({"policyRef": {"name": "web"}, "action": "invalidate"}, "spec.action", "exactly one of"),
    ({"policyRef": {"name": "web"}, "action": "invalidate",
      "parameters": {"pattern": "a*", "namespace": "n"}},
     "spec.action", "exactly one of"),
    ({"policyRef": {"name": "web"}, "action": "gc", "parameters": {"preset": "minimal"}},
     "spec.parameters.preset", "applies only to spec.action apply-preset"),
    ({"policyRef": {"name": "web"}, "action": "reboot"}, "spec.action", "'clear'"),
    ({"policyRef": {"name": "web"}, "action": "gc", "severity": "apocalyptic"}, "spec.severity",
     "'critical'"),
    ({"action": "gc"}, "spec.policyRef", "Field required"),
    ({"policyRef": {"name": "Not_A_Name"}, "action": "gc"}, "spec.policyRef.name", "pattern"),
    ({"policyRef": {"name": "web"}, "action": "apply-preset",
      "parameters": {"preset": "minimal", "durationSeconds": 5}}, "spec.parameters.durationSeconds",
     "greater than or equal to 60"),
    ({"policyRef": {"name": "web"}, "action": "gc", "targetPods": []}, "spec.targetPods", "at least 1"),
])
def test_invalid_incident_names_the_field(spec: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_incident(spec)
    assert caught.value.field == field, str(caught.value)
    assert fragment in str(caught.value)


def test_parameter_table_covers_every_action() -> None:
    assert set(ACTION_PARAMETERS) == set(IncidentAction.__args__)  # type: ignore[attr-defined]
    for action, names in ACTION_PARAMETERS.items():
        for name in names:
            params: dict[str, Any] = {"pattern": "a*"} if action == "invalidate" else {}
            params[name] = {"pattern": "k*", "namespace": "docs", "preset": "minimal",
                            "overrides": {"ttl": {"default_s": 60}},
                            "durationSeconds": 600, "maxEntries": 10}[name]
            if action == "invalidate" and name == "namespace":
                params.pop("pattern")
            if action == "apply-preset":
                params["preset"] = "minimal"
            if action == "apply-override":
                params["overrides"] = {"ttl": {"default_s": 60}}
            parse_incident({"policyRef": {"name": "p"}, "action": action, "parameters": params})


def test_status_models_accept_what_the_operator_writes() -> None:
    status = CachePolicyStatus.model_validate({
        "observedGeneration": 3, "configHash": "ab" * 32, "preset": "production",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3}],
        "pods": {"desired": 2, "ready": 2, "configured": 2, "summary": "2/2"},
        "health": {"status": "Healthy", "hitRate": 0.9, "hitRatePercent": "90.0%", "l1HitRate": 0.5,
                   "redis": "Connected", "p95LatencyMs": 1.5, "memoryBytes": 1024},
        "override": {"preset": "conservative", "incident": "x", "expiresAt": "2026-01-01T01:00:00Z"},
    })
    assert status.health is not None and status.health.l1_hit_rate == 0.5
    incident = CacheIncidentStatus.model_validate({
        "phase": "Succeeded", "cause": "TTLTooShort",
        "detection": {"source": "Auto", "symptom": "LowHitRate", "evidence": {"hit_rate": 0.2}},
        "diagnosis": {"causes": [{"name": "TTLTooShort", "evidence": {"expired_share": 0.8},
                                  "recommendation": "raise ttl.default_s", "action": "apply-preset",
                                  "parameters": {"preset": "ai-production"}}]},
        "results": [{"pod": "p-1", "step": "clear", "result": "Succeeded", "counts": {"deleted": 3}}],
    })
    assert incident.results is not None and incident.results[0].counts == {"deleted": 3}
    with pytest.raises(ValidationError):
        CachePolicyStatus.model_validate({"health": {"redis": "Sideways"}})
