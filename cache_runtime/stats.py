"""Engine statistics: plain counters and fixed-bucket histograms that the hot path updates directly.

Nothing here imports prometheus_client or allocates per operation: the facade does
``stats.hits_l1 += 1`` and ``stats.latency_get.observe(seconds)``. Everything else (Prometheus
export, health evaluation, the runtime's JSON endpoints) reads a *snapshot*, a plain JSON-ready
dict built at read time by :func:`build_snapshot`. The snapshot's shape is the contract between
the engine facade (which builds it), :mod:`cache_runtime.metrics`, :mod:`cache_runtime.health`
and the runtime service; it is documented by the ``Snapshot`` TypedDicts below.

Two small evidence samplers feed the diagnosis without storing user text:

* :class:`KeyVariantSampler` answers "N distinct raw keys collapse to M keys when the text is
  normalized" (the runbook's key-inconsistency cause) from 64-bit hashes of keys only.
* :class:`ReuseTracker` answers "misses that are re-requests of keys stored earlier whose TTL ran
  out", with the distribution of re-request gaps (the TTL-too-short cause and the TTL to propose).

Both sample deterministically (1 in K by hash) so their hot-path cost stays a hash and a mask.
"""

from __future__ import annotations

import itertools
import math
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, NotRequired, TypedDict

import xxhash

from cache_runtime.config import OPERATIONS

SNAPSHOT_SCHEMA = 1

# Hits and misses are counted per AI operation (the ones the presets give their own TTLs:
# cache_runtime.config.OPERATIONS); anything else is counted as "default".
COUNTED_OPERATIONS: tuple[str, ...] = (*OPERATIONS, "default")

# Latency histograms are timed per engine operation; these names are also the label values of the
# Prometheus `op` label, so they must stay stable.
LATENCY_OPERATIONS: tuple[str, ...] = (
    "get",
    "set",
    "delete",
    "get_many",
    "set_many",
    "l2_get",
    "l2_set",
    "compute",
    "invalidate",
)

# Log-spaced 1-2-5 bounds from 10 us to 10 s. The runbook's latency thresholds (20 ms, 50 ms) are
# exact bounds, so "p95 above 20 ms" is decided without interpolation error at the threshold itself.
LATENCY_BUCKETS_SECONDS: tuple[float, ...] = (
    0.00001, 0.00002, 0.00005,
    0.0001, 0.0002, 0.0005,
    0.001, 0.002, 0.005,
    0.01, 0.02, 0.05,
    0.1, 0.2, 0.5,
    1.0, 2.0, 5.0,
    10.0,
)  # fmt: skip

# Gaps between storing a key and asking for it again after its TTL ran out: 1 s .. 7 days (the TTL
# range of the config), so a proposed TTL read off this histogram is always within range.
REUSE_GAP_BUCKETS_SECONDS: tuple[float, ...] = (
    1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400,
    172800, 345600, 604800,
)  # fmt: skip

# Values at least this large (encoded bytes) stored without compression are evidence for the
# "large uncompressed entries" cause when compression is off or its threshold is above them.
LARGE_VALUE_BYTES = 16 * 1024


class Histogram:
    """A fixed-bucket histogram: ``observe`` is a bisect plus three increments, no allocation.

    ``counts[i]`` counts observations ``<= bounds[i]`` and ``> bounds[i-1]``; the last slot
    (index ``len(bounds)``) is the overflow (+Inf) bucket.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_SECONDS) -> None:
        if not bounds or any(b <= a for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"histogram bounds must be non-empty and strictly ascending, got {bounds!r}")
        self.bounds = bounds
        self.counts: list[int] = [0] * (len(bounds) + 1)
        self.sum = 0.0

    @property
    def count(self) -> int:
        """Number of observations (derived at read time to keep ``observe`` to two increments)."""
        return sum(self.counts)

    def observe(self, value: float) -> None:
        """Record one observation (seconds for latency histograms)."""
        # bisect_left puts a value equal to a bound into that bound's bucket (Prometheus `le`).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def quantile(self, q: float) -> float | None:
        """Estimate the q-quantile (0 < q <= 1) by linear interpolation inside the bucket.

        Returns None when empty. Observations in the overflow bucket are reported as the last
        bound (the estimate cannot exceed what the buckets resolve), like Prometheus'
        ``histogram_quantile``.
        """
        if not 0.0 < q <= 1.0:
            raise ValueError(f"quantile q must be in (0, 1], got {q!r}")
        total = self.count
        if total == 0:
            return None
        rank = q * total
        cumulative = 0
        for index, bucket_count in enumerate(self.counts):
            if bucket_count and cumulative + bucket_count >= rank:
                if index == len(self.bounds):
                    return self.bounds[-1]
                lower = self.bounds[index - 1] if index > 0 else 0.0
                upper = self.bounds[index]
                return lower + (upper - lower) * ((rank - cumulative) / bucket_count)
            cumulative += bucket_count
        return self.bounds[-1]

    def merge_from(self, other: Histogram) -> None:
        """Add another histogram with the same bounds into this one."""
        if other.bounds != self.bounds:
            raise ValueError("cannot merge histograms with different bounds")
        for index, bucket_count in enumerate(other.counts):
            self.counts[index] += bucket_count
        self.sum += other.sum

    def to_dict(self) -> HistogramSnapshot:
        """JSON-ready view: count, sum, p50/p95/p99 and cumulative buckets ``[[le, count], ...]``."""
        cumulative = 0
        buckets: list[list[float]] = []
        for bound, bucket_count in zip(self.bounds, self.counts, strict=False):
            cumulative += bucket_count
            buckets.append([bound, cumulative])
        return {
            "count": self.count,
            "sum": self.sum,
            "p50": self.quantile(0.5),
            "p95": self.quantile(0.95),
            "p99": self.quantile(0.99),
            "buckets": buckets,
        }


class LatencyHistogram(Histogram):
    """A :class:`Histogram` over :data:`LATENCY_BUCKETS_SECONDS` (10 us .. 10 s, log-spaced)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(LATENCY_BUCKETS_SECONDS)


def histogram_from_dict(data: Mapping[str, Any]) -> Histogram:
    """Rebuild a histogram from :meth:`Histogram.to_dict` output (used by snapshot windows)."""
    raw_buckets = data.get("buckets") or []
    bounds = tuple(float(bound) for bound, _ in raw_buckets)
    histogram = Histogram(bounds)
    previous = 0
    for index, (_, cumulative) in enumerate(raw_buckets):
        histogram.counts[index] = int(cumulative) - previous
        previous = int(cumulative)
    histogram.counts[-1] = max(0, int(data.get("count", 0)) - previous)
    histogram.sum = float(data.get("sum", 0.0))
    return histogram


# ---------------------------------------------------------------------------------------------
# Evidence samplers
# ---------------------------------------------------------------------------------------------

# Characters that change a key without changing what a reader sees: the runbook's "invisible
# characters". Used only by the sampling gate, which must agree across variants of one text.
_INVISIBLE_CHARS = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")
# The gate looks at a bounded window so its cost does not grow with the text.
_GATE_WINDOW_CHARS = 96
_GATE_PREFIX_CHARS = 40
# What str.split() treats as whitespace within ASCII, so both branches of the gate agree.
_ASCII_WHITESPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


def _fingerprint(text: str) -> int:
    """64-bit xxh3 of a str (stable across processes, unlike hash())."""
    # surrogatepass: a lone surrogate in user text must not turn evidence sampling into an error.
    return xxhash.xxh3_64_intdigest(text.encode("utf-8", "surrogatepass"))


def _pow2_mask(sample_every: int, field: str) -> int:
    if sample_every < 1 or sample_every & (sample_every - 1):
        raise ValueError(f"{field} must be a power of two >= 1, got {sample_every!r}")
    return sample_every - 1


class KeyVariantSampler:
    """Bounded evidence for key inconsistency: distinct raw keys per normalized key.

    The facade calls :meth:`should_sample` with the text (cheap, and it gives the same answer for
    texts that differ only in whitespace, line endings, invisible characters or case, so all
    variants of one text are sampled together), and when it returns True it builds the key both
    ways and calls :meth:`record`. Only 64-bit xxh3 hashes of the keys are kept: no user text.

    Groups are kept in insertion order and the oldest group is dropped when ``max_groups`` is
    reached, so the evidence follows the recent workload and memory stays bounded
    (``max_groups * max_variants`` integers at most).
    """

    __slots__ = (
        "_groups",
        "_mask",
        "flag_variants",
        "groups_dropped",
        "max_groups",
        "max_variants",
        "new_variant_requests",
        "sample_every",
        "sampled_requests",
    )

    def __init__(self, sample_every: int = 16, max_groups: int = 4096, max_variants: int = 64) -> None:
        self._mask = _pow2_mask(sample_every, "sample_every")
        if max_groups < 1:
            raise ValueError(f"max_groups must be >= 1, got {max_groups!r}")
        if max_variants < 2:
            raise ValueError(f"max_variants must be >= 2, got {max_variants!r}")
        self.sample_every = sample_every
        self.max_groups = max_groups
        self.max_variants = max_variants
        self._groups: dict[int, set[int]] = {}
        self.sampled_requests = 0
        # Requests whose raw key was new although its normalized key had been seen: the lookups
        # that would have found a cached answer had normalization been on.
        self.new_variant_requests = 0
        self.groups_dropped = 0
        # Per normalization rule: new-variant requests whose text that rule alone would change.
        self.flag_variants: dict[str, int] = {}

    def should_sample(self, text: str) -> bool:
        """Cheap, normalization-invariant 1-in-K decision on the text (bounded window).

        The decision hashes the first characters of the window with all whitespace and invisible
        characters removed and case folded: coarser than any normalization, so every variant of
        a text gets the same answer. ASCII text (the common case) takes a bytes fast path.
        """
        if self._mask == 0:
            return True
        window = text[:_GATE_WINDOW_CHARS]
        if window.isascii():
            prefix = window.encode().translate(None, _ASCII_WHITESPACE).lower()[:_GATE_PREFIX_CHARS]
        else:
            # `in` + replace per character: str.translate with a dict is ~30x slower on non-ASCII text.
            for invisible in _INVISIBLE_CHARS:
                if invisible in window:
                    window = window.replace(invisible, "")
            folded = "".join(window.split()).casefold()[:_GATE_PREFIX_CHARS]
            prefix = folded.encode("utf-8", "surrogatepass")
        # xxh3, not hash(): the decision must not depend on the process' hash seed, so two pods
        # sample the same texts and their evidence can be compared.
        return (xxhash.xxh3_64_intdigest(prefix) & self._mask) == 0

    def record(self, raw_key: str, normalized_key: str, changing: tuple[str, ...] = ()) -> None:
        """Record one sampled request: the key as built today and the key with normalization on;
        ``changing``: the rules (off today) that alone would change its text, counted in
        ``flag_variants`` when the request is a new variant."""
        self.sampled_requests += 1
        raw = _fingerprint(raw_key)
        normalized = _fingerprint(normalized_key)
        group = self._groups.get(normalized)
        if group is None:
            if len(self._groups) >= self.max_groups:
                del self._groups[next(iter(self._groups))]
                self.groups_dropped += 1
            self._groups[normalized] = {raw}
            return
        if raw not in group:
            self.new_variant_requests += 1
            for rule in changing:
                self.flag_variants[rule] = self.flag_variants.get(rule, 0) + 1
            if len(group) < self.max_variants:
                group.add(raw)

    def to_dict(self, top: int = 5) -> KeyAnalysisSnapshot:
        """Summary: distinct raw vs normalized keys in the sample, and the most varied groups."""
        distinct_raw = sum(len(group) for group in self._groups.values())
        distinct_normalized = len(self._groups)
        collapsing = [
            (len(group), fingerprint) for fingerprint, group in self._groups.items() if len(group) > 1
        ]
        collapsing.sort(reverse=True)
        return {
            "sample_every": self.sample_every,
            "sampled_requests": self.sampled_requests,
            "distinct_raw_keys": distinct_raw,
            "distinct_normalized_keys": distinct_normalized,
            "groups_with_variants": len(collapsing),
            "new_variant_requests": self.new_variant_requests,
            "groups_dropped": self.groups_dropped,
            "flag_variants": dict(sorted(self.flag_variants.items())),
            "top_groups": [
                {"normalized_fingerprint": f"{fingerprint:016x}", "raw_variants": variants}
                for variants, fingerprint in collapsing[:top]
            ],
        }


class ReuseTracker:
    """Bounded evidence for TTL too short: misses on keys stored earlier whose TTL ran out.

    The facade calls :meth:`on_store` when it writes a key (with the TTL it used) and
    :meth:`on_miss` when a lookup misses both tiers. Only keys whose hash falls in the 1-in-K
    sample are tracked, by a 64-bit hash, in a FIFO-bounded dict.
    """

    __slots__ = (
        "_clock",
        "_mask",
        "_stored",
        "cold_misses",
        "expired_misses",
        "max_tracked",
        "reuse_gaps",
        "sample_every",
        "sampled_misses",
        "unexpired_misses",
    )

    def __init__(
        self,
        sample_every: int = 16,
        max_tracked: int = 8192,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._mask = _pow2_mask(sample_every, "sample_every")
        if max_tracked < 1:
            raise ValueError(f"max_tracked must be >= 1, got {max_tracked!r}")
        self.sample_every = sample_every
        self.max_tracked = max_tracked
        self._clock = clock
        self._stored: dict[int, tuple[float, float]] = {}
        self.sampled_misses = 0
        self.expired_misses = 0  # stored earlier, asked again after the TTL ran out
        self.unexpired_misses = 0  # stored earlier, TTL not over: evicted, invalidated or lost
        self.cold_misses = 0  # never stored while tracked
        self.reuse_gaps = Histogram(REUSE_GAP_BUCKETS_SECONDS)

    def on_store(self, key: str, ttl_seconds: float) -> None:
        """Note that ``key`` was written with ``ttl_seconds`` (sampled keys only)."""
        digest = _fingerprint(key)
        if digest & self._mask:
            return
        stored = self._stored
        if digest in stored:
            del stored[digest]  # re-insert at the end: FIFO order follows the latest store
        elif len(stored) >= self.max_tracked:
            del stored[next(iter(stored))]
        stored[digest] = (self._clock(), ttl_seconds)

    def on_miss(self, key: str) -> None:
        """Classify a miss of ``key`` (sampled keys only) as cold, expired or unexpired."""
        digest = _fingerprint(key)
        if digest & self._mask:
            return
        self.sampled_misses += 1
        entry = self._stored.get(digest)
        if entry is None:
            self.cold_misses += 1
            return
        stored_at, ttl_seconds = entry
        gap = self._clock() - stored_at
        if gap >= ttl_seconds:
            self.expired_misses += 1
            self.reuse_gaps.observe(gap)
        else:
            self.unexpired_misses += 1

    def to_dict(self) -> TtlEvidenceSnapshot:
        """Summary of the sampled misses and the re-request gaps of expired ones."""
        return {
            "sample_every": self.sample_every,
            "tracked_keys": len(self._stored),
            "sampled_misses": self.sampled_misses,
            "expired_misses": self.expired_misses,
            "unexpired_misses": self.unexpired_misses,
            "cold_misses": self.cold_misses,
            "reuse_gap": self.reuse_gaps.to_dict(),
        }


# ---------------------------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------------------------


class EngineStats:
    """Every counter of the engine, as plain attributes the hot path increments directly.

    Counters are cumulative and never reset (Prometheus counters); windows are computed from two
    snapshots with :func:`diff_snapshots`. Gauges (L1 entries/bytes, breaker state, Redis memory)
    are not kept here: :func:`build_snapshot` reads them from their owners at snapshot time.
    """

    __slots__ = (
        "coherence_lag",
        "coherence_messages_published",
        "coherence_messages_received",
        "coherence_resets",
        "compress_attempts",
        "compress_offloaded",
        "compress_seconds",
        "compress_skipped",
        "compressed_bytes_in",
        "compressed_bytes_out",
        "compressed_values",
        "compute_errors",
        "computes",
        "decode_failures",
        "decompress_seconds",
        "deletes",
        "early_refreshes",
        "hits_l1",
        "hits_l2",
        "invalidations_namespace",
        "invalidations_pattern",
        "key_variants",
        "keys_invalidated",
        "l1_evictions",
        "l1_expirations",
        "l1_inserts",
        "l1_invalidated",
        "l1_rejections",
        "large_values_uncompressed",
        "latency",
        "latency_compute",
        "latency_delete",
        "latency_get",
        "latency_get_many",
        "latency_invalidate",
        "latency_l2_get",
        "latency_l2_set",
        "latency_set",
        "latency_set_many",
        "lease_waits",
        "misses",
        "op_hits",
        "op_misses",
        "reuse",
        "sets",
        "singleflight_merges",
        "started_at",
        "stored_bytes",
        "stored_bytes_max",
        "stored_values",
        "writes_rejected_isolated",
    )

    def __init__(
        self,
        *,
        key_sample_every: int = 16,
        reuse_sample_every: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.started_at = time.time()
        # lookups (a get_many of n keys counts n lookups)
        self.hits_l1 = 0
        self.hits_l2 = 0
        self.misses = 0  # missed both tiers (including decode failures and disabled cache)
        self.decode_failures = 0  # bytes that failed to decode: counted as a miss too
        self.sets = 0  # values written (a set_many of n values counts n)
        self.deletes = 0
        self.writes_rejected_isolated = 0  # writes refused while the pod is isolated
        # per AI operation (summarize, ...): recorded by get_or_compute / key-aware paths
        self.op_hits: dict[str, int] = dict.fromkeys(COUNTED_OPERATIONS, 0)
        self.op_misses: dict[str, int] = dict.fromkeys(COUNTED_OPERATIONS, 0)
        # L1
        self.l1_inserts = 0  # entries written into L1 (sets and promotions from L2)
        self.l1_evictions = 0  # removed to make room (entries or bytes budget)
        self.l1_expirations = 0  # removed because their TTL ran out (lazy or sweep)
        self.l1_invalidated = 0  # removed by invalidation / coherence messages
        self.l1_rejections = 0  # not admitted (too large for the budget, admission policy)
        # stampede protection
        self.computes = 0  # loader calls made by get_or_compute
        self.compute_errors = 0
        self.singleflight_merges = 0  # callers that waited on another caller's load
        self.early_refreshes = 0
        self.lease_waits = 0  # waits on another pod's Redis lease
        # invalidation and coherence
        self.invalidations_pattern = 0
        self.invalidations_namespace = 0
        self.keys_invalidated = 0
        self.coherence_messages_published = 0
        self.coherence_messages_received = 0
        self.coherence_resets = 0  # subscription dropped: L1 cleared or epoch-bumped
        # codec / compression
        self.compress_attempts = 0  # values at or above the threshold that were compressed
        self.compressed_values = 0  # ... and kept compressed because it paid
        self.compress_skipped = 0  # ... and stored raw because compression did not pay
        self.compressed_bytes_in = 0  # input bytes of kept compressions
        self.compressed_bytes_out = 0  # output bytes of kept compressions
        self.compress_seconds = 0.0  # time spent compressing (all attempts)
        self.compress_offloaded = 0  # compressions run in a worker thread (large values)
        self.decompress_seconds = 0.0
        self.stored_values = 0  # encoded values written (for the average entry size)
        self.stored_bytes = 0
        self.stored_bytes_max = 0
        self.large_values_uncompressed = 0  # >= LARGE_VALUE_BYTES stored raw below threshold/disabled
        # latency histograms, one attribute per operation so the hot path skips a dict lookup
        self.latency_get = LatencyHistogram()
        self.latency_set = LatencyHistogram()
        self.latency_delete = LatencyHistogram()
        self.latency_get_many = LatencyHistogram()
        self.latency_set_many = LatencyHistogram()
        self.latency_l2_get = LatencyHistogram()
        self.latency_l2_set = LatencyHistogram()
        self.latency_compute = LatencyHistogram()
        self.latency_invalidate = LatencyHistogram()
        self.latency: dict[str, Histogram] = {
            name: getattr(self, f"latency_{name}") for name in LATENCY_OPERATIONS
        }
        self.coherence_lag = LatencyHistogram()
        # evidence samplers
        self.key_variants = KeyVariantSampler(sample_every=key_sample_every)
        self.reuse = ReuseTracker(sample_every=reuse_sample_every, clock=clock)

    def observe(self, operation: str, seconds: float) -> None:
        """Record the latency of one engine operation (one of :data:`LATENCY_OPERATIONS`)."""
        self.latency[operation].observe(seconds)

    def count_operation(self, operation: str, hit: bool) -> None:
        """Count a hit or miss for an AI operation; unknown operations count as ``default``."""
        table = self.op_hits if hit else self.op_misses
        if operation in table:
            table[operation] += 1
        else:
            table["default"] += 1

    def record_stored_value(self, encoded_bytes: int, *, compressed: bool, compression_tried: bool) -> None:
        """Count one encoded value written (size evidence for the high-memory causes).

        ``compression_tried`` is False when the value was below the threshold or compression is
        off: a large value stored raw for that reason is evidence for "large uncompressed entries";
        one whose compression did not pay is not.
        """
        self.stored_values += 1
        self.stored_bytes += encoded_bytes
        if encoded_bytes > self.stored_bytes_max:
            self.stored_bytes_max = encoded_bytes
        if not compressed and not compression_tried and encoded_bytes >= LARGE_VALUE_BYTES:
            self.large_values_uncompressed += 1

    def record_compression(self, bytes_in: int, bytes_out: int, seconds: float, *, kept: bool) -> None:
        """Count one compression attempt; ``kept`` is False when it did not pay and was dropped."""
        self.compress_attempts += 1
        self.compress_seconds += seconds
        if kept:
            self.compressed_values += 1
            self.compressed_bytes_in += bytes_in
            self.compressed_bytes_out += bytes_out
        else:
            self.compress_skipped += 1


# ---------------------------------------------------------------------------------------------
# Snapshot contract
# ---------------------------------------------------------------------------------------------


class HistogramSnapshot(TypedDict):
    """A histogram: count, sum (seconds), p50/p95/p99 estimates, cumulative ``[[le, count]]``."""

    count: int
    sum: float
    p50: float | None
    p95: float | None
    p99: float | None
    buckets: list[list[float]]


class KeyAnalysisSnapshot(TypedDict):
    """Key-inconsistency evidence from :class:`KeyVariantSampler` (hashes only)."""

    sample_every: int
    sampled_requests: int
    distinct_raw_keys: int
    distinct_normalized_keys: int
    groups_with_variants: int
    new_variant_requests: int
    groups_dropped: int
    flag_variants: dict[str, int]  # per normalization rule: new variants whose text it alone changes
    top_groups: list[dict[str, Any]]


class TtlEvidenceSnapshot(TypedDict):
    """TTL evidence from :class:`ReuseTracker`."""

    sample_every: int
    tracked_keys: int
    sampled_misses: int
    expired_misses: int
    unexpired_misses: int
    cold_misses: int
    reuse_gap: HistogramSnapshot


class RequestsSnapshot(TypedDict):
    """Lookups and writes. Rates are None when there were no lookups."""

    lookups: int
    hits: int
    hits_l1: int
    hits_l2: int
    misses: int
    hit_rate: float | None  # (hits_l1 + hits_l2) / lookups
    l1_hit_rate: float | None  # hits_l1 / lookups
    l2_hit_rate: float | None  # hits_l2 / (lookups - hits_l1): how well L2 serves L1's misses
    sets: int
    deletes: int
    decode_failures: int
    writes_rejected_isolated: int


class OperationSnapshot(TypedDict):
    """Hits and misses of one AI operation."""

    hits: int
    misses: int
    hit_rate: float | None


class L1Snapshot(TypedDict):
    """L1 gauges (from the L1 store) and counters (from EngineStats)."""

    entries: int
    bytes: int
    max_entries: int
    max_bytes: int
    inserts: int
    evictions: int
    expirations: int
    invalidated: int
    rejections: int


class CompressionSnapshot(TypedDict):
    """Codec evidence: compression attempts, savings, time, and stored value sizes."""

    attempts: int
    compressed: int
    skipped: int  # attempts that did not pay
    bytes_in: int
    bytes_out: int
    ratio: float | None  # bytes_in / bytes_out of kept compressions
    seconds: float
    seconds_per_attempt: float | None
    offloaded: int
    decompress_seconds: float
    stored_values: int
    stored_bytes: int
    avg_stored_bytes: float | None
    max_stored_bytes: int
    large_values_uncompressed: int


class InvalidationSnapshot(TypedDict):
    """Invalidations and cross-pod coherence."""

    pattern: int
    namespace: int
    keys_invalidated: int
    coherence_messages_published: int
    coherence_messages_received: int
    coherence_resets: int


class StampedeSnapshot(TypedDict):
    """get_or_compute: loader calls and the work stampede protection saved."""

    computes: int
    compute_errors: int
    singleflight_merges: int
    early_refreshes: int
    lease_waits: int


class RedisMemorySnapshot(TypedDict, total=False):
    """Redis INFO memory/stats fields (RedisL2.memory_info()); any may be missing."""

    used_memory: int
    used_memory_dataset: int  # what the keys take; used_memory minus this is Redis's overhead
    maxmemory: int
    maxmemory_policy: str
    evicted_keys: int
    expired_keys: int


class L2Snapshot(TypedDict):
    """L2 (Redis) state, normalized from RedisL2.stats() by :func:`normalize_l2_stats`.

    Counters (``ops``, ``errors``, ``pool_waits``, ``round_trips``, ``round_trip_seconds``) are
    cumulative and subtracted by :func:`diff_snapshots`; the rest are gauges.
    """

    enabled: bool
    available: bool
    breaker_state: str  # "closed" | "open" | "half_open"
    ops: int  # calls made (all operations)
    errors: dict[str, int]  # by kind, see ERROR_KINDS
    pool_waits: int  # callers that had to wait for a pooled connection
    pool_max_connections: int | None
    round_trips: int
    round_trip_seconds: float  # total time of those round trips
    round_trip_mean_seconds: float | None  # of real traffic in the snapshot's window
    rtt_seconds: float | None  # PING round trip (median of recent samples), or the mean above
    rtt_p95_seconds: float | None
    last_error: str | None  # message only (RedisL2 keeps secrets out of it)
    memory: RedisMemorySnapshot | None
    # The engine's own view of Redis, gauges (see cache_runtime.symptoms.redis_outage): how many of the
    # engine's periodic Redis checks failed in a row, seconds since one last succeeded (None: never),
    # and whether the coherence subscription is up (None: no subscription).
    failed_checks: NotRequired[int]
    seconds_since_ok: NotRequired[float | None]
    subscription_connected: NotRequired[bool | None]


class ConfigSnapshot(TypedDict, total=False):
    """The config facts the diagnosis needs to phrase recommendations (all optional).

    Names follow the config's override paths: ``ttl_default_s`` is ``ttl.default_s``,
    ``normalize`` is the ``keys.normalize`` group (flag name -> bool), and so on.
    """

    hash: str
    preset: str
    enabled: bool
    normalize: dict[str, bool]  # keys.normalize: whitespace, line_endings, invisible_chars, case
    normalize_text: bool  # shorthand when the flags are not given: all on / all off
    ttl_default_s: float
    operation_ttls_s: dict[str, float]
    l1_max_entries: int
    l1_max_bytes: int
    compression_threshold_bytes: int
    compression_level: int
    redis_max_connections: int


class Snapshot(TypedDict):
    """Everything the metrics collector, the health evaluation and the admin API read.

    Built by :func:`build_snapshot`; JSON-ready (only str/int/float/bool/None/list/dict).
    ``window_seconds`` is the uptime for a cumulative snapshot and the interval for a window
    produced by :func:`diff_snapshots`.
    """

    schema: int
    taken_at: float
    window_seconds: float
    isolated: bool
    config: ConfigSnapshot
    requests: RequestsSnapshot
    operations: dict[str, OperationSnapshot]
    l1: L1Snapshot
    compression: CompressionSnapshot
    invalidation: InvalidationSnapshot
    stampede: StampedeSnapshot
    latency: dict[str, HistogramSnapshot]
    coherence_lag: HistogramSnapshot
    key_analysis: KeyAnalysisSnapshot
    ttl: TtlEvidenceSnapshot
    l2: L2Snapshot | None


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _enum_text(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    return str(value).lower().replace("-", "_")


def _median(values: Iterable[float]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _percentile(values: Iterable[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# The error kinds RedisL2 reports (cache_runtime.l2.errors.ERROR_KINDS; a test keeps them equal).
# Repeated here so the stats module stays free of the Redis client's imports.
ERROR_KINDS: tuple[str, ...] = (
    "timeout", "connection", "tls", "auth", "permission", "pool", "oom", "readonly", "loading", "cluster",
    "data", "other",
)  # fmt: skip


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def normalize_l2_stats(
    l2_stats: Mapping[str, Any] | None,
    memory_info: Mapping[str, Any] | None = None,
) -> L2Snapshot | None:
    """Turn RedisL2.stats() (+ memory_info()) into the :class:`L2Snapshot` shape.

    Reads RedisL2's shape (``breaker.state``, ``ops`` by operation, ``errors`` by kind,
    ``pool.waits`` / ``pool.max_connections``, ``rtt_seconds.samples``, ``round_trips``,
    ``round_trip_seconds_total``, ``last_error.message``) and also accepts flat spellings
    (``breaker_state``, ``ops`` as an int, ``pool_waits``, ``rtt_seconds`` as a float,
    ``rtt_samples``) so tests and other producers can give plain numbers. Unknown error kinds are
    folded into ``other``. Returns None when there is no L2 (memory-only engine).
    """
    if l2_stats is None:
        return None
    errors = dict.fromkeys(ERROR_KINDS, 0)
    for kind, count in (l2_stats.get("errors") or l2_stats.get("errors_by_kind") or {}).items():
        key = str(kind).lower()
        errors[key if key in errors else "other"] += int(count or 0)

    raw_ops = l2_stats.get("ops", 0)
    ops = sum(int(v or 0) for v in raw_ops.values()) if isinstance(raw_ops, Mapping) else int(raw_ops or 0)

    breaker = l2_stats.get("breaker")
    breaker_state = breaker.get("state") if isinstance(breaker, Mapping) else l2_stats.get("breaker_state")

    raw_pool = l2_stats.get("pool")
    pool: Mapping[str, Any] = raw_pool if isinstance(raw_pool, Mapping) else {}
    pool_waits = pool.get("waits", l2_stats.get("pool_waits", 0))
    max_connections = pool.get("max_connections", l2_stats.get("max_connections"))

    rtt_field = l2_stats.get("rtt_seconds")
    samples: list[float] = []
    rtt: float | None = None
    if isinstance(rtt_field, Mapping):
        samples = [float(v) for v in rtt_field.get("samples") or () if _number(v) is not None]
    else:
        rtt = _number(rtt_field)
    samples += [float(v) for v in l2_stats.get("rtt_samples") or () if _number(v) is not None]
    round_trips = int(l2_stats.get("round_trips", 0) or 0)
    round_trip_seconds = float(l2_stats.get("round_trip_seconds_total", 0.0) or 0.0)
    round_trip_mean = _ratio(round_trip_seconds, round_trips)
    if rtt is None:
        rtt = _median(samples) if samples else round_trip_mean
    rtt_p95 = _number(l2_stats.get("rtt_p95_seconds"))
    if rtt_p95 is None:
        rtt_p95 = _percentile(samples, 0.95)

    memory: RedisMemorySnapshot | None = None
    source_memory = memory_info if memory_info is not None else l2_stats.get("memory")
    if isinstance(source_memory, Mapping):
        memory = {}
        for name in ("used_memory", "used_memory_dataset", "maxmemory", "evicted_keys", "expired_keys"):
            value = _number(source_memory.get(name))
            if value is not None:
                memory[name] = int(value)  # type: ignore[literal-required]
        if source_memory.get("maxmemory_policy") is not None:
            memory["maxmemory_policy"] = str(source_memory["maxmemory_policy"])

    last_error = l2_stats.get("last_error")
    if isinstance(last_error, Mapping):
        last_error = last_error.get("message")
    normalized: L2Snapshot = {
        "enabled": bool(l2_stats.get("enabled", True)),
        "available": bool(l2_stats.get("available", True)),
        "breaker_state": _enum_text(breaker_state if breaker_state is not None else "closed"),
        "ops": ops,
        "errors": errors,
        "pool_waits": int(pool_waits or 0),
        "pool_max_connections": int(max_connections) if max_connections is not None else None,
        "round_trips": round_trips,
        "round_trip_seconds": round_trip_seconds,
        "round_trip_mean_seconds": round_trip_mean,
        "rtt_seconds": rtt,
        "rtt_p95_seconds": rtt_p95,
        "last_error": str(last_error) if last_error is not None else None,
        "memory": memory,
    }
    normalized.update(_engine_view(l2_stats))  # type: ignore[typeddict-item]
    return normalized


def _engine_view(l2_stats: Mapping[str, Any]) -> dict[str, Any]:
    """The gauges of the engine's own Redis view: ``checks`` (``failed``, ``seconds_since_ok``, added
    by the facade) and the coherence subscription's ``connected``; absent ones are left out."""
    view: dict[str, Any] = {}
    checks = l2_stats.get("checks")
    if isinstance(checks, Mapping):
        view["failed_checks"] = int(checks.get("failed") or 0)
        view["seconds_since_ok"] = _number(checks.get("seconds_since_ok"))
    coherence = l2_stats.get("coherence")
    if isinstance(coherence, Mapping) and coherence.get("listeners"):
        connected = coherence.get("connected")
        view["subscription_connected"] = bool(connected) if connected is not None else None
    return view


def build_snapshot(
    stats: EngineStats,
    *,
    l1: Mapping[str, int] | None = None,
    l2: Mapping[str, Any] | None = None,
    redis_memory: Mapping[str, Any] | None = None,
    config: ConfigSnapshot | Mapping[str, Any] | None = None,
    isolated: bool = False,
    now: float | None = None,
) -> Snapshot:
    """Assemble the JSON-ready :class:`Snapshot` from the engine's parts (read time only).

    ``l1`` carries the L1 store's gauges: ``entries``, ``bytes``, ``max_entries``, ``max_bytes``,
    and, if the store counts them itself, ``inserts``/``evictions``/``expirations``/``rejected``
    (these then replace EngineStats' ``l1_*`` counters; ``L1.stats()`` can be passed as is).
    ``l2`` is RedisL2.stats() (None for a memory-only engine), ``redis_memory`` its
    memory_info(), ``config`` the facts of :class:`ConfigSnapshot`.
    """
    taken_at = time.time() if now is None else now
    l1 = l1 or {}
    lookups = stats.hits_l1 + stats.hits_l2 + stats.misses
    hits = stats.hits_l1 + stats.hits_l2
    operations: dict[str, OperationSnapshot] = {}
    for name in COUNTED_OPERATIONS:
        op_hits, op_misses = stats.op_hits.get(name, 0), stats.op_misses.get(name, 0)
        operations[name] = {
            "hits": op_hits,
            "misses": op_misses,
            "hit_rate": _ratio(op_hits, op_hits + op_misses),
        }
    return {
        "schema": SNAPSHOT_SCHEMA,
        "taken_at": taken_at,
        "window_seconds": max(0.0, taken_at - stats.started_at),
        "isolated": isolated,
        "config": dict(config or {}),  # type: ignore[typeddict-item]
        "requests": {
            "lookups": lookups,
            "hits": hits,
            "hits_l1": stats.hits_l1,
            "hits_l2": stats.hits_l2,
            "misses": stats.misses,
            "hit_rate": _ratio(hits, lookups),
            "l1_hit_rate": _ratio(stats.hits_l1, lookups),
            "l2_hit_rate": _ratio(stats.hits_l2, lookups - stats.hits_l1),
            "sets": stats.sets,
            "deletes": stats.deletes,
            "decode_failures": stats.decode_failures,
            "writes_rejected_isolated": stats.writes_rejected_isolated,
        },
        "operations": operations,
        "l1": {
            "entries": int(l1.get("entries", 0)),
            "bytes": int(l1.get("bytes", 0)),
            "max_entries": int(l1.get("max_entries", 0)),
            "max_bytes": int(l1.get("max_bytes", 0)),
            # The L1 store may count these itself (l1.stats()); its numbers win over EngineStats'.
            "inserts": int(l1.get("inserts", stats.l1_inserts)),
            "evictions": int(l1.get("evictions", stats.l1_evictions)),
            "expirations": int(l1.get("expirations", stats.l1_expirations)),
            "invalidated": int(l1.get("invalidated", stats.l1_invalidated)),
            "rejections": int(l1.get("rejected", l1.get("rejections", stats.l1_rejections))),
        },
        "compression": {
            "attempts": stats.compress_attempts,
            "compressed": stats.compressed_values,
            "skipped": stats.compress_skipped,
            "bytes_in": stats.compressed_bytes_in,
            "bytes_out": stats.compressed_bytes_out,
            "ratio": _ratio(stats.compressed_bytes_in, stats.compressed_bytes_out),
            "seconds": stats.compress_seconds,
            "seconds_per_attempt": _ratio(stats.compress_seconds, stats.compress_attempts),
            "offloaded": stats.compress_offloaded,
            "decompress_seconds": stats.decompress_seconds,
            "stored_values": stats.stored_values,
            "stored_bytes": stats.stored_bytes,
            "avg_stored_bytes": _ratio(stats.stored_bytes, stats.stored_values),
            "max_stored_bytes": stats.stored_bytes_max,
            "large_values_uncompressed": stats.large_values_uncompressed,
        },
        "invalidation": {
            "pattern": stats.invalidations_pattern,
            "namespace": stats.invalidations_namespace,
            "keys_invalidated": stats.keys_invalidated,
            "coherence_messages_published": stats.coherence_messages_published,
            "coherence_messages_received": stats.coherence_messages_received,
            "coherence_resets": stats.coherence_resets,
        },
        "stampede": {
            "computes": stats.computes,
            "compute_errors": stats.compute_errors,
            "singleflight_merges": stats.singleflight_merges,
            "early_refreshes": stats.early_refreshes,
            "lease_waits": stats.lease_waits,
        },
        "latency": {name: histogram.to_dict() for name, histogram in stats.latency.items()},
        "coherence_lag": stats.coherence_lag.to_dict(),
        "key_analysis": stats.key_variants.to_dict(),
        "ttl": stats.reuse.to_dict(),
        "l2": normalize_l2_stats(l2, redis_memory),
    }


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------


def _sub_histogram(newer: HistogramSnapshot, older: HistogramSnapshot) -> HistogramSnapshot:
    window = histogram_from_dict(newer)
    previous = histogram_from_dict(older)
    if previous.bounds != window.bounds:
        return newer
    window.counts = [max(0, a - b) for a, b in zip(window.counts, previous.counts, strict=True)]
    window.sum = max(0.0, window.sum - previous.sum)
    return window.to_dict()


def _sub_counters(newer: Mapping[str, Any], older: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    result = dict(newer)
    for name in names:
        result[name] = newer.get(name, 0) - older.get(name, 0)
    return result


def diff_snapshots(newer: Snapshot, older: Snapshot) -> Snapshot:
    """The activity between two cumulative snapshots of one engine, as a snapshot of the window.

    Counters and histograms are subtracted and rates recomputed; gauges (L1 entries/bytes, breaker
    state, RTT, Redis memory, config, key-variant groups) come from ``newer``. The health
    evaluation uses this so a long, healthy history does not hide a fresh problem. If the engine
    restarted in between (uptime went down), ``newer`` is returned unchanged.
    """
    if newer["window_seconds"] < older["window_seconds"]:
        return newer
    req = _sub_counters(
        newer["requests"],
        older["requests"],
        ("lookups", "hits", "hits_l1", "hits_l2", "misses", "sets", "deletes", "decode_failures",
         "writes_rejected_isolated"),
    )  # fmt: skip
    req["hit_rate"] = _ratio(req["hits"], req["lookups"])
    req["l1_hit_rate"] = _ratio(req["hits_l1"], req["lookups"])
    req["l2_hit_rate"] = _ratio(req["hits_l2"], req["lookups"] - req["hits_l1"])
    operations: dict[str, Any] = {}
    for name, current in newer["operations"].items():
        op = _sub_counters(current, older["operations"].get(name, {}), ("hits", "misses"))
        op["hit_rate"] = _ratio(op["hits"], op["hits"] + op["misses"])
        operations[name] = op
    l1 = _sub_counters(
        newer["l1"], older["l1"], ("inserts", "evictions", "expirations", "invalidated", "rejections")
    )
    comp = _sub_counters(
        newer["compression"],
        older["compression"],
        ("attempts", "compressed", "skipped", "bytes_in", "bytes_out", "seconds", "offloaded",
         "decompress_seconds", "stored_values", "stored_bytes", "large_values_uncompressed"),
    )  # fmt: skip
    comp["ratio"] = _ratio(comp["bytes_in"], comp["bytes_out"])
    comp["seconds_per_attempt"] = _ratio(comp["seconds"], comp["attempts"])
    comp["avg_stored_bytes"] = _ratio(comp["stored_bytes"], comp["stored_values"])
    invalidation = _sub_counters(newer["invalidation"], older["invalidation"], newer["invalidation"].keys())
    stampede = _sub_counters(newer["stampede"], older["stampede"], newer["stampede"].keys())
    latency = {
        name: _sub_histogram(hist, older["latency"][name]) if name in older["latency"] else hist
        for name, hist in newer["latency"].items()
    }
    keys = _sub_counters(
        newer["key_analysis"], older["key_analysis"], ("sampled_requests", "new_variant_requests")
    )
    ttl = _sub_counters(
        newer["ttl"], older["ttl"], ("sampled_misses", "expired_misses", "unexpired_misses", "cold_misses")
    )
    ttl["reuse_gap"] = _sub_histogram(newer["ttl"]["reuse_gap"], older["ttl"]["reuse_gap"])
    l2: Any = newer["l2"]
    older_l2 = older["l2"]
    if l2 is not None and older_l2 is not None:
        l2 = dict(l2)
        l2["ops"] = l2["ops"] - older_l2["ops"]
        l2["pool_waits"] = l2["pool_waits"] - older_l2["pool_waits"]
        l2["errors"] = {kind: count - older_l2["errors"].get(kind, 0) for kind, count in l2["errors"].items()}
        l2["round_trips"] = l2.get("round_trips", 0) - older_l2.get("round_trips", 0)
        l2["round_trip_seconds"] = l2.get("round_trip_seconds", 0.0) - older_l2.get("round_trip_seconds", 0.0)
        l2["round_trip_mean_seconds"] = _ratio(l2["round_trip_seconds"], l2["round_trips"])
    return {
        "schema": newer["schema"],
        "taken_at": newer["taken_at"],
        "window_seconds": newer["window_seconds"] - older["window_seconds"],
        "isolated": newer["isolated"],
        "config": newer["config"],
        "requests": req,  # type: ignore[typeddict-item]
        "operations": operations,
        "l1": l1,  # type: ignore[typeddict-item]
        "compression": comp,  # type: ignore[typeddict-item]
        "invalidation": invalidation,  # type: ignore[typeddict-item]
        "stampede": stampede,  # type: ignore[typeddict-item]
        "latency": latency,
        "coherence_lag": _sub_histogram(newer["coherence_lag"], older["coherence_lag"]),
        "key_analysis": keys,  # type: ignore[typeddict-item]
        "ttl": ttl,  # type: ignore[typeddict-item]
        "l2": l2,
    }


class SnapshotWindow:
    """Turns a stream of cumulative snapshots into snapshots of the last ``window_seconds``.

    The one snapshot window of the engine. Two ways to feed it:

    - :meth:`remember` each cumulative snapshot (kept at most every ``spacing_seconds``) and ask
      :meth:`window` for the activity since the newest kept snapshot at least ``window_seconds`` old
      (everything, early on): the facade's ``stats()`` and ``health()``;
    - :meth:`observe` a snapshot and evaluate what it returns: the activity since the newest retained
      snapshot that is at least ``window_seconds`` old (or since the oldest one kept, early on); a
      snapshot younger than the last (the engine restarted) starts over.

    Memory is bounded by ``max_snapshots``.
    """

    __slots__ = ("_history", "max_snapshots", "spacing_seconds", "window_seconds")

    def __init__(
        self, window_seconds: float = 300.0, max_snapshots: int = 32, spacing_seconds: float = 0.0
    ) -> None:
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds!r}")
        if max_snapshots < 2:
            raise ValueError(f"max_snapshots must be >= 2, got {max_snapshots!r}")
        self.window_seconds = window_seconds
        self.max_snapshots = max_snapshots
        self.spacing_seconds = spacing_seconds
        # (when it was taken, on the feeder's clock; the snapshot)
        self._history: deque[tuple[float, Snapshot]] = deque()

    def remember(self, snapshot: Snapshot, at: float | None = None) -> None:
        """Keep ``snapshot`` (taken at ``at``, default its ``taken_at``) unless the last one kept is
        younger than ``spacing_seconds``."""
        when = snapshot["taken_at"] if at is None else at
        history = self._history
        if not history or when - history[-1][0] >= self.spacing_seconds:
            history.append((when, snapshot))
        while len(history) > self.max_snapshots:
            history.popleft()

    def window(self, current: Snapshot, now: float, window_seconds: float | None = None) -> Snapshot:
        """``current`` minus the newest kept snapshot at least ``window_seconds`` old at ``now``
        (``current`` itself when none is that old)."""
        span = self.window_seconds if window_seconds is None else window_seconds
        older = [snap for at, snap in self._history if now - at >= span]
        return diff_snapshots(current, older[-1]) if older else current

    def observe(self, snapshot: Snapshot) -> Snapshot:
        """Record ``snapshot`` and return the window ending with it (itself if it is the first)."""
        history = self._history
        if history and snapshot["window_seconds"] < history[-1][1]["window_seconds"]:
            history.clear()  # the engine restarted: older counters do not belong to this one
        self.remember(snapshot)
        now = snapshot["taken_at"]
        # Keep exactly one baseline at least window_seconds old: drop it once a younger one qualifies.
        while len(history) > 2 and now - history[1][0] >= self.window_seconds:
            history.popleft()
        baseline = history[0][1]
        return snapshot if baseline is snapshot else diff_snapshots(snapshot, baseline)
