"""Live tuning of the Redis tier without new clients: pool bound, timeouts, breaker thresholds, and
which settings need new clients (pure; no server: connections are never opened here)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from cache_runtime.l2 import RedisL2, RedisSettings
from cache_runtime.l2.backend import CONNECTION_FIELDS
from cache_runtime.l2.breaker import BreakerState, CircuitBreaker
from cache_runtime.l2.connect import BoundedConnectionPool


async def test_resize_grows_at_once_and_shrinks_as_busy_slots_come_back() -> None:
    pool = BoundedConnectionPool(max_connections=4, timeout=0.1, host="127.0.0.1", port=1)
    slots = pool._slots
    busy = []
    for _ in range(3):  # three calls in flight (connections handed out, never connected here)
        await slots.acquire()
        busy.append(pool.get_available_connection())
    pool.resize(2)  # the one free slot is taken now, one busy slot is retired when it comes back
    assert pool.max_connections == 2 and slots._value == 0 and pool._retiring == 1
    for connection in busy:
        await pool.release(connection)
    assert slots._value == 2 and pool._retiring == 0  # the new bound, once every call returned
    pool.resize(5)
    assert pool.max_connections == 5 and slots._value == 5
    with pytest.raises(ValueError, match="max_connections: invalid value 0"):
        pool.resize(0)
    await pool.disconnect()


def test_growing_first_settles_slots_still_owed_by_a_shrink() -> None:
    pool = BoundedConnectionPool(max_connections=3, timeout=0.1, host="127.0.0.1", port=1)
    pool._slots._value = 0  # all three busy
    pool.resize(1)
    assert pool._retiring == 2
    pool.resize(2)
    assert pool._retiring == 1 and pool._slots._value == 0


def test_retune_sets_timeouts_for_new_and_existing_connections() -> None:
    pool = BoundedConnectionPool(max_connections=2, timeout=0.1, host="127.0.0.1", port=1,
                                 socket_timeout=1.0, socket_connect_timeout=2.0)
    existing = pool.make_connection()
    pool._available_connections.append(existing)
    pool.retune(socket_timeout=0.25, socket_connect_timeout=0.5, timeout=0.05)
    assert pool.timeout == 0.05
    assert existing.socket_timeout == 0.25 and existing.socket_connect_timeout == 0.5
    fresh = pool.make_connection()
    assert fresh.socket_timeout == 0.25 and fresh.socket_connect_timeout == 0.5


def test_breaker_reconfigure_keeps_its_state_and_applies_new_thresholds() -> None:
    now = [0.0]
    breaker = CircuitBreaker(5, 1.0, 1, clock=lambda: now[0])
    breaker.record_failure()
    breaker.record_failure()
    breaker.reconfigure(3, 2.0, 2, 5.0)
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 2
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    now[0] = 1.5
    assert breaker.state is BreakerState.OPEN  # the new open window (2 s)
    # A lower threshold than the failures already counted opens at once.
    other = CircuitBreaker(5, 1.0, 1, clock=lambda: now[0])
    for _ in range(3):
        other.record_failure()
    other.reconfigure(2, 1.0, 1, 5.0)
    assert other.state is BreakerState.OPEN
    with pytest.raises(ValueError, match="failure_threshold: invalid value 0"):
        other.reconfigure(0, 1.0, 1, 5.0)


async def test_which_settings_need_new_clients() -> None:
    settings = RedisSettings(url="redis://127.0.0.1:1/0")
    l2 = RedisL2(settings)
    await l2.start()  # builds clients, opens no connection
    try:
        tunable = replace(settings, max_connections=7, socket_timeout_s=0.2, connect_timeout_s=0.3,
                          pool_timeout_s=0.05, breaker_failure_threshold=9, breaker_open_seconds=4.0,
                          scan_count=50, coherence_ping_interval_s=1.0)
        assert not l2.needs_new_clients(tunable)
        client = l2.client
        l2.tune(tunable)
        assert l2.client is client and l2.settings is tunable
        assert client.connection_pool.max_connections == 7
        changes: list[dict[str, Any]] = [{"url": "redis://127.0.0.1:2/0"}, {"protocol": 3}, {"username": "u"},
                                         {"tls_verify": False}, {"client_name": "x"}]
        for change in changes:
            (name,) = change
            assert name in CONNECTION_FIELDS
            changed = replace(settings, **change)
            assert l2.needs_new_clients(changed), name
            with pytest.raises(ValueError, match="change how connections are made"):
                l2.tune(changed)
        assert await l2.drain(0.1)
    finally:
        await l2.close()
    await asyncio.sleep(0)
