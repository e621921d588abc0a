"""The sample app's deterministic fake model: same input, same output; every call counted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.sample_app.fake_model import FakeModel, sentences

TEXT = (
    "The new cache is great. Users love the fast answers! Yesterday the old one failed. "
    "Was it the Redis? Nobody knows."
)


async def test_outputs_are_deterministic_and_counted() -> None:
    model = FakeModel(delay_s=0)
    first = [
        await model.summarize(TEXT),
        await model.sentiment(TEXT),
        await model.key_points(TEXT),
        await model.questions(TEXT),
        await model.qa(TEXT, "Why did the old one fail?"),
    ]
    second = [
        await model.summarize(TEXT),
        await model.sentiment(TEXT),
        await model.key_points(TEXT),
        await model.questions(TEXT),
        await model.qa(TEXT, "Why did the old one fail?"),
    ]
    assert first == second
    assert sum(model.calls.values()) == 10
    assert first[0] == {"summary": "The new cache is great. Users love the fast answers!", "sentences": 2}
    assert first[1]["label"] == "positive"
    assert first[4]["answer"] == "Yesterday the old one failed."


@pytest.mark.parametrize(
    ("text", "expected"),
    [("One. Two! Three?", ["One.", "Two!", "Three?"]), ("  no end  ", ["no end"]), ("", [])],
)
def test_sentences(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


async def test_negative_and_neutral() -> None:
    model = FakeModel(delay_s=0)
    assert (await model.sentiment("Slow, broken and awful."))["label"] == "negative"
    assert (await model.sentiment("The sky is blue."))["label"] == "neutral"
