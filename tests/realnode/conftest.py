"""The real-node lane: a kind cluster on the node image built here, driven by pytest-kind.

One cluster per session (``cachewarden-e2e``), created by pytest-kind's ``KindCluster`` with our kind
and kubectl binaries (pytest-kind would download its own otherwise) and our cluster configuration; the
project's images are built here (cached by their inputs) and loaded into the node under the names the
shipped manifests use (``ghcr.io/cachewarden/cachewarden:<version>``, ``redis:7``), so
``examples/quickstart.yaml`` and the chart run exactly as shipped.

Without Docker or the real-node binaries these tests skip, naming what is missing and the command that
gets it; in CI (``CI=true``) or with ``CACHEWARDEN_REQUIRE_E2E=1`` they fail instead.
``CACHEWARDEN_KEEP_KIND=1`` keeps the cluster after the session (its kubeconfig is printed).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster import binaries
from devcluster.realnode import kind as kindlib
from devcluster.realnode.docker import DockerError
from devcluster.testing import REQUIRE_E2E_ENV, KubeTools, e2e_required
from tests.realnode.support import CLUSTER_NAME, KindLane

KEEP_ENV = "CACHEWARDEN_KEEP_KIND"


def skip_or_fail(message: str) -> None:
    """Skip the real-node test, or fail it where the lane is required (CI)."""
    if e2e_required():
        pytest.fail(f"real-node tests are required here (CI or {REQUIRE_E2E_ENV}) but {message}",
                    pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/realnode is a real-node test (``-m 'not realnode'`` leaves them out)."""
    for item in items:
        if "tests/realnode/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("realnode/"):
            item.add_marker(pytest.mark.realnode)


@pytest.fixture(scope="session")
def kind_lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindLane]:
    """Build (or reuse) the images and the node image, create the kind cluster, load the images."""
    from pytest_kind import KindCluster  # the real-node lane's harness (pytest-kind-ng)

    from devcluster.realnode import images, nodeimage

    try:
        tools = kindlib.kind_tools()
        built = images.ensure_images()
        node = nodeimage.ensure_node_image()
    except DockerError as exc:
        skip_or_fail(str(exc))
        raise  # unreachable: skip_or_fail raised

    work = tmp_path_factory.mktemp("kind")
    kubeconfig = work / "kubeconfig"
    config_file = work / "kind.yaml"
    versions = binaries.read_version_table()
    config_file.write_text(kindlib.kind_config(
        CLUSTER_NAME, etcd_image_tag=nodeimage.etcd_image_tag(versions["ETCD_VERSION"])))
    keep = os.environ.get(KEEP_ENV, "").lower() in {"1", "true", "yes"}
    if CLUSTER_NAME in kindlib.cluster_names(tools):  # a kept or crashed session's cluster: start clean
        kindlib.delete_cluster(tools, CLUSTER_NAME, kubeconfig)
    cluster = KindCluster(CLUSTER_NAME, kubeconfig=kubeconfig, image=node.tag, kind_path=tools.kind,
                          kubectl_path=tools.kubectl)
    cluster.create(config_file=config_file)
    try:
        loaded = images.load_release_images(built.app, built.redis, cluster.load_docker_image)
        kube = KubeTools(kubeconfig=kubeconfig, bin_dir=binaries.bin_dir(), home=work / "home")
        kube.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=180s", timeout=200)
        yield KindLane(kube=kube, app_image=loaded[built.app], redis_image=loaded[built.redis],
                       node_image=node.tag)
    finally:
        if keep:
            print(f"\nkind cluster {CLUSTER_NAME} kept: KUBECONFIG={kubeconfig}")
        else:
            cluster.delete()
        shutil.rmtree(Path(".pytest-kind") / CLUSTER_NAME, ignore_errors=True)
