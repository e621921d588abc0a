"""cache_operator.k8s.Kube.create against the real kube-apiserver: created, already there, refused."""

from __future__ import annotations

import asyncio

import pytest

from cache_operator.k8s import Kube, KubeError
from devcluster.cluster import Cluster


def _config_map(namespace: str, value: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "create-probe", "namespace": namespace},
        "data": {"value": value},
    }


def test_create_answers_created_then_exists_and_leaves_the_first_object(
    dev_cluster: Cluster, namespace: str
) -> None:
    kube = Kube.from_environment(str(dev_cluster.kubeconfig))
    try:
        assert asyncio.run(kube.create(_config_map(namespace, "first"))) is True
        # 409 from the API server: False, and the object keeps what the first create wrote.
        assert asyncio.run(kube.create(_config_map(namespace, "second"))) is False
        stored = asyncio.run(kube.get("v1", "ConfigMap", namespace, "create-probe"))
        assert stored is not None and stored["data"] == {"value": "first"}
    finally:
        kube.close()


def test_create_in_a_missing_namespace_is_a_kube_error_with_the_status(dev_cluster: Cluster) -> None:
    kube = Kube.from_environment(str(dev_cluster.kubeconfig))
    try:
        with pytest.raises(KubeError) as raised:
            asyncio.run(kube.create(_config_map("no-such-namespace-x1", "v")))
        assert raised.value.status == 404
        assert raised.value.body is not None and raised.value.body.get("reason") == "NotFound"
    finally:
        kube.close()
