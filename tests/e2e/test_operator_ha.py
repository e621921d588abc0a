"""Operator high availability: two real ``cachewarden operator`` replicas with kopf peering.

Both run as subprocesses against the session cluster, watch one namespace, share the KopfPeering
``ha`` and have distinct random ``--priority`` values: kopf pauses the lower one (its watches and the
per-policy daemons stop) while the higher one lives. The test SIGKILLs the active replica (by pid) with
a CacheIncident in flight and checks what a user needs from HA:

- the standby never acted while paused (its own reconcile counter stays 0);
- it takes over: its first reconcile pass after the kill is measured and printed (no timing is
  asserted; the wait bound is generous). A killed replica leaves its peering record behind, so the
  takeover waits for that record to expire: ``--peering-lifetime`` (15 s here, 30 s by default);
- a preset change made after the kill reaches every pod (the survivor applied it);
- no action runs twice: an incident created while both replicas ran, and one created around the
  kill, each executed exactly once on every pod (each pod's own action journal).

The pure parts of the peering setup (flags, which peering objects an operator needs) are checked at
the end without a cluster.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cache_operator.cli import _check as check_flags
from cache_operator.cli import build_parser
from cache_operator.main import peering_objects
from devcluster.cluster import Cluster
from devcluster.testing import KubeTools, namespace_manifest, namespace_name, wait_for
from tests.e2e.support import INCIDENT_POLICY as POLICY
from tests.e2e.support import (
    READY_TIMEOUT,
    REDIS,
    admin_token,
    crds,
    executed,
    expected_hash,
    free_port,
    incident_yaml,
    pod_hash,
    policy_yaml,
    ready_policy,
    results_by_pod,
    runtime_pods,
    terminal,
    wait_dict,
)

__all__ = ["crds"]

REPO = Path(__file__).resolve().parents[2]
PEERING = "ha"
REPLICAS = 3
PEERING_LIFETIME_S = 15
TAKEOVER_BOUND_S = 180.0  # generous wait bound, not a target


class Replica:
    """One operator replica: ``cachewarden operator --peering ha --priority P`` in its own session."""

    def __init__(self, cluster: Cluster, namespace: str, priority: int, log_path: Path) -> None:
        self.priority = priority
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.log_path = log_path
        argv = [
            str(Path(sys.executable).parent / "cachewarden"),
            "operator",
            "--namespace",
            namespace,
            "--peering",
            PEERING,
            "--priority",
            str(priority),
            "--peering-lifetime",
            str(PEERING_LIFETIME_S),
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--resolve-service-hosts",
        ]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
            start_new_session=True,
        )

    def reconciles(self) -> float:
        """This replica's reconcile passes so far (sum over its counter's labels)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("cachewarden_operator_reconciles_total{")
        )

    def live(self) -> bool:
        """kopf's liveness endpoint answers 200."""
        return httpx.get(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2).status_code == 200

    def paused(self) -> bool:
        """kopf's own log: this replica has not resumed since it last paused (it starts paused)."""
        text = self.log_path.read_text(errors="replace")
        return text.count("Pausing operations") >= text.count("Resuming operations")

    def log_tail(self, lines: int = 40) -> str:
        """The replica's last log lines."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL this replica (its own pid only)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(15)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


@pytest.fixture(scope="module")
def peering_crds(kube: KubeTools, crds: None) -> None:
    """kopf's peering CRDs (crds/kopf-peering.yaml), established."""
    kube.kubectl("apply", "-f", str(REPO / "crds" / "kopf-peering.yaml"))
    for name in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    wait_for(
        lambda: kube.kubectl("get", "kopfpeerings", "-A", check=False).returncode == 0,
        60,
        "kubectl to know the KopfPeering kind",
    )


@pytest.fixture
def ha_namespace(dev_cluster: Cluster, kube: KubeTools, peering_crds: None) -> Iterator[str]:
    """A namespace with Redis; its policies and incidents removed at the end (while an operator runs)."""
    name = namespace_name("operator-ha")
    api = dev_cluster.api
    api.request("POST", "/api/v1/namespaces", namespace_manifest(name))
    try:
        wait_for(lambda: api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"), 60, "default SA")
        kube.apply(REDIS, name)
        yield name
    finally:
        api.request("DELETE", f"/api/v1/namespaces/{name}")


def peers(kube: KubeTools, ns: str) -> dict[str, dict[str, Any]]:
    """The live records of the KopfPeering: identity -> {priority, lastseen, lifetime}."""
    obj = kube.kubectl_json("get", "kopfpeering", PEERING, "-n", ns)
    return {k: v for k, v in (obj.get("status") or {}).items() if isinstance(v, dict)}


def test_standby_takes_over_after_sigkill_and_no_action_runs_twice(
    dev_cluster: Cluster, kube: KubeTools, ha_namespace: str, tmp_path: Path
) -> None:
    """Two replicas, the active one SIGKILLed with an incident in flight: the standby takes over
    (time printed), applies a preset change made after the kill, and every pod ran each incident once."""
    ns = ha_namespace
    high, low = sorted(random.sample(range(1, 10_000), 2), reverse=True)
    # Start order random too: the lower-priority replica may be first and must yield.
    order = [high, low] if random.random() < 0.5 else [low, high]
    replicas = {p: Replica(dev_cluster, ns, p, tmp_path / f"operator-prio-{p}.log") for p in order}
    active, standby = replicas[high], replicas[low]
    try:
        for replica in replicas.values():
            wait_for(replica.live, 60, f"replica {replica.priority} liveness")
        wait_for(
            lambda: sorted(p["priority"] for p in peers(kube, ns).values()) == [low, high],
            60,
            "both replicas recorded in the KopfPeering (created by the operator itself)",
        )
        # kopf starts a peered operator paused; one that started alone resumed ("Resuming operations")
        # and pauses again once it has read the higher peer's record ("Pausing operations"). Until
        # then both could act: wait for it (the runtime's idempotency keys still cover that window).
        wait_for(standby.paused, 60, f"the standby to pause\n{standby.log_tail()}")

        spec: dict[str, Any] = {
            "preset": "development",
            "redis": {"url": "redis://redis:6379/0"},
            "runtime": {"replicas": REPLICAS},
            "health": {"probeIntervalSeconds": 5},
        }
        kube.apply(policy_yaml(POLICY, spec), ns)
        wait_dict(
            lambda: (
                (p := ready_policy(kube, ns, POLICY, 1)) and p["status"]["pods"]["ready"] == REPLICAS and p
            ),
            READY_TIMEOUT,
            "policy Ready with 3 pods (reconciled by the active replica)",
        )
        assert active.reconciles() > 0
        assert standby.reconciles() == 0, standby.log_tail()  # paused: its daemons never ran

        names = sorted(p["metadata"]["name"] for p in runtime_pods(kube, ns, POLICY))
        gc_before = executed(kube, ns, "gc")
        # An incident while both replicas run: only the active one handles it.
        kube.apply(incident_yaml("ha-before", {"policyRef": {"name": POLICY}, "action": "gc"}), ns)
        inc = wait_dict(lambda: terminal(kube, ns, "ha-before"), 90, "incident ha-before terminal")
        assert inc["status"]["phase"] == "Succeeded", json.dumps(inc["status"], indent=1)
        assert standby.reconciles() == 0, standby.log_tail()

        # An incident around the kill: created, then the active replica dies somewhere in it.
        kube.apply(incident_yaml("ha-kill", {"policyRef": {"name": POLICY}, "action": "gc"}), ns)
        time.sleep(random.uniform(0.0, 1.0))
        killed_at = time.monotonic()
        active.kill()
        # A spec change made after the kill: only the survivor can apply it.
        spec["preset"] = "ai-production"
        kube.apply(policy_yaml(POLICY, spec), ns)

        wait_for(
            lambda: standby.reconciles() > 0,
            TAKEOVER_BOUND_S,
            f"the standby's first reconcile pass after the kill\n{standby.log_tail()}",
            interval=0.1,
        )
        takeover_s = time.monotonic() - killed_at
        want = expected_hash(kube, ns, spec)
        token = admin_token(kube, ns, POLICY)
        wait_for(
            lambda: all(pod_hash(p, token) == want for p in runtime_pods(kube, ns, POLICY)),
            TAKEOVER_BOUND_S,
            "every pod on the preset change's hash (applied by the survivor)",
        )
        converged_s = time.monotonic() - killed_at
        policy = wait_dict(lambda: ready_policy(kube, ns, POLICY, 2), 120, "policy Ready at generation 2")
        assert policy["status"]["configHash"] == want

        inc = wait_dict(lambda: terminal(kube, ns, "ha-kill"), TAKEOVER_BOUND_S, "incident ha-kill terminal")
        assert inc["status"]["phase"] == "Succeeded", json.dumps(inc["status"], indent=1)
        assert sorted(results_by_pod(inc)) == names
        gc_after = executed(kube, ns, "gc")
        assert {p: gc_after[p] - gc_before.get(p, 0) for p in names} == {p: 2 for p in names}, (
            gc_before,
            gc_after,
            standby.log_tail(),
        )
        print(
            f"HA takeover (lifetime {PEERING_LIFETIME_S}s): SIGKILL -> standby's first reconcile "
            f"{takeover_s:.1f}s, -> every pod on the post-kill preset {converged_s:.1f}s"
        )

        kube.kubectl("delete", "cacheincidents", "--all", "-n", ns, "--timeout", "60s", check=False)
        kube.kubectl("delete", "cachepolicies", "--all", "-n", ns, "--timeout", "60s", check=False)
    finally:
        for replica in replicas.values():
            replica.stop()


# --- the flags and the peering objects, without a cluster -------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--peering", "Bad_Name"], "--peering 'Bad_Name' is not accepted"),
        (["--peering-lifetime", "20"], "--peering-lifetime is not accepted without --peering"),
        (
            ["--peering", "ha", "--peering-lifetime", "5"],
            "--peering-lifetime 5 is not accepted; accepted: 10..3600",
        ),
        (["--priority", "3"], "--priority '3' is not accepted without --peering"),
    ],
)
def test_peering_flags_are_checked(argv: list[str], message: str) -> None:
    """Bad peering flags name the flag, the value and what is accepted."""
    problem = check_flags(build_parser().parse_args(argv))
    assert problem is not None and message in problem


def test_peering_objects_follow_the_scope() -> None:
    """One ClusterKopfPeering cluster-wide; one KopfPeering per literal watched namespace."""
    assert peering_objects("ha", True, []) == [
        (
            "/apis/kopf.dev/v1/clusterkopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "ha"}},
        )
    ]
    paths = [path for path, _ in peering_objects("ha", False, ["a", "team-*", "b"])]
    assert paths == [
        "/apis/kopf.dev/v1/namespaces/a/kopfpeerings",
        "/apis/kopf.dev/v1/namespaces/b/kopfpeerings",
    ]


def test_peering_crds_match_the_chart() -> None:
    """crds/kopf-peering.yaml and the chart's copy hold the same CRDs (kubectl and helm users alike)."""
    ours = list(yaml.safe_load_all((REPO / "crds" / "kopf-peering.yaml").read_text()))
    chart = list(
        yaml.safe_load_all((REPO / "charts/cachewarden/crds/kopfpeerings.kopf.dev.yaml").read_text())
    )
    assert ours == chart
