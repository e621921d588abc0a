"""The guide's flat config keys (``default_ttl``, ``normalize_text``, ...) mapped onto the real config.

The guide's ``config/update`` bodies, ``redis-config/update``, ``text-processor/configure``,
``memory/pressure-config`` and ``health/configure`` use names of the service this product grew from.
:func:`translate` turns such a body into dotted overrides of :class:`~cache_runtime.config.CacheConfig`
plus, for the keys that have no engine parameter, a note saying what the engine does instead. An
unknown key or a value of the wrong type is an :class:`InvalidRequest` naming the key. Pure logic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cache_runtime.config import OPERATIONS
from cache_runtime.service.errors import InvalidRequest, problem

MIB = 1024 * 1024


@dataclass
class Translation:
    """Dotted overrides for the config, where each came from, and notes on keys with no parameter."""

    overrides: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # dotted path -> the guide's key
    notes: dict[str, str] = field(default_factory=dict)  # the guide's key -> what happens instead

    def set(self, path: str, value: Any, key: str) -> None:
        """Override ``path`` with ``value`` because the guide set ``key``."""
        self.overrides[path] = value
        self.origin[path] = key

    def describe(self) -> dict[str, Any]:
        """JSON form: mapped keys and notes."""
        return {
            "mapped": {self.origin[path]: path for path in self.overrides},
            "overrides": dict(self.overrides),
            "not_applicable": dict(self.notes),
        }


def _number(key: str, value: Any, *, integer: bool = True, low: float = 0) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if ok and integer and isinstance(value, float) and not value.is_integer():
        ok = False
    if not ok or value < low:
        kind = "an integer" if integer else "a number"
        raise InvalidRequest.single(f"body.{key}", value, f"{kind} >= {low:g}")
    return int(value) if integer else float(value)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest.single(f"body.{key}", value, "true or false")
    return value


def _encoding(key: str, value: Any) -> str:
    if not isinstance(value, str) or value.lower().replace("_", "-") not in {"utf-8", "utf8"}:
        raise InvalidRequest.single(
            f"body.{key}", value, '"utf-8" (keys hash the UTF-8 bytes of the text; no other encoding)'
        )
    return "utf-8"


Handler = Callable[[Translation, str, Any, Mapping[str, Any]], None]


def _to(path: str, convert: Callable[[str, Any], Any]) -> Handler:
    def handle(out: Translation, key: str, value: Any, _: Mapping[str, Any]) -> None:
        out.set(path, convert(key, value), key)

    return handle


def _note(text: str, check: Callable[[str, Any], Any] = _flag) -> Handler:
    def handle(out: Translation, key: str, value: Any, _: Mapping[str, Any]) -> None:
        check(key, value)
        out.notes[key] = text

    return handle


def _int(key: str, value: Any) -> int:
    return int(_number(key, value))


def _float(key: str, value: Any) -> float:
    return _number(key, value, integer=False)


def _operation_ttls(out: Translation, key: str, value: Any, _: Mapping[str, Any]) -> None:
    if not isinstance(value, Mapping) or not value:
        raise InvalidRequest.single(
            f"body.{key}", value, f"an object of operation -> seconds ({', '.join(OPERATIONS)})"
        )
    for operation, seconds in value.items():
        if operation not in OPERATIONS:
            raise InvalidRequest.single(f"body.{key}.{operation}", seconds, f"one of {', '.join(OPERATIONS)}")
        out.set(f"ttl.{operation}_s", _int(f"{key}.{operation}", seconds), f"{key}.{operation}")


def _normalize_all(out: Translation, key: str, value: Any, _: Mapping[str, Any]) -> None:
    on = _flag(key, value)
    for part in ("line_endings", "invisible_chars", "whitespace"):
        out.set(f"keys.normalize.{part}", on, key)


def _no_special_chars(out: Translation, key: str, value: Any, _: Mapping[str, Any]) -> None:
    if _flag(key, value):
        raise InvalidRequest.single(
            f"body.{key}",
            value,
            "false (keys never drop visible characters; use remove_invisible_chars / "
            "keys.normalize.invisible_chars for zero-width and control characters)",
        )
    out.notes[key] = "false is what the engine always does: visible characters are part of the key"


def _percent_of_l1(path: str) -> Handler:
    def handle(out: Translation, key: str, value: Any, current: Mapping[str, Any]) -> None:
        percent = _number(key, value, integer=False)
        if percent > 100:
            raise InvalidRequest.single(f"body.{key}", value, "a percentage from 0 to 100 (of l1.max_bytes)")
        out.set(path, round(percent / 100 * current["l1"]["max_bytes"] / MIB, 3), key)

    return handle


def _mb_to_bytes(path: str) -> Handler:
    def handle(out: Translation, key: str, value: Any, _: Mapping[str, Any]) -> None:
        out.set(path, int(_number(key, value, integer=False, low=1) * MIB), key)

    return handle


def _thresholds(out: Translation, key: str, value: Any, _: Mapping[str, Any]) -> None:
    accepted = (
        "hit_rate_warning",
        "hit_rate_critical",
        "memory_warning_mb",
        "memory_critical_mb",
        "latency_warning_ms",
        "latency_critical_ms",
        "min_requests",
    )
    if not isinstance(value, Mapping):
        raise InvalidRequest.single(f"body.{key}", value, f"an object with {', '.join(accepted)}")
    for name, number in value.items():
        if name not in accepted:
            raise InvalidRequest.single(f"body.{key}.{name}", number, f"one of {', '.join(accepted)}")
        out.set(
            f"health.{name}",
            _number(f"{key}.{name}", number, integer=name == "min_requests"),
            f"{key}.{name}",
        )


def _intervals(out: Translation, key: str, value: Any, _: Mapping[str, Any]) -> None:
    if not isinstance(value, Mapping):
        raise InvalidRequest.single(f"body.{key}", value, "an object of check name -> seconds")
    for name, seconds in value.items():
        _number(f"{key}.{name}", seconds, integer=False)
    out.notes[key] = (
        "health is computed on every read over a sliding window; the operator polls it on "
        "CachePolicy spec.observe.intervalSeconds (no in-pod check timers)"
    )


_CLEANUP = (
    "expired L1 entries are swept on every write (l1.sweep_batch) and L1 evicts beyond "
    "l1.max_entries / l1.max_bytes; no timer is needed"
)

#: Every flat key the guide's bodies use, and how it reaches the config.
FLAT_KEYS: dict[str, Handler] = {
    # config/update
    "default_ttl": _to("ttl.default_s", _int),
    "operation_ttls": _operation_ttls,
    "text_hash_threshold": _to("keys.text_hash_threshold", _int),
    "normalize_text": _normalize_all,
    "consistent_encoding": _note("keys always hash UTF-8 bytes", _encoding),
    "compression_threshold": _to("compression.threshold_bytes", _int),
    "compression_level": _to("compression.level", _int),
    "force_compression_large_entries": _note(
        "every value at or above compression.threshold_bytes is compressed when lz4 saves "
        "compression.min_saving_ratio; POST compress-existing re-encodes what L1 holds"
    ),
    "memory_cache_size": _to("l1.max_entries", _int),
    "enable_aggressive_eviction": _note(
        "L1 evicts least-recently-used entries as soon as a limit is reached"
    ),
    "memory_pressure_threshold": _to("health.memory_warning_mb", _float),
    "enable_automatic_cleanup": _note(_CLEANUP),
    "cleanup_interval_minutes": _note(_CLEANUP, _float),
    "memory_cleanup_threshold_mb": _mb_to_bytes("l1.max_bytes"),
    "streaming_compression": _note(
        "values above compression.offload_threshold_bytes are compressed in a worker thread"
    ),
    # redis-config/update
    "max_connections": _to("redis.max_connections", _int),
    "connection_timeout": _to("redis.connect_timeout_s", _float),
    "socket_timeout": _to("redis.socket_timeout_s", _float),
    "retry_on_timeout": _note(
        "a timed-out command counts toward the circuit breaker "
        "(redis.breaker_failure_threshold); the engine serves from L1 meanwhile"
    ),
    "socket_keepalive": _note("TCP keepalive is on for every pooled connection"),
    # text-processor/configure and optimize/text-processing
    "enable_normalization": _normalize_all,
    "strip_whitespace": _to("keys.normalize.whitespace", _flag),
    "normalize_whitespace": _to("keys.normalize.whitespace", _flag),
    "lowercase_processing": _to("keys.normalize.case", _flag),
    "remove_invisible_chars": _to("keys.normalize.invisible_chars", _flag),
    "standardize_line_endings": _to("keys.normalize.line_endings", _flag),
    "remove_special_chars": _no_special_chars,
    # memory/pressure-config (percentages of the L1 byte budget)
    "cleanup_strategy": _note(
        "L1 is LRU; values above the threshold are lz4-compressed",
        lambda key, value: value if isinstance(value, str) else _flag(key, value),
    ),
    "emergency_eviction_threshold": _percent_of_l1("health.memory_critical_mb"),
    "monitoring_interval_seconds": _note("stats are kept continuously; read them any time", _float),
    # health/configure
    "thresholds": _thresholds,
    "check_intervals": _intervals,
}

#: memory/pressure-config reads memory_pressure_threshold as a percentage, config/update as MB.
PERCENT_KEYS = {"memory_pressure_threshold": _percent_of_l1("health.memory_warning_mb")}


def translate(body: Any, current: Mapping[str, Any], *, percent: bool = False) -> Translation:
    """The guide body ``body`` as overrides of ``current`` (the config in force, as a dict).

    ``percent``: memory thresholds are percentages of the L1 budget (``memory/pressure-config``).
    Raises InvalidRequest (422) naming the first unknown key or bad value.
    """
    if not isinstance(body, Mapping) or not body:
        raise InvalidRequest.single("body", body, "a non-empty JSON object of the guide's settings")
    out = Translation()
    unknown = [key for key in body if key not in FLAT_KEYS]
    if unknown:
        raise InvalidRequest(
            [
                problem(
                    f"body.{key}",
                    body[key],
                    "one of " + ", ".join(sorted(FLAT_KEYS)) + ' (or {"overrides": {...}} with config paths)',
                )
                for key in unknown
            ]
        )
    for key, value in body.items():
        handler = PERCENT_KEYS[key] if percent and key in PERCENT_KEYS else FLAT_KEYS[key]
        handler(out, key, value, current)
    return out


def rename_problems(problems: list[dict[str, Any]], translation: Translation) -> list[dict[str, Any]]:
    """Config problems (``body.overrides.ttl.default_s``) named by the guide's key (``body.default_ttl``)."""
    renamed = []
    for item in problems:
        field_name = str(item.get("field", ""))
        for path, key in translation.origin.items():
            if field_name.endswith(path):
                item = {
                    **item,
                    "field": f"body.{key}",
                    "message": f"body.{key} (config {path}): {item.get('message')}",
                }
                break
        renamed.append(item)
    return renamed
