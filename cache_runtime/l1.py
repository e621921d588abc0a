"""L1: the in-process tier. An LRU bounded by entry count AND bytes, with per-entry expiry.

Every operation is O(1) (an ``OrderedDict`` keeps LRU order in C). There are no per-key timers:
an expired entry is dropped when it is read (lazy expiry), and each write also checks the
``sweep_batch`` least recently used entries and drops the expired ones among them (amortised sweep),
so entries nobody reads again do not sit in memory until LRU pressure pushes them out.

Entries hold the *decoded* value (an L1 hit costs no decoding) and the size the caller gives, which
is what the byte budget counts: the facade gives what the entry costs in memory
(:func:`cache_runtime.sizing.entry_size`: the value as Python keeps it, the key, the entry). A large
value written by this process may instead be stored as a :class:`DeferredValue` (an immutable
serialized snapshot), parsed once on its first read; with ``measure`` given, L1 then re-measures
the entry, since the parsed value usually takes more memory than its snapshot. A value the codec
compressed is stored as a :class:`PackedValue`: L1 keeps the lz4 block (what the budget counts) and
every hit decompresses and parses it, so compression lowers the memory L1 holds, at a decode per hit
(bench/memory.py prints both; small values are never compressed, so bench B1 is unaffected).
The hit path (:meth:`L1Cache.get`) is deliberately tiny: no logging, no metrics, no isinstance
checks; hit/miss counting is the caller's (the facade's plain counters).

``epoch`` guards against a race the facade has: a read that started before an invalidation must not
put its (stale) value into L1 after it. Writers pass the epoch they saw; :meth:`L1Cache.bump_epoch`
(used when coherence messages may have been missed) clears L1 and makes those late writes no-ops.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import lz4.block

__all__ = ["MISSING", "DeferredValue", "L1Cache", "L1Entry", "PackedValue", "is_packed"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()
"""Returned by :meth:`L1Cache.get` on a miss (None is a value that can be cached)."""


class L1Entry:
    """One cached value: the decoded value, the bytes it counts against the budget, its deadline,
    the TTL it was given and ``op``, the stats bucket of an AI key (None for other keys), so the
    facade's hit path counts per operation without a second lookup."""

    __slots__ = ("deadline", "op", "size", "ttl", "value")

    def __init__(self, value: Any, size: int, deadline: float, ttl: float, op: str | None = None) -> None:
        self.value = value
        self.size = size
        self.deadline = deadline
        self.ttl = ttl
        self.op = op

    def remaining(self, now: float) -> float:
        """Seconds left before expiry at monotonic time ``now``."""
        return self.deadline - now


class DeferredValue:
    """A value L1 keeps as an immutable serialized snapshot until it is first read.

    Copying a large value for L1 at write time (parsing its payload back) holds the GIL for about a
    millisecond per MiB, which stalls the event loop (bench B5); most large values are read rarely.
    The payload is bytes, so a caller mutating its object after ``set()`` cannot change what L1
    serves. ``load`` must return a fresh value from ``payload``.
    """

    __slots__ = ("load", "payload")

    def __init__(self, load: Callable[[bytes], Any], payload: bytes) -> None:
        self.load = load
        self.payload = payload


class PackedValue:
    """A value L1 keeps compressed: an lz4 block of its serialized payload, opened on every read.

    ``load`` parses the payload (it must return a fresh value); ``packed`` is the lz4 block without
    a stored size; ``raw_size`` is the payload's length, which bounds decompression. The block was
    made by this process or checked when it came from Redis (``codec.decode`` opened it once), so
    opening it again cannot fail on hostile bytes.
    """

    __slots__ = ("load", "packed", "raw_size")

    def __init__(self, load: Callable[[bytes], Any], packed: bytes, raw_size: int) -> None:
        self.load = load
        self.packed = packed
        self.raw_size = raw_size

    def open(self) -> Any:
        """The value: the block decompressed and parsed (a new object on every call)."""
        return self.load(lz4.block.decompress(self.packed, uncompressed_size=self.raw_size))


class _PackedEntry(L1Entry):
    """An entry whose value stays compressed: ``value`` decompresses and parses it on every read."""

    __slots__ = ("_packed",)

    def __init__(self, packed: PackedValue, size: int, deadline: float, ttl: float,
                 op: str | None = None) -> None:
        self._packed = packed
        self.op = op
        self.size = size
        self.deadline = deadline
        self.ttl = ttl

    @property  # type: ignore[override]
    def value(self) -> Any:
        """The value, decompressed and parsed from the block kept in L1 (a fresh object each time)."""
        return self._packed.open()


def is_packed(entry: L1Entry) -> bool:
    """Whether ``entry`` keeps its value compressed (opened on every read)."""
    return type(entry) is _PackedEntry


class _DeferredEntry(L1Entry):
    """An entry whose value is parsed from its payload on first read, then kept.

    ``value`` is a property here, so the hit paths read ``entry.value`` unchanged and plain entries
    pay nothing for this.
    """

    __slots__ = ("_deferred", "_key", "_loaded", "_owner")

    def __init__(self, deferred: DeferredValue, size: int, deadline: float, ttl: float,
                 key: str = "", owner: L1Cache | None = None, op: str | None = None) -> None:
        self._deferred: DeferredValue | None = deferred
        self._loaded: Any = None
        self.op = op
        self._key = key
        self._owner = owner
        self.size = size
        self.deadline = deadline
        self.ttl = ttl

    @property  # type: ignore[override]
    def value(self) -> Any:
        """The value, parsed from the snapshot the first time it is asked for."""
        deferred = self._deferred
        if deferred is not None:
            self._loaded = deferred.load(deferred.payload)
            self._deferred = None
            owner, self._owner = self._owner, None
            if owner is not None:
                owner._remeasure(self._key, self)
        return self._loaded


class L1Cache:
    """LRU bounded by ``max_entries`` and ``max_bytes``; per-entry TTLs on a monotonic clock.

    ``clock`` is injectable so tests advance time instead of sleeping.
    """

    __slots__ = (
        "_clock",
        "_data",
        "_measure",
        "bytes",
        "epoch",
        "evictions",
        "expirations",
        "inserts",
        "max_bytes",
        "max_entries",
        "rejected",
        "sweep_batch",
    )

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        sweep_batch: int = 8,
        clock: Callable[[], float] = time.monotonic,
        measure: Callable[[str, Any], int] | None = None,
    ) -> None:
        self._data: OrderedDict[str, L1Entry] = OrderedDict()
        self._clock = clock
        # (key, value) -> bytes: re-measures a deferred entry once it is parsed (None: never).
        self._measure = measure
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.sweep_batch = sweep_batch
        self.bytes = 0
        self.epoch = 0
        self.evictions = 0
        self.expirations = 0
        self.inserts = 0
        self.rejected = 0

    # hot path -----------------------------------------------------------------------------------

    def get(self, key: str, default: Any = MISSING) -> Any:
        """The value under ``key``, or ``default`` if absent or expired. Marks the entry as recently used."""
        entry = self._data.get(key)
        if entry is None:
            return default
        if entry.deadline <= self._clock():
            self._drop_expired(key, entry)
            return default
        self._data.move_to_end(key)
        return entry.value

    @property
    def entries(self) -> OrderedDict[str, L1Entry]:
        """The live map of key -> entry, least recently used first (the same object for the cache's
        life). For the facade's inlined read path: look up, and ``move_to_end`` on a hit; never insert
        or delete through it (L1Cache keeps the byte count and the bounds)."""
        return self._data

    def get_entry(self, key: str) -> L1Entry | None:
        """The live entry under ``key`` (for callers that need its remaining TTL), else None."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.deadline <= self._clock():
            self._drop_expired(key, entry)
            return None
        self._data.move_to_end(key)
        return entry

    # writes -------------------------------------------------------------------------------------

    def set(self, key: str, value: Any, size: int, ttl: float, epoch: int | None = None,
            full_ttl: float | None = None, op: str | None = None) -> bool:
        """Store ``value`` (counted as ``size`` bytes) for ``ttl`` seconds. Returns whether it was stored.

        ``full_ttl`` is the lifetime the value was written with when it lives here shorter than that
        (an L2 hit keeps only the L2 entry's remaining TTL); early refresh measures against it.
        Not stored when L1 is off (a zero budget), when the entry alone exceeds the byte budget, when
        ``ttl`` is not positive, or when ``epoch`` is given and L1 was invalidated since.
        """
        if (epoch is not None and epoch != self.epoch) or ttl <= 0:
            return False
        if self.max_entries <= 0 or size > self.max_bytes:
            self.rejected += 1
            self._remove(key)
            return False
        data = self._data
        old = data.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        now = self._clock()
        kept_ttl = ttl if full_ttl is None else max(ttl, full_ttl)
        kind = type(value)
        if kind is DeferredValue:
            data[key] = _DeferredEntry(value, size, now + ttl, kept_ttl, key,
                                       self if self._measure is not None else None, op)
        elif kind is PackedValue:
            data[key] = _PackedEntry(value, size, now + ttl, kept_ttl, op)
        else:
            data[key] = L1Entry(value, size, now + ttl, kept_ttl, op)
        self.bytes += size
        self.inserts += 1
        if self.sweep_batch:
            self._sweep(now)
        self._enforce_budgets()
        return True

    def _remeasure(self, key: str, entry: L1Entry) -> None:
        """A deferred entry was parsed: count what its value takes now, then enforce the budgets
        (the entry was just read, so it is the most recently used and goes last, if at all)."""
        if self._measure is None or self._data.get(key) is not entry:
            return
        size = self._measure(key, entry.value)
        self.bytes += size - entry.size
        entry.size = size
        self._enforce_budgets()

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was present."""
        return self._remove(key)

    def _remove(self, key: str) -> bool:
        entry = self._data.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        return True

    def _drop_expired(self, key: str, entry: L1Entry) -> None:
        del self._data[key]
        self.bytes -= entry.size
        self.expirations += 1

    def _sweep(self, now: float) -> None:
        data = self._data
        expired = [(k, e) for k, e in islice(data.items(), self.sweep_batch) if e.deadline <= now]
        for key, entry in expired:
            self._drop_expired(key, entry)

    def _enforce_budgets(self) -> None:
        data = self._data
        while len(data) > self.max_entries or self.bytes > self.max_bytes:
            _, entry = data.popitem(last=False)
            self.bytes -= entry.size
            self.evictions += 1

    # bulk ---------------------------------------------------------------------------------------

    def resize(self, max_entries: int, max_bytes: int) -> int:
        """Change the budgets live, keeping the most recently used entries. Returns how many were evicted."""
        before = self.evictions
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._enforce_budgets()
        return self.evictions - before

    def invalidate_prefix(self, prefix: str) -> int:
        """Drop every entry whose key starts with ``prefix``; returns the count (O(n), rare)."""
        doomed = [key for key in self._data if key.startswith(prefix)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def invalidate_matching(self, pattern: re.Pattern[str]) -> int:
        """Drop every entry whose key fully matches ``pattern`` (see ``keys.redis_glob_to_regex``)."""
        match = pattern.fullmatch
        doomed = [key for key in self._data if match(key)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def clear(self) -> int:
        """Drop everything; returns how many entries there were."""
        count = len(self._data)
        self._data.clear()
        self.bytes = 0
        return count

    def bump_epoch(self) -> int:
        """Clear L1 and start a new epoch so writes prepared before now are ignored; returns the epoch."""
        self.clear()
        self.epoch += 1
        return self.epoch

    def purge_expired(self) -> int:
        """Drop every expired entry now (the runtime's gc action); returns the count."""
        now = self._clock()
        expired = [(k, e) for k, e in self._data.items() if e.deadline <= now]
        for key, entry in expired:
            self._drop_expired(key, entry)
        return len(expired)

    # introspection ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        entry = self._data.get(key)  # type: ignore[call-overload]
        return entry is not None and entry.deadline > self._clock()

    def keys(self) -> Iterator[str]:
        """Keys from least to most recently used (including not yet swept expired ones)."""
        return iter(list(self._data))

    def stats(self) -> dict[str, int]:
        """Plain numbers for EngineStats/metrics: size, budgets and counters."""
        return {
            "entries": len(self._data),
            "bytes": self.bytes,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "inserts": self.inserts,
            "rejected": self.rejected,
            "epoch": self.epoch,
        }
