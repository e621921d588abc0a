"""One model of every engine parameter, one table of presets, one table of ranges.

Everything else is derived from this module: the engine reads ``CacheConfig``; the CRD's
``spec.overrides`` schema comes from :func:`overrides_json_schema`; ``docs/configuration.md`` is
:func:`render_configuration_doc` (a unit test fails when the checked-in file drifts from it).

Resolution is ``preset values -> overrides -> explicit redis_url``; see :func:`resolve_config`.
Every problem with an input names the field (as a dotted path), the value and what is accepted, and
is raised as :class:`ConfigError`. Unknown keys are errors, never warnings.

Secrets (the Redis password, or a password embedded in the Redis URL) never appear in ``repr``,
in :meth:`CacheConfig.public_dict`, in error messages or in the config hash: a password in the URL
is moved into ``redis.password`` (a ``SecretStr``) during validation.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, get_args
from urllib.parse import unquote

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from cache_runtime.l2.acl import acl_rules
from cache_runtime.l2.urls import URL_SCHEMES

__all__ = [
    "LZ4_LEVEL_MAP",
    "OPERATIONS",
    "PRESETS",
    "PRESET_NAMES",
    "RANGES",
    "CacheConfig",
    "ConfigError",
    "ConfigProblem",
    "Preset",
    "Range",
    "apply_overrides",
    "merge_overrides",
    "preserve_key_layout",
    "required_acl_rules",
    "resolve_config",
    "validate_config",
]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
DAY_S = 86_400


# --------------------------------------------------------------------------------------------------
# errors


@dataclass(frozen=True)
class ConfigProblem:
    """One rejected input: the dotted field path, the offending value and what would be accepted."""

    field: str
    value: Any
    accepted: str
    message: str

    def __str__(self) -> str:
        return self.message


class ConfigError(ValueError):
    """A configuration input was rejected.

    ``field``, ``value`` and ``accepted`` describe the first problem; ``problems`` lists all of them
    (pydantic may find several at once). The message names every field, value and accepted range.
    """

    def __init__(
        self,
        field: str,
        value: Any,
        accepted: str,
        message: str | None = None,
        problems: list[ConfigProblem] | None = None,
    ) -> None:
        shown = _redact(field, value)
        first = ConfigProblem(
            field, shown, accepted, message or f"{field}: {shown!r} is not accepted; accepted: {accepted}"
        )
        self.problems: list[ConfigProblem] = problems or [first]
        self.field = self.problems[0].field
        self.value = self.problems[0].value
        self.accepted = self.problems[0].accepted
        super().__init__("; ".join(p.message for p in self.problems))


_SECRET_FIELDS = {"redis.password"}


def _redact(field: str, value: Any) -> Any:
    """Hide secrets in anything that may reach a message or a log."""
    if field in _SECRET_FIELDS and value is not None:
        return "**********"
    if field == "redis.url" and isinstance(value, str):
        return _split_url_password(value)[0]
    return value


class _FieldProblem(ValueError):
    """Raised by cross-field validators so the error names the exact field (relative to its group)."""

    def __init__(self, field: str, value: Any, accepted: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.value = value
        self.accepted = accepted


# --------------------------------------------------------------------------------------------------
# ranges: the one table every check uses (validation, JSON schema bounds, docs)


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of a numeric parameter, with a human phrase for messages and docs."""

    low: float
    high: float
    phrase: str = ""

    def describe(self) -> str:
        """``low..high`` plus the phrase, as shown in errors and docs."""
        text = f"{_fmt_number(self.low)}..{_fmt_number(self.high)}"
        return f"{text} ({self.phrase})" if self.phrase else text


def _fmt_number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        value = int(value)
    return str(value)


_TTL = Range(1, 7 * DAY_S, "1 s to 7 days")
_TIMEOUT = Range(0.01, 60.0, "10 ms to 60 s")
_TEXT_CHARS = Range(1, 10_000_000, "characters")

RANGES: dict[str, Range] = {
    "ttl.default_s": _TTL,
    "ttl.summarize_s": _TTL,
    "ttl.sentiment_s": _TTL,
    "ttl.key_points_s": _TTL,
    "ttl.questions_s": _TTL,
    "ttl.qa_s": _TTL,
    "ttl.jitter_fraction": Range(0.0, 0.5, "share of the TTL removed at random"),
    "l1.max_entries": Range(0, 1_000_000, "0 turns L1 off"),
    "l1.max_bytes": Range(0, 4 * GIB, "0 turns L1 off; up to 4 GiB"),
    "l1.sweep_batch": Range(0, 1000, "entries checked for expiry per write"),
    "compression.threshold_bytes": Range(0, 100 * MIB, "0 to 100 MiB"),
    "compression.level": Range(1, 9, "1-3 lz4 fast, 4-9 lz4 HC"),
    "compression.min_saving_ratio": Range(0.0, 0.9, "share of bytes compression must save"),
    "compression.offload_threshold_bytes": Range(0, 1 * GIB, "0 = never off the event loop"),
    "redis.max_connections": Range(1, 1000),
    "redis.connect_timeout_s": _TIMEOUT,
    "redis.socket_timeout_s": _TIMEOUT,
    "redis.pool_timeout_s": _TIMEOUT,
    "redis.breaker_failure_threshold": Range(1, 1000, "consecutive failures"),
    "redis.breaker_open_s": Range(0.01, 600.0, "seconds before a half-open probe"),
    "redis.breaker_half_open_probes": Range(1, 100),
    "redis.scan_count": Range(10, 100_000, "SCAN COUNT hint"),
    "redis.spin_wait_us": Range(0, 10_000, "microseconds; 0 never polls"),
    "keys.text_hash_threshold": Range(0, 1_000_000, "characters"),
    "keys.tiers.small": _TEXT_CHARS,
    "keys.tiers.medium": _TEXT_CHARS,
    "keys.tiers.large": _TEXT_CHARS,
    "keys.max_text_length": Range(1, 100_000_000, "characters"),
    "stampede.early_refresh_fraction": Range(0.0, 0.9, "0 turns early refresh off"),
    "stampede.lease_ttl_s": Range(0.01, 600.0, "10 ms to 10 min"),
    "stampede.lease_wait_s": Range(0.0, 600.0, "0 to 10 min"),
    "health.hit_rate_warning": Range(0.0, 1.0),
    "health.hit_rate_critical": Range(0.0, 1.0),
    "health.memory_warning_mb": Range(1, 1_000_000),
    "health.memory_critical_mb": Range(1, 1_000_000),
    "health.latency_warning_ms": Range(0.1, 60_000.0),
    "health.latency_critical_ms": Range(0.1, 60_000.0),
    "health.min_requests": Range(0, 1_000_000, "requests before hit rates are judged"),
}


def _ranged(path: str, default: Any, description: str) -> Any:
    """A pydantic Field whose bounds come from RANGES, so schema, docs and validation agree."""
    bounds = RANGES[path]
    low: float = bounds.low
    high: float = bounds.high
    if isinstance(default, int) and not isinstance(default, bool) and float(low).is_integer():
        low, high = int(low), int(high)
    return Field(default, ge=low, le=high, description=f"{description} Range: {bounds.describe()}.")


# lz4 has no 1-9 scale; presets.md inherits zlib's. The map keeps the original meaning ("higher is
# smaller and slower"): 1-3 use lz4's fast block mode (acceleration 8, 4, 1), 4-9 use lz4 HC levels.
# Level 9 stops at HC 10 (the first optimal-parser level): HC 11-12 cost 4-10x more CPU for <0.5%.
LZ4_LEVEL_MAP: dict[int, tuple[Literal["fast", "high_compression"], int]] = {
    1: ("fast", 8),
    2: ("fast", 4),
    3: ("fast", 1),
    4: ("high_compression", 3),
    5: ("high_compression", 4),
    6: ("high_compression", 6),
    7: ("high_compression", 8),
    8: ("high_compression", 9),
    9: ("high_compression", 10),
}


# --------------------------------------------------------------------------------------------------
# the model


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TTLConfig(_Group):
    """Time to live of cached entries, in seconds, per AI operation and by default."""

    default_s: int = _ranged("ttl.default_s", 7200, "TTL of every entry without an operation-specific TTL.")
    summarize_s: int | None = _ranged(
        "ttl.summarize_s", None, "TTL of `summarize` results; null = default_s."
    )
    sentiment_s: int | None = _ranged(
        "ttl.sentiment_s", None, "TTL of `sentiment` results; null = default_s."
    )
    key_points_s: int | None = _ranged(
        "ttl.key_points_s", None, "TTL of `key_points` results; null = default_s."
    )
    questions_s: int | None = _ranged(
        "ttl.questions_s", None, "TTL of `questions` results; null = default_s."
    )
    qa_s: int | None = _ranged("ttl.qa_s", None, "TTL of `qa` results; null = default_s.")
    jitter_fraction: float = _ranged(
        "ttl.jitter_fraction",
        0.1,
        "Each write's TTL is shortened by a random share up to this fraction, so entries written "
        "together do not expire together (never lengthened).",
    )

    def for_operation(self, operation: str | None) -> int:
        """The TTL in seconds for an operation (unknown operations and None use ``default_s``)."""
        if operation is not None:
            specific = getattr(self, f"{operation}_s", None) if operation in OPERATIONS else None
            if specific is not None:
                return int(specific)
        return self.default_s


# The AI operations, each with a TTL of its own (ttl.<operation>_s); the one list of them: stats counts
# hits and misses per operation from it, keys and the service accept these names.
OPERATIONS: tuple[str, ...] = ("summarize", "sentiment", "key_points", "questions", "qa")


class L1Config(_Group):
    """The in-process memory tier."""

    max_entries: int = _ranged("l1.max_entries", 500, "Most entries L1 holds (LRU eviction beyond).")
    max_bytes: int = _ranged(
        "l1.max_bytes", 32 * MIB,
        "Most bytes L1 holds, counted as what each entry takes in memory (decoded value, key, entry)."
    )
    sweep_batch: int = _ranged(
        "l1.sweep_batch", 8, "Oldest entries checked for expiry on each write (amortised sweep)."
    )


class CompressionConfig(_Group):
    """lz4 compression of encoded values."""

    threshold_bytes: int = _ranged(
        "compression.threshold_bytes", 500, "Serialized values at least this large are tried with lz4."
    )
    level: int = _ranged(
        "compression.level", 9, "1-9 as in the original (zlib scale); mapped to lz4, see the level map."
    )
    min_saving_ratio: float = _ranged(
        "compression.min_saving_ratio",
        0.1,
        "Compressed form is kept only if it saves at least this share of the bytes.",
    )
    offload_threshold_bytes: int = _ranged(
        "compression.offload_threshold_bytes",
        256 * KIB,
        "Values at least this large are serialized, compressed and decoded in a worker thread; 0 = never.",
    )


class CodecConfig(_Group):
    """Serialization format of values."""

    format: Literal["json", "msgpack"] = Field(
        default="json", description="`json` (orjson) or `msgpack`. Bytes values are stored raw under either."
    )


class RedisConfig(_Group):
    """The Redis tier (L2). With no URL the engine runs memory-only."""

    url: str | None = Field(
        default=None,
        description="redis://, rediss:// (TLS), unix://, redis+sentinel:// or rediss+sentinel://; "
        "null = no L2 (memory only). A password in the URL moves to `password`.",
    )
    username: str | None = Field(default=None, description="ACL user name (AUTH username password).")
    password: SecretStr | None = Field(default=None, description="AUTH password; never shown or hashed.")
    max_connections: int = _ranged("redis.max_connections", 20, "Size of the bounded blocking pool.")
    connect_timeout_s: float = _ranged("redis.connect_timeout_s", 10.0, "TCP/TLS connect timeout.")
    socket_timeout_s: float = _ranged("redis.socket_timeout_s", 1.0, "Read/write timeout of a command.")
    pool_timeout_s: float = _ranged("redis.pool_timeout_s", 0.5, "Longest wait for a free pooled connection.")
    tls_ca_file: str | None = Field(
        default=None, description="CA bundle that verifies the server (rediss://)."
    )
    tls_cert_file: str | None = Field(default=None, description="Client certificate for mutual TLS.")
    tls_key_file: str | None = Field(default=None, description="Client private key for mutual TLS.")
    tls_verify: bool = Field(default=True, description="Verify the server certificate and host name.")
    sentinel_master: str | None = Field(
        default=None, description="Sentinel master name (redis+sentinel:// URLs)."
    )
    cluster: bool = Field(default=False, description="Talk Redis Cluster protocol to the URL's node.")
    breaker_failure_threshold: int = _ranged(
        "redis.breaker_failure_threshold", 3, "Consecutive failures that open the circuit breaker."
    )
    breaker_open_s: float = _ranged(
        "redis.breaker_open_s", 2.0, "Seconds the breaker stays open before a half-open probe."
    )
    breaker_half_open_probes: int = _ranged(
        "redis.breaker_half_open_probes", 1, "Successful probes that close the breaker again."
    )
    scan_count: int = _ranged("redis.scan_count", 1000, "COUNT of each SCAN during pattern invalidation.")
    spin_wait_us: int = _ranged(
        "redis.spin_wait_us",
        200,
        "How long a lone GET polls the event loop for its reply before sleeping on the socket, while "
        "lone GETs are answered within twice that on average. Waking a sleeping process can cost more "
        "than a round trip to a nearby Redis (on a VM whose idle vCPUs halt at once); polling runs only "
        "while nothing else is ready and ends when the reply is there.",
    )

    @model_validator(mode="before")
    @classmethod
    def _move_url_password(cls, data: Any) -> Any:
        # A password embedded in the URL would leak through every dump of the config; keep it only
        # in the SecretStr field.
        if not isinstance(data, Mapping) or not isinstance(data.get("url"), str):
            return data
        stripped, password = _split_url_password(data["url"])
        if password is None:
            return data
        data = dict(data)
        given = data.get("password")
        given_plain = given.get_secret_value() if isinstance(given, SecretStr) else given
        if given_plain is not None and given_plain != password:
            raise ValueError("the URL carries a password that differs from redis.password; give it once")
        data["url"] = stripped
        data["password"] = password
        return data

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in REDIS_URL_SCHEMES:
            raise ValueError(
                f"unsupported URL scheme {scheme or '(none)'!r}; accepted: {', '.join(REDIS_URL_SCHEMES)}"
            )
        return url

    @model_validator(mode="after")
    def _check_tls_pair(self) -> RedisConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            missing = "tls_key_file" if self.tls_key_file is None else "tls_cert_file"
            raise _FieldProblem(
                missing,
                None,
                "a file path (mutual TLS needs both cert and key)",
                "tls_cert_file and tls_key_file go together",
            )
        return self


REDIS_URL_SCHEMES: tuple[str, ...] = tuple(URL_SCHEMES)

_URL_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/]*)@(?P<rest>.*)$")


def _split_url_password(url: str) -> tuple[str, str | None]:
    """Return the URL without its password, and the password (URL-decoded) if it had one."""
    match = _URL_USERINFO.match(url)
    if match is None or ":" not in match["userinfo"]:
        return url, None
    user, password = match["userinfo"].split(":", 1)
    userinfo = f"{user}@" if user else ""
    return f"{match['scheme']}{userinfo}{match['rest']}", unquote(password)


class TiersConfig(_Group):
    """Text size tiers; the tier letter is part of AI keys so key analysis can group by size."""

    small: int = _ranged("keys.tiers.small", 1000, "Texts up to this many characters are tier `s`.")
    medium: int = _ranged("keys.tiers.medium", 5000, "Up to this many: tier `m`.")
    large: int = _ranged("keys.tiers.large", 25000, "Up to this many: tier `l`; longer: tier `x`.")

    @model_validator(mode="after")
    def _ascending(self) -> TiersConfig:
        if not self.small < self.medium:
            raise _FieldProblem(
                "medium",
                self.medium,
                f"greater than small ({self.small})",
                f"tiers must be strictly ascending (small < medium < large); got "
                f"small={self.small}, medium={self.medium}, large={self.large}",
            )
        if not self.medium < self.large:
            raise _FieldProblem(
                "large",
                self.large,
                f"greater than medium ({self.medium})",
                f"tiers must be strictly ascending (small < medium < large); got "
                f"small={self.small}, medium={self.medium}, large={self.large}",
            )
        return self


class NormalizeConfig(_Group):
    """Text normalization before keying (the runbook's fix for low hit rates from inconsistent input)."""

    line_endings: bool = Field(default=False, description="CRLF and CR become LF.")
    invisible_chars: bool = Field(default=False, description="Drop zero-width, BOM, soft hyphen, bidi marks.")
    whitespace: bool = Field(default=False, description="Runs of whitespace become one space; ends stripped.")
    case: bool = Field(default=False, description="Case-fold the text (and question).")


class KeysConfig(_Group):
    """Key layout: `{prefix}:{namespace}:v{namespace_version}:k{schema}:...`."""

    prefix: str = Field(
        default="cw",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="First segment of every key (letters, digits, `_.-`; up to 32).",
    )
    namespace: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Namespace; invalidating it is one INCR of its version.",
    )
    hash_algorithm: Literal["xxh3_128", "sha256"] = Field(
        default="xxh3_128", description="Digest of hashed key fields."
    )
    text_hash_threshold: int = _ranged(
        "keys.text_hash_threshold", 1000, "Texts longer than this are always hashed."
    )
    readable_small_text: bool = Field(
        default=False, description="Keep texts up to text_hash_threshold readable (escaped) in keys."
    )
    tiers: TiersConfig = Field(default_factory=TiersConfig, description="Text size tiers.")
    max_text_length: int = _ranged(
        "keys.max_text_length", 200_000, "Longest text accepted for keying when ai_features is on."
    )
    normalize: NormalizeConfig = Field(
        default_factory=NormalizeConfig, description="Text normalization before keying; all off by default."
    )


class CoherenceConfig(_Group):
    """Cross-pod L1 coherence over Redis pub/sub."""

    enabled: bool = Field(
        default=True, description="Broadcast invalidations and drop L1 entries others invalidate."
    )
    channel: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Pub/sub channel; null = `{prefix}#coherence`.",
    )


class StampedeConfig(_Group):
    """Protection against many callers computing the same missing value."""

    single_flight: bool = Field(
        default=True, description="Concurrent get_or_compute of one key share one loader call."
    )
    early_refresh_fraction: float = _ranged(
        "stampede.early_refresh_fraction",
        0.1,
        "get_or_compute refreshes in the background when less than this share of the TTL remains.",
    )
    lease_lock: bool = Field(
        default=False, description="A Redis lease (SET NX PX) so one pod computes a missing key."
    )
    lease_ttl_s: float = _ranged("stampede.lease_ttl_s", 30.0, "Lifetime of a lease.")
    lease_wait_s: float = _ranged(
        "stampede.lease_wait_s",
        10.0,
        "How long other pods wait for the lease holder's value before computing.",
    )

    @model_validator(mode="after")
    def _wait_within_lease(self) -> StampedeConfig:
        if self.lease_wait_s > self.lease_ttl_s:
            raise _FieldProblem(
                "lease_wait_s",
                self.lease_wait_s,
                f"at most lease_ttl_s ({self.lease_ttl_s})",
                "waiting longer than the lease lives makes no sense",
            )
        return self


class HealthConfig(_Group):
    """Thresholds of health(); the runbook's defaults."""

    hit_rate_warning: float = _ranged("health.hit_rate_warning", 0.6, "Hit rate below this is degraded.")
    hit_rate_critical: float = _ranged("health.hit_rate_critical", 0.4, "Hit rate below this is unhealthy.")
    memory_warning_mb: float = _ranged("health.memory_warning_mb", 50, "Cache memory above this is degraded.")
    memory_critical_mb: float = _ranged(
        "health.memory_critical_mb", 100, "Cache memory above this is unhealthy."
    )
    latency_warning_ms: float = _ranged(
        "health.latency_warning_ms", 20.0, "p95 latency above this is degraded."
    )
    latency_critical_ms: float = _ranged(
        "health.latency_critical_ms", 50.0, "p95 latency above this is unhealthy."
    )
    min_requests: int = _ranged("health.min_requests", 100, "Requests before hit rates are judged.")

    @model_validator(mode="after")
    def _ordered(self) -> HealthConfig:
        if self.hit_rate_critical > self.hit_rate_warning:
            raise _FieldProblem(
                "hit_rate_critical",
                self.hit_rate_critical,
                f"at most hit_rate_warning ({self.hit_rate_warning})",
                "a critical hit rate is lower than the warning one",
            )
        if self.memory_warning_mb > self.memory_critical_mb:
            raise _FieldProblem(
                "memory_warning_mb",
                self.memory_warning_mb,
                f"at most memory_critical_mb ({self.memory_critical_mb})",
                "the memory warning comes before the critical level",
            )
        if self.latency_warning_ms > self.latency_critical_ms:
            raise _FieldProblem(
                "latency_warning_ms",
                self.latency_warning_ms,
                f"at most latency_critical_ms ({self.latency_critical_ms})",
                "the latency warning comes before the critical level",
            )
        return self


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

Preset = Literal[
    "disabled",
    "minimal",
    "simple",
    "development",
    "production",
    "ai-development",
    "ai-production",
    "conservative",
    "performance",
]
# The one preset list: the engine's table below, the operator's spec.preset enum and the CRD use it.
PRESET_NAMES: tuple[str, ...] = get_args(Preset)


class CacheConfig(_Group):
    """Every parameter of the cache engine. Defaults are the `production` preset.

    Build one with :func:`resolve_config`; the model is frozen, so a change is a new config (applied
    live with ``TieredCache.apply_config``).
    """

    preset: str = Field(
        default="production", description="The preset this config was resolved from (a label)."
    )
    enabled: bool = Field(
        default=True, description="false = store nothing, every get misses, Redis untouched."
    )
    ai_features: bool = Field(
        default=False,
        description="AI input guards: texts longer than keys.max_text_length are refused for keying.",
    )
    monitoring: bool = Field(
        default=True, description="Record latency histograms (counters are always kept)."
    )
    log_level: LogLevel = Field(default="INFO", description="Level of the `cache_runtime` logger.")
    ttl: TTLConfig = Field(default_factory=TTLConfig, description="Entry lifetimes.")
    l1: L1Config = Field(default_factory=L1Config, description="In-process memory tier.")
    compression: CompressionConfig = Field(default_factory=CompressionConfig, description="lz4 compression.")
    codec: CodecConfig = Field(default_factory=CodecConfig, description="Serialization format.")
    redis: RedisConfig = Field(default_factory=RedisConfig, description="Redis tier (L2).")
    keys: KeysConfig = Field(default_factory=KeysConfig, description="Key layout and text handling.")
    coherence: CoherenceConfig = Field(default_factory=CoherenceConfig, description="Cross-pod L1 coherence.")
    stampede: StampedeConfig = Field(default_factory=StampedeConfig, description="Stampede protection.")
    health: HealthConfig = Field(default_factory=HealthConfig, description="Health thresholds.")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        if preset not in PRESET_NAMES and preset != "custom":
            raise ValueError(f"unknown preset {preset!r}; accepted: {', '.join(PRESET_NAMES)}, custom")
        return preset

    # derived values ----------------------------------------------------------------------------

    @property
    def coherence_channel(self) -> str:
        """The pub/sub channel in force (explicit, or derived from the key prefix)."""
        return self.coherence.channel or f"{self.keys.prefix}#coherence"

    def public_dict(self) -> dict[str, Any]:
        """The config as plain JSON data with secrets redacted (for status, logs and the hash)."""
        data = self.model_dump(mode="json")
        data["redis"]["password"] = None if self.redis.password is None else "**********"
        return data

    @cached_property
    def _hash(self) -> str:
        return hashlib.sha256(canonical_json(self.public_dict())).hexdigest()

    def config_hash(self) -> str:
        """sha256 (hex) over the canonical JSON of :meth:`public_dict`.

        Stable across processes and Python versions; the password is excluded (only whether one is
        set counts), so the hash can be shown in Kubernetes status without helping anyone guess it.
        """
        return self._hash

    def key_layout(self) -> dict[str, Any]:
        """The settings that shape keys; two configs with equal layouts address the same entries."""
        return self.keys.model_dump(mode="json")


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no whitespace: the one canonical JSON used for hashing."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def merge_overrides(
    base: Mapping[str, Any], extra: Mapping[str, Any], *, where: str = "overrides"
) -> dict[str, Any]:
    """Nested merge of parameter groups: ``extra`` wins, sub-groups merge, nothing is shared.

    Dotted keys (``ttl.default_s``) are expanded first, in ``base`` too, so ``extra`` wins over them.
    The one merge of overrides: presets, ``resolve_config``, the operator's spec and its time-boxed
    overrides all use it. Raises ValueError naming ``<where>.<key>`` when a dotted key goes through a
    value as if it were a group.
    """
    out: dict[str, Any] = {}
    for source in (base, extra):
        for key, value in source.items():
            parts = key.split(".")
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    raise ValueError(f"{where}.{key}: {part!r} is a parameter group, not a value")
            leaf = parts[-1]
            if isinstance(value, Mapping) and isinstance(target.get(leaf), dict):
                target[leaf] = merge_overrides(target[leaf], value, where=where)
            elif isinstance(value, Mapping):
                target[leaf] = merge_overrides({}, value, where=where)
            else:
                target[leaf] = value
    return out


# --------------------------------------------------------------------------------------------------
# presets: the original's table (presets.md) plus conservative and performance (ours)

_AI_DEV_TTLS = {
    "summarize_s": 1800,
    "sentiment_s": 900,
    "key_points_s": 1200,
    "questions_s": 1500,
    "qa_s": 900,
}
_AI_PROD_TTLS = {
    "summarize_s": 14400,
    "sentiment_s": 7200,
    "key_points_s": 10800,
    "questions_s": 9600,
    "qa_s": 7200,
}


def _preset(
    *,
    ttl: int,
    entries: int,
    l1_bytes: int,
    max_conn: int,
    connect: float,
    threshold: int,
    level: int,
    ai: bool,
    monitoring: bool,
    log_level: str,
    socket: float,
    jitter: float,
    early_refresh: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One row of the preset table as nested override data (every column spelled out)."""
    data: dict[str, Any] = {
        "ai_features": ai,
        "monitoring": monitoring,
        "log_level": log_level,
        "ttl": {"default_s": ttl, "jitter_fraction": jitter},
        "l1": {"max_entries": entries, "max_bytes": l1_bytes},
        "compression": {"threshold_bytes": threshold, "level": level},
        "redis": {"max_connections": max_conn, "connect_timeout_s": connect, "socket_timeout_s": socket},
        "stampede": {"early_refresh_fraction": early_refresh},
    }
    for group, values in (extra or {}).items():
        if isinstance(values, dict) and isinstance(data.get(group), dict):
            data[group] = merge_overrides(data[group], values)
        else:
            data[group] = values
    return data


# Byte budgets (ours; presets.md only gives entry counts): sized so a full L1 stays under the
# runbook's 50 MB memory warning in every preset, and roughly 32-64 KiB per entry, which fits AI
# responses (summaries, key points) with headroom. Socket timeouts (ours): a cache read that takes
# longer than this is worth less than a miss, so they stay short even where connect timeouts are long.
PRESETS: dict[str, dict[str, Any]] = {
    "disabled": _preset(
        ttl=300,
        entries=10,
        l1_bytes=1 * MIB,
        max_conn=1,
        connect=1,
        threshold=10000,
        level=1,
        ai=False,
        monitoring=False,
        log_level="WARNING",
        socket=1.0,
        jitter=0.0,
        early_refresh=0.0,
        extra={"enabled": False, "coherence": {"enabled": False}},
    ),
    "minimal": _preset(
        ttl=900,
        entries=25,
        l1_bytes=2 * MIB,
        max_conn=2,
        connect=3,
        threshold=5000,
        level=1,
        ai=False,
        monitoring=False,
        log_level="ERROR",
        socket=1.0,
        jitter=0.0,
        early_refresh=0.0,
    ),
    "simple": _preset(
        ttl=3600,
        entries=100,
        l1_bytes=4 * MIB,
        max_conn=5,
        connect=5,
        threshold=1000,
        level=6,
        ai=False,
        monitoring=True,
        log_level="INFO",
        socket=1.0,
        jitter=0.05,
        early_refresh=0.0,
    ),
    "development": _preset(
        ttl=600,
        entries=50,
        l1_bytes=2 * MIB,
        max_conn=3,
        connect=2,
        threshold=2000,
        level=3,
        ai=False,
        monitoring=True,
        log_level="DEBUG",
        socket=2.0,
        jitter=0.0,
        early_refresh=0.0,
        extra={"keys": {"readable_small_text": True}},
    ),
    "production": _preset(
        ttl=7200,
        entries=500,
        l1_bytes=32 * MIB,
        max_conn=20,
        connect=10,
        threshold=500,
        level=9,
        ai=False,
        monitoring=True,
        log_level="INFO",
        socket=1.0,
        jitter=0.1,
        early_refresh=0.1,
    ),
    "ai-development": _preset(
        ttl=1800,
        entries=100,
        l1_bytes=8 * MIB,
        max_conn=5,
        connect=5,
        threshold=1000,
        level=6,
        ai=True,
        monitoring=True,
        log_level="DEBUG",
        socket=2.0,
        jitter=0.0,
        early_refresh=0.0,
        extra={
            "ttl": _AI_DEV_TTLS,
            "keys": {
                "text_hash_threshold": 500,
                "readable_small_text": True,
                "tiers": {"small": 500, "medium": 2000, "large": 10000},
                "max_text_length": 50000,
            },
        },
    ),
    "ai-production": _preset(
        ttl=14400,
        entries=1000,
        l1_bytes=48 * MIB,
        max_conn=25,
        connect=15,
        threshold=300,
        level=9,
        ai=True,
        monitoring=True,
        log_level="INFO",
        socket=1.0,
        jitter=0.1,
        early_refresh=0.1,
        extra={
            "ttl": _AI_PROD_TTLS,
            "keys": {
                "text_hash_threshold": 1000,
                "tiers": {"small": 1000, "medium": 5000, "large": 25000},
                "max_text_length": 200000,
            },
            # LLM calls take seconds: one pod computes, the others wait for its value.
            "stampede": {"lease_lock": True, "lease_ttl_s": 30.0, "lease_wait_s": 10.0},
        },
    ),
    # Emergency presets (ours). conservative: survive pressure on memory, Redis and CPU.
    "conservative": _preset(
        ttl=1800,
        entries=200,
        l1_bytes=4 * MIB,
        max_conn=5,
        connect=1,
        threshold=4096,
        level=1,
        ai=False,
        monitoring=True,
        log_level="WARNING",
        socket=0.25,
        jitter=0.1,
        early_refresh=0.0,
        extra={
            "redis": {"pool_timeout_s": 0.1, "breaker_failure_threshold": 2, "breaker_open_s": 5.0},
            "stampede": {"lease_lock": False},
        },
    ),
    # performance: big L1, cheap compression, a larger pool, tight timeouts.
    "performance": _preset(
        ttl=14400,
        entries=20000,
        l1_bytes=48 * MIB,
        max_conn=100,
        connect=1,
        threshold=4096,
        level=2,
        ai=False,
        monitoring=True,
        log_level="WARNING",
        socket=0.1,
        jitter=0.1,
        early_refresh=0.1,
        extra={"redis": {"pool_timeout_s": 0.05}, "l1": {"sweep_batch": 16}},
    ),
}


# --------------------------------------------------------------------------------------------------
# resolution


def resolve_config(
    preset: str = "production", overrides: Mapping[str, Any] | None = None, redis_url: str | None = None
) -> CacheConfig:
    """Resolve ``preset`` + ``overrides`` (+ ``redis_url``) into a validated, frozen CacheConfig.

    ``overrides`` may be nested (``{"ttl": {"default_s": 60}}``), dotted (``{"ttl.default_s": 60}``)
    or both. Unknown keys raise :class:`ConfigError` naming the key path and listing the accepted
    keys; out-of-range values raise it naming the field, the value and the range.
    """
    if preset not in PRESETS:
        raise ConfigError(
            "preset",
            preset,
            ", ".join(PRESET_NAMES),
            f"preset: unknown preset {preset!r}; accepted: {', '.join(PRESET_NAMES)}",
        )
    data = merge_overrides({}, PRESETS[preset])
    if overrides:
        data = apply_overrides(data, overrides)
    if redis_url is not None:
        data.setdefault("redis", {})["url"] = redis_url
    data["preset"] = preset
    return validate_config(data)


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge overrides (nested or dotted) into ``base``, checking every key against the model."""
    if not isinstance(overrides, Mapping):
        raise ConfigError("overrides", type(overrides).__name__, "an object of parameter groups")
    merged = merge_overrides({}, base)
    for raw_key, value in overrides.items():
        if not isinstance(raw_key, str) or not raw_key:
            raise ConfigError("overrides", raw_key, "non-empty string keys")
        _set_path(merged, raw_key.split("."), value, CacheConfig, prefix="")
    return merged


_NOT_OVERRIDABLE = {"preset"}


def _set_path(
    target: dict[str, Any], parts: list[str], value: Any, model: type[BaseModel], prefix: str
) -> None:
    name, rest = parts[0], parts[1:]
    path = f"{prefix}{name}"
    fields = {n: f for n, f in model.model_fields.items() if not (prefix == "" and n in _NOT_OVERRIDABLE)}
    if name not in fields:
        raise _unknown_key(path, value, fields)
    sub = group_model(fields[name])
    if sub is None:
        if rest:
            raise ConfigError(
                path + "." + ".".join(rest),
                value,
                f"{path} is a value, not a group",
                f"{path + '.' + '.'.join(rest)}: {path} is a single value and has no keys",
            )
        target[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return
    child = target.get(name)
    if not isinstance(child, dict):
        child = {}
        target[name] = child
    if rest:
        _set_path(child, rest, value, sub, prefix=f"{path}.")
        return
    if not isinstance(value, Mapping):
        raise ConfigError(path, value, f"an object with keys {', '.join(sub.model_fields)}")
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(path, key, "non-empty string keys")
        _set_path(child, key.split("."), item, sub, prefix=f"{path}.")


def _unknown_key(path: str, value: Any, fields: Mapping[str, FieldInfo]) -> ConfigError:
    accepted = ", ".join(fields)
    name = path.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, list(fields), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(path, value, accepted, f"{path}: unknown key{hint}; accepted keys here: {accepted}")


def group_model(info: FieldInfo) -> type[BaseModel] | None:
    """The model of a parameter group's field (e.g. ``ttl``), or None for a single value."""
    annotation = info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def validate_config(data: Mapping[str, Any]) -> CacheConfig:
    """Validate complete (nested) config data into a CacheConfig, raising :class:`ConfigError`."""
    try:
        return CacheConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise _config_error(exc) from None


def _config_error(exc: ValidationError) -> ConfigError:
    problems = [_problem(err) for err in exc.errors(include_url=False)]
    first = problems[0]
    return ConfigError(first.field, first.value, first.accepted, problems=problems)


def _problem(err: Any) -> ConfigProblem:
    path = ".".join(str(part) for part in err["loc"])
    value = _redact(path, err.get("input"))
    kind = err["type"]
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"} and path in RANGES:
        accepted = RANGES[path].describe()
        return ConfigProblem(
            path, value, accepted, f"{path}: {value!r} is out of range; accepted: {accepted}"
        )
    if kind == "extra_forbidden":
        parent_path = path.rpartition(".")[0]
        fields = _fields_at(parent_path)
        error = _unknown_key(path, value, fields)
        return error.problems[0]
    if kind == "literal_error":
        accepted = str(err.get("ctx", {}).get("expected", ""))
        return _plain_problem(path, value, accepted)
    if kind == "string_pattern_mismatch":
        return _plain_problem(path, value, f"a string matching {err.get('ctx', {}).get('pattern', '')}")
    problem = err.get("ctx", {}).get("error")
    if isinstance(problem, _FieldProblem):
        where = f"{path}.{problem.field}" if path else problem.field
        shown = _redact(where, problem.value)
        return ConfigProblem(
            where,
            shown,
            problem.accepted,
            f"{where}: {shown!r} is not accepted ({problem}); accepted: {problem.accepted}",
        )
    if kind in {"value_error", "assertion_error"}:
        reason = str(err.get("ctx", {}).get("error", err["msg"]))
        shown = "(see message)" if isinstance(value, Mapping) else value
        where = path or "config"
        return ConfigProblem(where, shown, reason, f"{where}: {reason}")
    accepted = _expected_type(path)
    return ConfigProblem(
        path, value, accepted, f"{path}: {value!r} is not accepted ({err['msg']}); accepted: {accepted}"
    )


def _plain_problem(path: str, value: Any, accepted: str) -> ConfigProblem:
    return ConfigProblem(path, value, accepted, f"{path}: {value!r} is not accepted; accepted: {accepted}")


def _fields_at(path: str) -> Mapping[str, FieldInfo]:
    model: type[BaseModel] = CacheConfig
    for part in filter(None, path.split(".")):
        info = model.model_fields.get(part)
        sub = group_model(info) if info is not None else None
        if sub is None:
            return {}
        model = sub
    return model.model_fields


def _field_info(path: str) -> FieldInfo | None:
    parent, _, name = path.rpartition(".")
    return _fields_at(parent).get(name)


def _expected_type(path: str) -> str:
    info = _field_info(path)
    if info is None:
        return "see docs/configuration.md"
    text = _type_text(info)
    if path in RANGES:
        text += f" in {RANGES[path].describe()}"
    return text


def _type_text(info: FieldInfo) -> str:
    annotation = info.annotation
    if group_model(info) is not None:
        return "object"
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    text = text.replace("pydantic.types.SecretStr", "string (secret)").replace("SecretStr", "string (secret)")
    text = text.replace("str", "string").replace("int", "integer").replace("bool", "boolean")
    return text.replace("NoneType", "null").replace(" | ", " or ")


def preserve_key_layout(new: CacheConfig, current: CacheConfig) -> CacheConfig:
    """``new`` with the key settings of ``current``.

    Emergency presets (conservative, performance) are applied to running caches; keeping the key
    layout means the switch does not turn every entry into a miss.
    """
    data = new.model_dump()
    data["keys"] = current.keys.model_dump()
    data["preset"] = new.preset
    return validate_config(data)


# --------------------------------------------------------------------------------------------------
# derived facts


def required_acl_rules(config: CacheConfig) -> tuple[str, ...]:
    """The ``ACL SETUSER`` rules an engine with ``config`` needs, and nothing more (add ``on`` and
    the password): its keys ``{prefix}:*`` (entries) and ``{prefix}#*`` (namespace versions,
    leases), its coherence channel, and the commands the Redis tier sends
    (:func:`cache_runtime.l2.acl.acl_rules`).

    The one list the docs (docs/configuration.md, docs/engine.md) and the ACL tests use.
    """
    return acl_rules(config.keys.prefix, config.coherence_channel, cluster=config.redis.cluster)
