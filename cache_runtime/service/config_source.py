"""Where the runtime's cache config comes from: the mounted file, operator pushes, admin actions.

Rules (the operator relies on them):

* At start the mounted file (the policy's ConfigMap) is read. Then it is polled; when its *content*
  hash changes it is read again. Kubernetes updates a ConfigMap volume by swapping a symlink, so the
  content hash, not the mtime, is what tells a change.
* A valid new file becomes the config in force and ends any push/override.
* An invalid file is rejected with the field named; the config in force does not change (the last
  good one keeps running) and the rejection is reported in ``health`` until a valid file arrives.
* A push (``config/apply``: a full resolved config plus its hash), ``config/update`` (partial
  overrides), ``apply-preset`` and so on override the file's config until the file's hash changes,
  or ``reset-config`` goes back to it.

Nothing is committed before the engine accepted it: the controller computes a candidate, hands it to
the engine, and only then records it as in force. The hash reported is the hash of the config as the
operator rendered it; credentials that only the pod knows (a Redis password from a Secret) are added
after hashing, so the operator can compare hashes without ever seeing the password.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from cache_runtime.config import (
    PRESET_NAMES,
    CacheConfig,
    ConfigError,
    apply_overrides,
    preserve_key_layout,
    resolve_config,
    validate_config,
)

log = logging.getLogger("cachewarden.runtime.config")

MAX_CONFIG_FILE_BYTES = 1024 * 1024
REDACTED_PASSWORD = "**********"
DOCUMENT_SHAPES = (
    "{config: <resolved config>, hash: <sha256>} (rendered by the operator), or "
    "{preset: <name>, overrides: {...}, redis_url: <url>} (written by hand)"
)
# Connection settings belong to the pod (its Secret, its network), not to a preset: apply-preset
# and config/update keep them from the config in force.
CONNECTION_FIELDS = (
    "url",
    "username",
    "password",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_verify",
    "sentinel_master",
    "cluster",
)


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """A validated config with its hash and where it came from."""

    config: CacheConfig
    hash: str
    origin: str  # "file", "push", "update", "preset", "start"
    loaded_at: float
    detail: str | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (no secrets: the config is shown through its public_dict)."""
        return {
            "hash": self.hash,
            "origin": self.origin,
            "detail": self.detail,
            "preset": self.config.preset,
            "loaded_at": self.loaded_at,
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a config input was refused: the field, the value and what is accepted."""

    source: str
    field: str
    value: Any
    accepted: str
    message: str
    at: float
    problems: tuple[dict[str, Any], ...] = ()

    def describe(self) -> dict[str, Any]:
        """JSON-ready form for health and error bodies."""
        return {
            "source": self.source,
            "field": self.field,
            "value": _json_safe(self.value),
            "accepted": self.accepted,
            "message": self.message,
            "at": self.at,
            "problems": list(self.problems),
        }


class ConfigRejected(Exception):
    """A config input was refused; carries the :class:`Rejection` for the 422 body."""

    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection
        super().__init__(rejection.message)


def rejection_items(exc: ConfigRejected) -> list[dict[str, Any]]:
    """Every problem of a refused config (``field``, ``value``, ``accepted``, ``message``; the one
    summary problem when the rejection lists none), field paths relative to the config."""
    rejection = exc.rejection
    return list(rejection.problems) or [
        {
            "field": rejection.field,
            "value": rejection.value,
            "accepted": rejection.accepted,
            "message": rejection.message,
        }
    ]


def _json_safe(value: Any) -> Any:
    try:
        orjson.dumps(value)
    except TypeError:
        return repr(value)
    return value


def rejection_from(error: ConfigError, source: str, now: float) -> Rejection:
    """Turn the engine's ConfigError (field, value, accepted, all problems) into a Rejection."""
    problems = tuple(
        {"field": p.field, "value": _json_safe(p.value), "accepted": p.accepted, "message": p.message}
        for p in error.problems
    )
    return Rejection(source, error.field, error.value, error.accepted, str(error), now, problems)


def parse_document(raw: bytes) -> Any:
    """Parse a config file's bytes: JSON (fast path) or YAML (safe loader only)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError("file", f"unparseable YAML/JSON{where}", DOCUMENT_SHAPES) from None


def config_from_push(config_data: Any, expected_hash: Any) -> CacheConfig:
    """Validate a pushed full config and check its hash (recomputed here) equals the one sent."""
    if not isinstance(config_data, Mapping):
        raise ConfigError("config", type(config_data).__name__, "an object: the full resolved config")
    config = validate_config(config_data)
    if not isinstance(expected_hash, str) or config.config_hash() != expected_hash:
        raise ConfigError(
            "hash",
            expected_hash,
            f"the sha256 of the config's canonical JSON, which is {config.config_hash()}",
            f"hash: {expected_hash!r} does not match the config sent (recomputed "
            f"{config.config_hash()}); the config was changed in transit or rendered "
            "by another version",
        )
    return config


def config_from_document(document: Any) -> CacheConfig:
    """A config file's document -> CacheConfig, for either accepted shape (see DOCUMENT_SHAPES)."""
    if not isinstance(document, Mapping):
        raise ConfigError("file", type(document).__name__, DOCUMENT_SHAPES)
    keys = set(document)
    if "config" in keys or "hash" in keys:
        extra = sorted(keys - {"config", "hash"})
        if extra:
            raise ConfigError(str(extra[0]), document[extra[0]], "only `config` and `hash` beside each other")
        if "hash" not in keys:
            raise ConfigError("hash", None, "the config's hash next to `config` (as config/apply takes it)")
        return config_from_push(document.get("config"), document["hash"])
    extra = sorted(keys - {"preset", "overrides", "redis_url"})
    if extra:
        raise ConfigError(str(extra[0]), _json_safe(document[extra[0]]), DOCUMENT_SHAPES)
    preset = document.get("preset", "production")
    if not isinstance(preset, str):
        raise ConfigError("preset", preset, ", ".join(PRESET_NAMES))
    overrides = document.get("overrides") or {}
    redis_url = document.get("redis_url")
    if redis_url is not None and not isinstance(redis_url, str):
        raise ConfigError("redis_url", redis_url, "a redis://, rediss://, unix:// or redis+sentinel:// URL")
    return resolve_config(preset=preset, overrides=overrides, redis_url=redis_url)


def config_with_overrides(base: CacheConfig, overrides: Any) -> CacheConfig:
    """``base`` with partial overrides (nested or dotted keys), validated; unknown keys rejected."""
    if not isinstance(overrides, Mapping) or not overrides:
        raise ConfigError(
            "overrides",
            _json_safe(overrides),
            "a non-empty object of parameter groups, "
            'e.g. {"ttl": {"default_s": 600}} or {"ttl.default_s": 600}',
        )
    merged = apply_overrides(base.model_dump(), overrides)
    return validate_config(merged)


def config_for_preset(base: CacheConfig, preset: str) -> CacheConfig:
    """The preset's config with ``base``'s Redis connection and key layout (entries stay reachable)."""
    fresh = resolve_config(preset=preset)
    data = fresh.model_dump()
    for name in CONNECTION_FIELDS:
        data["redis"][name] = getattr(base.redis, name)
    return preserve_key_layout(validate_config(data), base)


@dataclass(slots=True)
class LocalCredentials:
    """Redis URL and password that only this pod knows (files from a mounted Secret, or env).

    Applied to a config just before it reaches the engine, after hashing: the operator renders and
    hashes configs without the password, and the pod adds it.
    """

    url: str | None = None
    url_file: Path | None = None
    password_file: Path | None = None

    def read(self) -> tuple[str | None, str | None]:
        """The URL and password in force now (files are re-read every time: Secrets rotate)."""
        url = self.url
        if self.url_file is not None:
            url = _read_small_text(self.url_file) or url
        password = _read_small_text(self.password_file) if self.password_file is not None else None
        return url, password

    def apply(self, config: CacheConfig) -> CacheConfig:
        """``config`` with this pod's URL and password; the redaction marker never reaches Redis."""
        url, password = self.read()
        current = config.redis.password.get_secret_value() if config.redis.password else None
        if url is None and password is None and current != REDACTED_PASSWORD:
            return config
        data = config.model_dump()
        if current == REDACTED_PASSWORD:
            data["redis"]["password"] = None
        if url is not None:
            data["redis"]["url"] = url
            if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
                # A password inside the URL wins; giving it twice would be a conflict.
                data["redis"]["password"] = None
        if password is not None:
            data["redis"]["password"] = password
        return validate_config(data)


def _read_small_text(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            raw = handle.read(64 * 1024)
    except OSError:
        return None
    text = raw.decode("utf-8", "replace").strip()
    return text or None


@dataclass(slots=True)
class FileState:
    """What the poller knows about the file: its content digest and the last good config from it."""

    digest: str | None = None
    record: ConfigRecord | None = None
    rejection: Rejection | None = None
    reads: int = 0
    missing: bool = False


@dataclass(slots=True)
class ConfigSource:
    """The pure state: file config, override, rejections. No engine, no event loop."""

    path: Path | None = None
    fallback: CacheConfig | None = None
    clock: Callable[[], float] = time.time
    file: FileState = field(default_factory=FileState)
    override: ConfigRecord | None = None
    last_push_rejection: Rejection | None = None

    @property
    def in_force(self) -> ConfigRecord | None:
        """The config the engine runs: an override if there is one, else the file's, else the fallback."""
        if self.override is not None:
            return self.override
        if self.file.record is not None:
            return self.file.record
        if self.fallback is not None:
            return ConfigRecord(self.fallback, self.fallback.config_hash(), "start", 0.0)
        return None

    @property
    def base(self) -> ConfigRecord | None:
        """What ``reset-config`` returns to: the file's last good config, else the fallback."""
        if self.file.record is not None:
            return self.file.record
        if self.fallback is not None:
            return ConfigRecord(self.fallback, self.fallback.config_hash(), "start", 0.0)
        return None

    def read_file(self) -> tuple[str, bytes] | None:
        """The file's (content digest, bytes) if it changed since the last read, else None."""
        if self.path is None:
            return None
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(MAX_CONFIG_FILE_BYTES + 1)
        except FileNotFoundError:
            if not self.file.missing:
                log.warning(
                    "config file not found; keeping the config in force",
                    extra={"fields": {"path": str(self.path)}},
                )
            self.file.missing = True
            return None
        except OSError as exc:
            self.file.rejection = Rejection(
                "file",
                "file",
                str(self.path),
                "a readable file",
                f"cannot read config file: {exc.strerror}",
                self.clock(),
            )
            return None
        self.file.missing = False
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self.file.digest:
            return None
        return digest, raw

    def file_candidate(self, digest: str, raw: bytes) -> ConfigRecord | None:
        """Validate changed file content; a rejection is recorded (digest too, to not re-log it)."""
        self.file.reads += 1
        now = self.clock()
        try:
            if len(raw) > MAX_CONFIG_FILE_BYTES:
                raise ConfigError(
                    "file", f"{len(raw)} bytes or more", f"at most {MAX_CONFIG_FILE_BYTES} bytes"
                )
            config = config_from_document(parse_document(raw))
        except ConfigError as exc:
            self.file.digest = digest
            self.file.rejection = rejection_from(exc, "file", now)
            log.error(
                "config file rejected; the last good config stays in force",
                extra={"fields": {"field": exc.field, "accepted": exc.accepted}},
            )
            return None
        return ConfigRecord(config, config.config_hash(), "file", now)

    def commit_file(self, digest: str, record: ConfigRecord) -> None:
        """The engine runs the file's config now: it replaces any override."""
        self.file.digest = digest
        self.file.record = record
        self.file.rejection = None
        self.override = None

    def commit_override(self, record: ConfigRecord) -> None:
        """The engine runs a pushed or derived config now, until the file changes or a reset."""
        self.override = record
        self.last_push_rejection = None

    def describe(self) -> dict[str, Any]:
        """Everything about config provenance, for ``config/current`` and ``health``."""
        in_force = self.in_force
        return {
            "hash": in_force.hash if in_force else None,
            "in_force": in_force.describe() if in_force else None,
            "file": {
                "path": str(self.path) if self.path else None,
                "content_sha256": self.file.digest,
                "hash": self.file.record.hash if self.file.record else None,
                "missing": self.file.missing,
                "reads": self.file.reads,
                "rejection": self.file.rejection.describe() if self.file.rejection else None,
            },
            "override": self.override.describe() if self.override else None,
            "last_push_rejection": (
                self.last_push_rejection.describe() if self.last_push_rejection else None
            ),
        }


ApplyFn = Callable[[CacheConfig], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of one config change request."""

    applied: bool  # False: the config was already in force (nothing to do) or dry run
    record: ConfigRecord
    previous_hash: str | None

    def describe(self) -> dict[str, Any]:
        """JSON-ready form returned by the config actions."""
        return {
            "applied": self.applied,
            "hash": self.record.hash,
            "previous_hash": self.previous_hash,
            "origin": self.record.origin,
            "preset": self.record.config.preset,
            "detail": self.record.detail,
        }


class ConfigController:
    """Serialises config changes and hands each accepted one to the engine before committing it."""

    def __init__(
        self, source: ConfigSource, apply: ApplyFn, credentials: LocalCredentials | None = None
    ) -> None:
        self.source = source
        self._apply = apply
        self.credentials = credentials or LocalCredentials()
        self._lock = asyncio.Lock()
        self.changes_applied = 0
        # The hash of the config the engine runs (None until the first config reached it).
        self.applied_hash: str | None = None

    def engine_config(self, record: ConfigRecord) -> CacheConfig:
        """The config the engine gets: the record's, plus this pod's Redis credentials."""
        return self.credentials.apply(record.config)

    async def load_initial(self) -> ConfigRecord | None:
        """Read the file (or take the fallback) and apply it; None if there is nothing valid yet."""
        await self.poll_once()
        record = self.source.in_force
        if record is not None and self.applied_hash is None:
            async with self._lock:
                await self._engine_apply(record)
        return record

    async def poll_once(self) -> ApplyResult | None:
        """Check the file once; apply it if its content changed and is valid."""
        changed = await asyncio.to_thread(self.source.read_file)
        if changed is None:
            return None
        digest, raw = changed
        async with self._lock:
            candidate = self.source.file_candidate(digest, raw)
            if candidate is None:
                return None
            previous = self.source.in_force
            if self.applied_hash != candidate.hash:
                try:
                    await self._engine_apply(candidate)
                except ConfigError as exc:
                    self.source.file.digest = digest
                    self.source.file.rejection = rejection_from(exc, "file", self.source.clock())
                    return None
            self.source.commit_file(digest, candidate)
            log.info("config file applied", extra={"fields": {"hash": candidate.hash}})
            return ApplyResult(True, candidate, previous.hash if previous else None)

    async def _engine_apply(self, record: ConfigRecord) -> None:
        await self._apply(self.engine_config(record))
        self.applied_hash = record.hash
        self.changes_applied += 1

    async def _override(
        self,
        make: Callable[[CacheConfig | None], CacheConfig],
        origin: str,
        detail: str | None,
        *,
        dry_run: bool = False,
    ) -> ApplyResult:
        async with self._lock:
            previous = self.source.in_force
            try:
                config = make(previous.config if previous else None)
                # Credentials are checked too: a push that cannot be combined with them is refused
                # here rather than by the engine.
                self.credentials.apply(config)
            except ConfigError as exc:
                rejection = rejection_from(exc, origin, self.source.clock())
                self.source.last_push_rejection = rejection
                raise ConfigRejected(rejection) from None
            record = ConfigRecord(config, config.config_hash(), origin, self.source.clock(), detail)
            previous_hash = previous.hash if previous else None
            if dry_run or (previous_hash == record.hash and self.applied_hash == record.hash):
                return ApplyResult(False, record, previous_hash)
            try:
                await self._engine_apply(record)
            except ConfigError as exc:
                rejection = rejection_from(exc, origin, self.source.clock())
                self.source.last_push_rejection = rejection
                raise ConfigRejected(rejection) from None
            self.source.commit_override(record)
            log.info(
                "config changed",
                extra={"fields": {"origin": origin, "hash": record.hash, "previous_hash": previous_hash}},
            )
            return ApplyResult(True, record, previous_hash)

    async def push(self, config_data: Any, expected_hash: Any) -> ApplyResult:
        """``config/apply``: the operator's full resolved config with its hash."""
        return await self._override(lambda _: config_from_push(config_data, expected_hash), "push", None)

    def validate(self, config_data: Any, expected_hash: Any) -> ConfigRecord:
        """``config/validate``: the same checks as a push, nothing applied."""
        try:
            config = config_from_push(config_data, expected_hash)
            self.credentials.apply(config)
        except ConfigError as exc:
            raise ConfigRejected(rejection_from(exc, "validate", self.source.clock())) from None
        return ConfigRecord(config, config.config_hash(), "validate", self.source.clock())

    async def update(self, overrides: Any, *, dry_run: bool = False) -> ApplyResult:
        """``config/update``: partial overrides on top of the config in force."""

        def make(current: CacheConfig | None) -> CacheConfig:
            if current is None:
                raise ConfigError("config", None, "a config in force to update (none loaded yet)")
            return config_with_overrides(current, overrides)

        return await self._override(
            make,
            "update",
            ",".join(sorted(map(str, overrides))) if isinstance(overrides, Mapping) else None,
            dry_run=dry_run,
        )

    async def apply_preset(self, preset: str, *, dry_run: bool = False) -> ApplyResult:
        """``apply-preset``: switch preset, keeping the Redis connection and the key layout."""

        def make(current: CacheConfig | None) -> CacheConfig:
            if current is None:
                return resolve_config(preset=preset)
            return config_for_preset(current, preset)

        return await self._override(make, "preset", preset, dry_run=dry_run)

    async def reset(self, *, dry_run: bool = False) -> ApplyResult:
        """``reset-config``: drop every override and run the file's last good config again."""
        async with self._lock:
            base = self.source.base
            previous = self.source.in_force
            if base is None:
                rejection = Rejection(
                    "reset",
                    "config",
                    None,
                    "a config file or start preset to return to",
                    "reset-config: there is no file config to return to",
                    self.source.clock(),
                )
                raise ConfigRejected(rejection)
            previous_hash = previous.hash if previous else None
            if dry_run:
                return ApplyResult(False, base, previous_hash)
            changed = self.applied_hash != base.hash
            if changed:
                await self._engine_apply(base)
            self.source.override = None
            return ApplyResult(changed, base, previous_hash)

    async def run_poller(self, interval_s: float, stop: asyncio.Event) -> None:
        """Poll the file every ``interval_s`` until ``stop`` is set; errors are logged, never fatal."""
        if self.source.path is None:
            return
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
                return
            except TimeoutError:
                pass
            try:
                await self.poll_once()
            except Exception:
                # The engine refused or failed to apply: keep the old config, try the next change.
                log.exception("config poll failed; the config in force is unchanged")
