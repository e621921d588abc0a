"""When a reconcile pass writes a policy's status: only when it changes something besides the pass's
own clock.

Every pass fills a status patch (pods, health, conditions, detection). At rest (nothing changed in the
spec, the pods or their health) the only differences from the stored status are the times the pass
stamps: ``health.lastProbeTime``, ``lastDetectionTime`` and ``lastGarbageCollectionTime``. Writing
those would cost the API server one write per policy per probe interval (300 policies probed every
15 s: 20 writes a second) for no information, so such a patch is not sent; those fields then say
when the status last changed with that pass, not when the last pass ran (the operator's metric
``cachewarden_operator_policy_passes_total`` counts passes). Pure: no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

# Paths (in status) that every pass stamps with its own time.
PASS_CLOCK: tuple[tuple[str, ...], ...] = (
    ("health", "lastProbeTime"),
    ("lastDetectionTime",),
    ("lastGarbageCollectionTime",),
)


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with the JSON merge patch ``patch`` applied (RFC 7386: a dict merges key by key, a
    null removes the key, anything else replaces); ``target`` is not modified."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _no_nulls(value: Any) -> Any:
    """``value`` with null-valued keys left out at every level (a stored object has none: a merge
    patch's null removes the key), and empty lists too (``activeIncidents: []`` says what its absence
    says)."""
    if isinstance(value, Mapping):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value]
    return value


def _without(status: Mapping[str, Any], paths: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    """A copy of ``status`` without null-valued keys and the fields at ``paths``."""
    out: dict[str, Any] = _no_nulls(status)
    for path in paths:
        node: Any = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def status_changes(
    current: Mapping[str, Any], patch: Mapping[str, Any], ignore: Sequence[tuple[str, ...]] = PASS_CLOCK
) -> bool:
    """Whether merging ``patch`` into ``current`` changes anything outside the ``ignore`` paths."""
    if not patch:
        return False
    merged = merge_patch(current, patch)
    return _without(merged, ignore) != _without(current, ignore)
