"""Cross-pod L1 coherence: a pub/sub listener that never gives up, and a stamped message format.

CoherenceListener subscribes to one channel over a dedicated connection (its own one-connection
pool, never the command pool, so a burst of cache traffic cannot starve it and a blocked read on it
cannot hold a pooled connection). It works with RESP2 and RESP3 (redis-py turns RESP3 push frames
into the same message dicts).

It reconnects by itself with exponential backoff bounded by ``coherence_reconnect_max_s``. A silent
network partition never closes a socket, so an idle subscription is PINGed every
``coherence_ping_interval_s`` and declared dead when no reply comes within ``socket_timeout_s``.
Each time the subscription is re-established after a drop, ``on_reset()`` is called, after the new
SUBSCRIBE is confirmed and before any further message is delivered: everything published while the
listener was away is then covered by the reset (the facade clears or epoch-bumps L1).

The listener delivers opaque bytes. For measuring coherence lag, ``pack_stamped``/``unpack_stamped``
put a wall-clock timestamp in front of a payload; the publisher and the subscriber are different pods,
so wall time (not monotonic time) is the only clock they share.

What the engine says on the channel is typed here, once: :class:`KeysChanged`,
:class:`PatternInvalidated`, :class:`NamespaceBumped` and :class:`NamespaceCleared`, written by
:func:`encode_message` and read by :func:`decode_message` (a stamped JSON object; the wire format is
``{"k": kind, ..., "o": origin}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from cache_runtime.l2.connect import RedisClients, build_subscriber_client, parse_redis_url, scrub_secrets
from cache_runtime.l2.errors import classify_error, describe_error
from cache_runtime.l2.settings import RedisSettings

__all__ = [
    "CoherenceListener",
    "CoherenceMessage",
    "KeysChanged",
    "NamespaceBumped",
    "NamespaceCleared",
    "PatternInvalidated",
    "Received",
    "StampedMessage",
    "decode_message",
    "encode_message",
    "lag_seconds",
    "pack_stamped",
    "unpack_stamped",
]

logger = logging.getLogger("cache_runtime.l2.coherence")

_STAMP_MAGIC = b"CWs1"
# stop() re-cancels the listener task every slice until it is done, for at most the bound. The
# slice leaves a normal cancellation time to close the connection before the next one lands.
_STOP_SLICE_S = 0.2
_STOP_BOUND_S = 5.0
_STAMP_HEADER = struct.Struct(">4sQ")


@dataclass(frozen=True, slots=True)
class StampedMessage:
    """A payload with the publisher's wall-clock send time (nanoseconds since the epoch)."""

    sent_ns: int
    payload: bytes


def pack_stamped(payload: bytes, now_ns: int | None = None) -> bytes:
    """Prefix ``payload`` with a magic and the wall-clock time in ns (for coherence-lag measurement)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload: expected bytes, got {type(payload).__name__}")
    stamp = time.time_ns() if now_ns is None else now_ns
    return _STAMP_HEADER.pack(_STAMP_MAGIC, stamp) + bytes(payload)


def unpack_stamped(message: bytes) -> StampedMessage:
    """Split a message made by pack_stamped; ValueError (naming what is wrong) for anything else."""
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise ValueError(f"coherence message: expected bytes, got {type(message).__name__}")
    data = bytes(message)
    if len(data) < _STAMP_HEADER.size:
        raise ValueError(
            f"coherence message: {len(data)} bytes is shorter than the {_STAMP_HEADER.size}-byte stamp header"
        )
    magic, sent_ns = _STAMP_HEADER.unpack_from(data)
    if magic != _STAMP_MAGIC:
        raise ValueError(
            f"coherence message: magic {magic!r} is not {_STAMP_MAGIC!r} (not a stamped message)"
        )
    return StampedMessage(sent_ns=sent_ns, payload=data[_STAMP_HEADER.size :])


def lag_seconds(stamped: StampedMessage, now_ns: int | None = None) -> float:
    """Seconds between publication and now (never negative: clocks of two pods may disagree slightly)."""
    now = time.time_ns() if now_ns is None else now_ns
    return max(0.0, (now - stamped.sent_ns) / 1e9)


# ------------------------------------------------------------------------------------------ messages


@dataclass(frozen=True, slots=True)
class KeysChanged:
    """Keys of ``namespace`` written or deleted by another pod. ``fingerprints`` (one per key) are of
    the bytes written, so a pod whose L1 holds exactly those bytes keeps them; None: deleted."""

    namespace: str
    keys: tuple[str, ...]
    fingerprints: tuple[int | None, ...] | None = None


@dataclass(frozen=True, slots=True)
class PatternInvalidated:
    """Every key matching ``pattern`` (a full Redis glob, prefix included) was invalidated."""

    pattern: str


@dataclass(frozen=True, slots=True)
class NamespaceBumped:
    """The version of ``namespace`` moved to ``version`` (None: unknown, the bump did not reach Redis)."""

    namespace: str
    version: int | None


@dataclass(frozen=True, slots=True)
class NamespaceCleared:
    """Everything of ``namespace`` was cleared."""

    namespace: str


CoherenceMessage = KeysChanged | PatternInvalidated | NamespaceBumped | NamespaceCleared


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message: what it says (None when its kind or fields are not understood), who sent it,
    and the stamp (for the lag)."""

    message: CoherenceMessage | None
    origin: Any
    stamped: StampedMessage


def encode_message(message: CoherenceMessage, origin: str, now_ns: int | None = None) -> bytes:
    """The stamped wire form of ``message`` from the engine called ``origin``."""
    body: dict[str, Any]
    if isinstance(message, KeysChanged):
        body = {"k": "keys", "ns": message.namespace, "keys": list(message.keys)}
        if message.fingerprints is not None:
            body["f"] = list(message.fingerprints)
    elif isinstance(message, PatternInvalidated):
        body = {"k": "pattern", "p": message.pattern}
    elif isinstance(message, NamespaceBumped):
        body = {"k": "ns", "ns": message.namespace, "v": message.version}
    else:
        body = {"k": "clear", "ns": message.namespace}
    body["o"] = origin
    return pack_stamped(orjson.dumps(body), now_ns)


def decode_message(raw: bytes) -> Received:
    """Read a message written by :func:`encode_message`; ValueError when it is not a stamped JSON
    object. Fields of the wrong type make ``message`` None (nothing to act on), never an error."""
    stamped = unpack_stamped(raw)
    try:
        body = orjson.loads(stamped.payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"coherence message: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("coherence message: not an object")
    return Received(_message_of(body), body.get("o"), stamped)


def _message_of(body: dict[str, Any]) -> CoherenceMessage | None:
    kind = body.get("k")
    namespace = body.get("ns")
    if kind == "pattern":
        pattern = body.get("p")
        return PatternInvalidated(pattern) if isinstance(pattern, str) else None
    if not isinstance(namespace, str):
        return None
    if kind == "ns":
        version = body.get("v")
        return NamespaceBumped(namespace, version if isinstance(version, int) else None)
    if kind == "clear":
        return NamespaceCleared(namespace)
    if kind == "keys" and isinstance(body.get("keys"), list):
        keys: list[Any] = body["keys"]
        prints = body.get("f")
        if not (isinstance(prints, list) and len(prints) == len(keys)):
            prints = [None] * len(keys)
        pairs = [(key, p if isinstance(p, int) else None) for key, p in zip(keys, prints, strict=True)
                 if isinstance(key, str)]
        return KeysChanged(namespace, tuple(k for k, _ in pairs), tuple(p for _, p in pairs))
    return None


ClientFactory = Callable[[RedisSettings, int], RedisClients]


class CoherenceListener:
    """Background subscriber of one channel; reconnects by itself and reports drops via on_reset."""

    def __init__(
        self,
        settings: RedisSettings,
        channel: str,
        on_message: Callable[[bytes], None],
        on_reset: Callable[[], None],
        *,
        client_factory: ClientFactory = build_subscriber_client,
    ) -> None:
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel: invalid value {channel!r}; accepted: a non-empty channel name")
        self._settings = settings
        self.channel = channel
        self._channel_bytes = channel.encode()
        self._on_message = on_message
        self._on_reset = on_reset
        self._client_factory = client_factory
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._ever_subscribed = False
        self._stopping = False
        self._secrets = _secrets_of(settings)
        #: Counters (plain ints: read by stats()).
        self.messages = 0
        self.resets = 0
        self.reconnects = 0
        self.callback_errors = 0
        self.errors: dict[str, int] = {}
        self.last_error: str | None = None
        self.subscribed_at: float | None = None
        self.dropped_at: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task (needs a running event loop)."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"coherence:{self.channel}")

    async def stop(self) -> None:
        """Stop listening and close the dedicated connection; returns within ``_STOP_BOUND_S``.

        One cancellation is not always enough: redis-py reads under a timeout, and a cancellation
        that lands as that timeout fires comes out of the read as a plain TimeoutError, which the
        loop treats as a dropped connection. So the task is cancelled again until it is done, and
        the loop itself also ends once it sees it is no longer the listener's task.
        """
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            await _cancel_until_done(task, self.channel)
        self._subscribed.clear()

    def restart(self, settings: RedisSettings | None = None) -> None:
        """Reconnect now (optionally with new settings); on_reset fires after resubscribing."""
        if settings is not None:
            self._settings = settings
            self._secrets = _secrets_of(settings)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._subscribed.clear()
        if not self._stopping:
            self.start()

    def update_settings(self, settings: RedisSettings) -> None:
        """New timing (ping interval, timeouts, backoff) without dropping the subscription; it applies
        from the next poll (ping, timeout) or the next reconnection (backoff, connect timeout). The
        connection-relevant settings must be equal (a change of those needs :meth:`restart`)."""
        self._settings = settings
        self._secrets = _secrets_of(settings)

    def reset_on_first_subscription(self) -> None:
        """Make the first subscription fire ``on_reset`` too (as every later one does).

        For a listener that replaces another whose subscription ended before this one was
        confirmed: messages published in between were missed, so the owner must hear about it.
        """
        if not self._subscribed.is_set():
            self._ever_subscribed = True

    @property
    def connected(self) -> bool:
        """True while the subscription is confirmed and believed alive."""
        return self._subscribed.is_set()

    async def wait_subscribed(self, timeout: float) -> bool:
        """Wait (bounded) until the subscription is confirmed; True if it is."""
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def stats(self) -> dict[str, Any]:
        """Counters of this listener."""
        return {
            "channel": self.channel,
            "connected": self.connected,
            "messages": self.messages,
            "resets": self.resets,
            "reconnects": self.reconnects,
            "callback_errors": self.callback_errors,
            "errors": dict(self.errors),
            "last_error": self.last_error,
            "subscribed_at": self.subscribed_at,
            "dropped_at": self.dropped_at,
        }

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        backoff = self._settings.coherence_reconnect_min_s
        while True:
            clients: RedisClients | None = None
            was_subscribed = False
            try:
                clients = self._client_factory(self._settings, attempt)
                await self._listen(clients)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                kind = classify_error(exc)
                self.errors[kind] = self.errors.get(kind, 0) + 1
                self.last_error = scrub_secrets(describe_error(exc), self._secrets)
                logger.debug("coherence listener on %r dropped (%s): %s", self.channel, kind, self.last_error)
            finally:
                was_subscribed = self._subscribed.is_set()
                if was_subscribed:
                    self.dropped_at = time.time()
                self._subscribed.clear()
                if clients is not None:
                    await _close_quietly(clients)
            if self._stopping or asyncio.current_task() is not self._task:
                # stop() or restart() replaced this task; a cancellation turned into an error
                # by redis-py must not keep it listening.
                return
            if was_subscribed:
                # It was up until this failure: retry quickly, the backoff is for repeated failures.
                backoff = self._settings.coherence_reconnect_min_s
            self.reconnects += 1
            attempt += 1
            # Jitter spreads the reconnection of many pods after a Redis restart.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._settings.coherence_reconnect_max_s)

    async def _listen(self, clients: RedisClients) -> None:
        settings = self._settings
        loop = asyncio.get_running_loop()
        pubsub = clients.client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            await self._await_confirmation(pubsub)
            self.subscribed_at = time.time()
            self._subscribed.set()
            if self._ever_subscribed:
                self.resets += 1
                self._call(self._on_reset)
            self._ever_subscribed = True
            poll = min(1.0, settings.coherence_ping_interval_s)
            last_traffic = loop.time()
            ping_sent_at: float | None = None
            while True:
                message = await pubsub.get_message(timeout=poll)
                now = loop.time()
                if message is not None:
                    last_traffic, ping_sent_at = now, None
                    self._handle(message)
                    continue
                settings = self._settings  # update_settings() applies from the next poll
                if ping_sent_at is not None:
                    if now - ping_sent_at > settings.socket_timeout_s:
                        raise TimeoutError(
                            f"no reply to PING on the subscription within {settings.socket_timeout_s:g}s"
                        )
                elif now - last_traffic >= settings.coherence_ping_interval_s:
                    await pubsub.ping()
                    ping_sent_at = now
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _await_confirmation(self, pubsub: Any) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.socket_timeout_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"SUBSCRIBE {self.channel!r} not confirmed within {self._settings.socket_timeout_s:g}s"
                )
            message = await pubsub.get_message(timeout=remaining)
            if message is None:
                continue
            if message.get("type") == "subscribe" and message.get("channel") == self._channel_bytes:
                return
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "message" and message.get("channel") == self._channel_bytes:
            data = message.get("data")
            if isinstance(data, bytes):
                self.messages += 1
                self._call(self._on_message, data)
        elif kind == "unsubscribe":
            # Someone (a proxy, CLIENT KILL of a peer, a config change) unsubscribed us: reconnect.
            raise ConnectionError(f"unexpectedly unsubscribed from {self.channel!r}")

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        # A bug in the facade's callback must not kill the listener.
        try:
            callback(*args)
        except Exception:
            self.callback_errors += 1
            logger.exception("coherence callback %r failed", getattr(callback, "__name__", callback))


async def _cancel_until_done(task: asyncio.Task[None], channel: str) -> None:
    """Cancel ``task`` (again every ``_STOP_SLICE_S``) until it is done, for at most ``_STOP_BOUND_S``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _STOP_BOUND_S
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            # Not reachable with redis-py as it is; if it happens, the task ends by itself at its
            # next loop turn (it is no longer the listener's task), so stop() need not wait.
            logger.warning("coherence listener on %r did not stop within %gs", channel, _STOP_BOUND_S)
            return
        task.cancel()
        await asyncio.wait({task}, timeout=min(_STOP_SLICE_S, remaining))
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "exception was never retrieved"


def _secrets_of(settings: RedisSettings) -> tuple[str | None, ...]:
    return (settings.password, parse_redis_url(settings.url).password, settings.sentinel_password)


async def _close_quietly(clients: RedisClients) -> None:
    with contextlib.suppress(Exception):
        await clients.aclose()
