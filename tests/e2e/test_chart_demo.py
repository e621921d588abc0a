"""The demo ``make demo`` / ``cachewarden dev up`` runs (devcluster/demo.py) on the session cluster: the
operator installed by ``helm upgrade --install`` of charts/cachewarden, Redis and the quickstart policy
Ready with a live hit rate, the printed ``kubectl get cpol,cinc`` table and what to try next; running it
again is idempotent (a Helm upgrade); ``helm uninstall`` in cluster scope leaves the policy without the
operator's finalizer. Always uninstalled at the end so no cluster-wide operator outlives the test."""

from __future__ import annotations

import json

from devcluster.cluster import Cluster
from devcluster.demo import DEMO_NAMESPACE, OPERATOR_NAMESPACE, POLICY, QUICKSTART, RELEASE, Demo, next_steps
from devcluster.testing import KubeTools, wait_for


def test_demo_installs_the_operator_with_helm(dev_cluster: Cluster, kube: KubeTools) -> None:
    bin_dir = dev_cluster.control_plane.bin_dir
    messages: list[str] = []
    demo = Demo(dev_cluster.kubeconfig, bin_dir / "kubectl", messages.append, helm=bin_dir / "helm")
    try:
        demo.install()
        assert any("helm upgrade --install cachewarden" in m for m in messages), messages
        releases = json.loads(kube.helm("list", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout)
        assert [(r["name"], r["status"], r["chart"]) for r in releases] == [
            (RELEASE, "deployed", "cachewarden-0.1.0")]
        (pod,) = [p for p in kube.kubectl_json("get", "pods", "-n", OPERATOR_NAMESPACE)["items"]
                  if p["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"]
        assert pod["spec"]["serviceAccountName"] == RELEASE
        assert "--resolve-service-hosts" in pod["spec"]["containers"][0]["args"]
        namespace = kube.kubectl_json("get", "namespace", OPERATOR_NAMESPACE)
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        # The quickstart's namespace enforces restricted too, and none of its pods was refused.
        demo_namespace = kube.kubectl_json("get", "namespace", DEMO_NAMESPACE)
        assert demo_namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        events = kube.kubectl_json("get", "events", "-n", DEMO_NAMESPACE)["items"]
        assert not [e["message"] for e in events if e.get("reason") == "FailedCreate"]

        table = demo.table()
        header = table.splitlines()[0].split()
        assert header[:4] == ["NAME", "PRESET", "READY", "PODS"], table
        # Two kinds: kubectl prefixes names with the resource (cachepolicy.cachewarden.io/quickstart).
        name = f"cachepolicy.cachewarden.io/{POLICY}"
        row = next(line.split() for line in table.splitlines() if line.startswith(f"{name} "))
        assert row[1:4] == ["ai-development", "True", "2/2"], table
        hit_rate = demo.policy()["status"]["health"].get("hitRate")
        assert hit_rate is not None and hit_rate > 0, demo.policy()["status"]["health"]
        hints = next_steps(dev_cluster.kubeconfig, bin_dir)
        for needle in ("kubectl get cpol,cinc", "kubectl patch cpol quickstart", "--replicas=0",
                       "kubectl get cinc -w", "make down"):
            assert needle in hints

        # Again: idempotent (helm upgrade of the same release, policy still Ready).
        demo.install()
        releases = json.loads(kube.helm("list", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout)
        assert [(r["name"], r["revision"]) for r in releases] == [(RELEASE, "2")]
        wait_for(demo.policy_ready, 120, "the quickstart policy Ready after the second install")

        # Uninstall in cluster scope: the pre-delete hook (a ClusterRole of its own) stops the operator
        # and strips its finalizer from the policy in `default`.
        kube.helm("uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait", "--timeout", "240s", timeout=300)
        assert kube.kubectl_json("get", "deployments", "-n", OPERATOR_NAMESPACE)["items"] == []
        assert "cachewarden.io/finalizer" not in (demo.policy()["metadata"].get("finalizers") or [])
        assert kube.kubectl("get", "clusterrole", f"{RELEASE}-cleanup", check=False).returncode != 0
    finally:
        kube.helm("uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait", "--timeout", "240s",
                  check=False, timeout=300)
        kube.kubectl("delete", "-n", DEMO_NAMESPACE, "-f", str(QUICKSTART), "--ignore-not-found",
                     "--wait=false", check=False)
