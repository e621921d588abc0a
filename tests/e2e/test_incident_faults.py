"""Automatic CacheIncidents from real faults, end to end on devcluster: a real redis-server pod, 3 real
runtime pods, the real operator (a subprocess) and the faults of ``tests/e2e/fault_scenarios.py``
(Redis stopped and restarted; Redis slowed through ``devcluster.faultproxy``; a wrong Redis password).
The faults whose fix is a setting (short TTL, whitespace variants, L1 too small, large uncompressed
values) are healed by the operator's own override: ``tests/e2e/test_self_healing.py``.

Each test checks what the issue asks: the pods' own health reports show the symptom; the operator opens
one automatic incident for it with the diagnosed cause; the action is run (Auto: every pod executed it
exactly once, by its own journal) or only recommended (Recommend: no pod executed it); and the incident
is resolved once the fault is gone. Only generous waits, no timing asserts (``bench/incidents.py`` times
the same scenarios). About 1-3 minutes per scenario.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devcluster.cluster import Cluster
from devcluster.testing import KubeTools
from tests.e2e.fault_scenarios import (
    HEALING_SCENARIOS,
    SCENARIOS,
    Lab,
    Scenario,
    Timeline,
    auto_incidents,
    lab_for,
    run_scenario,
)
from tests.e2e.support import OperatorProcess, crds, incident_condition, operator, operator_log_in_report

__all__ = ["crds", "operator", "operator_log_in_report"]  # fixtures, reused

JOURNAL_NAME = {"reconnect-redis": "redis/reconnect", "compress-existing": "compress-existing", "gc": "gc"}


def _executions(lab: Lab, action: str, key_prefix: str) -> dict[str, int]:
    """Per pod: executions of ``action`` whose idempotency key starts with ``key_prefix`` (its journal)."""
    counts = {}
    for pod in lab.pods():
        journal = lab.client(pod).get("/internal/cache/actions").json()
        counts[pod["metadata"]["name"]] = sum(
            1
            for entry in journal.get("recent") or []
            if entry.get("action") == JOURNAL_NAME.get(action, action)
            and str(entry.get("idempotency_key") or "").startswith(key_prefix)
            and not entry.get("replayed")
            and not entry.get("failed")
            and not entry.get("dry_run")
        )
    return counts


def check_timeline(lab: Lab, scenario: Scenario, timeline: Timeline) -> None:
    """The assertions every scenario shares."""
    shown = json.dumps({"timeline": timeline.__dict__}, indent=1, default=str)[:8000]
    # The fault really produced the symptom, diagnosed by the pods themselves.
    assert timeline.symptom_in_pods is not None, shown
    assert any(scenario.causes[0] in causes for causes in timeline.pod_causes.values()), shown
    # One automatic incident for it.
    assert timeline.incident is not None and timeline.incident_name, shown
    incidents = auto_incidents(lab, scenario.symptom)
    assert [i["metadata"]["name"] for i in incidents] == [timeline.incident_name], shown
    incident = incidents[0]
    status = incident["status"]
    shown = json.dumps({"timeline": timeline.__dict__, "incident": incident}, indent=1, default=str)[:12000]
    assert status["detection"]["source"] == "Auto", shown
    assert status["detection"]["symptom"] == scenario.symptom, shown
    assert status["cause"] == (scenario.incident_cause or scenario.causes[0]), shown
    assert scenario.causes[0] in [c["name"] for c in status["diagnosis"]["causes"]], shown
    assert incident["spec"]["action"] == scenario.action, shown
    assert status.get("recommendedAction") == scenario.action, shown
    # Acted on (Auto) or only recommended (Recommend).
    outcome = status.get("resolvedFromPhase") or status.get("phase")
    if scenario.mode == "Auto" and scenario.action != "diagnose":
        # Run, then verified by its effect (tests/e2e/test_self_healing.py checks the verdicts).
        verdict = (status.get("remediation") or {}).get("state")
        assert (outcome, verdict) in (("Succeeded", "Remediated"), ("Failed", "Ineffective")), shown
        results = {r["pod"]: r for r in status.get("results") or []}
        pods = [p["metadata"]["name"] for p in lab.pods()]
        assert sorted(results) == pods, shown
        assert {r["result"] for r in results.values()} == {"Succeeded"}, shown
        executed = _executions(lab, scenario.action, incident["metadata"]["uid"])
        assert executed == dict.fromkeys(pods, 1), (shown, executed)
    elif scenario.mode == "Recommend":
        assert outcome == "Recommended", shown
        executed = _executions(lab, scenario.action, incident["metadata"]["uid"])
        assert set(executed.values()) <= {0}, (shown, executed)
    if scenario.symptom == "RedisOutOfMemory":
        # The fix named is Redis's eviction policy or memory, with INFO's figures; clear never.
        causes = {c["name"]: c for c in status["diagnosis"]["causes"]}
        oom = causes["RedisOutOfMemory"]
        assert "maxmemory" in oom["recommendation"] and "volatile-lru" in oom["recommendation"], shown
        assert oom["evidence"]["maxmemory_policy"] == "noeviction" and oom["evidence"]["maxmemory"], shown
        assert incident["spec"]["action"] != "clear", shown
        assert "clear" not in json.dumps(status.get("recommendedAction")), shown
    # Resolved once the fault was gone.
    assert timeline.resolved is not None, shown
    assert status.get("resolvedAt"), shown
    assert incident_condition(incident, "Resolved").get("status") == "True", shown


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n not in HEALING_SCENARIOS])
def test_fault_scenario(
    name: str, operator: OperatorProcess, dev_cluster: Cluster, kube: KubeTools, tmp_path: Path
) -> None:
    """The scenario's fault -> symptom in the pods -> automatic incident with the diagnosed cause -> the
    action run or recommended -> resolved after the fault ends."""
    scenario = SCENARIOS[name]
    with lab_for(dev_cluster.kubeconfig, kube.bin_dir, tmp_path, scenario) as lab:
        timeline = run_scenario(lab, scenario)
        print(json.dumps(timeline.__dict__, default=str)[:3000])
        check_timeline(lab, scenario, timeline)
