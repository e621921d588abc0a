"""The CacheIncident fault scenarios, shared by ``tests/e2e/test_incident_faults.py`` (asserts) and
``bench/incidents.py`` (times): fault injection, traffic and the incident timeline live here only.

Each :class:`Scenario` runs in its own namespace of a devcluster (a :class:`Lab`): a real redis-server
pod, a CachePolicy with 3 real runtime pods, and the real operator (started by the caller). It
injects one fault, drives bounded traffic through the pods' data API (``docs/runtime-api.md``) until
the operator opens the automatic incident, then ends the fault the way a person would (or lets the
operator's action do it) and drives traffic until the symptom clears and the incident is resolved.
:func:`run_scenario` returns a :class:`Timeline`: seconds from the fault to each milestone, as the
test client observed them (polled every ``POLL_S``), plus the incident as it ended.

Faults (all on loopback, all bounded):

============================ ================== ======================================================
scenario                     symptom            fault / repair
============================ ================== ======================================================
``redis-stopped``            RedisUnavailable   Redis scaled to 0 / back to 1 (behind a stable address)
``redis-slow``               SlowOperations     40 ms each way through ``devcluster.faultproxy`` / 0 ms
``redis-wrong-password``     RedisAuthFailure   the password Secret holds a wrong password / fixed
``redis-out-of-memory``      RedisOutOfMemory   maxmemory 1mb with noeviction, Redis filled / a person
                                                raises maxmemory, sets volatile-lru (never clear)
``short-ttl``                LowHitRate         ttl.default_s 2 s, re-requests after 3 s / the operator's
                                                TTL override (apply-override)
``whitespace-variants``      LowHitRate         questions re-typed with other whitespace, normalization
                                                off / the operator's normalization override
``l1-too-small``             L1Thrashing        l1.max_entries 50 under a working set of 150 / the
                                                operator's L1 size override
``uncompressed-memory``      HighMemory         64 KiB values, compression off / the operator's
                                                compression override, then compress-existing
``incompressible-memory``    HighMemory         64 KiB random values, compression off / none: the
                                                override cannot help (rolled back, escalated)
============================ ================== ======================================================

In the setting faults (``repair`` None) no person acts: the workload goes on unchanged and only the
operator's own time-boxed override (Auto mode, ``apply-override`` allowed) can clear the symptom.

The runtime judges workload symptoms (hit rate, L1, latency) on the shortest of 10/30/60 s that holds
``min_requests`` lookups, Redis errors over one minute (``cache_runtime.health.DETECTION_WINDOWS_S``,
``detection_window``), and whether Redis is down on the engine's state (breaker, its own checks, the
subscription). So a symptom clears when enough healthy traffic follows the fault (up to a minute of
it for the Redis error share), not when the fault ends: the "recover" traffic is sized for that, and
bounded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cache_operator import render
from cache_operator.incidents.redis_cluster import CAUSE_NAMES as CLUSTER_CAUSES
from devcluster.podsecurity import namespace_manifest
from tests.e2e.support import redis_manifest

REPO = Path(__file__).resolve().parents[2]
POLICY = "cache"
REPLICAS = 3
POLL_S = 0.5
PROBE_INTERVAL_S = 5
CONSECUTIVE_PROBES = 2
# The e2e scenarios probe faster than the CRD's defaults (every 15 s, 3 in a row) to keep the tests
# short; bench/incidents.py times detection at the defaults (``lab_for(..., probes=None)``).
E2E_PROBES: dict[str, int] = {
    "probeIntervalSeconds": PROBE_INTERVAL_S,
    "consecutiveProbes": CONSECUTIVE_PROBES,
}
# Upper bounds of every wait (never timing asserts: a loaded machine only makes the figures worse).
DETECT_TIMEOUT_S = 150.0
RESOLVE_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 180.0
REDIS_PASSWORD = "right-password-0123456789"
WRONG_PASSWORD = "wrong-password-9876543210"
PROXY_DELAY_MS = 40
INCIDENTS = "cacheincidents.cachewarden.io"


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = POLL_S) -> Any:
    """Poll until truthy (exceptions count as "not yet"); TimeoutError naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except Exception as exc:  # an object that does not exist yet, a pod restarting
            last = f"{type(exc).__name__}: {exc}"
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; last: {str(last)[:1500]}")
        time.sleep(interval)


class Lab:
    """One namespace of a cluster: kubectl, Redis, the policy's pods and traffic to them."""

    def __init__(
        self,
        kubeconfig: Path,
        bin_dir: Path,
        namespace: str,
        work_dir: Path,
        probes: dict[str, int] | None = E2E_PROBES,
    ) -> None:
        self.kubeconfig = kubeconfig
        # The policy's spec.health probe settings (None: the CRD's defaults).
        self.probes = probes
        self.bin_dir = bin_dir
        self.namespace = namespace
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self._env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "KUBECACHEDIR": str(work_dir / "kube-cache"),
        }
        self._clients: dict[str, httpx.Client] = {}
        self.proxy: ProxyProcess | None = None
        self._refused: socket.socket | None = None
        self.rng = random.Random(int(os.environ.get("CACHEWARDEN_FAULT_SEED", "6")))

    # --- kubectl ------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """kubectl in the lab's namespace; a failure raises with the command and stderr."""
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), "-n", self.namespace, *args],
            input=input,
            capture_output=True,
            text=True,
            env=self._env,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def json(self, *args: str) -> Any:
        """``kubectl ... -o json`` decoded."""
        return json.loads(self.kubectl(*args, "-o", "json"))

    def apply(self, manifest: str | dict[str, Any]) -> None:
        """``kubectl apply`` of YAML/JSON text or an object."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl("apply", "-f", "-", input=text)

    def create_namespace(self) -> None:
        """Create the namespace with the Pod Security labels of every test namespace
        (:func:`devcluster.podsecurity.namespace_manifest`) and wait for its default ServiceAccount
        (pods need it)."""
        subprocess.run(
            [str(self.bin_dir / "kubectl"), "create", "-f", "-"],
            input=json.dumps(namespace_manifest(self.namespace)),
            capture_output=True,
            text=True,
            env=self._env,
            timeout=60,
            check=True,
        )
        _wait(lambda: self.kubectl("get", "serviceaccount", "default", check=False), 60, "default SA")

    def delete_namespace(self) -> None:
        """Delete the lab's incidents and policy (while the operator runs), then the namespace."""
        self.kubectl("delete", INCIDENTS, "--all", "--timeout", "60s", check=False)
        self.kubectl("delete", "cachepolicies", "--all", "--timeout", "60s", check=False)
        subprocess.run(
            [str(self.bin_dir / "kubectl"), "delete", "namespace", self.namespace, "--wait=false"],
            capture_output=True,
            text=True,
            env=self._env,
            timeout=60,
            check=False,
        )

    def refused_port(self) -> int:
        """A 127.0.0.1 port held (bound, never listening) while the lab lives: connecting is refused."""
        if self._refused is None:
            self._refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._refused.bind(("127.0.0.1", 0))
        return int(self._refused.getsockname()[1])

    def close(self) -> None:
        """Stop the proxy this lab started, release the held port and close HTTP clients."""
        if self._refused is not None:
            self._refused.close()
            self._refused = None
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # --- Redis and the policy -------------------------------------------------------------------

    def redis_pod_ip(self) -> str:
        """The Ready Redis pod's IP."""

        def ready_ip() -> str | None:
            for pod in self.json("get", "pods", "-l", "app=redis")["items"]:
                conditions = pod.get("status", {}).get("conditions") or []
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    return str(pod["status"]["podIP"])
            return None

        return str(_wait(ready_ip, READY_TIMEOUT_S, "a Ready Redis pod"))

    def scale_redis(self, replicas: int) -> None:
        """Scale the Redis Deployment (0 stops Redis: its pod is deleted)."""
        self.kubectl("scale", "deployment", "redis", f"--replicas={replicas}")
        if replicas == 0:
            _wait(lambda: not self.json("get", "pods", "-l", "app=redis")["items"], 60, "Redis pod gone")
        else:
            self.redis_pod_ip()

    def set_password_secret(self, password: str) -> None:
        """The Secret the policy's ``spec.redis.passwordSecretRef`` names."""
        data = base64.b64encode(password.encode()).decode()
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "redis-auth"},
                "type": "Opaque",
                "data": {"password": data},
            }
        )

    def policy(self) -> dict[str, Any]:
        """The CachePolicy as stored."""
        policy: dict[str, Any] = self.json("get", "cachepolicy", POLICY)
        return policy

    def apply_policy(self, spec: dict[str, Any]) -> None:
        """Apply the CachePolicy with ``spec``."""
        self.apply(
            {
                "apiVersion": "cachewarden.io/v1alpha1",
                "kind": "CachePolicy",
                "metadata": {"name": POLICY},
                "spec": spec,
            }
        )

    def patch_policy(self, patch: dict[str, Any]) -> None:
        """A merge patch of the policy's spec (the person's GitOps change)."""
        self.kubectl("patch", "cachepolicy", POLICY, "--type", "merge", "-p", json.dumps({"spec": patch}))

    def wait_ready(self, count: int = REPLICAS) -> list[dict[str, Any]]:
        """Until the policy is Ready with ``count`` pods, each answering its health endpoint."""

        def ready() -> list[dict[str, Any]] | None:
            status = self.policy().get("status") or {}
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
            pods = self.pods()
            if not ok or len(pods) != count:
                return None
            for pod in pods:
                self.health(pod)
            return pods

        pods: list[dict[str, Any]] = _wait(ready, READY_TIMEOUT_S, f"policy {POLICY} Ready with {count} pods")
        return pods

    # --- pods -------------------------------------------------------------------------------------

    def pods(self) -> list[dict[str, Any]]:
        """The policy's Running runtime pods (not being deleted), by name."""
        items = self.json("get", "pods", "-l", render.pod_selector_string(POLICY))["items"]
        pods = [
            p
            for p in items
            if not p["metadata"].get("deletionTimestamp")
            and p["status"].get("phase") == "Running"
            and p["status"].get("podIP")
        ]
        return sorted(pods, key=lambda p: p["metadata"]["name"])

    def token(self) -> str:
        """The admin token from the Secret the operator rendered."""
        secret = self.json("get", "secret", render.token_secret_name(POLICY))
        return base64.b64decode(secret["data"][render.ADMIN_TOKEN_KEY]).decode()

    def client(self, pod: dict[str, Any]) -> httpx.Client:
        """A keep-alive client for one pod (by IP)."""
        ip = pod["status"]["podIP"]
        if ip not in self._clients:
            self._clients[ip] = httpx.Client(
                base_url=f"http://{ip}:8080", headers={"Authorization": f"Bearer {self.token()}"}, timeout=30
            )
        return self._clients[ip]

    def health(self, pod: dict[str, Any]) -> dict[str, Any]:
        """The pod's own ``GET /internal/cache/health``."""
        response = self.client(pod).get("/internal/cache/health")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def pod_diagnoses(self) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
        """Pod -> {"symptoms": [...], "causes": [...]} from each pod's own health report now, and the
        errors of pods that did not answer (starting or going away during a rollout)."""
        found: dict[str, dict[str, list[str]]] = {}
        errors: list[str] = []
        for pod in self.pods():
            name = pod["metadata"]["name"]
            try:
                diagnosis = self.health(pod).get("diagnosis") or {}
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:150]}")
                continue
            found[name] = {
                "symptoms": [s["name"] for s in diagnosis.get("symptoms") or []],
                "causes": [c["name"] for c in diagnosis.get("causes") or []],
            }
        return found, errors

    # --- traffic (bounded) --------------------------------------------------------------------------

    def each_pod(
        self, work: Callable[[dict[str, Any], int], Any], per_pod: int, workers: int = 6
    ) -> list[Any]:
        """``work(pod, index)`` for index 0..per_pod-1 on every pod, ``workers`` at a time; the list of
        exceptions raised (None for each call that succeeded): faults make requests fail."""
        pods = self.pods()
        jobs = [(pod, i) for i in range(per_pod) for pod in pods]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda job: _swallow(work, *job), jobs))

    def get_or_put(
        self, keys: list[str], value: Any, ttl_s: int | None = None, workers: int = 6
    ) -> dict[str, int]:
        """Per pod and key: GET it, PUT it on a miss (``ttl_s`` None = the policy's default TTL).
        Every key is asked of every pod; returns hit/miss/error counts."""
        counts = {"hit": 0, "miss": 0, "error": 0}
        lock = threading.Lock()

        def one(pod: dict[str, Any], index: int) -> None:
            key = f"{pod['metadata']['name']}/{keys[index]}"
            client = self.client(pod)
            got = client.get(f"/data/v1/keys/{key}")
            outcome = "hit" if got.status_code == 200 else "miss"
            with lock:
                counts[outcome] += 1
            if outcome == "hit":
                return
            body: dict[str, Any] = {"value": value}
            if ttl_s is not None:
                body["ttl_s"] = ttl_s
            client.put(f"/data/v1/keys/{key}", json=body).raise_for_status()

        for failure in self.each_pod(one, len(keys), workers):
            if failure is not None:
                counts["error"] += 1
        return counts


def _swallow(work: Callable[..., Any], *args: Any) -> Exception | None:
    """Run ``work``; return the exception instead of raising it (faults make requests fail)."""
    try:
        work(*args)
    except Exception as exc:
        return exc
    return None


def compressible_text(rng: random.Random, size: int) -> str:
    """Text that lz4 shrinks several times (words from a small vocabulary), ``size`` characters."""
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9))) for _ in range(64)]
    parts: list[str] = []
    total = 0
    while total < size:
        word = rng.choice(words)
        parts.append(word)
        total += len(word) + 1
    return " ".join(parts)[:size]


class ProxyProcess:
    """``python -m devcluster.faultproxy`` as a subprocess of the test (its pid only is ever signalled)."""

    def __init__(self, upstream: str, log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devcluster.faultproxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                upstream,
                "--control",
                "127.0.0.1:0",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        banner = json.loads(self.process.stdout.readline())
        self.listen = str(banner["listening"])
        self.control_address = str(banner["control"])

    def set_delay(self, delay_ms: int) -> dict[str, Any]:
        """Change the delay of the running proxy."""
        from devcluster.faultproxy import control, parse_address

        answer = control(parse_address(self.control_address, "control"), f"set delay_ms={delay_ms}")
        if not answer.get("ok"):
            raise RuntimeError(f"faultproxy refused delay_ms={delay_ms}: {answer}")
        return answer

    def set_upstream(self, upstream: str) -> dict[str, Any]:
        """Send new connections to ``upstream`` (HOST:PORT)."""
        from devcluster.faultproxy import control, parse_address

        answer = control(parse_address(self.control_address, "control"), f"set upstream={upstream}")
        if not answer.get("ok"):
            raise RuntimeError(f"faultproxy refused upstream={upstream}: {answer}")
        return answer

    def stop(self) -> None:
        """SIGTERM the proxy (then SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


# --- scenarios ------------------------------------------------------------------------------------


def base_spec(lab: Lab, mode: str, redis_url: str = "redis://redis:6379/0") -> dict[str, Any]:
    """The policy every scenario starts from: 3 pods, the lab's probe settings (the e2e's short
    interval, or the CRD's defaults), L1 large enough that it never evicts in these workloads (so
    L1Thrashing stays out of the way)."""
    spec: dict[str, Any] = {
        "preset": "development",
        "overrides": {"l1": {"max_entries": 20000, "max_bytes": 64 * 1024 * 1024}},
        "redis": {"url": redis_url},
        "runtime": {"replicas": REPLICAS},
        "remediation": {"mode": mode, "cooldownSeconds": 0},
        "health": {},
    }
    if lab.probes is not None:
        spec["health"].update(lab.probes)
    return spec


@dataclass
class Scenario:
    """One fault: how to set it up, inject it, feed it traffic, end it, and what must be diagnosed."""

    name: str
    symptom: str
    causes: tuple[str, ...]  # the pods' causes (the first is expected, and the incident's top cause ...)
    mode: str  # the policy's remediation mode
    description: str
    setup: Callable[[Lab], dict[str, Any]]  # -> the policy spec (Redis applied, Secrets created)
    inject: Callable[[Lab], None]
    fault_traffic: Callable[[Lab], Any]  # one bounded burst, repeated until the incident is there
    repair: Callable[[Lab], None] | None  # what a person does; None: the operator's action alone
    recover_traffic: Callable[[Lab], Any]  # one bounded burst, repeated until resolved
    action: str = "reconnect-redis"  # the incident's action (run in Auto, recommended in Recommend)
    allowed_actions: tuple[str, ...] = ("gc", "reconnect-redis", "diagnose")
    action_applies: bool = True  # a runbook action addresses it (remediation time is meaningful)
    # ... unless the operator's cross-layer view names this one ahead of them (then action diagnose)
    incident_cause: str | None = None


def _keys(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


# --- traffic shared by the Redis scenarios --------------------------------------------------------------

HOT_KEYS = 40
MISSES_PER_BURST = 4


def _hot_reads(lab: Lab) -> Any:
    """GETs of keys every pod holds in L1 (PUT on the first pass): hits that never touch Redis."""
    return lab.get_or_put(_keys("hot", HOT_KEYS), {"v": "hot"}, workers=8)


def _absent_reads(lab: Lab, per_pod: int) -> Any:
    """GETs of keys nobody stored: each asks Redis (L1 misses). One call per pod at a time, so the pool
    (3 connections in `development`) never runs dry and the evidence stays Redis' own."""

    def absent(pod: dict[str, Any], index: int) -> None:
        lab.client(pod).get(f"/data/v1/keys/absent-{uuid.uuid4().hex}")

    return lab.each_pod(absent, per_pod, workers=REPLICAS)


def _mixed_traffic(lab: Lab) -> Any:
    """Mostly L1 hits plus a few GETs that must ask Redis (~10%): Redis faults show in the Redis
    figures and the latency p95 while the hit rate stays healthy (no LowHitRate noise)."""
    hot = _hot_reads(lab)
    _absent_reads(lab, MISSES_PER_BURST)
    return hot


def _recover_hits(lab: Lab) -> Any:
    """Fast hits in bulk, nothing through Redis: on a loaded machine even a healthy Redis round trip
    through the proxy can pass 20 ms, so this is what lets the slow GETs fall below 5% of the window."""
    for _ in range(4):
        _hot_reads(lab)


def _recover_traffic(lab: Lab) -> Any:
    """Healthy traffic in bulk: fast hits, and Redis calls that now succeed, so the fault's share of
    the windows (errors per Redis call over a minute, slow calls per GET over the detection window)
    falls below the thresholds."""
    for _ in range(3):
        _hot_reads(lab)
    _absent_reads(lab, 3 * MISSES_PER_BURST)


# (a) Redis stopped, then restarted -----------------------------------------------------------------
#
# The policy reaches Redis through a faultproxy at a fixed address, standing in for the Service's
# ClusterIP that devcluster lacks: the Redis pod is deleted and a new one (with a new pod IP) starts
# behind the same address, as in a real cluster. (Naming the Service instead makes the operator resolve
# it to a pod IP with --resolve-service-hosts; with no Ready pod it stops probing altogether, so
# nothing could be detected: see the report of the issue.)


def _proxied_setup(lab: Lab, mode: str) -> dict[str, Any]:
    lab.apply(redis_manifest())
    ip = lab.redis_pod_ip()
    lab.proxy = ProxyProcess(f"{ip}:6379", lab.work_dir / "faultproxy.log")
    return base_spec(lab, mode, redis_url=f"redis://{lab.proxy.listen}/0")


def _stopped_setup(lab: Lab) -> dict[str, Any]:
    return _proxied_setup(lab, "Auto")


def _redis_stopped(lab: Lab) -> None:
    """Hot keys stored first (while Redis works). Then the stable address stops answering (connections
    refused, as a Service without endpoints), then the Redis pod is deleted. In that order: devcluster
    hands a freed pod IP to the next pod created on this host, often another test's Redis, which a
    stale upstream would then reach."""
    _hot_reads(lab)
    assert lab.proxy is not None
    lab.proxy.set_upstream(f"127.0.0.1:{lab.refused_port()}")
    lab.scale_redis(0)


def _redis_restarted(lab: Lab) -> None:
    """Redis back (a new pod), reachable at the same address again."""
    lab.scale_redis(1)
    assert lab.proxy is not None
    lab.proxy.set_upstream(f"{lab.redis_pod_ip()}:6379")


REDIS_STOPPED = Scenario(
    name="redis-stopped",
    symptom="RedisUnavailable",
    causes=("RedisUnreachable",),
    mode="Auto",
    description="Redis scaled to 0 (its pod deleted), later back to 1",
    setup=_stopped_setup,
    inject=_redis_stopped,
    fault_traffic=_mixed_traffic,
    repair=_redis_restarted,
    recover_traffic=_recover_traffic,
)


# (b) Redis slow through the latency proxy --------------------------------------------------------------


def _slow_setup(lab: Lab) -> dict[str, Any]:
    return _proxied_setup(lab, "Auto")


def _slow_inject(lab: Lab) -> None:
    _hot_reads(lab)  # stored while Redis is fast
    assert lab.proxy is not None
    lab.proxy.set_delay(PROXY_DELAY_MS)


def _slow_repair(lab: Lab) -> None:
    assert lab.proxy is not None
    lab.proxy.set_delay(0)


REDIS_SLOW = Scenario(
    name="redis-slow",
    symptom="SlowOperations",
    causes=("RedisLatency",),
    mode="Auto",
    description=f"the policy's Redis URL is a faultproxy; {PROXY_DELAY_MS} ms added each way, later 0",
    setup=_slow_setup,
    inject=_slow_inject,
    fault_traffic=_mixed_traffic,
    repair=_slow_repair,
    recover_traffic=_recover_hits,
)


# (c) Redis with a wrong password ---------------------------------------------------------------------


def _auth_setup(lab: Lab) -> dict[str, Any]:
    lab.apply(redis_manifest(password=REDIS_PASSWORD))
    lab.redis_pod_ip()
    lab.set_password_secret(REDIS_PASSWORD)
    spec = base_spec(lab, "Recommend")
    spec["redis"]["passwordSecretRef"] = {"name": "redis-auth", "key": "password"}
    return spec


AUTH_FAILURE = Scenario(
    name="redis-wrong-password",
    symptom="RedisAuthFailure",
    causes=("RedisAuthenticationFailure",),
    mode="Recommend",
    description="the password Secret is rotated to a wrong password (pods roll onto it), later fixed",
    # The pods see Redis refuse them; the operator sees the Secret changed minutes ago: that is the cause
    # and the fix is a person's (reconnect-redis with the same wrong password changes nothing).
    incident_cause="RedisPasswordChanged",
    action="diagnose",
    setup=_auth_setup,
    inject=lambda lab: lab.set_password_secret(WRONG_PASSWORD),
    fault_traffic=_mixed_traffic,
    repair=lambda lab: lab.set_password_secret(REDIS_PASSWORD),
    recover_traffic=_recover_traffic,
    action_applies=False,  # a person fixes the Secret; reconnect-redis only helps after that
)


# (c2) Redis full, maxmemory-policy noeviction ----------------------------------------------------------
#
# What a new user tried on `make demo` (issue 13): Redis at `maxmemory 1mb` with `noeviction` refuses
# every write. The fix is Redis's eviction policy or memory (a person's, by CONFIG SET here), never
# `clear`: dropping everyone's data frees room for a moment and the next writes fill it again.

OOM_MAXMEMORY = "1mb"
OOM_FILL_VALUES = 400  # bounded: 400 x 4 KiB is more than 1 MiB, the fill stops at the first refusal
OOM_WRITES_PER_BURST = 20  # per pod: new keys, each a miss and a write Redis refuses


def _redis_direct(lab: Lab) -> Any:
    """A redis-py client on the Redis pod itself (what a person's redis-cli does)."""
    import redis

    return redis.Redis(host=lab.redis_pod_ip(), port=6379, socket_timeout=5, socket_connect_timeout=5)


def _oom_setup(lab: Lab) -> dict[str, Any]:
    """A plain Redis (full only once the fault sets its maxmemory), the policy in Auto mode."""
    lab.apply(redis_manifest())
    lab.redis_pod_ip()
    return base_spec(lab, "Auto")


def _oom_inject(lab: Lab) -> None:
    import redis

    client = _redis_direct(lab)
    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", OOM_MAXMEMORY)
        for index in range(OOM_FILL_VALUES):
            try:
                client.set(f"filler-{index}", b"x" * 4096)
            except redis.exceptions.OutOfMemoryError:
                return  # full: Redis refuses writes now
        raise AssertionError(f"Redis took {OOM_FILL_VALUES} x 4 KiB under maxmemory {OOM_MAXMEMORY}")
    finally:
        client.close()


def _oom_repair(lab: Lab) -> None:
    """The diagnosis's fix: at 1 MiB Redis's own overhead (the pods' connections and buffers) fills
    maxmemory, so an eviction policy alone frees nothing (tried: the pods kept seeing OOM); more
    memory and volatile-lru (every cache key has a TTL)."""
    client = _redis_direct(lab)
    try:
        client.config_set("maxmemory", "64mb")
        client.config_set("maxmemory-policy", "volatile-lru")
    finally:
        client.close()


def _oom_traffic(lab: Lab) -> Any:
    """Hot reads plus new keys each pod stores (a miss, then a write that Redis refuses while full)."""
    hot = _hot_reads(lab)
    lab.get_or_put(_keys(f"new-{uuid.uuid4().hex[:8]}", OOM_WRITES_PER_BURST), {"v": "n" * 512}, workers=6)
    return hot


def _oom_recover(lab: Lab) -> Any:
    """Healthy traffic, and writes that Redis now takes (evicting), so the refusals age out."""
    _recover_traffic(lab)
    return lab.get_or_put(_keys(f"new-{uuid.uuid4().hex[:8]}", OOM_WRITES_PER_BURST), {"v": "n"}, workers=6)


REDIS_OUT_OF_MEMORY = Scenario(
    name="redis-out-of-memory",
    symptom="RedisOutOfMemory",
    causes=("RedisOutOfMemory",),
    mode="Auto",
    description=f"Redis at maxmemory {OOM_MAXMEMORY} with noeviction refuses every write; a person raises "
    "maxmemory and sets an eviction policy, as the diagnosis says (never clear)",
    setup=_oom_setup,
    inject=_oom_inject,
    fault_traffic=_oom_traffic,
    repair=_oom_repair,
    recover_traffic=_oom_recover,
    action="diagnose",  # recommend-only even in Auto: no runbook action fixes Redis's memory
    action_applies=False,
)


# (d) low hit rate: TTL too short ---------------------------------------------------------------------

SHORT_TTL_S = 2
SHORT_TTL_KEYS = 240  # per pod; the engine samples 1 key in 16 for TTL evidence (>= 20 sampled misses)
# Every setting fault is healed by the operator's own apply-override (Auto mode, the action allowed):
# no person's step. verifyProbes probes after it, the incident says whether the figure recovered.
HEALING_ACTIONS = ("gc", "reconnect-redis", "diagnose", "apply-override")
VERIFY_PROBES = 3
QUIET_LATENCY = {"latencyWarningMs": 1000, "latencyCriticalMs": 2000}


def _healing_spec(lab: Lab) -> dict[str, Any]:
    """The base policy in Auto mode with apply-override allowed (Redis applied first)."""
    lab.apply(redis_manifest())
    lab.redis_pod_ip()
    spec = base_spec(lab, "Auto")
    spec["remediation"]["allowedActions"] = list(HEALING_ACTIONS)
    spec["remediation"]["verifyProbes"] = VERIFY_PROBES
    # Each scenario is about its one fault: a p95 above 20 ms on a loaded 2-core test machine would
    # open a SlowOperations incident beside it whose reconnect-redis resets coherence and with it L1.
    spec["health"]["thresholds"] = dict(QUIET_LATENCY)
    return spec


def _short_ttl_setup(lab: Lab) -> dict[str, Any]:
    return _healing_spec(lab)


def _short_ttl_inject(lab: Lab) -> None:
    lab.patch_policy({"overrides": {"ttl": {"default_s": SHORT_TTL_S}}})
    _wait(lambda: _pods_config(lab, "ttl", "default_s") == {SHORT_TTL_S}, 60, f"ttl.default_s={SHORT_TTL_S}")


def _pods_config(lab: Lab, group: str, name: str) -> set[Any]:
    """The value of ``group.name`` in every pod's config in force (its own config/current)."""
    values = set()
    for pod in lab.pods():
        current = lab.client(pod).get("/internal/cache/config/current").json()
        value = current["config"][group]
        for part in name.split("."):
            value = value[part]
        values.add(value)
    return values


def _short_ttl_traffic(lab: Lab) -> Any:
    # The same keys, asked again after the TTL ran out: every re-request is an "expired" miss.
    counts = lab.get_or_put(_keys("ttl", SHORT_TTL_KEYS), {"answer": "x" * 200}, workers=8)
    time.sleep(SHORT_TTL_S + 1)
    return counts


SHORT_TTL = Scenario(
    name="short-ttl",
    symptom="LowHitRate",
    causes=("TtlTooShort",),
    mode="Auto",
    description=f"ttl.default_s={SHORT_TTL_S} s while clients re-ask every {SHORT_TTL_S + 1}+ s; healed by "
    "the operator's time-boxed TTL override (the workload goes on unchanged)",
    setup=_short_ttl_setup,
    inject=_short_ttl_inject,
    fault_traffic=_short_ttl_traffic,
    repair=None,
    recover_traffic=_short_ttl_traffic,  # the same workload: only the override can heal it
    action="apply-override",
    allowed_actions=HEALING_ACTIONS,
)


# (f) whitespace variants: the same questions typed differently -------------------------------------

VARIANT_TEXTS = 80  # per pod and burst; the engine samples 1 text in 16 for key evidence
VARIANT_ROUNDS = 3


def _variant_setup(lab: Lab) -> dict[str, Any]:
    spec = _healing_spec(lab)
    spec["overrides"]["keys"] = {
        "normalize": {"whitespace": False, "line_endings": False, "invisible_chars": False, "case": False}
    }
    return spec


def _spelled(rng: random.Random, words: list[str]) -> str:
    """The same words with runs of spaces, tabs and newlines of random length between them."""
    gaps = [" " * rng.randint(1, 4) + rng.choice(["", "\t", "\n"]) for _ in words]
    return "".join(word + gap for word, gap in zip(words, gaps, strict=True))


def _variant_traffic(lab: Lab) -> Any:
    """Every pod gets each question several times, spelled differently each time (AI lookup, then
    store on a miss): without whitespace normalization every spelling is its own key."""
    counts = {"hit": 0, "miss": 0, "error": 0}
    lock = threading.Lock()
    seeds = [lab.rng.randrange(1 << 30) for _ in range(VARIANT_TEXTS * VARIANT_ROUNDS)]

    def one(pod: dict[str, Any], index: int) -> None:
        rng = random.Random(seeds[index])
        words = f"what does clause {index % VARIANT_TEXTS} of the contract say about renewal".split()
        body = {"operation": "qa", "text": _spelled(rng, words), "question": "renewal?"}
        client = lab.client(pod)
        found = client.post("/data/v1/ai/lookup", json=body)
        found.raise_for_status()
        hit = bool(found.json().get("hit"))
        with lock:
            counts["hit" if hit else "miss"] += 1
        if not hit:
            stored = client.post("/data/v1/ai/store", json={**body, "value": {"answer": "60 days notice"}})
            stored.raise_for_status()

    for failure in lab.each_pod(one, VARIANT_TEXTS * VARIANT_ROUNDS, workers=8):
        if failure is not None:
            counts["error"] += 1
    return counts


WHITESPACE_VARIANTS = Scenario(
    name="whitespace-variants",
    symptom="LowHitRate",
    causes=("KeyInconsistency",),
    mode="Auto",
    description=f"{VARIANT_TEXTS} questions per pod, each asked {VARIANT_ROUNDS}x per burst with other "
    "whitespace, normalization off; healed by the operator's normalization override",
    setup=_variant_setup,
    inject=lambda lab: None,  # the workload itself is the fault
    fault_traffic=_variant_traffic,
    repair=None,
    recover_traffic=_variant_traffic,
    action="apply-override",
    allowed_actions=HEALING_ACTIONS,
)


# (g) L1 too small for the working set ----------------------------------------------------------------

L1_ENTRIES = 50
L1_WORKING_SET = 150  # per pod: three times L1, read in a cycle (LRU keeps none of it)


def _l1_setup(lab: Lab) -> dict[str, Any]:
    spec = _healing_spec(lab)
    spec["overrides"]["l1"] = {"max_entries": L1_ENTRIES, "max_bytes": 64 * 1024 * 1024}
    return spec


def _l1_traffic(lab: Lab) -> Any:
    return lab.get_or_put(_keys("hot", L1_WORKING_SET), {"answer": "y" * 200}, workers=8)


L1_TOO_SMALL = Scenario(
    name="l1-too-small",
    symptom="L1Thrashing",
    causes=("L1TooSmall",),
    mode="Auto",
    description=f"l1.max_entries={L1_ENTRIES} for a working set of {L1_WORKING_SET} keys per pod read in "
    "a cycle; healed by the operator's L1 size override",
    setup=_l1_setup,
    inject=lambda lab: None,
    fault_traffic=_l1_traffic,
    repair=None,
    recover_traffic=_l1_traffic,
    action="apply-override",
    allowed_actions=HEALING_ACTIONS,
)


# (e) high memory: large values, compression off ---------------------------------------------------------

LARGE_VALUE_CHARS = 64 * 1024
LARGE_VALUES_PER_POD = 100  # 6.4 MiB per pod uncompressed, well under 1 MiB compressed
MEMORY_WARNING_MB = 4


def _memory_setup(lab: Lab) -> dict[str, Any]:
    spec = _healing_spec(lab)
    spec["health"]["thresholds"].update(memoryWarningMb=MEMORY_WARNING_MB, memoryCriticalMb=64)
    # Compression has no off switch: "off" is a threshold above every value.
    spec["overrides"]["compression"] = {"threshold_bytes": 100 * 1024 * 1024}
    return spec


def _memory_traffic(lab: Lab) -> Any:
    text = compressible_text(lab.rng, LARGE_VALUE_CHARS)
    return lab.get_or_put(_keys("large", LARGE_VALUES_PER_POD), {"document": text}, workers=4)


UNCOMPRESSED_MEMORY = Scenario(
    name="uncompressed-memory",
    symptom="HighMemory",
    causes=("LargeUncompressedEntries",),
    mode="Auto",
    description=f"{LARGE_VALUES_PER_POD} values of {LARGE_VALUE_CHARS // 1024} KiB per pod with compression "
    f"off, memory warning at {MEMORY_WARNING_MB} MiB; healed by the operator's compression override "
    "(then compress-existing)",
    setup=_memory_setup,
    inject=lambda lab: None,  # the workload itself is the fault
    fault_traffic=_memory_traffic,
    repair=None,
    recover_traffic=_memory_traffic,
    action="apply-override",
    allowed_actions=HEALING_ACTIONS,
)


def incompressible_text(rng: random.Random, size: int) -> str:
    """``size`` characters of base64 over random bytes: nothing for lz4 to find."""
    return base64.b64encode(rng.randbytes(size * 3 // 4 + 3)).decode()[:size]


def _incompressible_traffic(lab: Lab) -> Any:
    text = incompressible_text(lab.rng, LARGE_VALUE_CHARS)
    return lab.get_or_put(_keys("random", LARGE_VALUES_PER_POD), {"document": text}, workers=4)


# Not a heal: the diagnosis (large values stored uncompressed) is right, but these values do not
# compress, so the override cannot help: it is rolled back and the incident escalated.
INCOMPRESSIBLE_MEMORY = Scenario(
    name="incompressible-memory",
    symptom="HighMemory",
    causes=("LargeUncompressedEntries",),
    mode="Auto",
    description=f"{LARGE_VALUES_PER_POD} values of {LARGE_VALUE_CHARS // 1024} KiB of random base64 per pod, "
    "compression off: lowering the threshold cannot shrink them (rolled back, escalated)",
    setup=_memory_setup,
    inject=lambda lab: None,
    fault_traffic=_incompressible_traffic,
    repair=None,
    recover_traffic=_incompressible_traffic,
    action="apply-override",
    allowed_actions=HEALING_ACTIONS,
)

# (f) Redis's Deployment scaled to 0, the policy naming its Service -------------------------------------
#
# The cross-layer diagnosis (cache_operator.incidents.redis_cluster): the policy names the Service
# (resolved to the pod IP by --resolve-service-hosts); the Deployment is scaled to 0, so the pods keep the
# old address (connections refused) and the operator, which can no longer resolve the Service, keeps
# probing them. The incident must say RedisScaledToZero with the Deployment, the endpoints and the
# Events as evidence. The traffic misses much (absent keys) so that LowHitRate shows too: it shares the
# outage's cause and must join the same incident. Not in SCENARIOS (the e2e parametrization of
# test_incident_faults); bench/incidents.py times it with the others (BENCH_SCENARIOS).

OUTAGE_MISSES_PER_BURST = 60


def _scaled_setup(lab: Lab) -> dict[str, Any]:
    lab.apply(redis_manifest())
    lab.redis_pod_ip()
    return base_spec(lab, "Auto")


def _scale_redis_to_zero(lab: Lab) -> None:
    _hot_reads(lab)
    lab.scale_redis(0)


def _outage_traffic(lab: Lab) -> Any:
    """Hot L1 hits plus many GETs of absent keys: Redis errors, and a hit rate below 60%."""
    hot = _hot_reads(lab)
    _absent_reads(lab, OUTAGE_MISSES_PER_BURST)
    return hot


REDIS_SCALED_TO_ZERO = Scenario(
    name="redis-scaled-to-zero",
    symptom="RedisUnavailable",
    causes=("RedisScaledToZero",),
    mode="Auto",
    description="the Redis Deployment scaled to 0, the policy naming its Service",
    setup=_scaled_setup,
    inject=_scale_redis_to_zero,
    fault_traffic=_outage_traffic,
    repair=lambda lab: lab.scale_redis(1),
    recover_traffic=_recover_traffic,
    action="diagnose",
    action_applies=False,
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        REDIS_STOPPED,
        REDIS_SLOW,
        AUTH_FAILURE,
        REDIS_OUT_OF_MEMORY,
        SHORT_TTL,
        WHITESPACE_VARIANTS,
        L1_TOO_SMALL,
        UNCOMPRESSED_MEMORY,
    )
}
# What bench/incidents.py times: every scenario, and the Redis Deployment scaled to 0 (cross-layer cause).
BENCH_SCENARIOS: dict[str, Scenario] = {**SCENARIOS, REDIS_SCALED_TO_ZERO.name: REDIS_SCALED_TO_ZERO}
# Faults whose fix is a setting: the operator's apply-override alone heals them
# (tests/e2e/test_self_healing.py).
HEALING_SCENARIOS = tuple(name for name, s in SCENARIOS.items() if s.action == "apply-override")


# --- running one ---------------------------------------------------------------------------------------


@dataclass
class Timeline:
    """Seconds from the fault to each milestone (None: not reached), as observed by the client."""

    scenario: str
    symptom_in_pods: float | None = None  # a pod's own health report shows the symptom
    incident: float | None = None  # the automatic incident exists
    diagnosed: float | None = None  # it carries a diagnosis (causes)
    remediated: float | None = None  # its action ended (Succeeded/Failed) or was recorded (Recommended)
    repaired: float | None = None  # the person's repair was done (when the scenario has one)
    resolved: float | None = None  # the incident was resolved (symptom cleared)
    incident_name: str | None = None
    cause: str | None = None  # the incident's diagnosed cause
    cluster_cause: str | None = None  # the first Kubernetes-level Redis cause its diagnosis named
    cluster_cause_at: float | None = None  # ... and when (seconds from the fault)
    action_results: list[dict[str, Any]] = field(default_factory=list)  # per pod: result and counts
    final: dict[str, Any] = field(default_factory=dict)
    pod_causes: dict[str, list[str]] = field(default_factory=dict)  # every cause a pod gave while it
    # showed the symptom (its own health report)
    verified: float | None = None  # the incident's remediation reached its verdict
    verdict: str | None = None  # Remediated or Ineffective (status.remediation.state)
    figure: str | None = None  # the symptom's figure the operator watched, before and after
    before: float | None = None
    after: float | None = None
    override: dict[str, Any] | None = None  # the settings the operator's apply-override changed
    notes: list[str] = field(default_factory=list)


def auto_incidents(lab: Lab, symptom: str | None = None) -> list[dict[str, Any]]:
    """The policy's automatic incidents for ``symptom`` (None: all of them): by the labels the operator
    sets, or ``status.symptoms`` for a symptom that joined another symptom's incident (shared cause)."""
    items: list[dict[str, Any]] = lab.json("get", INCIDENTS, "-l", "cachewarden.io/incident-source=auto")[
        "items"
    ]
    if symptom is None:
        return items
    return [
        i
        for i in items
        if (i["metadata"].get("labels") or {}).get("cachewarden.io/symptom") == symptom
        or symptom in ((i.get("status") or {}).get("symptoms") or [])
    ]


@contextmanager
def lab_for(
    kubeconfig: Path,
    bin_dir: Path,
    work_dir: Path,
    scenario: Scenario,
    probes: dict[str, int] | None = E2E_PROBES,
) -> Iterator[Lab]:
    """A namespace with the scenario's Redis and policy Ready (3 pods); torn down at the end.
    ``probes`` is the policy's ``spec.health`` probe settings (None: the CRD's defaults)."""
    lab = Lab(
        kubeconfig,
        bin_dir,
        f"fault-{scenario.name}-{uuid.uuid4().hex[:5]}",
        work_dir / scenario.name,
        probes=probes,
    )
    lab.create_namespace()
    try:
        lab.apply_policy(scenario.setup(lab))
        lab.wait_ready()
        yield lab
    finally:
        lab.close()
        lab.delete_namespace()


def run_scenario(lab: Lab, scenario: Scenario, log: Callable[[str], None] = print) -> Timeline:
    """Inject the fault, feed traffic, wait for the incident, repair, wait for its resolution."""
    timeline = Timeline(scenario.name)
    scenario.inject(lab)
    fault_at = time.monotonic()

    def since() -> float:
        return round(time.monotonic() - fault_at, 1)

    def observe(incident: dict[str, Any]) -> None:
        status = incident.get("status") or {}
        now = since()
        if timeline.incident is None:
            timeline.incident = now
            timeline.incident_name = incident["metadata"]["name"]
        causes = (status.get("diagnosis") or {}).get("causes") or []
        if timeline.diagnosed is None and causes:
            timeline.diagnosed = now
        if timeline.cluster_cause is None:
            named = [c.get("name") for c in causes if isinstance(c, dict) and c.get("name") in CLUSTER_CAUSES]
            if named:
                timeline.cluster_cause, timeline.cluster_cause_at = named[0], now
        if timeline.remediated is None and status.get("phase") in ("Succeeded", "Failed", "Recommended"):
            timeline.remediated = now
        if timeline.remediated is None and status.get("resolvedFromPhase") in (
            "Succeeded",
            "Failed",
            "Recommended",
        ):
            timeline.remediated = now
        if timeline.resolved is None and (status.get("resolvedAt") or status.get("phase") == "Resolved"):
            timeline.resolved = now
        remediation = status.get("remediation") or {}
        if timeline.verified is None and remediation.get("state") in ("Remediated", "Ineffective"):
            timeline.verified = now
            timeline.verdict = remediation["state"]
            timeline.figure = remediation.get("figure")
            timeline.before = remediation.get("before")
            timeline.after = remediation.get("after")
            timeline.override = remediation.get("override")

    def current() -> dict[str, Any] | None:
        found = auto_incidents(lab, scenario.symptom)
        if timeline.incident_name:
            found = [i for i in found if i["metadata"]["name"] == timeline.incident_name]
        return found[0] if found else None

    # 1. fault traffic until the pods show the symptom and the incident is diagnosed and acted on
    deadline = time.monotonic() + DETECT_TIMEOUT_S
    while time.monotonic() < deadline:
        scenario.fault_traffic(lab)
        diagnoses, errors = lab.pod_diagnoses()
        timeline.notes.extend(errors[:3])
        for pod, seen in diagnoses.items():
            if scenario.symptom in seen["symptoms"]:
                if timeline.symptom_in_pods is None:
                    timeline.symptom_in_pods = since()
                known = timeline.pod_causes.setdefault(pod, [])
                known.extend(c for c in seen["causes"] if c not in known)
        incident = current()
        if incident is not None:
            observe(incident)
            if None not in (timeline.diagnosed, timeline.remediated, timeline.symptom_in_pods):
                break
    log(
        f"{scenario.name}: symptom in pods {timeline.symptom_in_pods}s, incident {timeline.incident}s "
        f"({timeline.incident_name}), diagnosed {timeline.diagnosed}s, acted {timeline.remediated}s"
    )
    if timeline.incident is None:
        timeline.final = {"pods": lab.pod_diagnoses()[0], "policy": lab.policy().get("status")}
        return timeline

    # 2. the person's repair, then healthy traffic until the incident is resolved
    if scenario.repair is not None:
        scenario.repair(lab)
        timeline.repaired = since()
    deadline = time.monotonic() + RESOLVE_TIMEOUT_S
    while time.monotonic() < deadline:
        scenario.recover_traffic(lab)
        incident = current()
        if incident is not None:
            observe(incident)
            if timeline.resolved is not None:
                break
        time.sleep(POLL_S)
    if timeline.resolved is None:
        diagnoses, errors = lab.pod_diagnoses()
        timeline.notes.append(f"not resolved; pods now: {json.dumps(diagnoses)} {errors}")
        for runtime_pod in lab.pods():
            with contextlib.suppress(Exception):
                summary = (lab.health(runtime_pod).get("diagnosis") or {}).get("summary")
                timeline.notes.append(f"{runtime_pod['metadata']['name']}: {json.dumps(summary)}")
    final = current()
    timeline.final = final or {}
    status = timeline.final.get("status") or {}
    timeline.cause = status.get("cause")
    timeline.action_results = [
        {"pod": r.get("pod"), "result": r.get("result"), "counts": r.get("counts")}
        for r in status.get("results") or []
    ]
    log(f"{scenario.name}: repaired {timeline.repaired}s, resolved {timeline.resolved}s")
    if timeline.notes:
        log(f"{scenario.name}: notes: {timeline.notes[:5]}")
    return timeline
