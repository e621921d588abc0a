"""cache_runtime.keys: layout, no collisions, tiers, readable text only where allowed, normalization."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_runtime.config import NormalizeConfig, resolve_config
from cache_runtime.keys import (
    KEY_SCHEMA,
    KeyBuilder,
    TextTooLongError,
    canonical_options,
    normalize_text,
    redis_glob_to_regex,
)


def builder(preset: str = "ai-production", **overrides: Any) -> KeyBuilder:
    return KeyBuilder(resolve_config(preset, overrides))


def test_layout_is_versioned_prefix_namespace_version_then_logical_key() -> None:
    keys = builder(**{"keys.prefix": "app", "keys.namespace": "tenant-a"})
    keys.namespace_version = 7
    key = keys.key_for("summarize", "hello")
    assert key.startswith(f"ai{KEY_SCHEMA}:summarize:s:h")
    assert keys.redis_key(key) == f"app:tenant-a:v7:{key}"
    assert keys.data_key("user:42") == "d:user:42"
    assert keys.version_key() == "app#nsver:tenant-a"
    assert keys.base() == "app:tenant-a:v7:" and keys.base("b", 2) == "app:b:v2:"
    assert not re.fullmatch(redis_glob_to_regex(keys.pattern("*")), keys.version_key())


def test_the_originals_separator_collision_is_gone() -> None:
    for preset in ("ai-production", "ai-development"):  # hashed text and readable text
        keys = builder(preset)
        assert keys.key_for("summarize", "a|b") != keys.key_for("summarize", "a_b")
        assert keys.key_for("qa", "a", question="b|c") != keys.key_for("qa", "a|b", question="c")
        assert keys.key_for("qa", "x", {"a": "b|c"}) != keys.key_for("qa", "x", {"a": "b_c"})


@pytest.mark.parametrize("preset", ["ai-production", "ai-development"])
def test_near_collisions_are_distinct(preset: str) -> None:
    keys = builder(preset)
    variants = [
        ("summarize", "ab", None, None), ("summarize", "a", None, "b"), ("summarize", "ab", None, ""),
        ("summarize", "", None, "ab"), ("summarize", "a:b", None, None), ("summarize", "a%3Ab", None, None),
        ("summarize", "a b", None, None), ("summarize", "a%20b", None, None),
        ("summarize", "a+b", None, None),
        ("summarize", "ab", {"x": 1}, None), ("summarize", "ab", {"x": "1"}, None),
        ("summarize", "ab", {"x": 1.0}, None), ("summarize", "ab", {"x": [1]}, None),
        ("summary", "ab", None, None), ("summarize", "AB", None, None), ("summarize", "ab ", None, None),
        ("summarize", "a\u200bb", None, None), ("summarize", "1:a", None, None),
        ("summarize", "~", None, None),
    ]
    built = [keys.key_for(*v) for v in variants]
    assert len(set(built)) == len(variants)


json_scalars = st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.text(max_size=5) | \
    st.floats(allow_nan=False, allow_infinity=False)
options_strategy = st.none() | st.dictionaries(st.text(max_size=4), st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                               max_size=3), max_leaves=6),
    max_size=3)
inputs = st.tuples(st.sampled_from(["summarize", "qa", "q.a", "sentiment"]), st.text(max_size=40),
                   options_strategy, st.none() | st.text(max_size=10))


def _logical(item: tuple[str, str, Any, str | None]) -> tuple[str, str, bytes, str | None]:
    operation, text, options, question = item
    return operation, text, canonical_options(options), question


@settings(max_examples=300, deadline=None)
@given(first=inputs, second=inputs)
def test_distinct_inputs_never_share_a_key(first: Any, second: Any) -> None:
    for keys in (HASHED, READABLE):
        if _logical(first) != _logical(second):
            assert keys.key_for(*first) != keys.key_for(*second)
        else:
            assert keys.key_for(*first) == keys.key_for(*second)


HASHED = builder("ai-production")
READABLE = builder("ai-development", **{"keys.text_hash_threshold": 100})


@settings(max_examples=200, deadline=None)
@given(user_key=st.text(min_size=1, max_size=30), other=st.text(min_size=1, max_size=30))
def test_data_keys_are_injective_and_escape_glob_characters(user_key: str, other: str) -> None:
    keys = HASHED
    if user_key != other:
        assert keys.data_key(user_key) != keys.data_key(other)
    tail = keys.data_key(user_key)[2:]
    assert not set(tail) & set("*?[]\\ \t\n")
    assert unquote(tail, errors="surrogatepass") == user_key


def test_options_are_canonical() -> None:
    keys = HASHED
    assert keys.key_for("qa", "t", {"b": 1, "a": {"y": 2, "x": 1}}) == \
        keys.key_for("qa", "t", {"a": {"x": 1, "y": 2}, "b": 1})
    assert canonical_options({"b": [1, {"d": 1, "c": 2}], "a": None}) == b'{"a":null,"b":[1,{"c":2,"d":1}]}'
    assert keys.key_for("qa", "t", None) == keys.key_for("qa", "t", {})
    assert canonical_options({"n": 2**70}) == b'{"n":1180591620717411303424}'


@pytest.mark.parametrize("options", [{1: "a"}, {"a": {2: "b"}}, {"a": object()}, ["not", "a", "mapping"]])
def test_bad_options_are_rejected(options: Any) -> None:
    with pytest.raises(TypeError, match="options"):
        HASHED.key_for("qa", "t", options)


@pytest.mark.parametrize(("operation", "text", "question"), [
    ("", "t", None), ("sum:marize", "t", None), ("a" * 65, "t", None), ("qa", b"bytes", None),
    ("qa", "t", 5), (None, "t", None),
])
def test_bad_operation_text_question_are_rejected(operation: Any, text: Any, question: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        HASHED.key_for(operation, text, None, question)


@pytest.mark.parametrize("user_key", ["", "x" * 4097, 5])
def test_bad_data_keys_are_rejected(user_key: Any) -> None:
    with pytest.raises(ValueError, match="key"):
        HASHED.data_key(user_key)


def test_tiers_follow_the_config() -> None:
    keys = builder("ai-development")  # tiers 500 / 2000 / 10000
    tier = lambda n: keys.describe("summarize", "x" * n)["tier"]  # noqa: E731
    assert [tier(n) for n in (0, 500, 501, 2000, 2001, 10000, 10001)] == ["s", "s", "m", "m", "l", "l", "x"]
    custom = builder("ai-development", **{"keys.tiers": {"small": 1, "medium": 2, "large": 3}})
    assert custom.describe("summarize", "xx")["tier"] == "m"


def test_small_text_is_readable_only_where_the_config_allows_it() -> None:
    secret = "patient record 12345"
    prod = builder("ai-production")
    assert "patient" not in prod.key_for("summarize", secret)
    assert prod.describe("summarize", secret)["text"] is None
    assert "patient" not in str(prod.describe("summarize", secret))
    dev = builder("ai-development")
    assert "patient%20record%2012345" in dev.key_for("summarize", secret)
    assert dev.describe("summarize", secret)["text"] == secret
    long_text = "patient " * 100  # over ai-development's 500-character hash threshold
    assert "patient" not in dev.key_for("summarize", long_text)
    assert "patient" not in str(dev.describe("summarize", long_text))
    assert "patient" not in builder("ai-development", **{"keys.readable_small_text": False}).key_for(
        "summarize", secret)


def test_hash_algorithm_is_selectable() -> None:
    xxh = builder().key_for("qa", "x" * 2000)
    sha = builder(**{"keys.hash_algorithm": "sha256"}).key_for("qa", "x" * 2000)
    assert len(xxh.rsplit(":h", 1)[1]) == 32
    assert len(sha.rsplit(":h", 1)[1]) == 64


def test_max_text_length_applies_with_ai_features_only() -> None:
    with pytest.raises(TextTooLongError) as caught:
        builder("ai-development").key_for("summarize", "x" * 50001)
    assert "50001" in str(caught.value) and "50000" in str(caught.value) and "xxxx" not in str(caught.value)
    builder("ai-development").key_for("summarize", "x" * 50000)
    builder("production", **{"keys.max_text_length": 10}).key_for("summarize", "x" * 11)


def test_normalization_is_off_by_default_and_merges_variants_when_on() -> None:
    variants = ["Hello  World\r\n", "hello world\n", "Hello\u200b World", " HELLO\tWORLD "]
    assert len({HASHED.key_for("summarize", v) for v in variants}) == 4
    on = builder(**{"keys.normalize": {"whitespace": True, "line_endings": True, "invisible_chars": True,
                                       "case": True}})
    assert len({on.key_for("summarize", v) for v in variants}) == 1
    assert on.key_for("qa", "t", question="What?") == on.key_for("qa", "t", question="  what? ")
    described = on.describe("summarize", " HELLO\tWORLD ")
    assert described["normalization_changed_text"] is True and described["normalized_length"] == 11


@pytest.mark.parametrize(("rule", "text", "expected"), [
    ("line_endings", "a\r\nb\rc\n", "a\nb\nc\n"),
    ("invisible_chars", "a\u200bb\ufeffc\u00add\u200e", "abcd"),
    ("whitespace", "  a \t\n b\u00a0 c  ", "a b c"),
    ("case", "Straße ÄB", "strasse äb"),
])
def test_each_normalization_rule(rule: str, text: str, expected: str) -> None:
    assert normalize_text(text, NormalizeConfig(**{rule: True})) == expected
    assert normalize_text(text, NormalizeConfig()) == text


def test_operation_of_reads_ai_keys_only() -> None:
    keys = HASHED
    assert keys.operation_of(keys.key_for("key_points", "t")) == "key_points"
    assert keys.operation_of(keys.data_key("ai1:qa:zz")) is None
    assert keys.operation_of("foreign:key") is None and keys.operation_of("ai1:") is None


def test_namespace_and_operation_patterns() -> None:
    keys = HASHED
    keys_v3 = KeyBuilder(keys.config, namespace_version=3)
    other = builder(**{"keys.namespace": "other"})
    regex = redis_glob_to_regex(keys.namespace_pattern())
    key = keys.key_for("qa", "t")
    assert regex.fullmatch(keys.redis_key(key)) and regex.fullmatch(keys_v3.redis_key(key))
    assert not regex.fullmatch(other.redis_key(key))
    assert keys.namespace_prefix() == "cw:default:"
    op = redis_glob_to_regex(keys.operation_pattern("qa"))
    assert op.fullmatch(keys_v3.redis_key(key))
    assert not op.fullmatch(keys.redis_key(keys.key_for("qa_x", "t")))
    assert keys.pattern("*:ai1:qa:*") == "cw:*:ai1:qa:*"
    assert keys.pattern("default:*") == "cw:default:*"
    assert keys.pattern("cw:default:*") == "cw:default:*"
    with pytest.raises(ValueError):
        keys.pattern("")


@pytest.mark.parametrize(("pattern", "matches", "misses"), [
    ("a*", ["a", "abc"], ["ba"]),
    ("a?c", ["abc", "a:c"], ["ac", "abbc"]),
    ("a[bc]d", ["abd", "acd"], ["aad"]),
    ("a[^bc]d", ["aad"], ["abd"]),
    ("a[b-d]e", ["ace"], ["aee"]),
    ("a\\*b", ["a*b"], ["axb"]),
    ("a.b", ["a.b"], ["axb"]),
    ("a[b", ["a[b"], ["ab"]),
])
def test_redis_glob_translation(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = redis_glob_to_regex(pattern)
    assert all(regex.fullmatch(m) for m in matches)
    assert not any(regex.fullmatch(m) for m in misses)


def test_lease_keys_live_outside_the_data_space() -> None:
    keys = HASHED
    lease = keys.lease_key(keys.key_for("qa", "t"))
    assert lease.startswith("cw#lease:") and lease != keys.lease_key(keys.key_for("qa", "u"))
    assert not redis_glob_to_regex(keys.pattern("*")).fullmatch(lease)
