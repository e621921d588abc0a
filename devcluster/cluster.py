"""The whole local cluster: the control plane plus the process kubelet, and its state on disk.

``Cluster(run_dir).start()`` starts etcd, kube-apiserver, kube-controller-manager and the kubelet
(``python -m devcluster.kubelet --kubeconfig K --run-dir R --node-name N``, in its own session), and
returns once the node is Ready. The pids, ports and timings go to ``<run_dir>/state.json`` as each
process starts, so a later process (``cachewarden dev down``) can stop exactly those processes.

Run directory layout::

    .cachewarden-devcluster   marker: only a directory that has it is ever deleted (--purge/--fresh)
    state.json                cluster id, ports, process records (pid + start time), timings
    kubeconfig                admin kubeconfig (credentials embedded, 0600)
    pki/                      CA, certificates, service-account key pair (0600)
    etcd/                     etcd data: the cluster's contents survive `dev down` / `dev up`
    logs/<component>.log      one log per process
    kubelet/                  the kubelet's own directory (pod directories, projected volumes)
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devcluster import binaries
from devcluster.controlplane import (
    CLUSTER_ID_ENV,
    AdminApi,
    ApiError,
    ComponentStartError,
    ControlPlane,
    ManagedProcess,
    ProcessRecord,
    stop_records,
    wait_until,
)
from devcluster.pki import pki_layout

STATE_VERSION = 1
STATE_FILE = "state.json"
MARKER_FILE = ".cachewarden-devcluster"
LOCK_FILE = ".lock"
DEFAULT_NODE_NAME = "devcluster-node"
KUBELET_MODULE = "devcluster.kubelet"
NODE_READY_TIMEOUT = 90.0
# The kubelet stops its pods on SIGTERM (each with a capped grace period of its own) before exiting.
KUBELET_STOP_GRACE = 25.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ClusterError(RuntimeError):
    """The cluster's state or run directory is not usable (the message says why and what to do)."""


def default_run_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$CACHEWARDEN_DEV_DIR``, else ``<cache root>/dev`` (``~/.cache/cachewarden/dev``)."""
    env = os.environ if environ is None else environ
    if env.get("CACHEWARDEN_DEV_DIR"):
        return Path(env["CACHEWARDEN_DEV_DIR"]).expanduser().resolve()
    return binaries.cache_root(env) / "dev"


def kubelet_available() -> bool:
    """True when the process kubelet module is part of this installation."""
    return importlib.util.find_spec(KUBELET_MODULE) is not None


@dataclass
class ClusterState:
    """What ``state.json`` holds: enough for another process to find, check and stop the cluster."""

    cluster_id: str
    run_dir: str
    node_name: str
    kubeconfig: str
    ports: dict[str, int]
    processes: list[ProcessRecord]
    phase: str  # "starting" while processes are being started, "running" once ready
    started_at: float  # epoch seconds
    timings: dict[str, float] = field(default_factory=dict)
    version: int = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: Path) -> ClusterState:
        """Parse a state file; an error names the file and the field."""
        if data.get("version") != STATE_VERSION:
            raise ClusterError(
                f"{source}: version {data.get('version')!r} is not supported; accepted: {STATE_VERSION} "
                "(stop the processes it lists by hand or remove the run directory)"
            )
        try:
            return cls(
                cluster_id=str(data["cluster_id"]),
                run_dir=str(data["run_dir"]),
                node_name=str(data["node_name"]),
                kubeconfig=str(data["kubeconfig"]),
                ports={str(k): int(v) for k, v in dict(data["ports"]).items()},
                processes=[ProcessRecord.from_json(p) for p in data["processes"]],
                phase=str(data["phase"]),
                started_at=float(data["started_at"]),
                timings={str(k): float(v) for k, v in dict(data.get("timings", {})).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ClusterError(f"{source}: invalid state file: {exc!r}") from exc

    def running_processes(self) -> list[ProcessRecord]:
        """The recorded processes that are still the very processes started."""
        return [p for p in self.processes if p.is_running()]


def read_state(run_dir: Path) -> ClusterState | None:
    """The state of the cluster in ``run_dir`` (None if it has never been started)."""
    path = run_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ClusterError(f"{path}: not valid JSON ({exc}); remove it once no cluster process runs") from exc
    return ClusterState.from_json(data, path)


def write_state(run_dir: Path, state: ClusterState) -> None:
    """Write ``state.json`` atomically (a concurrent `dev status` never reads half a file)."""
    path = run_dir / STATE_FILE
    tmp = path.with_name(STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive lock on a run directory, so two `dev up`/`dev down` never interleave."""
    if not run_dir.exists():
        run_dir.mkdir(parents=True)
        os.chmod(run_dir, 0o700)
        # Ours from the start: --purge/--fresh may delete it even if no cluster ever started in it.
        (run_dir / MARKER_FILE).touch()
    with (run_dir / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"devcluster: waiting for another command on {run_dir} to finish", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def claim_run_dir(run_dir: Path) -> None:
    """Make ``run_dir`` a devcluster run directory: create it, or adopt it if it is empty; refuse
    a directory with foreign contents (it would later be deleted by --purge/--fresh)."""
    if run_dir.exists() and not (run_dir / MARKER_FILE).is_file():
        foreign = sorted(entry.name for entry in run_dir.iterdir() if entry.name != LOCK_FILE)
        if foreign:
            raise ClusterError(
                f"run directory {run_dir} already holds files devcluster did not create "
                f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); "
                "accepted: a new or empty directory"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir, 0o700)
    (run_dir / MARKER_FILE).touch()


def remove_run_dir(run_dir: Path) -> None:
    """Delete a run directory, but only one that devcluster created (it carries the marker file):
    a mistyped CACHEWARDEN_DEV_DIR must never wipe someone's home."""
    if not run_dir.exists():
        return
    leftovers = {entry.name for entry in run_dir.iterdir()}
    if not (run_dir / MARKER_FILE).is_file() and not leftovers <= {LOCK_FILE}:
        raise ClusterError(
            f"refusing to delete {run_dir}: it has no {MARKER_FILE} marker, so devcluster did not create it"
        )
    state = read_state(run_dir)
    if state is not None and state.running_processes():
        raise ClusterError(f"refusing to delete {run_dir}: cluster processes still run (dev down first)")
    shutil.rmtree(run_dir)


class Cluster:
    """A control plane plus the process kubelet in one run directory.

    Use as a context manager in tests (``with Cluster(tmp) as cluster: ...``), or ``start()`` and
    leave it running (``cachewarden dev up``), to be stopped later from its state file
    (:func:`stop_cluster`).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        bin_dir: Path | None = None,
        node_name: str = DEFAULT_NODE_NAME,
        kubelet: bool | None = None,
        extra_args: Mapping[str, Sequence[str]] | None = None,
        timeout_scale: float = 1.0,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        if len(node_name) > 253 or not _DNS_SUBDOMAIN.match(node_name):
            raise ClusterError(
                f"node name {node_name!r} is not valid; accepted: a DNS subdomain (lower-case letters, "
                "digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)"
            )
        self.node_name = node_name
        # None: run the kubelet when its module exists (the control plane alone is still useful for
        # API-only tests, and for working on it before the kubelet existed).
        self.with_kubelet = kubelet_available() if kubelet is None else kubelet
        self.extra_args = {k: list(v) for k, v in (extra_args or {}).items()}
        self.timeout_scale = timeout_scale
        self.control_plane = ControlPlane(
            self.run_dir,
            bin_dir,
            extra_args=self.extra_args,
            timeout_scale=timeout_scale,
            on_process_started=self._record_started,
            after_apiserver_ready=self._launch_kubelet if self.with_kubelet else None,
        )
        self.kubelet: ManagedProcess | None = None
        self.started_at = 0.0
        self.ready_seconds = 0.0
        self._phase = "starting"

    @property
    def cluster_id(self) -> str:
        """A random id carried by every process of this cluster (CACHEWARDEN_DEVCLUSTER_ID)."""
        return self.control_plane.cluster_id

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig."""
        return self.control_plane.kubeconfig

    @property
    def server_url(self) -> str:
        """The API server's URL."""
        return self.control_plane.server_url

    @property
    def api(self) -> AdminApi:
        """A small admin JSON client for the API server (no ``kubernetes`` import needed)."""
        if self.control_plane.api is None:
            raise ClusterError("the cluster has not been started")
        return self.control_plane.api

    def log_path(self, component: str) -> Path:
        """The log file of a component (etcd, kube-apiserver, kube-controller-manager, kubelet)."""
        return self.control_plane.log_path(component)

    def records(self) -> list[ProcessRecord]:
        """Every process started, in start order."""
        records = self.control_plane.records()
        if self.kubelet is not None and self.kubelet.record is not None:
            records.append(self.kubelet.record)
        return records

    def state(self) -> ClusterState:
        """The state as it would be written to ``state.json``."""
        return ClusterState(
            cluster_id=self.cluster_id,
            run_dir=str(self.run_dir),
            node_name=self.node_name,
            kubeconfig=str(self.kubeconfig),
            ports=asdict(self.control_plane.ports),
            processes=self.records(),
            phase=self._phase,
            started_at=self.started_at,
            timings=dict(self.control_plane.timings.phases),
        )

    def _record_started(self, _record: ProcessRecord) -> None:
        write_state(self.run_dir, self.state())

    def start(self) -> None:
        """Start everything and return once the node is Ready (or, without a kubelet, once the
        control plane is ready). On failure everything started is stopped, the state file removed,
        and :class:`ComponentStartError` names the component and shows its log tail."""
        self.started_at = time.time()
        began = time.monotonic()
        claim_run_dir(self.run_dir)
        try:
            self.control_plane.start()
            if self.with_kubelet:
                phase = time.monotonic()
                self._wait_for_node()
                self.control_plane.timings.record("node-ready", phase)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = round(time.monotonic() - began, 2)
        self.control_plane.timings.phases["total"] = self.ready_seconds
        self._phase = "running"
        write_state(self.run_dir, self.state())

    def _launch_kubelet(self) -> None:
        """Start the kubelet process (called once the API server is ready)."""
        if not kubelet_available():
            raise ComponentStartError("kubelet", f"module {KUBELET_MODULE} is not installed", None)
        env = dict(os.environ)
        # `python -m devcluster.kubelet` must import this very checkout, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        argv = [
            sys.executable, "-m", KUBELET_MODULE,
            "--kubeconfig", str(self.kubeconfig),
            "--run-dir", str(self.run_dir / "kubelet"),
            "--node-name", self.node_name,
            # One place for every component's log; stdout/stderr (tracebacks) land in the same file.
            "--log-file", str(self.log_path("kubelet")),
            *self.extra_args.get("kubelet", []),
        ]
        self.kubelet = ManagedProcess("kubelet", argv, self.log_path("kubelet"), self.cluster_id,
                                      env=env, cwd=self.run_dir)
        self.kubelet.start()
        self._record_started(self.kubelet.record)  # type: ignore[arg-type]

    def _wait_for_node(self) -> None:
        if self.kubelet is None:
            raise ComponentStartError("kubelet", "was never launched", None)
        api = self.api

        def node_ready() -> tuple[bool, str]:
            try:
                node = api.get(f"/api/v1/nodes/{self.node_name}", timeout=5)
            except ApiError as exc:
                return False, str(exc)
            conditions = {c.get("type"): c for c in node.get("status", {}).get("conditions", [])}
            ready = conditions.get("Ready", {})
            return ready.get("status") == "True", f"Ready condition: {ready or 'absent'}"

        wait_until(node_ready, NODE_READY_TIMEOUT * self.timeout_scale, self.kubelet,
                   f"node {self.node_name} to be Ready")

    def stop(self) -> None:
        """Stop the kubelet first (it stops its pods gracefully), then the control plane, then
        sweep anything left carrying the cluster id; remove the state file."""
        if self.kubelet is not None:
            self.kubelet.stop(KUBELET_STOP_GRACE)
        self.control_plane.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / STATE_FILE).unlink()

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- operations on a cluster known only from its state file (the CLI) ---------------------------


def stop_cluster(run_dir: Path) -> list[ProcessRecord]:
    """Stop the processes listed in ``run_dir``'s state file (kubelet first, etcd last), sweep any
    descendant carrying the cluster id, and remove the state file. Returns the records that were
    still running."""
    state = read_state(run_dir)
    if state is None:
        return []
    running = state.running_processes()
    stop_records(state.processes, state.cluster_id, grace_by_name={"kubelet": KUBELET_STOP_GRACE})
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    return running


@dataclass
class ClusterStatus:
    """What ``dev status`` reports."""

    run_dir: Path
    state: ClusterState | None
    running: dict[str, bool]
    apiserver_ready: bool
    apiserver_detail: str
    node_ready: bool | None

    @property
    def up(self) -> bool:
        """Every recorded process runs and the API server is ready."""
        return (
            self.state is not None
            and self.state.phase == "running"
            and all(self.running.values())
            and self.apiserver_ready
        )


def cluster_status(run_dir: Path) -> ClusterStatus:
    """Check the recorded pids (by pid and start time) and the API server's /readyz."""
    state = read_state(run_dir)
    if state is None:
        return ClusterStatus(run_dir, None, {}, False, "not started", None)
    running = {p.name: p.is_running() for p in state.processes}
    ready, detail, node_ready = False, "kube-apiserver not running", None
    if running.get("kube-apiserver") and "apiserver" in state.ports:
        api = AdminApi(state.ports["apiserver"], pki_layout(run_dir / "pki"))
        ready, detail = api.readyz(timeout=3)
        if ready and "kubelet" in running:
            try:
                node = api.get(f"/api/v1/nodes/{state.node_name}", timeout=3)
                node_ready = any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in node.get("status", {}).get("conditions", [])
                )
            except ApiError:
                node_ready = False
    return ClusterStatus(run_dir, state, running, ready, detail, node_ready)


__all__ = [
    "CLUSTER_ID_ENV",
    "Cluster",
    "ClusterError",
    "ClusterState",
    "ClusterStatus",
    "ComponentStartError",
    "cluster_status",
    "default_run_dir",
    "read_state",
    "remove_run_dir",
    "run_dir_lock",
    "stop_cluster",
]
