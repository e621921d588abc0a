"""A bounded, expiring memory of ``Idempotency-Key`` -> the first result of an action.

The operator executes a CacheIncident step on each pod with the key ``<incident uid>:<step>``. If the
operator dies after the pod acted but before it recorded the result, it calls again with the same key;
the pod answers with the result it gave the first time instead of clearing (or isolating, or
reconnecting) twice. Calls with the same key that arrive while the first is still running wait for it.

Only successful results (2xx) are remembered: a failed action changed nothing the caller can rely on,
so a retry must be able to run it again. A key reused for a different request (another route, or other
parameters) is a client bug and is refused rather than answered with an unrelated result.

The memory is per process: a restarted pod has a new engine with nothing in it, so acting again there
is harmless for every action we have.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class IdempotencyKeyError(ValueError):
    """The header value is not an acceptable idempotency key."""

    def __init__(self, value: str, accepted: str) -> None:
        self.field = HEADER
        self.value = value
        self.accepted = accepted
        super().__init__(f"header {HEADER}={value[:64]!r} is invalid; accepted: {accepted}")


class IdempotencyConflict(Exception):
    """The key was already used for a different request."""

    def __init__(self, key: str, first_request: str) -> None:
        self.key = key
        self.first_request = first_request
        super().__init__(
            f"{HEADER} {key!r} was already used for a different request ({first_request}); "
            "use a new key for a new request"
        )


@dataclass(frozen=True, slots=True)
class StoredResult:
    """The first result given for a key, replayed for every repeat."""

    scope: str
    fingerprint: str
    status_code: int
    body: Any
    stored_at: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to answer: the status and body, and whether they are a replay of the first call."""

    status_code: int
    body: Any
    replayed: bool


def validate_key(value: str) -> str:
    """Return the key if it is 1..255 visible ASCII characters, else raise IdempotencyKeyError."""
    accepted = f"1 to {MAX_KEY_LENGTH} visible ASCII characters (no spaces), e.g. '<incident-uid>:<step>'"
    if not 1 <= len(value) <= MAX_KEY_LENGTH:
        raise IdempotencyKeyError(value, accepted)
    if any(not 0x21 <= ord(char) <= 0x7E for char in value):
        raise IdempotencyKeyError(value, accepted)
    return value


def request_fingerprint(method: str, path: str, query: dict[str, Any], body: Any) -> str:
    """A stable digest of what a request asks for, to detect a key reused for another request."""
    document = [method.upper(), path, query, body]
    try:
        canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        # orjson refuses integers beyond 64 bits (valid JSON a client may send); the stdlib does not.
        canonical = json.dumps(document, sort_keys=True, default=repr, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


class IdempotencyStore:
    """LRU- and TTL-bounded map of idempotency keys to first results, with per-key serialisation."""

    def __init__(
        self, *, max_entries: int = 10_000, ttl_s: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries={max_entries!r} is invalid; accepted: an integer >= 1")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s={ttl_s!r} is invalid; accepted: a number > 0")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._results: OrderedDict[str, StoredResult] = OrderedDict()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.replays = 0
        self.conflicts = 0

    def __len__(self) -> int:
        return len(self._results)

    def lookup(self, key: str, scope: str, fingerprint: str) -> StoredResult | None:
        """The stored first result for ``key``; raises IdempotencyConflict if it was another request."""
        stored = self._results.get(key)
        if stored is None:
            return None
        if self._clock() - stored.stored_at >= self.ttl_s:
            del self._results[key]
            return None
        if stored.scope != scope or stored.fingerprint != fingerprint:
            self.conflicts += 1
            raise IdempotencyConflict(key, stored.scope)
        self._results.move_to_end(key)
        return stored

    def remember(self, key: str, scope: str, fingerprint: str, status_code: int, body: Any) -> None:
        """Store a successful first result, evicting expired and then least-recently-used keys."""
        if not 200 <= status_code < 300:
            return
        self._results[key] = StoredResult(scope, fingerprint, status_code, body, self._clock())
        self._results.move_to_end(key)
        self._evict()

    def _evict(self) -> None:
        now = self._clock()
        # Entries are in recency order, so expired ones are mostly at the front: stop at the first live.
        while self._results:
            oldest_key, oldest = next(iter(self._results.items()))
            if now - oldest.stored_at < self.ttl_s and len(self._results) <= self.max_entries:
                break
            del self._results[oldest_key]

    async def run(
        self, key: str | None, scope: str, fingerprint: str, action: Callable[[], Awaitable[tuple[int, Any]]]
    ) -> Outcome:
        """Run ``action`` once per key: a repeat (or a concurrent duplicate) gets the first result."""
        if key is None:
            status_code, body = await action()
            return Outcome(status_code, body, replayed=False)
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                stored = self.lookup(key, scope, fingerprint)
                if stored is not None:
                    self.replays += 1
                    return Outcome(stored.status_code, stored.body, replayed=True)
                status_code, body = await action()
                self.remember(key, scope, fingerprint, status_code, body)
                return Outcome(status_code, body, replayed=False)
        finally:
            # Drop the lock with its last user, so the lock table stays as small as the traffic.
            current, remaining = self._locks[key]
            if remaining <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (current, remaining - 1)
