"""The pure parts of the soak (bench/soak.py): the fault schedule, the client's ledger, phase accounting.

No I/O here: the soak runner feeds times (``time.monotonic()`` seconds) and answers in, these classes
decide what was wrong and what the figures are; ``tests/unit/test_soak_model.py`` tests them directly.

**The ledger** is the load generator's own record of what it wrote, so a read can be judged without
asking the cache. Every key has a sequence; each write or delete of a key takes the next number (the
runner serialises operations per key, so sequence order is acknowledgement order). A stored value
carries its key, its sequence and a checksum of both (:func:`make_value`). A read that returns a value
is then:

- ``foreign``: the value names another key (a key collision, or a response for the wrong request);
- ``phantom``: its checksum does not match, or its sequence was never issued by a write of that key;
- ``stale``: its sequence is below the key's *coherent floor* at ``read start - coherence bound``:
  the highest sequence of an operation (write, delete or invalidation) that was acknowledged while no
  Redis fault was active. These three are *wrong answers* (target 0).
- ``degraded-stale``: below the highest sequence acknowledged at all by then, but not below the
  coherent floor. Only an operation acknowledged while Redis was unreachable can cause it: the
  runtime then degrades to its own L1 (documented), so such a write or invalidation reaches one pod
  and not Redis, and may be lost. Counted and reported apart (inside the Redis fault windows and after
  them), not a wrong answer.

A miss is never wrong (an entry may be evicted, expire, or be lost with a restarted Redis).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

FAULT_KINDS: tuple[str, ...] = (
    "redis-restart",
    "redis-blackhole",
    "pod-delete",
    "operator-kill",
    "etcd-restart",
    "apiserver-restart",
    "preset-change",
)
REDIS_FAULTS = frozenset({"redis-restart", "redis-blackhole"})


# --- schedule --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduledFault:
    """One fault of the schedule: its kind and when to inject it (seconds after the load started)."""

    index: int
    kind: str
    at_s: float


def build_schedule(
    load_s: float,
    seed: int,
    *,
    warmup_s: float = 20.0,
    cooldown_s: float = 20.0,
    slot_s: float = 25.0,
    kinds: Sequence[str] = FAULT_KINDS,
) -> list[ScheduledFault]:
    """Faults over a load of ``load_s`` seconds: none during the first ``warmup_s`` (the baseline
    phase) and the last ``cooldown_s``; in between one fault per slot of about ``slot_s`` seconds,
    each at a seeded random point of the first half of its slot (the rest leaves time to recover).
    Kinds come in rounds, each round a seeded shuffle of every kind, so any run long enough for one
    round has every kind at least once.

    Raises ValueError naming the load time needed when not even one round fits.
    """
    if not kinds:
        raise ValueError("kinds: an empty list is not accepted; accepted: at least one fault kind")
    unknown = sorted(set(kinds) - set(FAULT_KINDS))
    if unknown:
        raise ValueError(f"kinds: {unknown} are not accepted; accepted: {', '.join(FAULT_KINDS)}")
    if slot_s <= 0 or warmup_s < 0 or cooldown_s < 0:
        raise ValueError("slot_s must be > 0 and warmup_s, cooldown_s >= 0")
    span = load_s - warmup_s - cooldown_s
    count = int(span // slot_s) if span > 0 else 0
    if count < len(kinds):
        need = warmup_s + cooldown_s + slot_s * len(kinds)
        raise ValueError(
            f"load time {load_s:g}s is not accepted: {len(kinds)} fault kinds need at least "
            f"{need:g}s ({warmup_s:g}s warm-up + {len(kinds)} slots of {slot_s:g}s + "
            f"{cooldown_s:g}s cool-down)"
        )
    rng = random.Random(seed)
    order: list[str] = []
    while len(order) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        # Never the same kind twice in a row across a round boundary: recovery from one fault would
        # be measured against the same fault again.
        if order and len(round_) > 1 and round_[0] == order[-1]:
            round_[0], round_[1] = round_[1], round_[0]
        order.extend(round_)
    slot = span / count
    return [
        ScheduledFault(i, kind, round(warmup_s + i * slot + rng.uniform(0.0, slot / 2), 3))
        for i, kind in enumerate(order[:count])
    ]


# --- values and the ledger -------------------------------------------------------------------------


def checksum(key: str, seq: int) -> str:
    """A short digest binding a value to its key and sequence (a torn or mixed value fails it)."""
    return hashlib.blake2b(f"{key}\0{seq}".encode(), digest_size=8).hexdigest()


def make_value(key: str, seq: int, pad: int = 0) -> dict[str, Any]:
    """The value the soak stores for write ``seq`` of ``key`` (``pad`` bytes of filler)."""
    return {"key": key, "seq": seq, "sum": checksum(key, seq), "pad": "x" * pad}


def value_read_back(value: Any, encoding: str | None = None) -> Any:
    """A read's answer as the judge takes it. A JSON value (an HTTP ``PUT``) is as it is; a value the
    load generator SET over the Redis protocol is the bytes of its JSON text, answered as those bytes
    by a Redis-protocol read or as text with ``encoding`` ``"utf-8"`` by an HTTP read, and is parsed
    back here. Anything else (base64 text, bytes that are not JSON) is returned as it is, for the judge
    to call a phantom; None (a miss) stays None."""
    if isinstance(value, bytes) or (encoding == "utf-8" and isinstance(value, str)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@dataclass
class _KeyHistory:
    next_seq: int = 1
    writes: set[int] = field(default_factory=set)  # sequences issued by writes (values that may exist)
    # (acknowledged at, sequence) in acknowledgement order; sequences ascend with it.
    coherent_acks: list[tuple[float, int]] = field(default_factory=list)
    all_acks: list[tuple[float, int]] = field(default_factory=list)
    # sequence -> (pod that answered, sent at, acknowledged at or None, what the pod said): the last
    # OPS_KEPT operations, so a wrong answer can be traced to the pods and times involved.
    ops: dict[int, tuple[str, float, float | None, str]] = field(default_factory=dict)


OPS_KEPT = 8


def _floor(acks: list[tuple[float, int]], until: float) -> int:
    """Highest sequence acknowledged at or before ``until`` (0 if none)."""
    best = 0
    for at, seq in reversed(acks):
        if at <= until:
            best = seq
            break
    return best


@dataclass(frozen=True)
class Verdict:
    """How one read of one key was judged."""

    kind: str  # "miss", "ok", "foreign", "phantom", "stale", "degraded-stale"
    key: str
    seq: int | None = None
    floor: int = 0
    detail: str = ""
    started: float = 0.0  # when the read started (the caller's clock)
    pod: str = ""  # the pod that answered the read
    history: list[str] = field(default_factory=list)  # the key's last operations, for a wrong answer

    @property
    def wrong(self) -> bool:
        """A wrong answer (target 0)."""
        return self.kind in WRONG_KINDS


WRONG_KINDS = frozenset({"foreign", "phantom", "stale"})


class Ledger:
    """What the load generator wrote, and the judge of what it reads back (see the module docstring).

    ``coherence_bound_s``: how long after an acknowledgement every pod must reflect it. Redis fault
    windows are reported with :meth:`open_window` / :meth:`close_window`; an operation whose time span
    overlaps one is *degraded* (it may have reached one pod only).
    """

    def __init__(self, coherence_bound_s: float) -> None:
        if not 0 <= coherence_bound_s <= 60:
            raise ValueError(f"coherence bound {coherence_bound_s!r} is not accepted; accepted: 0..60 s")
        self.bound = coherence_bound_s
        self.origin = 0.0  # subtracted from the times in a wrong answer's history (the run's start)
        self._keys: dict[str, _KeyHistory] = {}
        self.windows: list[list[float | None]] = []  # [start, end or None while open]
        self.counts: dict[str, int] = {}
        self.wrong: list[Verdict] = []  # the first wrong verdicts, for the report
        self.degraded_inside = 0
        self.degraded_after = 0
        self.coherent_ops = 0
        self.degraded_ops = 0
        self.unacknowledged_ops = 0
        self.max_lag_seen_s = 0.0  # longest time a read still saw a superseded coherent value

    # windows
    def open_window(self, at: float) -> None:
        """A Redis fault starts at ``at``."""
        self.windows.append([at, None])

    def close_window(self, at: float) -> None:
        """The open Redis fault window ends at ``at`` (Redis recovered plus the settle time)."""
        for window in self.windows:
            if window[1] is None:
                window[1] = at

    def in_window(self, at: float) -> bool:
        """Whether ``at`` falls in a Redis fault window."""
        return any(w[0] <= at and (w[1] is None or at <= w[1]) for w in self.windows)  # type: ignore[operator]

    def _overlaps_window(self, start: float, end: float) -> bool:
        return any(w[0] <= end and (w[1] is None or start <= w[1]) for w in self.windows)  # type: ignore[operator]

    # writes
    def _history(self, key: str) -> _KeyHistory:
        history = self._keys.get(key)
        if history is None:
            history = self._keys[key] = _KeyHistory()
        return history

    def begin_write(self, key: str) -> int:
        """A write of ``key`` is about to be sent: its sequence (the value may exist from now on)."""
        history = self._history(key)
        seq = history.next_seq
        history.next_seq += 1
        history.writes.add(seq)
        return seq

    def begin_delete(self, key: str) -> int:
        """A delete (or an invalidation covering ``key``) is about to be sent: its sequence."""
        history = self._history(key)
        seq = history.next_seq
        history.next_seq += 1
        return seq

    def acknowledge(self, key: str, seq: int, started: float, acked: float | None, pod: str = "",
                    note: str = "") -> None:
        """Operation ``seq`` of ``key`` (sent at ``started``) was acknowledged at ``acked``; None when
        it failed (its effect is unknown: the value may exist but raises no floor). ``pod`` answered
        it and said ``note`` (e.g. that Redis did not take it): kept for tracing wrong answers."""
        history = self._history(key)
        history.ops[seq] = (pod, started, acked, note)
        if len(history.ops) > OPS_KEPT:
            del history.ops[min(history.ops)]
        if acked is None:
            self.unacknowledged_ops += 1
            return
        history.all_acks.append((acked, seq))
        if self._overlaps_window(started, acked):
            self.degraded_ops += 1
        else:
            self.coherent_ops += 1
            history.coherent_acks.append((acked, seq))

    # reads
    def check_read(self, key: str, started: float, value: Any, pod: str = "") -> Verdict:
        """Judge a read of ``key`` started at ``started`` that returned ``value`` (None: a miss),
        answered by ``pod``. A wrong verdict carries the key's last operations (``history``)."""
        verdict = replace(self._judge(key, started, value), started=started, pod=pod)
        self.counts[verdict.kind] = self.counts.get(verdict.kind, 0) + 1
        if verdict.wrong:
            verdict = replace(verdict, history=self._trace(key))
            if len(self.wrong) < 50:
                self.wrong.append(verdict)
        if verdict.kind == "degraded-stale":
            if self.in_window(started):
                self.degraded_inside += 1
            else:
                self.degraded_after += 1
        return verdict

    def _trace(self, key: str) -> list[str]:
        """The key's last operations, one line each: sequence, pod, sent and acknowledged times."""
        history = self._keys.get(key)
        if history is None:
            return []
        lines = []
        origin = self.origin
        for seq, (pod, sent, acked, note) in sorted(history.ops.items()):
            kind = "write" if seq in history.writes else "delete"
            ack = f"acked {acked - origin:.3f}" if acked is not None else "failed"
            if acked is not None and self._overlaps_window(sent, acked):
                ack += " in a Redis fault window"
            lines.append(f"seq {seq} {kind} on {pod or '?'} sent {sent - origin:.3f} {ack} {note}".rstrip())
        return lines

    def _judge(self, key: str, started: float, value: Any) -> Verdict:
        if value is None:
            return Verdict("miss", key)
        if not isinstance(value, dict):
            return Verdict("phantom", key, detail=f"not a soak value: {str(value)[:80]}")
        if value.get("key") != key:
            return Verdict("foreign", key, detail=f"value of key {str(value.get('key'))[:80]!r}")
        seq = value.get("seq")
        history = self._keys.get(key)
        if not isinstance(seq, int) or value.get("sum") != checksum(key, seq):
            return Verdict("phantom", key, detail="checksum mismatch")
        if history is None or seq not in history.writes:
            return Verdict("phantom", key, seq, detail="sequence never written")
        until = started - self.bound
        floor = _floor(history.coherent_acks, until)
        if seq < floor:
            superseded_at = next(at for at, s in history.coherent_acks if s > seq)
            return Verdict(
                "stale",
                key,
                seq,
                floor,
                f"older than sequence {floor} acknowledged {started - superseded_at:.3f}s "
                "before the read started",
            )
        immediate = _floor(history.coherent_acks, started)
        if seq < immediate:
            # Within the coherence bound: allowed, but remember how late the pods were.
            superseded_at = next(at for at, s in history.coherent_acks if s > seq)
            self.max_lag_seen_s = max(self.max_lag_seen_s, started - superseded_at)
        if seq < _floor(history.all_acks, until):
            return Verdict("degraded-stale", key, seq, floor)
        return Verdict("ok", key, seq, floor)

    @property
    def wrong_total(self) -> int:
        """Wrong answers so far."""
        return sum(self.counts.get(kind, 0) for kind in WRONG_KINDS)

    def summary(self) -> dict[str, Any]:
        """Counts for the report."""
        return {
            "coherence_bound_s": self.bound,
            "reads_by_verdict": dict(sorted(self.counts.items())),
            "wrong_answers": self.wrong_total,
            "wrong_examples": [v.__dict__ for v in self.wrong[:10]],
            "degraded_stale_inside_redis_windows": self.degraded_inside,
            "degraded_stale_after_redis_windows": self.degraded_after,
            "coherent_ops": self.coherent_ops,
            "degraded_ops": self.degraded_ops,
            "unacknowledged_ops": self.unacknowledged_ops,
            "max_superseded_read_lag_s": round(self.max_lag_seen_s, 3),
            "keys": len(self._keys),
        }


# --- phases and latency ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0..100) of ``values``; None when empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"q {q!r} is not accepted; accepted: 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Phase:
    """A stretch of the run (the baseline, or one fault until the next) and its requests."""

    name: str
    start: float
    end: float | None = None
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    retried: int = 0
    degraded_stale: int = 0  # reads judged degraded-stale (see Ledger) that started in this phase
    wrong: int = 0  # reads judged wrong (foreign, phantom, stale) that started in this phase

    def stats(self) -> dict[str, Any]:
        """Requests, errors, retried requests, p50/p99/max latency (ms) of this phase."""
        p50, p99 = percentile(self.latencies, 50), percentile(self.latencies, 99)
        return {
            "phase": self.name,
            "seconds": None if self.end is None else round(self.end - self.start, 1),
            "requests": len(self.latencies) + self.errors,
            "errors": self.errors,
            "retried": self.retried,
            "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p99_ms": None if p99 is None else round(p99 * 1000, 2),
            "max_ms": round(max(self.latencies) * 1000, 2) if self.latencies else None,
            "degraded_stale": self.degraded_stale,
            "wrong": self.wrong,
        }


class PhaseBook:
    """Requests accounted to the phase in which they *started*; phases follow each other."""

    def __init__(self, start: float, name: str = "baseline") -> None:
        self.phases: list[Phase] = [Phase(name, start)]

    def begin(self, name: str, at: float) -> None:
        """Close the current phase at ``at`` and start ``name``."""
        self.phases[-1].end = at
        self.phases.append(Phase(name, at))

    def phase_at(self, at: float) -> Phase:
        """The phase that contains ``at`` (the first one for earlier times)."""
        for phase in reversed(self.phases):
            if phase.start <= at:
                return phase
        return self.phases[0]

    def record(self, started: float, latency_s: float, ok: bool, retried: bool = False) -> None:
        """One client request (with its retries) that started at ``started``."""
        phase = self.phase_at(started)
        if ok:
            phase.latencies.append(latency_s)
        else:
            phase.errors += 1
        if retried:
            phase.retried += 1

    def note_degraded_stale(self, started: float) -> None:
        """A read that started at ``started`` was judged degraded-stale."""
        self.phase_at(started).degraded_stale += 1

    def note_wrong(self, started: float) -> None:
        """A read that started at ``started`` was judged a wrong answer."""
        self.phase_at(started).wrong += 1

    def finish(self, at: float) -> None:
        """End the last phase."""
        self.phases[-1].end = at

    def table(self) -> list[dict[str, Any]]:
        """Per-phase figures."""
        return [phase.stats() for phase in self.phases]

    def by_kind(self) -> list[dict[str, Any]]:
        """Figures per fault kind (phases named ``<kind>#<n>`` merged), then the baseline."""
        merged: dict[str, Phase] = {}
        for phase in self.phases:
            kind = phase.name.split("#", 1)[0]
            into = merged.setdefault(kind, Phase(kind, phase.start, 0.0))
            into.latencies.extend(phase.latencies)
            into.errors += phase.errors
            into.retried += phase.retried
            into.degraded_stale += phase.degraded_stale
            into.wrong += phase.wrong
            if phase.end is not None:
                into.end = (into.end or 0.0) + (phase.end - phase.start)
        out = []
        for phase in merged.values():
            stats = phase.stats()
            stats["seconds"] = round((phase.end or 0.0), 1)
            out.append(stats)
        return out


# --- memory ----------------------------------------------------------------------------------------


def rss_rows(samples: dict[str, list[tuple[float, float]]], warm_s: float = 20.0) -> list[dict[str, Any]]:
    """Per process, from its (seconds into the run, RSS MiB) samples: start, end, peak, growth.

    A process first seen after the run began (a restarted operator, a replacement pod) is still
    importing when first sampled; its *start* is its first sample at least ``warm_s`` seconds after
    it was first seen (or its last sample if it lived less), so the growth measured is the run's, not
    its start-up. ``lived_s`` counts from that start.
    """
    rows = []
    for name, series in samples.items():
        if not series:
            continue
        first_seen = series[0][0]
        start_at, start_rss = series[0]
        if first_seen > 0:
            start_at, start_rss = next(((t, v) for t, v in series if t >= first_seen + warm_s), series[-1])
        end_at, end_rss = series[-1]
        rows.append(
            {
                "process": name,
                "start_mib": round(start_rss, 1),
                "end_mib": round(end_rss, 1),
                "peak_mib": round(max(v for _, v in series), 1),
                "growth_mib": round(end_rss - start_rss, 1),
                "ratio": round(end_rss / start_rss, 2) if start_rss > 0 else None,
                "lived_s": round(end_at - start_at, 1),
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table of ``rows`` (dicts) with ``columns``."""
    cells = [[str(c) for c in columns]] + [
        ["-" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )
