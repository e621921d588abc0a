"""Parsing Redis URLs and building redis.asyncio clients from RedisSettings.

Supported deployments (one URL each):

- ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://...`` (TLS; the server certificate is
  verified against ``tls_ca_file`` unless ``tls_verify`` is false; ``tls_cert_file``/``tls_key_file``
  give a client certificate);
- ``unix://[[user]:password@]/path/to/redis.sock[?db=N]``;
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]`` (``rediss+sentinel``
  speaks TLS to the sentinels and to the master). The credentials in the URL are the master's;
  ``sentinel_username``/``sentinel_password`` authenticate to the sentinels themselves;
- ``redis+cluster://[[user]:password@]host:port[,host:port...]`` (``rediss+cluster``), or any
  redis:// URL with ``cluster=True``: seed nodes of a Redis Cluster. Keys are routed by slot;
  MGET is split per slot (``mget_nonatomic``), pipelines are split per node by redis-py, UNLINK of many
  keys is split per slot, SCAN visits every primary. Databases other than 0 do not exist in a cluster.
  Limits: one circuit breaker covers the whole cluster (a primary down makes it flap between memory-
  only and serving the other slots); the coherence listener subscribes with classic SUBSCRIBE on one
  seed node (PUBLISH is broadcast cluster-wide), not sharded pub/sub; an exhausted per-node pool
  fails at once (counted as a "pool" error) instead of waiting.

Sentinel: RedisL2 re-reads the master address every ``sentinel_check_interval_s`` and drops all
connections when it changes (redis-py alone only re-resolves on new connections).

Query parameters accepted in every URL: ``db`` and ``protocol`` (2 or 3). Anything else is rejected
so that a typo never silently falls back to a default.

Every client is built with explicit connect/read timeouts, a bounded pool (callers wait at most
``pool_timeout_s`` for a free connection, standalone and sentinel; per-node bounded pools in cluster
mode, where an exhausted node pool fails at once) and redis-py retries disabled: the circuit breaker
in RedisL2 is the retry policy, so timeouts are never multiplied.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from cache_runtime.l2.errors import RedisSettingsError
from cache_runtime.l2.settings import RedisSettings
from cache_runtime.l2.urls import (
    ACCEPTED_URL_FORMS,
    ParsedRedisUrl,
    UrlKind,
    mask_url,
    parse_redis_url,
    scrub_secrets,
)

__all__ = [
    "ACCEPTED_URL_FORMS",
    "ParsedRedisUrl",
    "RedisClients",
    "build_clients",
    "build_subscriber_client",
    "mask_url",
    "parse_redis_url",
    "scrub_secrets",
]

def _check_tls_files(settings: RedisSettings) -> None:
    """Fail at start with the field named when a configured certificate file cannot be read."""
    for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(settings, name)
        if path is not None and not os.access(path, os.R_OK):
            raise RedisSettingsError(
                f"redis.{name}", path, "a readable PEM file", "file missing or unreadable"
            )


def _connection_kwargs(settings: RedisSettings, parsed: ParsedRedisUrl) -> dict[str, Any]:
    """Keyword arguments shared by every connection to a Redis server (not to sentinels)."""
    return {
        # Settings win over credentials embedded in the URL.
        "username": settings.username if settings.username is not None else parsed.username,
        "password": settings.password if settings.password is not None else parsed.password,
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.connect_timeout_s,
        "health_check_interval": settings.health_check_interval_s,
        "client_name": settings.client_name,
        "protocol": parsed.protocol if parsed.protocol is not None else settings.protocol,
        "decode_responses": False,
        # The breaker is the retry policy: a redis-py retry would multiply every timeout.
        "retry": Retry(NoBackoff(), 0),
    }


def _tls_kwargs(settings: RedisSettings) -> dict[str, Any]:
    return {
        "ssl_ca_certs": settings.tls_ca_file,
        "ssl_certfile": settings.tls_cert_file,
        "ssl_keyfile": settings.tls_key_file,
        "ssl_cert_reqs": "required" if settings.tls_verify else "none",
        "ssl_check_hostname": settings.tls_verify and settings.tls_check_hostname,
    }


class BoundedConnectionPool(ConnectionPool):
    """A bounded pool whose callers wait (at most ``timeout`` seconds) for a free connection.

    Same contract as redis-py's BlockingConnectionPool (never more than ``max_connections``, a
    ConnectionError "No connection available." after ``timeout``), but the fast path (a connection is
    free) takes no lock and arms no timer: BlockingConnectionPool does both on every command, which
    costs about 15-20 us per round trip, a fifth of a loopback GET. Waiters are served in FIFO order
    (asyncio.Semaphore is fair). ``waits`` counts the callers that had to wait: the evidence of pool
    exhaustion, which the health diagnosis tells apart from Redis latency.
    """

    def __init__(self, *, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self.waits = 0
        self._slots = asyncio.Semaphore(self.max_connections)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """A connected connection; waits up to ``timeout`` when all are in use."""
        slots = self._slots
        if slots.locked():
            self.waits += 1
            try:
                async with asyncio.timeout(self.timeout):
                    await slots.acquire()
            except TimeoutError:
                raise RedisConnectionError("No connection available.") from None
        else:
            await slots.acquire()  # returns at once: a slot is free
        try:
            connection = self.get_available_connection()
        except BaseException:
            slots.release()
            raise
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        """Return ``connection`` and free its slot for the next waiter (or retire the slot after a
        shrink, see :meth:`resize`)."""
        try:
            await super().release(connection)
        finally:
            if self._retiring > 0:
                self._retiring -= 1
            else:
                self._slots.release()

    _retiring = 0

    @property
    def exhausted(self) -> bool:
        """True when no slot is free: the next caller of :meth:`get_connection` would wait."""
        return self._slots.locked()

    def resize(self, max_connections: int) -> None:
        """Change the bound live, without closing any connection.

        Growing frees more slots at once. Shrinking takes the free slots away now and retires the
        busy ones as their calls return them, so calls in flight finish undisturbed and the pool
        never holds more than the new bound once they have.
        """
        if max_connections < 1:
            raise ValueError(f"max_connections: invalid value {max_connections!r}; accepted: >= 1")
        delta = max_connections - self.max_connections
        self.max_connections = max_connections
        slots = self._slots
        if delta > 0:
            settled = min(delta, self._retiring)
            self._retiring -= settled
            for _ in range(delta - settled):
                slots.release()
        elif delta < 0:
            owed = -delta
            free = min(owed, slots._value)  # asyncio.Semaphore keeps its free count there
            slots._value -= free
            self._retiring += owed - free
        # Idle sockets beyond the new bound stay open, but no more than the bound are used at once.

    def retune(self, *, socket_timeout: float, socket_connect_timeout: float, timeout: float) -> None:
        """New read/connect timeouts for new and existing connections, and a new pool wait bound."""
        self.timeout = timeout
        self.connection_kwargs["socket_timeout"] = socket_timeout
        self.connection_kwargs["socket_connect_timeout"] = socket_connect_timeout
        for connection in (*self._available_connections, *self._in_use_connections):
            connection.socket_timeout = connection.orig_socket_timeout = socket_timeout
            connection.socket_connect_timeout = socket_connect_timeout
            connection.orig_socket_connect_timeout = socket_connect_timeout


class BoundedSentinelConnectionPool(SentinelConnectionPool, BoundedConnectionPool):
    """A SentinelConnectionPool that waits (bounded) for a free connection and counts the waits.

    redis-py's SentinelConnectionPool fails at once with "Too many connections" when the pool is
    exhausted; with this MRO it keeps its master discovery and takes the bounded wait.
    """


@dataclass(slots=True)
class RedisClients:
    """The command client of one deployment and the objects that must be closed with it."""

    kind: UrlKind
    client: Redis | RedisCluster
    pool: BoundedConnectionPool | None = None
    sentinel: Sentinel | None = None
    parsed: ParsedRedisUrl | None = None

    async def aclose(self) -> None:
        """Close the client, its pool and the sentinel connections; never raises."""
        # Closing a broken connection must not hide the caller's own work.
        with contextlib.suppress(Exception):
            await self.client.aclose()
        if self.sentinel is not None:
            with contextlib.suppress(Exception):
                await self.sentinel.aclose()


def build_clients(settings: RedisSettings) -> RedisClients:
    """Build the command client for ``settings`` (no network I/O happens here)."""
    parsed = parse_redis_url(settings.url)
    _check_tls_files(settings)
    kind: UrlKind = "cluster" if settings.cluster and parsed.kind == "standalone" else parsed.kind
    common = _connection_kwargs(settings, parsed)

    if kind == "cluster":
        extra = {"ssl": True, **_tls_kwargs(settings)} if parsed.tls else {}
        common.pop("retry")
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.hosts],
            max_connections=settings.max_connections,
            # Slots not covered (a primary down) fail only the keys in them, not the whole client.
            require_full_coverage=False,
            retry=Retry(NoBackoff(), 0),
            **common,
            **extra,
        )
        return RedisClients(kind="cluster", client=cluster, parsed=parsed)

    if kind == "sentinel":
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": settings.socket_timeout_s,
            "socket_connect_timeout": settings.connect_timeout_s,
            "username": settings.sentinel_username,
            "password": settings.sentinel_password,
            "retry": common["retry"],
            "protocol": common["protocol"],
        }
        if parsed.tls:
            sentinel_kwargs.update({"ssl": True, **_tls_kwargs(settings)})
        sentinel = Sentinel(list(parsed.hosts), sentinel_kwargs=sentinel_kwargs)
        extra = {"ssl": True, **_tls_kwargs(settings)} if parsed.tls else {}
        service = settings.sentinel_master or parsed.service_name
        assert service is not None  # RedisSettings rejects a sentinel URL without a service name
        client = sentinel.master_for(
            service,
            redis_class=Redis,
            connection_pool_class=BoundedSentinelConnectionPool,
            max_connections=settings.max_connections,
            timeout=settings.pool_timeout_s,
            db=parsed.db,
            **common,
            **extra,
        )
        return RedisClients(
            kind="sentinel", client=client, pool=client.connection_pool, sentinel=sentinel, parsed=parsed
        )

    if kind == "unix":
        pool = BoundedConnectionPool(
            max_connections=settings.max_connections,
            timeout=settings.pool_timeout_s,
            connection_class=UnixDomainSocketConnection,
            path=parsed.path,
            db=parsed.db,
            **common,
        )
    else:
        host, port = parsed.hosts[0]
        tls = _tls_kwargs(settings) if parsed.tls else {}
        pool = BoundedConnectionPool(
            max_connections=settings.max_connections,
            timeout=settings.pool_timeout_s,
            connection_class=SSLConnection if parsed.tls else Connection,
            host=host,
            port=port,
            db=parsed.db,
            socket_keepalive=True,
            **common,
            **tls,
        )
    return RedisClients(kind=kind, client=Redis.from_pool(pool), pool=pool, parsed=parsed)


def build_subscriber_client(settings: RedisSettings, attempt: int = 0) -> RedisClients:
    """A client with its own one-connection pool for the pub/sub listener (never the command pool).

    In cluster mode PUBLISH is broadcast to every node, so the listener subscribes on one seed node,
    rotating through the seeds on each reconnection ``attempt``.
    """

    parsed = parse_redis_url(settings.url)
    kind: UrlKind = "cluster" if settings.cluster and parsed.kind == "standalone" else parsed.kind
    if kind == "cluster":
        host, port = parsed.hosts[attempt % len(parsed.hosts)]
        scheme = "rediss" if parsed.tls else "redis"
        single = replace(
            settings,
            url=f"{scheme}://{_bracket(host)}:{port}/0",
            # The seed URL carried the credentials and protocol; keep them on the single-node URL.
            username=settings.username if settings.username is not None else parsed.username,
            password=settings.password if settings.password is not None else parsed.password,
            protocol=parsed.protocol if parsed.protocol is not None else settings.protocol,
            cluster=False,
            max_connections=1,
        )
        return build_clients(single)
    return build_clients(replace(settings, max_connections=1))


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
