"""Automatic incidents wired into the policy's probe pass, with FAKES for Kubernetes and the pods.

``FakeCluster`` is a fake API server (objects in a dict, JSON-merge-patched status, 409 on a second
create, every Event kept) and ``FakePods`` fake runtime pods: their health answers carry the *real*
engine's diagnosis (``health_scenarios`` drive real ``EngineStats`` through ``cache_runtime.health``),
and their admin actions act once per Idempotency-Key like the runtime. The reconcile pass
(:func:`handle_reconcile`) and the incident executor (:func:`handle_incident`) are the real code; the
same code runs against devcluster in tests/e2e/test_auto_incidents.py. An "operator restart" here is a
new executor with new locks reading only what the fake cluster holds.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import pytest
from health_scenarios import (
    Scenario,
    healthy,
    with_large_uncompressed_values,
    with_low_hit_rate,
    with_redis_down,
)

from cache_operator import render
from cache_operator.api.cacheincident import CacheIncidentStatus
from cache_operator.api.cachepolicy_status import CachePolicyStatus
from cache_operator.incidents.executor_io import Deferred, IncidentRef, PolicyLocks, handle_incident
from cache_operator.incidents.naming import auto_incident_name
from cache_operator.incidents.plan import PodRequest
from cache_operator.k8s import KubeError
from cache_operator.podclient import PodReply, PodTarget
from cache_operator.ports import PolicyRef
from cache_operator.reconcile import handle_reconcile
from cache_runtime.health import evaluate
from cache_runtime.timefmt import parse_rfc3339, rfc3339
from tests.fakes import FakeLogger as Log

NS = "shop"
POLICY = PolicyRef("web", NS, "policy-uid", 1)
T0 = 1_800_000_000.0  # a multiple of 3600: every test episode starts inside one naming window
PROBE_S = 15.0


class FakeCluster:
    """FAKE API server: objects by (kind, name); status merge-patched (null deletes, objects merge
    recursively, lists replace); create answers False (409) when the name exists; Events kept."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self.creates: list[str] = []
        self.deleted: list[str] = []

    # KubeIO of reconcile
    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = copy.deepcopy(dict(obj))
        return dict(obj)

    async def create(self, obj: Mapping[str, Any]) -> bool:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in self.objects:
            return False
        stored = copy.deepcopy(dict(obj))
        stored["metadata"].setdefault("uid", f"uid-{obj['metadata']['name']}")
        stored["metadata"].setdefault("generation", 1)
        stored.setdefault("status", {})
        self.objects[key] = stored
        self.creates.append(f"{obj['kind']}/{obj['metadata']['name']}")
        return True

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.deleted.append(f"{kind}/{name}")
        return self.objects.pop((kind, name), None) is not None

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(","))
        return [
            copy.deepcopy(p)
            for p in self.pods
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]

    async def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return [copy.deepcopy(obj) for (k, _), obj in sorted(self.objects.items()) if k == kind]

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> bool:
        obj = self.objects.get((kind, name))
        if obj is None:
            return False
        obj["status"] = merge_patch(obj.get("status") or {}, copy.deepcopy(dict(status)))
        return True

    # helpers
    def policy(self) -> dict[str, Any]:
        return self.objects[("CachePolicy", "web")]

    def incidents(self) -> dict[str, dict[str, Any]]:
        return {name: obj for (kind, name), obj in self.objects.items() if kind == "CacheIncident"}

    def sink(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def incident_creates(self) -> list[str]:
        return [c for c in self.creates if c.startswith("CacheIncident/")]

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def health_of(scenario: Scenario, config_hash: str | None) -> dict[str, Any]:
    """A runtime pod's /internal/cache/health answer around the real engine's diagnosis."""
    diagnosis = evaluate(scenario.snapshot()).to_dict()
    redis_down = (scenario.l2 or {}).get("breaker_state") == "open"
    return {
        "status": "unhealthy" if redis_down else "healthy",
        "config_hash": config_hash,
        "hit_rates": {"overall": 0.9, "l1": 0.5, "lookups": 100},
        "memory": {"bytes": 1000},
        "latency": {"get": {"p95_ms": 1.0}},
        "redis": {"status": "disconnected" if redis_down else "connected", "breaker_state": "closed"},
        "diagnosis": diagnosis,
    }


class FakePods:
    """FAKE runtime pods: health from a scenario per pod (changed by the test), config pushes kept,
    admin actions executed once per Idempotency-Key (replayed after), optionally held on a gate."""

    def __init__(self, scenario: Callable[[], Scenario] = healthy) -> None:
        self.scenario = scenario
        self.hashes: dict[str, str | None] = {}
        self.executed: list[tuple[str, str]] = []
        self.remembered: dict[str, Any] = {}
        self.gate: asyncio.Event | None = None

    async def health(self, pod: PodTarget, token: str | None) -> PodReply:
        return PodReply(pod.name, True, 200, health_of(self.scenario(), self.hashes.get(pod.ip)))

    async def apply_config(
        self, pod: PodTarget, token: str | None, config: Mapping[str, Any], config_hash: str
    ) -> PodReply:
        self.hashes[pod.ip] = config_hash
        return PodReply(pod.name, True, 200, {"applied": True, "hash": config_hash})

    async def for_each(self, pods: Iterable[Any], call: Callable[[Any], Awaitable[Any]]) -> list[Any]:
        return [await call(pod) for pod in pods]

    async def call(
        self, pod: PodTarget, token: str, request: PodRequest, idempotency_key: str | None
    ) -> PodReply:
        if request.method == "GET":
            body = health_of(self.scenario(), None) if request.path == "/health" else {}
            return PodReply(pod.name, True, 200, body)
        if idempotency_key in self.remembered:
            return PodReply(pod.name, True, 200, self.remembered[idempotency_key])
        if self.gate is not None:
            await self.gate.wait()
        self.executed.append((pod.name, request.path))
        answer = {"done": request.path, "count": 1}
        if idempotency_key:
            self.remembered[idempotency_key] = answer
        return PodReply(pod.name, True, 200, answer)


def add_redis(cluster: FakeCluster, replicas: int = 1) -> None:
    """The Redis the policy's URL names, as the cluster shows it: Service ``redis``, a Deployment with
    ``replicas`` (its ready pods and EndpointSlice follow)."""
    labels = {"app": "redis"}
    cluster.objects[("Service", "redis")] = {"metadata": {"name": "redis"}, "spec": {"selector": labels}}
    cluster.objects[("Deployment", "redis")] = {
        "metadata": {"name": "redis"},
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": labels}}},
        "status": {"readyReplicas": replicas} if replicas else {},
    }
    cluster.objects[("EndpointSlice", "redis-x1")] = {
        "metadata": {"name": "redis-x1", "labels": {"kubernetes.io/service-name": "redis"}},
        "endpoints": [
            {"addresses": [f"10.0.1.{i + 1}"], "conditions": {"ready": True}} for i in range(replicas)
        ],
    }
    cluster.pods = [p for p in cluster.pods if (p["metadata"].get("labels") or {}).get("app") != "redis"]
    cluster.pods.extend(
        {
            "metadata": {"name": f"redis-5d8f-{i}", "labels": dict(labels)},
            "spec": {"containers": [{"name": "redis"}]},
            "status": {
                "phase": "Running",
                "podIP": f"10.0.1.{i + 1}",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "redis", "ready": True, "restartCount": 0, "state": {"running": {}}}
                ],
            },
        }
        for i in range(replicas)
    )


def make_cluster(
    remediation: dict[str, Any] | None = None, probes: int = 3, replicas: int = 2, redis: bool = True
) -> FakeCluster:
    """The fake cluster with policy ``web`` (``replicas`` runtime pods) and, with ``redis``, a running
    Redis behind Service ``redis``."""
    cluster = FakeCluster()
    spec: dict[str, Any] = {
        "preset": "development",
        "runtime": {"replicas": replicas},
        "redis": {"url": "redis://redis:6379/0"},
        "health": {"probeIntervalSeconds": int(PROBE_S), "consecutiveProbes": probes},
    }
    if remediation is not None:
        spec["remediation"] = remediation
    cluster.objects[("CachePolicy", "web")] = {
        "apiVersion": "cachewarden.io/v1alpha1",
        "kind": "CachePolicy",
        "metadata": {"name": "web", "namespace": NS, "uid": POLICY.uid, "generation": 1},
        "spec": spec,
        "status": {},
    }
    labels = render.pod_selector_labels("web")
    cluster.pods = [
        {
            "metadata": {"name": f"web-{i}", "labels": dict(labels)},
            "status": {
                "phase": "Running",
                "podIP": f"10.0.0.{i + 1}",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
        for i in range(replicas)
    ]
    if redis:
        add_redis(cluster)
    return cluster


async def probe(cluster: FakeCluster, pods: FakePods, now: float, **kw: Any) -> Any:
    """One reconcile pass at ``now`` whose status is written back as the daemon does."""
    policy = cluster.policy()

    class Patch:
        status: dict[str, Any]

    patch = Patch()
    patch.status = {}
    outcome = await handle_reconcile(
        POLICY,
        policy["spec"],
        copy.deepcopy(policy.get("status") or {}),
        kube=cluster,
        pods_io=pods,
        patch=patch,
        logger=Log(),
        now=rfc3339(now),
        events=cluster.sink,
        caller=pods,  # FakePods is also the executor's ActionCaller
        **kw,
    )
    await cluster.patch_status("", "CachePolicy", NS, "web", patch.status)
    CachePolicyStatus.model_validate(cluster.policy()["status"])  # the CRD's shape
    return outcome


async def probes(cluster: FakeCluster, pods: FakePods, start: float, count: int) -> float:
    """``count`` probe passes, PROBE_S apart; returns the time of the next one."""
    now = start
    for _ in range(count):
        await probe(cluster, pods, now)
        now += PROBE_S
    return now


async def execute(
    cluster: FakeCluster, pods: FakePods, name: str, now: float, locks: PolicyLocks | None = None
) -> Any:
    """The incident executor as the CacheIncident handler runs it."""
    return await handle_incident(
        IncidentRef(name, NS, cluster.incidents()[name]["metadata"]["uid"]),
        kube=cluster,
        caller=pods,
        events=cluster.sink,
        logger=Log(),
        clock=lambda: now,
        locks=locks,
    )


def symptom_entry(cluster: FakeCluster, name: str) -> dict[str, Any] | None:
    return next((s for s in cluster.policy()["status"].get("symptoms") or [] if s["name"] == name), None)


def policy_condition(cluster: FakeCluster, type_: str) -> dict[str, Any]:
    return next(c for c in cluster.policy()["status"]["conditions"] if c["type"] == type_)


def redis_down_name(since: float = T0) -> str:
    return auto_incident_name("web", "RedisUnavailable", since)


# ------------------------------------------------------------------------------------------------


async def test_incident_opens_after_n_probes_with_detection_and_diagnosis() -> None:
    cluster, pods = make_cluster(), FakePods(lambda: with_redis_down(healthy()))
    now = await probes(cluster, pods, T0, 2)
    assert cluster.incidents() == {}
    assert symptom_entry(cluster, "RedisUnavailable") == {
        "name": "RedisUnavailable",
        "active": False,
        "consecutive": 2,
        "since": rfc3339(T0),
    }
    await probe(cluster, pods, now)
    name = redis_down_name()
    assert list(cluster.incidents()) == [name]
    incident = cluster.incidents()[name]
    assert incident["spec"]["action"] == "reconnect-redis"
    assert incident["metadata"]["labels"]["cachewarden.io/incident-source"] == "auto"
    assert incident["metadata"]["ownerReferences"][0]["uid"] == POLICY.uid
    status = incident["status"]
    CacheIncidentStatus.model_validate(status)
    assert "phase" not in status  # the executor's to write
    assert status["detection"]["source"] == "Auto" and status["detection"]["symptom"] == "RedisUnavailable"
    assert status["detection"]["evidence"]["pods"] == ["web-0", "web-1"]
    assert status["cause"] == "RedisUnreachable" and status["recommendedAction"] == "reconnect-redis"
    top = status["diagnosis"]["causes"][0]
    assert top["name"] == "RedisUnreachable" and top["action"] == "reconnect-redis"
    assert top["evidence"]["connection_errors"] == 12 and top["recommendation"]
    assert symptom_entry(cluster, "RedisUnavailable") == {
        "name": "RedisUnavailable",
        "active": True,
        "consecutive": 0,
        "since": rfc3339(T0),
        "incident": name,
    }
    policy_status = cluster.policy()["status"]
    assert policy_status["activeIncidents"] == [name]
    assert policy_condition(cluster, "SymptomsTracked")["reason"] == "Tracked"
    assert "IncidentOpened" in cluster.reasons()
    # Later probes of the same episode change nothing.
    await probes(cluster, pods, now + PROBE_S, 3)
    assert list(cluster.incidents()) == [name] and cluster.incident_creates() == [f"CacheIncident/{name}"]


async def test_passes_closer_than_the_probe_interval_count_once() -> None:
    """A healthy policy counts one probe per interval; a pending symptom is confirmed by probes every
    5 s (detection.probe_interval), and passes closer than that still count once."""
    healthy_cluster, healthy_pods = make_cluster(), FakePods(healthy)
    for offset in (0.0, 1.0, 5.0, 11.0):  # converge passes and spec-change wake-ups
        await probe(healthy_cluster, healthy_pods, T0 + offset)
    assert healthy_cluster.policy()["status"]["lastDetectionTime"] == rfc3339(T0)
    cluster, pods = make_cluster(), FakePods(lambda: with_redis_down(healthy()))
    for offset in (0.0, 1.0, 2.0, 3.5):
        await probe(cluster, pods, T0 + offset)
    assert symptom_entry(cluster, "RedisUnavailable")["consecutive"] == 1
    await probe(cluster, pods, T0 + 5.0)  # a confirming probe: the symptom is pending
    assert symptom_entry(cluster, "RedisUnavailable")["consecutive"] == 2
    assert cluster.policy()["status"]["lastDetectionTime"] == rfc3339(T0 + 5.0)


async def test_redetection_finds_the_incident_by_its_name() -> None:
    cluster, pods = make_cluster(), FakePods(lambda: with_redis_down(healthy()))
    now = await probes(cluster, pods, T0, 3)
    name = redis_down_name()
    # The incident record on the symptom is lost (e.g. the status write after the create failed):
    # the next pass computes the same name, its create answers 409, and it adopts the incident.
    for entry in cluster.policy()["status"]["symptoms"]:
        entry.pop("incident", None)
    await probe(cluster, pods, now)
    assert list(cluster.incidents()) == [name] and cluster.incident_creates() == [f"CacheIncident/{name}"]
    assert symptom_entry(cluster, "RedisUnavailable")["incident"] == name


async def test_clear_resolves_and_a_recurrence_in_the_window_reopens_the_same_incident() -> None:
    scenario: dict[str, Callable[[], Scenario]] = {"now": lambda: with_redis_down(healthy())}
    cluster, pods = make_cluster({"mode": "Recommend"}), FakePods(lambda: scenario["now"]())
    now = await probes(cluster, pods, T0, 3)
    name = redis_down_name()
    assert await execute(cluster, pods, name, now) == "Recommended"
    scenario["now"] = healthy
    now = await probes(cluster, pods, now, 2)
    assert cluster.incidents()[name]["status"]["phase"] == "Recommended"  # 2 good probes of 3
    await probe(cluster, pods, now)
    status = cluster.incidents()[name]["status"]
    CacheIncidentStatus.model_validate(status)
    assert status["phase"] == "Resolved" and status["resolvedAt"] == rfc3339(now)
    assert status["resolvedFromPhase"] == "Recommended" and status["completedAt"] == rfc3339(now)
    resolved = next(c for c in status["conditions"] if c["type"] == "Resolved")
    assert (resolved["status"], resolved["reason"]) == ("True", "SymptomCleared")
    assert cluster.policy()["status"]["symptoms"] == []
    assert cluster.policy()["status"]["activeIncidents"] == []
    assert policy_condition(cluster, "SymptomsTracked")["reason"] == "NoSymptoms"
    resolved_event = next(e for e in cluster.events if e[1] == "IncidentResolved")
    assert (
        resolved_event[2]
        == f"CacheIncident {name}: RedisUnavailable no longer detected: cleared over 3 probes"
    )
    # The symptom comes back within the hour: same name, the resolved incident is reopened.
    scenario["now"] = lambda: with_redis_down(healthy())
    now = await probes(cluster, pods, now + PROBE_S, 3)
    assert list(cluster.incidents()) == [name]
    status = cluster.incidents()[name]["status"]
    assert status["phase"] == "Recommended" and "resolvedAt" not in status
    assert status["detection"]["occurrences"] == 2
    assert cluster.policy()["status"]["activeIncidents"] == [name]
    assert "SymptomRecurred" in cluster.reasons()


@pytest.mark.parametrize(
    ("remediation", "phase", "reason", "executed"),
    [
        ({"mode": "Off"}, "Skipped", "RemediationOff", []),
        ({"mode": "Recommend"}, "Recommended", "RecommendOnly", []),
        (
            {"mode": "Auto"},
            "Succeeded",
            "Completed",
            [("web-0", "/redis/reconnect"), ("web-1", "/redis/reconnect")],
        ),
        ({"mode": "Auto", "allowedActions": ["gc"]}, "Skipped", "ActionNotAllowed", []),
    ],
)
async def test_remediation_modes(
    remediation: dict[str, Any], phase: str, reason: str, executed: list[tuple[str, str]]
) -> None:
    cluster, pods = make_cluster(remediation), FakePods(lambda: with_redis_down(healthy()))
    now = await probes(cluster, pods, T0, 3)
    name = redis_down_name()
    outcome = await execute(cluster, pods, name, now)
    status = cluster.incidents()[name]["status"]
    assert (outcome, status["phase"]) == (phase, phase)
    assert next(c for c in status["conditions"] if c["type"] == "Succeeded")["reason"] == reason
    assert pods.executed == executed
    # Detection and diagnosis survive the executor's writes (merge patches of other keys).
    assert status["detection"]["symptom"] == "RedisUnavailable" and status["detection"]["source"] == "Auto"
    assert status["diagnosis"]["causes"][0]["name"] == "RedisUnreachable"
    assert status["recommendedAction"] == "reconnect-redis"
    last = cluster.policy()["status"].get("lastActions")
    assert last == (
        [{"action": "reconnect-redis", "incident": name, "at": rfc3339(now)}] if executed else None
    )


async def test_cooldown_survives_an_operator_restart() -> None:
    scenario: dict[str, Callable[[], Scenario]] = {"now": lambda: with_redis_down(healthy())}
    cluster = make_cluster({"mode": "Auto", "cooldownSeconds": 7200})
    pods = FakePods(lambda: scenario["now"]())
    ran_at = await probes(cluster, pods, T0, 3)
    first = redis_down_name()
    assert await execute(cluster, pods, first, ran_at, PolicyLocks()) == "Succeeded"
    now = ran_at
    scenario["now"] = healthy
    now = await probes(cluster, pods, now, 3)
    assert cluster.incidents()[first]["status"]["phase"] == "Resolved"
    # The next episode starts in the next naming window: a new incident.
    scenario["now"] = lambda: with_redis_down(healthy())
    start = T0 + 3600
    now = await probes(cluster, pods, start, 3)
    second = redis_down_name(start)
    assert sorted(cluster.incidents()) == sorted([first, second])
    # "Restart": a new executor with new locks; all it knows is in the fake cluster.
    outcome = await execute(cluster, pods, second, now, PolicyLocks())
    assert isinstance(outcome, Deferred) and outcome.reason == "CooldownActive"
    assert outcome.delay_s == 7200 - (now - ran_at)
    status = cluster.incidents()[second]["status"]
    assert status["phase"] == "Pending" and "cooldown 7200s" in status["message"]
    assert len(pods.executed) == 2  # only the first incident's two pods
    # After the cooldown it runs.
    assert await execute(cluster, pods, second, ran_at + 7200) == "Succeeded"
    assert len(pods.executed) == 4


async def test_one_disruptive_action_per_policy_at_a_time() -> None:
    """Two incidents of one policy whose action is disruptive (an automatic apply-override, a
    person's compress-existing): the second waits while the first runs, decided under the policy's
    lock from cluster state."""
    cluster = make_cluster({"mode": "Auto", "allowedActions": ["apply-override", "reconnect-redis"]})
    pods = FakePods(lambda: with_redis_down(with_large_uncompressed_values(healthy())))
    now = await probes(cluster, pods, T0, 3)
    memory = auto_incident_name("web", "HighMemory", T0)
    assert cluster.incidents()[memory]["spec"]["action"] == "apply-override"
    # A second disruptive incident of the policy (a person's, running the same kind of action).
    await cluster.create(
        {
            "apiVersion": "cachewarden.io/v1alpha1",
            "kind": "CacheIncident",
            "metadata": {"name": "manual-compress", "namespace": NS},
            "spec": {"policyRef": {"name": "web"}, "action": "compress-existing"},
        }
    )
    pods.gate = asyncio.Event()
    locks = PolicyLocks()
    first = asyncio.create_task(execute(cluster, pods, memory, now, locks))
    while cluster.incidents()[memory]["status"].get("phase") != "Running":
        await asyncio.sleep(0)
    second = await execute(cluster, pods, "manual-compress", now, locks)
    assert isinstance(second, Deferred) and second.reason == "DisruptiveActionRunning"
    assert memory in cluster.incidents()["manual-compress"]["status"]["message"]
    pods.gate.set()
    assert await first == "Succeeded"
    assert await execute(cluster, pods, "manual-compress", now, locks) == "Succeeded"
    # reconnect-redis is not disruptive: it never waited for anything.
    assert await execute(cluster, pods, redis_down_name(), now, locks) == "Succeeded"


async def test_storm_limit_and_pause_keep_incidents_closed_with_the_reason() -> None:
    cluster = make_cluster({"mode": "Recommend", "stormLimit": 1})
    pods = FakePods(lambda: with_redis_down(with_large_uncompressed_values(healthy())))
    now = await probes(cluster, pods, T0, 3)
    assert len(cluster.incidents()) == 1  # RedisUnavailable or HighMemory, the first in symptom order
    opened = next(iter(cluster.incidents()))
    condition = policy_condition(cluster, "SymptomsTracked")
    assert (condition["status"], condition["reason"]) == ("False", "StormLimitReached")
    assert "stormLimit 1" in condition["message"]
    warnings = [e for e in cluster.events if e[1] == "StormLimitReached"]
    now = await probes(cluster, pods, now, 2)
    assert [e for e in cluster.events if e[1] == "StormLimitReached"] == warnings  # once, not per pass
    assert len(warnings) == 1 and len(cluster.incidents()) == 1
    # The open incident resolves (a person dealt with it): the waiting symptom gets its incident.
    await cluster.patch_status(
        "", "CacheIncident", NS, opened, {"phase": "Failed", "resolvedAt": rfc3339(now)}
    )
    await probe(cluster, pods, now)
    assert len(cluster.incidents()) == 2
    assert policy_condition(cluster, "SymptomsTracked")["reason"] == "Tracked"

    paused = make_cluster({"mode": "Auto"})
    paused.policy()["spec"]["paused"] = True
    await probes(paused, pods, T0, 3)
    assert paused.incidents() == {}
    condition = policy_condition(paused, "SymptomsTracked")
    assert (condition["status"], condition["reason"]) == ("False", "PolicyPaused")


def finished(name: str, ended: float, *, auto: bool = False, resolved: bool = True) -> dict[str, Any]:
    labels = {"cachewarden.io/incident-source": "auto"} if auto else {}
    status: dict[str, Any] = {"phase": "Succeeded", "completedAt": rfc3339(ended)}
    if auto and resolved:
        status["resolvedAt"] = rfc3339(ended)
    return {
        "apiVersion": "cachewarden.io/v1alpha1",
        "kind": "CacheIncident",
        "metadata": {"name": name, "namespace": NS, "labels": labels, "uid": f"uid-{name}"},
        "spec": {"policyRef": {"name": "web"}, "action": "gc"},
        "status": status,
    }


async def test_garbage_collection_by_ttl_and_history_limit() -> None:
    cluster = make_cluster({"incidentTtlSeconds": 3600, "historyLimit": 2}, probes=5)
    pods = FakePods()
    now = T0 + 10 * 3600
    for obj in [
        finished("expired", now - 3601),
        finished("old", now - 600),
        finished("newer", now - 300),
        finished("newest", now - 60),
        finished("auto-ongoing", now - 7200, auto=True, resolved=False),  # symptom still active
        {**finished("running", now - 7200), "status": {"phase": "Running"}},
        {**finished("other-policy", now - 7200), "spec": {"policyRef": {"name": "other"}, "action": "gc"}},
    ]:
        cluster.objects[("CacheIncident", obj["metadata"]["name"])] = obj
    # The symptom of "auto-ongoing" is still active (its episode holds it).
    cluster.policy()["status"]["symptoms"] = [
        {
            "name": "LowHitRate",
            "active": True,
            "consecutive": 0,
            "since": rfc3339(now - 7300),
            "incident": "auto-ongoing",
        }
    ]
    await probe(cluster, pods, now)  # first detection pass: starts the GC clock, lists nothing
    assert cluster.deleted == [] and cluster.policy()["status"]["lastGarbageCollectionTime"] == rfc3339(now)
    await probe(cluster, pods, now + 30)
    assert cluster.deleted == []  # less than a minute later
    await probe(cluster, pods, now + 60)
    assert sorted(cluster.deleted) == ["CacheIncident/expired", "CacheIncident/old"]
    assert sorted(cluster.incidents()) == ["auto-ongoing", "newer", "newest", "other-policy", "running"]
    assert cluster.policy()["status"]["activeIncidents"] == ["auto-ongoing", "running"]
    assert "IncidentsDeleted" in cluster.reasons()


async def test_expired_override_is_removed_and_the_base_config_pushed() -> None:
    cluster, pods = make_cluster(), FakePods()
    await probe(cluster, pods, T0)
    base = cluster.policy()["status"]["configHash"]
    cluster.policy()["status"]["override"] = {
        "preset": "conservative",
        "incident": "emergency",
        "expiresAt": rfc3339(T0 + 100),
    }
    await probe(cluster, pods, T0 + 50)
    with_override = cluster.policy()["status"]["configHash"]
    assert with_override != base and set(pods.hashes.values()) == {with_override}
    assert cluster.policy()["status"]["preset"] == "conservative"
    await probe(cluster, pods, T0 + 101)
    status = cluster.policy()["status"]
    assert "override" not in status and status["configHash"] == base and status["preset"] == "development"
    assert set(pods.hashes.values()) == {base}
    assert "OverrideExpired" in cluster.reasons()


async def test_config_drift_is_judged_after_the_push() -> None:
    """A pod that takes the pushed config is no drift; one that keeps another hash opens ConfigDrift."""
    cluster, pods = make_cluster(probes=2), FakePods()
    await probes(cluster, pods, T0, 3)
    assert cluster.incidents() == {}

    class Stubborn(FakePods):
        async def apply_config(
            self, pod: PodTarget, token: str | None, config: Any, config_hash: str
        ) -> PodReply:
            if pod.name == "web-1":
                return PodReply(pod.name, False, 409, None, "HTTP 409: refused")
            return await super().apply_config(pod, token, config, config_hash)

    stubborn = Stubborn()
    stubborn.hashes = {"10.0.0.2": "f" * 64}
    await probes(cluster, stubborn, T0 + 100, 2)
    name = auto_incident_name("web", "ConfigDrift", T0 + 100)
    assert list(cluster.incidents()) == [name]
    evidence = cluster.incidents()[name]["status"]["detection"]["evidence"]
    assert evidence["pods"] == ["web-1"] and evidence["reportedHashes"] == {"web-1": "f" * 64}
    assert parse_rfc3339(evidence["since"], "since") == T0 + 100


async def test_a_stopped_redis_service_still_probes_and_detects() -> None:
    """devcluster's --resolve-service-hosts: with no Ready pod behind the Redis Service the policy waits
    (nothing pushed) but its pods are still probed, so the stopped Redis becomes an incident."""
    cluster = make_cluster({"mode": "Recommend"}, redis=False)
    cluster.objects[("Service", "redis")] = {"spec": {"selector": {"app": "redis"}}}
    redis_pod = {
        "metadata": {"name": "redis-0", "labels": {"app": "redis"}},
        "status": {
            "phase": "Running",
            "podIP": "10.0.1.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    cluster.pods.append(redis_pod)
    scenario: dict[str, Callable[[], Scenario]] = {"now": healthy}
    pods = FakePods(lambda: scenario["now"]())
    outcome = await probe(cluster, pods, T0, resolve_service_hosts=True)
    assert outcome.outcome == "ready"
    configured = cluster.policy()["status"]["configHash"]
    cluster.pods.remove(redis_pod)
    scenario["now"] = lambda: with_redis_down(healthy())
    now = T0 + PROBE_S
    for _ in range(3):
        outcome = await probe(cluster, pods, now, resolve_service_hosts=True)
        now += PROBE_S
        assert outcome.reason == "WaitingForRedis"
    status = cluster.policy()["status"]
    assert status["configHash"] == configured and set(pods.hashes.values()) == {configured}
    assert status["health"]["redis"] == "Disconnected"
    assert list(cluster.incidents()) == [redis_down_name(T0 + PROBE_S)]
    assert policy_condition(cluster, "Ready")["reason"] == "WaitingForRedis"


def with_redis_full(scenario: Scenario) -> Scenario:
    """Redis at maxmemory with noeviction: writes refused (OOM errors), reads fine."""
    assert scenario.l2 is not None
    scenario.l2.update(
        errors={"oom": 25}, last_error="OOM command not allowed when used memory > 'maxmemory'."
    )
    scenario.redis_memory = {
        "used_memory": 1024 * 1024 * 1024,
        "maxmemory": 1024 * 1024 * 1024,
        "maxmemory_policy": "noeviction",
        "evicted_keys": 0,
    }
    return scenario


async def test_redis_out_of_memory_is_recommended_only_even_in_auto_mode() -> None:
    cluster = make_cluster({"mode": "Auto", "allowedActions": ["clear", "gc", "reconnect-redis"]})
    pods = FakePods(lambda: with_redis_full(healthy()))
    now = await probes(cluster, pods, T0, 3)
    name = auto_incident_name("web", "RedisOutOfMemory", T0)
    assert name in cluster.incidents()
    incident = cluster.incidents()[name]
    assert incident["spec"]["severity"] == "critical"
    status = incident["status"]
    assert status["cause"] == "RedisOutOfMemory"
    top = status["diagnosis"]["causes"][0]
    assert "maxmemory-policy" in top["recommendation"] and top["evidence"]["maxmemory_policy"] == "noeviction"
    assert await execute(cluster, pods, name, now) == "Recommended"
    status = cluster.incidents()[name]["status"]
    # Never clear (everyone's data) for a full Redis: the fix is its eviction policy or memory.
    assert status["recommendedAction"] == incident["spec"]["action"] == "diagnose"
    assert all(c.get("action") != "clear" for c in status["diagnosis"]["causes"])
    assert "maxmemory 1024.0 MiB" in top["recommendation"]
    assert "never remediated automatically" in status["message"]
    assert pods.executed == [] and "lastActions" not in cluster.policy()["status"]


async def test_an_incident_created_without_its_status_gets_it_on_the_next_pass() -> None:
    """The operator died between creating the incident and writing its detection: the next pass finds
    the incident by its name (409) and writes detection and diagnosis then."""
    cluster, pods = make_cluster(), FakePods(lambda: with_redis_down(healthy()))
    now = await probes(cluster, pods, T0, 2)

    original = cluster.patch_status

    async def drop_incident_status(
        api_version: str, kind: str, namespace: str, name: str, status: Any
    ) -> bool:
        if kind == "CacheIncident":
            raise KubeError(f"patch status of CacheIncident {name}", 503, "connection reset")
        return await original(api_version, kind, namespace, name, status)

    cluster.patch_status = drop_incident_status  # type: ignore[method-assign]
    await probe(cluster, pods, now)
    name = redis_down_name()
    assert cluster.incidents()[name]["status"] == {}
    # The failed pass kept the symptom active but recorded no incident for it: the next one adopts it.
    assert "incident" not in symptom_entry(cluster, "RedisUnavailable")
    assert policy_condition(cluster, "SymptomsTracked")["reason"] == "CreateFailed"
    cluster.patch_status = original  # type: ignore[method-assign]
    await probe(cluster, pods, now + PROBE_S)
    status = cluster.incidents()[name]["status"]
    assert status["detection"]["symptom"] == "RedisUnavailable" and status["cause"] == "RedisUnreachable"
    assert symptom_entry(cluster, "RedisUnavailable")["incident"] == name
    assert cluster.incident_creates() == [f"CacheIncident/{name}"]


async def test_isolation_is_time_boxed_restored_once_and_lifted_by_restore_or_deletion() -> None:
    cluster, pods = make_cluster(), FakePods()
    await probe(cluster, pods, T0)
    keys: list[str | None] = []
    original_call = pods.call

    async def keep_keys(pod: PodTarget, token: str, request: PodRequest, key: str | None) -> PodReply:
        keys.append(key)
        return await original_call(pod, token, request, key)

    pods.call = keep_keys  # type: ignore[method-assign]

    def manual(name: str, action: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "cachewarden.io/v1alpha1",
            "kind": "CacheIncident",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"policyRef": {"name": "web"}, "action": action, **spec},
        }

    # isolate for 60 s: recorded in the policy's status, restored by the reconciler at the expiry.
    await cluster.create(manual("iso", "isolate", parameters={"durationSeconds": 60}))
    assert await execute(cluster, pods, "iso", T0 + 10) == "Succeeded"
    isolation = cluster.policy()["status"]["isolation"]
    assert isolation == {
        "incident": "iso",
        "incidentUid": "uid-iso",
        "pods": ["web-0", "web-1"],
        "expiresAt": rfc3339(T0 + 70),
    }
    await probe(cluster, pods, T0 + 69)
    assert [path for _, path in pods.executed] == ["/emergency/isolate"] * 2
    await probe(cluster, pods, T0 + 70)
    assert [path for _, path in pods.executed] == ["/emergency/isolate"] * 2 + ["/emergency/restore"] * 2
    assert keys[-2:] == ["uid-iso:restore-expired:web-0", "uid-iso:restore-expired:web-1"]
    assert "isolation" not in cluster.policy()["status"] and "IsolationExpired" in cluster.reasons()

    # A restore incident lifts the record of the pods it restored.
    await cluster.create(manual("iso2", "isolate"))
    assert await execute(cluster, pods, "iso2", T0 + 100) == "Succeeded"
    assert cluster.policy()["status"]["isolation"]["expiresAt"] == rfc3339(T0 + 100 + 1800)
    await cluster.create(manual("back", "restore", targetPods=["web-1"]))
    assert await execute(cluster, pods, "back", T0 + 110) == "Succeeded"
    assert cluster.policy()["status"]["isolation"]["pods"] == ["web-0"]

    # Deleting the isolate incident ends the isolation now: the next pass restores what is left.
    from cache_operator.incidents.executor_io import handle_incident_deleted

    lifted = await handle_incident_deleted(
        IncidentRef("iso2", NS, "uid-iso2"),
        cluster.incidents()["iso2"]["spec"],
        kube=cluster,
        logger=Log(),
        clock=lambda: T0 + 120,
    )
    assert lifted and cluster.policy()["status"]["isolation"]["expiresAt"] == rfc3339(T0 + 120)
    before = len(pods.executed)
    await probe(cluster, pods, T0 + 121)
    assert pods.executed[before:] == [("web-0", "/emergency/restore")]
    assert "isolation" not in cluster.policy()["status"]


# ------------------------------------------------------------------------------------------------
# cross-layer diagnosis and one incident per cause


def scaled_down_event(at: float) -> dict[str, Any]:
    """The Event the Deployment controller posts when a person scales Redis to 0."""
    return {
        "metadata": {"name": "redis.17e0", "creationTimestamp": rfc3339(at)},
        "involvedObject": {"kind": "Deployment", "name": "redis"},
        "type": "Normal",
        "reason": "ScalingReplicaSet",
        "message": "Scaled down replica set redis-5d8f to 0 from 1",
        "count": 1,
        "lastTimestamp": rfc3339(at),
    }


async def test_redis_scaled_to_zero_is_the_diagnosed_cause_with_the_cluster_evidence() -> None:
    """Redis's Deployment at 0 replicas: the incident's top cause is RedisScaledToZero with the
    Deployment, the empty endpoints and the scaling Event as evidence; the action is diagnose (no
    reconnect-redis: nothing to reconnect to), even in Auto mode with reconnect-redis allowed."""
    cluster = make_cluster({"mode": "Auto", "allowedActions": ["reconnect-redis", "diagnose"]})
    add_redis(cluster, replicas=0)
    cluster.objects[("Event", "redis.17e0")] = scaled_down_event(T0 - 20)
    pods = FakePods(lambda: with_redis_down(healthy()))
    now = await probes(cluster, pods, T0, 3)
    incident = cluster.incidents()[redis_down_name()]
    status = incident["status"]
    assert status["cause"] == "RedisScaledToZero" and incident["spec"]["action"] == "diagnose"
    top = status["diagnosis"]["causes"][0]
    assert top["name"] == "RedisScaledToZero" and "scaled to 0 replicas" in top["recommendation"]
    assert f"kubectl -n {NS} scale deployment/redis --replicas=1" in top["recommendation"]
    evidence = top["evidence"]
    assert evidence["workloads"] == [
        {"kind": "Deployment", "name": "redis", "replicas": 0, "readyReplicas": 0}
    ]
    assert evidence["readyEndpoints"] == 0 and evidence["layer"] == "kubernetes"
    first_event = evidence["events"][0]
    assert first_event["reason"] == "ScalingReplicaSet" and first_event["ageSeconds"] >= 20
    # the pods' own view follows (the engine's RedisUnreachable), and the detection carries the cluster read
    assert [c["name"] for c in status["diagnosis"]["causes"]][1:] == ["RedisUnreachable"]
    assert status["detection"]["evidence"]["redisCluster"]["service"] == f"{NS}/redis"
    # the diagnose action (run in Auto) reads the cluster again: its diagnosis keeps the cause first
    assert await execute(cluster, pods, redis_down_name(), now) == "Succeeded"
    status = cluster.incidents()[redis_down_name()]["status"]
    assert status["cause"] == "RedisScaledToZero" and status.get("recommendedAction") is None
    assert status["diagnosis"]["causes"][0]["evidence"]["workloads"][0]["replicas"] == 0


async def test_oomkilled_crash_looping_redis_is_diagnosed() -> None:
    """Redis's pod OOMKilled and in CrashLoopBackOff: cause RedisPodOOMKilled with restarts, the last
    termination and the memory limit."""
    cluster = make_cluster({"mode": "Recommend"})
    redis_pod = next(p for p in cluster.pods if p["metadata"]["labels"].get("app") == "redis")
    redis_pod["spec"]["containers"][0]["resources"] = {"limits": {"memory": "64Mi"}}
    redis_pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    redis_pod["status"]["containerStatuses"] = [{
        "name": "redis", "ready": False, "restartCount": 5,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": rfc3339(T0 - 5)}},
    }]
    cluster.objects[("EndpointSlice", "redis-x1")]["endpoints"][0]["conditions"]["ready"] = False
    pods = FakePods(lambda: with_redis_down(healthy()))
    await probes(cluster, pods, T0, 3)
    status = cluster.incidents()[redis_down_name()]["status"]
    assert status["cause"] == "RedisPodOOMKilled"
    top = status["diagnosis"]["causes"][0]
    assert "OOMKilled" in top["recommendation"] and "limit 64Mi" in top["recommendation"]
    pod = top["evidence"]["pods"][0]
    assert pod["restarts"] == 5 and pod["waiting"] == "CrashLoopBackOff"
    assert pod["lastTermination"]["reason"] == "OOMKilled" and pod["memoryLimit"] == "64Mi"


async def test_an_outage_opens_one_incident_for_both_symptoms() -> None:
    """Redis down and the hit rate low because of it: the engine explains both by RedisUnreachable, so
    LowHitRate joins the RedisUnavailable incident (status.symptoms lists both) instead of opening a
    second one; the incident is resolved when the outage cleared."""
    cluster = make_cluster({"mode": "Recommend"})
    add_redis(cluster, replicas=0)
    scenario: dict[str, Callable[[], Scenario]] = {
        "now": lambda: with_low_hit_rate(with_redis_down(healthy()))
    }
    pods = FakePods(lambda: scenario["now"]())
    now = await probes(cluster, pods, T0, 3)
    incidents = cluster.incidents()
    assert list(incidents) == [redis_down_name()], list(incidents)
    status = incidents[redis_down_name()]["status"]
    assert status["symptoms"] == ["RedisUnavailable", "LowHitRate"]
    assert status["cause"] == "RedisScaledToZero"
    assert symptom_entry(cluster, "LowHitRate")["incident"] == redis_down_name()
    assert "SymptomJoined" in cluster.reasons()
    await probes(cluster, pods, now, 3)
    assert list(cluster.incidents()) == [redis_down_name()]
    scenario["now"] = healthy
    add_redis(cluster, replicas=1)
    await probes(cluster, pods, now + 3 * PROBE_S, 4)
    assert cluster.incidents()[redis_down_name()]["status"]["phase"] == "Resolved"


# ------------------------------------------------------------------------------------------------
# remediation by time-boxed override, verified by its effect


class SettingPods(FakePods):
    """FAKE pods whose fault is cured by a config: they show ``faulty`` until they run a config the
    operator pushed through an incident's apply-override (and again once pushed another one), and
    ``cured`` while they run it. ``cures`` False: the override cannot help (the fault stays)."""

    def __init__(self, faulty: Callable[[], Scenario], cured: Callable[[], Scenario], cures: bool) -> None:
        super().__init__(faulty)
        self.faulty, self.cured, self.cures = faulty, cured, cures
        self.override_hash: str | None = None
        self.running_override = False
        self.scenario = lambda: self.cured() if self.cures and self.running_override else self.faulty()

    async def apply_config(
        self, pod: PodTarget, token: str | None, config: Mapping[str, Any], config_hash: str
    ) -> PodReply:
        self.running_override = config_hash == self.override_hash
        return await super().apply_config(pod, token, config, config_hash)

    async def call(
        self, pod: PodTarget, token: str, request: PodRequest, idempotency_key: str | None
    ) -> PodReply:
        if request.path == "/config/apply" and request.body is not None:
            self.override_hash = str(request.body["hash"])
            self.hashes[pod.ip] = self.override_hash
            self.running_override = True
        return await super().call(pod, token, request, idempotency_key)


def memory_incident(cluster: FakeCluster) -> tuple[str, dict[str, Any]]:
    name = auto_incident_name("web", "HighMemory", T0)
    return name, cluster.incidents()[name]


def incident_condition(incident: Mapping[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in incident["status"]["conditions"] if c["type"] == type_)


async def test_a_setting_fault_is_healed_by_a_time_boxed_override_and_verified() -> None:
    """Auto with apply-override allowed: the override goes to status (never the spec) and to the pods;
    the figure improves over verifyProbes probes -> Remediated, with a ready permanent patch."""
    cluster = make_cluster({"mode": "Auto", "allowedActions": ["apply-override"], "verifyProbes": 2})
    spec_before = copy.deepcopy(cluster.policy()["spec"])
    pods = SettingPods(lambda: with_large_uncompressed_values(healthy()), healthy, cures=True)
    now = await probes(cluster, pods, T0, 3)
    base_hash = cluster.policy()["status"]["configHash"]
    name, incident = memory_incident(cluster)
    assert incident["spec"]["action"] == "apply-override"
    assert incident["spec"]["parameters"]["overrides"] == {"compression": {"threshold_bytes": 4096}}
    assert incident["status"]["remediation"]["before"] == 60.0  # MiB, the symptom's own figure
    assert await execute(cluster, pods, name, now) == "Succeeded"
    override = cluster.policy()["status"]["override"]
    assert override["overrides"] == {"compression": {"threshold_bytes": 4096}}
    assert override["incident"] == name
    assert ("web-0", "/config/apply") in pods.executed and ("web-0", "/compress-existing") in pods.executed
    assert cluster.incidents()[name]["status"]["remediation"]["state"] == "Verifying"
    # The reconciler keeps the override's config on the pods (no drift back to the spec's).
    now = await probes(cluster, pods, now, 2)
    status = cluster.incidents()[name]["status"]
    assert cluster.policy()["status"]["configHash"] == pods.override_hash != base_hash
    assert status["remediation"]["state"] == "Remediated", status["remediation"]
    assert status["remediation"]["before"] == 60.0 and status["remediation"]["after"] is not None
    assert status["remediation"]["after"] < status["remediation"]["before"]
    assert incident_condition(cluster.incidents()[name], "Remediated")["status"] == "True"
    patch = status["remediation"]["permanentPatch"]
    assert patch["command"] == (
        "kubectl -n shop patch cachepolicy web --type merge -p "
        '\'{"spec":{"overrides":{"compression":{"threshold_bytes":4096}}}}\''
    )
    assert "threshold_bytes: 4096" in patch["yaml"]
    assert "Remediated" in cluster.reasons() and cluster.policy()["spec"] == spec_before
    CacheIncidentStatus.model_validate(status)


async def test_an_override_that_does_not_help_is_rolled_back_and_escalated() -> None:
    cluster = make_cluster({"mode": "Auto", "allowedActions": ["apply-override"], "verifyProbes": 2})
    pods = SettingPods(lambda: with_large_uncompressed_values(healthy()), healthy, cures=False)
    now = await probes(cluster, pods, T0, 3)
    base_hash = cluster.policy()["status"]["configHash"]
    name, _ = memory_incident(cluster)
    assert await execute(cluster, pods, name, now) == "Succeeded"
    await probe(cluster, pods, now)
    outcome = await probe(cluster, pods, now + PROBE_S)
    assert ("Ineffective", "HighMemory") in outcome.detection.verdicts  # the metric's source
    incident = cluster.incidents()[name]
    status = incident["status"]
    assert status["phase"] == "Failed" and status["remediation"]["state"] == "Ineffective"
    assert status["remediation"]["rolledBack"] is True
    condition = incident_condition(incident, "Remediated")
    assert (condition["status"], condition["reason"]) == ("False", "RemediationIneffective")
    assert incident_condition(incident, "Succeeded")["status"] == "False"
    assert "override" not in cluster.policy()["status"]
    warnings = [e for e in cluster.events if e[1] == "RemediationIneffective"]
    assert len(warnings) == 1 and warnings[0][0] == "Warning" and "60 MiB -> 60 MiB" in warnings[0][2]
    # The next pass pushes the spec's own config back to every pod.
    await probe(cluster, pods, now + 2 * PROBE_S)
    assert cluster.policy()["status"]["configHash"] == base_hash and set(pods.hashes.values()) == {base_hash}
    # The action is not run again for the episode (the symptom still holds).
    executed = list(pods.executed)
    await probes(cluster, pods, now + 3 * PROBE_S, 3)
    assert pods.executed == executed and len(cluster.incidents()) == 1


@pytest.mark.parametrize("mode", ["Off", "Recommend"])
async def test_off_and_recommend_change_nothing_and_recommend_shows_the_override(mode: str) -> None:
    cluster = make_cluster({"mode": mode, "allowedActions": ["apply-override"]})
    spec_before = copy.deepcopy(cluster.policy()["spec"])
    pods = SettingPods(lambda: with_large_uncompressed_values(healthy()), healthy, cures=True)
    now = await probes(cluster, pods, T0, 3)
    base_hash = cluster.policy()["status"]["configHash"]
    name, _ = memory_incident(cluster)
    phase = await execute(cluster, pods, name, now)
    await probes(cluster, pods, now, 3)
    status = cluster.incidents()[name]["status"]
    assert phase == ("Skipped" if mode == "Off" else "Recommended")
    assert pods.executed == [] and "override" not in cluster.policy()["status"]
    assert set(pods.hashes.values()) == {base_hash} and cluster.policy()["spec"] == spec_before
    proposed = status["remediation"]
    assert proposed["state"] == "Proposed"
    assert proposed["override"] == {"compression": {"threshold_bytes": 4096}}
    assert proposed["permanentPatch"]["command"].startswith("kubectl -n shop patch cachepolicy web")


async def test_a_persons_apply_override_out_of_range_fails_naming_the_parameter() -> None:
    """A manual apply-override the engine refuses fails before anything is recorded or pushed."""
    cluster, pods = make_cluster(), FakePods()
    await probe(cluster, pods, T0)
    await cluster.create(
        {
            "apiVersion": "cachewarden.io/v1alpha1",
            "kind": "CacheIncident",
            "metadata": {"name": "too-short", "namespace": NS},
            "spec": {
                "policyRef": {"name": "web"},
                "action": "apply-override",
                "parameters": {"overrides": {"ttl": {"default_s": 0}}},
            },
        }
    )
    assert await execute(cluster, pods, "too-short", T0 + 1) == "Failed"
    status = cluster.incidents()["too-short"]["status"]
    assert "ttl.default_s" in status["message"] and "spec.parameters.overrides" in status["message"]
    assert "override" not in cluster.policy()["status"] and pods.executed == []
    # A valid one is recorded in status, pushed, and not verified (a person's incident).
    await cluster.create(
        {
            "apiVersion": "cachewarden.io/v1alpha1",
            "kind": "CacheIncident",
            "metadata": {"name": "longer", "namespace": NS},
            "spec": {
                "policyRef": {"name": "web"},
                "action": "apply-override",
                "parameters": {"overrides": {"ttl": {"default_s": 3600}}},
            },
        }
    )
    assert await execute(cluster, pods, "longer", T0 + 2) == "Succeeded"
    assert cluster.policy()["status"]["override"]["overrides"] == {"ttl": {"default_s": 3600}}
    assert "remediation" not in cluster.incidents()["longer"]["status"]
    assert "OverrideApplied" in cluster.reasons()
