"""GitOps health checks of both kinds, run for real on the same fixtures:

- the Argo CD ``health.lua`` scripts (gitops/argocd/resource_customizations/cachewarden.io/<Kind>/)
  under Lua 5.1 (lupa's bundled Lua 5.1: Argo CD runs gopher-lua, a Lua 5.1) without ``os``, ``io``
  and ``require``, as Argo CD's sandbox has none of them, against Argo CD's own test layout
  (``health_test.yaml``: input file + expected status and message);
- the Flux ``healthCheckExprs`` of examples/gitops/flux/kustomization-cachepolicy.yaml with cel-python,
  evaluated the way kustomize-controller does (fluxcd/pkg runtime/cel StatusEvaluator, RFC-0009):
  observedGeneration behind generation is InProgress without evaluating anything; then inProgress,
  failed, current in that order, the first true one wins; none true is InProgress; an evaluation error
  leaves the object Unknown (Flux keeps waiting).

Both must agree on every fixture: Healthy and Suspended are Flux's current (Flux has no "suspended";
a paused policy or a recommendation waiting for a person must not fail a sync), Degraded is failed,
Progressing is inProgress. The one accepted difference: an object with no status at all is
Progressing for Argo CD and Unknown for Flux (``status`` is unbound in CEL; Flux waits, which is the
same outcome).

The fixtures are real objects captured from the operator on devcluster (gitops/capture_fixtures.py)
plus a few constructed from the executor's status shapes where a state is too short-lived to catch;
every fixture says which it is. Beyond the fixtures, agreement is also checked over every status the
operator's own condition functions produce (cache_operator.conditions.policy_conditions over a grid of
observations, cache_operator.conditions.incident_conditions over every phase).
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from cache_operator import conditions as conds
from cache_operator.conditions import incident_conditions
from cache_operator.incidents import lifecycle
from tests.gitops_health import (
    ARGO_STATUSES,
    CUSTOMIZATIONS,
    FLUX_FOR_ARGO,
    FLUX_KUSTOMIZATION,
    KINDS,
    REPO,
    argo_health,
    flux_exprs,
    flux_health,
    lua_script,
)


def assert_agree(kind: str, obj: Mapping[str, Any], argo_status: str, flux_status: str) -> None:
    """Lua and CEL say the same thing about ``obj``."""
    if flux_status == "Unknown":
        assert "status" not in obj and argo_status == "Progressing", (
            f"{kind}: Flux could not evaluate an object that has a status (Argo CD: {argo_status})"
        )
        return
    assert FLUX_FOR_ARGO[argo_status] == flux_status, (
        f"{kind}: Argo CD says {argo_status}, Flux says {flux_status} for status {obj.get('status')}"
    )


# --------------------------------------------------------------------------------------------------
# fixtures (Argo CD's health_test.yaml layout)


def fixture_cases() -> list[tuple[str, str, str, str]]:
    """(kind, input path, expected status, expected message) from every health_test.yaml."""
    cases = []
    for kind in KINDS:
        spec = yaml.safe_load((CUSTOMIZATIONS / kind / "health_test.yaml").read_text())
        for test in spec["tests"]:
            cases.append((kind, test["inputPath"], test["healthStatus"]["status"],
                          test["healthStatus"]["message"]))
    return cases


def load_fixture(kind: str, input_path: str) -> dict[str, Any]:
    """One fixture object."""
    data = yaml.safe_load((CUSTOMIZATIONS / kind / input_path).read_text())
    assert data["kind"] == kind and data["apiVersion"] == "cachewarden.io/v1alpha1", input_path
    return dict(data)


@pytest.mark.parametrize(("kind", "input_path", "status", "message"), fixture_cases(),
                         ids=[f"{c[0]}-{Path(c[1]).stem}" for c in fixture_cases()])
def test_fixture_lua_and_cel(kind: str, input_path: str, status: str, message: str) -> None:
    """health.lua returns the expected status and message; the Flux CEL expressions agree."""
    obj = load_fixture(kind, input_path)
    assert argo_health(kind, obj) == (status, message)
    assert_agree(kind, obj, status, flux_health(kind, obj))


def test_every_fixture_is_tested_and_every_outcome_covered() -> None:
    """No fixture file is left out of health_test.yaml, and each kind's fixtures reach every Argo CD
    status its script can return (so each branch of both checks is exercised)."""
    cases = fixture_cases()
    for kind in KINDS:
        listed = {c[1] for c in cases if c[0] == kind}
        files = {f"testdata/{p.name}" for p in (CUSTOMIZATIONS / kind / "testdata").glob("*.yaml")}
        assert listed == files, f"{kind}: untested fixtures {files - listed}, missing {listed - files}"
        reached = {c[2] for c in cases if c[0] == kind}
        assert reached == set(ARGO_STATUSES), f"{kind}: fixtures reach only {sorted(reached)}"


def test_captured_fixtures_dominate() -> None:
    """Most fixtures are real objects captured from the operator, and each says where it came from."""
    captured = constructed = 0
    for kind in KINDS:
        for path in (CUSTOMIZATIONS / kind / "testdata").glob("*.yaml"):
            first = path.read_text().splitlines()[0]
            if first.startswith("# Captured from a real operator"):
                captured += 1
            elif first.startswith("# Constructed (not captured)"):
                constructed += 1
            else:
                pytest.fail(f"{path}: first line must say whether it was captured or constructed")
    assert captured > constructed, (captured, constructed)


# --------------------------------------------------------------------------------------------------
# agreement over every status the operator's condition code produces


def policy_object(observed: conds.PolicyObservation, paused: bool, generation: int = 3,
                  observed_generation: int | None = 3) -> dict[str, Any]:
    """A CachePolicy whose status comes from the operator's own policy_conditions."""
    status: dict[str, Any] = {
        "conditions": conds.policy_conditions(observed, None, "2026-11-25T22:00:00Z"),
    }
    if observed_generation is not None:
        status["observedGeneration"] = observed_generation
    return {"apiVersion": "cachewarden.io/v1alpha1", "kind": "CachePolicy",
            "metadata": {"name": "p", "namespace": "ns", "generation": generation},
            "spec": {"preset": "production", "paused": paused, "runtime": {"replicas": 2}},
            "status": status}


def policy_observations() -> list[tuple[conds.PolicyObservation, bool]]:
    """A grid over what a reconcile pass can see."""
    out = []
    for spec_error, paused, apply_error, pods, (health, redis) in itertools.product(
        (None, "spec.overrides.keys.tiers.medium: 1000 is not accepted"),
        (False, True),
        (None, "Deployment: admission webhook denied"),
        ((0, 0, 0), (2, 2, 2), (2, 1, 1), (2, 2, 1), (2, 2, 0)),
        (("Healthy", "Connected"), ("Degraded", "Disconnected"), ("Unhealthy", "Disabled"),
         ("Unknown", "Unknown"), ("Healthy", "Degraded")),
    ):
        desired, ready, configured = pods
        observation = conds.PolicyObservation(
            generation=3, spec_error=spec_error, paused=paused, apply_error=apply_error,
            config_hash="ab" * 32, pods_desired=desired, pods_ready=ready, pods_configured=configured,
            probed=True, health=health, health_message="hit rate 35%", redis=redis, redis_message="",
        )
        out.append((observation, paused))
    return out


def test_policy_agreement_over_operator_conditions() -> None:
    """For every status policy_conditions can produce (and for a spec change not yet observed), the
    Lua and CEL checks agree, and the outcome is the one the conditions mean."""
    seen = set()
    for observation, paused in policy_observations():
        for generation, observed in ((3, 3), (4, 3)):
            obj = policy_object(observation, paused, generation, observed)
            status, message = argo_health("CachePolicy", obj)
            assert_agree("CachePolicy", obj, status, flux_health("CachePolicy", obj))
            seen.add(status)
            if generation != observed:
                assert status == "Progressing" and "generation 4" in message
            elif observation.spec_error:
                assert status == "Degraded" and observation.spec_error in message
            elif paused:
                assert status == "Suspended"
            elif observation.apply_error or observation.pods_ready < observation.pods_desired \
                    or observation.pods_configured < observation.pods_desired:
                assert status == "Progressing"
            else:
                assert status == "Healthy"
                if observation.health in ("Degraded", "Unhealthy") and observation.pods_desired > 0:
                    assert "hit rate 35%" in message
    assert seen == set(ARGO_STATUSES)


INCIDENT_PHASES = {
    # phase -> (reason the executor writes, expected Argo CD status)
    "Pending": ("DisruptiveActionRunning", "Progressing"),
    "Running": ("Executing", "Progressing"),
    "Succeeded": ("Completed", "Healthy"),
    "Failed": ("StepsFailed", "Degraded"),
    "Skipped": ("PolicyPaused", "Degraded"),
    "Recommended": ("RecommendOnly", "Suspended"),
    "Resolved": ("SymptomCleared", "Healthy"),
}


@pytest.mark.parametrize("phase", sorted(INCIDENT_PHASES))
def test_incident_agreement_over_executor_conditions(phase: str) -> None:
    """Every phase with the conditions incidents/executor_io.py writes for it: the expected Argo CD status,
    and Flux agrees; also while the operator has not yet observed the object's generation."""
    reason, expected = INCIDENT_PHASES[phase]
    condition_list = incident_conditions(phase, f"{phase} message", [], "2026-11-25T22:00:00Z", 1, reason)
    obj: dict[str, Any] = {"apiVersion": "cachewarden.io/v1alpha1", "kind": "CacheIncident",
           "metadata": {"name": "i", "namespace": "ns", "generation": 1},
           "spec": {"policyRef": {"name": "p"}, "action": "gc"},
           "status": {"phase": phase, "conditions": condition_list, "message": f"{phase} message",
                      "observedGeneration": 1}}
    status, message = argo_health("CacheIncident", obj)
    assert status == expected and f"{phase} message" in message, (status, message)
    assert_agree("CacheIncident", obj, status, flux_health("CacheIncident", obj))
    # The phase alone (conditions not written yet) gives the same answer.
    bare = {**obj, "status": {"phase": phase, "observedGeneration": 1}}
    assert argo_health("CacheIncident", bare)[0] == expected
    assert_agree("CacheIncident", bare, expected, flux_health("CacheIncident", bare))
    behind = {**obj, "metadata": {**obj["metadata"], "generation": 2}}
    assert argo_health("CacheIncident", behind)[0] == "Progressing"
    assert flux_health("CacheIncident", behind) == "InProgress"


@pytest.mark.parametrize("phase", sorted(set(INCIDENT_PHASES) - {"Resolved", "Running"}))
def test_incident_agreement_through_resolve_and_recurrence(phase: str) -> None:
    """An automatic incident in each phase, resolved when its symptom clears and reopened when it
    recurs, with the status patches the operator's lifecycle code writes: Healthy once resolved,
    back to its phase's health once reopened; Flux agrees at each step."""
    reason, expected = INCIDENT_PHASES[phase]
    conditions = incident_conditions(phase, f"{phase} message", [], "2026-11-25T22:00:00Z", 1, reason)
    status: dict[str, Any] = {"phase": phase, "observedGeneration": 1, "message": f"{phase} message",
                              "conditions": conditions}
    obj: dict[str, Any] = {"apiVersion": "cachewarden.io/v1alpha1", "kind": "CacheIncident",
           "metadata": {"name": "i", "namespace": "ns", "generation": 1,
                        "labels": {"cachewarden.io/incident-source": "auto"}},
           "spec": {"policyRef": {"name": "p"}, "action": "gc"}, "status": status}
    resolved = lifecycle.resolution_status(status, "2026-11-25T22:05:00Z", "symptom cleared", 1)
    assert resolved is not None
    obj["status"] = {**status, **resolved}
    assert argo_health("CacheIncident", obj) == ("Healthy", "Resolved: symptom cleared")
    assert flux_health("CacheIncident", obj) == "Current"
    reopened = lifecycle.recurrence_status(obj["status"], "2026-11-25T22:06:00Z", {}, 1)
    obj["status"] = {k: v for k, v in {**obj["status"], **reopened}.items() if v is not None}
    status_now, _ = argo_health("CacheIncident", obj)
    assert status_now == expected, (phase, obj["status"])
    assert_agree("CacheIncident", obj, status_now, flux_health("CacheIncident", obj))


def test_lua_runs_in_argo_sandbox_only() -> None:
    """The sandbox really lacks os/io (a script that used them would fail here as in Argo CD)."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True, register_eval=False)
    runtime.execute("os = nil")
    with pytest.raises(lua51.LuaError):
        runtime.execute("return os.time()")


# --------------------------------------------------------------------------------------------------
# the shipped configuration


def test_argocd_configmap_embeds_the_scripts() -> None:
    """examples/gitops/argocd/argocd-cm-health.yaml carries exactly the health.lua files."""
    spec = importlib.util.spec_from_file_location("render_argocd_cm", REPO / "gitops" / "render_argocd_cm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    example = (REPO / "examples" / "gitops" / "argocd" / "argocd-cm-health.yaml").read_text()
    assert example == module.render(), "regenerate: .venv/bin/python gitops/render_argocd_cm.py --write"
    data = yaml.safe_load(example)["data"]
    for kind in KINDS:
        assert data[f"resource.customizations.health.cachewarden.io_{kind}"] == lua_script(kind)


def test_flux_exprs_cover_both_kinds_with_all_three_expressions() -> None:
    """Both kinds have current, inProgress and failed (failed: so a broken object fails the sync at
    once instead of after spec.timeout)."""
    exprs = flux_exprs()
    assert set(exprs) == set(KINDS)
    for kind in KINDS:
        assert set(exprs[kind]) == {"inProgress", "failed", "current"}, kind
    doc = yaml.safe_load(FLUX_KUSTOMIZATION.read_text())
    assert doc["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1" and doc["spec"]["wait"] is True
