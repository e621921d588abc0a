"""Soak: 3 runtime pods of one CachePolicy under steady traffic while a schedule of faults runs.

    .venv/bin/python bench/soak.py                      # 30 minutes of load (plus ~1 min setup)
    .venv/bin/python bench/soak.py --minutes 4 --seed 7 # shorter
    .venv/bin/python bench/soak.py --json bench/results/soak.json

Everything runs on its own devcluster (a temporary directory): the control plane, the process
kubelet running the runtime pods, a redis-server started here (no persistence), and ``cachewarden
operator`` as a subprocess. The load generator (``bench/_soak_load.py``) is a client of the pods'
data API with its own ledger (``bench/_soak_model.py``), so every read is judged. The policy opens
the pods' Redis-protocol port (``spec.runtime.respPort``), and ``--resp-share`` (default 0.3) of the
reads, mgets, writes and deletes go through it (GET, MGET, SET, DEL with redis-py), so the two front
ends read each other's writes under every fault.

Faults, in seeded rounds of every kind (``bench/_soak_model.build_schedule``):

==================  =================================================================================
redis-restart       redis-server SIGTERMed, down ``--redis-down`` seconds, started again (empty)
redis-blackhole     redis-server SIGSTOPped for ``--blackhole`` seconds (connections hang), SIGCONT
pod-delete          one runtime pod deleted through the API (graceful); its Deployment replaces it
operator-kill       the operator SIGKILLed, started again 2 s later
etcd-restart        etcd stopped (SIGTERM) and started again on the same data and ports
apiserver-restart   kube-apiserver stopped and started again on the same port
preset-change       a new manifest with the other preset (production <-> performance), kubectl apply
==================  =================================================================================

Printed (and written as JSON to ``bench/results/``): requests served, errors returned to clients,
wrong answers, p50/p99 latency per phase and per fault kind, RSS of the operator, the runtime pods and
Redis at start and end, and per fault the time until the operator converged again (policy Ready and
RedisConnected at the current generation, 3 pods configured, a probe after the fault, and every pod
reporting the hash computed here). A figure that misses its target is printed as MISS; the exit
code is non-zero only when the harness itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._operator_harness import Kubectl, apply_crds, policy_manifest, wait_until  # noqa: E402
from bench._soak_cluster import (  # noqa: E402
    OperatorSlot,
    PolicyWatch,
    RedisServer,
    container_pid,
    convergence_problem,
    pods_redis_ok,
    read_rss_mib,
    restart_component,
)
from bench._soak_load import LoadGenerator, LoadSettings, PodDirectory  # noqa: E402
from bench._soak_model import (  # noqa: E402
    FAULT_KINDS,
    REDIS_FAULTS,
    Ledger,
    PhaseBook,
    ScheduledFault,
    build_schedule,
    format_table,
    rss_rows,
)
from devcluster import binaries  # noqa: E402
from devcluster.cluster import Cluster  # noqa: E402
from devcluster.controlplane import ApiError  # noqa: E402
from devcluster.podsecurity import namespace_manifest  # noqa: E402

NAMESPACE = "soak"
POLICY = "soak"
REPLICAS = 3
RESP_PORT = 6380  # spec.runtime.respPort of the soak's policy (when --resp-share is above 0)
PRESETS = ("production", "performance")  # same key layout: a pure tuning change, as GitOps makes
# Targets of issue 8 (and generous bounds for what it leaves open).
RSS_GROWTH_TARGET = 1.5  # end / start, per process that lived the whole run


@dataclass
class SoakOptions:
    """Knobs of one soak run (the CLI flags)."""

    minutes: float = 30.0
    seed: int = 1
    rate: float = 100.0
    keys: int = 200
    coherence_bound_s: float = 1.0
    slot_s: float = 25.0
    warmup_s: float = 20.0
    cooldown_s: float = 20.0
    blackhole_s: float = 8.0
    redis_down_s: float = 1.0
    redis_settle_s: float = 3.0
    resp_share: float = 0.3  # share of the data operations sent over the Redis protocol (0: HTTP only)
    converge_timeout_s: float = 180.0
    rss_every_s: float = 10.0
    kinds: tuple[str, ...] = FAULT_KINDS
    work_dir: Path | None = None
    json_path: Path | None = None


@dataclass
class FaultRecord:
    """What one fault did and how long recovery took."""

    index: int
    kind: str
    scheduled_s: float
    injected_s: float = 0.0
    inject_s: float = 0.0  # injection until the fault's own recovery action returned
    redis_ok_s: float | None = None  # Redis faults: recovered until every pod's breaker closed
    converge_s: float | None = None  # recovered until the operator converged
    converged: bool = False
    detail: str = ""
    last_problem: str | None = None


@dataclass
class RssTimeline:
    """RSS samples per process (pid) over the run."""

    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def sample(self, name: str, pid: int | None, at: float) -> None:
        """One sample of ``pid`` under ``name`` (skipped when the process is gone)."""
        if pid is None:
            return
        rss = read_rss_mib(pid)
        if rss is not None:
            self.samples.setdefault(f"{name} (pid {pid})", []).append((at, rss))

    def rows(self) -> list[dict[str, Any]]:
        """Start/end/peak per process (see :func:`bench._soak_model.rss_rows`)."""
        return rss_rows(self.samples)


def _say(text: str) -> None:
    print(text, flush=True)


class Soak:
    """One run: set up, drive load and faults, report."""

    def __init__(self, options: SoakOptions, say: Callable[[str], None] = _say) -> None:
        self.o = options
        self.say = say
        self.rng = random.Random(options.seed)
        self.load_s = options.minutes * 60
        self.schedule = build_schedule(
            self.load_s,
            options.seed,
            warmup_s=options.warmup_s,
            cooldown_s=options.cooldown_s,
            slot_s=options.slot_s,
            kinds=options.kinds,
        )
        self.ledger = Ledger(options.coherence_bound_s)
        self.faults: list[FaultRecord] = []
        self.rss = RssTimeline()
        self.spec: dict[str, Any] = {}
        self.preset_index = 0

    # --- setup -------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run the soak end to end; returns the result document (also written as JSON)."""
        bin_dir = binaries.bin_dir()
        problems = binaries.check_binaries(bin_dir)
        if problems:
            raise SystemExit(binaries.describe_problems(problems))
        with contextlib.ExitStack() as stack:
            work = self.o.work_dir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="cw-soak-"))
            )
            began = time.monotonic()
            self.cluster = Cluster(work / "cluster", bin_dir=bin_dir, kubelet=True)
            self.cluster.start()
            stack.callback(self.cluster.stop)
            self.say(f"# devcluster up in {time.monotonic() - began:.1f}s ({work})")
            self.kubectl = Kubectl(self.cluster.kubeconfig, bin_dir)
            apply_crds(self.kubectl)
            api = self.cluster.api
            api.request(
                "POST",
                "/api/v1/namespaces",
                namespace_manifest(NAMESPACE),
            )
            self._wait(
                lambda: api.get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"),
                90,
                "the soak namespace's default ServiceAccount",
            )
            self.redis = RedisServer(work / "redis.log")
            self.redis.start()
            stack.callback(self.redis.stop)
            self.operator = OperatorSlot(self.cluster.kubeconfig, work, NAMESPACE)
            stack.callback(self.operator.stop)
            self.watch = PolicyWatch(self.cluster, NAMESPACE, POLICY)
            self.spec = {
                "preset": PRESETS[0],
                "redis": {"url": self.redis.url},
                "runtime": {"replicas": REPLICAS, **({"respPort": RESP_PORT} if self.o.resp_share else {})},
                "health": {"probeIntervalSeconds": 5},
            }
            self._apply_policy()
            self._wait(lambda: self.watch.tokens(), 120, "the policy's token Secret")
            self.admin_token, self.read_token = self.watch.tokens()
            self._wait(
                lambda: convergence_problem(self.watch, self.spec, REPLICAS, lambda: 1, self.admin_token, 1)
                is None,
                240,
                "the policy Ready with 3 pods on the expected hash",
            )
            self.say(
                f"# policy Ready with {REPLICAS} pods {time.monotonic() - began:.1f}s after start; "
                f"load {self.load_s:.0f}s, {len(self.schedule)} faults, seed {self.o.seed}"
            )
            result = asyncio.run(self._drive())
            self._write(result)
            return result

    def _apply_policy(self) -> None:
        manifest = policy_manifest(POLICY, self.spec)
        self.kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(manifest))

    def _wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        # The harness's poll loop; a RuntimeError instead of its SystemExit, so the CI soak test and the
        # run's own clean-up see an ordinary failure.
        try:
            return wait_until(predicate, timeout, what, interval=0.5)
        except SystemExit as exc:
            raise RuntimeError(str(exc)) from None

    # --- the run -----------------------------------------------------------------------------------

    async def _drive(self) -> dict[str, Any]:
        stop = asyncio.Event()
        directory = PodDirectory(self.watch.pods)
        await asyncio.to_thread(directory.refresh_once)
        start = time.monotonic()
        self.book = PhaseBook(start)
        self.ledger.origin = start  # a wrong answer's history in the run's seconds, like at_s
        settings = LoadSettings(
            rate=self.o.rate,
            keys=self.o.keys,
            resp_port=RESP_PORT if self.o.resp_share else None,
            resp_share=self.o.resp_share,
        )
        self.generator = LoadGenerator(
            settings, self.ledger, self.book, directory, self.read_token, self.admin_token, self.o.seed
        )
        await asyncio.to_thread(self._sample_rss, 0.0)
        tasks = [
            asyncio.create_task(directory.refresh_forever(stop)),
            asyncio.create_task(self.generator.run(stop)),
            asyncio.create_task(self._rss_loop(stop, start)),
        ]
        try:
            await self._run_faults(start)
            await self._sleep_until(start + self.load_s)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        end = time.monotonic()
        self.book.finish(end)
        await asyncio.to_thread(self._sample_rss, end - start)
        return self._result(end - start, directory)

    async def _sleep_until(self, at: float) -> None:
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _rss_loop(self, stop: asyncio.Event, start: float) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.o.rss_every_s)
            if not stop.is_set():
                await asyncio.to_thread(self._sample_rss, time.monotonic() - start)

    def _sample_rss(self, at: float) -> None:
        self.rss.sample("operator", self.operator.pid, at)
        if self.redis.process is not None:
            self.rss.sample("redis-server", self.redis.process.pid, at)
        with contextlib.suppress(ApiError):
            for pod in self.watch.pods():
                if pod["status"].get("phase") == "Running":
                    self.rss.sample(f"runtime {pod['metadata']['name']}", container_pid(pod), at)

    async def _run_faults(self, start: float) -> None:
        """Every scheduled fault, in order, each once the previous one converged (or timed out): a
        fault that overruns its slot delays the next ones instead of being skipped, so every kind
        runs; the load then lasts until the cool-down after the last fault."""
        for fault in self.schedule:
            await self._sleep_until(start + fault.at_s)
            record = await self._run_fault(fault, start)
            self.faults.append(record)
            redis_ok = "-" if record.redis_ok_s is None else f"{record.redis_ok_s:.1f}s"
            converged = "-" if record.converge_s is None else f"{record.converge_s:.1f}s"
            self.say(
                f"  fault {record.index:>2} {record.kind:<17} at {record.injected_s:7.1f}s  "
                f"inject {record.inject_s:5.1f}s  redis ok {redis_ok:>6}  converged {converged:>6}  "
                f"{record.detail}" + ("" if record.converged else f"  NOT CONVERGED: {record.last_problem}")
            )
        self.load_s = max(self.load_s, time.monotonic() - start + self.o.cooldown_s)

    async def _run_fault(self, fault: ScheduledFault, start: float) -> FaultRecord:
        record = FaultRecord(fault.index, fault.kind, fault.at_s)
        injected = time.monotonic()
        record.injected_s = round(injected - start, 2)
        self.book.begin(f"{fault.kind}#{fault.index}", injected)
        if fault.kind in REDIS_FAULTS:
            self.ledger.open_window(injected)
        record.detail = await asyncio.to_thread(self._inject, fault.kind)
        recovered = time.monotonic()
        passes_since = await asyncio.to_thread(self.operator.passes_counter, POLICY)
        record.inject_s = round(recovered - injected, 2)
        if fault.kind in REDIS_FAULTS:
            problem = await asyncio.to_thread(
                self._poll, lambda: pods_redis_ok(self.watch, self.read_token), self.o.converge_timeout_s
            )
            ok_at = time.monotonic()
            record.redis_ok_s = round(ok_at - recovered, 2)
            # Until every pod's breaker closed and its coherence subscription came back (its reconnect
            # backoff is at most 2 s), writes may still reach one pod only.
            self.ledger.close_window(ok_at + self.o.redis_settle_s)
            if problem:
                record.last_problem = f"redis: {problem}"
        problem = await asyncio.to_thread(
            self._poll,
            lambda: convergence_problem(self.watch, self.spec, REPLICAS, passes_since, self.admin_token),
            self.o.converge_timeout_s,
        )
        if problem is None:
            record.converged = True
            record.converge_s = round(time.monotonic() - recovered, 2)
        else:
            record.last_problem = problem
        return record

    def _poll(self, problem_of: Callable[[], str | None], timeout: float) -> str | None:
        """Poll until ``problem_of()`` is None (returns None) or ``timeout`` (returns the last problem)."""
        deadline = time.monotonic() + timeout
        problem: str | None = "never checked"
        while time.monotonic() < deadline:
            try:
                problem = problem_of()
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                return None
            time.sleep(0.25)
        return problem

    def _inject(self, kind: str) -> str:
        if kind == "redis-restart":
            self.redis.stop()
            time.sleep(self.o.redis_down_s)
            self.redis.start()
            return (
                f"down {self.o.redis_down_s:g}s, pid {self.redis.process.pid if self.redis.process else '?'}"
            )
        if kind == "redis-blackhole":
            self.redis.pause()
            time.sleep(self.o.blackhole_s)
            self.redis.resume()
            return f"SIGSTOP {self.o.blackhole_s:g}s"
        if kind == "pod-delete":
            pods = sorted(
                p["metadata"]["name"] for p in self.watch.pods() if not p["metadata"].get("deletionTimestamp")
            )
            victim = self.rng.choice(pods)
            self.cluster.api.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{victim}")
            return f"deleted {victim}"
        if kind == "operator-kill":
            return self.operator.kill_and_restart(2.0)
        if kind == "etcd-restart":
            return restart_component(self.cluster, "etcd")
        if kind == "apiserver-restart":
            return restart_component(self.cluster, "kube-apiserver")
        if kind == "preset-change":
            self.preset_index += 1
            self.spec = {**self.spec, "preset": PRESETS[self.preset_index % len(PRESETS)]}
            self._apply_policy()
            return f"kubectl apply: preset {self.spec['preset']}"
        raise ValueError(f"fault kind {kind!r} is not known")

    # --- report ------------------------------------------------------------------------------------

    def _result(self, seconds: float, directory: PodDirectory) -> dict[str, Any]:
        counters = self.generator.counters
        ledger = self.ledger.summary()
        served = sum(len(p.latencies) for p in self.book.phases)
        converged = [f.converge_s for f in self.faults if f.converge_s is not None]
        rss_rows = self.rss.rows()
        long_lived = [r for r in rss_rows if r["lived_s"] >= 0.9 * seconds and r["start_mib"] > 0]
        worst_ratio = max((r["ratio"] for r in long_lived if r["ratio"] is not None), default=None)
        for example in ledger["wrong_examples"]:
            example["phase"] = self.book.phase_at(example["started"]).name
            example["at_s"] = round(example.pop("started") - self.book.phases[0].start, 2)
        return {
            "bench": "soak",
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.o).items()},
            "environment": {
                "cpus": os.cpu_count(),
                "loadavg_end": os.getloadavg(),
                "python": platform.python_version(),
                "commit": _git_commit(),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "load_seconds": round(seconds, 1),
            "requests": {
                "started": counters.requests,
                "served": served,
                "errors": counters.errors,
                "retried_ok": counters.retried,
                "failed_attempts": counters.attempts_failed,
                "by_op": counters.by_op,
                "achieved_rate_per_s": round(counters.requests / seconds, 1) if seconds else None,
                "error_examples": counters.error_examples,
                "pod_list_refresh_failures": directory.refresh_failures,
            },
            "ledger": ledger,
            "phases": self.book.table(),
            "by_kind": self.book.by_kind(),
            "faults": [asdict(f) for f in self.faults],
            "convergence": {
                "faults": len(self.faults),
                "converged": sum(1 for f in self.faults if f.converged),
                "max_s": max(converged, default=None),
            },
            "rss": rss_rows,
            "rss_worst_ratio_long_lived": worst_ratio,
            "verdicts": {
                "errors_returned_to_clients (target 0)": "PASS" if counters.errors == 0 else "MISS",
                "wrong_answers (target 0)": "PASS" if ledger["wrong_answers"] == 0 else "MISS",
                "every fault converged": "PASS" if all(f.converged for f in self.faults) else "MISS",
                f"RSS end/start <= {RSS_GROWTH_TARGET} (processes that lived the whole run)": "PASS"
                if worst_ratio is None or worst_ratio <= RSS_GROWTH_TARGET
                else "MISS",
            },
        }

    def _write(self, result: dict[str, Any]) -> None:
        path = (
            self.o.json_path
            or REPO / "bench" / "results" / f"soak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
        result["json_path"] = str(path)
        self.say(render_report(result))
        self.say(f"# JSON: {path}")


def render_report(result: dict[str, Any]) -> str:
    """The printed report of a soak result."""
    req, ledger, env = result["requests"], result["ledger"], result["environment"]
    lines = [
        "",
        f"== soak: {result['load_seconds']:.0f}s of load, seed {result['options']['seed']}, "
        f"{env['cpus']} CPUs, load average at the end {env['loadavg_end'][0]:.1f}",
        f"requests started {req['started']}, served {req['served']} ({req['achieved_rate_per_s']}/s), "
        f"errors returned to clients {req['errors']}, answered after a retry {req['retried_ok']} "
        f"(failed attempts {req['failed_attempts']})",
        f"operations by kind: {req['by_op']}",
        f"reads judged: {ledger['reads_by_verdict']}",
        f"wrong answers {ledger['wrong_answers']} "
        f"(foreign/phantom/stale beyond {ledger['coherence_bound_s']}s); "
        f"degraded-stale reads (after writes acknowledged during a Redis fault) inside windows "
        f"{ledger['degraded_stale_inside_redis_windows']}, "
        f"after {ledger['degraded_stale_after_redis_windows']}; "
        f"longest superseded read within the bound {ledger['max_superseded_read_lag_s']}s",
        f"operations: coherent {ledger['coherent_ops']}, during Redis faults {ledger['degraded_ops']}, "
        f"unacknowledged {ledger['unacknowledged_ops']}",
        "",
        "latency per fault kind (requests accounted to the phase they started in):",
        format_table(
            result["by_kind"],
            [
                "phase",
                "seconds",
                "requests",
                "errors",
                "retried",
                "p50_ms",
                "p99_ms",
                "max_ms",
                "wrong",
                "degraded_stale",
            ],
        ),
        "",
        "faults:",
        format_table(
            result["faults"],
            ["index", "kind", "injected_s", "inject_s", "redis_ok_s", "converge_s", "detail"],
        ),
        "",
        "memory (RSS MiB):",
        format_table(result["rss"], ["process", "start_mib", "end_mib", "peak_mib", "ratio", "lived_s"]),
        "",
    ]
    lines += [f"{verdict:<75} {outcome}" for verdict, outcome in result["verdicts"].items()]
    if req["error_examples"]:
        lines += ["", "first errors:"] + [f"  {e}" for e in req["error_examples"][:10]]
    if ledger["wrong_examples"]:
        lines += ["", "first wrong answers:"] + [f"  {e}" for e in ledger["wrong_examples"]]
    return "\n".join(lines)


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def parse_args(argv: list[str] | None = None) -> SoakOptions:
    """CLI flags -> options (errors name the flag, the value and what is accepted)."""
    parser = argparse.ArgumentParser(prog="bench/soak.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="load time (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the schedule and the traffic")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="operations started per second (default 100)"
    )
    parser.add_argument("--keys", type=int, default=200, help="keys in the ledger (default 200)")
    parser.add_argument(
        "--coherence-bound",
        type=float,
        default=1.0,
        help="seconds after an acknowledgement every pod must reflect it (default 1)",
    )
    parser.add_argument("--slot", type=float, default=25.0, help="seconds between faults (default 25)")
    parser.add_argument("--blackhole", type=float, default=8.0, help="seconds Redis stays SIGSTOPped")
    parser.add_argument("--redis-down", type=float, default=1.0, help="seconds Redis stays down on restart")
    parser.add_argument(
        "--json", type=Path, default=None, help="result file (default bench/results/soak-<time>.json)"
    )
    parser.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help=f"comma-separated fault kinds to schedule (default all: {','.join(FAULT_KINDS)})",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep the cluster and logs here (new dir)"
    )
    parser.add_argument(
        "--resp-share",
        type=float,
        default=0.3,
        help="share of reads, mgets, writes and deletes sent over the pods' Redis protocol (default "
        "0.3; 0: HTTP only, and the policy opens no Redis-protocol port)",
    )
    args = parser.parse_args(argv)
    checks = [
        ("--minutes", args.minutes, 1, 24 * 60),
        ("--rate", args.rate, 1, 2000),
        ("--keys", args.keys, 10, 100_000),
        ("--coherence-bound", args.coherence_bound, 0, 60),
        ("--slot", args.slot, 10, 3600),
        ("--blackhole", args.blackhole, 0.5, 300),
        ("--redis-down", args.redis_down, 0, 300),
        ("--resp-share", args.resp_share, 0, 1),
    ]
    for flag, value, low, high in checks:
        if not low <= value <= high:
            parser.error(f"{flag} {value:g} is not accepted; accepted: {low:g}..{high:g}")
    return SoakOptions(
        minutes=args.minutes,
        seed=args.seed,
        rate=args.rate,
        keys=args.keys,
        coherence_bound_s=args.coherence_bound,
        slot_s=args.slot,
        blackhole_s=args.blackhole,
        redis_down_s=args.redis_down,
        json_path=args.json,
        kinds=tuple(kind.strip() for kind in args.faults.split(",") if kind.strip()),
        work_dir=args.work_dir,
        resp_share=args.resp_share,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the soak from the command line."""
    options = parse_args(argv)
    try:
        Soak(options).run()
    except ValueError as exc:  # a schedule that does not fit names what is needed
        print(f"bench/soak.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
