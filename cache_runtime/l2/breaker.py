"""Circuit breaker for the Redis tier: pure logic, no I/O, injectable clock.

closed --N consecutive failures--> open --open_seconds elapsed--> half-open
half-open --probe success--> closed;  half-open --probe failure--> open (timer restarts)

While open, ``allow()`` answers False without touching anything, so callers return their "nothing"
value at once: that is what bounds the number of operations that pay a timeout during an outage to
about ``failure_threshold`` (plus the calls already in flight). Half-open admits at most
``half_open_probes`` calls at a time; everyone else is still short-circuited.

Results that arrive while the breaker is open come from calls started before it opened: they are
ignored, so a burst of late timeouts does not extend the outage window and a late success does not
close the breaker before the probe proves Redis is back. A probe that never reports (its caller was
cancelled and did not call ``abandon()``) frees its slot after ``probe_timeout_s``, so the breaker can
never stay half-open forever.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.StrEnum):
    """The three states of the breaker; the values are what stats and metrics show."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN

TransitionListener = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Counts consecutive failures and short-circuits calls while the protected service is down."""

    __slots__ = (
        "_clock",
        "_consecutive_failures",
        "_failure_threshold",
        "_half_open_probes",
        "_listener",
        "_open_seconds",
        "_open_until",
        "_probe_deadline",
        "_probe_timeout_s",
        "_probes_in_flight",
        "_state",
        "opened_total",
        "state_changed_at",
    )

    def __init__(
        self,
        failure_threshold: int = 3,
        open_seconds: float = 1.0,
        half_open_probes: int = 1,
        *,
        probe_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionListener | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold: invalid value {failure_threshold!r}; accepted: >= 1")
        if open_seconds <= 0:
            raise ValueError(f"open_seconds: invalid value {open_seconds!r}; accepted: > 0")
        if half_open_probes < 1:
            raise ValueError(f"half_open_probes: invalid value {half_open_probes!r}; accepted: >= 1")
        self._failure_threshold = failure_threshold
        self._open_seconds = open_seconds
        self._half_open_probes = half_open_probes
        self._probe_timeout_s = probe_timeout_s
        self._clock = clock
        self._listener = on_transition
        self._state = _CLOSED
        self._consecutive_failures = 0
        self._open_until = 0.0
        self._probes_in_flight = 0
        self._probe_deadline = 0.0
        #: How many times the breaker went to open (from closed or half-open).
        self.opened_total = 0
        #: Clock reading of the last state change.
        self.state_changed_at = clock()

    # -- reading -------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """Current state; an open breaker whose time is up reads as half-open."""
        if self._state is _OPEN and self._clock() >= self._open_until:
            self._enter(_HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success (what the threshold is compared with)."""
        return self._consecutive_failures

    @property
    def probes_in_flight(self) -> int:
        """Half-open probe calls admitted and not yet reported."""
        return self._probes_in_flight

    def seconds_until_half_open(self) -> float:
        """Time left before an open breaker admits a probe (0 when not open)."""
        if self._state is not _OPEN:
            return 0.0
        return max(0.0, self._open_until - self._clock())

    # -- deciding ------------------------------------------------------------------------------

    def allow(self) -> bool:
        """May a call go to the service now? In half-open, True reserves one probe slot."""
        state = self._state
        if state is _CLOSED:
            return True
        now = self._clock()
        if state is _OPEN:
            if now < self._open_until:
                return False
            self._enter(_HALF_OPEN)
        if self._probes_in_flight >= self._half_open_probes:
            if now < self._probe_deadline:
                return False
            # The probes admitted earlier never reported: treat their slots as free.
            self._probes_in_flight = 0
        self._probes_in_flight += 1
        self._probe_deadline = now + self._probe_timeout_s
        return True

    # -- reporting -----------------------------------------------------------------------------

    def record_success(self) -> None:
        """The service answered. Closes a half-open breaker; ignored while open (a late result)."""
        state = self._state
        if state is _CLOSED:
            self._consecutive_failures = 0
        elif state is _HALF_OPEN:
            self._consecutive_failures = 0
            self._enter(_CLOSED)

    def record_failure(self) -> None:
        """The service failed (timeout, refused, auth...). May open the breaker."""
        state = self._state
        if state is _CLOSED:
            self._consecutive_failures += 1
            if self._consecutive_failures >= self._failure_threshold:
                self._enter(_OPEN)
        elif state is _HALF_OPEN:
            self._consecutive_failures += 1
            self._enter(_OPEN)
        # While open: a call started before the breaker opened; its failure adds no information.

    def abandon(self) -> None:
        """A call admitted by ``allow()`` ended without a verdict (cancelled): free its probe slot."""
        if self._state is _HALF_OPEN and self._probes_in_flight > 0:
            self._probes_in_flight -= 1

    def reconfigure(self, failure_threshold: int, open_seconds: float, half_open_probes: int,
                    probe_timeout_s: float) -> None:
        """New thresholds, keeping the state and the failure count (a live config change).

        An open breaker keeps its current open window; the new ``open_seconds`` applies from the
        next time it opens.
        """
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold: invalid value {failure_threshold!r}; accepted: >= 1")
        if open_seconds <= 0:
            raise ValueError(f"open_seconds: invalid value {open_seconds!r}; accepted: > 0")
        if half_open_probes < 1:
            raise ValueError(f"half_open_probes: invalid value {half_open_probes!r}; accepted: >= 1")
        self._failure_threshold = failure_threshold
        self._open_seconds = open_seconds
        self._half_open_probes = half_open_probes
        self._probe_timeout_s = probe_timeout_s
        if self._state is _CLOSED and self._consecutive_failures >= failure_threshold:
            self._enter(_OPEN)

    def reset(self) -> None:
        """Back to closed with no failure history (used after an explicit reconnect)."""
        self._consecutive_failures = 0
        if self._state is not _CLOSED:
            self._enter(_CLOSED)

    # -- internals -----------------------------------------------------------------------------

    def _enter(self, new: BreakerState) -> None:
        old = self._state
        now = self._clock()
        self._state = new
        self.state_changed_at = now
        self._probes_in_flight = 0
        if new is _OPEN:
            self._open_until = now + self._open_seconds
            self.opened_total += 1
        if self._listener is not None and old is not new:
            self._listener(old, new)
