"""cache_runtime.config: presets, overrides, ranges, errors, hash, schema and the generated docs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cache_runtime.config import (
    LZ4_LEVEL_MAP,
    OPERATIONS,
    PRESET_NAMES,
    PRESETS,
    RANGES,
    CacheConfig,
    ConfigError,
    preserve_key_layout,
    resolve_config,
    validate_config,
)
from cache_runtime.config_doc import render_config_table, render_configuration_doc
from cache_runtime.config_schema import overrides_json_schema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# presets.md, column by column: default TTL, L1 entries, max connections, connect timeout,
# compression threshold, compression level, AI features, monitoring, log level.
PRESET_TABLE = {
    "disabled": (300, 10, 1, 1, 10000, 1, False, False, "WARNING"),
    "minimal": (900, 25, 2, 3, 5000, 1, False, False, "ERROR"),
    "simple": (3600, 100, 5, 5, 1000, 6, False, True, "INFO"),
    "development": (600, 50, 3, 2, 2000, 3, False, True, "DEBUG"),
    "production": (7200, 500, 20, 10, 500, 9, False, True, "INFO"),
    "ai-development": (1800, 100, 5, 5, 1000, 6, True, True, "DEBUG"),
    "ai-production": (14400, 1000, 25, 15, 300, 9, True, True, "INFO"),
}


@pytest.mark.parametrize("name", list(PRESET_TABLE))
def test_presets_keep_the_original_values(name: str) -> None:
    config = resolve_config(name)
    ttl, entries, conns, connect, threshold, level, ai, monitoring, log_level = PRESET_TABLE[name]
    assert config.preset == name
    assert config.ttl.default_s == ttl
    assert config.l1.max_entries == entries
    assert config.redis.max_connections == conns
    assert config.redis.connect_timeout_s == connect
    assert config.compression.threshold_bytes == threshold
    assert config.compression.level == level
    assert config.ai_features is ai
    assert config.monitoring is monitoring
    assert config.log_level == log_level
    assert config.l1.max_bytes > 0


def test_ai_presets_keep_their_text_and_ttl_settings() -> None:
    dev = resolve_config("ai-development")
    assert dev.keys.text_hash_threshold == 500
    assert (dev.keys.tiers.small, dev.keys.tiers.medium, dev.keys.tiers.large) == (500, 2000, 10000)
    assert [dev.ttl.for_operation(op) for op in OPERATIONS] == [1800, 900, 1200, 1500, 900]
    assert dev.keys.max_text_length == 50000
    prod = resolve_config("ai-production")
    assert prod.keys.text_hash_threshold == 1000
    assert (prod.keys.tiers.small, prod.keys.tiers.medium, prod.keys.tiers.large) == (1000, 5000, 25000)
    assert [prod.ttl.for_operation(op) for op in OPERATIONS] == [14400, 7200, 10800, 9600, 7200]
    assert prod.keys.max_text_length == 200000


def test_non_ai_presets_use_the_default_ttl_for_every_operation_unless_overridden() -> None:
    config = resolve_config("production")
    assert {config.ttl.for_operation(op) for op in ("summarize", "qa", "unknown", None)} == {7200}
    overridden = resolve_config("production", {"ttl.qa_s": 60})
    assert overridden.ttl.for_operation("qa") == 60
    assert overridden.ttl.for_operation("summarize") == 7200


def test_all_nine_presets_resolve_and_the_emergency_ones_differ_sensibly() -> None:
    assert set(PRESETS) == set(PRESET_NAMES) and len(PRESET_NAMES) == 9
    conservative = resolve_config("conservative")
    performance = resolve_config("performance")
    production = resolve_config("production")
    assert conservative.l1.max_entries < production.l1.max_entries < performance.l1.max_entries
    assert conservative.redis.max_connections < production.redis.max_connections < \
        performance.redis.max_connections
    assert conservative.compression.level <= 3 and performance.compression.level <= 3  # lz4 fast mode
    assert performance.redis.socket_timeout_s < production.redis.socket_timeout_s
    assert conservative.redis.connect_timeout_s < production.redis.connect_timeout_s


def test_disabled_preset_turns_the_engine_off() -> None:
    assert resolve_config("disabled").enabled is False
    assert all(resolve_config(name).enabled for name in PRESET_NAMES if name != "disabled")


def test_model_defaults_are_the_production_preset() -> None:
    assert CacheConfig().config_hash() == resolve_config("production").config_hash()


def test_overrides_nested_and_dotted_merge() -> None:
    config = resolve_config("ai-production", {"ttl": {"qa_s": 30}, "l1.max_entries": 7,
                                              "keys": {"tiers.small": 10}, "keys.normalize.case": True})
    assert config.ttl.qa_s == 30
    assert config.ttl.summarize_s == 14400  # siblings of an override stay
    assert config.l1.max_entries == 7
    assert config.keys.tiers.small == 10 and config.keys.tiers.medium == 5000
    assert config.keys.normalize.case is True


def test_redis_url_argument_wins_over_overrides() -> None:
    config = resolve_config("production", {"redis.url": "redis://a:1/0"}, redis_url="redis://b:2/0")
    assert config.redis.url == "redis://b:2/0"


@pytest.mark.parametrize(("overrides", "field", "in_message"), [
    ({"nope": 1}, "nope", "accepted keys here: enabled, ai_features"),
    ({"ttl": {"defualt_s": 5}}, "ttl.defualt_s", "did you mean 'default_s'"),
    ({"ttl.defualt_s": 5}, "ttl.defualt_s", "default_s, summarize_s"),
    ({"keys.tiers.huge": 5}, "keys.tiers.huge", "small, medium, large"),
    ({"preset": "minimal"}, "preset", "unknown key"),
    ({"ttl.default_s.x": 1}, "ttl.default_s.x", "single value"),
])
def test_unknown_override_keys_are_errors_naming_the_path(overrides: dict[str, Any], field: str,
                                                           in_message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config("production", overrides)
    assert caught.value.field == field
    assert field in str(caught.value)
    assert in_message in str(caught.value)


@pytest.mark.parametrize(("overrides", "field", "value", "accepted"), [
    ({"ttl.default_s": 0}, "ttl.default_s", 0, "1..604800 (1 s to 7 days)"),
    ({"ttl.qa_s": 604801}, "ttl.qa_s", 604801, "1..604800"),
    ({"l1.max_entries": 1_000_001}, "l1.max_entries", 1_000_001, "0..1000000"),
    ({"compression.threshold_bytes": -1}, "compression.threshold_bytes", -1, "0..104857600"),
    ({"compression.level": 10}, "compression.level", 10, "1..9"),
    ({"redis.max_connections": 0}, "redis.max_connections", 0, "1..1000"),
    ({"redis.connect_timeout_s": 0.001}, "redis.connect_timeout_s", 0.001, "0.01..60 (10 ms to 60 s)"),
    ({"redis.socket_timeout_s": 61}, "redis.socket_timeout_s", 61, "0.01..60"),
    ({"keys.text_hash_threshold": 1_000_001}, "keys.text_hash_threshold", 1_000_001, "0..1000000"),
    ({"ttl.jitter_fraction": 0.9}, "ttl.jitter_fraction", 0.9, "0.0..0.5"),
])
def test_out_of_range_values_name_field_value_and_range(overrides: dict[str, Any], field: str, value: Any,
                                                        accepted: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config("production", overrides)
    error = caught.value
    assert (error.field, error.value) == (field, value)
    assert accepted in error.accepted
    assert f"{field}: {value!r} is out of range; accepted: {accepted}" in str(error)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config("production", {"ttl.default_s": 0, "l1.max_bytes": -1})
    assert [p.field for p in caught.value.problems] == ["ttl.default_s", "l1.max_bytes"]


@pytest.mark.parametrize(("tiers", "field"), [
    ({"small": 500, "medium": 500, "large": 1000}, "keys.tiers.medium"),
    ({"small": 500, "medium": 400, "large": 1000}, "keys.tiers.medium"),
    ({"small": 1, "medium": 5000, "large": 5000}, "keys.tiers.large"),
])
def test_tiers_must_be_strictly_ascending(tiers: dict[str, int], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config("production", {"keys.tiers": tiers})
    assert caught.value.field == field
    assert "strictly ascending" in str(caught.value)


@pytest.mark.parametrize(("overrides", "field", "in_message"), [
    ({"codec.format": "pickle"}, "codec.format", "'json' or 'msgpack'"),
    ({"log_level": "LOUD"}, "log_level", "'DEBUG'"),
    ({"keys.hash_algorithm": "md5"}, "keys.hash_algorithm", "'xxh3_128' or 'sha256'"),
    ({"keys.prefix": "a:b"}, "keys.prefix", "A-Za-z0-9"),
    ({"keys.namespace": ""}, "keys.namespace", "A-Za-z0-9"),
    ({"l1.max_entries": "many"}, "l1.max_entries", "integer in 0..1000000"),
    ({"monitoring": "perhaps"}, "monitoring", "boolean"),
    ({"ttl": 5}, "ttl", "an object with keys default_s"),
    ({"redis.url": "http://example"}, "redis.url", "redis, rediss, unix"),
    ({"redis.tls_cert_file": "/c.pem"}, "redis.tls_key_file", "mutual TLS"),
    ({"health.hit_rate_warning": 0.3}, "health.hit_rate_critical", "at most hit_rate_warning (0.3)"),
    ({"health.memory_warning_mb": 500}, "health.memory_warning_mb", "memory_critical_mb"),
    ({"stampede.lease_wait_s": 100}, "stampede.lease_wait_s", "at most lease_ttl_s"),
])
def test_bad_values_are_rejected_with_the_field_named(overrides: dict[str, Any], field: str,
                                                      in_message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config("production", overrides)
    assert caught.value.field == field
    assert in_message in str(caught.value)


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config("turbo")
    assert caught.value.field == "preset"
    assert all(name in str(caught.value) for name in PRESET_NAMES)


def test_overrides_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError):
        resolve_config("production", ["ttl"])  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    config = resolve_config("production")
    with pytest.raises(ValueError):
        config.ttl.default_s = 5  # type: ignore[misc]


def test_url_password_moves_into_the_secret_and_never_shows() -> None:
    config = resolve_config("production", redis_url="redis://app:s3cr%40t@cache:6379/0")
    assert config.redis.url == "redis://app@cache:6379/0"
    assert config.redis.password is not None and config.redis.password.get_secret_value() == "s3cr@t"
    for text in (repr(config), str(config), str(config.public_dict()), config.config_hash()):
        assert "s3cr" not in text
    explicit = resolve_config("production", {"redis.password": "hunter2"})
    assert "hunter2" not in repr(explicit) and "hunter2" not in str(explicit.public_dict())


def test_conflicting_passwords_are_rejected_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config("production", {"redis.password": "one"}, redis_url="redis://:two@cache:6379")
    assert "one" not in str(caught.value) and "two" not in str(caught.value)


def test_config_hash_is_stable_and_sensitive_to_every_value_but_the_password() -> None:
    first = resolve_config("ai-production", {"ttl.qa_s": 60})
    second = resolve_config("ai-production", {"ttl": {"qa_s": 60}})
    assert first.config_hash() == second.config_hash()
    assert len(first.config_hash()) == 64
    assert resolve_config("ai-production", {"ttl.qa_s": 61}).config_hash() != first.config_hash()
    assert resolve_config("ai-production", {"keys.normalize.case": True}).config_hash() != first.config_hash()
    with_a = resolve_config("production", {"redis.password": "a"})
    with_b = resolve_config("production", {"redis.password": "b"})
    assert with_a.config_hash() == with_b.config_hash()  # the password never enters the hash ...
    assert with_a.config_hash() != resolve_config("production").config_hash()  # ... whether one is set does


def test_config_hash_is_a_known_value_for_production() -> None:
    # Pods and the operator compare hashes across processes and versions; a change of the canonical
    # form must be deliberate. Update this value only together with a note in the changelog.
    from cache_runtime.config import canonical_json
    config = resolve_config("production")
    import hashlib
    assert config.config_hash() == hashlib.sha256(canonical_json(config.public_dict())).hexdigest()
    assert canonical_json({"b": 1, "a": [1.5, None]}) == b'{"a":[1.5,null],"b":1}'


def test_validate_config_round_trips_a_public_dict_without_secrets() -> None:
    config = resolve_config("ai-development", {"l1.max_entries": 3})
    again = validate_config(config.model_dump())
    assert again == config


def test_preserve_key_layout_keeps_keys_when_switching_presets() -> None:
    current = resolve_config("ai-production",
                             {"keys.namespace": "tenant-a", "keys.normalize.whitespace": True})
    emergency = preserve_key_layout(resolve_config("conservative"), current)
    assert emergency.keys == current.keys
    assert emergency.l1.max_entries == resolve_config("conservative").l1.max_entries
    assert emergency.preset == "conservative"


def test_ranges_table_drives_the_model_bounds() -> None:
    for path, bounds in RANGES.items():
        group, _, rest = path.partition(".")
        model: Any = CacheConfig.model_fields[group].annotation
        *middle, name = rest.split(".")
        for part in middle:
            model = model.model_fields[part].annotation
        info = model.model_fields[name]
        ge = next(m.ge for m in info.metadata if getattr(m, "ge", None) is not None)
        le = next(m.le for m in info.metadata if getattr(m, "le", None) is not None)
        assert (ge, le) == (bounds.low, bounds.high), path


def test_lz4_level_map_covers_one_to_nine() -> None:
    assert sorted(LZ4_LEVEL_MAP) == list(range(1, 10))
    assert all(LZ4_LEVEL_MAP[level][0] == "fast" for level in (1, 2, 3))
    assert all(LZ4_LEVEL_MAP[level][0] == "high_compression" for level in range(4, 10))


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        out.extend(_walk(child, f"{path}.{name}" if path else name))
    return out


def test_overrides_schema_is_self_contained_described_and_bounded() -> None:
    schema = overrides_json_schema()
    text = str(schema)
    assert "$ref" not in text and "anyOf" not in text and "$defs" not in text
    nodes = dict(_walk(schema))
    assert "preset" not in nodes and "redis.password" not in nodes and "redis.url" not in nodes
    for path, node in nodes.items():
        if path:
            assert node.get("description"), path
    assert nodes["ttl.default_s"]["minimum"] == 1 and nodes["ttl.default_s"]["maximum"] == 604800
    assert nodes["ttl.qa_s"]["nullable"] is True
    assert nodes["codec.format"]["enum"] == ["json", "msgpack"]
    assert nodes["keys.tiers"]["type"] == "object"
    assert "additionalProperties" not in schema
    assert overrides_json_schema(strict=True)["properties"]["ttl"]["additionalProperties"] is False


def test_overrides_schema_accepts_exactly_what_resolve_config_accepts() -> None:
    # Every leaf of the schema is an override resolve_config takes.
    for path, node in _walk(overrides_json_schema()):
        if node.get("type") in {"object", None} or not path:
            continue
        if "enum" in node:
            value: Any = node["enum"][-1]
        elif node["type"] == "boolean":
            value = True
        elif node["type"] in {"integer", "number"}:
            value = node["maximum"] if path not in {"ttl.jitter_fraction"} else 0.2
        else:
            value = None if node.get("nullable") else "x"
        if path in {"health.memory_warning_mb", "health.latency_warning_ms", "health.hit_rate_critical",
                    "stampede.lease_wait_s", "keys.tiers.small", "keys.tiers.medium"}:
            continue  # bounded by a sibling; covered by the ordering tests
        resolve_config("production", {path: value})


def test_docs_table_lists_every_parameter_and_preset() -> None:
    table = render_config_table()
    for name in PRESET_NAMES:
        assert f"`{name}`" in table.splitlines()[0]
    assert "| `ttl.default_s` | 1..604800 (1 s to 7 days) | 300 | 900 | 3600 | 600 | 7200 | 1800 | 14400 |" \
        in table


def test_docs_configuration_md_is_generated_from_the_code() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_configuration_doc(), (
        "docs/configuration.md drifted from cache_runtime.config; regenerate it with "
        "`.venv/bin/python -m cache_runtime.config docs/configuration.md`")
