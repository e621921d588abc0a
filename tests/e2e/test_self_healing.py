"""Self-healing end to end on devcluster: a setting fault healed by the operator's own time-boxed
override with no person's step; an override that cannot help rolled back and escalated; Off and
Recommend changing nothing.

Real redis-server pod, 3 real runtime pods, the real operator (a subprocess); faults and traffic from
``tests/e2e/fault_scenarios.py`` (``bench/incidents.py`` times the same scenarios). Each test checks the
effect, not that something ran: the symptom's figure recovered (the operator's before/after and the
incident resolved while the same workload goes on), the pods' own config in force, the policy's spec
untouched. Only generous, bounded waits; no timing asserts. About 1-3 minutes per scenario.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from cache_operator.incidents import remediation as rem
from devcluster.cluster import Cluster
from devcluster.testing import KubeTools
from tests.e2e.fault_scenarios import (
    DETECT_TIMEOUT_S,
    HEALING_SCENARIOS,
    INCOMPRESSIBLE_MEMORY,
    POLL_S,
    SCENARIOS,
    UNCOMPRESSED_MEMORY,
    Lab,
    Scenario,
    _memory_setup,
    _pods_config,
    _wait,
    auto_incidents,
    lab_for,
    run_scenario,
)
from tests.e2e.support import (
    OperatorProcess,
    crds,
    incident_condition,
    metric_value,
    operator,
    operator_log_in_report,
)

__all__ = ["crds", "operator", "operator_log_in_report"]  # fixtures, reused

VERDICT_TIMEOUT_S = 240.0
OFF_THRESHOLD = 100 * 1024 * 1024  # _memory_setup's "compression off"


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _pods_value(lab: Lab, path: str) -> set[Any]:
    group, _, name = path.partition(".")
    return _pods_config(lab, group, name)


def _events(lab: Lab, reason: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = lab.json("get", "events", "--field-selector", f"reason={reason}")["items"]
    return items


@pytest.mark.parametrize("name", HEALING_SCENARIOS)
def test_a_setting_fault_is_healed_by_the_operators_override(
    name: str, operator: OperatorProcess, dev_cluster: Cluster, kube: KubeTools, tmp_path: Path
) -> None:
    """Fault -> incident diagnosed -> apply-override run by the operator -> the symptom's figure
    recovers (Remediated, before/after) and the incident resolves while the same workload goes on;
    the spec is untouched, the pods run the override, and the offered patch applies as written."""
    scenario = SCENARIOS[name]
    with lab_for(dev_cluster.kubeconfig, kube.bin_dir, tmp_path, scenario) as lab:
        timeline = run_scenario(lab, scenario)
        incidents = auto_incidents(lab, scenario.symptom)
        shown = json.dumps({"timeline": timeline.__dict__, "incidents": incidents}, default=str)[:12000]
        assert [i["metadata"]["name"] for i in incidents] == [timeline.incident_name], shown
        incident = incidents[0]
        status = incident["status"]
        assert status["cause"] == scenario.causes[0], shown
        assert incident["spec"]["action"] == "apply-override", shown
        assert timeline.repaired is None, shown  # no person's step
        # The effect: the figure recovered, judged by the operator, and the symptom cleared.
        remediation = status["remediation"]
        assert remediation["state"] == "Remediated", shown
        assert incident_condition(incident, "Remediated")["status"] == "True", shown
        assert rem.improved(scenario.symptom, remediation["before"], remediation["after"], True) or (
            remediation["message"].endswith("cleared)")
        ), shown
        assert timeline.resolved is not None and status.get("resolvedAt"), shown
        # The override is in the policy's status and on every pod; the spec still holds the fault.
        policy = lab.policy()
        override = policy["status"]["override"]
        overrides = incident["spec"]["parameters"]["overrides"]
        assert override["incident"] == incident["metadata"]["name"] and override["overrides"] == overrides
        spec_overrides = _flat(policy["spec"].get("overrides") or {})
        for path, value in _flat(overrides).items():
            assert spec_overrides.get(path) != value, (path, policy["spec"])
            assert _pods_value(lab, path) == {value}, path
        # Making it permanent: the offered command, run as written, puts it in the spec.
        command = remediation["permanentPatch"]["command"]
        head, _, patch_body = command.partition(" -p ")
        patch_body = patch_body.strip("'")
        words = head.split()
        assert words[:5] == ["kubectl", "-n", lab.namespace, "patch", "cachepolicy"], command
        lab.kubectl("patch", "cachepolicy", words[5], "--type", "merge", "-p", patch_body)
        spec_overrides = _flat(lab.policy()["spec"].get("overrides") or {})
        for path, value in _flat(overrides).items():
            assert spec_overrides.get(path) == value, (path, spec_overrides)
        print(json.dumps(timeline.__dict__, default=str)[:3000])


def _verdict(lab: Lab, scenario: Scenario) -> dict[str, Any]:
    """Fault traffic (bounded) until the scenario's automatic incident has a remediation verdict."""
    deadline = time.monotonic() + DETECT_TIMEOUT_S + VERDICT_TIMEOUT_S
    while time.monotonic() < deadline:
        scenario.fault_traffic(lab)
        for incident in auto_incidents(lab, scenario.symptom):
            state = ((incident.get("status") or {}).get("remediation") or {}).get("state")
            if state in (rem.REMEDIATED, rem.INEFFECTIVE):
                return incident
        time.sleep(POLL_S)
    found = json.dumps(auto_incidents(lab, scenario.symptom))[:4000]
    raise AssertionError(f"no remediation verdict: {found}")


def test_an_override_that_cannot_help_is_rolled_back_and_escalated(
    operator: OperatorProcess, dev_cluster: Cluster, kube: KubeTools, tmp_path: Path
) -> None:
    """Random (incompressible) large values with compression off: the diagnosis is right, the
    compression override cannot shrink them. The figure does not improve -> the override is rolled
    back (the pods run the spec's config again), the incident fails with RemediationIneffective, a
    Warning Event and the operator's metric escalate it."""
    scenario = INCOMPRESSIBLE_MEMORY
    with lab_for(dev_cluster.kubeconfig, kube.bin_dir, tmp_path, scenario) as lab:
        assert _pods_value(lab, "compression.threshold_bytes") == {OFF_THRESHOLD}
        base_hash = lab.policy()["status"]["configHash"]
        incident = _verdict(lab, scenario)
        status = incident["status"]
        shown = json.dumps(incident, default=str)[:8000]
        assert incident["spec"]["action"] == "apply-override", shown
        remediation = status["remediation"]
        assert remediation["state"] == "Ineffective" and remediation["rolledBack"] is True, shown
        assert remediation["before"] is not None and remediation["after"] is not None, shown
        assert not rem.improved(scenario.symptom, remediation["before"], remediation["after"], True), shown
        assert status["phase"] == "Failed", shown
        condition = incident_condition(incident, "Remediated")
        assert (condition["status"], condition["reason"]) == ("False", "RemediationIneffective"), shown
        # Rolled back: the override left the policy's status and every pod runs the spec's config.
        _wait(lambda: "override" not in (lab.policy().get("status") or {}), 60, "override removed")
        _wait(
            lambda: _pods_value(lab, "compression.threshold_bytes") == {OFF_THRESHOLD},
            90,
            "every pod back on the spec's compression threshold",
        )
        assert lab.policy()["status"]["configHash"] == base_hash
        # Escalated: a Warning Event, the metric (the chart's alert fires on it).
        warnings = _events(lab, "RemediationIneffective")
        assert warnings and {e["type"] for e in warnings} == {"Warning"}, warnings
        total = 'cachewarden_operator_remediations_total{symptom="HighMemory",verdict="Ineffective"}'
        assert metric_value(operator.metrics(), total) >= 1, operator.metrics()[-3000:]
        # The action is not run again for this episode.
        pushes = [r for r in status.get("results") or [] if r["step"] == "push-override"]
        assert len(pushes) == len(lab.pods()), shown


@pytest.mark.parametrize("mode", ["Off", "Recommend"])
def test_off_and_recommend_change_nothing(
    mode: str, operator: OperatorProcess, dev_cluster: Cluster, kube: KubeTools, tmp_path: Path
) -> None:
    """The same fault as uncompressed-memory with apply-override allowed: in Off and Recommend the
    incident opens (Recommend shows the exact override and its patch) and nothing changes: the spec,
    the policy's status.override, the pods' config."""

    def setup(lab: Lab) -> dict[str, Any]:
        spec = _memory_setup(lab)
        spec["remediation"]["mode"] = mode
        return spec

    scenario = dataclasses.replace(UNCOMPRESSED_MEMORY, name=f"heal-{mode.lower()}", mode=mode, setup=setup)
    with lab_for(dev_cluster.kubeconfig, kube.bin_dir, tmp_path, scenario) as lab:
        spec_before = lab.policy()["spec"]
        base_hash = lab.policy()["status"]["configHash"]
        phase = "Skipped" if mode == "Off" else "Recommended"

        def incident() -> dict[str, Any] | None:
            scenario.fault_traffic(lab)
            found = auto_incidents(lab, scenario.symptom)
            if found and (found[0].get("status") or {}).get("phase") == phase:
                return found[0]
            return None

        opened = _wait(incident, DETECT_TIMEOUT_S, f"the HighMemory incident {phase}")
        status = opened["status"]
        shown = json.dumps(opened, default=str)[:6000]
        assert opened["spec"]["action"] == "apply-override", shown
        proposed = status["remediation"]
        assert proposed["state"] == "Proposed", shown
        assert proposed["override"] == {"compression": {"threshold_bytes": 4096}}, shown
        assert proposed["permanentPatch"]["command"].startswith(
            f"kubectl -n {lab.namespace} patch cachepolicy cache --type merge -p"
        ), shown
        # A few more probes with the fault going on: still nothing changed.
        for _ in range(3):
            scenario.fault_traffic(lab)
            time.sleep(5)
        policy = lab.policy()
        assert policy["spec"] == spec_before
        assert "override" not in policy["status"] and policy["status"]["configHash"] == base_hash
        assert _pods_value(lab, "compression.threshold_bytes") == {OFF_THRESHOLD}
        results = auto_incidents(lab, scenario.symptom)[0]["status"].get("results") or []
        assert results == [], results

