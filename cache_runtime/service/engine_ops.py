"""The service's view of the engine: every call the HTTP layer makes on TieredCache, in one place.

The routes never touch the engine directly; they call these methods, which turn the engine's public
API (``stats()`` snapshot, ``health()``, ``invalidate``, ``clear``, ``apply_config``, isolation,
the L2 handle) into the JSON shapes of ``docs/runtime-api.md``. Reads never raise for a part that
is missing or failing: that part reports ``null`` plus an ``errors`` entry, so ``metrics`` and
``status`` always answer (the original's ``metrics`` returned 500 and its ``status`` claimed Redis
was healthy while it was down).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from cache_runtime.config import CacheConfig
from cache_runtime.health import evaluate

log = logging.getLogger("cachewarden.runtime.engine")

MIB = 1024 * 1024


class EngineUnavailable(RuntimeError):
    """Raised by an engine accessor while no engine is running (the routes answer 503)."""


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class EngineOps:
    """Adapter from one TieredCache to the service's JSON views and actions."""

    __slots__ = ("cache",)

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    # ---- basics ----------------------------------------------------------------------------------

    @property
    def config(self) -> CacheConfig:
        """The config the engine runs (with pod-local credentials; never shown raw)."""
        return self.cache.config

    def snapshot(self) -> Mapping[str, Any]:
        """The engine's cumulative stats snapshot (the contract of cache_runtime.stats)."""
        return self.cache.stats()

    def config_public(self, controller: Any | None) -> dict[str, Any]:
        """The config in force as the operator sent it (secrets redacted)."""
        if controller is not None and controller.source.in_force is not None:
            return controller.source.in_force.config.public_dict()
        return self.config.public_dict()

    @property
    def l2(self) -> Any | None:
        """The engine's Redis tier, or None when it runs memory-only."""
        return getattr(self.cache, "l2", None)

    async def apply_config(self, config: CacheConfig) -> None:
        """Apply a config live (L1 contents that stay valid are kept by the engine)."""
        await self.cache.apply_config(config)

    # ---- reads -----------------------------------------------------------------------------------

    def _redis_view(self, snapshot: Mapping[str, Any]) -> dict[str, Any]:
        l2 = snapshot.get("l2")
        url = self.config.redis.url
        if not l2 or not l2.get("enabled", url is not None):
            return {
                "status": "disabled",
                "connected": False,
                "enabled": False,
                "url": None,
                "breaker_state": None,
                "rtt_ms": None,
                "last_error": None,
                "errors": {},
            }
        available = bool(l2.get("available"))
        breaker = l2.get("breaker_state")
        connected = available and breaker != "open"
        return {
            "status": "connected" if connected else "unavailable",
            "connected": connected,
            "enabled": True,
            "url": url,  # the config model keeps passwords out of the URL
            "breaker_state": breaker,
            "rtt_ms": _ms(l2.get("rtt_seconds")),
            "rtt_p95_ms": _ms(l2.get("rtt_p95_seconds")),
            "pool_max_connections": l2.get("pool_max_connections"),
            "pool_waits": l2.get("pool_waits"),
            "operations": l2.get("ops"),
            "errors": dict(l2.get("errors") or {}),
            "last_error": l2.get("last_error"),
        }

    def _memory_view(self, snapshot: Mapping[str, Any]) -> dict[str, Any]:
        l1 = snapshot["l1"]
        max_entries = l1.get("max_entries") or 0
        max_bytes = l1.get("max_bytes") or 0
        return {
            "entries": l1["entries"],
            "max_entries": max_entries,
            "bytes": l1["bytes"],
            "max_bytes": max_bytes,
            "memory_mb": round(l1["bytes"] / MIB, 3),
            "entries_utilization": _rate(l1["entries"] / max_entries) if max_entries else None,
            "bytes_utilization": _rate(l1["bytes"] / max_bytes) if max_bytes else None,
            "evictions": l1.get("evictions"),
            "expirations": l1.get("expirations"),
        }

    @staticmethod
    def _performance_view(snapshot: Mapping[str, Any]) -> dict[str, Any]:
        requests = snapshot["requests"]
        latency = snapshot.get("latency") or {}
        get = latency.get("get") or {}
        sets = latency.get("set") or {}
        return {
            "total_requests": requests["lookups"],
            "hits": requests["hits"],
            "misses": requests["misses"],
            "hit_rate": _rate(requests.get("hit_rate")),
            "l1_hit_rate": _rate(requests.get("l1_hit_rate")),
            "l2_hit_rate": _rate(requests.get("l2_hit_rate")),
            "get_p50_ms": _ms(get.get("p50")),
            "get_p95_ms": _ms(get.get("p95")),
            "get_p99_ms": _ms(get.get("p99")),
            "set_p95_ms": _ms(sets.get("p95")),
            "avg_get_ms": _ms(get["sum"] / get["count"]) if get.get("count") else None,
        }

    async def status(self, *, config_hash: str | None) -> dict[str, Any]:
        """``GET status``: the original's shape (redis / memory / performance) with true values.

        Redis is pinged here (bounded by the socket timeout, skipped while the breaker is open), so
        "connected" means Redis answered just now, not that a client object exists.
        """
        errors: list[str] = []
        snapshot = self.snapshot()
        redis = self._redis_view(snapshot)
        if redis["enabled"] and self.l2 is not None:
            try:
                rtt = await self.l2.ping()
            except Exception as exc:  # the L2 contract says never; a status read must not 500 anyway
                errors.append(f"redis ping failed: {type(exc).__name__}")
                rtt = None
            redis["ping_ms"] = _ms(rtt)
            if rtt is None:
                redis["status"], redis["connected"] = "unavailable", False
            elif redis["breaker_state"] != "open":
                redis["status"], redis["connected"] = "connected", True
        report = self._report(snapshot)
        return {
            "status": report["status"] if report else "unknown",
            "timestamp": time.time(),
            "cache_type": "tiered" if redis["enabled"] else "memory",
            "preset": self.config.preset,
            "config_hash": config_hash,
            "isolated": bool(snapshot.get("isolated")),
            "redis": redis,
            "memory": self._memory_view(snapshot),
            "performance": self._performance_view(snapshot),
            "errors": errors,
        }

    def metrics_json(self) -> dict[str, Any]:
        """``GET metrics``: counters, rates and latency percentiles; never fails as a whole."""
        errors: list[str] = []
        try:
            snapshot = self.snapshot()
        except Exception as exc:
            log.exception("stats snapshot failed")
            return {
                "timestamp": time.time(),
                "cache_metrics": None,
                "performance_metrics": None,
                "memory_metrics": None,
                "operation_metrics": None,
                "errors": [f"stats snapshot failed: {type(exc).__name__}"],
            }
        requests = snapshot["requests"]
        latency = {}
        for name, histogram in (snapshot.get("latency") or {}).items():
            if histogram.get("count"):
                latency[name] = {
                    "count": histogram["count"],
                    "p50_ms": _ms(histogram.get("p50")),
                    "p95_ms": _ms(histogram.get("p95")),
                    "p99_ms": _ms(histogram.get("p99")),
                    "avg_ms": _ms(histogram["sum"] / histogram["count"]),
                }
        return {
            "timestamp": time.time(),
            "uptime_seconds": round(float(snapshot.get("window_seconds", 0.0)), 3),
            "cache_metrics": {
                "total_requests": requests["lookups"],
                "hits": requests["hits"],
                "misses": requests["misses"],
                "hit_rate": _rate(requests.get("hit_rate")),
                "l1_hits": requests["hits_l1"],
                "l2_hits": requests["hits_l2"],
                "l1_hit_rate": _rate(requests.get("l1_hit_rate")),
                "l2_hit_rate": _rate(requests.get("l2_hit_rate")),
                "sets": requests["sets"],
                "deletes": requests["deletes"],
                "decode_failures": requests["decode_failures"],
                "writes_rejected_isolated": requests.get("writes_rejected_isolated", 0),
            },
            "performance_metrics": latency,
            "memory_metrics": self._memory_view(snapshot),
            "operation_metrics": dict(snapshot.get("operations") or {}),
            "redis_metrics": self._redis_view(snapshot),
            "errors": errors,
        }

    async def memory_stats(self) -> dict[str, Any]:
        """``GET memory-stats``: L1 budget use, stored value sizes, Redis INFO memory."""
        snapshot = self.snapshot()
        compression = snapshot["compression"]
        redis_memory = None
        if self.l2 is not None:
            try:
                redis_memory = await self.l2.memory_info()
            except Exception as exc:
                log.warning("redis memory_info failed", extra={"fields": {"error": type(exc).__name__}})
        report = self._report(snapshot)
        thresholds = report["thresholds"] if report else {}
        return {
            "l1": self._memory_view(snapshot),
            "values": {
                "stored": compression["stored_values"],
                "avg_bytes": compression["avg_stored_bytes"],
                "max_bytes": compression["max_stored_bytes"],
                "large_uncompressed": compression["large_values_uncompressed"],
            },
            "redis": redis_memory,
            "thresholds_mb": {
                "warning": thresholds.get("memory_warning_mb"),
                "critical": thresholds.get("memory_critical_mb"),
            },
        }

    def _report(self, snapshot: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The engine's health report as a dict (``health()`` if the facade has it, else evaluate)."""
        try:
            health = getattr(self.cache, "health", None)
            if callable(health):
                report = health()
            else:
                report = evaluate(snapshot or self.snapshot(), self.config.health.model_dump())
            return report.to_dict() if hasattr(report, "to_dict") else dict(report)
        except Exception:
            log.exception("health evaluation failed")
            return None

    def health(
        self, *, config_provenance: Mapping[str, Any] | None, config_hash: str | None
    ) -> dict[str, Any]:
        """``GET health``: status, config hash, hit rates, memory, latency, Redis/breaker, diagnosis."""
        snapshot = self.snapshot()
        report = self._report(snapshot)
        status = report["status"] if report else "unknown"
        rejection = (config_provenance or {}).get("file", {}).get("rejection") if config_provenance else None
        if rejection and status == "healthy":
            # Running on the last good config while the mounted one is refused is worth a look.
            status = "degraded"
        latency = {
            name: {
                "p50_ms": _ms(h.get("p50")),
                "p95_ms": _ms(h.get("p95")),
                "p99_ms": _ms(h.get("p99")),
                "count": h.get("count"),
            }
            for name, h in (snapshot.get("latency") or {}).items()
            if h.get("count")
        }
        requests = snapshot["requests"]
        # The hit rates the health verdict (and the operator's detection) judged: the report's window.
        # The lifetime figures since the engine started are reported apart.
        window = (report or {}).get("summary") or {}
        return {
            "status": status,
            "config_hash": config_hash,
            "preset": self.config.preset,
            "isolated": bool(snapshot.get("isolated")),
            "hit_rates": {
                "overall": _rate(window.get("hit_rate") if report else requests.get("hit_rate")),
                "l1": _rate(window.get("l1_hit_rate") if report else requests.get("l1_hit_rate")),
                "l2": _rate(window.get("l2_hit_rate") if report else requests.get("l2_hit_rate")),
                "lookups": int(window.get("lookups") or 0) if report else requests["lookups"],
                "window_seconds": round(float((report or {}).get("window_seconds") or 0.0), 1)
                if report
                else None,
            },
            "lifetime_hit_rates": {
                "overall": _rate(requests.get("hit_rate")),
                "l1": _rate(requests.get("l1_hit_rate")),
                "l2": _rate(requests.get("l2_hit_rate")),
                "lookups": requests["lookups"],
                # Exact counts (the rates are rounded): the operator's verification takes differences.
                "hits": requests["hits"],
                "l1_hits": requests["hits_l1"],
            },
            "memory": self._memory_view(snapshot),
            "latency": latency,
            "redis": self._redis_view(snapshot),
            "diagnosis": report,
            "config": dict(config_provenance) if config_provenance else None,
            "config_rejected": bool(rejection),
        }

    def compression_stats(self) -> dict[str, Any]:
        """``GET compression-stats``: attempts, kept vs skipped, ratio, time, and the settings."""
        snapshot = self.snapshot()
        return {
            "compression": dict(snapshot["compression"]),
            "settings": self.config.compression.model_dump(),
            "codec": self.config.codec.model_dump(),
        }

    def key_analysis(self) -> dict[str, Any]:
        """``GET key-analysis``: sampled evidence of keys that differ only by text formatting."""
        snapshot = self.snapshot()
        analysis = dict(snapshot["key_analysis"])
        sampled = analysis.get("sampled_requests") or 0
        share = analysis.get("new_variant_requests", 0) / sampled if sampled else None
        normalize = self.config.keys.normalize.model_dump()
        return {
            "key_analysis": analysis,
            "variant_share": _rate(share),
            "normalization": normalize,
            "key_layout": self.config.key_layout(),
            "ttl_evidence": dict(snapshot["ttl"]),
        }

    def operation_stats(self) -> dict[str, Any]:
        """``GET operation-stats``: per AI operation hits/misses/hit rate and the TTL in force."""
        snapshot = self.snapshot()
        ttl = self.config.ttl
        operations = {
            name: {**dict(stats), "ttl_s": ttl.for_operation(None if name == "default" else name)}
            for name, stats in (snapshot.get("operations") or {}).items()
        }
        latency = {
            name: {"count": h.get("count"), "p95_ms": _ms(h.get("p95"))}
            for name, h in (snapshot.get("latency") or {}).items()
        }
        return {
            "operations": operations,
            "latency": latency,
            "stampede": dict(snapshot.get("stampede") or {}),
        }

    def invalidation_stats(self, recent: list[dict[str, Any]]) -> dict[str, Any]:
        """``GET invalidation-stats``: the original's totals plus recent invalidations and coherence."""
        invalidation = self.snapshot()["invalidation"]
        total = invalidation["pattern"] + invalidation["namespace"]
        return {
            "total_invalidations": total,
            "pattern_invalidations": invalidation["pattern"],
            "namespace_invalidations": invalidation["namespace"],
            "keys_invalidated": invalidation["keys_invalidated"],
            "recent_invalidations": recent[-20:],
            "coherence": {
                "published": invalidation["coherence_messages_published"],
                "received": invalidation["coherence_messages_received"],
                "resets": invalidation["coherence_resets"],
            },
        }

    def redis_errors(self) -> dict[str, Any]:
        """Redis error counts by kind and the last error message (no secrets: the L2 scrubs them)."""
        redis = self._redis_view(self.snapshot())
        return {
            "status": redis["status"],
            "errors": redis["errors"],
            "last_error": redis["last_error"],
            "breaker_state": redis["breaker_state"],
        }

    def describe_key(
        self, operation: str, text: str, options: Mapping[str, Any] | None, question: str | None
    ) -> dict[str, Any]:
        """``debug/key-generation``: how the engine keys this input (no raw text unless readable)."""
        return self.cache.describe_key(operation, text, options=options, question=question)

    # ---- actions ---------------------------------------------------------------------------------

    async def clear(self, *, dry_run: bool) -> dict[str, Any]:
        """Drop every L1 entry and every Redis key of this namespace."""
        if dry_run:
            return {
                "l1_entries": self.snapshot()["l1"]["entries"],
                "l2_keys": None,
                "note": "dry run: L1 entries counted; Redis keys are not scanned on a dry run",
            }
        counts = await self.cache.clear()
        return _counts(counts)

    async def invalidate(
        self, *, pattern: str | None, namespace: str | None, dry_run: bool
    ) -> dict[str, Any]:
        """Invalidate by glob (SCAN + UNLINK) or by namespace (version bump)."""
        if dry_run:
            return {
                "pattern": pattern,
                "namespace": namespace,
                "invalidated_count": None,
                "note": "dry run: nothing invalidated",
            }
        counts = _counts(await self.cache.invalidate(pattern=pattern, namespace=namespace))
        total = counts.get("total")
        if total is None:
            total = sum(value for key, value in counts.items()
                        if key in ("redis_keys_removed", "l1_entries_removed") and isinstance(value, int))
        degraded = counts.get("l2") is False
        message = f"invalidated {total} entries"
        if degraded:
            message += ("; Redis did not take it: done on this pod only until Redis answers again, "
                        "then replayed to Redis and the other pods")
        return {
            "status": "success",
            "pattern": pattern,
            "namespace": namespace,
            "invalidated_count": total,
            **counts,
            "degraded": degraded,
            "message": message,
        }

    async def gc(self, *, dry_run: bool) -> dict[str, Any]:
        """Drop expired L1 entries now instead of waiting for the amortised sweep."""
        l1 = self.cache.l1
        if dry_run:
            # L1 has no way to count expired entries without dropping them (its sweep removes what it
            # finds), so a dry run reports how many entries the purge would examine.
            return {
                "l1_expired_removed": None,
                "l1_entries_examined": len(l1),
                "note": "dry run: nothing removed",
            }
        return _counts(self.cache.gc())

    async def compress_existing(self, *, dry_run: bool, max_entries: int | None = None) -> dict[str, Any]:
        """Re-encode the entries L1 holds under the compression settings in force.

        Service-level implementation over public engine methods: each live L1 entry at or above the
        compression threshold is written again with its remaining TTL, which re-encodes it (lz4
        where it pays) in Redis and L1. Redis entries that are not in this pod's L1 are left alone
        (they are re-encoded when next written): the engine has no scan of Redis values to re-encode.
        An entry that changed in L1 since the list was taken (a newer write, a delete, another pod's
        invalidation) is skipped, so the rewrite never puts an older value back; left: a write by
        another pod that lands in Redis during one rewrite's own round trip.
        """
        cache = self.cache
        l1 = cache.l1
        threshold = self.config.compression.threshold_bytes
        candidates: list[tuple[str, Any, float]] = []
        now = time.monotonic()
        # L1Cache.keys() is a snapshot list, so writing while iterating is safe.
        held = l1.keys()
        for key in held:
            entry = l1.get_entry(key)
            if entry is None or entry.size < threshold:
                continue
            candidates.append((key, entry, entry.remaining(now)))
            if max_entries is not None and len(candidates) >= max_entries:
                break
        if dry_run:
            return {
                "candidates": len(candidates),
                "rewritten": 0,
                "threshold_bytes": threshold,
                "scope": "l1",
            }
        if cache.isolated:
            return {
                "candidates": len(candidates),
                "rewritten": 0,
                "threshold_bytes": threshold,
                "scope": "l1",
                "note": "isolated: writes are refused, nothing rewritten",
            }
        before = self.snapshot()["compression"]
        rewritten = 0
        skipped_changed = 0
        for key, entry, remaining in candidates:
            if l1.get_entry(key) is not entry:
                # Written, deleted or invalidated since the list was taken (by this pod, or by
                # another pod's coherence message): rewriting the old value would undo that.
                skipped_changed += 1
                continue
            if remaining >= 1.0 and await cache.set(key, entry.value, ttl=remaining):
                rewritten += 1
        after = self.snapshot()["compression"]
        return {
            "candidates": len(candidates),
            "rewritten": rewritten,
            "skipped_changed": skipped_changed,
            "threshold_bytes": threshold,
            "scope": "l1",
            "compressed": after["compressed"] - before["compressed"],
            "bytes_saved": (after["bytes_in"] - before["bytes_in"])
            - (after["bytes_out"] - before["bytes_out"]),
        }

    async def reconnect(self) -> dict[str, Any]:
        """Drop Redis pools and connect again; report the breaker and a fresh ping."""
        if not await self.cache.reconnect_redis():
            return {"reconnected": False, "reason": "memory-only: no Redis configured"}
        l2 = self.l2
        rtt = await l2.ping() if l2 is not None else None
        state = getattr(l2, "breaker_state", None)
        return {
            "reconnected": True,
            "ping_ms": _ms(rtt),
            "available": rtt is not None,
            "breaker_state": str(getattr(state, "value", state)),
        }

    async def set_isolated(self, isolated: bool, *, dry_run: bool) -> dict[str, Any]:
        """Start or end maintenance mode: no writes, reads served from what is cached."""
        was = bool(self.cache.isolated)
        if not dry_run and was != isolated:
            if isolated:
                self.cache.isolate()
            else:
                self.cache.restore()
        return {
            "isolated": bool(self.cache.isolated),
            "was_isolated": was,
            "changed": (was != isolated) and not dry_run,
        }


def _counts(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, int):
        return {"total": value}
    return {"result": value}
