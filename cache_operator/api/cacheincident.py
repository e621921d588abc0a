"""CacheIncident (``cachewarden.io/v1alpha1``, short name ``cinc``): one runbook action on a policy's pods.

Created by an engineer (a manual incident) or by the operator when it detects a symptom (an automatic
incident with a deterministic name). The spec is immutable once created: an incident is a record of
what was asked, and the operator executes it at most once per pod. The status records detection,
diagnosis and one result per pod and step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from cache_operator.api.cachepolicy import IncidentAction, Preset
from cache_operator.api.common import ApiModel, CelRule, Condition, CrdSchema, LocalObjectReference
from cache_runtime.config_schema import SCHEMA_EXCLUDED, overrides_json_schema

KIND = "CacheIncident"
PLURAL = "cacheincidents"
SINGULAR = "cacheincident"
SHORT_NAMES = ("cinc",)

Severity = Literal["low", "medium", "high", "critical"]
IncidentPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Recommended", "Skipped", "Resolved"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Skipped", "Resolved"})
Symptom = Literal[
    "LowHitRate",
    "HighMemory",
    "SlowOperations",
    "RedisUnavailable",
    "RedisAuthFailure",
    "RedisOutOfMemory",
    "L1Thrashing",
    "ConfigDrift",
]
# Symptoms whose automatic incident is never run by the operator, whatever spec.remediation.mode says:
# the fix is outside the cache (RedisOutOfMemory: Redis's maxmemory / maxmemory-policy), and the only
# runnable steps (clear, invalidate) drop cached data to free room, a person's call.
RECOMMEND_ONLY_SYMPTOMS: frozenset[str] = frozenset({"RedisOutOfMemory"})
StepResult = Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"]

# Which parameters each action takes; the CEL rules and the Python validator are built from this table.
ACTION_PARAMETERS: dict[str, frozenset[str]] = {
    "clear": frozenset(),
    "invalidate": frozenset({"pattern", "namespace"}),
    "gc": frozenset(),
    "reset-config": frozenset(),
    "apply-preset": frozenset({"preset", "durationSeconds"}),
    "apply-override": frozenset({"overrides", "durationSeconds"}),
    "reconnect-redis": frozenset(),
    "compress-existing": frozenset({"maxEntries"}),
    "isolate": frozenset({"durationSeconds"}),
    "restore": frozenset(),
    "diagnose": frozenset(),
}
_ALL_PARAMETERS = ("pattern", "namespace", "preset", "overrides", "durationSeconds", "maxEntries")


def _parameter_rules() -> tuple[CelRule, ...]:
    rules = [
        CelRule(
            "self.action != 'apply-preset' || (has(self.parameters) && has(self.parameters.preset))",
            "spec.parameters.preset is required when spec.action is apply-preset",
            field_path=".parameters",
        ),
        CelRule(
            "self.action != 'apply-override' || (has(self.parameters) && has(self.parameters.overrides))",
            "spec.parameters.overrides is required when spec.action is apply-override",
            field_path=".parameters",
        ),
        CelRule(
            "self.action != 'invalidate' || (has(self.parameters) && "
            "(has(self.parameters.pattern) != has(self.parameters.namespace)))",
            "spec.action invalidate needs exactly one of spec.parameters.pattern or "
            "spec.parameters.namespace",
            field_path=".parameters",
        ),
    ]
    for name in _ALL_PARAMETERS:
        actions = sorted(action for action, allowed in ACTION_PARAMETERS.items() if name in allowed)
        listed = ", ".join(f"'{action}'" for action in actions)
        rules.append(
            CelRule(
                f"!has(self.parameters) || !has(self.parameters.{name}) || self.action in [{listed}]",
                f"spec.parameters.{name} applies only to spec.action {' or '.join(actions)}",
                field_path=f".parameters.{name}",
            )
        )
    return tuple(rules)


class IncidentParameters(ApiModel):
    """Parameters of the action; which ones an action takes is checked (CEL and the operator)."""

    pattern: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="invalidate: glob pattern of keys to delete (Redis SCAN MATCH syntax, within the "
        "cache's key prefix).",
    )
    namespace: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="invalidate: cache namespace whose version is bumped (O(1) invalidation).",
    )
    preset: Preset | None = Field(
        default=None, description="apply-preset: the preset applied as a time-boxed override."
    )
    overrides: Annotated[dict[str, Any] | None, CrdSchema(overrides_json_schema())] = Field(
        default=None,
        description="apply-override: engine parameters applied as a time-boxed override on top of the "
        "policy's spec.overrides, in the same shape, e.g. {ttl: {default_s: 3600}}.",
    )
    duration_seconds: int | None = Field(
        default=None,
        ge=60,
        le=86400,
        description="apply-preset, apply-override, isolate: how long the override holds; absent = the "
        "policy's remediation.overrideDurationSeconds.",
    )

    @field_validator("overrides")
    @classmethod
    def _override_keys(cls, overrides: dict[str, Any] | None) -> dict[str, Any] | None:
        if overrides is None:
            return None
        if not overrides:
            raise ValueError("spec.parameters.overrides is empty; accepted: at least one engine parameter")
        for path in sorted(_flat(overrides)):
            if path in SCHEMA_EXCLUDED:
                raise ValueError(
                    f"spec.parameters.overrides.{path} is not accepted: connection settings, credentials "
                    "and the preset are not overridden by an incident"
                )
        return overrides
    max_entries: int | None = Field(
        default=None, ge=1, le=10_000_000, description="compress-existing: at most this many entries per pod."
    )


class CacheIncidentSpec(ApiModel):
    """What to do, on which policy's pods, and why. Immutable after creation."""

    cel_rules = _parameter_rules()

    policy_ref: LocalObjectReference = Field(description="The CachePolicy (same namespace) whose pods act.")
    action: IncidentAction = Field(description="The runbook action to run.")
    parameters: IncidentParameters | None = Field(default=None, description="Parameters of the action.")
    reason: str | None = Field(
        default=None, max_length=4096, description="Why the incident was opened (free text)."
    )
    severity: Severity = Field(default="medium", description="low, medium, high or critical.")
    dry_run: bool = Field(
        default=False, description="Plan and record what would run on which pods; change nothing."
    )
    target_pods: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Only these pods of the policy (names); absent = every target pod.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @model_validator(mode="after")
    def _parameters_fit_action(self) -> CacheIncidentSpec:
        given = (
            set()
            if self.parameters is None
            else {
                key for key, value in self.parameters.model_dump(by_alias=True).items() if value is not None
            }
        )
        allowed = ACTION_PARAMETERS[self.action]
        for name in sorted(given - allowed):
            actions = sorted(action for action, names in ACTION_PARAMETERS.items() if name in names)
            raise ValueError(
                f"spec.parameters.{name} applies only to spec.action {' or '.join(actions)}, "
                f"not {self.action}"
            )
        if self.action == "apply-preset" and "preset" not in given:
            raise ValueError("spec.parameters.preset is required when spec.action is apply-preset")
        if self.action == "apply-override" and "overrides" not in given:
            raise ValueError("spec.parameters.overrides is required when spec.action is apply-override")
        if self.action == "invalidate" and len(given & {"pattern", "namespace"}) != 1:
            raise ValueError(
                "spec.action invalidate needs exactly one of spec.parameters.pattern or "
                "spec.parameters.namespace"
            )
        return self


def _flat(data: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every key of nested (or already dotted) overrides; non-string keys are refused."""
    keys: set[str] = set()
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise ValueError(
                f"spec.parameters.overrides{'.' + prefix.rstrip('.') if prefix else ''}: key {key!r} is not "
                "a parameter name"
            )
        keys.add(f"{prefix}{key}")
        if isinstance(value, dict):
            keys |= _flat(value, f"{prefix}{key}.")
    return keys


# ------------------------------------------------------------------------------------------------
# status


class Detection(ApiModel):
    """How the incident came to be."""

    source: Literal["Manual", "Auto"] = Field(
        default="Manual", description="Manual (a person) or Auto (the operator)."
    )
    symptom: Symptom | None = Field(default=None, description="The detected symptom (Auto incidents).")
    detected_at: str | None = Field(
        default=None,
        description="When the symptom was confirmed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    evidence: dict[str, Any] | None = Field(
        default=None,
        description="Snapshot of the figures that triggered detection (hit rate, memory, latency...).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    occurrences: int | None = Field(
        default=None,
        ge=1,
        description="Auto incidents: episodes of the symptom this incident stands for (a symptom that "
        "clears and comes back within the naming window reopens it).",
    )
    last_detected_at: str | None = Field(
        default=None,
        description="Auto incidents: when the symptom was last confirmed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class Cause(ApiModel):
    """One diagnosed cause."""

    name: str = Field(description="Cause, e.g. KeyInconsistency, TTLTooShort, RedisUnreachable.")
    evidence: dict[str, Any] | None = Field(
        default=None,
        description="The figures that point at this cause.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    recommendation: str | None = Field(default=None, description="What to do about it, in words.")
    action: IncidentAction | None = Field(
        default=None, description="The runbook action that addresses it, if any."
    )
    parameters: IncidentParameters | None = Field(default=None, description="Parameters of that action.")


class Diagnosis(ApiModel):
    """The runbook's decision tree applied to the pods' evidence."""

    causes: list[Cause] = Field(default_factory=list, description="Likely causes, most likely first.")
    diagnosed_at: str | None = Field(
        default=None,
        description="When the diagnosis was made (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class StepRecord(ApiModel):
    """What happened on one pod for one step; written before (Running) and after (result) the call."""

    pod: str = Field(description="Pod name.")
    step: str = Field(description="Step name (the action, or a sub-step such as push-config).")
    started_at: str | None = Field(
        default=None,
        description="When the step started (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    completed_at: str | None = Field(
        default=None, description="When it finished (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    result: StepResult = Field(
        default="Pending", description="Pending, Running, Succeeded, Failed or Skipped."
    )
    counts: dict[str, int] | None = Field(
        default=None, description="Counters the pod reported (e.g. deleted keys)."
    )
    message: str | None = Field(default=None, description="Detail or error message.")
    idempotency_key: str | None = Field(
        default=None,
        description="Key sent to the pod so a repeated call returns the first result (uid + step).",
    )


RemediationState = Literal["Proposed", "Verifying", "Remediated", "Ineffective"]


class PermanentPatch(ApiModel):
    """The override made permanent: the same change as a spec edit, ready to apply or to commit."""

    command: str = Field(description="A `kubectl patch cachepolicy ... --type merge -p '...'` line.")
    yaml: str = Field(
        description="The policy's spec.overrides after the change, as YAML for a GitOps commit."
    )


class Remediation(ApiModel):
    """What the incident changed (or would change) and whether it helped, judged by the symptom's figure."""

    action: IncidentAction = Field(description="The action run (or proposed).")
    override: dict[str, Any] | None = Field(
        default=None,
        description="apply-override: the engine parameters of the time-boxed override (applied, or that "
        "would be applied in Recommend mode), bounded by the spec's own ranges.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    expires_at: str | None = Field(
        default=None,
        description="When the override is lifted unless made permanent (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    state: RemediationState = Field(
        default="Proposed",
        description="Proposed (not run), Verifying (watching the symptom's figure), Remediated (it "
        "improved) or Ineffective (it did not: the override was rolled back and the incident escalated).",
    )
    figure: str | None = Field(
        default=None, description="The symptom's own figure watched, e.g. hitRate, memoryMiB, p95Ms."
    )
    before: float | None = Field(default=None, description="The figure when the symptom was detected.")
    after: float | None = Field(default=None, description="The figure at the end of verification.")
    probes: list[float] = Field(
        default_factory=list,
        max_length=100,
        description="The figure at each probe since the action (hit rates: of the lookups since the probe "
        "before).",
    )
    verify_probes: int | None = Field(
        default=None, ge=1, description="Probes watched before the verdict (spec.remediation.verifyProbes)."
    )
    baseline: dict[str, list[float]] | None = Field(
        default=None,
        description="Hit-rate figures: per pod [hits, lookups] since the pod started, at the last probe; the "
        "next probe's figure is the hit rate of the lookups in between.",
    )
    started_at: str | None = Field(
        default=None,
        description="When verification started (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    verified_at: str | None = Field(
        default=None,
        description="When the verdict was reached (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    rolled_back: bool = Field(default=False, description="The override was lifted because it did not help.")
    message: str | None = Field(default=None, description="The verdict in words.")
    permanent_patch: PermanentPatch | None = Field(
        default=None, description="apply-override: the change as a spec edit (the override is time-boxed)."
    )


class CacheIncidentStatus(ApiModel):
    """Observed progress, written by the operator."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Succeeded (True/False when finished), Running, and for automatic incidents "
        "Resolved (True once the symptom cleared). Reconciling (True while Pending or Running) and "
        "Stalled (True when Failed or Skipped) are the abnormal-true conditions kstatus reads (Helm 4 "
        "--wait, Flux without healthCheckExprs, kpt).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    phase: IncidentPhase = Field(
        default="Pending", description="Informational phase; conditions are authoritative."
    )
    cause: str | None = Field(default=None, description="The top diagnosed cause, for `kubectl get`.")
    symptoms: list[Symptom] | None = Field(
        default=None,
        max_length=20,
        description="Auto incidents: every symptom this incident stands for. Symptoms of one episode that "
        "share a diagnosed cause (LowHitRate and RedisUnavailable during a Redis outage) join one "
        "incident instead of opening one each.",
    )
    recommended_action: IncidentAction | None = Field(
        default=None,
        description="Action recommended by the diagnosis (Recommend mode records it without running it).",
    )
    detection: Detection | None = Field(default=None, description="How the incident was detected.")
    diagnosis: Diagnosis | None = Field(default=None, description="Diagnosed causes.")
    results: list[StepRecord] | None = Field(
        default=None, max_length=1000, description="One record per pod and step."
    )
    started_at: str | None = Field(
        default=None,
        description="When execution started (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    completed_at: str | None = Field(
        default=None,
        description="When the incident reached a terminal phase (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    message: str | None = Field(default=None, description="Summary of the outcome.")
    resolved_at: str | None = Field(
        default=None,
        description="Auto incidents: when the symptom cleared and the incident was resolved (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    remediation: Remediation | None = Field(
        default=None,
        description="Auto incidents: the change made (or proposed) and its verification by effect.",
    )
    resolved_from_phase: IncidentPhase | None = Field(
        default=None,
        description="Auto incidents: the phase the incident had when it was resolved (its action's "
        "outcome: Succeeded, Failed, Recommended, Skipped or Pending).",
    )
