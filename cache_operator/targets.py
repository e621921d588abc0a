"""Which pods a policy targets: the one target selection of reconcile and the incident executor.

Runtime mode: the pods of the policy's Deployment (its selector labels); selector mode: the pods
``spec.selector`` selects. Pods being deleted or finished are left out; a pod without an IP is a
target that cannot be reached yet (``None``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cache_operator import render, selectors
from cache_operator.api import CachePolicySpec
from cache_operator.podclient import PodTarget
from cache_operator.ports import KubeIO, PolicyRef

__all__ = ["pod_is_ready", "pod_selection", "pod_target", "select_pods", "select_targets", "selects"]


def pod_target(pod: Mapping[str, Any], port: int) -> PodTarget | None:
    """Where to reach a pod's runtime API, or None while it has no IP or is terminating."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not ip or meta.get("deletionTimestamp") or status.get("phase") not in ("Running", "Pending"):
        return None
    return PodTarget(meta.get("name", "?"), ip, port)


def selects(model: CachePolicySpec, policy_name: str, labels: Mapping[str, str]) -> bool:
    """Whether a pod with ``labels`` is a target of the policy (runtime: its Deployment's selector)."""
    if model.runtime is not None:
        wanted = render.pod_selector_labels(policy_name)
        return all(labels.get(key) == value for key, value in wanted.items())
    assert model.selector is not None
    return selectors.selector_matches(model.selector, labels)


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition is True (and it is not being deleted)."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def pod_selection(policy_name: str, model: CachePolicySpec) -> tuple[str, int]:
    """The label selector (the API's query string) of the policy's target pods, and their port."""
    if model.runtime is not None:
        return render.pod_selector_string(policy_name), model.runtime.port
    assert model.selector is not None
    return selectors.label_selector_string(model.selector), model.selector.port


async def select_pods(
    policy: PolicyRef,
    model: CachePolicySpec,
    kube: KubeIO,
    pods_in_namespace: Callable[[str], list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """The policy's live target pods (not being deleted, not finished), sorted by name.

    ``pods_in_namespace`` is the operator's pod index (a watch): no list call per pass, the same pods a
    list would give. Without it the pods are listed with the policy's selector.
    """
    if pods_in_namespace is not None:
        pod_objects = pods_in_namespace(policy.namespace)
    else:
        pod_objects = await kube.list_pods(policy.namespace, pod_selection(policy.name, model)[0])
    live = [
        p
        for p in pod_objects
        if selects(model, policy.name, (p.get("metadata") or {}).get("labels") or {})
        and not (p.get("metadata") or {}).get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    live.sort(key=lambda p: (p.get("metadata") or {}).get("name", ""))
    return live


async def select_targets(
    policy: PolicyRef,
    model: CachePolicySpec,
    kube: KubeIO,
    pods_in_namespace: Callable[[str], list[dict[str, Any]]] | None,
) -> tuple[list[tuple[PodTarget | None, bool, str]], int]:
    """The policy's target pods as (where to reach it, Ready, name), by name, and the desired count
    (runtime: replicas; selector mode: every selected pod). Pods being deleted or finished are left out."""
    port = pod_selection(policy.name, model)[1]
    pod_objects = await select_pods(policy, model, kube, pods_in_namespace)
    # runtime: the Deployment's replicas; selector mode: every selected pod
    desired = model.runtime.replicas if model.runtime is not None else len(pod_objects)
    targets = [
        (pod_target(p, port), pod_is_ready(p), (p.get("metadata") or {}).get("name", "?"))
        for p in pod_objects
    ]
    return targets, desired
