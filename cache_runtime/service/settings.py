"""Settings of the runtime service process (not of the cache: that is ``cache_runtime.config``).

They come from command-line flags first, then ``CACHEWARDEN_*`` environment variables, then defaults.
Every value from outside is checked here, with an error naming the setting, the value and what is
accepted, so a bad pod spec fails at start with one clear line instead of deep inside uvicorn.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

ENV_PREFIX = "CACHEWARDEN_"
DEFAULT_BIND_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class SettingsError(ValueError):
    """A service setting has a value outside what is accepted."""

    def __init__(self, name: str, value: object, accepted: str) -> None:
        self.name = name
        self.value = value
        self.accepted = accepted
        super().__init__(f"setting {name}={value!r} is invalid; accepted: {accepted}")


def map_mount_path(path: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """Translate an absolute path from a pod spec to where it really is on this machine.

    In a real pod a Secret mounted at ``/var/run/cachewarden/admin-token`` is at that path. Under the
    devcluster's process kubelet every "container" is a plain process on the host, and the kubelet
    projects volumes below ``$DEVCLUSTER_ROOT``; so ``/x/y`` is read at ``$DEVCLUSTER_ROOT/x/y``.
    Relative paths are left alone (they are the developer's own files).
    """
    if path is None or path == "":
        return None
    environ = os.environ if env is None else env
    root = environ.get("DEVCLUSTER_ROOT", "")
    candidate = Path(path)
    if root and candidate.is_absolute():
        return Path(root) / candidate.relative_to(candidate.anchor)
    return candidate


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(name, raw, "one of true/false/1/0/yes/no/on/off")


def _parse_int(name: str, raw: str | int, low: int, high: int) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise SettingsError(name, raw, f"an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise SettingsError(name, raw, f"an integer from {low} to {high}")
    return value


def _parse_float(name: str, raw: str | float, low: float, high: float) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SettingsError(name, raw, f"a number from {low} to {high}") from None
    if not low <= value <= high:
        raise SettingsError(name, raw, f"a number from {low} to {high}")
    return value


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Everything the runtime service needs to start; immutable once built."""

    host: str = DEFAULT_BIND_HOST
    port: int = DEFAULT_PORT
    # The mounted config file (the operator's ConfigMap). None: start from `preset` below.
    config_path: Path | None = None
    # Used only when there is no config file: a dev/local start with a named preset.
    preset: str | None = None
    # Overrides the Redis URL in whatever config is in force (the URL usually comes from a Secret,
    # not from the ConfigMap, so it must not be part of the pushed config).
    redis_url_file: Path | None = None
    redis_url: str | None = None
    redis_password_file: Path | None = None
    admin_token_file: Path | None = None
    read_token_file: Path | None = None
    write_token_file: Path | None = None
    # Explicit opt-out for local development only; never the default.
    auth_disabled: bool = False
    open_metrics: bool = True
    open_probes: bool = True
    config_poll_interval_s: float = 2.0
    idempotency_max_entries: int = 10_000
    idempotency_ttl_s: float = 3600.0
    max_body_bytes: int = 16 * 1024 * 1024
    shutdown_grace_s: float = 20.0
    log_level: str = "INFO"
    # The guide's redis/optimize-server may run CONFIG SET on the pod's Redis only with this on
    # (CACHEWARDEN_ALLOW_REDIS_CONFIG_SET=true); off by default: a cache client does not own the server.
    allow_redis_config_set: bool = False
    # The data API over the Redis protocol (resp_server.py): off unless a port is set
    # (CACHEWARDEN_RESP_PORT; 0 = any free port, for tests). It binds resp_host, else host.
    resp_port: int | None = None
    resp_host: str | None = None
    resp_max_connections: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **explicit: object) -> ServiceSettings:
        """Build settings from ``CACHEWARDEN_*`` variables; keyword arguments (flags) win over env.

        Paths are passed through :func:`map_mount_path`, so the devcluster's projected volumes work
        with the same pod spec as a real cluster.
        """
        environ = dict(os.environ if env is None else env)
        raw: dict[str, object] = {}
        for item in fields(cls):
            if explicit.get(item.name) is not None:
                raw[item.name] = explicit[item.name]
                continue
            env_name = ENV_PREFIX + item.name.upper()
            if item.name == "host":
                env_name = ENV_PREFIX + "BIND_HOST"
            if env_name in environ and environ[env_name] != "":
                raw[item.name] = environ[env_name]
        unknown = set(explicit) - {item.name for item in fields(cls)}
        if unknown:
            raise SettingsError(
                sorted(unknown)[0],
                explicit[sorted(unknown)[0]],
                "one of " + ", ".join(item.name for item in fields(cls)),
            )
        return cls._validated(raw, environ)

    @classmethod
    def _validated(cls, raw: dict[str, object], environ: Mapping[str, str]) -> ServiceSettings:
        values: dict[str, object] = {}
        for key, value in raw.items():
            text = value if isinstance(value, str) else None
            if key in {
                "config_path",
                "redis_url_file",
                "redis_password_file",
                "admin_token_file",
                "read_token_file",
                "write_token_file",
            }:
                values[key] = map_mount_path(str(value), environ)
            elif key in {"auth_disabled", "open_metrics", "open_probes", "allow_redis_config_set"}:
                values[key] = _parse_bool(key, text) if text is not None else bool(value)
            elif key in {"port", "resp_port"}:
                values[key] = _parse_int(key, value, 0, 65535)  # type: ignore[arg-type]
            elif key == "resp_max_connections":
                values[key] = _parse_int(key, value, 1, 100_000)  # type: ignore[arg-type]
            elif key == "idempotency_max_entries":
                values[key] = _parse_int(key, value, 1, 10_000_000)  # type: ignore[arg-type]
            elif key == "max_body_bytes":
                values[key] = _parse_int(key, value, 1024, 1024 * 1024 * 1024)  # type: ignore[arg-type]
            elif key == "config_poll_interval_s":
                values[key] = _parse_float(key, value, 0.05, 3600.0)  # type: ignore[arg-type]
            elif key == "idempotency_ttl_s":
                values[key] = _parse_float(key, value, 1.0, 7 * 86400.0)  # type: ignore[arg-type]
            elif key == "shutdown_grace_s":
                values[key] = _parse_float(key, value, 0.0, 600.0)  # type: ignore[arg-type]
            elif key == "log_level":
                level = str(value).upper()
                if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
                    raise SettingsError(key, value, "one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
                values[key] = level
            elif key in {"host", "resp_host"}:
                if not str(value).strip():
                    raise SettingsError(key, value, "an IP address or host name to bind")
                values[key] = str(value).strip()
            else:
                values[key] = None if value in ("", None) else str(value)
        return cls(**values)  # type: ignore[arg-type]
