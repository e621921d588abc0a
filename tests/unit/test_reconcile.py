"""Unit tests of cache_operator.reconcile: handle_* with FAKES in place of Kubernetes and the pods.

``FakeKube`` (an in-memory object store) and ``FakePods`` (pods that remember the config hash pushed
to them) stand in for the API server and the runtime pods here; the same code runs against the real
ones in tests/e2e/test_operator.py. What these tests pin down is the decision logic: what is applied,
what is pushed to whom, and which status and conditions come out.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import pytest

from cache_operator import render
from cache_operator.podclient import PodReply, PodTarget
from cache_operator.policy_inputs import rewrite_redis_host, service_name_of_host
from cache_operator.ports import PolicyRef
from cache_operator.reconcile import PodView, aggregate_health, handle_delete, handle_reconcile
from tests.fakes import FakeLogger

NOW = "2026-01-01T00:00:00Z"
POLICY = PolicyRef("web", "ns", "uid-1", 1)


class FakeKube:
    """In-memory stand-in for the API server (FAKE: no validation, no garbage collection)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.applied: list[str] = []
        self.deleted: list[str] = []

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        self.objects[key] = dict(obj)
        self.applied.append(f"{obj['kind']}/{obj['metadata']['name']}")
        return dict(obj)

    async def create(self, obj: Mapping[str, Any]) -> bool:
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self.objects:
            return False
        self.objects[key] = dict(obj)
        self.applied.append(f"{obj['kind']}/{obj['metadata']['name']}")
        return True

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.deleted.append(f"{kind}/{name}")
        return self.objects.pop((kind, namespace, name), None) is not None

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(","))
        return [
            p
            for p in self.pods
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]


class FakePods:
    """Runtime pods by IP (FAKE): each remembers the hash pushed to it; some can be made to fail."""

    def __init__(self) -> None:
        self.hashes: dict[str, str | None] = {}
        self.failing: set[str] = set()
        self.pushes: list[str] = []
        self.tokens_seen: set[str | None] = set()

    async def health(self, pod: PodTarget, token: str | None) -> PodReply:
        self.tokens_seen.add(token)
        if pod.ip in self.failing:
            return PodReply(pod.name, False, None, None, "ConnectError on GET /health")
        return PodReply(
            pod.name,
            True,
            200,
            {
                "status": "healthy",
                "config_hash": self.hashes.get(pod.ip),
                "hit_rates": {"overall": 0.5, "l1": 0.25, "lookups": 100},
                "memory": {"bytes": 1000},
                "latency": {"get": {"p95_ms": 1.5}},
                "redis": {"status": "connected", "breaker_state": "closed"},
            },
        )

    async def apply_config(
        self, pod: PodTarget, token: str | None, config: Mapping[str, Any], config_hash: str
    ) -> PodReply:
        self.pushes.append(pod.ip)
        if pod.ip in self.failing:
            return PodReply(pod.name, False, None, None, "ConnectError on POST /config/apply")
        self.hashes[pod.ip] = config_hash
        return PodReply(pod.name, True, 200, {"applied": True, "hash": config_hash})

    async def for_each(self, pods: Iterable[PodTarget], call: Callable[[Any], Awaitable[Any]]) -> list[Any]:
        return [await call(pod) for pod in pods]


class FakePatch:
    """kopf's patch, reduced to what handle_reconcile writes (FAKE)."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}


def make_pod(name: str, ip: str, labels: Mapping[str, str], ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": dict(labels)},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def conditions_by_type(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


async def reconcile(
    spec: Mapping[str, Any],
    kube: FakeKube,
    pods: FakePods,
    status: Mapping[str, Any] | None = None,
    **kw: Any,
) -> tuple[Any, FakePatch]:
    patch = FakePatch()
    outcome = await handle_reconcile(
        POLICY, spec, status or {}, kube=kube, pods_io=pods, patch=patch, logger=FakeLogger(), now=NOW, **kw
    )
    return outcome, patch


RUNTIME_SPEC = {"preset": "development", "runtime": {"replicas": 2}}


async def test_runtime_policy_applies_children_and_pushes_to_every_stale_pod() -> None:
    kube, pods = FakeKube(), FakePods()
    labels = render.pod_selector_labels("web")
    kube.pods = [make_pod("web-a", "10.0.0.1", labels), make_pod("web-b", "10.0.0.2", labels)]
    pods.hashes = {"10.0.0.1": "old", "10.0.0.2": None}

    outcome, patch = await reconcile(RUNTIME_SPEC, kube, pods)

    assert kube.applied == [
        f"Secret/{render.token_secret_name('web')}",
        f"ConfigMap/{render.configmap_name('web')}",
        f"Deployment/{render.deployment_name('web')}",
        f"Service/{render.service_name('web')}",
    ]
    assert sorted(pods.pushes) == ["10.0.0.1", "10.0.0.2"]
    status = patch.status
    assert outcome.outcome == "ready"
    assert status["configHash"] == outcome.config_hash
    assert set(pods.hashes.values()) == {outcome.config_hash}
    assert status["pods"] == {"desired": 2, "ready": 2, "configured": 2, "summary": "2/2"}
    conds = conditions_by_type(status)
    assert conds["Ready"]["status"] == "True"
    assert conds["Stalled"]["status"] == "False"
    assert conds["ConfigApplied"]["status"] == "True"
    assert conds["RedisConnected"]["status"] == "True"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    # The admin token the pods were called with is the one in the rendered Secret.
    secret = kube.objects[("Secret", "ns", render.token_secret_name("web"))]
    admin = base64.b64decode(secret["data"][render.ADMIN_TOKEN_KEY]).decode()
    assert pods.tokens_seen == {admin}


async def test_pods_already_on_the_hash_are_not_pushed_and_tokens_are_kept() -> None:
    kube, pods = FakeKube(), FakePods()
    labels = render.pod_selector_labels("web")
    kube.pods = [make_pod("web-a", "10.0.0.1", labels), make_pod("web-b", "10.0.0.2", labels)]
    first, _ = await reconcile(RUNTIME_SPEC, kube, pods)
    secret_before = kube.objects[("Secret", "ns", render.token_secret_name("web"))]["data"]
    pods.pushes.clear()
    second, _ = await reconcile(RUNTIME_SPEC, kube, pods)
    assert pods.pushes == []
    assert second.config_hash == first.config_hash
    assert kube.objects[("Secret", "ns", render.token_secret_name("web"))]["data"] == secret_before


async def test_preset_change_is_pushed_to_every_pod() -> None:
    kube, pods = FakeKube(), FakePods()
    labels = render.pod_selector_labels("web")
    kube.pods = [make_pod("web-a", "10.0.0.1", labels), make_pod("web-b", "10.0.0.2", labels)]
    first, _ = await reconcile(RUNTIME_SPEC, kube, pods)
    pods.pushes.clear()
    second, patch = await reconcile({**RUNTIME_SPEC, "preset": "ai-production"}, kube, pods)
    assert second.config_hash != first.config_hash
    assert sorted(pods.pushes) == ["10.0.0.1", "10.0.0.2"]
    assert set(pods.hashes.values()) == {second.config_hash}
    assert patch.status["preset"] == "ai-production"


async def test_unreachable_pod_leaves_the_policy_progressing_with_the_error() -> None:
    kube, pods = FakeKube(), FakePods()
    labels = render.pod_selector_labels("web")
    kube.pods = [make_pod("web-a", "10.0.0.1", labels), make_pod("web-b", "10.0.0.2", labels)]
    pods.failing = {"10.0.0.2"}
    outcome, patch = await reconcile(RUNTIME_SPEC, kube, pods)
    conds = conditions_by_type(patch.status)
    assert outcome.outcome == "progressing"
    assert conds["Ready"]["status"] == "False"
    assert conds["Reconciling"]["status"] == "True"
    assert conds["ConfigApplied"]["status"] == "False"
    assert "ConnectError" in patch.status["targets"][1]["lastError"]
    assert "web-b: ConnectError" in conds["Healthy"]["message"]
    assert patch.status["pods"]["configured"] == 1
    assert patch.status["health"]["status"] == "Unknown"  # one pod did not answer


async def test_missing_pods_keep_the_policy_progressing() -> None:
    kube, pods = FakeKube(), FakePods()
    kube.pods = [make_pod("web-a", "10.0.0.1", render.pod_selector_labels("web"))]
    outcome, patch = await reconcile(RUNTIME_SPEC, kube, pods)
    assert outcome.outcome == "progressing"
    assert patch.status["pods"] == {"desired": 2, "ready": 1, "configured": 1, "summary": "1/2"}
    assert conditions_by_type(patch.status)["Ready"]["reason"] == "PodsNotReady"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"keys": {"tiers": {"small": 5000, "medium": 1000}}}, "spec.overrides.keys.tiers.medium"),
        ({"ttl": {"no_such_key": 1}}, "no_such_key"),
    ],
)
async def test_semantically_invalid_spec_is_stalled_naming_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    kube, pods = FakeKube(), FakePods()
    outcome, patch = await reconcile({**RUNTIME_SPEC, "overrides": overrides}, kube, pods)
    conds = conditions_by_type(patch.status)
    assert outcome.outcome == "stalled"
    assert conds["Stalled"]["status"] == "True"
    assert conds["Stalled"]["reason"] == "InvalidSpec"
    assert field in conds["Stalled"]["message"]
    assert conds["Ready"]["status"] == "False"
    assert conds["Reconciling"]["status"] == "False"
    assert kube.applied == [] and pods.pushes == []


async def test_paused_policy_applies_and_pushes_nothing_but_reports() -> None:
    kube, pods = FakeKube(), FakePods()
    labels = render.pod_selector_labels("web")
    kube.pods = [make_pod("web-a", "10.0.0.1", labels)]
    pods.hashes = {"10.0.0.1": "old"}
    outcome, patch = await reconcile({**RUNTIME_SPEC, "paused": True}, kube, pods)
    assert outcome.outcome == "paused"
    assert kube.applied == [] and pods.pushes == []
    conds = conditions_by_type(patch.status)
    assert conds["Reconciling"]["reason"] == "Paused"
    assert conds["Ready"]["status"] == "False"
    assert patch.status["targets"][0]["configHash"] == "old"


async def test_selector_mode_without_pods_is_ready_and_gets_no_runtime_children() -> None:
    kube, pods = FakeKube(), FakePods()
    spec = {"preset": "production", "selector": {"matchLabels": {"app": "shop"}}}
    outcome, patch = await reconcile(spec, kube, pods)
    assert outcome.outcome == "ready"
    assert kube.applied == [
        f"Secret/{render.token_secret_name('web')}",
        f"ConfigMap/{render.configmap_name('web')}",
    ]
    # A switch from runtime mode removes the runtime Deployment and Service.
    assert kube.deleted == [
        f"Deployment/{render.deployment_name('web')}",
        f"Service/{render.service_name('web')}",
    ]
    assert patch.status["pods"]["summary"] == "0/0"


async def test_selector_mode_pushes_to_selected_pods_on_their_port() -> None:
    kube, pods = FakeKube(), FakePods()
    kube.pods = [make_pod("shop-1", "10.0.0.9", {"app": "shop"}), make_pod("other", "10.0.0.8", {"app": "x"})]
    spec = {"preset": "production", "selector": {"matchLabels": {"app": "shop"}, "port": 9000}}
    outcome, patch = await reconcile(spec, kube, pods)
    assert pods.pushes == ["10.0.0.9"]
    assert patch.status["pods"]["desired"] == 1
    assert outcome.pods[0].ip == "10.0.0.9"


async def test_redis_service_host_resolves_to_a_ready_pod_ip_when_asked() -> None:
    kube, pods = FakeKube(), FakePods()
    kube.objects[("Service", "ns", "redis")] = {"spec": {"selector": {"app": "redis"}}}
    spec = {**RUNTIME_SPEC, "redis": {"url": "redis://redis:6379/0"}}
    outcome, patch = await reconcile(spec, kube, pods, resolve_service_hosts=True)
    assert outcome.reason == "WaitingForRedis"
    assert conditions_by_type(patch.status)["Ready"]["reason"] == "WaitingForRedis"
    assert kube.applied == []

    kube.pods = [make_pod("redis-0", "127.0.0.7", {"app": "redis"})]
    await reconcile(spec, kube, pods, resolve_service_hosts=True)
    configmap = kube.objects[("ConfigMap", "ns", render.configmap_name("web"))]
    assert "redis://127.0.0.7:6379/0" in configmap["data"][render.CONFIG_KEY]

    # Without the devcluster option the URL is used as written.
    await reconcile(spec, kube, pods)
    configmap = kube.objects[("ConfigMap", "ns", render.configmap_name("web"))]
    assert "redis://redis:6379/0" in configmap["data"][render.CONFIG_KEY]


async def test_delete_removes_every_child() -> None:
    kube, pods = FakeKube(), FakePods()
    await reconcile(RUNTIME_SPEC, kube, pods)
    deleted = await handle_delete(POLICY, RUNTIME_SPEC, kube=kube, logger=FakeLogger())
    assert len(deleted) == 4
    assert kube.objects == {}


async def test_delete_of_owned_children_only_leaves_a_new_policy_of_the_same_name_alone() -> None:
    """The daemon deletes with owned_only: a policy re-created under the same name at once (no
    finalizer holds the old one) keeps the children it already owns; the old policy's go."""
    kube, pods = FakeKube(), FakePods()
    await reconcile(RUNTIME_SPEC, kube, pods)
    old = PolicyRef(POLICY.name, POLICY.namespace, "uid-of-the-old-one")
    assert await handle_delete(old, RUNTIME_SPEC, kube=kube, logger=FakeLogger(), owned_only=True) == []
    assert len(kube.objects) == 4
    deleted = await handle_delete(POLICY, RUNTIME_SPEC, kube=kube, logger=FakeLogger(), owned_only=True)
    assert len(deleted) == 4 and kube.objects == {}


def test_aggregate_health_weights_hit_rates_by_lookups() -> None:
    def view(name: str, rate: float, lookups: int, status: str = "healthy") -> PodView:
        return PodView(
            name,
            "ip",
            True,
            health={
                "status": status,
                "hit_rates": {"overall": rate, "l1": rate, "lookups": lookups},
                "memory": {"bytes": 10},
                "latency": {"get": {"p95_ms": rate * 10}},
                "redis": {"status": "connected", "breaker_state": "closed"},
            },
        )

    health = aggregate_health([view("a", 1.0, 300), view("b", 0.0, 100, "degraded")], NOW)
    assert health["hitRate"] == 0.75
    assert health["hitRatePercent"] == "75.0%"
    assert health["memoryBytes"] == 20
    assert health["p95LatencyMs"] == 10.0
    assert health["status"] == "Degraded"
    assert health["redis"] == "Connected"
    assert "b" in health["message"]
    empty = aggregate_health([], NOW)
    assert empty["status"] == "Unknown" and empty["hitRate"] is None


def test_redis_host_helpers() -> None:
    assert rewrite_redis_host("redis://redis:6379/2", "127.0.0.5") == "redis://127.0.0.5:6379/2"
    assert (
        rewrite_redis_host("rediss://user@redis.ns.svc:6380", "127.0.0.5") == "rediss://user@127.0.0.5:6380"
    )
    assert service_name_of_host("redis", "ns") == "redis"
    assert service_name_of_host("redis.ns.svc.cluster.local", "ns") == "redis"
    assert service_name_of_host("redis.other", "ns") is None
    assert service_name_of_host("redis.example.com", "ns") is None


async def test_probe_pass_applies_nothing_unless_the_hash_moved() -> None:
    kube, pods = FakeKube(), FakePods()
    kube.pods = [make_pod("web-a", "10.0.0.1", render.pod_selector_labels("web"))]
    spec = {**RUNTIME_SPEC, "runtime": {"replicas": 1}}
    _, patch = await reconcile(spec, kube, pods)
    kube.applied.clear()
    await reconcile(spec, kube, pods, status=patch.status, apply_children=False)
    assert kube.applied == []
    # A status from an older spec (another hash) makes even a probe pass apply.
    await reconcile({**spec, "preset": "simple"}, kube, pods, status=patch.status, apply_children=False)
    assert f"ConfigMap/{render.configmap_name('web')}" in kube.applied


async def test_pod_index_replaces_the_list_call_with_the_same_selection() -> None:
    kube, pods = FakeKube(), FakePods()
    indexed = [
        make_pod("shop-1", "10.0.0.9", {"app": "shop", "tier": "web"}),
        make_pod("shop-2", "10.0.0.10", {"app": "shop", "tier": "batch"}),
        make_pod("other", "10.0.0.8", {"app": "x"}),
    ]
    spec = {
        "preset": "production",
        "selector": {
            "matchLabels": {"app": "shop"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}],
        },
    }

    async def no_list(namespace: str, label_selector: str) -> list[dict[str, Any]]:
        raise AssertionError("the index must be used instead of a list call")

    kube.list_pods = no_list  # type: ignore[method-assign]
    outcome, patch = await reconcile(spec, kube, pods, pods_in_namespace=lambda ns: indexed)
    assert [v.name for v in outcome.pods] == ["shop-1"]
    assert patch.status["pods"]["desired"] == 1


async def test_a_token_secret_holding_no_token_list_stalls_the_policy_and_is_left_alone() -> None:
    """A person's rotation gone wrong (a line too short to be a token) stalls the policy with reason
    InvalidTokenSecret naming the key and line, one Warning Event, the Secret untouched; once fixed,
    the next pass is Ready again."""
    kube, pods = FakeKube(), FakePods()
    labels = render.pod_selector_labels("web")
    kube.pods = [make_pod("web-a", "10.0.0.1", labels), make_pod("web-b", "10.0.0.2", labels)]
    _, patch = await reconcile(RUNTIME_SPEC, kube, pods)
    key = ("Secret", "ns", render.token_secret_name("web"))
    good = dict(kube.objects[key]["data"])
    admin = base64.b64decode(good[render.ADMIN_TOKEN_KEY]).decode()
    broken = {**good, render.ADMIN_TOKEN_KEY: base64.b64encode(f"{admin}\nshort\n".encode()).decode()}
    kube.objects[key] = {**kube.objects[key], "data": broken}
    events: list[tuple[str, str, str]] = []
    status = dict(patch.status)  # what the daemon's merge of each pass's patch leaves in the cluster
    outcome, patch = await reconcile(RUNTIME_SPEC, kube, pods, status=status,
                                     events=lambda *event: events.append(event))
    status.update(patch.status)
    assert outcome.outcome == "stalled" and outcome.reason == "InvalidTokenSecret"
    stalled = conditions_by_type(patch.status)["Stalled"]
    assert stalled["status"] == "True" and stalled["reason"] == "InvalidTokenSecret"
    assert render.ADMIN_TOKEN_KEY in stalled["message"] and "line 2" in stalled["message"]
    assert "short" not in stalled["message"] and admin not in stalled["message"]  # never the token
    assert kube.objects[key]["data"] == broken
    assert [(t, r) for t, r, _ in events] == [("Warning", "InvalidTokenSecret")]
    again, patch = await reconcile(RUNTIME_SPEC, kube, pods, status=status,
                                   events=lambda *event: events.append(event))
    status.update(patch.status)
    assert again.outcome == "stalled" and len(events) == 1  # not one Event per pass
    kube.objects[key] = {**kube.objects[key], "data": good}
    fixed, patch = await reconcile(RUNTIME_SPEC, kube, pods, status=status)
    assert fixed.outcome == "ready" and conditions_by_type(patch.status)["Stalled"]["status"] == "False"


def test_aggregate_health_shows_the_detection_window_and_the_lifetime_apart() -> None:
    """hitRate (the printer column) is the pods' health window, the one detection judges: a fresh
    LowHitRate shows there while the lifetime figure is still high."""

    def view(name: str, window: float, lifetime: float) -> PodView:
        return PodView(
            name,
            "ip",
            True,
            health={
                "status": "degraded",
                "hit_rates": {"overall": window, "l1": window, "lookups": 200, "window_seconds": 61.2},
                "lifetime_hit_rates": {"overall": lifetime, "lookups": 5000},
                "memory": {"bytes": 1},
                "redis": {"status": "connected", "breaker_state": "closed"},
            },
        )

    health = aggregate_health([view("a", 0.3, 0.9), view("b", 0.2, 0.95)], NOW)
    assert health["hitRatePercent"] == "25.0%" and health["hitRate"] == 0.25
    assert health["lifetimeHitRate"] == 0.925 and health["windowSeconds"] == 61.2
