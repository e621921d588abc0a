"""Evaluators of the GitOps health checks, as the tools run them: Argo CD's ``health.lua`` in a real
Lua 5.1 (as gopher-lua) and the Flux Kustomization's ``healthCheckExprs`` in CEL. Shared by the unit
suite (tests/unit/test_gitops_health.py, every fixture) and the e2e suite (tests/e2e/test_examples.py,
live objects).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import yaml
from lupa import lua51

REPO = Path(__file__).resolve().parents[1]
CUSTOMIZATIONS = REPO / "gitops" / "argocd" / "resource_customizations" / "cachewarden.io"
FLUX_KUSTOMIZATION = REPO / "examples" / "gitops" / "flux" / "kustomization-cachepolicy.yaml"
KINDS = ("CachePolicy", "CacheIncident")
ARGO_STATUSES = ("Healthy", "Progressing", "Degraded", "Suspended")
FLUX_FOR_ARGO = {"Healthy": "Current", "Suspended": "Current", "Degraded": "Failed",
                 "Progressing": "InProgress"}


# --------------------------------------------------------------------------------------------------
# Argo CD: Lua


def to_lua(runtime: Any, value: Any) -> Any:
    """A JSON value as Argo CD hands it to Lua: objects and arrays become tables (arrays 1-based),
    null becomes nil (absent)."""
    if isinstance(value, Mapping):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


@cache
def lua_script(kind: str) -> str:
    """A kind's health.lua."""
    return (CUSTOMIZATIONS / kind / "health.lua").read_text()


@cache
def sandbox() -> Any:
    """One Lua 5.1 runtime without what Argo CD's sandbox leaves out (the scripts keep no state
    between calls: everything in them is local)."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True, register_eval=False)
    for name in ("os", "io", "require", "dofile", "loadfile", "package", "debug"):
        runtime.execute(f"{name} = nil")
    return runtime


def argo_health(kind: str, obj: Mapping[str, Any]) -> tuple[str, str]:
    """Run the kind's health.lua on ``obj`` the way Argo CD does: ``obj`` global, script body returns
    a table with status and message."""
    runtime = sandbox()
    runtime.globals().obj = to_lua(runtime, obj)
    result = runtime.execute(lua_script(kind))
    assert result is not None, f"{kind} health.lua returned nothing"
    status, message = result["status"], result["message"]
    assert status in ARGO_STATUSES, f"{kind} health.lua returned status {status!r}"
    assert isinstance(message, str) and message, f"{kind} health.lua returned no message for {status}"
    return status, message


# --------------------------------------------------------------------------------------------------
# Flux: CEL


@cache
def flux_exprs() -> dict[str, dict[str, Any]]:
    """The healthCheckExprs of the example Flux Kustomization, by kind, compiled."""
    doc = yaml.safe_load(FLUX_KUSTOMIZATION.read_text())
    env = celpy.Environment()
    out: dict[str, dict[str, Any]] = {}
    for check in doc["spec"]["healthCheckExprs"]:
        assert check["apiVersion"] == "cachewarden.io/v1alpha1", check["apiVersion"]
        programs = {}
        for field in ("inProgress", "failed", "current"):
            if field in check:
                programs[field] = env.program(env.compile(check[field]))
        out[check["kind"]] = programs
    return out


def flux_health(kind: str, obj: Mapping[str, Any]) -> str:
    """kustomize-controller's status for ``obj``: Current, Failed, InProgress or Unknown (error)."""
    status = obj.get("status")
    generation = (obj.get("metadata") or {}).get("generation")
    if isinstance(status, Mapping) and "observedGeneration" in status and generation is not None \
            and status["observedGeneration"] != generation:
        return "InProgress"
    if "status" not in obj:
        # cel-go (Flux) binds only the object's own top-level fields; every expression here reads
        # `status` in a clause that decides it, so each fails with "no such attribute: status" and
        # the StatusEvaluator returns that error. cel-python's has() answers False for an unbound
        # name instead, so this one cel-go behaviour is modelled here rather than left to celpy.
        return "Unknown"
    activation = {key: celpy.json_to_cel(value) for key, value in obj.items()}
    programs = flux_exprs()[kind]
    for field, outcome in (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current")):
        if field not in programs:
            continue
        try:
            result = programs[field].evaluate(activation)
        except celpy.CELEvalError:
            return "Unknown"
        if isinstance(result, celpy.CELEvalError):
            return "Unknown"
        assert isinstance(result, celpy.celtypes.BoolType), f"{kind}.{field} returned {result!r}"
        if bool(result):
            return outcome
    return "InProgress"
