"""kind clusters on our node image: the cluster configuration (pure) and the few kind commands.

The node image (:mod:`devcluster.realnode.nodeimage`) carries everything a single-node cluster needs:
the control plane's images, a CNI bridge (Debian's plugins), kube-proxy, CoreDNS and a NetworkPolicy
enforcer (kube-router's firewall, installed by kind as the node's "default CNI" manifest). What kind
still needs told is here: etcd's tag (ours, not kubeadm's default) and the pod and Service ranges the
bridge configuration uses. A user with internet can run the same tests on kind's stock
``kindest/node`` image (:func:`kind_config` with ``stock_image=True`` leaves kind's defaults alone).

Commands run the kind binary that ``devcluster/build.sh --real-node`` builds, with ``KUBECONFIG``
pointed at a file of the cluster's own so a user's kubeconfig is never touched.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devcluster import binaries
from devcluster.realnode import docker
from devcluster.realnode.docker import DockerError

POD_SUBNET = "10.244.0.0/16"  # node/files/etc/cni/net.d/10-cachewarden-bridge.conflist takes its first /24
SERVICE_SUBNET = "10.96.0.0/16"
DEFAULT_CLUSTER_NAME = "cachewarden"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


class KindError(DockerError):
    """A kind command failed, or its input is invalid (names the field, the value and what is accepted)."""


def validate_cluster_name(name: str) -> str:
    """kind's cluster names become container and network names: lower-case DNS labels up to 32 chars."""
    if not _NAME.match(name):
        raise KindError(f"kind cluster name {name!r} is not accepted; accepted: lower-case letters, digits "
                        "and '-', 1 to 32 characters, starting and ending with a letter or digit")
    return name


def kind_config(name: str, *, etcd_image_tag: str | None, stock_image: bool = False) -> str:
    """The kind ``Cluster`` configuration (YAML) of a single-node cluster named ``name``.

    On our node image: etcd's image tag (``etcd_image_tag``, e.g. ``3.6.16-0``) and the subnets the
    node's CNI bridge is configured for. On the stock image (``stock_image=True``) kind's defaults.
    """
    validate_cluster_name(name)
    lines = [
        "kind: Cluster",
        "apiVersion: kind.x-k8s.io/v1alpha4",
        f"name: {name}",
        "networking:",
        f"  podSubnet: {POD_SUBNET}",
        f"  serviceSubnet: {SERVICE_SUBNET}",
        "nodes:",
        "- role: control-plane",
    ]
    if not stock_image:
        if not etcd_image_tag:
            raise KindError("etcd_image_tag is empty; accepted: the etcd image's tag in the node image, "
                            "e.g. 3.6.16-0")
        lines += [
            "kubeadmConfigPatches:",
            "- |",
            "  kind: ClusterConfiguration",
            "  etcd:",
            "    local:",
            f"      imageTag: \"{etcd_image_tag}\"",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class KindTools:
    """The kind and kubectl binaries a cluster is driven with."""

    kind: Path
    kubectl: Path


def kind_tools(environ: Mapping[str, str] | None = None) -> KindTools:
    """kind and kubectl from the binary directory; an error names the build command when missing."""
    directory = binaries.bin_dir(environ)
    tools = KindTools(kind=directory / "kind", kubectl=directory / "kubectl")
    missing = [str(p) for p in (tools.kind, tools.kubectl) if not p.is_file()]
    if missing:
        raise KindError(f"missing {', '.join(missing)}: build them with `devcluster/build.sh --real-node` "
                        "(or `make binaries-real-node`)")
    return tools


def _kind(tools: KindTools, args: Sequence[str], *, timeout: float) -> str:
    result = subprocess.run([str(tools.kind), *args], capture_output=True, text=True, timeout=timeout,
                            check=False, env={**os.environ, "KIND_EXPERIMENTAL_PROVIDER": "docker"})
    if result.returncode != 0:
        raise KindError(f"`kind {' '.join(args)}` failed (exit {result.returncode}):\n"
                        f"{(result.stderr or result.stdout)[-3000:]}")
    return result.stdout


def cluster_names(tools: KindTools) -> list[str]:
    """The kind clusters that exist on this Docker engine."""
    return [line for line in _kind(tools, ["get", "clusters"], timeout=60).splitlines() if line.strip()]


def create_cluster(tools: KindTools, name: str, image: str, config: str, kubeconfig: Path, *,
                   wait: str = "180s") -> None:
    """``kind create cluster`` with ``config`` on ``image``, writing its kubeconfig to ``kubeconfig``."""
    validate_cluster_name(name)
    docker.ensure_privileged_containers()
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    config_path = kubeconfig.with_suffix(".kind.yaml")
    config_path.write_text(config)
    _kind(tools, ["create", "cluster", f"--name={name}", f"--image={image}", f"--config={config_path}",
                  f"--kubeconfig={kubeconfig}", f"--wait={wait}"], timeout=900)


def delete_cluster(tools: KindTools, name: str, kubeconfig: Path) -> None:
    """``kind delete cluster``: removes exactly the node containers of ``name``."""
    _kind(tools, ["delete", "cluster", f"--name={name}", f"--kubeconfig={kubeconfig}"], timeout=300)


def load_image(tools: KindTools, name: str, image: str) -> None:
    """``kind load docker-image``: copy an image of this engine into every node's containerd."""
    _kind(tools, ["load", "docker-image", f"--name={name}", image], timeout=600)
