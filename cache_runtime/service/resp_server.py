"""The data API over the Redis protocol: any Redis client in any language gets the pod's L1 in front.

Off by default; ``CACHEWARDEN_RESP_PORT`` turns it on (see ``ServiceSettings``). It runs on the same
event loop as the HTTP app and calls the same engine methods as the HTTP data API
(``engine.data_key``, ``get``/``get_local``, ``get_many``, ``set_detailed``, ``delete_detailed``),
so keys, the policy's TTLs, L1, Redis and coherence are the same whichever front end a client uses.
Commands, auth, errors and the value mapping: docs/runtime-api.md, "Redis protocol".

One :class:`RespConnection` (an ``asyncio.Protocol``) per client. Commands run in the order they
arrive: an L1 hit is answered synchronously inside ``data_received`` (no task, no await), and the
first command that needs Redis moves the rest of the pipeline into one task that answers in order.
While a task runs, received bytes wait in the parser; past the buffer bound the socket stops being
read until the backlog is answered (backpressure, nothing dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cache_runtime.l1 import L1Entry, is_packed
from cache_runtime.service.auth import Authenticator, Role
from cache_runtime.service.engine_ops import EngineUnavailable
from cache_runtime.service.resp_commands import (
    COMMANDS,
    CommandError,
    CommandSpec,
    check_arity,
    parse_set_ttl,
    parse_user_key,
    unknown_command,
)
from cache_runtime.service.resp_protocol import (
    CRLF,
    NULL_RESP2,
    NULL_RESP3,
    OK,
    PONG,
    ProtocolError,
    RequestParser,
    encode_array,
    encode_bulk,
    encode_error,
    encode_integer,
    encode_map,
    show,
)
from cache_runtime.service.value_mapping import as_resp_bytes

log = logging.getLogger("cachewarden.runtime.resp")

__all__ = ["RespCollector", "RespConnection", "RespServer", "RespStats"]

_MISS = object()
# Key arguments whose data key (an escaping pass) is remembered; cleared whole when full.
_KEY_CACHE_ENTRIES = 4096
_KEY_CACHE_MAX_KEY_BYTES = 256  # longer keys are escaped each time: the cache stays a few MiB at most
# Answers of one batch are written at least this often, so a client that stops reading pauses us soon.
_FLUSH_BYTES = 256 * 1024
_GET_HEAD = b"*2\r\n$3\r\nGET\r\n"
# Encoded GET replies kept per exact request (RespServer.remember_reply): small values, a few MiB at most.
_REPLY_MAX_BYTES = 16 * 1024
_REPLY_CACHE_BYTES = 2 * 1024 * 1024
_REPLY_CACHE_ENTRIES = 4096
# Bytes a busy connection may hold unparsed beyond one maximal command before reading pauses.
_PIPELINE_SLACK = 1024 * 1024
# An authenticated connection checks its token again at most this often (the token files' own recheck
# interval): a rotated token stops working on open connections too, within about a second.
TOKEN_RECHECK_S = 1.0
_SERVER_VERSION = b"7.2.0"  # what HELLO reports: clients gate features on it; we speak RESP2/3 like 7.x


class RespStats:
    """Counters of the Redis-protocol front end (rendered by :class:`RespCollector` at scrape time)."""

    def __init__(self) -> None:
        self.ok: Counter[str] = Counter()  # answered commands by name (but the fast GETs below)
        self.fast_gets = 0  # GETs answered by the fast path: a plain int there, added to ok["GET"] when read
        self.failed: Counter[str] = Counter()  # refused commands by name ("unknown" for unknown ones)
        self.errors: Counter[str] = Counter()  # error kind
        self.connections_open = 0
        self.connections_total = 0
        self.connections_rejected = 0

    def answered(self) -> Counter[str]:
        """Answered commands by name, the fast path's GETs included."""
        answered = Counter(self.ok)
        if self.fast_gets:
            answered["GET"] += self.fast_gets
        return answered

    def error(self, command: str, kind: str) -> None:
        """Count one refused command."""
        self.failed[command] += 1
        self.errors[kind] += 1


class RespCollector(Collector):
    """Renders :class:`RespStats` as ``cachewarden_runtime_resp_*`` metric families."""

    def __init__(self, stats: RespStats, prefix: str = "cachewarden_runtime") -> None:
        self._stats = stats
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        """Commands by name and outcome, errors by kind, connections."""
        p, stats = self._prefix, self._stats
        commands = CounterMetricFamily(
            f"{p}_resp_commands",
            "Redis-protocol commands by command and outcome (ok, error).",
            labels=["command", "outcome"],
        )
        for outcome, counts in (("ok", stats.answered()), ("error", stats.failed)):
            for command, count in sorted(counts.items()):
                commands.add_metric([command, outcome], count)
        yield commands
        errors = CounterMetricFamily(
            f"{p}_resp_errors",
            "Redis-protocol error replies by kind (noauth, wrongpass, noperm, arity, syntax, "
            "unknown_command, protocol, unavailable, isolated, internal).",
            labels=["kind"],
        )
        for kind, count in sorted(stats.errors.items()):
            errors.add_metric([kind], count)
        yield errors
        open_now = GaugeMetricFamily(f"{p}_resp_connections", "Open Redis-protocol connections.")
        open_now.add_metric([], stats.connections_open)
        yield open_now
        total = CounterMetricFamily(f"{p}_resp_connections_accepted", "Redis-protocol connections accepted.")
        total.add_metric([], stats.connections_total)
        yield total
        rejected = CounterMetricFamily(
            f"{p}_resp_connections_rejected", "Redis-protocol connections refused at the connection limit."
        )
        rejected.add_metric([], stats.connections_rejected)
        yield rejected


class RespServer:
    """The listening socket and its connections; ``start``, ``port``, ``close``."""

    def __init__(
        self,
        get_cache: Callable[[], Any],
        auth: Authenticator,
        *,
        max_bytes: int,
        max_connections: int,
        stats: RespStats | None = None,
    ) -> None:
        self.get_cache = get_cache
        self.auth = auth
        self.max_bytes = max_bytes
        self.max_connections = max_connections
        self.stats = stats or RespStats()
        self.connections: set[RespConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._key_cache: dict[bytes, str] = {}
        self._key_engine: Any = None
        # Exact GET request -> (its key's L1 entry, data key, encoded reply): see remember_reply.
        self._replies: dict[bytes, tuple[L1Entry, str, bytes]] = {}
        self._reply_bytes = 0

    def data_key(self, engine: Any, command: str, raw: bytes) -> str:
        """``engine.data_key`` of a key argument, remembered (bounded) for the keys clients repeat."""
        cache = self._key_cache
        if engine is not self._key_engine:
            cache.clear()
            self._forget_replies()
            self._key_engine = engine
        full = cache.get(raw)
        if full is None:
            full = engine.data_key(parse_user_key(command, raw))
            if len(raw) <= _KEY_CACHE_MAX_KEY_BYTES:
                if len(cache) >= _KEY_CACHE_ENTRIES:
                    cache.clear()
                cache[raw] = full
        return full

    def remember_reply(self, request: bytes, entry: L1Entry, full: str, reply: bytes) -> None:
        """Keep ``reply`` for the exact ``request`` bytes while the key's L1 entry is ``entry``.

        Bounded: at most ``_REPLY_CACHE_ENTRIES`` replies of ``_REPLY_MAX_BYTES`` each and
        ``_REPLY_CACHE_BYTES`` in all (cleared whole when full); only bytes values, which the entry
        holds as they are, so an entry kept alive here after L1 dropped it costs no more than its reply.
        """
        replies = self._replies
        self.forget_reply(request)
        if len(replies) >= _REPLY_CACHE_ENTRIES or self._reply_bytes + len(reply) > _REPLY_CACHE_BYTES:
            self._forget_replies()
        replies[request] = (entry, full, reply)
        self._reply_bytes += len(reply)

    def forget_reply(self, request: bytes) -> None:
        """Drop the reply kept for ``request``, if any."""
        old = self._replies.pop(request, None)
        if old is not None:
            self._reply_bytes -= len(old[2])

    def _forget_replies(self) -> None:
        self._replies.clear()
        self._reply_bytes = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (port 0: a free one; read :attr:`port`)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: RespConnection(self), host, port)
        log.info("redis protocol listening", extra={"fields": {"host": host, "port": self.port}})

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    def next_id(self) -> int:
        """A connection id (CLIENT ID, HELLO)."""
        return next(self._ids)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop listening, let commands in flight finish (bounded), then close every connection."""
        if self._server is not None:
            self._server.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout_s)
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=timeout_s)
            self._server = None


class RespConnection(asyncio.Protocol):
    """One client connection: parse, authorize, run in order, answer."""

    def __init__(self, server: RespServer) -> None:
        self.server = server
        self.stats = server.stats
        self.parser = RequestParser(max_bulk_bytes=server.max_bytes, max_command_bytes=server.max_bytes)
        self.max_buffer = server.max_bytes + _PIPELINE_SLACK
        self.role: Role | None = Role.ADMIN if server.auth.disabled else None
        self.token: bytes | None = None  # what AUTH presented; checked again every TOKEN_RECHECK_S
        self.role_checked_at = 0.0
        self.token_revoked = False
        self.resp3 = False
        self.null = NULL_RESP2
        self.name: bytes | None = None
        self.id = 0
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closed = False
        self.reading_paused = False  # paused because the pipeline buffer is full (a task answers)
        self.writing_paused = False  # paused because the client does not read its answers
        self.counted = False
        self.quitting = False

    # ---- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Accept, or refuse past the connection limit (``-ERR max number of clients reached``)."""
        # uvloop's transports are not asyncio.Transport subclasses; both have the methods used here.
        self.transport = transport = cast(asyncio.Transport, transport)
        server = self.server
        if len(server.connections) >= server.max_connections:
            self.stats.connections_rejected += 1
            transport.write(
                encode_error(
                    f"ERR max number of clients reached ({server.max_connections}); accepted: at most "
                    f"{server.max_connections} connections per pod (CACHEWARDEN_RESP_MAX_CONNECTIONS)"
                )
            )
            self.closed = True
            transport.close()
            return
        server.connections.add(self)
        self.counted = True
        self.id = server.next_id()
        self.stats.connections_total += 1
        self.stats.connections_open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; a command in flight finishes, its answer is dropped."""
        self.closed = True
        if self.counted:
            self.counted = False
            self.server.connections.discard(self)
            self.stats.connections_open -= 1

    def data_received(self, data: bytes) -> None:
        """Buffer, then answer every complete command (unless a task is already answering)."""
        if self.closed:
            return
        # The most common request, one GET alone in one read with nothing pending, is answered here
        # when it is an L1 hit of a key seen before; anything else takes the general path below.
        if (
            data[:13] == _GET_HEAD
            and self.role is not None
            and not self.busy
            and self.parser.empty
            and (self.token is None or time.monotonic() - self.role_checked_at < TOKEN_RECHECK_S)
        ):
            reply = self._fast_get(data)
            if reply is not None:
                self.transport.write(reply)  # type: ignore[union-attr]
                return
        self.parser.feed(data)
        if self.busy:
            if self.parser.buffered > self.max_buffer and not self.reading_paused:
                self.reading_paused = True
                assert self.transport is not None
                self.transport.pause_reading()
            return
        self._run_ready()

    def pause_writing(self) -> None:
        """The client reads answers slower than they come: stop reading and answering until it catches up."""
        self.writing_paused = True
        if self.transport is not None and not self.reading_paused:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """The answers drained below the low-water mark: read again and answer what is buffered."""
        self.writing_paused = False
        if self.transport is None or self.closed:
            return
        if not self.reading_paused:
            self.transport.resume_reading()
        if not self.busy:
            self._run_ready()

    def close(self) -> None:
        """Close the socket (buffered answers are still sent)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # ---- running commands ----------------------------------------------------------------------

    def _run_ready(self) -> None:
        """Answer complete commands in order; hand over to a task at the first one that must wait."""
        transport = self.transport
        assert transport is not None
        if self.writing_paused or self.closed:
            return
        out: list[bytes] = []
        out_bytes = 0
        parser = self.parser
        while True:
            try:
                args = parser.next_command()
            except ProtocolError as exc:
                self.stats.error("protocol", "protocol")
                out.append(encode_error(f"ERR Protocol error: {exc}"))
                transport.write(b"".join(out))
                self.close()
                return
            if args is None:
                break
            result = self._execute(args)
            if type(result) is bytes:
                out.append(result)
                if self.quitting:  # QUIT: answered, then closed
                    transport.write(b"".join(out))
                    self.close()
                    return
                out_bytes += len(result)
                if out_bytes >= _FLUSH_BYTES:
                    transport.write(b"".join(out))
                    out, out_bytes = [], 0
                    if self.writing_paused:  # the client is not reading: the rest waits in the parser
                        return
                continue
            if out:
                transport.write(b"".join(out))
                out = []
            self.busy = True
            task = asyncio.get_running_loop().create_task(self._finish(*result))  # type: ignore[misc]
            self.server.tasks.add(task)
            task.add_done_callback(self.server.tasks.discard)
            return
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def _finish(self, command: str, pending: Awaitable[bytes]) -> None:
        """Await one command's answer, send it, then go on with the rest of the pipeline."""
        try:
            reply = await pending
            self.stats.ok[command] += 1
        except CommandError as exc:
            self.stats.error(command, exc.kind)
            reply = encode_error(exc.reply)
        except Exception:
            log.exception("redis protocol command failed", extra={"fields": {"command": command}})
            self.stats.error(command, "internal")
            reply = encode_error("ERR internal error; see the pod's log")
        self.busy = False
        if self.closed or self.transport is None:
            return
        self.transport.write(reply)
        if self.reading_paused:
            self.reading_paused = False
            if not self.writing_paused:
                self.transport.resume_reading()
        self._run_ready()

    def _execute(self, args: list[bytes]) -> bytes | tuple[str, Awaitable[bytes]]:
        """The answer (bytes), or (command name, awaitable answer) when the engine must be awaited."""
        entry = _HANDLERS.get(args[0]) or _HANDLERS.get(args[0].upper())
        if entry is None:
            error = unknown_command(args)
            self.stats.error("unknown", error.kind)
            return encode_error(error.reply)
        spec, handler = entry
        name = spec.name
        try:
            required = spec.role
            if required is not None:
                role = self.current_role()
                if role is None:
                    if self.token_revoked:
                        raise CommandError(
                            "NOAUTH the token this connection authenticated with is no longer one of the "
                            "data API's tokens (rotated or removed): send AUTH <token> with a current one",
                            "noauth",
                        )
                    raise CommandError("NOAUTH Authentication required: send AUTH <token> first", "noauth")
                if role < required:
                    raise CommandError(
                        f"NOPERM this token may not run '{name.lower()}': it needs the "
                        f"{required.name.lower()} role (the data API's {required.name.lower()} token)",
                        "noperm",
                    )
            argc = len(args)
            if argc < spec.min_args or (spec.max_args is not None and argc > spec.max_args):
                check_arity(spec, argc)
            result = handler(self, args)
        except CommandError as exc:
            self.stats.error(name, exc.kind)
            return encode_error(exc.reply)
        except Exception:
            log.exception("redis protocol command failed", extra={"fields": {"command": name}})
            self.stats.error(name, "internal")
            return encode_error("ERR internal error; see the pod's log")
        if type(result) is bytes:
            self.stats.ok[name] += 1
            return result
        return name, result

    def _engine(self) -> Any:
        try:
            engine = self.server.get_cache()
        except EngineUnavailable:
            engine = None
        if engine is None:
            raise CommandError("LOADING the cache engine is not started yet; retry shortly", "unavailable")
        return engine

    # ---- data commands -------------------------------------------------------------------------

    def _fast_get(self, data: bytes) -> bytes | None:
        """The answer to ``data`` = exactly one ``GET key`` when it is an L1 hit of a remembered key.

        A request seen before whose L1 entry is still the same object is answered with the reply
        kept for it (:meth:`RespServer.remember_reply`): no parsing, no encoding.
        """
        server = self.server
        try:
            engine = server.get_cache()
        except EngineUnavailable:
            return None
        if engine is None or engine is not server._key_engine:
            return None
        kept = server._replies.get(data)
        if kept is not None:
            full = kept[1]
        else:
            newline = data.find(CRLF, 14, 40)  # _GET_HEAD is 13 bytes; then "$<length>\r\n"
            if newline < 0 or data[13] != 0x24:  # b"$"
                return None
            length = data[14:newline]
            if not length.isdigit():
                return None
            start = newline + 2
            end = start + int(length)
            if end + 2 != len(data) or data[end:] != CRLF:
                return None
            remembered = server._key_cache.get(data[start:end])
            if remembered is None:
                return None
            full = remembered
        entry = engine.local_entry(full)  # counts the hit; a miss is not counted here
        if entry is None:
            return None
        self.stats.fast_gets += 1
        if kept is not None and kept[0] is entry:
            return kept[2]
        value = entry.value
        reply = encode_bulk(as_resp_bytes(value))
        if type(value) is bytes and len(reply) <= _REPLY_MAX_BYTES and not is_packed(entry):
            server.remember_reply(data, entry, full, reply)
        elif kept is not None:
            server.forget_reply(data)  # the key now holds what is not kept: do not hold the old entry
        return reply

    def _cmd_get(self, args: list[bytes]) -> bytes | Awaitable[bytes]:
        engine = self._engine()
        full = self.server.data_key(engine, "GET", args[1])
        value = engine.get_local(full, _MISS)
        if value is not _MISS:
            return encode_bulk(as_resp_bytes(value))
        return self._get_slow(engine, full)

    async def _get_slow(self, engine: Any, full: str) -> bytes:
        value = await engine.get(full, _MISS)
        return self.null if value is _MISS else encode_bulk(as_resp_bytes(value))

    def _lookup_many(self, command: str, args: list[bytes]) -> tuple[Any, list[str], dict[str, Any]]:
        """(engine, full keys in order, the L1 hits); the misses are left for one get_many."""
        engine = self._engine()
        data_key = self.server.data_key
        keys = [data_key(engine, command, raw) for raw in args[1:]]
        found: dict[str, Any] = {}
        get_local = engine.get_local
        for key in keys:
            if key not in found:
                value = get_local(key, _MISS)
                if value is not _MISS:
                    found[key] = value
        return engine, keys, found

    def _cmd_mget(self, args: list[bytes]) -> bytes | Awaitable[bytes]:
        engine, keys, found = self._lookup_many("MGET", args)
        if len(found) == len(set(keys)):
            return encode_array([as_resp_bytes(found[key]) for key in keys], self.null)
        return self._many_slow(engine, keys, found, count=False)

    def _cmd_exists(self, args: list[bytes]) -> bytes | Awaitable[bytes]:
        engine, keys, found = self._lookup_many("EXISTS", args)
        if len(found) == len(set(keys)):
            return encode_integer(len(keys))
        return self._many_slow(engine, keys, found, count=True)

    async def _many_slow(self, engine: Any, keys: list[str], found: dict[str, Any], *, count: bool) -> bytes:
        missing = list(dict.fromkeys(key for key in keys if key not in found))
        found.update(await engine.get_many(missing))
        if count:
            return encode_integer(sum(1 for key in keys if key in found))
        return encode_array([as_resp_bytes(found[key]) if key in found else None for key in keys], self.null)

    def _cmd_set(self, args: list[bytes]) -> Awaitable[bytes]:
        engine = self._engine()
        full = self.server.data_key(engine, "SET", args[1])
        ttl = parse_set_ttl(args[3:])
        if engine.isolated:
            raise CommandError(
                "ERR the cache is isolated (maintenance mode): writes are refused until restore", "isolated"
            )
        return self._set(engine, full, args[2], ttl)

    async def _set(self, engine: Any, full: str, value: bytes, ttl: float | None) -> bytes:
        outcome = await engine.set_detailed(full, value, ttl=ttl)
        if not outcome["stored"]:
            raise CommandError(
                "ERR not stored: the engine refused the write (cache disabled by its config, or isolated)",
                "isolated",
            )
        return OK

    def _cmd_del(self, args: list[bytes]) -> Awaitable[bytes]:
        engine = self._engine()
        keys = [self.server.data_key(engine, "DEL", raw) for raw in args[1:]]
        return self._delete(engine, keys)

    _cmd_unlink = _cmd_del

    async def _delete(self, engine: Any, keys: list[str]) -> bytes:
        removed = 0
        for key in keys:
            outcome = await engine.delete_detailed(key)
            removed += bool(outcome["deleted"])
        return encode_integer(removed)

    # ---- connection commands -------------------------------------------------------------------

    def _cmd_ping(self, args: list[bytes]) -> bytes:
        return PONG if len(args) == 1 else encode_bulk(args[1])

    def _cmd_echo(self, args: list[bytes]) -> bytes:
        return encode_bulk(args[1])

    def _cmd_quit(self, args: list[bytes]) -> bytes:
        self.quitting = True
        return OK

    def _role_for(self, token: bytes) -> Role | None:
        auth = self.server.auth
        if auth.disabled:
            return Role.ADMIN
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            return None
        if not text or any(char.isspace() for char in text):
            return None
        return auth.role_for("Bearer " + text)

    def current_role(self) -> Role | None:
        """The connection's role now: the token it authenticated with is checked against the token
        files again once TOKEN_RECHECK_S has passed, so a rotated or removed token loses its role (and
        a changed file can lower it) on connections that are already open, as on the HTTP API."""
        token = self.token
        if token is None or self.role is None:
            return self.role
        now = time.monotonic()
        if now - self.role_checked_at >= TOKEN_RECHECK_S:
            self.role_checked_at = now
            self.role = self._role_for(token)
            if self.role is None:
                self.token = None
                self.token_revoked = True
        return self.role

    def _authenticate(self, token: bytes) -> None:
        role = self._role_for(token)
        if role is None:
            raise CommandError(
                "WRONGPASS invalid username-password pair or user is disabled (send one of the data API's "
                "tokens: AUTH <token> or AUTH <any username> <token>)",
                "wrongpass",
            )
        self.role = role
        if not self.server.auth.disabled:
            self.token = bytes(token)
            self.role_checked_at = time.monotonic()
            self.token_revoked = False

    def _cmd_auth(self, args: list[bytes]) -> bytes:
        # The username is not checked: the token alone decides the role (read, write or admin).
        self._authenticate(args[-1])
        return OK

    def _cmd_hello(self, args: list[bytes]) -> bytes:
        resp3 = self.resp3
        if len(args) > 1:
            version = args[1]
            if version not in (b"2", b"3"):
                raise CommandError(
                    f"NOPROTO HELLO protover: {show(version)} is not supported; accepted: 2 or 3", "syntax"
                )
            resp3 = version == b"3"
            options = args[2:]
            index = 0
            while index < len(options):
                option = options[index].upper()
                if option == b"AUTH" and index + 2 < len(options):
                    self._authenticate(options[index + 2])
                    index += 3
                elif option == b"SETNAME" and index + 1 < len(options):
                    self.name = options[index + 1]
                    index += 2
                else:
                    raise CommandError(
                        f"ERR HELLO option {show(options[index])} is not accepted; accepted: "
                        "HELLO [2|3 [AUTH username token] [SETNAME name]]"
                    )
        if self.current_role() is None:
            raise CommandError(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                "HELLO <proto> AUTH <user> <token> option can be used to authenticate the client",
                "noauth",
            )
        self.resp3 = resp3
        self.null = NULL_RESP3 if resp3 else NULL_RESP2
        return encode_map(
            [
                ("server", encode_bulk(b"cachewarden")),
                ("version", encode_bulk(_SERVER_VERSION)),
                ("proto", encode_integer(3 if resp3 else 2)),
                ("id", encode_integer(self.id)),
                ("mode", encode_bulk(b"standalone")),
                ("role", encode_bulk(b"master")),
                ("modules", b"*0\r\n"),
            ],
            resp3,
        )

    def _cmd_select(self, args: list[bytes]) -> bytes:
        if args[1] != b"0":
            raise CommandError(
                f"ERR SELECT index: {show(args[1])} is not accepted; accepted: 0 (the front end serves "
                "the data API's one keyspace)"
            )
        return OK

    def _cmd_client(self, args: list[bytes]) -> bytes:
        sub = args[1].upper()
        if sub == b"SETINFO" and len(args) == 4:
            return OK
        if sub == b"SETNAME" and len(args) == 3:
            self.name = args[2] or None
            return OK
        if sub == b"GETNAME" and len(args) == 2:
            return self.null if self.name is None else encode_bulk(self.name)
        if sub == b"ID" and len(args) == 2:
            return encode_integer(self.id)
        raise CommandError(
            f"ERR CLIENT subcommand: {' '.join(show(arg, 20) for arg in args[1:4])} is not accepted; "
            "accepted: CLIENT SETINFO attr value | SETNAME name | GETNAME | ID"
        )

    def _cmd_command(self, args: list[bytes]) -> bytes:
        sub = args[1].upper() if len(args) > 1 else b""
        if sub == b"COUNT" and len(args) == 2:
            return encode_integer(len(COMMANDS))
        if sub == b"DOCS":
            return b"%0\r\n" if self.resp3 else b"*0\r\n"
        if sub == b"" or sub == b"INFO":
            wanted = [arg.upper() for arg in args[2:]] if sub == b"INFO" and len(args) > 2 else list(COMMANDS)
            parts = [b"*%d\r\n" % len(wanted)]
            for raw in wanted:
                spec = COMMANDS.get(raw)
                if spec is None:
                    parts.append(self.null)
                    continue
                arity = spec.min_args if spec.max_args == spec.min_args else -spec.min_args
                has_key = spec.role is not None and spec.name in {
                    "GET",
                    "SET",
                    "MGET",
                    "DEL",
                    "UNLINK",
                    "EXISTS",
                }
                last = -1 if spec.max_args is None or spec.max_args > 3 else 1
                parts.append(
                    b"*6\r\n"
                    + encode_bulk(spec.name.lower().encode())
                    + encode_integer(arity)
                    + b"*0\r\n"
                    + encode_integer(1 if has_key else 0)
                    + encode_integer(last if has_key else 0)
                    + encode_integer(1 if has_key else 0)
                )
            return b"".join(parts)
        raise CommandError(
            f"ERR COMMAND subcommand: {show(args[1])} is not accepted; accepted: COMMAND, COMMAND COUNT, "
            "COMMAND DOCS, COMMAND INFO name ..."
        )


_HANDLERS: dict[bytes, tuple[CommandSpec, Callable[[RespConnection, list[bytes]], Any]]] = {
    raw: (spec, getattr(RespConnection, "_cmd_" + spec.name.lower())) for raw, spec in COMMANDS.items()
}
