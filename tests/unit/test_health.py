"""Threshold evaluation: one row per symptom that must appear, and rows where it must not."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from health_scenarios import (
    MIB,
    Scenario,
    healthy,
    with_latency,
    with_low_hit_rate,
    with_redis_down,
)

from cache_runtime.config import resolve_config
from cache_runtime.health import (
    Severity,
    SnapshotError,
    Status,
    SymptomName,
    ThresholdError,
    Thresholds,
    evaluate,
)
from cache_runtime.stats import build_snapshot, diff_snapshots


def test_a_healthy_engine_is_healthy() -> None:
    report = evaluate(healthy().snapshot())
    assert report.status is Status.HEALTHY
    assert report.symptoms == ()
    assert report.causes == ()
    assert report.summary["hit_rate"] == pytest.approx(0.9)
    assert report.summary["redis"] == "connected"


def _hit_rate(rate: float, lookups: int = 1000) -> Callable[[Scenario], None]:
    def change(scenario: Scenario) -> None:
        with_low_hit_rate(scenario, rate, lookups)

    return change


def _memory(mib: float) -> Callable[[Scenario], None]:
    return lambda s: s.l1.update(bytes=int(mib * MIB), max_bytes=256 * MIB)


def _latency(operation: str, seconds: float, count: int = 200) -> Callable[[Scenario], None]:
    def change(scenario: Scenario) -> None:
        with_latency(scenario, operation, seconds, count)

    return change


def _redis_down(scenario: Scenario) -> None:
    with_redis_down(scenario)


def _l2(**changes: Any) -> Callable[[Scenario], None]:
    def change(scenario: Scenario) -> None:
        assert scenario.l2 is not None
        scenario.l2.update(changes)

    return change


def _disabled_cache(scenario: Scenario) -> None:
    with_low_hit_rate(scenario, 0.0)
    scenario.config["enabled"] = False


def _thrashing(l1_hits: int) -> Callable[[Scenario], None]:
    def change(scenario: Scenario) -> None:
        scenario.stats.hits_l1 = l1_hits
        scenario.stats.hits_l2 = 900 - l1_hits
        scenario.stats.l1_inserts = 1000
        scenario.stats.l1_evictions = 900
        scenario.l1.update(entries=1000)

    return change


# (row id, change to a healthy engine, expected symptom or None, expected severity)
SYMPTOM_ROWS: list[tuple[str, Callable[[Scenario], None], SymptomName | None, Severity | None]] = [
    ("hit rate 50% is a warning", _hit_rate(0.5), SymptomName.LOW_HIT_RATE, Severity.WARNING),
    ("hit rate 30% is critical", _hit_rate(0.3), SymptomName.LOW_HIT_RATE, Severity.CRITICAL),
    ("hit rate exactly 60% is fine", _hit_rate(0.6), None, None),
    ("low hit rate over too few lookups is not judged", _hit_rate(0.1, lookups=99), None, None),
    ("a disabled cache misses by design", _disabled_cache, None, None),
    ("60 MiB is a memory warning", _memory(60), SymptomName.HIGH_MEMORY, Severity.WARNING),
    ("120 MiB is critical", _memory(120), SymptomName.HIGH_MEMORY, Severity.CRITICAL),
    ("40 MiB is fine", _memory(40), None, None),
    ("get p95 30 ms is slow", _latency("get", 0.03), SymptomName.SLOW_OPERATIONS, Severity.WARNING),
    ("set p95 80 ms is critical", _latency("set", 0.08, 400), SymptomName.SLOW_OPERATIONS, Severity.CRITICAL),
    ("p95 exactly at the 20 ms bucket bound is fine", _latency("get", 0.02, 400), None, None),
    ("slow gets with too few samples are not judged", _latency("get_many", 0.5, 49), None, None),
    ("a slow loader is not a slow cache", _latency("compute", 5.0, 500), None, None),
    ("a slow pattern invalidation is not a slow cache", _latency("invalidate", 2.0, 500), None, None),
    ("breaker open", _redis_down, SymptomName.REDIS_UNAVAILABLE, Severity.CRITICAL),
    ("breaker half-open", _l2(breaker_state="half_open"), SymptomName.REDIS_UNAVAILABLE, Severity.WARNING),
    (
        "breaker closed but most calls time out",
        _l2(errors={"timeout": 30}, ops=40),
        SymptomName.REDIS_UNAVAILABLE,
        Severity.WARNING,
    ),
    ("a few timeouts among many calls are fine", _l2(errors={"timeout": 3}, ops=4000), None, None),
    ("wrong password", _l2(errors={"auth": 4}), SymptomName.REDIS_AUTH_FAILURE, Severity.CRITICAL),
    ("Redis refuses writes", _l2(errors={"oom": 7}), SymptomName.REDIS_OUT_OF_MEMORY, Severity.CRITICAL),
    ("L1 evicts nearly all it admits with a low L1 hit rate", _thrashing(200), SymptomName.L1_THRASHING,
     Severity.WARNING),
    ("high L1 evictions with a good L1 hit rate are not thrashing", _thrashing(800), None, None),
]  # fmt: skip


@pytest.mark.parametrize(("change", "expected", "severity"), [row[1:] for row in SYMPTOM_ROWS],
                         ids=[row[0] for row in SYMPTOM_ROWS])  # fmt: skip
def test_symptom_table(
    change: Callable[[Scenario], None], expected: SymptomName | None, severity: Severity | None
) -> None:
    scenario = healthy()
    change(scenario)
    report = evaluate(scenario.snapshot())
    names = [symptom.name for symptom in report.symptoms]
    if expected is None:
        assert names == [], report.to_dict()["symptoms"]
        assert report.status is Status.HEALTHY
        return
    assert expected in names
    symptom = report.symptom(expected)
    assert symptom is not None and symptom.severity is severity
    assert report.status is (Status.UNHEALTHY if severity is Severity.CRITICAL else Status.DEGRADED)
    # Every symptom comes with at least one cause entry (maybe "Undetermined").
    assert report.causes_for(expected), report.to_dict()


def test_symptom_reports_measured_value_and_threshold() -> None:
    scenario = with_low_hit_rate(healthy(), 0.5)
    symptom = evaluate(scenario.snapshot()).symptom(SymptomName.LOW_HIT_RATE)
    assert symptom is not None
    assert symptom.value == pytest.approx(0.5)
    assert symptom.threshold == 0.6
    memory = healthy()
    memory.l1.update(bytes=75 * MIB, max_bytes=256 * MIB)
    high = evaluate(memory.snapshot()).symptom(SymptomName.HIGH_MEMORY)
    assert high is not None and high.value == pytest.approx(75.0) and high.threshold == 50.0
    slow = with_latency(healthy(), "get", 0.03)
    p95 = evaluate(slow.snapshot()).symptom(SymptomName.SLOW_OPERATIONS)
    assert p95 is not None and 20.0 < (p95.value or 0) <= 50.0 and p95.details["operation"] == "get"


def test_thresholds_are_configurable() -> None:
    snapshot = healthy().snapshot()  # hit rate 90%, 2 MiB
    strict = Thresholds(
        hit_rate_warning=0.95, hit_rate_critical=0.5, memory_warning_mb=1, memory_critical_mb=10
    )
    report = evaluate(snapshot, strict)
    assert {s.name for s in report.symptoms} == {SymptomName.LOW_HIT_RATE, SymptomName.HIGH_MEMORY}
    assert evaluate(snapshot, {"hit_rate_warning": 0.95}).status is Status.DEGRADED


def test_thresholds_read_the_config_health_group() -> None:
    health = resolve_config("ai-production").health.model_dump()
    thresholds = Thresholds.from_mapping(health)
    assert thresholds.hit_rate_warning == health["hit_rate_warning"]
    assert thresholds.memory_critical_mb == health["memory_critical_mb"]
    assert thresholds.min_requests == health["min_requests"]


@pytest.mark.parametrize(
    ("values", "field", "accepted"),
    [
        ({"hit_rate_warnings": 0.5}, "hit_rate_warnings", "one of"),
        ({"hit_rate_warning": 1.5}, "hit_rate_warning", "a number from 0 to 1"),
        ({"hit_rate_warning": True}, "hit_rate_warning", "a number from 0 to 1"),
        ({"hit_rate_critical": 0.7}, "hit_rate_critical", "at most hit_rate_warning"),
        ({"memory_warning_mb": 200}, "memory_warning_mb", "at most memory_critical_mb"),
        ({"latency_warning_ms": 0}, "latency_warning_ms", "a finite number above 0"),
        ({"latency_critical_ms": float("inf")}, "latency_critical_ms", "a finite number above 0"),
        ({"min_requests": -1}, "min_requests", "an integer >= 0"),
        ({"min_requests": 1.5}, "min_requests", "an integer >= 0"),
    ],
)
def test_bad_thresholds_name_the_field_value_and_range(
    values: dict[str, Any], field: str, accepted: str
) -> None:
    with pytest.raises(ThresholdError) as caught:
        Thresholds.from_mapping(values)
    assert caught.value.field == field
    assert accepted in str(caught.value)
    assert repr(values[field]) in str(caught.value)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.pop("requests"), "requests"),
        (lambda s: s.__setitem__("l1", []), "l1"),
        (lambda s: s["requests"].__setitem__("lookups", -3), "requests.lookups"),
        (lambda s: s["requests"].__setitem__("misses", "many"), "requests.misses"),
        (lambda s: s["l1"].__setitem__("bytes", None), "l1.bytes"),
        (lambda s: s["l2"].__setitem__("errors", ["timeout"]), "l2.errors"),
    ],
)
def test_malformed_snapshots_are_rejected_by_field(
    mutate: Callable[[dict[str, Any]], Any], field: str
) -> None:
    snapshot: dict[str, Any] = json.loads(json.dumps(healthy().snapshot()))
    mutate(snapshot)
    with pytest.raises(SnapshotError) as caught:
        evaluate(snapshot)
    assert caught.value.field == field


def test_not_a_mapping_is_rejected() -> None:
    with pytest.raises(SnapshotError, match="snapshot"):
        evaluate([1, 2, 3])  # type: ignore[arg-type]


def test_report_is_json_ready_and_round_trips_through_json() -> None:
    scenario = with_redis_down(with_latency(with_low_hit_rate(healthy(), 0.2), "get", 0.06))
    scenario.l1.update(bytes=120 * MIB, max_bytes=256 * MIB)
    report = evaluate(scenario.snapshot(), now=1_700_000_000.0)
    data = report.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["status"] == "unhealthy"
    assert data["evaluated_at"] == 1_700_000_000.0
    assert {s["name"] for s in data["symptoms"]} >= {
        "LowHitRate",
        "HighMemory",
        "SlowOperations",
        "RedisUnavailable",
    }
    for cause in data["causes"]:
        assert cause["symptoms"] and cause["summary"] and cause["recommendations"]
    assert data["summary"]["redis"] == "unavailable"


def test_a_window_shows_a_fresh_problem_that_the_cumulative_history_hides() -> None:
    scenario = healthy()
    stats = scenario.stats
    stats.hits_l1, stats.hits_l2, stats.misses = 90_000, 0, 10_000  # a long, healthy past
    before = build_snapshot(stats, l1=scenario.l1, l2=scenario.l2, config=scenario.config,
                            now=stats.started_at + 3600)  # fmt: skip
    stats.misses += 800  # the last minute: almost everything misses
    stats.hits_l1 += 200
    after = build_snapshot(stats, l1=scenario.l1, l2=scenario.l2, config=scenario.config,
                           now=stats.started_at + 3660)  # fmt: skip
    assert evaluate(after).status is Status.HEALTHY
    window_report = evaluate(diff_snapshots(after, before))
    assert window_report.symptom(SymptomName.LOW_HIT_RATE) is not None
    assert window_report.window_seconds == pytest.approx(60)
