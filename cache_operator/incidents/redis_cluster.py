"""Cross-layer diagnosis: the Kubernetes state of the Redis a policy points at, judged as a person on
call would judge it, as pure functions over plain objects.

The runtime pods see Redis from the inside ("connection refused", "OOM command not allowed"); they
cannot see why. The operator can: :mod:`.redis_cluster_io` reads the Service the policy's
``spec.redis.url`` names, its EndpointSlices, the Deployments/StatefulSets whose pod template the
Service selects, their pods and the recent Events of all of them, and :func:`diagnose_cluster`
turns that into causes with the evidence, most decisive first:

======================== ========================================================================
cause                    when
======================== ========================================================================
RedisServiceNotFound     the Service named by the URL does not exist
RedisScaledToZero        a Deployment/StatefulSet behind the Service has ``spec.replicas: 0``
RedisPodOOMKilled        a Redis container's last termination was OOMKilled (the kernel killed it
                         at its memory limit; it restarts and loses its data)
RedisCrashLooping        a Redis container waits in CrashLoopBackOff or restarted repeatedly
RedisServiceNoReadyPod   the Service has no ready endpoint (pods not Ready, or its selector
                         matches no pod at all)
RedisPasswordChanged     Redis refuses the pods' password (RedisAuthFailure) and the Secret it comes
                         from (``spec.redis.passwordSecretRef``, else ``secretRef``) changed in the
                         last 15 minutes: the pods took up a password Redis does not know
======================== ========================================================================

Causes have the shape of the runtime engine's (``name``, ``symptoms``, ``summary``, ``score``,
``evidence``, ``recommendations``) plus ``layer: kubernetes``: the fix is a person's (scale Redis
back, raise its memory limit, fix the selector), so an incident whose top cause is one of these runs
no runbook action on the cache pods (``reconnect-redis`` cannot bring back a Redis that is not there).
They score 1.0, above the engine's RedisUnreachable (0.9), which they explain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cache_operator.api.cachepolicy import CachePolicySpec
from cache_runtime.timefmt import parse_rfc3339

LAYER = "kubernetes"
# Symptoms whose incident gets the cluster's view of Redis (plus any symptom one of whose engine
# causes is RedisUnreachable, e.g. LowHitRate while L2 is gone).
REDIS_SYMPTOMS = ("RedisUnavailable", "RedisOutOfMemory")
# Its incident gets the history of the Secret the password comes from instead of the Service's state.
AUTH_SYMPTOM = "RedisAuthFailure"
UNREACHABLE_CAUSE = "RedisUnreachable"
CRASH_RESTARTS = 3
EVENT_WINDOW_S = 900.0
MAX_EVENTS = 6
CAUSE_NAMES = (
    "RedisServiceNotFound",
    "RedisScaledToZero",
    "RedisPodOOMKilled",
    "RedisCrashLooping",
    "RedisServiceNoReadyPod",
    "RedisPasswordChanged",
)
_CLUSTER_DOMAINS: tuple[list[str], ...] = ([], ["svc"], ["svc", "cluster", "local"])


@dataclass(frozen=True)
class RedisTarget:
    """The Service a policy's Redis URL names: ``namespace``/``service`` (None when the URL names no
    Service; ``why`` then says why, e.g. an IP address or a URL kept in a Secret)."""

    namespace: str
    service: str | None
    host: str | None = None
    why: str | None = None


@dataclass(frozen=True)
class RedisClusterState:
    """What the operator read about the Redis behind a policy (plain API objects).

    ``workloads`` are Deployments and StatefulSets whose pod template the Service's selector matches;
    ``unreadable`` maps what could not be read (e.g. ``endpointslices``) to the API's error, so a
    missing permission shows in the evidence instead of hiding a cause."""

    target: RedisTarget
    service: Mapping[str, Any] | None = None
    endpoint_slices: Sequence[Mapping[str, Any]] = ()
    workloads: Sequence[Mapping[str, Any]] = ()
    pods: Sequence[Mapping[str, Any]] = ()
    events: Sequence[Mapping[str, Any]] = ()
    unreadable: Mapping[str, str] = field(default_factory=dict)


def wants_cluster_view(symptom: str, causes: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the incident of ``symptom`` (with the engine's ``causes``) needs Redis's cluster state:
    a Redis symptom, or a symptom the engine explains by Redis being unreachable."""
    return (
        symptom in REDIS_SYMPTOMS
        or symptom == AUTH_SYMPTOM
        or any(c.get("name") == UNREACHABLE_CAUSE for c in causes)
    )


def password_source(spec: CachePolicySpec) -> tuple[str, str] | None:
    """(Secret name, key) the pods' Redis password comes from: ``spec.redis.passwordSecretRef``, else
    ``spec.redis.secretRef`` (a URL that may carry it); None when the password is not in a Secret."""
    redis = spec.redis
    if redis is None:
        return None
    ref = redis.password_secret_ref or redis.secret_ref
    return (ref.name, ref.key) if ref is not None else None


def last_changed(obj: Mapping[str, Any]) -> tuple[float, str | None] | None:
    """(Unix seconds, field manager) of the object's last write: the newest ``managedFields`` entry
    (the API server stamps each writer's last change), else its creation; None when neither parses."""
    meta = _meta(obj)
    newest: tuple[float, str | None] | None = None
    for entry in meta.get("managedFields") or []:
        if not isinstance(entry, Mapping) or not entry.get("time"):
            continue
        try:
            when = parse_rfc3339(entry["time"], "metadata.managedFields[].time")
        except ValueError:
            continue
        if newest is None or when > newest[0]:
            newest = (when, str(entry.get("manager")) if entry.get("manager") else None)
    if newest is not None:
        return newest
    try:
        created = meta.get("creationTimestamp")
        return (parse_rfc3339(created, "metadata.creationTimestamp"), None) if created else None
    except ValueError:
        return None


def password_secret_cause(
    secret: Mapping[str, Any] | None, key: str, namespace: str, now: float, symptoms: Sequence[str]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(cause, observed) for Redis refusing the pods' password, from the Secret it comes from (only
    its metadata is read into the evidence, never its data): RedisPasswordChanged when the Secret
    was written in the last 15 minutes (the operator rolls its pods when the Secret changes, so the
    new password is what Redis refuses); None when it is older (then it is more likely Redis's
    password that changed, and the engine's own RedisAuthenticationFailure stands) or missing."""
    if secret is None:
        return None, {"passwordSecret": None}
    name = _name(secret)
    changed = last_changed(secret)
    observed: dict[str, Any] = {"passwordSecret": f"{namespace}/{name}", "key": key}
    if changed is None:
        return None, observed
    when, manager = changed
    age = max(0, int(now - when))
    observed.update(secretChangedSecondsAgo=age, secretChangedBy=manager)
    if now - when > EVENT_WINDOW_S:
        return None, observed
    by = f" by {manager}" if manager else ""
    cause = _cause(
        "RedisPasswordChanged",
        symptoms,
        f"Secret {namespace}/{name} (key {key}), where the pods' Redis password comes from, changed "
        f"{age} s ago{by}, and Redis refuses the password the pods now use",
        observed,
        f"put the password Redis expects back into Secret {namespace}/{name} key {key} (compare with "
        "Redis's requirepass or ACL user), or give Redis the new one; the operator rolls the pods when "
        "the Secret changes",
    )
    return cause, observed


def redis_target(spec: CachePolicySpec, namespace: str) -> RedisTarget:
    """The Service ``spec.redis.url`` names: ``svc`` (the policy's namespace), ``svc.ns``,
    ``svc.ns.svc`` or ``svc.ns.svc.cluster.local``; for Sentinel URLs the first Sentinel's Service."""
    if spec.redis is None:
        return RedisTarget(namespace, None, why="the policy has no spec.redis (memory only)")
    if spec.redis.url is None:
        return RedisTarget(
            namespace, None, why="spec.redis.secretRef: the URL is in a Secret only the pods read"
        )
    parts = urlsplit(spec.redis.url)
    if parts.scheme == "unix":
        return RedisTarget(namespace, None, why="a unix socket names no Service")
    host = (parts.netloc.rsplit("@", 1)[-1].split(",")[0].rsplit(":", 1)[0] or "").strip("[]").lower()
    labels = host.split(".")
    if not host or all(label.isdigit() for label in labels) or ":" in host:
        return RedisTarget(namespace, None, host=host, why=f"host {host!r} is an address, not a Service name")
    if len(labels) == 1:
        return RedisTarget(namespace, labels[0], host=host)
    if labels[2:] in _CLUSTER_DOMAINS:
        return RedisTarget(labels[1], labels[0], host=host)
    return RedisTarget(namespace, None, host=host, why=f"host {host!r} is not a Service of this cluster")


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """A Service selector (equality only) matches ``labels``; an empty selector matches nothing."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(key) == value for key, value in selector.items())


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name", ""))


def selected_workloads(
    service: Mapping[str, Any] | None, workloads: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The Deployments/StatefulSets whose pod template ``service`` selects."""
    selector = ((service or {}).get("spec") or {}).get("selector")
    return [
        w
        for w in workloads
        if selects(
            selector, ((((w.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels"))
        )
    ]


def _ready_endpoints(slices: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    ready = total = 0
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            total += 1
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                ready += 1
    return ready, total


def _pod_facts(pod: Mapping[str, Any]) -> dict[str, Any]:
    """Restarts, waiting reason and last termination of a pod's containers (the worst container)."""
    status = pod.get("status") or {}
    facts: dict[str, Any] = {"pod": _name(pod), "phase": status.get("phase"), "restarts": 0}
    for container in status.get("containerStatuses") or []:
        restarts = int(container.get("restartCount") or 0)
        waiting = ((container.get("state") or {}).get("waiting") or {}).get("reason")
        last = (container.get("lastState") or {}).get("terminated") or {}
        if restarts >= facts["restarts"]:
            facts.update(
                container=container.get("name"), restarts=restarts, ready=bool(container.get("ready"))
            )
            if waiting:
                facts["waiting"] = waiting
            if last:
                facts["lastTermination"] = {
                    "reason": last.get("reason"),
                    "exitCode": last.get("exitCode"),
                    "finishedAt": last.get("finishedAt"),
                }
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == facts.get("container"):
            limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
            if limit:
                facts["memoryLimit"] = limit
    return facts


def _event_time(event: Mapping[str, Any]) -> float | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        value = event.get(key)
        if value:
            try:
                return parse_rfc3339(value, key)
            except ValueError:
                continue
    created = _meta(event).get("creationTimestamp")
    try:
        return parse_rfc3339(created, "metadata.creationTimestamp") if created else None
    except ValueError:
        return None


def recent_events(
    events: Sequence[Mapping[str, Any]], names: Mapping[str, set[str]], now: float
) -> list[dict[str, Any]]:
    """Events about the objects in ``names`` (kind -> names; a ReplicaSet counts for the Deployment
    whose name prefixes it) from the last 15 minutes, newest first, at most six."""
    picked: list[tuple[float, dict[str, Any]]] = []
    deployments = names.get("Deployment", set())
    for event in events:
        involved = event.get("involvedObject") or event.get("regarding") or {}
        kind, name = str(involved.get("kind", "")), str(involved.get("name", ""))
        wanted = name in names.get(kind, set()) or (
            kind == "ReplicaSet" and any(name.startswith(f"{d}-") for d in deployments)
        )
        when = _event_time(event)
        if not wanted or when is None or now - when > EVENT_WINDOW_S:
            continue
        picked.append(
            (
                when,
                {
                    "object": f"{kind}/{name}",
                    "type": event.get("type"),
                    "reason": event.get("reason"),
                    "message": str(event.get("message") or event.get("note") or "")[:300],
                    "count": event.get("count") or 1,
                    "ageSeconds": max(0, int(now - when)),
                },
            )
        )
    picked.sort(key=lambda item: -item[0])
    return [entry for _, entry in picked[:MAX_EVENTS]]


def _cause(
    name: str, symptoms: Sequence[str], summary: str, evidence: dict[str, Any], fix: str
) -> dict[str, Any]:
    return {
        "name": name,
        "symptoms": list(symptoms),
        "summary": summary,
        "score": 1.0,
        "layer": LAYER,
        "evidence": evidence,
        "recommendations": [{"action": None, "description": fix}],
    }


def crd_cause(cause: Mapping[str, Any]) -> dict[str, Any]:
    """A cluster cause in the CacheIncident's ``status.diagnosis.causes`` shape (evidence marked
    ``layer: kubernetes``; no action: the fix is a person's)."""
    recommendations = list(cause.get("recommendations") or [])
    fix = recommendations[0].get("description") if recommendations else None
    return {
        "name": str(cause["name"]),
        "evidence": {**(cause.get("evidence") or {}), "score": cause.get("score"), "layer": LAYER},
        "recommendation": "; ".join(part for part in (cause.get("summary"), fix) if part)[:4096],
    }


def diagnose_cluster(
    state: RedisClusterState, now: float, symptoms: Sequence[str] = ("RedisUnavailable",)
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(causes, observed): the cluster-level causes the state shows (most decisive first; empty when
    Redis looks fine from the cluster) and the figures read, for the incident's evidence."""
    target = state.target
    symptoms = list(dict.fromkeys([*symptoms, "RedisUnavailable"]))
    observed: dict[str, Any] = {"service": f"{target.namespace}/{target.service}"}
    if state.unreadable:
        observed["unreadable"] = dict(state.unreadable)
    if target.service is None:
        return [], {"service": None, "why": target.why}
    service = state.service
    if service is None:
        if "service" in state.unreadable:
            return [], observed
        return [
            _cause(
                "RedisServiceNotFound",
                symptoms,
                f"spec.redis.url names Service {target.namespace}/{target.service}, which does not exist",
                observed,
                "create the Service, or point spec.redis.url at the Service Redis runs behind",
            )
        ], observed
    selector = (service.get("spec") or {}).get("selector") or {}
    ready, total = _ready_endpoints(state.endpoint_slices)
    workloads = selected_workloads(service, state.workloads)
    pods = [p for p in state.pods if selects(selector, _meta(p).get("labels"))]
    facts = [_pod_facts(p) for p in pods]
    observed.update(
        selector=dict(selector),
        readyEndpoints=ready,
        endpoints=total,
        workloads=[
            {
                "kind": w.get("kind"),
                "name": _name(w),
                "replicas": (w.get("spec") or {}).get("replicas", 1),
                "readyReplicas": (w.get("status") or {}).get("readyReplicas", 0),
            }
            for w in workloads
        ],
        pods=facts,
    )
    names: dict[str, set[str]] = {"Service": {target.service}, "Pod": {f["pod"] for f in facts}}
    for w in workloads:
        names.setdefault(str(w.get("kind")), set()).add(_name(w))
    events = recent_events(state.events, names, now)
    if events:
        observed["events"] = events
    causes: list[dict[str, Any]] = []
    scaled = [w for w in observed["workloads"] if w["replicas"] == 0]
    if scaled:
        first = scaled[0]
        causes.append(
            _cause(
                "RedisScaledToZero",
                symptoms,
                f"{first['kind']} {target.namespace}/{first['name']} behind Service {target.service} is "
                f"scaled to 0 replicas: no Redis runs ({ready} ready endpoint(s))",
                observed,
                f"scale it back: kubectl -n {target.namespace} scale {str(first['kind']).lower()}/"
                f"{first['name']} --replicas=1 (and find who scaled it down: see the events)",
            )
        )
    oom = [f for f in facts if (f.get("lastTermination") or {}).get("reason") == "OOMKilled"]
    looping = [
        f for f in facts if f.get("waiting") == "CrashLoopBackOff" or f.get("restarts", 0) >= CRASH_RESTARTS
    ]
    if oom:
        worst = oom[0]
        limit = worst.get("memoryLimit")
        causes.append(
            _cause(
                "RedisPodOOMKilled",
                symptoms,
                f"Redis pod {worst['pod']} was OOMKilled (restarts {worst['restarts']}"
                f"{', limit ' + str(limit) if limit else ''}"
                f"{', now ' + worst['waiting'] if worst.get('waiting') else ''}): "
                "it loses its data each time",
                observed,
                "set Redis maxmemory below the container's memory limit (with an eviction policy such as "
                "allkeys-lru), or raise the limit",
            )
        )
    elif looping:
        worst = max(looping, key=lambda f: f.get("restarts", 0))
        reason = (worst.get("lastTermination") or {}).get("reason")
        causes.append(
            _cause(
                "RedisCrashLooping",
                symptoms,
                f"Redis pod {worst['pod']} is crash-looping ({worst.get('waiting') or 'restarting'}, "
                f"{worst['restarts']} restarts{', last exit ' + str(reason) if reason else ''})",
                observed,
                f"read its logs: kubectl -n {target.namespace} logs {worst['pod']} --previous",
            )
        )
    # EndpointSlices with no ready endpoint while a selected pod reports every container ready is
    # not "no ready pod": the slices lag, or cannot list the pods' addresses (a loopback pod IP, as on
    # devcluster's process kubelet). Only the two together are this cause.
    ready_pods = [f for f in facts if f.get("ready")]
    if (not causes and selector and ready == 0 and not ready_pods
            and "endpointslices" not in state.unreadable):
        if not pods:
            summary = (
                f"Service {target.namespace}/{target.service} selects no pod at all (selector "
                f"{', '.join(f'{k}={v}' for k, v in sorted(selector.items()))}"
                f"{'' if workloads else '; no Deployment/StatefulSet has those labels'})"
            )
            fix = "fix the Service's selector or the workload's pod labels so they match"
        else:
            summary = (
                f"Service {target.namespace}/{target.service} selects {len(pods)} pod(s), none ready "
                f"({', '.join(f['pod'] + ' ' + str(f.get('phase')) for f in facts[:3])})"
            )
            fix = (
                f"see why the pods are not Ready: kubectl -n {target.namespace} describe pod "
                + facts[0]["pod"]
            )
        causes.append(_cause("RedisServiceNoReadyPod", symptoms, summary, observed, fix))
    return causes, observed
