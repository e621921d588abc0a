"""The runtime service against a real redis-server: every endpoint, auth, live config, isolation,
idempotency, bad inputs, and a real uvicorn process stopped with SIGTERM.

Most tests talk to the app in-process through ``httpx.ASGITransport`` (the socket adds nothing there);
the lifespan runs for real, so the engine, its Redis pools and the config poller are the production
ones. Two tests start ``cachewarden runtime`` / the sample app as real processes on a free loopback
port and stop them with SIGTERM.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from cache_runtime.config import resolve_config
from cache_runtime.service.app import create_app
from cache_runtime.service.settings import ServiceSettings
from tests.integration.guide_doc import parse_guide
from tests.waiting import eventually as wait_eventually

if TYPE_CHECKING:
    from tests.integration.conftest import RedisFactory

pytestmark = pytest.mark.integration

ADMIN = "admin-token-0123456789abcdef0123"
READ = "read-token-0123456789abcdef01234"
WRITE = "write-token-0123456789abcdef0123"
WRONG = "wrong-token-0123456789abcdef0123"
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_json(path: Path, data: Any) -> None:
    # Atomic replace, like the kubelet's ConfigMap symlink swap.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(data if isinstance(data, str) else json.dumps(data))
    os.replace(temporary, path)


eventually = functools.partial(wait_eventually, timeout=WAIT_S, interval=0.05)


@dataclass
class Runtime:
    """An app with its lifespan running, a client, and the files it reads."""

    app: FastAPI
    client: httpx.AsyncClient
    config_path: Path
    redis_url: str

    async def get(self, path: str, token: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, headers=bearer(token) if token else {}, **kwargs)

    async def post(
        self, path: str, token: str | None = ADMIN, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        merged = {**(bearer(token) if token else {}), **(headers or {})}
        return await self.client.post(path, headers=merged, **kwargs)

    async def put(self, path: str, token: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
        return await self.client.put(path, headers=bearer(token) if token else {}, **kwargs)

    async def health(self) -> dict[str, Any]:
        response = await self.get("/internal/cache/health")
        assert response.status_code == 200, response.text
        return response.json()


def make_settings(directory: Path, config: Any, **extra: Any) -> tuple[ServiceSettings, Path]:
    (directory / "admin").write_text(ADMIN + "\n")
    (directory / "read").write_text(READ + "\n")
    (directory / "write").write_text(WRITE + "\n")
    config_path = directory / "config.json"
    write_json(config_path, config)
    settings = ServiceSettings.from_env(
        {},
        config_path=str(config_path),
        admin_token_file=str(directory / "admin"),
        read_token_file=str(directory / "read"),
        write_token_file=str(directory / "write"),
        config_poll_interval_s=0.05,
        **extra,
    )
    return settings, config_path


@pytest.fixture
async def runtime(tmp_path: Path, redis_url: str) -> AsyncIterator[Runtime]:
    settings, config_path = make_settings(tmp_path, {"preset": "ai-production", "redis_url": redis_url})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as client:
            yield Runtime(app, client, config_path, redis_url)


# ---- the route table: every protected route and the role it needs --------------------------------

READ_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/internal/cache/status", None),
    ("GET", "/internal/cache/metrics", None),
    ("GET", "/internal/cache/memory-stats", None),
    ("GET", "/internal/cache/health", None),
    ("GET", "/internal/cache/compression-stats", None),
    ("GET", "/internal/cache/key-analysis", None),
    ("GET", "/internal/cache/operation-stats", None),
    ("GET", "/internal/cache/config/current", None),
    ("POST", "/internal/cache/config/validate", "VALID_PUSH"),  # type: ignore[list-item]
    ("GET", "/internal/cache/invalidation-stats", None),
    ("GET", "/internal/cache/recent-errors", None),
    ("POST", "/internal/cache/debug/key-generation", {"operation": "summarize", "text": "Some text."}),
    ("GET", "/internal/cache/actions", None),
    ("GET", "/data/v1/keys/some-key", None),
    ("POST", "/data/v1/mget", {"keys": ["a", "b"]}),
    ("POST", "/data/v1/ai/lookup", {"operation": "summarize", "text": "Some text."}),
]
WRITE_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("PUT", "/data/v1/keys/some-key", {"value": {"answer": 42}}),
    ("DELETE", "/data/v1/keys/some-key", None),
    ("POST", "/data/v1/ai/store", {"operation": "summarize", "text": "Some text.", "value": "Some."}),
]
ADMIN_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/internal/cache/clear", None),
    ("POST", "/internal/cache/invalidate?pattern=*:ai:summarize:*", None),
    ("POST", "/internal/cache/gc", None),
    ("POST", "/internal/cache/compress-existing", None),
    ("POST", "/internal/cache/reset-config", None),
    ("POST", "/internal/cache/apply-preset", {"preset": "performance"}),
    ("POST", "/internal/cache/config/update", {"overrides": {"ttl.default_s": 900}}),
    ("POST", "/internal/cache/config/apply", "VALID_PUSH"),  # type: ignore[list-item]
    ("POST", "/internal/cache/redis/reconnect", None),
    ("POST", "/internal/cache/emergency/isolate", None),
    ("POST", "/internal/cache/emergency/restore", None),
]
OPEN_ROUTES = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}

# The troubleshooting guide's own commands (tests/integration/guide_doc.py reads them from the guide),
# with the guide's bodies: the ones above are served by the admin router, these by the guide router.
_LISTED = {(method, path.split("?")[0]) for method, path, _ in READ_ROUTES + ADMIN_ROUTES}
_GUIDE_READ_POSTS = ("key-generator/test-consistency", "memory/leak-analysis", "analysis/post-incident")
for _command in parse_guide():
    if (_command.method, _command.path) in _LISTED:
        continue
    _LISTED.add((_command.method, _command.path))
    _entry = (_command.method, _command.path, _command.body)
    if _command.method == "GET" or _command.path.endswith(_GUIDE_READ_POSTS):
        READ_ROUTES.append(_entry)  # type: ignore[arg-type]
    else:
        ADMIN_ROUTES.append(_entry)  # type: ignore[arg-type]
ALL_PROTECTED = READ_ROUTES + WRITE_ROUTES + ADMIN_ROUTES


def valid_push(redis_url: str) -> dict[str, Any]:
    config = resolve_config("ai-development", redis_url=redis_url)
    return {"config": config.public_dict(), "hash": config.config_hash()}


def request_body(body: Any, redis_url: str) -> Any:
    return valid_push(redis_url) if body == "VALID_PUSH" else body


def template(path: str) -> str:
    return path.split("?")[0].replace("/some-key", "/{key}")


def test_route_table_covers_every_route(tmp_path: Path) -> None:
    settings, _ = make_settings(tmp_path, {"preset": "simple"})
    app = create_app(settings)
    served = {
        (method.upper(), path) for path, operations in app.openapi()["paths"].items() for method in operations
    }
    listed = {(method, template(path)) for method, path, _ in ALL_PROTECTED} | OPEN_ROUTES
    assert served == listed


@pytest.mark.parametrize(
    ("method", "path", "body"),
    READ_ROUTES + WRITE_ROUTES + ADMIN_ROUTES,
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_every_route_answers_2xx_with_the_admin_token(
    runtime: Runtime, method: str, path: str, body: Any
) -> None:
    if path.startswith("/data/v1/keys") and method == "GET":
        await runtime.put("/data/v1/keys/some-key", json={"value": 1})
    response = await runtime.client.request(
        method, path, headers=bearer(ADMIN), json=request_body(body, runtime.redis_url)
    )
    assert 200 <= response.status_code < 300, response.text
    expected = "text/plain" if path.endswith("/metrics/prometheus") else "application/json"
    assert response.headers["content-type"].startswith(expected)


@pytest.mark.parametrize(
    ("method", "path", "body"), ALL_PROTECTED, ids=lambda value: value if isinstance(value, str) else ""
)
async def test_auth_on_every_protected_route(runtime: Runtime, method: str, path: str, body: Any) -> None:
    payload = request_body(body, runtime.redis_url)
    cases: list[tuple[dict[str, str], int]] = [
        ({}, 401),
        (bearer(WRONG), 401),
        ({"Authorization": f"Basic {ADMIN}"}, 401),
        ({"Authorization": f"Bearer {ADMIN[:-1]}"}, 401),
    ]
    if (method, path, body) in ADMIN_ROUTES:
        cases += [(bearer(READ), 403), (bearer(WRITE), 403)]
    if (method, path, body) in WRITE_ROUTES:
        cases += [(bearer(READ), 403)]
    for headers, expected in cases:
        response = await runtime.client.request(method, path, headers=headers, json=payload)
        assert response.status_code == expected, (headers, response.text)
        text = response.text
        # No detail leaks: no token, no hint of which tokens exist.
        assert ADMIN not in text and READ not in text and WRITE not in text
        assert set(response.json()) == {"error", "message", "problems"}
        if expected == 401:
            assert response.headers["www-authenticate"] == "Bearer"
    if (method, path, body) in READ_ROUTES:
        if path.startswith("/data/v1/keys"):
            await runtime.put("/data/v1/keys/some-key", json={"value": 1})
        response = await runtime.client.request(method, path, headers=bearer(READ), json=payload)
        assert response.status_code == 200, response.text


async def test_probes_and_metrics_are_open(runtime: Runtime) -> None:
    assert (await runtime.get("/healthz", token=None)).json() == {"status": "alive"}
    ready = await runtime.get("/readyz", token=None)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    await runtime.put("/data/v1/keys/k", json={"value": "v"})
    await runtime.get("/data/v1/keys/k")
    metrics = (await runtime.get("/metrics", token=None)).text
    for name in (
        "cachewarden_cache_hits_total",
        "cachewarden_cache_l1_entries",
        "process_cpu_seconds_total",
        'cachewarden_runtime_http_requests_total{method="GET",route="/data/v1/keys/{key}"',
        "cachewarden_runtime_config_info",
        "cachewarden_runtime_ready 1.0",
    ):
        assert name in metrics, name


async def test_closed_metrics_and_probes_need_a_token(tmp_path: Path, redis_url: str) -> None:
    settings, _ = make_settings(
        tmp_path, {"preset": "simple", "redis_url": redis_url}, open_metrics=False, open_probes=False
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://runtime") as client,
    ):
        for path in ("/metrics", "/healthz", "/readyz"):
            assert (await client.get(path)).status_code == 401
            assert (await client.get(path, headers=bearer(READ))).status_code == 200


async def test_status_has_the_original_shape_and_tells_the_truth(runtime: Runtime) -> None:
    status = (await runtime.get("/internal/cache/status")).json()
    assert set(status) >= {"status", "redis", "memory", "performance", "timestamp"}
    assert status["redis"]["status"] == "connected" and status["redis"]["connected"] is True
    assert status["redis"]["ping_ms"] is not None
    assert set(status["memory"]) >= {"entries", "bytes", "memory_mb", "max_entries"}
    assert set(status["performance"]) >= {"hit_rate", "l1_hit_rate", "l2_hit_rate", "total_requests"}
    metrics = (await runtime.get("/internal/cache/metrics")).json()
    assert set(metrics) >= {"cache_metrics", "performance_metrics", "memory_metrics", "operation_metrics"}


async def test_status_reports_redis_unavailable_and_metrics_never_500(
    tmp_path: Path, redis_factory: RedisFactory
) -> None:
    server = redis_factory.start()
    settings, _ = make_settings(tmp_path, {"preset": "ai-production", "redis_url": server.url})
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://runtime") as client,
    ):
        headers = bearer(ADMIN)
        assert (await client.get("/internal/cache/status", headers=headers)).json()["redis"]["connected"]
        await client.put("/data/v1/keys/k", headers=headers, json={"value": "kept in L1"})
        server.stop()
        # Reads keep working from L1 while Redis is gone.
        for _ in range(5):
            hit = await client.get("/data/v1/keys/k", headers=headers)
            assert hit.status_code == 200 and hit.json()["value"] == "kept in L1"
        status = (await client.get("/internal/cache/status", headers=headers)).json()
        assert status["redis"]["status"] == "unavailable"
        assert status["redis"]["connected"] is False
        for path in (
            "/internal/cache/metrics",
            "/internal/cache/health",
            "/internal/cache/memory-stats",
            "/internal/cache/recent-errors",
            "/metrics",
        ):
            response = await client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text)
        errors = (await client.get("/internal/cache/recent-errors", headers=headers)).json()
        assert sum(errors["redis"]["errors"].values()) > 0
        # Redis comes back on the same port; reconnect makes it usable at once.
        server.start()
        reconnect = await client.post("/internal/cache/redis/reconnect", headers=headers)
        assert reconnect.json()["available"] is True

        async def connected() -> bool:
            body = (await client.get("/internal/cache/status", headers=headers)).json()
            return bool(body["redis"]["connected"])

        await eventually(connected, "status to report Redis connected again")


async def test_health_reports_everything_the_operator_reads(runtime: Runtime) -> None:
    for index in range(20):
        await runtime.put(f"/data/v1/keys/k{index}", json={"value": index})
        await runtime.get(f"/data/v1/keys/k{index}")
    health = await runtime.health()
    assert health["status"] in {"healthy", "degraded", "unhealthy"}
    in_force = runtime.config_path.read_text()
    assert json.loads(in_force)["preset"] == health["preset"]
    assert len(health["config_hash"]) == 64
    assert set(health["hit_rates"]) >= {"overall", "l1", "l2"}
    assert health["hit_rates"]["overall"] == 1.0
    # the window the verdict judged (the whole short life here) and the lifetime figure, apart
    assert health["hit_rates"]["window_seconds"] is not None and health["hit_rates"]["lookups"] == 20
    assert health["lifetime_hit_rates"]["overall"] == 1.0 and health["lifetime_hit_rates"]["lookups"] == 20
    assert health["memory"]["entries"] == 20
    assert health["latency"]["get"]["p95_ms"] is not None
    assert health["redis"]["breaker_state"] == "closed"
    assert set(health["diagnosis"]) >= {"status", "symptoms", "causes"}
    assert health["config"]["file"]["rejection"] is None


async def test_config_apply_changes_behaviour_live_and_keeps_l1(runtime: Runtime) -> None:
    await runtime.put("/data/v1/keys/survivor", json={"value": "still here"})
    before = await runtime.health()
    config = resolve_config(
        "ai-production",
        overrides={"ttl": {"default_s": 1}, "l1": {"max_entries": 777}},
        redis_url=runtime.redis_url,
    )
    push = await runtime.post(
        "/internal/cache/config/apply", json={"config": config.public_dict(), "hash": config.config_hash()}
    )
    assert push.status_code == 200, push.text
    assert push.json()["applied"] is True and push.json()["previous_hash"] == before["config_hash"]
    after = await runtime.health()
    assert after["config_hash"] == config.config_hash() != before["config_hash"]
    assert after["memory"]["max_entries"] == 777
    assert after["config"]["in_force"]["origin"] == "push"
    # L1 contents that remain valid survive the change.
    survivor = await runtime.get("/data/v1/keys/survivor")
    assert survivor.json()["value"] == "still here"
    assert (await runtime.get("/internal/cache/status")).json()["performance"]["l1_hit_rate"] > 0
    # The new default TTL (1 s) is in force for new writes: the value expires by itself.
    await runtime.put("/data/v1/keys/short-lived", json={"value": 1})
    assert (await runtime.get("/data/v1/keys/short-lived")).status_code == 200

    async def expired() -> bool:
        return (await runtime.get("/data/v1/keys/short-lived")).status_code == 404

    await eventually(expired, "a value written under ttl.default_s=1 to expire")
    # The same push again changes nothing.
    again = await runtime.post(
        "/internal/cache/config/apply", json={"config": config.public_dict(), "hash": config.config_hash()}
    )
    assert again.json()["applied"] is False


async def test_config_validate_applies_nothing(runtime: Runtime) -> None:
    before = (await runtime.health())["config_hash"]
    push = valid_push(runtime.redis_url)
    response = await runtime.post("/internal/cache/config/validate", token=READ, json=push)
    assert response.json() == {
        "valid": True,
        "hash": push["hash"],
        "preset": "ai-development",
        "in_force": False,
    }
    assert (await runtime.health())["config_hash"] == before


async def test_update_preset_and_reset(runtime: Runtime) -> None:
    file_hash = (await runtime.health())["config_hash"]
    update = await runtime.post("/internal/cache/config/update", json={"overrides": {"ttl": {"qa_s": 60}}})
    assert update.status_code == 200, update.text
    stats = (await runtime.get("/internal/cache/operation-stats")).json()
    assert stats["operations"]["qa"]["ttl_s"] == 60
    preset = await runtime.post("/internal/cache/apply-preset?preset=conservative")
    assert preset.json()["preset"] == "conservative"
    current = (await runtime.get("/internal/cache/config/current")).json()
    assert current["config"]["preset"] == "conservative"
    assert current["config"]["redis"]["url"] == runtime.redis_url
    reset = await runtime.post("/internal/cache/reset-config")
    assert reset.json()["hash"] == file_hash and reset.json()["applied"] is True
    assert (await runtime.health())["config"]["override"] is None


async def test_file_changes_are_picked_up_and_end_a_push(runtime: Runtime) -> None:
    await runtime.post("/internal/cache/apply-preset", json={"preset": "performance"})
    write_json(runtime.config_path, {"preset": "simple", "redis_url": runtime.redis_url})
    expected = resolve_config("simple", redis_url=runtime.redis_url).config_hash()

    async def picked_up() -> bool:
        return (await runtime.health())["config_hash"] == expected

    await eventually(picked_up, "the changed config file to be applied")
    assert (await runtime.health())["config"]["override"] is None


async def test_corrupted_config_file_keeps_the_last_good_config(runtime: Runtime) -> None:
    good = await runtime.health()
    await runtime.put("/data/v1/keys/k", json={"value": "v"})
    write_json(runtime.config_path, '{"preset": "ai-production", "overrides": {"ttl": {"default_s": -5}}')

    async def rejected() -> dict[str, Any] | None:
        return (await runtime.health())["config"]["file"]["rejection"]

    rejection = await eventually(rejected, "the corrupted file to be rejected")
    assert rejection["field"] == "file"
    health = await runtime.health()
    assert health["config_hash"] == good["config_hash"]
    assert health["config_rejected"] is True and health["status"] != "healthy"
    assert (await runtime.get("/readyz", token=None)).status_code == 200
    assert (await runtime.get("/data/v1/keys/k")).json()["value"] == "v"
    # A well-formed file with a bad value names the field.
    write_json(runtime.config_path, {"preset": "ai-production", "overrides": {"ttl": {"default_s": -5}}})

    async def field_named() -> bool:
        found = (await runtime.health())["config"]["file"]["rejection"]
        return bool(found and found["field"] == "ttl.default_s")

    await eventually(field_named, "the rejection to name ttl.default_s")
    metrics = (await runtime.get("/metrics", token=None)).text
    assert "cachewarden_runtime_config_file_rejected 1.0" in metrics
    # A good file ends the rejection.
    write_json(runtime.config_path, {"preset": "minimal", "redis_url": runtime.redis_url})

    async def recovered() -> bool:
        body = await runtime.health()
        return body["preset"] == "minimal" and not body["config_rejected"]

    await eventually(recovered, "a valid file to replace the rejected one")


async def test_isolate_and_restore(runtime: Runtime) -> None:
    await runtime.put("/data/v1/keys/cached", json={"value": "before"})
    isolate = await runtime.post("/internal/cache/emergency/isolate")
    assert isolate.json()["isolated"] is True and isolate.json()["changed"] is True
    refused = await runtime.put("/data/v1/keys/new", json={"value": "x"})
    assert refused.status_code == 409 and refused.json()["error"] == "isolated"
    store = await runtime.post("/data/v1/ai/store", json={"operation": "qa", "text": "t", "value": "v"})
    assert store.status_code == 409
    assert (await runtime.get("/data/v1/keys/cached")).json()["value"] == "before"
    assert (await runtime.health())["isolated"] is True
    assert (await runtime.get("/internal/cache/status")).json()["isolated"] is True
    restore = await runtime.post("/internal/cache/emergency/restore")
    assert restore.json() == {**restore.json(), "isolated": False, "changed": True}
    assert (await runtime.put("/data/v1/keys/new", json={"value": "x"})).json()["stored"] is True


async def test_destructive_actions_dry_run_and_counts(runtime: Runtime) -> None:
    for index in range(5):
        await runtime.post(
            "/data/v1/ai/store",
            json={"operation": "summarize", "text": f"text {index}", "value": f"summary {index}"},
        )
        await runtime.put(f"/data/v1/keys/plain-{index}", json={"value": index})
    dry = await runtime.post("/internal/cache/clear?dry_run=true")
    assert dry.json()["dry_run"] is True and dry.json()["l1_entries"] == 10
    assert (await runtime.get("/data/v1/keys/plain-0")).status_code == 200
    invalidated = await runtime.post("/internal/cache/invalidate", params={"pattern": "*:summarize:*"})
    body = invalidated.json()
    assert body["status"] == "success" and body["l1_entries_removed"] == 5 and body["redis_keys_removed"] == 5
    assert body["invalidated_count"] == 10
    stats = (await runtime.get("/internal/cache/invalidation-stats")).json()
    assert stats["pattern_invalidations"] == 1 and stats["keys_invalidated"] == 10
    assert stats["recent_invalidations"][-1]["pattern"] == "*:summarize:*"
    namespace = await runtime.post("/internal/cache/invalidate?namespace=default")
    assert namespace.json()["namespace_version"] == 1
    assert (await runtime.get("/data/v1/keys/plain-0")).status_code == 404
    await runtime.put("/data/v1/keys/again", json={"value": 1})
    cleared = await runtime.post("/internal/cache/clear")
    assert cleared.json()["l1_entries_removed"] == 1 and cleared.json()["redis_keys_removed"] >= 1
    gc = await runtime.post("/internal/cache/gc")
    assert gc.json()["l1_expired_removed"] == 0


async def test_compress_existing_rewrites_large_entries(runtime: Runtime) -> None:
    await runtime.post(
        "/internal/cache/config/update", json={"overrides": {"compression.threshold_bytes": 100_000_000}}
    )
    text = "The cache keeps AI responses close to the service that needs them. " * 200
    await runtime.put("/data/v1/keys/large", json={"value": text})
    await runtime.post(
        "/internal/cache/config/update", json={"overrides": {"compression.threshold_bytes": 1024}}
    )
    dry = await runtime.post("/internal/cache/compress-existing?dry_run=true")
    assert dry.json()["candidates"] == 1 and dry.json()["rewritten"] == 0
    done = await runtime.post("/internal/cache/compress-existing")
    assert done.json()["rewritten"] == 1 and done.json()["compressed"] == 1
    assert done.json()["bytes_saved"] > 0
    assert (await runtime.get("/data/v1/keys/large")).json()["value"] == text


async def test_compress_existing_never_puts_back_a_value_written_during_its_rewrites(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from cache_runtime.cache import TieredCache

    await runtime.post(
        "/internal/cache/config/update", json={"overrides": {"compression.threshold_bytes": 100_000_000}}
    )
    text = "The cache keeps AI responses close to the service that needs them. " * 200
    for n in range(2):
        await runtime.put(f"/data/v1/keys/large-{n}", json={"value": f"{n}: {text}"})
    await runtime.post(
        "/internal/cache/config/update", json={"overrides": {"compression.threshold_bytes": 1024}}
    )
    original = TieredCache.set
    newer_written: list[str] = []

    async def set_with_a_newer_write_landing(self: TieredCache, key: str, *args: Any, **kwargs: Any) -> Any:
        if not newer_written:  # while the first candidate is rewritten, a client writes the other one
            other = "large-1" if key.endswith("large-0") else "large-0"
            newer_written.append(other)
            await runtime.put(f"/data/v1/keys/{other}", json={"value": "newer"})
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(TieredCache, "set", set_with_a_newer_write_landing)
    done = (await runtime.post("/internal/cache/compress-existing")).json()
    monkeypatch.setattr(TieredCache, "set", original)
    assert done["candidates"] == 2 and done["rewritten"] == 1 and done["skipped_changed"] == 1
    assert (await runtime.get(f"/data/v1/keys/{newer_written[0]}")).json()["value"] == "newer"


async def test_idempotency_key_replays_the_first_result(runtime: Runtime) -> None:
    await runtime.put("/data/v1/keys/k", json={"value": 1})
    key = {"Idempotency-Key": "incident-uid-1234:clear:pod-a"}
    first = await runtime.post("/internal/cache/clear", headers=key)
    await runtime.put("/data/v1/keys/k2", json={"value": 2})
    second = await runtime.post("/internal/cache/clear", headers=key)
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    # The second call did not act: the value written in between is still there.
    assert (await runtime.get("/data/v1/keys/k2")).status_code == 200
    actions = (await runtime.get("/internal/cache/actions", token=READ)).json()
    assert actions["executed"]["clear"] == 1 and actions["replayed"]["clear"] == 1
    conflict = await runtime.post("/internal/cache/clear?dry_run=true", headers=key)
    assert conflict.status_code == 409
    assert conflict.json()["problems"][0]["field"] == "header.Idempotency-Key"
    metrics = (await runtime.get("/metrics", token=None)).text
    assert 'cachewarden_runtime_actions_total{action="clear",outcome="executed"} 1.0' in metrics


async def test_concurrent_duplicates_act_once(runtime: Runtime) -> None:
    key = {"Idempotency-Key": "incident-uid-5678:isolate"}
    responses = await asyncio.gather(
        *(runtime.post("/internal/cache/emergency/isolate", headers=key) for _ in range(10))
    )
    assert {response.status_code for response in responses} == {200}, [r.text for r in responses]
    assert sum(response.json()["changed"] for response in responses) == 10  # all the first result
    actions = (await runtime.get("/internal/cache/actions")).json()
    assert actions["executed"]["emergency/isolate"] == 1
    assert actions["replayed"]["emergency/isolate"] == 9


BAD_REQUESTS: list[tuple[str, str, Any, dict[str, str], int, str]] = [
    ("POST", "/internal/cache/invalidate", None, {}, 422, "query.pattern"),
    ("POST", "/internal/cache/invalidate?pattern=", None, {}, 422, "query.pattern"),
    ("POST", "/internal/cache/invalidate?pattern=a&namespace=b", None, {}, 422, "query.pattern"),
    ("POST", "/internal/cache/invalidate?namespace=bad%20name", None, {}, 422, "query.namespace"),
    ("POST", "/internal/cache/clear?dry_run=maybe", None, {}, 422, "query.dry_run"),
    ("POST", "/internal/cache/apply-preset", {"preset": "warp"}, {}, 422, "body.preset"),
    ("POST", "/internal/cache/apply-preset", None, {}, 422, "body.preset"),
    ("POST", "/internal/cache/apply-preset?preset=minimal", {"preset": "simple"}, {}, 422, "query.preset"),
    ("POST", "/internal/cache/apply-preset", {"preset": "simple", "extra": 1}, {}, 422, "body.extra"),
    (
        "POST",
        "/internal/cache/config/update",
        {"overrides": {"ttl": {"defualt_s": 5}}},
        {},
        422,
        "body.overrides.ttl.defualt_s",
    ),
    (
        "POST",
        "/internal/cache/config/update",
        {"overrides": {"l1.max_entries": -1}},
        {},
        422,
        "body.overrides.l1.max_entries",
    ),
    ("POST", "/internal/cache/config/update", {"overrides": {}}, {}, 422, "body.overrides.overrides"),
    # Not {"overrides": ...}: read as the guide's flat keys, and `ttl` is none of them.
    ("POST", "/internal/cache/config/update", {"ttl": 5}, {}, 422, "body.ttl"),
    (
        "POST",
        "/internal/cache/config/apply",
        {"config": {"preset": "simple"}, "hash": "0" * 64},
        {},
        422,
        "body.hash",
    ),
    (
        "POST",
        "/internal/cache/config/apply",
        {"config": {"ttl": {"default_s": 0}}, "hash": "0" * 64},
        {},
        422,
        "body.config.ttl.default_s",
    ),
    ("POST", "/internal/cache/config/apply", {"config": {}, "hash": "short"}, {}, 422, "body.hash"),
    (
        "POST",
        "/internal/cache/config/validate",
        {"config": "production", "hash": "0" * 64},
        {},
        422,
        "body.config",
    ),
    ("POST", "/internal/cache/clear", None, {"Idempotency-Key": "has space"}, 422, "header.Idempotency-Key"),
    (
        "POST",
        "/internal/cache/debug/key-generation",
        {"operation": "sum marize", "text": "x"},
        {},
        422,
        "body.operation",
    ),
    ("GET", "/internal/cache/recent-errors?limit=0", None, {}, 422, "query.limit"),
    ("POST", "/internal/cache/compress-existing?max_entries=0", None, {}, 422, "query.max_entries"),
    ("PUT", "/data/v1/keys/k", {"value": None}, {}, 422, "body.value"),
    ("PUT", "/data/v1/keys/k", {"value": 1, "ttl_s": 0}, {}, 422, "body.ttl_s"),
    ("PUT", "/data/v1/keys/k", {"value": 1, "ttl_s": 10**9}, {}, 422, "body.ttl_s"),
    ("PUT", "/data/v1/keys/k", {"valu": 1}, {}, 422, "body.value"),
    ("PUT", "/data/v1/keys/" + "k" * 1100, {"value": 1}, {}, 422, "path.key"),
    ("POST", "/data/v1/mget", {"keys": []}, {}, 422, "body.keys"),
    ("POST", "/data/v1/ai/lookup", {"operation": "summarize"}, {}, 422, "body.text"),
    ("POST", "/data/v1/ai/lookup", {"operation": "summarize", "text": "x" * 200_001}, {}, 422, "body.text"),
    ("POST", "/data/v1/ai/store", {"operation": "qa", "text": "t"}, {}, 422, "body.value"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "field"),
    BAD_REQUESTS,
    ids=[f"{m} {p[:60]} {f}" for m, p, _, _, _, f in BAD_REQUESTS],
)
async def test_bad_inputs_name_the_field_value_and_what_is_accepted(
    runtime: Runtime, method: str, path: str, body: Any, headers: dict[str, str], status: int, field: str
) -> None:
    response = await runtime.client.request(method, path, json=body, headers={**bearer(ADMIN), **headers})
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == "invalid_request"
    fields = [item["field"] for item in payload["problems"]]
    assert field in fields, payload
    named = payload["problems"][fields.index(field)]
    assert named["accepted"] and named["message"] and "value" in named


async def test_malformed_json_and_oversized_bodies(runtime: Runtime) -> None:
    broken = await runtime.client.post(
        "/internal/cache/config/update",
        content=b"{not json",
        headers={**bearer(ADMIN), "content-type": "application/json"},
    )
    assert broken.status_code == 422 and broken.json()["problems"][0]["field"].startswith("body")
    huge = await runtime.client.put(
        "/data/v1/keys/k",
        content=b"x" * (17 * 1024 * 1024),
        headers={**bearer(ADMIN), "content-type": "application/json"},
    )
    assert huge.status_code == 413 and huge.json()["problems"][0]["field"] == "body"


async def test_data_api_round_trips(runtime: Runtime) -> None:
    values: list[Any] = [{"nested": [1, 2.5, "three", None, True]}, "text", 7, 0.5, [1], False]
    for index, value in enumerate(values):
        stored = await runtime.put(
            f"/data/v1/keys/user/{index}/%C3%BC%3F%23", token=WRITE, json={"value": value, "ttl_s": 60}
        )
        assert stored.status_code == 200, stored.text
    # Keys with slashes and non-ASCII characters are one path segment each way.
    for index, value in enumerate(values):
        response = await runtime.get(f"/data/v1/keys/user/{index}/%C3%BC%3F%23", token=READ)
        assert response.json() == {"key": f"user/{index}/ü?#", "hit": True, "value": value}
    many = await runtime.post("/data/v1/mget", token=READ, json={"keys": ["user/0/ü?#", "absent"]})
    assert many.json() == {"values": {"user/0/ü?#": values[0]}, "missing": ["absent"]}
    deleted = await runtime.client.delete("/data/v1/keys/user/0/%C3%BC%3F%23", headers=bearer(WRITE))
    assert deleted.json()["deleted"] is True
    assert (await runtime.get("/data/v1/keys/user/0/%C3%BC%3F%23")).status_code == 404
    request = {
        "operation": "qa",
        "text": "Redis is an in-memory store.",
        "options": {"model": "m"},
        "question": "What is Redis?",
    }
    assert (await runtime.post("/data/v1/ai/lookup", token=READ, json=request)).json()["hit"] is False
    store = await runtime.post("/data/v1/ai/store", token=WRITE, json={**request, "value": {"a": "store"}})
    key = store.json()["key"]
    found = (await runtime.post("/data/v1/ai/lookup", token=READ, json=request)).json()
    assert found == {"hit": True, "key": key, "value": {"a": "store"}}
    other = {**request, "question": "What is Redis? "}
    assert (await runtime.post("/data/v1/ai/lookup", token=READ, json=other)).json()["hit"] is False
    debug = (
        await runtime.post(
            "/internal/cache/debug/key-generation", token=READ, json={k: v for k, v in request.items()}
        )
    ).json()
    assert debug["key"] == key
    assert request["text"] not in json.dumps(debug)  # ai-production hashes text: no raw text shown


async def test_tokens_rotate_without_restart(runtime: Runtime, tmp_path: Path) -> None:
    rotated = "rotated-admin-token-0123456789abcd"
    write_json(tmp_path / "admin", rotated + "\n")

    async def rotated_in() -> bool:
        response = await runtime.post("/internal/cache/gc", token=rotated)
        return response.status_code == 200

    await eventually(rotated_in, "the rotated admin token to be accepted")
    assert (await runtime.post("/internal/cache/gc", token=ADMIN)).status_code == 401


async def test_not_ready_without_a_valid_config_until_a_push(tmp_path: Path, redis_url: str) -> None:
    settings, _ = make_settings(tmp_path, {"preset": "no-such-preset"})
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://runtime") as client,
    ):
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["config_loaded"] is False
        unavailable = await client.get("/internal/cache/status", headers=bearer(ADMIN))
        assert unavailable.status_code == 503 and unavailable.json()["error"] == "unavailable"
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/data/v1/keys/k", headers=bearer(READ))).status_code == 503
        push = await client.post(
            "/internal/cache/config/apply", headers=bearer(ADMIN), json=valid_push(redis_url)
        )
        assert push.status_code == 200, push.text
        assert (await client.get("/readyz")).status_code == 200


async def test_no_token_or_user_text_in_logs(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    secret_text = "The quarterly numbers of ACME were terrible."
    with caplog.at_level("INFO"):
        await runtime.post(
            "/data/v1/ai/store", json={"operation": "summarize", "text": secret_text, "value": "x"}
        )
        await runtime.get("/data/v1/keys/private%20user%20key")
        await runtime.post("/internal/cache/invalidate?pattern=secret-pattern-*")
    access = [record for record in caplog.records if record.name == "cachewarden.runtime.access"]
    assert {record.fields["path"] for record in access} >= {
        "/data/v1/ai/store",  # type: ignore[attr-defined]
        "/data/v1/keys/{key}",
        "/internal/cache/invalidate",
    }
    ours = [
        record
        for record in caplog.records
        if record.name.startswith(("cachewarden", "cache_runtime", "uvicorn"))
    ]
    logged = "\n".join(f"{record.getMessage()} {getattr(record, 'fields', '')}" for record in ours)
    for forbidden in (ADMIN, READ, "ACME", "private user key", "secret-pattern"):
        assert forbidden not in logged


# ---- real processes ------------------------------------------------------------------------------


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early with {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready within {timeout}s")


def start_runtime_process(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``cachewarden runtime`` on 127.0.0.1 as a subprocess with ``env`` added to this environment
    (outside any devcluster), logging to ``tmp_path/runtime.log``; returns the process and the log."""
    full = {**os.environ, **env}
    full.pop("DEVCLUSTER_ROOT", None)
    log_path = tmp_path / "runtime.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cachewarden.cli", "runtime", "--host", "127.0.0.1"],
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    return process, log_path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def test_real_uvicorn_serves_and_shuts_down_gracefully_on_sigterm(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    settings, config_path = make_settings(tmp_path, {"preset": "ai-production", "redis_url": redis_url})
    del settings
    process, log_path = start_runtime_process(
        tmp_path,
        CACHEWARDEN_CONFIG_PATH=str(config_path),
        CACHEWARDEN_ADMIN_TOKEN_FILE=str(tmp_path / "admin"),
        CACHEWARDEN_READ_TOKEN_FILE=str(tmp_path / "read"),
        CACHEWARDEN_PORT=str(port),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/readyz", process)
        stored = httpx.put(base + "/data/v1/keys/k", headers=bearer(ADMIN), json={"value": "over TCP"})
        assert stored.status_code == 200
        assert httpx.get(base + "/data/v1/keys/k", headers=bearer(READ)).json()["value"] == "over TCP"
        assert "cachewarden_cache_hits_total" in httpx.get(base + "/metrics").text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        _stop(process)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    messages = [line["msg"] for line in lines]
    assert "engine started" in messages and "runtime stopped" in messages
    requests = [line for line in lines if line["msg"] == "request"]
    assert {"method", "path", "status", "duration_ms"} <= set(requests[0])
    assert all(ADMIN not in json.dumps(line) for line in lines)


def test_sample_app_drains_in_flight_requests_on_sigterm(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    (tmp_path / "admin").write_text(ADMIN)
    env = {
        **os.environ,
        "CACHEWARDEN_PORT": str(port),
        "CACHEWARDEN_REDIS_URL": redis_url,
        "CACHEWARDEN_PRESET": "ai-development",
        "CACHEWARDEN_ADMIN_TOKEN_FILE": str(tmp_path / "admin"),
        "SAMPLE_MODEL_DELAY_S": "1.5",
        "PYTHONPATH": str(REPO),
    }
    env.pop("DEVCLUSTER_ROOT", None)
    with (tmp_path / "sample.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.sample_app"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {}

    def slow_request() -> None:
        try:
            response = httpx.post(base + "/v1/summarize", json={"text": "One. Two. Three."}, timeout=30)
            result["status"], result["body"] = response.status_code, response.json()
        except httpx.HTTPError as exc:
            result["error"] = repr(exc)

    try:
        _wait_http(base + "/healthz", process)
        worker = threading.Thread(target=slow_request)
        worker.start()
        deadline = time.monotonic() + 10
        # SIGTERM only once the model is working on the request, so it is really in flight.
        while httpx.get(base + "/v1/model-calls").json()["total"] < 1:
            assert time.monotonic() < deadline, "the request never reached the model"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        worker.join(timeout=30)
        assert result.get("status") == 200, result
        assert result["body"] == {"summary": "One. Two.", "sentences": 2}
        assert process.wait(timeout=30) == 0
    finally:
        _stop(process)


async def test_admin_router_embedded_in_a_host_app(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # examples/ is not an installed package; import it from the checkout.
    monkeypatch.syspath_prepend(str(REPO))
    from examples.sample_app.app import create_sample_app
    from examples.sample_app.fake_model import FakeModel

    (tmp_path / "admin").write_text(ADMIN)
    (tmp_path / "read").write_text(READ)
    settings = ServiceSettings.from_env(
        {},
        preset="ai-development",
        redis_url=redis_url,
        admin_token_file=str(tmp_path / "admin"),
        read_token_file=str(tmp_path / "read"),
    )
    model = FakeModel(delay_s=0.0)
    app = create_sample_app(settings, model)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sample") as client,
    ):
        text = {"text": "Caching saves model calls. It is great. Nothing else matters."}
        first = await client.post("/v1/summarize", json=text)
        second = await client.post("/v1/summarize", json=text)
        assert (
            first.json()
            == second.json()
            == {"summary": "Caching saves model calls. It is great.", "sentences": 2}
        )
        assert model.calls["summarize"] == 1
        sentiment = await client.post("/v1/sentiment", json=text)
        assert sentiment.json()["label"] == "positive"
        status = await client.get("/internal/cache/status", headers=bearer(READ))
        assert status.status_code == 200 and status.json()["performance"]["hits"] >= 1
        assert (await client.get("/internal/cache/status")).status_code == 401
        assert (await client.post("/internal/cache/clear", headers=bearer(READ))).status_code == 403
        push = await client.post(
            "/internal/cache/config/apply", headers=bearer(ADMIN), json=valid_push(redis_url)
        )
        assert push.status_code == 200 and push.json()["applied"] is True
        health = (await client.get("/internal/cache/health", headers=bearer(ADMIN))).json()
        assert health["config_hash"] == valid_push(redis_url)["hash"]
        # Entries that stay valid survive the push: no new model call.
        await client.post("/v1/summarize", json=text)
        assert model.calls["summarize"] == 1
        cleared = await client.post("/internal/cache/clear", headers=bearer(ADMIN))
        assert cleared.json()["l1_entries_removed"] >= 2
        await client.post("/v1/summarize", json=text)
        assert model.calls["summarize"] == 2


async def test_ai_lookups_are_counted_once_per_operation(runtime: Runtime) -> None:
    request = {"operation": "sentiment", "text": "A fine day."}
    before = (await runtime.get("/internal/cache/operation-stats")).json()["operations"].get("sentiment", {})
    miss = await runtime.post("/data/v1/ai/lookup", json=request)
    assert miss.json()["hit"] is False
    stored = await runtime.post("/data/v1/ai/store", json={**request, "value": "positive"})
    assert stored.status_code == 200, stored.text
    hit = await runtime.post("/data/v1/ai/lookup", json=request)
    assert hit.json()["hit"] is True and hit.json()["value"] == "positive"
    after = (await runtime.get("/internal/cache/operation-stats")).json()["operations"]["sentiment"]
    assert after["misses"] - before.get("misses", 0) == 1
    assert after["hits"] - before.get("hits", 0) == 1
