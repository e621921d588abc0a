"""The outage journal: what this engine changed while Redis did not take it.

A write, delete or invalidation that Redis did not take (breaker open, an error, the namespace version
unknown) is on this pod only, while Redis may still hold the value it replaced and the other pods were
not told. The engine remembers it here and, as soon as Redis answers again, replays it through
:meth:`cache_runtime.l2.RedisL2.replay_outage`: UNLINK the keys (deletion is right whatever other pods
wrote meanwhile: the worst outcome is a miss), SCAN+UNLINK the patterns, INCR the namespaces, and
broadcast each on the coherence channel. Until then this pod does not read those keys from Redis
(:meth:`OutageJournal.covers`). Bounded: beyond ``max_keys`` keys (or ``MAX_PATTERNS`` patterns) the
replay is one INCR of this engine's namespace version instead, and until it ran no L2 read is served.

Bookkeeping only, no I/O: the facade (cache_runtime.cache) runs the replay loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from cache_runtime.keys import KeyBuilder, redis_glob_to_regex
from cache_runtime.l2.backend import OutageReplay
from cache_runtime.l2.coherence import NamespaceCleared, PatternInvalidated

__all__ = ["MAX_PATTERNS", "OutageJournal"]

# Pattern invalidations and namespaces remembered apart; beyond this many, the namespace as a whole.
MAX_PATTERNS = 64


class OutageJournal:
    """What Redis has not taken yet, by sequence number, so a replay forgets only what it replayed.

    ``active`` is the one flag the read path checks. ``on_entry`` is called after each new entry (the
    facade starts its replay loop there).
    """

    __slots__ = ("active", "keys", "max_keys", "namespaces", "on_entry", "overflow", "patterns", "seq",
                 "stats")

    def __init__(self, max_keys: int, on_entry: Callable[[], None]) -> None:
        self.max_keys = max_keys
        self.on_entry = on_entry
        self.active = False
        self.seq = 0
        self.keys: dict[str, int] = {}  # logical key -> journal sequence
        # full glob -> (sequence, compiled regex over base + key, coherence message kind)
        self.patterns: dict[str, tuple[int, re.Pattern[str], str]] = {}
        self.namespaces: dict[str, int] = {}  # namespace -> sequence
        self.overflow = 0  # sequence of the overflow (0: none): invalidate our namespace
        self.stats = {"writes_not_in_redis": 0, "deletes_not_in_redis": 0,
                      "invalidations_not_in_redis": 0, "replays": 0, "replayed_keys": 0,
                      "replay_failures": 0, "overflows": 0, "client_swaps": 0, "tunes": 0}

    def _next(self) -> int:
        self.seq += 1
        self.active = True
        self.on_entry()
        return self.seq

    def add_keys(self, keys: Iterable[str]) -> None:
        """Keys whose write or delete Redis did not take (replayed as deletions)."""
        seq = self._next()
        journal = self.keys
        for key in keys:
            journal[key] = seq
        if len(journal) > self.max_keys:
            self._overflowed(seq)

    def add_pattern(self, full_pattern: str, kind: str) -> None:
        """A pattern invalidation (``kind`` "pattern") or a clear ("clear") Redis did not take."""
        self.stats["invalidations_not_in_redis"] += 1
        seq = self._next()
        self.patterns[full_pattern] = (seq, redis_glob_to_regex(full_pattern), kind)
        if len(self.patterns) > MAX_PATTERNS:
            self._overflowed(seq)

    def add_namespace(self, namespace: str) -> None:
        """A namespace version bump Redis did not take (or that was not broadcast)."""
        self.stats["invalidations_not_in_redis"] += 1
        self.namespaces[namespace] = self._next()

    def stored(self, keys: Iterable[str]) -> None:
        """Redis took a newer write of ``keys``: nothing to replay for them."""
        if self.active:
            for key in keys:
                self.keys.pop(key, None)

    def _overflowed(self, seq: int) -> None:
        """Too much to remember one by one: the replay invalidates this namespace as a whole."""
        self.stats["overflows"] += 1
        self.overflow = seq
        self.keys.clear()
        self.patterns.clear()

    def covers(self, key: str, keys: KeyBuilder) -> bool:
        """Whether Redis may hold an entry of ``key`` that this pod changed without Redis knowing."""
        if key in self.keys or self.overflow:
            return True
        if keys.namespace in self.namespaces:
            return True
        if self.patterns:
            full = keys.base() + key
            return any(regex.fullmatch(full) for _, regex, _ in self.patterns.values())
        return False

    def state(self) -> dict[str, Any]:
        """What the journal holds and has done (``stats()["engine"]["outage_journal"]``)."""
        return {
            "pending": self.active,
            "keys": len(self.keys),
            "patterns": len(self.patterns),
            "namespaces": sorted(self.namespaces),
            "overflow": bool(self.overflow),
            "max_keys": self.max_keys,
            **self.stats,
        }

    def replay_plan(self, keys: KeyBuilder, channel: str | None, origin: str) -> OutageReplay:
        """Everything journaled so far, as the Redis tier replays it."""
        own = keys.namespace
        namespaces = set(self.namespaces)
        if self.overflow:
            namespaces.add(own)
        return OutageReplay(
            upto=self.seq,
            own_namespace=own,
            version_key=keys.version_key,
            key_prefix=lambda version: keys.base(version=version),
            bump=tuple(sorted(namespaces)),
            patterns=tuple(
                (full, NamespaceCleared(own) if kind == "clear" else PatternInvalidated(full))
                for full, (_, _, kind) in self.patterns.items()
            ),
            keys=() if own in namespaces else tuple(self.keys),
            channel=channel,
            origin=origin,
        )

    def forget(self, upto: int) -> None:
        """Drop what was replayed (entries of sequence <= ``upto``); later ones stay."""
        self.keys = {key: seq for key, seq in self.keys.items() if seq > upto}
        self.patterns = {p: entry for p, entry in self.patterns.items() if entry[0] > upto}
        self.namespaces = {ns: seq for ns, seq in self.namespaces.items() if seq > upto}
        if self.overflow <= upto:
            self.overflow = 0
        self.active = bool(self.keys or self.patterns or self.namespaces or self.overflow)
