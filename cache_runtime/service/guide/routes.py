"""The troubleshooting guide's endpoints that the admin router does not already serve.

    app.include_router(build_guide_router(admin_router.context, GuideHooks(...)))

Reads need the read token, actions the admin token; every action runs through the admin context's
``run_action`` (``Idempotency-Key``, action journal, ``duration_ms``) and honours ``?dry_run=true``.
Bodies are the guide's own; a wrong one is a 422 naming the field. Where a command cannot mean the
same inside a pod (restart the service, change Redis's server config, restore Redis data) the route
does the nearest safe thing and says so in a ``note``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cache_runtime.config import PRESET_NAMES, resolve_config
from cache_runtime.service.auth import Role
from cache_runtime.service.config_source import ConfigRejected, rejection_items
from cache_runtime.service.errors import InvalidRequest, problem, problems_from_validation
from cache_runtime.service.guide import actions, analyses
from cache_runtime.service.guide.facts import Facts, gather
from cache_runtime.service.guide.flat_config import Translation, rename_problems, translate
from cache_runtime.service.guide.process import MemoryHistory

PresetName = Literal[PRESET_NAMES]  # type: ignore[valid-type]
DryRun = Annotated[bool, Query(description="Report what would change, change nothing.")]


@dataclass
class GuideHooks:
    """What only the hosting app can do: restart its engine, render its Prometheus text."""

    restart: Callable[[], Awaitable[dict[str, Any]]] | None = None
    metrics_text: Callable[[], bytes] | None = None
    allow_redis_config_set: bool = False
    settings: Any = None
    history: MemoryHistory = field(default_factory=MemoryHistory)
    last_cleanup: dict[str, Any] | None = None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PresetBody(_Body):
    """A preset to switch to (connection and key layout kept)."""

    preset: PresetName = Field(description="One of the nine presets.")  # type: ignore[valid-type]


class KeyGenerationOptimizeBody(_Body):
    """optimize/key-generation: the key digest and text tiers (changes the key layout)."""

    hash_algorithm: Literal["xxh3_128", "sha256"] | None = Field(default=None, description="Key digest.")
    text_size_thresholds: (
        dict[Literal["small", "medium", "large"], Annotated[int, Field(ge=1, le=100_000_000)]] | None
    ) = Field(default=None, description="Tier limits in characters (keys.tiers).")
    option_normalization: bool | None = Field(default=None, description="Options are always canonical JSON.")


class TTLStrategyBody(_Body):
    """optimize/ttl-strategy: TTLs from evidence, clamped."""

    analyze_content_stability: bool = Field(default=True, description="Use the miss evidence.")
    operation_specific_ttls: bool = Field(default=True, description="Set each operation's TTL.")
    dynamic_ttl_adjustment: bool = Field(default=True, description="Accepted; the change is applied once.")
    min_ttl: int = Field(default=300, ge=1, le=365 * 86400, description="Lowest TTL, seconds.")
    max_ttl: int = Field(default=86400, ge=1, le=365 * 86400, description="Highest TTL, seconds.")


class CompressionOptimizeBody(_Body):
    """optimize/compression."""

    analyze_size_distribution: bool = Field(default=True, description="Use the stored-size figures.")
    optimize_threshold: bool = Field(default=True, description="Move compression.threshold_bytes.")
    balance_ratio_vs_speed: bool = Field(default=True, description="Move compression.level.")
    target_compression_ratio: float = Field(default=0.65, gt=0, le=1, description="compressed/original.")


class MemoryTiersBody(_Body):
    """optimize/memory-tiers."""

    analyze_access_patterns: bool = Field(default=True, description="Use hit and eviction figures.")
    optimize_l1_size: bool = Field(default=True, description="Move l1.max_entries.")
    tune_promotion_strategy: bool = Field(default=False, description="Reported only.")
    enable_predictive_loading: bool = Field(default=False, description="Reported only.")


class RedisConnectionBody(_Body):
    """optimize/redis-connection."""

    tune_connection_pool: bool = Field(default=True, description="Move redis.max_connections.")
    optimize_timeouts: bool = Field(default=True, description="Move redis.socket_timeout_s.")
    enable_pipelining: bool = Field(default=False, description="Reported only (always on).")
    connection_health_monitoring: bool = Field(default=False, description="Reported only (always on).")


class BatchingBody(_Body):
    """optimize/batching."""

    enable_bulk_operations: bool = Field(default=True, description="Reported (always on).")
    batch_size_optimization: bool = Field(default=True, description="Reported.")
    intelligent_batching: bool = Field(default=True, description="Reported.")
    batch_timeout_ms: int = Field(
        default=100, ge=0, le=60_000, description="Not used: batches form per loop tick."
    )


class RedisServerBody(_Body):
    """redis/optimize-server: Redis server settings (CONFIG SET only with the opt-in)."""

    memory_policy: (
        Literal[
            "noeviction",
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ]
        | None
    ) = Field(default=None, description="maxmemory-policy")
    max_memory: str | None = Field(default=None, pattern=r"^[0-9]+(b|kb|mb|gb)?$", description="maxmemory")
    timeout: int | None = Field(default=None, ge=0, le=86400 * 365, description="timeout")
    tcp_keepalive: int | None = Field(default=None, ge=0, le=86400, description="tcp-keepalive")


class FallbackBody(_Body):
    """test-fallback."""

    simulate_redis_failure: bool = Field(
        default=True, description="Never breaks Redis; see the answer's note."
    )


class MemoryOnlyBody(_Body):
    """test-memory-only."""

    test_operations: list[Literal["get", "set", "delete"]] = Field(
        default=["get", "set", "delete"], max_length=3, description="Operations to run on a probe key."
    )
    test_data_size: Literal["small", "medium", "large"] = Field(
        default="medium", description="Probe value size."
    )


class AggressiveCleanupBody(_Body):
    """memory/aggressive-cleanup."""

    clear_expired_entries: bool = Field(default=True, description="Drop expired L1 entries.")
    compress_large_entries: bool = Field(default=True, description="Re-encode large L1 entries.")
    garbage_collect: bool = Field(default=True, description="Run Python's GC.")
    optimize_data_structures: bool = Field(default=False, description="Reported only.")


class RecoveryBody(_Body):
    """recovery/redis-data."""

    recovery_strategy: Literal["conservative", "aggressive"] = Field(
        default="conservative", description="Label."
    )
    validate_data_integrity: bool = Field(default=True, description="Decode every value before loading it.")
    recovery_batch_size: int = Field(default=100, ge=1, le=10_000, description="Keys per MGET.")
    timeout_seconds: float = Field(default=300, gt=0, le=3600, description="Stop after this long.")


class RestoreBody(_Body):
    """recovery/restore-service."""

    restoration_strategy: Literal["gradual", "immediate"] = Field(default="gradual", description="Label.")
    health_check_required: bool = Field(default=True, description="Check health after restoring.")
    performance_validation: bool = Field(default=True, description="Run a probe set/get/delete.")
    rollback_on_failure: bool = Field(default=True, description="Isolate again when the checks fail.")


class PostIncidentBody(_Body):
    """analysis/post-incident."""

    incident_timeframe: str = Field(
        default="last_4_hours", max_length=40, description="last_<n>_<minutes|hours|days>"
    )
    include_performance_data: bool = Field(default=True, description="Add the engine's figures.")
    include_configuration_changes: bool = Field(default=True, description="Add config actions.")
    include_error_logs: bool = Field(default=True, description="Add recent errors.")


def _rejected(exc: ConfigRejected, translation: Translation | None = None) -> InvalidRequest:
    items = rejection_items(exc)
    problems = [
        problem(f"body.overrides.{item['field']}", item["value"], item["accepted"], item["message"])
        for item in items
    ]
    return InvalidRequest(rename_problems(problems, translation) if translation else problems)


def build_guide_router(
    ctx: Any, hooks: GuideHooks | None = None, *, prefix: str = "/internal/cache"
) -> APIRouter:
    """The guide's remaining endpoints over the admin router's context (``admin_router.context``)."""
    hooks = hooks or GuideHooks()
    auth = ctx.auth
    read = [Depends(auth.require(Role.READ))]
    admin = [Depends(auth.require(Role.ADMIN))]
    router = APIRouter(prefix=prefix, tags=["guide"])

    async def facts(with_redis: bool = True, flags: bool = False) -> Facts:
        ops = ctx.engine()
        found = await gather(
            ops.cache,
            hooks.history,
            journal=ctx.journal,
            recent_errors=ctx.recent_errors,
            with_redis=with_redis,
        )
        if flags:
            found.extra["compressed_flags"] = await actions.compressed_flags(
                ops.cache, [key for _, key, _, _ in found.entries.largest]
            )
        return found

    def config_dict() -> dict[str, Any]:
        return ctx.engine().config.model_dump()

    async def update(
        request: Request,
        name: str,
        overrides: dict[str, Any],
        dry_run: bool,
        *,
        translation: Translation | None = None,
        extra: dict[str, Any] | None = None,
        params: Any = None,
    ) -> JSONResponse:
        controller = ctx.config()

        async def act() -> dict[str, Any]:
            before = controller.source.in_force.config if controller.source.in_force else None
            result: dict[str, Any] = {}
            if overrides:
                try:
                    result = (await controller.update(overrides, dry_run=dry_run)).describe()
                except ConfigRejected as exc:
                    raise _rejected(exc, translation) from None
            else:
                result = {"applied": False, "detail": "no config change called for"}
            changes = {}
            for path, value in overrides.items():
                old: Any = before.model_dump() if before else {}
                for part in path.split("."):
                    old = old.get(part) if isinstance(old, dict) else None
                changes[path] = {"before": old, "after": value}
            return {
                **result,
                "changes": changes,
                **(translation.describe() if translation else {}),
                **(extra or {}),
            }

        return await ctx.run_action(
            request, name, act, params={"body": params, "dry_run": dry_run}, dry_run=dry_run
        )

    # ---- reads: analyses ------------------------------------------------------------------------

    def read_route(
        path: str,
        view: Callable[[Facts], dict[str, Any]],
        summary: str,
        *,
        with_redis: bool = True,
        flags: bool = False,
    ) -> None:
        async def handler() -> dict[str, Any]:
            return view(await facts(with_redis, flags))

        handler.__name__ = "guide_" + path.replace("/", "_").replace("-", "_")
        router.add_api_route(f"/{path}", handler, methods=["GET"], dependencies=read, summary=summary)

    read_route(
        "text-tier-analysis",
        analyses.text_tier_analysis,
        "Texts by size tier, hashing, key variants",
        with_redis=False,
    )
    read_route("ttl-analysis", analyses.ttl_analysis, "Expiries per hour, TTL used, miss evidence")
    read_route("memory-analysis", analyses.memory_analysis, "Memory breakdown and growth", with_redis=False)
    read_route(
        "memory-intensive-ops",
        analyses.memory_intensive_ops,
        "Largest entries, bytes per operation",
        flags=True,
    )
    read_route(
        "compression-effectiveness",
        analyses.compression_effectiveness,
        "Compression ratio and savings",
        with_redis=False,
    )
    read_route(
        "large-entries", analyses.large_entries, "Largest entries and compression candidates", flags=True
    )
    read_route(
        "memory-leak-analysis",
        lambda f: analyses.leak_analysis(f, hooks.last_cleanup),
        "Memory growth and leak indicators",
        with_redis=False,
    )
    read_route(
        "timing-analysis",
        lambda f: analyses.timing_analysis(f.snapshot),
        "Latency per engine call",
        with_redis=False,
    )
    read_route("redis-performance", analyses.redis_performance, "Pool, round trips, PING, Redis CPU")
    read_route(
        "compression-timing",
        analyses.compression_timing,
        "Compression and decompression time",
        with_redis=False,
    )
    read_route(
        "performance-analysis",
        analyses.performance_analysis,
        "L1/L2 figures, bottlenecks, advice",
        with_redis=False,
    )
    read_route("resource-usage", analyses.resource_usage, "Process CPU/memory, pod network, Redis disk")
    read_route(
        "pattern-analysis", analyses.pattern_analysis, "Access, temporal and size patterns", with_redis=False
    )
    read_route("correlation-analysis", analyses.correlation_analysis, "Redis health, load and concurrency")
    read_route(
        "memory/detailed-analysis",
        lambda f: _detailed(f),
        "Memory breakdown, growth, 24h projection",
        with_redis=False,
    )
    read_route(
        "health/comprehensive",
        analyses.comprehensive_health,
        "Component and performance health",
        with_redis=False,
    )

    @router.get("/config/validate", dependencies=read, summary="Check the config in force (the guide's GET)")
    async def config_validate_current() -> dict[str, Any]:
        controller = ctx.config_if_any()
        rejection = None
        if controller is not None and controller.source.file.rejection is not None:
            rejection = controller.source.file.rejection.describe()
        return analyses.config_validation(await facts(False), rejection)

    @router.get("/memory/cleanup-results", dependencies=read, summary="What the last memory cleanup did")
    async def cleanup_results() -> dict[str, Any]:
        last = hooks.last_cleanup or {}
        current = actions.l1_figures(ctx.engine().cache)
        return {
            "memory_freed": last.get("memory_freed_mb", 0.0),
            "entries_cleaned": last.get("entries_removed", 0),
            "newly_compressed_entries": ((last.get("compression") or {}).get("rewritten", 0)),
            "current_memory_usage": current["memory_mb"],
            "cleanups_run": ctx.journal.executed.get("memory/aggressive-cleanup", 0)
            + ctx.journal.executed.get("memory-cleanup", 0),
            "last_cleanup": last or None,
        }

    @router.get("/emergency/status", dependencies=read, summary="Isolation, pending operations, fallback")
    async def emergency_status() -> dict[str, Any]:
        return analyses.emergency_status(ctx.engine().snapshot())

    @router.get("/redis/health", dependencies=read, summary="PING, Redis memory and clients now")
    async def redis_health() -> dict[str, Any]:
        found = await facts()
        info = found.redis_info or {}
        l2 = found.snapshot.get("l2") or {}
        connected = found.redis_ping_s is not None
        return {
            "connection_status": "connected"
            if connected
            else ("disabled" if not l2.get("enabled") else "unavailable"),
            "ping_response_time": analyses.ms(found.redis_ping_s),
            "redis_memory_info": {
                key: info.get(key)
                for key in (
                    "used_memory",
                    "used_memory_human",
                    "used_memory_peak",
                    "maxmemory",
                    "maxmemory_policy",
                    "mem_fragmentation_ratio",
                )
            }
            if info
            else None,
            "connected_clients": info.get("connected_clients"),
            "breaker_state": l2.get("breaker_state"),
        }

    @router.get("/redis/auth-test", dependencies=read, summary="Does the pod's Redis login work, as whom")
    async def redis_auth_test() -> dict[str, Any]:
        ops = ctx.engine()
        config = ops.config
        l2 = ops.l2
        auth_enabled = config.redis.password is not None or config.redis.username is not None
        if l2 is None:
            return {
                "auth_enabled": False,
                "auth_test_result": "not_applicable",
                "authentication_method": "none",
                "user_permissions": None,
                "note": "memory-only: no Redis configured",
            }

        async def whoami(client: Any) -> Any:
            user = await client.execute_command("ACL", "WHOAMI")
            try:
                rules = await client.execute_command("ACL", "GETUSER", user)
            except Exception as exc:
                rules = {"unreadable": type(exc).__name__}
            return user, rules

        answer = await l2.run_direct(whoami)
        user, rules = answer if answer else (None, None)
        if isinstance(user, bytes):
            user = user.decode()
        method = "acl" if config.redis.username else ("password" if config.redis.password else "none")
        return {
            "auth_enabled": auth_enabled,
            "auth_test_result": answer is not None,
            "authentication_method": method,
            "user": user,
            "user_permissions": _plain(rules),
        }

    @router.get(
        "/config/environment-validation", dependencies=read, summary="CACHEWARDEN_* variables checked"
    )
    async def environment_validation() -> dict[str, Any]:
        environ = {key: value for key, value in os.environ.items() if key.startswith("CACHEWARDEN_")}
        settings = hooks.settings
        missing = []
        if settings is not None:
            for name in ("admin_token_file", "read_token_file"):
                if getattr(settings, name, None) is None and not getattr(settings, "auth_disabled", False):
                    missing.append("CACHEWARDEN_" + name.upper())
            if getattr(settings, "config_path", None) is None:
                missing.append("CACHEWARDEN_CONFIG_PATH")
        invalid = []
        if settings is not None:
            from cache_runtime.service.settings import ServiceSettings, SettingsError

            try:
                ServiceSettings.from_env(environ)
            except SettingsError as exc:
                invalid.append({"variable": str(exc)[:300]})
        recommendations = []
        if ctx.engine().config.redis.url is None:
            recommendations.append("no Redis URL: set CachePolicy spec.redis (or CACHEWARDEN_REDIS_URL_FILE)")
        if "CACHEWARDEN_CONFIG_PATH" in missing:
            recommendations.append(
                "no mounted config: the runtime runs its start preset; let the operator mount one"
            )
        return {
            "missing_env_vars": missing,
            "invalid_values": invalid,
            "configuration_recommendations": recommendations,
            "set_variables": sorted(environ),
        }

    @router.get(
        "/config/preset-validation", dependencies=read, summary="Preset in force against its definition"
    )
    async def preset_validation() -> dict[str, Any]:
        config = ctx.engine().config
        if config.preset not in PRESET_NAMES:
            return {
                "active_preset": config.preset,
                "preset_validation_result": "custom",
                "configuration_conflicts": [],
                "custom_overrides": {},
            }
        reference = resolve_config(preset=config.preset).model_dump()
        current = config.model_dump()
        overrides = _diff(reference, current, skip={"redis", "keys"})
        conflicts = []
        health = config.health
        if health.memory_warning_mb * 1024 * 1024 > config.l1.max_bytes:
            conflicts.append(
                f"health.memory_warning_mb ({health.memory_warning_mb}) is above l1.max_bytes "
                f"({config.l1.max_bytes} B): the warning can never fire"
            )
        if config.compression.threshold_bytes > config.l1.max_bytes:
            conflicts.append("compression.threshold_bytes is above l1.max_bytes")
        return {
            "active_preset": config.preset,
            "preset_validation_result": "valid" if not conflicts else "conflicts",
            "configuration_conflicts": conflicts,
            "custom_overrides": overrides,
        }

    @router.get("/config/backup", dependencies=read, summary="The config in force, to keep and restore")
    async def config_backup() -> dict[str, Any]:
        ops = ctx.engine()
        controller = ctx.config()
        public = ops.config_public(controller)
        in_force = controller.source.in_force
        return {
            "taken_at": time.time(),
            "hash": in_force.hash if in_force else ops.config.config_hash(),
            "origin": in_force.origin if in_force else None,
            "config": public,
            "restore": "POST config/apply with {config, hash} from this document",
        }

    @router.get("/metrics/prometheus", dependencies=read, summary="Prometheus text (same as /metrics)")
    async def metrics_prometheus() -> Response:
        if hooks.metrics_text is None:
            raise InvalidRequest.single(
                "path", "metrics/prometheus", "GET /metrics on the hosting app", status_code=404
            )
        return Response(hooks.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @router.get("/monitoring/status", dependencies=read, summary="What exports this pod's figures")
    async def monitoring_status() -> dict[str, Any]:
        config = ctx.engine().config
        exporters = (
            ["prometheus:/metrics", "json:/internal/cache/metrics"]
            if hooks.metrics_text
            else ["json:/internal/cache/metrics"]
        )
        return {
            "monitoring_active": bool(config.monitoring),
            "active_exporters": exporters,
            "configured_alerts": {
                "thresholds": config.health.model_dump(),
                "rules": "chart: templates/prometheusrule.yaml (CacheWarden* alerts)",
            },
            "monitoring_dashboards": ["kubectl get cachepolicy -o wide", "kubectl get cacheincident"],
            "metrics_scrapes": None,
        }

    # ---- reads that the guide sends as POST -----------------------------------------------------

    @router.post("/key-generator/test-consistency", dependencies=read, summary="Key of text variants")
    async def test_consistency() -> dict[str, Any]:
        cache = ctx.engine().cache
        base = "Sample text for testing key consistency."
        variants = {
            "as_is": base,
            "trailing_space": base + " ",
            "double_space": base.replace(" ", "  ", 1),
            "crlf": base + "\r\n",
            "zero_width": base.replace(" ", "\u200b ", 1),
            "upper_case": base.upper(),
        }
        keys = {name: cache.describe_key("summarize", text)["key"] for name, text in variants.items()}
        again = cache.describe_key("summarize", base)["key"]
        same = [name for name, key in keys.items() if key == keys["as_is"]]
        return {
            "deterministic": again == keys["as_is"],
            "variants_tested": len(variants),
            "variants_sharing_key": same,
            "variants_with_own_key": [name for name in variants if name not in same],
            "consistency_ratio": round(len(same) / len(variants), 4),
            "normalization": cache.config.keys.normalize.model_dump(),
        }

    @router.post("/memory/leak-analysis", dependencies=read, summary="Leak indicators and advice")
    async def memory_leak_post() -> dict[str, Any]:
        found = await facts(False)
        leak = analyses.leak_analysis(found, hooks.last_cleanup)
        advice = []
        if leak["leak_indicators"]:
            advice.append("RSS keeps growing: POST restart (in-process engine) or kubectl rollout restart")
        l1 = found.snapshot["l1"]
        if l1["max_bytes"] and l1["bytes"] / l1["max_bytes"] > 0.9:
            advice.append(
                "L1 is over 90% of l1.max_bytes: lower CachePolicy spec.overrides l1.max_bytes "
                "or raise the pod limit"
            )
        return {
            "potential_leaks": leak["leak_indicators"],
            "retention_problems": {
                "expired_not_yet_swept": found.entries.expired_unswept,
                "entries": found.entries.count,
            },
            "cleanup_analysis": leak["cleanup_stats"],
            "memory_optimization_recommendations": advice,
            "growth": leak["growth"],
        }

    @router.post("/analysis/post-incident", dependencies=read, summary="Timeline, causes, impact, prevention")
    async def post_incident(payload: Annotated[PostIncidentBody | None, Body()] = None) -> dict[str, Any]:
        body = payload or PostIncidentBody()
        try:
            window = actions.parse_timeframe(body.incident_timeframe)
        except ValueError as exc:
            raise InvalidRequest.single(
                "body.incident_timeframe", body.incident_timeframe, str(exc)
            ) from None
        since = time.time() - window
        found = await facts(False)
        timeline = []
        if body.include_configuration_changes:
            timeline += [
                {
                    "at": item["at"],
                    "kind": "action",
                    "action": item["action"],
                    "dry_run": item["dry_run"],
                    "failed": item["failed"],
                }
                for item in ctx.journal.recent
                if item["at"] >= since
            ]
        if body.include_error_logs:
            timeline += [
                {
                    "at": item.get("timestamp"),
                    "kind": "error",
                    "error_type": item.get("error_type"),
                    "message": item.get("message"),
                }
                for item in analyses.error_entries(found.snapshot, found.recent_errors, None, 200)
                if (item.get("timestamp") or 0) >= since
            ]
        timeline.sort(key=lambda item: item.get("at") or 0)
        report = found.health or {}
        lookup_counts = found.snapshot["requests"]
        impact = {
            "lookups": lookup_counts["lookups"],
            "misses": lookup_counts["misses"],
            "hit_rate": lookup_counts.get("hit_rate"),
            "status": report.get("status"),
        }
        if body.include_performance_data:
            impact["latency"] = analyses.timing_analysis(found.snapshot)["latency_percentiles"]
        return {
            "timeline_analysis": timeline,
            "identified_root_causes": [
                {"cause": item.get("name"), "summary": item.get("summary"), "evidence": item.get("evidence")}
                for item in report.get("causes") or []
            ],
            "business_impact": impact,
            "future_prevention_measures": [
                *analyses._recommendations(report),
                {
                    "action": "declare",
                    "description": "let the operator open CacheIncidents "
                    "for these symptoms (CachePolicy spec.incidents)",
                },
            ],
            "timeframe_seconds": window,
        }

    # ---- actions --------------------------------------------------------------------------------

    async def restart_engine(request: Request, name: str, dry_run: bool) -> JSONResponse:
        async def act() -> dict[str, Any]:
            before = actions.l1_figures(ctx.engine().cache)
            if dry_run:
                return {"restarted": False, "before": before, "note": "dry run"}
            if hooks.restart is None:
                result = await ctx.engine().reconnect()
                return {
                    "restarted": False,
                    "before": before,
                    "redis": result,
                    "note": "this app has no engine restart hook: Redis pools were reconnected instead",
                }
            result = await hooks.restart()
            return {
                "restarted": True,
                "before": before,
                "after": actions.l1_figures(ctx.engine().cache),
                **result,
                "note": "graceful in-process engine restart (new engine, same config; L1 starts empty, "
                "Redis keeps the entries). To restart the pod: kubectl rollout restart",
            }

        return await ctx.run_action(request, name, act, params={"dry_run": dry_run}, dry_run=dry_run)

    @router.post("/restart", dependencies=admin, summary="Graceful in-process engine restart")
    async def restart(request: Request, dry_run: DryRun = False) -> JSONResponse:
        return await restart_engine(request, "restart", dry_run)

    @router.post("/emergency/restart", dependencies=admin, summary="Graceful in-process engine restart")
    async def emergency_restart(request: Request, dry_run: DryRun = False) -> JSONResponse:
        return await restart_engine(request, "emergency/restart", dry_run)

    @router.post("/emergency/clear-all", dependencies=admin, summary="Drop every entry (L1 + this namespace)")
    async def clear_all(request: Request, dry_run: DryRun = False) -> JSONResponse:
        ops = ctx.engine()

        async def act() -> dict[str, Any]:
            before = actions.l1_figures(ops.cache)
            result = await ops.clear(dry_run=dry_run)
            return {**result, "before": before, "after": actions.l1_figures(ops.cache)}

        return await ctx.run_action(
            request, "emergency/clear-all", act, params={"dry_run": dry_run}, dry_run=dry_run
        )

    async def reset(request: Request, name: str, dry_run: bool) -> JSONResponse:
        controller = ctx.config()

        async def act() -> dict[str, Any]:
            try:
                return (await controller.reset(dry_run=dry_run)).describe()
            except ConfigRejected as exc:
                raise _rejected(exc) from None

        return await ctx.run_action(request, name, act, params={"dry_run": dry_run}, dry_run=dry_run)

    @router.post("/emergency/reset-config", dependencies=admin, summary="Back to the mounted file's config")
    async def emergency_reset(request: Request, dry_run: DryRun = False) -> JSONResponse:
        return await reset(request, "emergency/reset-config", dry_run)

    @router.post("/config/reset-to-default", dependencies=admin, summary="Back to the mounted file's config")
    async def reset_to_default(request: Request, dry_run: DryRun = False) -> JSONResponse:
        return await reset(request, "config/reset-to-default", dry_run)

    @router.post(
        "/config/apply-preset", dependencies=admin, summary="Switch to a preset (same as apply-preset)"
    )
    async def config_apply_preset(
        request: Request, payload: PresetBody, dry_run: DryRun = False
    ) -> JSONResponse:
        controller = ctx.config()

        async def act() -> dict[str, Any]:
            try:
                return (await controller.apply_preset(payload.preset, dry_run=dry_run)).describe()
            except ConfigRejected as exc:
                raise _rejected(exc) from None

        return await ctx.run_action(
            request,
            "config/apply-preset",
            act,
            params={"preset": payload.preset, "dry_run": dry_run},
            dry_run=dry_run,
        )

    @router.post(
        "/key-generator/reset", dependencies=admin, summary="Key settings back to the mounted config's"
    )
    async def key_generator_reset(request: Request, dry_run: DryRun = False) -> JSONResponse:
        controller = ctx.config()
        base = controller.source.base
        reference = base.config if base is not None else resolve_config(preset=ctx.engine().config.preset)
        keys = reference.keys
        overrides = {
            "keys.normalize": keys.normalize.model_dump(),
            "keys.text_hash_threshold": keys.text_hash_threshold,
            "keys.hash_algorithm": keys.hash_algorithm,
            "keys.tiers": keys.tiers.model_dump(),
            "keys.readable_small_text": keys.readable_small_text,
        }
        return await update(
            request,
            "key-generator/reset",
            overrides,
            dry_run,
            extra={"reset_to": "mounted config" if base is not None else "preset defaults"},
        )

    def flat_route(path: str, summary: str, *, percent: bool = False) -> None:
        async def handler(
            request: Request, payload: Annotated[dict[str, Any], Body()], dry_run: DryRun = False
        ) -> JSONResponse:
            translation = translate(payload, config_dict(), percent=percent)
            return await update(
                request, path, dict(translation.overrides), dry_run, translation=translation, params=payload
            )

        handler.__name__ = "guide_" + path.replace("/", "_").replace("-", "_")
        router.add_api_route(f"/{path}", handler, methods=["POST"], dependencies=admin, summary=summary)

    flat_route("text-processor/configure", "Text normalization before keying (keys.normalize)")
    flat_route("optimize/text-processing", "Text normalization before keying (keys.normalize)")
    flat_route("redis-config/update", "Redis client pool and timeouts (redis.*)")
    flat_route("memory/pressure-config", "Memory thresholds as % of the L1 budget (health.*)", percent=True)
    flat_route("health/configure", "Health thresholds (health.*)")

    @router.post("/optimize/key-generation", dependencies=admin, summary="Key digest and text tiers")
    async def optimize_key_generation(
        request: Request, payload: KeyGenerationOptimizeBody, dry_run: DryRun = False
    ) -> JSONResponse:
        overrides: dict[str, Any] = {}
        if payload.hash_algorithm is not None:
            overrides["keys.hash_algorithm"] = payload.hash_algorithm
        if payload.text_size_thresholds:
            for tier, limit in payload.text_size_thresholds.items():
                overrides[f"keys.tiers.{tier}"] = limit
        notes = {
            "warning": "the key layout changes: entries written under the old layout are misses until "
            "rewritten (the hit rate drops, then recovers)"
        }
        if payload.option_normalization is not None:
            notes["option_normalization"] = "options are always keyed as canonical JSON (sorted keys)"
        return await update(
            request,
            "optimize/key-generation",
            overrides,
            dry_run,
            extra={"notes": notes},
            params=payload.model_dump(),
        )

    def evidence_route(
        path: str,
        model: type[_Body],
        tune: Callable[[Any, Any, dict[str, Any]], dict[str, Any]],
        summary: str,
    ) -> None:
        async def handler(
            request: Request,
            payload: Annotated[dict[str, Any] | None, Body()] = None,
            dry_run: DryRun = False,
        ) -> JSONResponse:
            try:
                body = model.model_validate(payload or {})
            except ValidationError as exc:
                raise InvalidRequest(
                    problems_from_validation(
                        [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
                    )
                ) from None
            ops = ctx.engine()
            plan = tune(ops.snapshot(), ops.config, body.model_dump())
            overrides = plan.pop("overrides")
            return await update(
                request, path, overrides, dry_run, extra={"plan": plan}, params=body.model_dump()
            )

        handler.__name__ = "guide_" + path.replace("/", "_").replace("-", "_")
        router.add_api_route(
            f"/{path}",
            handler,
            methods=["POST"],
            dependencies=admin,
            summary=summary,
            openapi_extra={
                "requestBody": {"content": {"application/json": {"schema": model.model_json_schema()}}}
            },
        )

    evidence_route("optimize/ttl-strategy", TTLStrategyBody, actions.ttl_strategy, "TTLs from miss evidence")
    evidence_route(
        "optimize/compression",
        CompressionOptimizeBody,
        actions.compression_tuning,
        "Compression threshold/level from results",
    )
    evidence_route(
        "optimize/memory-tiers", MemoryTiersBody, actions.memory_tier_tuning, "L1 size from evictions"
    )
    evidence_route(
        "optimize/redis-connection",
        RedisConnectionBody,
        actions.redis_connection_tuning,
        "Redis pool and timeout from waits and round trips",
    )

    @router.post("/optimize/batching", dependencies=admin, summary="Report the engine's batching (always on)")
    async def optimize_batching(
        request: Request, payload: Annotated[BatchingBody | None, Body()] = None, dry_run: DryRun = False
    ) -> JSONResponse:
        detail = ctx.engine().snapshot().get("l2_detail") or {}

        async def act() -> dict[str, Any]:
            return {
                "applied": False,
                "coalesced_batches": detail.get("coalesced_batches"),
                "coalesced_keys": detail.get("coalesced_keys"),
                "keys_per_batch": analyses.ratio(
                    detail.get("coalesced_keys") or 0, detail.get("coalesced_batches") or 0
                ),
                "note": "batching is always on: concurrent gets and sets on one event-loop tick go to "
                "Redis as one "
                "MGET / pipeline; there is nothing to switch on and no batch timeout to set",
            }

        return await ctx.run_action(
            request,
            "optimize/batching",
            act,
            params={"body": (payload or BatchingBody()).model_dump(), "dry_run": dry_run},
            dry_run=dry_run,
        )

    @router.post("/memory-cleanup", dependencies=admin, summary="Drop expired L1 entries and run GC")
    async def memory_cleanup(request: Request, dry_run: DryRun = False) -> JSONResponse:
        cache = ctx.engine().cache

        async def act() -> dict[str, Any]:
            result = await actions.memory_cleanup(cache, dry_run=dry_run)
            if not dry_run:
                hooks.last_cleanup = result
            return result

        return await ctx.run_action(
            request, "memory-cleanup", act, params={"dry_run": dry_run}, dry_run=dry_run
        )

    @router.post("/memory/aggressive-cleanup", dependencies=admin, summary="Expired entries, compression, GC")
    async def aggressive_cleanup(
        request: Request,
        payload: Annotated[AggressiveCleanupBody | None, Body()] = None,
        dry_run: DryRun = False,
    ) -> JSONResponse:
        body = payload or AggressiveCleanupBody()
        ops = ctx.engine()

        async def act() -> dict[str, Any]:
            compress = (lambda: ops.compress_existing(dry_run=False)) if body.compress_large_entries else None
            if body.clear_expired_entries:
                result = await actions.memory_cleanup(
                    ops.cache, dry_run=dry_run, compress=compress, collect=body.garbage_collect
                )
            else:
                result = {"before": actions.l1_figures(ops.cache), "entries_removed": 0}
            if body.optimize_data_structures:
                result["optimize_data_structures"] = "nothing to do: L1 is one ordered dict"
            if not dry_run:
                hooks.last_cleanup = result
            return result

        return await ctx.run_action(
            request,
            "memory/aggressive-cleanup",
            act,
            params={"body": body.model_dump(), "dry_run": dry_run},
            dry_run=dry_run,
        )

    @router.post("/test-fallback", dependencies=admin, summary="How this pod serves without Redis")
    async def test_fallback(
        request: Request, payload: Annotated[FallbackBody | None, Body()] = None, dry_run: DryRun = False
    ) -> JSONResponse:
        ops = ctx.engine()

        async def act() -> dict[str, Any]:
            snapshot = ops.snapshot()
            probe = (
                None
                if dry_run
                else await actions.probe_operations(ops.cache, ["set", "get", "delete"], "small")
            )
            config = ops.config.redis
            return {
                "simulated": False,
                "fallback_active": analyses.emergency_status(snapshot)["fallback_mode_active"],
                "probe": probe,
                "breaker": {
                    "failure_threshold": config.breaker_failure_threshold,
                    "open_s": config.breaker_open_s,
                    "state": (snapshot.get("l2") or {}).get("breaker_state"),
                },
                "outage_journal": (snapshot.get("engine") or {}).get("outage_journal"),
                "note": "Redis is not broken on purpose in a shared pod: when Redis fails the breaker "
                "opens after "
                "the failure threshold and reads/writes continue on L1 (the probe's get_local shows L1 "
                "serving). The fault tests (tests/integration/test_l2_faults.py) cut Redis for real.",
            }

        return await ctx.run_action(
            request,
            "test-fallback",
            act,
            params={"body": (payload or FallbackBody()).model_dump(), "dry_run": dry_run},
            dry_run=dry_run,
        )

    @router.post("/test-memory-only", dependencies=admin, summary="set/get/delete of a probe key, timed")
    async def test_memory_only(
        request: Request, payload: Annotated[MemoryOnlyBody | None, Body()] = None, dry_run: DryRun = False
    ) -> JSONResponse:
        body = payload or MemoryOnlyBody()
        ops = ctx.engine()

        async def act() -> dict[str, Any]:
            snapshot = ops.snapshot()
            probe = (
                {"results": {}, "timings": {}}
                if dry_run
                else await actions.probe_operations(
                    ops.cache, list(body.test_operations), body.test_data_size
                )
            )
            return {
                "fallback_active": analyses.emergency_status(snapshot)["fallback_mode_active"],
                "test_results": probe["results"],
                "performance_metrics": probe["timings"],
            }

        return await ctx.run_action(
            request,
            "test-memory-only",
            act,
            params={"body": body.model_dump(), "dry_run": dry_run},
            dry_run=dry_run,
        )

    @router.post(
        "/redis/optimize-server", dependencies=admin, summary="Redis server settings (opt-in CONFIG SET)"
    )
    async def redis_optimize_server(
        request: Request, payload: RedisServerBody, dry_run: DryRun = False
    ) -> JSONResponse:
        ops = ctx.engine()
        wanted = payload.model_dump(exclude_none=True)

        async def act() -> dict[str, Any]:
            return await actions.redis_server_config(
                ops.l2, wanted, allowed=hooks.allow_redis_config_set, dry_run=dry_run
            )

        return await ctx.run_action(
            request,
            "redis/optimize-server",
            act,
            params={"body": wanted, "dry_run": dry_run},
            dry_run=dry_run,
        )

    @router.post(
        "/recovery/redis-data", dependencies=admin, summary="Check this namespace's Redis data, warm L1"
    )
    async def recovery_redis_data(
        request: Request, payload: Annotated[RecoveryBody | None, Body()] = None, dry_run: DryRun = False
    ) -> JSONResponse:
        body = payload or RecoveryBody()
        ops = ctx.engine()

        async def act() -> dict[str, Any]:
            if dry_run:
                return {
                    "recovery_completed": False,
                    "entries_recovered": 0,
                    "recovery_failures": 0,
                    "integrity_check_result": "not_run",
                    "note": "dry run",
                }
            return await actions.recover_from_redis(ops.cache, body.model_dump())

        return await ctx.run_action(
            request,
            "recovery/redis-data",
            act,
            params={"body": body.model_dump(), "dry_run": dry_run},
            dry_run=dry_run,
        )

    @router.post(
        "/recovery/restore-service", dependencies=admin, summary="End isolation, check, roll back on failure"
    )
    async def restore_service(
        request: Request, payload: Annotated[RestoreBody | None, Body()] = None, dry_run: DryRun = False
    ) -> JSONResponse:
        body = payload or RestoreBody()
        ops = ctx.engine()

        async def act() -> dict[str, Any]:
            was = bool(ops.cache.isolated)
            if dry_run:
                return {
                    "service_restored": False,
                    "was_isolated": was,
                    "health_validation": None,
                    "performance_validation": None,
                    "rollback_executed": False,
                    "note": "dry run",
                }
            steps: list[Any] = []
            if was:
                await ops.set_isolated(False, dry_run=False)
                steps.append("isolation ended")
            snapshot = ops.snapshot()
            l2 = snapshot.get("l2") or {}
            if l2.get("enabled") and not l2.get("available"):
                steps.append({"redis_reconnect": await ops.reconnect()})
            health_ok = True
            if body.health_check_required:
                health_ok = (
                    ops.cache.health().to_dict().get("status") != "unhealthy"
                    or snapshot["requests"]["lookups"] < ops.config.health.min_requests
                )
            performance_ok = True
            probe = None
            if body.performance_validation:
                probe = await actions.probe_operations(ops.cache, ["set", "get", "delete"], "small")
                performance_ok = all(probe["results"].values())
            rollback = False
            if body.rollback_on_failure and not (health_ok and performance_ok) and was:
                await ops.set_isolated(True, dry_run=False)
                rollback = True
            return {
                "service_restored": health_ok and performance_ok and not rollback,
                "was_isolated": was,
                "steps": steps,
                "health_validation": health_ok,
                "performance_validation": performance_ok,
                "probe": probe,
                "rollback_executed": rollback,
            }

        return await ctx.run_action(
            request,
            "recovery/restore-service",
            act,
            params={"body": body.model_dump(), "dry_run": dry_run},
            dry_run=dry_run,
        )

    return router


def _detailed(found: Facts) -> dict[str, Any]:
    breakdown = analyses.memory_breakdown(found)
    growth = breakdown["growth"]
    return {
        "total_memory_mb": breakdown["total_memory_mb"],
        "l1_cache_memory": breakdown["l1_cache_memory_mb"],
        "redis_client_memory": breakdown["redis_client_memory_mb"],
        "monitoring_overhead": breakdown["monitoring_memory_mb"],
        "compression_memory": breakdown["compression_buffer_mb"],
        "key_index_memory": breakdown["key_index_memory_mb"],
        "process_rss_mb": breakdown["process_rss_mb"],
        "memory_growth_per_hour": growth["l1_mb_per_hour"],
        "projected_memory_24h": round(
            (breakdown["l1_cache_memory_mb"] or 0) + growth["l1_mb_per_hour"] * 24, 3
        ),
        "growth_trend_classification": growth["trend"],
        "growth": growth,
    }


def _diff(reference: Any, current: Any, *, skip: set[str], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(reference, dict) and isinstance(current, dict):
        for key in current:
            if not prefix and key in skip | {"preset"}:
                continue
            out.update(_diff(reference.get(key), current[key], skip=skip, prefix=f"{prefix}{key}."))
        return out
    if reference != current:
        out[prefix.rstrip(".")] = {"preset": reference, "in_force": current}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(_plain(key)): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
