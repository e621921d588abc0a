"""CachePolicy status: what the operator observed of a policy (written only by the operator).

The models of ``status`` apart from the spec's (:mod:`cache_operator.api.cachepolicy`): pod counts, the
per-pod view, aggregated health, the time-boxed override and isolation in force, the symptoms tracked
and the actions recorded, and the kstatus conditions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cache_operator.api.common import (
    ApiModel,
    Condition,
)
from cache_runtime.actions import IncidentAction
from cache_runtime.config import (
    Preset,
)


class PodCounts(ApiModel):
    """Counts of target pods."""

    desired: int = Field(
        default=0, ge=0, description="Pods that should run the cache (replicas, or pods selected)."
    )
    ready: int = Field(default=0, ge=0, description="Target pods that are Ready.")
    configured: int = Field(default=0, ge=0, description="Target pods that report the desired config hash.")
    summary: str = Field(default="0/0", description="ready/desired, for `kubectl get`.")


class TargetPodStatus(ApiModel):
    """What the operator last saw of one target pod."""

    name: str = Field(description="Pod name.")
    ip: str | None = Field(default=None, description="Pod IP the operator talks to.")
    ready: bool = Field(default=False, description="The pod's Ready condition.")
    config_hash: str | None = Field(default=None, description="Hash of the config the pod reports in force.")
    health: str | None = Field(
        default=None, description="The pod's own health verdict (healthy/degraded/unhealthy)."
    )
    last_error: str | None = Field(default=None, description="Last push or probe error for this pod, if any.")


RedisState = Literal["Connected", "Degraded", "Disconnected", "Disabled", "Unknown"]
HealthVerdict = Literal["Healthy", "Degraded", "Unhealthy", "Unknown"]


class HealthSummary(ApiModel):
    """Aggregated health of the target pods at the last probe."""

    status: HealthVerdict = Field(default="Unknown", description="Worst verdict over the pods.")
    hit_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Overall hit rate (0..1) over all tiers, over the pods' detection window (the "
        "shortest of 10/30/60 s holding health.thresholds.minRequests lookups, windowSeconds): the "
        "figure automatic detection judges (LowHitRate).",
    )
    hit_rate_percent: str | None = Field(
        default=None, description="hitRate as a percentage, for `kubectl get`."
    )
    lifetime_hit_rate: float | None = Field(
        default=None, ge=0, le=1, description="Overall hit rate (0..1) since the pods started."
    )
    window_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Length of the window hitRate covers (seconds; the longest over the pods).",
    )
    l1_hit_rate: float | None = Field(
        default=None, ge=0, le=1, description="Hit rate of the in-memory tier (0..1)."
    )
    memory_bytes: int | None = Field(
        default=None, ge=0, description="L1 memory summed over the pods (bytes)."
    )
    p95_latency_ms: float | None = Field(
        default=None, ge=0, description="Worst per-pod p95 operation latency (ms)."
    )
    redis: RedisState = Field(default="Unknown", description="Redis state: worst over the pods.")
    last_probe_time: str | None = Field(
        default=None,
        description="When a probe of the pods last changed the status (RFC 3339): status is written "
        "only when something besides this time changes, so probes with the same result do not move it "
        "(the operator's cachewarden_operator_policy_passes_total counts every pass).",
        json_schema_extra={"format": "date-time"},
    )
    message: str | None = Field(default=None, description="Short explanation of a non-Healthy verdict.")


class ActiveOverride(ApiModel):
    """A time-boxed setting change from an incident; the spec stays untouched (GitOps owns it)."""

    preset: Preset | None = Field(default=None, description="Preset in force instead of spec.preset.")
    overrides: dict[str, Any] | None = Field(
        default=None,
        description="Engine overrides in force on top of the spec's.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    incident: str = Field(description="Name of the CacheIncident that set the override.")
    expires_at: str = Field(
        description="When the override is lifted (RFC 3339).", json_schema_extra={"format": "date-time"}
    )


class ActiveIsolation(ApiModel):
    """Pods an ``isolate`` incident put in maintenance mode, and when the operator restores them."""

    incident: str = Field(description="Name of the CacheIncident that isolated the pods.")
    incident_uid: str = Field(
        description="Its UID: the restore calls' idempotency keys are <uid>:restore-expired:<pod>."
    )
    pods: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Pods isolated (and not restored since).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    expires_at: str = Field(
        description="When the operator restores them (RFC 3339); deleting the incident restores them at "
        "once.",
        json_schema_extra={"format": "date-time"},
    )


class SymptomState(ApiModel):
    """Detection state of one symptom, kept in the cluster so an operator restart keeps hysteresis."""

    name: str = Field(description="Symptom, e.g. LowHitRate, HighMemory, RedisUnavailable.")
    active: bool = Field(default=False, description="The symptom held for the configured consecutive probes.")
    consecutive: int = Field(
        default=0, ge=0, description="Consecutive probes agreeing with the opposite state."
    )
    since: str | None = Field(
        default=None,
        description="When the symptom was first seen in this episode (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    incident: str | None = Field(
        default=None,
        description="The automatic CacheIncident opened for this episode (set while active); an "
        "episode never gets a second one.",
    )


class ActionRecord(ApiModel):
    """The last automatic run of an action, for cooldowns kept in the cluster."""

    action: IncidentAction = Field(description="The action.")
    incident: str = Field(description="The CacheIncident that ran it.")
    at: str = Field(description="When it started (RFC 3339).", json_schema_extra={"format": "date-time"})


class CachePolicyStatus(ApiModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Reconciling, Stalled, ConfigApplied, Healthy, RedisConnected.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    preset: str | None = Field(
        default=None, description="Preset in force (spec.preset or an incident's override)."
    )
    config_hash: str | None = Field(
        default=None, description="sha256 of the resolved config the pods should run."
    )
    pods: PodCounts | None = Field(default=None, description="Target pod counts.")
    targets: list[TargetPodStatus] | None = Field(default=None, max_length=1000, description="Per-pod view.")
    health: HealthSummary | None = Field(default=None, description="Aggregated health at the last probe.")
    active_incidents: list[str] | None = Field(
        default=None,
        description="Names of this policy's open CacheIncidents: not in a terminal phase, or automatic "
        "with a symptom that has not cleared.",
    )
    override: ActiveOverride | None = Field(default=None, description="Time-boxed override in force, if any.")
    isolation: ActiveIsolation | None = Field(
        default=None, description="Time-boxed isolation (maintenance mode) of pods, if any."
    )
    symptoms: list[SymptomState] | None = Field(
        default=None, description="Detection state per symptom (only symptoms seen or active)."
    )
    last_detection_time: str | None = Field(
        default=None,
        description="When detection last counted a probe pass that changed the status (RFC 3339); "
        "passes closer together than the probe interval are not counted.",
        json_schema_extra={"format": "date-time"},
    )
    last_garbage_collection_time: str | None = Field(
        default=None,
        description="When finished incidents were last checked for deletion with a change to the "
        "status (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    last_actions: list[ActionRecord] | None = Field(
        default=None, description="Last automatic run per action (cooldowns survive a restart)."
    )
