"""Redis URLs: the schemes the engine accepts, parsing, and masking credentials.

No I/O and no redis-py import: the engine's config validates its ``redis.url`` here, the operator
derives its CRD pattern from :data:`URL_SCHEMES`, and cache_runtime.l2.connect builds clients from a
:class:`ParsedRedisUrl`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, unquote

from cache_runtime.l2.errors import RedisSettingsError

__all__ = [
    "ACCEPTED_URL_FORMS",
    "URL_SCHEMES",
    "ParsedRedisUrl",
    "UrlKind",
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

# The one table of URL schemes: the engine's config, the operator's spec.redis.url and the CRD pattern
# all accept exactly these (scheme -> deployment kind, TLS).
URL_SCHEMES: dict[str, tuple[UrlKind, bool]] = {
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
    if scheme not in URL_SCHEMES:
        raise _url_error(url, f"unsupported scheme {scheme!r}")
    kind, tls = URL_SCHEMES[scheme]

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
