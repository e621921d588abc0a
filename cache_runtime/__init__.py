"""cachewarden's cache engine: a two-tier (L1 memory, L2 Redis) cache for AI responses.

Public API (design.md)::

    from cache_runtime import CacheConfig, TieredCache, resolve_config
    config = resolve_config(preset="ai-production", overrides={...}, redis_url="redis://...")
    async with TieredCache(config) as cache:
        ...

The names are imported lazily: importing a submodule (``cache_runtime.timefmt`` from the devcluster
kubelet, ``cache_runtime.service.runtime_main`` from the command) must not pay for importing redis,
lz4 and pydantic models it never uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["CacheConfig", "ConfigError", "TieredCache", "resolve_config"]

if TYPE_CHECKING:
    from cache_runtime.cache import TieredCache
    from cache_runtime.config import CacheConfig, ConfigError, resolve_config

_HOMES = {
    "CacheConfig": "cache_runtime.config",
    "ConfigError": "cache_runtime.config",
    "resolve_config": "cache_runtime.config",
    "TieredCache": "cache_runtime.cache",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cache_runtime' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
