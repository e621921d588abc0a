"""Scale: many CachePolicies applied at once, against the API server's own floor; the operator's API
calls (from the kube-apiserver's audit log), its writes at rest, and its RSS.

    .venv/bin/python bench/scale.py                   # fresh devcluster, 300 policies, selector mode
    .venv/bin/python bench/scale.py --runs 3          # three runs in one cluster, each with its floor
    .venv/bin/python bench/scale.py --policies 1000 --modes selector,managed --at-rest 150
                                                      # the large run (not in CI: ~10 minutes)
    .venv/bin/python bench/scale.py --kubeconfig K    # an existing cluster (no other operator running!)
    .venv/bin/python bench/scale.py --profile DIR     # + CPU profiles of the apply (bench/_profile.py)

1. Floor: the same client (one ``kubectl apply -f -`` of a List) creates N ConfigMaps directly; the
   time until kubectl returns (every object created) is what the API server needs for N writes. The CR
   floor: N CachePolicies the same way in a namespace no operator watches.
2. Per mode, a fresh operator (``cachewarden operator --namespace NS``, a subprocess of this script,
   started before and idle): one ``kubectl apply -f -`` of N CachePolicies, in selector mode (a
   selector matching no pod) or managed mode (``runtime.replicas: 0``: ConfigMap, Secret, Deployment
   and Service, no pod); the clock stops when all N are Ready and all N ConfigMaps the operator
   renders exist (polled every 0.5 s with list calls).
3. API calls: a fresh devcluster's kube-apiserver writes an audit log (Metadata level, the bench's
   namespaces only); the operator's calls (User-Agent kopf or the Python client) from the apply until
   5 s after all are Ready, per policy, by verb and resource; with ``--at-rest S``, its calls and writes
   over the next S seconds, with nothing changing and no call from the bench (target: no write).
4. The operator's peak RSS (VmHWM from /proc) over the whole run, and its RSS at the end.

Targets (issues 5, 16): operator time within 3x of the ConfigMap floor; peak RSS <= 200 MB; no write
at rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import config as kube_config
from kubernetes import dynamic
from kubernetes.client import ApiClient, Configuration

from bench import _audit
from bench._harness import process_cpu_s
from bench._operator_harness import (
    Kubectl,
    Operator,
    apiserver_pid,
    apply_crds,
    cluster,
    create_namespace,
    is_ready,
    policy_manifest,
    wait_until,
)
from bench._profile import APISERVER_ARGS, PhaseProfile
from cache_operator import render

TARGET_RATIO = 3.0
TARGET_RSS_MB = 200.0
MODES = ("selector", "managed")
OPERATOR_CLIENTS = ("kopf", "python-client")
# After the last policy is Ready, the operator's last writes (Events, a late status) land within this.
SETTLE_S = 5.0
SERVICE_CIDR = "10.0.0.0/20"
PROFILE_S = 8  # seconds of CPU profile from the apply on (--profile): the whole burst on a quiet machine


def as_list(items: list[dict[str, Any]]) -> str:
    """A v1 List of ``items`` as JSON (kubectl applies it in one invocation)."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def spec_for(mode: str, i: int) -> dict[str, Any]:
    """The spec of policy ``i``: selector mode matching no pod, or managed mode with zero replicas."""
    if mode == "managed":
        return {"preset": "production", "runtime": {"replicas": 0}}
    return {"preset": "production", "selector": {"matchLabels": {"bench": f"none-{i}"}}}


def run_floor(
    kubectl: Kubectl, count: int, floor_ns: str, cr_floor_ns: str, api_pid: int | None
) -> tuple[float, float, float, float]:
    """(ConfigMap floor, CR floor) in seconds and the API server's CPU seconds for each: one kubectl
    apply of ``count`` ConfigMaps, then of ``count`` CachePolicies in a namespace no operator watches."""
    configmaps = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"floor-{i}"},
            "data": {"config.json": "{}"},
        }
        for i in range(count)
    ]
    cpu = process_cpu_s(api_pid)
    started = time.perf_counter()
    kubectl("apply", "-n", floor_ns, "-f", "-", stdin=as_list(configmaps))
    floor_s = time.perf_counter() - started
    floor_cpu = process_cpu_s(api_pid) - cpu
    print(f"floor: {count} ConfigMaps created by one kubectl apply in {floor_s:.2f} s", flush=True)
    policies = [policy_manifest(f"p{i}", spec_for("selector", i)) for i in range(count)]
    cpu = process_cpu_s(api_pid)
    started = time.perf_counter()
    kubectl("apply", "-n", cr_floor_ns, "-f", "-", stdin=as_list(policies))
    cr_floor_s = time.perf_counter() - started
    cr_floor_cpu = process_cpu_s(api_pid) - cpu
    print(
        f"CR floor: {count} CachePolicies created by one kubectl apply in {cr_floor_s:.2f} s "
        "(no operator watching that namespace)",
        flush=True,
    )
    return floor_s, cr_floor_s, floor_cpu, cr_floor_cpu


class Lister:
    """List calls from this process (the official client, one pooled connection): polling with a
    kubectl process per call cost a few hundred milliseconds of CPU each on a 2-core machine and
    made the clock stop up to a poll late."""

    def __init__(self, kubeconfig: Path) -> None:
        configuration = Configuration()
        kube_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        self.api = ApiClient(configuration)
        self.api.user_agent = "cachewarden-bench/scale"  # not counted as the operator's calls
        self.client = dynamic.DynamicClient(self.api)

    def items(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        """The items of the list at ``path``."""
        answer = self.client.request("get", path, label_selector=label_selector, serializer=lambda _, d: d)
        return list(answer.get("items") or [])

    def close(self) -> None:
        """Release the connection."""
        self.api.close()


def run_mode(
    kubectl: Kubectl,
    kubeconfig: Path,
    mode: str,
    count: int,
    policy_ns: str,
    timeout: float,
    at_rest_s: float,
    settle_s: float,
    api_pid: int | None,
    profile_dir: Path | None = None,
    tag: str = "",
) -> dict[str, Any]:
    """One operator (watching ``policy_ns`` only) and ``count`` new policies in ``mode``: seconds until
    all are Ready with their ConfigMaps, RSS, and the wall-clock windows of creation and rest."""
    log = Path(tempfile.gettempdir()) / f"cachewarden-bench-scale-{os.getpid()}-{mode}.log"
    operator = Operator(kubeconfig, log, scope=("--namespace", policy_ns))
    try:
        time.sleep(3)  # let the operator start its watches before anything is timed
        policies = [policy_manifest(f"p{i}", spec_for(mode, i)) for i in range(count)]
        cpu_start = operator.cpu_s()
        api_cpu_start = process_cpu_s(api_pid)
        wall_start = time.time()
        started = time.perf_counter()
        profile = None
        if profile_dir is not None and operator.process is not None:
            profile = PhaseProfile(
                profile_dir, tag, kubectl.path, kubeconfig, operator.process.pid, PROFILE_S
            )
        kubectl("apply", "-n", policy_ns, "-f", "-", stdin=as_list(policies))
        applied_s = time.perf_counter() - started
        print(f"{mode}: {count} CachePolicies applied by one kubectl apply in {applied_s:.2f} s", flush=True)
        lister = Lister(kubeconfig)

        def all_done() -> bool:
            operator.rss_mb()
            items = lister.items(f"/apis/cachewarden.io/v1alpha1/namespaces/{policy_ns}/cachepolicies")
            if sum(1 for p in items if is_ready(p)) < count:
                return False
            maps = lister.items(
                f"/api/v1/namespaces/{policy_ns}/configmaps",
                f"{render.LABEL_MANAGED_BY}={render.MANAGED_BY}",
            )
            return len(maps) == count

        try:
            wait_until(all_done, timeout, f"{count} policies Ready with ConfigMaps", interval=0.25)
        finally:
            lister.close()
        operator_s = time.perf_counter() - started
        wall_ready = time.time()
        cpu_ready = operator.cpu_s() - cpu_start
        api_cpu_ready = process_cpu_s(api_pid) - api_cpu_start
        if profile is not None:
            print("\n".join(profile.wait()), flush=True)
        # No API call from the bench from here on: the operator alone, for the rest window.
        time.sleep(settle_s)
        rest_start = time.time()
        deadline = time.monotonic() + at_rest_s
        while time.monotonic() < deadline:
            time.sleep(min(5.0, max(deadline - time.monotonic(), 0.0)))
            operator.rss_mb()
        rest_end = time.time()
        cpu_rest = operator.cpu_s() - cpu_start - cpu_ready
        rss_now, rss_peak = operator.rss_mb()
    finally:
        operator.stop()
    return {
        "mode": mode,
        "policies": count,
        "namespace": policy_ns,
        "operator_s": operator_s,
        "policies_apply_s": applied_s,
        "rss_peak_mb": rss_peak,
        "rss_end_mb": rss_now,
        "cpu_until_ready_s": cpu_ready,
        "cpu_rest_s": cpu_rest,
        "apiserver_cpu_until_ready_s": api_cpu_ready,
        "log": str(log),
        "window_start": wall_start,
        "window_ready": wall_ready,
        "rest_start": rest_start,
        "rest_end": rest_end,
    }


def report_calls(result: dict[str, Any], audit_log: Path | None) -> None:
    """Print (and add to ``result``) the operator's API calls per new policy and its writes at rest,
    from the API server's audit log."""
    if audit_log is None:
        print("  API calls: not counted (no audit log on a cluster given with --kubeconfig)")
        return
    calls = _audit.read_calls(audit_log)
    count, ns = result["policies"], result["namespace"]
    creating = _audit.select(calls, ns, result["window_start"], result["rest_start"])
    operator = [c for c in creating if c.client in OPERATOR_CLIENTS]
    writes = [c for c in operator if c.verb in _audit.WRITE_VERBS]
    result["operator_calls_per_policy"] = len(operator) / count
    result["operator_writes_per_policy"] = len(writes) / count
    result["calls_by_verb"] = {
        " ".join(k): v for k, v in _audit.breakdown(c for c in creating if c.client != "kubectl").items()
    }
    print(
        f"  API calls in {ns} from the apply until {result['rest_start'] - result['window_start']:.1f} s "
        f"later (audit log): operator {len(operator)} = {len(operator) / count:.2f}/policy, of which "
        f"writes {len(writes) / count:.2f}/policy; by client, verb, resource:"
    )
    print("\n".join(_audit.format_breakdown(creating, count)))
    status_writes = [c.at for c in operator if c.verb == "patch" and c.resource == "cachepolicies/status"]
    if status_writes:
        # The API server's own clock: free of the bench's polling delay (a list of N objects takes a
        # while on a busy 2-core machine, so the polled figure can be up to one poll late).
        last = max(status_writes) - result["window_start"]
        result["last_status_write_s"] = last
        print(
            f"  the operator's last status write {last:.2f} s after the apply started (audit log): "
            f"{last / result['floor_s']:.2f}x the ConfigMap floor"
        )
    if result["rest_end"] - result["rest_start"] >= 1.0:
        rest = _audit.select(calls, ns, result["rest_start"], result["rest_end"])
        rest_ops = [c for c in rest if c.client in OPERATOR_CLIENTS]
        rest_writes = [c for c in rest_ops if c.verb in _audit.WRITE_VERBS]
        minutes = (result["rest_end"] - result["rest_start"]) / 60
        result["rest_minutes"] = minutes
        result["rest_writes_per_min"] = len(rest_writes) / minutes
        result["rest_calls_per_min"] = len(rest_ops) / minutes
        verdict = "PASS" if not rest_writes else "MISS"
        print(
            f"  at rest ({minutes:.1f} min, no change, no bench call): operator writes "
            f"{len(rest_writes) / minutes:.1f}/min (target 0: {verdict}), all operator calls "
            f"{len(rest_ops) / minutes:.1f}/min"
        )
        if rest:
            print("\n".join(_audit.format_breakdown(rest, count)))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting a devcluster")
    parser.add_argument("--policies", type=int, default=300, help="number of policies (default 300)")
    parser.add_argument(
        "--modes",
        default="selector",
        help="comma-separated: selector (matching no pod), managed (runtime.replicas 0); each mode gets "
        "its own namespace and a fresh operator (default selector)",
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat floor + modes this many times")
    parser.add_argument(
        "--at-rest",
        type=float,
        default=0.0,
        help="after all are Ready, count the operator's API writes for this many seconds (e.g. 150)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="write CPU profiles of each apply here: the API server's (pprof; needs the bench's own "
        "devcluster) and the operator's (py-spy, when installed)",
    )
    args = parser.parse_args(argv)
    if args.profile is not None and args.kubeconfig:
        parser.error(
            "--profile: needs the bench's own devcluster (the API server's profiling is off "
            "by default); accepted: --profile without --kubeconfig"
        )
    if not 1 <= args.policies <= 5000:
        parser.error(f"--policies: {args.policies} is out of range; accepted: 1..5000")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: {args.modes!r}; accepted: a comma-separated list of {', '.join(MODES)}")
    if not 1 <= args.runs <= 10:
        parser.error(f"--runs: {args.runs}; accepted: 1..10")
    if not 0 <= args.at_rest <= 1800:
        parser.error(f"--at-rest: {args.at_rest}; accepted: 0..1800 seconds")
    count = args.policies
    suffix = uuid.uuid4().hex[:5]
    namespaces = {
        run: {
            "floor": f"bench-floor-{suffix}-{run}",
            "crfloor": f"bench-crfloor-{suffix}-{run}",
            **{mode: f"bench-scale-{mode}-{suffix}-{run}" for mode in modes},
        }
        for run in range(args.runs)
    }
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        audit_log: Path | None = None
        extra: dict[str, list[str]] | None = None
        if not args.kubeconfig:
            audit_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cachewarden-audit-")))
            every = [ns for run in namespaces.values() for ns in run.values()]
            extra, audit_log = _audit.apiserver_args(audit_dir, every)
            if args.profile is not None:
                extra["kube-apiserver"] += APISERVER_ARGS
            if "managed" in modes:
                # One Service per managed policy: devcluster's /24 holds 254 (same first address).
                wide = f"--service-cluster-ip-range={SERVICE_CIDR}"
                extra["kube-apiserver"].append(wide)
                extra["kube-controller-manager"] = [wide]
        kubeconfig, bin_dir = stack.enter_context(cluster(args.kubeconfig, extra))
        kubectl = Kubectl(kubeconfig, bin_dir)
        api_pid = None if args.kubeconfig else apiserver_pid(kubeconfig)
        apply_crds(kubectl)
        for run, names in namespaces.items():
            print(f"# run {run + 1}/{args.runs}, load average {os.getloadavg()[0]:.2f}", flush=True)
            for ns in names.values():
                create_namespace(kubectl, ns)
            try:
                floor_s, cr_floor_s, floor_cpu, cr_floor_cpu = run_floor(
                    kubectl, count, names["floor"], names["crfloor"], api_pid
                )
                for mode in modes:
                    result = run_mode(
                        kubectl,
                        kubeconfig,
                        mode,
                        count,
                        names[mode],
                        args.timeout,
                        args.at_rest,
                        SETTLE_S,
                        api_pid,
                        args.profile,
                        f"run{run + 1}-{mode}",
                    )
                    result.update(
                        run=run + 1,
                        floor_s=floor_s,
                        cr_floor_s=cr_floor_s,
                        apiserver_cpu_floor_s=floor_cpu,
                        apiserver_cpu_cr_floor_s=cr_floor_cpu,
                    )
                    result["ratio"] = result["operator_s"] / floor_s
                    print_result(result)
                    report_calls(result, audit_log)
                    results.append(result)
            finally:
                # Waited for between runs: the namespace controller deleting the last run's objects
                # would otherwise load the API server during the next run's figures.
                last = run == args.runs - 1
                wait = "--wait=false" if last else "--wait=true"
                print("# deleting this run's namespaces", flush=True)
                kubectl("delete", "namespace", *names.values(), wait, "--timeout=300s", check=False)
        print(f"# load average at the end {os.getloadavg()[0]:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def print_result(result: dict[str, Any]) -> None:
    """The time and RSS figures of one mode against the floors of the same run."""
    count, operator_s, applied_s = result["policies"], result["operator_s"], result["policies_apply_s"]
    verdict = "PASS" if result["ratio"] <= TARGET_RATIO else "MISS"
    print(
        f"{result['mode']}: all {count} Ready with ConfigMaps {operator_s:.2f} s after the apply started "
        f"(ratio to the ConfigMap floor {result['ratio']:.2f}; target <= {TARGET_RATIO:g}: {verdict}; "
        f"to the CR floor {operator_s / result['cr_floor_s']:.2f}); kubectl's apply took {applied_s:.2f} s "
        f"({applied_s / result['cr_floor_s']:.2f}x the CR floor), the operator finished "
        f"{operator_s - applied_s:.2f} s after the last policy was created"
    )
    rss = result["rss_peak_mb"]
    print(
        f"  operator RSS: peak {rss:.0f} MiB, at the end {result['rss_end_mb']:.0f} MiB "
        f"(target peak <= {TARGET_RSS_MB:g} MB: {'PASS' if rss <= TARGET_RSS_MB else 'MISS'}); "
        f"log {result['log']}",
        flush=True,
    )
    print(
        f"  operator CPU: {result['cpu_until_ready_s']:.2f} s from the apply until all Ready, "
        f"{result['cpu_rest_s']:.2f} s after (settle + rest window)",
        flush=True,
    )
    if result["apiserver_cpu_floor_s"]:
        print(
            f"  kube-apiserver CPU: {result['apiserver_cpu_until_ready_s']:.2f} s from the apply until all "
            f"Ready, {result['apiserver_cpu_floor_s']:.2f} s for the ConfigMap floor (ratio "
            f"{result['apiserver_cpu_until_ready_s'] / result['apiserver_cpu_floor_s']:.2f}: the work, "
            "less sensitive to other load on the machine than the wall-clock ratio), "
            f"{result['apiserver_cpu_cr_floor_s']:.2f} s for the CR floor",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
