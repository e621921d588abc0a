"""pytest support for tests that run against the local cluster.

``tests/e2e/conftest.py`` imports the fixtures from here:

- ``dev_cluster`` (session): one :class:`~devcluster.cluster.Cluster` for the whole test session,
  with the process kubelet when its module is installed (``CACHEWARDEN_E2E_KUBELET=0`` leaves it out).
- ``kube`` (session): :class:`KubeTools`, kubectl and helm bound to the cluster's kubeconfig.
- ``k8s_api`` (session): a ``kubernetes.client.ApiClient`` from the official client, configured from
  the kubeconfig.
- ``namespace`` (function): a fresh namespace per test, deleted at teardown. Pod Security admission
  labels: ``warn`` and ``audit`` at ``restricted`` always, ``enforce`` at ``CACHEWARDEN_E2E_POD_SECURITY``
  (default ``restricted``: every pod the tests create carries the restricted securityContext).
- ``restricted_namespace`` (function): the same, enforcing the ``restricted`` profile whatever the
  variable says; ``baseline_namespace`` (function): enforcing ``baseline`` (for the test that shows
  what ``baseline`` refuses and what it only warns about).

Namespaces a test creates itself use :func:`namespace_manifest` (the same labels), and pods built as
dicts :func:`restricted_pod_spec` (both from :mod:`devcluster.podsecurity`, re-exported here).

Missing binaries skip the e2e tests with the reason and the build command, except in CI
(``CI=true``) or with ``CACHEWARDEN_REQUIRE_E2E=1``, where they fail: a CI run that silently skipped
every cluster test would look green while testing nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devcluster import binaries
from devcluster.cluster import Cluster, kubelet_available
from devcluster.controlplane import ApiError
from devcluster.podsecurity import (
    DEFAULT_POD_SECURITY,
    POD_SECURITY_ENV,
    POD_SECURITY_LEVELS,
    RESTRICTED_USER_ID,
    default_pod_security,
    namespace_manifest,
    pod_security_labels,
    restricted_pod_spec,
)

T = TypeVar("T")

REQUIRE_E2E_ENV = "CACHEWARDEN_REQUIRE_E2E"
E2E_KUBELET_ENV = "CACHEWARDEN_E2E_KUBELET"
_TRUE = {"1", "true", "yes", "on"}

__all__ = [
    "DEFAULT_POD_SECURITY", "E2E_KUBELET_ENV", "POD_SECURITY_ENV", "POD_SECURITY_LEVELS", "REQUIRE_E2E_ENV",
    "RESTRICTED_USER_ID", "KubeTools", "WaitTimeout", "baseline_namespace", "binaries_or_skip",
    "default_pod_security", "dev_cluster", "e2e_required", "k8s_api", "kube", "kubernetes_client",
    "namespace", "namespace_manifest", "namespace_name", "pod_security_labels", "restricted_namespace",
    "restricted_pod_spec", "start_test_cluster", "wait_for",
]


class WaitTimeout(AssertionError):
    """``wait_for`` ran out of time; says what it waited for and what it saw last."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.2,
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Exceptions raised by the predicate count as "not yet" (an object that does not exist yet is the
    usual case) and are reported if they are the last thing observed. On timeout raises
    :class:`WaitTimeout` naming ``what`` and the last value or exception.
    """
    deadline = time.monotonic() + timeout
    last: object = "never evaluated"
    while True:
        try:
            value = predicate()
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            shown = repr(last)
            if len(shown) > 2000:
                shown = shown[:2000] + "...(truncated)"
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}; last observed: {shown}")
        time.sleep(interval)


def e2e_required(environ: Mapping[str, str] | None = None) -> bool:
    """True in CI (``CI=true``) or when ``CACHEWARDEN_REQUIRE_E2E`` is set truthy."""
    env = os.environ if environ is None else environ
    return env.get("CI", "").lower() in _TRUE or env.get(REQUIRE_E2E_ENV, "").lower() in _TRUE


def binaries_or_skip() -> Path:
    """The binary directory, or skip (fail when e2e is required) naming every problem."""
    directory = binaries.bin_dir()
    problems = binaries.check_binaries(directory)
    if problems:
        message = binaries.describe_problems(problems)
        if e2e_required():
            pytest.fail(f"e2e tests are required here (CI or {REQUIRE_E2E_ENV}) but {message}",
                        pytrace=False)
        pytest.skip(message)
    return directory


@dataclass
class KubeTools:
    """kubectl and helm bound to one cluster's kubeconfig, with their caches and config kept in
    ``home`` (never in the user's ~/.kube or ~/.config/helm)."""

    kubeconfig: Path
    bin_dir: Path
    home: Path
    default_timeout: float = 120.0
    _env: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self._env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.home / "kube-cache"),
            "HELM_CACHE_HOME": str(self.home / "helm-cache"),
            "HELM_CONFIG_HOME": str(self.home / "helm-config"),
            "HELM_DATA_HOME": str(self.home / "helm-data"),
        }

    @property
    def env(self) -> dict[str, str]:
        """The environment kubectl and helm run with (KUBECONFIG set)."""
        return dict(self._env)

    def run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``tool args...``; with ``check`` a non-zero exit fails with the command and its output."""
        argv = [str(self.bin_dir / tool), *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, env=self._env,
            timeout=timeout or self.default_timeout, check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"`{tool} {' '.join(args)}` exited {result.returncode}\n"
                f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
            )
        return result

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster."""
        return self.run("kubectl", *args, input=input, check=check, timeout=timeout)

    def kubectl_json(self, *args: str) -> Any:
        """Run ``kubectl ... -o json`` and decode the output."""
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of a YAML string."""
        ns = ["--namespace", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=manifest)

    def helm(self, *args: str, check: bool = True,
             timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run helm against the cluster."""
        return self.run("helm", *args, check=check, timeout=timeout)


def kubernetes_client(kubeconfig: Path) -> Any:
    """A ``kubernetes.client.ApiClient`` configured from ``kubeconfig`` (its own Configuration, so
    several clusters can be used in one process)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))


def namespace_name(test_name: str) -> str:
    """A valid, unique namespace name derived from a test's name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-") or "test"
    return f"e2e-{slug}-{uuid.uuid4().hex[:5]}"


def start_test_cluster(run_dir: Path, bin_dir: Path) -> Cluster:
    """Start a cluster for tests: with the kubelet when its module exists, unless
    ``CACHEWARDEN_E2E_KUBELET=0``."""
    want_kubelet = os.environ.get(E2E_KUBELET_ENV, "").lower()
    kubelet = kubelet_available() if want_kubelet == "" else want_kubelet in _TRUE
    cluster = Cluster(run_dir, bin_dir=bin_dir, kubelet=kubelet)
    cluster.start()
    return cluster


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One local cluster for the whole test session, stopped at the end."""
    bin_dir = binaries_or_skip()
    cluster = start_test_cluster(tmp_path_factory.mktemp("devcluster"), bin_dir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kube(dev_cluster: Cluster) -> KubeTools:
    """kubectl and helm bound to the session cluster."""
    return KubeTools(dev_cluster.kubeconfig, dev_cluster.control_plane.bin_dir,
                     dev_cluster.run_dir / "tools")


@pytest.fixture(scope="session")
def k8s_api(dev_cluster: Cluster) -> Iterator[Any]:
    """The official ``kubernetes`` client's ApiClient for the session cluster."""
    client = kubernetes_client(dev_cluster.kubeconfig)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, dev_cluster: Cluster) -> Iterator[str]:
    """A namespace for one test, deleted (without waiting for it to finish) at teardown; Pod Security
    ``enforce`` at :func:`default_pod_security`, ``warn``/``audit`` at ``restricted``.

    Returned once its ``default`` ServiceAccount exists: until then the ServiceAccount admission
    plugin rejects pods created in it."""
    yield from _test_namespace(request, dev_cluster, default_pod_security())


@pytest.fixture
def restricted_namespace(request: pytest.FixtureRequest, dev_cluster: Cluster) -> Iterator[str]:
    """Like ``namespace``, enforcing the ``restricted`` Pod Security profile: the API server rejects
    any pod (and any workload's pod) that runs as root, may escalate privileges, keeps capabilities,
    lacks a seccomp profile or uses host namespaces or host paths."""
    yield from _test_namespace(request, dev_cluster, "restricted")


@pytest.fixture
def baseline_namespace(request: pytest.FixtureRequest, dev_cluster: Cluster) -> Iterator[str]:
    """Like ``namespace``, enforcing the ``baseline`` profile (``warn``/``audit`` still ``restricted``):
    for the one test showing what ``baseline`` refuses and what it only warns about."""
    yield from _test_namespace(request, dev_cluster, "baseline")


def _test_namespace(request: pytest.FixtureRequest, dev_cluster: Cluster, enforce: str) -> Iterator[str]:
    name = namespace_name(request.node.name)
    api = dev_cluster.api
    api.request("POST", "/api/v1/namespaces", namespace_manifest(name, enforce))
    try:
        wait_for(lambda: api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"), 60,
                 f"ServiceAccount {name}/default")
        yield name
    finally:
        try:
            dev_cluster.api.request("DELETE", f"/api/v1/namespaces/{name}")
        except ApiError as exc:
            if exc.status != 404:  # a test that deleted its namespace itself is fine
                raise
