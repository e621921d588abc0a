"""RFC 3339 UTC timestamps as Kubernetes stores them, to and from Unix seconds."""

from __future__ import annotations

import datetime as dt


def rfc3339(timestamp: float) -> str:
    """``timestamp`` (Unix seconds) as ``YYYY-MM-DDTHH:MM:SSZ`` (seconds precision, what the API keeps)."""
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: object, field: str) -> float:
    """Unix seconds of an RFC 3339 string; ``ValueError`` naming ``field`` and the value otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"{field}={value!r} is invalid; accepted: an RFC 3339 timestamp string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{field}={value!r} is invalid; accepted: an RFC 3339 timestamp such as 2026-01-31T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"{field}={value!r} is invalid; accepted: an RFC 3339 timestamp with a zone (Z)")
    return parsed.timestamp()
