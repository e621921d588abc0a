"""``spec.runtime.respPort`` on devcluster: the real operator renders the Redis-protocol port, the real
kubelet runs the pods with it, and any Redis client (here redis-py) gets the policy's cache by
pointing at a pod with the policy's token: a value SET through one pod is read through the other
(Redis behind both), and nothing answers before AUTH.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from devcluster.cluster import Cluster
from devcluster.testing import KubeTools
from tests.e2e.support import (
    admin_token,
    crds,
    ready_policy_namespace,
    runtime_pods,
)

__all__ = ["crds"]

POLICY = "resp"
REPLICAS = 2
RESP_PORT = 6390


@pytest.fixture(scope="module")
def ns(
    dev_cluster: Cluster, kube: KubeTools, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A namespace with Redis and a Ready 2-pod policy serving the Redis protocol, the operator running."""
    spec = {
        "preset": "development",
        "redis": {"url": "redis://redis:6379/0"},
        "runtime": {"replicas": REPLICAS, "respPort": RESP_PORT},
    }
    with ready_policy_namespace(
        dev_cluster, kube, tmp_path_factory.mktemp("operator") / "operator.log", "resp", POLICY, spec
    ) as name:
        yield name


def client(pod: dict[str, object], password: str | None) -> redis.Redis:
    """redis-py towards a pod's Redis-protocol port."""
    status = pod["status"]
    assert isinstance(status, dict)
    return redis.Redis(host=status["podIP"], port=RESP_PORT, password=password, socket_timeout=10)


def test_any_redis_client_reaches_the_policys_cache_through_the_pods(kube: KubeTools, ns: str) -> None:
    service = kube.kubectl_json("get", "service", f"{POLICY}-cachewarden", "-n", ns)
    resp = {"name": "resp", "port": RESP_PORT, "targetPort": "resp", "protocol": "TCP"}
    assert resp in service["spec"]["ports"]
    token = admin_token(kube, ns, POLICY).splitlines()[0]
    pods = [p for p in runtime_pods(kube, ns, POLICY) if p["status"].get("phase") == "Running"]
    assert len(pods) == REPLICAS
    first, second = (client(pod, token) for pod in pods)
    try:
        assert first.set("greeting", b"hello from pod one") is True
        assert second.get("greeting") == b"hello from pod one"  # through Redis, into the other pod's L1
        assert first.mget(["greeting", "absent"]) == [b"hello from pod one", None]
        assert second.delete("greeting") == 1
        assert first.get("greeting") is None  # the delete reached the other pod's L1 too
    finally:
        first.close()
        second.close()
    anonymous = client(pods[0], None)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.get("greeting")
    finally:
        anonymous.close()
    wrong = client(pods[0], "not-the-token")
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()
    finally:
        wrong.close()
