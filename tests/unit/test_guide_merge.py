"""cachewarden guide's merge: counts summed, rates recomputed, differences listed per pod."""

from __future__ import annotations

from cachewarden.merge import merge_answers, summable


def test_counts_sum_rates_are_recomputed_and_differences_listed() -> None:
    first = {
        "total_operations": 10,
        "cache_hit_rate": 0.9,
        "memory_usage": {"total_mb": 1.5},
        "cache_metrics": {"total_requests": 10, "hits": 9, "misses": 1, "l1_hits": 5, "l2_hits": 4},
        "operations": {"qa": {"hits": 1, "misses": 1, "hit_rate": 0.5}},
        "preset": "production",
        "errors": [{"message": "a"}],
        "avg_operation_duration": 2.0,
    }
    second = {
        "total_operations": 30,
        "cache_hit_rate": 0.1,
        "memory_usage": {"total_mb": 0.5},
        "cache_metrics": {"total_requests": 30, "hits": 3, "misses": 27, "l1_hits": 3, "l2_hits": 0},
        "operations": {"qa": {"hits": 3, "misses": 0, "hit_rate": 1.0}},
        "preset": "performance",
        "errors": [],
        "avg_operation_duration": 4.0,
    }
    merged = merge_answers({"a": first, "b": second})
    assert merged["total_operations"] == 40
    assert merged["memory_usage"]["total_mb"] == 2.0
    assert merged["cache_hit_rate"] == 0.3  # 12 / 40, not the mean of 0.9 and 0.1
    assert merged["memory_cache_hit_rate"] == 0.2
    assert merged["redis_cache_hit_rate"] == round(4 / 32, 4)
    assert merged["operations"]["qa"]["hit_rate"] == 0.8
    assert merged["avg_operation_duration"] == 3.0
    assert merged["preset"] == {"per_pod": {"a": "production", "b": "performance"}}
    assert merged["errors"] == [{"pod": "a", "message": "a"}]
    assert merged["merged"]["answered"] == 2 and merged["pods"]["b"] is second


def test_summable_reads_words_not_substrings() -> None:
    assert summable("total_operations") and summable("entries") and summable("memory_mb")
    assert not summable("cache_hit_rate") and not summable("avg_key_length") and not summable("ttl_s")
