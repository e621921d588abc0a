"""A small text-processing service that embeds the cache engine and mounts its admin router.

This is what "an application that embeds the engine" looks like (CachePolicy ``spec.selector`` mode):
one TieredCache for the process, built in the lifespan; every model call goes through
``cache.get_or_compute`` with a key from ``cache.key_for``; and the runtime's admin API is mounted
under ``/internal/cache`` so the operator can push configs, probe health and run incidents here
exactly as on a runtime pod.

Environment: ``CACHEWARDEN_CONFIG_PATH`` (the mounted ConfigMap; polled), ``CACHEWARDEN_PRESET``
(without a file; default ``ai-development``), ``CACHEWARDEN_REDIS_URL``, ``CACHEWARDEN_ADMIN_TOKEN_FILE``,
``CACHEWARDEN_READ_TOKEN_FILE``, ``SAMPLE_MODEL_DELAY_S`` (default 0.05).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from cache_runtime import TieredCache
from cache_runtime.config import CacheConfig, resolve_config
from cache_runtime.service.admin import build_admin_router
from cache_runtime.service.auth import Authenticator
from cache_runtime.service.config_source import ConfigController, ConfigSource, LocalCredentials
from cache_runtime.service.errors import install_error_handlers
from cache_runtime.service.settings import ServiceSettings
from examples.sample_app.fake_model import FakeModel

MAX_TEXT_CHARS = 200_000


class TextRequest(BaseModel):
    """A text to process."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    max_items: int = Field(default=2, ge=1, le=20, description="Sentences, points or questions to return.")


class QARequest(BaseModel):
    """A question about a text."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    question: str = Field(min_length=1, max_length=2_000)


class SampleApp:
    """The app's state: settings, the one engine, the fake model, the config controller."""

    def __init__(self, settings: ServiceSettings, model: FakeModel) -> None:
        self.settings = settings
        self.model = model
        self.cache: TieredCache | None = None
        fallback = resolve_config(preset=settings.preset or "ai-development")
        self.controller = ConfigController(
            ConfigSource(path=settings.config_path, fallback=fallback),
            self.apply_config,
            LocalCredentials(
                url=settings.redis_url,
                url_file=settings.redis_url_file,
                password_file=settings.redis_password_file,
            ),
        )
        self.auth = Authenticator.from_paths(
            admin=settings.admin_token_file, read=settings.read_token_file, disabled=settings.auth_disabled
        )

    async def apply_config(self, config: CacheConfig) -> None:
        """First config builds the engine; later ones are applied live."""
        if self.cache is None:
            cache = TieredCache(config)
            await cache.start()
            self.cache = cache
        else:
            await self.cache.apply_config(config)

    def get_cache(self) -> TieredCache | None:
        """The engine for the admin router (None -> 503 until started)."""
        return self.cache

    async def cached(
        self,
        operation: str,
        text: str,
        options: dict[str, Any],
        compute: Callable[[], Awaitable[dict[str, Any]]],
        question: str | None = None,
    ) -> dict[str, Any]:
        """The model's answer through the cache: one model call per distinct request and TTL."""
        cache = self.cache
        if cache is None:
            return {**await compute(), "cache": "unavailable"}
        key = cache.key_for(operation, text, options=options, question=question)
        return await cache.get_or_compute(key, compute)


def create_sample_app(settings: ServiceSettings | None = None, model: FakeModel | None = None) -> FastAPI:
    """The sample app; settings default to the environment."""
    settings = settings or ServiceSettings.from_env()
    delay = float(os.environ.get("SAMPLE_MODEL_DELAY_S", "0.05"))
    sample = SampleApp(settings, model or FakeModel(delay_s=delay))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        await sample.controller.load_initial()
        poller = asyncio.create_task(sample.controller.run_poller(settings.config_poll_interval_s, stop))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(poller, timeout=5.0)
            if sample.cache is not None:
                # Bounded: a stopping pod must not hang on a Redis that stopped answering.
                await asyncio.wait_for(sample.cache.close(), timeout=10.0)

    app = FastAPI(title="cachewarden sample app", lifespan=lifespan)
    app.state.sample = sample
    install_error_handlers(app)
    app.include_router(build_admin_router(sample.get_cache, sample.auth, config=sample.controller))

    @app.post("/v1/summarize")
    async def summarize(body: TextRequest) -> dict[str, Any]:
        return await sample.cached(
            "summarize",
            body.text,
            {"max_sentences": body.max_items},
            lambda: sample.model.summarize(body.text, body.max_items),
        )

    @app.post("/v1/sentiment")
    async def sentiment(body: TextRequest) -> dict[str, Any]:
        return await sample.cached("sentiment", body.text, {}, lambda: sample.model.sentiment(body.text))

    @app.post("/v1/key-points")
    async def key_points(body: TextRequest) -> dict[str, Any]:
        return await sample.cached(
            "key_points",
            body.text,
            {"max_points": body.max_items},
            lambda: sample.model.key_points(body.text, body.max_items),
        )

    @app.post("/v1/questions")
    async def questions(body: TextRequest) -> dict[str, Any]:
        return await sample.cached(
            "questions",
            body.text,
            {"max_questions": body.max_items},
            lambda: sample.model.questions(body.text, body.max_items),
        )

    @app.post("/v1/qa")
    async def qa(body: QARequest) -> dict[str, Any]:
        return await sample.cached(
            "qa", body.text, {}, lambda: sample.model.qa(body.text, body.question), question=body.question
        )

    @app.get("/v1/model-calls")
    async def model_calls() -> dict[str, Any]:
        return {"calls": dict(sample.model.calls), "total": sum(sample.model.calls.values())}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> dict[str, Any]:
        return {"ready": sample.cache is not None}

    return app
