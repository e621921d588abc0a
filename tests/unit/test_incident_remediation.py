"""The pure logic of remediation by time-boxed override, verified by its effect
(cache_operator.incidents.remediation)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from cache_operator.api.cachepolicy import CachePolicySpec
from cache_operator.incidents import remediation as rem
from cache_runtime.timefmt import rfc3339

NOW = 1_800_000_000.0
SPEC: dict[str, Any] = {
    "preset": "development",
    "overrides": {"l1": {"max_entries": 1000}},
    "runtime": {"replicas": 2},
}


def report(*, hit_rate: float | None = None, memory: int | None = None, symptoms: Any = ()) -> dict[str, Any]:
    return {
        "hit_rates": {"overall": hit_rate},
        "memory": {"bytes": memory},
        "latency": {"get": {"p95_ms": 2.0}, "set": {"p95_ms": 7.5}},
        "diagnosis": {"symptoms": [dict(s) for s in symptoms]},
    }


def test_the_figure_is_the_worst_pods_own_value() -> None:
    reports = {
        "a": report(hit_rate=0.2, symptoms=[{"name": "LowHitRate", "value": 0.2}]),
        "b": report(hit_rate=0.8),
        "c": None,
    }
    assert rem.symptom_figure("LowHitRate", reports) == 0.2
    assert (
        rem.symptom_figure("HighMemory", {"a": report(memory=3 * rem.MIB), "b": report(memory=rem.MIB)}) == 3
    )
    assert rem.symptom_figure("SlowOperations", {"a": report()}) == 7.5
    # Symptoms without a figure count the pods that show them.
    redis = {"a": report(symptoms=[{"name": "RedisUnavailable"}]), "b": report()}
    assert rem.symptom_figure("RedisUnavailable", redis) == 1.0
    assert rem.symptom_figure("LowHitRate", {"a": None}) is None


@pytest.mark.parametrize(
    ("symptom", "before", "after", "shown", "expected"),
    [
        ("LowHitRate", 0.2, 0.26, True, True),
        ("LowHitRate", 0.2, 0.22, True, False),  # within the margin: not an improvement
        ("LowHitRate", 0.2, 0.1, True, False),  # worse
        ("LowHitRate", 0.2, 0.2, False, True),  # the symptom is gone on every pod
        ("HighMemory", 60.0, 50.0, True, True),
        ("HighMemory", 60.0, 58.0, True, False),
        ("SlowOperations", 100.0, 120.0, True, False),
        ("RedisUnavailable", 3.0, 2.0, True, True),
        ("L1Thrashing", None, 0.9, True, False),
        ("L1Thrashing", 0.1, 0.5, True, True),
    ],
)
def test_improved_by_the_margin_or_the_symptom_gone(
    symptom: str, before: float | None, after: float | None, shown: bool, expected: bool
) -> None:
    assert rem.improved(symptom, before, after, shown) is expected


def test_verification_waits_for_the_set_number_of_probes_then_decides() -> None:
    proposed = rem.proposal(
        "apply-override",
        {"ttl": {"default_s": 600}},
        symptom="LowHitRate",
        before=0.2,
        policy="web",
        namespace="shop",
        spec_overrides={},
    )
    state = rem.start_verification(proposed, "apply-override", NOW, 3)
    assert state["state"] == "Verifying" and state["before"] == 0.2 and state["startedAt"] == rfc3339(NOW)
    state, verdict = rem.verify_step(state, "LowHitRate", 0.3, True, NOW + 15)
    assert verdict is None
    state, verdict = rem.verify_step(state, "LowHitRate", None, True, NOW + 30)  # nobody answered
    assert verdict is None and state["probes"] == [0.3]
    state, verdict = rem.verify_step(state, "LowHitRate", 0.5, True, NOW + 45)
    assert verdict is None
    state, verdict = rem.verify_step(state, "LowHitRate", 0.7, True, NOW + 60)
    assert verdict == "Remediated" and state["after"] == 0.7 and state["probes"] == [0.3, 0.5, 0.7]
    assert "hitRate 20.0% -> 70.0%" in state["message"]
    # Decided: further probes change nothing.
    assert rem.verify_step(state, "LowHitRate", 0.1, True, NOW + 75) == (state, None)


def test_a_figure_that_does_not_improve_is_ineffective() -> None:
    state = rem.start_verification({"before": 60.0}, "apply-override", NOW, 1)
    state, verdict = rem.verify_step(state, "HighMemory", 61.0, True, NOW + 15)
    assert verdict == "Ineffective" and "did not help" in state["message"]


def test_bounded_override_clamps_to_the_engine_ranges_and_the_pod_memory() -> None:
    limit = rem.memory_bytes("512Mi")
    assert limit == 512 * rem.MIB
    bounded, notes = rem.bounded_override(
        {"l1": {"max_bytes": 2 * 1024**3}, "ttl": {"default_s": 10**9}}, SPEC, limit
    )
    assert bounded == {"l1": {"max_bytes": 256 * rem.MIB}, "ttl": {"default_s": 7 * 86400}}
    assert any("l1.max_bytes" in note for note in notes) and any("ttl.default_s" in note for note in notes)
    # Dotted keys are accepted and nested.
    assert rem.bounded_override({"compression.level": 1}, SPEC, None)[0] == {"compression": {"level": 1}}


def test_bounded_override_refuses_what_the_spec_validation_refuses_or_changes_nothing() -> None:
    spec = {**SPEC, "overrides": {"health": {"hit_rate_warning": 0.5, "hit_rate_critical": 0.4}}}
    bounded, notes = rem.bounded_override({"health": {"hit_rate_critical": 0.9}}, spec, None)
    assert bounded is None and "refused by the spec's validation" in notes[-1]
    bounded, notes = rem.bounded_override({"l1": {"max_entries": 1000}}, SPEC, None)
    assert bounded is None and "already hold" in notes[-1]
    assert rem.bounded_override({"nope": {"x": 1}}, SPEC, None)[0] is None


def test_the_permanent_patch_is_a_merge_patch_and_the_yaml_of_the_whole_overrides() -> None:
    patch = rem.permanent_patch("web", "shop", {"l1": {"max_entries": 1000}}, {"ttl": {"default_s": 600}})
    command = patch["command"]
    assert command.startswith("kubectl -n shop patch cachepolicy web --type merge -p '")
    body = json.loads(command.split(" -p ", 1)[1].strip("'"))
    assert body == {"spec": {"overrides": {"ttl": {"default_s": 600}}}}
    committed = yaml.safe_load(patch["yaml"])
    assert committed == {"spec": {"overrides": {"l1": {"max_entries": 1000}, "ttl": {"default_s": 600}}}}
    # What the YAML says is a valid spec.
    CachePolicySpec.model_validate({**SPEC, "overrides": committed["spec"]["overrides"]})


def test_pod_memory_limit_from_the_runtime_spec() -> None:
    assert rem.pod_memory_limit(CachePolicySpec.model_validate(SPEC)) == 512 * rem.MIB
    sized = {**SPEC, "runtime": {"replicas": 1, "resources": {"limits": {"memory": "1Gi"}}}}
    assert rem.pod_memory_limit(CachePolicySpec.model_validate(sized)) == 1024**3
    selector = {"preset": "development", "selector": {"matchLabels": {"app": "x"}}}
    assert rem.pod_memory_limit(CachePolicySpec.model_validate(selector)) is None
    assert rem.memory_bytes("1G") == 10**9 and rem.memory_bytes("lots") is None


def test_hit_rates_are_verified_between_probes() -> None:
    """The pods' window moves slowly: the figure is the hit rate of the lookups since the last probe."""

    def reports(overall_a: float, lookups_a: int, overall_b: float, lookups_b: int) -> dict[str, Any]:
        return {
            "a": {"hit_rates": {"overall": overall_a, "l1": 0.0, "lookups": lookups_a}},
            "b": {"hit_rates": {"overall": overall_b, "l1": 0.0, "lookups": lookups_b}},
            "gone": None,
        }

    state = rem.start_verification({"before": 0.0}, "apply-override", NOW, 2)
    figure, counts, baseline = rem.probe_figure("LowHitRate", reports(0.0, 1000, 0.0, 500), None)
    assert (figure, baseline) == (None, True) and counts == {"a": [0.0, 1000], "b": [0.0, 500]}
    state, verdict = rem.verify_step(state, "LowHitRate", figure, True, NOW + 5, counts=counts, baseline=True)
    assert verdict is None and state["probes"] == [] and state["baseline"] == counts
    # 1000 more lookups on a, all hits; 500 more on b, half hits: the window says 33%, the probe 83%.
    later = reports(0.5, 2000, 0.25, 1000)
    figure, counts, baseline = rem.probe_figure("LowHitRate", later, state["baseline"])
    assert figure == pytest.approx(1250 / 1500) and not baseline
    state, verdict = rem.verify_step(state, "LowHitRate", figure, True, NOW + 10, counts=counts)
    assert verdict is None
    # No lookup since: the probe does not count.
    figure, counts, _ = rem.probe_figure("LowHitRate", later, state["baseline"])
    assert figure is None
    state, verdict = rem.verify_step(state, "LowHitRate", figure, True, NOW + 15, counts=counts)
    assert verdict is None and len(state["probes"]) == 1
    figure, counts, _ = rem.probe_figure("LowHitRate", reports(0.6, 3000, 0.5, 2000), state["baseline"])
    state, verdict = rem.verify_step(state, "LowHitRate", figure, True, NOW + 20, counts=counts)
    assert verdict == "Remediated" and state["after"] == figure
    # Other symptoms keep their own figure, without a baseline.
    assert rem.probe_figure("HighMemory", {"a": {"memory": {"bytes": rem.MIB}}}, None) == (1.0, {}, False)
