"""What the API server checks in the objects the operator renders, checked first in the CachePolicy
model and its CRD so that a spec the API server would refuse is refused naming the policy's field:
qualified names (label and annotation keys, extended resources), label values, container resource
names and quantities, as patterns, CEL rules and Python checks. Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from cache_operator.api.common import CrdSchema

__all__ = [
    "CEL_QUALIFIED_KEY",
    "CEL_RESOURCE_KEY",
    "LABEL_VALUE_ACCEPTED",
    "LABEL_VALUE_MAX",
    "LABEL_VALUE_PATTERN",
    "MAX_NODE_SELECTOR",
    "MAX_POD_ANNOTATIONS",
    "MAX_RESOURCES",
    "QUALIFIED_NAME_ACCEPTED",
    "QUALIFIED_NAME_MAX",
    "QUALIFIED_NAME_PATTERN",
    "QUANTITY_PATTERN",
    "RESOURCE_NAME_ACCEPTED",
    "STANDARD_CONTAINER_RESOURCES",
    "check_map",
    "keys_rule",
    "label_value_error",
    "qualified_name_error",
    "quantity_map",
    "resource_name_error",
]

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
QUANTITY_MAP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
    },
}

# What the API server checks in the Deployment the operator renders, checked here first so the CRD
# refuses such a spec naming the field (the operator still reports anything else the API server
# refuses as Stalled/ChildRejected: cache_operator.child_rejection).
# A qualified name (label key, annotation key, extended resource name): an optional DNS subdomain
# prefix and '/', then up to 63 alphanumerics, '-', '_', '.' starting and ending alphanumeric.
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
QUALIFIED_NAME_PATTERN = f"^({_DNS_SUBDOMAIN}/)?{_NAME_PART}$"
QUALIFIED_NAME_MAX = 253 + 1 + 63  # prefix / name
QUALIFIED_NAME_ACCEPTED = (
    "an optional DNS subdomain prefix and '/' (e.g. example.com/), then up to 63 alphanumerics, '-', '_' "
    "or '.', starting and ending alphanumeric"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_VALUE_MAX = 63
LABEL_VALUE_ACCEPTED = (
    "empty, or up to 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
)
# Container resources: the standard ones, hugepages-<size>, or an extended resource (a qualified name
# with a domain prefix outside kubernetes.io).
STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
RESOURCE_NAME_ACCEPTED = (
    "cpu, memory, ephemeral-storage, hugepages-<size> or an extended resource with a domain prefix "
    "outside kubernetes.io (e.g. nvidia.com/gpu)"
)
MAX_POD_ANNOTATIONS = 64
MAX_NODE_SELECTOR = 32
MAX_RESOURCES = 16

# CEL raw strings (r'...'): the regex's backslashes stay as they are.
CEL_QUALIFIED_KEY = f"size(k) <= {QUALIFIED_NAME_MAX} && k.matches(r'{QUALIFIED_NAME_PATTERN}')"
CEL_RESOURCE_KEY = (
    "k in " + str(list(STANDARD_CONTAINER_RESOURCES)).replace('"', "'")
    + " || k.startsWith('hugepages-') || (k.contains('/') && !k.contains('kubernetes.io/') && "
    + CEL_QUALIFIED_KEY + ")"
)


def keys_rule(path: str, cel_ok: str, what: str, accepted: str) -> dict[str, Any]:
    """A field-level CEL rule on a map: every key passes ``cel_ok`` (over ``k``); the message names the
    field, the first refused key and what is accepted."""
    head, tail = json.dumps(f"{path}: key "), json.dumps(f" is not {what}; accepted: {accepted}")
    return {
        "rule": f"self.all(k, {cel_ok})",
        "message": f"{path}: every key must be {what}; accepted: {accepted}",
        # CEL double-quoted literals escape like JSON; the first refused key is shown quoted.
        "messageExpression": f"{head} + '\"' + self.filter(k, !({cel_ok}))[0] + '\"' + {tail}",
    }


def quantity_map(path: str) -> CrdSchema:
    """A requests/limits map: quantities by resource name, names checked as the API server does."""
    schema = {
        **QUANTITY_MAP_SCHEMA,
        "maxProperties": MAX_RESOURCES,
        "x-kubernetes-validations": [
            keys_rule(path, CEL_RESOURCE_KEY, "a container resource name", RESOURCE_NAME_ACCEPTED)
        ],
    }
    return CrdSchema(schema)


def qualified_name_error(key: str) -> str | None:
    """Why ``key`` is not a qualified name (label or annotation key), or None when it is one."""
    if len(key) > QUALIFIED_NAME_MAX or not re.match(QUALIFIED_NAME_PATTERN, key):
        return f"is not a qualified name; accepted: {QUALIFIED_NAME_ACCEPTED}"
    prefix, _, _ = key.rpartition("/")
    if len(prefix) > 253:
        return "has a prefix longer than 253 characters; accepted: " + QUALIFIED_NAME_ACCEPTED
    return None


def resource_name_error(name: str) -> str | None:
    """Why ``name`` is not a container resource name the API server accepts, or None."""
    if name in STANDARD_CONTAINER_RESOURCES or name.startswith("hugepages-"):
        return None
    if "/" in name and "kubernetes.io/" not in name and qualified_name_error(name) is None:
        return None
    return f"is not a container resource name; accepted: {RESOURCE_NAME_ACCEPTED}"


def check_map(path: str, data: Mapping[str, Any] | None, key_error: Any,
               value_error: Any = None) -> None:
    """Raise ValueError naming ``path``, the first refused key (or value) and what is accepted."""
    for key, value in (data or {}).items():
        problem = key_error(key)
        if problem:
            raise ValueError(f"{path}: key {key!r} {problem}")
        problem = value_error(value) if value_error is not None else None
        if problem:
            raise ValueError(f"{path}[{key}]: value {value!r} {problem}")


def label_value_error(value: str) -> str | None:
    """Why ``value`` is not a label value, or None when it is one."""
    if len(value) > LABEL_VALUE_MAX or not re.match(LABEL_VALUE_PATTERN, value):
        return f"is not a label value; accepted: {LABEL_VALUE_ACCEPTED}"
    return None
