"""Detection speed of workload faults, measured on the real engine (memory only, a simulated clock)
through the operator's own hysteresis (cache_operator.incidents.detection): minutes of healthy
traffic, then the fault; the engine's health report is probed every probe interval and fed to
``summarize_probe``/``observe`` as the operator does. Printed, never asserted on time: seconds from the
fault's onset to the symptom opening, with the engine's detection window (the shortest of 10/30/60 s
holding ``min_requests`` lookups, ``cache_runtime.health.detection_window``) and, as anchors, a fixed
one-minute window and the old 5-minute one, at the CRD's default probe setting (15 s x 3) for every
phase of the fault's onset against the probe schedule, and at the e2e scenarios' (5 s x 2). Also: no
flapping: a steady workload opens nothing, a steady fault never clears, and a fault that ends clears
once and does not reopen.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cache_operator.incidents.detection import DetectionSettings, observe, probe_interval, summarize_probe
from cache_runtime import cache as cache_module
from cache_runtime.cache import TieredCache
from cache_runtime.config import resolve_config

RATE_PER_S = 20  # lookups per simulated second
HEALTHY_S = 300
FAULT_S = 150
OLD_WINDOW_S = 300.0
SNAPSHOT_SPACING_S = int(cache_module._SNAPSHOT_SPACING_S)


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
    window_s: float | None,
    interval_s: int,
    probes: int,
    fault_s: int = FAULT_S,
    confirm: bool = True,
    phase: int = 0,
    recover_s: int = 0,
) -> tuple[float | None, list[tuple[str, float]]]:
    """Seconds from onset to the first symptom opening (None: none) and every (event, time). With
    ``confirm`` the probe schedule is the operator's (``probe_interval``: sooner while pending);
    ``window_s`` None is the engine's own choice (:func:`cache_runtime.health.detection_window`). The
    fault starts ``phase`` seconds later against the probe schedule and is followed by ``recover_s``
    seconds of the healthy workload again."""
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
        onset = HEALTHY_S + phase
        for second in range(onset + fault_s + recover_s):
            faulty = fault is not None and onset <= second < onset + fault_s
            workload = fault if faulty and fault is not None else healthy_lookup
            for _ in range(RATE_PER_S):
                await workload(cache, rng, step)
                step += 1
            clock.now += 1.0
            if second % SNAPSHOT_SPACING_S == 0:
                cache.stats()  # the engine's snapshot keeper (real time there, simulated here)
            if second < next_probe:
                continue
            report = cache.health(window_seconds=window_s).to_dict()
            summary = summarize_probe({"pod-0": {"diagnosis": report}}, None)
            state, opened, cleared = observe(state, summary, clock.now, settings)
            wait = probe_interval(state["symptoms"], float(interval_s)) if confirm else interval_s
            next_probe = second + int(wait)
            since = second + 1 - onset
            events += [(f"open {e.name}", since) for e in opened] + [
                (f"clear {e.name}", since) for e in cleared
            ]
            if opened and second >= onset and opened_at is None:
                opened_at = float(since)
    return opened_at, events


FAULTS = {"whitespace": (whitespace_lookup, "LowHitRate"), "l1-thrashing": (thrash_lookup, "L1Thrashing")}


PHASES = range(15)  # every onset second within one default probe interval


@pytest.mark.parametrize("name", list(FAULTS))
async def test_workload_fault_detection_time(name: str) -> None:
    """The fault is detected with the engine's detection window at every onset phase of the default
    probe setting and at the e2e one; the figures (and the fixed one-minute and old five-minute
    windows', the anchors) are printed, never asserted on."""
    fault, symptom = FAULTS[name]
    lines = []
    for interval, probes in ((15, 3), (5, 2)):
        phases = PHASES if interval == 15 else range(1)
        times = []
        for phase in phases:
            now, events = await run(fault, None, interval, probes, phase=phase)
            names = [event for event, _ in events]
            assert now is not None and f"open {symptom}" in names, (phase, events)
            assert not [n for n in names if n.startswith("clear")], events  # a steady fault never clears
            times.append(now)
        minute, _ = await run(fault, 60.0, interval, probes)
        old, _ = await run(fault, OLD_WINDOW_S, interval, probes, confirm=False)
        lines.append(
            f"{name}: probes {interval} s x {probes}: detected after {min(times)}-{max(times)} s "
            f"(mean {sum(times) / len(times):.1f} s over {len(times)} onset phases; engine's window, "
            f"confirming probes every 5 s), {minute} s (fixed 60 s window), {old} s (before: 300 s "
            f"window, every probe at the interval; None = not within {FAULT_S} s)"
        )
    print("\n".join(lines))


@pytest.mark.parametrize("window_s", [None, 60.0])
async def test_a_steady_healthy_workload_opens_nothing(window_s: float | None) -> None:
    """Ten minutes of the healthy workload, probed as the operator does at both settings: no flapping."""
    for interval, probes in ((15, 3), (5, 2)):
        opened, events = await run(None, window_s, interval, probes, fault_s=300)
        assert opened is None and events == [], (interval, events)


@pytest.mark.parametrize("name", list(FAULTS))
async def test_a_fault_that_ends_clears_once(name: str) -> None:
    """Fault, then the healthy workload again for five minutes: the symptom opens once and clears once
    (hysteresis), at the default probes, with the engine's short window."""
    fault, symptom = FAULTS[name]
    _, events = await run(fault, None, 15, 3, fault_s=90, recover_s=300)
    names = [event for event, _ in events if event.endswith(symptom)]
    assert names == [f"open {symptom}", f"clear {symptom}"], events
