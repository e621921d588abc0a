"""kopf handlers of CacheIncident: thin, they only call :mod:`cache_operator.incident_executor`.

Create and resume run the same idempotent executor: it re-reads the incident, returns at once when it is
terminal, and otherwise resumes from the per-pod records in status. Deletion lifts the incident's
time-boxed override from its policy before the project finalizer is released.
"""

from __future__ import annotations

from typing import Any

import kopf

from cache_operator.api.cacheincident import PLURAL
from cache_operator.api.common import GROUP, VERSION
from cache_operator.incident_executor import (
    Deferred,
    IncidentRef,
    PodActionCaller,
    PolicyLocks,
    handle_incident,
    handle_incident_deleted,
)
from cache_operator.k8s import KubeError

RETRY_DELAY_S = 5.0


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
            locks=memo.setdefault("policy_locks", PolicyLocks()),
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
