"""A latency-injecting TCP proxy for fault tests: loopback only, bounded, adjustable while it runs.

It forwards every connection accepted on ``--listen`` to ``--upstream`` and holds each chunk of bytes
for the configured delay before forwarding it, in both directions, so a request/response round trip
(a Redis ``PING``) takes at least ``2 * delay_ms`` longer. Chunks keep their order (a chunk is never
due before the one read before it), and reading goes on while earlier chunks wait, so the delay models
a slow link, not a slow server: throughput is not cut by the delay.

The delay changes at runtime through a small line-based control socket (``--control``)::

    get                              -> {"ok": true, "delay_ms": 0, "jitter_ms": 0, "upstream": ..., ...}
    set delay_ms=250 [jitter_ms=20]  -> {"ok": true, "delay_ms": 250, "jitter_ms": 20, ...}
    set upstream=127.0.0.9:6379      -> new connections go there (open ones keep theirs)

A new delay applies to chunks read from then on (a chunk already waiting keeps its due time). A new
upstream plays a Service's stable address when the pod behind it is replaced (devcluster has no
ClusterIP): clients keep one address while the Redis pod is deleted and recreated elsewhere.
:func:`control` is the client (``python -m devcluster.faultproxy --control ADDR --send 'set delay_ms=0'``).

Bounds: addresses must be loopback (127.0.0.0/8 or ::1), the delay at most 60 s, at most
``--max-connections`` connections at once (more are closed at once) and at most
``QUEUE_CHUNKS`` chunks waiting per direction (the reader then waits: back-pressure, bounded memory).

Pure parts (:class:`DelaySettings`, :class:`DelaySchedule`, :func:`parse_address`,
:func:`parse_command`) are tested directly; :class:`FaultProxy` is the asyncio shell.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import random
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_DELAY_MS = 60_000
MAX_CONNECTIONS_LIMIT = 10_000
CHUNK_BYTES = 64 * 1024
QUEUE_CHUNKS = 256
CONTROL_LINE_BYTES = 1024


class FaultProxyError(ValueError):
    """A setting or address that cannot be used; names the field, the value and what is accepted."""

    def __init__(self, field_name: str, value: Any, accepted: str) -> None:
        super().__init__(f"{field_name}={value!r} is invalid; accepted: {accepted}")
        self.field = field_name
        self.value = value
        self.accepted = accepted


def _int_setting(field_name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise FaultProxyError(field_name, value, f"an integer from {low} to {high}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise FaultProxyError(field_name, value, f"an integer from {low} to {high}") from None
    if not isinstance(value, int) or not low <= value <= high:
        raise FaultProxyError(field_name, value, f"an integer from {low} to {high}")
    return value


@dataclass(frozen=True)
class DelaySettings:
    """Added one-way delay per chunk (ms) and a uniform jitter on top of it (0..jitter_ms)."""

    delay_ms: int = 0
    jitter_ms: int = 0

    def __post_init__(self) -> None:
        _int_setting("delay_ms", self.delay_ms, 0, MAX_DELAY_MS)
        _int_setting("jitter_ms", self.jitter_ms, 0, MAX_DELAY_MS)
        if self.delay_ms + self.jitter_ms > MAX_DELAY_MS:
            raise FaultProxyError(
                "jitter_ms", self.jitter_ms, f"at most {MAX_DELAY_MS - self.delay_ms} (delay + jitter <= 60s)"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], current: DelaySettings | None = None) -> DelaySettings:
        """Settings from ``values`` (missing keys keep ``current``'s); unknown keys are an error."""
        base = current or cls()
        known = ("delay_ms", "jitter_ms")
        for key in values:
            if key not in known:
                raise FaultProxyError(str(key), values[key], "one of " + ", ".join((*known, "upstream")))
        return cls(
            delay_ms=_int_setting("delay_ms", values.get("delay_ms", base.delay_ms), 0, MAX_DELAY_MS),
            jitter_ms=_int_setting("jitter_ms", values.get("jitter_ms", base.jitter_ms), 0, MAX_DELAY_MS),
        )

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return {"delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms}


@dataclass
class DelaySchedule:
    """When each chunk of one direction of one connection may be forwarded.

    ``due(now)`` is ``now + delay (+ jitter)``, but never earlier than the previous chunk's due time,
    so bytes stay in order whatever the jitter or a lowered delay.
    """

    settings: Callable[[], DelaySettings]
    rng: random.Random = field(default_factory=random.Random)
    _last_due: float = float("-inf")

    def due(self, now: float) -> float:
        """The time (same clock as ``now``) at which a chunk read at ``now`` may be written."""
        current = self.settings()
        extra = current.delay_ms + (self.rng.uniform(0, current.jitter_ms) if current.jitter_ms else 0.0)
        self._last_due = max(now + extra / 1000.0, self._last_due)
        return self._last_due


def parse_address(
    text: str, field_name: str, *, loopback_only: bool = True, allow_port_zero: bool = False
) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port). With ``loopback_only`` the host must be
    a loopback IP literal (127.0.0.0/8, ::1) or ``localhost``."""
    accepted = "HOST:PORT with a loopback host (127.0.0.0/8, [::1] or localhost) and a port 1-65535"
    if allow_port_zero:
        accepted = accepted.replace("1-65535", "0-65535 (0 = any free port)")
    if not isinstance(text, str) or ":" not in text:
        raise FaultProxyError(field_name, text, accepted)
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise FaultProxyError(field_name, text, accepted) from None
    if not (0 if allow_port_zero else 1) <= port <= 65535 or not host:
        raise FaultProxyError(field_name, text, accepted)
    if loopback_only and host != "localhost":
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise FaultProxyError(field_name, text, accepted) from None
        if not ip.is_loopback:
            raise FaultProxyError(field_name, text, accepted)
    return host, port


def parse_command(line: str) -> tuple[str, dict[str, str]]:
    """A control line -> (verb, arguments): ``get`` or ``set key=value ...``."""
    words = line.strip().split()
    if not words or words[0] not in ("get", "set"):
        raise FaultProxyError(
            "command", line.strip()[:100], "'get' or 'set delay_ms=N [jitter_ms=M] [upstream=HOST:PORT]'"
        )
    arguments: dict[str, str] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise FaultProxyError("command", word[:100], "key=value pairs after 'set'")
        arguments[key] = value
    if words[0] == "set" and not arguments:
        raise FaultProxyError("command", line.strip()[:100], "'set delay_ms=N [jitter_ms=M]'")
    if words[0] == "get" and arguments:
        raise FaultProxyError("command", line.strip()[:100], "'get' without arguments")
    return words[0], arguments


@dataclass
class ProxyStats:
    """Counters of the proxy (read by ``get``)."""

    connections_total: int = 0
    connections_open: int = 0
    connections_refused: int = 0
    upstream_failures: int = 0
    bytes_to_upstream: int = 0
    bytes_to_client: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return dict(self.__dict__)


class FaultProxy:
    """The asyncio proxy. ``await start()``, then ``listen_address``; ``settings`` may be replaced at
    any time (``set_settings``); ``await close()`` stops listening and drops every connection."""

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        settings: DelaySettings | None = None,
        *,
        control: tuple[str, int] | None = None,
        max_connections: int = 512,
        seed: int | None = None,
    ) -> None:
        self.listen = listen
        self.upstream = upstream
        self.control = control
        self.max_connections = _int_setting("max_connections", max_connections, 1, MAX_CONNECTIONS_LIMIT)
        self.settings = settings or DelaySettings()
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._control_server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def set_settings(self, settings: DelaySettings) -> None:
        """Apply new delay settings to every chunk read from now on."""
        self.settings = settings

    @property
    def listen_address(self) -> tuple[str, int]:
        """(host, port) actually bound (the port is resolved when 0 was asked)."""
        assert self._server is not None, "start() first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def control_address(self) -> tuple[str, int] | None:
        """(host, port) of the control socket, or None without one."""
        if self._control_server is None:
            return None
        host, port = self._control_server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        """Bind the listening socket (and the control socket, if asked)."""
        self._server = await asyncio.start_server(self._accept, *self.listen, limit=CHUNK_BYTES)
        if self.control is not None:
            self._control_server = await asyncio.start_server(self._control, *self.control)

    async def close(self) -> None:
        """Stop accepting, close every connection, wait for the connection tasks."""
        for server in (self._server, self._control_server):
            if server is not None:
                server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in (self._server, self._control_server):
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.wait_closed()

    def describe(self) -> dict[str, Any]:
        """Settings and counters (the ``get`` answer)."""
        upstream = f"{self.upstream[0]}:{self.upstream[1]}"
        return {**self.settings.to_dict(), "upstream": upstream, **self.stats.to_dict()}

    # --- connections ----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.stats.connections_open >= self.max_connections:
                self.stats.connections_refused += 1
                writer.close()
                return
            self.stats.connections_total += 1
            self.stats.connections_open += 1
            try:
                await self._serve(reader, writer)
            finally:
                self.stats.connections_open -= 1
        finally:
            self._tasks.discard(task)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.add(client_w)
        try:
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 10)
            except (OSError, TimeoutError):
                self.stats.upstream_failures += 1
                return
            self._writers.add(up_w)
            try:
                pipes = [
                    asyncio.create_task(self._pipe(client_r, up_w, "bytes_to_upstream")),
                    asyncio.create_task(self._pipe(up_r, client_w, "bytes_to_client")),
                ]
                # Either side closing ends the connection (a half-closed Redis link is useless).
                _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
            finally:
                self._writers.discard(up_w)
                up_w.close()
        finally:
            self._writers.discard(client_w)
            client_w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: str) -> None:
        """Forward reader -> writer, each chunk held until its due time, in order, bounded queue."""
        loop = asyncio.get_running_loop()
        schedule = DelaySchedule(lambda: self.settings, random.Random(self._rng.random()))
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)

        async def read() -> None:
            try:
                while chunk := await reader.read(CHUNK_BYTES):
                    await queue.put((schedule.due(loop.time()), chunk))
            except OSError:
                pass
            await queue.put(None)

        reading = asyncio.create_task(read())
        try:
            while (item := await queue.get()) is not None:
                due, chunk = item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                setattr(self.stats, counter, getattr(self.stats, counter) + len(chunk))
                await writer.drain()
        except OSError:
            pass
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    # --- control --------------------------------------------------------------------------------

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                if len(line) > CONTROL_LINE_BYTES:
                    answer: dict[str, Any] = {"ok": False, "error": f"line longer than {CONTROL_LINE_BYTES}"}
                else:
                    answer = self.handle_command(line.decode("utf-8", "replace"))
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (OSError, ValueError):
            pass
        finally:
            writer.close()

    def handle_command(self, line: str) -> dict[str, Any]:
        """Execute one control line; the JSON-ready answer (``ok`` False with the error otherwise)."""
        try:
            verb, arguments = parse_command(line)
            if verb == "set":
                # Everything is checked before anything changes: a refused line changes nothing.
                upstream_text = arguments.pop("upstream", None)
                upstream = parse_address(upstream_text, "upstream") if upstream_text is not None else None
                settings = DelaySettings.from_mapping(arguments, self.settings)
                if upstream is not None:
                    self.upstream = upstream
                self.set_settings(settings)
            return {"ok": True, **self.describe()}
        except FaultProxyError as exc:
            return {"ok": False, "error": str(exc), "field": exc.field}


def control(address: tuple[str, int], command: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one control line to a running proxy and return its JSON answer (blocking client)."""
    import socket

    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(command.strip().encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


# --- CLI ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m devcluster.faultproxy``."""
    parser = argparse.ArgumentParser(
        prog="python -m devcluster.faultproxy",
        description="Latency-injecting TCP proxy (loopback only). Prints one JSON line when listening.",
    )
    parser.add_argument("--listen", help="HOST:PORT to accept on (loopback; port 0 = any free port)")
    parser.add_argument("--upstream", help="HOST:PORT to forward to (loopback)")
    parser.add_argument("--delay-ms", default="0", help=f"one-way delay per chunk, 0-{MAX_DELAY_MS} ms")
    parser.add_argument("--jitter-ms", default="0", help="uniform extra delay 0..N ms")
    parser.add_argument("--control", help="HOST:PORT of the control socket (loopback); with --send: target")
    parser.add_argument("--max-connections", default="512", help="connections at once (more are closed)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the jitter (reproducible runs)")
    parser.add_argument("--send", help="send this control line to --control, print the answer, exit")
    return parser


async def _serve_forever(proxy: FaultProxy) -> None:
    await proxy.start()
    listen = proxy.listen_address
    ctl = proxy.control_address
    print(
        json.dumps(
            {
                "listening": f"{listen[0]}:{listen[1]}",
                "upstream": f"{proxy.upstream[0]}:{proxy.upstream[1]}",
                "control": f"{ctl[0]}:{ctl[1]}" if ctl else None,
                **proxy.settings.to_dict(),
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the proxy until SIGTERM/SIGINT, or send one control line with ``--send``."""
    args = build_parser().parse_args(argv)
    try:
        if args.send is not None:
            if args.control is None:
                raise FaultProxyError("--control", None, "HOST:PORT of the control socket with --send")
            print(json.dumps(control(parse_address(args.control, "--control"), args.send)))
            return 0
        if args.listen is None or args.upstream is None:
            raise FaultProxyError("--listen/--upstream", None, "both HOST:PORT (loopback)")
        proxy = FaultProxy(
            parse_address(args.listen, "--listen", allow_port_zero=True),
            parse_address(args.upstream, "--upstream"),
            DelaySettings.from_mapping({"delay_ms": args.delay_ms, "jitter_ms": args.jitter_ms}),
            control=parse_address(args.control, "--control", allow_port_zero=True) if args.control else None,
            max_connections=_int_setting("--max-connections", args.max_connections, 1, MAX_CONNECTIONS_LIMIT),
            seed=args.seed,
        )
    except FaultProxyError as exc:
        print(f"faultproxy: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_forever(proxy))
    except OSError as exc:
        print(f"faultproxy: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
