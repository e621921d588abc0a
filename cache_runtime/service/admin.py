"""The admin API: ``/internal/cache/*``. An APIRouter that any FastAPI app embedding the engine mounts.

    app.include_router(build_admin_router(lambda: cache, auth))

Reads need the read (or admin) token; actions need the admin token. Every action accepts an
``Idempotency-Key`` header (a repeat returns the first result instead of acting twice), destructive
actions accept ``dry_run`` and return counts. Bad input answers 4xx naming the field, the value and
what is accepted (see :mod:`cache_runtime.service.errors`). The four endpoints the original service
really had (``status``, ``metrics``, ``invalidation-stats``, ``invalidate``) keep their response
shapes, documented in ``docs/runtime-api.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cache_runtime.config import PRESET_NAMES, ConfigError
from cache_runtime.service.auth import Authenticator, Role
from cache_runtime.service.config_source import (
    ConfigController,
    ConfigRejected,
    ConfigSource,
    rejection_items,
)
from cache_runtime.service.engine_ops import EngineOps, EngineUnavailable
from cache_runtime.service.errors import InvalidRequest, problem, reject_non_finite
from cache_runtime.service.guide import analyses as guide
from cache_runtime.service.guide.facts import redis_info, scan_l1
from cache_runtime.service.guide.flat_config import rename_problems, translate
from cache_runtime.service.guide.process import Sample, rss_bytes
from cache_runtime.service.idempotency import (
    HEADER,
    IdempotencyConflict,
    IdempotencyKeyError,
    IdempotencyStore,
    request_fingerprint,
    validate_key,
)
from cache_runtime.service.journal import ActionJournal, RecentErrors

log = logging.getLogger("cachewarden.runtime.admin")

PresetName = Literal[PRESET_NAMES]  # type: ignore[valid-type]
MAX_PATTERN_CHARS = 512


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApplyPresetBody(_Body):
    """Switch to a named preset (Redis connection and key layout are kept)."""

    preset: PresetName = Field(description="One of the nine presets.")  # type: ignore[valid-type]


class ConfigApplyBody(_Body):
    """A full resolved config and its hash, as the operator renders them."""

    config: dict[str, Any] = Field(description="The resolved config (CacheConfig.public_dict()).")
    hash: str = Field(
        min_length=64,
        max_length=64,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 hex of the config's canonical JSON.",
    )


class KeyGenerationBody(_Body):
    """What an AI response is keyed by."""

    operation: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    text: str = Field(max_length=10_000_000)
    options: dict[str, Any] | None = None
    question: str | None = Field(default=None, max_length=1_000_000)

    _finite_options = field_validator("options")(reject_non_finite)


DryRun = Annotated[bool, Query(description="Report what would change, change nothing.")]


class AdminContext:
    """Everything the admin routes share: the engine accessor, config, idempotency, journals."""

    def __init__(
        self,
        get_cache: Callable[[], Any],
        auth: Authenticator,
        *,
        config: ConfigController | None = None,
        idempotency: IdempotencyStore | None = None,
        journal: ActionJournal | None = None,
        recent_errors: RecentErrors | None = None,
    ) -> None:
        self.get_cache = get_cache
        self.auth = auth
        self._config = config
        self.idempotency = idempotency or IdempotencyStore()
        self.journal = journal or ActionJournal()
        self.recent_errors = recent_errors
        self.started_at = time.time()

    def engine(self) -> EngineOps:
        """The engine, or a 503 when it is not started yet (no valid config loaded)."""
        try:
            cache = self.get_cache()
        except EngineUnavailable:
            cache = None
        if cache is None:
            raise HTTPException(
                status_code=503,
                detail={
                    "error": "unavailable",
                    "message": "the cache engine is not started: no valid config has been loaded yet",
                },
            )
        return EngineOps(cache)

    def config(self) -> ConfigController:
        """The config controller; an embedding app without one gets a push-only controller seeded
        with the engine's current config (so reset-config returns to what the app started with)."""
        if self._config is None:
            ops = self.engine()
            source = ConfigSource(path=None, fallback=ops.config)
            controller = ConfigController(source, ops.apply_config)
            controller.applied_hash = ops.config.config_hash()
            self._config = controller
        return self._config

    def config_if_any(self) -> ConfigController | None:
        """The controller if one exists (never creates one: reads must not have side effects)."""
        return self._config

    async def run_action(
        self,
        request: Request,
        action: str,
        act: Callable[[], Awaitable[dict[str, Any]]],
        *,
        params: dict[str, Any],
        dry_run: bool = False,
    ) -> JSONResponse:
        """Run one admin action under its Idempotency-Key and record it in the journal."""
        raw_key = request.headers.get(HEADER)
        key = None
        if raw_key is not None:
            try:
                key = validate_key(raw_key)
            except IdempotencyKeyError as exc:
                raise InvalidRequest.single(f"header.{HEADER}", raw_key, exc.accepted) from None
        fingerprint = request_fingerprint(request.method, request.url.path, params, None)

        async def call() -> tuple[int, Any]:
            started = time.perf_counter()
            result = await act()
            body = {
                "action": action,
                "dry_run": dry_run,
                **result,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            return 200, body

        try:
            outcome = await self.idempotency.run(
                key, f"{request.method} {request.url.path}", fingerprint, call
            )
        except IdempotencyConflict as exc:
            raise InvalidRequest(
                [
                    problem(
                        f"header.{HEADER}",
                        exc.key,
                        "a new key for a new request (keys are single-use per request)",
                        str(exc),
                    )
                ],
                status_code=409,
                error="conflict",
            ) from None
        except (InvalidRequest, HTTPException):
            raise
        except Exception:
            self.journal.record(action, result=None, failed=True, idempotency_key=key)
            raise
        self.journal.record(
            action, result=outcome.body, replayed=outcome.replayed, dry_run=dry_run, idempotency_key=key
        )
        headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
        return JSONResponse(status_code=outcome.status_code, content=outcome.body, headers=headers)


def _config_rejected(exc: ConfigRejected, prefix: str = "") -> InvalidRequest:
    """A refused config as a 422; field paths are made relative to the request (``body.config.ttl``).

    ``hash`` sits beside ``config`` in a push, and a preset name is the body's ``preset``, so those
    two are named where the client put them.
    """
    items = rejection_items(exc)

    def located(field: str) -> str:
        if field in {"hash", "preset"}:
            return f"body.{field}"
        return prefix + field

    return InvalidRequest(
        [problem(located(item["field"]), item["value"], item["accepted"], item["message"]) for item in items]
    )


def build_admin_router(
    get_cache: Callable[[], Any],
    auth: Authenticator,
    *,
    config: ConfigController | None = None,
    idempotency: IdempotencyStore | None = None,
    journal: ActionJournal | None = None,
    recent_errors: RecentErrors | None = None,
    prefix: str = "/internal/cache",
) -> APIRouter:
    """The ``/internal/cache`` router over the engine that ``get_cache()`` returns.

    ``get_cache`` returns the process-wide TieredCache (or None / raises EngineUnavailable while it
    is not started: routes then answer 503). ``config`` is the runtime's config controller; an
    embedding app may leave it out.
    """
    ctx = AdminContext(
        get_cache, auth, config=config, idempotency=idempotency, journal=journal, recent_errors=recent_errors
    )
    read = [Depends(auth.require(Role.READ))]
    admin = [Depends(auth.require(Role.ADMIN))]
    router = APIRouter(prefix=prefix, tags=["admin"])
    router.context = ctx  # type: ignore[attr-defined]

    # ---- reads -----------------------------------------------------------------------------------

    @router.get("/status", dependencies=read, summary="Overall status (original shape)")
    async def status() -> dict[str, Any]:
        ops = ctx.engine()
        return await ops.status(config_hash=_config_hash(ctx, ops))

    @router.get("/metrics", dependencies=read, summary="Cache metrics as JSON (original shape)")
    async def metrics() -> dict[str, Any]:
        # The original returned 500 here; ours degrades field by field instead of failing.
        ops = ctx.engine()
        body = ops.metrics_json()
        try:
            snapshot = ops.snapshot()
            sample = Sample(time.time(), rss_bytes(), snapshot["l1"]["bytes"])
            body.update(guide.metrics_fields(snapshot, sample))
        except Exception:
            log.exception("guide metrics fields failed")
        return body

    @router.get("/memory-stats", dependencies=read, summary="L1 and Redis memory")
    async def memory_stats() -> dict[str, Any]:
        ops = ctx.engine()
        body = await ops.memory_stats()
        return {**body, **guide.memory_stats_fields(ops.snapshot(), body.get("redis"))}

    @router.get("/health", dependencies=read, summary="Health, hit rates, latency, Redis, diagnosis")
    async def health() -> dict[str, Any]:
        ops = ctx.engine()
        controller = ctx.config_if_any()
        provenance = controller.source.describe() if controller else None
        body = ops.health(config_provenance=provenance, config_hash=_config_hash(ctx, ops))
        logged = ctx.recent_errors.describe(50) if ctx.recent_errors else {"errors": []}
        body["health_status"] = body["status"]
        body["errors"] = guide.error_entries(ops.snapshot(), logged, body.get("diagnosis"))
        return body

    @router.get("/compression-stats", dependencies=read, summary="Compression attempts, savings, cost")
    async def compression_stats() -> dict[str, Any]:
        ops = ctx.engine()
        return {**ops.compression_stats(), **guide.compression_stats_fields(ops.snapshot())}

    @router.get("/key-analysis", dependencies=read, summary="Key-inconsistency evidence")
    async def key_analysis() -> dict[str, Any]:
        ops = ctx.engine()
        entries = scan_l1(ops.cache.l1, ops.config.compression.threshold_bytes)
        return {**ops.key_analysis(),
                **guide.key_analysis_fields(ops.snapshot(), entries, await redis_info(ops.l2))}

    @router.get("/operation-stats", dependencies=read, summary="Hits, misses, TTL and latency per operation")
    async def operation_stats() -> dict[str, Any]:
        ops = ctx.engine()
        body = ops.operation_stats()
        added = guide.operation_stats_fields(ops.snapshot(), ops.config.ttl.for_operation)["operations"]
        body["operations"] = {
            name: {**body["operations"].get(name, {}), **fields} for name, fields in added.items()
        }
        return body

    @router.get("/config/current", dependencies=read, summary="The config in force and where it came from")
    async def config_current() -> dict[str, Any]:
        ops = ctx.engine()
        controller = ctx.config()
        return {
            "hash": _config_hash(ctx, ops),
            "config": ops.config_public(controller),
            "provenance": controller.source.describe(),
            "ttl_settings": guide.ttl_settings(ops.config),
            # The engine's URL (pod-local credentials applied; the config model keeps passwords out).
            "redis_url": ops.config.redis.url,
        }

    @router.post("/config/validate", dependencies=read, summary="Validate a config push without applying")
    async def config_validate(payload: ConfigApplyBody) -> dict[str, Any]:
        controller = ctx.config()
        try:
            record = controller.validate(payload.config, payload.hash)
        except ConfigRejected as exc:
            raise _config_rejected(exc, "body.config.") from None
        in_force = controller.source.in_force
        return {
            "valid": True,
            "hash": record.hash,
            "preset": record.config.preset,
            "in_force": bool(in_force and in_force.hash == record.hash),
        }

    @router.get("/invalidation-stats", dependencies=read, summary="Invalidations (original shape)")
    async def invalidation_stats() -> dict[str, Any]:
        ops = ctx.engine()
        body = ops.invalidation_stats(list(ctx.journal.invalidations))
        uptime = max(time.time() - ctx.started_at, 1e-9)
        return {**body, **guide.invalidation_fields(ops.snapshot(), ctx.journal, uptime)}

    @router.get("/recent-errors", dependencies=read, summary="Recent warnings and errors")
    async def recent_errors_route(limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
        ops = ctx.engine()
        logged = ctx.recent_errors.describe(limit) if ctx.recent_errors else {"total": 0, "errors": []}
        snapshot = ops.snapshot()
        entries = guide.error_entries(snapshot, logged, None, limit)
        return {
            "redis": ops.redis_errors(),
            **logged,
            "errors": entries,
            "log_entries": logged.get("errors", []),
        }

    @router.post(
        "/debug/key-generation",
        dependencies=read,
        summary="How a key is built (no raw text unless the config keeps it)",
    )
    async def key_generation(payload: KeyGenerationBody) -> dict[str, Any]:
        ops = ctx.engine()
        try:
            described = ops.describe_key(payload.operation, payload.text, payload.options, payload.question)
            again = ops.describe_key(payload.operation, payload.text, payload.options, payload.question)
            return {**described, **guide.key_generation_fields(described, again)}
        except (ValueError, TypeError) as exc:
            raise InvalidRequest.single(
                "body", "(request)", "an operation, text and options the key builder accepts", str(exc)
            ) from None

    @router.get("/actions", dependencies=read, summary="Admin actions executed and replayed on this pod")
    async def actions() -> dict[str, Any]:
        return {
            **ctx.journal.describe(),
            "idempotency": {
                "remembered": len(ctx.idempotency),
                "replays": ctx.idempotency.replays,
                "conflicts": ctx.idempotency.conflicts,
            },
        }

    # ---- actions ---------------------------------------------------------------------------------

    @router.post("/clear", dependencies=admin, summary="Drop every entry (L1 and this namespace in Redis)")
    async def clear(request: Request, dry_run: DryRun = False) -> JSONResponse:
        ops = ctx.engine()
        return await ctx.run_action(
            request, "clear", lambda: ops.clear(dry_run=dry_run), params={"dry_run": dry_run}, dry_run=dry_run
        )

    @router.post("/invalidate", dependencies=admin, summary="Invalidate by pattern or namespace")
    async def invalidate(
        request: Request,
        pattern: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=MAX_PATTERN_CHARS,
                description="Redis glob, relative to the key prefix",
            ),
        ] = None,
        namespace: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=64,
                pattern=r"^[A-Za-z0-9_.-]+$",
                description="Bump this namespace's version (O(1))",
            ),
        ] = None,
        dry_run: DryRun = False,
    ) -> JSONResponse:
        if (pattern is None) == (namespace is None):
            raise InvalidRequest(
                [
                    problem("query.pattern", pattern, "exactly one of pattern or namespace"),
                    problem("query.namespace", namespace, "exactly one of pattern or namespace"),
                ]
            )
        ops = ctx.engine()

        async def act() -> dict[str, Any]:
            try:
                result = await ops.invalidate(pattern=pattern, namespace=namespace, dry_run=dry_run)
            except ValueError as exc:
                raise InvalidRequest.single(
                    "query.pattern" if pattern is not None else "query.namespace",
                    pattern or namespace,
                    "a Redis glob within the key prefix",
                    str(exc),
                ) from None
            ctx.journal.record_invalidation(
                pattern=pattern, namespace=namespace, counts=result, dry_run=dry_run
            )
            return result

        return await ctx.run_action(
            request,
            "invalidate",
            act,
            params={"pattern": pattern, "namespace": namespace, "dry_run": dry_run},
            dry_run=dry_run,
        )

    @router.post("/gc", dependencies=admin, summary="Drop expired L1 entries now")
    async def gc(request: Request, dry_run: DryRun = False) -> JSONResponse:
        ops = ctx.engine()
        return await ctx.run_action(
            request, "gc", lambda: ops.gc(dry_run=dry_run), params={"dry_run": dry_run}, dry_run=dry_run
        )

    @router.post("/compress-existing", dependencies=admin, summary="Re-encode stored values with compression")
    async def compress_existing(
        request: Request,
        dry_run: DryRun = False,
        max_entries: Annotated[
            int | None, Query(ge=1, le=10_000_000, description="Rewrite at most this many entries")
        ] = None,
    ) -> JSONResponse:
        ops = ctx.engine()
        return await ctx.run_action(
            request,
            "compress-existing",
            lambda: ops.compress_existing(dry_run=dry_run, max_entries=max_entries),
            params={"dry_run": dry_run, "max_entries": max_entries},
            dry_run=dry_run,
        )

    @router.post("/reset-config", dependencies=admin, summary="Back to the mounted file's config")
    async def reset_config(request: Request, dry_run: DryRun = False) -> JSONResponse:
        controller = ctx.config()

        async def act() -> dict[str, Any]:
            try:
                return (await controller.reset(dry_run=dry_run)).describe()
            except ConfigRejected as exc:
                raise _config_rejected(exc) from None

        return await ctx.run_action(
            request, "reset-config", act, params={"dry_run": dry_run}, dry_run=dry_run
        )

    @router.post(
        "/apply-preset", dependencies=admin, summary="Switch to a preset (keeps connection and keys)"
    )
    async def apply_preset(
        request: Request,
        payload: Annotated[ApplyPresetBody | None, Body()] = None,
        preset: Annotated[PresetName | None, Query(description="Same as the body's preset")] = None,  # type: ignore[valid-type]
        dry_run: DryRun = False,
    ) -> JSONResponse:
        chosen = _one_preset(payload.preset if payload else None, preset)
        controller = ctx.config()

        async def act() -> dict[str, Any]:
            try:
                return (await controller.apply_preset(chosen, dry_run=dry_run)).describe()
            except ConfigRejected as exc:
                raise _config_rejected(exc, "body.") from None

        return await ctx.run_action(
            request, "apply-preset", act, params={"preset": chosen, "dry_run": dry_run}, dry_run=dry_run
        )

    @router.post("/config/update", dependencies=admin, summary="Apply partial overrides live")
    async def config_update(
        request: Request,
        payload: Annotated[
            dict[str, Any],
            Body(
                description='{"overrides": {"ttl.default_s": 600}} (config paths), or the guide\'s flat keys '
                '({"default_ttl": 3600, "normalize_text": true, ...}; see docs/runbook.md)'
            ),
        ],
        dry_run: DryRun = False,
    ) -> JSONResponse:
        controller = ctx.config()
        translation = None
        if set(payload) == {"overrides"}:
            overrides = payload["overrides"]
        else:
            translation = translate(payload, ctx.engine().config.model_dump())
            overrides = translation.overrides

        async def act() -> dict[str, Any]:
            try:
                result = (await controller.update(overrides, dry_run=dry_run)).describe()
            except ConfigRejected as exc:
                error = _config_rejected(exc, "body.overrides.")
                if translation is not None:
                    error.problems = rename_problems(error.problems, translation)
                raise error from None
            return {**result, **(translation.describe() if translation else {})}

        return await ctx.run_action(
            request,
            "config/update",
            act,
            params={"overrides": payload, "dry_run": dry_run},
            dry_run=dry_run,
        )

    @router.post("/config/apply", dependencies=admin, summary="The operator's push: full config + hash")
    async def config_apply(request: Request, payload: ConfigApplyBody) -> JSONResponse:
        controller = ctx.config()

        async def act() -> dict[str, Any]:
            try:
                return (await controller.push(payload.config, payload.hash)).describe()
            except ConfigRejected as exc:
                raise _config_rejected(exc, "body.config.") from None

        return await ctx.run_action(request, "config/apply", act, params={"hash": payload.hash})

    @router.post("/redis/reconnect", dependencies=admin, summary="Drop Redis pools and reconnect")
    async def redis_reconnect(request: Request) -> JSONResponse:
        ops = ctx.engine()
        return await ctx.run_action(request, "redis/reconnect", ops.reconnect, params={})

    @router.post("/emergency/isolate", dependencies=admin, summary="Stop writes, serve from what is cached")
    async def isolate(request: Request, dry_run: DryRun = False) -> JSONResponse:
        ops = ctx.engine()
        return await ctx.run_action(
            request,
            "emergency/isolate",
            lambda: ops.set_isolated(True, dry_run=dry_run),
            params={"dry_run": dry_run},
            dry_run=dry_run,
        )

    @router.post("/emergency/restore", dependencies=admin, summary="End isolation")
    async def restore(request: Request, dry_run: DryRun = False) -> JSONResponse:
        ops = ctx.engine()
        return await ctx.run_action(
            request,
            "emergency/restore",
            lambda: ops.set_isolated(False, dry_run=dry_run),
            params={"dry_run": dry_run},
            dry_run=dry_run,
        )

    return router


def _one_preset(from_body: str | None, from_query: str | None) -> str:
    if from_body is None and from_query is None:
        raise InvalidRequest.single(
            "body.preset", None, ", ".join(PRESET_NAMES), "preset: required (in the JSON body, or ?preset=)"
        )
    if from_body is not None and from_query is not None and from_body != from_query:
        raise InvalidRequest.single(
            "query.preset",
            from_query,
            f"the body's preset ({from_body}) or none",
            "preset given twice with different values",
        )
    return str(from_body or from_query)


def _config_hash(ctx: AdminContext, ops: EngineOps) -> str | None:
    controller = ctx.config_if_any()
    if controller is not None and controller.source.in_force is not None:
        return controller.source.in_force.hash
    return ops.config.config_hash()


__all__ = ["AdminContext", "ConfigError", "build_admin_router"]
