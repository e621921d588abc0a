"""The short detection window and the state-based Redis judgement (pure logic, real EngineStats).

``cache_runtime.health.detection_window`` picks the window workload symptoms are judged on (the
shortest holding ``min_requests`` lookups; Redis figures over the longest), and
``cache_runtime.symptoms.redis_outage`` judges Redis on the engine's state (breaker, its own checks,
the coherence subscription), never on errors counted in a window. Through the operator's hysteresis
(``cache_operator.incidents.detection.observe``): an outage whose windows hold no error stays open, a
single failed check opens nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from cache_operator.incidents.detection import DetectionSettings, observe, summarize_probe
from cache_runtime.health import DETECTION_WINDOWS_S, detection_window, evaluate
from cache_runtime.stats import diff_snapshots, normalize_l2_stats
from cache_runtime.symptoms import REDIS_FAILED_CHECKS, ThresholdError, redis_outage, redis_state
from tests.unit.health_scenarios import Scenario, healthy, with_low_hit_rate, with_redis_down


def _windows(lookups: tuple[int, ...], l2_errors: tuple[int, ...] | None = None) -> list[Any]:
    """Windows of one engine ending now, shortest first, holding ``lookups`` lookups each."""
    windows = []
    for index, count in enumerate(lookups):
        scenario = with_low_hit_rate(healthy(), hit_rate=0.9, lookups=count)
        assert scenario.l2 is not None
        if l2_errors is not None:
            scenario.l2["errors"] = {"connection": l2_errors[index]}
        snapshot = dict(scenario.snapshot())
        snapshot["window_seconds"] = DETECTION_WINDOWS_S[index]
        windows.append(snapshot)
    return windows


def test_the_shortest_window_with_enough_lookups_is_judged() -> None:
    """10 s holds 50 lookups (too few), 30 s holds 500: the 30 s one is judged."""
    judged = detection_window(_windows((50, 500, 2000)), min_requests=100)
    assert judged["window_seconds"] == 30.0
    assert judged["requests"]["lookups"] == 500


def test_a_busy_pod_is_judged_on_the_shortest_window() -> None:
    """Enough lookups in 10 s: the shortest window."""
    judged = detection_window(_windows((400, 1200, 2400)), min_requests=100)
    assert judged["window_seconds"] == DETECTION_WINDOWS_S[0]


def test_a_quiet_pod_falls_back_to_the_longest_window() -> None:
    """No window holds min_requests: the longest (the one-minute window of before)."""
    judged = detection_window(_windows((5, 20, 60)), min_requests=100)
    assert judged["window_seconds"] == DETECTION_WINDOWS_S[-1]
    assert judged["requests"]["lookups"] == 60


def test_redis_figures_come_from_the_longest_window() -> None:
    """The short window's own Redis errors are replaced by the longest window's, and its length says so."""
    judged = detection_window(_windows((400, 1200, 2400), l2_errors=(0, 3, 9)), min_requests=100)
    assert judged["window_seconds"] == DETECTION_WINDOWS_S[0]
    assert judged["l2"]["errors"]["connection"] == 9
    assert judged["redis_window_seconds"] == DETECTION_WINDOWS_S[-1]
    report = evaluate(judged)
    assert report.window_seconds == DETECTION_WINDOWS_S[0]
    assert report.summary["redis_window_seconds"] == DETECTION_WINDOWS_S[-1]


def test_detection_window_rejects_bad_input() -> None:
    """No window, or a min_requests that is not an integer >= 0: an error naming it."""
    with pytest.raises(ValueError, match="at least one window"):
        detection_window([], min_requests=100)
    with pytest.raises(ThresholdError, match="min_requests"):
        detection_window(_windows((1,)), min_requests=-1)


def test_an_outage_with_no_error_in_the_window_is_still_redis_unavailable() -> None:
    """Breaker open, the engine's checks failing, subscription down; the window holds no error at all
    (the open breaker short-circuits every call): RedisUnavailable, critical, with the evidence."""
    scenario = _outage(healthy(), breaker="open", failed=4, subscribed=False)
    snapshot = scenario.snapshot()
    assert snapshot["l2"] is not None and sum(snapshot["l2"]["errors"].values()) == 0
    symptom = evaluate(snapshot).symptom("RedisUnavailable")
    assert symptom is not None and symptom.severity == "critical"
    assert symptom.details["failed_checks"] == 4
    assert symptom.details["subscription_connected"] is False
    assert "last successful check 40 s ago" in symptom.message


@pytest.mark.parametrize(
    ("breaker", "failed", "subscribed", "state"),
    [
        ("closed", 0, True, "connected"),
        ("closed", REDIS_FAILED_CHECKS - 1, True, "connected"),  # one failed check is a blip
        ("closed", REDIS_FAILED_CHECKS, True, "unavailable"),
        ("closed", 0, False, "unavailable"),  # the coherence subscription is down
        ("closed", 0, None, "connected"),  # no subscription: nothing to judge
        ("half_open", 0, True, "unavailable"),  # RedisL2 is not available while half-open
        ("half_open", REDIS_FAILED_CHECKS, True, "unavailable"),
        ("open", 0, True, "unavailable"),
    ],
)
def test_redis_state_is_the_engines_state(
    breaker: str, failed: int, subscribed: bool | None, state: str
) -> None:
    """Breaker, failed checks in a row and the subscription decide; the symptom follows the state."""
    scenario = _outage(healthy(), breaker=breaker, failed=failed, subscribed=subscribed)
    snapshot = scenario.snapshot()
    assert redis_state(snapshot) == state
    shown = evaluate(snapshot).symptom("RedisUnavailable") is not None
    assert shown == (state != "connected")
    assert (redis_outage(snapshot) is None) == (state == "connected")


def test_errors_of_a_flapping_redis_still_count_with_the_breaker_closed() -> None:
    """Breaker closed and checks fine but most calls of the (long) window failed: RedisUnavailable
    as before (the windowed error share)."""
    scenario = healthy()
    assert scenario.l2 is not None
    scenario.l2.update(errors={"connection": 300, "timeout": 20}, ops=400)
    symptom = evaluate(scenario.snapshot()).symptom("RedisUnavailable")
    assert symptom is not None and symptom.unit == "ratio"


def test_normalize_reads_the_engine_view() -> None:
    """The facade's checks and RedisL2's coherence summary become the snapshot's gauges."""
    l2 = normalize_l2_stats(
        {
            "breaker": {"state": "closed"},
            "checks": {"failed": 3, "seconds_since_ok": 31.5},
            "coherence": {"listeners": 1, "connected": False},
        }
    )
    assert l2 is not None
    assert (l2["failed_checks"], l2["seconds_since_ok"], l2["subscription_connected"]) == (3, 31.5, False)
    bare = normalize_l2_stats({"breaker": {"state": "closed"}, "coherence": {"listeners": 0}})
    assert bare is not None and "subscription_connected" not in bare and "failed_checks" not in bare


def test_a_window_diff_keeps_the_engine_view_of_the_newer_snapshot() -> None:
    """The gauges are the newer snapshot's in a window (they are a state, not a count)."""
    older = _outage(healthy(), breaker="closed", failed=0, subscribed=True).snapshot()
    newer = _outage(healthy(), breaker="half_open", failed=REDIS_FAILED_CHECKS, subscribed=False).snapshot()
    window = diff_snapshots(newer, older)
    assert window["l2"] is not None
    assert window["l2"]["failed_checks"] == REDIS_FAILED_CHECKS
    assert redis_state(window) == "unavailable"


def test_hysteresis_keeps_an_outage_open_and_ignores_a_blip() -> None:
    """Through the operator's detection at the default probes (3 in a row both ways): an outage
    whose breaker goes open -> half-open -> open with empty windows opens RedisUnavailable once and
    never clears while it lasts; it clears once after Redis is back; a single failed check (a blip)
    between healthy probes opens nothing."""
    settings = DetectionSettings()
    outage = [("open", 1, False), ("half_open", 2, False), ("open", 3, False), ("half_open", 4, False)] * 4
    back = [("closed", 0, True)] * 5
    blip = [("closed", 1, True), ("closed", 0, True)] * 3
    state: dict[str, Any] | None = None
    events = []
    for step, (breaker, failed, subscribed) in enumerate(outage + back + blip):
        snapshot = _outage(healthy(), breaker=breaker, failed=failed, subscribed=subscribed).snapshot()
        report = {"diagnosis": evaluate(snapshot).to_dict()}
        state, opened, cleared = observe(
            state, summarize_probe({"pod-0": report}, None), 1000.0 + 15 * step, settings
        )
        events += [("open", e.name, step) for e in opened] + [("clear", e.name, step) for e in cleared]
    assert [(kind, name) for kind, name, _ in events] == [
        ("open", "RedisUnavailable"),
        ("clear", "RedisUnavailable"),
    ]
    assert events[0][2] == 2 and events[1][2] == len(outage) + 2


def _outage(scenario: Scenario, *, breaker: str, failed: int, subscribed: bool | None) -> Scenario:
    """The scenario's Redis in the given engine state; no error in the window (an open breaker makes
    no call)."""
    if breaker == "open":
        scenario = with_redis_down(scenario, errors=0)
    assert scenario.l2 is not None
    scenario.l2.update(
        breaker_state=breaker,
        available=breaker == "closed",
        errors={},
        checks={"failed": failed, "seconds_since_ok": 10.0 * failed},
        coherence={"listeners": 0 if subscribed is None else 1, "connected": subscribed},
    )
    return scenario


def test_causes_are_diagnosed_on_the_evidence_window() -> None:
    """The symptom comes from the short window; its cause from the evidence window (the longest),
    which still holds what was recorded at the fault's onset (here: re-typed question variants)."""
    from tests.unit.health_scenarios import with_text_variants

    short = with_low_hit_rate(healthy(), hit_rate=0.2, lookups=400).snapshot()
    longest = with_text_variants(with_low_hit_rate(healthy(), hit_rate=0.2, lookups=1200)).snapshot()
    alone = evaluate(short)
    with_evidence = evaluate(short, evidence=longest)
    assert alone.symptom("LowHitRate") is not None and with_evidence.symptom("LowHitRate") is not None
    assert "KeyInconsistency" not in [c.name for c in alone.causes]
    assert with_evidence.causes[0].name == "KeyInconsistency"
    # ... and the other way round: fresh evidence in the short window outranks a diluted long one.
    reverse = evaluate(longest, evidence=short)
    assert reverse.causes[0].name == "KeyInconsistency"
    assert "Undetermined" not in [c.name for c in reverse.causes]


def test_verification_counts_are_the_lifetime_ones() -> None:
    """Verification takes hits and lookups between probes from the counts since the pod started (exact
    hits when reported), not from the detection window, whose counts do not grow between probes."""
    from cache_operator.incidents.remediation import rate_between, rate_counts

    def report(window_lookups: int, hits: int, lookups: int) -> dict[str, Any]:
        return {
            "hit_rates": {"overall": 0.1, "l1": 0.1, "lookups": window_lookups},
            "lifetime_hit_rates": {
                "overall": 0.0,
                "l1": 0.0,
                "lookups": lookups,
                "hits": hits,
                "l1_hits": hits,
            },
        }

    before = rate_counts("LowHitRate", {"pod-0": report(150, 100_000, 1_000_000)})
    after = rate_counts("LowHitRate", {"pod-0": report(150, 100_300, 1_000_300)})
    assert before == {"pod-0": [100_000, 1_000_000]}
    assert rate_between(before, after) == 1.0  # every lookup since the last probe hit
    old_runtime = {"pod-0": {"lifetime_hit_rates": {"overall": 0.5, "lookups": 200}}}
    assert rate_counts("LowHitRate", old_runtime) == {"pod-0": [100.0, 200]}
