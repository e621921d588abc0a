"""TieredCache: the public facade of the engine (L1 memory in front of L2 Redis).

::

    async with TieredCache(resolve_config("ai-production", redis_url=url)) as cache:
        key = cache.key_for("summarize", text, {"max_length": 100})
        summary = await cache.get_or_compute(key, lambda: llm.summarize(text))

Keys are *logical* (``key_for`` output, ``data_key`` output, or any string); the engine files them
under ``{prefix}:{namespace}:v{namespace_version}:`` in Redis, so invalidating the namespace is one
INCR. Reads go L1, then L2; an L2 hit fills L1 for no longer than the L2 entry has left. Writes go
to both. Callers never see an exception caused by Redis: RedisL2 turns every failure into its
"nothing" value and a circuit breaker, and bytes that do not decode are a counted miss.

Only programming errors raise: an unserializable value (:class:`~cache_runtime.codec.EncodeError`),
a bad TTL, an invalidation without pattern or namespace, a text above ``keys.max_text_length``.

Everything parameter of :class:`~cache_runtime.config.CacheConfig` takes effect here or in the
pieces built from it (see ``docs/configuration.md``). ``apply_config`` applies a new config live.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import xxhash

from cache_runtime import health as health_module
from cache_runtime.codec import HEADER, Codec, DecodeError, EncodeError, Envelope, decode, packed_value
from cache_runtime.config import OPERATIONS, CacheConfig, resolve_config
from cache_runtime.keys import AI_KEY_HEAD, KeyBuilder, redis_glob_to_regex, rules_that_change
from cache_runtime.l1 import MISSING, DeferredValue, L1Cache, L1Entry, PackedValue
from cache_runtime.l2 import RedisL2, RedisSettings, lag_seconds
from cache_runtime.l2.coherence import (
    CoherenceListener,
    CoherenceMessage,
    KeysChanged,
    NamespaceBumped,
    NamespaceCleared,
    PatternInvalidated,
    decode_message,
    encode_message,
)
from cache_runtime.outage_journal import OutageJournal
from cache_runtime.singleflight import SingleFlight
from cache_runtime.sizing import ENTRY_OVERHEAD, entry_size
from cache_runtime.stats import EngineStats, SnapshotWindow, build_snapshot

__all__ = ["TieredCache", "redis_settings_for"]

logger = logging.getLogger("cache_runtime")

T = TypeVar("T")
Loader = Callable[[], "Awaitable[T] | T"]

_MAX_TTL_S = 7 * 86_400
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Health judges windows: the newest kept snapshot at least that old is a window's start. This is the
# longest one (the Redis figures' window); workload symptoms are judged on the shortest of
# cache_runtime.health.DETECTION_WINDOWS_S holding enough lookups (10 s on a busy pod), so a workload
# fault shows within seconds; the operator's hysteresis over consecutive probes keeps it from
# flapping. Snapshots are kept every 5 s (64: 5 minutes).
_HEALTH_WINDOW_S = health_module.DETECTION_WINDOWS_S[-1]
# A PackedValue (3 slots: 56 B) and its raw_size int (28 B): what L1 holds besides the lz4 block.
_PACKED_HOLDER = 84
_SNAPSHOT_SPACING_S = 5.0
_SNAPSHOT_HISTORY = 64
# Background upkeep: re-read an unknown namespace version, refresh Redis memory facts and RTT.
_MAINTENANCE_INTERVAL_S = 10.0
# Tick of the coarse clock behind get_local (an entry may be served this much past its deadline).
_COARSE_TICK_S = 0.005
# While the namespace version is unknown, reads and writes retry reading it at most this often.
_VERSION_RETRY_S = 0.1
# Keys dropped from L1 (written here, or by another pod) are remembered with a sequence number so a
# read already in flight does not put the value it got from before the write into L1. Beyond this
# many remembered keys the memory is reset, and reads in flight at that moment skip their L1 fill.
_DROP_MEMORY_MAX = 4096
# Outage journal: keys whose write or delete did not reach Redis, remembered (at most this many;
# beyond, the namespace is invalidated as a whole) until they are replayed to Redis as deletions.
_JOURNAL_MAX_KEYS = 10_000
# Replay attempts back off from the first to the last delay while Redis keeps failing.
_JOURNAL_RETRY_FIRST_S = 0.05
_JOURNAL_RETRY_MAX_S = 1.0
# A client swap (apply_config with new connection settings) waits at most this long for the new
# subscription, and for the calls in flight on the old clients, before going on.
_SWAP_WAIT_MAX_S = 10.0
# Lease waiters poll L2 with this backoff (bounded by stampede.lease_wait_s).
_LEASE_POLL_FIRST_S = 0.01
_LEASE_POLL_MAX_S = 0.2


def redis_settings_for(config: CacheConfig) -> RedisSettings | None:
    """The L2 settings a config asks for; None when it has no Redis (memory only) or is disabled."""
    redis = config.redis
    if redis.url is None or not config.enabled:
        return None
    return RedisSettings(
        url=redis.url,
        username=redis.username,
        password=redis.password.get_secret_value() if redis.password is not None else None,
        max_connections=redis.max_connections,
        connect_timeout_s=redis.connect_timeout_s,
        socket_timeout_s=redis.socket_timeout_s,
        pool_timeout_s=redis.pool_timeout_s,
        tls_ca_file=redis.tls_ca_file,
        tls_cert_file=redis.tls_cert_file,
        tls_key_file=redis.tls_key_file,
        tls_verify=redis.tls_verify,
        tls_check_hostname=redis.tls_verify,
        sentinel_master=redis.sentinel_master,
        cluster=redis.cluster,
        breaker_failure_threshold=redis.breaker_failure_threshold,
        breaker_open_seconds=redis.breaker_open_s,
        breaker_half_open_probes=redis.breaker_half_open_probes,
        scan_count=redis.scan_count,
        spin_wait_us=redis.spin_wait_us,
        # scan_unlink then refuses any pattern outside this cache's keys.
        key_prefix=config.keys.prefix,
    )


class TieredCache:
    """Two-tier cache: L1 in-process memory, L2 Redis. Use as ``async with TieredCache(config)``.

    ``clock`` (monotonic seconds) is injectable so tests can move L1 time without sleeping.
    """

    def __init__(self, config: CacheConfig | None = None, *, clock: Callable[[], float] = time.monotonic,
                 maintenance_interval_s: float = _MAINTENANCE_INTERVAL_S,
                 outage_journal_max_keys: int = _JOURNAL_MAX_KEYS) -> None:
        config = config if config is not None else resolve_config("production")
        if not isinstance(config, CacheConfig):
            raise TypeError(f"config: {type(config).__name__} is not accepted; accepted: CacheConfig "
                            f"(build one with resolve_config)")
        if (isinstance(outage_journal_max_keys, bool) or not isinstance(outage_journal_max_keys, int)
                or not 0 <= outage_journal_max_keys <= 10_000_000):
            raise ValueError(f"outage_journal_max_keys: {outage_journal_max_keys!r} is not accepted; "
                             f"accepted: an integer from 0 to 10000000 (0: every write Redis did not take "
                             f"invalidates the namespace)")
        self._config = config
        self._clock = clock
        self._maintenance_interval_s = maintenance_interval_s
        self._origin = os.urandom(8).hex()
        self._stats = EngineStats(clock=clock)
        self._l1 = L1Cache(config.l1.max_entries, config.l1.max_bytes, config.l1.sweep_batch, clock=clock,
                           measure=entry_size)
        # The hit path reads the L1 dict directly: one dict lookup, no method call.
        self._l1_data = self._l1.entries
        self._codec = Codec.from_config(config)
        self._keys = KeyBuilder(config)
        self._variant_keys = _variant_builder(config)
        self._flight = SingleFlight()
        self._l2: RedisL2 | None = None
        self._listener: CoherenceListener | None = None
        self._listener_channel: str | None = None
        self._version_known = True
        self._started = False
        self._isolated = False
        self._background: set[asyncio.Task[Any]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        self._snapshot_keeper: asyncio.Task[None] | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._version_task: asyncio.Future[None] | None = None
        self._version_attempt_at = 0.0
        self._redis_memory: dict[str, Any] | None = None
        # The engine's own Redis checks (the maintenance PING): failures in a row, last success.
        self._redis_failed_checks = 0
        self._redis_ok_at: float | None = None
        # Writes broadcast on the coherence channel: those of one event-loop tick share one pipeline.
        self._write_batch: _WriteBatch | None = None
        self._write_tasks: set[asyncio.Task[None]] = set()
        self._drop_seq = 0
        self._drop_floor = 0
        # key -> (drop sequence, fingerprint of the bytes written, None for a delete/unknown)
        self._dropped: dict[str, tuple[int, int | None]] = {}
        # Fingerprint of the bytes behind each L1 entry: a broadcast write of exactly those bytes
        # (this pod already read the new value) does not need to drop it.
        self._l1_prints: dict[str, int] = {}
        # Operation (stats bucket) of each AI key that entered L1, so an L1 hit counts it per
        # operation with one dict lookup instead of parsing the key (see _remember_ai_key).
        self._ai_operations: dict[str, str] = {}
        # What this engine changed while Redis did not take it (cache_runtime.outage_journal).
        self._journal = OutageJournal(outage_journal_max_keys, self._start_replay)
        self._journal_task: asyncio.Task[None] | None = None
        # The coarse clock's cell while it runs (see _start_coarse_clock); get() reads it.
        self._coarse_now: list[float] | None = None
        # L1 hits the coarse get() counted and not yet moved into the stats (_flush_hot_hits).
        self._hot_hits = [0]
        self._hot_monitored = False
        self._window = SnapshotWindow(
            _HEALTH_WINDOW_S, max_snapshots=_SNAPSHOT_HISTORY, spacing_seconds=_SNAPSHOT_SPACING_S
        )
        self._apply_runtime_settings(config)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> TieredCache:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect L2 (no blocking I/O), read the namespace version, subscribe to coherence."""
        if self._started:
            return
        self._started = True
        self._start_coarse_clock()
        await self._build_l2(self._config)
        self._maintenance = asyncio.create_task(self._maintain(), name="cachewarden-maintenance")
        self._snapshot_keeper = asyncio.create_task(self._keep_snapshots(), name="cachewarden-snapshots")
        if self._journal.active:  # journaled before a close(): replay now
            self._journal_task = asyncio.ensure_future(self._replay_outage_loop())

    async def close(self) -> None:
        """Stop background work and close L2. L1 keeps its entries (the object may be started again)."""
        self._started = False
        self._stop_coarse_clock()
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        if self._snapshot_keeper is not None:
            self._snapshot_keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshot_keeper
            self._snapshot_keeper = None
        if self._version_task is not None and not self._version_task.done():
            self._version_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._version_task
        journal_task, self._journal_task = self._journal_task, None
        if journal_task is not None and not journal_task.done():
            journal_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await journal_task
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._flight.cancel_all()
        # Writes already accepted still reach Redis (bounded by the socket timeouts).
        self._flush_writes()
        if self._write_tasks:
            await asyncio.gather(*self._write_tasks, return_exceptions=True)
        await self._close_l2()

    async def _build_l2(self, config: CacheConfig) -> None:
        settings = redis_settings_for(config)
        if settings is None:
            self._version_known = True
            return
        l2 = RedisL2(settings)
        await l2.start()
        self._l2 = l2
        await self._refresh_namespace_version()
        self._subscribe(config)

    async def _close_l2(self) -> None:
        await self._unsubscribe()
        l2, self._l2 = self._l2, None
        if l2 is not None:
            await l2.close()

    def _subscribe(self, config: CacheConfig) -> None:
        l2 = self._l2
        if l2 is None or not config.coherence.enabled:
            return
        channel = config.coherence_channel
        self._listener = l2.subscribe(channel, self._on_coherence_message, self._on_coherence_reset)
        self._listener_channel = channel

    async def _unsubscribe(self) -> None:
        listener, self._listener = self._listener, None
        self._listener_channel = None
        if listener is None:
            return
        if self._l2 is not None:
            await self._l2.unsubscribe(listener)  # stops it (bounded) and forgets it
        else:
            await listener.stop()

    async def _refresh_namespace_version(self) -> None:
        """Read the namespace version from Redis; until it is known, L2 is not used (see below)."""
        l2 = self._l2
        if l2 is None:
            self._version_known = True
            return
        version = await l2.get_version(self._keys.version_key())
        if version is None:
            # Without the version we could read entries another pod invalidated (an old version
            # that is still within its TTL): stay on L1 until maintenance reads it.
            self._version_known = False
            return
        if version != self._keys.namespace_version:
            self._keys.namespace_version = version
            self._l1.bump_epoch()
        self._version_known = True

    def _l2_usable(self) -> bool:
        """Whether L2 may be used now: only once the namespace version is known.

        While it is unknown, each call (at most every ``_VERSION_RETRY_S``) starts a background read
        of it, so the engine returns to L2 as soon as Redis answers; those reads are also what lets
        the breaker's half-open probe run when nothing else calls Redis.
        """
        if self._version_known:
            return True
        task = self._version_task
        now = time.monotonic()
        if (task is None or task.done()) and now - self._version_attempt_at >= _VERSION_RETRY_S:
            self._version_attempt_at = now
            self._version_task = asyncio.ensure_future(self._refresh_namespace_version())
        return False

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self._maintenance_interval_s)
            try:
                l2 = self._l2
                if l2 is None:
                    continue
                if not self._version_known:
                    await self._refresh_namespace_version()
                memory = await l2.memory_info()
                if memory is not None:
                    self._redis_memory = memory
                self._note_redis_check(await l2.ping() is not None)
            except asyncio.CancelledError:
                raise
            except Exception:  # upkeep must never die; RedisL2 does not raise for Redis trouble anyway
                logger.exception("cache maintenance step failed")

    async def _keep_snapshots(self) -> None:
        """Keep a snapshot every _SNAPSHOT_SPACING_S whoever asks for stats: the health windows start
        at kept snapshots, so the shortest detection window is 10-15 s even if the operator probes
        only every 15 s (with snapshots only at probes it would be 15-30 s)."""
        while True:
            await asyncio.sleep(_SNAPSHOT_SPACING_S)
            try:
                self.stats()
            except asyncio.CancelledError:
                raise
            except Exception:  # upkeep must never die
                logger.exception("cache snapshot failed")

    def _note_redis_check(self, ok: bool) -> None:
        """Count one of the engine's own Redis checks (health judges Redis on them, not on errors)."""
        if ok:
            self._redis_failed_checks = 0
            self._redis_ok_at = self._clock()
        else:
            self._redis_failed_checks += 1

    def _redis_checks(self) -> dict[str, Any]:
        """``{failed, seconds_since_ok}`` of the engine's own Redis checks, for the snapshot."""
        since = None if self._redis_ok_at is None else max(0.0, self._clock() - self._redis_ok_at)
        return {"failed": self._redis_failed_checks, "seconds_since_ok": since}

    # ------------------------------------------------------------------ properties

    @property
    def config(self) -> CacheConfig:
        """The config in force."""
        return self._config

    @property
    def l1(self) -> L1Cache:
        """The L1 store (read-only use: sizes and counters)."""
        return self._l1

    @property
    def l2(self) -> RedisL2 | None:
        """The Redis tier, or None when the engine runs memory-only or disabled."""
        return self._l2

    @property
    def keys(self) -> KeyBuilder:
        """The key builder (namespace version in force, patterns, describe)."""
        return self._keys

    @property
    def isolated(self) -> bool:
        """True while isolated: no writes, reads served from what is cached."""
        return self._isolated

    @property
    def engine_stats(self) -> EngineStats:
        """The raw counters (the Prometheus collector reads snapshots from :meth:`stats`)."""
        self._flush_hot_hits()
        return self._stats

    # ------------------------------------------------------------------ keys

    def key_for(self, operation: str, text: str, options: Mapping[str, Any] | None = None,
                question: str | None = None) -> str:
        """The logical key of an AI response (see :mod:`cache_runtime.keys`).

        Also feeds the key-variant sampler: for 1 in 16 texts the key is built a second time with
        every normalization on, so the diagnosis can tell when normalization would raise hit rates.
        """
        key = self._keys.key_for(operation, text, options, question)
        variants = self._variant_keys
        if variants is not None:
            sampler = self._stats.key_variants
            if sampler.should_sample(text):
                changing = rules_that_change(text, self._config.keys.normalize, question)
                sampler.record(key, variants.key_for(operation, text, options, question), changing)
        return key

    def data_key(self, user_key: str) -> str:
        """The logical key for a data API key (kept apart from AI response keys)."""
        return self._keys.data_key(user_key)

    def describe_key(self, operation: str, text: str, options: Mapping[str, Any] | None = None,
                     question: str | None = None) -> dict[str, Any]:
        """How a key is built (debug/key-generation endpoint); raw text only where the config allows."""
        return self._keys.describe(operation, text, options, question)

    # ------------------------------------------------------------------ reads

    def get_local(self, key: str, default: Any = None) -> Any:
        """L1 only, synchronously: the value if L1 holds it, else ``default`` (Redis is not asked).

        A hit counts as a lookup hit, but not per operation (that would cost this path a third of its
        time; :meth:`get` counts AI keys per operation); a miss is not counted (call :meth:`get`
        next, which counts it).
        While the engine runs with the default clock this method is replaced per instance by an
        equivalent closure that reads a coarse clock (see :meth:`_start_coarse_clock`).
        """
        entry = self._l1_data.get(key)
        if entry is not None and entry.deadline > self._clock():
            self._l1_data.move_to_end(key)
            self._stats.hits_l1 += 1
            return entry.value
        return default

    def local_entry(self, key: str) -> L1Entry | None:
        """Like :meth:`get_local`, but the L1 entry itself (None on a miss), counted the same way.

        An entry is never changed once stored (a write stores a new one), so a front end may keep
        what it derived from an entry's value (the Redis protocol keeps the encoded reply) and reuse
        it while this returns the same object. Replaced per instance like :meth:`get_local`.
        """
        entry = self._l1_data.get(key)
        if entry is not None and entry.deadline > self._clock():
            self._l1_data.move_to_end(key)
            self._stats.hits_l1 += 1
            return entry
        return None

    def _start_coarse_clock(self) -> None:
        """Serve get_local from a clock the event loop refreshes every few milliseconds.

        Reading time.monotonic() is half the cost of an L1 hit (~50 of ~140 ns), the difference
        between matching a bare cachetools.LRUCache lookup or not. With the coarse clock an entry
        may be served up to one tick (plus any event-loop stall) past its deadline; TTLs are at
        least a second, and L1 entries never outlive their Redis entry by more than that.
        Only used with the real monotonic clock: an injected clock (tests) stays exact.
        """
        if self._clock is not time.monotonic:
            return
        loop = asyncio.get_running_loop()
        now = [time.monotonic()]
        data = self._l1_data
        lookup = data.get
        move_to_end = data.move_to_end
        stats = self._stats

        def tick() -> None:
            now[0] = time.monotonic()
            if self._started:
                self._ticker = loop.call_later(_COARSE_TICK_S, tick)

        def get_local(key: str, default: Any = None) -> Any:
            entry = lookup(key)
            if entry is not None and entry.deadline > now[0]:
                move_to_end(key)
                stats.hits_l1 += 1
                return entry.value
            return default

        def local_entry(key: str) -> L1Entry | None:
            entry = lookup(key)
            if entry is not None and entry.deadline > now[0]:
                move_to_end(key)
                stats.hits_l1 += 1
                return entry  # type: ignore[no-any-return]
            return None

        get_local.__doc__ = TieredCache.get_local.__doc__
        local_entry.__doc__ = TieredCache.local_entry.__doc__
        self._ticker = loop.call_later(_COARSE_TICK_S, tick)
        self.get_local = get_local  # type: ignore[method-assign]
        self.local_entry = local_entry  # type: ignore[method-assign]
        self._coarse_now = now
        self._install_fast_get()

    def _stop_coarse_clock(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
        self.__dict__.pop("get_local", None)  # back to the exact methods
        self.__dict__.pop("local_entry", None)
        self._coarse_now = None
        self._install_fast_get()  # and get() back to the exact clock

    async def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key`` (L1, then Redis), or ``default``. Never raises for Redis trouble.

        Hits and misses of AI keys (from :meth:`key_for`) are also counted per operation.
        Each instance replaces this method by an equivalent closure (see :meth:`_install_fast_get`).
        """
        entry = self._l1_data.get(key)
        if entry is not None and entry.deadline > self._clock():
            self._l1_data.move_to_end(key)
            stats = self._stats
            stats.hits_l1 += 1
            if self._monitoring:
                stats.latency_get.counts[0] += 1
            ai_operations = self._ai_operations
            if key in ai_operations:  # an AI response (key_for): counted per operation too
                stats.op_hits[ai_operations[key]] += 1
            return entry.value
        return await self._get_slow(key, default)

    def _install_fast_get(self) -> None:
        """Serve :meth:`get` from a closure over the objects its L1-hit path touches.

        Same logic as the method; locals instead of attribute loads keep an L1 hit near the cost
        of the await itself (bench B1), with the per-operation count included. While the engine
        runs on the real monotonic clock, the expiry check reads the coarse clock cell
        :meth:`_start_coarse_clock` keeps instead of calling the clock, as :meth:`get_local` does:
        an entry may then be served up to one tick (5 ms, plus any loop stall) past its deadline.
        ``config.monitoring`` is read here, not per hit: reinstalled when it changes
        (:meth:`_apply_runtime_settings`).
        """
        self._flush_hot_hits()  # what the closure being replaced counted, under its own switch
        now = self._coarse_now
        monitoring = self._hot_monitored = self._monitoring
        pending = self._hot_hits = [0]
        lookup = self._l1_data.get
        move_to_end = self._l1_data.move_to_end
        clock = self._clock
        stats = self._stats
        latency_counts = stats.latency_get.counts
        op_hits = stats.op_hits
        ai_operations = self._ai_operations
        get_slow = self._get_slow

        async def get(key: str, default: Any = None) -> Any:
            entry = lookup(key)
            if entry is not None and entry.deadline > clock():
                move_to_end(key)
                stats.hits_l1 += 1
                if monitoring:
                    latency_counts[0] += 1
                if key in ai_operations:
                    op_hits[ai_operations[key]] += 1
                return entry.value
            return await get_slow(key, default)

        async def get_coarse(key: str, default: Any = None) -> Any:
            entry = lookup(key)
            if entry is not None and entry.deadline > now[0]:  # type: ignore[index]
                move_to_end(key)
                pending[0] += 1  # hits_l1 and, when monitoring, the latency histogram's first bucket
                op = entry.op  # an AI key's operation, kept in its entry: no second lookup
                if op is not None:
                    op_hits[op] += 1
                return entry.value
            return await get_slow(key, default)

        chosen = get if now is None else get_coarse
        chosen.__doc__ = TieredCache.get.__doc__
        self.get = chosen  # type: ignore[method-assign]

    def _flush_hot_hits(self) -> None:
        """Move the L1 hits the coarse get() counted in its one cell into ``hits_l1`` (and, if it was
        built with monitoring on, into the get latency histogram's first bucket, where an L1 hit
        always lands). One increment per hit instead of two; every reader of the counters
        (:meth:`stats`, :attr:`engine_stats`) flushes first."""
        pending = self._hot_hits
        count = pending[0]
        if count:
            pending[0] = 0
            self._stats.hits_l1 += count
            if self._hot_monitored:
                self._stats.latency_get.counts[0] += count

    async def _get_slow(self, key: str, default: Any) -> Any:
        if type(key) is not str and not isinstance(key, str):
            raise TypeError(f"key: {type(key).__name__} is not accepted; accepted: str")
        started = time.perf_counter()
        stats = self._stats
        if key in self._l1_data:
            self._l1.get(key)  # drops (and counts) the expired entry the fast path stepped over
        value = MISSING
        if self._enabled:
            found = await self._read_l2(key)
            if found is not None:
                value = found.value
        if value is MISSING:
            stats.misses += 1
            stats.reuse.on_miss(key)
            if key.startswith(AI_KEY_HEAD):
                _count_operation(stats, key, False)
            value = default
        else:
            stats.hits_l2 += 1
            if key.startswith(AI_KEY_HEAD):
                _count_operation(stats, key, True)
        if self._monitoring:
            stats.latency_get.observe(time.perf_counter() - started)
        return value

    async def _read_l2(self, key: str, fill_l1: bool = True) -> Envelope | None:
        """One L2 read with decoding; fills L1 capped by the entry's remaining TTL. None = miss."""
        l2 = self._l2
        if l2 is None or not self._l2_usable():
            return None
        if self._journal.active and self._journal.covers(key, self._keys):
            return None  # Redis may still hold what this pod changed during an outage
        epoch = self._l1.epoch
        drop_seq = self._drop_seq
        redis_key = self._keys.redis_key(key)
        started = time.perf_counter()
        raw = await l2.get(redis_key)
        if self._monitoring:
            self._stats.latency_l2_get.observe(time.perf_counter() - started)
        if raw is None:
            return None
        limit = self._codec.offload_threshold
        if not limit or (len(raw) < limit and _payload_length(raw) < limit):
            # Small entries (nearly all): decode here, no coroutine for the decode (bench B2).
            return self._decode_and_fill_now(key, raw, epoch, fill_l1, drop_seq, None)
        return await self._decode_and_fill(key, raw, epoch, fill_l1, drop_seq)

    async def _decode_and_fill(self, key: str, raw: bytes, epoch: int, fill_l1: bool,
                               drop_seq: int) -> Envelope | None:
        limit = self._codec.offload_threshold
        if not limit or (len(raw) < limit and _payload_length(raw) < limit):
            # Small entries (nearly all): decode here, no coroutine hop (bench B2).
            return self._decode_and_fill_now(key, raw, epoch, fill_l1, drop_seq, None)
        started = time.perf_counter()
        try:
            envelope = await self._codec.decode_async(raw)
        except DecodeError as exc:
            self._count_decode_failure(exc)
            return None
        if envelope.compressed:
            self._stats.decompress_seconds += time.perf_counter() - started
        return self._decode_and_fill_now(key, raw, epoch, fill_l1, drop_seq, envelope)

    def _count_decode_failure(self, exc: DecodeError) -> None:
        # Malformed or planted bytes: a miss, never an exception and never executed.
        self._stats.decode_failures += 1
        logger.debug("undecodable L2 entry counted as a miss: %s", exc)

    def _decode_and_fill_now(self, key: str, raw: bytes, epoch: int, fill_l1: bool, drop_seq: int,
                             envelope: Envelope | None) -> Envelope | None:
        """Decode ``raw`` on the loop unless ``envelope`` already holds it; fill L1 if allowed."""
        if envelope is None:
            started = time.perf_counter()
            try:
                envelope = decode(raw)
            except DecodeError as exc:
                self._count_decode_failure(exc)
                return None
            if envelope.compressed:
                self._stats.decompress_seconds += time.perf_counter() - started
        remaining_ms = envelope.remaining_ms()
        if remaining_ms <= 0:
            return None
        l1 = self._l1
        if not fill_l1 or not self._enabled or l1.max_entries <= 0:
            return envelope  # nothing to fill: skip the fingerprint and the L1 attempt
        fingerprint = _fingerprint(raw)
        if drop_seq != self._drop_seq and not self._may_fill(key, drop_seq, fingerprint):
            return envelope  # the key was written or dropped while this read was in flight
        held: Any = envelope.value
        if envelope.compressed:  # L1 keeps the block, as Redis does (see l1.PackedValue)
            held = packed_value(raw, self._codec.offload_threshold) or held
        if l1.set(key, held, self._l1_size(key, held), remaining_ms / 1000.0, epoch=epoch,
                  full_ttl=envelope.ttl_ms / 1000.0, op=self._op_of(key)):
            self._stats.l1_inserts += 1
            self._remember_print(key, fingerprint)
            if key.startswith(AI_KEY_HEAD):
                self._remember_ai_key(key)
        return envelope

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Values of the keys found (missing keys are absent from the result). One MGET for L1's misses."""
        started = time.perf_counter()
        stats = self._stats
        found: dict[str, Any] = {}
        missing: list[str] = []
        l1 = self._l1
        for key in keys:
            if not isinstance(key, str):
                raise TypeError(f"keys: {type(key).__name__} is not accepted; accepted: str")
            value = l1.get(key)
            if value is MISSING:
                missing.append(key)
            else:
                found[key] = value
                stats.hits_l1 += 1
        l2 = self._l2
        if missing and l2 is not None and self._enabled and self._l2_usable():
            epoch = l1.epoch
            drop_seq = self._drop_seq
            held_back: list[str] = []
            journal = self._journal
            if journal.active:
                held_back = [key for key in missing if journal.covers(key, self._keys)]
                if held_back:
                    held = set(held_back)
                    missing = [key for key in missing if key not in held]
            raws = await l2.mget([self._keys.redis_key(key) for key in missing])
            still_missing = held_back
            for key, raw in zip(missing, raws, strict=True):
                envelope = None if raw is None else await self._decode_and_fill(key, raw, epoch, True,
                                                                                   drop_seq)
                if envelope is None:
                    still_missing.append(key)
                else:
                    found[key] = envelope.value
                    stats.hits_l2 += 1
            missing = still_missing
        stats.misses += len(missing)
        for key in missing:
            stats.reuse.on_miss(key)
            if key.startswith(AI_KEY_HEAD):
                _count_operation(stats, key, False)
        for key in found:
            if key.startswith(AI_KEY_HEAD):
                _count_operation(stats, key, True)
        if self._monitoring:
            stats.latency_get_many.observe(time.perf_counter() - started)
        return found

    def _op_of(self, key: str) -> str | None:
        """The per-operation stats bucket an L1 entry of ``key`` carries (None: not an AI key)."""
        return _operation_bucket(self._stats, key) if key.startswith(AI_KEY_HEAD) else None

    def _l1_size(self, key: str, value: Any) -> int:
        """What ``value`` under ``key`` costs L1 in memory (0 with L1 off: nothing is walked)."""
        if self._l1.max_entries <= 0:
            return 0
        kind = type(value)
        if kind is DeferredValue:  # the snapshot's bytes until it is parsed (L1 re-measures then)
            return sys.getsizeof(value.payload) + sys.getsizeof(key) + ENTRY_OVERHEAD
        if kind is PackedValue:  # the lz4 block and its holder: all L1 ever keeps of it
            return sys.getsizeof(value.packed) + _PACKED_HOLDER + sys.getsizeof(key) + ENTRY_OVERHEAD
        return entry_size(key, value)

    def _remember_ai_key(self, key: str) -> None:
        """Note the operation of an AI key entering L1 (bounded: rebuilt from L1 when it outgrows it)."""
        ai_operations = self._ai_operations
        if len(ai_operations) >= _bookkeeping_bound(len(self._l1_data)):
            kept = {known: _operation_bucket(self._stats, known) for known in self._l1_data
                    if known.startswith(AI_KEY_HEAD)}
            ai_operations.clear()  # in place: the fast get() holds this very dict
            ai_operations.update(kept)
        ai_operations[key] = _operation_bucket(self._stats, key)

    # ------------------------------------------------------------------ writes

    def _ttl_seconds(self, key: str, ttl: float | None) -> float:
        if ttl is None:
            operation = self._keys.operation_of(key)
            base = self._config.ttl.for_operation(operation)
            jitter = self._config.ttl.jitter_fraction
            # Jitter only shortens: entries written together then expire spread out, and never
            # outlive the configured TTL.
            return max(1.0, base * (1.0 - random.random() * jitter)) if jitter else float(base)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= _MAX_TTL_S:
            raise ValueError(f"ttl: {ttl!r} is not accepted; accepted: seconds in (0, {_MAX_TTL_S}] or None "
                             f"(the configured TTL of the key's operation)")
        return float(ttl)

    def _refuse_write(self) -> bool:
        if not self._enabled:
            return True
        if self._isolated:
            self._stats.writes_rejected_isolated += 1
            return True
        return False

    def _note_encoded(self, key: str, result: Any, ttl_s: float) -> None:
        stats = self._stats
        if result.compression_tried:
            stats.record_compression(result.payload_size, len(result.data) - HEADER.size,
                                     result.compress_seconds, kept=result.compressed)
            if result.offloaded:
                stats.compress_offloaded += 1
        stats.record_stored_value(len(result.data), compressed=result.compressed,
                                  compression_tried=result.compression_tried)
        stats.sets += 1
        stats.reuse.on_store(key, ttl_s)

    async def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: the TTL of the key's operation,
        with jitter). Returns whether it was stored anywhere (False when disabled or isolated);
        :meth:`set_detailed` also says whether it reached Redis.

        Raises :class:`~cache_runtime.codec.EncodeError` for a value that cannot be serialized.
        """
        in_l1, in_l2 = await self._set(key, value, ttl)
        return in_l1 or bool(in_l2)

    async def set_detailed(self, key: str, value: Any, ttl: float | None = None) -> dict[str, Any]:
        """:meth:`set`, answering where the value went: ``stored`` (anywhere), ``l1`` (this pod's
        memory), ``l2`` (Redis: True, False when Redis did not take it, None without Redis) and
        ``degraded`` (True when the engine has Redis but the write did not reach it: the value is
        on this pod only, and the key is deleted from Redis and from the other pods' L1 as soon as
        Redis answers again, so no pod serves the value it replaced)."""
        in_l1, in_l2 = await self._set(key, value, ttl)
        return {"stored": in_l1 or bool(in_l2), "l1": in_l1, "l2": in_l2, "degraded": in_l2 is False}

    async def _set(self, key: str, value: Any, ttl: float | None) -> tuple[bool, bool | None]:
        """(stored in L1, stored in Redis: None when the engine has no Redis or did not write)."""
        if not isinstance(key, str):
            raise TypeError(f"key: {type(key).__name__} is not accepted; accepted: str")
        ttl_s = self._ttl_seconds(key, ttl)
        if self._refuse_write():
            return False, None
        started = time.perf_counter()
        ttl_ms = max(1, int(ttl_s * 1000))
        result = await self._codec.encode_entry_async(value, ttl_ms)
        fingerprint = _fingerprint(result.data)
        self._note_drops((key,), (fingerprint,))
        stored = self._l1.set(key, result.value, self._l1_size(key, result.value), ttl_s, op=self._op_of(key))
        if stored:
            self._stats.l1_inserts += 1
            self._remember_print(key, fingerprint)
            if key.startswith(AI_KEY_HEAD):
                self._remember_ai_key(key)
        l2 = self._l2
        written: bool | None = None
        if l2 is not None:
            written = False
            if self._l2_usable():
                l2_started = time.perf_counter()
                redis_key = self._keys.redis_key(key)
                if self._listener_channel is not None:
                    written = await self._write_broadcast([(redis_key, result.data, ttl_ms)], (key,),
                                                          (fingerprint,))
                else:
                    written = await l2.set(redis_key, result.data, ttl_ms)
                if self._monitoring:
                    self._stats.latency_l2_set.observe(time.perf_counter() - l2_started)
                if not stored and self._l1.max_entries > 0:
                    # L1 refused the value (above the byte budget): a read here during the write may
                    # have filled L1 with the value it replaces (see _drop_again).
                    self._drop_again((key,))
            if not written:
                self._journal.stats["writes_not_in_redis"] += 1
                self._journal.add_keys((key,))
            else:
                self._journal.stored((key,))  # Redis holds this write, the newest
        self._note_encoded(key, result, ttl_s)
        if self._monitoring:
            self._stats.latency_set.observe(time.perf_counter() - started)
        return stored, written

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> bool:
        """Store every item (one pipeline to Redis). True when all were stored; False if disabled/isolated."""
        items = list(mapping.items())
        for key, _ in items:
            if not isinstance(key, str):
                raise TypeError(f"key: {type(key).__name__} is not accepted; accepted: str")
        ttls = [self._ttl_seconds(key, ttl) for key, _ in items]
        if self._refuse_write():
            return False
        if not items:
            return True
        started = time.perf_counter()
        redis_items: list[tuple[str, bytes, int]] = []
        all_in_l1 = True
        fingerprints: list[int] = []
        refused: list[str] = []  # keys L1 did not take
        self._note_drops([key for key, _ in items])  # before the first await: fingerprints not known yet
        for (key, value), ttl_s in zip(items, ttls, strict=True):
            ttl_ms = max(1, int(ttl_s * 1000))
            result = await self._codec.encode_entry_async(value, ttl_ms)
            fingerprint = _fingerprint(result.data)
            fingerprints.append(fingerprint)
            self._note_drops((key,), (fingerprint,))
            if self._l1.set(key, result.value, self._l1_size(key, result.value), ttl_s, op=self._op_of(key)):
                self._stats.l1_inserts += 1
                self._remember_print(key, fingerprint)
                if key.startswith(AI_KEY_HEAD):
                    self._remember_ai_key(key)
            else:
                all_in_l1 = False
                refused.append(key)
            redis_items.append((self._keys.redis_key(key), result.data, ttl_ms))
            self._note_encoded(key, result, ttl_s)
        stored = all_in_l1
        l2 = self._l2
        if l2 is not None:
            written = False
            if self._l2_usable():
                if self._listener_channel is not None:
                    written = await self._write_broadcast(redis_items, [key for key, _ in items],
                                                          fingerprints)
                else:
                    written = await l2.set_many(redis_items)
                stored = written  # True when all were stored in Redis (as before)
                if refused and self._l1.max_entries > 0:
                    self._drop_again(refused)  # as in _set
            if not written:
                # Which items Redis took is unknown: every key is replayed as a deletion.
                self._journal.stats["writes_not_in_redis"] += len(items)
                self._journal.add_keys([key for key, _ in items])
            else:
                self._journal.stored(key for key, _ in items)
        if self._monitoring:
            self._stats.latency_set_many.observe(time.perf_counter() - started)
        return stored

    async def delete(self, key: str) -> bool:
        """Remove ``key`` from both tiers (and from the other pods' L1). Returns whether it existed;
        :meth:`delete_detailed` also says whether the delete reached Redis."""
        existed, _ = await self._delete(key)
        return existed

    async def delete_detailed(self, key: str) -> dict[str, Any]:
        """:meth:`delete`, answering ``deleted`` (it existed), ``l2`` (Redis took the UNLINK and the
        coherence message: True; False when it did not; None without Redis) and ``degraded`` (the
        engine has Redis but the delete did not reach it: it is replayed as soon as Redis answers)."""
        existed, in_l2 = await self._delete(key)
        return {"deleted": existed, "l2": in_l2, "degraded": in_l2 is False}

    async def _delete(self, key: str) -> tuple[bool, bool | None]:
        if not isinstance(key, str):
            raise TypeError(f"key: {type(key).__name__} is not accepted; accepted: str")
        started = time.perf_counter()
        self._note_drops((key,))
        existed = self._l1.delete(key)
        l2 = self._l2
        done: bool | None = None
        if l2 is not None:
            done = False
            if self._l2_usable():
                removed = await l2.delete_checked([self._keys.redis_key(key)])
                self._drop_again((key,))
                if removed is not None:
                    existed = bool(removed) or existed
                    done = await self._publish(KeysChanged(self._keys.namespace, (key,)))
            if not done:
                self._journal.stats["deletes_not_in_redis"] += 1
                self._journal.add_keys((key,))
        self._stats.deletes += 1
        if self._monitoring:
            self._stats.latency_delete.observe(time.perf_counter() - started)
        return existed, done

    # ------------------------------------------------------------------ get_or_compute

    async def get_or_compute(self, key: str, loader: Loader[T], ttl: float | None = None) -> T:
        """The cached value, or ``loader()``'s result stored for ``ttl`` (None: the operation's TTL).

        Concurrent callers of one missing key share one loader call (single-flight); with
        ``stampede.lease_lock`` one pod computes while the others wait for its value; with
        ``stampede.early_refresh_fraction`` a value close to expiry is refreshed in the background
        while the current one is served. Loader errors reach every waiter and nothing is cached.
        """
        if not isinstance(key, str):
            raise TypeError(f"key: {type(key).__name__} is not accepted; accepted: str")
        self._ttl_seconds(key, ttl)  # validate before any work
        stats = self._stats
        operation = self._keys.operation_of(key)
        if not self._enabled:
            stats.misses += 1
            stats.count_operation(operation or "default", hit=False)
            return await self._run_loader(loader)
        entry = self._l1.get_entry(key)
        if entry is not None:
            stats.hits_l1 += 1
            if self._monitoring:
                stats.latency_get.counts[0] += 1
            stats.count_operation(operation or "default", hit=True)
            self._maybe_refresh(key, loader, ttl, entry.remaining(self._clock()), entry.ttl)
            return entry.value  # type: ignore[no-any-return]
        flight = self._flight
        if self._single_flight and flight.in_flight(key):
            stats.misses += 1
            stats.count_operation(operation or "default", hit=False)
            stats.singleflight_merges += 1
            return await flight.run(key, lambda: self._compute_and_store(key, loader, ttl))
        envelope = await self._read_l2(key) if self._l2 is not None else None
        if envelope is not None:
            stats.hits_l2 += 1
            stats.count_operation(operation or "default", hit=True)
            self._maybe_refresh(key, loader, ttl, envelope.remaining_ms() / 1000.0, envelope.ttl_ms / 1000.0)
            return envelope.value  # type: ignore[no-any-return]
        stats.misses += 1
        stats.count_operation(operation or "default", hit=False)
        stats.reuse.on_miss(key)
        if not self._single_flight:
            return await self._compute_and_store(key, loader, ttl)
        if flight.in_flight(key):  # another caller started the load while we read L2
            stats.singleflight_merges += 1
        return await flight.run(key, lambda: self._compute_and_store(key, loader, ttl))

    async def _run_loader(self, loader: Loader[T]) -> T:
        stats = self._stats
        started = time.perf_counter()
        stats.computes += 1
        try:
            result = loader()
            if inspect.isawaitable(result):
                result = await result
        except BaseException:
            stats.compute_errors += 1
            raise
        finally:
            if self._monitoring:
                stats.latency_compute.observe(time.perf_counter() - started)
        return result  # type: ignore[return-value]

    async def _compute_and_store(self, key: str, loader: Loader[T], ttl: float | None) -> T:
        l2 = self._l2
        lease_key = token = None
        if self._config.stampede.lease_lock and l2 is not None and l2.available and self._l2_usable():
            lease_key = self._keys.lease_key(key)
            token = await l2.acquire_lease(lease_key, max(1, int(self._config.stampede.lease_ttl_s * 1000)))
            if token is None and l2.available:
                waited = await self._wait_for_lease_holder(key)
                if waited is not None:
                    return waited.value  # type: ignore[no-any-return]
        try:
            value = await self._run_loader(loader)
            try:
                await self.set(key, value, ttl)
            except EncodeError as exc:
                # The caller still gets its (expensive) value; it just cannot be cached.
                logger.warning("get_or_compute: value for a key could not be cached: %s", exc)
        finally:
            # Released only after the value is in Redis, so a waiting pod finds it instead of
            # taking the lease and computing again.
            if token is not None and lease_key is not None and l2 is not None:
                await l2.release_lease(lease_key, token)
        return value

    async def _wait_for_lease_holder(self, key: str) -> Envelope | None:
        """Another pod holds the lease: poll L2 for its value, up to ``stampede.lease_wait_s``."""
        self._stats.lease_waits += 1
        deadline = time.monotonic() + self._config.stampede.lease_wait_s
        delay = _LEASE_POLL_FIRST_S
        while time.monotonic() < deadline:
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, _LEASE_POLL_MAX_S)
            envelope = await self._read_l2(key)
            if envelope is not None:
                return envelope
            l2 = self._l2
            if l2 is None or not l2.available:
                break  # Redis went away: compute here rather than wait for nothing
        return None

    def _maybe_refresh(self, key: str, loader: Loader[Any], ttl: float | None, remaining_s: float,
                       full_ttl_s: float) -> None:
        fraction = self._config.stampede.early_refresh_fraction
        if not fraction or remaining_s >= fraction * full_ttl_s or self._isolated:
            return
        if self._flight.in_flight(key):
            return
        self._stats.early_refreshes += 1
        task = asyncio.ensure_future(self._flight.run(key, lambda: self._compute_and_store(key, loader, ttl)))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("early refresh failed: %s", type(task.exception()).__name__)

    # ------------------------------------------------------------------ invalidation

    async def invalidate(self, pattern: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        """Invalidate by Redis glob ``pattern`` (SCAN + UNLINK, relative to the key prefix) and/or by
        ``namespace`` (one INCR of its version; old entries expire by TTL). Other pods drop the
        matching L1 entries through the coherence channel. Returns counts.
        """
        if pattern is None and namespace is None:
            raise ValueError("invalidate: give pattern and/or namespace; accepted: a Redis glob relative to "
                             "the key prefix, a namespace name")
        started = time.perf_counter()
        result: dict[str, Any] = {"pattern": None, "namespace": None, "redis_keys_removed": 0,
                                  "l1_entries_removed": 0, "namespace_version": None}
        stats = self._stats
        if pattern is not None:
            full = self._keys.pattern(pattern)
            result["pattern"] = full
            self._forget_all_drops()
            result["l1_entries_removed"] += self._drop_l1_matching(full)
            if self._l2 is not None:
                done = False
                if self._l2_usable():
                    result["redis_keys_removed"], done = await self._l2.scan_unlink_checked(full)
                    # Reads here that ran during the SCAN+UNLINK may have put old values back in L1.
                    self._forget_all_drops()
                    result["l1_entries_removed"] += self._drop_l1_matching(full)
                    done = done and await self._publish(PatternInvalidated(full))
                if not done:
                    self._journal.add_pattern(full, "pattern")
                result["l2"] = done
            stats.invalidations_pattern += 1
        if namespace is not None:
            ns = self._check_namespace(namespace)
            result["namespace"] = ns
            version = None
            if self._l2 is not None:
                version = await self._l2.bump_version(self._keys.version_key(ns))
            elif ns == self._keys.namespace:
                version = self._keys.namespace_version + 1  # memory only: the version is ours alone
            result["namespace_version"] = version
            result["applied"] = version is not None
            if ns == self._keys.namespace:
                result["l1_entries_removed"] += self._drop_namespace(version)
            stats.invalidations_namespace += 1
            published = await self._publish(NamespaceBumped(ns, version))
            if self._l2 is not None:
                if version is None or not published:
                    self._journal.add_namespace(ns)
                result["l2"] = version is not None and published and result.get("l2", True)
        stats.keys_invalidated += result["redis_keys_removed"] + result["l1_entries_removed"]
        stats.l1_invalidated += result["l1_entries_removed"]
        if self._monitoring:
            stats.latency_invalidate.observe(time.perf_counter() - started)
        return result

    def _check_namespace(self, namespace: str) -> str:
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"namespace: {namespace!r} is not accepted; accepted: 1 to 64 of A-Z a-z 0-9 _ . -")
        return namespace

    def _drop_l1_matching(self, full_pattern: str) -> int:
        regex = redis_glob_to_regex(full_pattern)
        base = self._keys.base()
        doomed = [key for key in self._l1_data if regex.fullmatch(base + key)]
        for key in doomed:
            self._l1.delete(key)
        return len(doomed)

    def _drop_namespace(self, version: int | None) -> int:
        count = len(self._l1)
        if version is not None and version > self._keys.namespace_version:
            self._keys.namespace_version = version
        # Every L1 entry belongs to this namespace; the epoch also voids reads still in flight.
        self._l1.bump_epoch()
        return count

    async def clear(self) -> dict[str, Any]:
        """Empty this namespace: L1 (here and, via coherence, on other pods) and its Redis keys of
        every version (SCAN + UNLINK). Returns counts."""
        started = time.perf_counter()
        l1_removed = len(self._l1)
        self._l1.bump_epoch()
        redis_removed = 0
        answer: dict[str, Any] = {}
        if self._l2 is not None:
            full = self._keys.namespace_prefix() + "*"
            done = False
            if self._l2_usable():
                redis_removed, done = await self._l2.scan_unlink_checked(full)
                # Reads here that ran during the SCAN+UNLINK may have put old values back in L1.
                l1_removed += len(self._l1)
                self._l1.bump_epoch()
            done = await self._publish(NamespaceCleared(self._keys.namespace)) and done
            if not done:
                self._journal.add_pattern(full, "clear")
            answer["l2"] = done
        self._stats.l1_invalidated += l1_removed
        self._stats.keys_invalidated += l1_removed + redis_removed
        if self._monitoring:
            self._stats.latency_invalidate.observe(time.perf_counter() - started)
        return {"l1_entries_removed": l1_removed, "redis_keys_removed": redis_removed, **answer}

    def gc(self) -> dict[str, int]:
        """Drop expired L1 entries now (they would go lazily anyway). Returns the count."""
        removed = self._l1.purge_expired()
        return {"l1_expired_removed": removed}

    # ------------------------------------------------------------------ coherence

    def _write_broadcast(self, redis_items: list[tuple[str, bytes, int]], keys: Iterable[str],
                         fingerprints: Iterable[int]) -> asyncio.Future[bool]:
        """Queue writes for this tick's pipeline: their SETs, then one PUBLISH naming every key
        written in the tick, so other pods drop those keys from L1. Resolves to whether all the
        batch's SETs were stored."""
        loop = asyncio.get_running_loop()
        batch = self._write_batch
        if batch is None:
            batch = self._write_batch = _WriteBatch()
            # Runs after every task already scheduled for this tick, so their writes join too.
            loop.call_soon(self._flush_writes)
        batch.items.extend(redis_items)
        batch.keys.extend(keys)
        batch.fingerprints.extend(fingerprints)
        future: asyncio.Future[bool] = loop.create_future()
        batch.waiters.append(future)
        return future

    def _flush_writes(self) -> None:
        batch, self._write_batch = self._write_batch, None
        if batch is None:
            return
        task = asyncio.ensure_future(self._send_writes(batch))
        self._write_tasks.add(task)
        task.add_done_callback(self._write_tasks.discard)

    async def _send_writes(self, batch: _WriteBatch) -> None:
        stored = False
        try:
            l2 = self._l2
            if l2 is None:
                return
            channel = self._listener_channel
            publish = None
            if channel is not None:
                # The last write of a key in the tick is the one Redis keeps.
                latest = dict(zip(batch.keys, batch.fingerprints, strict=True))
                message = KeysChanged(self._keys.namespace, tuple(latest), tuple(latest.values()))
                publish = (channel, encode_message(message, self._origin))
            stored = await l2.set_many(batch.items, publish=publish)
            if publish is not None and stored:
                self._stats.coherence_messages_published += 1
        finally:
            for future in batch.waiters:
                if not future.done():  # a writer cancelled by its caller
                    future.set_result(stored)

    def _note_drops(self, keys: Iterable[str], fingerprints: Iterable[int | None] | None = None) -> None:
        """Remember that ``keys`` changed now, to the bytes with ``fingerprints`` when known (see
        ``_DROP_MEMORY_MAX``)."""
        seq = self._drop_seq = self._drop_seq + 1
        dropped = self._dropped
        if len(dropped) >= _DROP_MEMORY_MAX:
            dropped.clear()
            self._drop_floor = seq - 1  # reads that started before this cannot be told apart
        if fingerprints is None:
            for key in keys:
                dropped[key] = (seq, None)
        else:
            for key, fingerprint in zip(keys, fingerprints, strict=True):
                dropped[key] = (seq, fingerprint)

    def _drop_again(self, keys: Iterable[str]) -> None:
        """Drop ``keys`` from L1 once more after this engine's deletion of them reached Redis (or failed).

        The deletion dropped them from L1 before its Redis round trip; a read of one of them on this
        engine during that round trip found L1 empty, may have read Redis before the UNLINK landed
        and put the old value back in L1. Other engines drop the keys when the broadcast arrives, but
        this one ignores its own broadcast, so without this it would serve the deleted value until the
        key is written again (soak finding 5, docs/reliability.md). Reads still in flight are voided
        too (a new drop sequence)."""
        keys = tuple(keys)
        self._note_drops(keys)
        for key in keys:
            self._l1.delete(key)

    def _remember_print(self, key: str, fingerprint: int) -> None:
        """Note the fingerprint of the bytes behind a new L1 entry (bounded like _ai_operations)."""
        prints = self._l1_prints
        if len(prints) >= _bookkeeping_bound(len(self._l1_data)):
            kept = {known: prints[known] for known in self._l1_data if known in prints}
            prints.clear()
            prints.update(kept)
        prints[key] = fingerprint

    def _forget_all_drops(self) -> None:
        """Something wider than known keys changed (a pattern): no read in flight may fill L1."""
        self._drop_seq += 1
        self._drop_floor = self._drop_seq
        self._dropped.clear()

    def _may_fill(self, key: str, read_started_at_seq: int, fingerprint: int) -> bool:
        """Whether a read that started at drop sequence ``read_started_at_seq`` and got the bytes with
        ``fingerprint`` may fill L1: yes unless the key changed meanwhile to other bytes."""
        if read_started_at_seq < self._drop_floor:
            return False
        dropped = self._dropped.get(key)
        return dropped is None or dropped[0] <= read_started_at_seq or dropped[1] == fingerprint

    async def _publish(self, message: CoherenceMessage) -> bool:
        """Broadcast ``message``; True when Redis took it or there is no channel to take it."""
        l2 = self._l2
        if l2 is None or self._listener_channel is None:
            return True
        if await l2.publish(self._listener_channel, encode_message(message, self._origin)):
            self._stats.coherence_messages_published += 1
            return True
        return False

    def _on_coherence_message(self, raw: bytes) -> None:
        try:
            received = decode_message(raw)
        except ValueError as exc:
            logger.debug("ignored a malformed coherence message: %s", exc)
            return
        if received.origin == self._origin:
            return
        stats = self._stats
        stats.coherence_messages_received += 1
        if self._monitoring:
            stats.coherence_lag.observe(lag_seconds(received.stamped))
        message = received.message
        removed = 0
        own_namespace = self._keys.namespace
        if isinstance(message, PatternInvalidated):
            self._forget_all_drops()
            removed = self._drop_l1_matching(message.pattern)
        elif isinstance(message, NamespaceBumped) and message.namespace == own_namespace:
            removed = self._drop_namespace(message.version)
        elif isinstance(message, NamespaceCleared) and message.namespace == own_namespace:
            removed = len(self._l1)
            self._l1.bump_epoch()
        elif isinstance(message, KeysChanged) and message.namespace == own_namespace:
            prints = message.fingerprints or (None,) * len(message.keys)
            removed = self._drop_written_keys(message.keys, prints)
        stats.l1_invalidated += removed

    def _drop_written_keys(self, keys: Sequence[str], fingerprints: Sequence[int | None]) -> int:
        """Drop keys another pod wrote (``fingerprints``: of the bytes written) or deleted (None)."""
        self._note_drops(keys, fingerprints)
        removed = 0
        prints = self._l1_prints
        for key, fingerprint in zip(keys, fingerprints, strict=True):
            if fingerprint is not None and prints.get(key) == fingerprint and key in self._l1_data:
                continue  # L1 already holds exactly the bytes written
            removed += self._l1.delete(key)
        return removed

    def _on_coherence_reset(self) -> None:
        # Messages may have been missed while the subscription was down: nothing in L1 can be
        # trusted, and the namespace version may have moved.
        self._stats.coherence_resets += 1
        self._l1.bump_epoch()
        if self._l2 is not None:
            # Until the version is read again, L2 is not used (a missed bump would serve old entries).
            self._version_known = False
            self._version_attempt_at = 0.0
            self._l2_usable()

    # ------------------------------------------------------------------ outage journal

    def _start_replay(self) -> None:
        """A new journal entry: make sure the replay loop runs (once started)."""
        task = self._journal_task
        if self._started and (task is None or task.done()):
            self._journal_task = asyncio.ensure_future(self._replay_outage_loop())

    def journal_state(self) -> dict[str, Any]:
        """What the outage journal holds and has done (also in ``stats()["engine"]["outage_journal"]``)."""
        return self._journal.state()

    async def _replay_outage_loop(self) -> None:
        journal = self._journal
        delay = _JOURNAL_RETRY_FIRST_S
        while journal.active and self._started:
            l2 = self._l2
            if l2 is None:  # memory only now: nothing in Redis to correct
                journal.forget(journal.seq)
                return
            if await self._replay_outage(l2):
                delay = _JOURNAL_RETRY_FIRST_S
                continue
            journal.stats["replay_failures"] += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _JOURNAL_RETRY_MAX_S)

    async def _replay_outage(self, l2: RedisL2) -> bool:
        """One replay of everything journaled so far, past the breaker; True when Redis took it all."""
        journal = self._journal
        keys_builder = self._keys
        plan = journal.replay_plan(keys_builder, self._listener_channel, self._origin)
        outcome = await l2.replay_outage(plan)
        if outcome is None:
            return False
        own = plan.own_namespace
        version = outcome.versions[own]
        if own in plan.bump or version > keys_builder.namespace_version:
            self._drop_namespace(version)  # moves to the version read or bumped, voids L1 reads in flight
        journal.stats["replays"] += 1
        journal.stats["replayed_keys"] += outcome.keys
        journal.forget(plan.upto)
        logger.warning("replayed to redis what this pod changed while redis failed: %d keys, %d patterns, "
                       "%d namespaces", outcome.keys, len(plan.patterns), len(plan.bump))
        return True

    # ------------------------------------------------------------------ isolation, reconnect

    def isolate(self) -> None:
        """Stop all writes (L1 and Redis); keep serving what is cached. For emergencies."""
        self._isolated = True

    def restore(self) -> None:
        """Leave isolation: writes resume."""
        self._isolated = False

    async def reconnect_redis(self) -> bool:
        """Drop every Redis connection and connect again (breaker reset). False when there is no L2."""
        if self._l2 is None:
            return False
        await self._l2.reconnect()
        await self._refresh_namespace_version()
        return True

    # ------------------------------------------------------------------ config

    def _apply_runtime_settings(self, config: CacheConfig) -> None:
        self._enabled = config.enabled
        self._monitoring = config.monitoring
        self._install_fast_get()  # the L1-hit path bakes the monitoring switch in
        self._single_flight = config.stampede.single_flight
        logging.getLogger("cache_runtime").setLevel(config.log_level)

    async def apply_config(self, new: CacheConfig) -> dict[str, Any]:
        """Apply a new config live. L1 is resized keeping its most recent entries (cleared only when
        the key layout changed); new TTLs, codec and compression apply to new writes.

        Redis: pool size, timeouts, breaker and coherence timing are applied to the live clients
        (``redis_tuned``); only connection settings (``l2.backend.CONNECTION_FIELDS``) build new
        clients, swapped so that no write in flight and no coherence message is lost
        (``redis_rebuilt``, L1 voided once: see :meth:`_swap_l2`). Returns what changed."""
        if not isinstance(new, CacheConfig):
            raise TypeError(f"config: {type(new).__name__} is not accepted; accepted: CacheConfig")
        old = self._config
        changed = sorted(name for name in type(new).model_fields if getattr(old, name) != getattr(new, name))
        report: dict[str, Any] = {"changed": changed, "config_hash": new.config_hash(), "l1_evicted": 0,
                                  "l1_cleared": False, "redis_rebuilt": False}
        self._config = new
        self._apply_runtime_settings(new)
        self._codec = Codec.from_config(new)
        layout_changed = old.keys != new.keys
        self._keys = KeyBuilder(new, namespace_version=self._keys.namespace_version)
        self._variant_keys = _variant_builder(new)
        l1 = self._l1
        l1.sweep_batch = new.l1.sweep_batch
        report["l1_evicted"] = l1.resize(new.l1.max_entries, new.l1.max_bytes)
        if layout_changed or not new.enabled:
            report["l1_cleared"] = True
            l1.bump_epoch()
        if self._started:
            old_settings = redis_settings_for(old)
            new_settings = redis_settings_for(new)
            channel_changed = (old.coherence_channel, old.coherence.enabled) != (
                new.coherence_channel, new.coherence.enabled)
            l2 = self._l2
            report["redis_tuned"] = False
            if old_settings != new_settings:
                if old_settings is not None and new_settings is not None and l2 is not None:
                    if l2.needs_new_clients(new_settings):
                        report["redis_rebuilt"] = report["l1_cleared"] = True
                        await self._swap_l2(new, new_settings)
                    else:
                        # Pool size, timeouts, breaker: applied to the live clients; the
                        # subscription and the calls in flight are not disturbed.
                        report["redis_tuned"] = True
                        self._journal.stats["tunes"] += 1
                        l2.tune(new_settings)
                        if channel_changed:
                            report["l1_cleared"] = True
                            await self._swap_listener(new)
                else:
                    report["redis_rebuilt"] = True
                    await self._close_l2()
                    await self._build_l2(new)
            elif l2 is not None and channel_changed:
                report["l1_cleared"] = True
                await self._swap_listener(new)
            if layout_changed and self._l2 is not None:
                self._keys.namespace_version = 0
                await self._refresh_namespace_version()
        return report

    async def _swap_listener(self, config: CacheConfig) -> None:
        """Move to another coherence channel (or turn coherence on or off) on the same clients.

        Messages of the new channel published before its subscription is confirmed are missed, so
        L1 is voided once it is (the listener's reset does it when confirmation comes late).
        """
        await self._unsubscribe()
        self._subscribe(config)
        listener = self._listener
        if listener is not None:
            listener.reset_on_first_subscription()
            if await listener.wait_subscribed(self._swap_wait_s()):
                self._l1.bump_epoch()

    def _swap_wait_s(self, settings: RedisSettings | None = None) -> float:
        settings = settings if settings is not None else (self._l2.settings if self._l2 is not None else None)
        if settings is None:
            return 1.0
        return min(_SWAP_WAIT_MAX_S, settings.connect_timeout_s + settings.pool_timeout_s
                   + 2 * settings.socket_timeout_s)

    async def _swap_l2(self, config: CacheConfig, settings: RedisSettings) -> None:
        """Move to new Redis clients without losing a write or a coherence message.

        1. The new clients are built and their subscription is established (bounded wait) while
           the old ones keep serving; 2. new operations go to the new clients; 3. L1 is voided and
           the namespace version re-read, because messages published between the old subscription
           and the new one may have been missed (a new server, a gap); if the new subscription is
           not confirmed yet, its confirmation resets L1 again; 4. calls in flight on the old
           clients finish (bounded wait), their writes still reach Redis and broadcast; 5. the old
           listener and clients are closed.
        """
        self._journal.stats["client_swaps"] += 1
        old_l2, old_listener = self._l2, self._listener
        l2 = RedisL2(settings)
        await l2.start()
        listener: CoherenceListener | None = None
        channel = config.coherence_channel if config.coherence.enabled else None
        if channel is not None:
            listener = l2.subscribe(channel, self._on_coherence_message, self._on_coherence_reset)
            if not await listener.wait_subscribed(self._swap_wait_s(settings)):
                listener.reset_on_first_subscription()
        # Route new operations to the new clients. Writes queued in this tick's batch flush there.
        self._l2, self._listener, self._listener_channel = l2, listener, channel
        self._l1.bump_epoch()
        self._stats.coherence_resets += 1
        await self._refresh_namespace_version()
        # The old clients finish what they started (their writes are in Redis and broadcast), then go.
        if old_l2 is not None:
            pending = [task for task in self._write_tasks if not task.done()]
            wait_s = self._swap_wait_s(old_l2.settings)
            if pending:
                await asyncio.wait(pending, timeout=wait_s)
            if not await old_l2.drain(wait_s):
                logger.warning("redis client swap: calls still in flight on the old clients after %.1fs; "
                               "closing them", wait_s)
            if old_listener is not None:
                await old_l2.unsubscribe(old_listener)
            await old_l2.close()

    # ------------------------------------------------------------------ stats and health

    def _config_facts(self) -> dict[str, Any]:
        config = self._config
        return {
            "hash": config.config_hash(),
            "preset": config.preset,
            "enabled": config.enabled,
            "normalize": config.keys.normalize.model_dump(),
            "ttl_default_s": config.ttl.default_s,
            "operation_ttls_s": {op: config.ttl.for_operation(op) for op in OPERATIONS},
            "l1_max_entries": config.l1.max_entries,
            "l1_max_bytes": config.l1.max_bytes,
            "compression_enabled": True,
            "compression_threshold_bytes": config.compression.threshold_bytes,
            "compression_level": config.compression.level,
            "redis_max_connections": config.redis.max_connections,
        }

    def stats(self) -> dict[str, Any]:
        """A JSON-ready snapshot (``cache_runtime.stats.Snapshot``) of every counter and gauge, plus
        ``l2_detail`` (RedisL2's own stats) and ``engine`` facts (namespace version, isolation)."""
        self._flush_hot_hits()
        l2 = self._l2
        l2_raw = {**l2.stats(), "checks": self._redis_checks()} if l2 is not None else None
        snapshot: dict[str, Any] = dict(build_snapshot(
            self._stats, l1=self._l1.stats(), l2=l2_raw, redis_memory=self._redis_memory,
            config=self._config_facts(), isolated=self._isolated))
        snapshot["l2_detail"] = l2_raw
        snapshot["engine"] = {
            "namespace": self._keys.namespace,
            "namespace_version": self._keys.namespace_version,
            "namespace_version_known": self._version_known,
            "single_flight_in_progress": len(self._flight),
            "background_tasks": len(self._background),
            "started": self._started,
            "outage_journal": self.journal_state(),
        }
        self._window.remember(snapshot, at=self._clock())  # type: ignore[arg-type]
        return snapshot

    def health(self, window_seconds: float | None = None) -> health_module.HealthReport:
        """Judge a recent window against the config's health thresholds; returns a report with
        symptoms, causes, evidence, recommendations and the window's length (``window_seconds``).

        The window is ``window_seconds`` when given, else the shortest of
        :data:`cache_runtime.health.DETECTION_WINDOWS_S` holding ``health.min_requests`` lookups, with
        the Redis figures over the longest (:func:`cache_runtime.health.detection_window`); the causes
        are diagnosed on both it and the longest window, merged. Each is
        measured from the newest kept snapshot at least that old (everything since start, if younger)."""
        current = self.stats()
        now = self._clock()
        spans = health_module.DETECTION_WINDOWS_S if window_seconds is None else (window_seconds,)
        windows = [self._window.window(current, now=now, window_seconds=span) for span in spans]  # type: ignore[arg-type]
        judged = health_module.detection_window(windows, self._config.health.min_requests)
        # Causes are diagnosed on the longest window too: their evidence may date from the fault's onset.
        return health_module.evaluate(judged, self._config.health.model_dump(), evidence=windows[-1])


_AI_HEAD_LENGTH = len(AI_KEY_HEAD)


_PAYLOAD_LENGTH_AT = HEADER.size - 4  # the header ends with the uncompressed payload length (u32)


def _payload_length(raw: bytes) -> int:
    """The uncompressed payload length an entry's header claims (0 if too short to have one)."""
    if len(raw) < HEADER.size:
        return 0
    return int.from_bytes(raw[_PAYLOAD_LENGTH_AT:HEADER.size], "big")


def _bookkeeping_bound(l1_entries: int) -> int:
    """Size at which a per-L1-entry side table (fingerprints, AI operations) is rebuilt from L1.

    Keys L1 evicted linger there until the rebuild, keeping their key strings alive: an eighth over
    L1's size keeps that within the byte budget's accuracy (sizing.ENTRY_OVERHEAD counts one
    fingerprint per entry), and the O(L1) rebuild runs at most every L1/8 inserts (amortised O(1)).
    """
    return l1_entries + max(64, l1_entries // 8)


def _fingerprint(data: bytes) -> int:
    """A 64-bit fingerprint of encoded bytes (the header's created_at makes each write distinct)."""
    return xxhash.xxh3_64_intdigest(data)


def _operation_bucket(stats: EngineStats, key: str) -> str:
    """The per-operation stats bucket of the AI key ``key`` (``ai1:{operation}:...``)."""
    end = key.find(":", _AI_HEAD_LENGTH)
    operation = key[_AI_HEAD_LENGTH:end] if end > _AI_HEAD_LENGTH else "default"
    return operation if operation in stats.op_hits else "default"


def _count_operation(stats: EngineStats, key: str, hit: bool) -> None:
    """Count a hit or miss of the AI key ``key`` for its operation."""
    bucket = _operation_bucket(stats, key)
    if hit:
        stats.op_hits[bucket] += 1
    else:
        stats.op_misses[bucket] += 1


class _WriteBatch:
    """Writes of one event-loop tick: Redis items, the logical keys to broadcast, the writers."""

    __slots__ = ("fingerprints", "items", "keys", "waiters")

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes, int]] = []
        self.keys: list[str] = []
        self.fingerprints: list[int] = []
        self.waiters: list[asyncio.Future[bool]] = []


def _variant_builder(config: CacheConfig) -> KeyBuilder | None:
    """A key builder with every normalization on, for key-variant evidence (None if that is the
    config's own builder already)."""
    rules = config.keys.normalize
    if rules.line_endings and rules.invisible_chars and rules.whitespace and rules.case:
        return None
    data = config.model_dump()
    data["keys"]["normalize"] = dict.fromkeys(("line_endings", "invisible_chars", "whitespace", "case"), True)
    return KeyBuilder(CacheConfig.model_validate(data))

