"""The operator end to end on devcluster: real API server and controller manager, the process kubelet
running real ``cachewarden runtime`` processes and a real redis-server pod, and the operator itself run
as ``cachewarden operator`` in a subprocess (one per module).

What is checked is what a user sees: children and their owner references, pods Running, the policy's
status and printer columns, and what every pod reports about itself over its own admin API (the
config hash it runs), asked directly by the test with the token from the policy's Secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cache_operator import render
from cache_operator.api import CachePolicySpec
from devcluster.testing import RESTRICTED_USER_ID, KubeTools, wait_for
from tests.e2e.support import (
    READY_TIMEOUT,
    REDIS,
    OperatorProcess,
    admin_token,
    all_pods_report,
    condition,
    crds,
    expected_hash,
    get_policy,
    metric_value,
    operator,
    pod_hash,
    policy_yaml,
    ready_policy,
    runtime_pods,
    wait_dict,
)

__all__ = ["crds", "operator"]  # fixtures, reused


@pytest.fixture(autouse=True)
def _operator_log_in_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the operator's log tail after each test using it: pytest shows it only when one fails."""
    yield
    if "operator" in request.fixturenames:
        print("---- operator log ----\n" + request.getfixturevalue("operator").log_tail())


# --- tests ---------------------------------------------------------------------------------------


def test_runtime_policy_lifecycle(operator: OperatorProcess, kube: KubeTools, namespace: str) -> None:
    """Create -> Ready with the hash on every pod; preset change pushed to every pod; scale; columns;
    delete -> children gone."""
    spec: dict[str, Any] = {
        "preset": "development",
        "redis": {"url": "redis://redis:6379/0"},
        "runtime": {"replicas": 2},
        "health": {"probeIntervalSeconds": 5},
    }
    kube.apply(REDIS, namespace)
    kube.apply(policy_yaml("web", spec), namespace)

    policy = wait_dict(lambda: ready_policy(kube, namespace, "web", 1), READY_TIMEOUT, "policy web Ready")
    status = policy["status"]
    first_hash = status["configHash"]
    shown = json.dumps(status, indent=1)  # the whole status in any failure message below
    assert first_hash == expected_hash(kube, namespace, spec), shown
    assert status["pods"] == {"desired": 2, "ready": 2, "configured": 2, "summary": "2/2"}, shown
    assert status["preset"] == "development", shown
    assert condition(policy, "Stalled")["status"] == "False", shown
    assert condition(policy, "ConfigApplied")["status"] == "True", shown
    assert all(c.get("observedGeneration") == 1 for c in status["conditions"]), shown

    # Children: owned by the policy, labelled explicitly.
    for kind, child in [
        ("deployment", render.deployment_name("web")),
        ("service", render.service_name("web")),
        ("configmap", render.configmap_name("web")),
        ("secret", render.token_secret_name("web")),
    ]:
        obj = kube.kubectl_json("get", kind, child, "-n", namespace)
        owners = obj["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"], o.get("controller")) for o in owners] == [
            ("CachePolicy", policy["metadata"]["uid"], True)
        ], (kind, owners)
        assert obj["metadata"]["labels"][render.LABEL_POLICY] == "web"
    configmap = kube.kubectl_json("get", "configmap", render.configmap_name("web"), "-n", namespace)
    assert configmap["data"][render.CONFIG_HASH_KEY] == first_hash

    # Every pod reports the hash itself.
    assert wait_for(lambda: all_pods_report(kube, namespace, "web", first_hash, 2), 60, "pods on first hash")

    # Preset change: pushed (the operator's push counter moves), every pod reports the new hash.
    pushes_before = metric_value(operator.metrics(), 'cachewarden_operator_config_pushes_total{result="ok"}')
    kube.kubectl(
        "patch",
        "cachepolicy",
        "web",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        '{"spec": {"preset": "ai-production"}}',
    )
    spec["preset"] = "ai-production"
    new_hash = expected_hash(kube, namespace, spec)
    assert new_hash != first_hash
    assert wait_for(
        lambda: all_pods_report(kube, namespace, "web", new_hash, 2), 60, "every pod on the new hash"
    )
    policy = wait_dict(lambda: ready_policy(kube, namespace, "web", 2), 60, "policy Ready at generation 2")
    assert policy["status"]["configHash"] == new_hash
    assert policy["status"]["preset"] == "ai-production"
    pushes_after = metric_value(operator.metrics(), 'cachewarden_operator_config_pushes_total{result="ok"}')
    assert pushes_after >= pushes_before + 2, (pushes_before, pushes_after)

    # Scale to 3: the new pod starts from the ConfigMap (already the new hash) and is counted.
    kube.kubectl(
        "patch",
        "cachepolicy",
        "web",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        '{"spec": {"runtime": {"replicas": 3}}}',
    )
    policy = wait_dict(
        lambda: (p := ready_policy(kube, namespace, "web", 3)) and p["status"]["pods"]["ready"] == 3 and p,
        READY_TIMEOUT,
        "policy Ready with 3 pods",
    )
    assert policy["status"]["pods"] == {"desired": 3, "ready": 3, "configured": 3, "summary": "3/3"}
    assert wait_for(
        lambda: all_pods_report(kube, namespace, "web", new_hash, 3), 60, "3 pods on the new hash"
    )

    # Printer columns show live values.
    def columns() -> dict[str, str] | None:
        table = kube.kubectl("get", "cpol", "web", "-n", namespace).stdout.splitlines()
        header, row = table[0], table[1]
        starts = [
            header.index(col)
            for col in ("NAME", "PRESET", "READY", "PODS", "CONFIGURED", "HIT RATE", "REDIS", "AGE")
        ]
        cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], len(row)], strict=False)]
        values = dict(
            zip(
                ("NAME", "PRESET", "READY", "PODS", "CONFIGURED", "HIT RATE", "REDIS", "AGE"),
                cells,
                strict=False,
            )
        )
        return values if values["REDIS"] == "Connected" else None

    values = wait_dict(columns, 60, "kubectl get cpol with Redis Connected")
    assert values["NAME"] == "web"
    assert values["PRESET"] == "ai-production"
    assert values["READY"] == "True"
    assert values["PODS"] == "3/3"
    assert values["CONFIGURED"] == "3"

    # Delete: every child goes.
    kube.kubectl("delete", "cachepolicy", "web", "-n", namespace, "--timeout", "60s")

    def children_gone() -> bool:
        for kind, child in [
            ("deployment", render.deployment_name("web")),
            ("service", render.service_name("web")),
            ("configmap", render.configmap_name("web")),
            ("secret", render.token_secret_name("web")),
        ]:
            if kube.kubectl("get", kind, child, "-n", namespace, check=False).returncode == 0:
                return False
        return not runtime_pods(kube, namespace, "web")

    assert wait_for(children_gone, 90, "children and runtime pods of web gone")


def test_semantically_invalid_spec_is_stalled(
    operator: OperatorProcess, kube: KubeTools, namespace: str
) -> None:
    """A spec the schema accepts but the engine refuses is Stalled, naming the field; fixing it recovers."""
    bad = {
        "preset": "production",
        "overrides": {"keys": {"tiers": {"small": 5000, "medium": 1000}}},
        "selector": {"matchLabels": {"app": "nothing-here"}},
    }
    kube.apply(policy_yaml("bad", bad), namespace)

    def stalled() -> dict[str, Any] | None:
        policy = get_policy(kube, namespace, "bad")
        return policy if condition(policy, "Stalled").get("status") == "True" else None

    policy = wait_dict(stalled, 60, "policy bad Stalled")
    stalled_cond = condition(policy, "Stalled")
    assert stalled_cond["reason"] == "InvalidSpec"
    assert "spec.overrides.keys.tiers.medium" in stalled_cond["message"]
    assert condition(policy, "Ready")["status"] == "False"
    assert condition(policy, "Reconciling")["status"] == "False"
    assert policy["status"]["observedGeneration"] == 1
    assert (
        kube.kubectl(
            "get", "configmap", render.configmap_name("bad"), "-n", namespace, check=False
        ).returncode
        != 0
    ), "nothing is applied for an invalid spec"

    kube.kubectl(
        "patch",
        "cachepolicy",
        "bad",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        '{"spec": {"overrides": {"keys": {"tiers": {"small": 500, "medium": 1000}}}}}',
    )
    policy = wait_dict(lambda: ready_policy(kube, namespace, "bad", 2), 60, "fixed policy Ready")
    assert condition(policy, "Stalled")["status"] == "False"
    # Selector mode with no matching pod: nothing to configure, Ready with 0/0.
    assert policy["status"]["pods"]["summary"] == "0/0"
    kube.kubectl("get", "configmap", render.configmap_name("bad"), "-n", namespace)


def test_schema_invalid_spec_rejected_by_api_server(crds: None, kube: KubeTools, namespace: str) -> None:
    """Both targets at once is refused by the API server with the CEL rule's message."""
    both = {"runtime": {"replicas": 1}, "selector": {"matchLabels": {"a": "b"}}}
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", input=policy_yaml("both", both), check=False)
    assert result.returncode != 0
    assert "exactly one of spec.runtime" in result.stderr, result.stderr


def test_paused_policy_changes_nothing(operator: OperatorProcess, kube: KubeTools, namespace: str) -> None:
    """paused: no children, Reconciling=False/Paused; unpausing creates them."""
    spec = {"preset": "simple", "runtime": {"replicas": 1}, "paused": True}
    kube.apply(policy_yaml("still", spec), namespace)

    def paused() -> dict[str, Any] | None:
        policy = get_policy(kube, namespace, "still")
        return policy if condition(policy, "Reconciling").get("reason") == "Paused" else None

    policy = wait_dict(paused, 60, "policy still reported Paused")
    assert condition(policy, "Ready")["status"] == "False"
    assert (
        kube.kubectl(
            "get", "deployment", render.deployment_name("still"), "-n", namespace, check=False
        ).returncode
        != 0
    )
    kube.kubectl(
        "patch",
        "cachepolicy",
        "still",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        '{"spec": {"paused": false}}',
    )
    wait_for(lambda: ready_policy(kube, namespace, "still", 2), READY_TIMEOUT, "unpaused policy Ready")
    kube.kubectl("get", "deployment", render.deployment_name("still"), "-n", namespace)


def test_selector_mode_configures_sample_app(
    operator: OperatorProcess, kube: KubeTools, namespace: str
) -> None:
    """Pods of the sample app (embedding the engine) mount the policy's ConfigMap and Secret; the
    operator pushes and probes them like runtime pods."""
    app = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: sample}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: sample}}}}
  template:
    metadata: {{labels: {{app: sample}}}}
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: {RESTRICTED_USER_ID}
        seccompProfile: {{type: RuntimeDefault}}
      containers:
        - name: app
          image: python:3.11
          command: [python, -m, examples.sample_app]
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {{drop: [ALL]}}
          env:
            - {{name: CACHEWARDEN_PORT, value: "8080"}}
            - {{name: CACHEWARDEN_CONFIG_PATH, value: {render.CONFIG_PATH}}}
            - {{name: CACHEWARDEN_ADMIN_TOKEN_FILE, value: {render.TOKENS_DIR}/{render.ADMIN_TOKEN_KEY}}}
            - {{name: CACHEWARDEN_READ_TOKEN_FILE, value: {render.TOKENS_DIR}/{render.READ_TOKEN_KEY}}}
            - {{name: SAMPLE_MODEL_DELAY_S, value: "0"}}
          ports: [{{containerPort: 8080}}]
          volumeMounts:
            - {{name: config, mountPath: {render.CONFIG_DIR}}}
            - {{name: tokens, mountPath: {render.TOKENS_DIR}}}
      volumes:
        - {{name: config, configMap: {{name: {render.configmap_name("shop")}}}}}
        - {{name: tokens, secret: {{secretName: {render.token_secret_name("shop")}}}}}
"""
    spec: dict[str, Any] = {"preset": "ai-development", "selector": {"matchLabels": {"app": "sample"}}}
    kube.apply(app, namespace)
    kube.apply(policy_yaml("shop", spec), namespace)
    policy = wait_dict(
        lambda: (p := ready_policy(kube, namespace, "shop", 1)) and p["status"]["pods"]["desired"] == 2 and p,
        READY_TIMEOUT,
        "policy shop Ready with both sample pods",
    )
    first_hash = policy["status"]["configHash"]
    assert policy["status"]["pods"]["configured"] == 2

    kube.kubectl(
        "patch",
        "cachepolicy",
        "shop",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        '{"spec": {"overrides": {"ttl": {"default_s": 120}}}}',
    )
    spec["overrides"] = {"ttl": {"default_s": 120}}
    new_hash = render.resolve_policy_config(CachePolicySpec.model_validate(spec)).config_hash()
    assert new_hash != first_hash
    token = admin_token(kube, namespace, "shop")

    def sample_pods_on_new_hash() -> bool:
        pods = kube.kubectl_json("get", "pods", "-n", namespace, "-l", "app=sample")["items"]
        return len(pods) == 2 and all(pod_hash(p, token) == new_hash for p in pods)

    assert wait_for(sample_pods_on_new_hash, 60, "sample pods on the new hash")
    kube.kubectl("delete", "cachepolicy", "shop", "-n", namespace, "--timeout", "60s")
    # Selector mode deletes only what the operator created; the application stays.
    assert wait_for(
        lambda: (
            kube.kubectl(
                "get", "configmap", render.configmap_name("shop"), "-n", namespace, check=False
            ).returncode
            != 0
        ),
        60,
        "shop ConfigMap gone",
    )
    kube.kubectl("get", "deployment", "sample", "-n", namespace)


def test_operator_metrics_and_liveness(operator: OperatorProcess) -> None:
    """/metrics has the reconcile counters and policies by condition; the liveness endpoint answers."""
    text = operator.metrics()
    assert "cachewarden_operator_reconciles_total" in text
    assert "cachewarden_operator_reconcile_seconds_bucket" in text
    assert "cachewarden_operator_policies_total" in text
    response = httpx.get(f"http://127.0.0.1:{operator.liveness_port}/healthz", timeout=5)
    assert response.status_code == 200
