"""RFC 3339 UTC timestamps as Kubernetes stores them, to and from Unix seconds: the project's one
time format (the operator's statuses and conditions, the incidents' records, the devcluster kubelet).

Lives in the engine package, the bottom of the dependency order, so every other package may use it.
"""

from __future__ import annotations

import datetime as dt
import time

__all__ = ["parse_rfc3339", "rfc3339", "rfc3339_micro", "utc_now"]


def rfc3339(moment: float | dt.datetime | None = None) -> str:
    """``moment`` (Unix seconds, an aware datetime, or now) as ``YYYY-MM-DDTHH:MM:SSZ``: UTC, seconds
    precision (what the API keeps for a ``Time``). A naive datetime is refused: it is ambiguous."""
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None:
            raise ValueError("moment: a timezone-aware datetime is required (naive times are ambiguous)")
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    seconds = time.time() if moment is None else moment
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> str:
    """Now, as :func:`rfc3339` writes it."""
    return rfc3339()


def rfc3339_micro(epoch: float | None = None) -> str:
    """A Kubernetes ``MicroTime`` (e.g. a Lease's renewTime): microseconds precision, UTC."""
    now = time.time() if epoch is None else epoch
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1e6):06d}Z"


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
