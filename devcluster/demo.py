"""The demo ``cachewarden dev up`` installs: CRDs, the operator as a pod, Redis and the quickstart policy.

The operator runs the way it runs on a real cluster: a Deployment (image ``cachewarden``, which the
process kubelet maps to this checkout's console script) under its own ServiceAccount with a
ClusterRole, so RBAC is enforced on it. Its only devcluster-specific flag is
``--resolve-service-hosts`` (no Service routing here: ``redis://redis:6379`` is resolved to the Redis
pod's IP). ``dev down`` stops it with every other pod.

After the policy is Ready, a short burst of AI lookups and stores is sent to the runtime pods through
their data API, so ``kubectl get cachepolicies`` shows a real hit rate at the next probe.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
CRDS_DIR = REPO / "crds"
OPERATOR_NAMESPACE = "cachewarden-system"
DEMO_NAMESPACE = "default"
POLICY = "quickstart"

OPERATOR_MANIFEST = f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {OPERATOR_NAMESPACE}
  # The operator's pod passes the restricted Pod Security profile: enforce it (docs/reliability.md).
  labels: {{pod-security.kubernetes.io/enforce: restricted, pod-security.kubernetes.io/warn: restricted}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: cachewarden-operator, namespace: {OPERATOR_NAMESPACE}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: cachewarden-operator}}
rules:
  - apiGroups: [cachewarden.io]
    resources: [cachepolicies, cacheincidents]
    verbs: [get, list, watch, patch, update]
  - apiGroups: [cachewarden.io]
    resources: [cachepolicies/status, cacheincidents/status]
    verbs: [get, patch, update]
  - apiGroups: [""]
    resources: [configmaps, secrets, services]
    verbs: [get, list, watch, create, patch, update, delete]
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, list, watch, create, patch, update, delete]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch]
  - apiGroups: ["", events.k8s.io]
    resources: [events]
    verbs: [create, patch]
  - apiGroups: [apiextensions.k8s.io]
    resources: [customresourcedefinitions]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [namespaces]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: cachewarden-operator}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cachewarden-operator}}
subjects:
  - {{kind: ServiceAccount, name: cachewarden-operator, namespace: {OPERATOR_NAMESPACE}}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cachewarden-operator
  namespace: {OPERATOR_NAMESPACE}
  labels: {{app.kubernetes.io/name: cachewarden-operator}}
spec:
  replicas: 1
  strategy: {{type: Recreate}}
  selector: {{matchLabels: {{app.kubernetes.io/name: cachewarden-operator}}}}
  template:
    metadata: {{labels: {{app.kubernetes.io/name: cachewarden-operator}}}}
    spec:
      serviceAccountName: cachewarden-operator
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile: {{type: RuntimeDefault}}
      containers:
        - name: operator
          image: ghcr.io/cachewarden/cachewarden:0.1.0
          securityContext:
            allowPrivilegeEscalation: false
            privileged: false
            capabilities: {{drop: [ALL]}}
          args: [operator, --all-namespaces, --resolve-service-hosts,
                 --liveness, "http://$(POD_IP):8081/healthz",
                 --metrics-address, "$(POD_IP)", --metrics-port, "9090"]
          env:
            - name: POD_IP
              valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
          ports:
            - {{name: health, containerPort: 8081}}
            - {{name: metrics, containerPort: 9090}}
          livenessProbe:
            httpGet: {{path: /healthz, port: health}}
            initialDelaySeconds: 10
            periodSeconds: 10
          readinessProbe:
            httpGet: {{path: /healthz, port: health}}
            periodSeconds: 2
"""


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # not there yet
            last = exc
        else:
            if value:
                return value
            last = value
        time.sleep(0.5)
    raise TimeoutError(f"demo: timed out after {timeout:g}s waiting for {what}; last observed: {last!r}")


class Demo:
    """kubectl against the cluster plus the steps of the demo."""

    def __init__(self, kubeconfig: Path, kubectl: Path, progress: Callable[[str], None] = print) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl_path = kubectl
        self.progress = progress

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        """Run kubectl; raise with its stderr on failure."""
        result = subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def install(self, timeout: float = 180.0) -> None:
        """CRDs, operator, Redis and the quickstart policy; returns once the policy is Ready."""
        self.progress("demo: applying CRDs")
        self.kubectl("apply", "-f", str(CRDS_DIR))
        # Polled: `kubectl wait` fails outright on a CRD whose status has no conditions yet.
        for crd in ("cachepolicies.cachewarden.io", "cacheincidents.cachewarden.io"):
            _wait(partial(self.crd_established, crd), 60, f"CRD {crd} Established")
        self.progress("demo: starting the operator (a pod in cachewarden-system)")
        self.kubectl("apply", "-f", "-", stdin=OPERATOR_MANIFEST)
        self.kubectl(
            "rollout",
            "status",
            "-n",
            OPERATOR_NAMESPACE,
            "deployment/cachewarden-operator",
            f"--timeout={int(timeout)}s",
        )
        self.progress("demo: applying examples/quickstart.yaml (Redis + CachePolicy quickstart)")
        self.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", str(QUICKSTART))
        _wait(self.policy_ready, timeout, f"CachePolicy {DEMO_NAMESPACE}/{POLICY} Ready")
        self.progress("demo: sending a little traffic so the hit rate is live")
        self.send_traffic()
        try:  # the next health probe (spec.health.probeIntervalSeconds) brings the hit rate into status
            _wait(
                lambda: ((self.policy().get("status") or {}).get("health") or {}).get("hitRate") is not None,
                30,
                "a hit rate in the policy's status",
            )
        except TimeoutError as exc:
            self.progress(f"demo: {exc}")

    def crd_established(self, name: str) -> bool:
        """The CRD's Established condition is True."""
        crd = json.loads(self.kubectl("get", "crd", name, "-o", "json"))
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    def policy(self) -> dict[str, Any]:
        """The quickstart policy as stored."""
        return json.loads(self.kubectl("get", "cachepolicy", POLICY, "-n", DEMO_NAMESPACE, "-o", "json"))

    def policy_ready(self) -> bool:
        """Ready=True on the quickstart policy."""
        conditions = (self.policy().get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def send_traffic(self, requests_per_pod: int = 60, distinct_texts: int = 12) -> None:
        """AI lookups (and a store after each miss) on every runtime pod: repeats make hits."""
        secret = json.loads(
            self.kubectl("get", "secret", f"{POLICY}-cachewarden-tokens", "-n", DEMO_NAMESPACE, "-o", "json")
        )
        token = base64.b64decode(secret["data"]["admin-token"]).decode()
        for target in (self.policy().get("status") or {}).get("targets") or []:
            ip = target.get("ip")
            if not ip:
                continue
            for i in range(requests_per_pod):
                request = {"operation": "summarize", "text": f"demo document {i % distinct_texts}"}
                found = _post(f"http://{ip}:8080/data/v1/ai/lookup", token, request)
                if not (isinstance(found, dict) and found.get("hit")):
                    _post(
                        f"http://{ip}:8080/data/v1/ai/store", token, {**request, "value": {"summary": "..."}}
                    )

    def table(self) -> str:
        """``kubectl get cachepolicies`` in the demo namespace."""
        return self.kubectl("get", "cachepolicies", "-n", DEMO_NAMESPACE)


def _post(url: str, token: str, body: dict[str, Any]) -> Any:
    """POST JSON; the decoded answer, or None on any error (the demo's traffic is best effort)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")
    except Exception:
        return None


def start_demo(kubeconfig: Path, bin_dir: Path, progress: Callable[[str], None] = print) -> str:
    """Install the demo on a running cluster (idempotent: everything is applied); returns the
    ``kubectl get cachepolicies`` table."""
    demo = Demo(kubeconfig, bin_dir / "kubectl", progress)
    demo.install()
    return demo.table()
