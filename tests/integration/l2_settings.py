"""RedisL2 settings for the integration tests: short timeouts and breaker window, so fault tests
finish in about a second."""

from __future__ import annotations

from cache_runtime.l2 import RedisSettings


def fast_settings(url: str, **overrides: object) -> RedisSettings:
    """Short timeouts and breaker window (``overrides`` replace any of them)."""
    values: dict[str, object] = {
        "url": url,
        "connect_timeout_s": 0.5,
        "socket_timeout_s": 0.2,
        "pool_timeout_s": 0.5,
        "breaker_failure_threshold": 3,
        "breaker_open_seconds": 0.3,
        "max_connections": 4,
    }
    values.update(overrides)
    return RedisSettings(**values)  # type: ignore[arg-type]
