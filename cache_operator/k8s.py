"""Thin Kubernetes I/O for the operator: the official ``kubernetes`` client, called in a worker thread.

One choice, kept everywhere: kopf watches and patches the custom resources themselves (its own API
access); everything else (children, pods, Secrets) goes through this module, which uses the official
client's raw ``request`` by path (no discovery round trips) and server-side apply with the field
manager ``cachewarden``. The sync client runs in ``asyncio.to_thread`` so a slow API server never
blocks kopf's event loop. Objects go in and come out as plain dicts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from kubernetes import config as kube_config
from kubernetes import dynamic
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as TransportError

FIELD_MANAGER = "cachewarden"
# Threads that may call the API at once (the operator's default executor) and pooled connections.
POOL_SIZE = 32

# apiVersion/kind -> (API path prefix, plural). Only what the operator touches.
_RESOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    # Read only, for the cross-layer diagnosis of a policy's Redis (incidents.redis_cluster_io).
    ("apps/v1", "StatefulSet"): ("/apis/apps/v1", "statefulsets"),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("/apis/discovery.k8s.io/v1", "endpointslices"),
    ("v1", "Event"): ("/api/v1", "events"),
    ("cachewarden.io/v1alpha1", "CachePolicy"): ("/apis/cachewarden.io/v1alpha1", "cachepolicies"),
    ("cachewarden.io/v1alpha1", "CacheIncident"): ("/apis/cachewarden.io/v1alpha1", "cacheincidents"),
}


class KubeError(RuntimeError):
    """A Kubernetes API call failed with something other than the expected 404.

    ``body`` is the API server's ``Status`` object when it sent one (a 422 carries
    ``details.causes`` naming each refused field), else None. ``status`` is None when no answer
    came at all (the API server unreachable: refused, reset, timed out), which callers treat like
    any other failed call: logged, and tried again on the next pass.
    """

    def __init__(
        self, what: str, status: int | None, detail: str, body: Mapping[str, Any] | None = None
    ) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{what}: HTTP {status}: {detail}" if status is not None else f"{what}: {detail}")


def _unreachable(what: str, exc: BaseException) -> KubeError:
    """A call that got no answer from the API server, as a KubeError without a status."""
    return KubeError(what, None, f"no answer from the API server ({type(exc).__name__}: {str(exc)[:300]})")


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """The REST path of a namespaced object (or its collection when ``name`` is None)."""
    try:
        prefix, plural = _RESOURCES[(api_version, kind)]
    except KeyError:
        known = ", ".join(f"{v}/{k}" for v, k in _RESOURCES)
        raise ValueError(f"unsupported object {api_version}/{kind}; the operator handles: {known}") from None
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class Kube:
    """The operator's Kubernetes client: apply, get, delete and list, each off the event loop."""

    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client
        self._dynamic = dynamic.DynamicClient(api_client)

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, pool_size: int = POOL_SIZE) -> Kube:
        """A client from ``kubeconfig`` / ``$KUBECONFIG`` / ``~/.kube/config``, else in-cluster config.

        ``pool_size`` connections, as many as threads may call at once (the default of 5 x CPUs would
        serialise a burst of reconciles behind a few sockets on a small machine).
        """
        configuration = Configuration()
        try:
            kube_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        except kube_config.ConfigException:
            kube_config.load_incluster_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = pool_size
        return cls(ApiClient(configuration))

    def close(self) -> None:
        """Release the connection pool."""
        self.api_client.close()

    def _request(
        self, what: str, method: str, path: str, body: Any = None, *, absent: int = 404, **params: Any
    ) -> dict[str, Any] | None:
        """The answer, or None when the API server answered ``absent`` (404: no such object; 409 for a
        create: it exists already); any other failure, and no answer at all, is a :class:`KubeError`."""
        try:
            result = self._dynamic.request(method, path, body=body, serializer=_plain, **params)
        except ApiException as exc:
            if exc.status == absent:
                return None
            raise KubeError(what, exc.status, _api_detail(exc), _api_status(exc)) from None
        except (TransportError, OSError) as exc:
            raise _unreachable(what, exc) from None
        return result if isinstance(result, dict) else {}

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` (field manager ``cachewarden``, conflicts forced: the operator
        owns every field it renders); returns the object as stored."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        what = f"apply {obj['kind']} {meta['namespace']}/{meta['name']}"
        result = await asyncio.to_thread(
            self._request,
            what,
            "patch",
            path,
            dict(obj),
            content_type="application/apply-patch+yaml",
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        if result is None:  # a 404 on apply means the namespace is gone (being deleted)
            raise KubeError(what, 404, "namespace not found")
        return result

    async def create(self, obj: Mapping[str, Any]) -> bool:
        """Create ``obj``; False (and no change) when an object of that name already exists."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        what = f"create {obj['kind']} {meta['namespace']}/{meta['name']}"
        result = await asyncio.to_thread(
            self._request, what, "post", path, dict(obj), absent=409, field_manager=FIELD_MANAGER
        )
        return result is not None

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        path = resource_path(api_version, kind, namespace, name)
        return await asyncio.to_thread(self._request, f"get {kind} {namespace}/{name}", "get", path)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete with foreground-free background propagation; False when it was already gone."""
        path = resource_path(api_version, kind, namespace, name)
        result = await asyncio.to_thread(
            self._request,
            f"delete {kind} {namespace}/{name}",
            "delete",
            path,
            propagation_policy="Background",
        )
        return result is not None

    async def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of ``kind`` in ``namespace`` matching ``label_selector``."""
        path = resource_path(api_version, kind, namespace)
        result = await asyncio.to_thread(
            self._request,
            f"list {kind} in {namespace}",
            "get",
            path,
            label_selector=label_selector,
        )
        return list((result or {}).get("items") or [])

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> bool:
        """JSON merge patch of ``status`` on the status subresource; False when the object is gone."""
        path = resource_path(api_version, kind, namespace, name) + "/status"
        result = await asyncio.to_thread(
            self._request,
            f"patch status of {kind} {namespace}/{name}",
            "patch",
            path,
            {"status": dict(status)},
            content_type="application/merge-patch+json",
        )
        return result is not None

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Pods in ``namespace`` matching ``label_selector`` (a non-empty selector string)."""
        return await self.list_objects("v1", "Pod", namespace, label_selector)


def _plain(_client: Any, data: Any) -> Any:
    """The decoded JSON answer as it is: the dynamic client's default wraps it in ResourceInstance
    objects, field by field, which cost more CPU than the call when hundreds of policies reconcile at
    once (every status patch answers with the whole policy)."""
    return data


def _api_status(exc: ApiException) -> dict[str, Any] | None:
    """The ``Status`` object in the error's body, or None when the body is not one."""
    body = getattr(exc, "body", None)
    try:
        parsed = json.loads(body) if isinstance(body, (str, bytes)) else None
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) and parsed.get("kind") == "Status" else None


def _api_detail(exc: ApiException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return str(body or exc.reason)[:500]
