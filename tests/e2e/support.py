"""What the e2e tests share: the operator process and its fixtures, the one Redis manifest, and
helpers that read policies, pods and their config hashes (a support module, not a test module: the
test modules import from here, never from each other).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from cache_operator import render
from cache_operator.api import CachePolicySpec
from cache_operator.policy_inputs import rewrite_redis_host
from devcluster.cluster import Cluster
from devcluster.testing import KubeTools, namespace_manifest, namespace_name, wait_for

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 180.0



def redis_manifest(password: str | None = None) -> str:
    """The one Redis of the e2e tests: a Deployment and Service (``redis:7`` is Debian's redis-server on
    devcluster), passing the restricted Pod Security profile the test namespaces enforce: uid 999 (the
    official image's redis user), no ServiceAccount token, a read-only root filesystem. devcluster's
    kubelet ignores securityContext; the API server checks it, and a real kubelet runs it so."""
    args = ["--save", "", "--appendonly", "no"]
    probe = ["redis-cli", "ping"]
    if password:
        args += ["--requirepass", password]
        probe = ["redis-cli", "--no-auth-warning", "-a", password, "ping"]
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: redis}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: redis}}}}
  template:
    metadata: {{labels: {{app: redis}}}}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 999
        runAsGroup: 999
        seccompProfile: {{type: RuntimeDefault}}
      containers:
        - name: redis
          image: redis:7
          args: {json.dumps(args)}
          ports: [{{name: redis, containerPort: 6379}}]
          readinessProbe: {{exec: {{command: {json.dumps(probe)}}}, periodSeconds: 1}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {{drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {{name: redis}}
spec:
  selector: {{app: redis}}
  ports: [{{name: redis, port: 6379, targetPort: redis}}]
"""


REDIS = redis_manifest()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """``cachewarden operator`` running against the session cluster."""

    def __init__(self, cluster: Cluster, log_path: Path) -> None:
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.log_path = log_path
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        argv = [
            str(Path(sys.executable).parent / "cachewarden"),
            "operator",
            "--all-namespaces",
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--resolve-service-hosts",
        ]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def log_tail(self, lines: int = 60) -> str:
        """The operator's last log lines (shown when a test fails)."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> str:
        """The operator's /metrics text."""
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s: only the process this fixture started."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def crd_established(kube: KubeTools, name: str) -> bool:
    """The CRD's Established condition is True."""
    crd = kube.kubectl_json("get", "crd", name)
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def crds(kube: KubeTools) -> None:
    """The generated CRDs, applied and established."""
    kube.kubectl("apply", "-f", str(REPO / "crds"))
    # Polled rather than `kubectl wait`, which fails outright ("<nil> is of the type <nil>") when it
    # reads a CRD whose status has no conditions yet.
    for crd in ("cachepolicies.cachewarden.io", "cacheincidents.cachewarden.io"):
        wait_for(partial(crd_established, kube, crd), 60, f"CRD {crd} Established")
    # kubectl's discovery cache may predate the CRDs: wait until kubectl itself resolves the kind.
    wait_for(
        lambda: kube.kubectl("get", "cachepolicies", "--all-namespaces", check=False).returncode == 0,
        60,
        "kubectl to know the CachePolicy kind",
    )


@pytest.fixture(scope="module")
def operator(
    dev_cluster: Cluster, crds: None, kube: KubeTools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator process for the module."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    yield from serve_operator(OperatorProcess(dev_cluster, log), kube)


@pytest.fixture(autouse=True)
def operator_log_in_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """The operator's log tail after each test of a module that imports this fixture (pytest shows it
    when one fails)."""
    yield
    if "operator" in request.fixturenames:
        print("---- operator log ----\n" + request.getfixturevalue("operator").log_tail(80))


def incident_condition(incident: dict[str, Any], type_: str) -> dict[str, Any]:
    """The condition ``type_`` of a CacheIncident's status ({} when it has none)."""
    return next((c for c in (incident.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def serve_operator(proc: OperatorProcess, kube: KubeTools | None = None) -> Iterator[OperatorProcess]:
    """The body of a module's ``operator`` fixture: wait for ``proc``'s liveness endpoint, yield it, then
    (with ``kube``, while the operator still runs: its finalizer is on every policy it saw, and a policy
    left in a namespace being deleted would keep that namespace Terminating for the rest of the
    session) delete every policy, and stop the process."""
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{proc.liveness_port}/healthz", timeout=2).status_code == 200,
            60,
            "operator liveness endpoint",
        )
        yield proc
        if kube is not None:
            kube.kubectl("delete", "cachepolicies", "--all", "--all-namespaces", "--timeout", "60s",
                         check=False)
    finally:
        proc.stop()


# --- helpers -------------------------------------------------------------------------------------


def wait_dict(predicate: Callable[[], dict[str, Any] | None], timeout: float, what: str) -> dict[str, Any]:
    """``wait_for`` for predicates that return a dict once satisfied (typed for mypy)."""
    value = wait_for(predicate, timeout, what)
    assert isinstance(value, dict), value
    return value


def policy_yaml(name: str, spec: dict[str, Any]) -> str:
    """A CachePolicy manifest (JSON is YAML)."""
    return json.dumps(
        {
            "apiVersion": "cachewarden.io/v1alpha1",
            "kind": "CachePolicy",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def get_policy(kube: KubeTools, namespace: str, name: str) -> dict[str, Any]:
    """The policy as stored."""
    return kube.kubectl_json("get", "cachepolicy", name, "-n", namespace)


def condition(policy: dict[str, Any], type_: str) -> dict[str, Any]:
    """One condition of the policy's status ({} when absent)."""
    for cond in (policy.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond
    return {}


def ready_policy(
    kube: KubeTools, namespace: str, name: str, generation: int | None = None
) -> dict[str, Any] | None:
    """The policy once Ready=True for ``generation`` (or any), else None."""
    policy = get_policy(kube, namespace, name)
    status = policy.get("status") or {}
    if generation is not None and status.get("observedGeneration") != generation:
        return None
    return policy if condition(policy, "Ready").get("status") == "True" else None


@contextlib.contextmanager
def ready_policy_namespace(
    dev_cluster: Cluster, kube: KubeTools, log_path: Path, prefix: str, policy: str, spec: dict[str, Any]
) -> Iterator[str]:
    """A fresh namespace with the Redis pod and ``policy`` (``spec``, runtime mode) Ready with all its
    ``spec.runtime.replicas`` pods, the operator running (log at ``log_path``); yields the namespace
    and removes the policies, the namespace and the operator afterwards."""
    operator = OperatorProcess(dev_cluster, log_path)
    name = namespace_name(prefix)
    api = dev_cluster.api
    api.request("POST", "/api/v1/namespaces", namespace_manifest(name))
    replicas = spec["runtime"]["replicas"]
    try:
        wait_for(lambda: api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"), 60, "default SA")
        kube.apply(REDIS, name)
        kube.apply(policy_yaml(policy, spec), name)
        wait_dict(
            lambda: (
                (p := ready_policy(kube, name, policy)) and p["status"]["pods"]["ready"] == replicas and p
            ),
            READY_TIMEOUT,
            f"policy {policy} Ready with {replicas} pods",
        )
        yield name
    finally:
        kube.kubectl("delete", "cachepolicies", "--all", "-n", name, "--timeout", "60s", check=False)
        api.request("DELETE", f"/api/v1/namespaces/{name}")
        operator.stop()


def admin_token(kube: KubeTools, namespace: str, policy_name: str) -> str:
    """The admin token from the Secret the operator rendered."""
    secret = kube.kubectl_json("get", "secret", render.token_secret_name(policy_name), "-n", namespace)
    return base64.b64decode(secret["data"][render.ADMIN_TOKEN_KEY]).decode()


def runtime_pods(kube: KubeTools, namespace: str, policy_name: str) -> list[dict[str, Any]]:
    """The policy's runtime pods that are not being deleted."""
    pods = kube.kubectl_json("get", "pods", "-n", namespace, "-l", render.pod_selector_string(policy_name))
    return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]


def pod_hash(
    pod: dict[str, Any], token: str, port: int = 8080, prefix: str = "/internal/cache"
) -> str | None:
    """The config hash the pod itself reports on its health endpoint."""
    response = httpx.get(
        f"http://{pod['status']['podIP']}:{port}{prefix}/health",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()["config_hash"]


def expected_hash(kube: KubeTools, namespace: str, spec: dict[str, Any]) -> str:
    """The hash computed here, independently of the operator: spec -> engine config, with the Redis
    Service host resolved to the Redis pod's IP as the operator does on devcluster."""
    model = CachePolicySpec.model_validate(spec)
    redis_pods = kube.kubectl_json("get", "pods", "-n", namespace, "-l", "app=redis")["items"]
    url = (
        rewrite_redis_host(model.redis.url, redis_pods[0]["status"]["podIP"])
        if model.redis is not None and model.redis.url
        else None
    )
    return render.resolve_policy_config(model, redis_url=url).config_hash()


def all_pods_report(kube: KubeTools, namespace: str, name: str, want_hash: str, count: int) -> bool:
    """Exactly ``count`` Running runtime pods, each reporting ``want_hash`` itself."""
    pods = runtime_pods(kube, namespace, name)
    if len(pods) != count or any(p["status"].get("phase") != "Running" for p in pods):
        return False
    token = admin_token(kube, namespace, name)
    return all(pod_hash(p, token) == want_hash for p in pods)


def metric_value(text: str, sample: str) -> float:
    """The value of ``sample`` in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def policy_passes(operator: OperatorProcess, namespace: str, name: str) -> int:
    """Reconcile passes the operator finished for policy ``namespace/name`` (its metrics): status is
    written only when it changes, so its timestamps do not count passes."""
    sample = f'cachewarden_operator_policy_passes_total{{policy="{namespace}/{name}"}}'
    return int(metric_value(operator.metrics(), sample))


# --- incidents ---------------------------------------------------------------------------------

# The policy of the incident tests (test_incidents, test_operator_ha).
INCIDENT_POLICY = "web"
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



def pods_of(kube: KubeTools, ns: str) -> list[dict[str, Any]]:
    """The policy's Running runtime pods, by name."""
    pods = [p for p in runtime_pods(kube, ns, INCIDENT_POLICY) if p["status"].get("phase") == "Running"]
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
    token = admin_token(kube, ns, INCIDENT_POLICY)
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


def results_by_pod(inc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """status.results keyed by pod."""
    return {r["pod"]: r for r in inc["status"].get("results") or []}
