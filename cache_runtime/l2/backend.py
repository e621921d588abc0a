"""RedisL2: the Redis tier of the cache, built so that Redis trouble never reaches the caller.

Every public coroutine is bounded by the settings' timeouts (connect, read, pool wait) and never raises
because of Redis: a failure is counted by kind (see cache_runtime.l2.errors), reported to the circuit
breaker, and the call returns its "nothing" value (None, False, 0, []). Only programming errors (a
negative TTL, a pattern outside the key prefix) raise ValueError, and cancellation propagates.

While the breaker is open, calls return at once without touching the network. When ``open_seconds``
are up, the next call starts a background PING as the half-open probe and still returns "nothing" at
once; the probe's success closes the breaker. So during an outage only the calls that opened the
breaker (``breaker_failure_threshold``, plus those already in flight) pay a timeout, and recovery
needs no caller to pay one either.

Concurrent single ``get`` calls are coalesced: a get that finds nothing in flight goes straight to
Redis (no added latency for a lone caller); gets issued while a round trip is in flight are
collected during the current event-loop tick and sent as one MGET (split per slot in cluster mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache_runtime.l2.breaker import BreakerState, CircuitBreaker
from cache_runtime.l2.coherence import (
    CoherenceListener,
    CoherenceMessage,
    KeysChanged,
    NamespaceBumped,
    encode_message,
)
from cache_runtime.l2.connect import RedisClients, build_clients, mask_url, parse_redis_url, scrub_secrets
from cache_runtime.l2.errors import BREAKER_KINDS, ERROR_KINDS, classify_error, describe_error
from cache_runtime.l2.settings import RedisSettings

__all__ = ["CONNECTION_FIELDS", "OutageReplay", "RedisL2", "ReplayOutcome"]

logger = logging.getLogger("cache_runtime.l2")

T = TypeVar("T")

_CLOSED = BreakerState.CLOSED
# A lane idle this long may have been closed by a server `timeout` or a proxy: see _lane_get.
_LANE_IDLE_RETRY_S = 1.0
# Weight of a new sample in the lane's round-trip average (1/8: the last few dozen GETs count).
_LANE_RTT_WEIGHT = 8

#: Keys of one coalesced MGET, each with the futures of the gets waiting for it.
_Batch = dict[str, list["asyncio.Future[bytes | None]"]]

# Deletes the lease only if it still holds our token, so a lease that expired and was taken by
# another pod is never released by us.
_RELEASE_LEASE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# SETs then one PUBLISH, in one round trip and one command: the cheapest way (redis-py's pipeline
# costs about a second round trip of client CPU) to make other pods drop keys from L1 only once the
# new values are in Redis. KEYS: the keys; ARGV: value, ttl_ms per key, then channel and message.
_SET_AND_PUBLISH_LUA = """
local n = #KEYS
for i = 1, n do
    redis.call('set', KEYS[i], ARGV[2 * i - 1], 'px', ARGV[2 * i])
end
-- pcall: a refused PUBLISH (ACL) must not turn stored values into a failed write.
local published = redis.pcall('publish', ARGV[2 * n + 1], ARGV[2 * n + 2])
if type(published) == 'table' and published.err then
    return {n, published.err}
end
return {n, ''}
"""
# Longest batch written by that script (it holds Redis for its whole run); longer ones use pipelines.
_SET_AND_PUBLISH_MAX_KEYS = 128

_OPS = (
    "get",
    "mget",
    "set",
    "set_many",
    "delete",
    "scan_unlink",
    "get_version",
    "bump_version",
    "acquire_lease",
    "release_lease",
    "publish",
    "ping",
    "memory_info",
    "probe",
    "direct",
)

#: Settings that decide where and how connections are made: a change of any of them needs new
#: clients. Every other setting (pool size, timeouts, breaker, batching, coherence timing) is applied
#: to the live clients by :meth:`RedisL2.tune`.
CONNECTION_FIELDS = (
    "url",
    "username",
    "password",
    "protocol",
    "health_check_interval_s",
    "client_name",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_verify",
    "tls_check_hostname",
    "sentinel_master",
    "sentinel_username",
    "sentinel_password",
    "cluster",
)
# Also fixed in a cluster client (its per-node pools are built by redis-py) and for the sentinels'
# own connections.
_CLIENT_BUILD_FIELDS = ("max_connections", "connect_timeout_s", "socket_timeout_s")

#: Fields of INFO memory / INFO stats that memory_info() reports (numbers unless noted).
_MEMORY_FIELDS = (
    "used_memory",
    "used_memory_dataset",  # the keys' share of used_memory; the rest is Redis's own overhead
    "used_memory_rss",
    "used_memory_peak",
    "maxmemory",
    "mem_fragmentation_ratio",
)
_STATS_FIELDS = (
    "evicted_keys",
    "expired_keys",
    "keyspace_hits",
    "keyspace_misses",
    "rejected_connections",
    "instantaneous_ops_per_sec",
    "total_connections_received",
)


async def _poll_for_reply(connection: Any, until: float) -> None:
    """Yield to the event loop until ``connection`` has bytes to read or ``until`` (perf_counter) passes.

    Each yield is one loop pass: other ready callbacks run, and the selector is polled without
    sleeping, so a reply that arrives within the budget is read without a wake-up.
    """
    perf_counter = time.perf_counter
    while perf_counter() < until and not await connection.can_read():
        await asyncio.sleep(0)


def _probe_timeout(settings: RedisSettings) -> float:
    # A probe is one PING: it reports within pool wait + connect + handshake and reply reads.
    return settings.pool_timeout_s + settings.connect_timeout_s + 2 * settings.socket_timeout_s


def summarize_memory_info(nodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge INFO memory+stats dicts of one or more primaries into the memory_info() shape.

    Sizes and counters are summed over the nodes (cluster); the policy is the first node's, and
    ``maxmemory_policies`` lists them all so a mismatch between nodes is visible.
    """
    summary: dict[str, Any] = {"nodes": len(nodes)}
    for name in (*_MEMORY_FIELDS, *_STATS_FIELDS):
        values: list[float] = [
            node[name]
            for node in nodes
            if isinstance(node.get(name), (int, float)) and not isinstance(node[name], bool)
        ]
        if name == "mem_fragmentation_ratio":
            summary[name] = max(values) if values else None
        else:
            summary[name] = sum(values) if values else None
    policies = [str(node["maxmemory_policy"]) for node in nodes if node.get("maxmemory_policy") is not None]
    summary["maxmemory_policy"] = policies[0] if policies else None
    summary["maxmemory_policies"] = sorted(set(policies))
    used, limit = summary.get("used_memory"), summary.get("maxmemory")
    summary["used_memory_ratio"] = (used / limit) if used is not None and limit else None
    return summary


# Keys per UNLINK (and per coherence message) when an outage journal is replayed.
_REPLAY_BATCH = 500


@dataclass(frozen=True, slots=True)
class OutageReplay:
    """What an engine changed while Redis did not take it, to be replayed in one go
    (built by :class:`cache_runtime.outage_journal.OutageJournal`)."""

    upto: int  # the journal's sequence the replay covers
    own_namespace: str
    version_key: Callable[[str], str]  # namespace -> the Redis counter of its version
    key_prefix: Callable[[int], str]  # version of own_namespace -> prefix of its keys
    bump: tuple[str, ...]  # namespaces whose version to INCR
    patterns: tuple[tuple[str, CoherenceMessage], ...]  # (full glob, what to broadcast once unlinked)
    keys: tuple[str, ...]  # logical keys of own_namespace to UNLINK
    channel: str | None  # coherence channel (None: broadcast nothing)
    origin: str


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """The namespace versions Redis holds after a replay, and how many keys it unlinked."""

    versions: dict[str, int]
    keys: int


class RedisL2:
    """The Redis tier: bounded, breaker-protected, never raising on Redis trouble.

    Usage::

        l2 = RedisL2(RedisSettings(url="redis://127.0.0.1:6379/0"))
        await l2.start()
        await l2.set("k", b"v", ttl_ms=60_000); await l2.get("k")
        await l2.close()
    """

    __slots__ = (
        "_batch",
        "_breaker",
        "_client",
        "_clients",
        "_clock",
        "_closed",
        "_coalesced_batches",
        "_coalesced_keys",
        "_direct_pool",
        "_errors",
        "_errors_by_op",
        "_in_flight",
        "_lane",
        "_lane_busy",
        "_lane_rtt",
        "_lane_used_at",
        "_last_error",
        "_last_errors",
        "_listeners",
        "_loop",
        "_ops",
        "_probes_started",
        "_release_script",
        "_round_trip_max",
        "_round_trip_seconds",
        "_round_trips",
        "_rtt_samples",
        "_secrets",
        "_sentinel_failovers",
        "_set_publish_script",
        "_settings",
        "_short_circuited",
        "_tasks",
        "_url_masked",
    )

    def __init__(self, settings: RedisSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(settings, RedisSettings):
            raise TypeError(f"settings: expected RedisSettings, got {type(settings).__name__}")
        self._settings = settings
        self._clock = clock
        self._breaker = self._new_breaker(settings)
        self._clients: RedisClients | None = None
        self._client: Any = None
        # Standalone/unix deployments: a lone GET runs on the "lane", one connection of the pool this
        # engine keeps checked out for them (see _lane_get).
        self._direct_pool: Any = None
        self._lane: Any = None
        self._lane_busy = False
        self._lane_used_at = 0.0
        self._lane_rtt = 0.0  # moving average of lone GETs' round trips (s), for the spin budget
        self._release_script: Any = None
        self._set_publish_script: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._batch: _Batch | None = None
        self._in_flight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listeners: list[CoherenceListener] = []
        self._secrets = self._secrets_of(settings)
        self._url_masked = mask_url(settings.url)
        # Plain counters: the hot path only does integer additions.
        self._ops: dict[str, int] = dict.fromkeys(_OPS, 0)
        self._errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self._errors_by_op: dict[str, int] = dict.fromkeys(_OPS, 0)
        self._last_errors: dict[str, dict[str, Any]] = {}
        self._last_error: dict[str, Any] | None = None
        self._short_circuited = 0
        self._probes_started = 0
        self._sentinel_failovers = 0
        self._coalesced_batches = 0
        self._coalesced_keys = 0
        self._round_trips = 0
        self._round_trip_seconds = 0.0
        self._round_trip_max = 0.0
        self._rtt_samples: deque[float] = deque(maxlen=64)

    # ------------------------------------------------------------------ lifecycle

    def _new_breaker(self, settings: RedisSettings) -> CircuitBreaker:
        return CircuitBreaker(
            settings.breaker_failure_threshold,
            settings.breaker_open_seconds,
            settings.breaker_half_open_probes,
            probe_timeout_s=_probe_timeout(settings),
            clock=self._clock,
            on_transition=self._on_breaker_transition,
        )

    @staticmethod
    def _secrets_of(settings: RedisSettings) -> tuple[str | None, ...]:
        parsed = parse_redis_url(settings.url)
        return (settings.password, parsed.password, settings.sentinel_password)

    async def start(self) -> None:
        """Build the clients (no network I/O: connections open on first use, so start never blocks).

        Raises RedisSettingsError only for configuration that can never work (a TLS file that does
        not exist); Redis being down is not an error here.
        """
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._install(build_clients(self._settings))

    def _install(self, clients: RedisClients) -> None:
        self._clients = clients
        self._client = clients.client
        self._direct_pool = clients.pool if clients.kind in ("standalone", "unix") else None
        self._lane = None  # the old pool's lane (if any) closes with the old pool
        self._release_script = clients.client.register_script(_RELEASE_LEASE_LUA)
        self._set_publish_script = clients.client.register_script(_SET_AND_PUBLISH_LUA)
        if clients.kind == "sentinel":
            self._spawn(self._watch_sentinel_master(clients))

    async def _watch_sentinel_master(self, clients: RedisClients) -> None:
        """Drop every connection when Sentinel names a new master (the old one may still accept writes)."""
        sentinel, pool = clients.sentinel, clients.pool
        service = self._settings.sentinel_master or (clients.parsed.service_name if clients.parsed else None)
        if sentinel is None or pool is None or service is None:
            return
        known: Any = None
        while self._clients is clients:
            await asyncio.sleep(self._settings.sentinel_check_interval_s)
            try:
                address = await sentinel.discover_master(service)
            except Exception:  # sentinels unreachable: the data path reports its own errors
                continue
            if known is not None and address != known:
                logger.warning(
                    "redis sentinel service %r moved from %s:%s to %s:%s; reconnecting",
                    service,
                    *known,
                    *address,
                )
                self._sentinel_failovers += 1
                # In-use connections too: a command on the demoted master would succeed and be lost.
                with contextlib.suppress(Exception):
                    await pool.disconnect(inuse_connections=True)
            known = address

    async def close(self) -> None:
        """Stop listeners, answer pending coalesced gets with None, close every connection."""
        self._closed = True
        for listener in self._listeners:
            await listener.stop()
        self._listeners.clear()
        batch, self._batch = self._batch, None
        if batch:
            self._resolve(batch, None)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        clients, self._clients, self._client = self._clients, None, None
        self._direct_pool = self._lane = None
        if clients is not None:
            await clients.aclose()

    async def __aenter__(self) -> RedisL2:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def reconnect(self, settings: RedisSettings | None = None) -> None:
        """Drop every pooled connection and build new clients (optionally from new settings).

        The breaker is reset to closed, and each pub/sub listener reconnects too (its ``on_reset``
        fires once it has resubscribed).
        """
        if settings is not None:
            if not isinstance(settings, RedisSettings):
                raise TypeError(f"settings: expected RedisSettings, got {type(settings).__name__}")
            self._settings = settings
            self._secrets = self._secrets_of(settings)
            self._url_masked = mask_url(settings.url)
            self._breaker = self._new_breaker(settings)
        self._loop = asyncio.get_running_loop()
        old = self._clients
        self._install(build_clients(self._settings))
        self._closed = False
        self._breaker.reset()
        if old is not None:
            await old.aclose()
        for listener in self._listeners:
            listener.restart(self._settings)

    def needs_new_clients(self, settings: RedisSettings) -> bool:
        """Whether moving to ``settings`` needs new clients (see ``CONNECTION_FIELDS``)."""
        current = self._settings
        if any(getattr(current, name) != getattr(settings, name) for name in CONNECTION_FIELDS):
            return True
        clients = self._clients
        if clients is None or clients.pool is None or clients.kind == "sentinel":
            return any(getattr(current, name) != getattr(settings, name) for name in _CLIENT_BUILD_FIELDS)
        return False

    def tune(self, settings: RedisSettings) -> None:
        """Apply ``settings`` to the live clients: pool size, timeouts, breaker, batching, coherence
        timing. Nothing is closed, calls in flight finish, the coherence subscription stays up.

        ValueError when ``settings`` need new clients (:meth:`needs_new_clients`): use
        :meth:`reconnect`, or build a new RedisL2 and swap (what ``TieredCache.apply_config`` does).
        """
        if not isinstance(settings, RedisSettings):
            raise TypeError(f"settings: expected RedisSettings, got {type(settings).__name__}")
        if self.needs_new_clients(settings):
            raise ValueError("settings: these settings change how connections are made; accepted here: "
                             "only pool size, timeouts, breaker, batching and coherence timing")
        clients = self._clients
        if clients is not None and clients.pool is not None:
            clients.pool.resize(settings.max_connections)
            clients.pool.retune(socket_timeout=settings.socket_timeout_s,
                                socket_connect_timeout=settings.connect_timeout_s,
                                timeout=settings.pool_timeout_s)
        self._breaker.reconfigure(settings.breaker_failure_threshold, settings.breaker_open_seconds,
                                  settings.breaker_half_open_probes, _probe_timeout(settings))
        self._settings = settings
        for listener in self._listeners:
            listener.update_settings(settings)

    @property
    def in_flight(self) -> int:
        """Calls to Redis under way now (commands, coalesced batches, scans)."""
        return self._in_flight + (1 if self._batch else 0)

    async def drain(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until no call is in flight; True if none is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_flight:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    # ------------------------------------------------------------------ state

    @property
    def settings(self) -> RedisSettings:
        """The settings in force."""
        return self._settings

    @property
    def available(self) -> bool:
        """True when calls go to Redis: started, and the breaker closed (not open, not probing)."""
        return self._client is not None and self._breaker.state is BreakerState.CLOSED

    @property
    def breaker_state(self) -> BreakerState:
        """Current circuit breaker state."""
        return self._breaker.state

    @property
    def client(self) -> Any:
        """The underlying redis.asyncio client (for diagnostics and tests; bypasses the breaker)."""
        return self._client

    # ------------------------------------------------------------------ failure accounting

    def _on_breaker_transition(self, old: BreakerState, new: BreakerState) -> None:
        last = self._last_error["message"] if self._last_error else "none"
        if new is BreakerState.OPEN:
            logger.warning(
                "redis breaker %s -> open for %.2fs (redis=%s, last error: %s)",
                old.value,
                self._settings.breaker_open_seconds,
                self._url_masked,
                last,
            )
            self._spawn(self._drop_idle_connections())
        elif new is BreakerState.CLOSED and old is not BreakerState.CLOSED:
            logger.warning("redis breaker %s -> closed: redis=%s answers again", old.value, self._url_masked)

    async def _drop_idle_connections(self) -> None:
        # After an outage idle pooled sockets are dead; the probe must use a fresh connection.
        clients = self._clients
        if clients is not None and clients.pool is not None:
            lane = self._lane
            if lane is not None and not self._lane_busy and self._direct_pool is clients.pool:
                await self._retire_lane(clients.pool, lane)  # its socket is as dead as the idle ones
            # Closing dead sockets may fail; there is nothing to do about it.
            with contextlib.suppress(Exception):
                await clients.pool.disconnect(inuse_connections=False)

    def _record_failure(self, exc: BaseException, op: str) -> str:
        kind = classify_error(exc)
        self._errors[kind] += 1
        self._errors_by_op[op] += 1
        entry = {
            "kind": kind,
            "op": op,
            "at": time.time(),
            "message": scrub_secrets(describe_error(exc), self._secrets),
        }
        self._last_errors[kind] = entry
        self._last_error = entry
        logger.debug("redis %s failed (%s): %s", op, kind, entry["message"])
        breaker = self._breaker
        if kind in BREAKER_KINDS:
            breaker.record_failure()
        elif kind == "pool":
            # Local congestion says nothing about the server: neither success nor failure.
            breaker.abandon()
        else:
            # The server answered (OOM, NOPERM, WRONGTYPE...): it is up.
            breaker.record_success()
        return kind

    def _record_data_error(self, op: str, message: str) -> None:
        self._errors["data"] += 1
        self._errors_by_op[op] += 1
        entry = {"kind": "data", "op": op, "at": time.time(), "message": message}
        self._last_errors["data"] = entry
        self._last_error = entry

    def _admit(self) -> bool:
        """Breaker gate. While not closed, a free probe slot starts a background PING instead."""
        breaker = self._breaker
        if breaker._state is _CLOSED:
            return True
        if breaker.allow():
            self._probes_started += 1
            self._spawn(self._probe())
        self._short_circuited += 1
        return False

    async def _probe(self) -> None:
        client = self._client
        self._ops["probe"] += 1
        if client is None:
            self._breaker.abandon()
            return
        try:
            await client.ping()
        except Exception as exc:
            self._record_failure(exc, "probe")
        except BaseException:
            self._breaker.abandon()
            raise
        else:
            self._breaker.record_success()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            return
        task: asyncio.Task[None] = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _note_round_trip(self, started: float) -> None:
        elapsed = time.perf_counter() - started
        self._round_trips += 1
        self._round_trip_seconds += elapsed
        if elapsed > self._round_trip_max:
            self._round_trip_max = elapsed

    async def _run(self, op: str, call: Callable[[Any], Awaitable[T]], nothing: T) -> T:
        """Run one Redis call through the breaker; failures become ``nothing``."""
        self._ops[op] += 1
        client = self._client
        if client is None or not self._admit():
            return nothing
        self._in_flight += 1
        started = time.perf_counter()
        try:
            result = await call(client)
        except Exception as exc:
            self._record_failure(exc, op)
            return nothing
        except BaseException:
            self._breaker.abandon()
            raise
        finally:
            self._in_flight -= 1
        self._note_round_trip(started)
        self._breaker.record_success()
        return result

    async def run_direct(self, call: Callable[[Any], Awaitable[T]]) -> T | None:
        """Run ``call(client)`` past the breaker; None when it failed (counted like any failure).

        For the engine's replay of what it changed while Redis was failing: that must reach Redis as
        soon as Redis answers again, not only after the breaker's open window, because other pods
        may already read from Redis by then. A success started while the breaker was open or
        half-open closes it: Redis answered a call made after the outage began.
        """
        self._ops["direct"] += 1
        client = self._client
        if client is None:
            return None
        was_closed = self._breaker.state is _CLOSED
        self._in_flight += 1
        started = time.perf_counter()
        try:
            result = await call(client)
        except Exception as exc:
            self._record_failure(exc, "direct")
            return None
        except BaseException:
            self._breaker.abandon()
            raise
        finally:
            self._in_flight -= 1
        self._note_round_trip(started)
        if was_closed:
            self._breaker.record_success()
        else:
            self._breaker.reset()
        return result

    async def replay_outage(self, replay: OutageReplay) -> ReplayOutcome | None:
        """Replay an outage journal past the breaker (:meth:`run_direct`): read this namespace's
        version, INCR every namespace to bump, SCAN+UNLINK every pattern, UNLINK the keys (under the
        version just read), broadcasting each on the coherence channel. None when Redis failed: the
        journal keeps everything and the engine tries again."""
        channel, origin, own = replay.channel, replay.origin, replay.own_namespace
        scan_count = self.settings.scan_count

        async def publish(client: Any, message: CoherenceMessage) -> None:
            if channel is not None:
                await client.publish(channel, encode_message(message, origin))

        async def run(client: Any) -> ReplayOutcome:
            versions: dict[str, int] = {}
            # The version first: the keys to delete live under the version Redis has now.
            raw = await client.get(replay.version_key(own))
            versions[own] = int(raw) if raw is not None else 0
            for namespace in replay.bump:
                versions[namespace] = int(await client.execute_command("INCR", replay.version_key(namespace)))
                await publish(client, NamespaceBumped(namespace, versions[namespace]))
            for full, message in replay.patterns:
                pending: list[bytes] = []
                async for found in client.scan_iter(match=full, count=scan_count):
                    pending.append(found)
                    if len(pending) >= _REPLAY_BATCH:
                        await client.unlink(*pending)
                        pending = []
                if pending:
                    await client.unlink(*pending)
                await publish(client, message)
            prefix = replay.key_prefix(versions[own])
            keys = replay.keys
            for start in range(0, len(keys), _REPLAY_BATCH):
                chunk = keys[start : start + _REPLAY_BATCH]
                await client.unlink(*[prefix + key for key in chunk])
                await publish(client, KeysChanged(own, chunk))
            return ReplayOutcome(versions, len(keys))

        return await self.run_direct(run)

    # ------------------------------------------------------------------ reads

    async def get(self, key: str) -> bytes | None:
        """Value of ``key`` or None (missing, or Redis unavailable). Coalesced with concurrent gets."""
        self._ops["get"] += 1
        client = self._client
        if client is None:
            return None
        breaker = self._breaker
        if breaker._state is not _CLOSED and not self._admit():
            return None
        if self._batch is not None or self._in_flight:
            return await self._join_batch(key)
        self._in_flight += 1
        started = time.perf_counter()
        try:
            value = await (client.get(key) if self._direct_pool is None else self._lane_get(key))
        except Exception as exc:
            self._record_failure(exc, "get")
            return None
        except BaseException:
            breaker.abandon()
            raise
        finally:
            self._in_flight -= 1
        self._note_round_trip(started)
        breaker.record_success()
        return value  # type: ignore[no-any-return]

    async def _lane_get(self, key: str) -> bytes | None:
        """GET ``key`` on the lane: one pooled connection kept checked out for lone GETs (bench B2).

        Same bytes on the wire, same pool bound (the lane holds one of its slots, and gives it back
        after a GET that finds the pool exhausted; a pool of one connection has no lane), same socket
        timeouts (``tune`` retunes in-use connections too) as ``client.get``. What it skips is
        redis-py 8's per-command machinery (the no-retry retry wrapper, observability hooks, the
        pool's lock and its "has the socket data?" check on every checkout, and the Task that
        send_packed_command's asyncio.wait_for creates for every write): 40-55 us of CPU per GET on
        this machine, more than the whole facade. The socket timeout is one deadline over the send
        and the read instead of one each. After the send it polls the event loop for the reply for
        up to ``spin_wait_us`` (see :class:`RedisSettings`) before it sleeps on the socket: a lone GET
        that sleeps pays the wake-up, 40-60 us on this machine, more than the round trip itself, and
        the redis-py machinery it skips had been keeping it awake by accident (two loop passes for
        the write's Task). :meth:`get` only comes here with nothing else
        in flight, so the lane never carries two commands; ``_lane_busy`` makes that explicit (a busy
        lane sends the GET through the pool). Failure handling is ``execute_command``'s with retries
        off: a Redis error reply (``ResponseError``) leaves the connection usable; any other error,
        or a cancellation, closes it, hands it back to the pool and is raised: the next lone GET
        checks out a fresh connection through the pool's own checks. One exception: a connection
        error on a lane idle for ``_LANE_IDLE_RETRY_S`` or more (closed while idle, which the pool's
        checkout would have noticed) sends the GET once more through the pool; on a lane in use it
        is Redis going away, counted at once (a retry would only wait on whatever answers next).
        """
        pool = self._direct_pool
        if self._lane_busy or pool.max_connections < 2:
            return await self._client.get(key)  # type: ignore[no-any-return]
        self._lane_busy = True
        try:
            lane = self._lane
            if lane is None:
                lane = self._lane = await pool.get_connection()
            idle_since = self._lane_used_at
            try:
                # One deadline (the socket timeout) over the send and the read. redis-py's
                # send_packed_command would wrap the write in asyncio.wait_for: a Task and two more
                # event-loop passes per GET, about 25 us of CPU here. The write itself is the same
                # writelines + drain, and a timeout closes the lane just as redis-py closes the
                # connection on one (below).
                async with asyncio.timeout(lane.socket_timeout):
                    sent = time.perf_counter()
                    try:
                        await lane._send_packed_command(lane.pack_command("GET", key))
                    except OSError as exc:  # what send_packed_command reports as a ConnectionError
                        where = lane._host_error()  # redis-py's own name for the server in its messages
                        raise RedisConnectionError(f"Error while writing to {where}: {exc}") from exc
                    spin = self._settings.spin_wait_us / 1e6
                    if spin and self._lane_rtt <= 2 * spin:  # a far Redis answers later: sleep at once
                        await _poll_for_reply(lane, sent + spin)
                    value = await lane.read_response(timeout=math.inf)  # the deadline above bounds it
                    self._lane_rtt += (time.perf_counter() - sent - self._lane_rtt) / _LANE_RTT_WEIGHT
                self._lane_used_at = time.monotonic()
                if pool.exhausted:  # others need the slot more than the lane does: hand it back
                    self._lane = None
                    await pool.release(lane)
                return value  # type: ignore[no-any-return]
            except ResponseError:
                raise
            except TimeoutError:  # the deadline above (redis-py's own timeouts raise its TimeoutError)
                await self._retire_lane(pool, lane)
                raise RedisTimeoutError(f"Timeout reading from {lane._host_error()}") from None
            except RedisConnectionError:
                await self._retire_lane(pool, lane)
                if time.monotonic() - idle_since < _LANE_IDLE_RETRY_S:
                    raise  # failed while in use: Redis itself went away, the breaker must hear of it
                # Closed while the lane sat idle (server `timeout`, a proxy, CLIENT KILL): what the
                # pool's checkout check would have caught before sending. GET is idempotent: once more
                # on a pool connection. A timeout is never retried (never multiply a slow server's wait).
                return await self._client.get(key)  # type: ignore[no-any-return]
            except BaseException:
                await self._retire_lane(pool, lane)
                raise
        finally:
            self._lane_busy = False

    async def _retire_lane(self, pool: Any, lane: Any) -> None:
        """Close ``lane`` and give it back to ``pool`` (if it is still this engine's lane)."""
        if self._lane is not lane:
            return  # reconnect/close replaced the pool: that pool closes it
        self._lane = None
        with contextlib.suppress(Exception):  # closing a broken socket may fail: nothing to do about it
            await lane.disconnect()
        with contextlib.suppress(Exception):
            await pool.release(lane)

    def _join_batch(self, key: str) -> asyncio.Future[bytes | None]:
        loop = self._loop
        assert loop is not None
        batch = self._batch
        if batch is None:
            batch = self._batch = {}
            # Runs after every task already scheduled for this tick, so they all join this batch.
            loop.call_soon(self._flush_batch)
        future: asyncio.Future[bytes | None] = loop.create_future()
        waiters = batch.get(key)
        if waiters is None:
            batch[key] = [future]
        else:
            waiters.append(future)
        return future

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, None
        if not batch:
            return
        if self._client is None or self._closed:
            self._resolve(batch, None)
            return
        # The gate was passed when each get joined; a breaker that opened since then still wins.
        if self._breaker._state is not _CLOSED and not self._admit():
            self._resolve(batch, None)
            return
        self._spawn(self._fetch_batch(batch))

    @staticmethod
    def _resolve(batch: _Batch, values: Sequence[bytes | None] | None) -> None:
        for index, waiters in enumerate(batch.values()):
            value = values[index] if values is not None else None
            for future in waiters:
                if not future.done():  # a waiter cancelled by its caller
                    future.set_result(value)

    async def _fetch_batch(self, batch: _Batch) -> None:
        keys = list(batch)
        self._coalesced_batches += 1
        self._coalesced_keys += len(keys)
        self._in_flight += 1
        started = time.perf_counter()
        values: list[bytes | None] | None = None
        try:
            values = await self._read_many(self._client, keys)
        except Exception as exc:
            self._record_failure(exc, "get")
        except BaseException:
            self._breaker.abandon()
            self._resolve(batch, None)
            raise
        else:
            self._note_round_trip(started)
            self._breaker.record_success()
        finally:
            self._in_flight -= 1
        self._resolve(batch, values)

    async def _read_many(self, client: Any, keys: list[str]) -> list[bytes | None]:
        if len(keys) == 1:
            return [await client.get(keys[0])]
        if self._clients is not None and self._clients.kind == "cluster":
            return list(await client.mget_nonatomic(keys))
        step = self._settings.coalesce_max_keys
        if len(keys) <= step:
            return list(await client.mget(keys))
        pipe = client.pipeline(transaction=False)
        for start in range(0, len(keys), step):
            pipe.mget(keys[start : start + step])
        parts = await pipe.execute()
        return [value for part in parts for value in part]

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values of ``keys`` in order (None where missing); all None when Redis is unavailable."""
        keys = list(keys)
        if not keys:
            self._ops["mget"] += 1
            return []
        nothing: list[bytes | None] = [None] * len(keys)
        return await self._run("mget", lambda client: self._read_many(client, keys), nothing)

    # ------------------------------------------------------------------ writes

    @staticmethod
    def _check_ttl(ttl_ms: int, name: str = "ttl_ms") -> None:
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 1:
            raise ValueError(
                f"{name}: invalid value {ttl_ms!r}; accepted: an integer number of milliseconds >= 1"
            )

    async def set(self, key: str, value: bytes, ttl_ms: int) -> bool:
        """Store ``value`` under ``key`` for ``ttl_ms`` milliseconds; False if Redis did not take it."""
        self._check_ttl(ttl_ms)

        async def call(client: Any) -> bool:
            return bool(await client.set(key, value, px=ttl_ms))

        return await self._run("set", call, False)

    async def set_many(
        self, items: Sequence[tuple[str, bytes, int]], publish: tuple[str, bytes] | None = None
    ) -> bool:
        """Store (key, value, ttl_ms) items through pipelines; True only if every item was stored.

        ``publish=(channel, message)`` also PUBLISHes the message once the SETs are applied, so a
        subscriber that reacts to it by reading the keys sees the new values. Up to
        ``_SET_AND_PUBLISH_MAX_KEYS`` items go in one script call (one command, one round trip);
        more go through pipelines with the PUBLISH last in the last one (same connection, so Redis
        applies it after the SETs). With Redis Cluster (keys on several nodes) the PUBLISH follows
        the pipelines as its own command. A failed PUBLISH does not make the result False (the
        values are stored); it is counted as a ``publish`` error.
        """
        items = list(items)
        for _, _, ttl_ms in items:
            self._check_ttl(ttl_ms)
        if publish is not None:
            self._ops["publish"] += 1
        if not items and publish is None:
            self._ops["set_many"] += 1
            return True
        step = self._settings.pipeline_max_commands
        cluster = self._clients is not None and self._clients.kind == "cluster"
        in_pipeline = publish is not None and not cluster
        if in_pipeline and publish is not None and len(items) <= _SET_AND_PUBLISH_MAX_KEYS:
            script = self._set_publish_script
            keys = [key for key, _, _ in items]
            args: list[Any] = [part for _, value, ttl_ms in items for part in (value, ttl_ms)]
            args.extend(publish)

            async def scripted(client: Any) -> bool:
                stored, publish_error = await script(keys=keys, args=args)
                if publish_error:
                    text = (publish_error.decode(errors="replace") if isinstance(publish_error, bytes)
                            else str(publish_error))
                    # Inside a script Redis words an ACL refusal as "ERR The user executing the script
                    # can't publish to the channel ...", not NOPERM.
                    acl = text.startswith("NOPERM") or "user executing the script" in text
                    refused = NoPermissionError if acl else ResponseError
                    self._record_failure(refused(text), "publish")
                return int(stored) == len(keys)

            return await self._run("set_many", scripted, False)

        async def call(client: Any) -> bool:
            stored_all = True
            starts = list(range(0, len(items), step)) or [0]
            for start in starts:
                pipe = client.pipeline(transaction=False)
                chunk = items[start : start + step]
                for key, value, ttl_ms in chunk:
                    pipe.set(key, value, px=ttl_ms)
                published = in_pipeline and start == starts[-1]
                if published:
                    assert publish is not None
                    pipe.publish(*publish)
                results = await pipe.execute(raise_on_error=False)
                if published:
                    if isinstance(results[-1], BaseException):
                        self._record_failure(results[-1], "publish")
                    results = results[:-1]
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures:
                    # One error per call, not per item: a full Redis would otherwise count thousands.
                    self._record_failure(failures[0], "set_many")
                    stored_all = False
                elif not all(results):
                    stored_all = False
            if publish is not None and not in_pipeline:
                try:
                    await client.publish(*publish)
                except Exception as exc:
                    self._record_failure(exc, "publish")
            return stored_all

        return await self._run("set_many", call, False)

    async def delete(self, keys: Sequence[str]) -> int:
        """UNLINK ``keys`` (in batches); returns how many existed. 0 when Redis is unavailable."""
        keys = list(keys)
        if not keys:
            self._ops["delete"] += 1
            return 0
        step = self._settings.unlink_batch

        async def call(client: Any) -> int:
            removed = 0
            for start in range(0, len(keys), step):
                removed += int(await client.unlink(*keys[start : start + step]))
            return removed

        return await self._run("delete", call, 0)

    async def delete_checked(self, keys: Sequence[str]) -> int | None:
        """Like :meth:`delete`, but None when Redis did not take the UNLINK (unavailable, failed)."""
        keys = list(keys)
        if not keys:
            self._ops["delete"] += 1
            return 0
        step = self._settings.unlink_batch

        async def call(client: Any) -> int | None:
            removed = 0
            for start in range(0, len(keys), step):
                removed += int(await client.unlink(*keys[start : start + step]))
            return removed

        return await self._run("delete", call, None)

    async def scan_unlink(self, match: str) -> int:
        """Delete every key matching the glob ``match`` with SCAN (COUNT scan_count) + UNLINK batches.

        Never KEYS. Returns how many keys were removed (a partial count if Redis failed midway).
        With ``key_prefix`` set, ``match`` must start with "<key_prefix>:" (ValueError otherwise).
        """
        removed, _ = await self.scan_unlink_checked(match)
        return removed

    async def scan_unlink_checked(self, match: str) -> tuple[int, bool]:
        """:meth:`scan_unlink` that also tells whether the whole scan ran (False: Redis unavailable
        or failed midway, so matching keys may remain)."""
        if not isinstance(match, str) or not match:
            raise ValueError(f"match: invalid value {match!r}; accepted: a non-empty glob pattern")
        prefix = self._settings.key_prefix
        if prefix is not None and not match.startswith(prefix + ":"):
            raise ValueError(
                f"match: invalid value {match!r}; accepted: a pattern starting with {prefix + ':'!r} "
                "(redis.key_prefix keeps pattern invalidation inside this cache's keys)"
            )
        self._ops["scan_unlink"] += 1
        client = self._client
        if client is None or not self._admit():
            return 0, False
        settings = self._settings
        removed = 0
        pending: list[bytes] = []
        self._in_flight += 1
        try:
            async for key in client.scan_iter(match=match, count=settings.scan_count):
                pending.append(key)
                if len(pending) >= settings.unlink_batch:
                    removed += int(await client.unlink(*pending))
                    pending = []
            if pending:
                removed += int(await client.unlink(*pending))
        except Exception as exc:
            self._record_failure(exc, "scan_unlink")
            return removed, False
        except BaseException:
            self._breaker.abandon()
            raise
        finally:
            self._in_flight -= 1
        self._breaker.record_success()
        return removed, True

    # ------------------------------------------------------------------ namespace versions

    async def get_version(self, name: str) -> int | None:
        """Current version of namespace key ``name`` (0 if never bumped); None if Redis is unavailable."""

        async def call(client: Any) -> int | None:
            raw = await client.get(name)
            if raw is None:
                return 0
            try:
                return int(raw)
            except (TypeError, ValueError):
                # Bytes from outside: reject them with the key named rather than guess a version.
                shown = bytes(raw)[:40]
                self._record_data_error("get_version", f"key {name!r} holds {shown!r}, not an integer")
                return None

        return await self._run("get_version", call, None)

    async def bump_version(self, name: str) -> int | None:
        """INCR the namespace version ``name`` (O(1) invalidation of the namespace); None on failure."""

        async def call(client: Any) -> int:
            # INCR itself (redis-py's incr() sends INCRBY): the ACL rules documented for the engine
            # grant exactly the commands it sends.
            return int(await client.execute_command("INCR", name))

        return await self._run("bump_version", call, None)

    # ------------------------------------------------------------------ leases

    async def acquire_lease(self, key: str, ttl_ms: int) -> str | None:
        """Take the lease ``key`` for ``ttl_ms`` (SET NX PX); returns its token, or None.

        None means "not acquired": held by someone else, or Redis unavailable (``available`` tells
        which; a caller should not wait for another holder while Redis is down).
        """
        self._check_ttl(ttl_ms)
        token = secrets.token_hex(16)

        async def call(client: Any) -> str | None:
            taken = await client.set(key, token, nx=True, px=ttl_ms)
            return token if taken else None

        return await self._run("acquire_lease", call, None)

    async def release_lease(self, key: str, token: str) -> bool:
        """Release the lease if it still holds ``token`` (compare-and-delete script); True if released."""
        script = self._release_script

        async def call(client: Any) -> bool:
            return bool(await script(keys=[key], args=[token]))

        return await self._run("release_lease", call, False)

    # ------------------------------------------------------------------ pub/sub

    async def publish(self, channel: str, message: bytes) -> bool:
        """PUBLISH ``message`` on ``channel``; True when Redis accepted it (whoever listens)."""

        async def call(client: Any) -> bool:
            await client.publish(channel, message)
            return True

        return await self._run("publish", call, False)

    def subscribe(
        self,
        channel: str,
        on_message: Callable[[bytes], None],
        on_reset: Callable[[], None],
    ) -> CoherenceListener:
        """Start a background listener on ``channel`` over its own connection (not the pool).

        ``on_message(payload)`` is called for every message; ``on_reset()`` each time the listener
        has resubscribed after its subscription dropped (messages may have been missed meanwhile).
        The listener reconnects by itself with bounded backoff; close() stops it.
        """
        if self._loop is None:
            raise RuntimeError("RedisL2.subscribe() needs start() first")
        listener = CoherenceListener(self._settings, channel, on_message, on_reset)
        listener.start()
        self._listeners.append(listener)
        return listener

    async def unsubscribe(self, listener: CoherenceListener) -> None:
        """Stop a listener returned by subscribe() and forget it (stats no longer count it)."""
        await listener.stop()
        if listener in self._listeners:
            self._listeners.remove(listener)

    # ------------------------------------------------------------------ diagnostics

    async def ping(self) -> float | None:
        """Round-trip time of one PING in seconds; None if Redis is unavailable."""

        async def call(client: Any) -> float:
            started = time.perf_counter()
            await client.ping()
            return time.perf_counter() - started

        rtt = await self._run("ping", call, None)
        if rtt is not None:
            self._rtt_samples.append(rtt)
        return rtt

    async def memory_info(self) -> dict[str, Any] | None:
        """Memory facts for diagnosis: used_memory, maxmemory, maxmemory_policy, evicted_keys, ...

        Read from INFO memory and INFO stats (of every primary in a cluster). CONFIG GET is only a
        fallback for the policy and may be forbidden by an ACL without failing the call.
        """

        async def call(client: Any) -> dict[str, Any]:
            if self._clients is not None and self._clients.kind == "cluster":
                from redis.asyncio.cluster import RedisCluster

                memory = await client.info("memory", target_nodes=RedisCluster.PRIMARIES)
                stats = await client.info("stats", target_nodes=RedisCluster.PRIMARIES)
                nodes = self._per_node(memory, stats)
            else:
                memory = await client.info("memory")
                stats = await client.info("stats")
                nodes = [{**stats, **memory}]
            if any(node.get("maxmemory_policy") is None for node in nodes):
                # CONFIG is often forbidden to application ACL users: then the policy stays unknown.
                with contextlib.suppress(Exception):
                    policy = await client.config_get("maxmemory-policy")
                    value = policy.get(b"maxmemory-policy", policy.get("maxmemory-policy"))
                    text = value.decode() if isinstance(value, bytes) else value
                    for node in nodes:
                        node.setdefault("maxmemory_policy", text)
            return summarize_memory_info(nodes)

        return await self._run("memory_info", call, None)

    @staticmethod
    def _per_node(memory: Any, stats: Any) -> list[dict[str, Any]]:
        # redis-py answers a multi-node INFO with {node_name: info} (or one dict for one node).
        if isinstance(memory, dict) and memory and all(isinstance(v, dict) for v in memory.values()):
            stats_by_node = stats if isinstance(stats, dict) else {}
            return [{**stats_by_node.get(name, {}), **info} for name, info in memory.items()]
        return [{**(stats or {}), **(memory or {})}]

    def stats(self) -> dict[str, Any]:
        """A plain snapshot of counters (cheap; read at scrape/diagnosis time, not on the hot path).

        Keys: available, deployment, url (password masked), sentinel_failovers_seen,
        breaker{state, opened_total, consecutive_failures, seconds_until_half_open, probes_started},
        ops{op: calls}, short_circuited, errors{kind: count}, errors_total, errors_by_op{op: count},
        last_errors{kind: {kind, op, at, message}}, last_error, coalesced_batches, coalesced_keys,
        round_trips, round_trip_seconds_total, round_trip_seconds_max, rtt_seconds{last, samples},
        pool{max_connections, in_use, idle, waits, timeouts},
        coherence{listeners, connected, messages, resets, reconnects, channels}.
        """
        breaker = self._breaker
        pool_stats: dict[str, Any] = {
            "max_connections": self._settings.max_connections,
            "in_use": None,
            "idle": None,
            "waits": 0,
            "timeouts": self._errors["pool"],
        }
        clients = self._clients
        if clients is not None and clients.pool is not None:
            pool = clients.pool
            pool_stats["in_use"] = len(getattr(pool, "_in_use_connections", ()))
            pool_stats["idle"] = len(getattr(pool, "_available_connections", ()))
            pool_stats["waits"] = getattr(pool, "waits", 0)
        listeners = [listener.stats() for listener in self._listeners]
        coherence: dict[str, Any] = {
            "listeners": len(listeners),
            "connected": all(item["connected"] for item in listeners) if listeners else None,
            "messages": sum(item["messages"] for item in listeners),
            "resets": sum(item["resets"] for item in listeners),
            "reconnects": sum(item["reconnects"] for item in listeners),
            "channels": listeners,
        }
        return {
            "available": self.available,
            "deployment": clients.kind if clients is not None else None,
            "url": self._url_masked,
            "breaker": {
                "state": breaker.state.value,
                "opened_total": breaker.opened_total,
                "consecutive_failures": breaker.consecutive_failures,
                "seconds_until_half_open": breaker.seconds_until_half_open(),
                "probes_started": self._probes_started,
            },
            "sentinel_failovers_seen": self._sentinel_failovers,
            "ops": dict(self._ops),
            "short_circuited": self._short_circuited,
            "errors": dict(self._errors),
            "errors_total": sum(self._errors.values()),
            "errors_by_op": dict(self._errors_by_op),
            "last_errors": {kind: dict(entry) for kind, entry in self._last_errors.items()},
            "last_error": dict(self._last_error) if self._last_error else None,
            "coalesced_batches": self._coalesced_batches,
            "coalesced_keys": self._coalesced_keys,
            "round_trips": self._round_trips,
            "round_trip_seconds_total": self._round_trip_seconds,
            "round_trip_seconds_max": self._round_trip_max,
            "rtt_seconds": {
                "last": self._rtt_samples[-1] if self._rtt_samples else None,
                "samples": list(self._rtt_samples),
            },
            "pool": pool_stats,
            "coherence": coherence,
        }
