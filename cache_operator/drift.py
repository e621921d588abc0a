"""Whether a child the operator renders has drifted from what the cluster holds. Pure: no I/O.

Drift repair (every tenth probe pass of a Ready policy, and the first pass after an operator start)
reads each child and applies it only when the stored object no longer holds what the operator
renders, so a policy at rest costs the API server reads, not writes. The comparison has
server-side apply's view of ownership: every field the operator renders must be there with its value;
fields others added (defaults, annotations, other managers) are left alone. A value the API server
stores in another spelling (a quantity normalised) counts as drift, which only costs the apply that
every repair pass used to send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Top-level fields of a rendered child that carry its content (apiVersion/kind name the object).
CONTENT_FIELDS = ("metadata", "data", "type", "spec")


def covers(live: Any, rendered: Any) -> bool:
    """Whether ``live`` holds everything in ``rendered``: dicts key by key (extra live keys allowed),
    lists element by element with the same length, anything else equal."""
    if isinstance(rendered, Mapping):
        return isinstance(live, Mapping) and all(covers(live.get(k), v) for k, v in rendered.items())
    if isinstance(rendered, list):
        return (
            isinstance(live, list)
            and len(live) == len(rendered)
            and all(covers(a, b) for a, b in zip(live, rendered, strict=True))
        )
    return bool(live == rendered)


def drifted(live: Mapping[str, Any] | None, rendered: Mapping[str, Any]) -> bool:
    """Whether ``rendered`` must be applied: the child is missing, or lacks or changed something the
    operator renders (labels, annotations, owner reference, data, type, spec)."""
    if live is None:
        return True
    return not all(covers(live.get(key), rendered[key]) for key in CONTENT_FIELDS if key in rendered)
