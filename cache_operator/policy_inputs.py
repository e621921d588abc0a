"""What a pass reads from the cluster before it renders or acts: the spec as the API model, the
policy's token Secret, the Redis URL (a Service host resolved to a pod IP where Services do not route,
as in devcluster) and the digest of the user's Secrets the pods mount.

Reconcile and the incident executor both use these; neither imports the other for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from cache_operator import render, selectors
from cache_operator.api import CachePolicySpec, spec_error_from
from cache_operator.ports import KubeIO, PolicyRef
from cache_operator.targets import pod_is_ready

__all__ = [
    "RedisServiceNotReady",
    "current_tokens",
    "parse_spec",
    "resolve_redis_url",
    "rewrite_redis_host",
    "secrets_digest",
    "service_name_of_host",
]


def parse_spec(spec: Mapping[str, Any]) -> CachePolicySpec:
    """The spec as the API model; raises :class:`cache_operator.api.SpecError` naming the field."""
    try:
        return CachePolicySpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise spec_error_from(exc) from None


def rewrite_redis_host(url: str, address: str) -> str:
    """``url`` with its host replaced by ``address`` (port, path, user kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{userinfo}{address}{port}", parts.path, parts.query, parts.fragment))


def service_name_of_host(host: str, namespace: str) -> str | None:
    """The Service a URL host names in ``namespace`` (``svc``, ``svc.ns``, ``svc.ns.svc[.cluster.local]``)."""
    labels = host.split(".")
    if len(labels) == 1:
        return labels[0]
    if (
        len(labels) >= 2
        and labels[1] == namespace
        and labels[2:] in ([], ["svc"], ["svc", "cluster", "local"])
    ):
        return labels[0]
    return None


class RedisServiceNotReady(Exception):
    """The Service named by the Redis URL has no Ready pod to resolve to yet (transient)."""


async def resolve_redis_url(
    spec: CachePolicySpec, namespace: str, kube: KubeIO, resolve_service_hosts: bool
) -> str | None:
    """The Redis URL that goes into the config, or None (memory-only, or the URL is in a Secret that
    only the pods read).

    With ``resolve_service_hosts`` (devcluster: no Service routing) a host that names a Service in the
    policy's namespace is replaced by the IP of a Ready pod behind it. The hash then changes when the
    Redis pod moves, so the pods are re-pushed the new address: the same effect a ClusterIP would give.
    """
    if spec.redis is None or spec.redis.url is None:
        return None
    url = spec.redis.url
    if not resolve_service_hosts:
        return url
    host = urlsplit(url).hostname or ""
    service_name = service_name_of_host(host, namespace)
    if service_name is None:
        return url
    service = await kube.get("v1", "Service", namespace, service_name)
    selector = ((service or {}).get("spec") or {}).get("selector")
    if not selector:
        return url
    pods = await kube.list_pods(namespace, selectors.label_selector_string({"matchLabels": selector}))
    ready = sorted(
        (p for p in pods if pod_is_ready(p) and (p.get("status") or {}).get("podIP")),
        key=lambda p: (p.get("metadata") or {}).get("name", ""),
    )
    if not ready:
        raise RedisServiceNotReady(
            f"spec.redis.url names Service {namespace}/{service_name}, which has no "
            "Ready pod yet (devcluster: the operator resolves it to a pod IP)"
        )
    return rewrite_redis_host(url, ready[0]["status"]["podIP"])


async def current_tokens(
    kube: KubeIO, policy: PolicyRef, create: bool
) -> tuple[dict[str, str], bool, dict[str, Any] | None]:
    """The admin/read tokens, whether this call created the token Secret, and the Secret as read
    (None when it was created here or does not exist), so a drift check in the same pass need not
    read it again.

    Tokens are generated once and kept in the policy's Secret. With ``create`` (a policy never
    reconciled before, not paused) the Secret is created with new tokens in one call, and read only
    if it already exists: at scale, the read that would 404 for every new policy is one API call too
    many.
    """
    if create:
        tokens = render.new_tokens()
        if await kube.create(render.render_token_secret(policy, tokens)):
            return tokens, True, None
    existing = await kube.get("v1", "Secret", policy.namespace, render.token_secret_name(policy.name))
    return render.tokens_from_secret(existing) or render.new_tokens(), False, existing


async def secrets_digest(kube: KubeIO, namespace: str, spec: CachePolicySpec) -> str | None:
    """:func:`cache_operator.render.restart_digest` of the user's Secrets the runtime pods mount."""
    names = render.referenced_secrets(spec)
    if not names:
        return None
    data: dict[str, Any] = {}
    for name in names:
        secret = await kube.get("v1", "Secret", namespace, name)
        data[name] = (secret or {}).get("data") if secret is not None else None
    return render.restart_digest(data)
