"""A deterministic stand-in for an LLM: same input, same output, with a configurable delay.

It is only good enough to make the cache matter: every call sleeps ``delay_s`` (the "model
latency" that a cache hit saves) and counts itself, so a load test can compare model calls with
requests.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[A-Za-z']+")

POSITIVE = frozenset(
    {
        "good",
        "great",
        "excellent",
        "love",
        "happy",
        "fast",
        "reliable",
        "clear",
        "useful",
        "helpful",
        "wonderful",
        "best",
        "improved",
        "success",
        "stable",
        "easy",
    }
)
NEGATIVE = frozenset(
    {
        "bad",
        "poor",
        "terrible",
        "hate",
        "sad",
        "slow",
        "broken",
        "unclear",
        "useless",
        "awful",
        "worst",
        "failed",
        "failure",
        "crash",
        "outage",
        "hard",
    }
)
STOPWORDS = frozenset(
    {
        "the",
        "a",
        "an",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "for",
        "is",
        "are",
        "was",
        "were",
        "it",
        "this",
        "that",
        "with",
        "as",
        "by",
        "be",
        "at",
        "from",
    }
)


def sentences(text: str) -> list[str]:
    """Split text into sentences at ., ! or ? followed by whitespace."""
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def words(text: str) -> list[str]:
    """Lower-case words (letters and apostrophes)."""
    return [word.lower() for word in _WORD.findall(text)]


@dataclass
class FakeModel:
    """Summarize, sentiment, key points, questions and QA, deterministically, after ``delay_s``."""

    delay_s: float = 0.05
    calls: Counter[str] = field(default_factory=Counter)

    async def _think(self, operation: str) -> None:
        self.calls[operation] += 1
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)

    async def summarize(self, text: str, max_sentences: int = 2) -> dict[str, object]:
        """The first ``max_sentences`` sentences."""
        await self._think("summarize")
        picked = sentences(text)[:max_sentences]
        return {"summary": " ".join(picked), "sentences": len(picked)}

    async def sentiment(self, text: str) -> dict[str, object]:
        """positive / negative / neutral from word lists, with a score in [-1, 1]."""
        await self._think("sentiment")
        tokens = words(text)
        positive = sum(token in POSITIVE for token in tokens)
        negative = sum(token in NEGATIVE for token in tokens)
        total = positive + negative
        score = 0.0 if total == 0 else (positive - negative) / total
        label = "positive" if score > 0.2 else "negative" if score < -0.2 else "neutral"
        return {"label": label, "score": round(score, 3), "positive": positive, "negative": negative}

    async def key_points(self, text: str, max_points: int = 3) -> dict[str, object]:
        """The sentences that carry the most frequent content words."""
        await self._think("key_points")
        frequency = Counter(word for word in words(text) if word not in STOPWORDS)
        ranked = sorted(
            sentences(text), key=lambda sentence: (-sum(frequency[w] for w in words(sentence)), sentence)
        )
        return {"key_points": ranked[:max_points]}

    async def questions(self, text: str, max_questions: int = 3) -> dict[str, object]:
        """'What about X?' for the most frequent content words."""
        await self._think("questions")
        frequency = Counter(word for word in words(text) if word not in STOPWORDS and len(word) > 3)
        topics = [word for word, _ in sorted(frequency.items(), key=lambda item: (-item[1], item[0]))]
        return {"questions": [f"What about {topic}?" for topic in topics[:max_questions]]}

    async def qa(self, text: str, question: str) -> dict[str, object]:
        """The sentence sharing the most words with the question."""
        await self._think("qa")
        asked = set(words(question)) - STOPWORDS
        candidates = sentences(text) or [""]
        best = max(candidates, key=lambda sentence: (len(asked & set(words(sentence))), -len(sentence)))
        return {"answer": best, "overlap": len(asked & set(words(best)))}
