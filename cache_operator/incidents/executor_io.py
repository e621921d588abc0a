"""CacheIncident execution: the ``handle_*`` logic behind the thin kopf handlers.

One run (:func:`handle_incident`):

1. re-read the incident (the handler's body may predate a status written by an earlier run) and stop at
   once when it is finished;
2. check that ``spec.policyRef`` names an existing CachePolicy, find its target pods with reconcile's
   selection (:mod:`cache_operator.targets`), and ask
   :func:`cache_operator.incidents.safety.may_run` (pause, mode, allowed actions, cooldown, one
   disruptive action per policy): a refusal is recorded (phase, reason), retried later when the
   refusal is temporary;
3. build the plan (:mod:`cache_operator.incidents.plan`) and run it pod by pod, **at most once per
   pod**: each step is recorded ``Running`` in status *before* the pod is called and its result
   *after*, and every call carries the plan's ``Idempotency-Key``. An operator killed between the two
   writes resumes with :func:`~cache_operator.incidents.plan.next_steps`, which hands back the step in
   flight with the same key, and the runtime replays its first answer instead of acting again;
4. write conditions (``Running``, ``Succeeded``), the phase, and an Event per step.

``apply-preset`` first writes a time-boxed override into the CachePolicy's *status* (never its spec:
GitOps owns it), then pushes the config rendered with it to each pod (the same document the policy
reconciler keeps pushing until ``expiresAt``). Deleting the incident lifts its override
(:func:`handle_incident_deleted`).

Everything that talks to the outside comes in as an argument (``kube``, ``caller``, ``events``), so unit
tests pass fakes and the e2e test runs the same code against devcluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cache_operator import conditions as conds
from cache_operator import render
from cache_operator.api.cacheincident import TERMINAL_PHASES, CacheIncidentSpec
from cache_operator.api.cachepolicy import CachePolicySpec
from cache_operator.api.cachepolicy_status import ActiveOverride
from cache_operator.api.common import API_VERSION
from cache_operator.incidents import lifecycle, remediation, safety
from cache_operator.incidents import plan as plans
from cache_operator.incidents.redis_cluster import crd_cause, wants_cluster_view
from cache_operator.incidents.redis_cluster_io import cluster_causes
from cache_operator.k8s import KubeError
from cache_operator.podclient import PodReply, PodTarget
from cache_operator.policy_inputs import current_tokens, parse_spec, resolve_redis_url
from cache_operator.ports import KubeIO, PolicyRef
from cache_operator.targets import pod_selection, pod_target, select_pods
from cache_runtime.timefmt import rfc3339

FINISHED_PHASES = frozenset(TERMINAL_PHASES | {"Recommended"})
HEALTH_STEP = "diagnose-health"


class ActionCaller(Protocol):
    """Sends one planned request to one pod (implemented by :class:`PodActionCaller`)."""

    async def call(
        self, pod: PodTarget, token: str, request: plans.PodRequest, idempotency_key: str | None
    ) -> PodReply:
        """Send one step's admin call to the pod, with its ``Idempotency-Key``."""
        ...


EventSink = Callable[[str, str, str], Awaitable[None] | None]  # (type Normal/Warning, reason, message)


@dataclass(frozen=True)
class IncidentRef:
    """Identity of the CacheIncident being executed."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class Deferred:
    """The incident may not run yet (safety said retry later): the handler retries after ``delay_s``."""

    reason: str
    message: str
    delay_s: float


class PodActionCaller:
    """:class:`ActionCaller` over the operator's one :class:`~cache_operator.podclient.PodClient` pool,
    adding the ``Idempotency-Key`` header."""

    def __init__(self, pod_client: Any) -> None:
        self.pod_client = pod_client

    async def call(
        self, pod: PodTarget, token: str, request: plans.PodRequest, idempotency_key: str | None
    ) -> PodReply:
        """One request; expected failures come back as a ``PodReply`` with ``ok=False``."""
        headers = {plans.IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else None
        body = dict(request.body) if request.body is not None else None
        reply: PodReply = await self.pod_client.call(
            pod, request.method, request.target, token, body, extra_headers=headers
        )
        return reply


# --------------------------------------------------------------------------------------------------
# pure helpers


def diagnosis_from_health(reports: Mapping[str, Mapping[str, Any]], now: str) -> dict[str, Any]:
    """status.diagnosis from each pod's health report: causes merged by name, best score first, the
    evidence of each pod kept under its name."""
    merged: dict[str, dict[str, Any]] = {}
    for pod, report in sorted(reports.items()):
        for reported in (report.get("diagnosis") or {}).get("causes") or []:
            name = str(reported.get("name") or "Unknown")
            entry = merged.setdefault(
                name, {"name": name, "evidence": {}, "score": 0.0, "recommendations": []}
            )
            entry["evidence"][pod] = reported.get("evidence") or {}
            entry["score"] = max(entry["score"], float(reported.get("score") or 0.0))
            if not entry["recommendations"]:
                entry["recommendations"] = list(reported.get("recommendations") or [])
    causes = []
    for entry in sorted(merged.values(), key=lambda e: (-e["score"], e["name"])):
        cause: dict[str, Any] = {"name": entry["name"], "evidence": entry["evidence"]}
        first = entry["recommendations"][0] if entry["recommendations"] else None
        if first:
            cause["recommendation"] = str(first.get("description") or "")
            if first.get("action") in safety.INCIDENT_ACTIONS:
                cause["action"] = first["action"]
        causes.append(cause)
    return {"causes": causes, "diagnosedAt": now}


def _now_s() -> float:
    return time.time()


# --------------------------------------------------------------------------------------------------
# the run


class IncidentRun:
    """One execution of one incident: keeps its status and writes it before and after each pod call."""

    def __init__(
        self,
        incident: IncidentRef,
        status: Mapping[str, Any],
        generation: int | None,
        kube: KubeIO,
        events: EventSink,
        clock: Callable[[], float],
    ) -> None:
        self.incident = incident
        self.status: dict[str, Any] = dict(status)
        self.results: list[dict[str, Any]] = [dict(r) for r in status.get("results") or []]
        self.generation = generation
        self.kube = kube
        self.events = events
        self.clock = clock
        self.dry_run = False
        self.automatic = False

    def now(self) -> str:
        """The current time, RFC 3339."""
        return rfc3339(self.clock())

    async def event(self, type_: str, reason: str, message: str) -> None:
        """Post an Event on the incident (the sink may be sync or async)."""
        outcome = self.events(type_, reason, message)
        if outcome is not None:
            await outcome

    async def write(self, **fields: Any) -> None:
        """Merge ``fields`` into the status kept here and write them, with ``results`` (always whole: a
        merge patch replaces lists) and ``observedGeneration``. Only those: the policy's reconciler
        writes the incident's detection, diagnosis and joined ``symptoms`` while this runs, and the
        copy read when the run started must not put their old values back."""
        self.status.update(fields)
        self.status["results"] = self.results
        self.status["observedGeneration"] = self.generation
        patch = {**fields, "results": self.results, "observedGeneration": self.generation}
        await self.kube.patch_status(
            API_VERSION, "CacheIncident", self.incident.namespace, self.incident.name, patch
        )

    async def record(self, record: Mapping[str, Any]) -> None:
        """Merge one step record into status.results and write it."""
        self.results = plans.merge_record(self.results, record)
        await self.write()

    async def finish(self, phase: str, reason: str, message: str) -> None:
        """A finished phase (terminal, or Recommended), conditions, completion time, and an Event."""
        now = self.now()
        conditions = conds.incident_conditions(
            phase, message, self.status.get("conditions"), now, self.generation, reason
        )
        fields: dict[str, Any] = {"phase": phase, "conditions": conditions, "message": message}
        if phase in TERMINAL_PHASES:
            fields["completedAt"] = now
        await self.write(**fields)
        await self.event("Normal" if phase in ("Succeeded", "Resolved") else "Warning", reason, message)

    async def wait(self, reason: str, message: str) -> None:
        """Phase Pending with the reason it waits (safety said: not now)."""
        if self.status.get("phase") == "Pending" and self.status.get("message") == message:
            return
        conditions = conds.incident_conditions(
            "Pending", message, self.status.get("conditions"), self.now(), self.generation, reason
        )
        await self.write(phase="Pending", conditions=conditions, message=message)
        await self.event("Normal", reason, message)

    async def start(self) -> None:
        """Phase Running (once), startedAt kept from an earlier run."""
        if self.status.get("phase") == "Running":
            return
        now = self.now()
        conditions = conds.incident_conditions(
            "Running", "executing", self.status.get("conditions"), now, self.generation, "Executing"
        )
        fields: dict[str, Any] = {
            "phase": "Running",
            "conditions": conditions,
            "startedAt": self.status.get("startedAt") or now,
            "message": "executing",
        }
        if not self.status.get("detection"):
            # Only when nobody wrote one: the policy's reconciler owns an automatic incident's detection.
            fields["detection"] = {"source": "Auto" if self.automatic else "Manual"}
        await self.write(**fields)


async def handle_incident(
    incident: IncidentRef,
    *,
    kube: KubeIO,
    caller: ActionCaller,
    events: EventSink,
    logger: Any,
    resolve_service_hosts: bool = False,
    clock: Callable[[], float] = _now_s,
    locks: PolicyLocks | None = None,
) -> str | Deferred:
    """Run ``incident`` to a finished phase (or resume it); returns the phase it ended in, or a
    :class:`Deferred` when safety says to try again later.

    Idempotent: an incident already finished is left alone; one interrupted mid-way resumes from the
    status records (pods already done are skipped, a step left ``Running`` is sent again with the same
    Idempotency-Key, so the runtime replays rather than acts twice).
    """
    body = await kube.get(API_VERSION, "CacheIncident", incident.namespace, incident.name)
    if body is None:
        return "Gone"
    status = dict(body.get("status") or {})
    generation = (body.get("metadata") or {}).get("generation")
    run = IncidentRun(incident, status, generation, kube, events, clock)
    if status.get("phase") in FINISHED_PHASES:
        return str(status["phase"])
    try:
        spec = plans.parse_incident_spec(body)
    except ValueError as exc:
        await run.finish("Failed", "InvalidSpec", str(exc))
        return "Failed"
    run.dry_run = spec.dry_run
    run.automatic = safety.is_automatic(body)

    policy_name = spec.policy_ref.name
    policy = await kube.get(API_VERSION, "CachePolicy", incident.namespace, policy_name)
    if policy is None:
        message = f"spec.policyRef.name: CachePolicy {incident.namespace}/{policy_name} does not exist"
        await run.finish("Failed", "PolicyNotFound", message)
        return "Failed"
    try:
        model = parse_spec(policy.get("spec") or {})
        safety.PolicyState.from_policy(policy)
    except ValueError as exc:
        await run.finish("Failed", "PolicyInvalid", f"CachePolicy {policy_name}: {exc}")
        return "Failed"

    # Safety: decided from what is in the cluster (the policy and its incidents), never from memory.
    # The policy's lock (one per policy in this operator) makes "decide, record the cooldown, mark
    # Running" one step, so two incidents of a policy cannot both see no disruptive action running.
    async with locks.lock(incident.namespace, policy_name) if locks is not None else _no_lock():
        prepared = await _decide_and_start(
            run, body, spec, incident, model, kube, clock, resolve_service_hosts
        )
    if not isinstance(prepared, tuple):
        return prepared
    plan, targets, token = prepared
    plan_pods = sorted({step.pod for step in plan.steps})
    health = await _execute(run, plan, targets, token, caller, logger)

    if spec.action == "diagnose":
        await _record_diagnosis(run, plan, health, targets, token, caller, model)
    phase = plans.outcome(plan, run.results)
    failed = sorted({r["pod"] for r in run.results if r.get("result") == "Failed"})
    if spec.action == "restore" and not spec.dry_run:
        restored = sorted({r["pod"] for r in run.results if r.get("result") == "Succeeded"})
        await _lift_isolation(kube, incident.namespace, spec.policy_ref.name, restored, logger)
    if phase == "Failed":
        await run.finish("Failed", "StepsFailed", f"{spec.action} failed on {', '.join(failed)}")
        return "Failed"
    skipped = sum(1 for r in run.results if r.get("result") == "Skipped")
    done = f"{spec.action} done on {len(plan_pods) - len(failed)} pod(s)"
    if spec.dry_run:
        done = f"dry run: {done}"
    if skipped:
        done += f" ({skipped} step(s) skipped)"
    if run.automatic and not spec.dry_run and spec.action != "diagnose":
        await _start_verification(run, body, spec, model, clock)
    await run.finish("Succeeded", "DryRun" if spec.dry_run else "Completed", done)
    return "Succeeded"


async def _start_verification(
    run: IncidentRun,
    body: Mapping[str, Any],
    spec: CacheIncidentSpec,
    model: CachePolicySpec,
    clock: Callable[[], float],
) -> None:
    """An automatic action ran: status.remediation goes Verifying (the policy's detection pass then
    watches the symptom's figure for ``spec.remediation.verifyProbes`` probes)."""
    current = run.status.get("remediation") or {}
    if current.get("state") not in (None, remediation.PROPOSED):
        return  # already verifying or decided (a resumed run)
    started = remediation.start_verification(current, spec.action, clock(), model.remediation.verify_probes)
    if spec.action == "apply-override":
        started["expiresAt"] = plans.expires_at(
            {**body, "status": run.status}, clock(), model.remediation.override_duration_seconds
        )
        if spec.parameters is not None and spec.parameters.overrides:
            started["override"] = dict(spec.parameters.overrides)
    conditions = conds.set_condition(
        list(run.status.get("conditions") or []),
        remediation.REMEDIATED_CONDITION,
        "Unknown",
        remediation.VERIFYING_REASON,
        str(started["message"]),
        run.now(),
        run.generation,
    )
    await run.write(remediation=started, conditions=conditions)


class PolicyLocks:
    """One asyncio lock per policy, for the operator's process: serializes the safety decision and
    the start of incidents of one policy (with ``--peering`` one replica is active at a time)."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def lock(self, namespace: str, policy: str) -> asyncio.Lock:
        """The lock of ``namespace/policy`` (created on first use)."""
        return self._locks.setdefault((namespace, policy), asyncio.Lock())


@contextlib.asynccontextmanager
async def _no_lock() -> AsyncIterator[None]:
    yield


async def _decide_and_start(
    run: IncidentRun,
    body: Mapping[str, Any],
    spec: CacheIncidentSpec,
    incident: IncidentRef,
    model: CachePolicySpec,
    kube: KubeIO,
    clock: Callable[[], float],
    resolve_service_hosts: bool,
) -> str | Deferred | tuple[plans.Plan, dict[str, PodTarget | None], str]:
    """Safety decision, target pods, plan, cooldown record and phase Running; returns the finished
    phase or :class:`Deferred` when it must not run (now), else (plan, targets, admin token).

    Called under the policy's lock; the policy is read again here so the cooldown records of an
    incident that held the lock a moment ago are seen (and kept)."""
    status = dict(run.status)
    policy_name = spec.policy_ref.name
    policy = await kube.get(API_VERSION, "CachePolicy", incident.namespace, policy_name)
    if policy is None:
        message = f"spec.policyRef.name: CachePolicy {incident.namespace}/{policy_name} does not exist"
        await run.finish("Failed", "PolicyNotFound", message)
        return "Failed"
    policy_state = safety.PolicyState.from_policy(policy)
    siblings = [
        i
        for i in await kube.list_objects(API_VERSION, "CacheIncident", incident.namespace)
        if ((i.get("spec") or {}).get("policyRef") or {}).get("name") == policy_name
    ]
    source = (status.get("detection") or {}).get("source") or (
        "Auto" if safety.is_automatic(body) else "Manual"
    )
    decision = safety.may_run(
        spec.action,
        policy_state,
        siblings,
        clock(),
        model.remediation,
        source="Auto" if source == "Auto" else "Manual",
        incident=incident.name,
        dry_run=spec.dry_run,
        symptom=lifecycle.symptom_of(body) if source == "Auto" else None,
    )
    if not decision.allowed and status.get("phase") != "Running":
        if decision.reason == safety.RECOMMEND_ONLY:
            await run.write(recommendedAction=spec.action)
            await run.finish("Recommended", decision.reason, decision.message)
            return "Recommended"
        if decision.retry_after_s is not None:
            await run.wait(decision.reason, decision.message)
            return Deferred(decision.reason, decision.message, decision.retry_after_s)
        await run.finish("Skipped", decision.reason, decision.message)
        return "Skipped"

    targets = await _target_pods(kube, incident.namespace, policy_name, model)
    names = sorted(targets)
    if spec.target_pods and not run.results:
        unknown = sorted(set(spec.target_pods) - set(targets))
        if unknown:
            message = (
                f"spec.targetPods: {', '.join(unknown)} not among the policy's pods "
                f"({', '.join(names) or 'none'})"
            )
            await run.finish("Failed", "UnknownTargetPods", message)
            return "Failed"
    if not names and not run.results:
        await run.finish("Failed", "NoTargetPods", f"CachePolicy {policy_name} has no target pods")
        return "Failed"

    config_document = None
    if spec.action in ("apply-preset", "apply-override"):
        try:
            config_document = await _apply_override(run, body, spec, model, policy, resolve_service_hosts)
        except ValueError as exc:  # ConfigError, or overrides that do not merge (a dotted key into a value)
            message = f"spec.parameters.overrides: {exc} (the policy's config with the override is invalid)"
            await run.finish("Failed", "InvalidOverride", message)
            return "Failed"
    # On resume the pod set is the one the first run fixed in its records.
    plan_pods = plans.planned_pods(run.results) if run.results else names
    plan = plans.build_plan({**body, "status": run.status}, plan_pods, config_document=config_document)
    if not run.results:
        run.results = plans.pending_records(plan)
    if (
        source == "Auto"
        and not spec.dry_run
        and status.get("phase") != "Running"
        and decision.reason == safety.ALLOWED
    ):
        # The cooldown is kept in the policy's status, written before the action starts: a restarted
        # operator (or a second replica) reads the same record.
        last_actions = safety.record_action(
            (policy.get("status") or {}).get("lastActions"), spec.action, incident.name, clock()
        )
        await kube.patch_status(
            API_VERSION, "CachePolicy", incident.namespace, policy_name, {"lastActions": last_actions}
        )
    if spec.action == "isolate" and not spec.dry_run and status.get("phase") != "Running":
        # Recorded before any pod is isolated: the reconciler restores them when it expires, also
        # if this operator dies mid-way.
        isolation = plans.isolation_for(
            {**body, "status": run.status},
            sorted({step.pod for step in plan.steps if step.request is not None}),
            clock(),
            model.remediation.override_duration_seconds,
            current=(policy.get("status") or {}).get("isolation"),
        )
        await kube.patch_status(
            API_VERSION, "CachePolicy", incident.namespace, policy_name, {"isolation": isolation}
        )
        await run.event(
            "Normal",
            "IsolationRecorded",
            f"pods {', '.join(isolation['pods'] if isolation else [])} of CachePolicy {policy_name} "
            f"restored by the operator at {isolation['expiresAt'] if isolation else '?'}",
        )
    await run.start()
    tokens, _, _ = await current_tokens(kube, PolicyRef(policy_name, incident.namespace, ""), create=False)
    token = tokens[render.ADMIN_TOKEN_KEY]
    return plan, targets, token


async def _target_pods(
    kube: KubeIO, namespace: str, policy_name: str, model: CachePolicySpec
) -> dict[str, PodTarget | None]:
    """The policy's pods by name (where to reach each; None without an IP), as reconcile selects them."""
    port = pod_selection(policy_name, model)[1]
    pods = await select_pods(PolicyRef(policy_name, namespace, ""), model, kube)
    return {str((pod.get("metadata") or {}).get("name")): pod_target(pod, port) for pod in pods}


async def _execute(
    run: IncidentRun,
    plan: plans.Plan,
    targets: Mapping[str, PodTarget | None],
    token: str,
    caller: ActionCaller,
    logger: Any,
) -> dict[str, Mapping[str, Any]]:
    """Run every step the records leave to run; returns the health bodies read (diagnose)."""
    health: dict[str, Mapping[str, Any]] = {}
    # Bounded: each pass finishes at least one step of each pod it returns.
    for _ in range(len(plan.steps) + 1):
        steps = plans.next_steps(plan, run.results)
        if not steps:
            break
        for step in steps:
            await _run_step(run, step, targets, token, caller, logger, health)
    return health


async def _run_step(
    run: IncidentRun,
    step: plans.PlannedStep,
    targets: Mapping[str, PodTarget | None],
    token: str,
    caller: ActionCaller,
    logger: Any,
    health: dict[str, Mapping[str, Any]],
) -> None:
    where = f"{step.step} on {step.pod}"
    target = targets.get(step.pod)
    if step.request is None:
        await run.record(plans.finished_record(step, run.clock(), "Skipped", message=step.note))
        await run.event("Normal", "StepSkipped", f"{where}: {step.note}")
        return
    if target is None:
        message = "pod gone or without an IP"
        await run.record(plans.finished_record(step, run.clock(), "Failed", message=message))
        await run.event("Warning", "StepFailed", f"{where}: {message}")
        return
    # Recorded before the call: a restart finds Running and sends the same key again.
    await run.record(plans.started_record(step, run.clock()))
    reply = await caller.call(target, token, step.request, step.idempotency_key)
    if reply.ok:
        counts = plans.counts_from_reply(reply.body)
        counts.pop("duration_ms", None)
        if step.step == HEALTH_STEP and isinstance(reply.body, Mapping):
            health[step.pod] = reply.body
            counts = {"causes": len((reply.body.get("diagnosis") or {}).get("causes") or [])}
        message = step.note or ("dry run" if run.dry_run else "")
        await run.record(
            plans.finished_record(step, run.clock(), "Succeeded", counts=counts, message=message or None)
        )
        await run.event("Normal", "StepSucceeded", f"{where}: {json.dumps(counts)}")
    else:
        await run.record(plans.finished_record(step, run.clock(), "Failed", message=reply.error))
        await run.event("Warning", "StepFailed", f"{where}: {reply.error}")
        logger.warning(f"{where} failed: {reply.error}")


async def _record_diagnosis(
    run: IncidentRun,
    plan: plans.Plan,
    health: dict[str, Mapping[str, Any]],
    targets: Mapping[str, PodTarget | None],
    token: str,
    caller: ActionCaller,
    model: CachePolicySpec | None = None,
) -> None:
    """status.diagnosis from every pod's health report (read again for pods an earlier run read),
    behind the cross-layer causes of the policy's Redis when the symptom or the pods point at Redis
    (:mod:`.redis_cluster_io`)."""
    for pod in sorted({s.pod for s in plan.steps} - set(health)):
        target = targets.get(pod)
        if target is None:
            continue
        reply = await caller.call(target, token, plans.PodRequest("GET", "/health"), None)
        if reply.ok and isinstance(reply.body, Mapping):
            health[pod] = reply.body
    diagnosis = diagnosis_from_health(health, run.now())
    symptom = str((run.status.get("detection") or {}).get("symptom") or "")
    if model is not None and wants_cluster_view(symptom, diagnosis["causes"]):
        try:
            found, _ = await cluster_causes(run.kube, model, run.incident.namespace, run.clock(), [symptom])
        except (KubeError, ValueError):
            found = []  # the pods' diagnosis stands alone; the cluster view is an addition
        diagnosis["causes"] = [crd_cause(c) for c in found] + diagnosis["causes"]
    top = diagnosis["causes"][0] if diagnosis["causes"] else None
    await run.write(
        diagnosis=diagnosis,
        cause=top["name"] if top else "NoCauseFound",
        recommendedAction=(top or {}).get("action"),
    )


async def _apply_override(
    run: IncidentRun,
    body: Mapping[str, Any],
    spec: CacheIncidentSpec,
    model: CachePolicySpec,
    policy: Mapping[str, Any],
    resolve_service_hosts: bool,
) -> dict[str, Any]:
    """Record the override in the policy's status (unless a dry run, or already there) and return the
    config document rendered with it, which the plan pushes to each pod."""
    started = run.status.get("startedAt") or run.now()
    run.status["startedAt"] = started
    incident_view = {**body, "status": run.status}
    override = plans.override_for(incident_view, run.clock(), model.remediation.override_duration_seconds)
    if override is None:  # dry run: validate the document the override would push
        override = {
            "incident": run.incident.name,
            "expiresAt": plans.expires_at(
                incident_view, run.clock(), model.remediation.override_duration_seconds
            ),
        }
        if spec.action == "apply-override":
            override["overrides"] = dict(spec.parameters.overrides or {}) if spec.parameters else {}
        else:
            override["preset"] = spec.parameters.preset if spec.parameters else None
        redis_url = await resolve_redis_url(model, run.incident.namespace, run.kube, resolve_service_hosts)
        config = render.resolve_policy_config(
            model, redis_url=redis_url, override=ActiveOverride.model_validate(override)
        )
        return {"config": config.public_dict(), "hash": config.config_hash()}
    # Rendered (and so validated) before it is recorded: an override the engine refuses never
    # reaches the policy's status.
    redis_url = await resolve_redis_url(model, run.incident.namespace, run.kube, resolve_service_hosts)
    config = render.resolve_policy_config(
        model, redis_url=redis_url, override=ActiveOverride.model_validate(override)
    )
    if ((policy.get("status") or {}).get("override") or {}).get("incident") != run.incident.name:
        # The policy's status only: the spec stays what GitOps says.
        await run.kube.patch_status(
            API_VERSION, "CachePolicy", run.incident.namespace, spec.policy_ref.name, {"override": override}
        )
        what = (
            f"overrides {json.dumps(override['overrides'], sort_keys=True)}"
            if "overrides" in override
            else f"preset {override.get('preset')}"
        )
        await run.event(
            "Normal",
            "OverrideApplied",
            f"{what} on CachePolicy {spec.policy_ref.name} until {override['expiresAt']} "
            "(status only; the spec is unchanged)",
        )
    return {"config": config.public_dict(), "hash": config.config_hash()}


async def _lift_isolation(
    kube: KubeIO, namespace: str, policy_name: str, restored: list[str], logger: Any
) -> None:
    """A restore incident took ``restored`` out of maintenance mode: they leave the policy's
    time-boxed isolation record (the record goes when no pod is left)."""
    policy = await kube.get(API_VERSION, "CachePolicy", namespace, policy_name)
    current = ((policy or {}).get("status") or {}).get("isolation")
    if not current:
        return
    after = plans.isolation_after_restore(current, restored)
    await kube.patch_status(API_VERSION, "CachePolicy", namespace, policy_name, {"isolation": after})
    logger.info(f"isolation of CachePolicy {policy_name}: restored {', '.join(restored)}")


async def handle_incident_deleted(
    incident: IncidentRef,
    spec: Mapping[str, Any],
    *,
    kube: KubeIO,
    logger: Any,
    clock: Callable[[], float] = _now_s,
) -> bool:
    """Lift the incident's override from its policy's status, and make the isolation it recorded expire
    now (the policy's reconciler restores the pods on its next pass); True when something was lifted."""
    policy_name = ((spec or {}).get("policyRef") or {}).get("name")
    if not policy_name:
        return False
    policy = await kube.get(API_VERSION, "CachePolicy", incident.namespace, policy_name)
    policy_status = (policy or {}).get("status") or {}
    isolation = policy_status.get("isolation") or {}
    lifted = False
    if isolation.get("incident") == incident.name:
        await kube.patch_status(
            API_VERSION,
            "CachePolicy",
            incident.namespace,
            policy_name,
            {"isolation": {"expiresAt": rfc3339(clock())}},
        )
        logger.info(f"isolation of {incident.name} on CachePolicy {policy_name} ends now (incident deleted)")
        lifted = True
    override = policy_status.get("override") or {}
    if override.get("incident") != incident.name:
        return lifted
    await kube.patch_status(API_VERSION, "CachePolicy", incident.namespace, policy_name, {"override": None})
    logger.info(f"lifted the override of {incident.name} from CachePolicy {policy_name}")
    return True
