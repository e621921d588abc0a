"""``cachewarden operator``: run the kopf operator with the project's settings.

    cachewarden operator [--namespace NS ... | --all-namespaces]
                         [--peering NAME [--priority N|random] [--peering-lifetime S]]
                         [--liveness URL] [--metrics-port N] [--kubeconfig PATH]

Without ``--peering`` the operator runs standalone (no peering objects needed, one replica). With it,
several replicas share the peering object ``NAME`` (a KopfPeering in each watched namespace, or a
ClusterKopfPeering with ``--all-namespaces``; kopf's CRDs are in ``crds/kopf-peering.yaml``): the one with
the highest ``--priority`` acts, the others stand by with their watches and daemons stopped, and take
over once its record in the peering object is older than ``--peering-lifetime`` (a replica that exits
cleanly removes its record at once). See docs/operator.md, "High availability".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import sys
from collections.abc import Sequence

from cache_operator.main import OPTIONS_ENV

DEFAULT_PEERING_LIFETIME_S = 30
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def build_parser() -> argparse.ArgumentParser:
    """The ``cachewarden operator`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="cachewarden operator",
        description="Reconcile CachePolicies (cachewarden.io/v1alpha1) into ConfigMaps, Secrets, "
        "Deployments and live config pushes to cache runtime pods.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch the whole cluster")
    parser.add_argument(
        "--peering",
        default=None,
        help="kopf peering object name (several replicas, one active); default standalone",
    )
    parser.add_argument(
        "--priority",
        default=None,
        help="kopf peering priority: an integer, or 'random' (a random one per process, so replicas of "
        "one Deployment never tie: kopf pauses every peer of equal priority); only with --peering",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=DEFAULT_PEERING_LIFETIME_S,
        help="seconds a replica's peering record stays valid without a keep-alive (refreshed 5-10 s "
        "before it expires); bounds how long a killed active replica blocks the standby (default 30)",
    )
    parser.add_argument(
        "--liveness", default=None, help="liveness endpoint URL, e.g. http://0.0.0.0:8081/healthz"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port"
    )
    parser.add_argument(
        "--metrics-address", default="127.0.0.1", help="address for /metrics (default 127.0.0.1)"
    )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default $KUBECONFIG)")
    parser.add_argument(
        "--converge-interval",
        type=float,
        default=1.0,
        help="seconds between passes while a policy converges (default 1; once Ready, "
        "spec.health.probeIntervalSeconds applies)",
    )
    parser.add_argument(
        "--pod-timeout",
        type=float,
        default=5.0,
        help="timeout of one call to a runtime pod in seconds (default 5)",
    )
    parser.add_argument(
        "--resolve-service-hosts",
        action="store_true",
        help="devcluster only: a Redis URL host naming a Service in the policy's namespace is "
        "replaced by a ready pod IP behind it (no Service routing there)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    return parser


def _check(args: argparse.Namespace) -> str | None:
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        return f"--metrics-port {args.metrics_port} is not accepted; accepted: 1..65535"
    if not 0.1 <= args.converge_interval <= 60:
        return f"--converge-interval {args.converge_interval} is not accepted; accepted: 0.1..60 seconds"
    if not 0.1 <= args.pod_timeout <= 120:
        return f"--pod-timeout {args.pod_timeout} is not accepted; accepted: 0.1..120 seconds"
    if args.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        return f"--log-level {args.log_level!r} is not accepted; accepted: DEBUG, INFO, WARNING, ERROR"
    if args.priority is not None:
        if args.peering is None:
            return f"--priority {args.priority!r} is not accepted without --peering (standalone has no peers)"
        if args.priority != "random" and not re.fullmatch(r"-?[0-9]{1,9}", args.priority):
            return f"--priority {args.priority!r} is not accepted; accepted: an integer or 'random'"
    if args.peering is not None and not _DNS_SUBDOMAIN.match(args.peering):
        return f"--peering {args.peering!r} is not accepted; accepted: a DNS subdomain name (lower-case)"
    if args.peering is None and args.peering_lifetime != DEFAULT_PEERING_LIFETIME_S:
        return "--peering-lifetime is not accepted without --peering (standalone has no peers)"
    if not 10 <= args.peering_lifetime <= 3600:
        return f"--peering-lifetime {args.peering_lifetime} is not accepted; accepted: 10..3600 seconds"
    if args.liveness is not None and not args.liveness.startswith("http://"):
        return f"--liveness {args.liveness!r} is not accepted; accepted: an http:// URL"
    return None


def peering_priority(value: str | None) -> int | None:
    """kopf's priority from ``--priority``: None (kopf's default), an integer, or a random one."""
    if value is None:
        return None
    if value == "random":
        return random.SystemRandom().randint(1, 2**31 - 1)
    return int(value)


def main(argv: Sequence[str]) -> int:
    """Parse flags and run the operator until SIGTERM/SIGINT; return the exit code."""
    args = build_parser().parse_args(list(argv))
    problem = _check(args)
    if problem:
        print(f"cachewarden operator: {problem}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    # kopf.run gives the startup handler no arguments of ours: the options travel in the environment.
    os.environ[OPTIONS_ENV] = json.dumps(
        {
            "metrics_port": args.metrics_port,
            "metrics_address": args.metrics_address,
            "converge_interval_s": args.converge_interval,
            "pod_timeout_s": args.pod_timeout,
            "resolve_service_hosts": args.resolve_service_hosts,
            "peering": args.peering,
            "peering_lifetime_s": args.peering_lifetime,
            "clusterwide": args.all_namespaces,
            "namespaces": list(args.namespace),
        }
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")

    import kopf

    import cache_operator.main  # noqa: F401  (registers handlers)

    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=peering_priority(args.priority),
        liveness_endpoint=args.liveness,
    )
    return 0
