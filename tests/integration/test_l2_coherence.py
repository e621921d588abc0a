"""The pub/sub listener for cross-pod L1 coherence, in RESP2 and RESP3, through drops and restarts."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

import pytest

from cache_runtime.l2 import RedisL2, RedisSettings, lag_seconds, pack_stamped, unpack_stamped
from cache_runtime.l2.coherence import CoherenceListener
from cache_runtime.l2.connect import RedisClients
from tests.waiting import eventually as wait_eventually

if TYPE_CHECKING:
    from tests.integration.conftest import Blackhole, RedisFactory, RedisProcess

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30
CHANNEL = "cw:coherence"


class Recorder:
    """Collects what the listener delivers, in order, with the resets interleaved."""

    def __init__(self) -> None:
        self.events: list[bytes | str] = []

    def on_message(self, payload: bytes) -> None:
        self.events.append(payload)

    def on_reset(self) -> None:
        self.events.append("RESET")

    @property
    def messages(self) -> list[bytes]:
        return [e for e in self.events if isinstance(e, bytes)]

    @property
    def resets(self) -> int:
        return self.events.count("RESET")


def settings_for(url: str, protocol: int, **overrides: object) -> RedisSettings:
    values: dict[str, object] = {
        "url": url,
        "protocol": protocol,
        "connect_timeout_s": 0.5,
        "socket_timeout_s": 0.3,
        "breaker_open_seconds": 0.2,
        "coherence_reconnect_min_s": 0.02,
        "coherence_reconnect_max_s": 0.2,
    }
    values.update(overrides)
    return RedisSettings(**values)  # type: ignore[arg-type]


eventually = functools.partial(wait_eventually, timeout=6.0)


async def publish_until_delivered(publisher: RedisL2, recorder: Recorder, payload: bytes) -> bool:
    """Publish (repeatedly while the publisher's breaker recovers) until the subscriber got it."""
    for _ in range(100):
        await publisher.publish(CHANNEL, payload)
        if await eventually(lambda: payload in recorder.messages, timeout=0.2, fail=False):
            return True
    return False


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def protocol(request: pytest.FixtureRequest) -> int:
    return int(request.param)


async def test_messages_are_delivered_in_order(
    redis_server: RedisProcess, redis_url: str, protocol: int
) -> None:
    recorder = Recorder()
    async with (
        asyncio.timeout(HANG_GUARD_S),
        RedisL2(settings_for(redis_url, protocol)) as subscriber,
        RedisL2(settings_for(redis_url, protocol)) as publisher,
    ):
        listener = subscriber.subscribe(CHANNEL, recorder.on_message, recorder.on_reset)
        assert await listener.wait_subscribed(5)
        # The subscription really speaks the protocol under test.
        pubsub_clients = redis_server.command("CLIENT", "LIST", "TYPE", "pubsub").decode()
        assert f"resp={protocol}" in pubsub_clients
        payloads = [f"inval:{i}".encode() for i in range(200)] + [b"", b"\x00\xff binary"]
        for payload in payloads:
            assert await publisher.publish(CHANNEL, payload)
        await publisher.publish("cw:other-channel", b"not for us")
        assert await eventually(lambda: len(recorder.messages) == len(payloads))
        assert recorder.messages == payloads
        assert recorder.resets == 0  # the first subscription is not a reset
        stats = subscriber.stats()["coherence"]
        assert stats["connected"] is True
        assert stats["messages"] == len(payloads)


async def test_client_kill_of_the_subscription_triggers_reset_and_resubscribe(
    redis_server: RedisProcess, redis_url: str, protocol: int
) -> None:
    recorder = Recorder()
    async with (
        asyncio.timeout(HANG_GUARD_S),
        RedisL2(settings_for(redis_url, protocol)) as subscriber,
        RedisL2(settings_for(redis_url, protocol)) as publisher,
    ):
        listener = subscriber.subscribe(CHANNEL, recorder.on_message, recorder.on_reset)
        assert await listener.wait_subscribed(5)
        assert await publish_until_delivered(publisher, recorder, b"before")

        killed = redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        assert await eventually(lambda: recorder.resets == 1)
        assert await eventually(lambda: listener.connected)
        assert await publish_until_delivered(publisher, recorder, b"after")
        # The reset comes before anything delivered on the new subscription.
        assert recorder.events.index("RESET") < recorder.events.index(b"after")
        stats = listener.stats()
        assert stats["resets"] == 1
        assert stats["reconnects"] >= 1
        assert sum(stats["errors"].values()) >= 1


async def test_redis_restart_triggers_reset_and_the_listener_comes_back(
    redis_factory: RedisFactory, protocol: int
) -> None:
    server = redis_factory.start()
    recorder = Recorder()
    async with (
        asyncio.timeout(HANG_GUARD_S),
        RedisL2(settings_for(server.url, protocol)) as subscriber,
        RedisL2(settings_for(server.url, protocol)) as publisher,
    ):
        listener = subscriber.subscribe(CHANNEL, recorder.on_message, recorder.on_reset)
        assert await listener.wait_subscribed(5)
        server.stop()
        assert await eventually(lambda: not listener.connected)
        # While Redis is down the listener keeps retrying with bounded backoff.
        assert await eventually(lambda: listener.stats()["reconnects"] >= 2)
        assert listener.stats()["reconnects"] >= 2
        assert recorder.resets == 0
        server.start()
        assert await eventually(lambda: recorder.resets == 1)
        assert await publish_until_delivered(publisher, recorder, b"back")


async def test_a_silently_hung_server_is_detected_by_the_ping(redis_factory: RedisFactory) -> None:
    server = redis_factory.start()
    recorder = Recorder()
    settings = settings_for(server.url, 2, coherence_ping_interval_s=0.1, socket_timeout_s=0.2)
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as subscriber:
        listener = subscriber.subscribe(CHANNEL, recorder.on_message, recorder.on_reset)
        assert await listener.wait_subscribed(5)
        server.pause()  # the socket stays open: only the missing PONG reveals the outage
        try:
            assert await eventually(lambda: not listener.connected)
            assert listener.stats()["errors"].get("timeout", 0) >= 1
        finally:
            server.resume()
        assert await eventually(lambda: recorder.resets == 1)
        assert listener.connected


async def test_a_failing_callback_does_not_stop_the_listener(redis_url: str) -> None:
    seen: list[bytes] = []

    def fragile(payload: bytes) -> None:
        seen.append(payload)
        if payload == b"boom":
            raise RuntimeError("facade bug")

    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings_for(redis_url, 2)) as l2:
        listener = l2.subscribe(CHANNEL, fragile, lambda: None)
        assert await listener.wait_subscribed(5)
        await l2.publish(CHANNEL, b"boom")
        await l2.publish(CHANNEL, b"fine")
        assert await eventually(lambda: seen == [b"boom", b"fine"])
        assert listener.stats()["callback_errors"] == 1
        assert listener.stats()["resets"] == 0


async def test_close_stops_the_listener(redis_server: RedisProcess, redis_url: str) -> None:
    recorder = Recorder()
    l2 = RedisL2(settings_for(redis_url, 2))
    await l2.start()
    listener = l2.subscribe(CHANNEL, recorder.on_message, recorder.on_reset)
    assert await listener.wait_subscribed(5)
    assert redis_server.command("PUBSUB", "NUMSUB", CHANNEL)[1] == 1
    await l2.close()
    assert not listener.connected
    assert await eventually(lambda: redis_server.command("PUBSUB", "NUMSUB", CHANNEL)[1] == 0)


async def test_reconnect_restarts_the_listener_with_a_reset(redis_url: str) -> None:
    recorder = Recorder()
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings_for(redis_url, 3)) as l2:
        listener = l2.subscribe(CHANNEL, recorder.on_message, recorder.on_reset)
        assert await listener.wait_subscribed(5)
        await l2.reconnect()
        assert await eventually(lambda: recorder.resets == 1)
        assert await publish_until_delivered(l2, recorder, b"after-reconnect")


async def test_stamped_messages_measure_the_lag(redis_url: str) -> None:
    lags: list[float] = []
    payloads: list[bytes] = []

    def on_message(message: bytes) -> None:
        stamped = unpack_stamped(message)
        payloads.append(stamped.payload)
        lags.append(lag_seconds(stamped))

    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings_for(redis_url, 2)) as l2:
        listener = l2.subscribe(CHANNEL, on_message, lambda: None)
        assert await listener.wait_subscribed(5)
        for i in range(20):
            await l2.publish(CHANNEL, pack_stamped(f"k{i}".encode()))
        assert await eventually(lambda: len(lags) == 20)
        assert payloads == [f"k{i}".encode() for i in range(20)]
        assert all(lag >= 0 for lag in lags)


async def test_unsubscribe_stops_and_forgets_one_listener(redis_server: RedisProcess, redis_url: str) -> None:
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings_for(redis_url, 2)) as l2:
        kept = l2.subscribe("cw:kept", lambda _: None, lambda: None)
        dropped = l2.subscribe(CHANNEL, lambda _: None, lambda: None)
        assert await kept.wait_subscribed(5) and await dropped.wait_subscribed(5)
        assert l2.stats()["coherence"]["listeners"] == 2
        await l2.unsubscribe(dropped)
        assert l2.stats()["coherence"]["listeners"] == 1
        assert await eventually(lambda: redis_server.command("PUBSUB", "NUMSUB", CHANNEL)[1] == 0)
        assert redis_server.command("PUBSUB", "NUMSUB", "cw:kept")[1] == 1


async def test_a_listener_on_a_blackhole_keeps_retrying_without_hanging(blackhole: Blackhole) -> None:
    recorder = Recorder()
    settings = settings_for(blackhole.url, 2, socket_timeout_s=0.1)
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        listener = l2.subscribe(CHANNEL, recorder.on_message, recorder.on_reset)
        assert await eventually(lambda: listener.stats()["reconnects"] >= 2)
        assert not listener.connected
        assert listener.stats()["errors"].get("timeout", 0) >= 2
        assert recorder.events == []
    assert not listener.connected  # close() stopped it


class CancelSwallowingListener(CoherenceListener):
    """Does what redis-py does when a cancellation lands as its read timeout fires: the first
    cancellation comes out of the read as a TimeoutError (the listener then sees a dropped link)."""

    swallowed = 0

    async def _listen(self, clients: RedisClients) -> None:
        try:
            await super()._listen(clients)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
            raise TimeoutError("Timeout reading from socket") from None


async def test_stop_returns_while_the_listener_is_blocked_on_a_read(blackhole: Blackhole) -> None:
    # A long read timeout: the SUBSCRIBE confirmation read stays blocked for the whole test.
    settings = settings_for(blackhole.url, 2, socket_timeout_s=60.0)
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        listener = l2.subscribe(CHANNEL, lambda _: None, lambda: None)
        assert await eventually(lambda: len(blackhole.accepted) == 1)
        await l2.unsubscribe(listener)
        assert not listener.connected
        assert l2.stats()["coherence"]["listeners"] == 0
        assert listener.stats()["reconnects"] == 0  # it stopped; it did not go round again


async def test_stop_returns_when_the_first_cancellation_is_swallowed(blackhole: Blackhole) -> None:
    settings = settings_for(blackhole.url, 2, socket_timeout_s=60.0)
    recorder = Recorder()
    async with asyncio.timeout(HANG_GUARD_S):
        listener = CancelSwallowingListener(settings, CHANNEL, recorder.on_message, recorder.on_reset)
        listener.start()
        assert await eventually(lambda: len(blackhole.accepted) == 1)
        await listener.stop()
        assert listener.swallowed == 1
        assert listener.stats()["errors"].get("timeout") == 1  # the swallowed cancellation
        assert listener.stats()["reconnects"] == 0
        # It did not reconnect after the swallowed cancellation: still one connection only.
        await asyncio.sleep(0.1)
        assert len(blackhole.accepted) == 1


async def test_stop_returns_when_the_first_cancellation_is_swallowed_on_a_live_redis(
    redis_server: RedisProcess, redis_url: str, protocol: int
) -> None:
    recorder = Recorder()
    async with asyncio.timeout(HANG_GUARD_S):
        listener = CancelSwallowingListener(settings_for(redis_url, protocol), CHANNEL, recorder.on_message,
                                            recorder.on_reset)
        listener.start()
        assert await listener.wait_subscribed(5)
        assert redis_server.command("PUBSUB", "NUMSUB", CHANNEL)[1] == 1
        await listener.stop()
        assert listener.swallowed == 1 and not listener.connected
        assert await eventually(lambda: redis_server.command("PUBSUB", "NUMSUB", CHANNEL)[1] == 0)
        assert recorder.resets == 0
