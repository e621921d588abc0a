"""Pure L2 logic: URL parsing and validation, credential scrubbing, settings, error kinds, stamps."""

from __future__ import annotations

import ssl

import pytest
from redis import exceptions as rex

from cache_runtime.l2 import (
    ACCEPTED_URL_FORMS,
    BREAKER_KINDS,
    ERROR_KINDS,
    RedisSettings,
    RedisSettingsError,
    classify_error,
    lag_seconds,
    mask_url,
    pack_stamped,
    parse_redis_url,
    scrub_secrets,
    summarize_memory_info,
    unpack_stamped,
)
from cache_runtime.l2.connect import build_clients
from cache_runtime.l2.errors import describe_error
from cache_runtime.l2.urls import URL_SCHEMES

# ----------------------------------------------------------------------------- URL parsing


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost", {"kind": "standalone", "tls": False, "hosts": (("localhost", 6379),), "db": 0}),
        ("redis://10.0.0.5:6380/3", {"hosts": (("10.0.0.5", 6380),), "db": 3}),
        ("rediss://cache.example:6390", {"tls": True, "hosts": (("cache.example", 6390),)}),
        ("redis://:s3cret@h:1/0", {"username": None, "password": "s3cret"}),
        ("redis://app:p%40ss%3Aword@h/1", {"username": "app", "password": "p@ss:word", "db": 1}),
        ("redis://app@h", {"username": "app", "password": None}),
        ("redis://u:p@ss@h:7", {"username": "u", "password": "p@ss", "hosts": (("h", 7),)}),
        ("redis://[::1]:6379/2", {"hosts": (("::1", 6379),), "db": 2}),
        ("redis://h/?db=4", {"db": 4}),
        ("redis://h?protocol=3", {"protocol": 3}),
        ("REDIS://h", {"kind": "standalone"}),
        ("unix:///run/redis.sock", {"kind": "unix", "path": "/run/redis.sock", "db": 0}),
        ("unix://:pw@/run/redis.sock?db=2", {"kind": "unix", "password": "pw", "db": 2}),
        (
            "redis+sentinel://s1:26379,s2:26380/mymaster",
            {"kind": "sentinel", "hosts": (("s1", 26379), ("s2", 26380)), "service_name": "mymaster"},
        ),
        ("redis+sentinel://s1/mymaster/5", {"hosts": (("s1", 26379),), "service_name": "mymaster", "db": 5}),
        ("redis+sentinel://s1", {"kind": "sentinel", "service_name": None}),
        ("rediss+sentinel://u:p@s1:1/m", {"tls": True, "username": "u", "password": "p"}),
        (
            "redis+cluster://n1:7000,n2:7001",
            {"kind": "cluster", "hosts": (("n1", 7000), ("n2", 7001)), "db": 0},
        ),
        ("rediss+cluster://n1:7000/0", {"kind": "cluster", "tls": True}),
    ],
)
def test_valid_urls_are_split(url: str, expected: dict[str, object]) -> None:
    parsed = parse_redis_url(url)
    for name, value in expected.items():
        assert getattr(parsed, name) == value, name


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("localhost:6379", "missing scheme"),
        ("http://h:6379", "unsupported scheme 'http'"),
        ("mongodb://u:pw@h", "unsupported scheme 'mongodb'"),
        ("redis://", "missing host"),
        ("redis://:pw@:6379", "missing host"),
        ("redis://h:port", "port 'port' is not a number"),
        ("redis://h:0", "port '0' is not a number from 1 to 65535"),
        ("redis://h:70000", "port '70000'"),
        ("redis://h:", "empty port"),
        ("redis://h/abc", "database 'abc' is not a non-negative integer"),
        ("redis://h/1/2", "must be a database number"),
        ("redis://h?db=x", "database 'x'"),
        ("redis://h?ssl_cert_reqs=none", "unknown query parameter 'ssl_cert_reqs'"),
        ("redis://h?protocol=4", "protocol '4' is not 2 or 3"),
        ("redis://h1:1,h2:2", "several hosts are only accepted"),
        ("redis://::1:6379", "must be written in brackets"),
        ("redis://[::1:6379", "unterminated IPv6"),
        ("redis://h#frag", "fragments"),
        ("unix://", "missing socket path"),
        ("unix://host/tmp/r.sock", "unix URLs take no host"),
        ("redis+cluster://n1:7000/3", "database 3 does not exist in Redis Cluster"),
        ("redis+cluster://n1:7000,,n2:7001", "empty host"),
        ("redis+sentinel://s1/m/x", "database 'x'"),
        ("redis+sentinel://s1/m/1/2", "sentinel path must be"),
    ],
)
def test_bad_urls_name_the_field_the_reason_and_the_accepted_forms(url: str, reason: str) -> None:
    with pytest.raises(RedisSettingsError) as caught:
        parse_redis_url(url)
    message = str(caught.value)
    assert message.startswith("redis.url: invalid value ")
    assert reason in message
    assert message.endswith(f"accepted: {ACCEPTED_URL_FORMS}")
    assert caught.value.field == "redis.url"
    assert isinstance(caught.value, ValueError)


def test_a_bad_url_never_shows_its_password() -> None:
    with pytest.raises(RedisSettingsError) as caught:
        RedisSettings(url="redis://app:hunter2-very-secret@cache:notaport/0")
    message = str(caught.value)
    assert "hunter2" not in message
    assert "redis://app:***@cache:notaport/0" in message
    assert caught.value.value == "redis://app:***@cache:notaport/0"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:pw@h", "redis://user:***@h"),
        ("rediss://user:p@ss:w@rd@h:1/0", "rediss://user:***@h:1/0"),
        ("redis://lonelytoken@h", "redis://***@h"),
        ("redis+sentinel://u:pw@s1:1,s2:2/m", "redis+sentinel://u:***@s1:1,s2:2/m"),
        ("not a url", "not a url"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_scrub_secrets_masks_urls_known_secrets_and_caps_length() -> None:
    message = "Error connecting to redis://app:topsecret@10.0.0.1:6379: AUTH topsecret failed"
    scrubbed = scrub_secrets(message, ("topsecret",))
    assert "topsecret" not in scrubbed
    assert "redis://app:***@10.0.0.1:6379" in scrubbed
    assert scrub_secrets("x" * 1000).endswith("...")
    assert len(scrub_secrets("x" * 1000)) == 300
    # Tiny "secrets" are not substituted (they would mangle the message and hint at their length).
    assert scrub_secrets("abc", ("a",)) == "abc"
    assert scrub_secrets("no secrets here", (None, "")) == "no secrets here"


# ----------------------------------------------------------------------------- settings


def test_default_settings_are_valid_and_hide_the_password_in_repr() -> None:
    settings = RedisSettings(password="do-not-print-me", sentinel_password="nor-me")
    assert "do-not-print-me" not in repr(settings)
    assert "nor-me" not in repr(settings)
    assert settings.breaker_open_seconds <= 2.0  # recovery "by itself" within a few seconds
    assert settings.scan_count == 1000


@pytest.mark.parametrize(
    ("kwargs", "field", "accepted"),
    [
        ({"max_connections": 0}, "redis.max_connections", "an integer from 1 to 1000"),
        ({"max_connections": 2.5}, "redis.max_connections", "an integer"),
        ({"max_connections": True}, "redis.max_connections", "an integer"),
        ({"connect_timeout_s": 0}, "redis.connect_timeout_s", "a number from 0.01 to 60"),
        ({"socket_timeout_s": 61}, "redis.socket_timeout_s", "a number from 0.01 to 60"),
        ({"socket_timeout_s": float("nan")}, "redis.socket_timeout_s", "a number"),
        ({"socket_timeout_s": "1"}, "redis.socket_timeout_s", "a number"),
        ({"pool_timeout_s": -1}, "redis.pool_timeout_s", "0.01 to 60"),
        ({"protocol": 4}, "redis.protocol", "2 (RESP2) or 3 (RESP3)"),
        ({"password": ""}, "redis.password", "a non-empty string"),
        ({"tls_cert_file": "/c.pem"}, "redis.tls_key_file", "both set"),
        ({"tls_key_file": "/k.pem"}, "redis.tls_cert_file", "both set"),
        ({"tls_verify": "yes"}, "redis.tls_verify", "true or false"),
        ({"breaker_failure_threshold": 0}, "redis.breaker_failure_threshold", "1 to 1000"),
        ({"breaker_open_seconds": 0}, "redis.breaker_open_seconds", "0.01 to 600"),
        ({"breaker_half_open_probes": 0}, "redis.breaker_half_open_probes", "1 to 100"),
        ({"scan_count": 1}, "redis.scan_count", "10 to 1e+06"),
        ({"spin_wait_us": -1}, "redis.spin_wait_us", "an integer from 0 to 10000"),
        ({"spin_wait_us": 10_001}, "redis.spin_wait_us", "an integer from 0 to 10000"),
        ({"spin_wait_us": 0.5}, "redis.spin_wait_us", "an integer"),
        ({"key_prefix": "cw*"}, "redis.key_prefix", "without glob characters"),
        ({"key_prefix": ""}, "redis.key_prefix", "without glob characters"),
        (
            {"coherence_reconnect_min_s": 1.0, "coherence_reconnect_max_s": 0.5},
            "redis.coherence_reconnect_max_s",
            ">= coherence_reconnect_min_s",
        ),
        ({"url": "redis+sentinel://s1:26379"}, "redis.sentinel_master", "a service name"),
        ({"url": "unix:///tmp/r.sock", "cluster": True}, "redis.cluster", "true only with"),
        ({"url": 6379}, "redis.url", "a Redis URL string"),
    ],
)
def test_bad_settings_name_the_field_and_the_accepted_values(
    kwargs: dict[str, object], field: str, accepted: str
) -> None:
    with pytest.raises(RedisSettingsError) as caught:
        RedisSettings(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: invalid value ")
    assert accepted in str(caught.value)


def test_a_bad_password_value_is_not_echoed() -> None:
    with pytest.raises(RedisSettingsError) as caught:
        RedisSettings(password=12345)  # type: ignore[arg-type]
    assert caught.value.field == "redis.password"


def test_sentinel_master_setting_completes_a_url_without_service() -> None:
    settings = RedisSettings(url="redis+sentinel://s1:26379", sentinel_master="mymaster")
    assert settings.sentinel_master == "mymaster"


def test_missing_tls_file_fails_at_build_time_with_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = RedisSettings(url="rediss://h:6379", tls_ca_file=str(tmp_path / "nope.crt"))
    with pytest.raises(RedisSettingsError) as caught:
        build_clients(settings)
    assert caught.value.field == "redis.tls_ca_file"
    assert "file missing or unreadable" in str(caught.value)


async def test_settings_win_over_url_credentials() -> None:
    settings = RedisSettings(url="redis://urluser:urlpass@h:1/2", username="setuser", password="setpass")
    clients = build_clients(settings)
    try:
        kwargs = clients.client.connection_pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("setuser", "setpass", 2)
        assert kwargs["socket_timeout"] == settings.socket_timeout_s
        assert kwargs["socket_connect_timeout"] == settings.connect_timeout_s
        assert kwargs["retry"].get_retries() == 0
        assert clients.client.connection_pool.max_connections == settings.max_connections
        assert clients.client.connection_pool.timeout == settings.pool_timeout_s
    finally:
        await clients.aclose()


async def test_url_credentials_used_when_settings_have_none() -> None:
    clients = build_clients(RedisSettings(url="rediss://urluser:urlpass@h:1/0?protocol=3"))
    try:
        kwargs = clients.client.connection_pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"], kwargs["protocol"]) == ("urluser", "urlpass", 3)
        assert kwargs["ssl_cert_reqs"] == "required"
        assert kwargs["ssl_check_hostname"] is True
    finally:
        await clients.aclose()


# ----------------------------------------------------------------------------- error kinds


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (rex.TimeoutError("Timeout reading from socket"), "timeout"),
        (TimeoutError(), "timeout"),
        (rex.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."), "connection"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection"),
        (rex.ConnectionError("No connection available."), "pool"),
        (rex.MaxConnectionsError("Too many connections"), "pool"),
        (rex.AuthenticationError("invalid username-password pair", status_code="WRONGPASS"), "auth"),
        (rex.AuthenticationError("Authentication required.", status_code="NOAUTH"), "auth"),
        (rex.ResponseError("NOAUTH Authentication required."), "auth"),
        (rex.NoPermissionError("this user has no permissions to run the 'config|get' command"), "permission"),
        (rex.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "oom"),
        (rex.ResponseError("OOM command not allowed when used memory > 'maxmemory'."), "oom"),
        (rex.ReadOnlyError("You can't write against a read only replica."), "readonly"),
        (rex.BusyLoadingError("Redis is loading the dataset in memory"), "loading"),
        (rex.ClusterDownError("The cluster is down"), "cluster"),
        (rex.MovedError("3999 127.0.0.1:6381"), "cluster"),
        (rex.ResponseError("CROSSSLOT Keys in request don't hash to the same slot"), "cluster"),
        (rex.RedisClusterException("Redis Cluster cannot be connected. Please provide..."), "connection"),
        (rex.ConnectionError("Error 1 connecting to h:6380. [SSL: CERTIFICATE_VERIFY_FAILED] ..."), "tls"),
        (ssl.SSLCertVerificationError("certificate verify failed"), "tls"),
        (rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), "other"),
        (ValueError("boom"), "other"),
    ],
)
def test_error_kinds(exc: BaseException, kind: str) -> None:
    assert classify_error(exc) == kind
    assert kind in ERROR_KINDS


def test_breaker_kinds_are_server_failures_only() -> None:
    assert {"timeout", "connection", "auth", "tls"} <= BREAKER_KINDS
    # A full Redis still serves reads; a pool wait and a forbidden command say nothing about the server.
    assert not {"oom", "pool", "permission", "other", "data"} & BREAKER_KINDS
    assert set(ERROR_KINDS) >= BREAKER_KINDS


def test_describe_error_restores_the_redis_error_code() -> None:
    exc = rex.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.", status_code="OOM")
    assert describe_error(exc) == "OutOfMemoryError: OOM command not allowed when used memory > 'maxmemory'."
    assert describe_error(ValueError()) == "ValueError: ValueError"


# ----------------------------------------------------------------------------- coherence stamps


def test_stamped_messages_round_trip_and_measure_lag() -> None:
    packed = pack_stamped(b"payload", now_ns=1_000_000_000)
    stamped = unpack_stamped(packed)
    assert stamped.payload == b"payload"
    assert stamped.sent_ns == 1_000_000_000
    assert lag_seconds(stamped, now_ns=1_002_500_000) == pytest.approx(0.0025)
    assert lag_seconds(stamped, now_ns=0) == 0.0  # clock skew never yields a negative lag
    assert unpack_stamped(pack_stamped(b"")).payload == b""


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"short", "shorter than the 12-byte stamp header"),
        (b"XXXX" + b"\0" * 8 + b"p", "is not b'CWs1'"),
        ("text", "expected bytes"),
    ],
)
def test_unstamped_bytes_are_rejected_with_a_reason(message: object, reason: str) -> None:
    with pytest.raises(ValueError, match="coherence message: ") as caught:
        unpack_stamped(message)  # type: ignore[arg-type]
    assert reason in str(caught.value)


# ----------------------------------------------------------------------------- memory summary


def test_memory_summary_sums_cluster_nodes_and_lists_policies() -> None:
    nodes = [
        {"used_memory": 100, "maxmemory": 1000, "maxmemory_policy": "noeviction", "evicted_keys": 0},
        {"used_memory": 300, "maxmemory": 1000, "maxmemory_policy": "allkeys-lru", "evicted_keys": 7},
    ]
    summary = summarize_memory_info(nodes)
    assert summary["nodes"] == 2
    assert summary["used_memory"] == 400
    assert summary["maxmemory"] == 2000
    assert summary["used_memory_ratio"] == pytest.approx(0.2)
    assert summary["evicted_keys"] == 7
    assert summary["maxmemory_policy"] == "noeviction"
    assert summary["maxmemory_policies"] == ["allkeys-lru", "noeviction"]


def test_memory_summary_without_a_limit_has_no_ratio() -> None:
    summary = summarize_memory_info([{"used_memory": 5, "maxmemory": 0}])
    assert summary["used_memory_ratio"] is None
    assert summary["maxmemory_policy"] is None


# ----------------------------------------------------------------------------- one scheme table


@pytest.mark.parametrize("scheme", sorted(URL_SCHEMES))
def test_every_scheme_is_accepted_by_the_engine_the_operator_model_and_the_crd(scheme: str) -> None:
    """One table (cache_runtime.l2.urls.URL_SCHEMES) feeds the engine's config, the operator's model
    and the CRD pattern: a scheme is accepted everywhere or nowhere."""
    import re
    from pathlib import Path

    import yaml

    from cache_operator.api import CachePolicySpec
    from cache_runtime import resolve_config

    tls = scheme.startswith("rediss")
    host = {"unix": "/tmp/redis.sock"}.get(scheme, "h:26379/main" if "sentinel" in scheme else "h:6379/0")
    url = f"{scheme}://{host}"
    assert resolve_config(redis_url=url).redis.url == url
    spec: dict[str, object] = {"runtime": {}, "redis": {"url": url}}
    if tls:
        spec["redis"] = {"url": url, "tls": {"enabled": True}}
    CachePolicySpec.model_validate(spec)
    crd_file = Path(__file__).resolve().parents[2] / "crds/cachepolicies.cachewarden.io.yaml"
    schema = yaml.safe_load(crd_file.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    redis = schema["properties"]["spec"]["properties"]["redis"]
    assert re.match(redis["properties"]["url"]["pattern"], url)
    assert not re.match(redis["properties"]["url"]["pattern"], "memcached://h:1")
