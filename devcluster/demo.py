"""The demo ``cachewarden dev up`` installs: the Helm chart, Redis and the quickstart policy.

The operator is installed the way users install it: ``helm upgrade --install`` of ``charts/cachewarden``
into ``cachewarden-system`` (a namespace enforcing the restricted Pod Security profile; so is ``default``,
where the quickstart's Redis and runtime pods run), so it runs as
a pod under the chart's ServiceAccount and RBAC (image ``ghcr.io/cachewarden/cachewarden``, which the
process kubelet maps to this checkout's console script). Its only devcluster-specific value is
``operator.resolveServiceHosts=true`` (no Service routing here: ``redis://redis:6379`` is resolved to
the Redis pod's IP). The CRDs are applied first with server-side apply (the chart's documented upgrade
path), so a re-run on a kept cluster picks up changed CRDs; Helm itself never upgrades them.
``dev down`` stops the operator with every other pod.

After the policy is Ready, a short burst of AI lookups and stores is sent to the runtime pods through
their data API, so ``kubectl get cpol,cinc`` shows a real hit rate at the next probe.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from devcluster.podsecurity import namespace_manifest, pod_security_labels

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
CHART = REPO / "charts" / "cachewarden"
CHART_CRDS = CHART / "crds"
RELEASE = "cachewarden"
OPERATOR_NAMESPACE = "cachewarden-system"
OPERATOR_DEPLOYMENT = "cachewarden"  # the chart's full name for a release named "cachewarden"
DEMO_NAMESPACE = "default"
POLICY = "quickstart"
# The chart's values for devcluster: everything else is the chart's default (cluster scope, one replica,
# image ghcr.io/cachewarden/cachewarden:<appVersion>, restricted security context).
HELM_VALUES = ("operator.resolveServiceHosts=true",)

# Every pod of the demo (the chart's operator, the quickstart's Redis, the runtime pods) passes the
# restricted Pod Security profile: both namespaces enforce it (docs/reliability.md).
RESTRICTED_LABELS = pod_security_labels("restricted")
NAMESPACE_MANIFEST = json.dumps(namespace_manifest(OPERATOR_NAMESPACE, "restricted"))


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

    def __init__(self, kubeconfig: Path, kubectl: Path, progress: Callable[[str], None] = print,
                 helm: Path | None = None, helm_values: tuple[str, ...] = HELM_VALUES,
                 traffic_from_pods: bool = False) -> None:
        """``helm_values``: the chart values (devcluster's by default; a real node needs none);
        ``traffic_from_pods``: send the demo's traffic from inside each runtime pod (``kubectl exec``),
        where pod addresses are not reachable from this machine (a kind node)."""
        self.kubeconfig = kubeconfig
        self.helm_values = helm_values
        self.traffic_from_pods = traffic_from_pods
        self.kubectl_path = kubectl
        self.helm_path = helm if helm is not None else kubectl.with_name("helm")
        self.progress = progress
        # Helm's cache and config next to the kubeconfig (the run directory), never in ~/.config/helm.
        home = kubeconfig.parent / "helm"
        self.helm_env = {**os.environ, "KUBECONFIG": str(kubeconfig),
                         "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
                         "HELM_DATA_HOME": str(home / "data")}

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

    def helm(self, *args: str, timeout: float = 300) -> str:
        """Run helm; raise with its stderr on failure."""
        result = subprocess.run(
            [str(self.helm_path), *args], capture_output=True, text=True, env=self.helm_env,
            timeout=timeout, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def install_chart(self, timeout: float = 180.0) -> None:
        """CRDs (server-side apply, the chart's upgrade path), then ``helm upgrade --install`` of the
        chart with :data:`HELM_VALUES`; returns once the operator's Deployment is available."""
        self.progress("demo: applying the CRDs (kubectl apply --server-side -f charts/cachewarden/crds/)")
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART_CRDS))
        # Polled: `kubectl wait` fails outright on a CRD whose status has no conditions yet.
        for crd in ("cachepolicies.cachewarden.io", "cacheincidents.cachewarden.io"):
            _wait(partial(self.crd_established, crd), 60, f"CRD {crd} Established")
        self.kubectl("apply", "-f", "-", stdin=NAMESPACE_MANIFEST)
        self.progress(f"demo: helm upgrade --install {RELEASE} charts/cachewarden -n {OPERATOR_NAMESPACE} "
                      + " ".join(f"--set {v}" for v in self.helm_values))
        sets = [arg for value in self.helm_values for arg in ("--set", value)]
        self.helm("upgrade", "--install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, *sets,
                  "--wait", "--timeout", f"{int(timeout)}s", timeout=timeout + 60)

    def install(self, timeout: float = 180.0) -> None:
        """The chart, Redis and the quickstart policy; returns once the policy is Ready."""
        self.install_chart(timeout)
        self.progress(f"demo: namespace {DEMO_NAMESPACE} enforces the restricted Pod Security profile")
        self.kubectl("label", "namespace", DEMO_NAMESPACE, "--overwrite",
                     *(f"{key}={value}" for key, value in RESTRICTED_LABELS.items()))
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
        # An application's token: write-token reads and stores data, and nothing else (the admin token
        # is the operator's).
        token = base64.b64decode(secret["data"]["write-token"]).decode()
        if self.traffic_from_pods:
            self._send_traffic_from_pods(token, requests_per_pod, distinct_texts)
            return
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

    def _send_traffic_from_pods(self, token: str, requests_per_pod: int, distinct_texts: int) -> None:
        """The same lookups and stores, run by each runtime pod's own Python against 127.0.0.1."""
        script = (
            "import json, sys, urllib.request\n"
            "token, count, distinct = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
            "def post(path, body):\n"
            "    headers = {'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'}\n"
            "    req = urllib.request.Request('http://127.0.0.1:8080' + path,\n"
            "        data=json.dumps(body).encode(), method='POST', headers=headers)\n"
            "    with urllib.request.urlopen(req, timeout=5) as r:\n"
            "        return json.loads(r.read() or b'null')\n"
            "for i in range(count):\n"
            "    request = {'operation': 'summarize', 'text': f'demo document {i % distinct}'}\n"
            "    found = post('/data/v1/ai/lookup', request)\n"
            "    if not (isinstance(found, dict) and found.get('hit')):\n"
            "        post('/data/v1/ai/store', {**request, 'value': {'summary': '...'}})\n"
        )
        pods = json.loads(self.kubectl("get", "pods", "-n", DEMO_NAMESPACE, "-l",
                                       f"cachewarden.io/policy={POLICY}", "-o", "json"))["items"]
        for pod in pods:
            if pod["status"].get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
                continue
            try:
                self.kubectl("exec", "-n", DEMO_NAMESPACE, pod["metadata"]["name"], "-c", "runtime", "--",
                             "python3", "-c", script, token, str(requests_per_pod), str(distinct_texts))
            except RuntimeError as exc:  # best effort, like the direct path
                self.progress(f"demo: traffic from {pod['metadata']['name']} failed: {exc}")

    def table(self) -> str:
        """``kubectl get cpol,cinc`` in the demo namespace (no incidents yet prints only the policies)."""
        return self.kubectl("get", "cachepolicies,cacheincidents", "-n", DEMO_NAMESPACE)


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


def next_steps(kubeconfig: Path, bin_dir: Path) -> str:
    """What to try once the demo is up (printed after the table)."""
    return f"""
What to try next:
  export KUBECONFIG={kubeconfig} PATH={bin_dir}:$PATH
  kubectl get cpol,cinc                       # live figures: hit rate, pods configured, Redis state
  kubectl patch cpol {POLICY} --type merge -p '{{"spec":{{"preset":"ai-production"}}}}'   # pushed in < 1 s
  kubectl apply -f examples/quickstart.yaml   # ... or change the preset in the manifest (GitOps)
  kubectl scale deployment redis --replicas=0 # stop Redis, then watch an incident appear:
  kubectl get cinc -w                         #   (the next health probes, ~10 s apart, detect it)
  kubectl scale deployment redis --replicas=1 # Redis back: the pods reconnect by themselves
  helm -n {OPERATOR_NAMESPACE} status {RELEASE}             # the operator, installed from charts/cachewarden
  kubectl -n {OPERATOR_NAMESPACE} logs deploy/{OPERATOR_DEPLOYMENT}
  make down                                   # stop everything (make demo starts it again)
"""


def start_demo(kubeconfig: Path, bin_dir: Path, progress: Callable[[str], None] = print) -> str:
    """Install the demo on a running cluster (idempotent: ``helm upgrade --install`` and applies);
    returns the ``kubectl get cpol,cinc`` table followed by what to try next."""
    demo = Demo(kubeconfig, bin_dir / "kubectl", progress, helm=bin_dir / "helm")
    demo.install()
    return demo.table() + next_steps(kubeconfig, bin_dir)
