"""An automatic CacheIncident end to end on devcluster: the real operator (a ``cachewarden operator``
subprocess), 2 real runtime pods and a real redis-server pod.

Redis is stopped (its Deployment scaled to 0, the pod deleted) while the test sends bounded traffic
through the pods' data API, so their L2 calls fail and their breakers open. The operator must then
open one automatic ``RedisUnavailable`` incident named deterministically, diagnosed ``RedisUnreachable``,
and — remediation ``Auto``, ``reconnect-redis`` allowed by default — run ``reconnect-redis`` once on
every pod (each pod's own action journal says so) and record the cooldown in the policy's status.
Redis is started again: the pods are pushed its new address, healthy traffic follows, and the
incident is resolved (phase ``Resolved``, ``resolvedAt``) without a second incident ever appearing.

Waits are generous and bounded; nothing is timed (``bench/incidents.py`` times such scenarios).
About 1-2 minutes including the cluster start.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cache_operator.incidents.naming import LABEL_SOURCE, LABEL_SYMPTOM
from devcluster.cluster import Cluster
from devcluster.testing import KubeTools, WaitTimeout, wait_for
from tests.e2e.support import (
    READY_TIMEOUT,
    REDIS,
    OperatorProcess,
    admin_token,
    crds,
    get_policy,
    journal,
    metric_value,
    policy_yaml,
    ready_policy,
    runtime_pods,
    serve_operator,
    wait_dict,
)

__all__ = ["crds"]  # the CRDs fixture, reused

POLICY = "shop"
REPLICAS = 2
SYMPTOM = "RedisUnavailable"
DETECT_TIMEOUT = 180.0
TRAFFIC_KEYS = 20
MAX_BURSTS = 120  # every traffic loop is bounded in bursts as well as in time


@pytest.fixture(scope="module")
def operator(
    dev_cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator process for the module."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    yield from serve_operator(OperatorProcess(dev_cluster, log))


@pytest.fixture(autouse=True)
def _operator_log_in_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """The operator's log tail after the test (pytest shows it when it fails)."""
    yield
    if "operator" in request.fixturenames:
        print("---- operator log ----\n" + request.getfixturevalue("operator").log_tail(120))


def auto_incidents(kube: KubeTools, namespace: str) -> list[dict[str, Any]]:
    """The namespace's automatic incidents of the RedisUnavailable symptom."""
    listed = kube.kubectl_json(
        "get", "cacheincidents", "-n", namespace, "-l", f"{LABEL_SOURCE}=auto,{LABEL_SYMPTOM}={SYMPTOM}"
    )
    return list(listed["items"])


def traffic(kube: KubeTools, namespace: str, prefix: str) -> None:
    """One bounded burst: every pod is asked for TRAFFIC_KEYS keys and stores each miss (errors are
    expected while Redis is down: the pods then serve from L1 and count the L2 failures)."""
    token = admin_token(kube, namespace, POLICY)
    for pod in runtime_pods(kube, namespace, POLICY):
        ip = pod["status"].get("podIP")
        if not ip:
            continue
        with httpx.Client(
            base_url=f"http://{ip}:8080", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as client:
            for index in range(TRAFFIC_KEYS):
                key = f"{prefix}-{index}"
                try:
                    if client.get(f"/data/v1/keys/{key}").status_code == 404:
                        client.put(f"/data/v1/keys/{key}", json={"value": {"n": index}})
                except httpx.HTTPError:
                    pass  # a pod busy reconnecting: the next burst asks again


def drive_until(kube: KubeTools, namespace: str, prefix: str, done: Any, timeout: float, what: str) -> Any:
    """Send traffic bursts until ``done()`` returns something truthy (bounded by time and bursts)."""
    deadline = time.monotonic() + timeout
    for burst in range(MAX_BURSTS):
        value = done()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        traffic(kube, namespace, f"{prefix}-{burst % 3}")
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}; last: {done()!r}")


def scale_redis(kube: KubeTools, namespace: str, replicas: int) -> None:
    """Scale the Redis Deployment and wait until its pod is gone (0) or Ready (1)."""
    kube.kubectl("scale", "deployment", "redis", f"--replicas={replicas}", "-n", namespace)

    def settled() -> bool:
        pods = kube.kubectl_json("get", "pods", "-n", namespace, "-l", "app=redis")["items"]
        if replicas == 0:
            return not pods
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            for c in p["status"].get("conditions") or []
        )

    wait_for(settled, 90, f"Redis scaled to {replicas}")


def test_redis_stopped_opens_diagnoses_remediates_and_resolves(
    operator: OperatorProcess, kube: KubeTools, namespace: str
) -> None:
    kube.apply(REDIS, namespace)
    spec = {
        "preset": "development",
        "redis": {"url": "redis://redis:6379/0"},
        "runtime": {"replicas": REPLICAS},
        "health": {"probeIntervalSeconds": 5, "consecutiveProbes": 2},
        "remediation": {"mode": "Auto"},  # allowedActions default: gc, reconnect-redis, diagnose
    }
    kube.apply(policy_yaml(POLICY, spec), namespace)
    try:
        wait_dict(
            lambda: (
                (p := ready_policy(kube, namespace, POLICY))
                and p["status"]["pods"]["ready"] == REPLICAS
                and p["status"]["health"]["redis"] == "Connected"
                and p
            ),
            READY_TIMEOUT,
            "policy Ready with Redis connected",
        )
        traffic(kube, namespace, "warm")  # some healthy L2 traffic first

        # --- fault: Redis stopped -------------------------------------------------------------
        scale_redis(kube, namespace, 0)
        opened = drive_until(
            kube,
            namespace,
            "down",
            lambda: auto_incidents(kube, namespace),
            DETECT_TIMEOUT,
            "an automatic RedisUnavailable incident",
        )
        assert len(opened) == 1, [i["metadata"]["name"] for i in opened]
        name = opened[0]["metadata"]["name"]
        assert name.startswith(f"{POLICY}-redisunavailable-")
        assert opened[0]["spec"]["action"] == "reconnect-redis"
        assert opened[0]["metadata"]["ownerReferences"][0]["name"] == POLICY

        # Diagnosed, then run (Auto) on every pod exactly once. The misses while Redis is down can
        # open LowHitRate in the same probe pass (it happens on a loaded machine); its diagnosis is the
        # same cause and recommends the same action, so whichever incident's safety decision comes
        # first runs reconnect-redis and the other waits out the action's cooldown (Pending,
        # CooldownActive naming the first). Either way every pod reconnects exactly once.
        last_seen: dict[str, Any] = {}

        def cooling_down(status: dict[str, Any]) -> bool:
            return status.get("phase") == "Pending" and any(
                c.get("reason") == "CooldownActive" for c in status.get("conditions") or []
            )

        def settled() -> dict[str, Any] | None:
            inc = kube.kubectl_json("get", "cacheincident", name, "-n", namespace)
            status = inc.get("status") or {}
            last_seen["status"] = status
            done = status.get("phase") in ("Succeeded", "Failed") or status.get("resolvedFromPhase")
            return inc if (done or cooling_down(status)) and status.get("diagnosis") else None

        try:
            incident = wait_dict(settled, 120, f"incident {name} diagnosed and run (or cooling down)")
        except WaitTimeout as exc:
            last = json.dumps(last_seen.get("status"))
            raise AssertionError(f"{exc}; the incident's last status: {last}") from None
        status = incident["status"]
        assert status["detection"]["source"] == "Auto" and status["detection"]["symptom"] == SYMPTOM
        assert sorted(status["detection"]["evidence"]["pods"]) == sorted(
            p["metadata"]["name"] for p in runtime_pods(kube, namespace, POLICY)
        )
        assert status["cause"] == "RedisUnreachable"
        top = status["diagnosis"]["causes"][0]
        assert top["name"] == "RedisUnreachable" and top["action"] == "reconnect-redis"
        assert top["recommendation"] and top["evidence"]["pods"]
        policy = get_policy(kube, namespace, POLICY)
        runner = policy["status"]["lastActions"][0]["incident"]
        assert {"action": "reconnect-redis", "incident": runner} == {
            k: v for k, v in policy["status"]["lastActions"][0].items() if k != "at"
        }
        if runner != name:
            assert cooling_down(status) and runner in status.get("message", ""), status
            assert runner.startswith(f"{POLICY}-lowhitrate-"), runner
        ran = wait_dict(
            lambda: (
                (inc := kube.kubectl_json("get", "cacheincident", runner, "-n", namespace))
                and ((inc.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                     or (inc.get("status") or {}).get("resolvedFromPhase"))
                and inc
            ),
            120,
            f"incident {runner} run",
        )
        results = {r["pod"]: r for r in ran["status"]["results"]}
        pods = runtime_pods(kube, namespace, POLICY)
        assert sorted(results) == sorted(p["metadata"]["name"] for p in pods)
        assert all(r["step"] == "reconnect-redis" and r["result"] == "Succeeded" for r in results.values())
        token = admin_token(kube, namespace, POLICY)
        for pod in pods:  # the pod's own journal: executed once, never replayed into a second run
            assert journal(pod, token)["executed"].get("redis/reconnect") == 1, pod["metadata"]["name"]
        assert name in policy["status"]["activeIncidents"]
        entry = next(s for s in policy["status"]["symptoms"] if s["name"] == SYMPTOM)
        assert entry["active"] and entry["incident"] == name

        # --- repair: Redis back ---------------------------------------------------------------
        scale_redis(kube, namespace, 1)

        def resolved() -> dict[str, Any] | None:
            inc = kube.kubectl_json("get", "cacheincident", name, "-n", namespace)
            return inc if (inc.get("status") or {}).get("phase") == "Resolved" else None

        incident = drive_until(kube, namespace, "up", resolved, DETECT_TIMEOUT, f"incident {name} Resolved")
        status = incident["status"]
        assert status["resolvedAt"]
        if runner == name:
            # Its action was verified by its effect: reconnect-redis while Redis is down does not help
            # (Failed, RemediationIneffective); if Redis came back within the verification probes the
            # figure recovered (Succeeded, Remediated).
            verdict = (status.get("remediation") or {}).get("state")
            assert (status["resolvedFromPhase"], verdict) in (
                ("Succeeded", "Remediated"),
                ("Failed", "Ineffective"),
            ), status
        else:
            assert status["resolvedFromPhase"] == "Pending"
        assert next(c for c in status["conditions"] if c["type"] == "Resolved")["status"] == "True"
        # One incident for the whole episode: re-detections found it, none was created beside it.
        assert [i["metadata"]["name"] for i in auto_incidents(kube, namespace)] == [name]
        policy = wait_dict(
            lambda: (
                (p := get_policy(kube, namespace, POLICY))
                and name not in (p["status"].get("activeIncidents") or [])
                and p
            ),
            60,
            "activeIncidents without the resolved incident",
        )
        assert all(s["name"] != SYMPTOM or not s["active"] for s in policy["status"].get("symptoms") or [])
        tracked = next(c for c in policy["status"]["conditions"] if c["type"] == "SymptomsTracked")
        assert tracked["status"] == "True"
        metrics = operator.metrics()
        for event in ("opened", "resolved"):
            sample = f'cachewarden_operator_auto_incidents_total{{event="{event}",symptom="{SYMPTOM}"}}'
            assert metric_value(metrics, sample) == 1.0, (sample, metrics)
    finally:
        # While the operator runs (its finalizers are on these objects).
        kube.kubectl("delete", "cacheincidents", "--all", "-n", namespace, "--timeout", "60s", check=False)
        kube.kubectl("delete", "cachepolicies", "--all", "-n", namespace, "--timeout", "60s", check=False)
