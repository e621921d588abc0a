"""Config source of the runtime: file, pushes, overrides, rejections, last good config kept."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from cache_runtime.config import CacheConfig, ConfigError, resolve_config
from cache_runtime.service.config_source import (
    ConfigController,
    ConfigRejected,
    ConfigSource,
    LocalCredentials,
    config_from_document,
    parse_document,
)


class EngineRecorder:
    """Stands in for the engine's apply_config callback: records what it was given."""

    def __init__(self) -> None:
        self.applied: list[CacheConfig] = []
        self.refuse: ConfigError | None = None

    async def __call__(self, config: CacheConfig) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.applied.append(config)


def write(path: Path, data: object | str) -> None:
    # Replace atomically like the kubelet's symlink swap.
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data.encode() if isinstance(data, str) else orjson.dumps(data))
    os.replace(temporary, path)


def operator_document(config: CacheConfig) -> dict[str, object]:
    return {"config": config.public_dict(), "hash": config.config_hash()}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    write(path, {"preset": "production", "overrides": {"ttl": {"default_s": 600}}})
    return path


async def started(
    path: Path | None, fallback: CacheConfig | None = None, credentials: LocalCredentials | None = None
) -> tuple[ConfigController, EngineRecorder]:
    engine = EngineRecorder()
    controller = ConfigController(ConfigSource(path=path, fallback=fallback), engine, credentials)
    await controller.load_initial()
    return controller, engine


async def test_file_loaded_at_start(config_file: Path) -> None:
    controller, engine = await started(config_file)
    in_force = controller.source.in_force
    assert in_force is not None and in_force.origin == "file"
    assert engine.applied[-1].ttl.default_s == 600
    assert controller.applied_hash == in_force.hash


async def test_operator_document_with_hash(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    config = resolve_config("ai-production")
    write(path, operator_document(config))
    controller, engine = await started(path)
    assert controller.source.in_force is not None
    assert controller.source.in_force.hash == config.config_hash()
    assert engine.applied[-1].preset == "ai-production"


async def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write(path, "preset: simple\noverrides:\n  l1:\n    max_entries: 77\n")
    _, engine = await started(path)
    assert engine.applied[-1].l1.max_entries == 77


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"preset": "production", "overrides": {"ttl": {"default_s": 0}}}, "ttl.default_s"),
        ({"preset": "production", "overrides": {"ttl": {"defualt_s": 60}}}, "ttl.defualt_s"),
        ({"preset": "fastest"}, "preset"),
        ({"preset": "production", "colour": "blue"}, "colour"),
        ({"config": {"preset": "production"}}, "hash"),
        ({"config": {"preset": "production"}, "hash": "0" * 64}, "hash"),
        ("preset: [unclosed\n", "file"),
        ("just a string", "file"),
    ],
)
async def test_invalid_file_keeps_last_good_and_names_the_field(
    config_file: Path, content: object, field: str
) -> None:
    controller, engine = await started(config_file)
    good_hash = controller.source.in_force.hash  # type: ignore[union-attr]
    write(config_file, content)  # type: ignore[arg-type]
    assert await controller.poll_once() is None
    assert controller.source.in_force.hash == good_hash  # type: ignore[union-attr]
    rejection = controller.source.file.rejection
    assert rejection is not None and rejection.field == field
    assert rejection.accepted
    assert len(engine.applied) == 1
    assert controller.source.describe()["file"]["rejection"]["field"] == field
    # The same bad content is not re-read and re-logged on every poll.
    assert await controller.poll_once() is None
    assert controller.source.file.reads == 2
    # A good file clears the rejection.
    write(config_file, {"preset": "simple"})
    result = await controller.poll_once()
    assert result is not None and result.record.config.preset == "simple"
    assert controller.source.file.rejection is None


async def test_invalid_file_at_start_has_nothing_in_force(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write(path, {"preset": "nope"})
    controller, engine = await started(path)
    assert controller.source.in_force is None
    assert engine.applied == []
    write(path, {"preset": "minimal"})
    await controller.poll_once()
    assert engine.applied[-1].preset == "minimal"


async def test_missing_file_uses_the_fallback(tmp_path: Path) -> None:
    controller, engine = await started(tmp_path / "absent.json", fallback=resolve_config("development"))
    assert engine.applied[-1].preset == "development"
    assert controller.source.describe()["file"]["missing"] is True


async def test_unchanged_file_is_not_reapplied(config_file: Path) -> None:
    controller, engine = await started(config_file)
    # Rewritten with identical bytes: new inode, same content hash.
    write(config_file, config_file.read_bytes().decode())
    assert await controller.poll_once() is None
    assert len(engine.applied) == 1


async def test_push_overrides_until_the_file_changes(config_file: Path) -> None:
    controller, engine = await started(config_file)
    pushed = resolve_config("ai-development")
    result = await controller.push(pushed.public_dict(), pushed.config_hash())
    assert result.applied and result.record.hash == pushed.config_hash()
    assert controller.source.in_force.origin == "push"  # type: ignore[union-attr]
    # An invalid file change does not end the override ...
    write(config_file, {"preset": "nope"})
    await controller.poll_once()
    assert controller.source.in_force.hash == pushed.config_hash()  # type: ignore[union-attr]
    # ... a valid one does.
    write(config_file, {"preset": "minimal"})
    await controller.poll_once()
    assert controller.source.override is None
    assert engine.applied[-1].preset == "minimal"


async def test_push_of_the_config_in_force_is_a_no_op(config_file: Path) -> None:
    controller, engine = await started(config_file)
    current = controller.source.in_force.config  # type: ignore[union-attr]
    result = await controller.push(current.public_dict(), current.config_hash())
    assert not result.applied
    assert len(engine.applied) == 1


@pytest.mark.parametrize(
    ("config", "hash_", "field"),
    [
        ({"preset": "production", "ttl": {"default_s": 10**9}}, None, "ttl.default_s"),
        ({"preset": "production", "unknown": 1}, None, "unknown"),
        ("production", "x", "config"),
        (None, "wrong", "hash"),
    ],
)
async def test_bad_pushes_are_rejected_naming_the_field(
    config_file: Path, config: object, hash_: str | None, field: str
) -> None:
    controller, engine = await started(config_file)
    if config is None:
        config = resolve_config("simple").public_dict()
    with pytest.raises(ConfigRejected) as caught:
        await controller.push(config, hash_ or "0" * 64)
    assert caught.value.rejection.field == field
    assert len(engine.applied) == 1
    assert controller.source.last_push_rejection is not None


async def test_validate_applies_nothing(config_file: Path) -> None:
    controller, engine = await started(config_file)
    config = resolve_config("performance")
    record = controller.validate(config.public_dict(), config.config_hash())
    assert record.hash == config.config_hash()
    assert len(engine.applied) == 1
    with pytest.raises(ConfigRejected):
        controller.validate(config.public_dict(), "f" * 64)


async def test_update_and_reset(config_file: Path) -> None:
    controller, engine = await started(config_file)
    file_hash = controller.source.in_force.hash  # type: ignore[union-attr]
    result = await controller.update({"ttl.default_s": 60, "l1": {"max_entries": 10}})
    assert result.applied
    assert engine.applied[-1].ttl.default_s == 60 and engine.applied[-1].l1.max_entries == 10
    dry = await controller.update({"ttl.default_s": 61}, dry_run=True)
    assert not dry.applied and engine.applied[-1].ttl.default_s == 60
    with pytest.raises(ConfigRejected) as caught:
        await controller.update({"ttl": {"default_seconds": 5}})
    assert caught.value.rejection.field == "ttl.default_seconds"
    with pytest.raises(ConfigRejected) as caught:
        await controller.update({})
    assert caught.value.rejection.field == "overrides"
    reset = await controller.reset()
    assert reset.applied and reset.record.hash == file_hash
    assert controller.source.override is None
    assert engine.applied[-1].ttl.default_s == 600


async def test_apply_preset_keeps_connection_and_key_layout(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write(
        path,
        {
            "preset": "ai-production",
            "redis_url": "redis://127.0.0.1:1/0",
            "overrides": {"keys": {"namespace": "tenant-a"}},
        },
    )
    controller, engine = await started(path)
    result = await controller.apply_preset("conservative")
    applied = engine.applied[-1]
    assert result.applied and applied.preset == "conservative"
    assert applied.redis.url == "redis://127.0.0.1:1/0"
    assert applied.keys.namespace == "tenant-a"
    assert applied.l1.max_entries == resolve_config("conservative").l1.max_entries
    with pytest.raises(ConfigRejected) as caught:
        await controller.apply_preset("warp-speed")
    assert caught.value.rejection.field == "preset"


async def test_engine_refusal_is_a_rejection(config_file: Path) -> None:
    controller, engine = await started(config_file)
    engine.refuse = ConfigError("keys.prefix", "x", "the prefix in force (cannot change live)")
    with pytest.raises(ConfigRejected) as caught:
        await controller.apply_preset("simple")
    assert caught.value.rejection.field == "keys.prefix"
    assert controller.source.override is None


async def test_local_credentials_are_added_after_hashing(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    config = resolve_config("production", redis_url="redis://cache-redis:6379/0")
    with_password = resolve_config(
        "production",
        overrides={"redis": {"password": "from-operator"}},
        redis_url="redis://cache-redis:6379/0",
    )
    write(path, operator_document(with_password))  # public_dict carries the redaction marker
    (tmp_path / "password").write_text("s3cret-from-secret\n")
    (tmp_path / "url").write_text("redis://127.0.0.1:6399/0\n")
    credentials = LocalCredentials(url_file=tmp_path / "url", password_file=tmp_path / "password")
    controller, engine = await started(path, credentials=credentials)
    applied = engine.applied[-1]
    assert applied.redis.password is not None
    assert applied.redis.password.get_secret_value() == "s3cret-from-secret"
    assert applied.redis.url == "redis://127.0.0.1:6399/0"
    # The reported hash is the operator's, not the one with the pod's secrets.
    assert controller.source.in_force.hash == with_password.config_hash()  # type: ignore[union-attr]
    assert config.config_hash() != with_password.config_hash()


async def test_redaction_marker_never_reaches_redis(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write(path, operator_document(resolve_config("production", overrides={"redis": {"password": "p"}})))
    _, engine = await started(path)
    assert engine.applied[-1].redis.password is None


def test_parse_document_json_and_yaml() -> None:
    assert parse_document(b'{"preset": "simple"}') == {"preset": "simple"}
    assert parse_document(b"preset: simple\n") == {"preset": "simple"}


def test_document_shapes() -> None:
    assert config_from_document({}).preset == "production"
    with pytest.raises(ConfigError) as caught:
        config_from_document({"config": {}, "hash": "x", "extra": 1})
    assert caught.value.field == "extra"
    with pytest.raises(ConfigError) as caught:
        config_from_document({"preset": "simple", "redis_url": 5})
    assert caught.value.field == "redis_url"
