"""Cross-layer diagnosis, pure part (cache_operator.incidents.redis_cluster) and the joining rule of
automatic incidents (automatic_io.joinable_incident): plain objects in, causes out."""

from __future__ import annotations

from typing import Any

import pytest

from cache_operator.api.cachepolicy import CachePolicySpec
from cache_operator.incidents.automatic_io import joinable_incident
from cache_operator.incidents.redis_cluster import (
    RedisClusterState,
    RedisTarget,
    diagnose_cluster,
    last_changed,
    password_secret_cause,
    password_source,
    recent_events,
    redis_target,
    wants_cluster_view,
)
from cache_runtime.timefmt import rfc3339

NOW = 1_800_000_000.0
LABELS = {"app": "redis"}


def spec(url: str | None) -> CachePolicySpec:
    redis = {"url": url} if url else None
    return CachePolicySpec.model_validate(
        {"preset": "development", "runtime": {"replicas": 1}, **({"redis": redis} if redis else {})}
    )


@pytest.mark.parametrize(
    ("url", "namespace", "service"),
    [
        ("redis://redis:6379/0", "shop", "redis"),
        ("redis://redis.data:6379/0", "data", "redis"),
        ("rediss://cache-redis.data.svc:6380", "data", "cache-redis"),
        ("redis://r.data.svc.cluster.local:6379/1", "data", "r"),
        ("redis+sentinel://sentinel:26379/mymaster", "shop", "sentinel"),
        ("redis://10.0.0.7:6379/0", "shop", None),
        ("redis://redis.example.com:6379/0", "shop", None),
        ("unix:///var/run/redis.sock", "shop", None),
    ],
)
def test_redis_target_names_the_service(url: str, namespace: str, service: str | None) -> None:
    target = redis_target(spec(url), "shop")
    assert (target.namespace, target.service) == (namespace, service)
    if service is None:
        assert target.why


def test_no_redis_names_no_service() -> None:
    assert redis_target(spec(None), "shop").why == "the policy has no spec.redis (memory only)"


def service() -> dict[str, Any]:
    return {"metadata": {"name": "redis"}, "spec": {"selector": dict(LABELS)}}


def deployment(replicas: int) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "redis"},
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": dict(LABELS)}}},
        "status": {"readyReplicas": replicas},
    }


def pod(name: str, ready: bool = True, restarts: int = 0, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": dict(LABELS)},
        "spec": {"containers": [{"name": "redis"}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": str(ready)}],
            "containerStatuses": [{"name": "redis", "ready": ready, "restartCount": restarts, **container}],
        },
    }


def slices(*ready: bool) -> list[dict[str, Any]]:
    return [{"endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": r}} for r in ready]}]


def state(**kw: Any) -> RedisClusterState:
    return RedisClusterState(RedisTarget("shop", "redis"), **kw)


def names(causes: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in causes]


def test_a_running_redis_gives_no_cluster_cause() -> None:
    causes, observed = diagnose_cluster(
        state(service=service(), endpoint_slices=slices(True), workloads=[deployment(1)], pods=[pod("r-0")]),
        NOW,
    )
    assert causes == [] and observed["readyEndpoints"] == 1 and observed["pods"][0]["restarts"] == 0


def test_missing_service() -> None:
    causes, _ = diagnose_cluster(state(), NOW)
    assert names(causes) == ["RedisServiceNotFound"] and causes[0]["layer"] == "kubernetes"
    assert causes[0]["recommendations"][0]["action"] is None


def test_unreadable_service_is_evidence_not_a_cause() -> None:
    causes, observed = diagnose_cluster(state(unreadable={"service": "HTTP 403: forbidden"}), NOW)
    assert causes == [] and observed["unreadable"] == {"service": "HTTP 403: forbidden"}


def test_scaled_to_zero_with_its_event() -> None:
    event = {
        "involvedObject": {"kind": "ReplicaSet", "name": "redis-5d8f"},
        "reason": "SuccessfulDelete",
        "message": "Deleted pod: redis-5d8f-abc",
        "lastTimestamp": rfc3339(NOW - 30),
        "type": "Normal",
    }
    old = {**event, "lastTimestamp": rfc3339(NOW - 3600)}
    other = {**event, "involvedObject": {"kind": "Pod", "name": "web-0"}}
    causes, observed = diagnose_cluster(
        state(service=service(), workloads=[deployment(0)], events=[event, old, other]),
        NOW,
        ["LowHitRate"],
    )
    assert names(causes) == ["RedisScaledToZero"]
    assert causes[0]["symptoms"] == ["LowHitRate", "RedisUnavailable"]
    assert observed["events"] == [
        {
            "object": "ReplicaSet/redis-5d8f",
            "type": "Normal",
            "reason": "SuccessfulDelete",
            "message": "Deleted pod: redis-5d8f-abc",
            "count": 1,
            "ageSeconds": 30,
        }
    ]


def test_crash_looping_without_oom() -> None:
    looping = pod(
        "r-0",
        ready=False,
        restarts=4,
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        lastState={"terminated": {"reason": "Error", "exitCode": 1}},
    )
    causes, _ = diagnose_cluster(
        state(service=service(), endpoint_slices=slices(False), workloads=[deployment(1)], pods=[looping]),
        NOW,
    )
    assert names(causes) == ["RedisCrashLooping"] and "last exit Error" in causes[0]["summary"]


def test_oomkilled_once_is_already_a_cause() -> None:
    killed = pod("r-0", restarts=1, lastState={"terminated": {"reason": "OOMKilled", "exitCode": 137}})
    causes, _ = diagnose_cluster(
        state(service=service(), endpoint_slices=slices(True), workloads=[deployment(1)], pods=[killed]), NOW
    )
    assert names(causes) == ["RedisPodOOMKilled"]


def test_selector_matching_nothing() -> None:
    causes, _ = diagnose_cluster(state(service=service(), endpoint_slices=[], workloads=[]), NOW)
    assert names(causes) == ["RedisServiceNoReadyPod"]
    assert (
        "selects no pod at all" in causes[0]["summary"]
        and "no Deployment/StatefulSet" in causes[0]["summary"]
    )


def test_pods_not_ready() -> None:
    causes, _ = diagnose_cluster(
        state(
            service=service(),
            endpoint_slices=slices(False),
            workloads=[deployment(1)],
            pods=[pod("r-0", ready=False)],
        ),
        NOW,
    )
    assert names(causes) == ["RedisServiceNoReadyPod"] and "none ready" in causes[0]["summary"]


def test_empty_slices_beside_a_ready_pod_are_not_no_ready_pod() -> None:
    """EndpointSlices without a ready endpoint while the selected pod is Ready (slices lagging, or
    addresses the slice cannot list, such as devcluster's loopback pod IPs) name no cluster cause: the
    pods' own view (e.g. an authentication failure) stays the diagnosis."""
    causes, _ = diagnose_cluster(
        state(service=service(), endpoint_slices=[], workloads=[deployment(1)],
              pods=[pod("r-0", ready=True)]),
        NOW,
    )
    assert causes == []


def test_recent_events_newest_first_and_bounded() -> None:
    events = [
        {
            "involvedObject": {"kind": "Pod", "name": "r-0"},
            "reason": f"R{i}",
            "eventTime": rfc3339(NOW - i).replace("Z", ".123456Z"),
        }
        for i in range(10)
    ]
    picked = recent_events(events, {"Pod": {"r-0"}}, NOW)
    assert [e["reason"] for e in picked] == ["R0", "R1", "R2", "R3", "R4", "R5"]


def test_wants_cluster_view() -> None:
    assert wants_cluster_view("RedisUnavailable", [])
    assert wants_cluster_view("LowHitRate", [{"name": "RedisUnreachable"}])
    assert not wants_cluster_view("LowHitRate", [{"name": "TtlTooShort"}])
    assert wants_cluster_view("RedisAuthFailure", [])


def secret(changes: list[tuple[float, str]], created: float = NOW - 86400) -> dict[str, Any]:
    """A Secret's metadata as the API server returns it, with ``data`` that must never leak."""
    return {
        "metadata": {
            "name": "redis-auth",
            "creationTimestamp": rfc3339(created),
            "managedFields": [
                {"manager": manager, "operation": "Update", "time": rfc3339(when)}
                for when, manager in changes
            ],
        },
        "data": {"password": "c2VjcmV0LXZhbHVl"},
    }


def test_password_source_prefers_the_password_secret() -> None:
    both = CachePolicySpec.model_validate(
        {
            "preset": "development",
            "runtime": {"replicas": 1},
            "redis": {
                "secretRef": {"name": "redis-url", "key": "url"},
                "passwordSecretRef": {"name": "redis-auth", "key": "password"},
            },
        }
    )
    assert password_source(both) == ("redis-auth", "password")
    url_only = CachePolicySpec.model_validate(
        {
            "preset": "development",
            "runtime": {"replicas": 1},
            "redis": {"secretRef": {"name": "redis-url", "key": "url"}},
        }
    )
    assert password_source(url_only) == ("redis-url", "url")
    assert password_source(spec("redis://redis:6379/0")) is None
    assert password_source(spec(None)) is None


def test_last_changed_is_the_newest_writer() -> None:
    obj = secret([(NOW - 500, "helm"), (NOW - 90, "kubectl-edit"), (NOW - 3000, "argocd")])
    assert last_changed(obj) == (NOW - 90, "kubectl-edit")
    assert last_changed(secret([], created=NOW - 40)) == (NOW - 40, None)
    assert last_changed({"metadata": {"managedFields": [{"time": "yesterday"}]}}) is None


def test_a_recently_changed_password_secret_is_the_cause_without_its_data() -> None:
    cause, observed = password_secret_cause(
        secret([(NOW - 3000, "helm"), (NOW - 95, "kubectl-client-side-apply")]),
        "password",
        "shop",
        NOW,
        ["RedisAuthFailure"],
    )
    assert cause is not None and cause["name"] == "RedisPasswordChanged"
    assert cause["symptoms"] == ["RedisAuthFailure"]
    assert cause["layer"] == "kubernetes" and cause["score"] == 1.0
    assert "shop/redis-auth" in cause["summary"]
    assert "95 s ago by kubectl-client-side-apply" in cause["summary"]
    assert observed == {
        "passwordSecret": "shop/redis-auth",
        "key": "password",
        "secretChangedSecondsAgo": 95,
        "secretChangedBy": "kubectl-client-side-apply",
    }
    assert "c2VjcmV0LXZhbHVl" not in repr(cause) and "secret-value" not in repr(cause)
    assert cause["recommendations"][0]["action"] is None  # a person's fix


def test_an_old_or_missing_password_secret_is_no_cause() -> None:
    cause, observed = password_secret_cause(secret([(NOW - 7200, "helm")]), "password", "shop", NOW, ["X"])
    assert cause is None and observed["secretChangedSecondsAgo"] == 7200
    assert password_secret_cause(None, "password", "shop", NOW, ["X"]) == (None, {"passwordSecret": None})


def incident(name: str, symptom: str, causes: list[str], resolved: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"diagnosis": {"causes": [{"name": c} for c in causes]}}
    if resolved:
        status["resolvedAt"] = rfc3339(NOW)
    return {
        "metadata": {
            "name": name,
            "labels": {"cachewarden.io/incident-source": "auto", "cachewarden.io/symptom": symptom},
        },
        "spec": {"policyRef": {"name": "web"}},
        "status": status,
    }


def test_joinable_incident_by_shared_cause() -> None:
    outage = incident("web-redisunavailable-1", "RedisUnavailable", ["RedisScaledToZero", "RedisUnreachable"])
    held = {"web-redisunavailable-1": "RedisUnavailable"}
    unreachable = {"name": "RedisUnreachable", "symptoms": ["LowHitRate", "RedisUnavailable"]}
    assert joinable_incident([outage], held, "LowHitRate", [unreachable]) is outage
    # by cause name alone, too
    assert (
        joinable_incident([outage], held, "LowHitRate", [{"name": "RedisUnreachable", "symptoms": []}])
        is outage
    )
    # a different cause, a generic one, a resolved incident, an incident no active symptom holds: no
    assert (
        joinable_incident([outage], held, "LowHitRate", [{"name": "TtlTooShort", "symptoms": ["LowHitRate"]}])
        is None
    )
    assert (
        joinable_incident(
            [outage], held, "LowHitRate", [{"name": "Undetermined", "symptoms": ["RedisUnavailable"]}]
        )
        is None
    )
    gone = incident("web-redisunavailable-1", "RedisUnavailable", ["RedisUnreachable"], resolved=True)
    assert joinable_incident([gone], held, "LowHitRate", [unreachable]) is None
    assert joinable_incident([outage], {}, "LowHitRate", [unreachable]) is None


def test_a_joined_symptom_does_not_pull_in_its_own_causes() -> None:
    """LowHitRate joined the outage's incident; L1Thrashing, whose cause L1TooSmall also lists
    LowHitRate, does not join through it: only the incident's own symptom or its diagnosed causes
    count (seen on devcluster: a thrashing L1 joined the outage and kept it from resolving)."""
    outage = incident("web-redisunavailable-1", "RedisUnavailable", ["RedisScaledToZero", "RedisUnreachable"])
    outage["status"]["symptoms"] = ["RedisUnavailable", "LowHitRate"]
    held = {"web-redisunavailable-1": "RedisUnavailable"}
    too_small = {"name": "L1TooSmall", "symptoms": ["LowHitRate", "L1Thrashing"]}
    assert joinable_incident([outage], held, "L1Thrashing", [too_small]) is None
    assert joinable_incident([outage], held, "LowHitRate", [too_small]) is None  # already in it


def test_the_specific_redis_symptom_opens_first() -> None:
    """A wrong password shows RedisAuthFailure and RedisUnavailable: the incident is named after the
    authentication failure (RedisUnavailable joins it), a plain outage after RedisUnavailable."""
    from cache_operator.incidents.automatic_io import _open_order

    order = [e["name"] for e in _open_order(
        [{"name": "LowHitRate"}, {"name": "RedisUnavailable"}, {"name": "RedisAuthFailure"}]
    )]
    assert order == ["RedisAuthFailure", "RedisUnavailable", "LowHitRate"]
    assert [e["name"] for e in _open_order([{"name": "LowHitRate"}, {"name": "RedisUnavailable"}])] == [
        "RedisUnavailable",
        "LowHitRate",
    ]
