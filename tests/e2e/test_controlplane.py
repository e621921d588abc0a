"""The local control plane is a real Kubernetes: the API server validates and stores custom
resources, the controller manager reconciles (namespaces, Deployments, garbage collection,
ServiceAccounts), tokens are real and RBAC is enforced, and teardown leaves nothing behind."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from devcluster import binaries
from devcluster.cluster import Cluster
from devcluster.controlplane import (
    ApiError,
    ComponentStartError,
    ControlPlane,
    process_start_ticks,
    processes_marked_with,
)
from devcluster.testing import KubeTools, kubernetes_client, namespace_manifest, namespace_name, wait_for

CRD_GROUP = "e2e.cachewarden.test"
CRD_NAME = f"widgets.{CRD_GROUP}"
CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {CRD_NAME}
spec:
  group: {CRD_GROUP}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {{status: {{}}}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {{type: integer, minimum: 1, maximum: 10}}
                color: {{type: string, default: blue, enum: [blue, red]}}
            status:
              type: object
              properties:
                phase: {{type: string}}
"""


@pytest.fixture
def widget_crd(kube: KubeTools) -> Any:
    """The test CRD, established; deleted afterwards (it is cluster-scoped and the cluster shared)."""
    kube.apply(CRD)
    kube.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    yield CRD_NAME
    kube.kubectl("delete", f"crd/{CRD_NAME}", "--ignore-not-found", "--wait=false")


def test_version_reports_the_pinned_kubernetes_version(dev_cluster: Cluster, kube: KubeTools,
                                                        k8s_api: Any) -> None:
    pinned = binaries.pinned_versions().kubernetes
    assert dev_cluster.api.get("/version")["gitVersion"] == pinned
    assert k8s.VersionApi(k8s_api).get_code().git_version == pinned
    server = json.loads(kube.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert (server["gitVersion"], server["major"], server["gitTreeState"]) == (pinned, "1", "clean")
    assert server["minor"] == pinned.split(".")[1]


def test_custom_resource_round_trip_through_kubectl_and_the_client(
    widget_crd: str, kube: KubeTools, k8s_api: Any, namespace: str
) -> None:
    kube.apply(f"""
apiVersion: {CRD_GROUP}/v1
kind: Widget
metadata: {{name: first, labels: {{team: cache}}}}
spec: {{size: 3}}
""", namespace=namespace)

    via_kubectl = kube.kubectl_json("get", "wdg", "first", "-n", namespace)
    assert via_kubectl["spec"] == {"size": 3, "color": "blue"}  # the schema default was applied
    custom = k8s.CustomObjectsApi(k8s_api)
    via_client = custom.get_namespaced_custom_object(CRD_GROUP, "v1", namespace, "widgets", "first")
    assert via_client["spec"] == via_kubectl["spec"]
    assert via_client["metadata"]["labels"] == {"team": "cache"}

    # The status subresource is separate from the spec, as on any real cluster.
    custom.patch_namespaced_custom_object_status(
        CRD_GROUP, "v1", namespace, "widgets", "first", {"status": {"phase": "Ready"}}
    )
    listed = custom.list_namespaced_custom_object(CRD_GROUP, "v1", namespace, "widgets",
                                                  label_selector="team=cache")
    assert [(w["metadata"]["name"], w["status"]["phase"]) for w in listed["items"]] == [("first", "Ready")]


def test_custom_resource_schema_is_enforced(widget_crd: str, kube: KubeTools, namespace: str) -> None:
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", check=False, input=f"""
apiVersion: {CRD_GROUP}/v1
kind: Widget
metadata: {{name: too-big}}
spec: {{size: 11, color: green}}
""")
    assert result.returncode != 0
    assert "spec.size" in result.stderr and "spec.color" in result.stderr, result.stderr


def test_deleted_namespace_finishes_deleting(dev_cluster: Cluster, kube: KubeTools) -> None:
    name = namespace_name("deleted-namespace")
    kube.kubectl("create", "-f", "-", input=json.dumps(namespace_manifest(name)))
    kube.kubectl("create", "configmap", "content", "-n", name, "--from-literal=k=v")
    kube.kubectl("delete", "namespace", name, "--wait=false")

    def gone() -> bool:
        try:
            phase = dev_cluster.api.get(f"/api/v1/namespaces/{name}")["status"]["phase"]
        except ApiError as exc:
            if exc.status == 404:
                return True
            raise
        return phase == "Gone"  # never true: shows the last phase (Terminating) on timeout

    wait_for(gone, 90, f"namespace {name} to be deleted by the namespace controller")


def test_deployment_makes_replicaset_and_pods_and_garbage_collection_removes_them(
    kube: KubeTools, namespace: str
) -> None:
    kube.apply("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleeper}
spec:
  replicas: 2
  selector: {matchLabels: {app: sleeper}}
  template:
    metadata: {labels: {app: sleeper}}
    spec:
      terminationGracePeriodSeconds: 1
      securityContext: {runAsNonRoot: true, runAsUser: 65534, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: sleep
          image: busybox
          command: [sleep, "300"]
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
""", namespace=namespace)

    def owned_pods() -> list[str]:
        pods = kube.kubectl_json("get", "pods", "-n", namespace, "-l", "app=sleeper")["items"]
        return [p["metadata"]["ownerReferences"][0]["kind"] for p in pods]

    replicasets = wait_for(
        lambda: kube.kubectl_json("get", "replicasets", "-n", namespace, "-l", "app=sleeper")["items"],
        60, "the deployment controller to create a ReplicaSet",
    )
    assert replicasets[0]["metadata"]["ownerReferences"][0]["name"] == "sleeper"
    assert wait_for(lambda: (kinds := owned_pods()) and len(kinds) == 2 and kinds, 60,
                    "the replicaset controller to create 2 pods") == ["ReplicaSet", "ReplicaSet"]

    # Orphan-free deletion is the garbage collector's work: the API server only removes the Deployment.
    kube.kubectl("delete", "deployment", "sleeper", "-n", namespace, "--cascade=background", "--wait=false")
    selected = ("get", "replicasets,pods", "-n", namespace, "-l", "app=sleeper")
    wait_for(
        lambda: not kube.kubectl_json(*selected)["items"],
        90, "the garbage collector to delete the ReplicaSet and its pods",
    )


def test_service_account_tokens_are_real_and_rbac_is_enforced(
    dev_cluster: Cluster, kube: KubeTools, k8s_api: Any, namespace: str, tmp_path: Path
) -> None:
    core = k8s.CoreV1Api(k8s_api)
    core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata={"name": "reader"}))
    token = core.create_namespaced_service_account_token(
        "reader", namespace, k8s.AuthenticationV1TokenRequest(spec={"expirationSeconds": 600})
    ).status.token
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == f"system:serviceaccount:{namespace}:reader"

    kubeconfig = tmp_path / "reader.kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "reader",
        "clusters": [{"name": "dev", "cluster": {
            "server": dev_cluster.server_url,
            "certificate-authority-data": base64.b64encode(
                (dev_cluster.run_dir / "pki" / "ca.crt").read_bytes()).decode()}}],
        "users": [{"name": "reader", "user": {"token": token}}],
        "contexts": [{"name": "reader", "context": {"cluster": "dev", "user": "reader"}}],
    }))
    reader = kubernetes_client(kubeconfig)
    try:
        review = k8s.AuthenticationV1Api(reader).create_self_subject_review(
            k8s.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"))
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:reader"

        with pytest.raises(k8s.ApiException) as denied:
            k8s.CoreV1Api(reader).list_namespaced_config_map(namespace)
        assert denied.value.status == 403

        kube.kubectl("create", "role", "read-configmaps", "-n", namespace,
                     "--verb=get,list", "--resource=configmaps")
        kube.kubectl("create", "rolebinding", "reader-reads", "-n", namespace,
                     "--role=read-configmaps", f"--serviceaccount={namespace}:reader")
        reader_core = k8s.CoreV1Api(reader)
        names = wait_for(
            lambda: [c.metadata.name for c in reader_core.list_namespaced_config_map(namespace).items],
            30, "the RoleBinding to let the reader list ConfigMaps",
        )
        # The root CA publisher (controller manager) puts the cluster CA in every namespace.
        assert "kube-root-ca.crt" in names
        with pytest.raises(k8s.ApiException) as still_denied:
            k8s.CoreV1Api(reader).list_namespaced_secret(namespace)
        assert still_denied.value.status == 403
    finally:
        reader.close()


def test_a_second_cluster_runs_side_by_side_and_teardown_leaves_no_process(
    dev_cluster: Cluster, tmp_path: Path
) -> None:
    second = Cluster(tmp_path / "second", bin_dir=dev_cluster.control_plane.bin_dir,
                     kubelet=dev_cluster.with_kubelet)
    second.start()
    try:
        assert second.control_plane.ports.apiserver != dev_cluster.control_plane.ports.apiserver
        if second.with_kubelet:
            # A pod gives the kubelet a child process: teardown must reach it too.
            KubeTools(second.kubeconfig, second.control_plane.bin_dir, tmp_path / "tools").apply("""
apiVersion: v1
kind: Pod
metadata: {name: child, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true, runAsUser: 65534, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: sleep
      image: busybox
      command: [sleep, "300"]
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
""")
            wait_for(lambda: second.api.get("/api/v1/namespaces/default/pods/child")["status"].get("phase")
                     == "Running", 60, "the pod on the second cluster to run")
        started = {pid: process_start_ticks(pid) for pid in processes_marked_with(second.cluster_id)}
        assert {r.pid for r in second.records()} <= set(started)
    finally:
        second.stop()
    assert all(not record.is_running() for record in second.records()), second.records()
    still_alive = [pid for pid, ticks in started.items() if process_start_ticks(pid) == ticks]
    assert still_alive == []
    assert processes_marked_with(second.cluster_id) == []
    # The session cluster is untouched.
    assert dev_cluster.api.readyz()[0]


@pytest.mark.parametrize(
    ("component", "expected_in_log"),
    [
        ("etcd", "--no-such-flag"),
        ("kube-apiserver", "unknown flag: --no-such-flag"),
        ("kube-controller-manager", "unknown flag: --no-such-flag"),
    ],
)
def test_a_component_that_fails_to_start_is_named_with_its_log_tail(
    dev_cluster: Cluster, tmp_path: Path, component: str, expected_in_log: str
) -> None:
    broken = ControlPlane(tmp_path / "broken", dev_cluster.control_plane.bin_dir,
                          extra_args={component: ["--no-such-flag"]})
    with pytest.raises(ComponentStartError) as failure:
        broken.start()
    assert failure.value.component == component
    message = str(failure.value)
    assert message.startswith(f"{component} failed to start: exited with code")
    assert expected_in_log in message and f"last 40 lines of {broken.log_path(component)}" in message
    # What started before the broken component was stopped again.
    assert broken.records() and all(not r.is_running() for r in broken.records())
    assert processes_marked_with(broken.cluster_id) == []


def test_a_missing_binary_names_the_component_and_the_build_command(tmp_path: Path) -> None:
    empty = tmp_path / "no-binaries"
    empty.mkdir()
    with pytest.raises(ComponentStartError) as failure:
        ControlPlane(tmp_path / "run", empty).start()
    assert failure.value.component == "etcd"
    assert str(empty / "etcd") in str(failure.value)
    assert "cachewarden dev build" in str(failure.value)
