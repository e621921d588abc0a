"""Everything one guide read needs, gathered once: the engine snapshot, L1 entries, Redis INFO, process.

:func:`gather` does the I/O (Redis ``INFO`` bounded by a timeout, one walk over the L1 entries); the
view functions in :mod:`.analyses` are pure functions of the resulting :class:`Facts`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cache_runtime.config import OPERATIONS, CacheConfig
from cache_runtime.service.guide.process import MemoryHistory, Sample

log = logging.getLogger("cachewarden.runtime.guide")

MIB = 1024 * 1024
INFO_TIMEOUT_S = 2.0
LARGEST_KEPT = 50


@dataclass
class EntryFacts:
    """What L1 holds: counts and bytes by operation and text tier, TTL use, the largest entries."""

    count: int = 0
    bytes: int = 0
    ai_keys: int = 0
    data_keys: int = 0
    key_length_sum: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    bytes_by_operation: Counter[str] = field(default_factory=Counter)
    by_tier: Counter[str] = field(default_factory=Counter)
    hashed: int = 0
    readable: int = 0
    prefixes: Counter[str] = field(default_factory=Counter)
    ttl_used_sum: float = 0.0
    ttl_seconds_sum: float = 0.0
    expired_unswept: int = 0
    above_threshold: int = 0
    size_buckets: Counter[str] = field(default_factory=Counter)
    largest: list[tuple[int, str, float, float]] = field(default_factory=list)  # size, key, ttl, remaining


SIZE_BUCKETS = ((1024, "<1KB"), (10 * 1024, "1-10KB"), (100 * 1024, "10-100KB"), (MIB, "100KB-1MB"))


def size_bucket(size: int) -> str:
    """The size class of an encoded entry."""
    for limit, name in SIZE_BUCKETS:
        if size < limit:
            return name
    return ">=1MB"


_WORD = re.compile(r"^[A-Za-z_]{1,32}$")


def key_pattern(key: str) -> str:
    """A key's pattern, free of user text: ``ai1:summarize:s:*`` for AI keys (an operation name of the
    caller's own shows as ``other``), ``d:<first segment>*`` for data keys when that segment is a
    plain word (no digits: no ids), else ``d:*``."""
    if key.startswith("ai"):
        parts = key.split(":")
        if len(parts) > 3:
            operation = parts[1] if parts[1] in OPERATIONS else "other"
            return f"{parts[0]}:{operation}:{parts[2]}:*"
        return "ai:*"
    if key.startswith("d:"):
        rest = key[2:]
        for separator in (":", "/", ".", "-"):
            if separator in rest:
                head = rest.split(separator, 1)[0]
                return f"d:{head}{separator}*" if _WORD.match(head) else "d:*"
        return "d:*"
    return "other:*"


def key_digest(key: str) -> str:
    """A short digest that tells keys apart without showing them (keys may carry user text)."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:16]


def scan_l1(l1: Any, threshold: int) -> EntryFacts:
    """One pass over L1's live entries (bounded by L1's own size limit)."""
    facts = EntryFacts()
    now = time.monotonic()
    for key in list(l1.keys()):
        entry = l1.get_entry(key)
        if entry is None:
            facts.expired_unswept += 1
            continue
        size = int(entry.size)
        facts.count += 1
        facts.bytes += size
        facts.key_length_sum += len(key)
        facts.prefixes[key_pattern(key)] += 1
        facts.size_buckets[size_bucket(size)] += 1
        if size >= threshold:
            facts.above_threshold += 1
        ttl = float(entry.ttl or 0)
        remaining = entry.remaining(now)
        if ttl > 0:
            facts.ttl_seconds_sum += ttl
            facts.ttl_used_sum += min(1.0, max(0.0, (ttl - remaining) / ttl))
        parts = key.split(":")
        if key.startswith("ai") and len(parts) >= 4:
            facts.ai_keys += 1
            operation = parts[1] if parts[1] in OPERATIONS else "other"
            facts.by_operation[operation] += 1
            facts.bytes_by_operation[operation] += size
            facts.by_tier[parts[2]] += 1
            if parts[3].startswith("r"):
                facts.readable += 1
            else:
                facts.hashed += 1
        else:
            facts.data_keys += 1
            facts.by_operation["data"] += 1
            facts.bytes_by_operation["data"] += size
        facts.largest.append((size, key, ttl, remaining))
        if len(facts.largest) > 4 * LARGEST_KEPT:
            facts.largest.sort(reverse=True)
            del facts.largest[LARGEST_KEPT:]
    facts.largest.sort(reverse=True)
    del facts.largest[LARGEST_KEPT:]
    return facts


@dataclass
class Facts:
    """One consistent view for a guide read."""

    snapshot: Mapping[str, Any]
    config: CacheConfig
    entries: EntryFacts
    redis_info: dict[str, Any] | None
    redis_ping_s: float | None
    memory: Sample
    history: MemoryHistory
    health: dict[str, Any] | None
    journal: Any
    recent_errors: dict[str, Any]
    uptime_s: float
    extra: dict[str, Any] = field(default_factory=dict)


async def redis_info(l2: Any) -> dict[str, Any] | None:
    """Redis ``INFO`` (all sections) of the pod's Redis, or None (memory-only, failing, slow)."""
    if l2 is None:
        return None

    async def call(client: Any) -> Any:
        return await client.info()

    try:
        info = await asyncio.wait_for(l2.run_direct(call), timeout=INFO_TIMEOUT_S)
    except Exception as exc:
        log.info("redis INFO failed", extra={"fields": {"error": type(exc).__name__}})
        return None
    if isinstance(info, Mapping) and info and all(isinstance(value, Mapping) for value in info.values()):
        # A cluster client answers per node: the first primary's figures.
        info = next(iter(info.values()))
    return dict(info) if isinstance(info, Mapping) else None


async def gather(
    cache: Any,
    history: MemoryHistory,
    *,
    journal: Any,
    recent_errors: Any,
    with_redis: bool = True,
) -> Facts:
    """Read the engine, L1, Redis and the process once for one guide answer."""
    snapshot = cache.stats()
    config: CacheConfig = cache.config
    entries = scan_l1(cache.l1, config.compression.threshold_bytes)
    l2 = getattr(cache, "l2", None)
    info = await redis_info(l2) if with_redis else None
    ping = None
    if with_redis and l2 is not None:
        try:
            ping = await asyncio.wait_for(l2.ping(), timeout=INFO_TIMEOUT_S)
        except Exception:
            ping = None
    try:
        report = cache.health()
        health = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    except Exception:
        log.exception("health evaluation failed")
        health = None
    sample = history.sample(snapshot["l1"]["bytes"])
    errors = recent_errors.describe(200) if recent_errors is not None else {"total": 0, "errors": []}
    return Facts(
        snapshot=snapshot,
        config=config,
        entries=entries,
        redis_info=info,
        redis_ping_s=ping,
        memory=sample,
        history=history,
        health=health,
        journal=journal,
        recent_errors=errors,
        uptime_s=max(time.time() - history.started_at, 1e-9),
    )
