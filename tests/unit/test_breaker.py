"""CircuitBreaker as a table of (events, expected state), with a fake clock."""

from __future__ import annotations

import pytest

from cache_runtime.l2.breaker import BreakerState, CircuitBreaker
from tests.fakes import FakeClock

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def make(threshold: int = 3, open_s: float = 1.0, probes: int = 1, probe_timeout_s: float = 30.0):
    clock = FakeClock(100.0)
    transitions: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        threshold,
        open_s,
        probes,
        probe_timeout_s=probe_timeout_s,
        clock=clock,
        on_transition=lambda old, new: transitions.append((old, new)),
    )
    return breaker, clock, transitions


# Each step: "F" failure, "S" success, "A" allow() expecting True, "D" allow() expecting False,
# "X" abandon(), "t<seconds>" advance the clock. Then the expected state after the whole sequence.
TABLE = [
    ("", CLOSED),
    ("F F", CLOSED),
    ("F F F", OPEN),
    ("F F S F F", CLOSED),  # a success resets the consecutive count
    ("F F S F F F", OPEN),
    ("F F F D", OPEN),  # open: calls are refused
    ("F F F t0.99 D", OPEN),
    ("F F F t1.0 A", HALF),  # time is up: one probe goes through
    ("F F F t1.0 A D", HALF),  # ...and only one
    ("F F F t1.0 A S", CLOSED),  # probe success closes
    ("F F F t1.0 A F", OPEN),  # probe failure re-opens
    ("F F F t1.0 A F D", OPEN),
    ("F F F t1.0 A F t0.5 D", OPEN),  # the open timer restarted at the probe failure
    ("F F F t1.0 A F t1.0 A", HALF),
    ("F F F t1.0 A F t1.0 A S", CLOSED),
    ("F F F F F F", OPEN),  # late failures while open are ignored...
    ("F F F t0.5 F F t0.5 A", HALF),  # ...and do not extend the open window
    ("F F F S D", OPEN),  # a late success while open does not close it
    ("F F F t1.0 A X A", HALF),  # an abandoned probe frees its slot
    ("F F F t1.0 A X X A", HALF),
    ("F F F t1.0 A t30.0 A", HALF),  # a probe that never reports frees its slot after probe_timeout
    ("F F F t1.0 A t29.0 D", HALF),
    ("S S S", CLOSED),
    ("X", CLOSED),  # abandon outside half-open changes nothing
]


def run(steps: str, breaker: CircuitBreaker, clock: FakeClock) -> None:
    for step in steps.split():
        if step == "F":
            breaker.record_failure()
        elif step == "S":
            breaker.record_success()
        elif step == "X":
            breaker.abandon()
        elif step == "A":
            assert breaker.allow() is True, f"allow() refused at step {step!r} of {steps!r}"
        elif step == "D":
            assert breaker.allow() is False, f"allow() admitted at step {step!r} of {steps!r}"
        elif step.startswith("t"):
            clock.now += float(step[1:])
        else:  # pragma: no cover - a typo in the table
            raise AssertionError(f"unknown step {step!r}")


@pytest.mark.parametrize(("steps", "expected"), TABLE)
def test_transition_table(steps: str, expected: BreakerState) -> None:
    breaker, clock, _ = make()
    run(steps, breaker, clock)
    assert breaker.state is expected


def test_state_reads_half_open_when_the_open_time_is_up_without_a_call() -> None:
    breaker, clock, transitions = make()
    run("F F F", breaker, clock)
    assert breaker.state is OPEN
    assert breaker.seconds_until_half_open() == pytest.approx(1.0)
    clock.now += 1.0
    assert breaker.state is HALF
    assert breaker.seconds_until_half_open() == 0.0
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF)]


def test_several_half_open_probes() -> None:
    breaker, clock, _ = make(probes=3)
    run("F F F t1.0 A A A D", breaker, clock)
    assert breaker.probes_in_flight == 3
    breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.probes_in_flight == 0


def test_threshold_of_one_opens_on_the_first_failure() -> None:
    breaker, clock, _ = make(threshold=1)
    run("F D", breaker, clock)
    assert breaker.state is OPEN


def test_counters_and_transitions_are_reported() -> None:
    breaker, clock, transitions = make()
    run("F F F t1.0 A F t1.0 A S", breaker, clock)
    assert breaker.opened_total == 2
    assert breaker.consecutive_failures == 0
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF), (HALF, OPEN), (OPEN, HALF), (HALF, CLOSED)]
    assert breaker.state_changed_at == clock.now


def test_reset_closes_and_forgets_failures() -> None:
    breaker, clock, transitions = make()
    run("F F F", breaker, clock)
    breaker.reset()
    assert breaker.state is CLOSED
    assert breaker.allow() is True
    run("F F", breaker, clock)
    assert breaker.state is CLOSED
    assert transitions[-1] == (OPEN, CLOSED)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold: invalid value 0"),
        ({"open_seconds": 0}, "open_seconds: invalid value 0"),
        ({"half_open_probes": 0}, "half_open_probes: invalid value 0"),
    ],
)
def test_bad_parameters_are_rejected_with_the_name(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_state_values_are_the_stats_strings() -> None:
    assert [state.value for state in BreakerState] == ["closed", "open", "half_open"]
    assert BreakerState("half_open") is HALF
