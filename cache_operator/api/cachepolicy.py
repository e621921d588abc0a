"""CachePolicy (``cachewarden.io/v1alpha1``, short name ``cpol``): the desired cache and what the
operator observed of it.

The spec says which preset and overrides the cache engine runs with, where Redis is, which pods run
it (``runtime``: pods the operator manages; ``selector``: existing application pods that embed the
engine), how often to probe health and what remediation is allowed. The status, written only by the
operator, is :mod:`cache_operator.api.cachepolicy_status`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from cache_operator.api.common import (
    DNS_SUBDOMAIN_PATTERN,
    ApiModel,
    CelRule,
    CrdSchema,
    SecretKeySelector,
)
from cache_operator.api.k8s_validation import (
    CEL_QUALIFIED_KEY,
    LABEL_VALUE_ACCEPTED,
    LABEL_VALUE_MAX,
    LABEL_VALUE_PATTERN,
    MAX_NODE_SELECTOR,
    MAX_POD_ANNOTATIONS,
    MAX_RESOURCES,
    QUALIFIED_NAME_ACCEPTED,
    RESOURCE_NAME_ACCEPTED,
    check_map,
    keys_rule,
    label_value_error,
    qualified_name_error,
    quantity_map,
    resource_name_error,
)
from cache_runtime.actions import IncidentAction
from cache_runtime.config import (
    PRESET_NAMES,
    RANGES,
    REDIS_URL_SCHEMES,
    ConfigError,
    Preset,
    merge_overrides,
    resolve_config,
)
from cache_runtime.config_schema import SCHEMA_EXCLUDED, overrides_json_schema

KIND = "CachePolicy"
PLURAL = "cachepolicies"
SINGULAR = "cachepolicy"
SHORT_NAMES = ("cpol",)

DEFAULT_IMAGE = "ghcr.io/cachewarden/cachewarden:0.1.0"
DEFAULT_PORT = 8080
DEFAULT_ADMIN_PATH = "/internal/cache"
# The child Service is named `<policy>-cachewarden` (see cache_operator.render) and must be a
# 63-character DNS label, so the policy name leaves room for the suffix.
MAX_POLICY_NAME_LENGTH = 51

RemediationMode = Literal["Off", "Recommend", "Auto"]
DEFAULT_ALLOWED_ACTIONS: tuple[IncidentAction, ...] = ("gc", "reconnect-redis", "diagnose")

# The engine's URL schemes (one table: cache_runtime.l2.urls.URL_SCHEMES), so the CRD accepts the same.
_REDIS_URL_PATTERN = "^(" + "|".join(re.escape(scheme) for scheme in REDIS_URL_SCHEMES) + ")://.+$"
# ------------------------------------------------------------------------------------------------
# spec


class RedisTLS(ApiModel):
    """TLS towards Redis. The connection uses TLS when the URL scheme is rediss:// (or rediss+sentinel://)."""

    cel_rules = (
        CelRule(
            "!self.insecureSkipVerify || !has(self.caSecretRef)",
            "spec.redis.tls: insecureSkipVerify and caSecretRef contradict each other; set one",
            field_path=".insecureSkipVerify",
        ),
    )

    enabled: bool = Field(
        default=False,
        description="Require TLS: a spec.redis.url must then use rediss:// or rediss+sentinel://.",
    )
    ca_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="Secret key holding the PEM CA bundle that verifies the Redis server; "
        "absent = the system trust store.",
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Do not verify the server certificate and host name (testing only)."
    )

    @model_validator(mode="after")
    def _no_contradiction(self) -> RedisTLS:
        if self.insecure_skip_verify and self.ca_secret_ref is not None:
            raise ValueError(
                "spec.redis.tls: insecureSkipVerify and caSecretRef contradict each other; set one"
            )
        return self


class RedisSpec(ApiModel):
    """Where the Redis tier (L2) is. Absent = the cache runs memory-only (L1)."""

    cel_rules = (
        CelRule(
            "has(self.url) != has(self.secretRef)",
            "spec.redis: set exactly one of url (a plain URL) or secretRef (a Secret key holding the URL)",
        ),
        CelRule(
            "!has(self.url) || !self.url.matches('^[^:/]+://[^/@]*:[^/@]*@')",
            "spec.redis.url must not carry a password: put it in passwordSecretRef, or the whole URL "
            "in a Secret (secretRef)",
            field_path=".url",
        ),
        CelRule(
            "!has(self.url) || !has(self.tls) || !self.tls.enabled || self.url.startsWith('rediss')",
            "spec.redis.url must use rediss:// or rediss+sentinel:// when spec.redis.tls.enabled is true",
            field_path=".url",
        ),
    )

    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=_REDIS_URL_PATTERN,
        description="Redis URL without a password: redis://, rediss:// (TLS), unix://, redis+sentinel:// "
        "or rediss+sentinel://. Exactly one of url and secretRef.",
    )
    secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="Secret key whose value is the Redis URL (it may contain a password). "
        "Exactly one of url and secretRef.",
    )
    username: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Redis ACL user name (AUTH username password).",
    )
    password_secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key whose value is the Redis AUTH password."
    )
    tls: RedisTLS | None = Field(default=None, description="TLS settings towards Redis.")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> RedisSpec:
        if (self.url is None) == (self.secret_ref is None):
            raise ValueError(
                "spec.redis: set exactly one of url (a plain URL) or secretRef (a Secret key holding the URL)"
            )
        if self.url is not None and "@" in self.url.split("://", 1)[-1].split("/", 1)[0]:
            userinfo = self.url.split("://", 1)[-1].split("@", 1)[0]
            if ":" in userinfo:
                raise ValueError(
                    "spec.redis.url must not carry a password: put it in passwordSecretRef, "
                    "or the whole URL in a Secret (secretRef)"
                )
        if (
            self.url is not None
            and self.tls is not None
            and self.tls.enabled
            and not self.url.startswith("rediss")
        ):
            raise ValueError(
                f"spec.redis.url {self.url!r} must use rediss:// or rediss+sentinel:// when "
                "spec.redis.tls.enabled is true"
            )
        return self


class ResourceRequirements(ApiModel):
    """Compute resources of the runtime container (Kubernetes quantities, e.g. 100m, 256Mi)."""

    requests: Annotated[
        dict[str, int | str] | None, quantity_map("spec.runtime.resources.requests")
    ] = Field(
        default=None,
        max_length=MAX_RESOURCES,
        description="Minimum resources the scheduler reserves, e.g. {cpu: 100m, memory: 128Mi}. "
        "Names: " + RESOURCE_NAME_ACCEPTED + ".",
    )
    limits: Annotated[dict[str, int | str] | None, quantity_map("spec.runtime.resources.limits")] = Field(
        default=None,
        max_length=MAX_RESOURCES,
        description="Maximum resources, e.g. {memory: 512Mi}. Keep memory above the L1 byte bound. "
        "Names as for requests.",
    )

    @field_validator("requests", "limits")
    @classmethod
    def _resource_names(cls, value: dict[str, int | str] | None, info: Any) -> dict[str, int | str] | None:
        check_map(f"spec.runtime.resources.{info.field_name}", value, resource_name_error)
        return value


class RuntimeSpec(ApiModel):
    """Operator-managed runtime pods: a Deployment and a Service of `cachewarden runtime` processes."""

    cel_rules = (
        CelRule(
            "!has(self.respPort) || !has(self.port) || self.respPort != self.port",
            "spec.runtime.respPort must differ from spec.runtime.port",
            field_path=".respPort",
        ),
    )

    replicas: int = Field(default=2, ge=0, le=100, description="Number of runtime pods (0..100).")
    image: str = Field(
        default=DEFAULT_IMAGE,
        min_length=1,
        max_length=512,
        description="Container image of the cachewarden runtime.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="When the kubelet pulls the image."
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Container resources; absent = requests cpu 100m / memory 128Mi, limit memory 512Mi.",
    )
    port: int = Field(
        default=DEFAULT_PORT,
        ge=1024,
        le=65535,
        description="Port of the runtime's HTTP API, probes and metrics (unprivileged: "
        "1024..65535, the container runs as non-root with no capabilities).",
    )
    resp_port: int | None = Field(
        default=None,
        ge=1024,
        le=65535,
        description="Port of the data API over the Redis protocol (GET/SET/MGET/DEL..., AUTH with the "
        "policy's data tokens), on the pods and the Service as port 'resp'; absent = off "
        "(1024..65535, not spec.runtime.port).",
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="ServiceAccount of the runtime pods; absent = the namespace's default.",
    )
    node_selector: Annotated[
        dict[str, str] | None,
        CrdSchema(
            {
                "type": "object",
                "additionalProperties": {
                    "type": "string",
                    "maxLength": LABEL_VALUE_MAX,
                    "pattern": LABEL_VALUE_PATTERN,
                },
                "x-kubernetes-validations": [
                    keys_rule(
                        "spec.runtime.nodeSelector", CEL_QUALIFIED_KEY, "a label key", QUALIFIED_NAME_ACCEPTED
                    )
                ],
            }
        ),
    ] = Field(
        default=None,
        max_length=MAX_NODE_SELECTOR,
        description="Node labels the pods must run on: label keys (" + QUALIFIED_NAME_ACCEPTED + ") and "
        "label values (" + LABEL_VALUE_ACCEPTED + ").",
    )
    pod_annotations: Annotated[
        dict[str, str] | None,
        CrdSchema(
            {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "x-kubernetes-validations": [
                    keys_rule(
                        "spec.runtime.podAnnotations",
                        CEL_QUALIFIED_KEY,
                        "an annotation key",
                        QUALIFIED_NAME_ACCEPTED,
                    )
                ],
            }
        ),
    ] = Field(
        default=None,
        max_length=MAX_POD_ANNOTATIONS,
        description="Extra annotations on the runtime pods (e.g. for a metrics scraper); keys: "
        + QUALIFIED_NAME_ACCEPTED + ".",
    )

    @model_validator(mode="after")
    def _resp_port_differs(self) -> RuntimeSpec:
        if self.resp_port is not None and self.resp_port == self.port:
            raise ValueError(
                f"spec.runtime.respPort: {self.resp_port} is spec.runtime.port too; accepted: another port "
                "in 1024..65535"
            )
        return self

    @field_validator("node_selector")
    @classmethod
    def _node_selector(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        check_map("spec.runtime.nodeSelector", value, qualified_name_error, label_value_error)
        return value

    @field_validator("pod_annotations")
    @classmethod
    def _pod_annotations(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        check_map("spec.runtime.podAnnotations", value, qualified_name_error)
        return value


class LabelSelectorRequirement(ApiModel):
    """One set-based label requirement (as in a Kubernetes label selector)."""

    key: str = Field(min_length=1, max_length=317, description="The label key the requirement applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to values: In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] | None = Field(
        default=None,
        description="Values for In and NotIn (non-empty); must be absent for Exists and DoesNotExist.",
    )


class SelectorSpec(ApiModel):
    """Existing application pods that embed the engine and mount the policy's ConfigMap and token Secret."""

    cel_rules = (
        CelRule(
            "(has(self.matchLabels) && size(self.matchLabels) > 0) || "
            "(has(self.matchExpressions) && size(self.matchExpressions) > 0)",
            "spec.selector needs matchLabels or matchExpressions: an empty selector would select every "
            "pod in the namespace",
        ),
    )

    match_labels: dict[str, str] | None = Field(
        default=None, description="Pods whose labels include all of these are targets."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=20, description="Set-based requirements, ANDed with matchLabels."
    )
    port: int = Field(
        default=DEFAULT_PORT,
        ge=1,
        le=65535,
        description="Port where the pods serve the cachewarden admin API.",
    )
    admin_path: str = Field(
        default=DEFAULT_ADMIN_PATH,
        max_length=256,
        pattern=r"^/[-._~/a-zA-Z0-9]*$",
        description="Path prefix where the host application mounted the admin router.",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> SelectorSpec:
        if not self.match_labels and not self.match_expressions:
            raise ValueError(
                "spec.selector needs matchLabels or matchExpressions: an empty selector would "
                "select every pod in the namespace"
            )
        return self


def _threshold(name: str, description: str, integer: bool = False) -> Any:
    """An optional health threshold whose bounds are the engine's (RANGES), so both reject alike."""
    bounds = RANGES[f"health.{name}"]
    if integer:
        return Field(default=None, ge=int(bounds.low), le=int(bounds.high), description=description)
    return Field(default=None, ge=float(bounds.low), le=float(bounds.high), description=description)


class HealthThresholds(ApiModel):
    """Health thresholds; each one set here wins over the preset and spec.overrides.health."""

    cel_rules = (
        CelRule(
            "!has(self.hitRateWarning) || !has(self.hitRateCritical) || "
            "self.hitRateCritical <= self.hitRateWarning",
            "spec.health.thresholds.hitRateCritical must be at most hitRateWarning",
            field_path=".hitRateCritical",
        ),
        CelRule(
            "!has(self.memoryWarningMb) || !has(self.memoryCriticalMb) || "
            "self.memoryWarningMb <= self.memoryCriticalMb",
            "spec.health.thresholds.memoryWarningMb must be at most memoryCriticalMb",
            field_path=".memoryWarningMb",
        ),
        CelRule(
            "!has(self.latencyWarningMs) || !has(self.latencyCriticalMs) || "
            "self.latencyWarningMs <= self.latencyCriticalMs",
            "spec.health.thresholds.latencyWarningMs must be at most latencyCriticalMs",
            field_path=".latencyWarningMs",
        ),
    )

    hit_rate_warning: float | None = _threshold(
        "hit_rate_warning", "Hit rate (0..1) below which the cache is Degraded."
    )
    hit_rate_critical: float | None = _threshold(
        "hit_rate_critical", "Hit rate (0..1) below which the cache is Unhealthy."
    )
    memory_warning_mb: float | None = _threshold(
        "memory_warning_mb", "Cache memory (MB) above which it is Degraded."
    )
    memory_critical_mb: float | None = _threshold(
        "memory_critical_mb", "Cache memory (MB) above which it is Unhealthy."
    )
    latency_warning_ms: float | None = _threshold(
        "latency_warning_ms", "p95 latency (ms) above which it is Degraded."
    )
    latency_critical_ms: float | None = _threshold(
        "latency_critical_ms", "p95 latency (ms) above which it is Unhealthy."
    )
    min_requests: int | None = _threshold(
        "min_requests", "Requests a pod must serve before hit rates are judged.", integer=True
    )

    def engine_overrides(self) -> dict[str, Any]:
        """The thresholds as engine overrides (``{"health": {...}}``), only those that are set."""
        values = {name: value for name, value in self.model_dump().items() if value is not None}
        return {"health": values} if values else {}


class HealthSpec(ApiModel):
    """How the operator probes the pods' health."""

    probe_interval_seconds: int = Field(
        default=15, ge=5, le=3600, description="Seconds between health probes of every target pod."
    )
    probe_timeout_seconds: int = Field(default=5, ge=1, le=60, description="Timeout of one probe request.")
    consecutive_probes: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Consecutive probes a symptom must persist (or be gone) before an "
        "incident opens (or resolves): hysteresis against flapping.",
    )
    thresholds: HealthThresholds | None = Field(
        default=None, description="Thresholds overriding the engine's."
    )


class RemediationSpec(ApiModel):
    """What the operator may do about detected symptoms; the safety limits live here and in status."""

    mode: RemediationMode = Field(
        default="Recommend",
        description="Off: detect only. Recommend: open incidents carrying the recommended "
        "action (for a setting fix, the exact override), do not run it. Auto: run recommended actions "
        "listed in allowedActions, then verify them by the symptom's figure.",
    )
    allowed_actions: list[IncidentAction] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_ACTIONS),
        max_length=10,
        description="Actions Auto mode may run by itself. apply-override (a time-boxed settings change "
        "kept in status, for causes whose fix is a setting) is not allowed by default.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    cooldown_seconds: int = Field(
        default=300, ge=0, le=86400, description="Least time between two automatic runs of the same action."
    )
    max_concurrent: int = Field(
        default=1, ge=1, le=10, description="Incidents with a disruptive action that may run at once."
    )
    storm_limit: int = Field(
        default=5, ge=1, le=100, description="Open automatic incidents above which no new one is created."
    )
    override_duration_seconds: int = Field(
        default=1800,
        ge=60,
        le=86400,
        description="Lifetime of a time-boxed override (an emergency preset, or an apply-override "
        "settings change) when the incident does not set one; the override is lifted then unless "
        "someone made it permanent in the spec (the incident's status.remediation.permanentPatch).",
    )
    verify_probes: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Probes after an automatic action during which the symptom's figure is watched: "
        "improved = Remediated; not improved = the override is rolled back and the incident escalated "
        "(RemediationIneffective).",
    )
    incident_ttl_seconds: int = Field(
        default=86400,
        ge=60,
        le=30 * 86400,
        description="Finished incidents are deleted this long after they end.",
    )
    history_limit: int = Field(
        default=10, ge=0, le=1000, description="Finished incidents kept per policy (oldest deleted first)."
    )


class CachePolicySpec(ApiModel):
    """Desired state of a cache: engine configuration, Redis, target pods, health and remediation."""

    cel_rules = (
        CelRule(
            "has(self.runtime) != has(self.selector)",
            "spec: set exactly one of spec.runtime (operator-managed pods) or spec.selector "
            "(existing pods that embed the engine)",
        ),
    )

    preset: Preset = Field(
        default="production",
        description="Named preset the configuration starts from: " + ", ".join(PRESET_NAMES) + ".",
    )
    overrides: Annotated[dict[str, Any], CrdSchema(overrides_json_schema())] = Field(
        default_factory=dict,
        description="Engine parameters that override the preset, by group, e.g. {ttl: {default_s: 600}}. "
        "Unknown keys and out-of-range values are rejected.",
    )
    redis: RedisSpec | None = Field(
        default=None, description="Where Redis (L2) is; absent = memory-only cache."
    )
    runtime: RuntimeSpec | None = Field(
        default=None,
        description="Run operator-managed runtime pods (a Deployment and Service). "
        "Exactly one of runtime and selector.",
    )
    selector: SelectorSpec | None = Field(
        default=None,
        description="Manage existing pods that embed the engine. Exactly one of runtime and selector.",
    )
    health: HealthSpec = Field(default_factory=HealthSpec, description="Health probing.")
    remediation: RemediationSpec = Field(
        default_factory=RemediationSpec, description="Automatic detection and remediation."
    )
    paused: bool = Field(
        default=False,
        description="true = the operator changes nothing (no apply, no push, no "
        "action); it still probes and reports status.",
    )

    @model_validator(mode="after")
    def _exactly_one_target(self) -> CachePolicySpec:
        if (self.runtime is None) == (self.selector is None):
            raise ValueError(
                "spec: set exactly one of spec.runtime (operator-managed pods) or spec.selector "
                "(existing pods that embed the engine)"
            )
        return self

    @field_validator("overrides")
    @classmethod
    def _string_keys(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        # YAML turns bare `on`, `yes`, `1` into booleans and numbers; a key must be a parameter name.
        _check_keys(overrides, "spec.overrides")
        return overrides

    @model_validator(mode="after")
    def _engine_accepts(self) -> CachePolicySpec:
        # The same resolution the operator renders, so a semantic error (e.g. a critical threshold
        # above the warning one) is reported here, naming the field, instead of at push time.
        for key in sorted(_flat_keys(self.overrides)):
            if key in SCHEMA_EXCLUDED:
                raise ValueError(
                    f"spec.overrides.{key} is not accepted here: connection settings and "
                    "credentials belong in spec.redis, the preset in spec.preset"
                )
        try:
            resolve_config(self.preset, self.engine_overrides())
        except ConfigError as exc:
            path = self._spec_path_of(exc.field)
            text = str(exc)
            raise ValueError(
                path + text[len(exc.field) :] if text.startswith(exc.field) else f"{path}: {text}"
            ) from None
        return self

    def _spec_path_of(self, engine_field: str) -> str:
        """Where in the spec an engine parameter came from: a health threshold, spec.redis, or overrides."""
        group, _, name = engine_field.partition(".")
        thresholds = self.health.thresholds
        if group == "health" and thresholds is not None and getattr(thresholds, name, None) is not None:
            return f"spec.health.thresholds.{HealthThresholds.model_fields[name].alias}"
        if engine_field == "redis.username":
            return "spec.redis.username"
        return f"spec.overrides.{engine_field}"

    def engine_overrides(self) -> dict[str, Any]:
        """spec.overrides merged with health thresholds and Redis settings known without Secrets."""
        merged = merge_overrides(
            self.overrides,
            self.health.thresholds.engine_overrides() if self.health.thresholds else {},
            where="spec.overrides",
        )
        redis: dict[str, Any] = {}
        if self.redis is not None:
            if self.redis.username is not None:
                redis["username"] = self.redis.username
            if self.redis.tls is not None and self.redis.tls.insecure_skip_verify:
                redis["tls_verify"] = False
        return merge_overrides(merged, {"redis": redis}, where="spec.overrides") if redis else merged


def _check_keys(data: Mapping[Any, Any], path: str) -> None:
    """Every key at every level is a non-empty string, else an error naming where."""
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{path}: key {key!r} is not a parameter name (quote it in YAML if it is one)")
        if isinstance(value, Mapping):
            _check_keys(value, f"{path}.{key}")


def _flat_keys(data: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every key and sub-key of nested (or already dotted) overrides."""
    keys: set[str] = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        keys.add(path)
        if isinstance(value, Mapping):
            keys |= _flat_keys(value, f"{path}.")
    return keys
