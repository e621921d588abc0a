"""Sorting Redis failures into kinds (pure; no I/O).

The kinds are what stats, metrics and the health diagnosis speak: a wrong password, an out-of-memory
Redis under ``noeviction`` and an unreachable server need different remedies, so they are counted
apart. Only the kinds in BREAKER_KINDS mean "this server cannot serve us now" and feed the circuit
breaker; the others are answers from a working server (OOM on a write, a forbidden command, a wrong
type) or local congestion (pool exhausted) and must not switch reads off.
"""

from __future__ import annotations

import ssl
from typing import Any

__all__ = ["BREAKER_KINDS", "ERROR_KINDS", "RedisSettingsError", "classify_error", "describe_error"]

#: Every kind that stats() reports, in a stable order.
ERROR_KINDS: tuple[str, ...] = (
    "timeout",  # connect or read timeout (silent server, blackhole, overload)
    "connection",  # refused, reset, closed, DNS, "max number of clients reached"
    "tls",  # handshake or certificate verification failed
    "auth",  # AUTH failed: WRONGPASS, NOAUTH, invalid password
    "permission",  # NOPERM: the ACL user may not run that command or touch that key
    "pool",  # no free pooled connection within pool_timeout_s
    "oom",  # OOM command not allowed (maxmemory reached under noeviction)
    "readonly",  # READONLY: talking to a replica (failover in progress)
    "loading",  # LOADING: the server is loading its dataset
    "cluster",  # CLUSTERDOWN, MOVED/ASK storms, CROSSSLOT, slots not covered
    "data",  # bytes from Redis that are not what the key should hold
    "other",
)

#: Kinds that count as a failure of the server for the circuit breaker.
BREAKER_KINDS: frozenset[str] = frozenset(
    {"timeout", "connection", "tls", "auth", "readonly", "loading", "cluster"}
)

_POOL_MESSAGES = ("No connection available", "Too many connections")
_TLS_MARKERS = ("SSL", "CERTIFICATE", "TLS")


def classify_error(exc: BaseException) -> str:
    """Return the kind (one of ERROR_KINDS) of an exception raised by a redis.asyncio call."""
    from redis import exceptions as rex

    message = str(exc)
    if isinstance(exc, (rex.TimeoutError, TimeoutError)):
        return "timeout"
    auth_errors = (rex.AuthenticationError, rex.AuthorizationError, rex.AuthenticationWrongNumberOfArgsError)
    if isinstance(exc, auth_errors):
        return "auth"
    if isinstance(exc, rex.NoPermissionError):
        return "permission"
    if isinstance(exc, rex.OutOfMemoryError):
        return "oom"
    if isinstance(exc, rex.ReadOnlyError):
        return "readonly"
    if isinstance(exc, rex.BusyLoadingError):
        return "loading"
    if isinstance(exc, rex.MaxConnectionsError) or (
        isinstance(exc, rex.ConnectionError) and message.startswith(_POOL_MESSAGES)
    ):
        return "pool"
    if isinstance(exc, (rex.ClusterError, rex.AskError, rex.TryAgainError, rex.ClusterCrossSlotError)):
        return "cluster"
    if isinstance(exc, rex.RedisClusterException):
        # redis-py wraps "no seed node reachable" in its cluster exception; it is an outage.
        return "connection" if "cannot be connected" in message else "cluster"
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return "tls"
    if isinstance(exc, (rex.ConnectionError, OSError, EOFError)):
        upper = message.upper()
        if any(marker in upper for marker in _TLS_MARKERS):
            return "tls"
        return "connection"
    if isinstance(exc, rex.ResponseError):
        # Servers and proxies that answer with codes redis-py does not map.
        head = message.split(" ", 1)[0]
        if head in ("NOAUTH", "WRONGPASS"):
            return "auth"
        if head == "NOPERM":
            return "permission"
        if head == "OOM":
            return "oom"
        if head == "READONLY":
            return "readonly"
        if head in ("CLUSTERDOWN", "CROSSSLOT", "MOVED", "ASK", "TRYAGAIN", "MASTERDOWN"):
            return "cluster"
    return "other"


def describe_error(exc: BaseException) -> str:
    """One line for humans: the exception type, Redis' error code (redis-py strips it) and message."""
    code = getattr(exc, "status_code", None)
    message = str(exc) or exc.__class__.__name__
    if code and not message.startswith(code):
        message = f"{code} {message}"
    return f"{exc.__class__.__name__}: {message}"


class RedisSettingsError(ValueError):
    """A Redis setting was rejected; names the field, the (masked) value and what is accepted."""

    def __init__(self, field_name: str, value: Any, accepted: str, reason: str | None = None) -> None:
        self.field = field_name
        self.value = value
        self.accepted = accepted
        self.reason = reason
        detail = f" ({reason})" if reason else ""
        super().__init__(f"{field_name}: invalid value {value!r}{detail}; accepted: {accepted}")
