"""One answer from the answers of every pod of a policy (``cachewarden guide``). Pure logic.

Counts (integers and byte/MB figures) are summed; rates, ratios, averages, percentiles and
utilizations are not summable and are recomputed where the answer carries their counts (the hit
rates of ``metrics``, ``status`` and ``operation-stats``) or else averaged across pods and marked;
strings and booleans that agree are kept, ones that differ are listed per pod; lists are joined with
each entry tagged by its pod. The per-pod answers are kept whole under ``pods``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Words of leaf names that are not counts: such leaves are averaged (or recomputed), never summed.
NOT_SUMMABLE = frozenset(
    {
        "rate",
        "ratio",
        "utilization",
        "util",
        "avg",
        "average",
        "mean",
        "p50",
        "p95",
        "p99",
        "ms",
        "time",
        "duration",
        "percent",
        "share",
        "latency",
        "threshold",
        "s",
        "seconds",
        "ttl",
        "level",
        "timestamp",
        "at",
        "since",
        "version",
        "hash",
        "port",
        "limit",
        "trend",
        "factor",
    }
)


def summable(key: str) -> bool:
    """Whether a leaf named ``key`` is a count (its words, split on ``_``, name no rate or time)."""
    return not (set(re.split(r"[_\W]+", key.lower())) & NOT_SUMMABLE)


def _merge_values(key: str, values: list[tuple[str, Any]]) -> Any:
    present = [(pod, value) for pod, value in values if value is not None]
    if not present:
        return None
    kinds = {type(value) for _, value in present}
    if kinds <= {int, float} and bool not in kinds:
        numbers = [value for _, value in present]
        if not summable(key):
            return round(sum(numbers) / len(numbers), 6)
        total = sum(numbers)
        return round(total, 6) if isinstance(total, float) else total
    if all(isinstance(value, Mapping) for _, value in present):
        keys: list[str] = []
        for _, value in present:
            keys.extend(name for name in value if name not in keys)
        return {
            name: _merge_values(name, [(pod, value.get(name)) for pod, value in present]) for name in keys
        }
    if all(isinstance(value, list) for _, value in present):
        joined: list[Any] = []
        for pod, value in present:
            joined.extend({"pod": pod, **item} if isinstance(item, Mapping) else item for item in value)
        return joined
    distinct = {repr(value) for _, value in present}
    if len(distinct) == 1:
        return present[0][1]
    return {"per_pod": {pod: value for pod, value in present}}


def _recompute(merged: dict[str, Any]) -> list[str]:
    """Hit rates recomputed from the merged counts; returns the fields recomputed."""
    done = []
    cache = merged.get("cache_metrics")
    if isinstance(cache, dict) and cache.get("total_requests"):
        total = cache["total_requests"]
        misses = cache.get("misses") or 0
        rates = {
            "hit_rate": (cache.get("hits") or 0) / total,
            "l1_hit_rate": (cache.get("l1_hits") or 0) / total,
            "l2_hit_rate": ((cache.get("l2_hits") or 0) / ((cache.get("l2_hits") or 0) + misses))
            if (cache.get("l2_hits") or 0) + misses
            else None,
        }
        for name, value in rates.items():
            cache[name] = None if value is None else round(value, 4)
        merged["cache_hit_rate"] = cache["hit_rate"]
        merged["memory_cache_hit_rate"] = cache["l1_hit_rate"]
        merged["redis_cache_hit_rate"] = cache["l2_hit_rate"]
        done += ["cache_hit_rate", "memory_cache_hit_rate", "redis_cache_hit_rate"]
    performance = merged.get("performance")
    if isinstance(performance, dict) and performance.get("total_requests"):
        performance["hit_rate"] = round((performance.get("hits") or 0) / performance["total_requests"], 4)
        done.append("performance.hit_rate")
    operations = merged.get("operations")
    if isinstance(operations, Mapping):
        for name, stats in operations.items():
            if isinstance(stats, dict) and "hits" in stats and "misses" in stats:
                lookups = (stats["hits"] or 0) + (stats["misses"] or 0)
                stats["hit_rate"] = round(stats["hits"] / lookups, 4) if lookups else None
                done.append(f"operations.{name}.hit_rate")
    return done


def merge_answers(answers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the JSON answers of several pods (``{pod: answer}``) into one."""
    values = [(pod, answer) for pod, answer in answers.items() if isinstance(answer, Mapping)]
    merged = _merge_values("", values) if values else {}
    if not isinstance(merged, dict):
        merged = {"value": merged}
    recomputed = _recompute(merged)
    merged["merged"] = {
        "pods": len(answers),
        "answered": len(values),
        "rule": "counts summed; rates recomputed from counts where present, else averaged; "
        "differing values listed per pod",
        "recomputed": recomputed,
    }
    merged["pods"] = dict(answers)
    return merged
