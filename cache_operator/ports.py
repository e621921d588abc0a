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

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...
    async def create(self, obj: Mapping[str, Any]) -> bool: ...
    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool: ...
    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...
    async def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]: ...
    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> bool: ...


class PodIO(Protocol):
    """What a reconcile pass needs from runtime pods (implemented by
    :class:`cache_operator.podclient.PodClient`)."""

    async def health(self, pod: PodTarget, token: str | None) -> PodReply: ...
    async def apply_config(
        self, pod: PodTarget, token: str | None, config: Mapping[str, Any], config_hash: str
    ) -> PodReply: ...
    async def for_each(self, pods: Any, call: Any) -> list[Any]: ...


@dataclass(frozen=True)
class PolicyRef:
    """Identity of a CachePolicy (what render, reconcile and the incident executor pass around)."""

    name: str
    namespace: str
    uid: str
    generation: int | None = None
