"""The Redis tier (L2) of the cache engine: RedisL2, its settings and its circuit breaker.

RedisL2 never raises on Redis trouble: failures are counted by kind, fed to the breaker, and the call
returns its "nothing" value. See backend.py for the contract and connect.py for the supported URLs.
"""

from __future__ import annotations

from cache_runtime.l2.backend import RedisL2, summarize_memory_info
from cache_runtime.l2.breaker import BreakerState, CircuitBreaker
from cache_runtime.l2.coherence import (
    CoherenceListener,
    StampedMessage,
    lag_seconds,
    pack_stamped,
    unpack_stamped,
)
from cache_runtime.l2.connect import (
    ACCEPTED_URL_FORMS,
    ParsedRedisUrl,
    mask_url,
    parse_redis_url,
    scrub_secrets,
)
from cache_runtime.l2.errors import BREAKER_KINDS, ERROR_KINDS, classify_error
from cache_runtime.l2.settings import RedisSettings, RedisSettingsError

__all__ = [
    "ACCEPTED_URL_FORMS",
    "BREAKER_KINDS",
    "ERROR_KINDS",
    "BreakerState",
    "CircuitBreaker",
    "CoherenceListener",
    "ParsedRedisUrl",
    "RedisL2",
    "RedisSettings",
    "RedisSettingsError",
    "StampedMessage",
    "classify_error",
    "lag_seconds",
    "mask_url",
    "pack_stamped",
    "parse_redis_url",
    "scrub_secrets",
    "summarize_memory_info",
    "unpack_stamped",
]
