"""The operator's ports: the I/O its passes are written against, as Protocols, and the identity of a
policy they pass around.

:class:`cache_operator.k8s.Kube` and :class:`cache_operator.podclient.PodClient` implement them; the
unit tests pass in-memory fakes. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cache_operator.podclient import PodReply, PodTarget

__all__ = ["KubeIO", "PodIO", "PolicyRef"]


class KubeIO(Protocol):
    """The Kubernetes API as the operator uses it (implemented by :class:`cache_operator.k8s.Kube`;
    the unit tests pass in-memory fakes). The one client Protocol of reconcile, the incident executor
    and automatic incidents."""

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj``; the object as stored."""
        ...
    async def create(self, obj: Mapping[str, Any]) -> bool:
        """Create ``obj``; False when it already exists."""
        ...
    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none."""
        ...
    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete the object; False when there was none."""
        ...
    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Pods in ``namespace`` matching ``label_selector``."""
        ...
    async def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace``, optionally by label selector."""
        ...
    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> bool:
        """Merge-patch the object's status; False when the object is gone."""
        ...


class PodIO(Protocol):
    """What a reconcile pass needs from runtime pods (implemented by
    :class:`cache_operator.podclient.PodClient`)."""

    async def health(self, pod: PodTarget, token: str | None) -> PodReply:
        """The pod's health report."""
        ...
    async def apply_config(
        self, pod: PodTarget, token: str | None, config: Mapping[str, Any], config_hash: str
    ) -> PodReply:
        """Push ``config`` (with its hash) to the pod: ``POST config/apply``."""
        ...
    async def for_each(self, pods: Any, call: Any) -> list[Any]:
        """``call`` on every pod, concurrently and bounded; the results in order."""
        ...


@dataclass(frozen=True)
class PolicyRef:
    """Identity of a CachePolicy (what render, reconcile and the incident executor pass around)."""

    name: str
    namespace: str
    uid: str
    generation: int | None = None
