"""Operator startup: every kopf setting in one ``@kopf.on.startup`` handler, and nothing else.

Importing this module registers the startup/cleanup/probe handlers and the CachePolicy handlers
(:mod:`cache_operator.handlers.cachepolicy`). Operator-wide objects (the Kubernetes client, the pod
client, metrics, options) live in ``memo``, not in globals.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from cache_operator import handlers  # noqa: F401  (registers the resource handlers)
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


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Project-owned finalizer and storage prefixes, watch timeouts, event posting; build memo."""
    options = options_from_env()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX,
        key="last-handled-configuration",
    )
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
    memo.pods = PodClient(timeout_s=float(options.get("pod_timeout_s", 5.0)))
    memo.metrics = OperatorMetrics()
    memo.options = options
    if options.get("metrics_port"):
        memo.metrics.serve(int(options["metrics_port"]), options.get("metrics_address", "127.0.0.1"))
        logger.info("metrics on %s:%s", options.get("metrics_address", "127.0.0.1"), options["metrics_port"])


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
