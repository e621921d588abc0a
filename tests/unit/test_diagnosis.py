"""The decision tree: one row per cause with an engine state that must produce it, and rows that
must not (the near misses that a careless rule would also blame)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from health_scenarios import (
    MIB,
    Scenario,
    healthy,
    with_cold_misses,
    with_expiring_reuse,
    with_large_uncompressed_values,
    with_latency,
    with_low_hit_rate,
    with_redis_down,
    with_text_variants,
)

from cache_runtime.actions import ACTIONS
from cache_runtime.config import resolve_config
from cache_runtime.diagnosis import Cause, Recommendation
from cache_runtime.health import HealthReport, SymptomName, evaluate


@dataclass(frozen=True)
class Row:
    """An engine state, the cause it must produce for a symptom, and causes it must not produce."""

    id: str
    build: Callable[[], Scenario]
    symptom: SymptomName
    cause: str | None
    not_causes: tuple[str, ...] = ()
    first: bool = True  # the expected cause must be the most likely one for the symptom


def low_hit_with_variants() -> Scenario:
    return with_text_variants(with_low_hit_rate(healthy()))


def low_hit_with_variants_but_normalized() -> Scenario:
    scenario = low_hit_with_variants()
    scenario.config["normalize"] = dict.fromkeys(
        ("whitespace", "line_endings", "invisible_chars", "case"), True
    )
    return scenario


def low_hit_with_few_key_samples() -> Scenario:
    scenario = with_low_hit_rate(healthy())
    scenario.stats.key_variants = type(scenario.stats.key_variants)(sample_every=1)
    for variant in range(10):  # 10 samples < key_min_samples
        scenario.stats.key_variants.record(f"raw-{variant}", "same-text")
    return scenario


def low_hit_with_expiring_reuse() -> Scenario:
    return with_expiring_reuse(with_low_hit_rate(healthy()))


def low_hit_with_cold_misses() -> Scenario:
    return with_cold_misses(with_low_hit_rate(healthy()))


def low_hit_with_invalidations() -> Scenario:
    scenario = with_low_hit_rate(healthy())
    scenario.stats.invalidations_namespace = 25  # 25 wipes over 850 writes
    scenario.stats.invalidations_pattern = 5
    scenario.stats.keys_invalidated = 600
    return scenario


def low_hit_expiring_with_write_broadcasts() -> Scenario:
    scenario = low_hit_with_expiring_reuse()
    scenario.stats.coherence_messages_received = 734  # other pods' writes, as 3 pods on devcluster saw
    return scenario


def low_hit_with_rare_invalidations() -> Scenario:
    scenario = with_cold_misses(with_low_hit_rate(healthy(), lookups=100_000))
    scenario.stats.invalidations_namespace = 2  # 2 over 85,000 writes: routine
    return scenario


def low_hit_memory_only_l1_thrashing() -> Scenario:
    scenario = with_low_hit_rate(healthy())
    scenario.l2 = None  # memory-only: L1 is the only tier
    scenario.stats.l1_inserts = 850
    scenario.stats.l1_evictions = 800
    scenario.l1.update(entries=1000, max_entries=1000)
    return scenario


def l1_thrashing_l2_fine() -> Scenario:
    scenario = healthy()
    scenario.stats.hits_l1, scenario.stats.hits_l2, scenario.stats.misses = 150, 750, 100
    scenario.stats.l1_inserts = 850
    scenario.stats.l1_evictions = 800
    scenario.l1.update(entries=995, max_entries=1000)
    return scenario


def l1_thrashing_on_bytes() -> Scenario:
    scenario = l1_thrashing_l2_fine()
    scenario.l1.update(entries=300, bytes=int(7.9 * MIB), max_bytes=8 * MIB)
    return scenario


def low_hit_with_variants_and_l1_thrashing() -> Scenario:
    scenario = low_hit_with_variants()
    scenario.stats.l1_inserts = 850
    scenario.stats.l1_evictions = 800
    scenario.l1.update(entries=1000, max_entries=1000)
    return scenario


def low_hit_isolated() -> Scenario:
    scenario = with_low_hit_rate(healthy())
    scenario.isolated = True
    scenario.stats.writes_rejected_isolated = 850
    return scenario


def low_hit_redis_down() -> Scenario:
    return with_redis_down(with_low_hit_rate(healthy()))


def high_memory_large_values() -> Scenario:
    return with_large_uncompressed_values(healthy())


def high_memory_large_values_that_do_not_compress() -> Scenario:
    scenario = healthy()
    for _ in range(300):  # tried, did not pay (already-compressed media, say)
        scenario.stats.record_stored_value(64 * 1024, compressed=False, compression_tried=True)
    scenario.l1.update(bytes=60 * MIB, max_bytes=40 * MIB)
    return scenario


def high_memory_growing_budget() -> Scenario:
    scenario = healthy()
    scenario.stats.l1_evictions = 0
    scenario.l1.update(bytes=70 * MIB, entries=800, max_bytes=512 * MIB)
    return scenario


def slow_redis() -> Scenario:
    scenario = with_latency(with_latency(healthy(), "get", 0.03), "l2_get", 0.025)
    assert scenario.l2 is not None
    scenario.l2.update(rtt_seconds=0.015, errors={"timeout": 2})
    return scenario


def slow_pool() -> Scenario:
    scenario = with_latency(healthy(), "get", 0.03)
    assert scenario.l2 is not None
    scenario.l2.update(pool_waits=120, ops=1000, max_connections=5)
    return scenario


def slow_compression() -> Scenario:
    scenario = with_latency(healthy(), "set", 0.04)
    scenario.stats.compress_seconds = 1.5  # 15 ms per write over 100 writes
    return scenario


def slow_without_evidence() -> Scenario:
    return with_latency(healthy(), "get", 0.03)


def redis_wrong_password() -> Scenario:
    scenario = healthy()
    assert scenario.l2 is not None
    scenario.l2.update(
        breaker_state="open",
        available=False,
        errors={"auth": 5},
        last_error="WRONGPASS invalid username-password pair or user is disabled.",
    )
    return scenario


def redis_full_noeviction() -> Scenario:
    scenario = healthy()
    assert scenario.l2 is not None
    scenario.l2.update(errors={"oom": 40})
    scenario.redis_memory = {
        "used_memory": 100 * MIB,
        "maxmemory": 100 * MIB,
        "maxmemory_policy": "noeviction",
    }
    return scenario


def redis_full_with_eviction() -> Scenario:
    scenario = redis_full_noeviction()
    assert scenario.redis_memory is not None
    scenario.redis_memory["maxmemory_policy"] = "allkeys-lru"
    return scenario


ROWS: list[Row] = [
    Row("key inconsistency", low_hit_with_variants, SymptomName.LOW_HIT_RATE, "KeyInconsistency"),
    Row("no key inconsistency once normalization is on", low_hit_with_variants_but_normalized,
        SymptomName.LOW_HIT_RATE, None, ("KeyInconsistency",)),
    Row("no key inconsistency from a handful of samples", low_hit_with_few_key_samples,
        SymptomName.LOW_HIT_RATE, None, ("KeyInconsistency",)),
    Row("TTL too short", low_hit_with_expiring_reuse, SymptomName.LOW_HIT_RATE, "TtlTooShort",
        ("KeyInconsistency", "LowReuseWorkload")),
    Row("first requests are not a TTL problem", low_hit_with_cold_misses, SymptomName.LOW_HIT_RATE,
        "LowReuseWorkload", ("TtlTooShort", "ExcessiveInvalidation")),
    Row("too much invalidation", low_hit_with_invalidations, SymptomName.LOW_HIT_RATE,
        "ExcessiveInvalidation", ("TtlTooShort",)),
    Row("other pods' write broadcasts are not invalidations", low_hit_expiring_with_write_broadcasts,
        SymptomName.LOW_HIT_RATE, "TtlTooShort", ("ExcessiveInvalidation",)),
    Row("routine invalidation is not too much", low_hit_with_rare_invalidations, SymptomName.LOW_HIT_RATE,
        "LowReuseWorkload", ("ExcessiveInvalidation",)),
    Row("L1 too small when it is the only tier", low_hit_memory_only_l1_thrashing, SymptomName.LOW_HIT_RATE,
        "L1TooSmall", first=False),
    Row("L1 too small while L2 hits are fine", l1_thrashing_l2_fine, SymptomName.L1_THRASHING, "L1TooSmall"),
    Row("L2 fine: L1 is not why the overall hit rate is low", low_hit_with_variants, SymptomName.LOW_HIT_RATE,
        "KeyInconsistency", ("L1TooSmall",)),
    Row("L1 evicting while L2 works does not explain a low overall hit rate",
        low_hit_with_variants_and_l1_thrashing, SymptomName.LOW_HIT_RATE, "KeyInconsistency",
        ("L1TooSmall",)),
    Row("... it explains the L1 thrashing", low_hit_with_variants_and_l1_thrashing, SymptomName.L1_THRASHING,
        "L1TooSmall"),
    Row("isolated pod", low_hit_isolated, SymptomName.LOW_HIT_RATE, "PodIsolated"),
    Row("Redis down explains the low hit rate too", low_hit_redis_down, SymptomName.LOW_HIT_RATE,
        "RedisUnreachable", first=False),
    Row("large uncompressed entries", high_memory_large_values, SymptomName.HIGH_MEMORY,
        "LargeUncompressedEntries"),
    Row("incompressible values are not 'uncompressed by configuration'",
        high_memory_large_values_that_do_not_compress, SymptomName.HIGH_MEMORY, None,
        ("LargeUncompressedEntries",)),
    Row("growth up to a budget above the threshold", high_memory_growing_budget, SymptomName.HIGH_MEMORY,
        "UnboundedGrowth", ("LargeUncompressedEntries",)),
    Row("Redis latency", slow_redis, SymptomName.SLOW_OPERATIONS, "RedisLatency",
        ("PoolExhaustion", "CompressionTooCostly")),
    Row("pool exhaustion", slow_pool, SymptomName.SLOW_OPERATIONS, "PoolExhaustion",
        ("RedisLatency", "CompressionTooCostly")),
    Row("compression too costly", slow_compression, SymptomName.SLOW_OPERATIONS, "CompressionTooCostly",
        ("RedisLatency", "PoolExhaustion")),
    Row("slow without evidence stays undetermined", slow_without_evidence, SymptomName.SLOW_OPERATIONS,
        "Undetermined", ("RedisLatency", "PoolExhaustion", "CompressionTooCostly")),
    Row("Redis unreachable", lambda: with_redis_down(healthy()), SymptomName.REDIS_UNAVAILABLE,
        "RedisUnreachable", ("RedisAuthenticationFailure",)),
    Row("wrong password is not 'unreachable'", redis_wrong_password, SymptomName.REDIS_UNAVAILABLE,
        "RedisAuthenticationFailure", ("RedisUnreachable",)),
    Row("wrong password (auth symptom)", redis_wrong_password, SymptomName.REDIS_AUTH_FAILURE,
        "RedisAuthenticationFailure"),
    Row("Redis out of memory under noeviction", redis_full_noeviction, SymptomName.REDIS_OUT_OF_MEMORY,
        "RedisOutOfMemory"),
]  # fmt: skip


def _report(row: Row) -> HealthReport:
    return evaluate(row.build().snapshot())


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_cause_table(row: Row) -> None:
    report = _report(row)
    assert report.symptom(row.symptom) is not None, report.to_dict()["symptoms"]
    causes = report.causes_for(row.symptom)
    names = [cause.name for cause in causes]
    if row.cause is not None:
        assert row.cause in names, report.to_dict()["causes"]
        if row.first:
            assert names[0] == row.cause, names
    for absent in row.not_causes:
        assert absent not in names, report.to_dict()["causes"]


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_every_cause_has_evidence_and_a_known_action(row: Row) -> None:
    report = _report(row)
    for cause in report.causes:
        assert cause.summary
        assert cause.recommendations
        assert all(r.action is None or r.action in ACTIONS for r in cause.recommendations)
        if cause.name != "Undetermined":
            assert cause.evidence, cause.name
            assert 0.0 < cause.score <= 1.0
    json.dumps(report.to_dict(), allow_nan=False)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_config_changes_are_valid_overrides_of_the_real_config(row: Row) -> None:
    for cause in _report(row).causes:
        for recommendation in cause.recommendations:
            if recommendation.action == "config-change":
                # Raises ConfigError naming the field if a recommended override is unknown or out of range.
                resolve_config("production", overrides=recommendation.parameters["overrides"])
            if recommendation.action == "apply-preset":
                resolve_config(recommendation.parameters["preset"])


def _cause(row_id: str, name: str) -> Cause:
    row = next(row for row in ROWS if row.id == row_id)
    return next(cause for cause in _report(row).causes if cause.name == name)


def test_key_inconsistency_says_how_many_keys_collapse_and_recommends_normalization() -> None:
    cause = _cause("key inconsistency", "KeyInconsistency")
    assert cause.evidence["distinct_raw_keys"] == 100 + 100  # 100 healthy texts + 20 texts x 5 spellings
    assert cause.evidence["distinct_normalized_keys"] == 100 + 20
    assert "200 distinct keys collapse to 120" in cause.summary
    first = cause.recommendations[0]
    assert first.action == "config-change"
    assert first.parameters["overrides"]["keys"]["normalize"]["whitespace"] is True


def test_ttl_too_short_proposes_a_ttl_that_covers_the_observed_gaps() -> None:
    cause = _cause("TTL too short", "TtlTooShort")
    assert cause.evidence["expired_misses"] == 40
    assert cause.evidence["expired_share"] == pytest.approx(1.0)
    proposed = cause.recommendations[0].parameters["overrides"]["ttl"]["default_s"]
    assert proposed >= 250  # the observed gap
    assert proposed >= 2 * 60  # at least double the TTL in force
    assert proposed <= 7 * 24 * 3600


def test_l1_too_small_raises_the_binding_limit() -> None:
    by_entries = _cause("L1 too small while L2 hits are fine", "L1TooSmall")
    assert by_entries.evidence["binding_limit"] == "max_entries"
    assert by_entries.recommendations[0].parameters == {"overrides": {"l1": {"max_entries": 4000}}}
    report = evaluate(l1_thrashing_on_bytes().snapshot())
    by_bytes = report.causes_for(SymptomName.L1_THRASHING)[0]
    assert by_bytes.evidence["binding_limit"] == "max_bytes"
    proposal = by_bytes.recommendations[0].parameters["overrides"]["l1"]["max_bytes"]
    assert 8 * MIB < proposal <= int(0.8 * 50 * MIB)  # more room, still below the memory warning


def test_large_uncompressed_entries_recommends_a_threshold_then_compress_existing() -> None:
    cause = _cause("large uncompressed entries", "LargeUncompressedEntries")
    actions = [r.action for r in cause.recommendations]
    assert actions == ["config-change", "compress-existing"]
    assert cause.recommendations[0].parameters["overrides"]["compression"]["threshold_bytes"] == 4096
    assert cause.evidence["large_values_uncompressed"] == 300


def test_pool_exhaustion_doubles_the_pool() -> None:
    cause = _cause("pool exhaustion", "PoolExhaustion")
    assert cause.recommendations[0].parameters == {"overrides": {"redis": {"max_connections": 10}}}


def test_compression_too_costly_lowers_the_level_first() -> None:
    cause = _cause("compression too costly", "CompressionTooCostly")
    assert cause.recommendations[0].parameters == {"overrides": {"compression": {"level": 1}}}
    assert cause.evidence["seconds_per_set"] == pytest.approx(0.015)


def test_redis_unreachable_recommends_reconnect_and_keeps_the_last_error() -> None:
    cause = _cause("Redis unreachable", "RedisUnreachable")
    assert cause.recommendations[0].action == "reconnect-redis"
    assert not cause.recommendations[0].disruptive
    assert cause.evidence["connection_errors"] == 12
    assert "Connection refused" in cause.evidence["last_error"]


def test_redis_down_cause_is_listed_once_for_both_symptoms() -> None:
    report = evaluate(low_hit_redis_down().snapshot())
    unreachable = [cause for cause in report.causes if cause.name == "RedisUnreachable"]
    assert len(unreachable) == 1
    assert set(unreachable[0].symptoms) == {"LowHitRate", "RedisUnavailable"}


def test_auth_failure_asks_a_person_to_fix_the_secret_first() -> None:
    cause = _cause("wrong password (auth symptom)", "RedisAuthenticationFailure")
    assert cause.recommendations[0].action is None
    assert "Secret" in cause.recommendations[0].description
    assert cause.recommendations[1].action == "reconnect-redis"


def test_redis_oom_tells_noeviction_apart() -> None:
    noeviction = _cause("Redis out of memory under noeviction", "RedisOutOfMemory")
    assert "noeviction" in noeviction.summary
    assert "volatile-lru" in noeviction.recommendations[0].description
    assert noeviction.evidence["used_share"] == pytest.approx(1.0)
    other = next(
        c for c in evaluate(redis_full_with_eviction().snapshot()).causes if c.name == "RedisOutOfMemory"
    )
    assert "noeviction" not in other.summary
    assert "allkeys-lru" in other.summary


def test_redis_oom_whose_overhead_fills_maxmemory_asks_for_more_memory_first() -> None:
    """maxmemory 1 MiB (what a new user tried): Redis's own overhead (connections, buffers) fills it,
    so evicting every key cannot make room; the fix named first is more maxmemory, then a policy."""
    scenario = redis_full_noeviction()
    scenario.redis_memory = {
        "used_memory": int(1.3 * MIB),
        "used_memory_dataset": int(0.2 * MIB),
        "maxmemory": MIB,
        "maxmemory_policy": "noeviction",
    }
    cause = next(c for c in evaluate(scenario.snapshot()).causes if c.name == "RedisOutOfMemory")
    assert "overhead" in cause.summary and "no eviction policy can make room" in cause.summary
    first = cause.recommendations[0]
    assert first.action is None and first.description.startswith("raise Redis maxmemory above 1.0 MiB")
    assert first.parameters == {"maxmemory": 64 * MIB, "maxmemory_policy": "volatile-lru"}
    assert cause.evidence["overhead"] == int(1.3 * MIB) - int(0.2 * MIB)
    assert all(r.action != "clear" for r in cause.recommendations)
    # With room to free (the dataset is most of it) the policy comes first, as before.
    scenario.redis_memory = {**scenario.redis_memory, "used_memory_dataset": int(1.0 * MIB)}
    cause = next(c for c in evaluate(scenario.snapshot()).causes if c.name == "RedisOutOfMemory")
    assert "volatile-lru" in cause.recommendations[0].description and "overhead" not in cause.summary


def test_disruptive_actions_are_flagged() -> None:
    assert Recommendation("clear", "x").disruptive
    assert Recommendation("apply-preset", "x", {"preset": "conservative"}).disruptive
    assert not Recommendation("gc", "x").disruptive
    assert not Recommendation(None, "a person does it").disruptive


def test_unknown_action_is_rejected() -> None:
    with pytest.raises(ValueError, match="'reboot' is not one of"):
        Recommendation("reboot", "x")


def test_ttl_too_short_raises_the_ttl_of_the_operation_that_misses() -> None:
    """Only summarize misses (its own 60 s TTL): the fix is ttl.summarize_s, the default stays."""
    from health_scenarios import healthy, with_expiring_reuse, with_low_hit_rate

    scenario = with_expiring_reuse(with_low_hit_rate(healthy()))
    scenario.config["operation_ttls_s"] = {"summarize": 60, "qa": 7200}
    for _ in range(200):
        scenario.stats.count_operation("summarize", hit=False)
    for _ in range(200):
        scenario.stats.count_operation("qa", hit=True)
    cause = next(c for c in evaluate(scenario.snapshot()).causes if c.name == "TtlTooShort")
    overrides = cause.recommendations[0].parameters["overrides"]["ttl"]
    assert list(overrides) == ["summarize_s"] and overrides["summarize_s"] >= 250
    assert "ttl.summarize_s" in cause.recommendations[0].description


def test_key_inconsistency_turns_on_only_the_rules_the_variants_need() -> None:
    """Spellings that differ in whitespace only: the fix is keys.normalize.whitespace, not case folding."""
    from health_scenarios import healthy, with_low_hit_rate

    from cache_runtime.config import NormalizeConfig
    from cache_runtime.keys import rules_that_change

    scenario = with_low_hit_rate(healthy())
    off = NormalizeConfig()
    for text in range(20):
        for spelling in range(5):
            typed = "clause" + " " * (spelling + 2) + str(text) + "\n" * (spelling % 2)
            changing = rules_that_change(typed, off)
            assert "case" not in changing and "whitespace" in changing
            scenario.stats.key_variants.record(f"ai:qa:t{text}-{spelling}", f"ai:qa:t{text}", changing)
    cause = next(c for c in evaluate(scenario.snapshot()).causes if c.name == "KeyInconsistency")
    assert cause.evidence["normalization_needed"] == ["whitespace"]
    assert cause.recommendations[0].parameters == {"overrides": {"keys": {"normalize": {"whitespace": True}}}}
    assert rules_that_change("Clause 1", off) == ("case",)
    assert rules_that_change("a\r\nb", off) == ("whitespace", "line_endings")
    assert rules_that_change("same", off, question="Why?") == ("case",)


def test_key_inconsistency_outranks_low_reuse_when_every_miss_builds_its_key_twice() -> None:
    """Each new spelling misses and is stored (two key builds, one new variant): the request share is
    below 0.5, but 2 texts in 15 spellings fold 13 keys of 15 away, which is what ranks the cause."""
    from health_scenarios import healthy, with_low_hit_rate

    from cache_runtime.stats import KeyVariantSampler

    scenario = with_low_hit_rate(healthy())
    scenario.stats.key_variants = KeyVariantSampler()  # only the questions typed differently
    for text in range(2):
        for spelling in range(8):
            for _ in range(2):  # lookup, then store on the miss
                raw, folded = f"ai:qa:t{text}-{spelling}", f"ai:qa:t{text}"
                scenario.stats.key_variants.record(raw, folded, ("whitespace",))
    cause = next(c for c in evaluate(scenario.snapshot()).causes if c.name == "KeyInconsistency")
    assert cause.evidence["new_variant_share"] < 0.5 < cause.score
