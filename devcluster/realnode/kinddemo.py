"""``cachewarden dev up --node kind``: the demo on a real node (``make demo NODE=kind``).

The same demo as the fast lane (:mod:`devcluster.demo`: the chart, Redis, the quickstart policy, a
little traffic, ``kubectl get cpol,cinc`` and what to try next) on a kind cluster named ``cachewarden``
made from the node image built here, with the project's images loaded under the names the chart and
the quickstart ship with. No devcluster-specific chart value: Services and DNS are real.

The cluster's kubeconfig lives in ``<cache root>/kind/kubeconfig``; ``cachewarden dev down --node
kind`` deletes the cluster (its node container and network), nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from devcluster import binaries
from devcluster.demo import Demo, next_steps
from devcluster.realnode import images, nodeimage
from devcluster.realnode import kind as kindlib

CLUSTER_NAME = kindlib.DEFAULT_CLUSTER_NAME


def kind_dir() -> Path:
    """``<cache root>/kind``: the demo cluster's kubeconfig and kind configuration."""
    return binaries.cache_root() / "kind"


def kubeconfig_path() -> Path:
    """The demo cluster's kubeconfig (written by ``kind create cluster``)."""
    return kind_dir() / "kubeconfig"


def kind_up(progress: Callable[[str], None] = print) -> str:
    """Build what is missing, create the cluster unless it exists, install the demo; returns the
    ``kubectl get cpol,cinc`` table followed by what to try next."""
    binaries.run_build_script(progress=progress, extra_args=("--real-node",))
    tools = kindlib.kind_tools()
    built = images.ensure_images(progress=progress)
    node = nodeimage.ensure_node_image(progress=progress)
    kubeconfig = kubeconfig_path()
    if CLUSTER_NAME in kindlib.cluster_names(tools):
        progress(f"demo: kind cluster {CLUSTER_NAME} exists; reusing it")
    else:
        versions = binaries.read_version_table()
        config = kindlib.kind_config(CLUSTER_NAME,
                                     etcd_image_tag=nodeimage.etcd_image_tag(versions["ETCD_VERSION"]))
        progress(f"demo: kind create cluster --name {CLUSTER_NAME} --image {node.tag}")
        kindlib.create_cluster(tools, CLUSTER_NAME, node.tag, config, kubeconfig)
    def load(shipped: str) -> None:
        progress(f"demo: kind load docker-image {shipped}")
        kindlib.load_image(tools, CLUSTER_NAME, shipped)

    images.load_release_images(built.app, built.redis, load)
    bin_dir = binaries.bin_dir()
    demo = Demo(kubeconfig, bin_dir / "kubectl", progress, helm=bin_dir / "helm", helm_values=(),
                traffic_from_pods=True)
    demo.install(timeout=300.0)
    steps = next_steps(kubeconfig, bin_dir).replace("make down          ", "make down NODE=kind")
    return demo.table() + steps


def kind_down(progress: Callable[[str], None] = print) -> None:
    """Delete the demo's kind cluster (if it exists)."""
    tools = kindlib.kind_tools()
    if CLUSTER_NAME not in kindlib.cluster_names(tools):
        progress(f"kind: no cluster {CLUSTER_NAME}; nothing to delete")
        return
    kindlib.delete_cluster(tools, CLUSTER_NAME, kubeconfig_path())
    progress(f"kind: deleted cluster {CLUSTER_NAME}")
