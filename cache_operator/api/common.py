"""Building blocks shared by the cachewarden custom resources: the model base, CEL rules, references,
conditions.

Every model here is both the Python view of a resource (the operator parses specs with it, so a
semantic error names the field) and the source of the CRD schema (``cache_operator.crdgen`` walks the
fields: types, bounds, enums, defaults, descriptions and the CEL rules attached with :class:`CelRule`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "cachewarden.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "cachewarden"

# RFC 1123 label / subdomain patterns, as Kubernetes validates object names.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A Secret or ConfigMap key: alphanumerics, '-', '_', '.'.
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


@dataclass(frozen=True, slots=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry: a CEL expression the API server evaluates.

    ``message`` is what the user sees (it names the field and what is accepted); ``field_path``
    points the error at a sub-field (JSONPath relative to the object the rule sits on).
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def to_schema(self) -> dict[str, Any]:
        """The rule as it appears in the CRD."""
        out: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class CrdSchema:
    """Field metadata: a raw OpenAPI schema for this field, used verbatim by the CRD generator.

    For fields whose schema comes from elsewhere (``spec.overrides`` from the engine's config model)
    or that Kubernetes types specially (quantities: ``x-kubernetes-int-or-string``).
    """

    schema: dict[str, Any] = field(default_factory=dict)


class ApiModel(BaseModel):
    """Base of every resource model: camelCase on the wire, snake_case in Python, no unknown keys.

    Subclasses list object-level CEL rules in ``cel_rules``; the same constraints are checked in
    Python by model validators, so the operator reports exactly what the API server would reject.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    def to_api(self) -> dict[str, Any]:
        """JSON-ready dict with the API's camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace, by name."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of the object, in the same namespace.",
    )


class SecretKeySelector(ApiModel):
    """One key of a Secret in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of the Secret, in the same namespace as the policy.",
    )
    key: str = Field(
        min_length=1, max_length=253, pattern=CONFIG_KEY_PATTERN, description="Key within the Secret's data."
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A kstatus-compatible condition (Kubernetes API conventions, metav1.Condition shape)."""

    type: str = Field(
        min_length=1,
        max_length=316,
        description="Type of the condition in CamelCase, e.g. Ready, Reconciling, Stalled.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        description="A stable CamelCase reason for the last transition, for machines.",
    )
    message: str = Field(
        default="", max_length=32768, description="A human-readable explanation of the state."
    )
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339, UTC); unchanged while the status holds.",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation of the spec this condition was computed from."
    )


class SpecError(ValueError):
    """A resource spec was rejected; ``field`` is the JSON path (``spec.runtime.replicas``)."""

    def __init__(self, field: str, value: Any, message: str) -> None:
        self.field = field
        self.value = value
        self.message = message
        super().__init__(message)


def _wire_name(model: type[BaseModel] | None, name: str) -> str:
    if model is not None and name in model.model_fields:
        alias = model.model_fields[name].alias
        return alias or name
    return to_camel(name) if "_" in name else name


def spec_error_from(exc: Any, root: str = "spec") -> SpecError:
    """Turn a pydantic ValidationError into a SpecError naming the first bad field, its value and why.

    Our own model validators already write the full path into their message ("spec.redis: ..."); for
    field errors the location is turned into the API's camelCase path.
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ())]
    path = ".".join([root, *(to_camel(part) if "_" in part else part for part in loc)])
    raw = str(first.get("msg", "invalid"))
    text = raw.removeprefix("Value error, ")
    value = first.get("input")
    if text.startswith(root):
        field_path = text.split(":", 1)[0].split(" ", 1)[0]
        return SpecError(field_path, value, text)
    shown = value if not isinstance(value, (dict, list)) else type(value).__name__
    return SpecError(path, value, f"{path}: {text} (got {shown!r})")
