"""Deterministic names and labels of automatic CacheIncidents.

An automatic incident is named ``<policy>-<symptom>-<window>``, where the window is
``floor(opened_at / window_seconds)`` and ``opened_at`` is when the symptom's episode began (the
detection state's ``since``). A second detection of the same episode, by this operator after a
restart or by a retried handler, computes the same name and finds the incident (a create answers 409)
instead of opening another one. Names are DNS-1123 labels (≤ 63 characters) so they also fit in label
values; a policy name that does not fit is shortened and suffixed with a digest of the full name, so
two long policy names never share incidents.
"""

from __future__ import annotations

import hashlib
import re

from cache_operator.api.cacheincident import Symptom

MAX_NAME_LENGTH = 63
# One hour: detections of one episode within the hour share an incident; a symptom that clears and
# comes back within the same hour finds the (resolved) incident rather than opening a new one, which
# damps a flapping signal further than hysteresis alone.
DEFAULT_WINDOW_SECONDS = 3600

LABEL_POLICY = "cachewarden.io/policy"
LABEL_SYMPTOM = "cachewarden.io/symptom"
LABEL_SOURCE = "cachewarden.io/incident-source"
SOURCE_AUTO = "auto"
SOURCE_MANUAL = "manual"

SYMPTOMS: tuple[str, ...] = Symptom.__args__  # type: ignore[attr-defined]
_DIGEST_CHARS = 8
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def incident_window(opened_at: float, window_seconds: int = DEFAULT_WINDOW_SECONDS) -> int:
    """Index of the window ``opened_at`` (Unix seconds) falls in."""
    if not isinstance(window_seconds, int) or window_seconds < 1:
        raise ValueError(f"window_seconds={window_seconds!r} is invalid; accepted: an integer >= 1")
    if opened_at < 0:
        raise ValueError(f"opened_at={opened_at!r} is invalid; accepted: Unix seconds >= 0")
    return int(opened_at // window_seconds)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]


def auto_incident_name(
    policy: str, symptom: str, opened_at: float, window_seconds: int = DEFAULT_WINDOW_SECONDS
) -> str:
    """The name of the automatic incident for ``symptom`` of ``policy`` opened at ``opened_at``.

    Deterministic, a DNS-1123 label of at most 63 characters. ``policy`` must be a valid object name
    (DNS-1123 subdomain); dots are replaced, and a replaced or shortened policy name carries a digest
    of the original so distinct policies never collide.
    """
    if not isinstance(policy, str) or not 1 <= len(policy) <= 253 or not _SUBDOMAIN_RE.match(policy):
        raise ValueError(
            f"policy={policy!r} is invalid; accepted: a Kubernetes object name "
            "(lower-case letters, digits, '-' and '.', at most 253 characters)"
        )
    if symptom not in SYMPTOMS:
        raise ValueError(f"symptom={symptom!r} is invalid; accepted: one of {', '.join(SYMPTOMS)}")
    suffix = f"-{symptom.lower()}-{incident_window(opened_at, window_seconds)}"
    stem = policy
    if "." in policy or len(policy) + len(suffix) > MAX_NAME_LENGTH:
        room = MAX_NAME_LENGTH - len(suffix) - _DIGEST_CHARS - 1
        stem = policy.replace(".", "-")[:room].rstrip("-") or "p"
        stem = f"{stem}-{_digest(policy)}"
    name = stem + suffix
    assert len(name) <= MAX_NAME_LENGTH and _LABEL_RE.match(name), name
    return name


def auto_incident_labels(policy: str, symptom: str) -> dict[str, str]:
    """Labels of an automatic incident: find a policy's incidents by label, tell automatic ones apart.

    A policy name longer than a label value allows (63) is shortened with a digest, as in names.
    """
    value = policy if len(policy) <= MAX_NAME_LENGTH else f"{policy[:54].rstrip('-.')}-{_digest(policy)}"
    return {LABEL_POLICY: value, LABEL_SYMPTOM: symptom, LABEL_SOURCE: SOURCE_AUTO}
