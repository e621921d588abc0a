"""Operator startup: every kopf setting in one ``@kopf.on.startup`` handler, and nothing else.

Importing this module registers the startup/cleanup/probe handlers and the CachePolicy handlers
(:mod:`cache_operator.handlers.cachepolicy`). Operator-wide objects (the Kubernetes client, the pod
client, metrics, options) live in ``memo``, not in globals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from cache_operator import handlers  # noqa: F401  (registers the resource handlers)
from cache_operator.api.cachepolicy import KIND as POLICY_KIND
from cache_operator.api.common import API_VERSION
from cache_operator.diffbase import LeanDiffBaseStorage
from cache_operator.k8s import POOL_SIZE, Kube
from cache_operator.metrics import OperatorMetrics
from cache_operator.podclient import PodClient

FINALIZER = "cachewarden.io/finalizer"
STORAGE_PREFIX = "cachewarden.io"
# Watch requests end server-side after this long and are re-opened; the client timeout is a little
# longer so a silently dead connection is noticed.
WATCH_SERVER_TIMEOUT_S = 300
WATCH_CLIENT_TIMEOUT_S = 330
OPTIONS_ENV = "CACHEWARDEN_OPERATOR_OPTIONS"


def options_from_env() -> dict[str, Any]:
    """The CLI's options, passed through the environment (kopf.run gives handlers no arguments)."""
    import json

    raw = os.environ.get(OPTIONS_ENV, "")
    return json.loads(raw) if raw else {}


def configure_persistence(settings: kopf.OperatorSettings) -> None:
    """Where kopf keeps its state: the project's finalizer and annotation prefix, and a diff-base that
    does not deep-copy every CachePolicy event (:mod:`cache_operator.diffbase`)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(
        prefix=STORAGE_PREFIX,
        key="last-handled-configuration",
        lean_kinds={(API_VERSION, POLICY_KIND)},  # no changing handlers: see cache_operator.diffbase
    )


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Project-owned finalizer and storage prefixes, watch timeouts, event posting; build memo."""
    options = options_from_env()
    configure_persistence(settings)
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = 10
    settings.posting.level = logging.WARNING  # Events for problems only; info stays in the log
    settings.posting.reporting_component = "cachewarden-operator"
    # No cap on kopf's per-object workers: a worker lingers for batching.idle_timeout after each
    # object's last event, so a cap of N made 300 new policies wait in batches of N, idle_timeout apart.
    settings.batching.worker_limit = None
    # Kubernetes calls run in the loop's default executor (asyncio.to_thread); its default size
    # (CPUs + 4) would queue a burst of reconciles of many policies behind a handful of threads.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="cachewarden-k8s")
    )
    memo.kube = Kube.from_environment()
    if options.get("peering"):
        settings.peering.lifetime = int(options.get("peering_lifetime_s", 30))
        settings.peering.stealth = True  # keep-alives every lifetime - 5..10 s are not worth a log line
        await ensure_peering_objects(memo.kube, options, logger)
    memo.pods = PodClient(timeout_s=float(options.get("pod_timeout_s", 5.0)))
    memo.metrics = OperatorMetrics()
    memo.options = options
    if options.get("metrics_port"):
        memo.metrics.serve(int(options["metrics_port"]), options.get("metrics_address", "127.0.0.1"))
        logger.info("metrics on %s:%s", options.get("metrics_address", "127.0.0.1"), options["metrics_port"])


PEERING_API = "kopf.dev/v1"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def peering_objects(name: str, clusterwide: bool, namespaces: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) of every peering object an operator with these flags watches: one
    ClusterKopfPeering cluster-wide, else one KopfPeering per watched namespace (namespace patterns
    such as ``team-*`` are left out: which namespaces they match is only known at run time)."""
    if clusterwide:
        return [(f"/apis/{PEERING_API}/clusterkopfpeerings",
                 {"apiVersion": PEERING_API, "kind": "ClusterKopfPeering", "metadata": {"name": name}})]
    return [(f"/apis/{PEERING_API}/namespaces/{ns}/kopfpeerings",
             {"apiVersion": PEERING_API, "kind": "KopfPeering", "metadata": {"name": name, "namespace": ns}})
            for ns in namespaces if _DNS_LABEL.match(ns)]


async def ensure_peering_objects(kube: Kube, options: dict[str, Any], logger: kopf.Logger) -> None:
    """Create the peering object(s) ``--peering`` names when missing.

    Without its peering object a kopf operator with mandatory peering stays paused for ever and says
    so only at debug level; a missing CRD or a forbidden create fails the start instead, naming what
    to apply.
    """
    from kubernetes import dynamic
    from kubernetes.client.exceptions import ApiException

    client = dynamic.DynamicClient(kube.api_client)
    name = str(options["peering"])
    wanted = peering_objects(name, bool(options.get("clusterwide")), list(options.get("namespaces") or []))
    for path, obj in wanted:
        where = obj["metadata"].get("namespace") or "cluster scope"

        def create(path: str = path, obj: dict[str, Any] = obj) -> bool:
            # Read first: an operator allowed to get/patch but not create its peering object is fine
            # as long as the object exists.
            try:
                client.request("get", f"{path}/{name}")
                return False
            except ApiException as exc:
                if exc.status != 404:
                    raise
            try:
                client.request("post", path, body=obj)
            except ApiException as exc:
                if exc.status == 409:  # another replica created it meanwhile
                    return False
                raise
            return True

        try:
            created = await asyncio.to_thread(create)
        except ApiException as exc:
            hint = ("the peering CRDs are not installed: kubectl apply -f crds/kopf-peering.yaml"
                    if exc.status == 404 else f"HTTP {exc.status} {exc.reason}")
            raise kopf.PermanentError(
                f"--peering {name}: the {obj['kind']} {name!r} ({where}) does not exist and cannot be "
                f"created: {hint}; accepted: an existing {obj['kind']} of that name "
                f"(apiVersion {PEERING_API})"
            ) from None
        if created:
            logger.info("created the %s %r (%s) for peering", obj["kind"], name, where)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in through the official ``kubernetes`` client only (in-cluster ServiceAccount, or the
    kubeconfig with its ``tokenFile`` users). Without a login handler of its own, kopf also tries
    pykube-ng whenever that package is installed (pytest-kind-ng brings it into the test environment),
    and pykube-ng reads no ``tokenFile``: the operator then went to the API server as
    ``system:anonymous`` and every request was forbidden."""
    return kopf.login_via_client(**kwargs)


@kopf.on.cleanup()
async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    """Close the HTTP pool and the Kubernetes client on shutdown."""
    if getattr(memo, "pods", None) is not None:
        await memo.pods.close()
    if getattr(memo, "kube", None) is not None:
        memo.kube.close()


@kopf.on.probe(id="policies")
def policies_known(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: how many policies this operator tracks (kopf's /healthz shows it)."""
    metrics = getattr(memo, "metrics", None)
    return metrics.policies.count() if metrics is not None else 0
