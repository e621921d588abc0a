"""Schema-driven fuzz of the runtime's HTTP API: thousands of generated requests, zero 5xx.

The request generator reads the app's own OpenAPI document: for every operation it builds path and
query parameters and JSON bodies from the schemas (valid values, boundary values and values of the
wrong type), and mixes in junk (arbitrary JSON, broken JSON, unknown fields, hostile keys and
headers). The app runs for real against a real redis-server; admin actions (clear, isolate,
apply-preset...) really happen in between. Every answer must be a non-5xx with a JSON body.
"""

from __future__ import annotations

import asyncio
import json
import string
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_runtime.service.app import create_app
from cache_runtime.service.settings import ServiceSettings

if TYPE_CHECKING:
    from tests.integration.conftest import RedisProcess

pytestmark = pytest.mark.integration

ADMIN = "fuzz-admin-token-0123456789abcdef"
READ = "fuzz-read-token-0123456789abcdef0"
EXAMPLES = 3000

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    # json.dumps writes these as NaN / Infinity, which the server's JSON parser accepts.
    | st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**400, -(10**4000), 2**64, 1e308])
)
# Bodies that are not what a JSON encoder writes: numbers beyond float range (parsed as inf),
# integers too long to print, deep nesting, other encodings, a BOM, lone surrogates.
ODD_BODIES = [
    b'{"default_ttl": 1e999}',
    b'{"overrides": {"ttl.default_s": 1e999}}',
    b'{"overrides": {"ttl": {"default_s": -1e999}}}',
    b'{"preset": 1e999}',
    b'{"config": {"ttl": {"default_s": 1e999}}, "hash": "' + b"0" * 64 + b'"}',
    b'{"operation": "summarize", "text": "x", "options": {"n": 1e999}}',
    b'{"operation": 1e999, "text": NaN}',
    b'{"default_ttl": ' + b"9" * 5000 + b"}",
    b'{"overrides": {"ttl.default_s": ' + b"9" * 5000 + b"}}",
    b'{"thresholds": {"hit_rate_warning": Infinity}}',
    b"[" * 3000 + b"]" * 3000,
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
    b'{"overrides": ' + b'{"a":' * 500 + b"1" + b"}" * 500 + b"}",
    '{"text": "caf\u00e9"}'.encode("utf-16"),
    b"\xef\xbb\xbf" + b'{"preset": "production"}',
    b'{"text": "\\ud800", "operation": "summarize"}',
    b'{"preset": "production"}'.decode().encode("latin-1") + b"\xff",
]
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
HOSTILE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "*",
        "?",
        "[",
        "\\",
        "..",
        "../..",
        "%00",
        "\u0000",
        "a" * 2000,
        "cw:*",
        "k:ai1:summarize:*",
        "{key}",
        "\u202e\u200b",
        "ünï©ødé",
        "SELECT 1; --",
        "-1",
        "0",
        "1e309",
        "true",
        "null",
    ]
)


class Fuzzer:
    """Builds request strategies from an OpenAPI document."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.operations = [
            (path, method.upper(), operation)
            for path, methods in sorted(spec["paths"].items())
            for method, operation in sorted(methods.items())
        ]

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = self.spec["components"]["schemas"][name]
        return schema

    def value(self, schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
        """A value for ``schema``: mostly conforming, sometimes boundary-breaking or wrong-typed."""
        schema = self.resolve(schema)
        conforming = self._conforming(schema, depth)
        return st.one_of(conforming, conforming, conforming, JSON_SCALARS, HOSTILE_TEXT)

    def _conforming(self, schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        if "const" in schema:
            return st.just(schema["const"])
        for combinator in ("anyOf", "oneOf", "allOf"):
            if combinator in schema:
                return st.one_of([self.value(option, depth + 1) for option in schema[combinator]])
        kind = schema.get("type")
        if kind == "string":
            low, high = schema.get("minLength", 0), min(schema.get("maxLength", 64), 300)
            return st.one_of(
                st.text(min_size=low, max_size=max(low, high)),
                st.text(string.ascii_letters + string.digits + "_.-:*", min_size=low, max_size=max(low, 40)),
            )
        if kind == "integer":
            low, high = schema.get("minimum"), schema.get("maximum")
            edges = [edge for base in (low, high) if base is not None for edge in (base - 1, base, base + 1)]
            return st.one_of(st.integers(min_value=low, max_value=high), st.sampled_from(edges or [0]))
        if kind == "number":
            return st.floats(allow_nan=False, allow_infinity=False)
        if kind == "boolean":
            return st.booleans()
        if kind == "array":
            items = self.value(schema.get("items", {}), depth + 1) if depth < 3 else JSON_SCALARS
            return st.lists(items, min_size=0, max_size=min(schema.get("maxItems", 5), 5))
        if kind == "object" or "properties" in schema:
            if depth >= 3:
                return st.dictionaries(st.text(max_size=8), JSON_SCALARS, max_size=3)
            properties = schema.get("properties", {})
            required = set(schema.get("required", ()))
            fixed = {name: self.value(sub, depth + 1) for name, sub in properties.items() if name in required}
            optional = {
                name: self.value(sub, depth + 1) for name, sub in properties.items() if name not in required
            }
            base = st.fixed_dictionaries(fixed, optional=optional)
            if schema.get("additionalProperties", True) is not False and not properties:
                return st.dictionaries(st.text(max_size=20), JSON_VALUES, max_size=5)
            extra = st.dictionaries(st.text(max_size=10), JSON_SCALARS, max_size=2)
            return st.one_of(base, base, st.tuples(base, extra).map(lambda pair: {**pair[1], **pair[0]}))
        return JSON_VALUES

    @st.composite
    def request(draw: st.DrawFn, self: Fuzzer) -> dict[str, Any]:  # type: ignore[misc]
        path, method, operation = draw(st.sampled_from(self.operations))
        query: dict[str, Any] = {}
        url = path
        for parameter in operation.get("parameters", []):
            value = draw(self.value(parameter.get("schema", {})))
            if parameter["in"] == "path":
                text = value if isinstance(value, str) and value else json.dumps(value)
                url = url.replace("{" + parameter["name"] + "}", quote(text, safe="/") or "x")
            elif parameter["in"] == "query" and draw(st.booleans()):
                query[parameter["name"]] = value if isinstance(value, str) else json.dumps(value)
        if draw(st.integers(0, 9)) == 0:
            query[draw(st.text(string.ascii_lowercase, min_size=1, max_size=8))] = draw(st.text(max_size=10))
        headers = {"Authorization": f"Bearer {draw(st.sampled_from([ADMIN] * 8 + [READ, 'nope']))}"}
        if method == "POST" and draw(st.integers(0, 4)) == 0:
            headers["Idempotency-Key"] = (
                draw(st.text(string.printable, min_size=0, max_size=20)).replace("\n", "").replace("\r", "")
            )
        content: bytes | None = None
        body = operation.get("requestBody")
        if body is not None or draw(st.integers(0, 19)) == 0:
            choice = draw(st.integers(0, 9))
            if choice == 0:
                junk = [b"{", b"[1,", b"null", b"\xff\xfe", b"", b'{"a":1}{"b":2}', *ODD_BODIES]
                content = draw(st.sampled_from(junk))
            elif choice == 1 or body is None:
                content = json.dumps(draw(JSON_VALUES)).encode()
            else:
                schema = body["content"]["application/json"]["schema"]
                content = json.dumps(draw(self.value(schema))).encode()
            headers["Content-Type"] = "application/json"
        return {"method": method, "url": url, "params": query, "headers": headers, "content": content}


class AppInThread:
    """The app with its lifespan running on an event loop in a background thread, and a blocking
    ``request`` for the (synchronous) hypothesis test. In-process, no socket, no deprecated shims."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-app-loop", daemon=True)
        self.thread.start()
        self._lifespan = app.router.lifespan_context(app)
        self._call(self._lifespan.__aenter__())
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fuzz")

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def request(self, **kwargs: Any) -> httpx.Response:
        return self._call(self.client.request(**kwargs))

    def get(self, url: str) -> httpx.Response:
        return self.request(method="GET", url=url)

    def close(self) -> None:
        self._call(self.client.aclose())
        self._call(self._lifespan.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def fuzz_client(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppInThread]:
    directory: Path = tmp_path_factory.mktemp("fuzz")
    (directory / "admin").write_text(ADMIN)
    (directory / "read").write_text(READ)
    (directory / "config.json").write_text(
        json.dumps({"preset": "ai-production", "redis_url": redis_server.url})
    )
    service = ServiceSettings.from_env(
        {},
        config_path=str(directory / "config.json"),
        admin_token_file=str(directory / "admin"),
        read_token_file=str(directory / "read"),
        config_poll_interval_s=0.5,
    )
    runner = AppInThread(create_app(service))
    try:
        yield runner
    finally:
        runner.close()


STATUSES: Counter[int] = Counter()


def test_generated_requests_never_get_a_5xx(fuzz_client: AppInThread) -> None:
    spec = fuzz_client.get("/openapi.json").json()
    fuzzer = Fuzzer(spec)
    assert len(fuzzer.operations) >= 30

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(fuzzer.request())
    def one(request: dict[str, Any]) -> None:
        response = fuzz_client.request(**request)
        STATUSES[response.status_code] += 1
        assert response.status_code < 500, (request, response.status_code, response.text[:500])
        if not request["url"].startswith("/metrics") and not request["url"].endswith("/metrics/prometheus"):
            assert isinstance(response.json(), dict)

    one()
    total = sum(STATUSES.values())
    print(f"fuzz: {total} requests, statuses {dict(sorted(STATUSES.items()))}")
    assert total >= EXAMPLES
    # The generator must reach the handlers, not only the validators.
    assert STATUSES[200] >= total // 10 and STATUSES[422] >= total // 10


@pytest.mark.parametrize("content", ODD_BODIES, ids=lambda body: body[:30].decode("latin-1"))
@pytest.mark.parametrize(
    "path",
    [
        "/internal/cache/config/update",
        "/internal/cache/apply-preset",
        "/internal/cache/config/apply",
        "/internal/cache/debug/key-generation",
        "/internal/cache/config/apply-preset",
        "/internal/cache/health/configure",
        "/internal/cache/optimize/ttl-strategy",
    ],
)
def test_odd_bodies_get_a_4xx_with_strict_json(fuzz_client: AppInThread, path: str, content: bytes) -> None:
    response = fuzz_client.request(method="POST", url=path, content=content, headers={
        "Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    assert response.status_code < 500, response.text[:500]
    # Strict JSON: no NaN/Infinity tokens, every echoed value encodable.
    body = json.loads(response.text, parse_constant=lambda token: pytest.fail(f"non-standard JSON {token}"))
    if any(token in content for token in (b"1e999", b"NaN", b"Infinity", b"9" * 5000, b"[" * 3000)):
        # Numbers no float can hold, and bodies the JSON parser gives up on, are refused with a 422
        # naming a field of the body.
        assert response.status_code == 422, response.text[:500]
        assert any(item["field"].startswith("body") for item in body["problems"]), body
