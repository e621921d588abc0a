"""What the real-node lane's tests share besides fixtures: the session cluster's name and handle.

Kept out of ``conftest.py`` so test modules import it as a plain module (a conftest imported by name
is loaded a second time under another module name).
"""

from __future__ import annotations

from dataclasses import dataclass

from devcluster.testing import KubeTools

CLUSTER_NAME = "cachewarden-e2e"


@dataclass
class KindLane:
    """The session's kind cluster: kubectl/helm bound to it, and the image names loaded into it."""

    kube: KubeTools
    app_image: str
    redis_image: str
    node_image: str
    name: str = CLUSTER_NAME
