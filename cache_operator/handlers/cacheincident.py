"""kopf handlers of CacheIncident: thin, they only call :mod:`cache_operator.incidents.executor_io`.

Create and resume run the same idempotent executor: it re-reads the incident, returns at once when it is
terminal, and otherwise resumes from the per-pod records in status. Deletion lifts the incident's
time-boxed override from its policy before the project finalizer is released.
"""

from __future__ import annotations

import copy
from typing import Any

import kopf

from cache_operator.api.cacheincident import PLURAL
from cache_operator.api.common import GROUP, VERSION
from cache_operator.incidents.executor_io import (
    Deferred,
    IncidentRef,
    PodActionCaller,
    PolicyLocks,
    handle_incident,
    handle_incident_deleted,
)
from cache_operator.k8s import KubeError

RETRY_DELAY_S = 5.0
# One registry of per-policy locks for the operator process. Not in memo: kopf hands each object's
# handlers a shallow copy of the operator's memo, so a registry created from a handler would be one per
# incident and would serialize nothing (two automatic incidents of one policy, opened in the same
# probe pass, then both passed the cooldown check before either recorded its run).
POLICY_LOCKS = PolicyLocks()


@kopf.index(GROUP, VERSION, PLURAL)
def incidents_by_namespace(
    namespace: str | None,
    name: str,
    uid: str,
    labels: kopf.Labels,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    **_: Any,
) -> dict[str | None, dict[str, Any]]:
    """Every CacheIncident by namespace, without its per-pod results: what automatic detection reads
    (one watch instead of a list call per policy and probe pass)."""
    return {
        namespace: {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CacheIncident",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid,
                "generation": meta.get("generation"),
                "labels": dict(labels),
                "deletionTimestamp": meta.get("deletionTimestamp"),
            },
            "spec": copy.deepcopy(dict(spec)),
            "status": {k: copy.deepcopy(v) for k, v in status.items() if k != "results"},
        }
    }


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
async def incident_run(
    name: str,
    namespace: str | None,
    uid: str,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Execute (or resume) the incident; Events for each step go on the incident."""
    assert namespace is not None, "CacheIncident is a namespaced resource"

    def post_event(type_: str, reason: str, message: str) -> None:
        # kopf.event, not kopf.info: the operator posts only warnings from logs, but every step of an
        # incident is worth an Event (kubectl describe cinc shows the run).
        kopf.event(body, type=type_, reason=reason, message=message[:1000])

    try:
        outcome = await handle_incident(
            IncidentRef(name, namespace, uid),
            kube=memo.kube,
            caller=PodActionCaller(memo.pods),
            events=post_event,
            logger=logger,
            resolve_service_hosts=bool((memo.get("options") or {}).get("resolve_service_hosts")),
            locks=POLICY_LOCKS,
        )
    except KubeError as exc:
        # Progress is in status: a retry resumes where this run stopped (kopf's default is 60 s later).
        raise kopf.TemporaryError(f"Kubernetes API call failed: {exc}", delay=RETRY_DELAY_S) from exc
    if isinstance(outcome, Deferred):
        # Safety said "not now" (a disruptive action is running): retried, its reason in status.
        raise kopf.TemporaryError(f"{outcome.reason}: {outcome.message}", delay=outcome.delay_s)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def incident_deleted(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Lift the incident's override (if it set one) before the finalizer goes."""
    assert namespace is not None, "CacheIncident is a namespaced resource"
    await handle_incident_deleted(
        IncidentRef(name, namespace, uid), dict(spec), kube=memo.kube, logger=logger
    )
