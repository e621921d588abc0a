"""CachePolicy reconciliation: the ``handle_*`` logic behind the thin kopf handlers.

One pass (:func:`handle_reconcile`), run on create/update/resume and by the probe timer:

1. parse the spec with the API model; a semantically invalid spec (one the CRD's schema lets through
   but the engine refuses, e.g. TTL tiers not ascending) becomes ``Stalled`` with a reason and a
   message naming the field, and the pass ends: no retry loop, the next spec change retries;
2. resolve the engine config (``cache_runtime.config.resolve_config`` through the model) and its hash;
3. unless ``spec.paused``: render the children (pure, :mod:`cache_operator.render`) and apply them with
   server-side apply (owner references and explicit labels come from the renderers); a child the API
   server refuses as invalid (422) makes the policy ``Stalled`` (``ChildRejected``) naming the field;
4. list the target pods (runtime: the Deployment's selector; selector mode: ``spec.selector``), probe
   each one's ``health`` and push ``config/apply`` to each pod that reports another hash (concurrent,
   bounded, with timeouts: :class:`cache_operator.podclient.PodClient`);
5. aggregate into status (pods desired/ready/configured, health, per-pod view) and kstatus conditions;
6. once per probe interval, automatic detection (:mod:`cache_operator.incidents.automatic_io`): symptoms with
   hysteresis in ``status.symptoms``, automatic CacheIncidents opened, resolved and garbage-collected;
   an expired time-boxed override is removed from status (the base config was pushed in step 4).

Everything that talks to the outside world comes in as an argument (``kube``, ``pods``), so unit tests
pass fakes and the e2e test runs the same code against the real cluster.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cache_operator import conditions as conds
from cache_operator import render
from cache_operator.api import CachePolicySpec
from cache_operator.api.cachepolicy_status import ActiveOverride
from cache_operator.child_rejection import ChildRejection, is_rejection, rejection_from_status
from cache_operator.drift import drifted
from cache_operator.incidents.automatic_io import detection_due, run_detection
from cache_operator.incidents.detection import probe_interval
from cache_operator.incidents.executor_io import PodActionCaller
from cache_operator.incidents.plan import isolation_expired, restore_request
from cache_operator.k8s import KubeError
from cache_operator.podclient import PodTarget
from cache_operator.policy_inputs import (
    RedisServiceNotReady,
    current_tokens,
    parse_spec,
    resolve_redis_url,
    secrets_digest,
)
from cache_operator.ports import KubeIO, PodIO, PolicyRef
from cache_operator.targets import select_targets
from cache_runtime.config import CacheConfig, ConfigError
from cache_runtime.timefmt import parse_rfc3339, utc_now

POD_STATUS_LIMIT = 50  # per-pod rows kept in status (the counts cover every pod)


@dataclass
class PodView:
    """One target pod as seen in this pass."""

    name: str
    ip: str | None
    ready: bool
    config_hash: str | None = None
    health: Mapping[str, Any] | None = None
    error: str | None = None
    pushed: bool = False


@dataclass
class ReconcileOutcome:
    """What a pass did (for metrics, logs and tests)."""

    outcome: str  # "ready", "progressing", "stalled", "paused"
    config_hash: str | None = None
    pods: list[PodView] = field(default_factory=list)
    pushed: int = 0
    reason: str = ""
    message: str = ""
    detection: Any = None  # cache_operator.incidents.automatic_io.DetectionOutcome when detection ran
    tokens: Mapping[str, str] | None = None  # the tokens the pass used (the daemon keeps them)


# --------------------------------------------------------------------------------------------------
# pure helpers


def redis_state(health: Mapping[str, Any] | None) -> str:
    """The CRD's Redis state for one pod's health report."""
    if not health:
        return "Unknown"
    redis = health.get("redis") or {}
    status = redis.get("status")
    if status == "disabled":
        return "Disabled"
    if status == "connected":
        return "Connected" if redis.get("breaker_state") in (None, "closed") else "Degraded"
    return "Disconnected"


_VERDICT_ORDER = {"Healthy": 0, "Unknown": 1, "Degraded": 2, "Unhealthy": 3}
_REDIS_ORDER = {"Connected": 0, "Disabled": 0, "Unknown": 1, "Degraded": 2, "Disconnected": 3}


def aggregate_health(views: Sequence[PodView], now: str) -> dict[str, Any]:
    """Status ``health``: lookup-weighted hit rates, summed memory, worst p95, worst Redis state."""
    reports = [v.health for v in views if v.health]
    # Every key is always present (None when unknown): status is written with a JSON merge patch, in
    # which an absent key would keep a stale value and a null removes it.
    out: dict[str, Any] = {
        "status": "Unknown",
        "redis": "Unknown",
        "lastProbeTime": now,
        "hitRate": None,
        "hitRatePercent": None,
        "lifetimeHitRate": None,
        "windowSeconds": None,
        "l1HitRate": None,
        "memoryBytes": None,
        "p95LatencyMs": None,
        "message": None,
    }
    if not reports:
        out["message"] = "no pod answered the health probe yet" if views else "no target pods"
        return out
    lookups = [max(int((r.get("hit_rates") or {}).get("lookups") or 0), 0) for r in reports]
    total = sum(lookups)

    def weighted(key: str, group: str = "hit_rates") -> float | None:
        counts = lookups if group == "hit_rates" else [
            max(int((r.get(group) or {}).get("lookups") or 0), 0) for r in reports
        ]
        pairs: list[tuple[float, int]] = []
        for report, n in zip(reports, counts, strict=False):
            rate = (report.get(group) or {}).get(key)
            if rate is not None:
                pairs.append((float(rate), n))
        if not pairs:
            return None
        weight = sum(n for _, n in pairs)
        if weight == 0:
            return None
        return round(sum(rate * n for rate, n in pairs) / weight, 4)

    # The detector's window (the pods' health window), so the column and an open LowHitRate agree;
    # the lifetime figure apart.
    hit_rate = weighted("overall") if total else None
    l1_rate = weighted("l1") if total else None
    lifetime = weighted("overall", "lifetime_hit_rates")
    windows = [
        float(w) for r in reports if (w := (r.get("hit_rates") or {}).get("window_seconds")) is not None
    ]
    memory = sum(int((r.get("memory") or {}).get("bytes") or 0) for r in reports)
    p95s = [
        lat.get("p95_ms")
        for r in reports
        for lat in (r.get("latency") or {}).values()
        if isinstance(lat, Mapping) and lat.get("p95_ms") is not None
    ]
    verdicts = [
        {"healthy": "Healthy", "degraded": "Degraded", "unhealthy": "Unhealthy"}.get(
            str(r.get("status")), "Unknown"
        )
        for r in reports
    ]
    if len(reports) < len(views):
        verdicts.append("Unknown")
    worst = max(verdicts, key=lambda v: _VERDICT_ORDER[v])
    redis = max((redis_state(r) for r in reports), key=lambda s: _REDIS_ORDER[s])
    out.update(status=worst, redis=redis, memoryBytes=memory)
    if hit_rate is not None:
        out["hitRate"] = hit_rate
        out["hitRatePercent"] = f"{hit_rate * 100:.1f}%"
    if l1_rate is not None:
        out["l1HitRate"] = l1_rate
    if lifetime is not None:
        out["lifetimeHitRate"] = lifetime
    if windows:
        out["windowSeconds"] = round(max(windows), 1)
    if p95s:
        out["p95LatencyMs"] = round(max(float(p) for p in p95s if p is not None), 3)
    if worst != "Healthy":
        unhealthy = [v.name for v, verdict in zip(views, verdicts, strict=False) if verdict != "Healthy"]
        out["message"] = f"{worst}: pods {', '.join(unhealthy[:10])}"
    return out


# --------------------------------------------------------------------------------------------------
# I/O steps


class ChildRejectedError(KubeError):
    """The API server refused a rendered child as invalid (HTTP 422); ``rejection`` names the policy's
    field. A :class:`KubeError` so callers that only know that one still see an API failure."""

    def __init__(self, rejection: ChildRejection) -> None:
        super().__init__(f"apply {rejection.kind} {rejection.name}", 422, rejection.message())
        self.rejection = rejection


def active_override(status: Mapping[str, Any], now: str) -> ActiveOverride | None:
    """The time-boxed override recorded in status, if it has not expired (RFC 3339 strings compare
    in time order when both are UTC ``Z``)."""
    raw = status.get("override")
    if not isinstance(raw, Mapping):
        return None
    try:
        override = ActiveOverride.model_validate(dict(raw))
    except ValidationError:
        return None
    return override if override.expires_at > now else None


async def probe_and_push(
    pods_io: PodIO,
    targets: Sequence[tuple[PodTarget | None, bool, str]],
    token: str,
    config: CacheConfig | None,
    config_hash: str,
    push: bool,
) -> list[PodView]:
    """Probe every target's health; push ``config`` to each one that reports another hash (if ``push``;
    ``config`` may be None when not).

    ``targets`` are (where to reach it or None, Ready, pod name). A pod without an address is reported,
    not contacted.
    """
    if push and config is None:
        raise ValueError("probe_and_push: config is required when push is true")
    public = config.public_dict() if config is not None else {}

    async def one(item: tuple[PodTarget | None, bool, str]) -> PodView:
        target, ready, name = item
        view = PodView(name=name, ip=target.ip if target else None, ready=ready)
        if target is None:
            view.error = "no pod IP yet"
            return view
        reply = await pods_io.health(target, token)
        if reply.ok and isinstance(reply.body, Mapping):
            view.health = reply.body
            view.config_hash = reply.body.get("config_hash")
        else:
            view.error = reply.error
        if push and view.config_hash != config_hash:
            pushed = await pods_io.apply_config(target, token, public, config_hash)
            view.pushed = True
            if pushed.ok:
                body = pushed.body if isinstance(pushed.body, Mapping) else {}
                view.config_hash = body.get("hash") or config_hash
                view.error = None
            else:
                view.error = pushed.error
        return view

    return await pods_io.for_each(list(targets), one)


# --------------------------------------------------------------------------------------------------
# the pass


async def handle_reconcile(
    policy: PolicyRef,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    kube: KubeIO,
    pods_io: PodIO,
    patch: Any,
    logger: Any,
    resolve_service_hosts: bool = False,
    apply_children: bool = True,
    delete_stale: bool = True,
    pods_in_namespace: Callable[[str], list[dict[str, Any]]] | None = None,
    now: str | None = None,
    events: Any = None,
    detect: bool = True,
    caller: Any = None,
    verify_children: bool = False,
    known_tokens: Mapping[str, str] | None = None,
) -> ReconcileOutcome:
    """One reconcile pass of ``policy``; writes ``patch.status`` and returns what it did.

    ``pods_in_namespace`` (the operator's pod index) replaces the pod list call when given.
    ``events(type, reason, message)`` posts Events on the policy (detection's openings, resolutions,
    refusals); ``detect=False`` turns automatic detection off for the pass. ``caller`` sends admin
    actions to pods (the restore of an expired isolation; default: the pod client's).

    ``apply_children=False`` is a probe pass: children are applied anyway when the config hash is not
    the one in status yet (so nothing new is ever skipped), otherwise only pods are probed and pushed.
    ``verify_children`` (drift repair) reads each child and applies only those that drifted
    (:mod:`cache_operator.drift`), unless the config hash or the generation moved since the status.
    ``known_tokens`` (the tokens of the previous pass) spare reading the token Secret on a pass that
    applies nothing.

    A child the API server refuses as invalid (HTTP 422) makes the policy ``Stalled`` (``ChildRejected``,
    naming the policy's field; :mod:`cache_operator.child_rejection`): the daemon waits the probe interval
    before trying again, and a spec change wakes it at once. Any other failure to apply a child is
    transient (``ApplyFailed``) and retried on the next pass; reading
    the token Secret or listing pods raises :class:`cache_operator.k8s.KubeError` (the daemon logs it,
    counts it and retries). Everything about pods is reported in status, never raised.
    """
    return await ReconcilePass(
        policy,
        spec,
        status,
        kube=kube,
        pods_io=pods_io,
        patch=patch,
        logger=logger,
        now=now or utc_now(),
        events=events,
        resolve_service_hosts=resolve_service_hosts,
        apply_children=apply_children,
        delete_stale=delete_stale,
        pods_in_namespace=pods_in_namespace,
        detect=detect,
        caller=caller,
        verify_children=verify_children,
        known_tokens=known_tokens,
    ).run()


class _Stop(Exception):
    """A step ended the pass early with this outcome (the status it wrote stays)."""

    def __init__(self, outcome: ReconcileOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


@dataclass
class ReconcilePass:
    """One reconcile pass as named steps over its context: what it reads (the policy, its spec and
    status), where it writes (``patch.status``), its I/O (``kube``, ``pods_io``, ``events``) and what the
    earlier steps found (the model, the config and its hash, the tokens, the pods' views).

    :meth:`run` is the order: resolve the config, read the tokens, apply the children, probe and push
    the pods, write the status, lift what expired, run detection, and say how the pass ended.
    """

    policy: PolicyRef
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    kube: KubeIO
    pods_io: PodIO
    patch: Any
    logger: Any
    now: str
    events: Any = None
    resolve_service_hosts: bool = False
    apply_children: bool = True
    delete_stale: bool = True
    pods_in_namespace: Callable[[str], list[dict[str, Any]]] | None = None
    detect: bool = True
    caller: Any = None
    verify_children: bool = False
    known_tokens: Mapping[str, str] | None = None
    # found by the steps
    model: CachePolicySpec = field(init=False)
    override: ActiveOverride | None = field(init=False, default=None)
    config: CacheConfig = field(init=False)
    config_hash: str = field(init=False, default="")
    tokens: Mapping[str, str] = field(init=False, default_factory=dict)
    secret_created: bool = field(init=False, default=False)
    token_secret: dict[str, Any] | None = field(init=False, default=None)  # as read by read_tokens

    @property
    def gen(self) -> int | None:
        """The generation this pass observes."""
        return self.policy.generation

    @property
    def previous(self) -> list[dict[str, Any]]:
        """The conditions in status before this pass."""
        return list(self.status.get("conditions") or [])

    async def run(self) -> ReconcileOutcome:
        """The pass, step by step; a step that ends it early returns its outcome."""
        try:
            await self.resolve_config()
            await self.read_tokens()
        except _Stop as stop:
            return stop.outcome
        apply_error, rejection = await self.apply_children_step()
        targets, desired = await select_targets(self.policy, self.model, self.kube, self.pods_in_namespace)
        views = await probe_and_push(
            self.pods_io, targets, self.tokens[render.ADMIN_TOKEN_KEY], self.config, self.config_hash,
            push=not self.model.paused,
        )
        conditions = self.write_status(views, desired, apply_error, rejection)
        await self.lift_expired(targets)
        detection = await self.run_detection(views, conditions) if self.detect else None
        return self.outcome(views, conditions, rejection, detection)

    async def resolve_config(self) -> None:
        """Step 1: the spec as the model, the Redis URL, any time-boxed override, the engine config.
        An invalid spec stalls the pass; a Redis Service without a Ready pod makes it wait."""
        now, gen, previous = self.now, self.gen, self.previous
        try:
            self.model = parse_spec(self.spec)
            redis_url = await resolve_redis_url(
                self.model, self.policy.namespace, self.kube, self.resolve_service_hosts
            )
            self.override = active_override(self.status, now)
            self.config = render.resolve_policy_config(
                self.model, redis_url=redis_url, override=self.override
            )
        except (ValueError, ConfigError) as exc:
            field_path = getattr(exc, "field", None)
            if isinstance(exc, ConfigError):
                field_path = f"spec.overrides.{exc.field}"
            message = str(getattr(exc, "message", None) or exc)
            if field_path and field_path not in message:
                message = f"{field_path}: {message}"
            observed = conds.PolicyObservation(generation=gen, spec_error=message)
            self.patch.status["conditions"] = conds.policy_conditions(observed, previous, now)
            self.patch.status["observedGeneration"] = gen
            self.logger.warning(f"spec rejected: {message}")
            raise _Stop(ReconcileOutcome("stalled", reason="InvalidSpec", message=message)) from None
        except RedisServiceNotReady as exc:
            raise _Stop(await self.wait_for_redis(exc)) from None
        self.config_hash = self.config.config_hash()

    async def wait_for_redis(self, exc: RedisServiceNotReady) -> ReconcileOutcome:
        """Pushing an unresolvable host would only make every pod log connection errors: wait instead,
        still probing the pods of a policy configured before."""
        now, gen = self.now, self.gen
        observed = conds.PolicyObservation(generation=gen, paused=self.model.paused, apply_error=str(exc))
        waiting = conds.policy_conditions(observed, self.previous, now)
        waiting = conds.set_condition(
            waiting, conds.RECONCILING, "True", "WaitingForRedis", str(exc), now, gen
        )
        waiting = conds.set_condition(waiting, conds.READY, "False", "WaitingForRedis", str(exc), now, gen)
        self.patch.status["conditions"] = waiting
        self.patch.status["observedGeneration"] = gen
        detection = None
        if self.status.get("configHash"):
            detection = await _probe_while_waiting(
                self.policy,
                self.model,
                self.status,
                waiting,
                kube=self.kube,
                pods_io=self.pods_io,
                patch=self.patch,
                logger=self.logger,
                pods_in_namespace=self.pods_in_namespace,
                now=now,
                events=self.events,
                detect=self.detect,
            )
        return ReconcileOutcome(
            "progressing", reason="WaitingForRedis", message=str(exc), detection=detection
        )

    def must_apply(self) -> bool:
        """Whether step 3 applies the children: asked to, or the config hash or generation moved."""
        return (
            self.apply_children
            or self.status.get("configHash") != self.config_hash
            or (self.status.get("observedGeneration") != self.gen)
        )

    async def read_tokens(self) -> None:
        """Step 2: the admin/read tokens (created with the Secret on a first pass). ``known_tokens``
        (the previous pass's) stand in for reading the Secret on a pass that applies nothing: the
        Secret is only ever written back from what was just read."""
        first_pass = not self.status.get("configHash") and not self.model.paused
        applies = self.must_apply() and not self.model.paused
        if self.known_tokens is not None and not first_pass and not applies:
            self.tokens = self.known_tokens
            return
        try:
            self.tokens, self.secret_created, self.token_secret = await current_tokens(
                self.kube, self.policy, create=first_pass
            )
        except render.TokenSecretError as exc:
            # A value in the token Secret that is not a token list (a person's rotation gone wrong):
            # never overwritten (that would lock out the clients holding it), reported until fixed.
            message = str(exc)
            observed = conds.PolicyObservation(
                generation=self.gen, spec_error=message, spec_error_reason="InvalidTokenSecret"
            )
            self.patch.status["conditions"] = conds.policy_conditions(observed, self.previous, self.now)
            self.patch.status["observedGeneration"] = self.gen
            self.logger.warning(f"token Secret rejected: {message}")
            await _announce_stalled(self.events, self.previous, message, "InvalidTokenSecret")
            raise _Stop(ReconcileOutcome("stalled", reason="InvalidTokenSecret", message=message)) from None

    async def apply_children_step(self) -> tuple[str | None, ChildRejection | None]:
        """Step 3: render and apply the children (unless paused, or a probe pass with nothing new).
        Returns a transient apply error and a rejection by the API server, if any."""
        status = self.status
        must_apply = self.must_apply()
        apply_error: str | None = None
        rejection: ChildRejection | None = None
        unchanged = (
            status.get("configHash") == self.config_hash and status.get("observedGeneration") == self.gen
        )
        if not self.model.paused and must_apply:
            try:
                await apply_children_of(
                    self.policy, self.model, self.config, self.tokens, self.kube,
                    delete_stale=self.delete_stale, skip_secret=self.secret_created,
                    only_if_drifted=self.verify_children and unchanged,
                    already_read=[self.token_secret] if self.token_secret is not None else (),
                )
            except ChildRejectedError as exc:
                # The API server refused a rendered child as invalid (422): the same spec can never
                # apply, so Stalled (ChildRejected) naming the policy's field instead of a retry loop.
                rejection = exc.rejection
                self.logger.warning(f"spec rejected by the API server: {exc}")
                await _announce_stalled(self.events, self.previous, rejection.message())
            except KubeError as exc:
                # Transient (5xx, 409, 429, connection): reported (Reconciling=True, ApplyFailed) and
                # retried on the next pass; pods are still probed so status stays truthful about them.
                apply_error = str(exc)
                self.logger.error(f"applying children failed: {exc}")
        return apply_error, rejection

    def write_status(
        self,
        views: Sequence[PodView],
        desired: int,
        apply_error: str | None,
        rejection: ChildRejection | None,
    ) -> list[dict[str, Any]]:
        """Step 5: pods, health and conditions into ``patch.status``; returns the conditions."""
        model, config_hash, now = self.model, self.config_hash, self.now
        ready = sum(1 for v in views if v.ready)
        configured = sum(1 for v in views if v.config_hash == config_hash)
        health = aggregate_health(views, now)
        errors = [f"{v.name}: {v.error}" for v in views if v.error]
        observed = conds.PolicyObservation(
            generation=self.gen,
            paused=model.paused,
            apply_error=apply_error,
            child_rejected=rejection.message() if rejection is not None else None,
            config_hash=config_hash,
            pods_desired=desired,
            # Pods beyond the desired count (a rollout's surge) do not make a policy more than ready.
            pods_ready=min(ready, desired) if model.runtime is not None else ready,
            pods_configured=configured,
            probed=any(v.health is not None for v in views),
            health=str(health["status"]),
            health_message="; ".join([str(health.get("message") or ""), *errors[:5]]).strip("; "),
            redis=str(health["redis"]),
            redis_message=""
            if health["redis"] == "Connected"
            else f"Redis {str(health['redis']).lower()} on target pods",
        )
        conditions = conds.policy_conditions(observed, self.previous, now)
        status = self.patch.status
        status["observedGeneration"] = self.gen
        status["conditions"] = conditions
        status["preset"] = self.config.preset
        status["configHash"] = config_hash
        status["pods"] = {
            "desired": desired,
            "ready": ready,
            "configured": configured,
            "summary": conds.pods_summary(ready, desired),
        }
        status["targets"] = _target_rows(views)
        status["health"] = health
        return conditions

    async def lift_expired(self, targets: Sequence[tuple[PodTarget | None, bool, str]]) -> None:
        """Step 6: an expired time-boxed override leaves status; an expired isolation is restored."""
        raw_override = self.status.get("override")
        if isinstance(raw_override, Mapping) and self.override is None:
            # Expired (or unreadable): the config above is already the base one and was pushed to every
            # pod still on the override's hash; the record goes too.
            self.patch.status["override"] = None
            await _post_event(
                self.events,
                "Normal",
                "OverrideExpired",
                f"time-boxed override of incident {raw_override.get('incident')} "
                f"({_override_text(raw_override)}) expired at {raw_override.get('expiresAt')}; "
                f"base config {self.config_hash[:12]} pushed",
            )
        expired = isolation_expired(self.status.get("isolation"), parse_rfc3339(self.now, "now"))
        if not self.model.paused and expired:
            self.patch.status["isolation"] = await restore_expired_isolation(
                self.status["isolation"],
                targets,
                self.tokens[render.ADMIN_TOKEN_KEY],
                self.caller or _pod_action_caller(self.pods_io),
                self.events,
                self.logger,
            )

    async def run_detection(self, views: Sequence[PodView], conditions: list[dict[str, Any]]) -> Any:
        """Step 7: automatic detection over this pass's probes (once per probe interval)."""
        return await _detect(
            self.policy, self.model, self.status, views, self.config_hash, conditions, self.kube, self.now,
            self.events, self.logger, self.patch,
        )

    def outcome(
        self,
        views: list[PodView],
        conditions: list[dict[str, Any]],
        rejection: ChildRejection | None,
        detection: Any,
    ) -> ReconcileOutcome:
        """Step 8: how the pass ended (paused, stalled, ready or progressing)."""
        ready_condition = conds.get_condition(conditions, conds.READY) or {}
        is_ready = ready_condition.get("status") == "True"
        errors = any(v.error for v in views)
        if self.model.paused:
            result = "paused"
        elif rejection is not None:
            result = "stalled"
        elif is_ready and not errors:
            result = "ready"
        else:
            result = "progressing"
        return ReconcileOutcome(
            result,
            self.config_hash,
            views,
            sum(1 for v in views if v.pushed),
            str(ready_condition.get("reason", "")),
            str(ready_condition.get("message", "")),
            detection,
            self.tokens,
        )


def _override_text(override: Mapping[str, Any]) -> str:
    """What a status.override changes, for Events: its preset or its engine overrides."""
    if override.get("overrides"):
        return f"overrides {json.dumps(override['overrides'], sort_keys=True)[:300]}"
    return f"preset {override.get('preset')}"


async def _announce_stalled(
    events: Any, previous: Sequence[Mapping[str, Any]], message: str, reason: str = "ChildRejected"
) -> None:
    """A Warning Event ``reason`` (``ChildRejected``, ``InvalidTokenSecret``) when the policy becomes
    Stalled for it (or for another message), not on every retry of the same one."""
    stalled = conds.get_condition(previous, conds.STALLED) or {}
    if (stalled.get("status"), stalled.get("reason"), stalled.get("message")) != ("True", reason, message):
        await _post_event(events, "Warning", reason, message)


async def _post_event(events: Any, type_: str, reason: str, message: str) -> None:
    """Post an Event through ``events`` (sync or async), if given."""
    if events is None:
        return
    outcome = events(type_, reason, message[:1000])
    if outcome is not None:
        await outcome


async def _probe_while_waiting(
    policy: PolicyRef,
    model: CachePolicySpec,
    status: Mapping[str, Any],
    conditions: list[dict[str, Any]],
    *,
    kube: KubeIO,
    pods_io: PodIO,
    patch: Any,
    logger: Any,
    pods_in_namespace: Callable[[str], list[dict[str, Any]]] | None,
    now: str,
    events: Any,
    detect: bool,
) -> Any:
    """A policy already configured whose Redis Service has no Ready pod (devcluster's
    ``--resolve-service-hosts``: Redis stopped): nothing is pushed, but the pods are still probed, their
    health reported and detection run against the hash they were last given, so a stopped Redis
    becomes a RedisUnavailable incident instead of a silent wait. Returns the detection outcome (None
    when detection did not run)."""
    config_hash = str(status["configHash"])
    tokens, _, _ = await current_tokens(kube, policy, create=False)
    targets, _ = await select_targets(policy, model, kube, pods_in_namespace)
    views = await probe_and_push(
        pods_io, targets, tokens[render.ADMIN_TOKEN_KEY], None, config_hash, push=False
    )
    health = aggregate_health(views, now)
    patch.status["health"] = health
    patch.status["targets"] = _target_rows(views)
    if not detect:
        return None
    return await _detect(
        policy, model, status, views, config_hash, conditions, kube, now, events, logger, patch
    )


async def _detect(
    policy: PolicyRef,
    model: CachePolicySpec,
    status: Mapping[str, Any],
    views: Sequence[PodView],
    config_hash: str,
    conditions: list[dict[str, Any]],
    kube: KubeIO,
    now: str,
    events: Any,
    logger: Any,
    patch: Any,
) -> Any:
    """Run automatic detection if a probe is due, merging what it writes into ``patch.status``; returns
    its :class:`~cache_operator.incidents.automatic_io.DetectionOutcome`, or None when it did not run
    or failed.

    A failure of detection never costs the pass its status (pods, health, conditions are written
    anyway): a malformed health answer or ``status.symptoms`` is logged as a warning, anything else
    as an error, and the next probe pass tries again."""
    now_s = parse_rfc3339(now, "now")
    interval = probe_interval(status.get("symptoms"), float(model.health.probe_interval_seconds))
    if not detection_due(status, now_s, interval):
        return None
    try:
        detection = await run_detection(
            policy,
            model,
            status,
            views,
            config_hash,
            conditions,
            kube=kube,
            now_s=now_s,
            events=events,
            logger=logger,
        )
    except ValueError as exc:
        logger.warning(f"automatic detection skipped this pass: {exc}")
        return None
    except Exception as exc:  # a detection bug must not stop the policy's status from being written
        logger.error(f"automatic detection failed: {type(exc).__name__}: {exc}")
        return None
    patch.status.update(detection.status)
    return detection


def _pod_action_caller(pods_io: Any) -> Any:
    """The incident executor's action caller over the pod client."""
    return PodActionCaller(pods_io)


async def restore_expired_isolation(
    isolation: Mapping[str, Any],
    targets: Sequence[tuple[PodTarget | None, bool, str]],
    token: str,
    caller: Any,
    events: Any,
    logger: Any,
) -> dict[str, Any] | None:
    """Restore every pod of an expired ``status.isolation`` that is still a target; returns the new
    record: None when every pod is restored (or gone), else the record with the pods that failed, tried
    again on the next pass. Each call carries ``<incident uid>:restore-expired:<pod>`` as its
    Idempotency-Key, so a pass repeated after a crash replays instead of acting twice."""
    by_name = {name: target for target, _, name in targets}
    failed: list[str] = []
    restored: list[str] = []
    for pod in sorted(isolation.get("pods") or []):
        target = by_name.get(pod)
        if target is None:
            continue  # gone (or without an IP): a new pod starts unisolated
        request, key = restore_request(isolation, pod)
        reply = await caller.call(target, token, request, key)
        if reply.ok:
            restored.append(pod)
        else:
            failed.append(pod)
            logger.warning(f"restoring {pod} at the end of its isolation failed: {reply.error}")
    if failed:
        await _post_event(
            events,
            "Warning",
            "IsolationRestoreFailed",
            f"isolation by {isolation.get('incident')} expired; restore failed on {', '.join(failed)} "
            "(retried next pass)",
        )
        return {**isolation, "pods": failed}
    await _post_event(
        events,
        "Normal",
        "IsolationExpired",
        f"isolation by incident {isolation.get('incident')} ended at {isolation.get('expiresAt')}; "
        f"restored {', '.join(restored) or 'no pod (none left)'}",
    )
    return None


def _target_rows(views: Sequence[PodView]) -> list[dict[str, Any]]:
    """status.targets: one row per pod (the first POD_STATUS_LIMIT), without empty fields."""
    return [
        {
            k: v
            for k, v in {
                "name": view.name,
                "ip": view.ip,
                "ready": view.ready,
                "configHash": view.config_hash,
                "health": (view.health or {}).get("status"),
                "lastError": view.error,
            }.items()
            if v is not None
        }
        for view in views[:POD_STATUS_LIMIT]
    ]


async def apply_children_of(
    policy: PolicyRef,
    model: CachePolicySpec,
    config: CacheConfig,
    tokens: Mapping[str, str],
    kube: KubeIO,
    *,
    delete_stale: bool = True,
    skip_secret: bool = False,
    only_if_drifted: bool = False,
    already_read: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Server-side apply every child (Secret and ConfigMap first: the pods mount them), and delete the
    runtime Deployment and Service of a policy that switched to selector mode. ``only_if_drifted``:
    read each child first and apply only those that no longer hold what is rendered, and delete a
    stale one only if it exists (drift repair at rest costs reads, not writes); a child in
    ``already_read`` (read earlier in the same pass, e.g. the token Secret) is not read again."""
    digest = await secrets_digest(kube, policy.namespace, model) if model.runtime is not None else None
    known = {(o.get("kind"), (o.get("metadata") or {}).get("name")): o for o in already_read}
    for obj in render.render_children(policy, model, config, tokens, digest):
        if skip_secret and obj["kind"] == "Secret":
            continue  # created a moment ago with exactly this content
        if only_if_drifted:
            meta = obj["metadata"]
            live = known.get((obj["kind"], meta["name"]))
            if live is None:
                live = await kube.get(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
            if not drifted(live, obj):
                continue
        try:
            await kube.apply(obj)
        except KubeError as exc:
            if not is_rejection(exc.status):
                raise
            meta = obj["metadata"]
            raise ChildRejectedError(
                rejection_from_status(
                    obj["kind"], f"{meta['namespace']}/{meta['name']}", getattr(exc, "body", None), str(exc)
                )
            ) from exc
    for api_version, kind in render.stale_children(model) if delete_stale else ():
        name = (
            render.deployment_name(policy.name) if kind == "Deployment" else render.service_name(policy.name)
        )
        if only_if_drifted and await kube.get(api_version, kind, policy.namespace, name) is None:
            continue  # drift repair reads: a DELETE of what is not there is a write request all the same
        await kube.delete(api_version, kind, policy.namespace, name)


async def handle_delete(
    policy: PolicyRef, spec: Mapping[str, Any], *, kube: KubeIO, logger: Any, owned_only: bool = False
) -> list[str]:
    """Delete the policy's children explicitly (owner references would get them too, but later and only
    with a garbage collector running); returns what was deleted. ``owned_only``: read each child first
    and delete it only if its owner reference names this policy's uid: a policy deleted and created
    again under the same name at once (nothing holds the deletion) may already own children of that
    name, which must stay."""
    try:
        model: CachePolicySpec | None = parse_spec(spec)
    except ValueError:
        model = None
    deleted = []
    names = [
        ("apps/v1", "Deployment", render.deployment_name(policy.name)),
        ("v1", "Service", render.service_name(policy.name)),
        ("v1", "ConfigMap", render.configmap_name(policy.name)),
        ("v1", "Secret", render.token_secret_name(policy.name)),
    ]
    if model is not None and model.runtime is None:
        names = names[2:]
    for api_version, kind, name in names:
        if owned_only:
            live = await kube.get(api_version, kind, policy.namespace, name)
            owners = ((live or {}).get("metadata") or {}).get("ownerReferences") or []
            if not any(ref.get("uid") == policy.uid for ref in owners):
                continue
        if await kube.delete(api_version, kind, policy.namespace, name):
            deleted.append(f"{kind}/{name}")
    logger.info(f"deleted children: {', '.join(deleted) or 'none left'}")
    return deleted
