"""The life of an automatic incident after it opened (``incidents/lifecycle.py``) and the pure helpers of
``cache_operator.incidents.automatic_io``: resolution, recurrence, what counts as open, when detection and
garbage collection are due, and the SymptomsTracked condition."""

from __future__ import annotations

from typing import Any

import pytest

from cache_operator.api.cacheincident import CacheIncidentStatus
from cache_operator.handlers.cachepolicy import _until_expiry
from cache_operator.incidents import lifecycle
from cache_operator.incidents.automatic_io import detection_due, gc_due, tracked_condition
from cache_runtime.timefmt import rfc3339

NOW = "2026-11-25T22:00:00Z"
LATER = "2026-11-25T22:05:00Z"
T = 1_800_000_000.0


def auto(phase: str | None, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {**status}
    if phase is not None:
        body["phase"] = phase
    return {
        "metadata": {
            "name": "web-lowhitrate-1",
            "labels": {"cachewarden.io/incident-source": "auto", "cachewarden.io/symptom": "LowHitRate"},
        },
        "spec": {"policyRef": {"name": "web"}, "action": "diagnose"},
        "status": body,
    }


def conditions_of(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    ("phase", "succeeded"),
    [
        ("Recommended", ("True", "SymptomCleared")),  # never finished: the episode is over
        ("Pending", ("True", "SymptomCleared")),
        (None, ("True", "SymptomCleared")),  # the executor has not written anything yet
        ("Succeeded", ("True", "Completed")),  # the action's own outcome is kept
        ("Failed", ("False", "StepsFailed")),
    ],
)
def test_resolution_keeps_the_actions_outcome(phase: str | None, succeeded: tuple[str, str]) -> None:
    previous = []
    if phase in ("Succeeded", "Failed"):
        previous = [
            {
                "type": "Succeeded",
                "status": succeeded[0],
                "reason": succeeded[1],
                "message": "",
                "lastTransitionTime": NOW,
            }
        ]
    patch = lifecycle.resolution_status(
        {"phase": phase, "conditions": previous} if phase else {}, NOW, "cleared", 1
    )
    assert patch is not None
    assert patch["phase"] == "Resolved" and patch["resolvedAt"] == NOW
    assert patch["resolvedFromPhase"] == (phase or "Pending")
    conditions = conditions_of(patch)
    assert conditions["Resolved"] == ("True", "SymptomCleared")
    assert conditions["Succeeded"] == succeeded
    CacheIncidentStatus.model_validate(patch)


def test_running_or_resolved_incidents_are_not_resolved_again() -> None:
    assert lifecycle.resolution_status({"phase": "Running"}, NOW, "cleared", 1) is None
    assert lifecycle.resolution_status({"phase": "Resolved", "resolvedAt": NOW}, LATER, "x", 1) is None
    # The executor finished after the resolution (it was Running): put back to Resolved.
    assert lifecycle.tidy_status({"phase": "Succeeded", "resolvedAt": NOW}) == {
        "phase": "Resolved",
        "resolvedFromPhase": "Succeeded",
    }
    assert lifecycle.tidy_status({"phase": "Resolved", "resolvedAt": NOW}) is None
    assert lifecycle.tidy_status({"phase": "Running", "resolvedAt": NOW}) is None
    assert lifecycle.tidy_status({"phase": "Succeeded"}) is None


def test_recurrence_restores_the_phase_and_counts_occurrences() -> None:
    resolved = lifecycle.resolution_status(
        {"phase": "Recommended", "detection": {"occurrences": 1}}, NOW, "c", 1
    )
    assert resolved is not None
    status = {"detection": {"occurrences": 1, "symptom": "LowHitRate"}, **resolved}
    patch = lifecycle.recurrence_status(status, LATER, {"pods": ["web-0"]}, 1)
    assert patch["phase"] == "Recommended" and patch["resolvedAt"] is None and patch["completedAt"] is None
    assert patch["detection"] == {"occurrences": 2, "lastDetectedAt": LATER, "evidence": {"pods": ["web-0"]}}
    assert conditions_of(patch)["Resolved"] == ("False", "SymptomRecurred")
    assert conditions_of(patch)["Succeeded"][0] == "Unknown"
    terminal = lifecycle.recurrence_status(
        {"phase": "Resolved", "resolvedAt": NOW, "resolvedFromPhase": "Succeeded", "completedAt": NOW},
        LATER,
        {},
        1,
    )
    assert terminal["phase"] == "Succeeded" and terminal["completedAt"] == NOW


def test_what_counts_as_open() -> None:
    assert lifecycle.tracks_symptom(auto("Succeeded"))  # ran, symptom still there
    assert not lifecycle.tracks_symptom(auto("Resolved", resolvedAt=NOW))
    manual = {"metadata": {"name": "m"}, "spec": {}, "status": {"phase": "Succeeded"}}
    assert not lifecycle.tracks_symptom(manual) and lifecycle.symptom_of(manual) is None
    assert lifecycle.symptom_of(auto(None)) == "LowHitRate"
    names = lifecycle.active_incident_names(
        [
            auto("Succeeded"),
            {**manual, "metadata": {"name": "running"}, "status": {"phase": "Running"}},
            manual,
        ],
        extra=["new"],
    )
    assert names == ["new", "running", "web-lowhitrate-1"]


def test_detection_and_gc_are_due_from_status_times() -> None:
    assert detection_due({}, T, 15)
    assert not detection_due({"lastDetectionTime": rfc3339(T)}, T + 11, 15)
    assert detection_due({"lastDetectionTime": rfc3339(T)}, T + 12, 15)  # 80% of the interval
    assert detection_due({"lastDetectionTime": rfc3339(T)}, T - 100, 15)  # the clock went back
    assert detection_due({"lastDetectionTime": "yesterday"}, T, 15)
    assert not gc_due({}, T)  # a new policy starts its clock
    assert not gc_due({"lastGarbageCollectionTime": rfc3339(T)}, T + 59)
    assert gc_due({"lastGarbageCollectionTime": rfc3339(T)}, T + 60)
    assert gc_due({"lastGarbageCollectionTime": 7}, T)


def test_symptoms_tracked_condition() -> None:
    assert tracked_condition([], {})[:2] == ("True", "NoSymptoms")
    status, reason, message = tracked_condition([{"name": "LowHitRate", "incident": "web-lowhitrate-1"}], {})
    assert (status, reason) == ("True", "Tracked") and "web-lowhitrate-1" in message
    status, reason, message = tracked_condition(
        [], {"SlowOperations": ("PolicyPaused", "spec.paused"), "HighMemory": ("StormLimitReached", "5 open")}
    )
    assert (status, reason) == ("False", "StormLimitReached")
    assert message == "no incident opened for HighMemory: 5 open; SlowOperations: spec.paused"


def test_daemon_wakes_right_after_an_override_expires() -> None:
    assert _until_expiry({}, T) == float("inf")
    assert _until_expiry({"override": {"expiresAt": rfc3339(T + 30)}}, T) == 30.5
    assert _until_expiry({"override": {"expiresAt": rfc3339(T - 30)}}, T) == 0.5
    assert _until_expiry({"override": {"expiresAt": "soon"}}, T) == float("inf")
    both = {"override": {"expiresAt": rfc3339(T + 30)}, "isolation": {"expiresAt": rfc3339(T + 10)}}
    assert _until_expiry(both, T) == 10.5


async def test_incident_listing_reads_the_index_and_leaves_deleted_ones_out() -> None:
    from cache_operator.handlers.cachepolicy import IncidentIndexKube

    class Api:
        """FAKE API client: answers list calls for anything but the indexed incidents."""

        def __init__(self) -> None:
            self.calls: list[str] = []

        async def list_objects(
            self, api_version: str, kind: str, namespace: str, label_selector: Any = None
        ) -> Any:
            self.calls.append(f"{kind}:{label_selector}")
            return [{"metadata": {"name": "from-api"}}]

        async def get(self, *args: Any) -> str:
            return "delegated"

    index = {
        "shop": [
            {"metadata": {"name": "a"}, "status": {"phase": "Succeeded"}},
            {"metadata": {"name": "gone", "deletionTimestamp": NOW}, "status": {}},
        ]
    }
    api = Api()
    view = IncidentIndexKube(api, index)  # type: ignore[arg-type]
    listed = await view.list_objects("cachewarden.io/v1alpha1", "CacheIncident", "shop")
    assert [i["metadata"]["name"] for i in listed] == ["a"] and api.calls == []
    listed[0]["status"]["phase"] = "changed"  # a copy: the index is not modified
    assert index["shop"][0]["status"]["phase"] == "Succeeded"
    assert await view.list_objects("cachewarden.io/v1alpha1", "CacheIncident", "other") == []
    assert await view.list_objects("v1", "Pod", "shop", "app=x") == [{"metadata": {"name": "from-api"}}]
    assert await view.get("x") == "delegated"
