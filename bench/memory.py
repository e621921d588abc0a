"""L1 memory benchmark: does ``l1.max_bytes`` (and ``memory_mb``) mean memory?

    .venv/bin/python bench/memory.py              # about 30 s
    .venv/bin/python bench/memory.py --quick      # smoke run

For each value mix (small, AI-response-sized, large compressible prose, incompressible base64,
number-heavy), a writer engine stores N values in a real redis-server (preset ai-production,
compression on); then a fresh reader engine (L1 budget far above the fill) reads each key once, so
its L1 fills from L2 hits as a runtime pod's does; after ``gc.collect()``:

* **counted**: ``l1.bytes``, the figure the budget, ``memory_mb``, the HighMemory symptom and the
  diagnosis read;
* **measured**: what tracemalloc saw allocated by the reads and still alive (values, L1 entries,
  the engine's per-entry bookkeeping; the keys are the bench's); and the RSS growth of the process
  (coarser: the allocator keeps freed arenas, the first mix pays for warming up);
* **encoded**: what the old figure was (the bytes Redis holds, compressed when it pays).

Then a budget check per mix: ``l1.max_bytes`` set to a third of the mix's footprint, the same
values stored, tracemalloc compared with the budget.

And the choice the issue asks to weigh: L1 keeping the encoded bytes and decoding on each hit, or
the decoded value. The engine does both, by value: what the codec compressed stays compressed in L1
(``l1.PackedValue``, opened on every hit), everything else is kept decoded. The last table prints,
per mix, how L1 kept it, the engine's L1 hit through ``await cache.get()``, what a ``decode`` of the
stored bytes costs, and the memory either way (decoded: measured; encoded: the stored bytes plus
keys and entries).

Prints, never asserts. Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import RedisServer, pin_bench_process
from _payloads import ai_response

from cache_runtime.cache import TieredCache
from cache_runtime.codec import decode
from cache_runtime.config import resolve_config
from cache_runtime.l1 import is_packed
from cache_runtime.sizing import ENTRY_OVERHEAD

MIB = 1024 * 1024


def mixes(quick: bool) -> dict[str, tuple[int, Callable[[int], Any]]]:
    """name -> (count, value maker)."""
    rnd = random.Random(5)
    scale = 5 if quick else 1
    return {
        "small dicts (~60 B JSON)": (2000 // scale, lambda i: {"id": i * 1000, "ok": True, "name": f"u-{i}"}),
        "AI response 600 chars": (1000 // scale, lambda i: ai_response(600, i)),
        "large prose 64 KiB (compressible)": (50 // scale, lambda i: ai_response(64 * 1024, i)),
        "base64 16 KiB (incompressible)": (
            200 // scale,
            lambda i: {"blob": base64.b64encode(rnd.randbytes(12 * 1024)).decode(), "n": i},
        ),
        "numbers (2,000 floats + 300 ints)": (
            200 // scale,
            lambda i: {"v": [rnd.random() for _ in range(2000)], "k": list(range(1000 + i, 1300 + i))},
        ),
    }


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def fill(url: str, values: list[Any], max_bytes: int, tag: str) -> dict[str, Any]:
    """Store ``values`` through a writer engine, then read each once through a fresh reader engine
    (L2 hits filling its L1): what the reader's L1 counts vs what tracemalloc and RSS saw."""

    def config(l1_entries: int, l1_bytes: int) -> Any:
        return resolve_config(
            preset="ai-production",
            overrides={"l1.max_entries": l1_entries, "l1.max_bytes": l1_bytes, "keys.namespace": tag},
            redis_url=url,
        )

    keys = [f"mem:{tag}:{i:06d}" for i in range(len(values))]
    writer = TieredCache(config(0, 0))
    await writer.start()
    try:
        await writer.set_many(dict(zip(keys, values, strict=True)), ttl=600)
    finally:
        await writer.close()
    engine = TieredCache(config(len(values) + 10, max_bytes))
    await engine.start()
    try:
        await engine.get("warm-up")  # connections, namespace version, first allocations
        gc.collect()
        rss_before = rss_bytes()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            await engine.get(key)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        rss = rss_bytes() - rss_before
        raws: list[bytes] = []
        l2 = engine.l2
        assert l2 is not None
        for key in keys[-50:]:
            raw = await l2.client.get(engine.keys.redis_key(key))
            if raw is not None:
                raws.append(raw)
        per_value = sum(len(r) for r in raws) / max(1, len(raws))
        encoded = int(per_value * len(engine.l1))
        packed = sum(1 for entry in engine.l1.entries.values() if is_packed(entry))
        hit_ns = await time_l1_hit(engine, keys[-1])
        decode_ns = time_decode(raws[-1]) if raws else 0.0
        stats = engine.stats()
        return {
            "entries": len(engine.l1),
            "packed": packed,
            "counted": engine.l1.bytes,
            "memory_mb": stats["l1"]["bytes"] / MIB,
            "traced": traced,
            "rss": rss,
            "encoded": encoded,
            "encoded_entry_footprint": encoded + len(engine.l1) * (ENTRY_OVERHEAD + sys.getsizeof(keys[0])),
            "hit_ns": hit_ns,
            "decode_ns": decode_ns,
        }
    finally:
        await engine.close()


async def time_l1_hit(engine: TieredCache, key: str, n: int = 20000) -> float:
    """ns per ``await engine.get(key)`` for an L1 hit (median of 5)."""
    get = engine.get
    assert await get(key) is not None
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            await get(key)
        runs.append((time.perf_counter() - started) / n * 1e9)
    return sorted(runs)[2]


def time_decode(raw: bytes, budget_s: float = 0.3) -> float:
    """ns per ``decode(raw)``: what an L1 of encoded bytes would pay on every hit (median of 5)."""
    runs = []
    for _ in range(5):
        n = 0
        started = time.perf_counter()
        while time.perf_counter() - started < budget_s / 5:
            decode(raw)
            n += 1
        runs.append((time.perf_counter() - started) / n * 1e9)
    return sorted(runs)[2]


async def main_async(args: argparse.Namespace) -> None:
    """Run every mix, print the tables."""
    placement = pin_bench_process()
    print(placement.describe())
    redis = RedisServer(placement.server_cores)
    redis.start()
    try:
        rows = []
        budget_rows = []
        for index, (name, (count, make)) in enumerate(mixes(args.quick).items()):
            values = [make(i) for i in range(count)]
            row = await fill(redis.url, values, 4 << 30, f"m{index}")
            rows.append((name, row))
            budget = max(64 * 1024, row["counted"] // 3)
            capped = await fill(redis.url, values, budget, f"b{index}")
            budget_rows.append((name, budget, capped))
        print("\nL1 footprint per value mix (budget far above the fill)")
        print(f"{'mix':36s} {'entries':>7s} {'counted (l1.bytes)':>19s} {'tracemalloc':>12s} {'ratio':>6s} "
              f"{'RSS growth':>11s} {'encoded (old figure)':>21s} {'old/traced':>10s}")
        for name, r in rows:
            print(f"{name:36s} {r['entries']:7d} {r['counted'] / MIB:15.2f} MiB {r['traced'] / MIB:8.2f} MiB "
                  f"{r['counted'] / r['traced']:6.2f} {r['rss'] / MIB:7.2f} MiB "
                  f"{r['encoded'] / MIB:17.2f} MiB "
                  f"{r['encoded'] / r['traced']:10.2f}")
        print("\nBudget check: l1.max_bytes = a third of the mix's footprint, same values stored")
        print(f"{'mix':36s} {'max_bytes':>10s} {'entries kept':>12s} {'counted':>9s} {'tracemalloc':>11s} "
              f"{'traced/budget':>13s} {'within +-20%':>12s}")
        for name, budget, c in budget_rows:
            ratio = c["traced"] / budget
            print(f"{name:36s} {budget / MIB:6.2f} MiB {c['entries']:12d} {c['counted'] / MIB:5.2f} MiB "
                  f"{c['traced'] / MIB:7.2f} MiB {ratio:13.2f} {'PASS' if ratio <= 1.2 else 'MISS':>12s}")
        print("\nHow L1 keeps each mix (packed = compressed block, opened per hit); what either way costs")
        print(f"{'mix':36s} {'kept as':>15s} {'engine L1 hit':>14s} {'decode per hit':>15s} "
              f"{'L1 memory now':>14s} {'all encoded':>12s}")
        for name, r in rows:
            kept = "decoded" if not r["packed"] else "packed" if r["packed"] == r["entries"] else (
                f"{r['packed']}/{r['entries']} packed")
            print(f"{name:36s} {kept:>15s} {r['hit_ns'] / 1000:11.2f} us {r['decode_ns'] / 1000:12.1f} us "
                  f"{r['counted'] / MIB:10.2f} MiB {r['encoded_entry_footprint'] / MIB:8.2f} MiB")
        print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        redis.close()


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
