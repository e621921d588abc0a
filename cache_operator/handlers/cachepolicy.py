"""kopf handlers of CachePolicy: thin, they only call :mod:`cache_operator.reconcile`.

One reconciler per policy: a kopf daemon runs :func:`~cache_operator.reconcile.handle_reconcile` in a
loop (every second while the policy converges, every ``spec.health.probeIntervalSeconds`` once it is
Ready or Stalled, and right after a time-boxed override or isolation expires) and writes the status itself,
only when the pass changed something besides its own clock (:mod:`cache_operator.status_writes`), so a
policy at rest costs the API server no write; automatic detection counts at most one probe per interval
(status ``lastDetectionTime``). An event
handler wakes it when the spec changes (a new generation), so a change is pushed to the pods at once,
and status has a single writer (no two tasks racing to write conditions; the incident executor only
merges ``override`` and ``lastActions``, which the reconciler never writes, except removing an
expired override).

No finalizer and no annotation on a policy: kopf adds its finalizer to any object with a daemon, and
any create/update/delete handler makes it write its ``last-handled-configuration`` annotation; each is
one more API write per new policy (a quarter of the operator's writes for a new policy) and the
finalizer also blocks a deletion while no operator runs. The daemon is registered without the
finalizer (:func:`_without_finalizer`) and stops itself: the event handler marks a policy gone on its
DELETED event (or a deletionTimestamp another finalizer holds), and every drift-repair pass checks that
the policy still exists (a DELETED event missed across a watch restart). On the way out the daemon
deletes the children; their owner references get them anyway (the garbage collector), which is what
cleans up a policy deleted while no operator runs.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import kopf

from cache_operator.api.cachepolicy import PLURAL
from cache_operator.api.common import API_VERSION, GROUP, VERSION
from cache_operator.incidents.detection import probe_interval
from cache_operator.k8s import KubeError
from cache_operator.ports import PolicyRef
from cache_operator.reconcile import ReconcileOutcome, handle_delete, handle_reconcile
from cache_operator.status_writes import status_changes
from cache_runtime.timefmt import parse_rfc3339

CONVERGE_INTERVAL_S = 1.0
DEFAULT_PROBE_INTERVAL_S = 15.0
APPLY_EVERY = 10


class StatusPatch:
    """The ``patch`` handle_reconcile fills in (same shape as kopf's: a ``status`` dict)."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}


def _wakeup(memo: kopf.Memo, uid: str) -> asyncio.Event:
    wakeups: dict[str, asyncio.Event] = memo.setdefault("wakeups", {})
    return wakeups.setdefault(uid, asyncio.Event())


@kopf.index("pods")
def pods_by_namespace(
    namespace: str | None, name: str, labels: kopf.Labels, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> dict[str | None, dict[str, Any]]:
    """Every pod, reduced to what reconcile reads, by namespace: one watch instead of one list call per
    policy and pass (300 policies probed every 15 s would be 20 list calls a second)."""
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return {
        namespace: {
            "metadata": {
                "name": name,
                "labels": dict(labels),
                "deletionTimestamp": meta.get("deletionTimestamp"),
            },
            "status": {"podIP": status.get("podIP"), "phase": status.get("phase"), "conditions": ready},
        }
    }


@kopf.on.event(GROUP, VERSION, PLURAL)
async def policy_event(event: kopf.RawEvent, body: kopf.Body, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Wake the policy's reconciler when its spec changed (a new metadata.generation).

    A raw event handler, not on.create/on.update: those persist their progress in annotations, two
    extra patches of the policy per change, which cost more than the reconcile itself at scale. Status
    writes (ours) do not move the generation, so they never wake the reconciler.
    """
    if event.get("type") == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        memo.setdefault("gone", set()).add(uid)
        _wakeup(memo, uid).set()
        return
    generation = body.get("metadata", {}).get("generation")
    seen: dict[str, Any] = memo.setdefault("seen_generation", {})
    if seen.get(uid) != generation:
        _wakeup(memo, uid).set()


def _gone(memo: kopf.Memo, uid: str) -> bool:
    """Whether the event handler saw policy ``uid`` deleted (or being deleted)."""
    return uid in memo.get("gone", ())


# Stopped by kopf (a deletion held by someone else's finalizer, the operator exiting or pausing), the
# daemon gets DELETE_GRACE_S to finish its pass (and delete the children) before kopf cancels it (then
# 10 s more before kopf gives up on it).
DELETE_GRACE_S = 20.0


# A daemon that raised anyway starts again this soon (kopf's default is 60 s: a policy unprobed for a
# minute after an API server restart, as the soak showed before connection errors became KubeErrors).
DAEMON_RETRY_S = 5.0


@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    backoff=DAEMON_RETRY_S,
    cancellation_backoff=DELETE_GRACE_S,
    cancellation_timeout=10.0,
)
async def policy_reconciler(
    name: str,
    namespace: str | None,
    uid: str,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    pods_by_namespace: kopf.Index[str | None, dict[str, Any]] | None = None,
    incidents_by_namespace: kopf.Index[str | None, dict[str, Any]] | None = None,
    **_: Any,
) -> None:
    """Reconcile, write status when it changed, wait (for a spec change, the interval, or the
    policy's deletion); on deletion, delete the children before returning."""
    assert namespace is not None, "CachePolicy is a namespaced resource"
    wake = _wakeup(memo, uid)
    options = memo.get("options") or {}
    converge_interval = float(options.get("converge_interval_s") or CONVERGE_INTERVAL_S)
    trigger = "start"
    passes = 0
    outcome: ReconcileOutcome | None = None
    while not stopped and not _gone(memo, uid):
        wake.clear()
        # Probe passes of a converged policy only probe (and push where a pod drifted); children are
        # re-applied on every change, while converging, and every APPLY_EVERY passes (drift repair).
        apply_children = (
            trigger != "timer" or outcome is None or outcome.outcome != "ready" or passes % APPLY_EVERY == 0
        )
        # Drift repair and the first pass after an operator start read the children and apply only
        # what drifted; a spec change (or a new policy: no config hash in status) applies directly.
        verify_children = trigger == "timer" or (
            trigger == "start" and bool((body.get("status") or {}).get("configHash"))
        )
        memo.setdefault("seen_generation", {})[uid] = body.get("metadata", {}).get("generation")
        # Deleting the runtime children of a policy that moved to selector mode costs two calls; done
        # after a spec change and at an operator start (reading first, see verify_children), not for
        # every new policy nor at rest.
        delete_stale = trigger == "change" or (trigger == "start" and verify_children)
        drift_pass = passes > 0 and passes % APPLY_EVERY == 0
        # A converged policy's probe passes reuse the tokens of the pass before (no read of the
        # Secret); drift repair, a change and any pass after an unclean one read them again.
        known_tokens = (
            outcome.tokens
            if trigger == "timer" and outcome is not None and outcome.outcome == "ready" and not drift_pass
            else None
        )
        if trigger == "timer" and passes > 0 and passes % APPLY_EVERY == 0 and not await _exists(
            memo, namespace, name, uid, logger
        ):
            break
        outcome = await _reconcile_once(
            name,
            namespace,
            uid,
            body,
            memo,
            logger,
            trigger,
            apply_children,
            delete_stale,
            verify_children,
            known_tokens,
            None if pods_by_namespace is None else _index_lookup(pods_by_namespace),
            memo.kube
            if incidents_by_namespace is None
            else IncidentIndexKube(memo.kube, incidents_by_namespace),
        )
        passes += 1
        if outcome is None or outcome.outcome == "progressing":
            interval = converge_interval
        else:
            probe = ((body.get("spec") or {}).get("health") or {}).get("probeIntervalSeconds")
            # A pending symptom is confirmed by sooner probes (same count, detection.probe_interval),
            # judged from the symptoms this pass wrote (the body's status may not show them yet).
            detected = getattr(outcome.detection, "status", None) or {}
            symptoms = detected.get("symptoms", (body.get("status") or {}).get("symptoms"))
            interval = probe_interval(symptoms, float(probe or DEFAULT_PROBE_INTERVAL_S))
        interval = min(interval, _until_expiry(body.get("status") or {}, time.time()))
        if _gone(memo, uid):
            break
        trigger = await _wait(wake, stopped, interval)
    if not stopped or (
        stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
    ):
        await _delete_children(name, namespace, uid, dict(body.get("spec") or {}), memo, logger)


def _without_finalizer(daemon: Callable[..., Any]) -> None:
    """Register ``daemon`` (already decorated with ``kopf.daemon``) as not needing kopf's finalizer.

    kopf fixes ``requires_finalizer=True`` for every daemon, so that it can stop the daemon before the
    object goes; this daemon stops itself instead (module docstring). kopf has no public switch, so the
    registered handler is replaced by a copy with the flag off (a unit test pins that it is off, so a
    kopf upgrade that moves this fails there, not silently in a cluster). Policies carrying the
    finalizer from an older operator lose it at the next start: kopf removes a finalizer no handler
    requires.
    """
    spawning = kopf.get_default_registry()._spawning
    spawning._handlers[:] = [
        dataclasses.replace(handler, requires_finalizer=False) if handler.fn is daemon else handler
        for handler in spawning._handlers
    ]


_without_finalizer(policy_reconciler)


async def _exists(memo: kopf.Memo, namespace: str, name: str, uid: str, logger: kopf.Logger) -> bool:
    """Whether policy ``uid`` still exists (read by name): a DELETED event lost across a watch restart
    must not leave a daemon re-creating the children of a policy that is gone. A failed read counts as
    existing (the next check tries again)."""
    try:
        current = await memo.kube.get(API_VERSION, "CachePolicy", namespace, name)
    except KubeError as exc:
        logger.warning(f"could not check that the policy still exists: {exc}")
        return True
    if current is not None and (current.get("metadata") or {}).get("uid") == uid:
        return True
    memo.setdefault("gone", set()).add(uid)
    return False


async def _reconcile_once(
    name: str,
    namespace: str,
    uid: str,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    trigger: str,
    apply_children: bool = True,
    delete_stale: bool = True,
    verify_children: bool = False,
    known_tokens: Any = None,
    pods_in_namespace: Callable[[str], list[dict[str, Any]]] | None = None,
    kube: Any = None,
) -> ReconcileOutcome | None:
    metrics = memo.metrics
    started = time.perf_counter()
    policy = PolicyRef(name, namespace, uid, body.get("metadata", {}).get("generation"))
    patch = StatusPatch()

    def post_event(type_: str, reason: str, message: str) -> None:
        # kopf.event: detection's openings, resolutions and refusals are Events on the policy even
        # though the operator posts only warnings from its logs.
        kopf.event(body, type=type_, reason=reason, message=message[:1000])

    try:
        outcome = await handle_reconcile(
            policy,
            dict(body.get("spec") or {}),
            dict(body.get("status") or {}),
            kube=kube or memo.kube,
            pods_io=memo.pods,
            patch=patch,
            logger=logger,
            resolve_service_hosts=bool((memo.get("options") or {}).get("resolve_service_hosts")),
            apply_children=apply_children,
            delete_stale=delete_stale,
            verify_children=verify_children,
            known_tokens=known_tokens,
            pods_in_namespace=pods_in_namespace,
            events=post_event,
        )
        # The first pass of a daemon always writes (an operator that starts says it has seen the
        # policy); later passes only when the status changes beyond the pass's own clock.
        if patch.status and (trigger == "start" or status_changes(body.get("status") or {}, patch.status)):
            await memo.kube.patch_status(API_VERSION, "CachePolicy", namespace, name, patch.status)
            metrics.status_writes.inc()
    except KubeError as exc:
        metrics.errors.labels(kind="kubernetes").inc()
        metrics.reconciles.labels(trigger=trigger, outcome="error").inc()
        logger.error(f"reconcile failed: {exc}")
        return None
    except Exception as exc:  # one policy's bug must not kill its reconciler for good
        metrics.errors.labels(kind="internal").inc()
        metrics.reconciles.labels(trigger=trigger, outcome="error").inc()
        logger.exception(f"reconcile failed: {type(exc).__name__}: {exc}")
        return None
    finally:
        metrics.reconcile_seconds.labels(trigger=trigger).observe(time.perf_counter() - started)
    metrics.reconciles.labels(trigger=trigger, outcome=outcome.outcome).inc()
    if outcome.outcome == "stalled":
        metrics.errors.labels(kind="spec").inc()
    for view in outcome.pods:
        metrics.probes.labels(result="ok" if view.health is not None else "error").inc()
        if view.pushed:
            metrics.pushes.labels(result="ok" if view.error is None else "error").inc()
    metrics.policies.record(f"{namespace}/{name}", patch.status.get("conditions") or [])
    if outcome.detection is not None:
        for event, symptom in outcome.detection.transitions:
            metrics.auto_incidents.labels(event=event, symptom=symptom).inc()
        for verdict, symptom in outcome.detection.verdicts:
            metrics.remediations.labels(verdict=verdict, symptom=symptom).inc()
        if outcome.detection.deleted:
            metrics.incidents_deleted.inc(len(outcome.detection.deleted))
    return outcome


def _until_expiry(status: Any, now_s: float) -> float:
    """Seconds until the time-boxed override or isolation in ``status`` expires (at least 0.5, so the
    pass right after the expiry lifts it), or infinity when there is none."""
    waits = [float("inf")]
    for key in ("override", "isolation"):
        record = status.get(key) if hasattr(status, "get") else None
        if record is None or not hasattr(record, "get"):
            continue
        try:
            expires = parse_rfc3339(record.get("expiresAt"), f"status.{key}.expiresAt")
        except ValueError:
            continue
        waits.append(max(0.5, expires - now_s + 0.5))
    return min(waits)


class IncidentIndexKube:
    """The operator's Kubernetes client for one reconcile, except that listing a namespace's
    CacheIncidents reads the incident index (a watch) instead of calling the API server: automatic
    detection lists them at every probe of a policy with open incidents and every minute for garbage
    collection. Incidents being deleted are left out. The incident executor keeps listing for real
    (its safety decisions read the API server)."""

    def __init__(self, kube: Any, index: kopf.Index[str | None, dict[str, Any]]) -> None:
        self.kube = kube
        self.index = index

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kube, name)

    async def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """CacheIncidents of ``namespace`` from the index (no selector); anything else from the API."""
        if kind != "CacheIncident" or label_selector is not None:
            result: list[dict[str, Any]] = await self.kube.list_objects(
                api_version, kind, namespace, label_selector
            )
            return result
        return [
            copy.deepcopy(item)
            for item in self.index.get(namespace, [])
            if not (item.get("metadata") or {}).get("deletionTimestamp")
        ]


def _index_lookup(index: kopf.Index[str | None, dict[str, Any]]) -> Callable[[str], list[dict[str, Any]]]:
    """The pods of a namespace from kopf's index (a snapshot list)."""

    def lookup(namespace: str) -> list[dict[str, Any]]:
        return list(index.get(namespace, []))

    return lookup


async def _wait(wake: asyncio.Event, stopped: kopf.DaemonStopped, interval: float) -> str:
    """Sleep until woken, stopped or ``interval`` elapsed; return what ended the wait."""
    woken = asyncio.ensure_future(wake.wait())
    ended = asyncio.ensure_future(stopped.wait())
    try:
        done, _ = await asyncio.wait({woken, ended}, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (woken, ended):
            task.cancel()
    return "change" if woken in done else "timer"


async def _delete_children(
    name: str, namespace: str, uid: str, spec: dict[str, Any], memo: kopf.Memo, logger: kopf.Logger
) -> None:
    """Delete the children of a policy that is gone (or being deleted) and forget it. A failure is
    logged: the owner references still get the children, later."""
    policy = PolicyRef(name, namespace, uid)
    try:
        await handle_delete(policy, spec, kube=memo.kube, logger=logger, owned_only=True)
    except KubeError as exc:
        logger.error(f"deleting the children failed (garbage collection gets them): {exc}")
    memo.metrics.policies.forget(f"{namespace}/{name}")
    memo.get("wakeups", {}).pop(uid, None)
    memo.get("seen_generation", {}).pop(uid, None)
    memo.get("gone", set()).discard(uid)
