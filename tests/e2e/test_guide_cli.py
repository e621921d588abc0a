"""``cachewarden guide --policy`` on devcluster: the real operator, a 2-pod policy, a real Redis pod.

The command resolves the policy's pods and token with kubectl, asks each pod, and merges: the merged
counts must equal the sum of what each pod says about itself, and an action runs on every pod once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devcluster.cluster import Cluster
from devcluster.testing import KubeTools
from tests.e2e.support import (
    admin_token,
    crds,
    ready_policy_namespace,
    runtime_pods,
)

__all__ = ["crds"]

POLICY = "guide"
REPLICAS = 2


@pytest.fixture(scope="module")
def ns(
    dev_cluster: Cluster, kube: KubeTools, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A namespace with Redis and a Ready 2-pod policy, and the operator running."""
    spec = {
        "preset": "development",
        "redis": {"url": "redis://redis:6379/0"},
        "runtime": {"replicas": REPLICAS},
    }
    with ready_policy_namespace(
        dev_cluster, kube, tmp_path_factory.mktemp("operator") / "operator.log", "guide", POLICY, spec
    ) as name:
        yield name


def guide(kube: KubeTools, ns: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cachewarden.cli",
            "guide",
            "--policy",
            POLICY,
            "-n",
            ns,
            "--kubeconfig",
            str(kube.kubeconfig),
            "--kubectl",
            str(kube.bin_dir / "kubectl"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    return json.loads(done.stdout)


def test_guide_runs_on_every_pod_of_the_policy_and_merges(kube: KubeTools, ns: str) -> None:
    token = admin_token(kube, ns, POLICY).splitlines()[0]
    pods = [p for p in runtime_pods(kube, ns, POLICY) if p["status"].get("phase") == "Running"]
    assert len(pods) == REPLICAS
    headers = {"Authorization": f"Bearer {token}"}
    for index, pod in enumerate(pods):
        base = f"http://{pod['status']['podIP']}:8080"
        for n in range(5 + 5 * index):
            httpx.put(
                f"{base}/data/v1/keys/guide-{index}-{n}", json={"value": n}, headers=headers, timeout=10
            )
            httpx.get(f"{base}/data/v1/keys/guide-{index}-{n}", headers=headers, timeout=10)
    each = {
        p["metadata"]["name"]: httpx.get(
            f"http://{p['status']['podIP']}:8080/internal/cache/metrics", headers=headers, timeout=10
        ).json()
        for p in pods
    }
    merged = guide(kube, ns, "/internal/cache/metrics")
    assert set(merged["pods"]) == set(each) and merged["merged"]["answered"] == REPLICAS
    assert merged["total_operations"] >= sum(item["total_operations"] for item in each.values()) >= 30
    hits = sum(item["cache_metrics"]["hits"] for item in merged["pods"].values())
    lookups = sum(item["cache_metrics"]["total_requests"] for item in merged["pods"].values())
    assert merged["cache_hit_rate"] == pytest.approx(hits / lookups, abs=1e-4)
    cleanup = guide(kube, ns, "-X", "POST", "/internal/cache/memory-cleanup")
    assert cleanup["action"] == "memory-cleanup" and len(cleanup["pods"]) == REPLICAS
    for pod in pods:
        actions = httpx.get(
            f"http://{pod['status']['podIP']}:8080/internal/cache/actions", headers=headers, timeout=10
        ).json()
        assert actions["executed"].get("memory-cleanup") == 1
