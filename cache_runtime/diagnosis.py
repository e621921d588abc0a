"""The runbook's decision tree as code: from symptoms and snapshot evidence to causes and actions.

Pure functions. :func:`diagnose` takes the snapshot (a window, see ``stats.diff_snapshots``), the
symptoms :func:`cache_runtime.health.detect_symptoms` found and the thresholds, and returns the
causes that explain them, most likely first. Each :class:`Cause` carries the numbers it was
decided on (``evidence``) and :class:`Recommendation` s, the first being the one to try first.

Causes told apart (design.md):

=================== =====================================================================
symptom             causes
=================== =====================================================================
LowHitRate          KeyInconsistency, TtlTooShort, ExcessiveInvalidation, L1TooSmall (only
                    when L1 is the only working tier), RedisUnreachable, PodIsolated,
                    LowReuseWorkload (nothing to fix), Undetermined
L1Thrashing         L1TooSmall
HighMemory          LargeUncompressedEntries, UnboundedGrowth
SlowOperations      RedisLatency, PoolExhaustion, CompressionTooCostly, Undetermined
RedisUnavailable    RedisAuthenticationFailure, RedisUnreachable
RedisAuthFailure    RedisAuthenticationFailure
RedisOutOfMemory    RedisOutOfMemory (with the maxmemory policy: noeviction or not)
=================== =====================================================================

Recommendation actions are the CacheIncident actions (``clear``, ``invalidate``, ``gc``,
``reset-config``, ``apply-preset``, ``reconnect-redis``, ``compress-existing``, ``isolate``,
``restore``), ``config-change`` (parameters ``overrides``: a nested dict in the shape of
CachePolicy ``spec.overrides``, e.g. ``{"ttl": {"default_s": 14400}}``) or ``None`` for work only a
person can do (fix a Secret, change Redis' maxmemory-policy, change the calling application).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cache_runtime.actions import ACTIONS, DISRUPTIVE_ACTIONS
from cache_runtime.stats import LARGE_VALUE_BYTES, REUSE_GAP_BUCKETS_SECONDS, Snapshot
from cache_runtime.symptoms import Symptom, Thresholds

MAX_TTL_S = 7 * 24 * 3600
MIB = 1024 * 1024
MAX_L1_ENTRIES = 1_000_000
MAX_REDIS_CONNECTIONS = 1000
# lz4 reliably pays on text-like values from a few KiB up; below ~1 KiB it rarely does.
SUGGESTED_COMPRESSION_THRESHOLD = 4096
# Error kinds that mean "Redis cannot serve us now" (as opposed to credentials or data).
NETWORK_ERROR_KINDS = ("connection", "timeout", "tls", "readonly", "loading", "cluster")
NORMALIZE_FLAGS = ("whitespace", "line_endings", "invisible_chars", "case")


@dataclass(frozen=True)
class Recommendation:
    """One thing to do about a cause. ``action`` None means a person must do it."""

    action: str | None
    description: str
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"recommendation action {self.action!r} is not one of {sorted(ACTIONS)}")

    @property
    def disruptive(self) -> bool:
        """True for actions that change what every client sees (one at a time per policy)."""
        return self.action in DISRUPTIVE_ACTIONS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "action": self.action,
            "parameters": _plain(self.parameters),
            "description": self.description,
            "disruptive": self.disruptive,
        }


@dataclass(frozen=True)
class Cause:
    """A diagnosed cause: which symptoms it explains, why we think so, what to do."""

    name: str
    symptoms: tuple[str, ...]
    summary: str
    evidence: Mapping[str, Any]
    recommendations: tuple[Recommendation, ...]
    score: float  # 0..1, how much of the symptom this cause explains; orders causes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (copied into CacheIncident status.diagnosis)."""
        return {
            "name": self.name,
            "symptoms": list(self.symptoms),
            "summary": self.summary,
            "score": round(self.score, 4),
            "evidence": _plain(self.evidence),
            "recommendations": [r.to_dict() for r in self.recommendations],
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def _share(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def _ms(seconds: float | None) -> float | None:
    return 1000 * seconds if seconds is not None else None


def _clip(value: float) -> float:
    return max(0.0, min(1.0, value))


# --- low hit rate ------------------------------------------------------------------------------


def _normalization_off(config: Mapping[str, Any]) -> list[str]:
    """The normalization flags that are off (config ``normalize`` dict or ``normalize_text`` bool)."""
    flags = config.get("normalize")
    if isinstance(flags, Mapping):
        return [flag for flag in NORMALIZE_FLAGS if not flags.get(flag, False)]
    if config.get("normalize_text"):
        return []
    return list(NORMALIZE_FLAGS)


def key_inconsistency(snapshot: Snapshot, t: Thresholds) -> Cause | None:
    """Many distinct keys whose normalized text is equal: normalization would turn them into hits."""
    keys = snapshot["key_analysis"]
    off = _normalization_off(snapshot["config"])
    sampled = keys.get("sampled_requests", 0)
    if not off or sampled < t.key_min_samples:
        return None
    share = _share(keys.get("new_variant_requests", 0), sampled)
    if share < t.key_variant_share:
        return None
    raw, normalized = keys.get("distinct_raw_keys", 0), keys.get("distinct_normalized_keys", 0)
    needed = _rules_needed(keys, off)
    return Cause(
        name="KeyInconsistency",
        symptoms=("LowHitRate",),
        summary=(
            f"{raw} distinct keys collapse to {normalized} when the text is normalized; "
            f"{share:.0%} of sampled requests were a new spelling of a text already seen"
        ),
        evidence={
            "sampled_requests": sampled,
            "sample_every": keys.get("sample_every"),
            "distinct_raw_keys": raw,
            "distinct_normalized_keys": normalized,
            "groups_with_variants": keys.get("groups_with_variants", 0),
            "new_variant_requests": keys.get("new_variant_requests", 0),
            "new_variant_share": share,
            "normalization_off": off,
            "variants_by_rule": dict(keys.get("flag_variants") or {}),
            "normalization_needed": needed,
        },
        recommendations=(
            Recommendation(
                "config-change",
                "enable text normalization before keying (" + ", ".join(needed) + ")",
                {"overrides": {"keys": {"normalize": dict.fromkeys(needed, True)}}},
            ),
        ),
        # The share of distinct keys normalization would fold away counts too: the request share is
        # diluted by writes (a miss builds its key twice, to look up and to store), so on a workload
        # of misses it stays near 0.5 however many spellings there are.
        score=_clip(max(share, 1 - _share(normalized, raw))),
    )


# A key asked again every `gap` seconds is served from cache k times per write with k = TTL // gap:
# a TTL of 10 gaps serves about 9 requests in 10, one gap only every other one.
TTL_GAPS = 10


# A rule is needed when at least this share of the new variants have a text it alone would change.
RULE_VARIANT_SHARE = 0.05


def _rules_needed(keys: Mapping[str, Any], off: list[str]) -> list[str]:
    """The rules (of those ``off``) the evidence shows: each changes the text of at least 5% of the
    new-variant requests (``flag_variants`` of the key-variant sampler). Without that evidence (an
    older runtime), every rule that is off."""
    by_rule = keys.get("flag_variants")
    variants = keys.get("new_variant_requests", 0)
    if not isinstance(by_rule, Mapping) or not by_rule or variants <= 0:
        return list(off)
    needed = [rule for rule in off if by_rule.get(rule, 0) >= RULE_VARIANT_SHARE * variants]
    return needed or list(off)


def _proposed_ttl(snapshot: Snapshot, current: float | None) -> int:
    """A TTL of :data:`TTL_GAPS` times the gap that covers 90% of the observed re-requests (a bucket
    bound), at least twice the TTL in force, at most 7 days."""
    gap = snapshot["ttl"].get("reuse_gap") or {}
    buckets = gap.get("buckets") or []
    count = gap.get("count", 0)
    target = math.ceil(0.9 * count)
    proposal = float(REUSE_GAP_BUCKETS_SECONDS[-1])
    for bound, cumulative in buckets:
        if cumulative >= target:
            proposal = float(bound) * TTL_GAPS
            break
    if current:
        proposal = max(proposal, 2 * current)
    return int(min(MAX_TTL_S, math.ceil(proposal)))


def ttl_too_short(snapshot: Snapshot, t: Thresholds) -> Cause | None:
    """Entries expire before they are asked for again: misses are re-requests after the TTL ran out."""
    ttl = snapshot["ttl"]
    sampled = ttl.get("sampled_misses", 0)
    if sampled < t.ttl_min_sampled_misses:
        return None
    expired = ttl.get("expired_misses", 0)
    share = _share(expired, sampled)
    if share < t.ttl_expired_share:
        return None
    config = snapshot["config"]
    current = config.get("ttl_default_s")
    proposal = _proposed_ttl(snapshot, current)
    gap = ttl.get("reuse_gap") or {}
    l1 = snapshot["l1"]
    ttl_overrides, changes = _ttl_changes(snapshot, t, current, proposal)
    return Cause(
        name="TtlTooShort",
        symptoms=("LowHitRate",),
        summary=(
            f"{share:.0%} of sampled misses asked again for a key after its TTL ran out "
            f"(median gap {gap.get('p50') or 0:.0f} s, TTL {current if current is not None else '?'} s)"
        ),
        evidence={
            "sampled_misses": sampled,
            "expired_misses": expired,
            "expired_share": share,
            "reuse_gap_p50_s": gap.get("p50"),
            "reuse_gap_p95_s": gap.get("p95"),
            "ttl_default_s": current,
            "operation_ttls_s": dict(config.get("operation_ttls_s") or {}),
            "l1_expirations": l1.get("expirations", 0),
            "l1_hits": snapshot["requests"]["hits_l1"],
            "operation_hit_rates": {
                name: op.get("hit_rate")
                for name, op in snapshot.get("operations", {}).items()
                if op.get("hits", 0) + op.get("misses", 0) > 0
            },
        },
        recommendations=(
            Recommendation(
                "config-change",
                f"raise {changes} ({TTL_GAPS}x the gap that covers 90% of the observed re-requests: a key "
                "re-asked at that gap is then a hit 9 times in 10)",
                {"overrides": {"ttl": ttl_overrides}},
            ),
        ),
        score=_clip(share),
    )


def _ttl_changes(
    snapshot: Snapshot, t: Thresholds, default: float | None, proposal: int
) -> tuple[dict[str, int], str]:
    """The TTLs to raise: each AI operation with traffic and a hit rate below the warning threshold
    gets its own (``ttl.<operation>_s``), so the other operations keep theirs; ``ttl.default_s`` when
    the low hit rate is on plain keys (operation "default") or no operation stands out."""
    operation_ttls = snapshot["config"].get("operation_ttls_s") or {}
    changes: dict[str, int] = {}
    for name, op in sorted((snapshot.get("operations") or {}).items()):
        lookups = op.get("hits", 0) + op.get("misses", 0)
        rate = op.get("hit_rate")
        if lookups == 0 or rate is None or rate >= t.hit_rate_warning:
            continue
        if name == "default":
            changes["default_s"] = proposal
        elif name in operation_ttls:
            changes[f"{name}_s"] = _proposed_ttl(snapshot, operation_ttls.get(name) or default)
    if not changes:
        changes["default_s"] = proposal
    text = ", ".join(f"ttl.{key} to {value} s" for key, value in sorted(changes.items()))
    return changes, text


def excessive_invalidation(snapshot: Snapshot, t: Thresholds) -> Cause | None:
    """Invalidations issued on this pod wipe entries before they are reused.

    Coherence messages received from other pods are evidence only, not the trigger: most of them are
    the broadcasts of ordinary writes (every set on a pod tells the others to drop that key), so with
    several pods every write-heavy workload would look "invalidated". An invalidation a pod issues
    is counted as local on that pod, whose report names this cause (the operator merges the pods')."""
    inval = snapshot["invalidation"]
    sets = snapshot["requests"]["sets"]
    local = inval.get("pattern", 0) + inval.get("namespace", 0)
    received = inval.get("coherence_messages_received", 0)
    events = local
    if events < t.invalidation_min_events:
        return None
    per_100_sets = 100.0 * _share(events, max(sets, 1))
    keys_per_set = _share(inval.get("keys_invalidated", 0), max(sets, 1))
    if per_100_sets < t.invalidations_per_100_sets and keys_per_set < t.invalidated_keys_per_set:
        return None
    unexpired = snapshot["ttl"].get("unexpired_misses", 0)
    return Cause(
        name="ExcessiveInvalidation",
        symptoms=("LowHitRate",),
        summary=(f"{events} invalidations ({per_100_sets:.1f} per 100 writes) removed entries before reuse"),
        evidence={
            "pattern_invalidations": inval.get("pattern", 0),
            "namespace_invalidations": inval.get("namespace", 0),
            "invalidations_from_other_pods": received,
            "keys_invalidated": inval.get("keys_invalidated", 0),
            "sets": sets,
            "invalidations_per_100_sets": per_100_sets,
            "keys_invalidated_per_set": keys_per_set,
            "sampled_misses_before_ttl": unexpired,
        },
        recommendations=(
            Recommendation(
                None,
                "invalidate less often or more narrowly (a namespace per tenant or document instead of "
                "broad patterns); find the caller of the invalidations in the runtime's invalidation-stats",
            ),
        ),
        score=_clip(max(keys_per_set, per_100_sets / 10.0)),
    )


def _l1_binding_limit(snapshot: Snapshot, t: Thresholds) -> tuple[str | None, float]:
    l1 = snapshot["l1"]
    entry_fill = _share(l1["entries"], l1["max_entries"]) if l1["max_entries"] else 0.0
    byte_fill = _share(l1["bytes"], l1["max_bytes"]) if l1["max_bytes"] else 0.0
    if max(entry_fill, byte_fill) < t.l1_full_ratio:
        return None, max(entry_fill, byte_fill)
    return ("max_entries" if entry_fill >= byte_fill else "max_bytes"), max(entry_fill, byte_fill)


def l1_too_small(snapshot: Snapshot, t: Thresholds, symptoms: tuple[str, ...]) -> Cause | None:
    """L1 evicts most of what it admits while it is at its budget: hot entries do not fit."""
    l1 = snapshot["l1"]
    inserts = l1["inserts"]
    if inserts == 0:
        return None
    eviction_ratio = _share(l1["evictions"], inserts)
    if eviction_ratio < t.l1_thrash_eviction_ratio:
        return None
    limit, fill = _l1_binding_limit(snapshot, t)
    recommendations: list[Recommendation] = []
    if limit == "max_bytes":
        # More bytes only where the memory threshold leaves room; otherwise the entries are the problem.
        room = int(0.8 * t.memory_warning_bytes)
        proposal = min(2 * l1["max_bytes"], room)
        if proposal > l1["max_bytes"]:
            recommendations.append(
                Recommendation(
                    "config-change",
                    f"raise l1.max_bytes to {proposal} (stays below the memory warning threshold)",
                    {"overrides": {"l1": {"max_bytes": proposal}}},
                )
            )
        else:
            recommendations.append(
                Recommendation(
                    None,
                    "L1's byte budget is at the memory threshold: compress large values or raise the "
                    "memory thresholds before giving L1 more bytes",
                )
            )
    else:
        proposal = min(MAX_L1_ENTRIES, max(l1["max_entries"] * 4, l1["max_entries"] + 100))
        recommendations.append(
            Recommendation(
                "config-change",
                f"raise l1.max_entries to {proposal}",
                {"overrides": {"l1": {"max_entries": proposal}}},
            )
        )
    recommendations.append(
        Recommendation(
            "apply-preset", "for an emergency: the performance preset (large L1)", {"preset": "performance"}
        )
    )
    requests = snapshot["requests"]
    return Cause(
        name="L1TooSmall",
        symptoms=symptoms,
        summary=(
            f"L1 evicted {l1['evictions']} entries for {inserts} inserts at {fill:.0%} of its "
            f"{limit or 'limits'}; L1 hit rate {requests.get('l1_hit_rate') or 0:.0%}, "
            f"L2 serves {requests.get('l2_hit_rate') or 0:.0%} of L1's misses"
        ),
        evidence={
            "evictions": l1["evictions"],
            "inserts": inserts,
            "evictions_per_insert": eviction_ratio,
            "entries": l1["entries"],
            "max_entries": l1["max_entries"],
            "bytes": l1["bytes"],
            "max_bytes": l1["max_bytes"],
            "binding_limit": limit,
            "l1_hit_rate": requests.get("l1_hit_rate"),
            "l2_hit_rate": requests.get("l2_hit_rate"),
        },
        recommendations=tuple(recommendations),
        score=_clip(eviction_ratio) * (1.0 if limit else 0.5),
    )


def pod_isolated(snapshot: Snapshot) -> Cause | None:
    """The pod is isolated (emergency): it refuses writes, so its hit rate falls by design."""
    if not snapshot.get("isolated"):
        return None
    return Cause(
        name="PodIsolated",
        symptoms=("LowHitRate",),
        summary="the pod is isolated and refuses writes; restore it once the emergency is over",
        evidence={"writes_rejected_isolated": snapshot["requests"].get("writes_rejected_isolated", 0)},
        recommendations=(Recommendation("restore", "restore the pod when the incident is resolved"),),
        score=1.0,
    )


def low_reuse_workload(snapshot: Snapshot, t: Thresholds) -> Cause | None:
    """Most misses are first requests: there is little repetition for a cache to exploit."""
    ttl = snapshot["ttl"]
    sampled = ttl.get("sampled_misses", 0)
    if sampled < t.ttl_min_sampled_misses:
        return None
    share = _share(ttl.get("cold_misses", 0), sampled)
    if share < t.low_reuse_cold_share:
        return None
    return Cause(
        name="LowReuseWorkload",
        symptoms=("LowHitRate",),
        summary=f"{share:.0%} of sampled misses were first requests for their key: little reuse to cache",
        evidence={"sampled_misses": sampled, "cold_misses": ttl.get("cold_misses", 0), "cold_share": share},
        recommendations=(
            Recommendation(
                None, "nothing to fix in the cache; lower the hit-rate thresholds for this workload"
            ),
        ),
        score=_clip(share) * 0.5,
    )


# --- high memory -------------------------------------------------------------------------------


def large_uncompressed_entries(snapshot: Snapshot, t: Thresholds) -> Cause | None:
    """Large values are stored without compression (compression off or its threshold above them)."""
    comp = snapshot["compression"]
    stored = comp.get("stored_values", 0)
    large = comp.get("large_values_uncompressed", 0)
    if stored == 0:
        return None
    share = _share(large, stored)
    if share < t.large_value_share:
        return None
    config = snapshot["config"]
    threshold = config.get("compression_threshold_bytes")
    recommendations: list[Recommendation] = []
    # Compression has no on/off switch: "off" is a threshold above every value.
    if threshold is None or threshold > SUGGESTED_COMPRESSION_THRESHOLD:
        recommendations.append(
            Recommendation(
                "config-change",
                f"lower compression.threshold_bytes from {threshold} to {SUGGESTED_COMPRESSION_THRESHOLD}",
                {"overrides": {"compression": {"threshold_bytes": SUGGESTED_COMPRESSION_THRESHOLD}}},
            )
        )
    recommendations.append(
        Recommendation("compress-existing", "recompress the entries already held with the new settings")
    )
    return Cause(
        name="LargeUncompressedEntries",
        symptoms=("HighMemory",),
        summary=(
            f"{large} of {stored} stored values were >= {LARGE_VALUE_BYTES // 1024} KiB and stored "
            f"uncompressed (average {comp.get('avg_stored_bytes') or 0:.0f} B, threshold {threshold})"
        ),
        evidence={
            "stored_values": stored,
            "large_values_uncompressed": large,
            "large_share": share,
            "avg_stored_bytes": comp.get("avg_stored_bytes"),
            "max_stored_bytes": comp.get("max_stored_bytes"),
            "compression_threshold_bytes": threshold,
            "compression_attempts": comp.get("attempts", 0),
            "compression_ratio": comp.get("ratio"),
        },
        recommendations=tuple(recommendations),
        score=_clip(share),
    )


def unbounded_growth(snapshot: Snapshot, t: Thresholds) -> Cause | None:
    """L1's byte budget is above the memory threshold, so L1 grows past it before evicting."""
    l1 = snapshot["l1"]
    if l1["bytes"] < t.memory_warning_bytes:
        return None
    budget = l1["max_bytes"]
    if budget and budget < t.memory_warning_bytes:
        return None
    proposal = int(0.8 * t.memory_warning_bytes)
    fill = _share(l1["bytes"], budget) if budget else 1.0
    recommendations = [
        Recommendation(
            "config-change",
            f"lower l1.max_bytes to {proposal} (80% of the memory warning threshold)",
            {"overrides": {"l1": {"max_bytes": proposal}}},
        ),
        Recommendation("gc", "drop expired entries now"),
    ]
    if l1["bytes"] >= t.memory_critical_bytes:
        recommendations.append(
            Recommendation(
                "apply-preset",
                "for an emergency: the conservative preset (small L1)",
                {"preset": "conservative"},
            )
        )
    return Cause(
        name="UnboundedGrowth",
        symptoms=("HighMemory",),
        summary=(
            f"L1 holds {l1['bytes'] / MIB:.1f} MiB of a {budget / MIB:.0f} MiB budget that is above the"
            f"  {t.memory_warning_mb:g} MiB threshold ({l1['evictions']} evictions in the window)"
        ),
        evidence={
            "bytes": l1["bytes"],
            "max_bytes": budget,
            "entries": l1["entries"],
            "max_entries": l1["max_entries"],
            "evictions": l1["evictions"],
            "fill": fill,
            "memory_warning_bytes": t.memory_warning_bytes,
        },
        recommendations=tuple(recommendations),
        score=_clip(0.5 + 0.5 * fill) if l1["evictions"] == 0 else _clip(0.5 * fill),
    )


# --- slow operations ---------------------------------------------------------------------------


def _p95_seconds(snapshot: Snapshot, operation: str, minimum: int) -> float | None:
    histogram = snapshot["latency"].get(operation)
    if histogram is None or histogram.get("count", 0) < max(1, minimum):
        return None
    return histogram.get("p95")


def redis_latency(snapshot: Snapshot, t: Thresholds) -> Cause | None:
    """Redis round trips are a large part of the operation time (network or a busy Redis)."""
    l2 = snapshot.get("l2")
    if not l2:
        return None
    warning_s = t.latency_warning_ms / 1000
    rtt = max(
        [
            v
            for v in (l2.get("rtt_p95_seconds"), l2.get("rtt_seconds"), l2.get("round_trip_mean_seconds"))
            if v
        ],
        default=None,
    )
    l2_get = _p95_seconds(snapshot, "l2_get", t.min_latency_samples)
    l2_set = _p95_seconds(snapshot, "l2_set", t.min_latency_samples)
    timeouts = l2["errors"].get("timeout", 0)
    worst_l2 = max([v for v in (rtt, l2_get, l2_set) if v is not None], default=None)
    if (worst_l2 is None or worst_l2 < t.redis_rtt_share * warning_s) and timeouts == 0:
        return None
    return Cause(
        name="RedisLatency",
        symptoms=("SlowOperations",),
        summary=(
            f"Redis is slow: RTT {1000 * (l2.get('rtt_seconds') or 0):.1f} ms, "
            f"L2 get p95 {1000 * (l2_get or 0):.1f} ms, {timeouts} timeouts"
        ),
        evidence={
            "rtt_ms": _ms(l2.get("rtt_seconds")),
            "rtt_p95_ms": _ms(l2.get("rtt_p95_seconds")),
            "round_trip_mean_ms": _ms(l2.get("round_trip_mean_seconds")),
            "l2_get_p95_ms": _ms(l2_get),
            "l2_set_p95_ms": _ms(l2_set),
            "timeouts": timeouts,
            "redis_ops": l2.get("ops", 0),
        },
        recommendations=(
            Recommendation(
                "reconnect-redis", "open fresh connections (helps when one path or proxy degraded)"
            ),
            Recommendation(
                "config-change",
                "cut slow Redis calls sooner so the breaker falls back to L1: "
                f"redis.socket_timeout_s={max(0.01, t.latency_critical_ms / 1000):g}",
                {"overrides": {"redis": {"socket_timeout_s": max(0.01, t.latency_critical_ms / 1000)}}},
            ),
            Recommendation(None, "check Redis (SLOWLOG, CPU, persistence forks) and the network path"),
        ),
        score=_clip(_share(worst_l2 or warning_s, warning_s)),
    )


def pool_exhaustion(snapshot: Snapshot, t: Thresholds) -> Cause | None:
    """Callers wait for a free pooled connection: the pool is too small for the concurrency."""
    l2 = snapshot.get("l2")
    if not l2:
        return None
    # Waits that ended in a pool timeout count too: they waited the longest.
    timeouts = l2["errors"].get("pool", 0)
    waits, ops = l2.get("pool_waits", 0) + timeouts, l2.get("ops", 0)
    share = _share(waits, max(ops, 1))
    if waits < t.pool_min_waits or share < t.pool_wait_share:
        return None
    current: int | None = l2.get("pool_max_connections") or snapshot["config"].get("redis_max_connections")
    recommendations: list[Recommendation] = []
    proposal = min(MAX_REDIS_CONNECTIONS, 2 * current) if current else 0
    if current and proposal > current:
        recommendations.append(
            Recommendation(
                "config-change",
                f"raise redis.max_connections from {current} to {proposal}",
                {"overrides": {"redis": {"max_connections": proposal}}},
            )
        )
    recommendations.append(
        Recommendation(None, "check that Redis' maxclients leaves room for every pod's pool")
    )
    return Cause(
        name="PoolExhaustion",
        symptoms=("SlowOperations",),
        summary=f"{waits} waits for a pooled connection over {ops} Redis operations (pool of {current})",
        evidence={
            "pool_waits": l2.get("pool_waits", 0),
            "pool_timeouts": timeouts,
            "redis_ops": ops,
            "waits_per_op": share,
            "max_connections": current,
        },
        recommendations=tuple(recommendations),
        score=_clip(share * 10),
    )


def compression_too_costly(snapshot: Snapshot, t: Thresholds) -> Cause | None:
    """Compression time per write is a large part of the latency budget."""
    comp = snapshot["compression"]
    sets = snapshot["requests"]["sets"]
    if comp.get("attempts", 0) == 0 or sets == 0:
        return None
    per_set = comp.get("seconds", 0.0) / sets
    budget = t.compression_cost_share * t.latency_warning_ms / 1000
    if per_set < budget:
        return None
    level = snapshot["config"].get("compression_level")
    if level is not None and level > 1:
        first = Recommendation(
            "config-change",
            f"lower compression.level from {level} to 1 (lz4 fast mode)",
            {"overrides": {"compression": {"level": 1}}},
        )
    else:
        threshold = snapshot["config"].get("compression_threshold_bytes") or 0
        proposal = max(SUGGESTED_COMPRESSION_THRESHOLD, 4 * threshold)
        first = Recommendation(
            "config-change",
            f"raise compression.threshold_bytes to {proposal} so only large values are compressed",
            {"overrides": {"compression": {"threshold_bytes": proposal}}},
        )
    return Cause(
        name="CompressionTooCostly",
        symptoms=("SlowOperations",),
        summary=f"compression costs {1000 * per_set:.1f} ms per write (level {level})",
        evidence={
            "compress_seconds": comp.get("seconds", 0.0),
            "compress_attempts": comp.get("attempts", 0),
            "seconds_per_attempt": comp.get("seconds_per_attempt"),
            "seconds_per_set": per_set,
            "sets": sets,
            "compression_level": level,
            "compression_ratio": comp.get("ratio"),
        },
        recommendations=(first,),
        score=_clip(_share(per_set, t.latency_warning_ms / 1000)),
    )


# --- Redis failures ----------------------------------------------------------------------------


def redis_authentication_failure(snapshot: Snapshot) -> Cause | None:
    """Redis rejects the credentials (wrong password, missing ACL user) or the ACL user's rights."""
    l2 = snapshot.get("l2")
    if not l2:
        return None
    auth, permission = l2["errors"].get("auth", 0), l2["errors"].get("permission", 0)
    if auth == 0 and permission == 0:
        return None
    if auth:
        summary = f"Redis rejected the credentials {auth} times; the cache runs from L1 only"
        fix = "fix the password / ACL user in the Secret the CachePolicy's spec.redis refers to"
    else:
        summary = f"the Redis ACL user may not run the cache's commands ({permission} NOPERM errors)"
        fix = "grant the ACL user the commands and key patterns the cache uses (see last_error)"
    return Cause(
        name="RedisAuthenticationFailure",
        symptoms=("RedisAuthFailure", "RedisUnavailable"),
        summary=summary,
        evidence={
            "auth_errors": auth,
            "permission_errors": permission,
            "breaker_state": l2.get("breaker_state"),
            "last_error": l2.get("last_error"),
        },
        recommendations=(
            Recommendation(None, fix),
            Recommendation("reconnect-redis", "reconnect once the Secret / ACL is fixed"),
        ),
        score=1.0,
    )


def redis_unreachable(snapshot: Snapshot, symptoms: tuple[str, ...]) -> Cause | None:
    """Redis cannot be reached (refused, timing out, failed over): the breaker keeps calls off it."""
    l2 = snapshot.get("l2")
    if not l2:
        return None
    errors = l2["errors"]
    if errors.get("auth", 0) > 0 and errors.get("auth", 0) >= errors.get("connection", 0) + errors.get(
        "timeout", 0
    ):
        return None  # credentials, not reachability
    network = {kind: errors.get(kind, 0) for kind in ("connection", "timeout", "readonly", "cluster")}
    if l2.get("breaker_state") == "closed" and l2.get("available", True) and not any(network.values()):
        return None
    readonly = errors.get("readonly", 0) > 0
    tls = errors.get("tls", 0) > 0
    observed = (
        ", ".join(f"{count} {kind} errors" for kind, count in network.items() if count) or "breaker open"
    )
    return Cause(
        name="RedisUnreachable",
        symptoms=symptoms,
        summary=f"Redis is unreachable ({observed}); the cache answers from L1 and reconnects by itself",
        evidence={
            "breaker_state": l2.get("breaker_state"),
            "available": l2.get("available"),
            **{f"{kind}_errors": count for kind, count in network.items()},
            "last_error": l2.get("last_error"),
        },
        recommendations=(
            Recommendation(
                "reconnect-redis",
                "force fresh connections (after a failover: writes hit a read-only replica)"
                if readonly
                else "force fresh connections once Redis is back",
            ),
            Recommendation(
                None,
                "check the TLS settings: CA bundle, server certificate and host name (tls errors)"
                if tls
                else "check that Redis runs and that its Service/URL resolves from the pods",
            ),
        ),
        score=0.9,
    )


def _mib_text(value: Any) -> str:
    """Bytes as ``12.5 MiB`` (``unknown`` when INFO did not give it)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        return "unknown"
    return f"{value / MIB:.1f} MiB"


# Redis's overhead (used_memory minus the dataset) at this share of maxmemory or more: evicting keys
# cannot bring used_memory under the limit.
OVERHEAD_SHARE = 0.8


def _raised(limit: Any) -> int | None:
    """A maxmemory twice ``limit`` (bytes, at least 64 MiB), or None without a limit."""
    if not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit <= 0:
        return None
    return int(max(limit * 2, 64 * MIB))


def redis_out_of_memory(snapshot: Snapshot) -> Cause | None:
    """Redis refuses writes: it reached maxmemory, and with ``noeviction`` it never frees room."""
    l2 = snapshot.get("l2")
    if not l2 or l2["errors"].get("oom", 0) == 0:
        return None
    memory = l2.get("memory") or {}
    policy = memory.get("maxmemory_policy")
    used, limit = memory.get("used_memory"), memory.get("maxmemory")
    dataset = memory.get("used_memory_dataset")
    overhead = used - dataset if isinstance(used, int) and isinstance(dataset, int) else None
    used_text = _mib_text(used)
    limit_text = _mib_text(limit)
    figures = f"used_memory {used_text} of maxmemory {limit_text}"
    if overhead is not None and isinstance(limit, int) and limit > 0 and overhead >= OVERHEAD_SHARE * limit:
        # Evicting every key would free only the dataset: Redis's own overhead (connections, their
        # buffers, replication backlog) already fills maxmemory, so no eviction policy makes room.
        summary = (
            f"Redis is full ({figures}) and its own overhead alone ({_mib_text(overhead)}: connections "
            f"and buffers, not keys) takes {_share(overhead, limit):.0%} of maxmemory: no eviction policy "
            "can make room"
        )
        first = Recommendation(
            None,
            f"raise Redis maxmemory above {limit_text} (e.g. to {_mib_text(_raised(limit))}, CONFIG SET "
            "maxmemory) within the Redis container's memory limit, and set maxmemory-policy volatile-lru "
            "(every cache key has a TTL)",
            {"maxmemory": _raised(limit), "maxmemory_policy": "volatile-lru"},
        )
    elif policy == "noeviction":
        summary = (
            f"Redis is full ({figures}) and its maxmemory-policy is noeviction, so it refuses every write"
        )
        first = Recommendation(
            None,
            f"set Redis maxmemory-policy to volatile-lru (every cache key has a TTL) or allkeys-lru "
            f"(CONFIG SET maxmemory-policy volatile-lru), or raise maxmemory above {limit_text} "
            f"(e.g. to {_mib_text(_raised(limit))}) within the Redis container's memory limit",
            {"maxmemory_policy": "volatile-lru", "maxmemory": _raised(limit)},
        )
    else:
        summary = (
            f"Redis refused writes at maxmemory ({figures}) although its policy is {policy or 'unknown'}"
        )
        first = Recommendation(
            None,
            f"raise Redis maxmemory above {limit_text} (e.g. to {_mib_text(_raised(limit))}); eviction "
            "cannot keep up with the write rate",
            {"maxmemory": _raised(limit)},
        )
    # Never clear: dropping every client's data frees room for a moment and the next writes fill it
    # again; the fix is Redis's eviction policy or memory.
    return Cause(
        name="RedisOutOfMemory",
        symptoms=("RedisOutOfMemory",),
        summary=summary,
        evidence={
            "oom_errors": l2["errors"]["oom"],
            "used_memory": used,
            "maxmemory": limit,
            "used_share": _share(used, limit) if used is not None and limit else None,
            "used_memory_dataset": dataset,
            "overhead": overhead,
            "maxmemory_policy": policy,
            "evicted_keys": memory.get("evicted_keys"),
        },
        recommendations=(
            first,
            Recommendation("invalidate", "free room now: invalidate a namespace that is no longer needed"),
        ),
        score=1.0,
    )


# ---------------------------------------------------------------------------------------------


def merge_causes(*diagnoses: Iterable[Cause]) -> list[Cause]:
    """Several diagnoses of one engine (e.g. over a short and a long window) as one: one entry per
    cause name with the highest score, most likely first; an ``Undetermined`` is dropped when another
    cause explains each of its symptoms."""
    merged = _merge(cause for causes in diagnoses for cause in causes)
    explained = {symptom for cause in merged if cause.name != "Undetermined" for symptom in cause.symptoms}
    return [
        cause
        for cause in merged
        if cause.name != "Undetermined" or not set(cause.symptoms) <= explained
    ]


def _undetermined(symptom: str, hint: str) -> Cause:
    return Cause(
        name="Undetermined",
        symptoms=(symptom,),
        summary=f"no cause in the runbook's decision tree matches the evidence; {hint}",
        evidence={},
        recommendations=(Recommendation("diagnose", "collect a fresh diagnosis after more traffic"),),
        score=0.0,
    )


def _merge(causes: Iterable[Cause]) -> list[Cause]:
    """One entry per cause name: symptoms united, highest score kept, order by score."""
    merged: dict[str, Cause] = {}
    for cause in causes:
        existing = merged.get(cause.name)
        if existing is None:
            merged[cause.name] = cause
            continue
        symptoms = tuple(dict.fromkeys(existing.symptoms + cause.symptoms))
        best = existing if existing.score >= cause.score else cause
        merged[cause.name] = Cause(
            best.name,
            symptoms,
            best.summary,
            best.evidence,
            best.recommendations,
            max(existing.score, cause.score),
        )
    return sorted(merged.values(), key=lambda c: (-c.score, c.name))


def diagnose(snapshot: Snapshot, symptoms: Iterable[Symptom], thresholds: Thresholds) -> list[Cause]:
    """Walk the decision tree for each symptom; return the causes, most likely first."""
    names = {str(s.name) for s in symptoms}
    t = thresholds
    found: list[Cause] = []

    if "LowHitRate" in names:
        candidates = [
            pod_isolated(snapshot),
            key_inconsistency(snapshot, t),
            ttl_too_short(snapshot, t),
            excessive_invalidation(snapshot, t),
        ]
        l2 = snapshot.get("l2")
        l2_working = bool(
            l2 and l2.get("enabled", True) and l2.get("available", True) and l2.get("breaker_state") != "open"
        )
        if not l2_working:
            # With L2 gone, L1 is the only tier: its size decides the hit rate.
            candidates.append(l1_too_small(snapshot, t, ("LowHitRate",)))
            if l2:
                candidates.append(redis_unreachable(snapshot, ("LowHitRate", "RedisUnavailable")))
        low_hit = [c for c in candidates if c is not None]
        if not low_hit:
            reuse = low_reuse_workload(snapshot, t)
            low_hit = (
                [reuse] if reuse else [_undetermined("LowHitRate", "check key_for inputs and TTLs by hand")]
            )
        found.extend(low_hit)

    if "L1Thrashing" in names:
        cause = l1_too_small(snapshot, t, ("L1Thrashing",))
        found.append(cause or _undetermined("L1Thrashing", "evictions without L1 at its budget"))

    if "HighMemory" in names:
        memory = [c for c in (large_uncompressed_entries(snapshot, t), unbounded_growth(snapshot, t)) if c]
        found.extend(memory or [_undetermined("HighMemory", "inspect memory-stats for the largest entries")])

    if "SlowOperations" in names:
        slow = [
            c
            for c in (
                redis_latency(snapshot, t),
                pool_exhaustion(snapshot, t),
                compression_too_costly(snapshot, t),
            )
            if c
        ]
        found.extend(
            slow or [_undetermined("SlowOperations", "the event loop may be blocked by the application")]
        )

    if "RedisAuthFailure" in names or "RedisUnavailable" in names:
        auth = redis_authentication_failure(snapshot)
        if auth:
            found.append(auth)
        if "RedisUnavailable" in names:
            unreachable = redis_unreachable(snapshot, ("RedisUnavailable",))
            if unreachable:
                found.append(unreachable)
            elif not auth:
                found.append(_undetermined("RedisUnavailable", "see recent-errors"))

    if "RedisOutOfMemory" in names:
        oom = redis_out_of_memory(snapshot)
        if oom:
            found.append(oom)

    return _merge(found)
