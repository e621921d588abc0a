"""AUTH, ACL users and TLS against real redis-server processes. Misconfiguration is counted by kind,
never raised, and never leaks a secret into stats."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest
import redis

from cache_runtime.config import CacheConfig
from cache_runtime.keys import KeyBuilder
from cache_runtime.l2 import BreakerState, RedisL2, RedisSettings

if TYPE_CHECKING:
    from tests.integration.conftest import AclRedis, RedisFactory, RedisProcess, TlsMaterial

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30


def settings_for(url: str, **overrides: object) -> RedisSettings:
    values: dict[str, object] = {
        "url": url,
        "connect_timeout_s": 1.0,
        "socket_timeout_s": 1.0,
        "breaker_open_seconds": 0.3,
    }
    values.update(overrides)
    return RedisSettings(**values)  # type: ignore[arg-type]


async def exercise(l2: RedisL2) -> None:
    """Every data operation once, on the key names the engine really uses, all expected to succeed."""
    keys = KeyBuilder(CacheConfig())
    a, b, c = keys.redis_key("a"), keys.redis_key("b"), keys.redis_key("c")
    assert await l2.set(a, b"1", ttl_ms=60_000)
    assert await l2.get(a) == b"1"
    assert await l2.set_many([(b, b"2", 60_000), (c, b"3", 60_000)])
    assert await l2.mget([a, b, c]) == [b"1", b"2", b"3"]
    assert await l2.get_version(keys.version_key()) == 0
    assert await l2.bump_version(keys.version_key()) == 1, l2.stats()["last_errors"]
    lease = keys.lease_key("a")
    token = await l2.acquire_lease(lease, 5_000)
    assert token is not None
    assert await l2.release_lease(lease, token)  # EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA (DEL inside)
    assert await l2.scan_unlink(keys.namespace_prefix() + "*") == 3
    assert await l2.delete([a]) == 0
    assert await l2.publish(CacheConfig().coherence_channel, b"m")
    assert await l2.ping() is not None
    assert await l2.memory_info() is not None
    assert l2.stats()["errors_total"] == 0, l2.stats()["last_errors"]


async def test_password_from_settings(redis_factory: RedisFactory) -> None:
    server = redis_factory.start(password="pw-in-settings")
    async with (
        asyncio.timeout(HANG_GUARD_S),
        RedisL2(settings_for(server.url, password="pw-in-settings")) as l2,
    ):
        await exercise(l2)


async def test_password_from_url(redis_factory: RedisFactory) -> None:
    server = redis_factory.start(password="pw-in-url")
    url = f"redis://:pw-in-url@127.0.0.1:{server.port}/0"
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings_for(url)) as l2:
        await exercise(l2)
        assert "pw-in-url" not in json.dumps(l2.stats())


async def test_wrong_password_is_counted_as_auth_and_never_raised(redis_factory: RedisFactory) -> None:
    server = redis_factory.start(password="the-right-one")
    settings = settings_for(server.url, password="the-wrong-one")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        results = [await l2.get("cw:k") for _ in range(10)]
        assert results == [None] * 10
        assert await l2.set("cw:k", b"v", ttl_ms=1000) is False
        stats = l2.stats()
        assert stats["errors"]["auth"] == 3  # then the breaker stops hammering Redis with bad AUTHs
        assert l2.breaker_state is BreakerState.OPEN
        assert "WRONGPASS" in stats["last_errors"]["auth"]["message"]
        assert "the-wrong-one" not in json.dumps(stats)


async def test_missing_password_is_counted_as_auth(redis_factory: RedisFactory) -> None:
    server = redis_factory.start(password="required")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings_for(server.url)) as l2:
        assert await l2.get("cw:k") is None
        stats = l2.stats()
        assert stats["errors"]["auth"] == 1
        assert "NOAUTH" in stats["last_errors"]["auth"]["message"]


async def test_acl_user_can_do_everything_the_engine_needs(redis_acl: AclRedis) -> None:
    settings = settings_for(redis_acl.server.url, username=redis_acl.username, password=redis_acl.password)
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        await exercise(l2)
        received: list[bytes] = []
        listener = l2.subscribe(redis_acl.channel, received.append, lambda: None)
        assert await listener.wait_subscribed(5)
        assert await l2.publish(redis_acl.channel, b"hi")

        async def delivered() -> bool:
            return received == [b"hi"]

        for _ in range(100):
            if await delivered():
                break
            await asyncio.sleep(0.02)
        assert received == [b"hi"]
        # CONFIG is forbidden to this user; memory_info still answers from INFO.
        info = await l2.memory_info()
        assert info is not None
        assert info["maxmemory_policy"] == "noeviction"
        assert l2.stats()["errors_total"] == 0


async def test_acl_user_outside_its_key_pattern_gets_permission_errors(redis_acl: AclRedis) -> None:
    settings = settings_for(redis_acl.server.url, username=redis_acl.username, password=redis_acl.password)
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        for _ in range(5):
            assert await l2.set("other-app:key", b"v", ttl_ms=1000) is False
        stats = l2.stats()
        assert stats["errors"]["permission"] == 5
        assert "NOPERM" in stats["last_errors"]["permission"]["message"]
        # The server answered: it is up, the breaker stays closed, allowed keys still work.
        assert l2.breaker_state is BreakerState.CLOSED
        assert await l2.set("cw:ok", b"v", ttl_ms=1000) is True


async def test_acl_user_holds_nothing_beyond_the_engine_rules(redis_acl: AclRedis) -> None:
    user = redis.Redis(host="127.0.0.1", port=redis_acl.server.port, username=redis_acl.username,
                       password=redis_acl.password, socket_timeout=5)
    try:
        for forbidden in (("CONFIG", "GET", "maxmemory"), ("KEYS", "*"), ("FLUSHALL",),
                          ("EVAL", "return 1", "0"), ("SET", "other:k", "v"), ("PUBLISH", "cw#other", "m")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.execute_command(*forbidden)
        assert user.execute_command("SET", "cw#nsver:x", "1")
    finally:
        user.close()


async def test_acl_user_with_a_wrong_password(redis_acl: AclRedis) -> None:
    url = f"redis://{redis_acl.username}:nope-not-it@127.0.0.1:{redis_acl.server.port}/0"
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings_for(url)) as l2:
        assert await l2.get("cw:k") is None
        stats = l2.stats()
        assert stats["errors"]["auth"] == 1
        assert "nope-not-it" not in json.dumps(stats)
        assert stats["url"] == f"redis://{redis_acl.username}:***@127.0.0.1:{redis_acl.server.port}/0"


async def test_tls_with_ca_verification(redis_tls: RedisProcess, tls_material: TlsMaterial) -> None:
    settings = settings_for(redis_tls.url, tls_ca_file=str(tls_material.ca_cert))
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        await exercise(l2)
    assert redis_tls.url.startswith("rediss://")


async def test_tls_with_client_certificate(redis_factory: RedisFactory, tls_material: TlsMaterial) -> None:
    server = redis_factory.start("--tls-auth-clients", "yes", tls=tls_material)
    without_cert = settings_for(server.url, tls_ca_file=str(tls_material.ca_cert))
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(without_cert) as l2:
        assert await l2.get("cw:k") is None
        stats = l2.stats()
        assert stats["errors"]["tls"] + stats["errors"]["connection"] == 1
    with_cert = settings_for(
        server.url,
        tls_ca_file=str(tls_material.ca_cert),
        tls_cert_file=str(tls_material.client_cert),
        tls_key_file=str(tls_material.client_key),
    )
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(with_cert) as l2:
        await exercise(l2)


async def test_tls_with_the_wrong_ca_fails_verification_without_raising(
    redis_tls: RedisProcess, tls_material: TlsMaterial
) -> None:
    settings = settings_for(redis_tls.url, tls_ca_file=str(tls_material.wrong_ca_cert))
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        results = [await l2.get("cw:k") for _ in range(5)]
        assert results == [None] * 5
        stats = l2.stats()
        assert stats["errors"]["tls"] == 3
        assert "CERTIFICATE_VERIFY_FAILED" in stats["last_errors"]["tls"]["message"]
        assert l2.breaker_state is BreakerState.OPEN


async def test_tls_verification_can_be_disabled_explicitly(
    redis_tls: RedisProcess, tls_material: TlsMaterial
) -> None:
    settings = settings_for(redis_tls.url, tls_ca_file=str(tls_material.wrong_ca_cert), tls_verify=False)
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        await exercise(l2)


async def test_plain_client_against_a_tls_port_fails_cleanly(redis_tls: RedisProcess) -> None:
    url = f"redis://127.0.0.1:{redis_tls.port}/0"
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings_for(url, socket_timeout_s=0.3)) as l2:
        assert await l2.get("cw:k") is None
        assert l2.stats()["errors_total"] == 1


async def test_set_many_with_a_refused_publish_still_stores_and_counts_the_publish_error(
    redis_acl: AclRedis,
) -> None:
    settings = settings_for(redis_acl.server.url, username=redis_acl.username, password=redis_acl.password)
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        received: list[bytes] = []
        listener = l2.subscribe(redis_acl.channel, received.append, lambda: None)
        assert await listener.wait_subscribed(5)
        assert await l2.set_many([("cw:x", b"1", 60_000)], publish=(redis_acl.channel, b"wrote x"))
        assert await l2.set_many([("cw:y", b"2", 60_000)], publish=("cw#not-granted", b"wrote y"))
        assert await l2.mget(["cw:x", "cw:y"]) == [b"1", b"2"]
        stats = l2.stats()
        assert stats["errors"]["permission"] == 1 and stats["errors_total"] == 1
        assert "publish" in json.dumps(stats["last_errors"])
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.02)
        assert received == [b"wrote x"]
