"""What an L1 entry costs in this process's memory: the value as Python keeps it, plus the entry.

L1 holds most values decoded (an L1 hit costs no decoding, bench B1), so its byte budget has to
count the decoded objects, not the encoded bytes Redis holds: 50 values of 64 KiB of prose were
1.25 MiB compressed and 3.15 MiB on the heap. (Large values the codec compressed are kept as their
lz4 block instead, ``l1.PackedValue``; the facade counts those by the block.)
:func:`retained_size` walks the value once (each container and string counted once, by identity;
shared objects not at all: None, True, False, small ints, and dict keys of up to 64 characters,
which orjson shares across values), with ``sys.getsizeof`` for each object, which is what
tracemalloc sees allocated for it.
:data:`ENTRY_OVERHEAD` is the L1Entry, its OrderedDict slot, its deadline and the engine's
fingerprint of it; the key string is added by the caller (``sys.getsizeof(key)``).

The walk is O(objects in the value): about 0.1 us per object, paid when a value enters L1 (a write,
an L2 hit filled into L1, the first read of a deferred large value), never on an L1 hit.
Pure functions, no I/O.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ENTRY_OVERHEAD", "entry_size", "retained_size"]

_getsizeof = sys.getsizeof

# The L1Entry (4 slots + GC header), its deadline float, the OrderedDict's slot and linked-list
# node: 154 B per entry besides the key (tracemalloc, 20,000 entries of a shared value); plus the
# engine's coherence fingerprint of the entry (a 64-bit int and a dict slot, ~70 B).
ENTRY_OVERHEAD = 232  # + 8 B: the entry's operation slot

# orjson.loads shares dict keys of up to 64 characters between values (its key cache), so those
# are not memory any one entry holds.
_SHARED_KEY_CHARS = 64
_NOT_COUNTED = (type(None), bool)


def retained_size(value: Any) -> int:
    """Bytes the objects reachable from ``value`` occupy (JSON/msgpack-shaped values: dict, list,
    tuple, str, bytes, int, float, bool, None; anything else counts its own ``getsizeof``)."""
    kind = type(value)
    if kind is str or kind is bytes:
        return _getsizeof(value)  # type: ignore[no-any-return]
    if kind in _NOT_COUNTED:
        return 0
    if kind is int:
        return 0 if -5 <= value <= 256 else _getsizeof(value)  # type: ignore[no-any-return]
    seen: set[int] = set()
    total = 0
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        obj = pop()
        kind = type(obj)
        if kind is str or kind is float or kind is bytes:
            ident = id(obj)
            if ident not in seen:
                seen.add(ident)
                total += _getsizeof(obj)
        elif kind is dict:
            ident = id(obj)
            if ident not in seen:
                seen.add(ident)
                total += _getsizeof(obj)
                for name in obj:  # orjson shares short keys across values through its key cache
                    if type(name) is not str or len(name) > _SHARED_KEY_CHARS:
                        push(name)
                extend(obj.values())
        elif kind is list or kind is tuple:
            ident = id(obj)
            if ident not in seen:
                seen.add(ident)
                total += _getsizeof(obj)
                extend(obj)
        elif kind is int:
            if not -5 <= obj <= 256:
                total += _getsizeof(obj)
        elif kind in _NOT_COUNTED:
            continue
        else:
            ident = id(obj)
            if ident not in seen:
                seen.add(ident)
                total += _getsizeof(obj)
                if kind is set or kind is frozenset:
                    for item in obj:
                        push(item)
    return total


def entry_size(key: str, value: Any) -> int:
    """What one L1 entry of ``value`` under ``key`` costs: the value, the key and the entry itself."""
    return retained_size(value) + _getsizeof(key) + ENTRY_OVERHEAD
