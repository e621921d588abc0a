"""Scale: many CachePolicies applied at once, against the API server's own floor, and the operator's RSS.

    .venv/bin/python bench/scale.py                   # fresh devcluster, 300 policies
    .venv/bin/python bench/scale.py --policies 50     # smaller
    .venv/bin/python bench/scale.py --kubeconfig K    # an existing cluster (no other operator running!)

1. Floor: the same client (one ``kubectl apply -f -`` of a List) creates N ConfigMaps directly; the
   time until kubectl returns (every object created) is what the API server needs for N writes.
2. The operator (``cachewarden operator`` as a subprocess of this script, started before and idle):
   one ``kubectl apply -f -`` of N CachePolicies in selector mode whose selector matches no pod; the
   clock stops when all N are Ready and all N ConfigMaps the operator renders exist (polled every
   0.5 s with list calls). Each policy also gets a token Secret and a status write, so the operator
   does about three times the floor's writes.
3. The operator's peak RSS (VmHWM from /proc) over the whole run, and its RSS at the end.

Targets (issue 5): operator time within 3x of the floor; peak RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._operator_harness import (
    Kubectl,
    Operator,
    apply_crds,
    cluster,
    create_namespace,
    is_ready,
    policy_manifest,
    wait_until,
)
from cache_operator import render

TARGET_RATIO = 3.0
TARGET_RSS_MB = 200.0


def as_list(items: list[dict[str, Any]]) -> str:
    """A v1 List of ``items`` as JSON (kubectl applies it in one invocation)."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting a devcluster")
    parser.add_argument("--policies", type=int, default=300, help="number of policies (default 300)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if not 1 <= args.policies <= 5000:
        parser.error("--policies: 1..5000")
    count = args.policies
    with cluster(args.kubeconfig) as (kubeconfig, bin_dir):
        kubectl = Kubectl(kubeconfig, bin_dir)
        apply_crds(kubectl)
        suffix = uuid.uuid4().hex[:5]
        floor_ns, policy_ns = f"bench-floor-{suffix}", f"bench-scale-{suffix}"
        cr_floor_ns = f"bench-crfloor-{suffix}"
        for ns in (floor_ns, policy_ns, cr_floor_ns):
            create_namespace(kubectl, ns)
        log = Path(tempfile.gettempdir()) / f"cachewarden-bench-scale-{os.getpid()}.log"
        # The operator watches only the policies' namespace, so the CR floor below is not reconciled.
        operator = Operator(kubeconfig, log, scope=("--namespace", policy_ns))
        try:
            time.sleep(3)  # let the operator start its watches before anything is timed
            policies = [
                policy_manifest(
                    f"p{i}", {"preset": "production", "selector": {"matchLabels": {"bench": f"none-{i}"}}}
                )
                for i in range(count)
            ]
            configmaps = [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"floor-{i}"},
                    "data": {"config.json": "{}"},
                }
                for i in range(count)
            ]
            started = time.perf_counter()
            kubectl("apply", "-n", floor_ns, "-f", "-", stdin=as_list(configmaps))
            floor_s = time.perf_counter() - started
            print(f"floor: {count} ConfigMaps created by one kubectl apply in {floor_s:.2f} s", flush=True)
            started = time.perf_counter()
            kubectl("apply", "-n", cr_floor_ns, "-f", "-", stdin=as_list(policies))
            cr_floor_s = time.perf_counter() - started
            print(
                f"CR floor: {count} CachePolicies created by one kubectl apply in {cr_floor_s:.2f} s "
                "(no operator watching that namespace)",
                flush=True,
            )

            started = time.perf_counter()
            kubectl("apply", "-n", policy_ns, "-f", "-", stdin=as_list(policies))
            applied_s = time.perf_counter() - started
            print(
                f"operator: {count} CachePolicies applied by one kubectl apply in {applied_s:.2f} s",
                flush=True,
            )
            peak_seen = 0.0

            def all_done() -> bool:
                nonlocal peak_seen
                peak_seen = max(peak_seen, operator.rss_mb()[0])
                ready = sum(1 for p in kubectl.json("get", "cpol", "-n", policy_ns)["items"] if is_ready(p))
                maps = kubectl.json(
                    "get",
                    "configmaps",
                    "-n",
                    policy_ns,
                    "-l",
                    f"{render.LABEL_MANAGED_BY}={render.MANAGED_BY}",
                )["items"]
                return ready == count and len(maps) == count

            wait_until(all_done, args.timeout, f"{count} policies Ready with ConfigMaps", interval=0.5)
            operator_s = time.perf_counter() - started
            rss_now, rss_peak = operator.rss_mb()
        finally:
            operator.stop()
            kubectl("delete", "namespace", floor_ns, policy_ns, cr_floor_ns, "--wait=false", check=False)
    ratio = operator_s / floor_s
    print(
        f"ratio to the CR floor (the same {count} CachePolicies created with no operator): "
        f"{operator_s / cr_floor_s:.2f}"
    )
    print(
        f"of which kubectl applying the {count} CachePolicies: {applied_s:.2f} s "
        f"({applied_s / cr_floor_s:.2f}x the CR floor: the operator's own API calls, ~4 per new policy, "
        "compete with kubectl's for the "
        f"API server); the operator finished {operator_s - applied_s:.2f} s after the last one was created"
    )
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    print(
        f"operator: all {count} Ready with ConfigMaps {operator_s:.2f} s after the apply started "
        f"(ratio to floor {ratio:.2f}; target <= {TARGET_RATIO:g}: {verdict})"
    )
    print(
        f"operator RSS: peak {rss_peak:.0f} MiB, at the end {rss_now:.0f} MiB "
        f"(target peak <= {TARGET_RSS_MB:g} MB: {'PASS' if rss_peak <= TARGET_RSS_MB else 'MISS'}); log {log}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "policies": count,
                    "floor_s": floor_s,
                    "operator_s": operator_s,
                    "ratio": ratio,
                    "policies_apply_s": applied_s,
                    "cr_floor_s": cr_floor_s,
                    "rss_peak_mb": rss_peak,
                    "rss_end_mb": rss_now,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
