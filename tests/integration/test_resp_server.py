"""The data API over the Redis protocol, against a real redis-server behind the engine.

The runtime app runs in-process with its lifespan (engine, Redis pools, coherence) and the Redis-protocol
front end listening on a real loopback socket; clients are the real redis-py and raw sockets. The HTTP
side is reached through ``httpx.ASGITransport`` as in test_runtime_service.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI

from cache_runtime import TieredCache
from cache_runtime.config import resolve_config
from cache_runtime.service.app import create_app
from tests.integration.test_runtime_service import (
    ADMIN,
    READ,
    WRITE,
    WRONG,
    _stop,
    _wait_http,
    bearer,
    free_port,
    make_settings,
    start_runtime_process,
)
from tests.waiting import eventually as wait_eventually

pytestmark = pytest.mark.integration

MAX_BODY = 64 * 1024
eventually = functools.partial(wait_eventually, timeout=10.0, interval=0.05)


@dataclass
class RespRuntime:
    """The app with its lifespan running, its HTTP client and the Redis-protocol port."""

    app: FastAPI
    http: httpx.AsyncClient
    port: int
    redis_url: str
    config: dict[str, Any]

    @property
    def engine(self) -> Any:
        return self.app.state.runtime.cache

    def client(self, token: str | None = WRITE, **kwargs: Any) -> aioredis.Redis:
        return aioredis.Redis(host="127.0.0.1", port=self.port, password=token, protocol=2, **kwargs)

    async def raw(self) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return RawClient(reader, writer)


class RawClient:
    """A plain socket speaking RESP by hand: send bytes, read one reply at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, *args: bytes | str) -> Any:
        await self.send(encode(*args))
        return await self.reply()

    async def reply(self) -> Any:
        line = await asyncio.wait_for(self.reader.readline(), 10)
        if not line:
            raise ConnectionError("closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return Error(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"_":
            return None
        if kind == b"$":
            if int(rest) < 0:
                return None
            data = await self.reader.readexactly(int(rest) + 2)
            return data[:-2]
        if kind in (b"*", b"%"):
            count = int(rest) * (2 if kind == b"%" else 1)
            items = [await self.reply() for _ in range(max(count, 0))]
            return dict(zip(items[::2], items[1::2], strict=True)) if kind == b"%" else items
        raise AssertionError(f"unexpected reply line {line!r}")

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 10) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass
class Error:
    """An error reply."""

    text: str


def encode(*args: bytes | str) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(parts)


@contextlib.asynccontextmanager
async def start(tmp_path: Path, redis_url: str, **extra: Any) -> AsyncIterator[RespRuntime]:
    config = {"preset": "ai-production", "redis_url": redis_url}
    settings, _ = make_settings(
        tmp_path, config, resp_port=0, resp_host="127.0.0.1", max_body_bytes=MAX_BODY, **extra
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as http:
            port = app.state.runtime.resp_server.port
            assert port > 0
            yield RespRuntime(app, http, port, redis_url, config)


@pytest.fixture
async def runtime(tmp_path: Path, redis_url: str) -> AsyncIterator[RespRuntime]:
    async with start(tmp_path, redis_url) as item:
        yield item


# ---- auth ----------------------------------------------------------------------------------------

NEEDS_AUTH = [
    ("GET", "k"),
    ("SET", "k", "v"),
    ("MGET", "k", "j"),
    ("DEL", "k"),
    ("UNLINK", "k"),
    ("EXISTS", "k"),
    ("PING",),
    ("ECHO", "x"),
    ("SELECT", "0"),
    ("CLIENT", "ID"),
    ("COMMAND",),
    ("HELLO", "3"),
    ("HELLO",),
]


async def test_every_command_needs_auth_and_the_key_is_untouched(runtime: RespRuntime) -> None:
    await runtime.engine.set(runtime.engine.data_key("k"), b"secret")
    raw = await runtime.raw()
    for args in NEEDS_AUTH:
        answer = await raw.command(*args)
        assert isinstance(answer, Error) and answer.text.startswith("NOAUTH"), (args, answer)
    # The refused SET and DEL changed nothing.
    assert await runtime.engine.get(runtime.engine.data_key("k")) == b"secret"
    assert await raw.command("QUIT") == "OK"
    assert await raw.closed()


async def test_wrong_token_is_refused_and_roles_are_enforced(runtime: RespRuntime) -> None:
    raw = await runtime.raw()
    answer = await raw.command("AUTH", WRONG)
    assert isinstance(answer, Error) and answer.text.startswith("WRONGPASS")
    answer = await raw.command("AUTH", "default", WRONG)
    assert isinstance(answer, Error) and answer.text.startswith("WRONGPASS")
    assert (await raw.command("GET", "k")).text.startswith("NOAUTH")
    # A read token reads, and may not write.
    assert await raw.command("AUTH", READ) == "OK"
    assert await raw.command("GET", "k") is None
    refused = await raw.command("SET", "k", "v")
    assert isinstance(refused, Error) and refused.text.startswith("NOPERM") and "write role" in refused.text
    assert await raw.command("DEL", "k") == Error(refused.text.replace("'set'", "'del'"))
    assert await runtime.engine.get(runtime.engine.data_key("k")) is None
    # AUTH with a username (ACL style): the token decides; write and admin tokens both write.
    assert await raw.command("AUTH", "someone", WRITE) == "OK"
    assert await raw.command("SET", "k", "v") == "OK"
    assert await raw.command("AUTH", ADMIN) == "OK"
    assert await raw.command("DEL", "k") == 1
    await raw.close()


async def test_a_rotated_token_stops_working_on_open_connections(
    runtime: RespRuntime, tmp_path: Path
) -> None:
    """Rotating the write token (the token file rewritten, as a Secret update does) takes the role
    away from connections that authenticated with the old token, the fast L1-hit GET included: the
    next command is refused with a NOAUTH that says why, and AUTH with the new token works again."""
    raw = await runtime.raw()
    assert await raw.command("AUTH", WRITE) == "OK"
    assert await raw.command("SET", "rotated", "v") == "OK"
    assert await raw.command("GET", "rotated") == b"v"  # now an L1 hit: the fast path answers it
    new_token = "n" * 40
    (tmp_path / "write").write_text(new_token + "\n")

    async def refused() -> Any:
        answer = await raw.command("GET", "rotated")
        return answer if isinstance(answer, Error) else None

    answer = await eventually(refused)
    assert answer.text.startswith("NOAUTH") and "no longer" in answer.text, answer
    assert (await raw.command("SET", "rotated", "w")).text.startswith("NOAUTH")
    assert await runtime.engine.get(runtime.engine.data_key("rotated")) == b"v"  # the refused SET did nothing
    wrong = await raw.command("AUTH", WRITE)
    assert isinstance(wrong, Error) and wrong.text.startswith("WRONGPASS")
    assert await raw.command("AUTH", new_token) == "OK"
    assert await raw.command("SET", "rotated", "w") == "OK"
    assert await raw.command("GET", "rotated") == b"w"
    await raw.close()


async def test_redis_py_with_a_wrong_password_cannot_connect(runtime: RespRuntime) -> None:
    client = runtime.client(WRONG)
    with pytest.raises(aioredis.AuthenticationError):
        await client.get("k")
    await client.aclose()


async def test_hello_3_with_auth_switches_to_resp3(runtime: RespRuntime) -> None:
    raw = await runtime.raw()
    hello = await raw.command("HELLO", "3", "AUTH", "default", READ, "SETNAME", "probe")
    assert isinstance(hello, dict) and hello[b"proto"] == 3 and hello[b"server"] == b"cachewarden"
    await raw.send(encode("GET", "missing"))
    assert await raw.reader.readline() == b"_\r\n"  # the RESP3 null
    assert await raw.command("CLIENT", "GETNAME") == b"probe"
    unsupported = await raw.command("HELLO", "4")
    assert (
        isinstance(unsupported, Error)
        and unsupported.text.startswith("NOPROTO")
        and "'4'" in unsupported.text
    )
    await raw.close()
    client = aioredis.Redis(host="127.0.0.1", port=runtime.port, password=WRITE, protocol=3)
    assert await client.set("r3", "x") is True
    assert await client.get("r3") == b"x"
    assert await client.get("absent") is None
    await client.aclose()


# ---- each command's effect -------------------------------------------------------------------------


async def test_set_is_seen_by_another_connection_http_and_another_engine(runtime: RespRuntime) -> None:
    writer, reader = runtime.client(WRITE), runtime.client(READ)
    assert await writer.set("shared", b"caf\xc3\xa9 \x00 bytes") is True
    assert await reader.get("shared") == b"caf\xc3\xa9 \x00 bytes"
    # The same key through the HTTP data API: bytes answered as UTF-8 text, marked.
    answer = await runtime.http.get("/data/v1/keys/shared", headers=bearer(READ))
    assert answer.status_code == 200
    assert answer.json() == {"key": "shared", "hit": True, "value": "café \x00 bytes", "encoding": "utf-8"}
    await writer.set("binary", b"\xff\xfe\x00")
    answer = await runtime.http.post(
        "/data/v1/mget", json={"keys": ["binary", "shared", "nope"]}, headers=bearer(READ)
    )
    assert answer.json() == {
        "values": {"binary": "//4A", "shared": "café \x00 bytes"},
        "missing": ["nope"],
        "encodings": {"binary": "base64", "shared": "utf-8"},
    }
    # Another engine (another pod) on the same Redis reads it from L2.
    other = TieredCache(resolve_config(**runtime.config))
    await other.start()
    try:
        assert await other.get(other.data_key("shared")) == b"caf\xc3\xa9 \x00 bytes"
    finally:
        await other.close()
    # An HTTP-set JSON value is answered as its JSON text.
    put = await runtime.http.put("/data/v1/keys/doc", json={"value": {"a": [1, "x"]}}, headers=bearer(WRITE))
    assert put.status_code == 200
    assert await reader.get("doc") == b'{"a":[1,"x"]}'
    await runtime.http.put("/data/v1/keys/text", json={"value": "hello"}, headers=bearer(WRITE))
    assert await reader.get("text") == b'"hello"'
    await writer.aclose()
    await reader.aclose()


async def test_a_write_through_resp_replaces_what_another_pod_cached(runtime: RespRuntime) -> None:
    other = TieredCache(resolve_config(**runtime.config))
    await other.start()
    try:
        key = other.data_key("coherent")
        await other.set(key, "old")
        client = runtime.client()
        assert await client.get("coherent") == b'"old"'
        assert await client.set("coherent", "new") is True
        # The other pod's L1 copy is dropped by the engine's coherence; it reads the new value.
        await eventually(lambda: other.get_local(key, None) is None)
        assert await other.get(key) == b"new"
        await client.aclose()
    finally:
        await other.close()


async def test_del_removes_from_l1_and_redis(runtime: RespRuntime) -> None:
    client = runtime.client()
    engine = runtime.engine
    await client.set("gone", "v")
    await client.set("gone2", "v")
    full = engine.data_key("gone")
    assert engine.get_local(full, None) == b"v"
    direct = aioredis.Redis.from_url(runtime.redis_url)
    assert await direct.exists(engine.keys.redis_key(full)) == 1
    assert await client.delete("gone", "gone2", "never-there") == 2
    assert engine.get_local(full, None) is None
    assert await direct.exists(engine.keys.redis_key(full)) == 0
    assert await client.get("gone") is None
    assert await client.unlink("gone") == 0
    await direct.aclose()
    await client.aclose()


async def test_ttl_options_reach_redis_and_expire(runtime: RespRuntime) -> None:
    client = runtime.client()
    engine = runtime.engine
    direct = aioredis.Redis.from_url(runtime.redis_url)
    assert await client.set("ex", "v", ex=100) is True
    pttl = await direct.pttl(engine.keys.redis_key(engine.data_key("ex")))
    assert 90_000 < pttl <= 100_000
    assert await client.set("px", "v", px=1200) is True
    assert 0 < await direct.pttl(engine.keys.redis_key(engine.data_key("px"))) <= 1200

    async def expired() -> bool:
        return await client.get("px") is None

    await eventually(expired)
    assert await direct.exists(engine.keys.redis_key(engine.data_key("px"))) == 0
    # No option: the policy's TTL (the engine's TTL for the key), as over HTTP.
    await client.set("policy", "v")
    assert await direct.pttl(engine.keys.redis_key(engine.data_key("policy"))) > 0
    await direct.aclose()
    await client.aclose()


async def test_mget_exists_ping_echo_select_client_command(runtime: RespRuntime) -> None:
    client = runtime.client()
    await client.set("a", "1")
    await client.set("b", "2")
    other = TieredCache(resolve_config(**runtime.config))
    await other.start()
    await other.set(other.data_key("l2only"), b"from-redis")  # in Redis, not in this pod's L1
    await other.close()
    assert await client.mget("a", "missing", "b", "l2only", "a") == [b"1", None, b"2", b"from-redis", b"1"]
    assert await client.exists("a", "b", "missing", "a") == 3
    assert await client.ping() is True
    assert await client.echo("hi") == b"hi"
    raw = await runtime.raw()
    assert await raw.command("AUTH", READ) == "OK"
    assert await raw.command("PING", "msg") == b"msg"
    assert await raw.command("SELECT", "0") == "OK"
    refused = await raw.command("SELECT", "1")
    assert isinstance(refused, Error) and "'1'" in refused.text and "accepted: 0" in refused.text
    assert await raw.command("CLIENT", "SETINFO", "LIB-NAME", "x") == "OK"
    assert isinstance(await raw.command("CLIENT", "ID"), int)
    assert await raw.command("COMMAND", "COUNT") == 14
    info = await raw.command("COMMAND", "INFO", "get", "nope")
    assert info[0][0] == b"get" and info[0][1] == 2 and info[1] is None
    await raw.close()
    await client.aclose()


async def test_isolated_cache_refuses_resp_writes(runtime: RespRuntime) -> None:
    response = await runtime.http.post("/internal/cache/emergency/isolate", headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    raw = await runtime.raw()
    await raw.command("AUTH", WRITE)
    refused = await raw.command("SET", "iso", "v")
    assert isinstance(refused, Error) and "isolated" in refused.text
    assert await raw.command("GET", "iso") is None
    await raw.close()


# ---- pipelining ------------------------------------------------------------------------------------


async def test_pipelined_commands_are_answered_in_order(runtime: RespRuntime) -> None:
    client = runtime.client()
    other = TieredCache(resolve_config(**runtime.config))
    await other.start()
    await other.set(other.data_key("remote"), b"R")  # an L2 read (await) in the middle of the pipeline
    await other.close()
    pipe = client.pipeline(transaction=False)
    expected: list[Any] = []
    for index in range(150):
        pipe.set(f"p{index}", str(index))
        expected.append(True)
        pipe.get(f"p{index}")
        expected.append(str(index).encode())
        if index % 25 == 0:
            pipe.get("remote")
            expected.append(b"R")
            pipe.get("absent")
            expected.append(None)
            pipe.delete(f"p{index}")
            expected.append(1)
            pipe.get(f"p{index}")
            expected.append(None)
    assert await pipe.execute() == expected
    # Raw: one write holding many commands, an error in the middle answered in place.
    raw = await runtime.raw()
    await raw.send(
        encode("AUTH", READ)
        + encode("GET", "p1")
        + encode("GET")
        + encode("GET", "remote")
        + encode("NOPE")
        + encode("MGET", "p1", "p2")
        + encode("PING")
    )
    answers = [await raw.reply() for _ in range(7)]
    assert answers[0] == "OK" and answers[1] == b"1" and answers[3] == b"R"
    assert isinstance(answers[2], Error) and isinstance(answers[4], Error)
    assert answers[5] == [b"1", b"2"] and answers[6] == "PONG"
    await raw.close()
    await client.aclose()


# ---- bad input ---------------------------------------------------------------------------------------


async def test_bad_commands_get_clear_errors_and_the_connection_stays(runtime: RespRuntime) -> None:
    raw = await runtime.raw()
    await raw.command("AUTH", WRITE)
    cases = [
        (("GET",), ["wrong number of arguments for 'get'", "accepted: GET key"]),
        (("GET", "a", "b"), ["wrong number of arguments for 'get'", "2 given"]),
        (("FLUSHALL",), ["unknown command 'FLUSHALL'", "accepted:", "GET", "SET"]),
        (("SET", "k", "v", "EX", "soon"), ["SET EX: 'soon' is not accepted", "an integer from 1 to 604800"]),
        (("SET", "k", "v", "EX", "0"), ["SET EX: '0'", "from 1 to"]),
        (("SET", "k", "v", "PX", "-5"), ["SET PX: '-5'", "milliseconds"]),
        (
            ("SET", "k", "v", "NX"),
            ["SET option 'NX' is not supported", "accepted: EX seconds | PX milliseconds"],
        ),
        (("SET", "k", "v", "EX", "10", "XX"), ["SET option 'XX' is not supported"]),
        (("SET", "k", "v", "WHEN", "1"), ["SET options: 'WHEN' '1' are not accepted"]),
        (("GET", "x" * 1025), ["GET key:", "1 to 1024 characters"]),
        (("GET", b"\xff\xfe"), ["GET key:", "UTF-8"]),
        (("CLIENT", "KILL", "x"), ["CLIENT subcommand", "accepted: CLIENT SETINFO"]),
        (("MGET", *(["k"] * 1001)), ["wrong number of arguments for 'mget'", "1 to 1000 keys"]),
    ]
    for args, fragments in cases:
        answer = await raw.command(*args)
        assert isinstance(answer, Error), (args, answer)
        for fragment in fragments:
            assert fragment in answer.text, (args, answer.text)
    assert await raw.command("GET", "k") is None  # nothing was stored, the connection still serves
    await raw.close()


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"*1\r\n:5\r\n", "expected '$'"),
        (b"*abc\r\n", "invalid multibulk length 'abc'"),
        (
            b"*2\r\n$3\r\nGET\r\n$" + str(MAX_BODY + 1).encode() + b"\r\n",
            f"invalid bulk length {MAX_BODY + 1}",
        ),
        (b"*2\r\n$3\r\nGET\r\n$1\r\nkXY", "not followed by CRLF"),
        (b"*99999999\r\n", "invalid multibulk length 99999999"),
        (b'GET "quoted"\r\n', "quoted inline arguments"),
    ],
)
async def test_malformed_protocol_is_answered_then_closed(
    runtime: RespRuntime, payload: bytes, fragment: str
) -> None:
    raw = await runtime.raw()
    await raw.send(encode("AUTH", WRITE))
    assert await raw.reply() == "OK"
    await raw.send(payload)
    answer = await raw.reply()
    assert (
        isinstance(answer, Error) and answer.text.startswith("ERR Protocol error") and fragment in answer.text
    )
    assert await raw.closed()


async def test_oversized_command_is_refused_before_it_is_buffered(runtime: RespRuntime) -> None:
    raw = await runtime.raw()
    await raw.command("AUTH", WRITE)
    # Three arguments each within the bulk bound, together above the command bound.
    half = MAX_BODY // 2 + 10
    await raw.send(b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%b\r\n$%d\r\n" % (half, b"x" * half, half))
    answer = await raw.reply()
    assert isinstance(answer, Error) and f"at most {MAX_BODY} bytes" in answer.text
    assert await raw.closed()
    # A value up to the limit is stored.
    client = runtime.client()
    assert await client.set("big", b"y" * (MAX_BODY - 100)) is True
    assert await client.get("big") == b"y" * (MAX_BODY - 100)
    await client.aclose()


async def test_inline_commands_work(runtime: RespRuntime) -> None:
    raw = await runtime.raw()
    await raw.send(b"AUTH " + READ.encode() + b"\r\nPING\r\n\r\nECHO hi\r\n")
    assert [await raw.reply() for _ in range(3)] == ["OK", "PONG", b"hi"]
    await raw.close()


# ---- connections and metrics --------------------------------------------------------------------------


async def test_connection_limit(tmp_path: Path, redis_url: str) -> None:
    async with start(tmp_path, redis_url, resp_max_connections=2) as runtime:
        first, second = await runtime.raw(), await runtime.raw()
        assert await first.command("AUTH", READ) == "OK"
        assert await second.command("AUTH", READ) == "OK"
        third = await runtime.raw()
        refused = await third.reply()
        assert isinstance(refused, Error) and "max number of clients reached (2)" in refused.text
        assert await third.closed()
        await first.close()

        async def accepted() -> bool:
            fourth = await runtime.raw()
            try:
                return await fourth.command("AUTH", READ) == "OK"
            except ConnectionError:
                return False
            finally:
                await fourth.close()

        await eventually(accepted)
        metrics = (await runtime.http.get("/metrics")).text
        assert "cachewarden_runtime_resp_connections_rejected_total 1.0" in metrics
        await second.close()


async def test_metrics_count_commands_and_errors(runtime: RespRuntime) -> None:
    raw = await runtime.raw()
    await raw.command("GET", "k")  # NOAUTH
    await raw.command("AUTH", READ)
    await raw.command("GET", "k")
    await raw.command("BOGUS")
    await raw.close()
    writer = await runtime.raw()
    await writer.command("AUTH", WRITE)
    await writer.command("SET", "k", "v")
    for _ in range(3):  # L1 hits: the fast path, then the kept reply, count the same
        assert await writer.command("GET", "k") == b"v"
    await writer.close()
    metrics = (await runtime.http.get("/metrics")).text
    assert 'cachewarden_runtime_resp_commands_total{command="GET",outcome="ok"} 4.0' in metrics
    assert 'cachewarden_runtime_resp_commands_total{command="SET",outcome="ok"} 1.0' in metrics
    assert 'cachewarden_runtime_resp_commands_total{command="GET",outcome="error"} 1.0' in metrics
    assert 'cachewarden_runtime_resp_errors_total{kind="noauth"} 1.0' in metrics
    assert 'cachewarden_runtime_resp_errors_total{kind="unknown_command"} 1.0' in metrics


async def test_off_by_default(tmp_path: Path, redis_url: str) -> None:
    settings, _ = make_settings(tmp_path, {"preset": "ai-production", "redis_url": redis_url})
    assert settings.resp_port is None
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert app.state.runtime.resp_server is None


def test_real_runtime_process_serves_resp_on_its_event_loop(tmp_path: Path, redis_url: str) -> None:
    """`cachewarden runtime` (uvicorn's loop, uvloop when installed) with CACHEWARDEN_RESP_PORT set."""
    http_port, resp_port = free_port(), free_port()
    _, config_path = make_settings(tmp_path, {"preset": "ai-production", "redis_url": redis_url})
    process, log_path = start_runtime_process(
        tmp_path,
        CACHEWARDEN_CONFIG_PATH=str(config_path),
        CACHEWARDEN_ADMIN_TOKEN_FILE=str(tmp_path / "admin"),
        CACHEWARDEN_WRITE_TOKEN_FILE=str(tmp_path / "write"),
        CACHEWARDEN_PORT=str(http_port),
        CACHEWARDEN_RESP_PORT=str(resp_port),
    )
    try:
        _wait_http(f"http://127.0.0.1:{http_port}/readyz", process)
        client = redis.Redis(host="127.0.0.1", port=resp_port, password=WRITE, protocol=2)
        assert client.set("over-resp", b"v", ex=60) is True
        assert client.get("over-resp") == b"v"
        assert client.pipeline(transaction=False).get("over-resp").delete("over-resp").execute() == [b"v", 1]
        client.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        _stop(process)
    assert "Traceback" not in log_path.read_text()


async def test_a_kept_reply_follows_every_change_of_its_key(runtime: RespRuntime) -> None:
    """A GET answered from L1 keeps its encoded reply for the exact request; every change of the key
    (a write here or over HTTP, another pod's write, DEL, expiry) is answered with the new state."""
    replies = runtime.app.state.runtime.resp_server._replies
    request = encode("GET", "kept")
    client = runtime.client()
    assert await client.set("kept", b"v1") is True
    assert await client.get("kept") == b"v1"
    assert await client.get("kept") == b"v1"
    assert replies[request][2] == b"$2\r\nv1\r\n"  # the second GET was answered from it
    assert await client.set("kept", b"v2") is True
    assert [await client.get("kept") for _ in range(3)] == [b"v2"] * 3
    assert replies[request][2] == b"$2\r\nv2\r\n"
    # A JSON value (written over HTTP) is encoded on every read; the bytes value's reply is dropped.
    await runtime.http.put("/data/v1/keys/kept", json={"value": {"a": 1}}, headers=bearer(WRITE))
    assert [await client.get("kept") for _ in range(2)] == [b'{"a":1}'] * 2
    assert request not in replies
    # Another pod's write: coherence drops this pod's L1 copy, and the next GET reads the new value.
    await client.set("kept", b"v3")
    assert [await client.get("kept") for _ in range(2)] == [b"v3"] * 2
    other = TieredCache(resolve_config(**runtime.config))
    await other.start()
    try:
        await other.set(other.data_key("kept"), b"from another pod")

        async def sees_the_other_write() -> bool:
            return await client.get("kept") == b"from another pod"

        await eventually(sees_the_other_write)
    finally:
        await other.close()
    assert await client.delete("kept") == 1
    assert await client.get("kept") is None
    # Expiry: a kept reply is not answered past its entry's deadline.
    assert await client.set("kept", b"short", px=400) is True
    assert [await client.get("kept") for _ in range(2)] == [b"short"] * 2

    async def expired() -> bool:
        return await client.get("kept") is None

    await eventually(expired)
    # Values past the kept size are answered, and not kept.
    big = bytes(range(256)) * 80  # 20 KiB
    assert await client.set("big", big) is True
    assert [await client.get("big") for _ in range(2)] == [big] * 2
    assert encode("GET", "big") not in replies
    await client.aclose()


async def test_reads_follow_an_in_process_engine_restart(runtime: RespRuntime) -> None:
    client = runtime.client()
    await client.set("survives", "v1")
    assert await client.get("survives") == b"v1"  # an L1 hit of the first engine
    assert await client.get("survives") == b"v1"  # answered from the reply kept for it
    old = runtime.engine
    await runtime.app.state.runtime.restart_engine()
    assert runtime.engine is not old
    # The new engine starts with an empty L1: the value comes from Redis, then from the new L1.
    assert await client.get("survives") == b"v1"
    assert runtime.engine.get_local(runtime.engine.data_key("survives"), None) == b"v1"
    await client.set("survives", "v2")
    assert await client.get("survives") == b"v2"
    await client.aclose()


async def test_a_client_that_reads_late_gets_every_answer_in_order(runtime: RespRuntime) -> None:
    """Answers larger than the socket buffers: the server pauses (pause_writing) and resumes."""
    client = runtime.client()
    values = {f"big{index}": bytes([index]) * 60_000 for index in range(4)}
    for key, value in values.items():
        await client.set(key, value)
    await client.aclose()
    raw = await runtime.raw()
    keys = [f"big{index % 4}" for index in range(400)]  # 24 MB of answers to 15 kB of requests
    await raw.send(encode("AUTH", READ) + b"".join(encode("GET", key) for key in keys) + encode("PING"))
    await asyncio.sleep(0.2)  # let the server run into the full socket before anything is read
    assert await raw.reply() == "OK"
    for key in keys:
        assert await raw.reply() == values[key]
    assert await raw.reply() == "PONG"
    await raw.close()


async def test_a_long_pipeline_behind_a_redis_read_is_answered_whole(runtime: RespRuntime) -> None:
    """More than the pipeline buffer (body limit + 1 MiB) arrives while a command waits on Redis."""
    other = TieredCache(resolve_config(**runtime.config))
    await other.start()
    await other.set(other.data_key("from-l2"), b"R")  # not in this pod's L1: the first GET awaits Redis
    await other.close()
    raw = await runtime.raw()
    value = b"v" * 1000
    sets = b"".join(encode("SET", f"bulk{index}", value) for index in range(2500))  # ~2.6 MB
    await raw.send(encode("AUTH", WRITE) + encode("GET", "from-l2") + sets + encode("GET", "bulk2499"))
    assert await raw.reply() == "OK"
    assert await raw.reply() == b"R"
    for _ in range(2500):
        assert await raw.reply() == "OK"
    assert await raw.reply() == value
    assert await runtime.engine.get(runtime.engine.data_key("bulk0")) == value
    await raw.close()
