"""The data API for clients that are not Python: ``/data/v1``.

* ``GET/PUT/DELETE /data/v1/keys/{key}`` — a JSON value by key, with an optional TTL;
* ``POST /data/v1/mget`` — many keys in one round trip;
* ``POST /data/v1/ai/lookup`` and ``/ai/store`` — an AI response by operation + text + options +
  question: the engine computes the key, so every client (Python or not) shares one key layout.

Reads need the read token; writes need the write (or admin) token. A write's answer says where it
went: ``l2: false`` / ``degraded: true`` when Redis did not take it (the value is on the answering pod
only until Redis answers again; the engine then deletes the key from Redis and from the other pods).
``null`` is not a storable value: a lookup answers ``hit: false`` for a miss, and a stored ``null``
would be indistinguishable from one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cache_runtime.service.auth import Authenticator, Role
from cache_runtime.service.engine_ops import EngineUnavailable
from cache_runtime.service.errors import InvalidRequest, reject_non_finite
from cache_runtime.service.value_mapping import as_json_value

MAX_KEY_CHARS = 1024
_MISS = object()
MAX_MGET_KEYS = 1000
TTL_MAX_S = 7 * 86400


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError(
            "null is not storable (a miss is answered as hit=false); accepted: any other JSON value"
        )
    return value


class StoreBody(_Body):
    """A value to store under a key."""

    value: Any = Field(description="Any JSON value except null.")
    ttl_s: int | None = Field(
        default=None, ge=1, le=TTL_MAX_S, description="Seconds to live; null = the config's default TTL."
    )

    _check_value = field_validator("value")(_not_null)


class MgetBody(_Body):
    """Keys to read in one round trip."""

    keys: list[Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS)]] = Field(
        min_length=1, max_length=MAX_MGET_KEYS
    )


class AIRequestBody(_Body):
    """What an AI response is keyed by."""

    operation: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="summarize, sentiment, key_points, questions, qa, or your own.",
    )
    text: str = Field(max_length=100_000_000, description="The input text (never logged).")
    options: dict[str, Any] | None = Field(default=None, description="Model options that change the answer.")
    question: str | None = Field(default=None, max_length=1_000_000, description="For qa.")

    _finite_options = field_validator("options")(reject_non_finite)


class AIStoreBody(AIRequestBody):
    """An AI response to store under the key of its request."""

    value: Any = Field(description="The response: any JSON value except null.")
    ttl_s: int | None = Field(
        default=None,
        ge=1,
        le=TTL_MAX_S,
        description="Seconds to live; null = the operation's TTL from the config.",
    )

    _check_value = field_validator("value")(_not_null)


def _write_answer(outcome: dict[str, Any]) -> dict[str, Any]:
    """The fields of a write's answer: ``stored`` (anywhere), ``l2`` (Redis took it: true; false when
    it did not; null when the engine has no Redis) and ``degraded`` (on this pod only)."""
    return {"stored": bool(outcome["stored"]), "l2": outcome["l2"], "degraded": bool(outcome["degraded"])}


KeyPath = Annotated[str, Path(min_length=1, max_length=MAX_KEY_CHARS, description="Your key (any text).")]


def build_data_router(
    get_cache: Callable[[], Any], auth: Authenticator, *, prefix: str = "/data/v1"
) -> APIRouter:
    """The data API router over the engine that ``get_cache()`` returns."""
    read = [Depends(auth.require(Role.READ))]
    write = [Depends(auth.require(Role.WRITE))]
    router = APIRouter(prefix=prefix, tags=["data"])

    def cache() -> Any:
        try:
            engine = get_cache()
        except EngineUnavailable:
            engine = None
        if engine is None:
            raise HTTPException(
                status_code=503,
                detail={"error": "unavailable", "message": "the cache engine is not started yet"},
            )
        return engine

    def data_key(engine: Any, key: str) -> str:
        try:
            return engine.data_key(key)
        except ValueError as exc:
            raise InvalidRequest.single(
                "path.key", key, f"1 to {MAX_KEY_CHARS} characters", str(exc)
            ) from None

    def ai_key(engine: Any, body: AIRequestBody) -> str:
        try:
            return engine.key_for(body.operation, body.text, options=body.options, question=body.question)
        except (ValueError, TypeError) as exc:
            # TextTooLongError and bad options land here; the message names the field, not the text.
            field = "body.text" if "text" in str(exc).split(":", 1)[0] else "body.options"
            raise InvalidRequest.single(
                field,
                f"<{len(body.text)} characters>" if field == "body.text" else body.options,
                "what the key builder accepts",
                str(exc),
            ) from None

    def refused_isolated() -> JSONResponse:
        return JSONResponse(
            status_code=409,
            content={
                "error": "isolated",
                "stored": False,
                "problems": [],
                "message": "the cache is isolated (maintenance mode): writes are refused until restore",
            },
        )

    @router.get("/keys/{key:path}", dependencies=read, summary="Get a value by key")
    async def get_value(key: KeyPath) -> JSONResponse:
        engine = cache()
        value = await engine.get(data_key(engine, key), _MISS)
        if value is _MISS:
            return JSONResponse(status_code=404, content={"key": key, "hit": False})
        shown, encoding = as_json_value(value)  # bytes (a Redis-protocol SET): text + its encoding
        if encoding is None:
            return JSONResponse(content={"key": key, "hit": True, "value": value})
        return JSONResponse(content={"key": key, "hit": True, "value": shown, "encoding": encoding})

    @router.put("/keys/{key:path}", dependencies=write, summary="Store a value by key")
    async def put_value(key: KeyPath, body: StoreBody) -> JSONResponse:
        engine = cache()
        full = data_key(engine, key)
        if engine.isolated:
            return refused_isolated()
        outcome = await engine.set_detailed(full, body.value, ttl=body.ttl_s)
        return JSONResponse(content={"key": key, **_write_answer(outcome), "ttl_s": body.ttl_s})

    @router.delete("/keys/{key:path}", dependencies=write, summary="Delete a value by key")
    async def delete_value(key: KeyPath) -> dict[str, Any]:
        engine = cache()
        outcome = await engine.delete_detailed(data_key(engine, key))
        return {"key": key, "deleted": bool(outcome["deleted"]), "l2": outcome["l2"],
                "degraded": bool(outcome["degraded"])}

    @router.post("/mget", dependencies=read, summary="Get many values by key")
    async def mget(body: MgetBody) -> dict[str, Any]:
        engine = cache()
        full_keys = [data_key(engine, key) for key in body.keys]
        fetched = await engine.get_many(full_keys)
        found = fetched if isinstance(fetched, dict) else dict(zip(full_keys, fetched, strict=True))
        results = {key: found.get(full) for key, full in zip(body.keys, full_keys, strict=True)}
        values: dict[str, Any] = {}
        encodings: dict[str, str] = {}
        for key, value in results.items():
            if value is not None:
                values[key], encoding = as_json_value(value)
                if encoding is not None:
                    encodings[key] = encoding
        answer: dict[str, Any] = {
            "values": values,
            "missing": [key for key, value in results.items() if value is None],
        }
        if encodings:  # only when some value is bytes (written through the Redis protocol)
            answer["encodings"] = encodings
        return answer

    @router.post("/ai/lookup", dependencies=read, summary="Look up an AI response by its request")
    async def ai_lookup(body: AIRequestBody) -> JSONResponse:
        engine = cache()
        key = ai_key(engine, body)
        # TieredCache.get() counts AI keys per operation itself (operation-stats, diagnosis).
        value = await engine.get(key, _MISS)
        if value is _MISS:
            return JSONResponse(status_code=200, content={"hit": False, "key": key})
        return JSONResponse(content={"hit": True, "key": key, "value": value})

    @router.post("/ai/store", dependencies=write, summary="Store an AI response under its request's key")
    async def ai_store(body: AIStoreBody) -> JSONResponse:
        engine = cache()
        key = ai_key(engine, body)
        if engine.isolated:
            return refused_isolated()
        outcome = await engine.set_detailed(key, body.value, ttl=body.ttl_s)
        return JSONResponse(content={**_write_answer(outcome), "key": key, "ttl_s": body.ttl_s})

    return router
