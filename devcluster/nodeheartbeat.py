"""The process kubelet's Node: registration, its status, and the heartbeat (the Lease in
kube-node-lease renewed every ``LEASE_RENEW_INTERVAL``, the status posted every
``NODE_STATUS_INTERVAL``), in a thread of its own."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from cache_runtime.timefmt import rfc3339, rfc3339_micro
from devcluster.kubeapi import KubeApi
from devcluster.podips import HOST_IP

__all__ = ["LEASE_DURATION_SECONDS", "LEASE_RENEW_INTERVAL", "NODE_STATUS_INTERVAL", "NodeHeartbeat"]

log = logging.getLogger("devcluster.kubelet")

LEASE_DURATION_SECONDS = 40
LEASE_RENEW_INTERVAL = 10.0
NODE_STATUS_INTERVAL = 30.0


class NodeHeartbeat:
    """The Node one process kubelet registers and keeps alive. ``kubelet_port`` tells the port of the
    log endpoint (0 until it listens); ``version`` is the API server's, read at start."""

    def __init__(
        self, api: KubeApi, node_name: str, run_dir: Path, started_at: str, kubelet_port: Callable[[], int]
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.run_dir = run_dir
        self.started_at = started_at
        self.kubelet_port = kubelet_port
        self.version = "v0.0.0"


    def status(self, ready: bool = True) -> dict[str, Any]:
        """The Node's status: capacity, conditions, address, the log endpoint, node info."""
        now = rfc3339()
        memory_kib = 8 * 1024 * 1024
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory_kib = int(line.split()[1])
        disk_kib = shutil.disk_usage(self.run_dir).total // 1024
        resources = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{memory_kib}Ki",
            "pods": "110",
            "ephemeral-storage": f"{disk_kib}Ki",
        }

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self.started_at,
            }

        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"
                ),
                condition(
                    "PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"
                ),
                condition(
                    "Ready",
                    "True" if ready else "False",
                    "KubeletReady" if ready else "KubeletStopped",
                    "devcluster process kubelet is posting ready status"
                    if ready
                    else "devcluster process kubelet stopped",
                ),
            ],
            # No Hostname address: the API server prefers it for reaching the kubelet (kubectl logs)
            # and the node name does not resolve.
            "addresses": [{"type": "InternalIP", "address": HOST_IP}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port()}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, self.node_name).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.node_name)),
                "bootID": self._boot_id(),
                "kernelVersion": platform.release(),
                "osImage": "devcluster process kubelet (pods are local processes)",
                "containerRuntimeVersion": "devcluster://1",
                "kubeletVersion": self.version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    platform.machine(), platform.machine()
                ),
            },
        }

    @staticmethod
    def _boot_id() -> str:
        try:
            return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return ""

    def labels(self) -> dict[str, str]:
        """The labels this node carries (and nodeSelectors are matched against)."""
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        return {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "node.kubernetes.io/instance-type": "devcluster-process",
            "devcluster.cachewarden.io/process-kubelet": "true",
        }

    def register(self) -> None:
        """Create the Node (or relabel it), mark it Ready and take its Lease."""
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": self.labels()},
            "spec": {},
            "status": self.status(),
        }
        try:
            self.api.request("POST", "/api/v1/nodes", body=body)
            log.info("registered node %s", self.node_name)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.api.request(
                "PATCH",
                f"/api/v1/nodes/{self.node_name}",
                body={"metadata": {"labels": self.labels()}},
                content_type="application/strategic-merge-patch+json",
            )
        self.patch_status(ready=True)
        self.renew_lease()

    def patch_status(self, ready: bool, timeout: float = 10.0) -> None:
        """Post the Node's status (Ready or not); a deleted Node is registered again."""
        status = self.status(ready)
        # A node registered by an older kubelet may carry a Hostname address; addresses merge by type.
        status["addresses"] = [*status["addresses"], {"type": "Hostname", "$patch": "delete"}]
        try:
            self.api.request(
                "PATCH",
                f"/api/v1/nodes/{self.node_name}/status",
                body={"status": status},
                content_type="application/strategic-merge-patch+json",
                timeout=timeout,
            )
        except ApiException as exc:
            if exc.status == 404 and ready:
                log.warning("node %s was deleted; registering it again", self.node_name)
                self.register()
            else:
                raise

    def renew_lease(self) -> None:
        """Renew the Node's Lease in kube-node-lease (created when missing)."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": rfc3339_micro(),
        }
        try:
            self.api.request("PATCH", path, body={"spec": spec}, content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status != 404:
                raise
            node = self.api.get(f"/api/v1/nodes/{self.node_name}")
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.node_name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self.node_name,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": spec,
            }
            self.api.request(
                "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body=body
            )

    def loop(self, stop_event: threading.Event) -> None:
        """Renew the Lease every LEASE_RENEW_INTERVAL and post the status every NODE_STATUS_INTERVAL
        until ``stop_event`` is set (the heartbeat thread)."""
        next_status = time.monotonic() + NODE_STATUS_INTERVAL
        while not stop_event.wait(LEASE_RENEW_INTERVAL):
            try:
                self.renew_lease()
                if time.monotonic() >= next_status:
                    self.patch_status(ready=True)
                    next_status = time.monotonic() + NODE_STATUS_INTERVAL
            except Exception as exc:
                log.warning("heartbeat failed: %r", exc)
