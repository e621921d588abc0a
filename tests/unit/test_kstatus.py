"""Both kinds' GitOps fixtures (and every status the operator's condition code writes for an incident)
read by kstatus itself: sigs.k8s.io/cli-utils ``status.Compute``, in a Go helper built from the module
pinned in devcluster/versions.env (tests/kstatus.py). kstatus is what Helm 4 ``--wait``, Flux without
``healthCheckExprs`` and kpt use; it reads only ``Reconciling``/``Stalled`` and
``status.observedGeneration``.

kstatus must read what the Flux ``healthCheckExprs`` read (tests/gitops_health.py), fixture by fixture:
Current, InProgress or Failed. The one accepted difference: an object with no status at all, which
kstatus reads Current (it has nothing to read) and Flux cannot evaluate (Unknown; Argo CD: Progressing).
"""

from __future__ import annotations

from typing import Any

import pytest

from cache_operator.conditions import incident_conditions
from cache_operator.incidents import lifecycle
from tests import kstatus
from tests.gitops_health import KINDS, argo_health, flux_health
from tests.unit.test_gitops_health import INCIDENT_PHASES, fixture_cases, load_fixture

T0 = "2026-11-25T22:00:00Z"
# A CachePolicy paused before its pods became ready has Ready=False (reason Paused): kstatus, which
# has no "suspended", falls back to that Ready condition and reads InProgress; Flux's expressions and
# Argo CD (Suspended) read it as not failing a sync. The policy's conditions are left as they are.
KNOWN_DIFFERENCES = [("CachePolicy", "testdata/paused.yaml")]


@pytest.fixture(scope="module")
def kstatus_ready() -> None:
    """The helper, built once (skips, saying why, without a Go toolchain)."""
    try:
        kstatus.helper_binary()
    except kstatus.KstatusUnavailable as exc:
        pytest.skip(f"kstatus helper not available: {exc}")


def _expected(kind: str, obj: dict[str, Any]) -> str:
    flux = flux_health(kind, obj)
    return "Current" if flux == "Unknown" else flux


def test_every_fixture_reads_in_kstatus_as_in_flux(kstatus_ready: None) -> None:
    """Every fixture of both kinds: kstatus agrees with Flux's healthCheckExprs; Running and Pending
    incidents are InProgress, Failed and Skipped ones Failed (before Reconciling/Stalled, kstatus read
    them all Current)."""
    cases = [(kind, path) for kind, path, _, _ in fixture_cases()]
    objects = [load_fixture(kind, path) for kind, path in cases]
    results = kstatus.kstatus_read(objects)
    table, disagree = [], []
    for (kind, path), obj, result in zip(cases, objects, results, strict=True):
        table.append(
            f"{kind:13} {path:42} argo={argo_health(kind, obj)[0]:11} "
            f"flux={flux_health(kind, obj):10} kstatus={result['status']} ({result['message']})"
        )
        if result["status"] != _expected(kind, obj):
            disagree.append((kind, path))
    print("\n".join(table))
    assert disagree == KNOWN_DIFFERENCES, disagree
    by_phase = {
        (obj.get("status") or {}).get("phase"): result["status"]
        for (kind, _), obj, result in zip(cases, objects, results, strict=True)
        if kind == "CacheIncident"
    }
    assert by_phase["Running"] == by_phase["Pending"] == "InProgress"
    assert by_phase["Failed"] == by_phase["Skipped"] == "Failed"
    assert by_phase["Succeeded"] == by_phase["Resolved"] == by_phase["Recommended"] == "Current"
    assert {kind for kind, _ in cases} == set(KINDS)


def _incident(status: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "cachewarden.io/v1alpha1",
        "kind": "CacheIncident",
        "metadata": {
            "name": "i",
            "namespace": "ns",
            "generation": generation,
            "labels": {"cachewarden.io/incident-source": "auto"},
        },
        "spec": {"policyRef": {"name": "p"}, "action": "gc"},
        "status": status,
    }


def test_every_phase_the_operator_writes_reads_in_kstatus_as_in_flux(kstatus_ready: None) -> None:
    """incident_conditions for every phase, then resolved and reopened by the lifecycle code, and a
    spec change not yet observed (InProgress): kstatus agrees with Flux at each step."""
    objects: list[dict[str, Any]] = []
    for phase, (reason, _) in sorted(INCIDENT_PHASES.items()):
        conditions = incident_conditions(phase, f"{phase} message", [], T0, 1, reason)
        status = {"phase": phase, "observedGeneration": 1, "message": "m", "conditions": conditions}
        objects.append(_incident(status))
        objects.append(_incident(status, generation=2))
        resolved = lifecycle.resolution_status(status, "2026-11-25T22:05:00Z", "cleared", 1)
        if resolved is not None and phase != "Resolved":
            after = {**status, **resolved}
            objects.append(_incident(after))
            reopened = lifecycle.recurrence_status(after, "2026-11-25T22:06:00Z", {}, 1)
            objects.append(_incident({k: v for k, v in {**after, **reopened}.items() if v is not None}))
    results = kstatus.kstatus_read(objects)
    for obj, result in zip(objects, results, strict=True):
        assert result["status"] == _expected("CacheIncident", obj), (obj["status"], result)
