"""Cross-layer diagnosis end to end on devcluster: a real redis-server Deployment behind a Service, 3
real runtime pods, the real operator (a subprocess). The Redis Deployment is scaled to 0; the operator
reads the Kubernetes state of that Redis (Service, EndpointSlices, Deployment, pods, Events) and the
automatic incident must name the cause, ``RedisScaledToZero``, with that evidence, and be the only
incident of the outage (LowHitRate, when the pods show it, joins it: one cause, one incident).

Seconds from the fault to each milestone are printed (no timing asserts; bench/incidents.py times the
other faults). About 1-2 minutes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from devcluster.cluster import Cluster
from devcluster.testing import KubeTools
from tests.e2e.fault_scenarios import DETECT_TIMEOUT_S, REDIS_SCALED_TO_ZERO, auto_incidents, lab_for
from tests.e2e.support import OperatorProcess, crds, operator

__all__ = ["crds", "operator"]  # fixtures, reused


def test_redis_scaled_to_zero_is_diagnosed_as_such_in_one_incident(
    operator: OperatorProcess, dev_cluster: Cluster, kube: KubeTools, tmp_path: Path
) -> None:
    """Scale the Redis Deployment to 0 under traffic: one automatic incident, cause RedisScaledToZero,
    its evidence the Deployment at 0 replicas, no ready endpoint and the scaling Event; action
    ``diagnose`` (nothing to reconnect to)."""
    scenario = REDIS_SCALED_TO_ZERO
    with lab_for(dev_cluster.kubeconfig, kube.bin_dir, tmp_path, scenario) as lab:
        scenario.inject(lab)
        fault_at = time.monotonic()
        seen: dict[str, float] = {}
        incidents: list[dict[str, Any]] = []
        pod_symptoms: set[str] = set()
        opened: set[str] = set()  # symptoms the operator opened (held over consecutive probes)
        deadline = fault_at + DETECT_TIMEOUT_S
        while time.monotonic() < deadline:
            scenario.fault_traffic(lab)
            diagnoses, _ = lab.pod_diagnoses()
            for seen_by_pod in diagnoses.values():
                for symptom in seen_by_pod["symptoms"]:
                    pod_symptoms.add(symptom)
                    seen.setdefault(f"pods show {symptom}", round(time.monotonic() - fault_at, 1))
            incidents = auto_incidents(lab)
            opened |= {
                str(e.get("name"))
                for e in (lab.policy().get("status") or {}).get("symptoms") or []
                if e.get("active")
            }
            for incident in incidents:
                status = incident.get("status") or {}
                seen.setdefault("incident", round(time.monotonic() - fault_at, 1))
                if status.get("cause"):
                    seen.setdefault(f"cause {status['cause']}", round(time.monotonic() - fault_at, 1))
            done = [i for i in incidents if (i.get("status") or {}).get("cause") == "RedisScaledToZero"]
            # A pod may show LowHitRate for a probe or two; the operator opens (and joins) it only
            # when it held over consecutive probes.
            joined = "LowHitRate" not in opened or any(
                "LowHitRate" in ((i.get("status") or {}).get("symptoms") or []) for i in done
            )
            if done and joined and all((i.get("status") or {}).get("phase") != "Running" for i in done):
                break
        print(f"redis-scaled-to-zero: seconds from the fault: {json.dumps(seen)}")
        shown = json.dumps(incidents, indent=1)[:12000] + "\n" + operator.log_tail(40)
        assert len(incidents) == 1, shown
        incident = incidents[0]
        status = incident["status"]
        causes = [c["name"] for c in status["diagnosis"]["causes"]]
        print(f"symptoms {status.get('symptoms')}, causes {causes}")
        assert status["cause"] == "RedisScaledToZero", shown
        assert incident["spec"]["action"] == "diagnose", shown
        assert "RedisUnavailable" in status["symptoms"], shown
        if "LowHitRate" in opened:
            assert "LowHitRate" in status["symptoms"], shown
        top = status["diagnosis"]["causes"][0]
        assert top["name"] == "RedisScaledToZero", shown
        assert "scale deployment/redis --replicas=1" in top["recommendation"], shown
        evidence = top["evidence"]
        assert evidence["layer"] == "kubernetes" and evidence["readyEndpoints"] == 0, shown
        assert {"kind": "Deployment", "name": "redis", "replicas": 0, "readyReplicas": 0} in evidence[
            "workloads"
        ], shown
        reasons = {e["reason"] for e in evidence.get("events") or []}
        assert "ScalingReplicaSet" in reasons or "SuccessfulDelete" in reasons, shown
        scenario.repair(lab)  # Redis back for a clean teardown
