"""The chart's pre-delete hook: leave no CachePolicy or CacheIncident holding the operator's finalizer.

Run by ``helm uninstall`` (a Job, before Helm deletes the operator's Deployment) with the environment:

  CLEANUP_MODE         orphan: scale the operator to 0, wait for its pods to go, remove the finalizer
                       from every object (they stay, and so do their runtime pods);
                       delete: delete every object while the operator still runs (its delete handlers
                       remove the children and release the finalizer), wait until they are gone.
  WATCH_NAMESPACES     comma-separated namespaces in the operator's scope; empty = every namespace.
  OPERATOR_NAMESPACE, OPERATOR_DEPLOYMENT, OPERATOR_SELECTOR   the operator's Deployment and pods.
  FINALIZER            the operator's finalizer (cachewarden.io/finalizer).
  TIMEOUT_SECONDS      how long to wait for each step.

After the timeout the delete mode removes the finalizer of what is left (owner references still let
the garbage collector remove the children) and says so; any API error fails the Job, and so the
uninstall, with the reason. Exit 0 on success.
"""

from __future__ import annotations

import os
import sys
import time

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

GROUP, VERSION = "cachewarden.io", "v1alpha1"
KINDS = ("cacheincidents", "cachepolicies")  # incidents first: they lift overrides on their policy


def log(message: str) -> None:
    """One line to the Job's log."""
    print(f"cachewarden pre-delete: {message}", flush=True)


def load_config() -> None:
    """In-cluster credentials, else $KUBECONFIG (devcluster's process kubelet writes one)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def objects(api: client.CustomObjectsApi, plural: str, namespaces: list[str]) -> list[dict]:
    """Every object of ``plural`` in the scope."""
    if not namespaces:
        return list(api.list_cluster_custom_object(GROUP, VERSION, plural)["items"])
    found: list[dict] = []
    for namespace in namespaces:
        found += api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
    return found


def holding(api: client.CustomObjectsApi, namespaces: list[str], finalizer: str) -> list[str]:
    """``kind ns/name`` of the objects that still carry the finalizer."""
    return [
        f"{plural} {o['metadata']['namespace']}/{o['metadata']['name']}"
        for plural in KINDS
        for o in objects(api, plural, namespaces)
        if finalizer in (o["metadata"].get("finalizers") or [])
    ]


def remove_finalizer(api: client.CustomObjectsApi, namespaces: list[str], finalizer: str) -> int:
    """Remove ``finalizer`` from every object (a JSON patch guarded by a test of the list); returns how
    many objects were patched."""
    patched = 0
    for plural in KINDS:
        for obj in objects(api, plural, namespaces):
            meta = obj["metadata"]
            current = list(meta.get("finalizers") or [])
            if finalizer not in current:
                continue
            remaining = [f for f in current if f != finalizer]
            body = [
                {"op": "test", "path": "/metadata/finalizers", "value": current},
                {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
            ]
            try:
                api.patch_namespaced_custom_object(
                    GROUP, VERSION, meta["namespace"], plural, meta["name"], body,
                    _content_type="application/json-patch+json",
                )
            except ApiException as exc:
                if exc.status in (404, 422):  # gone, or changed under us: the next pass sees it again
                    continue
                raise
            patched += 1
            log(f"removed {finalizer} from {plural} {meta['namespace']}/{meta['name']}")
    return patched


def wait(predicate, timeout: float, what: str) -> bool:
    """Poll ``predicate`` every second until true or ``timeout``; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            log(f"timed out after {timeout:g}s waiting for {what}")
            return False
        time.sleep(1)


def orphan(namespaces: list[str], finalizer: str, timeout: float) -> int:
    """Stop the operator, then remove its finalizer everywhere."""
    apps, core, custom = client.AppsV1Api(), client.CoreV1Api(), client.CustomObjectsApi()
    namespace, deployment = os.environ["OPERATOR_NAMESPACE"], os.environ["OPERATOR_DEPLOYMENT"]
    selector = os.environ["OPERATOR_SELECTOR"]
    try:
        apps.patch_namespaced_deployment(
            deployment, namespace, {"spec": {"replicas": 0}}, _content_type="application/merge-patch+json"
        )
        log(f"scaled deployment {namespace}/{deployment} to 0")
    except ApiException as exc:
        if exc.status != 404:
            raise
    if not wait(lambda: not core.list_namespaced_pod(namespace, label_selector=selector).items, timeout,
                f"the operator's pods ({selector}) to stop"):
        return 1
    for _ in range(5):  # repeat: an object created meanwhile (no operator now) has no finalizer
        remove_finalizer(custom, namespaces, finalizer)
        if not holding(custom, namespaces, finalizer):
            log("no CachePolicy or CacheIncident holds the finalizer; they stay, without an operator")
            return 0
    log(f"still holding {finalizer}: {holding(custom, namespaces, finalizer)}")
    return 1


def delete(namespaces: list[str], finalizer: str, timeout: float) -> int:
    """Delete every object while the operator runs; strip the finalizer of stragglers."""
    custom = client.CustomObjectsApi()
    for plural in KINDS:
        for obj in objects(custom, plural, namespaces):
            meta = obj["metadata"]
            try:
                custom.delete_namespaced_custom_object(
                    GROUP, VERSION, meta["namespace"], plural, meta["name"]
                )
                log(f"deleted {plural} {meta['namespace']}/{meta['name']}")
            except ApiException as exc:
                if exc.status != 404:
                    raise
    remaining = lambda: [o for p in KINDS for o in objects(custom, p, namespaces)]  # noqa: E731
    if wait(lambda: not remaining(), timeout, "the operator to finish deleting them"):
        log("every CachePolicy and CacheIncident in scope is deleted")
        return 0
    log(f"left over: {len(remaining())}; removing {finalizer} so nothing is stranded")
    remove_finalizer(custom, namespaces, finalizer)
    return 0


def main() -> int:
    """Run the mode from the environment; the exit code is the Job's."""
    mode = os.environ.get("CLEANUP_MODE", "")
    namespaces = [n for n in os.environ.get("WATCH_NAMESPACES", "").split(",") if n]
    finalizer = os.environ.get("FINALIZER", "cachewarden.io/finalizer")
    timeout = float(os.environ.get("TIMEOUT_SECONDS", "120"))
    if mode not in ("orphan", "delete"):
        log(f"CLEANUP_MODE {mode!r} is not accepted; accepted: orphan, delete")
        return 2
    load_config()
    log(f"mode {mode}, scope {','.join(namespaces) or 'all namespaces'}")
    try:
        if mode == "orphan":
            return orphan(namespaces, finalizer, timeout)
        return delete(namespaces, finalizer, timeout)
    except ApiException as exc:
        log(f"Kubernetes API error {exc.status} {exc.reason}: {str(exc.body)[:500]}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
