"""Settings of the Redis tier (L2).

One frozen dataclass holds every knob RedisL2 reads. It is validated when it is built, so a bad value
fails at configuration time with the field name (``redis.<field>``), the offending value (credentials
masked) and what would be accepted, instead of failing later inside a connection attempt.

The engine's pydantic config (cache_runtime.config) maps its parameters onto this dataclass; this
module does not import it, so the L2 package stays usable on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cache_runtime.l2.errors import RedisSettingsError
from cache_runtime.l2.urls import parse_redis_url

__all__ = ["RedisSettings", "RedisSettingsError"]

_GLOB_CHARACTERS = "*?[]\\"


def _check_number(name: str, value: Any, low: float, high: float, *, integer: bool = False) -> None:
    """Reject non-numbers, NaN, booleans and values outside [low, high] with a message naming the field."""
    kind = "an integer" if integer else "a number"
    accepted = f"{kind} from {low:g} to {high:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RedisSettingsError(f"redis.{name}", value, accepted, f"expected {kind}")
    if integer and not isinstance(value, int):
        raise RedisSettingsError(f"redis.{name}", value, accepted, "expected an integer")
    if isinstance(value, float) and math.isnan(value):
        raise RedisSettingsError(f"redis.{name}", value, accepted)
    if not low <= value <= high:
        raise RedisSettingsError(f"redis.{name}", value, accepted, "out of range")


def _check_optional_text(name: str, value: Any, *, secret: bool = False) -> None:
    """Reject anything but None or a non-empty string; secrets are never echoed back."""
    if value is None:
        return
    if not isinstance(value, str) or value == "":
        shown = "***" if secret and isinstance(value, str) else value
        raise RedisSettingsError(f"redis.{name}", shown, "a non-empty string, or null to leave unset")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Every parameter of the Redis tier, validated on construction.

    ``username`` / ``password`` given here win over credentials embedded in ``url``. Timeouts are in
    seconds. The circuit breaker opens after ``breaker_failure_threshold`` consecutive failures, stays
    open ``breaker_open_seconds`` (every call answers "nothing" at once), then lets
    ``breaker_half_open_probes`` calls through; a probe success closes it, a failure re-opens it.
    """

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: RESP protocol version spoken to Redis (2 or 3); pub/sub works with both.
    protocol: int = 2
    max_connections: int = 20
    connect_timeout_s: float = 2.0
    #: Per-read bound of every command: the most one operation waits on a silent server.
    socket_timeout_s: float = 1.0
    #: How long a caller waits for a free pooled connection before the call counts as a "pool" error.
    pool_timeout_s: float = 1.0
    #: Idle pooled connections are PINGed before reuse after this many seconds (0 disables).
    health_check_interval_s: float = 30.0
    #: A lone GET polls the event loop for its reply up to this many microseconds before it sleeps
    #: on the socket, while lone GETs are answered within twice that on average (0: never polls).
    #: Waking a sleeping process can cost more than a round trip to a nearby Redis (60 us against
    #: 30 us on the 2-vCPU VM of docs/benchmarks.md); the polling only runs while nothing else on
    #: the event loop is ready, and stops as soon as the reply is there.
    spin_wait_us: int = 200
    client_name: str | None = "cachewarden"
    # TLS (rediss://, rediss+sentinel://, rediss+cluster://)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: Verify the server certificate against the CA (ssl_cert_reqs=required). Turn off only for tests.
    tls_verify: bool = True
    tls_check_hostname: bool = True
    # Sentinel / Cluster
    #: Service name when the sentinel URL does not carry one (redis+sentinel://h:p/<service>).
    sentinel_master: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    #: How often the master address is re-read from Sentinel. redis-py only asks on new connections,
    #: so pooled connections would keep writing to a demoted master until it turns read-only.
    sentinel_check_interval_s: float = 1.0
    #: Treat a plain redis:// URL as a cluster seed node (same as redis+cluster://).
    cluster: bool = False
    # Circuit breaker
    breaker_failure_threshold: int = 3
    breaker_open_seconds: float = 1.0
    breaker_half_open_probes: int = 1
    # Batching
    #: COUNT hint of SCAN in pattern invalidation (large = fewer round trips).
    scan_count: int = 1000
    #: Keys per UNLINK / DEL command.
    unlink_batch: int = 500
    #: Most keys fetched by one coalesced MGET; bigger batches are split.
    coalesce_max_keys: int = 512
    #: Most commands per pipeline in set_many; bigger batches are split.
    pipeline_max_commands: int = 1000
    #: When set, scan_unlink only accepts patterns under "<key_prefix>:" so that a pattern
    #: invalidation can never delete another application's keys in a shared Redis.
    key_prefix: str | None = None
    # Coherence (pub/sub listener)
    coherence_reconnect_min_s: float = 0.05
    coherence_reconnect_max_s: float = 2.0
    #: The listener PINGs an idle subscription this often; no reply within socket_timeout_s means
    #: the subscription is dead (a silent network partition never closes the socket by itself).
    coherence_ping_interval_s: float = 5.0

    def __post_init__(self) -> None:
        """Validate every field; the URL is parsed once here so a bad one fails at config time."""
        if not isinstance(self.url, str):
            raise RedisSettingsError("redis.url", self.url, "a Redis URL string")
        parsed = parse_redis_url(self.url)
        _check_optional_text("username", self.username)
        _check_optional_text("password", self.password, secret=True)
        _check_optional_text("client_name", self.client_name)
        if self.protocol not in (2, 3) or isinstance(self.protocol, bool):
            raise RedisSettingsError("redis.protocol", self.protocol, "2 (RESP2) or 3 (RESP3)")
        _check_number("max_connections", self.max_connections, 1, 1000, integer=True)
        _check_number("connect_timeout_s", self.connect_timeout_s, 0.01, 60)
        _check_number("socket_timeout_s", self.socket_timeout_s, 0.01, 60)
        _check_number("pool_timeout_s", self.pool_timeout_s, 0.01, 60)
        _check_number("health_check_interval_s", self.health_check_interval_s, 0, 3600)
        _check_number("spin_wait_us", self.spin_wait_us, 0, 10_000, integer=True)
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file", "sentinel_master", "sentinel_username"):
            _check_optional_text(name, getattr(self, name))
        _check_optional_text("sentinel_password", self.sentinel_password, secret=True)
        _check_number("sentinel_check_interval_s", self.sentinel_check_interval_s, 0.05, 3600)
        for name in ("tls_verify", "tls_check_hostname", "cluster"):
            if not isinstance(getattr(self, name), bool):
                raise RedisSettingsError(f"redis.{name}", getattr(self, name), "true or false")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise RedisSettingsError(
                "redis.tls_key_file" if self.tls_key_file is None else "redis.tls_cert_file",
                None,
                "tls_cert_file and tls_key_file both set (client certificate) or both unset",
            )
        _check_number("breaker_failure_threshold", self.breaker_failure_threshold, 1, 1000, integer=True)
        _check_number("breaker_open_seconds", self.breaker_open_seconds, 0.01, 600)
        _check_number("breaker_half_open_probes", self.breaker_half_open_probes, 1, 100, integer=True)
        _check_number("scan_count", self.scan_count, 10, 1_000_000, integer=True)
        _check_number("unlink_batch", self.unlink_batch, 1, 100_000, integer=True)
        _check_number("coalesce_max_keys", self.coalesce_max_keys, 1, 100_000, integer=True)
        _check_number("pipeline_max_commands", self.pipeline_max_commands, 1, 100_000, integer=True)
        prefix = self.key_prefix
        if prefix is not None and (
            not isinstance(prefix, str) or not prefix or any(c in prefix for c in _GLOB_CHARACTERS)
        ):
            raise RedisSettingsError(
                "redis.key_prefix", prefix, "null, or a non-empty string without glob characters * ? [ ] \\"
            )
        _check_number("coherence_reconnect_min_s", self.coherence_reconnect_min_s, 0.001, 60)
        _check_number("coherence_reconnect_max_s", self.coherence_reconnect_max_s, 0.001, 600)
        if self.coherence_reconnect_max_s < self.coherence_reconnect_min_s:
            raise RedisSettingsError(
                "redis.coherence_reconnect_max_s",
                self.coherence_reconnect_max_s,
                f"a number >= coherence_reconnect_min_s ({self.coherence_reconnect_min_s:g})",
            )
        _check_number("coherence_ping_interval_s", self.coherence_ping_interval_s, 0.05, 3600)
        if parsed.kind == "sentinel" and parsed.service_name is None and self.sentinel_master is None:
            raise RedisSettingsError(
                "redis.sentinel_master",
                None,
                "a service name, either in the URL (redis+sentinel://host:port/<service>) or in this setting",
            )
        if self.cluster and parsed.kind not in ("standalone", "cluster"):
            raise RedisSettingsError(
                "redis.cluster",
                True,
                f"true only with a redis://, rediss:// or redis+cluster:// URL, not {parsed.kind}",
            )
