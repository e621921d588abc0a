"""TieredCache against a real redis-server: round trips, the original's defects, and every parameter.

Uses the shared fixtures of conftest.py (``redis_url`` flushes the session server; ``redis_factory``
starts dedicated servers). Waits are bounded polls, never timing assertions.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import xxhash

from cache_runtime import CacheConfig, TieredCache, resolve_config
from cache_runtime.codec import CODEC_MSGPACK, FLAG_LZ4, HEADER, Codec
from cache_runtime.config import required_acl_rules
from cache_runtime.keys import TextTooLongError
from cache_runtime.l2 import pack_stamped
from tests.fakes import FakeClock
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def config(redis_url: str | None, preset: str = "ai-production", **overrides: Any) -> CacheConfig:
    return resolve_config(preset, overrides, redis_url=redis_url)




@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[TieredCache]:
    async with TieredCache(config(redis_url, **{"ttl.jitter_fraction": 0.0})) as engine:
        yield engine


def redis_keys(redis_server: Any) -> list[bytes]:
    with redis_server.client() as client:
        return sorted(client.scan_iter(match="*", count=1000))


def raw_get(redis_server: Any, key: str) -> bytes | None:
    with redis_server.client() as client:
        return client.get(key)  # type: ignore[no-any-return]


def pttl(redis_server: Any, key: str) -> int:
    with redis_server.client() as client:
        return int(client.pttl(key))


# ---- round trips and the original's defects ------------------------------------------------------

VALUES: dict[str, Any] = {
    "str": "plain text",
    "unicode": "ünïcödé ✓ 日本語 \U0001f600",
    "empty str": "",
    "int": 42,
    "negative int": -7,
    "big int": 2**100,
    "negative big int": -(2**90),
    "float": 3.25,
    "true": True,
    "false": False,
    "none": None,
    "list": [1, "two", 3.0, None, [4]],
    "dict": {"a": 1, "nested": {"b": [True, {"c": None}]}},
    "empty dict": {},
    "bytes": b"\x00\x01\xfe\xff raw",
    "large": {"text": "a sentence that repeats. " * 2000},
}


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_every_value_type_round_trips_through_redis(redis_url: str, fmt: str) -> None:
    async with TieredCache(config(redis_url, **{"codec.format": fmt})) as engine:
        for name, value in VALUES.items():
            assert await engine.set(f"rt:{name}", value)
        engine.l1.clear()
        for name, value in VALUES.items():
            got = await engine.get(f"rt:{name}", default="MISSING")
            assert got == value and type(got) is type(value), name
        assert engine.engine_stats.hits_l2 == len(VALUES)
    # and a fresh engine (another pod) reads the same bytes
    async with TieredCache(config(redis_url, **{"codec.format": fmt})) as other:
        expected = {f"rt:{name}": value for name, value in VALUES.items()}
        assert await other.get_many(list(expected)) == expected


class _WritesAFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.write_text, (Path(self.path), "pwned"))


async def test_a_pickle_planted_in_redis_is_a_counted_miss_and_never_runs(
    cache: TieredCache, redis_server: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    key = cache.key_for("summarize", "some text")
    with redis_server.client() as client:
        client.set(cache.keys.redis_key(key), pickle.dumps(_WritesAFile(str(marker))))
        client.set(cache.keys.redis_key("garbage"), b"CW\x01\x01\x00" + b"\xff" * 40)
    assert await cache.get(key, default="miss") == "miss"
    assert await cache.get("garbage", default="miss") == "miss"
    assert await cache.get_many([key, "garbage"]) == {}

    async def loader() -> str:
        return "fresh"

    assert await cache.get_or_compute(key, loader) == "fresh"  # the poisoned entry is replaced
    assert not marker.exists()
    snapshot = cache.stats()
    assert snapshot["requests"]["decode_failures"] == 5
    assert snapshot["requests"]["misses"] == 5 and snapshot["requests"]["hits"] == 0


async def test_a_value_above_the_compression_threshold_is_cached_and_read_back(
    redis_url: str, redis_server: Any
) -> None:
    async with TieredCache(config(redis_url, preset="production")) as engine:  # threshold 500 B
        value = {"summary": "The quick brown fox jumps over the lazy dog. " * 500}
        assert await engine.set("big", value)
        raw = raw_get(redis_server, engine.keys.redis_key("big"))
        assert raw is not None and HEADER.unpack_from(raw)[3] & FLAG_LZ4
        assert len(raw) < len(str(value)) / 4
        engine.l1.clear()
        assert await engine.get("big") == value
        snapshot = engine.stats()
        assert snapshot["compression"]["compressed"] == 1 and snapshot["compression"]["ratio"] > 4


async def test_a_large_value_mutated_by_its_caller_after_set_is_served_as_it_was_set(
    redis_url: str,
) -> None:
    # Above the offload size L1 keeps a snapshot parsed on first read: it must still be the value
    # as of set(), from L1 (sync and async) and from Redis.
    async with TieredCache(config(redis_url, **{"compression.offload_threshold_bytes": 1024})) as engine:
        value = {"items": [{"id": i, "text": "lorem ipsum"} for i in range(200)]}
        expected = orjson.loads(orjson.dumps(value))
        assert await engine.set("large", value)
        value["items"].append({"id": "added later"})
        value["items"][0]["text"] = "changed later"
        assert engine.get_local("large") == expected
        assert await engine.get("large") == expected
        engine.l1.clear()
        assert await engine.get("large") == expected
        assert engine.stats()["compression"]["offloaded"] == 1


async def test_near_collisions_are_distinct_entries_in_redis(redis_url: str, redis_server: Any) -> None:
    for preset in ("ai-production", "ai-development"):  # hashed keys and readable keys
        redis_server.command("FLUSHALL")
        async with TieredCache(config(redis_url, preset=preset)) as engine:
            variants = [("summarize", "a|b", None, None), ("summarize", "a_b", None, None),
                        ("summarize", "a", None, "b"), ("summarize", "ab", None, None),
                        ("summarize", "ab", {"x": 1}, None), ("summarize", "ab", {"x": "1"}, None),
                        ("qa", "a:b", None, "c"), ("qa", "a", None, "b:c"), ("sentiment", "a|b", None, None)]
            keys = [engine.key_for(*variant) for variant in variants]
            for index, key in enumerate(keys):
                await engine.set(key, index)
            engine.l1.clear()
            assert [await engine.get(key) for key in keys] == list(range(len(variants)))
            assert len(redis_keys(redis_server)) == len(variants) + 0  # no bookkeeping key yet


async def test_an_l2_hit_fills_l1_no_longer_than_the_redis_entry_lives(
    redis_url: str, redis_server: Any
) -> None:
    clock = FakeClock(10_000.0)
    async with TieredCache(config(redis_url), clock=clock) as engine:
        # An entry another pod wrote 90 s ago with a 100 s TTL: 10 s left.
        data = Codec().encode("old answer", 100_000, created_at_ms=int(time.time() * 1000) - 90_000)
        with redis_server.client() as client:
            client.set(engine.keys.redis_key("k"), data, px=10_000)
        assert await engine.get("k") == "old answer"
        entry = engine.l1.get_entry("k")
        assert entry is not None
        assert 8.0 <= entry.remaining(clock.now) <= 10.5  # capped by the L2 entry, not 100 s
        clock.now += 11
        assert engine.get_local("k", "expired") == "expired"


async def test_per_operation_ttls_are_visible_in_redis(cache: TieredCache, redis_server: Any) -> None:
    expected = {"summarize": 14400, "sentiment": 7200, "key_points": 10800, "questions": 9600, "qa": 7200}
    for operation, ttl_s in expected.items():
        key = cache.key_for(operation, "the same text")
        await cache.set(key, operation)
        remaining_ms = pttl(redis_server, cache.keys.redis_key(key))
        assert ttl_s * 1000 - 5000 <= remaining_ms <= ttl_s * 1000, operation
    await cache.set("plain", 1)
    assert 14400_000 - 5000 <= pttl(redis_server, cache.keys.redis_key("plain")) <= 14400_000
    await cache.set("explicit", 1, ttl=60)
    assert 55_000 <= pttl(redis_server, cache.keys.redis_key("explicit")) <= 60_000


async def test_the_disabled_preset_touches_nothing(redis_url: str, redis_server: Any) -> None:
    redis_server.command("CONFIG", "RESETSTAT")
    calls = 0

    async def loader() -> str:
        nonlocal calls
        calls += 1
        return "computed"

    async with TieredCache(config(redis_url, preset="disabled")) as engine:
        assert engine.l2 is None
        assert not await engine.set("k", "v") and await engine.get("k") is None
        assert not await engine.set_many({"a": 1})
        assert await engine.get_many(["a", "k"]) == {}
        assert await engine.get_or_compute("k", loader) == "computed"
        assert await engine.get_or_compute("k", loader) == "computed"
        await engine.invalidate(pattern="*", namespace="default")
        await engine.delete("k")
        await engine.clear()
        assert len(engine.l1) == 0
    assert calls == 2
    assert redis_server.command("DBSIZE") == 0
    with redis_server.client() as client:
        stats = client.info("commandstats")
        clients = client.info("clients")
    engine_commands = {name for name in stats if name not in {"cmdstat_info", "cmdstat_dbsize",
                                                              "cmdstat_config|resetstat"}}
    assert engine_commands <= {"cmdstat_client|setinfo", "cmdstat_hello"}  # our own assertion clients
    assert clients["connected_clients"] == 1


async def test_apply_config_live_keeps_l1_and_the_redis_connection(redis_url: str, redis_server: Any) -> None:
    async with TieredCache(config(redis_url, **{"l1.max_entries": 100})) as engine:
        for i in range(10):
            await engine.set(f"k{i}", i)
        await engine.get("k0")  # most recently used now
        l2_before = engine.l2
        report = await engine.apply_config(config(redis_url, **{"l1.max_entries": 3, "ttl.default_s": 60,
                                                                 "compression.level": 1}))
        assert report["changed"] == ["compression", "l1", "ttl"]
        assert report["l1_evicted"] == 7 and not report["l1_cleared"] and not report["redis_rebuilt"]
        assert engine.l2 is l2_before
        assert [engine.get_local(f"k{i}") for i in (8, 9, 0)] == [8, 9, 0]
        await engine.set("new", 1)
        assert pttl(redis_server, engine.keys.redis_key("new")) <= 60_000  # new TTL for new writes
        assert pttl(redis_server, engine.keys.redis_key("k1")) > 60_000  # old entries keep theirs
        # Pool size changed: applied to the live clients (no new connection, no new subscription),
        # L1 entries survive.
        report = await engine.apply_config(config(redis_url, **{"l1.max_entries": 3, "ttl.default_s": 60,
                                                                 "compression.level": 1,
                                                                 "redis.max_connections": 7}))
        assert report["redis_tuned"] and not report["redis_rebuilt"] and engine.l2 is l2_before
        assert engine.l2 is not None and engine.l2.settings.max_connections == 7
        assert engine.get_local("k0") == 0
        assert await engine.get("k5") == 5
        # A connection setting changed: new clients; L1 is voided (coherence messages may have been
        # missed between the two subscriptions), Redis still has every entry.
        report = await engine.apply_config(config(redis_url + "?protocol=3", **{
            "l1.max_entries": 3, "ttl.default_s": 60, "compression.level": 1, "redis.max_connections": 7}))
        assert report["redis_rebuilt"] and report["l1_cleared"] and engine.l2 is not l2_before
        assert engine.get_local("k0") is None
        assert await engine.get("k0") == 0 and await engine.get("k5") == 5  # through the new clients
        # A new key layout clears L1: its keys would never be asked for again.
        report = await engine.apply_config(config(redis_url, **{"keys.namespace": "other"}))
        assert report["l1_cleared"] and len(engine.l1) == 0


# ---- get_or_compute, coherence, isolation ------------------------------------------------------------

async def test_get_or_compute_single_flight_and_errors(cache: TieredCache) -> None:
    calls = 0
    release = asyncio.Event()

    async def slow() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await release.wait()
        return {"n": calls}

    waiters = [asyncio.create_task(cache.get_or_compute("sf", slow)) for _ in range(200)]
    # Release only when every other caller has joined the flight: on a loaded machine a caller still
    # reading L2 at the release would find the value in L1 afterwards, a hit, not a merge.
    await eventually(lambda: calls == 1 and cache.stats()["stampede"]["singleflight_merges"] == 199,
                     what="the loader to start and 199 callers to join its flight")
    release.set()
    assert all(result == {"n": 1} for result in await asyncio.gather(*waiters))
    assert calls == 1 and cache.stats()["stampede"]["singleflight_merges"] == 199

    async def broken() -> None:
        raise RuntimeError("llm down")

    with pytest.raises(RuntimeError, match="llm down"):
        await cache.get_or_compute("err", broken)
    assert await cache.get("err", "absent") == "absent"  # nothing cached on error
    assert cache.stats()["stampede"]["compute_errors"] == 1

    def sync_loader() -> str:
        return "sync ok"

    assert await cache.get_or_compute("sync", sync_loader) == "sync ok"


async def test_two_engines_see_each_others_invalidations(redis_url: str) -> None:
    cfg = config(redis_url)
    async with TieredCache(cfg) as a, TieredCache(cfg) as b:
        await eventually(lambda: all(e.l2.stats()["coherence"]["connected"] for e in (a, b)),
                         what="both subscriptions")
        received = b.stats()["invalidation"]["coherence_messages_received"]
        for key in ("x:1", "x:2", "y:1"):
            await a.set(key, key)
        # Each write is broadcast too; once b has seen those, what it reads stays in its L1.
        await eventually(lambda: b.stats()["invalidation"]["coherence_messages_received"] == received + 3,
                         what="b to see a's three writes")
        for key in ("x:1", "x:2", "y:1"):
            assert await b.get(key) == key  # now in b's L1
        result = await a.invalidate(pattern="default:v*:x:*")
        assert result["redis_keys_removed"] == 2
        await eventually(lambda: b.get_local("x:1") is None and b.get_local("x:2") is None,
                         what="b to drop the x keys")
        assert b.get_local("y:1") == "y:1"
        await a.delete("y:1")
        await eventually(lambda: b.get_local("y:1") is None, what="b to drop y:1")
        # namespace: one INCR, both engines move to the new version and drop their L1
        await a.set("z", 1)
        assert await b.get("z") == 1
        result = await a.invalidate(namespace="default")
        assert result["namespace_version"] == 1 and result["applied"]
        await eventually(lambda: b.keys.namespace_version == 1, what="b to learn the new version")
        assert await b.get("z") is None and await a.get("z") is None
        assert b.stats()["invalidation"]["coherence_messages_received"] >= 3


async def test_a_dropped_subscription_clears_l1(redis_url: str, redis_server: Any) -> None:
    async with TieredCache(config(redis_url)) as engine:
        await eventually(lambda: engine.l2.stats()["coherence"]["connected"], what="subscription")
        await engine.set("k", "v")
        assert engine.get_local("k") == "v"
        redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
        await eventually(lambda: engine.stats()["invalidation"]["coherence_resets"] >= 1, what="reset")
        assert engine.get_local("k") is None  # messages may have been missed: L1 cannot be trusted
        # L2 is used again once the namespace version is read again (it may have moved meanwhile).
        await eventually(lambda: engine.stats()["engine"]["namespace_version_known"], what="version re-read")
        assert await engine.get("k") == "v"  # Redis still has it


async def test_isolation_stops_writes_and_serves_what_is_cached(cache: TieredCache) -> None:
    await cache.set("kept", 1)
    cache.isolate()
    assert not await cache.set("new", 2)
    assert not await cache.set_many({"n2": 3})

    async def loader() -> int:
        return 4

    assert await cache.get_or_compute("computed", loader) == 4
    assert await cache.get("kept") == 1 and await cache.get("computed") is None
    assert cache.stats()["isolated"] and cache.stats()["requests"]["writes_rejected_isolated"] == 3
    cache.restore()
    assert await cache.set("new", 2)


async def test_redis_killed_mid_run_then_back(redis_factory: Any) -> None:
    server = redis_factory.start()
    cfg = config(server.url, **{"redis.breaker_open_s": 0.1, "redis.socket_timeout_s": 0.5,
                                "redis.connect_timeout_s": 0.5})
    async with TieredCache(cfg) as engine:
        await engine.set("a", 1)
        server.stop()
        for i in range(20):  # no exception reaches the caller, L1 keeps answering
            assert await engine.get("a") == 1
            await engine.set(f"during{i}", i)
            assert await engine.get(f"missing{i}") is None
        server.start()
        await eventually(lambda: _stored(engine, server, "after"), timeout=10,
                         what="writes to reach Redis again")


async def _stored(engine: TieredCache, server: Any, key: str) -> bool:
    await engine.set(key, 2)
    return raw_get(server, engine.keys.redis_key(key)) is not None


# ---- every parameter takes effect, group by group ----------------------------------------------------

async def test_group_top_level_enabled_ai_features_monitoring_log_level(redis_url: str) -> None:
    async with TieredCache(config(redis_url, **{"monitoring": False, "log_level": "ERROR"})) as engine:
        await engine.set("k", 1)
        engine.l1.clear()
        await engine.get("k")
        await engine.get("k")
        latency = engine.stats()["latency"]
        assert all(histogram["count"] == 0 for histogram in latency.values())
        assert logging.getLogger("cache_runtime").level == logging.ERROR
        await engine.apply_config(config(redis_url, **{"monitoring": True, "log_level": "DEBUG"}))
        await engine.get("k")
        engine.l1.clear()
        await engine.get("k")
        assert engine.stats()["latency"]["get"]["count"] == 2
        assert logging.getLogger("cache_runtime").level == logging.DEBUG
    long_text = "x" * 50_001
    async with TieredCache(config(redis_url, preset="ai-development")) as ai:
        with pytest.raises(TextTooLongError):
            ai.key_for("summarize", long_text)
    async with TieredCache(config(redis_url, preset="ai-development", ai_features=False)) as plain:
        assert plain.key_for("summarize", long_text).startswith("ai1:summarize:x:")
    logging.getLogger("cache_runtime").setLevel(logging.NOTSET)


async def test_group_ttl_default_operation_and_jitter(redis_url: str, redis_server: Any) -> None:
    ttl = {"ttl": {"default_s": 100, "qa_s": 50, "jitter_fraction": 0.5}}
    async with TieredCache(config(redis_url, preset="production", **ttl)) as engine:
        qa = engine.key_for("qa", "t")
        await engine.set(qa, 1)
        assert 25_000 - 1000 <= pttl(redis_server, engine.keys.redis_key(qa)) <= 50_000
        for i in range(40):
            await engine.set(f"j{i}", i)
        ttls = [pttl(redis_server, engine.keys.redis_key(f"j{i}")) for i in range(40)]
        assert all(49_000 <= t <= 100_000 for t in ttls)
        assert max(ttls) - min(ttls) > 5_000  # spread, not all equal (40 draws from a 50 s range)
    async with TieredCache(config(redis_url, preset="production", **{"ttl.default_s": 100})) as engine:
        for i in range(5):
            await engine.set(f"n{i}", i)
        assert all(pttl(redis_server, engine.keys.redis_key(f"n{i}")) > 89_000 for i in range(5))


async def test_group_l1_entries_bytes_and_sweep(redis_url: str) -> None:
    clock = FakeClock(10_000.0)
    cfg = config(redis_url, **{"l1.max_entries": 5, "l1.max_bytes": 10_000, "l1.sweep_batch": 3,
                               "compression.threshold_bytes": 100_000})
    async with TieredCache(cfg, clock=clock) as engine:
        for i in range(8):
            await engine.set(f"k{i}", i)
        assert len(engine.l1) == 5 and engine.l1.stats()["evictions"] == 3
        await engine.set("big", "x" * 6000)
        await engine.set("big2", "y" * 6000)
        assert engine.l1.bytes <= 10_000 and engine.get_local("big") is None
        await engine.set("huge", "z" * 20_000)  # larger than the whole budget: Redis only
        assert engine.get_local("huge") is None and await engine.get("huge") == "z" * 20_000
        engine.l1.clear()
        for i in range(3):
            await engine.set(f"short{i}", i, ttl=1)
        clock.now += 2
        await engine.set("trigger", 1, ttl=100)
        assert engine.l1.stats()["expirations"] == 3  # swept by the write, not by a read


async def test_group_compression_threshold_level_saving_offload(redis_url: str, redis_server: Any) -> None:
    text: dict[str, str] = {"t": "compressible sentence number one, compressible sentence number two. " * 300}

    async def stored(**overrides: Any) -> tuple[bytes, TieredCache]:
        engine = TieredCache(config(redis_url, preset="production", **overrides))
        await engine.start()
        await engine.set("v", text)
        raw = raw_get(redis_server, engine.keys.redis_key("v"))
        assert raw is not None
        return raw, engine

    raw, engine = await stored(**{"compression.threshold_bytes": 100_000})
    assert not HEADER.unpack_from(raw)[3] & FLAG_LZ4  # below threshold: raw
    await engine.close()
    fast, engine = await stored(**{"compression.threshold_bytes": 100, "compression.level": 1})
    await engine.close()
    strong, engine = await stored(**{"compression.threshold_bytes": 100, "compression.level": 9})
    await engine.close()
    assert HEADER.unpack_from(fast)[3] & FLAG_LZ4 and HEADER.unpack_from(strong)[3] & FLAG_LZ4
    assert len(strong) < len(fast)  # HC level 10 vs fast acceleration 8
    # Prose-like text compresses about 2x: kept at the default 10% saving, not when 90% is asked.
    words = [f"word{i}" for i in range(400)]
    chooser = random.Random(7)
    text = {"t": " ".join(chooser.choice(words) for _ in range(3000))}
    raw, engine = await stored(**{"compression.threshold_bytes": 100})
    assert HEADER.unpack_from(raw)[3] & FLAG_LZ4
    await engine.close()
    raw, engine = await stored(**{"compression.threshold_bytes": 100, "compression.min_saving_ratio": 0.9})
    assert not HEADER.unpack_from(raw)[3] & FLAG_LZ4
    assert engine.stats()["compression"]["skipped"] == 1
    await engine.close()
    raw, engine = await stored(**{"compression.offload_threshold_bytes": 1024})
    assert engine.stats()["compression"]["offloaded"] == 1
    await engine.close()
    raw, engine = await stored(**{"compression.offload_threshold_bytes": 0})
    assert engine.stats()["compression"]["offloaded"] == 0
    await engine.close()


async def test_group_codec_format(redis_url: str, redis_server: Any) -> None:
    async with TieredCache(config(redis_url, **{"codec.format": "msgpack"})) as engine:
        await engine.set("m", {"a": [1, 2]})
        raw = raw_get(redis_server, engine.keys.redis_key("m"))
        assert raw is not None and HEADER.unpack_from(raw)[2] == CODEC_MSGPACK


async def test_group_redis_settings_reach_the_client(redis_url: str) -> None:
    cfg = config(redis_url, **{"redis": {"max_connections": 9, "connect_timeout_s": 0.7,
                                         "socket_timeout_s": 0.3,
                                         "pool_timeout_s": 0.2, "breaker_failure_threshold": 4,
                                         "breaker_open_s": 1.5, "breaker_half_open_probes": 2,
                                         "scan_count": 250, "tls_verify": False},
                               "keys.prefix": "app"})
    async with TieredCache(cfg) as engine:
        assert engine.l2 is not None
        settings = engine.l2.settings
        assert (settings.max_connections, settings.connect_timeout_s, settings.socket_timeout_s,
                settings.pool_timeout_s) == (9, 0.7, 0.3, 0.2)
        assert (settings.breaker_failure_threshold, settings.breaker_open_seconds,
                settings.breaker_half_open_probes, settings.scan_count) == (4, 1.5, 2, 250)
        assert settings.key_prefix == "app" and settings.tls_verify is False
        assert engine.stats()["l2"]["pool_max_connections"] == 9
    async with TieredCache(config(None)) as memory_only:  # no URL: memory only, still a cache
        assert memory_only.l2 is None
        await memory_only.set("k", 1)
        assert await memory_only.get("k") == 1


async def test_group_redis_breaker_opens_after_the_threshold(redis_factory: Any) -> None:
    server = redis_factory.start()
    cfg = config(server.url, **{"redis.breaker_failure_threshold": 2, "redis.breaker_open_s": 60,
                                "redis.socket_timeout_s": 0.2, "redis.connect_timeout_s": 0.2})
    async with TieredCache(cfg) as engine:
        server.stop()
        for i in range(2):
            await engine.get(f"k{i}")
        assert engine.l2 is not None and engine.l2.breaker_state.value == "open"
        ops_before = engine.l2.stats()["short_circuited"]
        await engine.get("k9")
        assert engine.l2.stats()["short_circuited"] == ops_before + 1


async def test_group_redis_acl_user_and_password(redis_factory: Any) -> None:
    server = redis_factory.start(password="admin-secret")
    cfg = config(server.url, **{"redis.username": "cache", "redis.password": "app-secret"})
    # Exactly the rules docs/configuration.md prints: nothing more.
    server.command("ACL", "SETUSER", "cache", "on", ">app-secret", *required_acl_rules(cfg))
    async with TieredCache(cfg) as engine:
        await eventually(lambda: engine.l2.stats()["coherence"]["connected"], what="ACL subscription")
        assert await engine.set("k", 1)
        engine.l1.clear()
        assert await engine.get("k") == 1
        key = engine.key_for("qa", "a question's text")

        async def answer() -> str:
            return "an answer"

        lease_config = config(server.url, **{"redis.username": "cache", "redis.password": "app-secret",
                                             "stampede.lease_lock": True})
        await engine.apply_config(lease_config)
        assert await engine.get_or_compute(key, answer) == "an answer"
        assert (await engine.invalidate(pattern="default:*"))["redis_keys_removed"] == 2
        await engine.set("k", 1)
        assert (await engine.invalidate(namespace="default"))["namespace_version"] == 1
        snapshot = engine.stats()
        assert sum(snapshot["l2"]["errors"].values()) == 0, snapshot["l2_detail"]["last_errors"]
        assert "app-secret" not in repr(engine.config) and "app-secret" not in str(engine.stats())
    wrong = config(server.url, **{"redis.username": "cache", "redis.password": "nope"})
    async with TieredCache(wrong) as engine:
        assert await engine.set("k", 2)  # never raises: stored in L1
        assert await engine.get("k") == 2
        assert engine.stats()["l2"]["errors"]["auth"] >= 1
    # The rejected engine wrote nothing: Redis still holds the good engine's value (written at v0).
    stored_bytes = server.command("GET", "cw:default:v0:k")
    assert stored_bytes is not None and Codec().decode(stored_bytes).value == 1


async def test_acl_rules_follow_a_custom_prefix_and_channel(redis_factory: Any) -> None:
    server = redis_factory.start(password="admin-secret")
    overrides = {"redis.username": "acme-cache", "redis.password": "app-secret", "keys.prefix": "acme",
                 "coherence.channel": "acme-events*[1]", "stampede.lease_lock": True}
    cfg = config(server.url, **overrides)
    rules = required_acl_rules(cfg)
    assert "~acme:*" in rules and "~acme#*" in rules and "&acme-events\\*\\[1\\]" in rules
    server.command("ACL", "SETUSER", "acme-cache", "on", ">app-secret", *rules)
    async with TieredCache(cfg) as a, TieredCache(cfg) as b:
        await eventually(lambda: all(e.l2.stats()["coherence"]["connected"] for e in (a, b)),
                         what="both subscriptions")
        assert await a.get_or_compute("k", lambda: "v") == "v"
        assert await b.get("k") == "v"
        await a.delete("k")
        await eventually(lambda: b.get_local("k") is None, what="b to drop k")
        assert (await a.invalidate(namespace="default"))["namespace_version"] == 1
        await eventually(lambda: b.keys.namespace_version == 1, what="b to learn the new version")
        for engine in (a, b):
            snapshot = engine.stats()
            assert sum(snapshot["l2"]["errors"].values()) == 0, snapshot["l2_detail"]["last_errors"]
    # The escaped channel pattern grants that one channel, not what its glob would match.
    user = redis.Redis(host="127.0.0.1", port=server.port, username="acme-cache", password="app-secret")
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.publish("acme-events-x1", b"m")
    finally:
        user.close()


async def test_group_keys_prefix_namespace_hash_readable_tiers_normalize(
    redis_url: str, redis_server: Any
) -> None:
    overrides = {"keys": {"prefix": "acme", "namespace": "tenant-a", "hash_algorithm": "sha256",
                          "readable_small_text": True, "text_hash_threshold": 10,
                          "tiers": {"small": 10, "medium": 20, "large": 30},
                          "normalize": {"whitespace": True, "case": True}}}
    async with TieredCache(config(redis_url, **overrides)) as engine:
        small = engine.key_for("qa", "Hi  There")
        large = engine.key_for("qa", "x" * 25)
        await engine.set(small, 1)
        await engine.set(large, 2)
        keys = [k.decode() for k in redis_keys(redis_server)]
        assert "acme#nsver:tenant-a" not in keys  # nothing bumped yet
        assert any(k.startswith("acme:tenant-a:v0:ai1:qa:s:rhi%20there:") for k in keys)
        hashed = next(k for k in keys if ":qa:l:h" in k)
        assert len(hashed.rsplit(":h", 1)[1]) == 64  # sha256
        # normalization: another spelling of the same text is a hit
        assert await engine.get(engine.key_for("qa", "  hi\tTHERE ")) == 1
        await engine.invalidate(namespace="tenant-a")
        assert raw_get(redis_server, "acme#nsver:tenant-a") == b"1"
        assert engine.keys.redis_key("k").startswith("acme:tenant-a:v1:")


async def test_group_coherence_enabled_and_channel(redis_url: str, redis_server: Any) -> None:
    custom = config(redis_url, **{"coherence.channel": "cw#custom-channel"})
    async with TieredCache(custom) as a, TieredCache(custom) as b:
        await eventually(lambda: b"cw#custom-channel" in redis_server.command("PUBSUB", "CHANNELS"),
                         what="the custom channel")
        await eventually(lambda: redis_server.command("PUBSUB", "NUMSUB", "cw#custom-channel")[1] == 2,
                         what="both subscribers")
        await a.set("k", 1)
        await b.get("k")
        await a.invalidate(pattern="*")
        await eventually(lambda: b.get_local("k") is None, what="b to drop k")
    off = config(redis_url, **{"coherence.enabled": False})
    async with TieredCache(off) as a, TieredCache(off) as b:
        assert a.l2 is not None and a.l2.stats()["coherence"]["listeners"] == 0
        await a.set("k", 1)
        await b.get("k")
        await a.invalidate(pattern="*")
        await asyncio.sleep(0.1)
        assert b.get_local("k") == 1  # nobody told b


async def test_group_stampede_single_flight_off(redis_url: str) -> None:
    # (lease off too: the Redis lease would also make the five callers share one computation)
    async with TieredCache(config(redis_url, **{"stampede.single_flight": False,
                                                "stampede.lease_lock": False})) as engine:
        calls = 0
        all_started = asyncio.Event()

        async def loader() -> int:
            # Each load waits until five have started (bounded): with a fixed sleep, a loaded machine
            # let one load finish before a later caller looked, and that caller hit L1 instead.
            nonlocal calls
            calls += 1
            if calls == 5:
                all_started.set()
            await asyncio.wait_for(all_started.wait(), timeout=5)
            return 1

        await asyncio.gather(*(engine.get_or_compute("k", loader) for _ in range(5)))
        assert calls == 5


async def test_group_stampede_early_refresh(redis_url: str) -> None:
    clock = FakeClock(10_000.0)
    cfg = config(redis_url, **{"stampede.early_refresh_fraction": 0.2, "stampede.lease_lock": False})
    async with TieredCache(cfg, clock=clock) as engine:
        version = 0

        async def loader() -> int:
            nonlocal version
            version += 1
            return version

        assert await engine.get_or_compute("k", loader, ttl=100) == 1
        clock.now += 70  # 30% left: no refresh
        assert await engine.get_or_compute("k", loader, ttl=100) == 1 and version == 1
        clock.now += 15  # 15% left: served, and refreshed in the background
        assert await engine.get_or_compute("k", loader, ttl=100) == 1
        await eventually(lambda: version == 2 and engine.get_local("k") == 2, what="the refresh")
        assert engine.stats()["stampede"]["early_refreshes"] == 1
    async with TieredCache(config(redis_url, **{"stampede.early_refresh_fraction": 0.0}), clock=clock) as off:
        await off.get_or_compute("z", loader, ttl=100)
        clock.now += 99
        await off.get_or_compute("z", loader, ttl=100)
        assert off.stats()["stampede"]["early_refreshes"] == 0


async def test_group_stampede_lease_lock_across_engines(redis_url: str, redis_server: Any) -> None:
    cfg = config(redis_url, **{"stampede": {"lease_lock": True, "lease_ttl_s": 20.0, "lease_wait_s": 10.0}})
    async with TieredCache(cfg) as a, TieredCache(cfg) as b:
        release = asyncio.Event()
        calls = {"a": 0, "b": 0}

        def loader(name: str) -> Callable[[], Awaitable[str]]:
            async def load() -> str:
                calls[name] += 1
                await release.wait()
                return f"from {name}"
            return load

        key = a.key_for("summarize", "an expensive text")
        first = asyncio.create_task(a.get_or_compute(key, loader("a")))
        await eventually(lambda: calls["a"] == 1, what="a to take the lease and start")
        lease = a.keys.lease_key(key)
        assert 15_000 <= pttl(redis_server, lease) <= 20_000
        second = asyncio.create_task(b.get_or_compute(key, loader("b")))
        await eventually(lambda: b.stats()["stampede"]["lease_waits"] == 1, what="b to wait on the lease")
        release.set()
        assert await first == "from a" and await second == "from a"
        assert calls == {"a": 1, "b": 0}
        assert raw_get(redis_server, lease) is None  # released


async def test_group_stampede_lease_wait_is_bounded(redis_url: str, redis_server: Any) -> None:
    cfg = config(redis_url, **{"stampede": {"lease_lock": True, "lease_ttl_s": 30.0, "lease_wait_s": 0.2}})
    async with TieredCache(cfg) as engine:
        key = engine.key_for("qa", "t")
        with redis_server.client() as client:  # a lease held by a pod that died mid-compute
            client.set(engine.keys.lease_key(key), "someone-else", px=30_000)

        async def loader() -> str:
            return "computed here"

        assert await engine.get_or_compute(key, loader) == "computed here"
        assert engine.stats()["stampede"]["lease_waits"] == 1


async def test_group_health_thresholds(redis_url: str) -> None:
    strict = config(redis_url, **{"health": {"memory_warning_mb": 1, "memory_critical_mb": 2}})
    async with TieredCache(strict) as engine:
        for i in range(40):  # incompressible: 2.4 MB of L1
            await engine.set(f"k{i}", random.Random(i).randbytes(60_000))
        report = engine.health()
        assert report.symptom("HighMemory") is not None
    lenient = config(redis_url, **{"health": {"memory_warning_mb": 500, "memory_critical_mb": 900}})
    async with TieredCache(lenient) as engine:
        for i in range(40):
            await engine.set(f"k{i}", random.Random(i).randbytes(60_000))
        assert engine.health().symptom("HighMemory") is None


async def test_namespace_version_unknown_keeps_l2_out_until_it_is_read(redis_factory: Any) -> None:
    server = redis_factory.start()
    server.command("SET", "cw#nsver:default", "5")
    server.command("SET", "cw:default:v0:k", Codec().encode("stale from v0", 3_600_000))
    url = server.url
    server.stop()
    cfg = config(url, **{"redis.breaker_open_s": 0.05, "redis.connect_timeout_s": 0.2,
                         "redis.socket_timeout_s": 0.2})
    async with TieredCache(cfg) as engine:
        assert engine.stats()["engine"]["namespace_version_known"] is False
        assert await engine.get("k") is None
        server.start()  # data is not persisted: set it again
        server.command("SET", "cw#nsver:default", "5")
        server.command("SET", "cw:default:v0:k", Codec().encode("stale from v0", 3_600_000))

        async def known_after_a_read() -> bool:
            await engine.get("k")  # reads retry the version (maintenance alone runs every 10 s)
            return bool(engine.stats()["engine"]["namespace_version_known"])

        await eventually(known_after_a_read, timeout=10, what="the version to be read")
        assert engine.keys.namespace_version == 5
        assert await engine.get("k") is None  # the v0 entry is never served


async def test_get_local_uses_a_coarse_clock_only_while_running(redis_url: str) -> None:
    engine = TieredCache(config(redis_url))
    assert "get_local" not in vars(engine) and "local_entry" not in vars(engine)
    async with engine:
        # the closures over the event loop's coarse clock
        assert "get_local" in vars(engine) and "local_entry" in vars(engine)
        await engine.set("short", "v", ttl=0.05)
        assert engine.get_local("short") == "v"
        assert engine.stats()["requests"]["hits_l1"] == 1
        entry = engine.local_entry("short")
        assert entry is not None and entry.value == "v"
        assert engine.local_entry("short") is entry  # the same object until the key changes
        assert engine.stats()["requests"]["hits_l1"] == 3  # counted like get_local
        await eventually(lambda: engine.get_local("short", "gone") == "gone", what="coarse expiry")
        assert engine.local_entry("short") is None
        await engine.set("short", "w")
        rewritten = engine.local_entry("short")
        assert rewritten is not None and rewritten is not entry and rewritten.value == "w"
    assert "get_local" not in vars(engine)  # closed: back to the exact methods
    assert "local_entry" not in vars(engine)
    assert engine.get_local("absent", "d") == "d"
    assert engine.local_entry("absent") is None


async def test_group_redis_tls_files_and_verification(redis_tls: Any, tls_material: Any) -> None:
    good = config(redis_tls.url, **{"redis": {"tls_ca_file": str(tls_material.ca_cert),
                                              "tls_cert_file": str(tls_material.client_cert),
                                              "tls_key_file": str(tls_material.client_key)}})
    async with TieredCache(good) as engine:
        assert await engine.set("k", "over tls")
        engine.l1.clear()
        assert await engine.get("k") == "over tls"
    wrong_ca = config(redis_tls.url, **{"redis.tls_ca_file": str(tls_material.wrong_ca_cert)})
    async with TieredCache(wrong_ca) as engine:
        assert await engine.set("k2", "local only")  # verification fails: no exception, L1 only
        assert redis_tls.command("EXISTS", "cw:default:v0:k2") == 0
    unverified = config(redis_tls.url, **{"redis.tls_ca_file": str(tls_material.wrong_ca_cert),
                                          "redis.tls_verify": False})
    async with TieredCache(unverified) as engine:
        assert await engine.set("k3", "unverified")
        assert redis_tls.command("EXISTS", "cw:default:v0:k3") == 1


def test_sentinel_and_cluster_settings_are_mapped() -> None:
    from cache_runtime.cache import redis_settings_for

    sentinel_url = "redis+sentinel://127.0.0.1:26379"
    sentinel = redis_settings_for(config(sentinel_url, **{"redis.sentinel_master": "main"}))
    assert sentinel is not None and sentinel.sentinel_master == "main"
    cluster = redis_settings_for(config("redis://127.0.0.1:7000/0", **{"redis.cluster": True}))
    assert cluster is not None and cluster.cluster is True
    assert redis_settings_for(config(None)) is None
    assert redis_settings_for(config("redis://127.0.0.1:7000/0", preset="disabled")) is None


async def test_turning_coherence_off_and_on_live_leaves_one_listener(
    redis_url: str, redis_server: Any
) -> None:
    def subscribers() -> int:
        return int(redis_server.command("PUBSUB", "NUMSUB", "cw#coherence")[1])

    async with TieredCache(config(redis_url)) as engine:
        assert engine.l2 is not None
        await eventually(lambda: subscribers() == 1, what="subscriber")
        await engine.apply_config(config(redis_url, **{"coherence.enabled": False}))
        assert engine.l2.stats()["coherence"]["listeners"] == 0
        await eventually(lambda: subscribers() == 0, what="unsubscribed")
        await engine.apply_config(config(redis_url))
        assert engine.l2.stats()["coherence"]["listeners"] == 1
        await eventually(lambda: subscribers() == 1, what="resubscribed")
    await eventually(lambda: subscribers() == 0, what="closed")


async def test_an_overwrite_on_one_engine_reaches_the_other_engines_l1(redis_url: str) -> None:
    cfg = config(redis_url)
    async with TieredCache(cfg) as a, TieredCache(cfg) as b:
        await eventually(lambda: all(e.l2.stats()["coherence"]["connected"] for e in (a, b)),
                         what="both subscriptions")
        await a.set("k", "old")
        await a.set_many({"m1": "old", "m2": "old"})
        for key in ("k", "m1", "m2"):
            assert await b.get(key) == "old"
            assert a.get_local(key) == b.get_local(key) == "old"  # both hold it in L1
        published = a.stats()["invalidation"]["coherence_messages_published"]
        await a.set("k", "new")
        assert await a.get("k") == "new"
        await eventually(lambda: b.get_local("k") != "old", what="b to drop the overwritten k")
        assert await b.get("k") == "new"  # from Redis, then L1 again
        assert b.get_local("k") == "new"
        await a.set_many({"m1": "new", "m2": "new"})
        await eventually(lambda: b.get_local("m1") is None and b.get_local("m2") is None,
                         what="b to drop m1 and m2")
        assert await b.get_many(["m1", "m2"]) == {"m1": "new", "m2": "new"}
        assert a.stats()["invalidation"]["coherence_messages_published"] == published + 2
        # A does not drop its own writes: its L1 keeps the new values.
        assert a.get_local("m1") == "new" and a.get_local("k") == "new"


async def test_writes_of_one_tick_are_broadcast_in_one_message(redis_url: str) -> None:
    cfg = config(redis_url)
    async with TieredCache(cfg) as a, TieredCache(cfg) as b:
        await eventually(lambda: all(e.l2.stats()["coherence"]["connected"] for e in (a, b)),
                         what="both subscriptions")
        keys = [f"g{i}" for i in range(50)]
        await a.set_many(dict.fromkeys(keys, 0))
        assert await b.get_many(keys) == dict.fromkeys(keys, 0)
        published = a.stats()["invalidation"]["coherence_messages_published"]
        received = b.stats()["invalidation"]["coherence_messages_received"]
        results = await asyncio.gather(*(a.set(key, 1) for key in keys))
        assert all(results)
        assert a.stats()["invalidation"]["coherence_messages_published"] == published + 1
        await eventually(lambda: all(b.get_local(key) is None for key in keys), what="b to drop all 50")
        assert b.stats()["invalidation"]["coherence_messages_received"] == received + 1
        assert await b.get_many(keys) == dict.fromkeys(keys, 1)


async def test_a_read_in_flight_during_an_overwrite_does_not_refill_l1_with_the_old_value(
    redis_factory: Any,
) -> None:
    server = redis_factory.start()
    cfg = config(server.url, **{"redis.socket_timeout_s": 10.0})
    async with TieredCache(cfg) as a, TieredCache(cfg) as b:
        await eventually(lambda: all(e.l2.stats()["coherence"]["connected"] for e in (a, b)),
                         what="both subscriptions")
        await a.set("k", "old")
        assert await b.get("w") is None  # b's connection is open before Redis is paused
        server.pause()
        try:
            read = asyncio.ensure_future(b.get("k"))  # blocked in Redis until resume
            await asyncio.sleep(0.05)
            assert not read.done()
            # What b's listener delivers when another pod overwrites k (sent while the read waits).
            message = {"k": "keys", "ns": "default", "keys": ["k"], "o": "another-pod"}
            b._on_coherence_message(pack_stamped(orjson.dumps(message)))
        finally:
            server.resume()
        assert await read == "old"  # it answered from before the write...
        assert b.get_local("k") is None  # ...but did not put that into L1 after the drop
        assert await b.get("k") == "old" and b.get_local("k") == "old"  # a later read fills L1


async def test_get_counts_ai_keys_per_operation_on_every_tier(redis_url: str) -> None:
    async with TieredCache(config(redis_url)) as writer, TieredCache(config(redis_url)) as reader:
        summary = reader.key_for("summarize", "a long article")
        answer = reader.key_for("qa", "a document", question="why?")
        await writer.set(summary, "short")
        await writer.set(answer, "because")
        assert await reader.get(summary) == "short"  # L2 hit, fills L1
        assert await reader.get(summary) == "short"  # L1 hit
        assert await reader.get(reader.key_for("summarize", "never stored")) is None  # miss
        assert await reader.get_many([answer, reader.key_for("qa", "other", question="?")]) == {
            answer: "because"}
        assert await reader.get_many([answer]) == {answer: "because"}  # L1 hit through get_many
        await reader.get("plain-key")  # not an AI response: no operation
        await reader.get(reader.data_key("user-key"))
        operations = reader.stats()["operations"]
        assert operations["summarize"] == {"hits": 2, "misses": 1, "hit_rate": 2 / 3}
        assert operations["qa"]["hits"] == 2 and operations["qa"]["misses"] == 1
        assert sum(op["hits"] + op["misses"] for op in operations.values()) == 6
        # The key memo that makes L1 hits cheap stays bounded by L1's size.
        assert len(reader._ai_operations) <= 2 * reader.config.l1.max_entries + 1024


async def test_the_per_operation_key_memo_is_rebuilt_from_l1_when_it_outgrows_it() -> None:
    async with TieredCache(config(None, **{"l1.max_entries": 10})) as engine:
        keys = [engine.key_for("sentiment", f"text {i}") for i in range(2_000)]
        for key in keys:
            await engine.set(key, 1)
        assert len(engine._ai_operations) <= 2 * 10 + 1024
        for key in keys[-10:]:
            assert await engine.get(key) == 1  # L1 hits, still counted
        assert engine.stats()["operations"]["sentiment"]["hits"] == 10


async def test_a_pod_that_already_read_the_new_value_keeps_it_when_the_broadcast_arrives(
    redis_url: str,
) -> None:
    cfg = config(redis_url)
    async with TieredCache(cfg) as a, TieredCache(cfg) as b:
        await eventually(lambda: all(e.l2.stats()["coherence"]["connected"] for e in (a, b)),
                         what="both subscriptions")
        for i in range(20):
            received = b.stats()["invalidation"]["coherence_messages_received"]
            await a.set("k", i)
            # b reads at once: before, during or after its listener handles a's message (before:
            # its L1 may still serve the previous value for that moment; coherence is eventual).
            await eventually(lambda expected=i: _equals(b.get("k"), expected), what="b to read the new value")
            await eventually(lambda expected=received + 1: b.stats()["invalidation"][
                "coherence_messages_received"] == expected, what="b to handle a's write")
            assert b.get_local("k") == i  # the message named exactly the bytes b holds: kept
        await a.delete("k")  # a delete names no bytes: always dropped
        await eventually(lambda: b.get_local("k") is None, what="b to drop k")


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def test_a_late_broadcast_of_the_bytes_l1_holds_keeps_the_entry(
    redis_url: str, redis_server: Any
) -> None:
    async with TieredCache(config(redis_url)) as b:
        await b.set("k", "v")
        b.l1.clear()
        assert await b.get("k") == "v" and b.get_local("k") == "v"  # filled from Redis
        stored = raw_get(redis_server, "cw:default:v0:k")
        assert stored is not None

        def deliver(fingerprint: int) -> None:
            message = {"k": "keys", "ns": "default", "keys": ["k"], "f": [fingerprint], "o": "another-pod"}
            b._on_coherence_message(pack_stamped(orjson.dumps(message)))

        deliver(xxhash.xxh3_64_intdigest(stored))  # the write b already read, reported late
        assert b.get_local("k") == "v"
        deliver(xxhash.xxh3_64_intdigest(stored + b"x"))  # any other bytes: a newer write
        assert b.get_local("k") is None
