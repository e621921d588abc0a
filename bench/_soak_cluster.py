"""The soak's I/O around the cluster: its own redis-server, the operator subprocess, restarts of
etcd and the API server, the convergence check and process memory.

Every process signalled here is one this module started (by pid), or a control-plane component the
soak's own devcluster started (its :class:`~devcluster.controlplane.ManagedProcess`, stopped and started
again with the same command line, ports and data). Nothing is looked up by name.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._operator_harness import Operator, free_port
from cache_operator import render
from cache_operator.api import CachePolicySpec
from devcluster.cluster import Cluster, write_state
from devcluster.controlplane import ApiError, client_tls_context, https_request


def read_rss_mib(pid: int) -> float | None:
    """VmRSS of ``pid`` in MiB from /proc (None when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


class RedisServer:
    """redis-server on 127.0.0.1:``port``, no persistence (a restart loses the data, as a cache's Redis
    usually does), in its own session so it never gets the terminal's signals."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """The Redis URL the policy uses."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait until it answers PING."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.log_path}")
            time.sleep(0.05)

    def ping(self, timeout: float = 0.5) -> bool:
        """True when the server answers PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (SIGCONT first, in case it is paused), then SIGKILL after 10 s."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def pause(self) -> None:
        """Blackhole: SIGSTOP. Connections are still accepted by the kernel, nothing is answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """End the blackhole: SIGCONT."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


class OperatorSlot:
    """The operator subprocess, killable (SIGKILL by pid) and restartable."""

    def __init__(self, kubeconfig: Path, log_dir: Path, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.namespace = namespace
        self.incarnation = 0
        self.proc = self._start()

    def _start(self) -> Operator:
        self.incarnation += 1
        return Operator(
            self.kubeconfig,
            self.log_dir / f"operator-{self.incarnation}.log",
            scope=("--namespace", self.namespace),
        )

    @property
    def pid(self) -> int:
        """The running operator's pid."""
        return self.proc.process.pid

    def kill_and_restart(self, restart_delay_s: float) -> str:
        """SIGKILL the operator, wait ``restart_delay_s`` (a Deployment's restart takes a moment too),
        start a new one; returns what happened."""
        old = self.proc.process.pid
        self.proc.process.send_signal(signal.SIGKILL)
        self.proc.process.wait(15)
        self.proc.stop()  # closes its log
        time.sleep(restart_delay_s)
        self.proc = self._start()
        return f"SIGKILL pid {old}, restarted as pid {self.proc.process.pid}"

    def stop(self) -> None:
        """SIGTERM the current operator."""
        self.proc.stop()

    def passes(self, name: str) -> tuple[int, int]:
        """(incarnation, reconcile passes the running operator finished for policy ``name``), from its
        ``cachewarden_operator_policy_passes_total`` metric."""
        incarnation = self.incarnation
        url = f"http://127.0.0.1:{self.proc.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        sample = f'cachewarden_operator_policy_passes_total{{policy="{self.namespace}/{name}"}} '
        count = next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample)), 0.0)
        return incarnation, int(count)

    def passes_counter(self, name: str) -> Callable[[], int]:
        """A function: passes of policy ``name`` finished since now (a restarted operator's passes
        all count, since it started after now)."""
        try:
            mark = self.passes(name)
        except (OSError, urllib.error.URLError, ValueError):
            mark = (self.incarnation, 0)  # not answering yet: every pass it makes is after now

        def since() -> int:
            incarnation, count = self.passes(name)
            return count if incarnation != mark[0] else count - mark[1]

        return since


def restart_component(cluster: Cluster, component: str, timeout: float = 120.0) -> str:
    """Stop ``etcd`` or ``kube-apiserver`` of the soak's own cluster (SIGTERM to its process group,
    SIGKILL after the grace) and start it again with the same command line, ports and data; return
    once it is healthy again."""
    process = next(p for p in cluster.control_plane.processes if p.name == component)
    old = process.record.pid if process.record else None
    began = time.monotonic()
    process.stop()
    stopped = time.monotonic()
    process.start()
    write_state(cluster.run_dir, cluster.state())  # `dev down` on this run dir still finds it
    pki = cluster.control_plane.pki
    assert pki is not None
    deadline = time.monotonic() + timeout
    while True:
        if component == "etcd":
            context = client_tls_context(pki.ca.cert, pki.etcd_client.cert, pki.etcd_client.key)
            try:
                status, body = https_request(
                    cluster.control_plane.ports.etcd_client, "/health", context, timeout=3
                )
                healthy = status == 200 and json.loads(body).get("health") == "true"
            except (OSError, ValueError):
                healthy = False
        else:
            healthy, _ = cluster.api.readyz(timeout=3)
        if healthy:
            break
        if process.exited() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{component} did not come back; last log lines:\n{process.log_tail()}")
        time.sleep(0.1)
    return (
        f"pid {old} stopped in {stopped - began:.1f}s, pid {process.record.pid if process.record else '?'} "
        f"healthy {time.monotonic() - stopped:.1f}s later"
    )


def http_json(url: str, token: str, timeout: float = 5.0) -> Any:
    """GET ``url`` with a bearer token; the decoded JSON."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class PolicyWatch:
    """Reads of the soak's policy and its pods through the cluster's admin API client."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name

    def policy(self) -> dict[str, Any]:
        """The CachePolicy as stored."""
        return self.cluster.api.get(  # type: ignore[no-any-return]
            f"/apis/cachewarden.io/v1alpha1/namespaces/{self.namespace}/cachepolicies/{self.name}", timeout=5
        )

    def pods(self) -> list[dict[str, Any]]:
        """The policy's runtime pods (all phases)."""
        selector = urllib.parse.quote(render.pod_selector_string(self.name))
        body = self.cluster.api.get(
            f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={selector}", timeout=5
        )
        return list(body.get("items") or [])

    def tokens(self) -> tuple[str, str]:
        """(admin token, read token) from the Secret the operator rendered."""
        secret = self.cluster.api.get(
            f"/api/v1/namespaces/{self.namespace}/secrets/{render.token_secret_name(self.name)}", timeout=5
        )
        data = secret["data"]
        return (
            base64.b64decode(data[render.ADMIN_TOKEN_KEY]).decode(),
            base64.b64decode(data[render.READ_TOKEN_KEY]).decode(),
        )


def expected_hash(spec: dict[str, Any]) -> str:
    """The config hash computed here from the spec, independently of the operator."""
    return render.resolve_policy_config(CachePolicySpec.model_validate(spec)).config_hash()


def _condition(policy: dict[str, Any], type_: str) -> str | None:
    for cond in (policy.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


def convergence_problem(
    watch: PolicyWatch,
    spec: dict[str, Any],
    replicas: int,
    passes_since: Callable[[], int],
    admin_token: str,
    min_passes: int = 2,
) -> str | None:
    """None when the policy has converged after a fault, else what is still missing: Ready and
    RedisConnected at the current generation, ``replicas`` pods desired/ready/configured, the operator
    has finished ``min_passes`` passes of the policy since the fault (``passes_since()``: it
    re-observed the world; the operator writes status only when it changes, so status timestamps do
    not show a pass), and every running pod reports itself the hash computed here from the spec."""
    try:
        policy = watch.policy()
    except ApiError as exc:
        return f"policy not readable: {exc}"
    status = policy.get("status") or {}
    if status.get("observedGeneration") != policy["metadata"].get("generation"):
        return (
            f"observedGeneration {status.get('observedGeneration')} != {policy['metadata'].get('generation')}"
        )
    for type_ in ("Ready", "RedisConnected"):
        if _condition(policy, type_) != "True":
            return f"{type_} is {_condition(policy, type_)}"
    pods = status.get("pods") or {}
    if not pods.get("desired") == pods.get("ready") == pods.get("configured") == replicas:
        return f"pods {pods}"
    try:
        passes = passes_since()
    except (OSError, urllib.error.URLError, ValueError) as exc:
        return f"operator metrics: {exc}"
    if passes < min_passes:
        return f"{passes} operator passes since the fault (waiting for {min_passes})"
    want = expected_hash(spec)
    if status.get("configHash") != want:
        return f"status.configHash {status.get('configHash')} != expected {want}"
    try:
        running = [
            p
            for p in watch.pods()
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
    except ApiError as exc:
        return f"pods not listable: {exc}"
    if len(running) != replicas:
        return f"{len(running)} running pods"
    for pod in running:
        try:
            health = http_json(f"http://{pod['status']['podIP']}:8080/internal/cache/health", admin_token)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            return f"pod {pod['metadata']['name']} health: {exc}"
        if health.get("config_hash") != want:
            return f"pod {pod['metadata']['name']} reports {health.get('config_hash')}"
    return None


def pods_redis_ok(watch: PolicyWatch, read_token: str) -> str | None:
    """None when every running pod reports Redis connected with its breaker closed, else why not."""
    try:
        pods = [
            p
            for p in watch.pods()
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
    except ApiError as exc:
        return f"pods not listable: {exc}"
    for pod in pods:
        try:
            status = http_json(f"http://{pod['status']['podIP']}:8080/internal/cache/status", read_token)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            return f"pod {pod['metadata']['name']}: {exc}"
        redis = status.get("redis") or {}
        if redis.get("status") != "connected" or redis.get("breaker_state") != "closed":
            name = pod["metadata"]["name"]
            return f"pod {name}: redis {redis.get('status')} breaker {redis.get('breaker_state')}"
    return None


def container_pid(pod: dict[str, Any]) -> int | None:
    """The pid of a devcluster pod's first container (``containerID: devcluster://<pid>``)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        container_id = str(status.get("containerID") or "")
        if container_id.startswith("devcluster://"):
            with contextlib.suppress(ValueError):
                return int(container_id.removeprefix("devcluster://"))
    return None
