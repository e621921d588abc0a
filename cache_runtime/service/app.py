"""The runtime service's FastAPI application: one process-wide engine, admin + data API, probes.

``create_app(settings)`` builds the app; its lifespan loads the config (mounted file, else the start
preset), builds the single TieredCache of the process, polls the file for changes, and on shutdown
stops polling and closes the engine (and so its Redis pools). The engine is never built per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR
from prometheus_client.exposition import generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from cache_runtime import TieredCache
from cache_runtime.config import CacheConfig, resolve_config
from cache_runtime.metrics import EngineCollector
from cache_runtime.service.admin import build_admin_router
from cache_runtime.service.auth import Authenticator, Role
from cache_runtime.service.config_source import ConfigController, ConfigSource, LocalCredentials
from cache_runtime.service.data import build_data_router
from cache_runtime.service.engine_ops import EngineUnavailable
from cache_runtime.service.errors import install_error_handlers
from cache_runtime.service.guide.routes import GuideHooks, build_guide_router
from cache_runtime.service.idempotency import IdempotencyStore
from cache_runtime.service.journal import ActionJournal, RecentErrors
from cache_runtime.service.limits import BodySizeLimitMiddleware
from cache_runtime.service.logging import AccessLogMiddleware
from cache_runtime.service.resp_server import RespCollector, RespServer, RespStats
from cache_runtime.service.service_metrics import RequestStats, ServiceCollector
from cache_runtime.service.settings import ServiceSettings

log = logging.getLogger("cachewarden.runtime")

# Loggers whose warnings and errors `recent-errors` shows.
WATCHED_LOGGERS = ("cache_runtime", "cachewarden")

_ = (GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR)  # the default registry's; we build our own


class RuntimeState:
    """Process-wide state of the runtime: the one engine, its config controller, journals."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.auth = Authenticator.from_paths(
            admin=settings.admin_token_file,
            read=settings.read_token_file,
            write=settings.write_token_file,
            disabled=settings.auth_disabled,
        )
        fallback = resolve_config(preset=settings.preset) if settings.preset else None
        if settings.config_path is None and fallback is None:
            fallback = resolve_config(preset="development")
        source = ConfigSource(path=settings.config_path, fallback=fallback)
        credentials = LocalCredentials(
            url=settings.redis_url,
            url_file=settings.redis_url_file,
            password_file=settings.redis_password_file,
        )
        self.controller = ConfigController(source, self.apply_config, credentials)
        self.cache: TieredCache | None = None
        self.idempotency = IdempotencyStore(
            max_entries=settings.idempotency_max_entries, ttl_s=settings.idempotency_ttl_s
        )
        self.journal = ActionJournal()
        self.recent_errors = RecentErrors()
        self.requests = RequestStats()
        self.resp_stats = RespStats()
        self.resp_server: RespServer | None = None
        self.registry = CollectorRegistry()
        self.shutting_down = False
        self._engine_lock = asyncio.Lock()

    async def apply_config(self, config: CacheConfig) -> None:
        """Hand a config to the engine: build and start it the first time, apply live afterwards."""
        async with self._engine_lock:
            if self.cache is None:
                cache = TieredCache(config)
                await cache.start()
                self.cache = cache
                log.info("engine started", extra={"fields": {"preset": config.preset}})
            else:
                await self.cache.apply_config(config)

    async def restart_engine(self) -> dict[str, Any]:
        """Graceful in-process restart: a new engine with the config in force, then the old one closed.

        The guide's "restart cache service" inside a pod: L1 starts empty, Redis keeps its entries,
        pools and the coherence subscription are new. Requests in flight finish on the old engine.
        """
        async with self._engine_lock:
            old = self.cache
            if old is None:
                raise EngineUnavailable("no engine to restart")
            started = time.perf_counter()
            fresh = TieredCache(old.config)
            await fresh.start()
            self.cache = fresh
            dropped = len(old.l1)
            try:
                await asyncio.wait_for(old.close(), timeout=10.0)
            except TimeoutError:
                log.error("old engine did not close in time after restart")
            log.info("engine restarted", extra={"fields": {"l1_entries_dropped": dropped}})
            elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
            return {"l1_entries_dropped": dropped, "restart_ms": elapsed_ms}

    def get_cache(self) -> TieredCache:
        """The engine; raises EngineUnavailable (-> 503) until a config has started it."""
        if self.cache is None:
            raise EngineUnavailable("no valid config loaded yet")
        return self.cache

    def snapshot(self) -> Any:
        """The engine's stats snapshot for the Prometheus collector."""
        return self.get_cache().stats()

    @property
    def ready(self) -> bool:
        """Engine started with a config, and not shutting down."""
        return (
            self.cache is not None and self.controller.source.in_force is not None and not self.shutting_down
        )

    def service_state(self) -> dict[str, Any]:
        """What the service collector exports."""
        in_force = self.controller.source.in_force
        return {
            "ready": self.ready,
            "config_hash": in_force.hash if in_force else None,
            "config_origin": in_force.origin if in_force else None,
            "preset": in_force.config.preset if in_force else None,
            "config_rejected": self.controller.source.file.rejection is not None,
            "config_changes": self.controller.changes_applied,
            "actions": {
                "executed": dict(self.journal.executed),
                "replayed": dict(self.journal.replayed),
                "failed": dict(self.journal.failed),
                "dry_run": dict(self.journal.dry_runs),
            },
        }

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close the engine (its background tasks and Redis pools), bounded by ``timeout_s``.

        A pod being stopped must not hang on a Redis that stopped answering: past the bound the
        close is abandoned (the process exits and the kernel closes the sockets) and logged.
        """
        async with self._engine_lock:
            if self.cache is not None:
                cache, self.cache = self.cache, None
                try:
                    await asyncio.wait_for(cache.close(), timeout=timeout_s)
                except TimeoutError:
                    log.error(
                        "engine close did not finish in time; exiting anyway",
                        extra={"fields": {"timeout_s": timeout_s}},
                    )


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The runtime service app. ``settings`` default to the environment (``CACHEWARDEN_*``)."""
    settings = settings or ServiceSettings.from_env()
    state = RuntimeState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.recent_errors.attach(*WATCHED_LOGGERS)
        stop = asyncio.Event()
        poller: asyncio.Task[None] | None = None
        try:
            try:
                record = await state.controller.load_initial()
            except Exception:
                # A config the engine cannot start with must not kill the pod: stay unready, keep
                # polling, accept a push.
                log.exception("initial config could not be applied; waiting for a valid one")
                record = None
            if record is None:
                log.error("no valid config at start; /readyz answers 503 until one is loaded")
            poller = asyncio.create_task(
                state.controller.run_poller(settings.config_poll_interval_s, stop), name="config-poller"
            )
            if settings.resp_port is not None:
                state.resp_server = RespServer(
                    state.get_cache,
                    state.auth,
                    max_bytes=settings.max_body_bytes,
                    max_connections=settings.resp_max_connections,
                    stats=state.resp_stats,
                )
                await state.resp_server.start(settings.resp_host or settings.host, settings.resp_port)
            yield
        finally:
            state.shutting_down = True
            stop.set()
            if state.resp_server is not None:
                await state.resp_server.close(timeout_s=max(1.0, settings.shutdown_grace_s / 2))
            if poller is not None:
                # The poller wakes on `stop` at once unless it is inside an apply; give that a bound.
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(poller, timeout=5.0)
            await state.close(timeout_s=max(1.0, settings.shutdown_grace_s / 2))
            state.recent_errors.detach(*WATCHED_LOGGERS)
            log.info("runtime stopped")

    app = FastAPI(
        title="cachewarden runtime",
        version="v1alpha1",
        lifespan=lifespan,
        # An API answers a wrong path with a JSON 404, not a redirect to a slash variant.
        redirect_slashes=False,
        summary="Two-tier AI-response cache: admin API, data API, probes and metrics.",
    )
    app.state.runtime = state
    install_error_handlers(app)

    state.registry.register(EngineCollector(state.snapshot))
    state.registry.register(ServiceCollector(state.requests, state.service_state))
    state.registry.register(RespCollector(state.resp_stats))
    ProcessCollector(registry=state.registry)
    PlatformCollector(registry=state.registry)
    GCCollector(registry=state.registry)

    admin_router = build_admin_router(
        state.get_cache,
        state.auth,
        config=state.controller,
        idempotency=state.idempotency,
        journal=state.journal,
        recent_errors=state.recent_errors,
    )
    app.include_router(admin_router)
    app.include_router(
        build_guide_router(
            admin_router.context,  # type: ignore[attr-defined]
            GuideHooks(
                restart=state.restart_engine,
                metrics_text=lambda: generate_latest(state.registry),
                allow_redis_config_set=settings.allow_redis_config_set,
                settings=settings,
            ),
        )
    )
    app.include_router(build_data_router(state.get_cache, state.auth))

    probe_auth = [] if settings.open_probes else [Depends(state.auth.require(Role.READ))]
    metrics_auth = [] if settings.open_metrics else [Depends(state.auth.require(Role.READ))]

    @app.get("/healthz", dependencies=probe_auth, tags=["probes"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/readyz",
        dependencies=probe_auth,
        tags=["probes"],
        summary="Readiness: engine started and config loaded",
    )
    async def readyz() -> JSONResponse:
        in_force = state.controller.source.in_force
        body = {
            "ready": state.ready,
            "engine_started": state.cache is not None,
            "config_loaded": in_force is not None,
            "config_hash": in_force.hash if in_force else None,
            "shutting_down": state.shutting_down,
        }
        return JSONResponse(status_code=200 if state.ready else 503, content=body)

    @app.get("/metrics", dependencies=metrics_auth, tags=["probes"], summary="Prometheus metrics")
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse(
            status_code=500,
            content={"error": "internal", "problems": [], "message": "internal error; see the pod's log"},
        )

    app.add_exception_handler(Exception, on_unexpected)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLogMiddleware, on_request=state.requests.observe)
    return app
