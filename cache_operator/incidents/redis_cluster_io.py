"""Reads the Kubernetes state of the Redis a policy points at, for :mod:`.redis_cluster` to judge.

Read-only, through :class:`cache_operator.ports.KubeIO`, in the namespace of the Service that
``spec.redis.url`` names: the Service (get), its EndpointSlices (list by the
``kubernetes.io/service-name`` label), the Deployments and StatefulSets (list; those whose pod
template the Service selects are kept), the pods the selector matches (list) and the namespace's
Events (list; the recent ones about those objects are kept). A read the operator may not do (a Redis
in a namespace outside its RBAC scope) or that fails is recorded in ``unreadable`` and the diagnosis
goes on with what it has: the cross-layer view adds evidence, it never blocks an incident.
"""

from __future__ import annotations

from typing import Any

from cache_operator import selectors
from cache_operator.api.cachepolicy import CachePolicySpec
from cache_operator.incidents.redis_cluster import (
    AUTH_SYMPTOM,
    RedisClusterState,
    diagnose_cluster,
    password_secret_cause,
    password_source,
    redis_target,
)
from cache_operator.k8s import KubeError
from cache_operator.ports import KubeIO

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


async def read_redis_cluster(kube: KubeIO, spec: CachePolicySpec, namespace: str) -> RedisClusterState:
    """The cluster state of the Redis ``spec.redis.url`` names (policy in ``namespace``)."""
    target = redis_target(spec, namespace)
    if target.service is None:
        return RedisClusterState(target)
    ns, name = target.namespace, target.service
    unreadable: dict[str, str] = {}

    async def attempt(what: str, call: Any) -> Any:
        try:
            return await call
        except KubeError as exc:
            unreadable[what] = str(exc)[:300]
            return None

    service = await attempt("service", kube.get("v1", "Service", ns, name))
    if service is None:
        return RedisClusterState(target, unreadable=unreadable)
    selector = (service.get("spec") or {}).get("selector") or {}
    slices = await attempt(
        "endpointslices",
        kube.list_objects("discovery.k8s.io/v1", "EndpointSlice", ns, f"{SERVICE_NAME_LABEL}={name}"),
    )
    workloads: list[dict[str, Any]] = []
    for kind in ("Deployment", "StatefulSet"):
        found = await attempt(f"{kind.lower()}s", kube.list_objects("apps/v1", kind, ns))
        workloads.extend({**w, "kind": kind} for w in found or [])
    pods: list[dict[str, Any]] = []
    if selector:
        pods = (
            await attempt(
                "pods", kube.list_pods(ns, selectors.label_selector_string({"matchLabels": selector}))
            )
            or []
        )
    events = await attempt("events", kube.list_objects("v1", "Event", ns)) or []
    return RedisClusterState(
        target,
        service=service,
        endpoint_slices=slices or [],
        workloads=workloads,
        pods=pods,
        events=events,
        unreadable=unreadable,
    )


async def cluster_causes(
    kube: KubeIO, spec: CachePolicySpec, namespace: str, now: float, symptoms: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`.redis_cluster.diagnose_cluster` over :func:`read_redis_cluster`: (causes, observed).
    For RedisAuthFailure, :func:`.redis_cluster.password_secret_cause` over the password Secret (one
    read by name) instead: Redis answers, so its Service and pods are not the question."""
    if AUTH_SYMPTOM in symptoms:
        source = password_source(spec)
        if source is None:
            return [], {"passwordSecret": None, "why": "the password is not in a Secret"}
        name, key = source
        try:
            secret = await kube.get("v1", "Secret", namespace, name)
        except KubeError as exc:
            return [], {"unreadable": {"secret": str(exc)[:300]}}
        cause, observed = password_secret_cause(secret, key, namespace, now, symptoms)
        return ([cause] if cause else []), observed
    state = await read_redis_cluster(kube, spec, namespace)
    return diagnose_cluster(state, now, symptoms)
