"""``cachewarden guide``: run one command of the troubleshooting guide against every pod of a policy.

    cachewarden guide --policy my-app -n shop /internal/cache/metrics
    cachewarden guide --policy my-app -n shop -X POST /internal/cache/memory-cleanup --dry-run
    cachewarden guide --pod-url http://10.0.3.17:8080 --pod-url http://10.0.3.18:8080 \\
        --token-file admin-token /internal/cache/metrics

With ``--policy`` the pods are the policy's targets (the operator's own selection:
:func:`cache_operator.targets.pod_selection` / :func:`~cache_operator.targets.selects`), found with
``kubectl`` (so kubeconfig and context work as for every other kubectl call), and the token is read
from the policy's token Secret (admin token for POST, read token for GET). Pod IPs must be reachable
from where this runs (inside the cluster, or the devcluster). Every pod is asked concurrently; the
answers are merged (:mod:`cachewarden.merge`) and printed as one JSON document.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from cachewarden.merge import merge_answers


class GuideError(RuntimeError):
    """A policy, pod or token that cannot be resolved; the message says which and why."""


KUBECTL = ["kubectl"]


def _kubectl(args: list[str], kubeconfig: str | None) -> Any:
    argv = [*KUBECTL, *(["--kubeconfig", kubeconfig] if kubeconfig else []), *args, "-o", "json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise GuideError(f"{' '.join(argv)}: {done.stderr.strip()[:300]}")
    return json.loads(done.stdout)


def policy_pods(policy: str, namespace: str, kubeconfig: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """``({pod name: base URL}, tokens)`` of a CachePolicy's target pods."""
    from cache_operator import render, targets
    from cache_operator.api.cachepolicy import CachePolicySpec

    document = _kubectl(["get", "cachepolicy", policy, "-n", namespace], kubeconfig)
    model = CachePolicySpec.model_validate(document.get("spec") or {})
    selector, port = targets.pod_selection(policy, model)
    pods = _kubectl(["get", "pods", "-n", namespace, "-l", selector], kubeconfig).get("items") or []
    urls: dict[str, str] = {}
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        target = targets.pod_target(pod, port) if targets.selects(model, policy, labels) else None
        if target is not None:
            urls[target.name] = f"http://{target.ip}:{target.port}"
    secret = _kubectl(["get", "secret", render.token_secret_name(policy), "-n", namespace], kubeconfig)
    tokens = {
        key: base64.b64decode(value).decode().splitlines()[0]
        for key, value in (secret.get("data") or {}).items()
        if value
    }
    return urls, tokens


def ask(url: str, method: str, path: str, body: Any, token: str | None, timeout: float) -> Any:
    """One pod's answer: its JSON, or ``{"error": ..., "status": ...}``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, url.rstrip("/") + path, json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300], "status": None}
    try:
        answer = response.json()
    except ValueError:
        answer = {"text": response.text[:2000]}
    if response.status_code >= 400:
        return {"error": answer, "status": response.status_code}
    return answer


def main(argv: Sequence[str]) -> int:
    """Run the subcommand; prints the merged JSON answer. Exit 1 when a pod failed, 2 on bad input."""
    parser = argparse.ArgumentParser(prog="cachewarden guide", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="the guide's path, e.g. /internal/cache/metrics (host left out)")
    parser.add_argument("-X", "--method", default="GET", choices=["GET", "POST"])
    parser.add_argument("-d", "--data", help="JSON body, as the guide's -d")
    parser.add_argument("--policy", help="CachePolicy whose pods to ask")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--kubectl", default="kubectl", help="the kubectl binary (default: on PATH)")
    parser.add_argument("--pod-url", action="append", default=[], help="ask this runtime (repeatable)")
    parser.add_argument("--token-file", help="bearer token file (default with --policy: its token Secret)")
    parser.add_argument("--dry-run", action="store_true", help="add ?dry_run=true (actions)")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--per-pod-only", action="store_true", help="print the answers without merging")
    args = parser.parse_args(list(argv))
    if bool(args.policy) == bool(args.pod_url):
        print("cachewarden guide: give --policy or --pod-url (one of them)", file=sys.stderr)
        return 2
    if not args.path.startswith("/"):
        print(
            f"cachewarden guide: path {args.path!r} must start with / (e.g. /internal/cache/metrics)",
            file=sys.stderr,
        )
        return 2
    try:
        body = json.loads(args.data) if args.data else None
    except ValueError as exc:
        print(f"cachewarden guide: --data is not JSON: {exc}", file=sys.stderr)
        return 2
    KUBECTL[:] = [args.kubectl]
    path = args.path + (("&" if "?" in args.path else "?") + "dry_run=true" if args.dry_run else "")
    tokens: dict[str, str] = {}
    try:
        if args.policy:
            urls, tokens = policy_pods(args.policy, args.namespace, args.kubeconfig)
        else:
            urls = {url: url for url in args.pod_url}
    except GuideError as exc:
        print(f"cachewarden guide: {exc}", file=sys.stderr)
        return 2
    if not urls:
        print("cachewarden guide: the policy has no pod with an IP yet", file=sys.stderr)
        return 1
    token = Path(args.token_file).read_text().splitlines()[0].strip() if args.token_file else None
    if token is None and tokens:
        token = tokens.get("admin-token" if args.method == "POST" else "read-token")
    with ThreadPoolExecutor(max_workers=min(16, len(urls))) as pool:
        futures = {
            name: pool.submit(ask, url, args.method, path, body, token, args.timeout)
            for name, url in urls.items()
        }
        answers = {name: future.result() for name, future in futures.items()}
    output = answers if args.per_pod_only else merge_answers(answers)
    print(json.dumps(output, indent=2, default=str))
    failed = [
        name
        for name, answer in answers.items()
        if isinstance(answer, dict) and "error" in answer and "status" in answer
    ]
    return 1 if failed else 0
