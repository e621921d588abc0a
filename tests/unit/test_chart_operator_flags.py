"""The operator flag the chart's HA mode relies on: ``--priority`` (kopf pauses every peer whose
priority equals its own, so replicas of one Deployment need distinct priorities: ``random``)."""

from __future__ import annotations

import pytest

from cache_operator.cli import main, peering_priority


def test_random_priorities_differ_and_are_positive() -> None:
    drawn = {peering_priority("random") for _ in range(20)}
    assert len(drawn) > 1
    assert all(isinstance(p, int) and 0 < p < 2**31 for p in drawn)


def test_explicit_and_absent_priority() -> None:
    assert peering_priority("42") == 42
    assert peering_priority("-3") == -3
    assert peering_priority(None) is None


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--priority", "7"], "--priority '7' is not accepted without --peering"),
        (
            ["--peering", "p", "--priority", "high"],
            "--priority 'high' is not accepted; accepted: an integer or 'random'",
        ),
    ],
)
def test_bad_priority_exits_2_naming_the_flag(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
