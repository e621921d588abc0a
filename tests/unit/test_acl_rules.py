"""required_acl_rules: the one list of ACL rules an engine needs (docs and ACL tests use it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache_runtime.config import required_acl_rules, resolve_config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_default_rules_grant_the_engine_keys_channel_and_commands_only() -> None:
    rules = required_acl_rules(resolve_config("production"))
    assert rules[:6] == ("resetkeys", "~cw:*", "~cw#*", "resetchannels", "&cw#coherence", "-@all")
    commands = {rule[1:] for rule in rules[6:]}
    assert all(rule.startswith("+") for rule in rules[6:])
    assert {"get", "mget", "set", "unlink", "incr", "scan", "evalsha", "script|load", "del",
            "publish", "subscribe", "ping", "info", "auth", "hello"} <= commands
    # Not needed (EVAL, KEYS, CONFIG) or unknown to Redis 7.0 (CLIENT SETINFO).
    assert not {"eval", "keys", "config|get", "flushall", "client|setinfo"} & commands
    assert not {"cluster|slots", "command"} & commands


def test_rules_follow_prefix_channel_and_cluster() -> None:
    config = resolve_config("production", overrides={"keys.prefix": "acme", "redis.cluster": True,
                                                     "coherence.channel": "ev*[?]\\x"})
    rules = required_acl_rules(config)
    assert "~acme:*" in rules and "~acme#*" in rules
    assert "&ev\\*\\[\\?\\]\\\\x" in rules  # matched literally, not as a glob
    assert {"+cluster|slots", "+cluster|shards", "+command"} <= set(rules)


def test_a_channel_with_whitespace_is_rejected_with_the_field_named() -> None:
    config = resolve_config("production", overrides={"coherence.channel": "cw events"})
    with pytest.raises(ValueError, match=r"coherence\.channel: 'cw events' cannot be granted"):
        required_acl_rules(config)


def test_the_configuration_doc_prints_exactly_these_rules() -> None:
    line = "ACL SETUSER <user> on ><password> " + " ".join(required_acl_rules(resolve_config("production")))
    assert line in DOCS.read_text(encoding="utf-8")
