"""Pod Security admission on devcluster's real API server: the ``restricted`` profile is enforced on
the test namespaces that ask for it, a non-compliant pod is refused naming each violation, and every
pod cachewarden creates (runtime pods rendered by the operator, the operator's own pod from the Helm
chart and from the demo manifest) is admitted under ``restricted``; the runtime pods also really run
there, reconciled by the real operator.

Workload objects (Deployments, Jobs) are only *warned* about by Pod Security admission; what it
refuses are their Pods. So pod templates are checked by creating a Pod from them (server-side dry run:
admission runs in full, nothing is stored), and the runtime's by letting its ReplicaSet create pods.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cache_operator import render
from cache_operator.api import CachePolicySpec
from devcluster.testing import (
    POD_SECURITY_ENV,
    KubeTools,
    baseline_namespace,
    default_pod_security,
    restricted_namespace,
    wait_for,
)
from tests.e2e.support import (
    READY_TIMEOUT,
    OperatorProcess,
    crds,
    operator,
    policy_yaml,
    ready_policy,
    redis_manifest,
    runtime_pods,
    wait_dict,
)

__all__ = ["baseline_namespace", "crds", "operator", "restricted_namespace"]  # fixtures, reused

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cachewarden"
RESTRICTED_VIOLATION = 'violates PodSecurity "restricted:latest"'
WOULD_VIOLATE = 'would violate PodSecurity "restricted:latest"'

BARE_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "bare"},
    "spec": {"containers": [{"name": "sleeper", "image": "busybox", "command": ["sleep", "3600"]}]},
}


@dataclass(frozen=True)
class Identity:
    """The policy identity renderers need (name, namespace, uid)."""

    name: str
    namespace: str
    uid: str = "00000000-0000-0000-0000-000000000001"


def create_pod(
    kube: KubeTools, namespace: str, pod: dict[str, Any], dry_run: bool = False
) -> subprocess.CompletedProcess[str]:
    """``kubectl create`` of one Pod (``--dry-run=server``: full admission, nothing stored)."""
    args = ["create", "-n", namespace, "-f", "-", "-o", "name"]
    if dry_run:
        args.append("--dry-run=server")
    return kube.kubectl(*args, input=json.dumps(pod), check=False)


def pods_of(manifest: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(what, Pod) for every pod template in a workload object (the Pod as its controller would create
    it, minus what the controller fills in), or the object itself when it is a Pod."""
    kind = str(manifest.get("kind"))
    name = (manifest.get("metadata") or {}).get("name", "?")
    if kind == "Pod":
        yield f"Pod/{name}", manifest
        return
    spec = manifest.get("spec") or {}
    template = None
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        template = spec.get("template")
    elif kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    if template is None:
        return
    pod_spec = copy.deepcopy(template.get("spec") or {})
    # The dry run must test Pod Security, not whether the chart's ServiceAccount exists yet here.
    pod_spec.pop("serviceAccountName", None)
    pod_spec.pop("serviceAccount", None)
    labels = (template.get("metadata") or {}).get("labels") or {}
    yield f"{kind}/{name}", {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"dry-run-{kind.lower()}-{name}"[:63].rstrip("-"), "labels": labels},
        "spec": pod_spec,
    }


def assert_admitted(kube: KubeTools, namespace: str, manifests: list[dict[str, Any]]) -> list[str]:
    """Dry-run every pod of ``manifests`` in ``namespace``: each must be admitted without a Pod Security
    warning. Returns what was checked."""
    checked = []
    for manifest in manifests:
        for what, pod in pods_of(manifest):
            result = create_pod(kube, namespace, pod, dry_run=True)
            assert result.returncode == 0, f"{what} refused in a restricted namespace:\n{result.stderr}"
            assert "PodSecurity" not in result.stderr, f"{what}: {result.stderr}"
            checked.append(what)
    return checked


def runtime_spec() -> CachePolicySpec:
    """A runtime-mode policy using every volume the renderer can add (Redis URL, password, CA)."""
    return CachePolicySpec.model_validate(
        {
            "preset": "production",
            "redis": {
                "secretRef": {"name": "redis-url", "key": "url"},
                "passwordSecretRef": {"name": "redis-auth", "key": "password"},
                "tls": {"caSecretRef": {"name": "redis-ca", "key": "ca.crt"}},
            },
            "runtime": {"replicas": 2, "podAnnotations": {"example.com/team": "search"}},
        }
    )


# --- tests ---------------------------------------------------------------------------------------


def test_namespaces_carry_the_pod_security_labels(
    kube: KubeTools, namespace: str, restricted_namespace: str
) -> None:
    """Every test namespace warns and audits at restricted; enforce is restricted where asked for and
    the configured default (restricted unless CACHEWARDEN_E2E_POD_SECURITY says otherwise) elsewhere."""
    for name, enforce in ((restricted_namespace, "restricted"), (namespace, default_pod_security())):
        labels = kube.kubectl_json("get", "namespace", name)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == enforce, (name, labels, POD_SECURITY_ENV)
        assert labels["pod-security.kubernetes.io/warn"] == "restricted", labels
        assert labels["pod-security.kubernetes.io/audit"] == "restricted", labels


def test_a_non_compliant_pod_is_rejected_naming_each_violation(
    kube: KubeTools, restricted_namespace: str
) -> None:
    """The PodSecurity admission plugin is active: a pod with no securityContext is refused by the
    real API server, and the message names every rule it breaks."""
    result = create_pod(kube, restricted_namespace, BARE_POD)
    assert result.returncode != 0, result.stdout
    message = result.stderr
    assert RESTRICTED_VIOLATION in message, message
    for violation in (
        'allowPrivilegeEscalation != false (container "sleeper" must set '
        "securityContext.allowPrivilegeEscalation=false)",
        'unrestricted capabilities (container "sleeper" must set securityContext.capabilities.drop=["ALL"])',
        "runAsNonRoot != true",
        "seccompProfile",
    ):
        assert violation in message, (violation, message)
    assert kube.kubectl("get", "pod", "bare", "-n", restricted_namespace, check=False).returncode != 0

    # One fix at a time is not enough: a pod that only drops capabilities is still refused for the rest.
    partial = copy.deepcopy(BARE_POD)
    partial["spec"]["containers"][0]["securityContext"] = {"capabilities": {"drop": ["ALL"]}}
    result = create_pod(kube, restricted_namespace, partial, dry_run=True)
    assert result.returncode != 0 and "unrestricted capabilities" not in result.stderr, result.stderr
    assert "runAsNonRoot != true" in result.stderr, result.stderr


def test_baseline_refuses_privileged_and_warns_about_restricted(
    kube: KubeTools, baseline_namespace: str
) -> None:
    """A namespace enforcing baseline (warn restricted): a privileged pod is refused; a pod that is only
    non-restricted is admitted with a warning naming what restricted would refuse."""
    namespace = baseline_namespace
    privileged = copy.deepcopy(BARE_POD)
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    result = create_pod(kube, namespace, privileged, dry_run=True)
    assert result.returncode != 0
    assert 'violates PodSecurity "baseline:latest": privileged' in result.stderr, result.stderr

    result = create_pod(kube, namespace, BARE_POD, dry_run=True)
    assert result.returncode == 0, result.stderr
    assert WOULD_VIOLATE in result.stderr and "runAsNonRoot != true" in result.stderr, result.stderr


def test_the_rendered_runtime_deployment_is_admitted(kube: KubeTools, restricted_namespace: str) -> None:
    """The runtime Deployment cache_operator.render produces (every optional volume present): the
    Deployment is accepted without a Pod Security warning and its pod is admitted."""
    identity = Identity("web", restricted_namespace)
    deployment = render.render_deployment(identity, runtime_spec(), "digest")
    deployment["metadata"].pop("ownerReferences")  # no such policy in this test
    result = kube.kubectl(
        "apply", "--dry-run=server", "-n", restricted_namespace, "-f", "-", input=json.dumps(deployment),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "PodSecurity" not in result.stderr, result.stderr
    assert assert_admitted(kube, restricted_namespace, [deployment]) == ["Deployment/web-cachewarden"]


def test_runtime_pods_run_in_a_restricted_namespace(
    operator: OperatorProcess, kube: KubeTools, restricted_namespace: str
) -> None:
    """The real operator reconciles a runtime-mode policy (Redis with a password from a Secret) in a
    namespace enforcing restricted: its ReplicaSet's pods are admitted, run and the policy is Ready."""
    ns = restricted_namespace
    kube.kubectl("create", "secret", "generic", "redis-auth", "-n", ns,
                 "--from-literal=password=pod-sec-pw-1")
    redis = redis_manifest(password="pod-sec-pw-1")
    result = kube.apply(redis, ns)
    assert "PodSecurity" not in result.stderr, result.stderr
    spec = {
        "preset": "development",
        "redis": {
            "url": "redis://redis:6379/0",
            "passwordSecretRef": {"name": "redis-auth", "key": "password"},
        },
        "runtime": {"replicas": 2},
        "health": {"probeIntervalSeconds": 5},
    }
    kube.apply(policy_yaml("web", spec), ns)
    policy = wait_dict(lambda: ready_policy(kube, ns, "web", 1), READY_TIMEOUT, "policy web Ready")
    assert policy["status"]["pods"]["ready"] == 2, policy["status"]
    pods = runtime_pods(kube, ns, "web")
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods), pods
    # Nothing was refused on the way (a refused pod leaves a FailedCreate event on its ReplicaSet).
    events = kube.kubectl_json("get", "events", "-n", ns)["items"]
    refused = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
    assert not refused, refused
    # The pods really talk to the password-protected Redis.
    assert wait_for(
        lambda: (ready_policy(kube, ns, "web") or {}).get("status", {}).get("health", {}).get("redis")
        == "Connected",
        60,
        "Redis connected in the policy's health",
    )
    kube.kubectl("delete", "cachepolicy", "web", "-n", ns, "--timeout", "60s")


def test_the_operator_pod_of_the_helm_chart_is_admitted(kube: KubeTools, restricted_namespace: str) -> None:
    """Every pod the chart creates (the operator Deployment, hook Jobs), rendered by the real helm with
    default values and with HA on, is admitted in a restricted namespace."""
    checked: list[str] = []
    for values in ([], ["--set", "ha.enabled=true", "--set", "replicas=2"]):
        rendered = kube.helm(
            "template", "cw", str(CHART), "--namespace", restricted_namespace, *values
        ).stdout
        manifests = [doc for doc in yaml.safe_load_all(rendered) if isinstance(doc, dict)]
        checked += assert_admitted(kube, restricted_namespace, manifests)
    assert any(what.startswith("Deployment/") for what in checked), checked


def test_the_operator_pod_the_demo_installs_is_admitted(kube: KubeTools, restricted_namespace: str) -> None:
    """`cachewarden dev up` installs the chart with its devcluster values into cachewarden-system, which
    it labels to enforce restricted: the pods of exactly that release are admitted under restricted."""
    from devcluster import demo

    namespace_doc = yaml.safe_load(demo.NAMESPACE_MANIFEST)
    assert namespace_doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    sets = [arg for value in demo.HELM_VALUES for arg in ("--set", value)]
    rendered = kube.helm("template", demo.RELEASE, str(demo.CHART), "--namespace", restricted_namespace,
                         *sets).stdout
    manifests = [doc for doc in yaml.safe_load_all(rendered) if isinstance(doc, dict)]
    checked = assert_admitted(kube, restricted_namespace, manifests)
    assert f"Deployment/{demo.OPERATOR_DEPLOYMENT}" in checked, checked
