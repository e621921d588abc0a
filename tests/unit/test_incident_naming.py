"""Deterministic names of automatic incidents and the RFC 3339 helpers."""

from __future__ import annotations

import re

import pytest

from cache_operator.incidents.naming import (
    LABEL_POLICY,
    LABEL_SOURCE,
    SYMPTOMS,
    auto_incident_labels,
    auto_incident_name,
    incident_window,
)
from cache_runtime.timefmt import parse_rfc3339, rfc3339

LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("policy", "symptom", "opened_at", "window", "expected"),
    [
        ("web", "LowHitRate", 7200.0, 3600, "web-lowhitrate-2"),
        ("web", "LowHitRate", 10799.9, 3600, "web-lowhitrate-2"),
        ("web", "LowHitRate", 10800.0, 3600, "web-lowhitrate-3"),
        ("web", "ConfigDrift", 0.0, 60, "web-configdrift-0"),
        ("cache-a", "RedisAuthFailure", 120.0, 60, "cache-a-redisauthfailure-2"),
    ],
)
def test_names_are_policy_symptom_window(
    policy: str, symptom: str, opened_at: float, window: int, expected: str
) -> None:
    assert auto_incident_name(policy, symptom, opened_at, window) == expected


def test_same_window_same_name_next_window_another() -> None:
    first = auto_incident_name("web", "HighMemory", 1_700_000_000, 3600)
    assert auto_incident_name("web", "HighMemory", 1_700_000_000 + 1, 3600) == first
    assert auto_incident_name("web", "HighMemory", 1_700_000_000 + 3600, 3600) != first


@pytest.mark.parametrize("symptom", SYMPTOMS)
@pytest.mark.parametrize("length", [1, 30, 40, 63, 200, 253])
def test_long_policy_names_fit_a_label_and_stay_distinct(symptom: str, length: int) -> None:
    policy = "p" * length
    other = "p" * (length - 1) + "q"
    name = auto_incident_name(policy, symptom, 1_800_000_000, 60)
    assert len(name) <= 63 and LABEL.match(name)
    assert name == auto_incident_name(policy, symptom, 1_800_000_000, 60)
    assert name != auto_incident_name(other, symptom, 1_800_000_000, 60)


def test_dotted_policy_names_become_labels_without_colliding() -> None:
    dotted = auto_incident_name("a.b", "LowHitRate", 0, 60)
    dashed = auto_incident_name("a-b", "LowHitRate", 0, 60)
    assert LABEL.match(dotted) and dotted != dashed


@pytest.mark.parametrize(
    ("policy", "symptom", "opened_at", "window", "field"),
    [
        ("Web", "LowHitRate", 0, 60, "policy="),
        ("", "LowHitRate", 0, 60, "policy="),
        ("web-", "LowHitRate", 0, 60, "policy="),
        ("x" * 254, "LowHitRate", 0, 60, "policy="),
        ("web", "lowhitrate", 0, 60, "symptom="),
        ("web", "RedisOutOfMemoryError", 0, 60, "symptom="),
        ("web", "LowHitRate", 0, 0, "window_seconds="),
        ("web", "LowHitRate", -1, 60, "opened_at="),
    ],
)
def test_bad_inputs_name_the_field(
    policy: str, symptom: str, opened_at: float, window: int, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        auto_incident_name(policy, symptom, opened_at, window)


def test_window_index() -> None:
    assert incident_window(59.9, 60) == 0 and incident_window(60, 60) == 1


def test_labels_mark_automatic_incidents_and_fit() -> None:
    labels = auto_incident_labels("x" * 200, "LowHitRate")
    assert labels[LABEL_SOURCE] == "auto" and len(labels[LABEL_POLICY]) <= 63
    assert auto_incident_labels("web", "LowHitRate")[LABEL_POLICY] == "web"


def test_rfc3339_round_trip_and_errors() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert parse_rfc3339("2026-01-31T12:00:00Z", "f") == parse_rfc3339(rfc3339(1769860800), "f")
    for bad in (None, 5, "yesterday", "2026-01-31T12:00:00"):
        with pytest.raises(ValueError, match=r"status\.x="):
            parse_rfc3339(bad, "status.x")
