"""The guide's flat config keys map onto the real config; bad ones are refused naming the key."""

from __future__ import annotations

import math

import pytest

from cache_runtime.config import apply_overrides, resolve_config, validate_config
from cache_runtime.service.errors import InvalidRequest, echo, non_finite_path, strict
from cache_runtime.service.guide.flat_config import FLAT_KEYS, translate
from tests.integration.guide_doc import parse_guide

CURRENT = resolve_config("ai-production").model_dump()


def test_every_config_body_of_the_guide_translates_to_a_valid_config() -> None:
    bodies = [
        command.body
        for command in parse_guide()
        if command.path.endswith(
            (
                "config/update",
                "redis-config/update",
                "text-processor/configure",
                "optimize/text-processing",
                "memory/pressure-config",
                "health/configure",
            )
        )
    ]
    assert len(bodies) == 11
    for body in bodies:
        assert isinstance(body, dict)
        percent = "emergency_eviction_threshold" in body
        translation = translate(body, CURRENT, percent=percent)
        assert set(body) <= set(translation.describe()["mapped"]) | set(translation.notes) | {
            key.split(".")[0] for key in translation.describe()["mapped"]
        }
        validate_config(apply_overrides(CURRENT, translation.overrides))


def test_the_mapping_follows_the_config() -> None:
    translation = translate(
        {
            "default_ttl": 3600,
            "operation_ttls": {"qa": 1800},
            "normalize_text": True,
            "memory_cache_size": 100,
        },
        CURRENT,
    )
    assert translation.overrides == {
        "ttl.default_s": 3600,
        "ttl.qa_s": 1800,
        "keys.normalize.line_endings": True,
        "keys.normalize.invisible_chars": True,
        "keys.normalize.whitespace": True,
        "l1.max_entries": 100,
    }
    percent = translate({"memory_pressure_threshold": 50}, CURRENT, percent=True)
    assert percent.overrides["health.memory_warning_mb"] == pytest.approx(
        CURRENT["l1"]["max_bytes"] / 2 / 2**20
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"default_ttl": "1h"}, "body.default_ttl"),
        ({"default_ttl": math.inf}, "body.default_ttl"),
        ({"default_ttl": 1.5}, "body.default_ttl"),
        ({"normalize_text": "yes"}, "body.normalize_text"),
        ({"consistent_encoding": "latin-1"}, "body.consistent_encoding"),
        ({"operation_ttls": {"translate": 5}}, "body.operation_ttls.translate"),
        ({"thresholds": {"hit_rate_ok": 1}}, "body.thresholds.hit_rate_ok"),
        ({"nope": 1}, "body.nope"),
        ({}, "body"),
    ],
)
def test_bad_keys_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        translate(body, CURRENT)
    assert raised.value.problems[0]["field"] == field
    assert raised.value.problems[0]["accepted"]


def test_every_flat_key_has_a_handler_that_accepts_the_guides_value() -> None:
    assert {"default_ttl", "normalize_text", "compression_threshold", "memory_cache_size"} <= set(FLAT_KEYS)


def test_echo_is_strict_json() -> None:
    assert echo(math.inf) == "inf" and echo(-math.inf) == "-inf" and echo(math.nan) == "nan"
    assert echo(10**500).startswith("<integer of")
    assert echo({"a": [math.inf, "\ud800"]}) == {"a": ["inf", "?"]}
    assert strict({"x\ud800": [math.nan]}) == {"x?": ["nan"]}
    assert non_finite_path({"a": [1, {"b": math.inf}]}) == "a[1].b"
    assert non_finite_path({"a": 1e308}) is None
