"""A spec whose rendered child the API server refuses, against the real API server and operator.

Two layers: the CRD refuses what it can check itself (resource names, annotation keys, node-selector
keys and values), naming the field and the refused key; what it cannot (a container's CPU request above
its limit: the CRD does not compare quantities) reaches the operator, whose Deployment apply gets a 422,
and the policy goes Stalled (ChildRejected) naming the policy's field with the API server's own words,
not Reconciling for ever. Correcting the spec recovers it. (Named apart from tests/unit/
test_child_rejection.py: pytest's default import mode refuses two test files with one basename.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cache_operator import render
from devcluster.testing import KubeTools, wait_for
from tests.e2e.support import (
    OperatorProcess,
    condition,
    crds,
    get_policy,
    operator,
    policy_yaml,
    ready_policy,
    wait_dict,
)

__all__ = ["crds", "operator"]  # fixtures, reused

REFUSED_BY_CRD: dict[str, tuple[dict[str, Any], str, str]] = {
    "resource name": ({"resources": {"limits": {"tier": "1"}}}, "spec.runtime.resources.limits", '"tier"'),
    "annotation key": (
        {"podAnnotations": {"not a key!": "x"}}, "spec.runtime.podAnnotations", '"not a key!"'
    ),
    "node selector key": ({"nodeSelector": {"a/b/c": "x"}}, "spec.runtime.nodeSelector", '"a/b/c"'),
    "node selector value": ({"nodeSelector": {"tier": "not a value!"}}, "spec.runtime.nodeSelector.tier",
                            '"not a value!"'),
}


@pytest.mark.parametrize("case", sorted(REFUSED_BY_CRD))
def test_the_crd_refuses_what_it_can_check_naming_field_and_value(
    crds: None, kube: KubeTools, namespace: str, case: str
) -> None:
    runtime, field, value = REFUSED_BY_CRD[case]
    spec = {"preset": "production", "runtime": {"replicas": 0, **runtime}}
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", input=policy_yaml("refused", spec),
                          check=False)
    assert result.returncode != 0, result.stdout
    assert f"{field}: Invalid value" in result.stderr, result.stderr
    assert value in result.stderr, result.stderr


def test_a_deployment_the_api_server_refuses_stalls_the_policy_until_the_spec_is_corrected(
    operator: OperatorProcess, kube: KubeTools, namespace: str
) -> None:
    over = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    spec = {"preset": "production", "runtime": {"replicas": 0, "resources": over}}
    kube.apply(policy_yaml("refused", spec), namespace)

    def stalled() -> dict[str, Any] | None:
        policy = get_policy(kube, namespace, "refused")
        return policy if condition(policy, "Stalled").get("status") == "True" else None

    policy = wait_dict(stalled, 90, "policy refused Stalled")
    cond = condition(policy, "Stalled")
    assert cond["reason"] == "ChildRejected", cond
    deployment = f"{namespace}/{render.deployment_name('refused')}"
    assert cond["message"].startswith(
        f"spec.runtime.resources.requests: the API server refused Deployment {deployment}: "
        "spec.template.spec.containers[0].resources.requests: Invalid value: \"2\": "
        "must be less than or equal to cpu limit of 1"
    ), cond
    assert (condition(policy, "Ready")["status"], condition(policy, "Ready")["reason"]) == (
        "False", "ChildRejected")
    assert condition(policy, "Reconciling")["status"] == "False"
    assert policy["status"]["observedGeneration"] == 1
    assert kube.kubectl("get", "deployment", render.deployment_name("refused"), "-n", namespace,
                        check=False).returncode != 0

    def warned() -> bool:
        events = kube.kubectl_json("get", "events", "-n", namespace, "--field-selector",
                                   "involvedObject.name=refused,reason=ChildRejected")
        return any(e.get("type") == "Warning" and "spec.runtime.resources.requests" in e.get("message", "")
                   for e in events.get("items") or [])

    wait_for(warned, 60, "Warning Event ChildRejected on the policy")

    fixed = {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}
    kube.kubectl("patch", "cachepolicy", "refused", "-n", namespace, "--type", "merge", "-p",
                 json.dumps({"spec": {"runtime": {"resources": fixed}}}))
    policy = wait_dict(lambda: ready_policy(kube, namespace, "refused", 2), 90, "corrected policy Ready")
    assert (condition(policy, "Stalled")["status"], condition(policy, "Stalled")["reason"]) == (
        "False", "SpecAccepted")
    created = kube.kubectl_json("get", "deployment", render.deployment_name("refused"), "-n", namespace)
    resources = created["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "1" and resources["limits"]["cpu"] == "1"
