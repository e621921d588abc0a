"""The benchmark's only contact with cachewarden's engine: building configs and reading its state.

Scenarios go through this module so that the public API (design.md) is used everywhere, and the few
places that read the engine's internals (the synchronous L1 path, the breaker state) are in one spot
and say so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BENCH_PRESET = "ai-production"


def engine_import_error() -> str | None:
    """None when the engine's public API can be imported; otherwise why not (the engine is built in
    parallel with this bench, so early runs skip the engine side and still print the anchors)."""
    try:
        from cache_runtime import TieredCache, resolve_config  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def make_config(redis_url: str, overrides: dict[str, Any] | None = None) -> Any:
    """The bench's engine config: the ai-production preset against the bench's Redis."""
    from cache_runtime import resolve_config

    return resolve_config(preset=BENCH_PRESET, overrides=overrides or {}, redis_url=redis_url)


def make_cache(config: Any) -> Any:
    """A TieredCache (use as `async with`)."""
    from cache_runtime import TieredCache

    return TieredCache(config)


def sync_local_get(cache: Any) -> Callable[[str], Any] | None:
    """The engine's synchronous L1-only lookup, if it offers one (None otherwise)."""
    for name in ("get_local", "get_l1", "peek_local", "get_nowait"):
        fn = getattr(cache, name, None)
        if callable(fn):
            return fn
    return None


def breaker_is_open(cache: Any) -> bool | None:
    """True while the L2 circuit breaker is not closed (open or half-open); None if unknown.

    Reads the facade's L2 object (internal) because stats() builds a whole snapshot, too costly to
    call after every operation of a latency loop.
    """
    for attr in ("l2", "_l2"):
        l2 = getattr(cache, attr, None)
        if l2 is None:
            continue
        state = getattr(l2, "breaker_state", None)
        if state is None:
            continue
        name = str(getattr(state, "value", state)).lower()
        return "closed" not in name
    return None


def describe_config(config: Any) -> dict[str, Any]:
    """The parameters that shape the figures (timeouts, breaker, L1 size), for the printed report."""
    dump = config.model_dump() if hasattr(config, "model_dump") else dict(vars(config))
    wanted = (
        "timeout",
        "breaker",
        "l1",
        "compression",
        "max_connections",
        "lease",
        "coherence",
    )
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif any(word in prefix for word in wanted):
            flat[prefix] = value

    walk("", dump)
    return flat


# --------------------------------------------------------------------------------------------------
# Config knobs and stats readers. The engine's config field names are filled in from
# cache_runtime/config.py; each helper returns None when the engine has no such knob.


def l1_disabled_overrides() -> dict[str, Any]:
    """Overrides that turn L1 off (every get goes to Redis)."""
    return {"l1.max_entries": 0}


def l1_size_overrides(entries: int) -> dict[str, Any]:
    """Overrides that size L1 to hold `entries` entries."""
    # Bytes are raised too, so the entry count is the binding limit.
    return {"l1.max_entries": entries, "l1.max_bytes": 512 * 1024 * 1024}


def lease_overrides(enabled: bool) -> dict[str, Any] | None:
    """Overrides that turn the Redis lease lock of get_or_compute on or off."""
    return {"stampede.lease_lock": enabled}


def redis_timeouts(config: Any) -> tuple[float, float]:
    """(socket/read timeout, connect timeout) in seconds from an engine config."""
    flat = describe_config(config)
    socket_s = next((float(v) for k, v in flat.items() if "socket_timeout" in k), 1.0)
    connect_s = next((float(v) for k, v in flat.items() if "connect_timeout" in k), 1.0)
    return socket_s, connect_s


def _stats(cache: Any) -> dict[str, Any]:
    try:
        stats = cache.stats()
    except Exception:
        return {}
    return stats if isinstance(stats, dict) else {}


def _at(tree: Any, *path: str) -> Any:
    """The value at a path of the stats snapshot, or None when any step is missing."""
    for step in path:
        if not isinstance(tree, dict) or step not in tree:
            return None
        tree = tree[step]
    return tree


def _number_at(tree: Any, *path: str) -> float | None:
    value = _at(tree, *path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def l2_hits(cache: Any) -> int | None:
    """Number of gets answered by Redis so far, from stats()."""
    value = _number_at(_stats(cache), "requests", "hits_l2")
    return None if value is None else int(value)


def compression_ratio_from_stats(cache: Any) -> float | None:
    """Compression ratio the engine reports about itself (bytes in / bytes out), if any."""
    return _number_at(_stats(cache), "compression", "ratio")


def coherence_lag_from_stats(cache: Any) -> tuple[float, float, int] | None:
    """(p50 ms, p95 ms, samples) of the coherence lag histogram the engine keeps, if any."""
    histogram = _at(_stats(cache), "coherence_lag")
    if not isinstance(histogram, dict) or not histogram.get("count"):
        return None
    try:
        from cache_runtime.stats import histogram_from_dict

        parsed = histogram_from_dict(histogram)
        p50, p95 = parsed.quantile(0.5), parsed.quantile(0.95)
    except Exception:
        return None
    if p50 is None or p95 is None:
        return None
    return p50 * 1000, p95 * 1000, int(histogram["count"])


def namespace_overrides(namespace: str) -> dict[str, Any]:
    """Overrides that file every key of the engine under `namespace`."""
    return {"keys.namespace": namespace}


def pattern_for_namespace(namespace: str, version: int | None = None) -> str:
    """A glob (relative to the key prefix) matching the data keys of a namespace: of one version when
    given, else of every version. Layout: {prefix}:{namespace}:v{version}:..., see keys.py."""
    return f"{namespace}:*" if version is None else f"{namespace}:v{version}:*"


def l2_of(cache: Any) -> Any:
    """The facade's RedisL2 (public `l2` property), or None."""
    return getattr(cache, "l2", None)


def redis_keys_of(cache: Any, keys: list[str]) -> list[str] | None:
    """The Redis keys the facade uses for `keys` (through its KeyBuilder), or None if not exposed."""
    builder = getattr(cache, "keys", None)
    redis_key = getattr(builder, "redis_key", None)
    if redis_key is None:
        return None
    return [redis_key(k) for k in keys]
