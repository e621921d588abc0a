"""An incident's execution plan: ordered steps per pod, each a runtime admin call with an
idempotency key, resumable from the step records kept in the incident's status.

At-most-once per pod, also when the operator dies mid-way, comes from two rules:

* a step is recorded ``Running`` (with its idempotency key) in status *before* the call, and its
  result after; :func:`next_steps` never returns a step recorded as finished, and returns a step left
  ``Running`` again with the **same** key, so the runtime (which remembers keys:
  ``cache_runtime/service/idempotency.py``) answers with the first result instead of acting twice;
* the key is ``<incident uid>:<step>:<pod>``, so it is the same on every attempt and differs between
  incidents, steps and pods.

Paths are relative to the runtime's admin prefix (``cache_operator.podclient.ADMIN_PREFIX``,
``/internal/cache``), as ``PodClient`` takes them. The endpoints and parameters are those of
``docs/runtime-api.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from pydantic import ValidationError

from cache_operator.api.cacheincident import CacheIncidentSpec
from cache_runtime.timefmt import parse_rfc3339, rfc3339

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255  # the runtime's limit (cache_runtime.service.idempotency.MAX_KEY_LENGTH)
FINISHED = frozenset({"Succeeded", "Failed", "Skipped"})
DONE = frozenset({"Succeeded", "Skipped"})
Outcome = Literal["Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class PodRequest:
    """One HTTP call to a runtime pod's admin API."""

    method: Literal["GET", "POST"]
    path: str  # relative to /internal/cache, e.g. "/emergency/isolate"
    query: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None

    @property
    def target(self) -> str:
        """``path`` with the query string, ready to append to the admin prefix."""
        return f"{self.path}?{urlencode(sorted(self.query.items()))}" if self.query else self.path


@dataclass(frozen=True)
class PlannedStep:
    """One step on one pod. ``request`` None = nothing to call: record it Skipped with ``note``."""

    pod: str
    step: str
    request: PodRequest | None
    idempotency_key: str | None
    note: str = ""


@dataclass(frozen=True)
class Plan:
    """Every step of an incident, pod by pod in name order, steps of a pod in execution order."""

    incident: str
    uid: str
    action: str
    dry_run: bool
    steps: tuple[PlannedStep, ...]


def idempotency_key(uid: str, step: str, pod: str) -> str:
    """``<uid>:<step>:<pod>``; a pod name that would make it longer than the runtime accepts (255)
    is replaced by its digest, so the key stays deterministic."""
    key = f"{uid}:{step}:{pod}"
    if len(key) > MAX_KEY_LENGTH:
        key = f"{uid}:{step}:{hashlib.sha256(pod.encode()).hexdigest()[:32]}"
    return key


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _action_requests(
    spec: CacheIncidentSpec, config_document: Mapping[str, Any] | None
) -> list[tuple[str, PodRequest | None, str]]:
    """(step, request, note) per step of ``spec.action``, identical for every pod."""
    dry = spec.dry_run
    dry_query = {"dry_run": "true"} if dry else {}
    params = spec.parameters
    action = spec.action
    if action == "diagnose":
        # Read-only: a dry run reads as well.
        return [
            ("diagnose-health", PodRequest("GET", "/health"), ""),
            ("diagnose-key-analysis", PodRequest("GET", "/key-analysis"), ""),
        ]
    if action == "invalidate":
        assert params is not None  # the spec validator requires pattern or namespace
        query = (
            {"pattern": params.pattern}
            if params.pattern is not None
            else {"namespace": str(params.namespace)}
        )
        return [(action, PodRequest("POST", "/invalidate", {**query, **dry_query}), "")]
    if action == "compress-existing":
        query = dict(dry_query)
        if params is not None and params.max_entries is not None:
            query["max_entries"] = str(params.max_entries)
        return [(action, PodRequest("POST", "/compress-existing", query), "")]
    if action == "apply-override":
        # Always pushed as a rendered document (the override in the policy's status + the spec).
        if config_document is None:
            raise ValueError("apply-override needs config_document (the config rendered with the override)")
        body = {"config": dict(config_document["config"]), "hash": str(config_document["hash"])}
        path = "/config/validate" if dry else "/config/apply"
        push = PodRequest("POST", path, {}, body)
        steps: list[tuple[str, PodRequest | None, str]] = [("push-override", push, "")]
        assert params is not None and params.overrides is not None  # required by the spec validator
        nested = params.overrides.get("compression")
        threshold = "compression.threshold_bytes" in params.overrides or (
            isinstance(nested, Mapping) and "threshold_bytes" in nested
        )
        if threshold:
            # A new threshold applies to new writes only: recompress what L1 already holds (not after
            # a level change, the fix of compression that costs too much).
            steps.append(("compress-existing", PodRequest("POST", "/compress-existing", dry_query), ""))
        return steps
    if action == "apply-preset":
        assert params is not None and params.preset is not None  # required by the spec validator
        if config_document is not None:
            # The override recorded in the policy's status, rendered with the spec's own overrides:
            # the same document the reconciler pushes, so the pods' hash matches the policy's and
            # no ConfigDrift follows. config/apply has no dry run; config/validate is its dry run.
            body = {"config": dict(config_document["config"]), "hash": str(config_document["hash"])}
            path = "/config/validate" if dry else "/config/apply"
            return [("push-override", PodRequest("POST", path, {}, body), "")]
        return [
            ("apply-preset", PodRequest("POST", "/apply-preset", dry_query, {"preset": params.preset}), "")
        ]
    if action == "reconnect-redis":
        if dry:
            return [
                (action, None, "dry run: would drop the Redis pools and reconnect (no dry run on the pod)")
            ]
        return [(action, PodRequest("POST", "/redis/reconnect"), "")]
    paths = {
        "clear": "/clear",
        "gc": "/gc",
        "reset-config": "/reset-config",
        "isolate": "/emergency/isolate",
        "restore": "/emergency/restore",
    }
    return [(action, PodRequest("POST", paths[action], dry_query), "")]


def parse_incident_spec(incident: Mapping[str, Any]) -> CacheIncidentSpec:
    """The incident's spec as the API model; ``ValueError`` naming the field otherwise."""
    try:
        return CacheIncidentSpec.model_validate(dict(incident.get("spec") or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"spec.{where}: {first['msg']}" if where else f"spec: {first['msg']}") from None


def build_plan(
    incident: Mapping[str, Any],
    pods: Sequence[str],
    *,
    config_document: Mapping[str, Any] | None = None,
) -> Plan:
    """The plan of a CacheIncident object over the policy's target ``pods`` (names).

    ``spec.targetPods`` narrows the pods; a named pod that is not a target pod gets a step without a
    request (recorded Skipped). For apply-preset, pass ``config_document`` (``{"config", "hash"}``
    rendered with the incident's override) to push exactly what the reconciler will keep; without
    it the pods get ``POST /apply-preset``. On resumption build the plan over the pods already in
    the incident's records (:func:`planned_pods`), so a pod that appeared later is not added midway.
    """
    metadata = incident.get("metadata") or {}
    uid = metadata.get("uid")
    if not isinstance(uid, str) or not uid or any(not 0x21 <= ord(c) <= 0x7E for c in uid) or len(uid) > 128:
        raise ValueError(f"metadata.uid={uid!r} is invalid; accepted: the object's UID (visible ASCII)")
    if config_document is not None and (
        not isinstance(config_document.get("config"), Mapping)
        or not isinstance(config_document.get("hash"), str)
    ):
        raise ValueError(
            "config_document is invalid; accepted: {config: <resolved config>, hash: <sha256 hex>}"
        )
    spec = parse_incident_spec(incident)
    requests = _action_requests(spec, config_document)
    known = set(pods)
    chosen = sorted(set(spec.target_pods) if spec.target_pods else known)
    steps: list[PlannedStep] = []
    for pod in chosen:
        for step, request, note in requests:
            if pod not in known:
                steps.append(PlannedStep(pod, step, None, None, "not a target pod of the policy"))
                continue
            key = (
                idempotency_key(uid, step, pod) if request is not None and request.method == "POST" else None
            )
            steps.append(PlannedStep(pod, step, request, key, note))
    return Plan(str(metadata.get("name", "")), uid, spec.action, spec.dry_run, tuple(steps))


def _index(results: Sequence[Mapping[str, Any]] | None) -> dict[tuple[str, str], Mapping[str, Any]]:
    index: dict[tuple[str, str], Mapping[str, Any]] = {}
    for position, record in enumerate(results or []):
        if (
            not isinstance(record, Mapping)
            or not isinstance(record.get("pod"), str)
            or not isinstance(record.get("step"), str)
        ):
            raise ValueError(
                f"status.results[{position}]={str(record)[:80]!r} is invalid; "
                "accepted: {pod, step, result, ...}"
            )
        index[(record["pod"], record["step"])] = record
    return index


def next_steps(plan: Plan, results: Sequence[Mapping[str, Any]] | None) -> list[PlannedStep]:
    """Steps to run now: per pod, its first step not finished in ``results`` (status.results).

    A step recorded Running (or Pending) is returned again, with the same idempotency key. Finished
    steps (Succeeded, Failed, Skipped) are never returned. A pod whose step Failed gets none of its
    later steps. At most one step per pod, pods in plan order: run them in that order (or the pods
    in parallel), recording each before and after.
    """
    index = _index(results)
    ready: list[PlannedStep] = []
    blocked: set[str] = set()
    for step in plan.steps:
        if step.pod in blocked:
            continue
        result = (index.get((step.pod, step.step)) or {}).get("result")
        if result in DONE:
            continue
        blocked.add(step.pod)  # later steps of this pod wait for (or are cancelled by) this one
        if result != "Failed":
            ready.append(step)
    return ready


def outcome(plan: Plan, results: Sequence[Mapping[str, Any]] | None) -> Outcome:
    """Running while any step is left to run; then Succeeded if every step is Succeeded or Skipped,
    else Failed."""
    if next_steps(plan, results):
        return "Running"
    index = _index(results)
    done = all((index.get((s.pod, s.step)) or {}).get("result") in DONE for s in plan.steps)
    return "Succeeded" if done else "Failed"


def planned_pods(results: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The pods an incident already started on (from its records), to rebuild its plan on resume."""
    return sorted({pod for pod, _ in _index(results)})


def pending_records(plan: Plan) -> list[dict[str, Any]]:
    """A Pending record per step: write them when execution starts so the pod set is fixed."""
    return [
        {"pod": s.pod, "step": s.step, "result": "Pending", "idempotencyKey": s.idempotency_key}
        for s in plan.steps
    ]


def started_record(step: PlannedStep, now: float) -> dict[str, Any]:
    """The record to write *before* calling the pod."""
    return {
        "pod": step.pod,
        "step": step.step,
        "result": "Running",
        "startedAt": rfc3339(now),
        "idempotencyKey": step.idempotency_key,
    }


def counts_from_reply(body: Any) -> dict[str, int]:
    """The integer figures of a runtime action's answer (deleted keys, rewritten entries...)."""
    if not isinstance(body, Mapping):
        return {}
    return {
        str(key): int(value)
        for key, value in body.items()
        if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    }


def finished_record(
    step: PlannedStep,
    now: float,
    result: Literal["Succeeded", "Failed", "Skipped"],
    *,
    started_at: str | None = None,
    counts: Mapping[str, int] | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """The record to write *after* the call (or instead of it, for a Skipped step)."""
    record: dict[str, Any] = {
        "pod": step.pod,
        "step": step.step,
        "result": result,
        "completedAt": rfc3339(now),
        "idempotencyKey": step.idempotency_key,
    }
    # Without started_at, merge_record keeps the startedAt of the Running record written before.
    if started_at is not None:
        record["startedAt"] = started_at
    if counts:
        record["counts"] = dict(counts)
    if message:
        record["message"] = message[:1024]
    return record


def merge_record(
    results: Sequence[Mapping[str, Any]] | None, record: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """``results`` with ``record`` replacing the one of the same pod and step (keeping its
    ``startedAt`` when the new one has none), order kept, new ones appended."""
    merged: list[dict[str, Any]] = []
    replaced = False
    for existing in results or []:
        if existing.get("pod") == record.get("pod") and existing.get("step") == record.get("step"):
            combined = {**existing, **{k: v for k, v in record.items() if v is not None}}
            merged.append(combined)
            replaced = True
        else:
            merged.append(dict(existing))
    if not replaced:
        merged.append({k: v for k, v in record.items() if v is not None})
    return merged


# ------------------------------------------------------------------------------------------------
# time-boxed overrides


def expires_at(incident: Mapping[str, Any], now: float, default_duration_s: int) -> str | None:
    """When an apply-preset, apply-override or isolate incident's effect is lifted: ``status.startedAt``
    (else ``now``) plus ``parameters.durationSeconds`` (else the policy's ``overrideDurationSeconds``).
    Counting from startedAt makes a resumed incident compute the same expiry. None for other actions."""
    spec = parse_incident_spec(incident)
    if spec.action not in ("apply-preset", "apply-override", "isolate"):
        return None
    started = (incident.get("status") or {}).get("startedAt")
    start = parse_rfc3339(started, "status.startedAt") if started is not None else now
    duration = (
        spec.parameters.duration_seconds
        if spec.parameters is not None and spec.parameters.duration_seconds is not None
        else default_duration_s
    )
    return rfc3339(start + duration)


def override_for(
    incident: Mapping[str, Any], now: float, default_duration_s: int = 1800
) -> dict[str, Any] | None:
    """The policy's ``status.override`` an incident sets (``{preset, incident, expiresAt}`` for
    apply-preset, ``{overrides, incident, expiresAt}`` for apply-override), or None when it sets none
    (any other action, or a dry run)."""
    spec = parse_incident_spec(incident)
    if spec.action not in ("apply-preset", "apply-override") or spec.dry_run or spec.parameters is None:
        return None
    if spec.action == "apply-override":
        return {
            "overrides": dict(spec.parameters.overrides or {}),
            "incident": str((incident.get("metadata") or {}).get("name", "")),
            "expiresAt": expires_at(incident, now, default_duration_s),
        }
    return {
        "preset": spec.parameters.preset,
        "incident": str((incident.get("metadata") or {}).get("name", "")),
        "expiresAt": expires_at(incident, now, default_duration_s),
    }


def override_active(override: Mapping[str, Any] | None, now: float) -> bool:
    """True while ``override`` (a status.override) has not expired; a malformed one is not active."""
    if not isinstance(override, Mapping):
        return False
    try:
        return parse_rfc3339(override.get("expiresAt"), "status.override.expiresAt") > now
    except ValueError:
        return False


def override_to_lift(override: Mapping[str, Any] | None, now: float, incident_names: Sequence[str]) -> bool:
    """True when a recorded override must go: it expired, or its incident no longer exists."""
    if override is None:
        return False
    return not override_active(override, now) or override.get("incident") not in set(incident_names)


# ------------------------------------------------------------------------------------------------
# time-boxed isolation

RESTORE_EXPIRED_STEP = "restore-expired"


def isolation_for(
    incident: Mapping[str, Any],
    pods: Sequence[str],
    now: float,
    default_duration_s: int,
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The policy's ``status.isolation`` after an ``isolate`` incident isolates ``pods``
    (``{incident, incidentUid, pods, expiresAt}``), or None for any other action or a dry run.

    Pods of a ``current`` record that has not expired stay in it (they are still isolated); the new
    incident's expiry and UID apply to all of them."""
    spec = parse_incident_spec(incident)
    if spec.action != "isolate" or spec.dry_run:
        return None
    kept: set[str] = set()
    if isinstance(current, Mapping):
        try:
            if parse_rfc3339(current.get("expiresAt"), "status.isolation.expiresAt") > now:
                kept = {str(pod) for pod in current.get("pods") or []}
        except ValueError:
            kept = set()
    metadata = incident.get("metadata") or {}
    return {
        "incident": str(metadata.get("name", "")),
        "incidentUid": str(metadata.get("uid", "")),
        "pods": sorted(kept | set(pods)),
        "expiresAt": expires_at(incident, now, default_duration_s),
    }


def isolation_after_restore(
    current: Mapping[str, Any] | None, restored: Sequence[str]
) -> dict[str, Any] | None:
    """``status.isolation`` once ``restored`` pods are out of maintenance mode: None when none is left
    (or there was no record), else the record with the remaining pods."""
    if not isinstance(current, Mapping):
        return None
    left = sorted(set(current.get("pods") or []) - set(restored))
    return {**current, "pods": left} if left else None


def isolation_expired(isolation: Mapping[str, Any] | None, now: float) -> bool:
    """True when a recorded isolation is due to be restored (a malformed expiry counts as due)."""
    if not isinstance(isolation, Mapping):
        return False
    try:
        return parse_rfc3339(isolation.get("expiresAt"), "status.isolation.expiresAt") <= now
    except ValueError:
        return True


def restore_request(isolation: Mapping[str, Any], pod: str) -> tuple[PodRequest, str]:
    """The call that restores ``pod`` at the isolation's expiry and its idempotency key
    (``<incident uid>:restore-expired:<pod>``: a repeated pass replays instead of acting twice)."""
    uid = str(isolation.get("incidentUid") or isolation.get("incident") or "isolation")
    return PodRequest("POST", "/emergency/restore"), idempotency_key(uid, RESTORE_EXPIRED_STEP, pod)
