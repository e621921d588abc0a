"""RedisL2's lane: lone GETs on one checked-out pooled connection (RedisL2._lane_get).

Each test checks an effect seen from outside the engine: the value returned, what Redis counts
(connections received, commands), what the pool can still hand out. No timing asserts.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from cache_runtime.l2 import BreakerState, RedisL2, RedisSettings
from tests.integration.l2_settings import fast_settings

if TYPE_CHECKING:
    from tests.integration.conftest import RedisFactory, RedisProcess

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30  # only there so a regression fails instead of hanging


def settings(url: str, **overrides: object) -> RedisSettings:
    """The integration tests' short timeouts, with a socket timeout long enough for a lane's reads."""
    return fast_settings(url, **{"socket_timeout_s": 2.0, **overrides})


def connections_received(server: RedisProcess) -> int:
    """Connections the server accepted since it started (this call's own connection included)."""
    with server.client() as conn:
        return int(conn.info("stats")["total_connections_received"])


def server_with_a_and_b(redis_factory: RedisFactory) -> RedisProcess:
    """A fresh server holding cw:a = "a" and cw:b = "b": two keys whose replies cannot be mistaken."""
    server = redis_factory.start()
    server.command("SET", "cw:a", "a")
    server.command("SET", "cw:b", "b")
    return server


async def test_sequential_gets_reuse_one_connection_and_return_each_keys_value(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory.start()
    for i in range(20):
        server.command("SET", f"cw:{i}", f"v{i}")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings(server.url)) as l2:
        assert await l2.get("cw:0") == b"v0"
        before = connections_received(server)
        values = [await l2.get(f"cw:{i}") for i in range(20)] + [await l2.get("cw:missing")]
        assert values == [f"v{i}".encode() for i in range(20)] + [None]
        # the lane: no new connection per GET (+1 is connections_received's own)
        assert connections_received(server) == before + 1
        assert server.command_calls("get") >= 22


async def test_an_error_reply_leaves_the_lane_usable(redis_factory: RedisFactory) -> None:
    server = redis_factory.start()
    server.command("RPUSH", "cw:list", "x")
    server.command("SET", "cw:k", "v")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings(server.url)) as l2:
        assert await l2.get("cw:k") == b"v"
        before = connections_received(server)
        assert await l2.get("cw:list") is None  # WRONGTYPE: answered, counted, never raised
        assert l2.stats()["errors_total"] == 1
        assert await l2.get("cw:k") == b"v"
        assert connections_received(server) == before + 1  # +1: connections_received's own
        assert l2.breaker_state is BreakerState.CLOSED


async def test_a_lane_closed_by_the_server_while_idle_costs_no_miss(redis_factory: RedisFactory) -> None:
    server = redis_factory.start()
    server.command("SET", "cw:k", "v")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings(server.url)) as l2:
        assert await l2.get("cw:k") == b"v"
        await asyncio.sleep(1.1)  # idle longer than the lane's retry threshold (_LANE_IDLE_RETRY_S)
        server.command("CLIENT", "KILL", "TYPE", "normal")  # as a server `timeout` or a proxy would
        # The pool's checkout notices a closed idle socket before sending; the lane notices it on the
        # GET and sends it again through the pool: the caller gets the value, no failure is counted.
        assert await l2.get("cw:k") == b"v"
        assert await l2.get("cw:k") == b"v"
        assert l2.stats()["errors_total"] == 0


async def test_a_get_cancelled_on_the_lane_does_not_leave_its_reply_for_the_next_one(
    redis_factory: RedisFactory,
) -> None:
    server = server_with_a_and_b(redis_factory)
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings(server.url)) as l2:
        assert await l2.get("cw:b") == b"b"  # the lane exists
        server.command("CLIENT", "PAUSE", "300", "ALL")  # the GET below is sent, its reply held back
        pending = asyncio.create_task(l2.get("cw:a"))
        await asyncio.sleep(0.05)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        # The cancelled GET's reply ("a") must not be read as the answer to the next GET.
        assert await l2.get("cw:b") == b"b"
        assert await l2.get("cw:a") == b"a"


async def test_a_get_that_times_out_on_the_lane_closes_it_and_names_the_server(
    redis_factory: RedisFactory,
) -> None:
    server = server_with_a_and_b(redis_factory)
    # With the longest polling budget (10 ms) too: past it the GET sleeps, and the timeout ends it.
    async with (
        asyncio.timeout(HANG_GUARD_S),
        RedisL2(settings(server.url, socket_timeout_s=0.3, spin_wait_us=10_000)) as l2,
    ):
        assert await l2.get("cw:b") == b"b"  # the lane exists
        server.pause()  # SIGSTOP: the GET below is sent and never answered until resume
        try:
            assert await l2.get("cw:a") is None  # the socket timeout ends it: a miss, not a hang
        finally:
            server.resume()
        stats = l2.stats()
        assert stats["errors"]["timeout"] == 1
        assert stats["last_errors"]["timeout"]["message"].endswith(
            f"Timeout reading from 127.0.0.1:{server.port}"
        ), stats["last_errors"]["timeout"]
        # Redis answers the timed-out GET once it resumes; that "a" must not become the answer to
        # the next GET: the lane was closed, the next GET goes out on a fresh connection.
        assert await l2.get("cw:b") == b"b"
        assert await l2.get("cw:a") == b"a"


@pytest.mark.parametrize("spin_wait_us", [0, 200, 10_000])
async def test_a_lone_get_waiting_for_its_reply_lets_the_rest_of_the_loop_run(
    redis_factory: RedisFactory, spin_wait_us: int
) -> None:
    # While a lone GET waits (polling for up to spin_wait_us, then sleeping on the socket), every
    # other task on the event loop keeps running: the polling yields on every pass.
    server = redis_factory.start()
    server.command("SET", "cw:k", "v")
    async with (
        asyncio.timeout(HANG_GUARD_S),
        RedisL2(settings(server.url, socket_timeout_s=5.0, spin_wait_us=spin_wait_us)) as l2,
    ):
        assert await l2.get("cw:k") == b"v"
        server.command("CLIENT", "PAUSE", "1000", "ALL")  # the next reply is held back for 1 s
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            for _ in range(20):
                await asyncio.sleep(0.001)
                ticks += 1

        pending = asyncio.create_task(l2.get("cw:k"))
        await asyncio.sleep(0)  # the GET is sent and waiting
        await ticker()
        assert not pending.done()  # the ticker ran to the end while the GET was still waiting
        assert ticks == 20
        assert await pending == b"v"
        assert l2.stats()["errors_total"] == 0


async def test_the_lane_gives_its_slot_back_when_the_pool_is_exhausted(redis_factory: RedisFactory) -> None:
    server = redis_factory.start()
    server.command("SET", "cw:k", "v")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings(server.url, max_connections=2)) as l2:
        assert await l2.get("cw:k") == b"v"  # the lane holds one of the two slots
        # The other slot is taken by a blocking pop; the next lone GET finds the pool exhausted and
        # hands the lane's connection back, so a write can still get a connection.
        blocker = asyncio.create_task(l2.client.blpop(["cw:never"], timeout=1))
        await asyncio.sleep(0.1)
        assert l2.in_flight == 0  # the blpop bypasses RedisL2's accounting, so the GET takes the lane
        assert await l2.get("cw:k") == b"v"
        assert await l2.set("cw:w", b"x", ttl_ms=10_000) is True
        assert l2.stats()["errors"]["pool"] == 0
        await blocker


async def test_a_pool_of_one_connection_has_no_lane(redis_factory: RedisFactory) -> None:
    server = redis_factory.start()
    server.command("SET", "cw:k", "v")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings(server.url, max_connections=1)) as l2:
        assert await l2.get("cw:k") == b"v"
        # With a lane the only connection would stay checked out and this write would wait for it.
        assert await l2.set("cw:w", b"x", ttl_ms=10_000) is True
        assert await l2.mget(["cw:k", "cw:w"]) == [b"v", b"x"]
        assert l2.stats()["errors"]["pool"] == 0


async def test_reconnect_moves_lone_gets_to_the_new_server(redis_factory: RedisFactory) -> None:
    first = redis_factory.start()
    second = redis_factory.start()
    first.command("SET", "cw:k", "one")
    second.command("SET", "cw:k", "two")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings(first.url)) as l2:
        assert await l2.get("cw:k") == b"one"
        await l2.reconnect(settings(second.url))
        assert await l2.get("cw:k") == b"two"
        assert await l2.get("cw:k") == b"two"


async def test_a_lane_in_use_that_breaks_is_counted_at_once(redis_factory: RedisFactory) -> None:
    server = redis_factory.start()
    server.command("SET", "cw:k", "v")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings(server.url)) as l2:
        assert await l2.get("cw:k") == b"v"
        server.command("CLIENT", "KILL", "TYPE", "normal")  # right after use: Redis going away
        assert await l2.get("cw:k") is None  # counted, not retried on whatever answers next
        assert l2.stats()["errors"]["connection"] == 1
        assert await l2.get("cw:k") == b"v"  # the next lone GET checks out a fresh connection
