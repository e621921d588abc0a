"""The service's error shape and its in-memory journals (pure parts)."""

from __future__ import annotations

import logging

import pytest

from cache_runtime.config import ConfigError, resolve_config
from cache_runtime.service.errors import InvalidRequest, echo, problems_from_validation
from cache_runtime.service.journal import ActionJournal, RecentErrors


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("short", "short"),
        (5, 5),
        (None, None),
        ({"a": 1}, {"a": 1}),
    ],
)
def test_echo_keeps_small_values(value: object, expected: object) -> None:
    assert echo(value) == expected


def test_echo_cuts_long_text_and_big_documents() -> None:
    assert echo("x" * 1000) == "x" * 200 + "..."
    assert echo({"text": "y" * 1000}).startswith("<dict of ")
    assert echo(object()).startswith("<object object")


def test_validation_errors_become_field_value_accepted() -> None:
    problems = problems_from_validation(
        [
            {
                "type": "greater_than_equal",
                "loc": ("body", "ttl_s"),
                "msg": "Input should be >= 1",
                "input": 0,
                "ctx": {"ge": 1},
            },
            {"type": "missing", "loc": ("body", "value"), "msg": "Field required", "input": {}},
            {
                "type": "literal_error",
                "loc": ("body", "preset"),
                "msg": "Input should be ...",
                "input": "warp",
                "ctx": {"expected": "'simple' or 'production'"},
            },
            {
                "type": "string_too_long",
                "loc": ("path", "key"),
                "msg": "too long",
                "input": "k" * 2000,
                "ctx": {"max_length": 1024},
            },
            {"type": "extra_forbidden", "loc": ("body", "colour"), "msg": "Extra inputs", "input": "blue"},
        ]
    )
    assert [p["field"] for p in problems] == [
        "body.ttl_s",
        "body.value",
        "body.preset",
        "path.key",
        "body.colour",
    ]
    assert problems[0]["accepted"] == ">= 1" and problems[0]["value"] == 0
    assert problems[1]["accepted"].startswith("a value")
    assert "'simple'" in problems[2]["accepted"]
    assert problems[3]["accepted"] == "at most 1024 characters" and len(problems[3]["value"]) == 203
    assert "unknown fields" in problems[4]["accepted"]


def test_config_error_lists_every_problem() -> None:
    try:
        resolve_config("production", overrides={"ttl": {"default_s": 0}, "l1": {"max_entries": -1}})
    except ConfigError as error:
        request = InvalidRequest.from_config_error(error, prefix="body.overrides.")
    fields = {p["field"] for p in request.problems}
    assert fields == {"body.overrides.ttl.default_s", "body.overrides.l1.max_entries"}
    assert request.status_code == 422


def test_action_journal_counts_by_outcome() -> None:
    journal = ActionJournal(history=2)
    journal.record("clear", result={"n": 1})
    journal.record("clear", result={"n": 1}, replayed=True)
    journal.record("gc", result=None, failed=True)
    journal.record("clear", result=None, dry_run=True)
    described = journal.describe()
    assert described["executed"] == {"clear": 1}
    assert described["replayed"] == {"clear": 1}
    assert described["failed"] == {"gc": 1}
    assert described["dry_runs"] == {"clear": 1}
    assert len(described["recent"]) == 2


def test_recent_errors_keep_warnings_newest_first_and_bounded() -> None:
    ring = RecentErrors(capacity=3)
    ring.attach("cachewarden.test")
    logger = logging.getLogger("cachewarden.test")
    try:
        logger.info("not kept")
        for index in range(5):
            logger.warning("problem %d", index, extra={"fields": {"kind": "timeout", "text": "user text"}})
        try:
            raise TimeoutError("x")
        except TimeoutError:
            logger.exception("failed")
    finally:
        ring.detach("cachewarden.test")
    described = ring.describe(limit=10)
    assert described["total"] == 6
    messages = [entry["message"] for entry in described["errors"]]
    assert messages == ["failed", "problem 4", "problem 3"]
    assert described["errors"][0]["exception"] == "TimeoutError"
    assert described["errors"][1]["fields"] == {"kind": "timeout"}
