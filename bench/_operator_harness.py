"""Shared plumbing of the operator benchmarks (bench/propagation.py, bench/scale.py).

A cluster (a fresh devcluster in a temporary directory, or an existing one with ``--kubeconfig``), the
CRDs applied, and ``cachewarden operator`` as a subprocess whose pid the bench owns (its peak RSS is
read from /proc). Nothing here asserts a timing: the scripts print figures and compare them with
targets.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._harness import process_cpu_s  # noqa: E402
from devcluster import binaries  # noqa: E402
from devcluster.cluster import Cluster  # noqa: E402
from devcluster.podsecurity import namespace_manifest  # noqa: E402


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation (statistics.quantiles' inclusive method)."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[min(max(round(q) - 1, 0), 98)]


class Kubectl:
    """kubectl bound to one kubeconfig."""

    def __init__(self, kubeconfig: Path, bin_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.path = bin_dir / "kubectl"

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [str(self.path), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def json(self, *args: str) -> Any:
        """``kubectl ... -o json`` decoded."""
        return json.loads(self(*args, "-o", "json"))


@contextlib.contextmanager
def cluster(
    kubeconfig: str | None, extra_args: dict[str, list[str]] | None = None
) -> Iterator[tuple[Path, Path]]:
    """(kubeconfig, bin dir): the given cluster, or a fresh devcluster stopped at the end (its
    components given ``extra_args``, e.g. kube-apiserver's audit flags; ignored for a given cluster)."""
    bin_dir = binaries.bin_dir()
    problems = binaries.check_binaries(bin_dir)
    if problems:
        raise SystemExit(binaries.describe_problems(problems))
    if kubeconfig:
        yield Path(kubeconfig), bin_dir
        return
    with tempfile.TemporaryDirectory(prefix="cachewarden-bench-") as tmp:
        started = time.monotonic()
        dev = Cluster(Path(tmp) / "cluster", bin_dir=bin_dir, kubelet=True, extra_args=extra_args)
        dev.start()
        print(f"# devcluster up in {time.monotonic() - started:.1f}s ({tmp})", flush=True)
        try:
            yield dev.kubeconfig, bin_dir
        finally:
            dev.stop()


def apiserver_pid(kubeconfig: Path) -> int | None:
    """The pid of the kube-apiserver of the devcluster whose kubeconfig is ``kubeconfig`` (its command
    line names files in the same run directory), or None (a cluster given with --kubeconfig)."""
    run_dir = str(kubeconfig.parent)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"kube-apiserver") and any(run_dir.encode() in a for a in argv):
            return int(proc.name)
    return None


def create_namespace(kubectl: Kubectl, name: str) -> None:
    """Create namespace ``name`` with the Pod Security labels of every devcluster test namespace
    (enforce ``restricted`` unless ``CACHEWARDEN_E2E_POD_SECURITY`` says otherwise)."""
    kubectl("create", "-f", "-", stdin=json.dumps(namespace_manifest(name)))


def apply_crds(kubectl: Kubectl) -> None:
    """The generated CRDs, established."""
    kubectl("apply", "-f", str(REPO / "crds"))
    # Polled: `kubectl wait` fails outright on a CRD whose status has no conditions yet.
    for crd in ("cachepolicies.cachewarden.io", "cacheincidents.cachewarden.io"):
        wait_until(partial(crd_established, kubectl, crd), 60, f"CRD {crd} Established")


def crd_established(kubectl: Kubectl, name: str) -> bool:
    """The CRD's Established condition is True."""
    crd = kubectl.json("get", "crd", name)
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


class Operator:
    """``cachewarden operator`` (all namespaces, or ``scope``) as a subprocess of the bench."""

    def __init__(
        self, kubeconfig: Path, log_path: Path, *extra: str, scope: tuple[str, ...] = ("--all-namespaces",)
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.metrics_port = free_port()
        argv = [
            str(Path(sys.executable).parent / "cachewarden"),
            "operator",
            *scope,
            "--metrics-port",
            str(self.metrics_port),
            "--log-level",
            "WARNING",
            *extra,
        ]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def rss_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) of the operator process in MiB, from /proc/<pid>/status."""
        fields: dict[str, float] = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                fields[name] = int(value.split()[0]) / 1024
        return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the operator process has used, from /proc/<pid>/stat."""
        return process_cpu_s(self.process.pid)

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) the process this object started."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until truthy; SystemExit naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:g}s waiting for {what}; last: {str(last)[:500]}")


def policy_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A CachePolicy object."""
    return {
        "apiVersion": "cachewarden.io/v1alpha1",
        "kind": "CachePolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def is_ready(policy: dict[str, Any], generation: int | None = None) -> bool:
    """Ready=True (at ``generation`` when given)."""
    status = policy.get("status") or {}
    if generation is not None and status.get("observedGeneration") != generation:
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
