"""Kubernetes label selectors: the one formatter of the API's query string, and matching.

Pure: no I/O. The operator's client (cache_operator.k8s), the renderer and the target selection use
these, with a ``spec.selector`` model or a plain ``LabelSelector`` mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cache_operator.api.cachepolicy import LabelSelectorRequirement, SelectorSpec

__all__ = ["label_selector_string", "selector_matches"]

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def label_selector_string(selector: SelectorSpec | Mapping[str, Any]) -> str:
    """A LabelSelector (``matchLabels`` + ``matchExpressions``) as the API's query string,
    ``a=b,tier in (x,y),!gone``; labels and values sorted, so the same selector gives the same text.

    Raises ValueError naming the field when an expression's operator is not one Kubernetes accepts.
    """
    if isinstance(selector, SelectorSpec):
        selector = selector.model_dump(by_alias=True, exclude_none=True)
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for index, expr in enumerate(selector.get("matchExpressions") or []):
        key, operator = expr.get("key"), expr.get("operator")
        values = ",".join(sorted(expr.get("values") or []))
        if operator not in _OPERATORS:
            raise ValueError(
                f"matchExpressions[{index}].operator: {operator!r} is not accepted; "
                f"accepted: {', '.join(_OPERATORS)}"
            )
        parts.append({
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": str(key),
            "DoesNotExist": f"!{key}",
        }[operator])
    return ",".join(parts)


def selector_matches(selector: SelectorSpec, labels: Mapping[str, str]) -> bool:
    """Whether a pod with ``labels`` is selected (Kubernetes label selector semantics)."""
    if any(labels.get(key) != value for key, value in (selector.match_labels or {}).items()):
        return False
    return all(_requirement_matches(req, labels) for req in selector.match_expressions or [])


def _requirement_matches(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = requirement.key in labels
    values = set(requirement.values or [])
    if requirement.operator == "In":
        return present and labels[requirement.key] in values
    if requirement.operator == "NotIn":
        return not present or labels[requirement.key] not in values
    if requirement.operator == "Exists":
        return present
    return not present
