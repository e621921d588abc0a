"""Pod Security settings shared by devcluster's tests, benches and demo (pure data, no pytest, no I/O).

- :func:`pod_security_labels`: the namespace labels of the PodSecurity admission plugin (``enforce`` at a
  level, ``warn`` and ``audit`` at ``restricted`` always).
- :func:`namespace_manifest`: a Namespace carrying them, for every namespace a test or bench creates
  itself; its level is :func:`default_pod_security` (``restricted`` unless
  ``CACHEWARDEN_E2E_POD_SECURITY`` says otherwise).
- :func:`restricted_pod_spec`: a pod spec with the four settings the ``restricted`` profile requires
  (non-root with a numeric uid, seccomp ``RuntimeDefault``; per container no privilege escalation and
  every capability dropped).

devcluster's kubelet runs every pod as a process of the user who started the cluster: securityContext is
checked at admission only, by the real API server.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

POD_SECURITY_ENV = "CACHEWARDEN_E2E_POD_SECURITY"
POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")
DEFAULT_POD_SECURITY = "restricted"
# A non-root uid for images without a fixed user of their own (python, busybox); the runtime's too.
RESTRICTED_USER_ID = 10001
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def pod_security_labels(enforce: str) -> dict[str, str]:
    """Pod Security admission labels of a namespace: ``enforce`` at the given level, ``warn`` and
    ``audit`` at ``restricted`` (so a pod that would not pass ``restricted`` shows up as a kubectl warning
    and in the audit annotations even where it is admitted), every version ``latest``."""
    if enforce not in POD_SECURITY_LEVELS:
        raise ValueError(f"Pod Security level (enforce): {enforce!r} is not one; accepted: "
                         f"{', '.join(POD_SECURITY_LEVELS)}")
    labels: dict[str, str] = {}
    for mode, level in (("enforce", enforce), ("warn", "restricted"), ("audit", "restricted")):
        labels[f"pod-security.kubernetes.io/{mode}"] = level
        labels[f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    return labels


def default_pod_security(environ: Mapping[str, str] | None = None) -> str:
    """The ``enforce`` level of test and bench namespaces: ``CACHEWARDEN_E2E_POD_SECURITY`` (any case,
    spaces ignored) or ``restricted``; an unknown level raises naming the variable and the levels."""
    env = os.environ if environ is None else environ
    level = env.get(POD_SECURITY_ENV, "").strip().lower() or DEFAULT_POD_SECURITY
    if level not in POD_SECURITY_LEVELS:
        raise ValueError(f"{POD_SECURITY_ENV}: {level!r} is not a Pod Security level; accepted: "
                         f"{', '.join(POD_SECURITY_LEVELS)}")
    return level


def namespace_manifest(name: str, enforce: str | None = None) -> dict[str, Any]:
    """A Namespace named ``name`` with :func:`pod_security_labels` at ``enforce`` (default:
    :func:`default_pod_security`)."""
    level = default_pod_security() if enforce is None else enforce
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": pod_security_labels(level)}}


def restricted_pod_spec(spec: Mapping[str, Any], user_id: int = RESTRICTED_USER_ID) -> dict[str, Any]:
    """A copy of the pod ``spec`` that passes the ``restricted`` profile: pod ``runAsNonRoot`` with
    ``runAsUser`` ``user_id`` and seccomp ``RuntimeDefault``; every (init, ephemeral) container
    ``allowPrivilegeEscalation: false`` and ``capabilities.drop: [ALL]``. Settings the spec already has
    are kept (a test that sets one on purpose still gets it)."""
    result = copy.deepcopy(dict(spec))
    pod = result.setdefault("securityContext", {})
    pod.setdefault("runAsNonRoot", True)
    pod.setdefault("runAsUser", user_id)
    pod.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    for key in CONTAINER_LISTS:
        for container in result.get(key) or []:
            context = container.setdefault("securityContext", {})
            context.setdefault("allowPrivilegeEscalation", False)
            context.setdefault("capabilities", {"drop": ["ALL"]})
    return result
