"""Symptom detection with hysteresis over recorded probe sequences."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cache_operator.api.cachepolicy import CachePolicySpec
from cache_operator.incidents.detection import (
    DetectionSettings,
    ProbeSummary,
    active_symptoms,
    observe,
    summarize_probe,
)

HASH = "a" * 64


def report(
    *symptoms: str, config_hash: str = HASH, severity: str = "warning", value: float = 0.3
) -> dict[str, Any]:
    """A /internal/cache/health answer with these symptoms (only the fields detection reads)."""
    return {
        "status": "degraded" if symptoms else "healthy",
        "config_hash": config_hash,
        "diagnosis": {
            "symptoms": [
                {
                    "name": name,
                    "severity": severity,
                    "value": value,
                    "threshold": 0.6,
                    "unit": "ratio",
                    "message": f"{name} seen",
                }
                for name in symptoms
            ]
        },
    }


BAD = summarize_probe({"pod-a": report("LowHitRate")}, HASH)
GOOD = summarize_probe({"pod-a": report()}, HASH)
NOTHING = summarize_probe({"pod-a": None}, HASH)


def run(sequence: str, open_after: int = 3, clear_after: int = 2) -> tuple[list[str], dict[str, Any]]:
    """Feed B(ad)/G(ood)/N(o answer) probes one second apart; return 'O@i'/'C@i' events and the state."""
    settings = DetectionSettings(open_after=open_after, clear_after=clear_after)
    state: dict[str, Any] | None = None
    events: list[str] = []
    for index, letter in enumerate(sequence):
        probe = {"B": BAD, "G": GOOD, "N": NOTHING}[letter]
        state, opened, cleared = observe(state, probe, 1_700_000_000 + index, settings)
        json.dumps(state)  # the state goes into status as is
        events += [f"O@{index}" for event in opened if event.name == "LowHitRate"]
        events += [f"C@{index}" for event in cleared if event.name == "LowHitRate"]
    assert state is not None
    return events, state


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ("BB", []),  # N-1 bad probes do not open
        ("BBB", ["O@2"]),  # N do
        ("BBGBB", []),  # one good probe in a bad streak resets it
        ("BBGBBB", ["O@5"]),
        ("BGBGBGBGBG", []),  # flapping never opens
        ("BBBG", ["O@2"]),  # one good probe does not clear (M = 2)
        ("BBBGG", ["O@2", "C@4"]),  # M good ones do
        ("BBBGBG", ["O@2"]),  # a bad probe resets the good streak: flapping never clears
        ("BBBGBGG", ["O@2", "C@6"]),
        ("BBBGGBBB", ["O@2", "C@4", "O@7"]),  # a new episode opens again
        ("BBNB", ["O@3"]),  # a pass where no pod answered counts neither way
        ("BBBNNNNN", ["O@2"]),  # and never clears an open symptom
        ("BBBBBBBB", ["O@2"]),  # opens once, not at every bad probe
    ],
)
def test_hysteresis(sequence: str, expected: list[str]) -> None:
    assert run(sequence)[0] == expected


def test_open_after_one_and_clear_after_one() -> None:
    assert run("BGB", open_after=1, clear_after=1)[0] == ["O@0", "C@1", "O@2"]


def test_since_is_the_first_bad_probe_of_the_episode() -> None:
    settings = DetectionSettings(open_after=3, clear_after=1)
    state: dict[str, Any] | None = None
    opened_events = []
    for index, probe in enumerate([BAD, GOOD, BAD, BAD, BAD]):
        state, opened, _ = observe(state, probe, 1_700_000_000 + 10 * index, settings)
        opened_events += opened
    assert [e.since for e in opened_events] == ["2023-11-14T22:13:40Z"]  # the probe at index 2
    assert opened_events[0].evidence["pods"] == ["pod-a"]
    assert active_symptoms(state) == ["LowHitRate"]


def test_state_survives_a_round_trip_through_status_json() -> None:
    settings = DetectionSettings(open_after=3, clear_after=3)
    state, _, _ = observe(None, BAD, 100, settings)
    state, _, _ = observe(json.loads(json.dumps(state)), BAD, 101, settings)
    state, opened, _ = observe(json.loads(json.dumps(state)), BAD, 102, settings)
    assert [e.name for e in opened] == ["LowHitRate"]
    assert state == {
        "symptoms": [
            {"name": "LowHitRate", "active": True, "consecutive": 0, "since": "1970-01-01T00:01:40Z"}
        ]
    }


def test_quiet_state_is_empty_and_input_not_modified() -> None:
    settings = DetectionSettings(open_after=2, clear_after=2)
    before = {"symptoms": [{"name": "HighMemory", "active": False, "consecutive": 1, "since": "x"}]}
    frozen = json.dumps(before)
    state, opened, cleared = observe(before, GOOD, 0, settings)
    assert state == {"symptoms": []} and not opened and not cleared
    assert json.dumps(before) == frozen


def test_every_symptom_is_tracked_independently() -> None:
    settings = DetectionSettings(open_after=2, clear_after=2)
    names = [
        "LowHitRate",
        "HighMemory",
        "SlowOperations",
        "RedisUnavailable",
        "RedisAuthFailure",
        "L1Thrashing",
    ]
    probe = summarize_probe({"pod-a": report(*names[:3]), "pod-b": report(*names[3:])}, HASH)
    state, _, _ = observe(None, probe, 0, settings)
    state, opened, _ = observe(state, probe, 1, settings)
    assert sorted(e.name for e in opened) == sorted(names)
    only_memory = summarize_probe({"pod-a": report("HighMemory")}, HASH)
    state, _, cleared = observe(state, only_memory, 2, settings)
    state, _, cleared = observe(state, only_memory, 3, settings)
    assert sorted(e.name for e in cleared) == sorted(set(names) - {"HighMemory"})
    assert active_symptoms(state) == ["HighMemory"]


def test_config_drift_needs_n_probes_of_a_foreign_hash() -> None:
    settings = DetectionSettings(open_after=2, clear_after=2)
    drift = summarize_probe({"pod-a": report(), "pod-b": report(config_hash="b" * 64)}, HASH)
    assert drift.symptoms["ConfigDrift"]["pods"] == ["pod-b"]
    assert drift.symptoms["ConfigDrift"]["reportedHashes"] == {"pod-b": "b" * 64}
    state, opened, _ = observe(None, drift, 0, settings)
    assert not opened
    state, opened, _ = observe(state, drift, 1, settings)
    assert [e.name for e in opened] == ["ConfigDrift"]
    assert "ConfigDrift" not in summarize_probe({"pod-b": report(config_hash="b" * 64)}, None).symptoms


def test_summary_keeps_worst_figures_and_unreachable_pods() -> None:
    summary = summarize_probe(
        {
            "pod-a": report("LowHitRate", severity="warning", value=0.5),
            "pod-b": report("LowHitRate", severity="critical", value=0.2),
            "pod-c": None,
            "pod-d": report("RedisOutOfMemory"),  # an incident symptom (recommend-only)
            "pod-e": report("SomethingNew"),  # a symptom a newer runtime reports: not an incident's
        },
        HASH,
    )
    assert summary.answered == 4 and summary.unreachable == ("pod-c",)
    low = summary.symptoms["LowHitRate"]
    assert low["pods"] == ["pod-a", "pod-b"] and low["severity"] == "critical" and low["value"] == 0.2
    assert set(summary.symptoms) == {"LowHitRate", "RedisOutOfMemory"}
    assert summary.symptoms["RedisOutOfMemory"]["pods"] == ["pod-d"]
    assert summarize_probe({"pod-a": {"config_hash": HASH, "diagnosis": None}}, HASH).symptoms == {}


def test_settings_from_policy() -> None:
    spec = CachePolicySpec.model_validate({"runtime": {}, "health": {"consecutiveProbes": 4}})
    assert DetectionSettings.from_policy(spec) == DetectionSettings(open_after=4, clear_after=4)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: DetectionSettings(open_after=0), "open_after="),
        (lambda: DetectionSettings(clear_after=True), "clear_after="),  # type: ignore[arg-type]
        (lambda: summarize_probe({"p": "down"}, HASH), "health of pod p="),  # type: ignore[dict-item]
        (lambda: summarize_probe({"p": {"diagnosis": []}}, HASH), "diagnosis="),
        (lambda: summarize_probe({"p": {"diagnosis": {"symptoms": [3]}}}, HASH), "symptoms entry"),
        (lambda: observe({"symptoms": {}}, GOOD, 0, DetectionSettings()), r"status\.symptoms="),
        (lambda: observe({"symptoms": [{"name": "Nope"}]}, GOOD, 0, DetectionSettings()), r"symptoms\[0\]="),
        (
            lambda: observe(
                {"symptoms": [{"name": "LowHitRate", "consecutive": -1}]}, GOOD, 0, DetectionSettings()
            ),
            r"symptoms\[0\]\.consecutive=",
        ),
    ],
)
def test_bad_inputs_name_the_field(call: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        call()


def test_probe_summary_with_no_answer_tells_nothing() -> None:
    assert ProbeSummary(answered=0).symptoms == {}
    state = {"symptoms": [{"name": "LowHitRate", "active": True, "consecutive": 1, "since": "s"}]}
    assert observe(state, NOTHING, 0, DetectionSettings())[0] == state


def test_probe_interval_is_shorter_only_while_a_symptom_is_pending() -> None:
    """Confirming probes every 5 s while a symptom is pending; the policy's interval otherwise (nothing
    seen, or the symptom already open); never longer than the policy's own interval."""
    from cache_operator.incidents.detection import CONFIRM_INTERVAL_S, probe_interval

    pending = [{"name": "LowHitRate", "active": False, "consecutive": 1, "since": "2026-01-01T00:00:00Z"}]
    active = [{"name": "LowHitRate", "active": True, "consecutive": 0, "since": "2026-01-01T00:00:00Z"}]
    assert probe_interval(pending, 15.0) == CONFIRM_INTERVAL_S == 5.0
    assert probe_interval(pending, 3.0) == 3.0
    assert probe_interval(active, 15.0) == probe_interval([], 15.0) == probe_interval(None, 15.0) == 15.0
