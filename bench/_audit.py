"""API calls counted from the kube-apiserver's own audit log (bench/scale.py).

The bench starts its devcluster with an audit policy that records every request in the namespaces it
names at ``Metadata`` level (who, verb, resource; no bodies), so the counts are what the API server
saw, not what a client believes it sent. Clients are told apart by their User-Agent: kubectl (the
bench), kopf (the operator's watches and its own patches of the custom resources) and the official
Python client (the operator's children, status, Events).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def audit_policy(namespaces: Sequence[str]) -> dict[str, Any]:
    """An audit policy: every request in ``namespaces`` at Metadata level (one event per request,
    once its response is complete or, for a watch, started), nothing elsewhere."""
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "Metadata", "namespaces": list(namespaces)},
            {"level": "None"},
        ],
    }


def apiserver_args(directory: Path, namespaces: Sequence[str]) -> tuple[dict[str, list[str]], Path]:
    """(devcluster extra_args for kube-apiserver, audit log path) auditing ``namespaces``; the policy
    file is written into ``directory``."""
    policy = directory / "audit-policy.json"
    log = directory / "audit.log"
    policy.write_text(json.dumps(audit_policy(namespaces)))
    args = [f"--audit-policy-file={policy}", f"--audit-log-path={log}", "--audit-log-maxsize=0"]
    return {"kube-apiserver": args}, log


def client_of(user_agent: str) -> str:
    """kubectl, kopf, python-client or other:<program>, from a request's User-Agent."""
    agent = user_agent.lower()
    if agent.startswith("kubectl"):
        return "kubectl"
    if agent.startswith("kopf"):
        return "kopf"
    if agent.startswith("openapi-generator") or "python" in agent:
        return "python-client"
    return "other:" + agent.split("/", 1)[0][:24]


@dataclass(frozen=True)
class Call:
    """One request as the audit log saw it."""

    at: float  # requestReceivedTimestamp, seconds since the epoch
    client: str
    verb: str
    resource: str  # resource[/subresource]
    namespace: str
    code: int | None


def read_calls(log: Path) -> list[Call]:
    """Every request in the audit log, once each (a watch's ResponseStarted and ResponseComplete
    events share its auditID)."""
    seen: set[str] = set()
    calls: list[Call] = []
    if not log.exists():
        return calls
    with log.open() as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut by the API server still writing it
            audit_id = event.get("auditID", "")
            if audit_id in seen:
                continue
            seen.add(audit_id)
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "?")
            if ref.get("subresource"):
                resource = f"{resource}/{ref['subresource']}"
            stamp = event.get("requestReceivedTimestamp", "")
            calls.append(
                Call(
                    at=datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0,
                    client=client_of(event.get("userAgent", "")),
                    verb=event.get("verb", "?"),
                    resource=resource,
                    namespace=ref.get("namespace", ""),
                    code=(event.get("responseStatus") or {}).get("code"),
                )
            )
    return calls


def select(
    calls: Iterable[Call],
    namespace: str | None = None,
    start: float | None = None,
    end: float | None = None,
    operator_only: bool = False,
) -> list[Call]:
    """The calls in ``namespace`` received in [start, end), optionally leaving kubectl's out."""
    return [
        c
        for c in calls
        if (namespace is None or c.namespace == namespace)
        and (start is None or c.at >= start)
        and (end is None or c.at < end)
        and (not operator_only or c.client != "kubectl")
    ]


def breakdown(calls: Iterable[Call]) -> Counter[tuple[str, str, str]]:
    """Counts by (client, verb, resource)."""
    return Counter((c.client, c.verb, c.resource) for c in calls)


def format_breakdown(calls: Sequence[Call], per: int) -> list[str]:
    """One line per (client, verb, resource): the count and the count per policy (``per`` policies)."""
    lines = []
    for (client, verb, resource), n in sorted(breakdown(calls).items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {client:14} {verb:7} {resource:28} {n:6}  {n / per:6.2f}/policy")
    return lines
