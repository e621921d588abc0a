"""The guide's reads as pure functions of :class:`~.facts.Facts` (or of the engine snapshot).

Each function returns the field names the guide's ``jq`` filters read, with units as the guide's
text implies them: rates are ratios 0..1 (the monitoring script multiplies ``cache_hit_rate`` by
100), sizes named ``*_mb`` are MiB, durations are milliseconds, utilizations are percentages.
docs/runtime-api.md lists every field, its source and where the origin's code and the guide disagree.
Nothing here is a constant: every figure is computed from the engine's counters, L1's entries,
Redis ``INFO`` or the process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cache_runtime.config import OPERATIONS
from cache_runtime.service.guide.facts import Facts, key_digest, key_pattern
from cache_runtime.service.guide.process import (
    MIB,
    Sample,
    load_average,
    memory_limit_bytes,
    network_counters,
)

CALL_KINDS = ("get", "set", "delete", "get_many", "set_many", "l2_get", "l2_set", "compute", "invalidate")


def ms(seconds: float | None) -> float | None:
    """Seconds -> milliseconds (3 decimals), None stays None."""
    return None if seconds is None else round(float(seconds) * 1000, 3)


def mb(size: float | None) -> float | None:
    """Bytes -> MiB (4 decimals)."""
    return None if size is None else round(float(size) / MIB, 4)


def ratio(part: float, whole: float) -> float | None:
    """part/whole rounded, None when whole is 0."""
    return round(part / whole, 4) if whole else None


def hist_avg_ms(histogram: Mapping[str, Any] | None) -> float | None:
    """Mean of a latency histogram in ms."""
    if not histogram or not histogram.get("count"):
        return None
    return ms(histogram["sum"] / histogram["count"])


def _latency(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    return dict(snapshot.get("latency") or {})


def total_operations(snapshot: Mapping[str, Any]) -> int:
    """Lookups + writes + deletes the engine served."""
    lookup_counts = snapshot["requests"]
    return int(lookup_counts["lookups"] + lookup_counts["sets"] + lookup_counts["deletes"])


def avg_operation_ms(snapshot: Mapping[str, Any]) -> float | None:
    """Mean duration of get/set/delete calls, ms."""
    latency = _latency(snapshot)
    count = sum((latency.get(name) or {}).get("count", 0) for name in ("get", "set", "delete"))
    total = sum((latency.get(name) or {}).get("sum", 0.0) for name in ("get", "set", "delete"))
    return ms(total / count) if count else None


def compression_ratio(compression: Mapping[str, Any]) -> float | None:
    """Compressed size / original size over every compression attempt (0.3 = 70 % saved)."""
    return ratio(compression["bytes_out"], compression["bytes_in"])


def bytes_saved(compression: Mapping[str, Any]) -> int:
    """Bytes lz4 saved over every attempt that kept the compressed form."""
    return int(max(0, compression["bytes_in"] - compression["bytes_out"]))


# ---- fields added to the existing endpoints -----------------------------------------------------


def metrics_fields(snapshot: Mapping[str, Any], memory: Sample) -> dict[str, Any]:
    """``GET metrics``: the guide's flat names next to the original's nested shape."""
    lookup_counts = snapshot["requests"]
    l1 = snapshot["l1"]
    return {
        "cache_hit_rate": lookup_counts.get("hit_rate"),
        "total_operations": total_operations(snapshot),
        "memory_cache_hit_rate": lookup_counts.get("l1_hit_rate"),
        "redis_cache_hit_rate": lookup_counts.get("l2_hit_rate"),
        "avg_operation_duration": avg_operation_ms(snapshot),
        "memory_usage": {
            "total_mb": mb(l1["bytes"]),
            "l1_entries": l1["entries"],
            "process_rss_mb": mb(memory.rss),
        },
    }


def memory_stats_fields(
    snapshot: Mapping[str, Any], redis_memory: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``GET memory-stats``: total_cache_size_mb, utilization %, Redis used memory, compression savings."""
    l1 = snapshot["l1"]
    compression = snapshot["compression"]
    utilizations = [
        l1["entries"] / l1["max_entries"] if l1.get("max_entries") else 0.0,
        l1["bytes"] / l1["max_bytes"] if l1.get("max_bytes") else 0.0,
    ]
    used = (redis_memory or {}).get("used_memory")
    return {
        "total_cache_size_mb": mb(l1["bytes"]),
        "memory_cache_utilization": round(max(utilizations) * 100, 2),
        "redis_memory_used": mb(used) if used is not None else None,
        "redis_memory_used_bytes": used,
        "compression_stats": {
            "total_bytes_saved": bytes_saved(compression),
            "compressed_values": compression["compressed"],
            "avg_compression_ratio": compression_ratio(compression),
        },
    }


def error_entries(
    snapshot: Mapping[str, Any], logged: Mapping[str, Any], report: Mapping[str, Any] | None, limit: int = 50
) -> list[dict[str, Any]]:
    """Recent errors as the guide reads them: ``{timestamp, error_type, message}`` newest first.

    From Redis (the last error of every kind seen), the warning/error log ring, and the symptoms
    the health evaluation finds now.
    """
    entries: list[dict[str, Any]] = []
    for kind, last in ((snapshot.get("l2_detail") or {}).get("last_errors") or {}).items():
        if isinstance(last, Mapping):
            entries.append(
                {
                    "timestamp": last.get("at"),
                    "error_type": f"redis_{kind}",
                    "message": str(last.get("message")),
                    "source": "redis",
                    "operation": last.get("op"),
                    "at": last.get("at"),
                    "level": "error",
                    "logger": "cache_runtime.l2",
                }
            )
    for item in logged.get("errors") or []:
        entries.append(
            {
                **dict(item),  # the log ring's own fields (at, level, logger, message, fields) stay
                "timestamp": item.get("at"),
                "error_type": item.get("exception") or item.get("level"),
                "message": item.get("message"),
                "source": item.get("logger"),
            }
        )
    for symptom in (report or {}).get("symptoms") or []:
        entries.append(
            {
                "timestamp": (report or {}).get("evaluated_at"),
                "error_type": symptom.get("name"),
                "message": symptom.get("message"),
                "source": "health",
                "severity": symptom.get("severity"),
                "at": (report or {}).get("evaluated_at"),
                "level": "warning" if symptom.get("severity") == "warning" else "error",
                "logger": "cache_runtime.health",
            }
        )
    entries.sort(key=lambda item: item.get("timestamp") or 0, reverse=True)
    return entries[:limit]


def compression_stats_fields(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """``GET compression-stats``: ratio (compressed/original), bytes saved, ms per (de)compression."""
    compression = snapshot["compression"]
    lookup_counts = snapshot["requests"]
    return {
        "avg_compression_ratio": compression_ratio(compression),
        "total_bytes_saved": bytes_saved(compression),
        "avg_compression_time": ms(compression.get("seconds_per_attempt"))
        if compression["attempts"]
        else None,
        "avg_decompression_time": ms(compression["decompress_seconds"] / lookup_counts["hits_l2"])
        if lookup_counts["hits_l2"]
        else None,
    }


def key_analysis_fields(
    snapshot: Mapping[str, Any], entries: Any, info: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``GET key-analysis``: keys held, patterns, key length, tier distribution, variant evidence."""
    analysis = snapshot["key_analysis"]
    sampled = analysis.get("sampled_requests") or 0
    return {
        "total_keys": entries.count,
        "redis_keys": _keyspace_keys(info),
        "patterns": dict(entries.prefixes.most_common()),
        "avg_key_length": round(entries.key_length_sum / entries.count, 2) if entries.count else None,
        "text_tier_stats": {tier: entries.by_tier.get(tier, 0) for tier in ("s", "m", "l", "x")},
        "key_patterns": {
            "by_pattern": dict(entries.prefixes.most_common()),
            "groups_with_variants": analysis.get("groups_with_variants"),
            "variant_share": ratio(analysis.get("new_variant_requests", 0), sampled),
            "top_variant_groups": analysis.get("top_groups"),
        },
    }


def _keyspace_keys(info: Mapping[str, Any] | None) -> int | None:
    if not info:
        return None
    total = 0
    for name, value in info.items():
        if str(name).startswith("db") and isinstance(value, Mapping):
            total += int(value.get("keys", 0))
    return total


def operation_stats_fields(snapshot: Mapping[str, Any], ttl_of: Any) -> dict[str, Any]:
    """``GET operation-stats``: per AI operation and per engine call, count / avg_duration (ms) / hit_rate."""
    operations: dict[str, Any] = {}
    for name, stats in (snapshot.get("operations") or {}).items():
        count = stats["hits"] + stats["misses"]
        operations[name] = {
            **dict(stats),
            "count": count,
            # Lookups are timed per engine call, not per AI operation (see the get entry).
            "avg_duration": None,
            "ttl_s": ttl_of(None if name == "default" else name),
            "kind": "ai_operation",
        }
    latency = _latency(snapshot)
    lookup_counts = snapshot["requests"]
    for name in CALL_KINDS:
        histogram = latency.get(name) or {}
        if not histogram.get("count"):
            continue
        operations[name] = {
            "count": histogram["count"],
            "avg_duration": hist_avg_ms(histogram),
            "p95_ms": ms(histogram.get("p95")),
            "hit_rate": lookup_counts.get("hit_rate") if name == "get" else None,
            "kind": "engine_call",
        }
    return {"operations": operations}


def ttl_settings(config: Any) -> dict[str, Any]:
    """TTLs in force, seconds."""
    ttl = config.ttl
    return {
        "default_ttl": ttl.default_s,
        "operation_ttls": {name: ttl.for_operation(name) for name in OPERATIONS},
        "jitter_fraction": ttl.jitter_fraction,
    }


def invalidation_fields(snapshot: Mapping[str, Any], journal: Any, uptime_s: float) -> dict[str, Any]:
    """``GET invalidation-stats``: invalidations per hour, manual clears."""
    invalidation = snapshot["invalidation"]
    total = invalidation["pattern"] + invalidation["namespace"]
    clears = sum(journal.executed.get(name, 0) for name in ("clear", "emergency/clear-all"))
    return {
        "hourly_invalidations": round(total / (uptime_s / 3600.0), 3),
        "manual_clear_count": clears,
        "observed_seconds": round(uptime_s, 3),
    }


def key_generation_fields(described: Mapping[str, Any], again: Mapping[str, Any]) -> dict[str, Any]:
    """``POST debug/key-generation``: cache_key, processing_method, consistency (built twice, equal)."""
    method = "readable" if described.get("text_in_key") else f"hashed ({described.get('hash_algorithm')})"
    return {
        "cache_key": described.get("key"),
        "processing_method": method,
        "consistency_verified": described.get("key") == again.get("key"),
    }


# ---- new reads ----------------------------------------------------------------------------------


def text_tier_analysis(facts: Facts) -> dict[str, Any]:
    """``GET text-tier-analysis``: texts by size tier, hashing vs readable keys, variant evidence."""
    keys = facts.config.keys
    entries = facts.entries
    analysis = facts.snapshot["key_analysis"]
    sampled = analysis.get("sampled_requests") or 0
    return {
        "size_distribution": {
            "tiers": {tier: entries.by_tier.get(tier, 0) for tier in ("s", "m", "l", "x")},
            "limits_chars": keys.tiers.model_dump(),
            "ai_keys": entries.ai_keys,
        },
        "hash_threshold_analysis": {
            "text_hash_threshold": keys.text_hash_threshold,
            "readable_small_text": keys.readable_small_text,
            "hashed_keys": entries.hashed,
            "readable_keys": entries.readable,
            "hash_algorithm": keys.hash_algorithm,
        },
        "consistency_metrics": {
            "sampled_requests": sampled,
            "distinct_raw_keys": analysis.get("distinct_raw_keys"),
            "distinct_normalized_keys": analysis.get("distinct_normalized_keys"),
            "groups_with_variants": analysis.get("groups_with_variants"),
            "variant_share": ratio(analysis.get("new_variant_requests", 0), sampled),
            "normalization": keys.normalize.model_dump(),
        },
    }


def ttl_analysis(facts: Facts) -> dict[str, Any]:
    """``GET ttl-analysis``: expiries per hour, share of TTL used at read time, evidence, advice."""
    snapshot = facts.snapshot
    ttl = snapshot["ttl"]
    entries = facts.entries
    hours = facts.uptime_s / 3600.0
    redis_expired = (facts.redis_info or {}).get("expired_keys")
    expired_l1 = snapshot["l1"]["expirations"]
    used = round(entries.ttl_used_sum / entries.count, 4) if entries.count else None
    recommendations = []
    sampled = ttl.get("sampled_misses") or 0
    expired_share = ratio(ttl.get("expired_misses", 0), sampled)
    gap = ttl.get("reuse_gap") or {}
    for name in OPERATIONS:
        current = facts.config.ttl.for_operation(name)
        advice = "keep"
        if expired_share is not None and expired_share > 0.25:
            advice = "raise"
        recommendations.append(
            {"operation": name, "current_ttl_s": current, "advice": advice, "reuse_gap_p95_s": gap.get("p95")}
        )
    return {
        "expired_entries_per_hour": round((expired_l1 + (redis_expired or 0)) / hours, 3),
        "l1_expirations": expired_l1,
        "redis_expired_keys": redis_expired,
        "avg_lifetime_used": used,
        "ttl_utilization_ratio": used,
        "avg_ttl_s": round(entries.ttl_seconds_sum / entries.count, 1) if entries.count else None,
        "miss_evidence": {k: v for k, v in ttl.items() if k != "reuse_gap"},
        "expired_miss_share": expired_share,
        "recommendations": recommendations,
    }


def memory_breakdown(facts: Facts) -> dict[str, Any]:
    """Bytes the cache holds and overheads, MiB (shared by memory-analysis and detailed-analysis)."""
    snapshot = facts.snapshot
    growth = facts.history.growth(facts.memory)
    pool = (snapshot.get("l2_detail") or {}).get("pool") or {}
    connections = int(pool.get("in_use", 0)) + int(pool.get("idle", 0))
    # Each pooled connection holds a 64 KiB read buffer in redis-py (its socket_read_size).
    redis_client = connections * 65536
    histograms = len(_latency(snapshot)) + 2
    monitoring = histograms * 20 * 16 + 4096  # bucket counters of every histogram + counters
    key_index = facts.entries.key_length_sum + facts.entries.count * 100  # key strings + dict slots
    return {
        "total_memory_mb": mb(snapshot["l1"]["bytes"] + redis_client + monitoring + key_index),
        "l1_cache_memory_mb": mb(snapshot["l1"]["bytes"]),
        "redis_client_memory_mb": mb(redis_client),
        "monitoring_memory_mb": mb(monitoring),
        "compression_buffer_mb": mb(snapshot["compression"]["max_stored_bytes"]),
        "key_index_memory_mb": mb(key_index),
        "process_rss_mb": mb(facts.memory.rss),
        "growth": growth,
    }


def memory_analysis(facts: Facts) -> dict[str, Any]:
    """``GET memory-analysis``."""
    breakdown = memory_breakdown(facts)
    return {
        **breakdown,
        "monitoring_memory_mb": breakdown["monitoring_memory_mb"],
        "compression_buffer_mb": breakdown["compression_buffer_mb"],
        "memory_growth_trend": breakdown["growth"],
    }


def _entry_view(size: int, key: str, ttl: float, remaining: float, compressed: bool | None) -> dict[str, Any]:
    parts = key.split(":")
    return {
        # Keys can carry user text (data-API keys, readable small texts): a digest and the pattern only.
        "key_digest": key_digest(key),
        "pattern": key_pattern(key),
        "operation": (parts[1] if parts[1] in OPERATIONS else "other")
        if key.startswith("ai") and len(parts) > 1
        else "data",
        "size_bytes": size,
        "size_mb": mb(size),
        "compressed": compressed,
        "ttl_s": round(ttl, 1),
        "remaining_s": round(max(0.0, remaining), 1),
    }


def largest_entries(facts: Facts) -> list[dict[str, Any]]:
    """The largest live L1 entries, with whether their stored form is lz4-compressed."""
    flags = facts.extra.get("compressed_flags") or {}
    return [
        _entry_view(size, key, ttl, remaining, flags.get(key))
        for size, key, ttl, remaining in facts.entries.largest
    ]


def memory_intensive_ops(facts: Facts) -> dict[str, Any]:
    """``GET memory-intensive-ops``: largest entries, bytes per operation, evictions."""
    l1 = facts.snapshot["l1"]
    info = facts.redis_info or {}
    return {
        "entries": largest_entries(facts),
        "operation_memory_usage": {
            name: {"entries": facts.entries.by_operation[name], "mb": mb(size)}
            for name, size in facts.entries.bytes_by_operation.most_common()
        },
        "eviction_stats": {
            "l1_evictions": l1["evictions"],
            "l1_expirations": l1["expirations"],
            "l1_evictions_per_hour": round(l1["evictions"] / (facts.uptime_s / 3600.0), 3),
            "redis_evicted_keys": info.get("evicted_keys"),
        },
    }


def compression_effectiveness(facts: Facts) -> dict[str, Any]:
    """``GET compression-effectiveness``: ratio, values kept uncompressed, threshold, possible savings."""
    compression = facts.snapshot["compression"]
    current_ratio = compression_ratio(compression)
    uncompressed = max(0, compression["stored_values"] - compression["compressed"])
    candidates = compression["large_values_uncompressed"]
    potential = candidates * (compression["avg_stored_bytes"] or 0) * (1 - (current_ratio or 1.0))
    return {
        "avg_compression_ratio": current_ratio,
        "uncompressed_count": uncompressed,
        "current_threshold": facts.config.compression.threshold_bytes,
        "potential_memory_savings_mb": mb(potential),
        "attempts": compression["attempts"],
        "kept_compressed": compression["compressed"],
        "skipped_no_gain": compression["skipped"],
    }


def large_entries(facts: Facts) -> dict[str, Any]:
    """``GET large-entries``: largest entries, the ones above the threshold stored uncompressed."""
    threshold = facts.config.compression.threshold_bytes
    entries = largest_entries(facts)
    candidates = [item for item in entries if item["compressed"] is False and item["size_bytes"] >= threshold]
    compression = facts.snapshot["compression"]
    return {
        "entries": entries,
        "compression_candidates": candidates,
        "threshold_effectiveness": {
            "threshold_bytes": threshold,
            "entries_at_or_above": facts.entries.above_threshold,
            "attempts": compression["attempts"],
            "kept_compressed": compression["compressed"],
            "skipped_no_gain": compression["skipped"],
            "kept_share": ratio(compression["compressed"], compression["attempts"]),
        },
    }


def leak_analysis(facts: Facts, last_cleanup: Mapping[str, Any] | None) -> dict[str, Any]:
    """Growth, cleanup effectiveness and leak indicators (memory-leak-analysis, memory/leak-analysis)."""
    growth = facts.history.growth(facts.memory)
    l1 = facts.snapshot["l1"]
    engine = facts.snapshot.get("engine") or {}
    indicators = []
    if growth["rss_mb_per_hour"] > 10 and growth["observed_seconds"] > 600:
        indicators.append(
            {
                "indicator": "rss_growth",
                "value_mb_per_hour": growth["rss_mb_per_hour"],
                "threshold_mb_per_hour": 10,
            }
        )
    if l1["max_bytes"] and l1["bytes"] > l1["max_bytes"]:
        indicators.append({"indicator": "l1_over_budget", "bytes": l1["bytes"], "max_bytes": l1["max_bytes"]})
    if engine.get("background_tasks", 0) > 1000:
        indicators.append({"indicator": "background_tasks", "value": engine["background_tasks"]})
    if facts.entries.expired_unswept > facts.entries.count and facts.entries.expired_unswept > 100:
        indicators.append({"indicator": "expired_entries_kept", "value": facts.entries.expired_unswept})
    cleanup = {
        "l1_expirations": l1["expirations"],
        "l1_evictions": l1["evictions"],
        "expired_not_yet_swept": facts.entries.expired_unswept,
        "last_cleanup": dict(last_cleanup) if last_cleanup else None,
    }
    return {
        "growth_rate": growth["rss_mb_per_hour"],
        "growth": growth,
        "cleanup_stats": cleanup,
        "leak_indicators": indicators,
    }


def timing_analysis(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """``GET timing-analysis``: per engine call avg/p50/p95/p99 in ms, and get's percentiles."""
    latency = _latency(snapshot)
    operations = {}
    for name in CALL_KINDS:
        histogram = latency.get(name) or {}
        if histogram.get("count"):
            operations[name] = {
                "count": histogram["count"],
                "avg_duration_ms": hist_avg_ms(histogram),
                "p50_ms": ms(histogram.get("p50")),
                "p95_ms": ms(histogram.get("p95")),
                "p99_ms": ms(histogram.get("p99")),
            }
    get = latency.get("get") or {}
    return {
        "operations": operations,
        "latency_percentiles": {
            "p50": ms(get.get("p50")),
            "p95": ms(get.get("p95")),
            "p99": ms(get.get("p99")),
            "operation": "get",
            "unit": "ms",
        },
    }


def redis_server_stats(
    info: Mapping[str, Any] | None, uptime_hint: float | None = None
) -> dict[str, Any] | None:
    """CPU, clients, memory and throughput from Redis INFO."""
    if not info:
        return None
    cpu = float(info.get("used_cpu_sys", 0.0)) + float(info.get("used_cpu_user", 0.0))
    uptime = float(info.get("uptime_in_seconds") or 0) or (uptime_hint or 0)
    return {
        "cpu_usage": round(cpu / uptime, 4) if uptime else None,
        "cpu_seconds": round(cpu, 3),
        "uptime_in_seconds": info.get("uptime_in_seconds"),
        "connected_clients": info.get("connected_clients"),
        "instantaneous_ops_per_sec": info.get("instantaneous_ops_per_sec"),
        "used_memory_mb": mb(info.get("used_memory")),
        "redis_version": info.get("redis_version"),
    }


def redis_performance(facts: Facts) -> dict[str, Any]:
    """``GET redis-performance``: pool, mean round trip, PING now, server CPU."""
    detail = facts.snapshot.get("l2_detail") or {}
    l2 = facts.snapshot.get("l2") or {}
    pool = dict(detail.get("pool") or {})
    if pool.get("max_connections"):
        pool["utilization"] = round((pool.get("in_use", 0)) / pool["max_connections"], 4)
    return {
        "connection_pool_stats": pool or None,
        "redis_avg_response_time": ms(l2.get("round_trip_mean_seconds")),
        "network_latency_ms": ms(facts.redis_ping_s),
        "round_trips": l2.get("round_trips"),
        "redis_server_stats": redis_server_stats(facts.redis_info),
        "breaker_state": l2.get("breaker_state"),
    }


def compression_timing(facts: Facts) -> dict[str, Any]:
    """``GET compression-timing``: ms per compression / per decompression, share of write time."""
    compression = facts.snapshot["compression"]
    lookup_counts = facts.snapshot["requests"]
    sets = _latency(facts.snapshot).get("set") or {}
    overhead = ratio(compression["seconds"], sets.get("sum") or 0.0)
    slow = [
        item
        for item in largest_entries(facts)
        if item["size_bytes"] >= facts.config.compression.offload_threshold_bytes
    ]
    return {
        "compression": {
            "avg_time_ms": ms(compression["seconds_per_attempt"]) if compression["attempts"] else None,
            "attempts": compression["attempts"],
            "total_ms": ms(compression["seconds"]),
        },
        "decompression": {
            "avg_time_ms": ms(compression["decompress_seconds"] / lookup_counts["hits_l2"])
            if lookup_counts["hits_l2"]
            else None,
            "total_ms": ms(compression["decompress_seconds"]),
            "l2_hits": lookup_counts["hits_l2"],
        },
        "compression_cpu_overhead": overhead,
        "slow_compression_operations": {
            "offloaded": compression["offloaded"],
            "offload_threshold_bytes": facts.config.compression.offload_threshold_bytes,
            "entries_at_or_above": slow,
        },
    }


def _recommendations(report: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    found = []
    for cause in (report or {}).get("causes") or []:
        for item in cause.get("recommendations") or []:
            found.append({"cause": cause.get("name"), **dict(item)})
    return found


def performance_analysis(facts: Facts) -> dict[str, Any]:
    """``GET performance-analysis``: L1 and L2 figures, bottlenecks (symptoms + causes), advice."""
    snapshot = facts.snapshot
    lookup_counts = snapshot["requests"]
    latency = _latency(snapshot)
    l1 = snapshot["l1"]
    report = facts.health or {}
    return {
        "l1_cache_stats": {
            "hits": lookup_counts["hits_l1"],
            "hit_rate": lookup_counts.get("l1_hit_rate"),
            "entries": l1["entries"],
            "max_entries": l1["max_entries"],
            "memory_mb": mb(l1["bytes"]),
            "evictions": l1["evictions"],
            "get_p95_ms": ms((latency.get("get") or {}).get("p95")),
        },
        "l2_cache_stats": {
            "hits": lookup_counts["hits_l2"],
            "hit_rate": lookup_counts.get("l2_hit_rate"),
            "get_avg_ms": hist_avg_ms(latency.get("l2_get")),
            "set_avg_ms": hist_avg_ms(latency.get("l2_set")),
            "round_trip_mean_ms": ms((snapshot.get("l2") or {}).get("round_trip_mean_seconds")),
            "breaker_state": (snapshot.get("l2") or {}).get("breaker_state"),
        },
        "identified_bottlenecks": [
            {"symptom": item.get("name"), "severity": item.get("severity"), "message": item.get("message")}
            for item in report.get("symptoms") or []
        ]
        + [
            {"cause": item.get("name"), "summary": item.get("summary"), "score": item.get("score")}
            for item in report.get("causes") or []
        ],
        "optimization_recommendations": _recommendations(report),
        "status": report.get("status"),
    }


def config_validation(facts: Facts, rejection: Mapping[str, Any] | None) -> dict[str, Any]:
    """``GET config/validate``: the config in force checked again, warnings, errors, advice."""
    config = facts.config
    warnings, errors = [], []
    if config.redis.url is None:
        warnings.append("redis.url is null: memory-only, every pod has its own cache")
    if not config.enabled:
        warnings.append("enabled is false: every lookup misses")
    if config.l1.max_bytes < facts.snapshot["compression"]["max_stored_bytes"] * 10:
        warnings.append("l1.max_bytes holds fewer than 10 of the largest values stored")
    if config.ttl.default_s < 60:
        warnings.append(f"ttl.default_s={config.ttl.default_s}: entries live less than a minute")
    if rejection:
        errors.append({"source": "config file", **dict(rejection)})
    try:
        type(config).model_validate(config.model_dump())
    except Exception as exc:  # the model is validated when built; this can only fail on a bug
        errors.append({"source": "in force", "message": str(exc)[:300]})
    return {
        "is_valid": not errors,
        "warnings": warnings,
        "errors": errors,
        "recommendations": _recommendations(facts.health),
        "hash": config.config_hash(),
        "preset": config.preset,
    }


def resource_usage(facts: Facts) -> dict[str, Any]:
    """``GET resource-usage``: process CPU, memory against the cgroup limit, pod network, Redis disk."""
    limit = memory_limit_bytes()
    info = facts.redis_info or {}
    return {
        "cpu_utilization": {**facts.history.cpu_utilization(), "load_average": load_average()},
        "memory_utilization": {
            "rss_mb": mb(facts.memory.rss),
            "limit_mb": mb(limit) if limit else None,
            "rss_of_limit_percent": round(facts.memory.rss / limit * 100, 2) if limit else None,
            "l1_mb": mb(facts.snapshot["l1"]["bytes"]),
        },
        "network_stats": network_counters(),
        "redis_disk_stats": {
            key: info.get(key)
            for key in (
                "rdb_changes_since_last_save",
                "rdb_last_save_time",
                "aof_enabled",
                "rdb_bgsave_in_progress",
                "aof_rewrite_in_progress",
            )
        }
        if info
        else None,
    }


def pattern_analysis(facts: Facts) -> dict[str, Any]:
    """``GET pattern-analysis``: hits by tier and operation, traffic rate, size classes, anomalies."""
    snapshot = facts.snapshot
    lookup_counts = snapshot["requests"]
    rate = lookup_counts["lookups"] / facts.uptime_s
    anomalies = [
        {"symptom": item.get("name"), "message": item.get("message")}
        for item in (facts.health or {}).get("symptoms") or []
    ]
    return {
        "access_pattern_analysis": {
            "by_operation": dict(snapshot.get("operations") or {}),
            "l1_share_of_hits": ratio(lookup_counts["hits_l1"], lookup_counts["hits"]),
            "key_patterns": dict(facts.entries.prefixes.most_common(20)),
        },
        "temporal_access_patterns": {
            "lookups_per_second": round(rate, 3),
            "observed_seconds": round(facts.uptime_s, 1),
            "reuse_gap_s": {
                k: (facts.snapshot["ttl"].get("reuse_gap") or {}).get(k) for k in ("count", "p50", "p95")
            },
        },
        "data_size_patterns": {
            "by_size": dict(facts.entries.size_buckets),
            "avg_stored_bytes": snapshot["compression"]["avg_stored_bytes"],
            "max_stored_bytes": snapshot["compression"]["max_stored_bytes"],
        },
        "detected_anomalies": anomalies,
    }


def correlation_analysis(facts: Facts) -> dict[str, Any]:
    """``GET correlation-analysis``: Redis health next to latency, host load, concurrency."""
    snapshot = facts.snapshot
    l2 = snapshot.get("l2") or {}
    get = _latency(snapshot).get("get") or {}
    l2_get = _latency(snapshot).get("l2_get") or {}
    errors = sum((l2.get("errors") or {}).values())
    return {
        "redis_health_correlation": {
            "breaker_state": l2.get("breaker_state"),
            "redis_errors": errors,
            "redis_share_of_get_time": ratio(l2_get.get("sum", 0.0), get.get("sum", 0.0)),
            "ping_ms": ms(facts.redis_ping_s),
        },
        "system_load_impact": {"load_average": load_average(), **facts.history.cpu_utilization()},
        "concurrency_impact": {
            "single_flight_merges": snapshot["stampede"]["singleflight_merges"],
            "single_flight_in_progress": (snapshot.get("engine") or {}).get("single_flight_in_progress"),
            "pool_waits": l2.get("pool_waits"),
            "background_tasks": (snapshot.get("engine") or {}).get("background_tasks"),
        },
    }


def health_component(ok: bool, degraded: bool = False) -> str:
    """One word per component."""
    return "unhealthy" if not ok else ("degraded" if degraded else "healthy")


def comprehensive_health(facts: Facts) -> dict[str, Any]:
    """``GET health/comprehensive``: component and performance health words, active alerts."""
    snapshot = facts.snapshot
    report = facts.health or {}
    thresholds = report.get("thresholds") or {}
    symptoms = {item.get("name"): item for item in report.get("symptoms") or []}
    l2 = snapshot.get("l2") or {}

    def from_symptom(*names: str) -> str:
        found = [symptoms[name] for name in names if name in symptoms]
        if not found:
            return "healthy"
        return "unhealthy" if any(item.get("severity") == "critical" for item in found) else "degraded"

    redis_ok = (not l2.get("enabled")) or (l2.get("available") and l2.get("breaker_state") != "open")
    compression = snapshot["compression"]
    lookup_counts = snapshot["requests"]
    return {
        "health_status": report.get("status"),
        "l1_cache_health": health_component(True, snapshot["l1"]["entries"] >= snapshot["l1"]["max_entries"]),
        "redis_health": "disabled" if not l2.get("enabled") else health_component(bool(redis_ok)),
        "compression_health": health_component(
            True, bool(compression["attempts"]) and compression["compressed"] == 0
        ),
        "monitoring_health": health_component(facts.config.monitoring, False)
        if facts.config.monitoring
        else "disabled",
        "key_generator_health": health_component(True, lookup_counts["decode_failures"] > 0),
        "hit_rate_health": from_symptom("LowHitRate"),
        "latency_health": from_symptom("SlowOperations", "HighLatency"),
        "memory_health": from_symptom("HighMemory", "HighMemoryUsage"),
        "throughput_health": "healthy"
        if lookup_counts["lookups"] >= thresholds.get("min_requests", 0)
        else "insufficient_data",
        "active_alerts": [dict(item) for item in report.get("symptoms") or []],
        "evaluated_at": report.get("evaluated_at"),
    }


def emergency_status(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """``GET emergency/status``: isolation, pending operations, fallback (memory-only) state."""
    engine = snapshot.get("engine") or {}
    l2 = snapshot.get("l2") or {}
    journal = engine.get("outage_journal") or {}
    fallback = bool(l2.get("enabled")) and (not l2.get("available") or l2.get("breaker_state") == "open")
    return {
        "isolation_active": bool(snapshot.get("isolated")),
        "maintenance_mode": bool(snapshot.get("isolated")),
        "operations_pending": int(engine.get("background_tasks", 0))
        + int(engine.get("single_flight_in_progress", 0)),
        "fallback_mode_active": fallback or not l2.get("enabled"),
        "outage_journal": journal,
        "breaker_state": l2.get("breaker_state"),
        "checked_at": time.time(),
    }
