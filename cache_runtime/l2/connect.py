"""Parsing Redis URLs and building redis.asyncio clients from RedisSettings.

Supported deployments (one URL each):

- ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://...`` (TLS; the server certificate is
  verified against ``tls_ca_file`` unless ``tls_verify`` is false; ``tls_cert_file``/``tls_key_file``
  give a client certificate);
- ``unix://[[user]:password@]/path/to/redis.sock[?db=N]``;
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]`` (``rediss+sentinel``
  speaks TLS to the sentinels and to the master). The credentials in the URL are the master's;
  ``sentinel_username``/``sentinel_password`` authenticate to the sentinels themselves;
- ``redis+cluster://[[user]:password@]host:port[,host:port...]`` (``rediss+cluster``), or any
  redis:// URL with ``cluster=True``: seed nodes of a Redis Cluster. Keys are routed by slot;
  MGET is split per slot (``mget_nonatomic``), pipelines are split per node by redis-py, UNLINK of many
  keys is split per slot, SCAN visits every primary. Databases other than 0 do not exist in a cluster.
  Limits: one circuit breaker covers the whole cluster (a primary down makes it flap between memory-
  only and serving the other slots); the coherence listener subscribes with classic SUBSCRIBE on one
  seed node (PUBLISH is broadcast cluster-wide), not sharded pub/sub; an exhausted per-node pool
  fails at once (counted as a "pool" error) instead of waiting.

Sentinel: RedisL2 re-reads the master address every ``sentinel_check_interval_s`` and drops all
connections when it changes (redis-py alone only re-resolves on new connections).

Query parameters accepted in every URL: ``db`` and ``protocol`` (2 or 3). Anything else is rejected
so that a typo never silently falls back to a default.

Every client is built with explicit connect/read timeouts, a bounded pool (callers wait at most
``pool_timeout_s`` for a free connection, standalone and sentinel; per-node bounded pools in cluster
mode, where an exhausted node pool fails at once) and redis-py retries disabled: the circuit breaker
in RedisL2 is the retry policy, so timeouts are never multiplied.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from cache_runtime.l2.settings import RedisSettingsError

if TYPE_CHECKING:
    from cache_runtime.l2.settings import RedisSettings

__all__ = [
    "ACCEPTED_URL_FORMS",
    "ParsedRedisUrl",
    "RedisClients",
    "build_clients",
    "build_subscriber_client",
    "mask_url",
    "parse_redis_url",
    "scrub_secrets",
]

UrlKind = Literal["standalone", "unix", "sentinel", "cluster"]

ACCEPTED_URL_FORMS = (
    "redis://[[user]:password@]host[:port][/db], rediss://... (TLS), "
    "unix://[[user]:password@]/path.sock[?db=N], "
    "redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db] (or rediss+sentinel://), "
    "redis+cluster://[[user]:password@]host:port[,host:port...] (or rediss+cluster://); "
    "query parameters: db, protocol"
)

_SCHEMES: dict[str, tuple[UrlKind, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("unix", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_QUERY_KEYS = ("db", "protocol")
_DEFAULT_PORT = {"standalone": 6379, "cluster": 6379, "sentinel": 26379}

# scheme://userinfo@ - the userinfo is everything up to the LAST '@' before the path, so that a
# password containing '@' is still masked whole.
_USERINFO_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#]*)@")
# Credentials embedded in any URL inside an error message.
_URL_CREDENTIALS_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#@]+)@")


def mask_url(url: str) -> str:
    """Return ``url`` with its password (or a bare userinfo, which may be one) replaced by ``***``."""
    match = _USERINFO_RE.match(url)
    if not match:
        return url
    userinfo = match.group("userinfo")
    if ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        masked = f"{user}:***"
    else:
        # "redis://secret@host" is ambiguous (user or password): never show it.
        masked = "***"
    return f"{match.group('scheme')}{masked}@{url[match.end() :]}"


def scrub_secrets(message: str, secrets: tuple[str | None, ...] = (), limit: int = 300) -> str:
    """Remove credentials from an error message: URL userinfo and any known secret value; cap length."""

    def _mask(match: re.Match[str]) -> str:
        userinfo = match.group("userinfo")
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        return f"{match.group('scheme')}{user + ':' if user else ''}***@"

    text = _URL_CREDENTIALS_RE.sub(_mask, message)
    for secret in secrets:
        # Short secrets would mask unrelated text and leak their length; 4+ chars are worth masking.
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


@dataclass(frozen=True, slots=True)
class ParsedRedisUrl:
    """The parts of a validated Redis URL."""

    kind: UrlKind
    tls: bool
    hosts: tuple[tuple[str, int], ...] = ()
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    service_name: str | None = None
    protocol: int | None = None


def _url_error(url: str, reason: str) -> RedisSettingsError:
    return RedisSettingsError("redis.url", mask_url(url), ACCEPTED_URL_FORMS, reason)


def _parse_host_port(url: str, item: str, default_port: int) -> tuple[str, int]:
    """Parse ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if item.startswith("["):
        end = item.find("]")
        if end < 0:
            raise _url_error(url, f"unterminated IPv6 address in {item!r}")
        host, rest = item[1:end], item[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _url_error(url, f"unexpected text after IPv6 address in {item!r}")
        port_text = rest[1:] if rest else ""
    elif item.count(":") > 1:
        raise _url_error(url, f"IPv6 address {item!r} must be written in brackets: [addr]:port")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise _url_error(url, "missing host")
    if port_text == "":
        if item.endswith(":"):
            raise _url_error(url, f"empty port in {item!r}")
        return unquote(host), default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _url_error(url, f"port {port_text!r} is not a number from 1 to 65535")
    return unquote(host), int(port_text)


def _parse_db(url: str, text: str) -> int:
    if not text.isdigit():
        raise _url_error(url, f"database {text!r} is not a non-negative integer")
    return int(text)


def parse_redis_url(url: str) -> ParsedRedisUrl:
    """Validate and split a Redis URL; raise RedisSettingsError (a ValueError) naming ``redis.url``.

    The error message shows the URL with its password masked and lists the accepted forms.
    """
    if not isinstance(url, str) or not url.strip():
        raise RedisSettingsError("redis.url", url, ACCEPTED_URL_FORMS, "empty")
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise _url_error(url, "missing scheme")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise _url_error(url, f"unsupported scheme {scheme!r}")
    kind, tls = _SCHEMES[scheme]

    rest, _, fragment = rest.partition("#")
    if fragment:
        raise _url_error(url, "fragments (#...) are not allowed")
    rest, _, query = rest.partition("?")
    params: dict[str, str] = {}
    for name, values in parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        if name not in _QUERY_KEYS:
            raise _url_error(url, f"unknown query parameter {name!r} (accepted: {', '.join(_QUERY_KEYS)})")
        params[name] = values[-1]
    if query and not params:
        raise _url_error(url, f"malformed query {query!r}")

    authority, slash, path = rest.partition("/")
    userinfo, at, hostlist = authority.rpartition("@")
    if not at:
        hostlist, userinfo = authority, ""
    username: str | None = None
    password: str | None = None
    if userinfo:
        if ":" in userinfo:
            user_text, password_text = userinfo.split(":", 1)
            username = unquote(user_text) or None
            password = unquote(password_text) or None
        else:
            # Like redis-py: "redis://name@host" is a username without a password.
            username = unquote(userinfo)

    protocol: int | None = None
    if "protocol" in params:
        if params["protocol"] not in ("2", "3"):
            raise _url_error(url, f"protocol {params['protocol']!r} is not 2 or 3")
        protocol = int(params["protocol"])

    if kind == "unix":
        if hostlist:
            raise _url_error(url, f"unix URLs take no host ({hostlist!r}); write unix:///path/to/redis.sock")
        socket_path = "/" + path if slash else ""
        if socket_path in ("", "/"):
            raise _url_error(url, "missing socket path")
        db = _parse_db(url, params["db"]) if "db" in params else 0
        return ParsedRedisUrl(
            kind="unix",
            tls=False,
            path=unquote(socket_path),
            db=db,
            username=username,
            password=password,
            protocol=protocol,
        )

    if not hostlist:
        raise _url_error(url, "missing host")
    items = hostlist.split(",")
    if kind == "standalone" and len(items) > 1:
        raise _url_error(url, "several hosts are only accepted with redis+sentinel:// or redis+cluster://")
    if any(not item for item in items):
        raise _url_error(url, "empty host in the host list")
    hosts = tuple(_parse_host_port(url, item, _DEFAULT_PORT[kind]) for item in items)

    segments = [unquote(s) for s in path.split("/")] if path else []
    while segments and segments[-1] == "":
        segments.pop()
    service_name: str | None = None
    db = 0
    if kind == "sentinel":
        if len(segments) > 2:
            raise _url_error(url, "sentinel path must be /service_name or /service_name/db")
        if segments:
            service_name = segments[0] or None
        if len(segments) == 2:
            db = _parse_db(url, segments[1])
    else:
        if len(segments) > 1:
            raise _url_error(url, f"path {'/' + path!r} must be a database number like /0")
        if segments:
            db = _parse_db(url, segments[0])
    if "db" in params:
        db = _parse_db(url, params["db"])
    if kind == "cluster" and db != 0:
        raise _url_error(url, f"database {db} does not exist in Redis Cluster (only 0)")
    return ParsedRedisUrl(
        kind=kind,
        tls=tls,
        hosts=hosts,
        db=db,
        username=username,
        password=password,
        service_name=service_name,
        protocol=protocol,
    )


def _check_tls_files(settings: RedisSettings) -> None:
    """Fail at start with the field named when a configured certificate file cannot be read."""
    for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(settings, name)
        if path is not None and not os.access(path, os.R_OK):
            raise RedisSettingsError(
                f"redis.{name}", path, "a readable PEM file", "file missing or unreadable"
            )


def _connection_kwargs(settings: RedisSettings, parsed: ParsedRedisUrl) -> dict[str, Any]:
    """Keyword arguments shared by every connection to a Redis server (not to sentinels)."""
    return {
        # Settings win over credentials embedded in the URL.
        "username": settings.username if settings.username is not None else parsed.username,
        "password": settings.password if settings.password is not None else parsed.password,
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.connect_timeout_s,
        "health_check_interval": settings.health_check_interval_s,
        "client_name": settings.client_name,
        "protocol": parsed.protocol if parsed.protocol is not None else settings.protocol,
        "decode_responses": False,
        # The breaker is the retry policy: a redis-py retry would multiply every timeout.
        "retry": Retry(NoBackoff(), 0),
    }


def _tls_kwargs(settings: RedisSettings) -> dict[str, Any]:
    return {
        "ssl_ca_certs": settings.tls_ca_file,
        "ssl_certfile": settings.tls_cert_file,
        "ssl_keyfile": settings.tls_key_file,
        "ssl_cert_reqs": "required" if settings.tls_verify else "none",
        "ssl_check_hostname": settings.tls_verify and settings.tls_check_hostname,
    }


class BoundedConnectionPool(ConnectionPool):
    """A bounded pool whose callers wait (at most ``timeout`` seconds) for a free connection.

    Same contract as redis-py's BlockingConnectionPool (never more than ``max_connections``, a
    ConnectionError "No connection available." after ``timeout``), but the fast path (a connection is
    free) takes no lock and arms no timer: BlockingConnectionPool does both on every command, which
    costs about 15-20 us per round trip, a fifth of a loopback GET. Waiters are served in FIFO order
    (asyncio.Semaphore is fair). ``waits`` counts the callers that had to wait: the evidence of pool
    exhaustion, which the health diagnosis tells apart from Redis latency.
    """

    def __init__(self, *, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self.waits = 0
        self._slots = asyncio.Semaphore(self.max_connections)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """A connected connection; waits up to ``timeout`` when all are in use."""
        slots = self._slots
        if slots.locked():
            self.waits += 1
            try:
                async with asyncio.timeout(self.timeout):
                    await slots.acquire()
            except TimeoutError:
                raise RedisConnectionError("No connection available.") from None
        else:
            await slots.acquire()  # returns at once: a slot is free
        try:
            connection = self.get_available_connection()
        except BaseException:
            slots.release()
            raise
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        """Return ``connection`` and free its slot for the next waiter (or retire the slot after a
        shrink, see :meth:`resize`)."""
        try:
            await super().release(connection)
        finally:
            if self._retiring > 0:
                self._retiring -= 1
            else:
                self._slots.release()

    _retiring = 0

    def resize(self, max_connections: int) -> None:
        """Change the bound live, without closing any connection.

        Growing frees more slots at once. Shrinking takes the free slots away now and retires the
        busy ones as their calls return them, so calls in flight finish undisturbed and the pool
        never holds more than the new bound once they have.
        """
        if max_connections < 1:
            raise ValueError(f"max_connections: invalid value {max_connections!r}; accepted: >= 1")
        delta = max_connections - self.max_connections
        self.max_connections = max_connections
        slots = self._slots
        if delta > 0:
            settled = min(delta, self._retiring)
            self._retiring -= settled
            for _ in range(delta - settled):
                slots.release()
        elif delta < 0:
            owed = -delta
            free = min(owed, slots._value)  # asyncio.Semaphore keeps its free count there
            slots._value -= free
            self._retiring += owed - free
        # Idle sockets beyond the new bound stay open, but no more than the bound are used at once.

    def retune(self, *, socket_timeout: float, socket_connect_timeout: float, timeout: float) -> None:
        """New read/connect timeouts for new and existing connections, and a new pool wait bound."""
        self.timeout = timeout
        self.connection_kwargs["socket_timeout"] = socket_timeout
        self.connection_kwargs["socket_connect_timeout"] = socket_connect_timeout
        for connection in (*self._available_connections, *self._in_use_connections):
            connection.socket_timeout = connection.orig_socket_timeout = socket_timeout
            connection.socket_connect_timeout = socket_connect_timeout
            connection.orig_socket_connect_timeout = socket_connect_timeout


class BoundedSentinelConnectionPool(SentinelConnectionPool, BoundedConnectionPool):
    """A SentinelConnectionPool that waits (bounded) for a free connection and counts the waits.

    redis-py's SentinelConnectionPool fails at once with "Too many connections" when the pool is
    exhausted; with this MRO it keeps its master discovery and takes the bounded wait.
    """


@dataclass(slots=True)
class RedisClients:
    """The command client of one deployment and the objects that must be closed with it."""

    kind: UrlKind
    client: Redis | RedisCluster
    pool: BoundedConnectionPool | None = None
    sentinel: Sentinel | None = None
    parsed: ParsedRedisUrl | None = None

    async def aclose(self) -> None:
        """Close the client, its pool and the sentinel connections; never raises."""
        # Closing a broken connection must not hide the caller's own work.
        with contextlib.suppress(Exception):
            await self.client.aclose()
        if self.sentinel is not None:
            with contextlib.suppress(Exception):
                await self.sentinel.aclose()


def build_clients(settings: RedisSettings) -> RedisClients:
    """Build the command client for ``settings`` (no network I/O happens here)."""
    parsed = parse_redis_url(settings.url)
    _check_tls_files(settings)
    kind: UrlKind = "cluster" if settings.cluster and parsed.kind == "standalone" else parsed.kind
    common = _connection_kwargs(settings, parsed)

    if kind == "cluster":
        extra = {"ssl": True, **_tls_kwargs(settings)} if parsed.tls else {}
        common.pop("retry")
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.hosts],
            max_connections=settings.max_connections,
            # Slots not covered (a primary down) fail only the keys in them, not the whole client.
            require_full_coverage=False,
            retry=Retry(NoBackoff(), 0),
            **common,
            **extra,
        )
        return RedisClients(kind="cluster", client=cluster, parsed=parsed)

    if kind == "sentinel":
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": settings.socket_timeout_s,
            "socket_connect_timeout": settings.connect_timeout_s,
            "username": settings.sentinel_username,
            "password": settings.sentinel_password,
            "retry": common["retry"],
            "protocol": common["protocol"],
        }
        if parsed.tls:
            sentinel_kwargs.update({"ssl": True, **_tls_kwargs(settings)})
        sentinel = Sentinel(list(parsed.hosts), sentinel_kwargs=sentinel_kwargs)
        extra = {"ssl": True, **_tls_kwargs(settings)} if parsed.tls else {}
        service = settings.sentinel_master or parsed.service_name
        assert service is not None  # RedisSettings rejects a sentinel URL without a service name
        client = sentinel.master_for(
            service,
            redis_class=Redis,
            connection_pool_class=BoundedSentinelConnectionPool,
            max_connections=settings.max_connections,
            timeout=settings.pool_timeout_s,
            db=parsed.db,
            **common,
            **extra,
        )
        return RedisClients(
            kind="sentinel", client=client, pool=client.connection_pool, sentinel=sentinel, parsed=parsed
        )

    if kind == "unix":
        pool = BoundedConnectionPool(
            max_connections=settings.max_connections,
            timeout=settings.pool_timeout_s,
            connection_class=UnixDomainSocketConnection,
            path=parsed.path,
            db=parsed.db,
            **common,
        )
    else:
        host, port = parsed.hosts[0]
        tls = _tls_kwargs(settings) if parsed.tls else {}
        pool = BoundedConnectionPool(
            max_connections=settings.max_connections,
            timeout=settings.pool_timeout_s,
            connection_class=SSLConnection if parsed.tls else Connection,
            host=host,
            port=port,
            db=parsed.db,
            socket_keepalive=True,
            **common,
            **tls,
        )
    return RedisClients(kind=kind, client=Redis.from_pool(pool), pool=pool, parsed=parsed)


def build_subscriber_client(settings: RedisSettings, attempt: int = 0) -> RedisClients:
    """A client with its own one-connection pool for the pub/sub listener (never the command pool).

    In cluster mode PUBLISH is broadcast to every node, so the listener subscribes on one seed node,
    rotating through the seeds on each reconnection ``attempt``.
    """

    parsed = parse_redis_url(settings.url)
    kind: UrlKind = "cluster" if settings.cluster and parsed.kind == "standalone" else parsed.kind
    if kind == "cluster":
        host, port = parsed.hosts[attempt % len(parsed.hosts)]
        scheme = "rediss" if parsed.tls else "redis"
        single = replace(
            settings,
            url=f"{scheme}://{_bracket(host)}:{port}/0",
            # The seed URL carried the credentials and protocol; keep them on the single-node URL.
            username=settings.username if settings.username is not None else parsed.username,
            password=settings.password if settings.password is not None else parsed.password,
            protocol=parsed.protocol if parsed.protocol is not None else settings.protocol,
            cluster=False,
            max_connections=1,
        )
        return build_clients(single)
    return build_clients(replace(settings, max_connections=1))


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
