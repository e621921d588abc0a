"""Benchmark of cachewarden's cache engine against anchors measured in the same run.

    python bench/engine.py [--quick] [--only B1,B4] [--json out.json]

Scenarios (bench/README.md explains each and how to read it):
  B1  L1 hit: async get vs cashews mem://; sync L1 path vs cachetools.LRUCache
  B2  L2 hit (L1 off): single get vs raw redis-py GET; get_many / concurrent gets vs sequential gets
  B3  stampede: 1,000 concurrent get_or_compute of one missing key, 50 ms loader
  B4  Redis outage (refused port, blackhole) during paced gets at 90% L1 hits; cashews in the same outage
  B5  1 MiB JSON values: event-loop stall while set() encodes/compresses; compression ratio
  B6  coherence lag between two engines; namespace invalidation vs SCAN+UNLINK of 200k keys

Every figure is printed with its target and PASS/MISS. The bench never fails on a timing: it exits
non-zero only when a scenario raised (the engine or the bench is broken), never because a target
was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import _engine_adapter as engine_api
import orjson
import redis.asyncio as redis_asyncio
from _harness import (
    Blackhole,
    Figure,
    LoopStallMonitor,
    Placement,
    RedisServer,
    Timing,
    percentile,
    pin_bench_process,
    print_table,
    time_async_interleaved,
    time_sync_interleaved,
)
from _payloads import ai_response, large_ai_document

ALL_SCENARIOS = ("B1", "B2", "B3", "B4", "B5", "B6")


@dataclass
class Counts:
    """Sizes of every scenario; --quick shrinks them to a smoke run of seconds."""

    b1_iterations: int = 200_000
    b1_repeats: int = 7
    b2_keys: int = 2_000
    b2_repeats: int = 9
    b2_iterations: int = 5_000
    b2_batch: int = 100
    b3_concurrency: int = 1_000
    b4_ops: int = 10_000
    b4_rate_per_s: int = 2_000
    # One per 10 ops, plus one per 20 ms probe of the (bounded) recovery wait.
    b4_cold_keys: int = 10_000 // 10 + 1_600
    # Wall-time bounds of the outage phase and of the wait for recovery after it. The recovery bound
    # is long enough to see an engine whose recovery waits on a slow background timer.
    b4_outage_cap_s: float = 8.0
    b4_recovery_cap_s: float = 30.0
    b5_values: int = 8
    b5_value_bytes: int = 1 << 20
    b6_samples: int = 300
    b6_keys: int = 200_000

    @classmethod
    def quick(cls) -> Counts:
        """Small counts: every code path once, in seconds."""
        return cls(
            b1_iterations=20_000,
            b1_repeats=3,
            b2_keys=200,
            b2_repeats=3,
            b2_iterations=1_000,
            b3_concurrency=1_000,
            b4_ops=2_000,
            b4_rate_per_s=2_000,
            b4_cold_keys=2_000 // 10 + 1_600,
            b4_outage_cap_s=3.0,
            b4_recovery_cap_s=6.0,
            b5_values=2,
            b6_samples=30,
            b6_keys=20_000,
        )


@dataclass
class Run:
    """State shared by the scenarios of one run."""

    counts: Counts
    placement: Placement
    redis: RedisServer
    engine_error: str | None
    figures: list[Figure] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: Figure) -> Figure:
        """Record a figure (printed at the end of its scenario)."""
        self.figures.append(figure)
        return figure

    def raw_client(self, url: str | None = None) -> redis_asyncio.Redis:
        """A plain redis-py asyncio client (hiredis parser when installed) on the bench's Redis."""
        return redis_asyncio.Redis.from_url(url or self.redis.url, decode_responses=False)


def ratio_figure(
    scenario: str, name: str, numerator: float, denominator: float, target_min: float | None, note: str = ""
) -> Figure:
    """A "x times" figure with an optional lower bound target."""
    value = numerator / denominator if denominator > 0 else float("nan")
    passed = None if target_min is None else value >= target_min
    target = "" if target_min is None else f">= {target_min:g}x"
    return Figure(scenario, name, value, "x", target, passed, note)


def timing_note(timing: Timing) -> str:
    """ "median of N (best B)" suffix."""
    return f"median of {len(timing.per_op_ns)} repeats, best {timing.best:,.0f} ns"


# ==================================================================================================
# B1: L1 hit


async def scenario_b1(run: Run) -> None:
    """L1 hit through the async get vs cashews mem://; sync L1 path vs cachetools LRUCache."""
    import cachetools
    from cashews import Cache as CashewsCache

    n, repeats = run.counts.b1_iterations, run.counts.b1_repeats
    value = ai_response(600, seed=1)
    key = "bench:b1:hot"

    cashews = CashewsCache()
    cashews.setup("mem://")
    await cashews.set(key, value, expire=3600)

    async def cashews_get(iterations: int) -> None:
        get = cashews.get
        for _ in range(iterations):
            await get(key)

    from aiocache import SimpleMemoryCache

    aiocache = SimpleMemoryCache()
    await aiocache.set(key, value, ttl=3600)

    async def aiocache_get(iterations: int) -> None:
        get = aiocache.get
        for _ in range(iterations):
            await get(key)

    async def noop(_key: str) -> object:
        return value

    async def floor_await(iterations: int) -> None:
        for _ in range(iterations):
            await noop(key)

    candidates: dict[str, Callable[[int], Awaitable[None]]] = {
        "cashews": cashews_get,
        "floor": floor_await,
    }
    cache = None
    if run.engine_error is None:
        cache = engine_api.make_cache(engine_api.make_config(run.redis.url))
        await cache.__aenter__()
        await cache.set(key, value)
        engine_get = cache.get

        async def engine_get_loop(iterations: int) -> None:
            for _ in range(iterations):
                await engine_get(key)

        if await engine_get(key) != value:
            raise AssertionError("B1: engine get did not return the value just set")
        candidates["engine"] = engine_get_loop

    try:
        timings = await time_async_interleaved(candidates, n, repeats)
        # aiocache is ~60x slower than the engine: a tenth of the iterations keeps the run short.
        timings.update(await time_async_interleaved({"aiocache": aiocache_get}, max(1000, n // 10), repeats))
        floor = timings["floor"]
        run.add(
            Figure(
                "B1", "floor: await of a trivial coroutine", floor.median, "ns/op", note=timing_note(floor)
            )
        )
        aiocache_t = timings["aiocache"]
        run.add(
            Figure(
                "B1",
                "aiocache SimpleMemoryCache get (anchor)",
                aiocache_t.median,
                "ns/op",
                note=timing_note(aiocache_t),
            )
        )
        cashews_t = timings["cashews"]
        run.add(
            Figure(
                "B1", "cashews mem:// get (anchor)", cashews_t.median, "ns/op", note=timing_note(cashews_t)
            )
        )
        if "engine" in timings:
            eng = timings["engine"]
            run.add(
                Figure(
                    "B1",
                    "engine async get, L1 hit",
                    eng.median,
                    "ns/op",
                    "<= 400 ns",
                    eng.median <= 400,
                    timing_note(eng),
                )
            )
            run.add(
                ratio_figure("B1", "engine vs cashews mem:// (faster by)", cashews_t.median, eng.median, 8)
            )
            floor_ratio = eng.median / floor.median
            run.add(
                Figure(
                    "B1",
                    "engine async get / floor (time ratio)",
                    floor_ratio,
                    "x",
                    "<= 2x",
                    floor_ratio <= 2,
                    note=f"best repeat against best repeat: {eng.best / floor.best:.2f}x",
                )
            )
            if cache is not None:
                await b1_parts(run, cache, key, n, repeats)

        # Sync path: the engine's L1-only lookup vs cachetools' LRUCache, both hot key, same loop.
        lru: cachetools.LRUCache[str, Any] = cachetools.LRUCache(maxsize=1000)
        lru[key] = value

        def lru_getitem(iterations: int) -> None:
            for _ in range(iterations):
                lru[key]

        def lru_get(iterations: int) -> None:
            get = lru.get
            for _ in range(iterations):
                get(key)

        # Not a target, a like-for-like reference: LRU plus per-entry expiry, as the engine's L1 has.
        ttl_cache: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=1000, ttl=3600)
        ttl_cache[key] = value

        def ttl_getitem(iterations: int) -> None:
            for _ in range(iterations):
                ttl_cache[key]

        sync_candidates: dict[str, Callable[[int], None]] = {
            "getitem": lru_getitem,
            "get": lru_get,
            "ttl getitem": ttl_getitem,
        }
        local_get = engine_api.sync_local_get(cache) if cache is not None else None
        if local_get is not None:
            if local_get(key) != value:
                raise AssertionError("B1: engine sync L1 lookup did not return the value")

            def engine_local(iterations: int) -> None:
                for _ in range(iterations):
                    local_get(key)

            sync_candidates["engine"] = engine_local
        sync_t = time_sync_interleaved(sync_candidates, n, repeats)
        run.add(
            Figure(
                "B1",
                "cachetools LRUCache[key] (anchor)",
                sync_t["getitem"].median,
                "ns/op",
                note=timing_note(sync_t["getitem"]),
            )
        )
        run.add(
            Figure(
                "B1",
                "cachetools LRUCache.get(key) (anchor)",
                sync_t["get"].median,
                "ns/op",
                note=timing_note(sync_t["get"]),
            )
        )
        run.add(
            Figure(
                "B1",
                "cachetools TTLCache[key] (LRU + expiry, reference)",
                sync_t["ttl getitem"].median,
                "ns/op",
                note=timing_note(sync_t["ttl getitem"]),
            )
        )
        if "engine" in sync_t:
            eng_sync = sync_t["engine"]
            name = getattr(local_get, "__name__", "sync lookup")
            run.add(
                Figure(
                    "B1", f"engine {name}(key), L1 hit", eng_sync.median, "ns/op", note=timing_note(eng_sync)
                )
            )
            for anchor in ("get", "getitem"):
                value_ratio = eng_sync.median / sync_t[anchor].median
                label = "LRUCache.get" if anchor == "get" else "LRUCache[key]"
                run.add(
                    Figure(
                        "B1",
                        f"engine sync / {label} (time ratio)",
                        value_ratio,
                        "x",
                        "<= 1.1x",
                        value_ratio <= 1.1,
                    )
                )
        elif cache is not None:
            run.add(
                Figure("B1", "engine sync L1 path", None, note="no sync lookup method found on TieredCache")
            )
    finally:
        if cache is not None:
            await cache.__aexit__(None, None, None)


async def b1_parts(run: Run, cache: Any, key: str, n: int, repeats: int) -> None:
    """Diagnostic: what each part of the L1-hit path costs over the await itself.

    Replicas of the engine's hit path (TieredCache._install_fast_get) over the engine's own L1 map,
    stats and AI-operation table, each adding one part; the differences between neighbours are
    the parts' costs. Not the engine's code path itself (that is "engine async get" above).
    """
    data = cache._l1_data
    lookup, move_to_end = data.get, data.move_to_end
    stats = cache._stats
    latency_counts = stats.latency_get.counts
    op_hits = stats.op_hits
    now = [time.monotonic()]
    clock = time.monotonic
    monitoring = cache._monitoring  # baked into the engine's closure the same way

    async def p_lookup(k: str) -> Any:
        entry = lookup(k)
        if entry is not None:
            return entry.value
        return None

    async def p_coarse(k: str) -> Any:
        entry = lookup(k)
        if entry is not None and entry.deadline > now[0]:
            return entry.value
        return None

    async def p_exact(k: str) -> Any:
        entry = lookup(k)
        if entry is not None and entry.deadline > clock():
            return entry.value
        return None

    async def p_lru(k: str) -> Any:
        entry = lookup(k)
        if entry is not None and entry.deadline > now[0]:
            move_to_end(k)
            return entry.value
        return None

    pending = [0]

    async def p_hits(k: str) -> Any:
        entry = lookup(k)
        if entry is not None and entry.deadline > now[0]:
            move_to_end(k)
            pending[0] += 1
            return entry.value
        return None

    async def p_two_counters(k: str) -> Any:
        entry = lookup(k)
        if entry is not None and entry.deadline > now[0]:
            move_to_end(k)
            stats.hits_l1 += 1
            if monitoring:
                latency_counts[0] += 1
            return entry.value
        return None

    async def p_full(k: str) -> Any:
        entry = lookup(k)
        if entry is not None and entry.deadline > now[0]:
            move_to_end(k)
            pending[0] += 1
            op = entry.op
            if op is not None:
                op_hits[op] += 1
            return entry.value
        return None

    async def noop(_k: str) -> Any:
        return None

    parts = {
        "floor": noop,
        "+ L1 lookup": p_lookup,
        "+ expiry, coarse clock": p_coarse,
        "(expiry, exact time.monotonic())": p_exact,
        "+ LRU move_to_end": p_lru,
        "+ hit count (one cell: hits_l1 and the latency bucket)": p_hits,
        "(hits_l1 and latency bucket as two increments, before)": p_two_counters,
        "+ per-operation count, from the entry (= the engine's path)": p_full,
    }

    def loop_of(fn: Callable[[str], Awaitable[Any]]) -> Callable[[int], Awaitable[None]]:
        async def loop(iterations: int) -> None:
            for _ in range(iterations):
                await fn(key)

        return loop

    timings = await time_async_interleaved({name: loop_of(fn) for name, fn in parts.items()}, n, repeats)
    previous = timings["floor"].median
    for name in parts:
        if name == "floor":
            continue
        median = timings[name].median
        if name.startswith("(expiry"):
            note = f"{median - timings['+ L1 lookup'].median:+.0f} ns over the lookup (coarse: "
            note += f"{timings['+ expiry, coarse clock'].median - timings['+ L1 lookup'].median:+.0f} ns)"
        elif name.startswith("("):
            note = f"{median - timings['+ LRU move_to_end'].median:+.0f} ns over the LRU move (one cell: "
            hit_key = "+ hit count (one cell: hits_l1 and the latency bucket)"
            note += f"{timings[hit_key].median - timings['+ LRU move_to_end'].median:+.0f} ns)"
        else:
            note = f"{median - previous:+.0f} ns for this part"
            previous = median
        run.add(Figure("B1", f"diagnostic: hit path {name}", median, "ns/op", note=note))


# ==================================================================================================
# B2: L2 hit


async def scenario_b2(run: Run) -> None:
    """L2 hits with L1 off: engine single get vs raw GET; get_many / concurrent gets vs sequential."""
    n_keys, repeats, batch = run.counts.b2_keys, run.counts.b2_repeats, run.counts.b2_batch
    raw = run.raw_client()
    value = ai_response(600, seed=2)
    encoded = orjson.dumps(value)
    raw_keys = [f"bench:b2:raw:{i}" for i in range(n_keys)]
    async with raw.pipeline(transaction=False) as pipe:
        for k in raw_keys:
            pipe.set(k, encoded, ex=3600)
        await pipe.execute()

    async def raw_sequential(iterations: int) -> None:
        get = raw.get
        for i in range(iterations):
            await get(raw_keys[i % n_keys])

    async def raw_mget(iterations: int) -> None:
        mget = raw.mget
        for start in range(0, iterations, batch):
            offset = start % n_keys
            await mget(raw_keys[offset : offset + batch])

    candidates: dict[str, Callable[[int], Awaitable[None]]] = {
        "raw GET": raw_sequential,
        "raw MGET": raw_mget,
    }
    cache = None
    if run.engine_error is None:
        config = engine_api.make_config(run.redis.url, engine_api.l1_disabled_overrides())
        cache = engine_api.make_cache(config)
        await cache.__aenter__()
        keys = [f"bench:b2:{i}" for i in range(n_keys)]
        await cache.set_many(dict.fromkeys(keys, value))
        if await cache.get(keys[0]) != value:
            raise AssertionError("B2: engine get with L1 off did not return the value from Redis")
        hits_before = engine_api.l2_hits(cache)

        async def engine_sequential(iterations: int) -> None:
            get = cache.get
            for i in range(iterations):
                await get(keys[i % n_keys])

        async def engine_get_many(iterations: int) -> None:
            get_many = cache.get_many
            for start in range(0, iterations, batch):
                offset = start % n_keys
                await get_many(keys[offset : offset + batch])

        async def engine_gathered(iterations: int) -> None:
            get = cache.get
            for start in range(0, iterations, batch):
                offset = start % n_keys
                await asyncio.gather(*[get(k) for k in keys[offset : offset + batch]])

        # Diagnostic: the L2 layer alone (RedisL2.get on the engine's own Redis keys), so the
        # overhead over raw GET can be split between the facade/codec and the Redis backend.
        l2 = engine_api.l2_of(cache)
        redis_keys = engine_api.redis_keys_of(cache, keys)

        async def l2_sequential(iterations: int) -> None:
            get = l2.get
            assert redis_keys is not None
            for i in range(iterations):
                await get(redis_keys[i % n_keys])

        candidates.update(
            {
                "engine get": engine_sequential,
                "engine get_many": engine_get_many,
                "engine gather": engine_gathered,
            }
        )
        if l2 is not None and redis_keys is not None:
            candidates["l2 get"] = l2_sequential

    try:
        iterations = max(run.counts.b2_iterations, batch * 10)
        timings = await time_async_interleaved(candidates, iterations, repeats)
        raw_t = timings["raw GET"]
        run.add(
            Figure(
                "B2",
                "raw redis-py GET, sequential (anchor)",
                raw_t.ops_per_s(),
                "ops/s",
                note=f"{raw_t.median / 1000:.1f} us/op; " + timing_note(raw_t),
            )
        )
        run.add(
            Figure("B2", f"raw redis-py MGET x{batch} (anchor)", timings["raw MGET"].ops_per_s(), "keys/s")
        )
        if cache is not None:
            eng = timings["engine get"]
            run.add(
                Figure(
                    "B2",
                    "engine get, L2 hit, sequential",
                    eng.ops_per_s(),
                    "ops/s",
                    note=f"{eng.median / 1000:.1f} us/op; " + timing_note(eng),
                )
            )
            run.add(
                ratio_figure(
                    "B2",
                    "engine get / raw GET (throughput)",
                    raw_t.median,
                    eng.median,
                    0.95,
                    note=f"best repeat against best repeat: {raw_t.best / eng.best:.3f}x",
                )
            )
            if "l2 get" in timings:
                l2_t = timings["l2 get"]
                run.add(
                    Figure(
                        "B2",
                        "diagnostic: RedisL2.get alone (no facade, no decode)",
                        l2_t.ops_per_s(),
                        "ops/s",
                        note=f"{l2_t.median / 1000:.1f} us/op; overhead over raw GET: L2 layer "
                        f"{(l2_t.median - raw_t.median) / 1000:+.1f} us, facade+decode "
                        f"{(eng.median - l2_t.median) / 1000:+.1f} us",
                    )
                )
            cpu_timings = await time_async_interleaved(
                {"raw GET": raw_sequential, "engine get": engine_sequential},
                min(iterations, 2000),
                repeats,
                clock=time.process_time_ns,  # this process's CPU time, not wall time
            )
            cpu = {name: timing.median for name, timing in cpu_timings.items()}
            run.add(
                Figure(
                    "B2",
                    "diagnostic: CPU time per GET, engine / raw (process_time)",
                    cpu["engine get"] / cpu["raw GET"],
                    "x",
                    note=f"raw {cpu['raw GET'] / 1000:.1f} us, engine {cpu['engine get'] / 1000:.1f} us "
                    "of this process's CPU per GET (medians): less sensitive than wall time to a busy core",
                )
            )
            many = timings["engine get_many"]
            gathered = timings["engine gather"]
            run.add(Figure("B2", f"engine get_many x{batch}", many.ops_per_s(), "keys/s"))
            run.add(ratio_figure("B2", "get_many / sequential get (throughput)", eng.median, many.median, 5))
            run.add(Figure("B2", f"engine {batch} concurrent gets (gather)", gathered.ops_per_s(), "keys/s"))
            run.add(
                ratio_figure(
                    "B2", "concurrent gets / sequential get (throughput)", eng.median, gathered.median, 5
                )
            )
            hits = engine_api.l2_hits(cache)
            if hits is not None and hits_before is not None:
                run.add(
                    Figure(
                        "B2",
                        "engine L2 hits counted during B2",
                        hits - hits_before,
                        "",
                        note="confirms the gets were served by Redis, not L1",
                    )
                )
    finally:
        if cache is not None:
            await cache.__aexit__(None, None, None)
        await raw.delete(*raw_keys)
        await raw.aclose()


# ==================================================================================================
# B3: stampede


async def scenario_b3(run: Run) -> None:
    """1,000 concurrent get_or_compute of one missing key, 50 ms loader; one and two engines."""
    from cashews import Cache as CashewsCache

    concurrency = run.counts.b3_concurrency
    value = ai_response(400, seed=3)

    # Anchor: the naive cache-aside every service writes first (cashews get, miss, compute, set).
    cashews = CashewsCache()
    cashews.setup("mem://")
    naive_calls = 0

    async def naive(key: str) -> Any:
        nonlocal naive_calls
        found = await cashews.get(key)
        if found is not None:
            return found
        naive_calls += 1
        await asyncio.sleep(0.05)
        await cashews.set(key, value, expire=60)
        return value

    await asyncio.gather(*[naive("bench:b3:naive") for _ in range(concurrency)])
    run.add(
        Figure("B3", f"naive cache-aside, {concurrency} concurrent (anchor)", naive_calls, "loader calls")
    )

    if run.engine_error is not None:
        return

    async def stampede(caches: list[Any], key: str) -> tuple[int, float, int]:
        calls = 0

        async def loader() -> Any:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return value

        start = time.perf_counter()
        results = await asyncio.wait_for(
            asyncio.gather(
                *[caches[i % len(caches)].get_or_compute(key, loader) for i in range(concurrency)],
                return_exceptions=True,
            ),
            timeout=60,
        )
        elapsed = time.perf_counter() - start
        wrong = sum(1 for r in results if r != value)
        return calls, elapsed, wrong

    one = engine_api.make_cache(engine_api.make_config(run.redis.url))
    async with one:
        calls, elapsed, wrong = await stampede([one], f"bench:b3:one:{time.time_ns()}")
    run.add(
        Figure(
            "B3",
            f"one engine, {concurrency} concurrent get_or_compute",
            calls,
            "loader calls",
            "== 1",
            calls == 1,
            f"all done in {elapsed * 1000:.0f} ms; {wrong} wrong/failed results",
        )
    )

    for lease in (False, True):
        overrides = engine_api.lease_overrides(lease)
        if overrides is None:
            run.add(Figure("B3", "two engines, lease lock", None, note="no lease option found in the config"))
            continue
        config = engine_api.make_config(run.redis.url, overrides)
        a, b = engine_api.make_cache(config), engine_api.make_cache(config)
        async with a, b:
            calls, elapsed, wrong = await stampede([a, b], f"bench:b3:two:{lease}:{time.time_ns()}")
        label = "on" if lease else "off"
        target, passed = ("== 1", calls == 1) if lease else ("", None)
        run.add(
            Figure(
                "B3",
                f"two engines sharing Redis, lease lock {label}",
                calls,
                "loader calls",
                target,
                passed,
                f"all done in {elapsed * 1000:.0f} ms; {wrong} wrong/failed results",
            )
        )


# ==================================================================================================
# B4: Redis outage


@dataclass
class OutageResult:
    """What one outage run observed."""

    client: str
    kind: str
    ops: int = 0
    exceptions: int = 0
    exception_types: dict[str, int] = field(default_factory=dict)
    slow_ops: int = 0  # > 5 ms, any phase
    slow_ops_outage: int = 0
    outage_ops: int = 0
    outage_latencies_ns: list[int] = field(default_factory=list)  # after breaker opened (engine)
    outage_all_latencies_ns: list[int] = field(default_factory=list)
    outage_hits: int = 0
    breaker_opened_after_ms: float | None = None
    recovery_s: float | None = None
    breaker_closed_after_s: float | None = None
    worst_op_ms: float = 0.0
    capped: list[str] = field(default_factory=list)
    restore_ms: float = 0.0


class OutageClient:
    """The operations an outage run needs from a cache (engine or anchor)."""

    name = "client"

    async def open(self) -> None:
        """Connect."""

    async def load(self, items: dict[str, Any]) -> None:
        """Store items through this client (they land in its local tier and in Redis)."""

    async def load_remote_only(self, items: dict[str, Any]) -> None:
        """Store items in Redis without this client's local tier holding them."""

    async def get(self, key: str) -> Any:
        """One read."""

    def breaker_open(self) -> bool | None:
        """Whether the client has stopped calling Redis (None: it has no such notion)."""
        return None

    async def close(self) -> None:
        """Disconnect (bounded; never raises)."""


class EngineOutageClient(OutageClient):
    """The engine, sized so the hot set fits L1 (the scenario is about L2 failing, not L1 size)."""

    name = "engine"

    def __init__(self, url: str, l1_entries: int) -> None:
        self.url = url
        self.l1_entries = l1_entries
        self.cache: Any = None
        self.config: Any = None

    async def open(self) -> None:
        self.config = engine_api.make_config(self.url, engine_api.l1_size_overrides(self.l1_entries))
        self.cache = engine_api.make_cache(self.config)
        await self.cache.__aenter__()

    async def load(self, items: dict[str, Any]) -> None:
        await self.cache.set_many(items)

    async def load_remote_only(self, items: dict[str, Any]) -> None:
        writer = engine_api.make_cache(self.config)
        async with writer:
            await writer.set_many(items)

    async def get(self, key: str) -> Any:
        return await self.cache.get(key)

    def breaker_open(self) -> bool | None:
        return engine_api.breaker_is_open(self.cache)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.cache.__aexit__(None, None, None), timeout=10)


class CashewsOutageClient(OutageClient):
    """cashews with a redis backend, given the engine's timeouts so the comparison is like for like."""

    def __init__(
        self, url: str, client_side: bool, socket_timeout_s: float, connect_timeout_s: float
    ) -> None:
        self.url = url
        self.client_side = client_side
        self.kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": connect_timeout_s,
            "client_side": client_side,
        }
        self.name = "cashews redis:// client_side" if client_side else "cashews redis://"
        self.cache: Any = None

    def _new(self) -> Any:
        from cashews import Cache as CashewsCache

        cache = CashewsCache()
        cache.setup(self.url, **self.kwargs)
        return cache

    async def open(self) -> None:
        self.cache = self._new()
        await self.cache.init()

    async def load(self, items: dict[str, Any]) -> None:
        await self.cache.set_many(items, expire=3600)

    async def load_remote_only(self, items: dict[str, Any]) -> None:
        writer = self._new()
        await writer.init()
        try:
            await writer.set_many(items, expire=3600)
        finally:
            await writer.close()

    async def get(self, key: str) -> Any:
        return await self.cache.get(key)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.cache.close(), timeout=10)


async def snapshot_redis(url: str) -> list[tuple[bytes, int, bytes]]:
    """Every key of the bench Redis as (key, pttl, DUMP payload), so it can be restored after a kill."""
    client = redis_asyncio.Redis.from_url(url)
    out: list[tuple[bytes, int, bytes]] = []
    try:
        keys = [k async for k in client.scan_iter(count=1000)]
        async with client.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.pttl(k)
                pipe.dump(k)
            replies = await pipe.execute()
        for i, k in enumerate(keys):
            pttl, payload = replies[2 * i], replies[2 * i + 1]
            if payload is not None:
                out.append((k, max(0, int(pttl)), payload))
    finally:
        await client.aclose()
    return out


async def restore_redis(url: str, snapshot: list[tuple[bytes, int, bytes]]) -> None:
    """Put a snapshot back into an empty Redis (the restarted server has lost its data)."""
    client = redis_asyncio.Redis.from_url(url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for k, pttl, payload in snapshot:
                pipe.restore(k, pttl, payload, replace=True)
            await pipe.execute()
    finally:
        await client.aclose()


async def outage_run(run: Run, client: OutageClient, kind: str) -> OutageResult:
    """Paced gets at 90% local hits; Redis goes away at 20% of the ops and comes back at 60%.

    Phases are bounded both in ops and in wall time, so a client that pays a long timeout on every
    remote call still finishes (the result then says which phase hit its time cap).
    """
    counts = run.counts
    total = counts.b4_ops
    outage_at, return_at = total // 5, total * 3 // 5
    phase_caps_s = {"before": 5.0, "outage": counts.b4_outage_cap_s, "after": 8.0}
    recovery_cap_s = counts.b4_recovery_cap_s
    result = OutageResult(client=client.name, kind=kind)
    server = RedisServer(run.placement.server_cores)
    server.start()
    blackhole = Blackhole(server.port, run.placement.server_cores)
    hot = {f"bench:b4:hot:{i}": ai_response(200, seed=i) for i in range(100)}
    cold_keys = [f"bench:b4:cold:{i}" for i in range(counts.b4_cold_keys)]
    cold_value = ai_response(200, seed=7)
    client_opened = False
    try:
        if isinstance(client, EngineOutageClient):
            client.url = server.url
        else:
            client.url = server.url  # type: ignore[attr-defined]
        await client.open()
        client_opened = True
        await client.load(hot)
        await client.load_remote_only(dict.fromkeys(cold_keys, cold_value))
        snapshot = await snapshot_redis(server.url)
        # Warm: every hot key read once so the local tier holds it.
        for k in hot:
            await client.get(k)

        hot_keys = list(hot)
        cold_iter = iter(cold_keys)
        interval = 1.0 / counts.b4_rate_per_s
        phase = "before"
        phase_start = time.perf_counter()
        run_start = phase_start
        outage_start = 0.0
        returned_at: float | None = None
        breaker_seen_at: float | None = None
        i = 0

        async def one_get(key: str, is_cold: bool) -> tuple[int, Any]:
            begin = time.perf_counter_ns()
            try:
                got = await client.get(key)
            except Exception as exc:
                result.exceptions += 1
                name = type(exc).__name__
                result.exception_types[name] = result.exception_types.get(name, 0) + 1
                got = None
            return time.perf_counter_ns() - begin, got

        while i < total:
            now = time.perf_counter()
            if phase == "before" and (i >= outage_at or now - phase_start > phase_caps_s["before"]):
                if i < outage_at:
                    result.capped.append("before")
                server.stop()
                if kind == "blackhole":
                    blackhole.start()
                phase, phase_start = "outage", time.perf_counter()
                outage_start = phase_start
            elif phase == "outage" and (i >= return_at or now - phase_start > phase_caps_s["outage"]):
                if i < return_at:
                    result.capped.append("outage")
                blackhole.stop()
                server.start()
                restore_begin = time.perf_counter()
                await restore_redis(server.url, snapshot)
                result.restore_ms = (time.perf_counter() - restore_begin) * 1000
                phase, phase_start = "after", time.perf_counter()
                returned_at = phase_start
            elif phase == "after" and now - phase_start > phase_caps_s["after"]:
                result.capped.append("after")
                break

            is_cold = i % 10 == 9
            key = next(cold_iter, cold_keys[-1]) if is_cold else hot_keys[i % len(hot_keys)]
            elapsed_ns, got = await one_get(key, is_cold)
            result.ops += 1
            result.worst_op_ms = max(result.worst_op_ms, elapsed_ns / 1e6)
            slow = elapsed_ns > 5_000_000
            result.slow_ops += slow
            if phase == "outage":
                result.outage_ops += 1
                result.slow_ops_outage += slow
                result.outage_all_latencies_ns.append(elapsed_ns)
                result.outage_hits += got is not None
                state = client.breaker_open()
                if breaker_seen_at is None and state:
                    breaker_seen_at = time.perf_counter()
                    result.breaker_opened_after_ms = (breaker_seen_at - outage_start) * 1000
                elif breaker_seen_at is not None:
                    result.outage_latencies_ns.append(elapsed_ns)
            elif phase == "after":
                assert returned_at is not None
                if is_cold and got is not None and result.recovery_s is None:
                    result.recovery_s = time.perf_counter() - returned_at
                if result.breaker_closed_after_s is None and client.breaker_open() is False:
                    result.breaker_closed_after_s = time.perf_counter() - returned_at
            i += 1
            # Pace: issue ops at the configured rate, yielding to the loop so background tasks
            # (reconnects, pub/sub listeners) run as they would in a service.
            due = run_start + i * interval
            delay = due - time.perf_counter()
            if i % 10 == 0 or delay > 0.002:
                await asyncio.sleep(max(0.0, delay))

        # Not recovered by the end of the ops: keep probing with cold keys, bounded.
        if returned_at is not None and result.recovery_s is None:
            deadline = time.perf_counter() + recovery_cap_s
            while time.perf_counter() < deadline:
                cold_key = next(cold_iter, None)
                if cold_key is None:
                    break
                _, got = await one_get(cold_key, True)
                if result.breaker_closed_after_s is None and client.breaker_open() is False:
                    result.breaker_closed_after_s = time.perf_counter() - returned_at
                if got is not None:
                    result.recovery_s = time.perf_counter() - returned_at
                    break
                await asyncio.sleep(0.02)
        if breaker_seen_at is None:
            # No breaker (or it never reported open): the steady state is every op of the outage.
            result.outage_latencies_ns = result.outage_all_latencies_ns
    finally:
        if client_opened:
            await client.close()
        blackhole.stop()
        server.close()
    return result


def add_outage_figures(run: Run, res: OutageResult, with_targets: bool) -> None:
    """Print one outage run's figures (targets apply to the engine only)."""
    scenario = "B4"
    tag = f"{res.client} / {res.kind}"
    lat = [x / 1000 for x in res.outage_latencies_ns]  # microseconds
    p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
    capped = f"; phase time cap hit: {', '.join(res.capped)}" if res.capped else ""
    run.add(
        Figure(scenario, f"{tag}: ops done", res.ops, "", note=f"{res.outage_ops} during the outage{capped}")
    )
    run.add(
        Figure(
            scenario,
            f"{tag}: caller exceptions",
            res.exceptions,
            "",
            "== 0" if with_targets else "",
            (res.exceptions == 0) if with_targets else None,
            ", ".join(f"{k} x{v}" for k, v in res.exception_types.items()),
        )
    )
    run.add(
        Figure(
            scenario,
            f"{tag}: ops that paid > 5 ms",
            res.slow_ops,
            "",
            "<= 5" if with_targets else "",
            (res.slow_ops <= 5) if with_targets else None,
            f"{res.slow_ops_outage} during the outage; worst op {res.worst_op_ms:.0f} ms",
        )
    )
    window = (
        f"after the breaker opened ({res.breaker_opened_after_ms:.0f} ms into the outage)"
        if res.breaker_opened_after_ms is not None
        else "every op of the outage (no breaker state to go by)"
    )
    run.add(Figure(scenario, f"{tag}: p50 latency in outage", p50, "us", note=window))
    run.add(
        Figure(
            scenario,
            f"{tag}: p99 latency in outage",
            p99,
            "us",
            "<= 1000 us" if with_targets else "",
            (p99 <= 1000) if with_targets else None,
            f"{len(lat)} ops; max {max(lat, default=float('nan')):.0f} us",
        )
    )
    served = res.outage_hits / res.outage_ops * 100 if res.outage_ops else float("nan")
    run.add(
        Figure(
            scenario,
            f"{tag}: reads answered with a value in outage",
            served,
            "%",
            note="90% are hot keys; a local tier cleared on disconnect answers fewer",
        )
    )
    recovery = res.recovery_s
    run.add(
        Figure(
            scenario,
            f"{tag}: recovery after Redis returned",
            recovery,
            "s",
            "<= 5 s" if with_targets else "",
            (recovery is not None and recovery <= 5) if with_targets else None,
            ("no L2 hit within the bound" if recovery is None else "to the first L2 hit")
            + f" after Redis answered again; data restore took {res.restore_ms:.0f} ms (not billed)"
            + (
                f"; breaker closed after {res.breaker_closed_after_s:.2f} s"
                if res.breaker_closed_after_s is not None
                else ""
            ),
        )
    )


async def scenario_b4(run: Run) -> None:
    """Redis outage: refused port and blackhole; the engine, then cashews in the same outage."""
    socket_timeout_s, connect_timeout_s = 1.0, 1.0
    if run.engine_error is None:
        config = engine_api.make_config(run.redis.url)
        socket_timeout_s, connect_timeout_s = engine_api.redis_timeouts(config)
        run.conditions["B4 engine timeouts"] = {"socket_s": socket_timeout_s, "connect_s": connect_timeout_s}
        for kind in ("refused", "blackhole"):
            client = EngineOutageClient(run.redis.url, l1_entries=50_000)
            res = await outage_run(run, client, kind)
            add_outage_figures(run, res, with_targets=True)
    for client_side in (False, True):
        for kind in ("refused", "blackhole"):
            anchor = CashewsOutageClient(run.redis.url, client_side, socket_timeout_s, connect_timeout_s)
            res = await outage_run(run, anchor, kind)
            add_outage_figures(run, res, with_targets=False)


# ==================================================================================================
# B5: large values


async def scenario_b5(run: Run) -> None:
    """1 MiB JSON: event-loop stall while set() encodes/compresses; compression ratio."""
    if run.engine_error is not None:
        run.add(Figure("B5", "engine", None, note="engine not importable: " + run.engine_error))
        return
    count, size = run.counts.b5_values, run.counts.b5_value_bytes
    values = [large_ai_document(size, seed=100 + i) for i in range(count)]
    encoded_sizes = [len(orjson.dumps(v)) for v in values]
    # The anchor: what encoding alone costs on the loop (orjson is what the engine uses).
    encode_ms = statistics.median([time_call_ms(orjson.dumps, v) for v in values])
    # And parsing it back: a worker thread running either call holds the GIL for its whole
    # duration, so offloading them to a thread does not free the loop.
    decode_ms = statistics.median([time_call_ms(orjson.loads, orjson.dumps(v)) for v in values])
    raw = run.raw_client()
    await raw.flushdb()
    config = engine_api.make_config(run.redis.url)
    cache = engine_api.make_cache(config)
    stalls: list[float] = []
    baselines: list[float] = []
    set_ms: list[float] = []
    async with cache:
        for i, v in enumerate(values):
            # An idle window as long as the previous set() just before each set(), so a neighbour's
            # burst of load on this shared machine lands on the baseline and the measurement alike.
            window_s = (set_ms[-1] / 1000 if set_ms else 0.05) + 0.003
            async with LoopStallMonitor() as idle:
                await asyncio.sleep(window_s)
            baselines.append(idle.max_stall_s)
            async with LoopStallMonitor() as monitor:
                begin = time.perf_counter()
                await cache.set(f"bench:b5:{i}", v)
                set_ms.append((time.perf_counter() - begin) * 1000)
                await asyncio.sleep(0.003)  # let the ticker observe the tail
            stalls.append(monitor.max_stall_s)
        get_stalls: list[float] = []
        other = engine_api.make_cache(
            engine_api.make_config(run.redis.url, engine_api.l1_disabled_overrides())
        )
        async with other:
            for i, v in enumerate(values):
                async with LoopStallMonitor() as monitor:
                    got = await other.get(f"bench:b5:{i}")
                    await asyncio.sleep(0.003)
                if got != v:
                    raise AssertionError("B5: 1 MiB value did not round-trip through Redis")
                get_stalls.append(monitor.max_stall_s)
    baseline_s = statistics.median(baselines)
    stored = []
    async for k in raw.scan_iter(match="*bench:b5:[0-9]*", count=1000):
        stored.append(int(await raw.strlen(k)) if await raw.type(k) == b"string" else 0)
    stored = sorted(stored, reverse=True)[: len(values)]
    await raw.flushdb()
    await raw.aclose()

    stall_ms = statistics.median(stalls) * 1000
    worst_ms = max(stalls) * 1000
    base_ms = baseline_s * 1000
    run.add(
        Figure(
            "B5",
            "ticker baseline jitter (max lateness, idle loop)",
            base_ms,
            "ms",
            note="median over idle windows as long as a set(), each just before one",
        )
    )
    run.add(
        Figure(
            "B5",
            "orjson.dumps of one value on the loop (anchor)",
            encode_ms,
            "ms",
            note=f"values are {statistics.median(encoded_sizes) / 1048576:.2f} MiB of JSON",
        )
    )
    run.add(Figure("B5", "orjson.loads of one value (anchor)", decode_ms, "ms"))
    run.add(
        Figure(
            "B5",
            "max loop stall during set(), median over values",
            stall_ms,
            "ms",
            f"<= {base_ms + 1:.2f} ms",
            stall_ms <= base_ms + 1,
            f"worst {worst_ms:.2f} ms; baseline {base_ms:.2f} + 1 ms allowed",
        )
    )
    run.add(Figure("B5", "set() wall time, median", statistics.median(set_ms), "ms"))
    run.add(
        Figure(
            "B5",
            "max loop stall during get() from L2, median",
            statistics.median(get_stalls) * 1000,
            "ms",
            note=f"worst {max(get_stalls) * 1000:.2f} ms",
        )
    )
    if stored and min(stored) > 0:
        ratio = statistics.median(encoded_sizes) / statistics.median(stored)
        run.add(
            Figure(
                "B5",
                "compression ratio (JSON bytes / bytes in Redis)",
                ratio,
                "x",
                ">= 2x",
                ratio >= 2,
                f"{statistics.median(stored):,.0f} B stored per value",
            )
        )
    ratio_stat = engine_api.compression_ratio_from_stats(cache)
    if ratio_stat is not None:
        run.add(Figure("B5", "compression ratio reported by engine stats", ratio_stat, "x"))


# ==================================================================================================
# B6: coherence and invalidation


async def scenario_b6(run: Run) -> None:
    """Coherence lag between two engines; namespace bump vs SCAN+UNLINK of many keys."""
    n_keys = run.counts.b6_keys
    raw = run.raw_client()
    await raw.flushdb()
    # Anchor: raw SCAN + UNLINK of n_keys plain keys.
    load_begin = time.perf_counter()
    await pipeline_load(raw, [f"bench:b6:scan:{i}" for i in range(n_keys)], b"x" * 100)
    load_s = time.perf_counter() - load_begin
    begin = time.perf_counter()
    deleted = 0
    batch: list[bytes] = []
    async for k in raw.scan_iter(match="bench:b6:scan:*", count=1000):
        batch.append(k)
        if len(batch) >= 500:
            deleted += await raw.unlink(*batch)
            batch.clear()
    if batch:
        deleted += await raw.unlink(*batch)
    scan_s = time.perf_counter() - begin
    run.add(
        Figure(
            "B6",
            f"raw SCAN(COUNT 1000)+UNLINK of {n_keys:,} keys (anchor)",
            scan_s * 1000,
            "ms",
            note=f"{deleted:,} deleted; loading them by pipeline took {load_s * 1000:.0f} ms",
        )
    )
    if run.engine_error is not None:
        await raw.aclose()
        return

    # Coherence lag: A deletes, B's L1 drops the key.
    config = engine_api.make_config(run.redis.url)
    a, b = engine_api.make_cache(config), engine_api.make_cache(config)
    lags: list[float] = []
    call_ms: list[float] = []
    lost = 0
    async with a, b:
        local_get = engine_api.sync_local_get(b)
        value = ai_response(200, seed=6)
        await asyncio.sleep(0.2)  # both subscriptions up
        for i in range(run.counts.b6_samples):
            key = f"bench:b6:coh:{i}"
            await a.set(key, value)
            if await b.get(key) != value:
                raise AssertionError("B6: engine B did not read engine A's value")
            if local_get is not None and local_get(key) is None:
                raise AssertionError("B6: engine B did not keep the value in L1")
            await asyncio.sleep(0.001)
            begin = time.perf_counter()
            task = asyncio.create_task(timed(a.delete(key)))
            deadline = begin + 1.0
            dropped = False
            while time.perf_counter() < deadline:
                present = local_get(key) if local_get is not None else await b.get(key)
                if present is None:
                    dropped = True
                    break
                await asyncio.sleep(0)
            end = time.perf_counter()
            call_ms.append(await task)
            if dropped:
                lags.append((end - begin) * 1000)
            else:
                lost += 1
        stats_lag = engine_api.coherence_lag_from_stats(b)
    p50, p95 = percentile(lags, 0.5), percentile(lags, 0.95)
    run.add(
        Figure(
            "B6",
            "coherence lag p50 (A.delete called -> B's L1 miss)",
            p50,
            "ms",
            note=f"{len(lags)} samples, {lost} not dropped within 1 s",
        )
    )
    run.add(Figure("B6", "coherence lag p95", p95, "ms", "<= 2 ms", p95 <= 2))
    run.add(
        Figure(
            "B6",
            "A.delete() call itself, p50",
            percentile(call_ms, 0.5),
            "ms",
            note="DEL + PUBLISH round trips; the lag above includes it",
        )
    )
    if stats_lag is not None:
        run.add(
            Figure(
                "B6",
                "coherence lag from engine B's own histogram, p95",
                stats_lag[1],
                "ms",
                note=f"p50 {stats_lag[0]:.2f} ms over {stats_lag[2]} messages (bucket upper bounds)",
            )
        )

    # Namespace bump vs pattern invalidation of the same number of engine keys.
    ns = "bench-b6"
    cache = engine_api.make_cache(engine_api.make_config(run.redis.url, engine_api.namespace_overrides(ns)))
    async with cache:
        value = {"v": 1}
        keys = [f"k{i}" for i in range(n_keys)]
        sample = keys[:: max(1, n_keys // 100)]
        load_s = await load_engine_keys(cache, keys, value)
        before = await raw.dbsize()
        begin = time.perf_counter()
        count = await cache.invalidate(namespace=ns)
        ns_s = time.perf_counter() - begin
        still = count_present(await cache.get_many(sample))
        run.add(
            Figure(
                "B6",
                f"engine invalidate(namespace=) over {n_keys:,} keys",
                ns_s * 1000,
                "ms",
                note=f"returned {count!r}; {still}/{len(sample)} sampled keys still readable; "
                f"Redis held {before:,} keys (old versions expire by TTL); set_many load took {load_s:.1f} s",
            )
        )
        # Same keys again (new namespace version), then the engine's pattern invalidation.
        await load_engine_keys(cache, keys, value)
        begin = time.perf_counter()
        # Only the live version's keys, so the pattern deletes the same 200k keys the bump voided
        # (the previous version's keys are still in Redis, waiting for their TTL).
        version = count.get("namespace_version") if isinstance(count, dict) else None
        count_p = await cache.invalidate(pattern=engine_api.pattern_for_namespace(ns, version))
        pattern_s = time.perf_counter() - begin
        still_p = count_present(await cache.get_many(sample))
        after = await raw.dbsize()
        run.add(
            Figure(
                "B6",
                f"engine invalidate(pattern=) (SCAN+UNLINK) over {n_keys:,} keys",
                pattern_s * 1000,
                "ms",
                note=f"returned {count_p!r}; {still_p}/{len(sample)} sampled keys still readable; "
                f"Redis holds {after:,} keys after",
            )
        )
        run.add(ratio_figure("B6", "namespace bump faster than pattern deletion by", pattern_s, ns_s, None))
    await raw.flushdb()
    await raw.aclose()


async def load_engine_keys(cache: Any, keys: list[str], value: Any) -> float:
    """set_many in chunks of 10k (each one pipeline in the engine); returns seconds taken."""
    begin = time.perf_counter()
    for start in range(0, len(keys), 10_000):
        await cache.set_many(dict.fromkeys(keys[start : start + 10_000], value))
    return time.perf_counter() - begin


def count_present(result: Any) -> int:
    """How many of a get_many result are hits (the result may be a list or a dict)."""
    values = result.values() if isinstance(result, dict) else result
    return sum(1 for v in values if v is not None)


def time_call_ms(fn: Callable[[Any], Any], argument: Any) -> float:
    """How long fn(argument) takes, in ms."""
    begin = time.perf_counter()
    fn(argument)
    return (time.perf_counter() - begin) * 1000


async def timed(awaitable: Awaitable[Any]) -> float:
    """Await and return how long it took, in ms."""
    begin = time.perf_counter()
    await awaitable
    return (time.perf_counter() - begin) * 1000


async def pipeline_load(client: redis_asyncio.Redis, keys: list[str], value: bytes) -> None:
    """SET many keys fast: pipelines of 10k commands, no transaction."""
    for start in range(0, len(keys), 10_000):
        async with client.pipeline(transaction=False) as pipe:
            for k in keys[start : start + 10_000]:
                pipe.set(k, value, ex=3600)
            await pipe.execute()


# ==================================================================================================
# driver

SCENARIOS: dict[str, tuple[str, Callable[[Run], Awaitable[None]]]] = {
    "B1": ("L1 hit", scenario_b1),
    "B2": ("L2 hit (L1 off)", scenario_b2),
    "B3": ("stampede", scenario_b3),
    "B4": ("Redis outage", scenario_b4),
    "B5": ("1 MiB JSON values", scenario_b5),
    "B6": ("coherence and invalidation", scenario_b6),
}


# A scenario that has not finished in this time is stuck (a hang in the engine or the bench): its
# tasks' stacks are printed and it is abandoned, so one hang cannot stop the whole run.
SCENARIO_TIME_CAP_S = {True: 90.0, False: 900.0}


async def run_bounded(coro: Awaitable[None], cap_s: float, name: str) -> None:
    """Await a scenario for at most cap_s; on timeout dump every task's stack and raise TimeoutError."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=cap_s)
    if task in done:
        task.result()
        return
    print(f"  {name} still running after {cap_s:.0f} s; stacks of the pending tasks:")
    for pending in asyncio.all_tasks():
        if pending is not asyncio.current_task():
            pending.print_stack(limit=12, file=sys.stdout)
    task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(task, timeout=15)
    raise TimeoutError(f"{name} did not finish within {cap_s:.0f} s (stacks above)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run of seconds")
    parser.add_argument("--only", default="", help="comma-separated scenarios, e.g. B1,B4")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    only = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        parser.error(f"--only: unknown scenario(s) {unknown}; accepted: {', '.join(SCENARIOS)}")
    args.scenarios = only or list(SCENARIOS)
    return args


async def main_async(args: argparse.Namespace) -> int:
    """Run the chosen scenarios, print figures, optionally write JSON; 1 if a scenario raised."""
    placement = pin_bench_process()
    counts = Counts.quick() if args.quick else Counts()
    engine_error = engine_api.engine_import_error()
    print(
        "cachewarden engine benchmark"
        + (" (--quick: smoke counts, figures are not meaningful)" if args.quick else "")
    )
    print(placement.describe())
    if engine_error:
        print(f"ENGINE NOT AVAILABLE ({engine_error}): printing the anchors only")
    redis = RedisServer(placement.server_cores)
    redis.start()
    run = Run(counts=counts, placement=placement, redis=redis, engine_error=engine_error)
    if engine_error is None:
        config = engine_api.make_config(redis.url)
        run.conditions["engine config"] = engine_api.describe_config(config)
        print(
            f"engine preset {engine_api.BENCH_PRESET}: "
            + json.dumps(run.conditions["engine config"], default=str)
        )
    started = time.perf_counter()
    try:
        for name in args.scenarios:
            title, fn = SCENARIOS[name]
            print(f"\n== {name} {title}")
            first = len(run.figures)
            begin = time.perf_counter()
            try:
                await run_bounded(fn(run), SCENARIO_TIME_CAP_S[args.quick], name)
            except Exception:
                run.errors[name] = traceback.format_exc()
                print(
                    f"  ERROR in {name}:\n"
                    + "\n".join("    " + line for line in run.errors[name].splitlines())
                )
            if len(run.figures) > first:
                print_table(run.figures[first:])
            print(f"  ({time.perf_counter() - begin:.1f} s)")
    finally:
        redis.close()
    run.conditions["duration_s"] = round(time.perf_counter() - started, 1)
    run.conditions["load_average_end"] = list(__import__("os").getloadavg())
    print(
        f"\nload average at end: {' '.join(f'{x:.2f}' for x in run.conditions['load_average_end'])}; "
        f"total {run.conditions['duration_s']} s"
    )
    misses = [f for f in run.figures if f.passed is False]
    print(
        f"targets: {sum(1 for f in run.figures if f.passed)} PASS, {len(misses)} MISS"
        + (f"; scenario errors: {', '.join(run.errors)}" if run.errors else "")
    )
    if args.json:
        payload = {
            "quick": args.quick,
            "placement": placement.__dict__,
            "conditions": run.conditions,
            "figures": [f.as_dict() for f in run.figures],
            "errors": run.errors,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 1 if run.errors else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    # Libraries under test log every failed Redis call during the outage scenario; the figures are
    # what matters here, so only errors of the bench itself are shown.
    logging.basicConfig(level=logging.CRITICAL)
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
