"""Pure mapping of a child the API server refused (HTTP 422 Invalid) back to the policy's own field.

The CRD's schema cannot check everything the API server checks in the objects the operator renders
(a container resource name, a pod annotation key, a node-selector value, requests above limits, ...).
When it refuses one, retrying the same spec can never succeed: the policy is ``Stalled`` (reason
``ChildRejected``) with a message that names the *policy's* field (``spec.runtime.resources.limits``),
followed by the API server's own words for the child's field and value, so nothing is lost.

Only data in, data out: the API server's ``Status`` body (its ``details.causes``) and the child's kind
and name. :func:`spec_field_of` is the table; :func:`rejection_from_status` builds the report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

INVALID_STATUS = 422  # StatusReasonInvalid: the object itself is refused, not the request or the moment
MESSAGE_LIMIT = 2000  # a condition message is for people; the full text is in the operator's log

# (kind, child field pattern) -> policy field, first match wins. Patterns match the API server's
# field paths (``spec.template.spec.containers[0].resources.limits[tier]``) from their start, up to a
# ``.``, ``[`` or the end.
_CONTAINER = r"spec\.template\.spec\.containers\[\d+\]"
FIELD_TABLE: tuple[tuple[str, str, str], ...] = (
    ("Deployment", _CONTAINER + r"\.resources\.limits", "spec.runtime.resources.limits"),
    ("Deployment", _CONTAINER + r"\.resources\.requests", "spec.runtime.resources.requests"),
    ("Deployment", _CONTAINER + r"\.resources", "spec.runtime.resources"),
    ("Deployment", _CONTAINER + r"\.imagePullPolicy", "spec.runtime.imagePullPolicy"),
    ("Deployment", _CONTAINER + r"\.image", "spec.runtime.image"),
    ("Deployment", _CONTAINER + r"\.ports", "spec.runtime.port"),
    ("Deployment", _CONTAINER + r"\.(readinessProbe|livenessProbe|startupProbe)", "spec.runtime.port"),
    # The API server names the pod template's metadata without ``metadata``: spec.template.annotations.
    ("Deployment", r"spec\.template\.(metadata\.)?annotations", "spec.runtime.podAnnotations"),
    ("Deployment", r"spec\.template\.spec\.nodeSelector", "spec.runtime.nodeSelector"),
    ("Deployment", r"spec\.template\.spec\.serviceAccountName", "spec.runtime.serviceAccountName"),
    ("Deployment", r"spec\.template\.spec\.volumes", "spec.redis"),
    ("Deployment", r"spec\.replicas", "spec.runtime.replicas"),
    ("Deployment", r"spec\.template\.(metadata\.)?labels", "metadata.name"),
    ("Deployment", r"spec\.selector", "metadata.name"),
    ("Service", r"spec\.ports", "spec.runtime.port"),
    ("Service", r"spec\.selector", "metadata.name"),
    ("ConfigMap", r"data", "spec.overrides"),
    ("*", r"metadata\.(name|labels|ownerReferences)", "metadata.name"),
)
# Where a refused field of a child kind comes from when the table has no closer answer.
KIND_FALLBACK = {"Deployment": "spec.runtime", "Service": "spec.runtime", "ConfigMap": "spec"}
_COMPILED = tuple((kind, re.compile(pattern + r"(?=$|[.\[])"), field) for kind, pattern, field in FIELD_TABLE)


def spec_field_of(kind: str, child_field: str | None) -> str | None:
    """The policy field a refused field of a rendered child comes from, or None when it is not one
    the spec sets (then the caller names the child and the API server's words alone).

    ``spec_field_of("Deployment", "spec.template.spec.containers[0].resources.limits[tier]")`` is
    ``spec.runtime.resources.limits``; an unknown field of a Deployment or Service falls back to
    ``spec.runtime``.
    """
    if child_field:
        for table_kind, pattern, field in _COMPILED:
            if table_kind in (kind, "*") and pattern.match(child_field):
                return field
    return KIND_FALLBACK.get(kind)


@dataclass(frozen=True, slots=True)
class RefusedField:
    """One cause of the refusal: the policy's field, the child's field and the API server's message."""

    spec_field: str | None
    child_field: str | None
    message: str
    reason: str | None = None

    def text(self) -> str:
        """``spec.x: <child field>: <API server message>`` (each part only when known)."""
        parts = [p for p in (self.spec_field, self.child_field, self.message) if p]
        return ": ".join(parts)


@dataclass(frozen=True, slots=True)
class ChildRejection:
    """A rendered child the API server refused as invalid: which one, and every field it named."""

    kind: str
    name: str  # namespace/name
    fields: tuple[RefusedField, ...]
    api_message: str

    @property
    def spec_fields(self) -> list[str]:
        """The policy fields named, in the order the API server listed their causes, without repeats."""
        seen: list[str] = []
        for refused in self.fields:
            if refused.spec_field and refused.spec_field not in seen:
                seen.append(refused.spec_field)
        return seen

    def message(self) -> str:
        """The condition message: the policy's field(s) first, then the API server's own words.

        e.g. ``spec.runtime.resources.limits: the API server refused Deployment ns/web-cachewarden:
        spec.template.spec.containers[0].resources.limits[tier]: Invalid value: "tier": must be a
        standard resource type or fully qualified``.
        """
        head = ", ".join(self.spec_fields) or "the policy's spec"
        details = "; ".join(
            ": ".join(p for p in (r.child_field, r.message) if p) for r in self.fields
        ) or self.api_message
        text = f"{head}: the API server refused {self.kind} {self.name}: {details}"
        return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def is_rejection(status_code: int | None) -> bool:
    """Whether an API error says the object itself is invalid (retrying the same object cannot
    succeed), as opposed to a transient failure (5xx, 409 conflict, 429, a lost connection)."""
    return status_code == INVALID_STATUS


def rejection_from_status(kind: str, name: str, status: Mapping[str, Any] | None,
                          fallback_message: str = "") -> ChildRejection:
    """The :class:`ChildRejection` of ``kind`` ``name`` from the API server's ``Status`` body.

    Each ``details.causes`` entry (``field``, ``message``, ``reason``) becomes a :class:`RefusedField`
    mapped with :func:`spec_field_of`; a Status without causes (e.g. an admission policy's denial)
    keeps its ``message``, and a missing body keeps ``fallback_message``.
    """
    status = status if isinstance(status, Mapping) else {}
    details = status.get("details") if isinstance(status.get("details"), Mapping) else {}
    causes: Sequence[Any] = details.get("causes") or [] if isinstance(details, Mapping) else []
    api_message = str(status.get("message") or fallback_message or "refused as invalid")
    fields: list[RefusedField] = []
    for cause in causes:
        if not isinstance(cause, Mapping):
            continue
        child_field = str(cause["field"]) if cause.get("field") else None
        message = str(cause.get("message") or cause.get("reason") or "")
        reason = str(cause["reason"]) if cause.get("reason") else None
        fields.append(RefusedField(spec_field_of(kind, child_field), child_field, message, reason))
    if not fields:
        fields.append(RefusedField(spec_field_of(kind, None), None, api_message))
    return ChildRejection(kind, name, tuple(fields), api_message)
