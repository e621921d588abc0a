"""The process kubelet: a fake Node whose pods run as local processes on loopback addresses.

``python -m devcluster.kubelet --kubeconfig PATH --run-dir DIR --node-name NAME``

It registers a Ready Node (and renews its Lease), binds every unscheduled pod to that node (there is
no scheduler), and runs each bound pod's containers as local processes: each pod on its own address
127.0.0.N, volumes projected into a per-pod directory, a real ServiceAccount token (TokenRequest)
in a kubeconfig handed to the process, probes run against the pod's address, and the pod status kept
true (phase, conditions, container states, restart counts). The pure decisions live in
:mod:`devcluster.podspec` and :mod:`devcluster.images`; this module is the I/O around them.

Threads: one informer each for Pods, ConfigMaps and Secrets (list, then watch with a server-side
timeout and the last resourceVersion, re-list on 410 Gone), one heartbeat (Lease and Node status),
a small pool that runs probes, the HTTPS endpoint the API server proxies ``kubectl logs`` to, and the
reconciler in the main thread. Every loop is bounded by a timeout or the stop event. The API client
and informers are :mod:`devcluster.kubeapi`, the addresses :mod:`devcluster.podips`, the Node and its
heartbeat :mod:`devcluster.nodeheartbeat`, the log endpoint :mod:`devcluster.logserver`.

docs/devcluster.md ("The process kubelet") describes what a pod's processes see and the conventions
they follow (bind ``$DEVCLUSTER_POD_IP``; read mount path ``/x/y`` at ``$DEVCLUSTER_ROOT/x/y``).

Run directory layout::

    kubelet.log                         this process's log
    kubelet.ready                       written once the Node is registered and the informers synced
    pod-ips.json                        pod uid -> 127.0.0.N (a kubelet restart keeps the addresses)
    processes.json                      pids of running containers (leftovers are killed at start)
    serving/                            self-signed certificate of the log endpoint
    pods/<ns>_<pod>_<uid>/              per pod: volumes/<volume>/, rootfs/<container>/ (mount links),
                                        kubeconfig and cluster-ca.crt (pods with a ServiceAccount token)
    logs/<ns>_<pod>_<uid>/<container>/<restartCount>.log   stdout+stderr of each container run
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import http.client
import http.server
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from cache_runtime.timefmt import parse_rfc3339, rfc3339
from devcluster import images, podspec
from devcluster.controlplane import process_start_ticks, wait_until_gone
from devcluster.fileutil import write_atomic
from devcluster.kubeapi import Informer, KubeApi, ObjectCache, raw_watch_func
from devcluster.logserver import KubeletServer
from devcluster.nodeheartbeat import NodeHeartbeat
from devcluster.podips import HOST_IP, POD_IP_LOCK_DIR_ENV, PodIpAllocator

log = logging.getLogger("devcluster.kubelet")

# Grace periods are capped: tests and `dev down` must not wait 30 s per pod.
MAX_GRACE_SECONDS = 10.0
SHUTDOWN_GRACE_SECONDS = 5.0
SYNC_INTERVAL = 0.25
RETRY_INTERVAL = 2.0
BIND_RETRY_INTERVAL = 5.0
VOLUME_RESYNC_INTERVAL = 30.0
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 20.0
BACKOFF_RESET_AFTER = 60.0
TOKEN_REFRESH_FRACTION = 0.8
TOKEN_MAX_AGE = 24 * 3600.0
PROBE_WORKERS = 4
CLUSTER_ID_ENV = "CACHEWARDEN_DEVCLUSTER_ID"
COMPONENT = "devcluster-kubelet"


# --- small helpers --------------------------------------------------------------------------------


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_kubelet() -> None:
    # Runs in the child between fork and exec: if the kubelet is killed outright (SIGKILL, OOM) its
    # containers die with it instead of lingering as orphans on their pod addresses.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- processes state (for leftovers after a crash) ------------------------------------------------


def kill_leftover_processes(run_dir: Path) -> list[int]:
    """Kill the process groups of containers a previous kubelet in ``run_dir`` left running (it was
    killed before it could stop them); pids are checked against their recorded start time. Returns
    the pids signalled. Safe to call from the cluster's teardown after the kubelet has exited."""
    path = Path(run_dir) / "processes.json"
    try:
        records = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    killed = []
    for record in records if isinstance(records, list) else []:
        try:
            pid, ticks = int(record["pid"]), int(record["start_ticks"])
        except (KeyError, TypeError, ValueError):
            continue
        if process_start_ticks(pid) == ticks:
            _signal_group(pid, signal.SIGKILL)
            killed.append(pid)
    wait_until_gone(killed, timeout=5.0)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return killed


# --- containers -----------------------------------------------------------------------------------


@dataclass
class ProbeState:
    """One probe's schedule and its consecutive results."""

    plan: podspec.ProbePlan
    next_at: float
    successes: int = 0
    failures: int = 0
    passed: bool = False
    future: Future[tuple[bool, str]] | None = None
    last_message: str = ""
    fixed_failure: str = ""


@dataclass
class ContainerRuntime:
    """What the kubelet knows about one container of a pod, across its restarts."""

    spec: dict[str, Any]
    is_init: bool
    restart_count: int = 0
    counts_next_start: bool = False
    popen: subprocess.Popen[bytes] | None = None
    pid: int = 0
    start_ticks: int = 0
    started_at: str = ""
    started_mono: float = 0.0
    state: dict[str, Any] = field(
        default_factory=lambda: podspec.waiting_state(podspec.REASON_CONTAINER_CREATING)
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    done: bool = False
    next_start_at: float = 0.0
    backoff: float = 0.0
    kill_deadline: float | None = None
    kill_reason: str = ""
    image_spec: images.ImageSpec | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    readiness: ProbeState | None = None
    liveness: ProbeState | None = None
    startup: ProbeState | None = None
    last_error: str = ""

    @property
    def name(self) -> str:
        """The container's name."""
        return str(self.spec.get("name", ""))

    @property
    def container_id(self) -> str:
        """``devcluster://<pid>`` of the current (or last) run; '' before the first start."""
        return f"devcluster://{self.pid}" if self.pid else ""

    def status(self) -> dict[str, Any]:
        """This container's ``containerStatuses`` entry."""
        entry: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": self.image_spec.image_id if self.image_spec else "",
            "ready": bool(self.ready and self.popen is not None),
            "restartCount": self.restart_count,
            "started": bool(self.started and self.popen is not None),
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            entry["containerID"] = self.container_id
        return entry


def _init_succeeded(container: ContainerRuntime) -> bool:
    terminated = container.state.get("terminated") or {}
    return container.done and container.popen is None and terminated.get("exitCode") == 0


# --- pods -----------------------------------------------------------------------------------------


class PodRuntime:
    """One pod on this node: its address, directories, volumes, tokens and containers."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.kubelet = kubelet
        self.pod = pod
        self.uid = str(meta["uid"])
        self.namespace = str(meta["namespace"])
        self.name = str(meta["name"])
        self.key = f"{self.namespace}_{self.name}_{self.uid}"
        spec = pod.get("spec") or {}
        self.host_network = bool(spec.get("hostNetwork"))
        self.pod_ip = ""
        self.dir = kubelet.run_dir / "pods" / self.key
        self.log_dir = kubelet.run_dir / "logs" / self.key
        previous = {
            s.get("name"): s
            for s in [
                *((pod.get("status") or {}).get("containerStatuses") or []),
                *((pod.get("status") or {}).get("initContainerStatuses") or []),
            ]
        }
        self.init = [self._container(c, True, previous) for c in spec.get("initContainers") or []]
        self.main = [self._container(c, False, previous) for c in spec.get("containers") or []]
        self.start_time = (pod.get("status") or {}).get("startTime") or rfc3339()
        self.volumes_ready = False
        self.volumes_dirty = True
        self.volume_error = ""
        self.next_volume_sync = 0.0
        self.projected: dict[str, podspec.VolumeContent] = {}
        self.sources: set[tuple[str, str]] = set()
        self.tokens: dict[podspec.TokenNeed, tuple[str, float]] = {}
        self.token_refresh_at = float("inf")
        self.terminating = False
        self.deleted_from_api = False
        self.last_status: dict[str, Any] | None = None
        self.next_status_write = 0.0
        self.terminal = False
        self.events_sent: set[tuple[str, str]] = set()

    @staticmethod
    def _container(spec: dict[str, Any], is_init: bool, previous: Mapping[Any, Any]) -> ContainerRuntime:
        before = previous.get(spec.get("name")) or {}
        container = ContainerRuntime(
            spec=spec, is_init=is_init, restart_count=int(before.get("restartCount") or 0)
        )
        # The pod ran under an earlier kubelet process: starting it again is a restart.
        container.counts_next_start = bool(before.get("containerID"))
        return container

    @property
    def containers(self) -> list[ContainerRuntime]:
        """Init containers then app containers."""
        return [*self.init, *self.main]

    @property
    def restart_policy(self) -> str:
        """The pod's restartPolicy (Always by default)."""
        return str((self.pod.get("spec") or {}).get("restartPolicy") or "Always")

    def view(self) -> dict[str, Any]:
        """The pod as the downward API sees it: with this kubelet's address and node filled in."""
        status = dict(self.pod.get("status") or {})
        status.update(
            {
                "podIP": self.pod_ip,
                "podIPs": [{"ip": self.pod_ip}],
                "hostIP": HOST_IP,
                "hostIPs": [{"ip": HOST_IP}],
            }
        )
        spec = dict(self.pod.get("spec") or {})
        spec["nodeName"] = self.kubelet.node_name
        return {**self.pod, "spec": spec, "status": status}

    def volume_dir(self, name: str) -> str:
        """Where volume ``name`` lives on disk."""
        return str(self.dir / "volumes" / name)

    def root(self, container: ContainerRuntime) -> Path:
        """The container's root: mount paths appear below it (``$DEVCLUSTER_ROOT``)."""
        return self.dir / "rootfs" / container.name

    def grace_seconds(self) -> float:
        """The termination grace period to honour (capped at the kubelet's maximum)."""
        meta = self.pod.get("metadata") or {}
        spec = self.pod.get("spec") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        return max(0.0, min(float(grace), self.kubelet.max_grace))


class Kubelet:
    """The process kubelet: node registration, informers, the reconcile loop and shutdown."""

    def __init__(
        self,
        kubeconfig: Path,
        run_dir: Path,
        node_name: str,
        *,
        max_grace: float = MAX_GRACE_SECONDS,
        pod_ip_lock_dir: Path | None = None,
    ) -> None:
        self.kubeconfig = Path(kubeconfig).resolve()
        self.run_dir = Path(run_dir).resolve()
        self.node_name = node_name
        self.max_grace = max_grace
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "pods").mkdir(exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        self.api = KubeApi(self.kubeconfig)
        self.cache = ObjectCache(self.api)
        self.live = ObjectCache(self.api, live=True)
        lock_dir = pod_ip_lock_dir or Path(os.environ.get(POD_IP_LOCK_DIR_ENV) or "/tmp/devcluster-pod-ips")
        self.ips = PodIpAllocator(self.run_dir / "pod-ips.json", lock_dir)
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.api_pods: dict[str, dict[str, Any]] = {}
        self.deleted_uids: set[str] = set()
        self.dirty_sources: set[tuple[str, str, str]] = set()
        self.runtimes: dict[str, PodRuntime] = {}
        self.finished: dict[str, float] = {}
        self.bind_attempts: dict[str, float] = {}
        self.unschedulable_logged: set[str] = set()
        self.probes = ThreadPoolExecutor(max_workers=PROBE_WORKERS, thread_name_prefix="probe")
        self.started_at = rfc3339()
        self.node = NodeHeartbeat(self.api, node_name, self.run_dir, self.started_at, self._kubelet_port)
        self.pods_informer: Informer | None = None
        self.python_bin = Path(sys.executable).parent
        parsed = urlparse(self.api.server)
        self.api_host = parsed.hostname or HOST_IP
        self.api_port = parsed.port or 443
        self.cluster_id = os.environ.get(CLUSTER_ID_ENV, "")
        self.server: KubeletServer | None = None

    # ---- lifecycle

    def run(self) -> None:
        """Register the node, start the informers and heartbeat, reconcile until stopped, then stop
        every container."""
        killed = kill_leftover_processes(self.run_dir)
        if killed:
            log.info("killed %d container processes left by a previous kubelet: %s", len(killed), killed)
        self.server = KubeletServer(self)
        self.server.start()
        self._read_version()
        self.node.register()
        informers = self._start_informers()
        threading.Thread(
            target=self.node.loop, args=(self.stop_event,), name="heartbeat", daemon=True
        ).start()
        for informer in informers:
            while not informer.synced.wait(0.5):
                if self.stop_event.is_set():
                    break
        with self.lock:
            live = set(self.api_pods)
        self.ips.keep_only(live)
        write_atomic(self.run_dir / "kubelet.ready", f"{os.getpid()}\n".encode(), 0o644)
        log.info("node %s registered and informers synced; reconciling", self.node_name)
        try:
            while not self.stop_event.is_set():
                self.wake.wait(SYNC_INTERVAL)
                self.wake.clear()
                if self.stop_event.is_set():
                    break
                try:
                    self.reconcile_once()
                except Exception:
                    log.exception("reconcile failed; retrying")
                    self.stop_event.wait(RETRY_INTERVAL)
        finally:
            self.shutdown()

    def stop(self) -> None:
        """Ask the kubelet to stop (signal-handler safe)."""
        self.stop_event.set()
        self.wake.set()

    def shutdown(self) -> None:
        """Stop every container: SIGTERM to each process group, wait (bounded), SIGKILL the rest."""
        containers = [c for r in self.runtimes.values() for c in r.containers if c.popen is not None]
        log.info("shutting down: stopping %d containers", len(containers))
        for container in containers:
            _signal_group(container.pid, signal.SIGTERM)
        deadline = time.monotonic() + min(SHUTDOWN_GRACE_SECONDS, self.max_grace)
        while time.monotonic() < deadline and any(
            c.popen is not None and c.popen.poll() is None for c in containers
        ):
            time.sleep(0.05)
        for container in containers:
            _signal_group(container.pid, signal.SIGKILL)
            if container.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    container.popen.wait(timeout=2)
        self._save_processes()
        self.probes.shutdown(wait=False, cancel_futures=True)
        if self.server is not None:
            self.server.stop()
        with contextlib.suppress(Exception):
            self.node.patch_status(ready=False, timeout=2.0)
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "kubelet.ready").unlink()
        log.info("kubelet stopped")

    def _read_version(self) -> None:
        try:
            node = self.node
            node.version = str(self.api.get("/version", timeout=10).get("gitVersion") or node.version)
        except Exception as exc:
            log.warning("reading /version: %r", exc)

    def _kubelet_port(self) -> int:
        return self.server.port if self.server else 0

    def node_labels(self) -> dict[str, str]:
        """The labels this node carries (and nodeSelectors are matched against)."""
        return self.node.labels()

    # ---- informers

    def _start_informers(self) -> list[Informer]:
        core = self.api.core
        pods = Informer(
            self.api,
            "pods",
            "/api/v1/pods",
            raw_watch_func(core.list_pod_for_all_namespaces),
            self._on_pod_list,
            self._on_pod_event,
            self.stop_event,
        )
        configmaps = Informer(
            self.api,
            "configmaps",
            "/api/v1/configmaps",
            raw_watch_func(core.list_config_map_for_all_namespaces),
            lambda items: self._on_source_list("ConfigMap", items),
            lambda event, obj: self._on_source_event("ConfigMap", event, obj),
            self.stop_event,
        )
        secrets = Informer(
            self.api,
            "secrets",
            "/api/v1/secrets",
            raw_watch_func(core.list_secret_for_all_namespaces),
            lambda items: self._on_source_list("Secret", items),
            lambda event, obj: self._on_source_event("Secret", event, obj),
            self.stop_event,
        )
        for informer in (pods, configmaps, secrets):
            informer.start()
        self.pods_informer = pods
        return [pods, configmaps, secrets]

    def _relevant(self, pod: Mapping[str, Any]) -> bool:
        node = (pod.get("spec") or {}).get("nodeName") or ""
        return node in ("", self.node_name)

    def _on_pod_list(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            fresh = {p["metadata"]["uid"]: p for p in items if self._relevant(p)}
            self.deleted_uids |= set(self.api_pods) - set(fresh)
            self.api_pods = fresh
        self.wake.set()

    def _on_pod_event(self, event: str, pod: dict[str, Any]) -> None:
        uid = (pod.get("metadata") or {}).get("uid")
        if not uid:
            return
        with self.lock:
            if event == "DELETED" or not self._relevant(pod):
                if self.api_pods.pop(uid, None) is not None or event == "DELETED":
                    self.deleted_uids.add(uid)
            else:
                self.api_pods[uid] = pod
        self.wake.set()

    def _on_source_list(self, kind: str, items: list[dict[str, Any]]) -> None:
        self.cache.replace(kind, items)
        with self.lock:
            for item in items:
                meta = item.get("metadata") or {}
                self.dirty_sources.add((kind, meta.get("namespace", ""), meta.get("name", "")))
        self.wake.set()

    def _on_source_event(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        self.cache.apply(kind, event, obj)
        meta = obj.get("metadata") or {}
        with self.lock:
            self.dirty_sources.add((kind, meta.get("namespace", ""), meta.get("name", "")))
        self.wake.set()

    # ---- reconcile

    def reconcile_once(self) -> None:
        """One pass: bind unscheduled pods, start/track/stop pods on this node, write statuses."""
        with self.lock:
            api_pods = dict(self.api_pods)
            deleted, self.deleted_uids = self.deleted_uids, set()
            dirty, self.dirty_sources = self.dirty_sources, set()
        now = time.monotonic()
        for uid in deleted:
            self.finished.pop(uid, None)
            self.bind_attempts.pop(uid, None)
            self.unschedulable_logged.discard(uid)
            runtime = self.runtimes.get(uid)
            if runtime is not None:
                runtime.deleted_from_api = True
                if not runtime.terminating:
                    self._begin_termination(runtime, "the pod was deleted")
        for uid, pod in api_pods.items():
            meta = pod.get("metadata") or {}
            spec = pod.get("spec") or {}
            if not spec.get("nodeName"):
                if not meta.get("deletionTimestamp"):
                    self._maybe_bind(pod, now)
                continue
            runtime = self.runtimes.get(uid)
            if runtime is None:
                if meta.get("deletionTimestamp"):
                    if uid not in self.finished:
                        self._delete_now(pod)
                    continue
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                runtime = PodRuntime(self, pod)
                self.runtimes[uid] = runtime
                log.info("pod %s/%s: admitted", runtime.namespace, runtime.name)
            runtime.pod = pod
            if meta.get("deletionTimestamp") and not runtime.terminating:
                self._begin_termination(runtime, "the pod is being deleted")
        for runtime in list(self.runtimes.values()):
            if runtime.sources & {(k, n) for k, ns, n in dirty if ns == runtime.namespace}:
                runtime.volumes_dirty = True
            try:
                done = self._sync_pod(runtime)
            except Exception:
                log.exception("pod %s/%s: sync failed", runtime.namespace, runtime.name)
                done = False
            if done:
                del self.runtimes[runtime.uid]
        # Bounded memory: forget deletions finished long ago that the watch never confirmed.
        for uid, when in list(self.finished.items()):
            if now - when > 600:
                del self.finished[uid]

    def _maybe_bind(self, pod: dict[str, Any], now: float) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if now < self.bind_attempts.get(uid, 0.0):
            return
        self.bind_attempts[uid] = now + BIND_RETRY_INTERVAL
        selector = (pod.get("spec") or {}).get("nodeSelector") or {}
        labels = self.node_labels()
        mismatched = {k: v for k, v in selector.items() if labels.get(k) != v}
        if mismatched:
            if uid not in self.unschedulable_logged:
                self.unschedulable_logged.add(uid)
                log.info(
                    "pod %s/%s: not binding, nodeSelector %s does not match node labels",
                    meta["namespace"],
                    meta["name"],
                    mismatched,
                )
                self._event(
                    pod,
                    "Warning",
                    "FailedScheduling",
                    f"0/1 nodes are available: node {self.node_name} does not match "
                    f"nodeSelector {mismatched}",
                )
            return
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.api.request(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body=body
            )
            log.info("pod %s/%s: bound to %s", meta["namespace"], meta["name"], self.node_name)
            self._event(
                pod,
                "Normal",
                "Scheduled",
                f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.node_name}",
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning(
                    "pod %s/%s: binding failed: %s %s", meta["namespace"], meta["name"], exc.status, exc.body
                )

    def _delete_now(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        self.finished[meta["uid"]] = time.monotonic()
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        try:
            self.api.request(
                "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body=body
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning(
                    "pod %s/%s: final delete failed: %s %s",
                    meta["namespace"],
                    meta["name"],
                    exc.status,
                    exc.body,
                )

    def _event(
        self, pod: Mapping[str, Any], kind: str, reason: str, message: str, field_path: str = ""
    ) -> None:
        meta = pod.get("metadata") or {}
        now = rfc3339()
        involved = {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
        }
        if field_path:
            involved["fieldPath"] = field_path
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": COMPONENT, "host": self.node_name},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node_name,
        }
        try:
            self.api.request(
                "POST", f"/api/v1/namespaces/{meta.get('namespace')}/events", body=body, timeout=5
            )
        except Exception as exc:
            log.debug(
                "event %s for %s/%s not recorded: %r", reason, meta.get("namespace"), meta.get("name"), exc
            )

    def _event_once(
        self, runtime: PodRuntime, kind: str, reason: str, message: str, container: str = ""
    ) -> None:
        if (reason, message) in runtime.events_sent:
            return
        runtime.events_sent.add((reason, message))
        self._event(
            runtime.pod, kind, reason, message, f"spec.containers{{{container}}}" if container else ""
        )

    # ---- one pod

    def _sync_pod(self, runtime: PodRuntime) -> bool:
        """Drive one pod a step; True once it is gone for good (stopped and cleaned up)."""
        now = time.monotonic()
        if runtime.terminating:
            return self._drive_termination(runtime, now)
        if runtime.terminal:
            self._write_status(runtime)
            return False
        if not runtime.pod_ip:
            runtime.pod_ip = HOST_IP if runtime.host_network else self.ips.allocate(runtime.uid)
            runtime.dir.mkdir(parents=True, exist_ok=True)
            runtime.log_dir.mkdir(parents=True, exist_ok=True)
        if runtime.volumes_dirty or now >= runtime.next_volume_sync or now >= runtime.token_refresh_at:
            self._sync_volumes(runtime, now)
        if runtime.volumes_ready:
            pending_init = next((c for c in runtime.init if not _init_succeeded(c)), None)
            if pending_init is not None:
                # In order, one at a time; one that failed for good (restartPolicy Never) fails the
                # pod and nothing after it runs.
                if not pending_init.done:
                    self._drive_container(runtime, pending_init, now)
                for container in runtime.main:
                    if container.popen is None and container.restart_count == 0 and not container.last_state:
                        container.state = podspec.waiting_state(podspec.REASON_POD_INITIALIZING)
            else:
                for container in runtime.main:
                    self._drive_container(runtime, container, now)
        else:
            for container in runtime.containers:
                if container.popen is None:
                    container.state = podspec.waiting_state(
                        podspec.REASON_CONTAINER_CREATING, runtime.volume_error
                    )
        self._write_status(runtime)
        return False

    # ---- volumes

    def _sync_volumes(self, runtime: PodRuntime, now: float) -> None:
        lookup = self.live if not runtime.volumes_ready else self.cache
        pod = runtime.view()
        contents: dict[str, podspec.VolumeContent] = {}
        try:
            for volume in (pod.get("spec") or {}).get("volumes") or []:
                content = podspec.plan_volume(
                    pod, volume, lookup, lambda need: self._token(runtime, need), self._allocatable()
                )
                contents[content.name] = content
        except podspec.PodSpecError as exc:
            runtime.volume_error = exc.message
            runtime.volumes_dirty = False
            runtime.next_volume_sync = now + RETRY_INTERVAL
            if not runtime.volumes_ready:
                self._event_once(runtime, "Warning", "FailedMount", exc.message)
                log.info("pod %s/%s: volumes not ready: %s", runtime.namespace, runtime.name, exc.message)
            return
        for name, content in contents.items():
            if runtime.projected.get(name) == content:
                continue
            write_volume(Path(runtime.volume_dir(name)), content)
            runtime.projected[name] = content
        runtime.sources = {src for c in contents.values() for src in c.sources}
        if any(podspec.service_account_volume(pod, c.spec) for c in runtime.containers):
            self._write_pod_kubeconfig(runtime)
        runtime.volumes_ready = True
        runtime.volumes_dirty = False
        runtime.volume_error = ""
        runtime.next_volume_sync = now + VOLUME_RESYNC_INTERVAL

    def _token(self, runtime: PodRuntime, need: podspec.TokenNeed) -> str:
        cached = runtime.tokens.get(need)
        now = time.monotonic()
        if cached is not None and now < cached[1]:
            return cached[0]
        account = (runtime.pod.get("spec") or {}).get("serviceAccountName") or "default"
        spec: dict[str, Any] = {
            "expirationSeconds": max(600, need.expiration_seconds),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": runtime.name, "uid": runtime.uid},
        }
        if need.audience:
            spec["audiences"] = [need.audience]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        try:
            answer = self.api.request(
                "POST", f"/api/v1/namespaces/{runtime.namespace}/serviceaccounts/{account}/token", body=body
            )
        except ApiException as exc:
            raise podspec.PodSpecError(
                podspec.REASON_CONTAINER_CREATING,
                f"TokenRequest for ServiceAccount {runtime.namespace}/{account} failed: "
                f"{exc.status} {exc.reason} {exc.body or ''}".strip(),
            ) from exc
        token = str(answer["status"]["token"])
        expires = parse_rfc3339(answer["status"]["expirationTimestamp"], "status.expirationTimestamp")
        lifetime = max(60.0, expires - time.time())
        refresh_at = now + min(lifetime * TOKEN_REFRESH_FRACTION, TOKEN_MAX_AGE)
        runtime.tokens[need] = (token, refresh_at)
        runtime.token_refresh_at = min(t[1] for t in runtime.tokens.values())
        return token

    def _write_pod_kubeconfig(self, runtime: PodRuntime) -> None:
        ca_path = runtime.dir / "cluster-ca.crt"
        if not ca_path.exists():
            write_atomic(ca_path, self.api.ca_pem, 0o644)
        volume = next(
            v for c in runtime.containers if (v := podspec.service_account_volume(runtime.pod, c.spec))
        )
        token_file = Path(runtime.volume_dir(volume)) / "token"
        account = (runtime.pod.get("spec") or {}).get("serviceAccountName") or "default"
        user = f"system:serviceaccount:{runtime.namespace}:{account}"
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devcluster",
                    "cluster": {"server": self.api.server, "certificate-authority": str(ca_path)},
                }
            ],
            "users": [{"name": user, "user": {"tokenFile": str(token_file)}}],
            "contexts": [
                {
                    "name": "pod",
                    "context": {"cluster": "devcluster", "user": user, "namespace": runtime.namespace},
                }
            ],
            "current-context": "pod",
        }
        data = yaml.safe_dump(document, sort_keys=False).encode()
        path = runtime.dir / "kubeconfig"
        if not path.exists() or path.read_bytes() != data:
            write_atomic(path, data, 0o600)

    def _allocatable(self) -> dict[str, str]:
        return {
            "cpu": str(os.cpu_count() or 1),
            "memory": str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")),
            "ephemeral-storage": str(shutil.disk_usage(self.run_dir).total),
        }

    # ---- containers

    def _drive_container(self, runtime: PodRuntime, container: ContainerRuntime, now: float) -> None:
        if container.popen is not None:
            returncode = container.popen.poll()
            if returncode is None:
                if container.kill_deadline is not None and now >= container.kill_deadline:
                    _signal_group(container.pid, signal.SIGKILL)
                    container.kill_deadline = None
                else:
                    self._drive_probes(runtime, container, now)
                return
            self._on_exit(runtime, container, returncode, now)
        if container.done or runtime.terminating or now < container.next_start_at:
            return
        self._start_container(runtime, container, now)

    def _on_exit(self, runtime: PodRuntime, container: ContainerRuntime, returncode: int, now: float) -> None:
        exit_code = podspec.exit_code_of(returncode)
        # The leader is gone; anything it left in its group goes with it.
        _signal_group(container.pid, signal.SIGKILL)
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": podspec.terminated_reason(exit_code),
            "startedAt": container.started_at,
            "finishedAt": rfc3339(),
            "containerID": container.container_id,
        }
        if returncode < 0:
            terminated["signal"] = -returncode
        if container.kill_reason:
            terminated["message"] = container.kill_reason
        container.popen = None
        container.ready = False
        container.started = False
        container.kill_deadline = None
        container.kill_reason = ""
        container.readiness = container.liveness = container.startup = None
        self._save_processes()
        log.info(
            "pod %s/%s: container %s exited with %d",
            runtime.namespace,
            runtime.name,
            container.name,
            exit_code,
        )
        policy = runtime.restart_policy
        if container.is_init and policy == "Always":
            policy = "OnFailure"
        restart = policy == "Always" or (policy == "OnFailure" and exit_code != 0)
        if container.is_init and exit_code == 0:
            restart = False
        if not restart:
            container.state = {"terminated": terminated}
            container.done = True
            return
        ran = now - container.started_mono
        container.backoff = (
            BACKOFF_INITIAL
            if ran >= BACKOFF_RESET_AFTER or not container.backoff
            else min(container.backoff * 2, BACKOFF_MAX)
        )
        container.next_start_at = now + container.backoff
        container.last_state = {"terminated": terminated}
        container.counts_next_start = True
        message = (
            f"back-off {container.backoff:.0f}s restarting failed container={container.name} "
            f"pod={runtime.name}"
        )
        container.state = podspec.waiting_state(podspec.REASON_CRASH_LOOP, message)
        self._event(
            runtime.pod,
            "Warning",
            "BackOff",
            f"Back-off restarting failed container {container.name}",
            f"spec.containers{{{container.name}}}",
        )

    def _start_container(self, runtime: PodRuntime, container: ContainerRuntime, now: float) -> None:
        pod = runtime.view()
        spec = container.spec
        root = runtime.root(container)
        try:
            image_spec = images.resolve_image(str(spec.get("image", "")))
        except images.ImageNotMappedError as exc:
            self._container_cannot_start(runtime, container, exc.reason, str(exc), now)
            return
        container.image_spec = image_spec
        try:
            env = self._container_env(runtime, container, pod, image_spec, root)
            argv = podspec.build_command(spec, image_spec, env, pod_ip=runtime.pod_ip, root=str(root))
            links = podspec.plan_mounts(spec, str(root), runtime.volume_dir, env)
            prepare_root(root, links, image_spec.working_dir)
        except podspec.PodSpecError as exc:
            self._container_cannot_start(runtime, container, exc.reason, exc.message, now)
            return
        working_dir = str(spec.get("workingDir") or image_spec.working_dir)
        cwd = root / working_dir.lstrip("/")
        cwd.mkdir(parents=True, exist_ok=True)
        if container.counts_next_start:
            container.restart_count += 1
        log_path = runtime.log_dir / container.name / f"{container.restart_count}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with log_path.open("ab") as log_file:
                popen = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=_die_with_kubelet,
                )
        except OSError as exc:
            if container.counts_next_start:
                container.restart_count -= 1
            self._container_cannot_start(
                runtime, container, "StartError", f"starting {argv[0]!r} failed: {exc.strerror or exc}", now
            )
            return
        container.popen = popen
        container.pid = popen.pid
        container.start_ticks = process_start_ticks(popen.pid) or 0
        container.started_at = rfc3339()
        container.started_mono = now
        container.env = env
        container.cwd = str(cwd)
        container.state = {"running": {"startedAt": container.started_at}}
        container.last_error = ""
        container.ready = False
        self._plan_probes(runtime, container, now)
        self._save_processes()
        log.info(
            "pod %s/%s: started container %s (pid %d, ip %s): %s",
            runtime.namespace,
            runtime.name,
            container.name,
            popen.pid,
            runtime.pod_ip,
            shlex.join(argv)[:500],
        )
        self._event(
            runtime.pod,
            "Normal",
            "Started",
            f"Started container {container.name} (pid {popen.pid})",
            f"spec.containers{{{container.name}}}",
        )

    def _container_cannot_start(
        self, runtime: PodRuntime, container: ContainerRuntime, reason: str, message: str, now: float
    ) -> None:
        container.state = podspec.waiting_state(reason, message)
        container.next_start_at = now + RETRY_INTERVAL
        if message != container.last_error:
            container.last_error = message
            log.warning(
                "pod %s/%s: container %s cannot start (%s): %s",
                runtime.namespace,
                runtime.name,
                container.name,
                reason,
                message,
            )
            self._event(
                runtime.pod,
                "Warning",
                "Failed",
                f"Error: {reason}: {message}",
                f"spec.containers{{{container.name}}}",
            )

    def _container_env(
        self,
        runtime: PodRuntime,
        container: ContainerRuntime,
        pod: Mapping[str, Any],
        image_spec: images.ImageSpec,
        root: Path,
    ) -> dict[str, str]:
        service_env = {
            "KUBERNETES_SERVICE_HOST": self.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.api_port),
            "KUBERNETES_PORT": f"tcp://{self.api_host}:{self.api_port}",
        }
        resolved = podspec.resolve_env(
            pod, container.spec, self.live, service_env=service_env, node_allocatable=self._allocatable()
        )
        if resolved.skipped_names:
            self._event_once(
                runtime,
                "Warning",
                "InvalidEnvironmentVariableNames",
                f"Keys [{', '.join(resolved.skipped_names)}] from envFrom were skipped: "
                "they are not valid environment variable names",
                container.name,
            )
        links = podspec.plan_mounts(container.spec, str(root), runtime.volume_dir, resolved.values)
        base = {
            "PATH": f"{self.python_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(root),
            "HOSTNAME": runtime.name,
            "LANG": "C.UTF-8",
            "TMPDIR": str(root / "tmp"),
        }
        if os.environ.get("PYTHONPATH"):
            # The cluster runs the kubelet from a checkout (PYTHONPATH); pods running our image or
            # `python` then import that same code.
            base["PYTHONPATH"] = os.environ["PYTHONPATH"]
        # Platform facts of the devcluster override the manifest: a process must bind its own pod
        # address (0.0.0.0 would collide with every other pod) and find its mounts under its root.
        forced = {
            "DEVCLUSTER_POD_IP": runtime.pod_ip,
            "CACHEWARDEN_BIND_HOST": runtime.pod_ip,
            "DEVCLUSTER_ROOT": str(root),
            "DEVCLUSTER_POD_NAME": runtime.name,
            "DEVCLUSTER_POD_NAMESPACE": runtime.namespace,
            **podspec.mount_env(links),
        }
        if podspec.service_account_volume(runtime.pod, container.spec):
            forced["KUBECONFIG"] = str(runtime.dir / "kubeconfig")
        if self.cluster_id:
            # The cluster's teardown sweeps every process carrying its id; pods must carry it too.
            forced[CLUSTER_ID_ENV] = self.cluster_id
        return {**base, **image_spec.env, **service_env, **resolved.values, **forced}

    # ---- probes

    def _plan_probes(self, runtime: PodRuntime, container: ContainerRuntime, now: float) -> None:
        spec = container.spec
        plans = {}
        try:
            for kind in ("readiness", "liveness", "startup"):
                plans[kind] = (
                    None
                    if container.is_init
                    else podspec.plan_probe(spec.get(f"{kind}Probe"), spec, runtime.pod_ip, kind)
                )
        except podspec.PodSpecError as exc:
            self._event_once(runtime, "Warning", "Unhealthy", exc.message, container.name)
            plans = {"readiness": None, "liveness": None, "startup": None}
            container.last_error = exc.message

        def state(plan: podspec.ProbePlan | None) -> ProbeState | None:
            if plan is None:
                return None
            probe = ProbeState(plan=plan, next_at=now + plan.initial_delay)
            if plan.kind == "exec" and container.image_spec is not None:
                # As the real kubelet does, exec commands are $(VAR)-expanded with the environment.
                command = [podspec.expand(arg, container.env) for arg in plan.command]
                try:
                    argv = podspec.local_argv(
                        command,
                        spec,
                        container.image_spec,
                        pod_ip=runtime.pod_ip,
                        root=container.env.get("DEVCLUSTER_ROOT", ""),
                    )
                    probe.plan = dataclasses.replace(plan, command=tuple(argv))
                except podspec.PodSpecError as exc:
                    probe.fixed_failure = exc.message
            return probe

        container.readiness = state(plans["readiness"])
        container.liveness = state(plans["liveness"])
        container.startup = state(plans["startup"])
        container.started = container.startup is None

    def _drive_probes(self, runtime: PodRuntime, container: ContainerRuntime, now: float) -> None:
        if container.kill_deadline is not None:
            return
        if not container.started:
            probe = container.startup
            assert probe is not None
            outcome = self._step_probe(runtime, container, probe, now)
            if outcome is True:
                container.started = True
                now_mono = time.monotonic()
                for other in (container.readiness, container.liveness):
                    if other is not None:
                        other.next_at = max(other.next_at, now_mono)
            elif outcome is False:
                self._kill_for_probe(runtime, container, "startup", probe)
            return
        if container.liveness is not None:
            outcome = self._step_probe(runtime, container, container.liveness, now)
            if outcome is False:
                self._kill_for_probe(runtime, container, "liveness", container.liveness)
                return
        if container.readiness is not None:
            outcome = self._step_probe(runtime, container, container.readiness, now)
            if outcome is not None:
                container.ready = outcome
        elif not container.ready:
            ports = podspec.container_ports(container.spec)
            container.ready = all(_port_open(runtime.pod_ip, port) for port in ports)

    def _step_probe(
        self, runtime: PodRuntime, container: ContainerRuntime, probe: ProbeState, now: float
    ) -> bool | None:
        """Advance a probe; returns True/False when its threshold state flips, None otherwise."""
        if probe.future is not None:
            if not probe.future.done():
                return None
            try:
                ok, message = probe.future.result()
            except Exception as exc:
                ok, message = False, repr(exc)
            probe.future = None
            probe.next_at = now + probe.plan.period
            if ok:
                probe.successes += 1
                probe.failures = 0
                if not probe.passed and probe.successes >= probe.plan.success_threshold:
                    probe.passed = True
                    return True
            else:
                probe.failures += 1
                probe.successes = 0
                probe.last_message = message
                if probe.failures == probe.plan.failure_threshold:
                    self._event(
                        runtime.pod,
                        "Warning",
                        "Unhealthy",
                        f"probe failed: {message}",
                        f"spec.containers{{{container.name}}}",
                    )
                if probe.failures >= probe.plan.failure_threshold and (
                    probe.passed or probe.failures == probe.plan.failure_threshold
                ):
                    probe.passed = False
                    return False
            return None
        if now >= probe.next_at:
            if probe.fixed_failure:
                probe.future = Future()
                probe.future.set_result((False, probe.fixed_failure))
            else:
                probe.future = self.probes.submit(run_probe, probe.plan, container.env, container.cwd)
        return None

    def _kill_for_probe(
        self, runtime: PodRuntime, container: ContainerRuntime, kind: str, probe: ProbeState
    ) -> None:
        grace = probe.plan.termination_grace
        if grace is None:
            grace = float((runtime.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        grace = max(0.0, min(grace, self.max_grace))
        container.kill_reason = f"{kind} probe failed: {probe.last_message}"
        container.kill_deadline = time.monotonic() + grace
        container.ready = False
        log.info(
            "pod %s/%s: container %s failed its %s probe, restarting",
            runtime.namespace,
            runtime.name,
            container.name,
            kind,
        )
        self._event(
            runtime.pod,
            "Normal",
            "Killing",
            f"Container {container.name} failed {kind} probe, will be restarted",
            f"spec.containers{{{container.name}}}",
        )
        _signal_group(container.pid, signal.SIGTERM)

    # ---- termination

    def _begin_termination(self, runtime: PodRuntime, why: str) -> None:
        runtime.terminating = True
        grace = runtime.grace_seconds()
        deadline = time.monotonic() + grace
        for container in runtime.containers:
            if container.popen is not None and container.popen.poll() is None:
                container.kill_deadline = deadline
                _signal_group(container.pid, signal.SIGTERM)
                self._event(
                    runtime.pod,
                    "Normal",
                    "Killing",
                    f"Stopping container {container.name}",
                    f"spec.containers{{{container.name}}}",
                )
        log.info("pod %s/%s: stopping (%s), grace %.0fs", runtime.namespace, runtime.name, why, grace)

    def _drive_termination(self, runtime: PodRuntime, now: float) -> bool:
        running = False
        for container in runtime.containers:
            if container.popen is None:
                continue
            returncode = container.popen.poll()
            if returncode is None:
                running = True
                if container.kill_deadline is not None and now >= container.kill_deadline:
                    _signal_group(container.pid, signal.SIGKILL)
                    container.kill_deadline = None
                continue
            _signal_group(container.pid, signal.SIGKILL)
            container.popen = None
            exit_code = podspec.exit_code_of(returncode)
            container.state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": podspec.terminated_reason(exit_code),
                    "startedAt": container.started_at,
                    "finishedAt": rfc3339(),
                    "containerID": container.container_id,
                }
            }
        if running:
            return False
        self._save_processes()
        self._cleanup(runtime)
        if not runtime.deleted_from_api:
            self._delete_now(runtime.pod)
        log.info("pod %s/%s: stopped and removed", runtime.namespace, runtime.name)
        return True

    def _cleanup(self, runtime: PodRuntime) -> None:
        if not runtime.host_network:
            self.ips.release(runtime.uid)
        # Volumes hold secrets and tokens; logs stay (they are what one reads after a failure).
        shutil.rmtree(runtime.dir, ignore_errors=True)

    # ---- logs

    def container_log(
        self, namespace: str, pod: str, container: str, previous: bool
    ) -> tuple[Path, Callable[[], bool]] | str:
        """The log file of a container run (the current one, or the one before with ``previous``)
        and a function telling whether that run still writes to it; or an error message."""
        runtime = next(
            (r for r in list(self.runtimes.values()) if r.namespace == namespace and r.name == pod), None
        )
        if runtime is not None:
            log_dir = runtime.log_dir
            found = next((c for c in runtime.containers if c.name == container), None)
            if found is None:
                names = ", ".join(c.name for c in runtime.containers)
                return f"container {container} is not valid for pod {pod} (its containers: {names})"
            current = found
            run = current.restart_count

            def live() -> bool:
                return (
                    current.popen is not None
                    and current.restart_count == run
                    and not self.stop_event.is_set()
                )

        else:
            candidates = sorted(
                (self.run_dir / "logs").glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime
            )
            if not candidates:
                return f"pod {namespace}/{pod} has no logs on node {self.node_name}"
            log_dir = candidates[-1]
            runs = sorted(int(p.stem) for p in (log_dir / container).glob("*.log") if p.stem.isdigit())
            if not runs:
                return f"container {container} of pod {namespace}/{pod} has no logs"
            run = runs[-1]

            def live() -> bool:
                return False

        if previous:
            path = log_dir / container / f"{run - 1}.log"
            if run == 0 or not path.exists():
                return f'previous terminated container "{container}" in pod "{pod}" not found'
            return path, lambda: False
        return log_dir / container / f"{run}.log", live

    # ---- status

    def _write_status(self, runtime: PodRuntime) -> None:
        now = time.monotonic()
        if now < runtime.next_status_write:
            return
        pod = dict(runtime.pod)
        if runtime.last_status is not None:
            # Conditions' transition times come from what we wrote last (the watch may lag behind);
            # conditions others own (readiness gates) from the API.
            ours = {c["type"]: c for c in runtime.last_status.get("conditions") or []}
            theirs = [
                c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") not in ours
            ]
            pod["status"] = {**(pod.get("status") or {}), "conditions": [*theirs, *ours.values()]}
        status = podspec.pod_status(
            pod,
            init_statuses=[c.status() for c in runtime.init],
            statuses=[c.status() for c in runtime.main],
            pod_ip=runtime.pod_ip,
            host_ip=HOST_IP,
            start_time=runtime.start_time,
            now=rfc3339(),
        )
        if status["phase"] in ("Succeeded", "Failed") and not runtime.terminal:
            runtime.terminal = True
            if not runtime.host_network:
                self.ips.release(runtime.uid)
            log.info("pod %s/%s: %s", runtime.namespace, runtime.name, status["phase"])
        if status == runtime.last_status:
            return
        try:
            self.api.request(
                "PATCH",
                f"/api/v1/namespaces/{runtime.namespace}/pods/{runtime.name}/status",
                body=podspec.status_patch(status),
                content_type="application/strategic-merge-patch+json",
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning(
                    "pod %s/%s: status update failed: %s %s",
                    runtime.namespace,
                    runtime.name,
                    exc.status,
                    exc.body,
                )
            runtime.next_status_write = now + 1.0
            return
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("pod %s/%s: status update failed: %r", runtime.namespace, runtime.name, exc)
            runtime.next_status_write = now + 1.0
            return
        runtime.last_status = status

    def _save_processes(self) -> None:
        records = [
            {
                "pod": f"{r.namespace}/{r.name}",
                "container": c.name,
                "pid": c.pid,
                "start_ticks": c.start_ticks,
            }
            for r in self.runtimes.values()
            for c in r.containers
            if c.popen is not None
        ]
        write_atomic(self.run_dir / "processes.json", json.dumps(records, indent=1).encode(), 0o644)


# --- files ----------------------------------------------------------------------------------------


def write_volume(directory: Path, content: podspec.VolumeContent) -> None:
    """Project a volume into ``directory`` atomically, the way the real kubelet does: the files go to
    a fresh ``..<timestamp>`` directory, ``..data`` is switched to it with one rename, and each
    top-level name is a symlink through ``..data``. A reader never sees a half-updated volume and
    watchers of ``..data`` see one change per update."""
    directory.mkdir(parents=True, exist_ok=True)
    if content.kind == "directory":
        return
    payload = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    payload.mkdir()
    for item in content.files:
        target = payload / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(item.data)
        os.chmod(target, item.mode & 0o777)
    temporary = directory / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(payload.name, temporary)
    os.replace(temporary, directory / "..data")
    top_level = {item.path.split("/", 1)[0] for item in content.files}
    for name in top_level:
        link = directory / name
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link, ignore_errors=True)
            os.symlink(f"..data/{name}", link)
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            if entry.name not in ("..data", payload.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_symlink() and entry.name not in top_level:
            entry.unlink()


def prepare_root(root: Path, links: Iterable[podspec.MountLink], working_dir: str) -> None:
    """Create the container's root with its mount links (``root/<mountPath>`` -> volume), ``tmp``
    and the image's working directory."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    (root / working_dir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for link in links:
        path = Path(link.link)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        os.symlink(link.target, path)


# --- probes ---------------------------------------------------------------------------------------


def run_probe(plan: podspec.ProbePlan, env: Mapping[str, str], cwd: str) -> tuple[bool, str]:
    """Run one probe attempt (in a probe worker thread); returns (success, message). An exec
    probe's command is already a local command line."""
    if plan.kind == "tcp":
        if _port_open(plan.host, plan.port, plan.timeout):
            return True, ""
        return False, f"dial tcp {plan.host}:{plan.port}: connection refused or timed out"
    if plan.kind == "http":
        connection: http.client.HTTPConnection
        if plan.scheme == "HTTPS":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            connection = http.client.HTTPSConnection(
                plan.host, plan.port, timeout=plan.timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(plan.host, plan.port, timeout=plan.timeout)
        try:
            headers = {"User-Agent": "kube-probe/devcluster", "Accept": "*/*", **dict(plan.headers)}
            connection.request("GET", plan.path, headers=headers)
            response = connection.getresponse()
            response.read(10 * 1024)
            if 200 <= response.status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {response.status}"
        except (OSError, http.client.HTTPException) as exc:
            return False, f"Get {plan.scheme.lower()}://{plan.host}:{plan.port}{plan.path}: {exc!r}"
        finally:
            connection.close()
    argv = list(plan.command)
    try:
        process = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd or None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return False, f"exec probe {argv[0]!r} failed to start: {exc}"
    try:
        output, _ = process.communicate(timeout=plan.timeout)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        process.communicate()
        return False, f"command timed out after {plan.timeout:.0f}s"
    if process.returncode == 0:
        return True, ""
    return False, f"command exited {process.returncode}: {output[-500:].decode('utf-8', 'replace').strip()}"


# --- entry point ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m devcluster.kubelet``: run until SIGTERM/SIGINT, then stop every pod process."""
    parser = argparse.ArgumentParser(
        prog="python -m devcluster.kubelet", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--kubeconfig", required=True, type=Path, help="credentials for the API server")
    parser.add_argument("--run-dir", required=True, type=Path, help="directory for pods, logs and state")
    parser.add_argument("--node-name", required=True, help="name of the Node to register")
    parser.add_argument(
        "--max-grace-seconds",
        type=float,
        default=MAX_GRACE_SECONDS,
        help=f"cap on termination grace periods (default {MAX_GRACE_SECONDS:.0f})",
    )
    parser.add_argument("--log-file", type=Path, default=None, help="default: <run-dir>/kubelet.log")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(args.log_file or run_dir / "kubelet.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s"))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        kubelet = Kubelet(args.kubeconfig, run_dir, args.node_name, max_grace=args.max_grace_seconds)
    except Exception as exc:
        log.exception("kubelet failed to start")
        print(f"devcluster kubelet: failed to start: {exc!r}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received signal %d", signum)
        kubelet.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        kubelet.run()
    except Exception as exc:
        log.exception("kubelet failed")
        print(f"devcluster kubelet: failed: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
