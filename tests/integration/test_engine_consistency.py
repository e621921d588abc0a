"""Consistency of the engine across two events the soak caught serving older values (real redis-server):

1. a live config change that touches Redis settings (every preset change does) while writes are in
   flight: no acknowledged write may be lost from Redis, and no other engine may keep serving the
   value a write replaced (beyond the coherence bound);
2. writes, deletes and invalidations made while Redis does not answer: the answer says Redis did not
   take them, and once Redis answers again no engine serves the value they replaced.

Waits are bounded polls (the coherence bound), never timing assertions.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from typing import Any

import pytest
import redis.asyncio as aioredis

from cache_runtime import CacheConfig, TieredCache, resolve_config
from cache_runtime.codec import decode
from tests.waiting import eventually as wait_eventually

pytestmark = pytest.mark.integration

# How long a change may take to reach another engine (the soak's coherence bound is 1 s; a loaded
# machine gets more, this is a bound for a poll, not a timing assertion).
COHERENCE_WAIT_S = 10.0


def config(redis_url: str, **overrides: Any) -> CacheConfig:
    """The production preset (what the soak runs) without TTL jitter, plus ``overrides``."""
    return resolve_config("production", {"ttl.jitter_fraction": 0.0, **overrides}, redis_url=redis_url)


eventually = functools.partial(wait_eventually, timeout=COHERENCE_WAIT_S)


async def subscribed(*engines: TieredCache) -> None:
    def connected() -> bool:
        return all(e.l2 is not None and e.l2.stats()["coherence"]["connected"] for e in engines)

    await eventually(connected, what="every coherence subscription")


# ---- 1. live config change -----------------------------------------------------------------------

KEYS = 4000


@pytest.mark.parametrize("change", ["pool-and-timeouts", "new-clients"])
async def test_a_live_redis_settings_change_loses_no_write_and_no_invalidation(
        redis_url: str, change: str) -> None:
    """Both engines apply the change at once (as every pod does on a preset change) while A writes.

    ``pool-and-timeouts``: what a preset change touches (pool size, timeouts, breaker);
    ``new-clients``: a connection setting (the RESP protocol) that needs new clients.
    """
    start = config(redis_url, **{"l1.max_entries": 2 * KEYS})
    overrides: dict[str, Any] = {"l1.max_entries": 2 * KEYS, "redis.max_connections": 7,
                                 "redis.socket_timeout_s": 0.8, "redis.pool_timeout_s": 0.3,
                                 "redis.connect_timeout_s": 3.0, "redis.breaker_open_s": 1.0}
    url = redis_url + ("?protocol=3" if change == "new-clients" else "")
    new = config(url, **overrides)
    keys = [f"k{i}" for i in range(KEYS)]
    async with TieredCache(start) as a, TieredCache(start) as b, aioredis.from_url(redis_url) as check:
        await subscribed(a, b)
        assert await a.set_many(dict.fromkeys(keys, 0))
        assert len(await b.get_many(keys)) == KEYS  # B holds every key (version 0) in its L1
        assert all(b.get_local(key) == 0 for key in keys)

        applied = asyncio.Event()
        acknowledged: list[str] = []
        lost: list[str] = []

        async def writer() -> None:
            # Each key once (version 1): a write B misses is never corrected by a later write.
            for key in keys:
                if applied.is_set() and len(acknowledged) > 50:
                    return
                if await a.set(key, 1):
                    acknowledged.append(key)
                    raw = await check.get(a.keys.redis_key(key))
                    if not isinstance(raw, bytes) or decode(raw).value != 1:
                        lost.append(key)  # acknowledged, but Redis does not hold it

        task = asyncio.create_task(writer())
        await eventually(lambda: len(acknowledged) >= 20, what="the writer to run")
        reports = await asyncio.gather(a.apply_config(new), b.apply_config(new))
        applied.set()
        await task
        assert len(acknowledged) < KEYS, "the writer outran the config change: raise KEYS"
        assert not lost, f"{len(lost)} acknowledged writes are not in Redis, e.g. {lost[:5]}"

        async def stale_on_b() -> list[str]:
            return [key for key in acknowledged if await b.get(key) == 0]

        stale: list[str] = []

        async def b_caught_up() -> bool:
            stale[:] = await stale_on_b()
            return not stale

        try:
            await eventually(b_caught_up, what="B to drop every value A replaced")
        except AssertionError:
            raise AssertionError(f"B still serves the replaced value of {len(stale)} of "
                                 f"{len(acknowledged)} acknowledged keys, e.g. {stale[:5]}") from None
        if change == "new-clients":
            assert all(report["redis_rebuilt"] for report in reports)
        else:
            assert all(report["redis_tuned"] and not report["redis_rebuilt"] for report in reports)
            assert a.l2 is not None and a.l2.settings.max_connections == 7
        # The engines still work on the new settings: a write on A reaches B.
        await a.set("after", "x")
        await eventually(lambda: _equals(b.get("after"), "x"), what="a write after the change to reach B")


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


# ---- 2. changes Redis did not take ---------------------------------------------------------------

def outage_config(url: str, **overrides: Any) -> CacheConfig:
    return config(url, **{"redis.breaker_open_s": 0.2, "redis.socket_timeout_s": 0.3,
                          "redis.connect_timeout_s": 0.3, "redis.pool_timeout_s": 0.2, **overrides})


async def test_changes_made_while_redis_hangs_are_replayed_when_it_answers_again(redis_factory: Any) -> None:
    server = redis_factory.start()
    cfg = outage_config(server.url)
    keys = ("written", "deleted", "grp:1", "grp:2", "untouched")
    async with TieredCache(cfg) as a, TieredCache(cfg) as b:
        await subscribed(a, b)
        for key in keys:
            assert await a.set(key, "v1")
        for key in keys:
            assert await b.get(key) == "v1"  # B holds v1 in L1
        assert a.journal_state()["pending"] is False
        server.pause()  # SIGSTOP: connections stay open, nothing answers
        try:
            written = await a.set_detailed("written", "v2")
            deleted = await a.delete_detailed("deleted")
            invalidated = await a.invalidate(pattern="default:v*:grp:*")
            state = a.journal_state()
        finally:
            server.resume()
        assert written == {"stored": True, "l1": True, "l2": False, "degraded": True}
        assert deleted["l2"] is False and deleted["degraded"] is True
        assert invalidated["l2"] is False
        assert state["pending"] and state["keys"] == 2 and state["patterns"] == 1
        # Redis answers again: A replays what it changed (no new write needed).
        await eventually(lambda: not a.journal_state()["pending"], what="A to replay its journal")
        assert a.journal_state()["replays"] >= 1
        for key in ("written", "deleted", "grp:1", "grp:2"):
            assert server.command("EXISTS", a.keys.redis_key(key)) == 0, key

        async def b_has_no_replaced_value() -> bool:
            return [await b.get(key) for key in ("written", "deleted", "grp:1", "grp:2")] == [None] * 4

        await eventually(b_has_no_replaced_value, what="B to drop every value A replaced")
        assert await b.get("untouched") == "v1"
        assert await a.get("written") == "v2"  # A's own write, still in its L1
        # A fresh engine reads from Redis: never v1.
        async with TieredCache(cfg) as c:
            assert [await c.get(key) for key in ("written", "deleted", "grp:1", "grp:2")] == [None] * 4
            assert await c.get("untouched") == "v1"
        # Healthy again: writes reach Redis and say so.
        again = await a.set_detailed("written", "v3")
        assert again == {"stored": True, "l1": True, "l2": True, "degraded": False}
        await eventually(lambda: _equals(b.get("written"), "v3"), what="B to read the new write")


async def test_changes_made_while_redis_is_down_reach_redis_after_a_restart(redis_factory: Any) -> None:
    """Redis killed and started again on the same port (empty): the replay still runs, and A's
    write answered l2=false; keys written by another engine after the restart survive only if
    written after the replay (deletion is the safe side)."""
    server = redis_factory.start()
    cfg = outage_config(server.url)
    async with TieredCache(cfg) as a, TieredCache(cfg) as b:
        await subscribed(a, b)
        await a.set("k", "v1")
        assert await b.get("k") == "v1"
        server.stop()
        assert (await a.set_detailed("k", "v2"))["l2"] is False
        server.start()
        await eventually(lambda: not a.journal_state()["pending"], what="A to replay after the restart")
        # B's subscription dropped with the server: its reset voided L1, so it reads Redis again.
        await eventually(lambda: _equals(b.get("k"), None), what="B to stop serving v1")


async def test_an_overflowing_journal_invalidates_the_namespace(redis_factory: Any) -> None:
    server = redis_factory.start()
    cfg = outage_config(server.url)
    async with TieredCache(cfg, outage_journal_max_keys=2) as a, TieredCache(cfg) as b:
        await subscribed(a, b)
        for index in range(4):
            await a.set(f"k{index}", "v1")
            assert await b.get(f"k{index}") == "v1"
        server.pause()
        try:
            for index in range(3):
                assert (await a.set_detailed(f"k{index}", "v2"))["degraded"]
            state = a.journal_state()
        finally:
            server.resume()
        assert state["overflow"] and state["keys"] == 0 and state["overflows"] == 1
        version = a.keys.namespace_version
        await eventually(lambda: not a.journal_state()["pending"], what="A to replay the overflow")
        assert a.keys.namespace_version == version + 1  # one INCR instead of one UNLINK per key
        await eventually(lambda: b.keys.namespace_version == version + 1, what="B to move to the new version")
        assert [await b.get(f"k{index}") for index in range(4)] == [None] * 4


def test_the_journal_bound_is_checked() -> None:
    with pytest.raises(ValueError, match="outage_journal_max_keys: -1 is not accepted; accepted: an integer"):
        TieredCache(resolve_config("production"), outage_journal_max_keys=-1)


# ---- the data API says where a write went --------------------------------------------------------

async def test_the_data_api_answers_l2_false_for_writes_redis_did_not_take(
        redis_factory: Any, tmp_path: Any) -> None:
    import httpx
    import orjson

    from cache_runtime.service.app import create_app
    from cache_runtime.service.settings import ServiceSettings

    server = redis_factory.start()
    config_path = tmp_path / "config.json"
    config_path.write_bytes(orjson.dumps({"preset": "production", "redis_url": server.url, "overrides": {
        "redis.breaker_open_s": 0.2, "redis.socket_timeout_s": 0.3, "redis.connect_timeout_s": 0.3,
        "redis.pool_timeout_s": 0.2}}))
    settings = ServiceSettings.from_env({}, config_path=str(config_path), auth_disabled=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as client:
            healthy = (await client.put("/data/v1/keys/a", json={"value": 1})).json()
            assert healthy == {"key": "a", "stored": True, "l2": True, "degraded": False, "ttl_s": None}
            assert (await client.delete("/data/v1/keys/a")).json() == {
                "key": "a", "deleted": True, "l2": True, "degraded": False}
            await client.put("/data/v1/keys/b", json={"value": 1})
            server.pause()
            try:
                put = (await client.put("/data/v1/keys/b", json={"value": 2})).json()
                stored = (await client.post("/data/v1/ai/store", json={
                    "operation": "summarize", "text": "t", "value": "s"})).json()
                deleted = (await client.delete("/data/v1/keys/a")).json()
                invalidated = (await client.post("/internal/cache/invalidate",
                                                 params={"pattern": "*:d:b"})).json()
            finally:
                server.resume()
            assert put == {"key": "b", "stored": True, "l2": False, "degraded": True, "ttl_s": None}
            assert stored["stored"] is True and stored["l2"] is False and stored["degraded"] is True
            assert deleted["l2"] is False and deleted["degraded"] is True
            assert invalidated["l2"] is False and invalidated["degraded"] is True
            assert "replayed" in invalidated["message"]


# ---- 3. reads on the engine that deletes or invalidates ------------------------------------------

# The 30-minute soak of 2026-12-04 (main f4c794f) served sequence 74 of one key for 14 s after 75 was
# acknowledged. The engine that deletes a key (or invalidates a pattern, or clears) drops it from its
# own L1 first and then waits for Redis; a read of that key on the same engine in that gap finds L1
# empty, reads Redis before the UNLINK (or SCAN+UNLINK) is applied, and put the old value back in L1.
# The other engines drop the key when the broadcast arrives, but the engine ignores its own
# broadcast, so it kept serving the deleted value until the key was written again. The hooks below
# run that read exactly in the gap (after the engine dropped L1, before Redis applies the deletion).

CHANGES = {
    # change: (RedisL2 method the engine awaits for it, how the engine makes it)
    "delete": ("delete_checked", lambda engine, key: engine.delete_detailed(key)),
    "pattern": ("scan_unlink_checked", lambda engine, key: engine.invalidate(pattern="default:v*:grp:*")),
    "clear": ("scan_unlink_checked", lambda engine, key: engine.clear()),
}


@pytest.mark.parametrize("read", ["get", "get_many"])
@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_a_read_racing_this_engines_own_delete_does_not_bring_the_old_value_back(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, change: str, read: str) -> None:
    from cache_runtime.l2 import RedisL2

    cfg = config(redis_url)
    key = "grp:k1"
    method, make_change = CHANGES[change]
    async with TieredCache(cfg) as a, TieredCache(cfg) as b:
        await subscribed(a, b)
        assert await b.set(key, "v74")  # in Redis; A reads it from there
        await eventually(lambda: _equals(a.get(key), "v74"), what="A to read v74")
        original = getattr(RedisL2, method)
        seen_in_gap: list[Any] = []

        async def deletion_with_a_read_first(self: RedisL2, *args: Any, **kwargs: Any) -> Any:
            if self is a.l2 and not seen_in_gap:
                # A's own L1 is already empty here; Redis still holds v74.
                if read == "get":
                    seen_in_gap.append(await a.get(key))
                else:
                    seen_in_gap.append((await a.get_many([key])).get(key))
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(RedisL2, method, deletion_with_a_read_first)
        await make_change(a, key)
        monkeypatch.setattr(RedisL2, method, original)
        assert seen_in_gap == ["v74"]  # the read did run in the gap, before Redis applied the deletion
        assert server_has(redis_url, a.keys.redis_key(key)) == 0
        assert await a.get(key) is None  # was "v74" from A's L1 until the key was written again
        assert (await a.get_many([key])) == {}
        await eventually(lambda: _equals(b.get(key), None), what="B to drop v74")


def server_has(redis_url: str, redis_key: str) -> int:
    """EXISTS over a plain connection (the engines' own clients are under test)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.exists(redis_key))
    finally:
        client.close()


async def test_a_read_racing_this_engines_own_write_of_a_value_l1_refuses_does_not_keep_the_old_one(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same gap for a write whose value is above L1's byte budget (L1 drops the key instead of
    holding the new value): a read during the write's round trip must not leave the old value."""
    from cache_runtime.l2 import RedisL2

    # Compression off: 20 KB of one letter would be kept as a ~100-byte lz4 block, which L1 takes.
    cfg = config(redis_url, **{"l1.max_bytes": 4096, "compression.threshold_bytes": 100 << 20})
    key = "big"
    big = "x" * 20_000
    async with TieredCache(cfg) as a, TieredCache(cfg) as b:
        await subscribed(a, b)
        assert await b.set(key, "v74")
        await eventually(lambda: _equals(a.get(key), "v74"), what="A to read v74")
        original = RedisL2.set_many
        seen_in_gap: list[Any] = []

        async def write_with_a_read_first(self: RedisL2, *args: Any, **kwargs: Any) -> Any:
            if self is a.l2 and not seen_in_gap:
                seen_in_gap.append(await a.get(key))
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(RedisL2, "set_many", write_with_a_read_first)
        answer = await a.set_detailed(key, big)
        monkeypatch.setattr(RedisL2, "set_many", original)
        assert seen_in_gap == ["v74"]
        assert answer == {"stored": True, "l1": False, "l2": True, "degraded": False}
        assert await a.get(key) == big  # was "v74" from A's L1
        await eventually(lambda: _equals(b.get(key), big), what="B to read the new value")
