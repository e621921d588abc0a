"""Manual CacheIncidents end to end on devcluster: the real operator (a subprocess), real runtime pods
(3 replicas of one policy) and a real redis-server pod.

Each test creates incidents and checks what a user sees (status: phase, conditions, one record per pod;
``kubectl get cinc`` columns) and what each pod says about itself: ``GET /internal/cache/actions`` proves
that every target pod executed the action exactly once (a replay would be counted apart).
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from devcluster.cluster import Cluster
from devcluster.testing import KubeTools, namespace_name, wait_for
from tests.e2e.test_operator import (
    READY_TIMEOUT,
    REDIS,
    OperatorProcess,
    admin_token,
    crds,
    pod_hash,
    policy_yaml,
    ready_policy,
    runtime_pods,
    wait_dict,
)

__all__ = ["crds"]  # the CRDs fixture, reused

POLICY = "web"
REPLICAS = 3
# Runtime route names as the pods' action journal counts them.
JOURNAL_NAME = {
    "clear": "clear",
    "invalidate": "invalidate",
    "gc": "gc",
    "reset-config": "reset-config",
    "reconnect-redis": "redis/reconnect",
    "compress-existing": "compress-existing",
    "isolate": "emergency/isolate",
    "restore": "emergency/restore",
}


class OperatorSlot:
    """The module's operator process, replaceable: the restart-safety test kills and restarts it."""

    def __init__(self, cluster: Cluster, log_dir: Path) -> None:
        self.cluster = cluster
        self.log_dir = log_dir
        self.starts = 0
        self.proc = self._start()

    def _start(self) -> OperatorProcess:
        self.starts += 1
        proc = OperatorProcess(self.cluster, self.log_dir / f"operator-{self.starts}.log")
        _wait_live(proc)
        return proc

    def log_tail(self, lines: int = 60) -> str:
        """The current operator's last log lines."""
        return self.proc.log_tail(lines)

    def kill_and_restart(self) -> None:
        """SIGKILL the operator (its own pid, nothing else) and start a new one."""
        self.proc.process.send_signal(signal.SIGKILL)
        self.proc.process.wait(15)
        self.proc.stop()  # closes its log
        self.proc = self._start()


@pytest.fixture(scope="module")
def operator(
    dev_cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorSlot]:
    """One operator for the module (restartable)."""
    slot = OperatorSlot(dev_cluster, tmp_path_factory.mktemp("operator"))
    try:
        yield slot
    finally:
        slot.proc.stop()


def _wait_live(proc: OperatorProcess) -> None:
    wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{proc.liveness_port}/healthz", timeout=2).status_code == 200,
        60,
        "operator liveness endpoint",
    )


@pytest.fixture(scope="module")
def ns(dev_cluster: Cluster, kube: KubeTools, operator: OperatorSlot) -> Iterator[str]:
    """One namespace for the module with Redis and a Ready 3-pod policy (pods are slow to start: shared)."""
    name = namespace_name("incidents")
    api = dev_cluster.api
    api.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    try:
        wait_for(lambda: api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"), 60, "default SA")
        kube.apply(REDIS, name)
        spec = {
            "preset": "development",
            "redis": {"url": "redis://redis:6379/0"},
            "runtime": {"replicas": REPLICAS},
            "health": {"probeIntervalSeconds": 5},
        }
        kube.apply(policy_yaml(POLICY, spec), name)
        wait_dict(
            lambda: (
                (p := ready_policy(kube, name, POLICY)) and p["status"]["pods"]["ready"] == REPLICAS and p
            ),
            READY_TIMEOUT,
            "policy web Ready with 3 pods",
        )
        yield name
    finally:
        kube.kubectl("delete", "cacheincidents", "--all", "-n", name, "--timeout", "60s", check=False)
        kube.kubectl("delete", "cachepolicies", "--all", "-n", name, "--timeout", "60s", check=False)
        api.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture(autouse=True)
def _operator_log_in_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """The operator's log tail after each test (pytest shows it when one fails)."""
    yield
    if "operator" in request.fixturenames:
        print("---- operator log ----\n" + request.getfixturevalue("operator").log_tail())


# --- helpers -------------------------------------------------------------------------------------


def pods_of(kube: KubeTools, ns: str) -> list[dict[str, Any]]:
    """The policy's Running runtime pods, by name."""
    pods = [p for p in runtime_pods(kube, ns, POLICY) if p["status"].get("phase") == "Running"]
    return sorted(pods, key=lambda p: p["metadata"]["name"])


def journal(pod: dict[str, Any], token: str) -> dict[str, Any]:
    """The pod's own action counters (GET /internal/cache/actions)."""
    response = httpx.get(
        f"http://{pod['status']['podIP']}:8080/internal/cache/actions",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def executed(kube: KubeTools, ns: str, action: str, dry_run: bool = False) -> dict[str, int]:
    """Per pod: how many times it executed ``action`` (or dry-ran it)."""
    token = admin_token(kube, ns, POLICY)
    key = "dry_runs" if dry_run else "executed"
    return {
        p["metadata"]["name"]: int(journal(p, token).get(key, {}).get(JOURNAL_NAME[action], 0))
        for p in pods_of(kube, ns)
    }


def incident_yaml(name: str, spec: dict[str, Any]) -> str:
    """A CacheIncident manifest."""
    return json.dumps(
        {
            "apiVersion": "cachewarden.io/v1alpha1",
            "kind": "CacheIncident",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def terminal(kube: KubeTools, ns: str, name: str) -> dict[str, Any] | None:
    """The incident once its phase is terminal, else None."""
    inc = kube.kubectl_json("get", "cacheincident", name, "-n", ns)
    return inc if (inc.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Skipped") else None


def run_incident(kube: KubeTools, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Create the incident and wait for it to end; returns it."""
    kube.apply(incident_yaml(name, {"policyRef": {"name": POLICY}, **spec}), ns)
    return wait_dict(lambda: terminal(kube, ns, name), 90, f"incident {name} terminal")


def results_by_pod(inc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """status.results keyed by pod."""
    return {r["pod"]: r for r in inc["status"].get("results") or []}


def cond(inc: dict[str, Any], type_: str) -> dict[str, Any]:
    """One condition ({} when absent)."""
    return next((c for c in inc["status"].get("conditions") or [] if c["type"] == type_), {})


# --- tests ---------------------------------------------------------------------------------------

POD_ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("clear", {}),
    ("invalidate", {"parameters": {"pattern": "*:summarize:*"}}),
    ("invalidate", {"parameters": {"namespace": "tenant-a"}}),
    ("gc", {}),
    ("reset-config", {}),
    ("reconnect-redis", {}),
    ("compress-existing", {"parameters": {"maxEntries": 100}}),
    ("isolate", {}),
    ("restore", {}),
]


def test_every_pod_action_runs_exactly_once_per_pod(operator: OperatorSlot, kube: KubeTools, ns: str) -> None:
    """Each runtime action as a manual incident: Succeeded, one Succeeded record per pod with its
    idempotency key, and each pod's own journal moved by exactly one for that action."""
    names = [p["metadata"]["name"] for p in pods_of(kube, ns)]
    assert len(names) == REPLICAS
    for index, (action, extra) in enumerate(POD_ACTIONS):
        before = executed(kube, ns, action)
        inc = run_incident(
            kube, ns, f"manual-{index}-{action}", {"action": action, "severity": "high", **extra}
        )
        shown = json.dumps(inc["status"], indent=1)
        assert inc["status"]["phase"] == "Succeeded", shown
        assert cond(inc, "Succeeded")["status"] == "True", shown
        assert cond(inc, "Running")["status"] == "False", shown
        records = results_by_pod(inc)
        assert sorted(records) == names, shown
        uid = inc["metadata"]["uid"]
        for pod, record in records.items():
            assert record["result"] == "Succeeded", shown
            assert record["idempotencyKey"] == f"{uid}:{action}:{pod}", shown
            assert record["startedAt"] and record["completedAt"], shown
        after = executed(kube, ns, action)
        assert {pod: after[pod] - before.get(pod, 0) for pod in names} == {pod: 1 for pod in names}, (
            action,
            before,
            after,
        )
    # Events: one per step and one at the end, on the incident.
    events = kube.kubectl_json(
        "get", "events", "-n", ns, "--field-selector", "involvedObject.name=manual-0-clear"
    )["items"]
    reasons = sorted(e["reason"] for e in events)
    assert reasons.count("StepSucceeded") == REPLICAS and "Completed" in reasons, reasons


def test_dry_run_and_target_pods_subset(operator: OperatorSlot, kube: KubeTools, ns: str) -> None:
    """dryRun: pods dry-run, execute nothing; targetPods: only the named pods act."""
    names = [p["metadata"]["name"] for p in pods_of(kube, ns)]
    before, dry_before = executed(kube, ns, "clear"), executed(kube, ns, "clear", dry_run=True)
    inc = run_incident(kube, ns, "dry-clear", {"action": "clear", "dryRun": True})
    assert inc["status"]["phase"] == "Succeeded", inc["status"]
    assert executed(kube, ns, "clear") == before
    dry_after = executed(kube, ns, "clear", dry_run=True)
    assert {p: dry_after[p] - dry_before.get(p, 0) for p in names} == {p: 1 for p in names}

    subset = [names[0], names[2]]
    before = executed(kube, ns, "gc")
    inc = run_incident(kube, ns, "subset-gc", {"action": "gc", "targetPods": subset})
    assert sorted(results_by_pod(inc)) == subset, inc["status"]
    after = executed(kube, ns, "gc")
    assert {p: after[p] - before.get(p, 0) for p in names} == {names[0]: 1, names[1]: 0, names[2]: 1}

    inc = run_incident(kube, ns, "subset-bad", {"action": "gc", "targetPods": ["no-such-pod"]})
    assert inc["status"]["phase"] == "Failed" and "spec.targetPods" in inc["status"]["message"], inc["status"]


def test_diagnose_fills_diagnosis(operator: OperatorSlot, kube: KubeTools, ns: str) -> None:
    """diagnose reads every pod's health report into status.diagnosis (one record per pod)."""
    inc = run_incident(kube, ns, "diag", {"action": "diagnose"})
    status = inc["status"]
    assert status["phase"] == "Succeeded", status
    assert "diagnosis" in status and "diagnosedAt" in status["diagnosis"], status
    assert status["cause"], status
    assert {r["result"] for r in results_by_pod(inc).values()} == {"Succeeded"}, status
    assert len(results_by_pod(inc)) == REPLICAS


def test_missing_policy_fails(operator: OperatorSlot, kube: KubeTools, ns: str) -> None:
    """An incident naming no existing policy fails, saying which field."""
    kube.apply(incident_yaml("orphan", {"policyRef": {"name": "nope"}, "action": "gc"}), ns)
    inc = wait_dict(lambda: terminal(kube, ns, "orphan"), 60, "orphan terminal")
    assert inc["status"]["phase"] == "Failed"
    assert "spec.policyRef.name" in inc["status"]["message"]


def test_kubectl_get_cinc_columns(operator: OperatorSlot, kube: KubeTools, ns: str) -> None:
    """`kubectl get cinc` shows policy, action, severity and phase."""
    run_incident(kube, ns, "cols-gc", {"action": "gc", "severity": "critical"})
    table = kube.kubectl("get", "cinc", "cols-gc", "-n", ns).stdout.splitlines()
    header = table[0].split()
    row = table[1].split()
    values = dict(zip(header, row, strict=False))
    assert values["NAME"] == "cols-gc", table
    assert values.get("POLICY") == POLICY, table
    assert values.get("ACTION") == "gc", table
    assert values.get("SEVERITY") == "critical", table
    assert values.get("PHASE") == "Succeeded", table


def test_apply_preset_override_then_lifted(operator: OperatorSlot, kube: KubeTools, ns: str) -> None:
    """apply-preset: the override appears in the policy's status (its spec untouched), every pod's hash
    changes, and after expiry the pods return to the spec's hash."""
    policy = kube.kubectl_json("get", "cachepolicy", POLICY, "-n", ns)
    spec_before = policy["spec"]
    hash_before = policy["status"]["configHash"]
    token = admin_token(kube, ns, POLICY)
    inc = run_incident(
        kube,
        ns,
        "preset",
        {"action": "apply-preset", "parameters": {"preset": "conservative", "durationSeconds": 60}},
    )
    assert inc["status"]["phase"] == "Succeeded", inc["status"]
    policy = kube.kubectl_json("get", "cachepolicy", POLICY, "-n", ns)
    assert policy["spec"] == spec_before
    override = policy["status"].get("override") or {}
    assert override.get("preset") == "conservative" and override.get("incident") == "preset", policy["status"]

    def pods_hash_changed() -> bool:
        return all(pod_hash(p, token) not in (None, hash_before) for p in pods_of(kube, ns))

    assert wait_for(pods_hash_changed, 60, "every pod on the override's hash")
    assert wait_for(
        lambda: (
            kube.kubectl_json("get", "cachepolicy", POLICY, "-n", ns)["status"].get("preset")
            == "conservative"
        ),
        60,
        "the policy's status showing the override's preset",
    )

    def back_to_spec() -> bool:
        return all(pod_hash(p, token) == hash_before for p in pods_of(kube, ns))

    assert wait_for(back_to_spec, 120, "every pod back on the spec's hash after expiry")
    # Deleting the incident removes the (expired) override record too.
    kube.kubectl("delete", "cinc", "preset", "-n", ns, "--timeout", "60s")
    assert wait_for(
        lambda: "override" not in kube.kubectl_json("get", "cachepolicy", POLICY, "-n", ns)["status"],
        30,
        "override record removed",
    )


def test_restart_safety_sigkill_mid_incident(operator: OperatorSlot, kube: KubeTools, ns: str) -> None:
    """The operator SIGKILLed at a random point of a 3-pod incident, then restarted (bounded trials):
    every incident ends Succeeded and every pod executed the action exactly once (its own journal)."""
    rng = random.Random(20261125)
    names = [p["metadata"]["name"] for p in pods_of(kube, ns)]
    trials = 4
    before = executed(kube, ns, "gc")
    for trial in range(trials):
        name = f"restart-{trial}"
        kube.apply(incident_yaml(name, {"policyRef": {"name": POLICY}, "action": "gc"}), ns)
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere between not yet seen and finished
        operator.kill_and_restart()
        inc = wait_dict(partial(terminal, kube, ns, name), 120, f"incident {name} terminal")
        assert inc["status"]["phase"] == "Succeeded", json.dumps(inc["status"], indent=1)
        assert sorted(results_by_pod(inc)) == names
    after = executed(kube, ns, "gc")
    assert {p: after[p] - before.get(p, 0) for p in names} == {p: trials for p in names}, (before, after)
