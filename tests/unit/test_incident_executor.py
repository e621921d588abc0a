"""Incident executor (``cache_operator.incidents.executor_io``) with FAKES for Kubernetes and the pods.

``FakeKube`` is a fake: a dict of objects with merge-patched status that records every status write in
order; ``FakePods`` is a fake pod caller that acts once per Idempotency-Key and replays afterwards, like
the runtime. The real thing runs in tests/e2e/test_incidents.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cache_operator import render
from cache_operator.conditions import incident_conditions
from cache_operator.incidents.executor_io import (
    Deferred,
    IncidentRef,
    diagnosis_from_health,
    handle_incident,
    handle_incident_deleted,
)
from cache_operator.incidents.plan import PodRequest, idempotency_key
from cache_operator.podclient import PodReply, PodTarget
from cache_runtime.timefmt import parse_rfc3339
from tests.fakes import FakeLogger as Log

NS = "team"


class FakeKube:
    """FAKE Kubernetes: objects by (kind, name), status merge-patched, every status write kept."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.status_writes: list[tuple[str, str, dict[str, Any]]] = []
        self.pods: list[dict[str, Any]] = []

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, name))
        return None if obj is None else {**obj, "status": dict(obj.get("status") or {})}

    async def create(self, obj: Mapping[str, Any]) -> bool:
        return False

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return list(self.pods)

    async def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return [dict(obj) for (k, _), obj in self.objects.items() if k == kind]

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> bool:
        obj = self.objects[(kind, name)]
        merged = dict(obj.get("status") or {})
        for key, value in status.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        obj["status"] = merged
        self.status_writes.append((kind, name, {k: v for k, v in status.items()}))
        return True


class FakePods:
    """FAKE runtime pods: act once per Idempotency-Key, replay after; optionally fail some pods."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.executed: dict[str, int] = {}
        self.calls: list[tuple[str, str, str, str | None]] = []
        self.remembered: dict[str, Any] = {}
        self.failing = failing
        self.kube: FakeKube | None = None
        self.status_seen_before_call: list[Any] = []

    async def call(
        self, pod: PodTarget, token: str, request: PodRequest, idempotency_key: str | None
    ) -> PodReply:
        method, path = request.method, request.target
        self.calls.append((pod.name, method, path, idempotency_key))
        if self.kube is not None:
            incident = self.kube.objects[("CacheIncident", "inc")]
            self.status_seen_before_call.append(
                [(r["pod"], r["result"]) for r in incident["status"].get("results") or []]
            )
        if pod.name in self.failing:
            return PodReply(pod.name, False, 503, None, "HTTP 503 from POST: down")
        if method == "GET" and path == "/health":
            return PodReply(
                pod.name,
                True,
                200,
                {
                    "status": "degraded",
                    "diagnosis": {
                        "causes": [
                            {
                                "name": "TTLTooShort",
                                "score": 0.7 if pod.name == "p-0" else 0.9,
                                "evidence": {"pod": pod.name},
                                "recommendations": [{"action": "apply-preset", "description": "longer TTL"}],
                            }
                        ]
                    },
                },
            )
        if method == "GET":
            return PodReply(pod.name, True, 200, {"key_analysis": {}})
        if idempotency_key in self.remembered:
            return PodReply(pod.name, True, 200, self.remembered[idempotency_key])
        self.executed[pod.name] = self.executed.get(pod.name, 0) + 1
        answer = {
            "action": path,
            "dry_run": "dry_run=true" in path,
            "l1_entries_removed": 3,
            "duration_ms": 1,
        }
        if idempotency_key:
            self.remembered[idempotency_key] = answer
        return PodReply(pod.name, True, 200, answer)


def pod(name: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": render.pod_selector_labels("web")},
        "status": {"podIP": ip, "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def cluster(spec: dict[str, Any], pods: int = 3) -> FakeKube:
    kube = FakeKube()
    kube.objects[("CachePolicy", "web")] = {
        "metadata": {"name": "web", "generation": 1},
        "spec": {"preset": "development", "runtime": {"replicas": pods}},
        "status": {},
    }
    kube.objects[("Secret", render.token_secret_name("web"))] = render.render_token_secret(
        _policy_ref(),
        {render.ADMIN_TOKEN_KEY: "a" * 32, render.READ_TOKEN_KEY: "r" * 32, "write-token": "w" * 32},
    )
    kube.objects[("CacheIncident", "inc")] = {
        "metadata": {"name": "inc", "generation": 1, "uid": "uid-1"},
        "spec": spec,
        "status": {},
    }
    kube.pods = [pod(f"p-{i}", f"127.0.0.{10 + i}") for i in range(pods)]
    return kube


def _policy_ref() -> Any:
    from cache_operator.ports import PolicyRef

    return PolicyRef("web", NS, "policy-uid")


async def run(kube: FakeKube, pods: FakePods) -> tuple[str | Deferred, list[tuple[str, str, str]]]:
    events: list[tuple[str, str, str]] = []

    def sink(type_: str, reason: str, message: str) -> None:
        events.append((type_, reason, message))

    phase = await handle_incident(
        IncidentRef("inc", NS, "uid-1"), kube=kube, caller=pods, events=sink, logger=Log()
    )
    return phase, events


def status(kube: FakeKube) -> dict[str, Any]:
    return kube.objects[("CacheIncident", "inc")]["status"]


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == type_)


# --- tests -------------------------------------------------------------------------------------


async def test_clear_runs_once_per_pod_with_keys_and_records_before_each_call() -> None:
    kube = cluster({"policyRef": {"name": "web"}, "action": "clear"})
    pods = FakePods()
    pods.kube = kube
    phase, events = await run(kube, pods)
    assert phase == "Succeeded"
    assert pods.executed == {"p-0": 1, "p-1": 1, "p-2": 1}
    assert [c[3] for c in pods.calls] == [idempotency_key("uid-1", "clear", f"p-{i}") for i in range(3)]
    # Each pod was Running in the cluster's status before it was called.
    for i, seen in enumerate(pods.status_seen_before_call):
        assert (f"p-{i}", "Running") in seen, seen
    st = status(kube)
    assert [(r["pod"], r["result"], r["counts"]) for r in st["results"]] == [
        (f"p-{i}", "Succeeded", {"l1_entries_removed": 3}) for i in range(3)
    ]
    assert condition(st, "Succeeded")["status"] == "True"
    assert condition(st, "Running")["status"] == "False"
    assert st["detection"] == {"source": "Manual"}
    assert [e[1] for e in events] == ["StepSucceeded"] * 3 + ["Completed"]


async def test_second_run_of_a_terminal_incident_does_nothing() -> None:
    kube = cluster({"policyRef": {"name": "web"}, "action": "gc"})
    pods = FakePods()
    await run(kube, pods)
    writes = len(kube.status_writes)
    phase, events = await run(kube, pods)
    assert phase == "Succeeded" and events == [] and len(kube.status_writes) == writes
    assert pods.executed == {"p-0": 1, "p-1": 1, "p-2": 1}


async def test_resume_after_a_crash_between_start_and_result_replays_not_repeats() -> None:
    kube = cluster({"policyRef": {"name": "web"}, "action": "clear"})
    pods = FakePods()
    # A previous operator: p-0 done, p-1 called (the pod acted) but killed before writing the result.
    key1 = idempotency_key("uid-1", "clear", "p-1")
    await pods.call(PodTarget("p-1", "127.0.0.11", 8080), "admin", PodRequest("POST", "/clear"), key1)
    status(kube).update(
        phase="Running",
        results=[
            {"pod": "p-0", "step": "clear", "result": "Succeeded"},
            {"pod": "p-1", "step": "clear", "result": "Running", "idempotencyKey": key1},
            {"pod": "p-2", "step": "clear", "result": "Pending"},
        ],
    )
    pods.executed["p-0"] = 1
    phase, _ = await run(kube, pods)
    assert phase == "Succeeded"
    assert pods.executed == {"p-0": 1, "p-1": 1, "p-2": 1}
    assert [c[0] for c in pods.calls] == ["p-1", "p-1", "p-2"]  # p-1 again (replayed), p-0 never


async def test_dry_run_of_reconnect_is_skipped_without_calling() -> None:
    kube = cluster({"policyRef": {"name": "web"}, "action": "reconnect-redis", "dryRun": True})
    pods = FakePods()
    phase, _ = await run(kube, pods)
    assert phase == "Succeeded" and pods.calls == []
    assert {r["result"] for r in status(kube)["results"]} == {"Skipped"}


async def test_target_pods_subset_and_unknown_pod() -> None:
    kube = cluster({"policyRef": {"name": "web"}, "action": "gc", "targetPods": ["p-2", "p-0"]})
    pods = FakePods()
    assert (await run(kube, pods))[0] == "Succeeded"
    assert pods.executed == {"p-0": 1, "p-2": 1}

    kube = cluster({"policyRef": {"name": "web"}, "action": "gc", "targetPods": ["nope"]})
    phase, _ = await run(kube, FakePods())
    assert phase == "Failed"
    assert condition(status(kube), "Succeeded")["reason"] == "UnknownTargetPods"
    assert "spec.targetPods: nope" in status(kube)["message"]


async def test_missing_policy_fails_naming_the_field() -> None:
    kube = cluster({"policyRef": {"name": "other"}, "action": "gc"})
    phase, events = await run(kube, FakePods())
    assert phase == "Failed"
    st = status(kube)
    assert condition(st, "Succeeded")["reason"] == "PolicyNotFound"
    assert "spec.policyRef.name" in st["message"] and "other" in st["message"]
    assert events[-1][0] == "Warning"


async def test_invalid_spec_fails_naming_the_field() -> None:
    kube = cluster({"policyRef": {"name": "web"}, "action": "gc", "parameters": {"preset": "simple"}})
    phase, _ = await run(kube, FakePods())
    assert phase == "Failed"
    assert "spec.parameters.preset" in status(kube)["message"], status(kube)["message"]


async def test_a_failing_pod_fails_the_incident_but_others_run() -> None:
    kube = cluster({"policyRef": {"name": "web"}, "action": "restore"})
    pods = FakePods(failing=frozenset({"p-1"}))
    phase, events = await run(kube, pods)
    assert phase == "Failed"
    assert pods.executed == {"p-0": 1, "p-2": 1}
    results = {r["pod"]: r for r in status(kube)["results"]}
    assert results["p-1"]["result"] == "Failed" and "503" in results["p-1"]["message"]
    assert "p-1" in status(kube)["message"]
    assert ("Warning", "StepFailed") in [(e[0], e[1]) for e in events]


async def test_apply_preset_writes_override_to_policy_status_never_spec_and_delete_lifts_it() -> None:
    kube = cluster(
        {
            "policyRef": {"name": "web"},
            "action": "apply-preset",
            "parameters": {"preset": "conservative", "durationSeconds": 120},
        }
    )
    spec_before = dict(kube.objects[("CachePolicy", "web")]["spec"])
    pods = FakePods()
    assert (await run(kube, pods))[0] == "Succeeded"
    policy = kube.objects[("CachePolicy", "web")]
    assert policy["spec"] == spec_before
    override = policy["status"]["override"]
    assert override["preset"] == "conservative" and override["incident"] == "inc"
    started = status(kube)["startedAt"]
    assert parse_rfc3339(override["expiresAt"], "x") - parse_rfc3339(started, "x") == 120
    # Pushed to each pod with its key: the same document the reconciler renders from the override.
    assert [(c[0], c[2], c[3]) for c in pods.calls] == [
        (f"p-{i}", "/config/apply", idempotency_key("uid-1", "push-override", f"p-{i}")) for i in range(3)
    ]
    lifted = await handle_incident_deleted(
        IncidentRef("inc", NS, "uid-1"), {"policyRef": {"name": "web"}}, kube=kube, logger=Log()
    )
    assert lifted and "override" not in policy["status"]
    # Another incident's delete does not lift someone else's override.
    policy["status"]["override"] = {**override, "incident": "someone-else"}
    assert not await handle_incident_deleted(
        IncidentRef("inc", NS, "uid-1"), {"policyRef": {"name": "web"}}, kube=kube, logger=Log()
    )


async def test_diagnose_fills_diagnosis_from_health_reports() -> None:
    kube = cluster({"policyRef": {"name": "web"}, "action": "diagnose"})
    assert (await run(kube, FakePods()))[0] == "Succeeded"
    st = status(kube)
    assert st["cause"] == "TTLTooShort"
    assert st["recommendedAction"] == "apply-preset"
    cause = st["diagnosis"]["causes"][0]
    assert set(cause["evidence"]) == {"p-0", "p-1", "p-2"}


def test_pure_helpers() -> None:
    assert diagnosis_from_health({}, "t") == {"causes": [], "diagnosedAt": "t"}
    running = incident_conditions("Running", "m", [], "2026-01-01T00:00:00Z", 1, "Executing")
    assert {c["type"]: (c["status"], c["reason"]) for c in running} == {
        "Running": ("True", "Executing"), "Succeeded": ("Unknown", "Executing"),
        "Reconciling": ("True", "Executing"), "Stalled": ("False", "Running")}
    failed = incident_conditions("Failed", "m", running, "2026-01-01T00:00:01Z", 1, "StepsFailed")
    assert {c["type"]: c["status"] for c in failed} == {
        "Running": "False", "Succeeded": "False", "Reconciling": "False", "Stalled": "True"}
    recommended = incident_conditions("Recommended", "m", [], "2026-01-01T00:00:02Z", 1, "RecommendOnly")
    assert {c["type"]: c["status"] for c in recommended} == {
        "Running": "False", "Succeeded": "Unknown", "Reconciling": "False", "Stalled": "False"}


async def test_paused_policy_skips_with_the_reason() -> None:
    kube = cluster({"policyRef": {"name": "web"}, "action": "clear"})
    kube.objects[("CachePolicy", "web")]["spec"]["paused"] = True
    pods = FakePods()
    phase, _ = await run(kube, pods)
    assert phase == "Skipped" and pods.calls == []
    assert condition(status(kube), "Succeeded")["reason"] == "PolicyPaused"


async def test_second_disruptive_action_waits_for_the_first() -> None:
    kube = cluster({"policyRef": {"name": "web"}, "action": "clear"})
    kube.objects[("CacheIncident", "other")] = {
        "metadata": {"name": "other", "uid": "uid-2"},
        "spec": {"policyRef": {"name": "web"}, "action": "isolate"},
        "status": {"phase": "Running"},
    }
    pods = FakePods()
    outcome, _ = await run(kube, pods)
    assert isinstance(outcome, Deferred) and outcome.reason == "DisruptiveActionRunning"
    assert pods.calls == [] and status(kube)["phase"] == "Pending"
    assert "other" in status(kube)["message"]


async def test_run_never_puts_back_what_the_reconciler_wrote_while_it_ran() -> None:
    """The policy's reconciler joins a symptom (``status.symptoms``) and counts a recurrence
    (``status.detection``) while the executor runs: the executor's later writes carry only its own
    fields, so neither is overwritten with the copy it read when it started (a CI run lost a joined
    LowHitRate this way)."""
    kube = cluster({"policyRef": {"name": "web"}, "action": "clear"})
    policy_spec = kube.objects[("CachePolicy", "web")]["spec"]
    policy_spec["remediation"] = {"mode": "Auto", "allowedActions": ["clear"]}
    status(kube).update(
        symptoms=["RedisUnavailable"],
        detection={"source": "Auto", "symptom": "RedisUnavailable", "occurrences": 1},
    )
    pods = FakePods()
    real_call = pods.call

    async def call_and_join(
        target: PodTarget, token: str, request: PodRequest, key: str | None
    ) -> PodReply:
        if target.name == "p-1":
            await kube.patch_status(
                "cachewarden.io/v1alpha1",
                "CacheIncident",
                NS,
                "inc",
                {
                    "symptoms": ["RedisUnavailable", "LowHitRate"],
                    "detection": {**status(kube)["detection"], "occurrences": 2},
                },
            )
        return await real_call(target, token, request, key)

    pods.call = call_and_join  # type: ignore[method-assign]
    phase, _ = await run(kube, pods)
    assert phase == "Succeeded"
    st = status(kube)
    assert st["symptoms"] == ["RedisUnavailable", "LowHitRate"]
    assert st["detection"]["occurrences"] == 2
    executor_writes = [w for k, n, w in kube.status_writes if k == "CacheIncident" and "results" in w]
    assert executor_writes and all("symptoms" not in w and "detection" not in w for w in executor_writes)
