"""charts/cachewarden on devcluster with the real helm and kubectl: install -> the operator pod Running
under the chart's ServiceAccount and RBAC and reconciling examples/quickstart.yaml to Ready with the
hash every runtime pod reports itself; upgrade of a value -> a new operator pod that keeps reconciling;
uninstall -> operator gone, CRDs kept, no CachePolicy left holding the finalizer (both cleanup modes).
And RBAC: a real token of the chart's ServiceAccount (TokenRequest) is allowed everything the operator
does and refused, by the API server, what it must not do."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cache_operator import render
from cache_operator.api import CachePolicySpec
from cache_operator.policy_inputs import rewrite_redis_host
from devcluster.cluster import Cluster
from devcluster.pki import pki_layout
from devcluster.testing import KubeTools, namespace_manifest, wait_for
from tests.e2e.support import crds

REPO = Path(__file__).resolve().parents[2]
__all__ = ["crds"]  # a fixture, reused

CHART = REPO / "charts" / "cachewarden"
QUICKSTART = REPO / "examples" / "quickstart.yaml"
FINALIZER = "cachewarden.io/finalizer"
TIMEOUT = 180.0
HELM_TIMEOUT = "240s"


@pytest.fixture
def release_namespace(dev_cluster: Cluster, kube: KubeTools) -> Iterator[str]:
    """A namespace for the operator's release, deleted at teardown (with whatever is left of it)."""
    name = f"cw-system-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "-f", "-", input=json.dumps(namespace_manifest(name)))
    wait_for(lambda: kube.kubectl("get", "serviceaccount", "default", "-n", name,
                                  check=False).returncode == 0, 60, f"ServiceAccount {name}/default")
    try:
        yield name
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def helm_install(kube: KubeTools, release: str, namespace: str, *values: str) -> None:
    """``helm install --wait`` of the chart with devcluster's values plus ``values``."""
    sets = [arg for value in ("operator.resolveServiceHosts=true", *values) for arg in ("--set", value)]
    kube.helm("install", release, str(CHART), "--namespace", namespace, *sets, "--wait", "--timeout",
              HELM_TIMEOUT, timeout=300)


def operator_pods(kube: KubeTools, namespace: str, release: str) -> list[dict[str, Any]]:
    """The release's operator pods that are not being deleted."""
    pods = kube.kubectl_json("get", "pods", "-n", namespace, "-l",
                             f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator")
    return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]


def running_ready(pod: dict[str, Any]) -> bool:
    """Phase Running and the Ready condition True."""
    conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
    return pod["status"].get("phase") == "Running" and conditions.get("Ready") == "True"


def get_policy(kube: KubeTools, namespace: str, name: str) -> dict[str, Any]:
    """The policy as stored."""
    return kube.kubectl_json("get", "cachepolicy", name, "-n", namespace)


def ready(policy: dict[str, Any], generation: int | None = None) -> bool:
    """Ready=True (for ``generation`` when given)."""
    status = policy.get("status") or {}
    if generation is not None and status.get("observedGeneration") != generation:
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def expected_hash(kube: KubeTools, namespace: str, spec: dict[str, Any]) -> str:
    """The config hash computed here, independently of the operator (Redis Service host resolved to the
    Redis pod's IP as the operator does on devcluster)."""
    model = CachePolicySpec.model_validate(spec)
    redis = kube.kubectl_json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=redis")["items"]
    assert model.redis is not None and model.redis.url
    url = rewrite_redis_host(model.redis.url, redis[0]["status"]["podIP"])
    return render.resolve_policy_config(model, redis_url=url).config_hash()


def pods_report(kube: KubeTools, namespace: str, name: str, want: str, count: int) -> bool:
    """``count`` Running runtime pods, each reporting the hash ``want`` on its own health endpoint."""
    pods = kube.kubectl_json("get", "pods", "-n", namespace, "-l", render.pod_selector_string(name))["items"]
    pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    if len(pods) != count or any(p["status"].get("phase") != "Running" for p in pods):
        return False
    secret = kube.kubectl_json("get", "secret", render.token_secret_name(name), "-n", namespace)
    token = base64.b64decode(secret["data"][render.ADMIN_TOKEN_KEY]).decode()
    for pod in pods:
        response = httpx.get(f"http://{pod['status']['podIP']}:8080/internal/cache/health",
                             headers={"Authorization": f"Bearer {token}"}, timeout=5)
        if response.status_code != 200 or response.json()["config_hash"] != want:
            return False
    return True


def reconciled(kube: KubeTools, namespace: str, name: str) -> str:
    """Wait until the policy is Ready for its generation with the hash computed here on every pod;
    returns the hash."""
    policy = get_policy(kube, namespace, name)
    generation = policy["metadata"]["generation"]
    want = expected_hash(kube, namespace, policy["spec"])
    def ready_now() -> dict[str, Any] | None:
        current = get_policy(kube, namespace, name)
        return current if ready(current, generation) else None

    policy = wait_for(ready_now, TIMEOUT, f"CachePolicy {namespace}/{name} Ready for generation {generation}")
    assert policy["status"]["configHash"] == want
    replicas = policy["spec"]["runtime"]["replicas"]
    wait_for(lambda: pods_report(kube, namespace, name, want, replicas), TIMEOUT,
             f"{replicas} runtime pods reporting {want}")
    return want


def test_install_upgrade_uninstall_reconciles_and_strands_nothing(
    kube: KubeTools, namespace: str, release_namespace: str
) -> None:
    release = f"cw{uuid.uuid4().hex[:5]}"
    helm_install(kube, release, release_namespace, "rbac.scope=namespace",
                 f"rbac.watchNamespaces={{{namespace}}}")

    # The operator runs as a pod under the chart's ServiceAccount.
    (pod,) = wait_for(
        lambda: [p for p in operator_pods(kube, release_namespace, release) if running_ready(p)],
        TIMEOUT, "the operator pod Running and Ready")
    assert pod["spec"]["serviceAccountName"] == f"{release}-cachewarden"
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert f"--namespace={namespace}" in pod["spec"]["containers"][0]["args"]
    for crd in ("cachepolicies.cachewarden.io", "cacheincidents.cachewarden.io"):
        kube.kubectl("get", "crd", crd)

    # It reconciles the quickstart end to end.
    kube.kubectl("apply", "-n", namespace, "-f", str(QUICKSTART))
    first = reconciled(kube, namespace, "quickstart")

    # helm upgrade changing a value: a new operator pod, which keeps reconciling.
    kube.helm("upgrade", release, str(CHART), "--namespace", release_namespace, "--reuse-values",
              "--set", "operator.logLevel=DEBUG", "--wait", "--timeout", HELM_TIMEOUT, timeout=300)
    (new_pod,) = wait_for(
        lambda: [p for p in operator_pods(kube, release_namespace, release)
                 if running_ready(p) and p["metadata"]["uid"] != pod["metadata"]["uid"]],
        TIMEOUT, "a new operator pod Running")
    assert "--log-level=DEBUG" in new_pod["spec"]["containers"][0]["args"]
    assert len(operator_pods(kube, release_namespace, release)) == 1  # Recreate: never two at once
    kube.kubectl("patch", "cachepolicy", "quickstart", "-n", namespace, "--type", "merge",
                 "-p", json.dumps({"spec": {"preset": "ai-production"}}))
    second = reconciled(kube, namespace, "quickstart")
    assert second != first

    # helm uninstall (cleanup.onUninstall=orphan): the hook stops the operator and strips its finalizer.
    result = kube.helm("uninstall", release, "--namespace", release_namespace, "--wait", "--timeout",
                       HELM_TIMEOUT, timeout=300)
    assert "uninstalled" in result.stdout
    assert kube.kubectl_json("get", "deployments", "-n", release_namespace)["items"] == []
    wait_for(lambda: operator_pods(kube, release_namespace, release) == [], 60, "the operator pods gone")
    for crd in ("cachepolicies.cachewarden.io", "cacheincidents.cachewarden.io"):
        kube.kubectl("get", "crd", crd)  # kept
    policy = get_policy(kube, namespace, "quickstart")
    assert FINALIZER not in (policy["metadata"].get("finalizers") or [])
    incidents = kube.kubectl_json("get", "cacheincidents", "-n", namespace)["items"]
    assert [i["metadata"]["name"] for i in incidents
            if FINALIZER in (i["metadata"].get("finalizers") or [])] == []
    # Orphaned, not deleted: the runtime keeps serving; deleting the policy now is immediate.
    assert pods_report(kube, namespace, "quickstart", second, 2)
    kube.kubectl("delete", "cachepolicy", "quickstart", "-n", namespace, "--timeout=30s")
    # The hook's own objects are gone (hook-succeeded).
    assert kube.kubectl_json("get", "jobs,serviceaccounts", "-n", release_namespace,
                             "-l", f"app.kubernetes.io/instance={release}")["items"] == []


SELECTOR_POLICY = """
apiVersion: cachewarden.io/v1alpha1
kind: CachePolicy
metadata: {name: apps}
spec:
  preset: development
  selector:
    matchLabels: {app: nothing-here}
    port: 8000
"""


def test_uninstall_with_delete_mode_deletes_the_policies_first(
    kube: KubeTools, namespace: str, release_namespace: str
) -> None:
    release = f"cw{uuid.uuid4().hex[:5]}"
    helm_install(kube, release, release_namespace, "rbac.scope=namespace",
                 f"rbac.watchNamespaces={{{namespace}}}", "cleanup.onUninstall=delete")
    kube.apply(SELECTOR_POLICY, namespace)
    wait_for(lambda: ready(get_policy(kube, namespace, "apps")), TIMEOUT, "the selector policy Ready")
    # No finalizer on a policy (issue 16: one write less per new policy); deletion is immediate.
    assert FINALIZER not in (get_policy(kube, namespace, "apps")["metadata"].get("finalizers") or [])
    kube.kubectl("get", "configmap", render.configmap_name("apps"), "-n", namespace)

    kube.helm("uninstall", release, "--namespace", release_namespace, "--wait", "--timeout", HELM_TIMEOUT,
              timeout=300)
    assert kube.kubectl_json("get", "cachepolicies", "-n", namespace)["items"] == []
    # The children went with the policy (deleted by the operator's daemon, or by the garbage collector
    # through their owner references).
    wait_for(lambda: kube.kubectl("get", "configmap", render.configmap_name("apps"), "-n", namespace,
                                  check=False).returncode != 0, 60, "the ConfigMap of apps gone")
    assert operator_pods(kube, release_namespace, release) == [] or wait_for(
        lambda: operator_pods(kube, release_namespace, release) == [], 60, "the operator pods gone")


def test_ha_replicas_peer_with_distinct_priorities_and_one_reconciles(
    kube: KubeTools, namespace: str, release_namespace: str
) -> None:
    """replicas=2: both pods run, both record themselves in the namespace's KopfPeering with different
    (random) priorities, and the policy is reconciled; the peering RBAC is enough for kopf."""
    release = f"cw{uuid.uuid4().hex[:5]}"
    helm_install(kube, release, release_namespace, "rbac.scope=namespace",
                 f"rbac.watchNamespaces={{{namespace}}}", "replicas=2", "cleanup.onUninstall=delete")
    wait_for(lambda: len([p for p in operator_pods(kube, release_namespace, release)
                          if running_ready(p)]) == 2, TIMEOUT, "two operator pods Running and Ready")
    pods = operator_pods(kube, release_namespace, release)
    peering = f"{release}-cachewarden"

    def peers() -> dict[str, Any] | None:
        status = kube.kubectl_json("get", "kopfpeering", peering, "-n", namespace).get("status") or {}
        live = {k: v for k, v in status.items() if isinstance(v, dict)}
        return live if len(live) == 2 else None

    recorded = wait_for(peers, TIMEOUT, f"both replicas in KopfPeering {namespace}/{peering}")
    assert set(recorded) == {p["metadata"]["name"] for p in pods}  # POD_ID: the pod names
    priorities = [v["priority"] for v in recorded.values()]
    assert len(set(priorities)) == 2 and all(p > 0 for p in priorities), recorded
    kube.apply(SELECTOR_POLICY, namespace)
    wait_for(lambda: ready(get_policy(kube, namespace, "apps")), TIMEOUT, "the policy Ready under peering")
    kube.helm("uninstall", release, "--namespace", release_namespace, "--wait", "--timeout", HELM_TIMEOUT,
              timeout=300)
    assert kube.kubectl_json("get", "cachepolicies", "-n", namespace)["items"] == []


# --- RBAC with a real token of the chart's ServiceAccount -------------------------------------------


def apply_chart_rbac(kube: KubeTools, release: str, namespace: str, *values: str) -> str:
    """Render the chart's ServiceAccount and RBAC with ``values`` and apply them (no operator runs);
    returns the rendered manifest (to delete its cluster-scoped objects afterwards)."""
    sets = [arg for value in values for arg in ("--set", value)]
    manifest = kube.helm("template", release, str(CHART), "--namespace", namespace, *sets,
                         "--show-only", "templates/serviceaccount.yaml",
                         "--show-only", "templates/rbac.yaml").stdout
    kube.kubectl("apply", "-f", "-", input=manifest)
    return manifest


class TokenKubectl:
    """kubectl authenticated only by a ServiceAccount token (no admin certificate anywhere)."""

    def __init__(self, cluster: Cluster, kube: KubeTools, namespace: str, service_account: str) -> None:
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": 600}}
        answer = cluster.api.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token", request)
        self.token = answer["status"]["token"]
        self.kube = kube
        self.base = ["--kubeconfig=/dev/null", f"--server={cluster.server_url}",
                     f"--certificate-authority={pki_layout(cluster.run_dir / 'pki').ca.cert}",
                     f"--token={self.token}"]

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl with the token; never raises on a non-zero exit."""
        return self.kube.kubectl(*self.base, *args, input=input, check=False)

    def can(self, verb: str, resource: str, namespace: str | None = None, subresource: str = "",
            name: str = "") -> bool:
        """``kubectl auth can-i`` as the token's user: the API server's own decision."""
        target = f"{resource}/{name}" if name else resource
        args = ["auth", "can-i", verb, target]
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        if subresource:
            args.append(f"--subresource={subresource}")
        result = self.run(*args)
        answer = result.stdout.strip()
        assert answer in {"yes", "no"}, f"can-i {args}: {result.stdout} {result.stderr}"
        return answer == "yes"


OPERATOR_NEEDS = [
    ("get", "cachepolicies.cachewarden.io", ""), ("list", "cachepolicies.cachewarden.io", ""),
    ("watch", "cachepolicies.cachewarden.io", ""), ("patch", "cachepolicies.cachewarden.io", ""),
    ("patch", "cachepolicies.cachewarden.io", "status"),
    ("update", "cachepolicies.cachewarden.io", "finalizers"),
    ("get", "cacheincidents.cachewarden.io", ""), ("watch", "cacheincidents.cachewarden.io", ""),
    ("create", "cacheincidents.cachewarden.io", ""), ("delete", "cacheincidents.cachewarden.io", ""),
    ("patch", "cacheincidents.cachewarden.io", "status"),
    ("get", "configmaps", ""), ("create", "configmaps", ""), ("patch", "configmaps", ""),
    ("delete", "configmaps", ""),
    ("get", "secrets", ""), ("create", "secrets", ""), ("patch", "secrets", ""), ("delete", "secrets", ""),
    ("create", "services", ""), ("patch", "services", ""), ("delete", "services", ""),
    ("get", "deployments.apps", ""), ("create", "deployments.apps", ""),
    ("patch", "deployments.apps", ""), ("delete", "deployments.apps", ""),
    ("list", "pods", ""), ("watch", "pods", ""), ("create", "events", ""),
    # read-only, the cross-layer diagnosis of a policy's Redis
    ("get", "services", ""), ("list", "endpointslices.discovery.k8s.io", ""),
    ("list", "deployments.apps", ""), ("list", "statefulsets.apps", ""), ("list", "events", ""),
]
FORBIDDEN_IN_SCOPE = [
    ("list", "secrets", ""), ("watch", "secrets", ""), ("delete", "pods", ""), ("create", "pods", ""),
    ("update", "cachepolicies.cachewarden.io", ""), ("delete", "cachepolicies.cachewarden.io", ""),
    ("create", "roles.rbac.authorization.k8s.io", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("create", "serviceaccounts", ""), ("create", "serviceaccounts", "token"),
    ("get", "pods", "exec"), ("create", "pods", "exec"),
    ("delete", "persistentvolumeclaims", ""), ("patch", "daemonsets.apps", ""),
    ("patch", "statefulsets.apps", ""), ("delete", "statefulsets.apps", ""),
    ("create", "endpointslices.discovery.k8s.io", ""), ("delete", "events", ""),
]


def test_rbac_namespace_scope_with_a_real_token(
    dev_cluster: Cluster, crds: None, kube: KubeTools, namespace: str, release_namespace: str
) -> None:
    # crds: `kubectl auth can-i` on cachepolicies.cachewarden.io needs the CRDs to resolve the resource;
    # without them (this test run alone) every answer is "no" and the test fails for the wrong reason.
    release = f"cw{uuid.uuid4().hex[:5]}"
    manifest = apply_chart_rbac(kube, release, release_namespace, "rbac.scope=namespace",
                                f"rbac.watchNamespaces={{{namespace}}}")
    try:
        sa = TokenKubectl(dev_cluster, kube, release_namespace, f"{release}-cachewarden")
        refused = [(v, r, s) for v, r, s in OPERATOR_NEEDS if not sa.can(v, r, namespace, s)]
        assert refused == [], f"the operator needs these in its namespace: {refused}"
        allowed = [(v, r, s) for v, r, s in FORBIDDEN_IN_SCOPE if sa.can(v, r, namespace, s)]
        assert allowed == [], f"must not be allowed: {allowed}"
        # Outside its watched namespace: nothing at all, not even reading Secrets.
        outside = [(v, r) for v, r, s in OPERATOR_NEEDS if sa.can(v, r, release_namespace, s)]
        assert outside == [], f"allowed outside the watched namespace: {outside}"
        assert not sa.can("get", "secrets", "kube-system")
        assert not sa.can("list", "pods")  # not cluster-wide
        assert sa.can("watch", "customresourcedefinitions.apiextensions.k8s.io")  # kopf's observation
        assert sa.can("list", "namespaces")
        # Real requests, decided by the API server: 200 in scope, 403 outside.
        assert sa.run("get", "pods", "-n", namespace).returncode == 0
        denied = sa.run("get", "secret", "default-token-x", "-n", "kube-system")
        assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr
        denied = sa.run("get", "configmaps", "-n", namespace)
        assert "Forbidden" in denied.stderr, denied.stderr  # no list of ConfigMaps either
        _cluster_refusals(sa)
    finally:
        kube.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=manifest)


def test_rbac_cluster_scope_with_a_real_token(
    dev_cluster: Cluster, crds: None, kube: KubeTools, namespace: str, release_namespace: str
) -> None:
    # crds: `kubectl auth can-i` on cachepolicies.cachewarden.io needs the CRDs to resolve the resource;
    # without them (this test run alone) every answer is "no" and the test fails for the wrong reason.
    release = f"cw{uuid.uuid4().hex[:5]}"
    manifest = apply_chart_rbac(kube, release, release_namespace, "replicas=2")
    try:
        sa = TokenKubectl(dev_cluster, kube, release_namespace, f"{release}-cachewarden")
        for ns in (namespace, "default"):
            refused = [(v, r, s) for v, r, s in OPERATOR_NEEDS if not sa.can(v, r, ns, s)]
            assert refused == [], f"the operator needs these in {ns}: {refused}"
            allowed = [(v, r, s) for v, r, s in FORBIDDEN_IN_SCOPE if sa.can(v, r, ns, s)]
            assert allowed == [], f"must not be allowed in {ns}: {allowed}"
        assert sa.can("list", "pods") and sa.can("watch", "cachepolicies.cachewarden.io")
        assert not sa.can("list", "secrets") and not sa.can("watch", "secrets")
        assert not sa.can("list", "namespaces")  # kopf needs no namespace list when cluster-wide
        # HA: peering objects, patch only on its own.
        assert sa.can("watch", "clusterkopfpeerings.kopf.dev")
        assert sa.can("patch", "clusterkopfpeerings.kopf.dev", name=f"{release}-cachewarden")
        assert sa.can("get", "clusterkopfpeerings.kopf.dev", name=f"{release}-cachewarden")
        assert not sa.can("patch", "clusterkopfpeerings.kopf.dev", name="someone-else")
        denied = sa.run("get", "secrets", "-n", "kube-system")
        assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr
        _cluster_refusals(sa)
    finally:
        kube.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=manifest)


def _cluster_refusals(sa: TokenKubectl) -> None:
    """What no scope allows: namespaces, RBAC, nodes, CRDs, admission webhooks (real requests)."""
    for verb, resource in [("delete", "namespaces"), ("create", "namespaces"),
                           ("create", "clusterroles.rbac.authorization.k8s.io"),
                           ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
                           ("patch", "nodes"), ("delete", "nodes"),
                           ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
                           ("create", "customresourcedefinitions.apiextensions.k8s.io"),
                           ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io")]:
        assert not sa.can(verb, resource), f"{verb} {resource} must be refused"
    result = sa.run("delete", "namespace", "kube-system", "--dry-run=server")
    assert result.returncode != 0 and "Forbidden" in result.stderr, result.stderr
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": f"escalate-{uuid.uuid4().hex[:5]}"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    result = sa.run("create", "-f", "-", "--dry-run=server", input=yaml.safe_dump(role))
    assert result.returncode != 0 and "Forbidden" in result.stderr, result.stderr
    result = sa.run("label", "node", "--all", "owned=yes", "--dry-run=server")
    assert result.returncode != 0 and "Forbidden" in result.stderr, result.stderr


def test_every_rendered_object_is_accepted_by_the_api_server(kube: KubeTools, release_namespace: str) -> None:
    """Server-side dry-run of everything the chart renders across the options (monitoring kinds left
    out: devcluster has no Prometheus Operator CRDs). The CRDs go first, the documented upgrade way."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    for crd in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev", "cachepolicies.cachewarden.io"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    combos = [
        [],
        ["rbac.scope=namespace", f"rbac.watchNamespaces={{{release_namespace}}}", "replicas=2",
         "networkPolicy.enabled=true", "metrics.grafanaDashboard.enabled=true", "cleanup.onUninstall=delete"],
        ["ha.enabled=true", "networkPolicy.enabled=true",
         f"networkPolicy.namespaces={{{release_namespace}}}"],
    ]
    for values in combos:
        sets = [arg for value in values for arg in ("--set", value)]
        manifest = kube.helm("template", "dry", str(CHART), "--namespace", release_namespace, *sets).stdout
        docs = [d for d in yaml.safe_load_all(manifest) if d]
        result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs),
                              check=False)
        assert result.returncode == 0, f"{values}: {result.stderr}"
        assert result.stdout.count("(server dry run)") == len(docs), result.stdout
