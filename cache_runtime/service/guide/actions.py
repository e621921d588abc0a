"""The guide's actions on one engine: cleanup, tuning from evidence, probes, recovery, Redis server config.

Each function does one thing to the engine (or only reports, on a dry run) and returns what it did
with before/after figures. The routes in :mod:`.routes` run them under the admin token,
``Idempotency-Key`` and the action journal. Config changes go through the ConfigController
(``update``), so they are validated, hashed and visible in ``config/current`` like any other.
"""

from __future__ import annotations

import asyncio
import gc as python_gc
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from cache_runtime.codec import decode
from cache_runtime.config import OPERATIONS
from cache_runtime.service.guide.analyses import mb, ms, ratio

PROBE_SIZES = {"small": 100, "medium": 10_000, "large": 500_000}


def l1_figures(cache: Any) -> dict[str, Any]:
    """L1 entries and MiB now."""
    stats = cache.stats()["l1"]
    return {"entries": stats["entries"], "memory_mb": mb(stats["bytes"])}


async def compressed_flags(cache: Any, keys: list[str]) -> dict[str, bool | None]:
    """For L1 keys: is the value stored in Redis lz4-compressed? (None when Redis has no copy.)"""
    l2 = getattr(cache, "l2", None)
    if l2 is None or not keys:
        return {}
    redis_keys = [cache.keys.redis_key(key) for key in keys]
    try:
        values = await asyncio.wait_for(l2.mget(redis_keys), timeout=2.0)
    except Exception:
        return {}
    flags: dict[str, bool | None] = {}
    for key, raw in zip(keys, values or [], strict=False):
        if raw is None:
            flags[key] = None
            continue
        try:
            flags[key] = bool(decode(raw).compressed)
        except Exception:
            flags[key] = None
    return flags


async def memory_cleanup(
    cache: Any, *, dry_run: bool, compress: Any = None, collect: bool = True
) -> dict[str, Any]:
    """Drop expired L1 entries, optionally re-encode large ones, run Python's GC; before/after."""
    before = l1_figures(cache)
    if dry_run:
        return {
            "before": before,
            "after": before,
            "entries_removed": 0,
            "memory_freed_mb": 0.0,
            "note": "dry run: nothing removed",
        }
    removed = cache.gc().get("l1_expired_removed", 0)
    compressed: dict[str, Any] | None = None
    if compress is not None:
        compressed = await compress()
    collected = python_gc.collect() if collect else 0
    after = l1_figures(cache)
    return {
        "before": before,
        "after": after,
        "entries_removed": removed,
        "memory_freed_mb": round((before["memory_mb"] or 0) - (after["memory_mb"] or 0), 4),
        "compression": compressed,
        "python_objects_collected": collected,
        "at": time.time(),
    }


def ttl_strategy(snapshot: Mapping[str, Any], config: Any, body: Mapping[str, Any]) -> dict[str, Any]:
    """Per-operation TTLs from evidence: expired-miss share and the p95 reuse gap, clamped to min/max."""
    low, high = float(body.get("min_ttl", 300)), float(body.get("max_ttl", 86400))
    ttl = snapshot["ttl"]
    sampled = ttl.get("sampled_misses") or 0
    expired_share = ratio(ttl.get("expired_misses", 0), sampled) or 0.0
    gap = (ttl.get("reuse_gap") or {}).get("p95")
    overrides: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for name in [*OPERATIONS, "default"]:
        current = float(config.ttl.for_operation(None if name == "default" else name))
        target = current
        if expired_share > 0.25:
            target = current * 2
            reasons[name] = f"{expired_share:.0%} of sampled misses were expired entries: doubled"
        elif gap is not None and gap * 2 > current:
            target = gap * 2
            reasons[name] = f"p95 reuse gap {gap:.0f}s: TTL set to twice the gap"
        else:
            reasons[name] = "evidence does not call for a change (kept, clamped to min/max)"
        target = int(min(high, max(low, target)))
        path = "ttl.default_s" if name == "default" else f"ttl.{name}_s"
        if target != int(current) or body.get("operation_specific_ttls", True) is not False:
            overrides[path] = target
    if body.get("operation_specific_ttls") is False:
        overrides = {"ttl.default_s": overrides.get("ttl.default_s", config.ttl.default_s)}
    return {
        "overrides": overrides,
        "reasons": reasons,
        "evidence": {"sampled_misses": sampled, "expired_share": expired_share, "reuse_gap_p95_s": gap},
    }


def compression_tuning(snapshot: Mapping[str, Any], config: Any, body: Mapping[str, Any]) -> dict[str, Any]:
    """Threshold and level from what compression achieved so far."""
    compression = snapshot["compression"]
    threshold = config.compression.threshold_bytes
    level = config.compression.level
    attempts = compression["attempts"]
    kept_share = ratio(compression["compressed"], attempts)
    achieved = ratio(compression["bytes_out"], compression["bytes_in"])
    target = body.get("target_compression_ratio")
    reasons = []
    new_threshold, new_level = threshold, level
    if body.get("optimize_threshold", True):
        if attempts and kept_share is not None and kept_share < 0.5:
            new_threshold = min(threshold * 2, 1 << 20)
            reasons.append(f"only {kept_share:.0%} of attempts saved enough: threshold doubled")
        elif compression["large_values_uncompressed"] > 0:
            new_threshold = max(64, threshold // 2)
            reasons.append("large values are stored uncompressed: threshold halved")
    if body.get("balance_ratio_vs_speed", True) and achieved is not None and isinstance(target, (int, float)):
        if achieved <= target and level > 6:
            new_level = 6
            reasons.append(
                f"ratio {achieved} already meets the target {target}: level lowered to 6 for speed"
            )
        elif achieved > target and level < 9:
            new_level = 9
            reasons.append(f"ratio {achieved} misses the target {target}: level raised to 9")
    overrides: dict[str, Any] = {}
    if new_threshold != threshold:
        overrides["compression.threshold_bytes"] = new_threshold
    if new_level != level:
        overrides["compression.level"] = new_level
    return {
        "overrides": overrides,
        "reasons": reasons or ["no change called for by the figures"],
        "evidence": {
            "attempts": attempts,
            "kept_share": kept_share,
            "achieved_ratio": achieved,
            "large_values_uncompressed": compression["large_values_uncompressed"],
        },
    }


def memory_tier_tuning(snapshot: Mapping[str, Any], config: Any, body: Mapping[str, Any]) -> dict[str, Any]:
    """L1 size from evictions and use."""
    l1 = snapshot["l1"]
    lookup_counts = snapshot["requests"]
    overrides: dict[str, Any] = {}
    reasons = []
    if body.get("optimize_l1_size", True):
        if l1["evictions"] > 0 and (lookup_counts.get("l2_hit_rate") or 0) > 0.05:
            overrides["l1.max_entries"] = min(int(l1["max_entries"] * 1.5), 10_000_000)
            reasons.append(
                f"{l1['evictions']} evictions while {lookup_counts.get('l2_hit_rate')} of lookups "
                "hit Redis: L1 entries +50%"
            )
        elif (l1["max_entries"] and l1["entries"] / l1["max_entries"] < 0.1
              and lookup_counts["lookups"] > 1000):
            overrides["l1.max_entries"] = max(100, l1["entries"] * 4)
            reasons.append("L1 is under 10% used: shrunk to 4x what it holds")
    notes = {}
    if body.get("tune_promotion_strategy"):
        notes["tune_promotion_strategy"] = "every Redis hit is promoted into L1 (no other strategy)"
    if body.get("enable_predictive_loading"):
        notes["enable_predictive_loading"] = (
            "not done: the engine refreshes entries near expiry (stampede.early_refresh_fraction) instead"
        )
    return {
        "overrides": overrides,
        "reasons": reasons or ["no change called for by the figures"],
        "notes": notes,
        "evidence": {
            "evictions": l1["evictions"],
            "entries": l1["entries"],
            "max_entries": l1["max_entries"],
            "l2_hit_rate": lookup_counts.get("l2_hit_rate"),
        },
    }


def redis_connection_tuning(
    snapshot: Mapping[str, Any], config: Any, body: Mapping[str, Any]
) -> dict[str, Any]:
    """Pool size from pool waits, command timeout from observed round trips."""
    l2 = snapshot.get("l2") or {}
    overrides: dict[str, Any] = {}
    reasons = []
    if body.get("tune_connection_pool", True) and (l2.get("pool_waits") or 0) > 0:
        overrides["redis.max_connections"] = min(int(config.redis.max_connections * 1.5) + 1, 1000)
        reasons.append(f"{l2.get('pool_waits')} waits for a pooled connection: pool +50%")
    worst = (snapshot.get("l2_detail") or {}).get("round_trip_seconds_max")
    if body.get("optimize_timeouts", True) and worst:
        wanted = round(max(0.05, min(10.0, worst * 20)), 3)
        if wanted > config.redis.socket_timeout_s:
            overrides["redis.socket_timeout_s"] = wanted
            reasons.append(f"slowest round trip {ms(worst)} ms: command timeout raised to 20x it")
    notes = {}
    if body.get("enable_pipelining"):
        notes["enable_pipelining"] = "already on: concurrent reads and writes are coalesced into pipelines"
    if body.get("connection_health_monitoring"):
        notes["connection_health_monitoring"] = "always on: the circuit breaker and PING in status/health"
    return {
        "overrides": overrides,
        "reasons": reasons or ["no change called for by the figures"],
        "notes": notes,
        "evidence": {
            "pool_waits": l2.get("pool_waits"),
            "round_trip_max_ms": ms(worst),
            "socket_timeout_s": config.redis.socket_timeout_s,
        },
    }


async def probe_operations(cache: Any, operations: list[str], size: str) -> dict[str, Any]:
    """set/get/delete of one probe key through the engine; timings and results."""
    key = f"cachewarden-guide-probe-{uuid.uuid4().hex}"
    value = {"probe": "x" * PROBE_SIZES[size]}
    results: dict[str, Any] = {}
    timings: dict[str, float | None] = {}
    for name in ("set", "get", "delete"):
        if name not in operations:
            continue
        started = time.perf_counter()
        if name == "set":
            outcome = await cache.set(key, value, ttl=60)
            results[name] = bool(outcome)
        elif name == "get":
            results[name] = (await cache.get(key)) == value
            results["get_local"] = cache.get_local(key) == value
        else:
            await cache.delete(key)
            results[name] = (await cache.get(key)) is None
        timings[f"{name}_ms"] = ms(time.perf_counter() - started)
    return {"results": results, "timings": timings, "value_bytes": PROBE_SIZES[size]}


async def recover_from_redis(cache: Any, body: Mapping[str, Any]) -> dict[str, Any]:
    """SCAN this namespace's keys in Redis, check each value decodes, warm L1 with the good ones."""
    l2 = getattr(cache, "l2", None)
    if l2 is None:
        return {
            "recovery_completed": False,
            "entries_recovered": 0,
            "recovery_failures": 0,
            "integrity_check_result": "not_applicable",
            "note": "memory-only: no Redis to recover from",
        }
    batch = int(body.get("recovery_batch_size", 100))
    timeout = float(body.get("timeout_seconds", 300))
    validate = bool(body.get("validate_data_integrity", True))
    prefix = cache.keys.redis_key("")
    deadline = time.monotonic() + timeout
    scanned = recovered = failures = 0
    truncated = False

    async def scan(client: Any) -> list[bytes]:
        found: list[bytes] = []
        async for name in client.scan_iter(match=prefix + "*", count=batch):
            found.append(name)
            if len(found) >= 100_000:
                break
        return found

    names = await asyncio.wait_for(l2.run_direct(scan), timeout=timeout) or []
    for start in range(0, len(names), batch):
        if time.monotonic() > deadline:
            truncated = True
            break
        chunk = [
            name.decode() if isinstance(name, bytes) else str(name) for name in names[start : start + batch]
        ]
        values = await l2.mget(chunk) or []
        for name, raw in zip(chunk, values, strict=False):
            scanned += 1
            if raw is None:
                continue
            if validate:
                try:
                    decode(raw)
                except Exception:
                    failures += 1
                    continue
            logical = name[len(prefix) :]
            if await cache.get(logical) is not None:
                recovered += 1
            else:
                failures += 1
    return {
        "recovery_completed": not truncated,
        "entries_recovered": recovered,
        "recovery_failures": failures,
        "keys_scanned": scanned,
        "integrity_check_result": "passed" if failures == 0 else "failed",
        "strategy": body.get("recovery_strategy", "conservative"),
        "note": "Redis data is not restored (that is a Redis backup's job): values this namespace still "
        "holds in Redis are checked and loaded into this pod's L1",
    }


async def redis_server_config(
    l2: Any, wanted: Mapping[str, Any], *, allowed: bool, dry_run: bool
) -> dict[str, Any]:
    """CONFIG GET (and, only when allowed, CONFIG SET) of the guide's Redis server settings."""
    names = {
        "memory_policy": "maxmemory-policy",
        "max_memory": "maxmemory",
        "timeout": "timeout",
        "tcp_keepalive": "tcp-keepalive",
    }
    if l2 is None:
        return {"applied": False, "reason": "memory-only: no Redis configured"}

    async def read(client: Any) -> dict[str, Any]:
        current = {}
        for name in names.values():
            current.update(await client.config_get(name))
        return current

    before = await l2.run_direct(read)
    changes = {names[key]: str(value) for key, value in wanted.items()}
    if not allowed or dry_run:
        return {
            "applied": False,
            "before": before,
            "would_set": changes,
            "reason": "dry run"
            if dry_run
            else (
                "CONFIG SET is off: a cache client does not own its Redis server. Set the server's "
                "config in its chart/operator, or start the runtime with "
                "CACHEWARDEN_ALLOW_REDIS_CONFIG_SET=true"
            ),
        }

    async def write(client: Any) -> bool:
        for name, value in changes.items():
            await client.config_set(name, value)
        return True

    done = await l2.run_direct(write)
    after = await l2.run_direct(read)
    return {"applied": bool(done), "before": before, "after": after, "set": changes}


def parse_timeframe(text: Any) -> float:
    """``last_4_hours`` / ``last_30_minutes`` / ``last_2_days`` -> seconds."""
    units = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}
    if isinstance(text, str):
        parts = text.split("_")
        if len(parts) == 3 and parts[0] == "last" and parts[1].isdigit() and parts[2] in units:
            return float(int(parts[1]) * units[parts[2]])
        if len(parts) == 2 and parts[0] == "last" and parts[1] in units:
            return float(units[parts[1]])
    raise ValueError("last_<n>_<minutes|hours|days>")


def finite(value: Any) -> bool:
    """True for a finite JSON number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
