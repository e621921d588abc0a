"""Capture the GitOps health fixtures from a real operator on devcluster.

    .venv/bin/python gitops/capture_fixtures.py            # about a minute on 2 cores

Starts a private devcluster (the same binaries as the e2e tests), applies the CRDs, runs
``cachewarden operator`` watching one namespace, drives CachePolicies and CacheIncidents into the
states below, and writes each object as the operator left it (kubectl get -o yaml, minus
managedFields and server bookkeeping) to
``gitops/argocd/resource_customizations/cachewarden.io/<Kind>/testdata/<state>.yaml``.
The expected health of each is in that directory's ``health_test.yaml`` (written by hand, from what
the state means, never from what the scripts return).

Automatic incidents come from a Recommend-mode policy whose Redis is scaled to 0 and back. Running
and Pending are too short-lived to catch reliably; those two are constructed in ``testdata/`` from the
status the executor writes (``cache_operator/incidents/executor_io.py``); their files say so.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devcluster.testing import KubeTools, binaries_or_skip, start_test_cluster, wait_for  # noqa: E402

TESTDATA = REPO / "gitops" / "argocd" / "resource_customizations" / "cachewarden.io"
WATCHED = "cw-fixtures"
UNWATCHED = "cw-unwatched"
TIMEOUT = 180.0

REDIS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis}
spec:
  replicas: 1
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      containers:
        - name: redis
          image: redis:7
          args: ["--save", "", "--appendonly", "no"]
          ports: [{name: redis, containerPort: 6379}]
          readinessProbe: {exec: {command: [redis-cli, ping]}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  selector: {app: redis}
  ports: [{name: redis, port: 6379, targetPort: redis}]
"""


def policy(name: str, spec: dict[str, Any]) -> str:
    """A CachePolicy manifest."""
    return json.dumps({"apiVersion": "cachewarden.io/v1alpha1", "kind": "CachePolicy",
                       "metadata": {"name": name}, "spec": spec})


def incident(name: str, spec: dict[str, Any]) -> str:
    """A CacheIncident manifest."""
    return json.dumps({"apiVersion": "cachewarden.io/v1alpha1", "kind": "CacheIncident",
                       "metadata": {"name": name}, "spec": spec})


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without server bookkeeping that says nothing about health."""
    meta = obj.get("metadata") or {}
    for key in ("managedFields", "resourceVersion", "uid", "selfLink"):
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if not annotations:
        meta.pop("annotations", None)
    return obj


class Capture:
    """The cluster, kubectl and the operator of one capture run."""

    def __init__(self, kube: KubeTools) -> None:
        self.kube = kube

    def get(self, kind: str, name: str, namespace: str = WATCHED) -> dict[str, Any]:
        """The object as stored."""
        return dict(self.kube.kubectl_json("get", kind, name, "-n", namespace))

    def wait(self, kind: str, name: str, predicate: Callable[[dict[str, Any]], bool], what: str,
             namespace: str = WATCHED) -> dict[str, Any]:
        """Poll until ``predicate(object)``; return the object."""
        def probe() -> dict[str, Any] | None:
            obj = self.get(kind, name, namespace)
            return obj if predicate(obj) else None
        found = wait_for(probe, TIMEOUT, what, interval=0.05)
        assert isinstance(found, dict)
        return found

    def save(self, kind: str, state: str, obj: dict[str, Any], note: str) -> None:
        """Write one fixture."""
        path = TESTDATA / kind / "testdata" / f"{state}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# Captured from a real operator on devcluster by gitops/capture_fixtures.py: {note}\n"
        path.write_text(header + yaml.safe_dump(clean(obj), sort_keys=False, width=110))
        print(f"wrote {path.relative_to(REPO)}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    """One status condition ({} when absent)."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def phase(obj: dict[str, Any]) -> str | None:
    """status.phase."""
    return (obj.get("status") or {}).get("phase")


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    """Run every scenario and write the fixtures."""
    bin_dir = binaries_or_skip()
    with tempfile.TemporaryDirectory(prefix="cw-capture-") as tmp:
        cluster = start_test_cluster(Path(tmp) / "cluster", bin_dir)
        operator: subprocess.Popen[bytes] | None = None
        try:
            kube = KubeTools(cluster.kubeconfig, cluster.control_plane.bin_dir, Path(tmp) / "tools")
            kube.kubectl("apply", "-f", str(REPO / "crds"))
            for crd in ("cachepolicies.cachewarden.io", "cacheincidents.cachewarden.io"):
                kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
            wait_for(lambda: kube.kubectl("get", "cpol", "-A", check=False).returncode == 0, 60, "kind known")
            for ns in (WATCHED, UNWATCHED):
                kube.kubectl("create", "namespace", ns)
            log = (Path(tmp) / "operator.log").open("wb")
            operator = subprocess.Popen(
                [str(Path(sys.executable).parent / "cachewarden"), "operator", "--namespace", WATCHED,
                 "--resolve-service-hosts", "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
            )
            run_scenarios(Capture(kube), kube, operator)
        finally:
            if operator is not None and operator.poll() is None:
                operator.send_signal(signal.SIGTERM)
                try:
                    operator.wait(15)
                except subprocess.TimeoutExpired:
                    operator.kill()
            cluster.stop()
    return 0


def run_scenarios(cap: Capture, kube: KubeTools, operator: subprocess.Popen[bytes]) -> None:
    """Drive the objects into each state and save them."""
    kube.apply(REDIS, WATCHED)
    runtime = {"replicas": 1}
    base = {"preset": "ai-development", "redis": {"url": "redis://redis:6379/0"}, "runtime": runtime,
            "health": {"probeIntervalSeconds": 5}}

    # CachePolicy --------------------------------------------------------------------------------
    kube.apply(policy("converging", base), WATCHED)
    obj = cap.wait("cpol", "converging", lambda o: condition(o, "Reconciling").get("status") == "True",
                   "converging policy Reconciling=True")
    cap.save("CachePolicy", "reconciling", obj, "just created; its runtime pod is not ready yet")

    obj = cap.wait("cpol", "converging", lambda o: condition(o, "Ready").get("status") == "True",
                   "policy Ready")
    cap.save("CachePolicy", "ready", obj, "Ready: its pod runs the config hash")

    # A Redis Service with no pod behind it (yet): the operator waits instead of pushing.
    kube.apply('{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis-later"}, "spec": '
               '{"selector": {"app": "redis-later"}, "ports": [{"port": 6379}]}}', WATCHED)
    kube.apply(policy("no-redis-yet", {**base, "redis": {"url": "redis://redis-later:6379/0"}}), WATCHED)
    obj = cap.wait("cpol", "no-redis-yet",
                   lambda o: condition(o, "Reconciling").get("reason") == "WaitingForRedis",
                   "policy WaitingForRedis")
    cap.save("CachePolicy", "waiting-for-redis", obj, "its Redis Service has no ready pod")

    invalid = {**base, "overrides": {"keys": {"tiers": {"small": 5000, "medium": 1000}}}}
    kube.apply(policy("invalid", invalid), WATCHED)
    obj = cap.wait("cpol", "invalid", lambda o: condition(o, "Stalled").get("status") == "True",
                   "policy Stalled")
    cap.save("CachePolicy", "stalled-invalid-spec", obj, "TTL tiers not ascending (InvalidSpec)")

    kube.apply(policy("paused", {**base, "paused": True}), WATCHED)
    obj = cap.wait("cpol", "paused", lambda o: condition(o, "Reconciling").get("reason") == "Paused",
                   "policy Paused")
    cap.save("CachePolicy", "paused", obj, "created with spec.paused: true")

    kube.apply(policy("unwatched", base), UNWATCHED)
    obj = cap.get("cpol", "unwatched", UNWATCHED)
    cap.save("CachePolicy", "no-status", obj, "no operator has seen it yet (no status)")

    # CacheIncident ------------------------------------------------------------------------------
    kube.apply(incident("gc-done", {"policyRef": {"name": "converging"}, "action": "gc"}), WATCHED)
    obj = cap.wait("cinc", "gc-done", lambda o: phase(o) == "Succeeded", "gc Succeeded")
    cap.save("CacheIncident", "succeeded", obj, "gc on every pod of a Ready policy")

    kube.apply(incident("clear-dry", {"policyRef": {"name": "converging"}, "action": "clear",
                                      "dryRun": True}), WATCHED)
    obj = cap.wait("cinc", "clear-dry", lambda o: phase(o) == "Succeeded", "dry-run Succeeded")
    cap.save("CacheIncident", "succeeded-dry-run", obj, "clear with dryRun: true")

    kube.apply(incident("wrong-pod", {"policyRef": {"name": "converging"}, "action": "reconnect-redis",
                                      "targetPods": ["no-such-pod"]}), WATCHED)
    obj = cap.wait("cinc", "wrong-pod", lambda o: phase(o) == "Failed", "UnknownTargetPods Failed")
    cap.save("CacheIncident", "failed-unknown-target-pods", obj, "targetPods names no pod of the policy")

    kube.apply(incident("no-policy", {"policyRef": {"name": "missing"}, "action": "gc"}), WATCHED)
    obj = cap.wait("cinc", "no-policy", lambda o: phase(o) == "Failed", "PolicyNotFound Failed")
    cap.save("CacheIncident", "failed-policy-not-found", obj, "policyRef names no CachePolicy")

    kube.apply(incident("on-paused", {"policyRef": {"name": "paused"}, "action": "clear"}), WATCHED)
    obj = cap.wait("cinc", "on-paused", lambda o: phase(o) == "Skipped", "Skipped on a paused policy")
    cap.save("CacheIncident", "skipped-policy-paused", obj, "its policy is paused")

    kube.apply(incident("unseen", {"policyRef": {"name": "unwatched"}, "action": "gc"}), UNWATCHED)
    cap.save("CacheIncident", "no-status", cap.get("cinc", "unseen", UNWATCHED),
             "no operator has seen it yet (no status)")

    # An automatic incident: Redis of a Recommend-mode policy goes away (RedisUnavailable after one
    # probe), then comes back (the symptom clears, the incident is resolved).
    flaky_redis = REDIS.replace("name: redis}", "name: redis-flaky}")
    flaky_redis = flaky_redis.replace("app: redis}", "app: redis-flaky}")
    kube.apply(flaky_redis, WATCHED)
    flaky = {**base, "redis": {"url": "redis://redis-flaky:6379/0"},
             "health": {"probeIntervalSeconds": 5, "consecutiveProbes": 1},
             "remediation": {"mode": "Recommend"}}
    kube.apply(policy("flaky", flaky), WATCHED)
    cap.wait("cpol", "flaky", lambda o: condition(o, "Ready").get("status") == "True", "flaky Ready")
    kube.kubectl("scale", "deployment", "redis-flaky", "-n", WATCHED, "--replicas", "0")

    def auto_incident(want: str) -> dict[str, Any] | None:
        items = kube.kubectl_json("get", "cinc", "-n", WATCHED, "-l", "cachewarden.io/policy=flaky")["items"]
        return next((dict(i) for i in items if phase(i) == want), None)

    obj = wait_for(lambda: auto_incident("Recommended"), TIMEOUT, "an automatic incident Recommended")
    cap.save("CacheIncident", "recommended", obj,
             "automatic RedisUnavailable incident of a Recommend-mode policy whose Redis was scaled to 0")
    kube.kubectl("scale", "deployment", "redis-flaky", "-n", WATCHED, "--replicas", "1")
    obj = wait_for(lambda: auto_incident("Resolved"), TIMEOUT, "the automatic incident Resolved")
    cap.save("CacheIncident", "resolved", obj, "the same incident after Redis came back")

    # A spec change the operator has not observed: stop it, then change the Ready policy.
    operator.send_signal(signal.SIGTERM)
    operator.wait(30)
    kube.kubectl("patch", "cpol", "converging", "-n", WATCHED, "--type", "merge",
                 "-p", '{"spec": {"preset": "ai-production"}}')
    obj = cap.get("cpol", "converging")
    assert obj["metadata"]["generation"] != obj["status"]["observedGeneration"], obj
    cap.save("CachePolicy", "generation-not-observed", obj,
             "Ready for generation 1, then spec.preset changed while the operator was stopped")


if __name__ == "__main__":
    sys.exit(main())
