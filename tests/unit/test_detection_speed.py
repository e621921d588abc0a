"""Detection speed of workload faults, measured on the real engine (memory only, a simulated clock)
through the operator's own hysteresis (cache_operator.incidents.detection): minutes of healthy
traffic, then the fault; the engine's health report is probed every probe interval and fed to
``summarize_probe``/``observe`` as the operator does. Printed, never asserted on time: seconds from the
fault's onset to the symptom opening, with the health window the engine uses now (60 s) and the old
5-minute one as the anchor, at the CRD's default probe setting (15 s x 3) and at the e2e scenarios'
(5 s x 2). Also: no flapping, a steady workload and a steady fault open (or clear) nothing.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cache_operator.incidents.detection import DetectionSettings, observe, probe_interval, summarize_probe
from cache_runtime.cache import TieredCache
from cache_runtime.config import resolve_config

RATE_PER_S = 20  # lookups per simulated second
HEALTHY_S = 300
FAULT_S = 150
OLD_WINDOW_S = 300.0


class Clock:
    """A simulated monotonic clock the engine reads."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Workload = Callable[[TieredCache, random.Random, int], Awaitable[None]]


TEXTS = 1800  # 90% of the L1: "at budget" for the L1Thrashing judgement, yet no eviction


async def healthy_lookup(cache: TieredCache, rng: random.Random, step: int) -> None:
    """AI lookups over the texts stored before (all in L1), asked again and again in one spelling."""
    key = cache.key_for("summarize", f"text number {rng.randrange(TEXTS)}")
    if await cache.get(key) is None:
        await cache.set(key, {"answer": key[-8:]})


async def whitespace_lookup(cache: TieredCache, rng: random.Random, step: int) -> None:
    """The same 50 texts, each asked in a new whitespace spelling: every key is new, so every lookup
    misses (the whitespace fault of the issue)."""
    text = f"text number {rng.randrange(50)}"
    spaced = text.replace(" ", " " * (2 + step % 13), 1) + " " * (step % 997)  # ~650k spellings
    key = cache.key_for("summarize", spaced)
    if await cache.get(key) is None:
        await cache.set(key, {"answer": "x"})


async def thrash_lookup(cache: TieredCache, rng: random.Random, step: int) -> None:
    """A working set ten times the L1 (2000 entries): cycled keys, each evicted before it is asked again."""
    key = cache.key_for("summarize", f"big working set {step % 20000}")
    if await cache.get(key) is None:
        await cache.set(key, {"answer": "x"})


async def run(
    fault: Workload | None,
    window_s: float,
    interval_s: int,
    probes: int,
    fault_s: int = FAULT_S,
    confirm: bool = True,
) -> tuple[float | None, list[tuple[str, float]]]:
    """Seconds from onset to the first symptom opening (None: none) and every (event, time). With
    ``confirm`` the probe schedule is the operator's (``probe_interval``: sooner while pending)."""
    clock, rng = Clock(), random.Random(7)
    config = resolve_config(
        "development", overrides={"l1": {"max_entries": 2000}, "ttl": {"default_s": 3600}}
    )
    settings = DetectionSettings(open_after=probes, clear_after=probes)
    state: dict[str, Any] | None = None
    events: list[tuple[str, float]] = []
    opened_at: float | None = None
    async with TieredCache(config, clock=clock) as cache:
        for index in range(TEXTS):
            await cache.set(cache.key_for("summarize", f"text number {index}"), {"answer": index})
        step = 0
        next_probe = 0
        for second in range(HEALTHY_S + fault_s):
            workload = fault if fault is not None and second >= HEALTHY_S else healthy_lookup
            for _ in range(RATE_PER_S):
                await workload(cache, rng, step)
                step += 1
            clock.now += 1.0
            if second < next_probe:
                continue
            report = cache.health(window_seconds=window_s).to_dict()
            summary = summarize_probe({"pod-0": {"diagnosis": report}}, None)
            state, opened, cleared = observe(state, summary, clock.now, settings)
            wait = probe_interval(state["symptoms"], float(interval_s)) if confirm else interval_s
            next_probe = second + int(wait)
            since = second + 1 - HEALTHY_S
            events += [(f"open {e.name}", since) for e in opened] + [
                (f"clear {e.name}", since) for e in cleared
            ]
            if opened and second >= HEALTHY_S and opened_at is None:
                opened_at = float(since)
    return opened_at, events


FAULTS = {"whitespace": (whitespace_lookup, "LowHitRate"), "l1-thrashing": (thrash_lookup, "L1Thrashing")}


@pytest.mark.parametrize("name", list(FAULTS))
async def test_workload_fault_detection_time(name: str) -> None:
    """The fault is detected with the one-minute window at both probe settings; the figures (and the
    old window's, the anchor) are printed."""
    fault, symptom = FAULTS[name]
    lines = []
    for interval, probes in ((15, 3), (5, 2)):
        now, events = await run(fault, 60.0, interval, probes)
        plain, _ = await run(fault, 60.0, interval, probes, confirm=False)
        old, _ = await run(fault, OLD_WINDOW_S, interval, probes, confirm=False)
        lines.append(
            f"{name}: probes {interval} s x {probes}: detected after {now} s (60 s window, confirming "
            f"probes every 5 s), {plain} s (60 s window, every probe at the interval), {old} s (before: "
            f"300 s window; None = not within {FAULT_S} s); events {events}"
        )
        names = [event for event, _ in events]
        assert now is not None and f"open {symptom}" in names, events
        assert not [n for n in names if n.startswith("clear")], events  # a steady fault never clears
    print("\n".join(lines))


async def test_a_steady_healthy_workload_opens_nothing() -> None:
    """Ten minutes of the healthy workload, probed as the operator does at both settings: no flapping."""
    for interval, probes in ((15, 3), (5, 2)):
        opened, events = await run(None, 60.0, interval, probes, fault_s=300)
        assert opened is None and events == [], (interval, events)
