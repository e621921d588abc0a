"""When a pass writes status (cache_operator.status_writes): only for a change beyond its own clock."""

from __future__ import annotations

from cache_operator.status_writes import merge_patch, status_changes

STORED = {
    "observedGeneration": 1,
    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-04T20:00:00Z"}],
    "health": {"status": "Unknown", "lastProbeTime": "2026-12-04T20:00:00Z", "hitRate": None},
    "lastDetectionTime": "2026-12-04T20:00:00Z",
    "override": {"preset": "production"},
}


def test_merge_patch_merges_dicts_removes_nulls_and_replaces_the_rest() -> None:
    target = {"a": {"b": 1, "c": 2}, "d": [1], "e": 1}
    merged = merge_patch(target, {"a": {"b": None, "x": 3}, "d": [2], "e": None})
    assert merged == {"a": {"c": 2, "x": 3}, "d": [2]}
    assert target == {"a": {"b": 1, "c": 2}, "d": [1], "e": 1}


def test_a_pass_that_only_moves_its_clock_writes_nothing() -> None:
    patch = {
        "observedGeneration": 1,
        "conditions": STORED["conditions"],
        "health": {"status": "Unknown", "lastProbeTime": "2026-12-04T21:00:00Z", "hitRate": None},
        "lastDetectionTime": "2026-12-04T21:00:00Z",
        "lastGarbageCollectionTime": "2026-12-04T21:00:00Z",
    }
    assert not status_changes(STORED, patch)
    assert not status_changes(STORED, {})


def test_any_other_change_is_written() -> None:
    assert status_changes(STORED, {"health": {"status": "Healthy", "lastProbeTime": "2026-12-04T21:00:00Z"}})
    assert status_changes(STORED, {"observedGeneration": 2})
    # A null removes a field the stored status has (an expired override): a change.
    assert status_changes(STORED, {"override": None})
    # A null for a field the stored status lacks: no change.
    assert not status_changes(STORED, {"isolation": None})
    # An empty list where there was none (detection's first activeIncidents): no change; emptied: one.
    assert not status_changes(STORED, {"activeIncidents": []})
    assert status_changes({**STORED, "activeIncidents": ["a"]}, {"activeIncidents": []})
    # An empty stored status (a new policy): anything is a change.
    assert status_changes({}, {"lastDetectionTime": "2026-12-04T21:00:00Z", "pods": {"desired": 0}})
