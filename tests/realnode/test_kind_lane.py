"""The product on a real node: kind on our node image, the chart and the quickstart exactly as shipped.

In order (one cluster, one release): the node is real (kubelet, containerd, kube-proxy, CoreDNS,
NetworkPolicy enforcer); ``helm install`` runs the operator from our image under its ServiceAccount
with kopf's liveness; ``examples/quickstart.yaml`` reaches Ready with ``redis://redis:6379/0`` through
the Service and cluster DNS (no host rewriting); a preset change reaches every pod without a rollout;
the real kubelet swaps the ConfigMap volume (``..data``) and the runtime's poller picks it up; the token
Secret mount is readable by the non-root user; restricted Pod Security is enforced; the NetworkPolicy
refuses a pod without the allowed labels on the runtime's port; Redis scaled to 0 opens an automatic
incident that resolves when Redis is back; ``helm uninstall`` runs the pre-delete hook as a Job.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cache_operator import render
from cache_operator.api import CachePolicySpec
from devcluster.testing import KubeTools, namespace_manifest, wait_for
from tests.realnode.support import KindLane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cachewarden"
QUICKSTART = REPO / "examples" / "quickstart.yaml"
FINALIZER = "cachewarden.io/finalizer"
RELEASE = "cachewarden"
SYSTEM_NS = "cachewarden-system"
APP_NS = "quickstart"
CLIENT_LABEL = "cachewarden.io/test-client"
TIMEOUT = 240.0


def _create_namespace(kube: KubeTools, name: str) -> None:
    kube.kubectl("apply", "-f", "-", input=json.dumps(namespace_manifest(name)))
    wait_for(lambda: kube.kubectl("get", "serviceaccount", "default", "-n", name,
                                  check=False).returncode == 0, 60, f"ServiceAccount {name}/default")


def runtime_pods(kube: KubeTools, name: str = "quickstart") -> list[dict[str, Any]]:
    """The policy's runtime pods that are not being deleted."""
    pods = kube.kubectl_json("get", "pods", "-n", APP_NS, "-l", render.pod_selector_string(name))["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def pod_readyz(kube: KubeTools, pod: str) -> dict[str, Any]:
    """The runtime's own /readyz, asked from inside its container (no NetworkPolicy applies there)."""
    script = ("import urllib.request; "
              "print(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=5).read().decode())")
    out = kube.kubectl("exec", "-n", APP_NS, pod, "-c", "runtime", "--", "python3", "-c", script).stdout
    return dict(json.loads(out))


def every_pod_reports(kube: KubeTools, want: str, count: int) -> bool:
    """``count`` Running runtime pods, each reporting config hash ``want`` itself."""
    pods = runtime_pods(kube)
    if len(pods) != count or any(p["status"].get("phase") != "Running" for p in pods):
        return False
    return all(pod_readyz(kube, p["metadata"]["name"]).get("config_hash") == want for p in pods)


def policy(kube: KubeTools) -> dict[str, Any]:
    """The quickstart policy as stored."""
    return dict(kube.kubectl_json("get", "cachepolicy", "quickstart", "-n", APP_NS))


def condition(obj: dict[str, Any], kind: str) -> str | None:
    """The status of condition ``kind``, or None."""
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return str(item["status"])
    return None


def expected_hash(spec: dict[str, Any]) -> str:
    """The config hash computed here from the spec, with the Redis URL as written (DNS resolves it)."""
    model = CachePolicySpec.model_validate(spec)
    assert model.redis is not None and model.redis.url == "redis://redis:6379/0"
    return render.resolve_policy_config(model, redis_url=model.redis.url).config_hash()


def reconciled(kube: KubeTools) -> str:
    """Wait for Ready at the current generation and the hash on every pod; returns the hash."""
    generation = policy(kube)["metadata"]["generation"]

    def ready_now() -> dict[str, Any] | None:
        current = policy(kube)
        at_generation = (current.get("status") or {}).get("observedGeneration") == generation
        return current if at_generation and condition(current, "Ready") == "True" else None

    current = wait_for(ready_now, TIMEOUT, f"CachePolicy quickstart Ready for generation {generation}")
    want = expected_hash(current["spec"])
    assert current["status"]["configHash"] == want
    replicas = current["spec"]["runtime"]["replicas"]
    wait_for(lambda: every_pod_reports(kube, want, replicas), TIMEOUT, f"{replicas} pods reporting {want}")
    return want


@pytest.fixture(scope="module")
def installed(kind_lane: KindLane) -> Iterator[KindLane]:
    """The chart installed (NetworkPolicy on for the quickstart namespace) and the quickstart applied."""
    kube = kind_lane.kube
    _create_namespace(kube, SYSTEM_NS)
    _create_namespace(kube, APP_NS)
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    extra_from = json.dumps([{"podSelector": {"matchLabels": {CLIENT_LABEL: "allowed"}}}])
    kube.helm("install", RELEASE, str(CHART), "--namespace", SYSTEM_NS,
              "--set", "networkPolicy.enabled=true", "--set", f"networkPolicy.namespaces={{{APP_NS}}}",
              "--set-json", f"networkPolicy.extraFrom={extra_from}",
              "--wait", "--timeout", "300s", timeout=330)
    kube.kubectl("apply", "-n", APP_NS, "-f", str(QUICKSTART))
    yield kind_lane


def test_the_node_is_real(kind_lane: KindLane) -> None:
    kube = kind_lane.kube
    (node,) = kube.kubectl_json("get", "nodes")["items"]
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.36.3"
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert condition(node, "Ready") == "True"
    system = kube.kubectl_json("get", "pods", "-n", "kube-system")["items"]
    running = [p["metadata"]["name"] for p in system if p["status"].get("phase") == "Running"]
    for part in ("coredns-", "kube-proxy-", "kube-router-", "etcd-", "kube-apiserver-"):
        assert any(name.startswith(part) for name in running), (part, sorted(running))
    # Cluster DNS answers for Service names from a pod (our image's Python resolver).
    script = ("import socket\n"
              "print(socket.gethostbyname('kubernetes.default.svc.cluster.local'))\n"
              "print(socket.gethostbyname('kube-dns.kube-system'))\n")
    pod = python_pod(kind_lane.app_image, f"dns-{uuid.uuid4().hex[:5]}", {}, script)
    out = pod_output(kube, "default", pod)
    assert out.split() == ["10.96.0.1", "10.96.0.10"], out
    # A Service without endpoints refuses at once; its ClusterIP never leaves the node.
    kube.kubectl("create", "service", "clusterip", "nobody-home", "--tcp=6379:6379", "-n", "default")
    try:
        ip = kube.kubectl_json("get", "service", "nobody-home", "-n", "default")["spec"]["clusterIP"]
        script = ("import socket\n"
                  "try:\n"
                  f"    s = socket.create_connection(('{ip}', 6379), timeout=5); s.sendall(b'PING\\r\\n')\n"
                  "    print('ANSWERED', s.recv(64))\n"
                  "except OSError as exc:\n"
                  "    print('REFUSED', type(exc).__name__)\n")
        out = pod_output(kube, "default", python_pod(kind_lane.app_image, f"noep-{uuid.uuid4().hex[:5]}", {},
                                                     script))
        assert out == "REFUSED ConnectionRefusedError", out
    finally:
        kube.kubectl("delete", "service", "nobody-home", "-n", "default", "--ignore-not-found")


def test_chart_runs_the_operator_under_its_service_account(installed: KindLane) -> None:
    kube = installed.kube
    pods = kube.kubectl_json("get", "pods", "-n", SYSTEM_NS, "-l",
                             "app.kubernetes.io/component=operator")["items"]
    (pod,) = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert pod["spec"]["serviceAccountName"] == RELEASE  # the chart's full name for this release
    container = pod["spec"]["containers"][0]
    assert container["image"] == installed.app_image
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] is True and status["restartCount"] == 0
    # Non-root with a read-only root file system, enforced by the real runtime: the process's uid.
    uid = kube.kubectl("exec", "-n", SYSTEM_NS, pod["metadata"]["name"], "--", "python3", "-c",
                       "import os; print(os.getuid())").stdout.strip()
    assert uid != "0"
    denied = kube.kubectl("exec", "-n", SYSTEM_NS, pod["metadata"]["name"], "--", "python3", "-c",
                          "open('/opt/written-by-test', 'w')", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr


def test_quickstart_as_shipped_reaches_ready_through_service_dns(installed: KindLane) -> None:
    kube = installed.kube
    first = reconciled(kube)
    current = policy(kube)
    assert current["spec"]["redis"]["url"] == "redis://redis:6379/0"
    assert current["status"]["health"]["redis"] == "Connected"
    assert condition(current, "RedisConnected") == "True"
    # Every pod reads its token Secret as the non-root user: the admin API answers with that token.
    token_script = (
        "import os, urllib.request; "
        f"token = open('{render.TOKENS_DIR}/{render.ADMIN_TOKEN_KEY}').read().split()[0]; "
        "req = urllib.request.Request('http://127.0.0.1:8080/internal/cache/status', "
        "headers={'Authorization': 'Bearer ' + token}); "
        "print(os.getuid(), urllib.request.urlopen(req, timeout=5).status)")
    for pod in runtime_pods(kube):
        out = kube.kubectl("exec", "-n", APP_NS, pod["metadata"]["name"], "-c", "runtime", "--",
                           "python3", "-c", token_script).stdout.split()
        assert out[0] != "0" and out[1] == "200", out
    # A preset change reaches every pod without a rollout.
    uids = {p["metadata"]["uid"] for p in runtime_pods(kube)}
    kube.kubectl("patch", "cachepolicy", "quickstart", "-n", APP_NS, "--type", "merge",
                 "-p", json.dumps({"spec": {"preset": "ai-production"}}))
    second = reconciled(kube)
    assert second != first
    assert {p["metadata"]["uid"] for p in runtime_pods(kube)} == uids


def test_restricted_pod_security_is_enforced(installed: KindLane) -> None:
    kube = installed.kube
    labels = kube.kubectl_json("get", "namespace", APP_NS)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged-attempt"},
           "spec": {"containers": [{"name": "c", "image": installed.app_image, "imagePullPolicy": "Never",
                                    "securityContext": {"privileged": True}}]}}
    refused = kube.kubectl("apply", "-n", APP_NS, "-f", "-", input=json.dumps(pod), check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr


def python_pod(image: str, name: str, labels: dict[str, str], script: str) -> dict[str, Any]:
    """A pod (restricted profile) that runs ``script`` with our image's Python once."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "client", "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True},
            }],
        },
    }


def pod_output(kube: KubeTools, namespace: str, pod: dict[str, Any]) -> str:
    """Create ``pod``, wait until it has finished, return its log (the pod is deleted afterwards)."""
    name = pod["metadata"]["name"]
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    try:
        wait_for(lambda: kube.kubectl_json("get", "pod", name, "-n", namespace)["status"].get("phase")
                 in {"Succeeded", "Failed"}, 120, f"pod {name} finished")
        return kube.kubectl("logs", "-n", namespace, name).stdout.strip()
    finally:
        kube.kubectl("delete", "pod", name, "-n", namespace, "--wait=false", "--ignore-not-found")


def connect_script(target: str, seconds: int) -> str:
    """Python that tries a TCP connection to the runtime's port once a second for ``seconds`` and says
    CONNECTED at the first success, else REFUSED with the last error. (The enforcer learns a new pod's
    address from the API shortly after the pod starts, so a first attempt may be refused either way.)"""
    return ("import socket, time\n"
            f"deadline = time.monotonic() + {seconds}\n"
            "result = 'REFUSED never tried'\n"
            "while time.monotonic() < deadline:\n"
            "    try:\n"
            f"        socket.create_connection(('{target}', 8080), timeout=2).close()\n"
            "        result = 'CONNECTED'\n"
            "        break\n"
            "    except OSError as exc:\n"
            "        result = 'REFUSED ' + type(exc).__name__\n"
            "        time.sleep(1)\n"
            "print(result)\n")


def test_network_policy_refuses_pods_without_the_allowed_labels(installed: KindLane) -> None:
    kube = installed.kube
    reconciled(kube)
    target = runtime_pods(kube)[0]["status"]["podIP"]
    suffix = uuid.uuid4().hex[:5]
    # The allowed client first: once it connects, the enforcer has the namespace's policy in force.
    allowed = pod_output(kube, APP_NS, python_pod(installed.app_image, f"client-allowed-{suffix}",
                                                  {CLIENT_LABEL: "allowed"}, connect_script(target, 60)))
    assert allowed == "CONNECTED", allowed
    # A pod without the label, trying for 15 s, never gets through.
    denied = pod_output(kube, APP_NS, python_pod(installed.app_image, f"client-denied-{suffix}", {},
                                                 connect_script(target, 15)))
    assert denied.startswith("REFUSED"), denied


def test_configmap_volume_swapped_by_the_kubelet_reaches_the_runtime(installed: KindLane) -> None:
    """With the operator stopped (so nothing pushes), an edit of the policy's ConfigMap reaches the pods
    only through the kubelet's atomic ``..data`` swap and the runtime's file poller."""
    kube = installed.kube
    reconciled(kube)
    deployment = f"deployment/{RELEASE}"  # the chart's full name for a release named cachewarden
    kube.kubectl("scale", deployment, "-n", SYSTEM_NS, "--replicas=0")
    try:
        wait_for(lambda: not kube.kubectl_json("get", "pods", "-n", SYSTEM_NS, "-l",
                                               "app.kubernetes.io/component=operator")["items"],
                 120, "the operator stopped")
        stored = policy(kube)
        spec = dict(stored["spec"], preset="production")
        model = CachePolicySpec.model_validate(spec)
        assert model.redis is not None
        resolved = render.resolve_policy_config(model, redis_url=model.redis.url)
        configmap = render.render_configmap(_Identity(stored["metadata"]), resolved)
        kube.kubectl("patch", "configmap", render.configmap_name("quickstart"), "-n", APP_NS,
                     "--type", "merge", "-p", json.dumps({"data": configmap["data"]}))
        want = resolved.config_hash()
        replicas = policy(kube)["spec"]["runtime"]["replicas"]
        wait_for(lambda: every_pod_reports(kube, want, replicas), 240, f"pods reading {want} from the file")
        pod = runtime_pods(kube)[0]["metadata"]["name"]
        listing = kube.kubectl("exec", "-n", APP_NS, pod, "-c", "runtime", "--", "ls", "-la",
                               render.CONFIG_DIR).stdout
        assert "..data ->" in listing, listing
    finally:
        kube.kubectl("scale", deployment, "-n", SYSTEM_NS, "--replicas=1")
    reconciled(kube)  # the operator repairs the drift: back to the policy's own config


class _Identity:
    """The stored policy's identity, as the renderers read it."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.name, self.namespace = metadata["name"], metadata["namespace"]
        self.uid, self.generation = metadata["uid"], metadata["generation"]


def test_redis_scaled_to_zero_opens_an_incident_that_resolves(installed: KindLane) -> None:
    kube = installed.kube
    reconciled(kube)
    kube.kubectl("scale", "deployment/redis", "-n", APP_NS, "--replicas=0")
    try:
        def incident() -> dict[str, Any] | None:
            items = kube.kubectl_json("get", "cacheincidents", "-n", APP_NS, "-l",
                                      "cachewarden.io/symptom=RedisUnavailable")["items"]
            return items[0] if items else None
        opened = wait_for(incident, 180, "an automatic RedisUnavailable incident")
        assert opened["metadata"]["labels"]["cachewarden.io/incident-source"] == "auto"
    finally:
        kube.kubectl("scale", "deployment/redis", "-n", APP_NS, "--replicas=1")
    name = opened["metadata"]["name"]

    def resolved_now() -> dict[str, Any] | None:
        current = kube.kubectl_json("get", "cacheincident", name, "-n", APP_NS)
        return dict(current) if (current.get("status") or {}).get("phase") == "Resolved" else None

    resolved = wait_for(resolved_now, 300, f"incident {name} Resolved")
    assert resolved["status"]["resolvedAt"]


def test_helm_uninstall_runs_the_pre_delete_hook_job(installed: KindLane) -> None:
    kube = installed.kube
    result = kube.helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait", "--timeout", "300s",
                       timeout=330)
    assert "uninstalled" in result.stdout
    current = policy(kube)
    assert FINALIZER not in (current["metadata"].get("finalizers") or [])
    events = kube.kubectl_json("get", "events", "-n", SYSTEM_NS)["items"]
    hook_jobs = {e["involvedObject"]["name"] for e in events
                 if e["involvedObject"]["kind"] == "Job" and e.get("reason") == "Completed"}
    assert hook_jobs, [(e["involvedObject"]["kind"], e.get("reason")) for e in events]
    kube.kubectl("delete", "cachepolicy", "quickstart", "-n", APP_NS, "--timeout=60s")
