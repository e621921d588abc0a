"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

envtest-style (generated PKI, admin client certificate, RBAC on, free ports, everything in one run
directory) but with the controller manager, so Deployments make ReplicaSets and Pods, garbage
collection follows ownerReferences, namespaces finish deleting and ServiceAccounts get tokens.

Each process runs in its own session (so its whole process group can be signalled, and it outlives
the CLI that started it for ``cachewarden dev up``), logs to its own file in the run directory, and
carries the environment variable ``CACHEWARDEN_DEVCLUSTER_ID=<cluster id>``. Teardown signals the
process groups it started by pid (after checking, through the start time in /proc, that the pid
still names the process we started), then sweeps any descendant that still carries the cluster's id.
Nothing is ever looked up or killed by name.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devcluster import binaries
from devcluster.pki import DEFAULT_SERVICE_CIDR, FRONT_PROXY_CLIENT_NAME, ClusterPki, load_or_generate_pki

CLUSTER_ID_ENV = "CACHEWARDEN_DEVCLUSTER_ID"
LOOPBACK = "127.0.0.1"
CLUSTER_NAME = "cachewarden-dev"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# Generous: the machines that run this are shared and have two cores; a cold apiserver start there
# (RBAC bootstrap, post-start hooks, a fresh etcd) has been seen to take well over ten seconds.
ETCD_READY_TIMEOUT = 60.0
APISERVER_READY_TIMEOUT = 120.0
CONTROLLER_MANAGER_READY_TIMEOUT = 90.0
DEFAULT_SERVICE_ACCOUNT_TIMEOUT = 90.0
STOP_GRACE_SECONDS = 10.0
LOG_TAIL_LINES = 40
# Two clusters starting side by side can pick the same free port between our probe and the bind.
PORT_RETRIES = 3

# The bootstrap RBAC role of system:kube-controller-manager covers these controllers. Those removed
# need what this cluster does not have: a node that reports heartbeats the way a real kubelet does
# (node lifecycle would taint and evict), a pod CIDR allocator, a cloud provider.
DISABLED_CONTROLLERS = (
    "node-lifecycle-controller",
    "node-ipam-controller",
    "cloud-node-lifecycle-controller",
    "service-lb-controller",
    "node-route-controller",
    "taint-eviction-controller",
)
# TaintNodesByCondition puts a not-ready taint on every new Node that only the (disabled) node
# lifecycle controller removes. The rest of the default set is fine for a test cluster.
DISABLED_ADMISSION_PLUGINS = ("TaintNodesByCondition",)


class ComponentStartError(RuntimeError):
    """A control-plane component did not start or become ready; names it and shows its log tail."""

    def __init__(self, component: str, problem: str, log_path: Path | None) -> None:
        self.component = component
        self.problem = problem
        self.log_path = log_path
        tail = read_log_tail(log_path) if log_path is not None else ""
        message = f"{component} failed to start: {problem}"
        if log_path is not None:
            message += f"\n--- last {LOG_TAIL_LINES} lines of {log_path} ---\n{tail or '(log is empty)'}"
        super().__init__(message)


def read_log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# --- processes ----------------------------------------------------------------------------------


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (None if there is no such process or
    it is a zombie). Together with the pid it identifies a process: pids get reused, this pair not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces; split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in {"Z", "X"}:
        return None
    return int(fields[19])


@dataclass
class ProcessRecord:
    """What identifies a started process across CLI invocations (stored in the state file)."""

    name: str
    pid: int
    start_ticks: int
    log: str
    argv: list[str] = field(default_factory=list)

    def is_running(self) -> bool:
        """True while the very process we started is alive (not a later process with its pid)."""
        return process_start_ticks(self.pid) == self.start_ticks

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        """Read a record from the state file, naming the field that is wrong."""
        try:
            return cls(
                name=str(data["name"]),
                pid=int(data["pid"]),
                start_ticks=int(data["start_ticks"]),
                log=str(data["log"]),
                argv=[str(a) for a in data.get("argv", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"process record {dict(data)!r} is invalid: {exc!r}") from exc


def stop_process_group(
    record: ProcessRecord,
    grace: float = STOP_GRACE_SECONDS,
    popen: subprocess.Popen[bytes] | None = None,
) -> None:
    """SIGTERM the process group led by ``record`` (it was started with its own session), wait up
    to ``grace`` seconds for the leader to exit, then SIGKILL the group. Does nothing if the pid
    no longer names the process we started."""
    if not record.is_running():
        if popen is not None:
            popen.poll()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None:
            break
        if popen is None and not record.is_running():
            break
        time.sleep(0.05)
    # Members of the group may outlive its leader; the group id cannot be handed to a new process
    # while any member remains, so signalling it here reaches only what we started.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signal.SIGKILL)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace)


def processes_marked_with(cluster_id: str) -> list[int]:
    """Pids of live processes whose environment carries ``CACHEWARDEN_DEVCLUSTER_ID=cluster_id``:
    everything a cluster started, including descendants (pods of the process kubelet)."""
    needle = f"{CLUSTER_ID_ENV}={cluster_id}".encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if needle in environ.split(b"\0") and process_start_ticks(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def wait_until_gone(pids: Iterable[int], timeout: float) -> bool:
    """Poll until none of ``pids`` is alive (zombies count as gone), at most ``timeout`` seconds;
    True when they all went."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while any(process_start_ticks(p) is not None for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def kill_marked_processes(cluster_id: str, grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process still carrying the cluster's id; returns their pids.
    A safety net after the process groups are stopped, for descendants that left the group."""
    pids = [pid for pid in processes_marked_with(cluster_id) if pid != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    wait_until_gone(pids, timeout=grace)
    for pid in pids:
        if process_start_ticks(pid) is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return pids


class ManagedProcess:
    """One component process: own session, own log file, the cluster id in its environment."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        cluster_id: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.cluster_id = cluster_id
        self.env = dict(os.environ if env is None else env)
        self.env[CLUSTER_ID_ENV] = cluster_id
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self.record: ProcessRecord | None = None

    def start(self) -> ProcessRecord:
        """Start the process (its log is appended to, so a restart keeps the earlier runs)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    # A new session: the process leads its own group (teardown signals the group) and
                    # does not get the terminal's SIGHUP/SIGINT, so it outlives `dev up`.
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise ComponentStartError(self.name, f"cannot execute {self.argv[0]}: {exc}", None) from exc
        ticks = process_start_ticks(self.popen.pid)
        self.record = ProcessRecord(
            name=self.name,
            pid=self.popen.pid,
            start_ticks=ticks if ticks is not None else -1,
            log=str(self.log_path),
            argv=self.argv,
        )
        return self.record

    def exited(self) -> int | None:
        """The exit code if the process has exited, else None."""
        return None if self.popen is None else self.popen.poll()

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the process group (see :func:`stop_process_group`)."""
        if self.record is not None:
            stop_process_group(self.record, grace, self.popen)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of this process's log."""
        return read_log_tail(self.log_path, lines)


# --- HTTPS to the components --------------------------------------------------------------------


class ApiError(RuntimeError):
    """A request to the API server failed; carries the HTTP status (0 when there was no answer)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def client_tls_context(ca: Path | None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A TLS context that trusts ``ca`` (or nothing is verified when ``ca`` is None: only for the
    controller manager's self-signed health endpoint) and presents ``cert``/``key`` if given."""
    if ca is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def https_request(
    port: int,
    path: str,
    context: ssl.SSLContext,
    method: str = "GET",
    body: Any = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One HTTPS request to 127.0.0.1:port; returns (status, body). Raises OSError on no answer."""
    connection = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class AdminApi:
    """A minimal JSON client for the API server with the admin certificate.

    The CLI and the readiness checks use it instead of the ``kubernetes`` package, whose import
    alone costs about a second: ``dev status`` and ``dev up`` stay quick.
    """

    def __init__(self, port: int, pki: ClusterPki) -> None:
        self.port = port
        self.context = client_tls_context(pki.ca.cert, pki.admin.cert, pki.admin.key)

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Send a request and decode the JSON answer; raises :class:`ApiError` on any non-2xx."""
        try:
            status, data = https_request(self.port, path, self.context, method, body, timeout)
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(0, f"{method} {path}: no answer from 127.0.0.1:{self.port}: {exc}") from exc
        if not 200 <= status < 300:
            raise ApiError(status, f"{method} {path}: HTTP {status}: {data[:500].decode('utf-8', 'replace')}")
        return json.loads(data) if data else None

    def get(self, path: str, timeout: float = 10.0) -> Any:
        """GET ``path`` as JSON."""
        return self.request("GET", path, timeout=timeout)

    def readyz(self, timeout: float = 5.0) -> tuple[bool, str]:
        """(ready, detail) from /readyz (the detail lists the failing checks when not ready)."""
        try:
            status, data = https_request(self.port, "/readyz?verbose", self.context, timeout=timeout)
        except (OSError, http.client.HTTPException) as exc:
            return False, f"no answer: {exc}"
        text = data.decode("utf-8", "replace")
        failing = [line for line in text.splitlines() if line.startswith("[-]")]
        return status == 200, "; ".join(failing) or f"HTTP {status}"


# --- waiting --------------------------------------------------------------------------------------


def wait_until(
    check: Callable[[], tuple[bool, str]],
    timeout: float,
    process: ManagedProcess,
    what: str,
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until it reports ready; fail early, naming the component, if its process
    exits, and on timeout with the last thing the check observed."""
    deadline = time.monotonic() + timeout
    last = "not checked yet"
    while True:
        code = process.exited()
        if code is not None:
            raise ComponentStartError(process.name, f"exited with code {code} while waiting for {what}",
                                      process.log_path)
        try:
            ready, last = check()
        except Exception as exc:  # a check that errors is "not ready yet", reported if it persists
            ready, last = False, f"{type(exc).__name__}: {exc}"
        if ready:
            return
        if time.monotonic() >= deadline:
            raise ComponentStartError(
                process.name, f"not ready after {timeout:.0f}s waiting for {what}; last observed: {last}",
                process.log_path,
            )
        time.sleep(interval)
        # Cheap local requests: poll often, every extra half second shows up in `dev up`'s time.
        interval = min(interval * 1.5, 0.5)


def _address_in_use(process: ManagedProcess) -> bool:
    return "address already in use" in process.log_tail(200).lower()


# --- kubeconfig -----------------------------------------------------------------------------------


def render_kubeconfig(
    server: str, ca_cert: Path, client_cert: Path, client_key: Path, user: str, context: str = CLUSTER_NAME
) -> dict[str, Any]:
    """A kubeconfig with the credentials embedded, so it keeps working when copied elsewhere."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {
            "server": server, "certificate-authority-data": b64(ca_cert)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(client_cert), "client-key-data": b64(client_key)}}],
        "contexts": [{"name": context, "context": {"cluster": CLUSTER_NAME, "user": user,
                                                   "namespace": "default"}}],
        "current-context": context,
        "preferences": {},
    }


def write_private_yaml(path: Path, document: Mapping[str, Any]) -> None:
    """Write YAML readable by the owner only (kubeconfigs carry private keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(dict(document), handle, sort_keys=False)
    os.chmod(tmp, 0o600)
    # Atomic: a reader (kubectl, a test) never sees a half-written kubeconfig.
    os.replace(tmp, path)


# --- the control plane ----------------------------------------------------------------------------


@dataclass
class Ports:
    """The free ports one control plane listens on (all on 127.0.0.1)."""

    etcd_client: int = 0
    etcd_peer: int = 0
    apiserver: int = 0
    controller_manager: int = 0

    @classmethod
    def pick(cls) -> Ports:
        """Fresh free ports, all distinct (held open together while picking)."""
        with contextlib.ExitStack() as stack:
            ports = []
            for _ in range(4):
                sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                sock.bind((LOOPBACK, 0))
                ports.append(int(sock.getsockname()[1]))
        return cls(*ports)


@dataclass
class StartTimings:
    """Seconds each phase of a start took (printed by ``dev up``, recorded in the benchmarks)."""

    phases: dict[str, float] = field(default_factory=dict)

    def record(self, phase: str, started: float) -> None:
        """Record ``phase`` as lasting from ``started`` (monotonic) until now."""
        self.phases[phase] = round(time.monotonic() - started, 2)

    def summary(self) -> str:
        """'etcd 0.8s, kube-apiserver 6.1s, ...'."""
        return ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in self.phases.items())


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager for one run directory.

    ``run_dir`` holds everything: ``pki/``, ``etcd/`` (data), ``logs/<component>.log``,
    ``kubeconfig`` (admin) and ``kube-controller-manager.kubeconfig``. A run directory that already
    has a PKI and etcd data is restarted with them (new ports, same cluster contents).
    """

    def __init__(
        self,
        run_dir: Path,
        bin_dir: Path | None = None,
        *,
        cluster_id: str | None = None,
        service_cidr: str = DEFAULT_SERVICE_CIDR,
        extra_args: Mapping[str, Sequence[str]] | None = None,
        timeout_scale: float = 1.0,
        on_process_started: Callable[[ProcessRecord], None] | None = None,
        after_apiserver_ready: Callable[[], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.bin_dir = binaries.bin_dir() if bin_dir is None else Path(bin_dir)
        self.cluster_id = cluster_id or uuid.uuid4().hex
        self.service_cidr = service_cidr
        # Per component: flags appended after ours (the last occurrence of a flag wins), used by the
        # tests to break a component on purpose and by users to tune one.
        self.extra_args = {k: list(v) for k, v in (extra_args or {}).items()}
        self.timeout_scale = timeout_scale
        # Called as soon as each process exists, so a caller can persist its pid before waiting for
        # readiness: a CLI killed mid-start still leaves a state file that `dev down` can act on.
        self.on_process_started = on_process_started
        # Lets the cluster launch its kubelet while the controller manager starts (saves ~1 s).
        self.after_apiserver_ready = after_apiserver_ready
        self.ports = Ports()
        self.processes: list[ManagedProcess] = []
        self.timings = StartTimings()
        self.pki: ClusterPki | None = None
        self.api: AdminApi | None = None

    # paths
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (cluster-admin through system:masters)."""
        return self.run_dir / "kubeconfig"

    @property
    def log_dir(self) -> Path:
        """Where each component's log file lives."""
        return self.run_dir / "logs"

    @property
    def server_url(self) -> str:
        """The API server's URL."""
        return f"https://{LOOPBACK}:{self.ports.apiserver}"

    def log_path(self, component: str) -> Path:
        """The log file of ``component``."""
        return self.log_dir / f"{component}.log"

    def records(self) -> list[ProcessRecord]:
        """Records of the processes started so far (for the state file)."""
        return [p.record for p in self.processes if p.record is not None]

    # start
    def start(self) -> None:
        """Start etcd, the API server and the controller manager; return once the cluster is usable
        (default namespace and its ``default`` ServiceAccount exist). On failure everything started
        so far is stopped and :class:`ComponentStartError` names the component."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _binary(self, component: str) -> Path:
        try:
            return binaries.binary_path(component, self.bin_dir)
        except binaries.BinariesError as exc:
            raise ComponentStartError(component, str(exc), None) from exc

    def _start(self) -> None:
        for component in ("etcd", "kube-apiserver", "kube-controller-manager"):
            self._binary(component)
        began = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        self.pki = load_or_generate_pki(self.run_dir / "pki", self.service_cidr)
        self.timings.record("pki", began)
        self.ports = Ports.pick()

        phase = time.monotonic()
        self._start_with_port_retry("etcd", self._start_etcd, "etcd_client", "etcd_peer")
        self.timings.record("etcd", phase)
        phase = time.monotonic()
        self._start_with_port_retry("kube-apiserver", self._start_apiserver, "apiserver")
        self._write_kubeconfigs()
        self.timings.record("kube-apiserver", phase)
        if self.after_apiserver_ready is not None:
            self.after_apiserver_ready()
        phase = time.monotonic()
        self._start_with_port_retry("kube-controller-manager", self._start_controller_manager,
                                    "controller_manager")
        self.timings.record("kube-controller-manager", phase)
        phase = time.monotonic()
        self._wait_for_default_service_account()
        self.timings.record("default-serviceaccount", phase)

    def _start_with_port_retry(self, component: str, start: Callable[[], ManagedProcess],
                               *port_fields: str) -> None:
        for attempt in range(1, PORT_RETRIES + 1):
            process = start()
            try:
                self._wait_ready(process)
                return
            except ComponentStartError:
                if attempt == PORT_RETRIES or not _address_in_use(process):
                    raise
                # Someone took our port between the probe and the bind: new ports, same component.
                process.stop()
                self.processes.remove(process)
                for name in port_fields:
                    setattr(self.ports, name, free_port())

    def _launch(self, component: str, args: Sequence[str]) -> ManagedProcess:
        argv = [str(self._binary(component)), *args, *self.extra_args.get(component, [])]
        process = ManagedProcess(component, argv, self.log_path(component), self.cluster_id,
                                 cwd=self.run_dir)
        self.processes.append(process)
        record = process.start()
        if self.on_process_started is not None:
            self.on_process_started(record)
        return process

    def _wait_ready(self, process: ManagedProcess) -> None:
        assert self.pki is not None
        scale = self.timeout_scale
        if process.name == "etcd":
            pki = self.pki
            context = client_tls_context(pki.ca.cert, pki.etcd_client.cert, pki.etcd_client.key)

            def etcd_health() -> tuple[bool, str]:
                status, body = https_request(self.ports.etcd_client, "/health", context, timeout=3)
                text = body.decode("utf-8", "replace").strip()
                return status == 200 and json.loads(text).get("health") == "true", text

            wait_until(etcd_health, ETCD_READY_TIMEOUT * scale, process, "etcd /health")
        elif process.name == "kube-apiserver":
            self.api = AdminApi(self.ports.apiserver, self.pki)
            wait_until(self.api.readyz, APISERVER_READY_TIMEOUT * scale, process, "kube-apiserver /readyz")
        elif process.name == "kube-controller-manager":
            context = client_tls_context(None)

            def kcm_health() -> tuple[bool, str]:
                status, body = https_request(self.ports.controller_manager, "/healthz", context, timeout=3)
                return status == 200, f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"

            wait_until(kcm_health, CONTROLLER_MANAGER_READY_TIMEOUT * scale, process,
                       "kube-controller-manager /healthz")

    def _start_etcd(self) -> ManagedProcess:
        assert self.pki is not None
        client = f"https://{LOOPBACK}:{self.ports.etcd_client}"
        peer = f"http://{LOOPBACK}:{self.ports.etcd_peer}"
        tls = self.pki.etcd_server
        return self._launch("etcd", [
            "--name=default",
            f"--data-dir={self.run_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--initial-cluster-state=new",
            f"--cert-file={tls.cert}",
            f"--key-file={tls.key}",
            f"--trusted-ca-file={self.pki.ca.cert}",
            "--client-cert-auth=true",
            # A throwaway test cluster: durability is not worth an fsync per write on a shared disk.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
            "--logger=zap",
        ])

    def _start_apiserver(self) -> ManagedProcess:
        assert self.pki is not None
        pki = self.pki
        return self._launch("kube-apiserver", [
            f"--etcd-servers=https://{LOOPBACK}:{self.ports.etcd_client}",
            f"--etcd-cafile={pki.ca.cert}",
            f"--etcd-certfile={pki.etcd_client.cert}",
            f"--etcd-keyfile={pki.etcd_client.key}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={self.ports.apiserver}",
            f"--cert-dir={self.run_dir / 'apiserver'}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            # The aggregation layer: without it every delegating component (the controller manager
            # too) logs a missing request-header CA and aggregated API servers cannot authenticate.
            f"--requestheader-client-ca-file={pki.front_proxy_ca.cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_NAME}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
            f"--proxy-client-key-file={pki.front_proxy_client.key}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_public_key}",
            f"--service-account-signing-key-file={pki.service_account_private_key}",
            # Only an allocation table for ClusterIPs: no traffic is ever routed there.
            f"--service-cluster-ip-range={self.service_cidr}",
            # No endpoints for the `kubernetes` Service: 127.0.0.1 may not appear in Endpoints.
            "--endpoint-reconciler-type=none",
            f"--disable-admission-plugins={','.join(DISABLED_ADMISSION_PLUGINS)}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ])

    def _write_kubeconfigs(self) -> None:
        assert self.pki is not None
        pki = self.pki
        write_private_yaml(self.kubeconfig, render_kubeconfig(
            self.server_url, pki.ca.cert, pki.admin.cert, pki.admin.key, user="admin"))
        write_private_yaml(self.run_dir / "kube-controller-manager.kubeconfig", render_kubeconfig(
            self.server_url, pki.ca.cert, pki.controller_manager.cert, pki.controller_manager.key,
            user="system:kube-controller-manager", context="kube-controller-manager"))

    def _start_controller_manager(self) -> ManagedProcess:
        assert self.pki is not None
        pki = self.pki
        kubeconfig = self.run_dir / "kube-controller-manager.kubeconfig"
        controllers = ",".join(["*", *(f"-{name}" for name in DISABLED_CONTROLLERS)])
        return self._launch("kube-controller-manager", [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={self.ports.controller_manager}",
            f"--cert-dir={self.run_dir / 'kube-controller-manager'}",
            f"--controllers={controllers}",
            f"--service-account-private-key-file={pki.service_account_private_key}",
            f"--root-ca-file={pki.ca.cert}",
            # CSRs (e.g. a test that asks for a client certificate) get signed by the cluster CA.
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--profiling=false",
            "--v=1",
        ])

    def _wait_for_default_service_account(self) -> None:
        """The last step of a usable cluster: the controller manager's serviceaccount controller has
        created ``default/default`` (pods in the default namespace are rejected until then)."""
        assert self.api is not None
        api = self.api
        process = next(p for p in self.processes if p.name == "kube-controller-manager")

        def exists() -> tuple[bool, str]:
            try:
                api.get("/api/v1/namespaces/default/serviceaccounts/default", timeout=5)
            except ApiError as exc:
                return False, str(exc)
            return True, "exists"

        wait_until(exists, DEFAULT_SERVICE_ACCOUNT_TIMEOUT * self.timeout_scale, process,
                   "the default/default ServiceAccount")

    # stop
    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the components in reverse order of start (etcd last, so the API server can finish
        in-flight writes), then sweep any process still carrying this cluster's id."""
        for process in reversed(self.processes):
            process.stop(grace)
        kill_marked_processes(self.cluster_id)

    def is_running(self) -> bool:
        """True while every started process is alive."""
        return bool(self.processes) and all(p.exited() is None for p in self.processes)


def stop_records(records: Iterable[ProcessRecord], cluster_id: str | None,
                 grace: float = STOP_GRACE_SECONDS, grace_by_name: Mapping[str, float] | None = None) -> None:
    """Stop processes known only from a state file (``dev down`` in a later CLI invocation), in
    reverse order of start, then sweep the cluster's marked processes."""
    for record in reversed(list(records)):
        stop_process_group(record, (grace_by_name or {}).get(record.name, grace))
    if cluster_id:
        kill_marked_processes(cluster_id)
