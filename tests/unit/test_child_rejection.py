"""A rendered child the API server refuses as invalid (HTTP 422): mapped back to the policy's field,
Stalled (ChildRejected) instead of retried every second; transient failures stay ApplyFailed.

The Status bodies below were captured from the real kube-apiserver (v1.36.3, devcluster) by applying
the Deployment ``render.render_deployment`` makes for each spec (trimmed to kind/message/reason/
details/code; the messages are verbatim). End to end: tests/e2e/test_fuzz_resources.py
(``test_a_spec_whose_deployment_the_api_server_refuses_settles``) and tests/e2e/test_child_rejection.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import pytest

from cache_operator import conditions as c
from cache_operator import render
from cache_operator.child_rejection import (
    MESSAGE_LIMIT,
    ChildRejection,
    RefusedField,
    is_rejection,
    rejection_from_status,
    spec_field_of,
)
from cache_operator.k8s import KubeError
from cache_operator.podclient import PodReply, PodTarget
from cache_operator.ports import PolicyRef
from cache_operator.reconcile import handle_reconcile

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:00:15Z"
POLICY = PolicyRef("refused", "ns", "uid-1", 1)
DEPLOYMENT = "ns/refused-cachewarden"

_KEY_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
    "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def _status(message: str, causes: list[tuple[str, str]]) -> dict[str, Any]:
    """A 422 Status as the API server sends it for Deployment refused-cachewarden."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": f'Deployment.apps "refused-cachewarden" is invalid: {message}',
        "reason": "Invalid",
        "details": {
            "name": "refused-cachewarden",
            "group": "apps",
            "kind": "Deployment",
            "causes": [
                {"reason": "FieldValueInvalid", "message": text, "field": field} for field, text in causes
            ],
        },
        "code": 422,
    }


LIMITS = "spec.template.spec.containers[0].resources.limits[tier]"
CAPTURED = {
    # spec.runtime.resources.limits: {tier: "1"}
    "resource name": _status(
        f'[{LIMITS}: Invalid value: "tier": must be a standard resource type or fully qualified, '
        f'{LIMITS}: Invalid value: "tier": must be a standard resource for containers]',
        [
            (LIMITS, 'Invalid value: "tier": must be a standard resource type or fully qualified'),
            (LIMITS, 'Invalid value: "tier": must be a standard resource for containers'),
        ],
    ),
    # spec.runtime.podAnnotations: {"not a key!": x}
    "annotation key": _status(
        f'spec.template.annotations: Invalid value: "not a key!": {_KEY_RULE}',
        [("spec.template.annotations", f'Invalid value: "not a key!": {_KEY_RULE}')],
    ),
    # spec.runtime.nodeSelector: {tier: "not a value!"}
    "node selector value": _status(
        f'spec.template.spec.nodeSelector: Invalid value: "not a value!": {_VALUE_RULE}',
        [("spec.template.spec.nodeSelector", f'Invalid value: "not a value!": {_VALUE_RULE}')],
    ),
    # spec.runtime.resources: {requests: {cpu: "2"}, limits: {cpu: "1"}}
    "requests above limits": _status(
        'spec.template.spec.containers[0].resources.requests: Invalid value: "2": must be less than or '
        "equal to cpu limit of 1",
        [
            (
                "spec.template.spec.containers[0].resources.requests",
                'Invalid value: "2": must be less than or equal to cpu limit of 1',
            )
        ],
    ),
    # podAnnotations and nodeSelector both wrong: two causes, two policy fields
    "two fields": _status(
        f'[spec.template.annotations: Invalid value: "not a key!": {_KEY_RULE}, '
        f'spec.template.spec.nodeSelector: Invalid value: "not a value!": {_VALUE_RULE}]',
        [
            ("spec.template.annotations", f'Invalid value: "not a key!": {_KEY_RULE}'),
            ("spec.template.spec.nodeSelector", f'Invalid value: "not a value!": {_VALUE_RULE}'),
        ],
    ),
}


# ------------------------------------------------------------------------------------------------
# the table


@pytest.mark.parametrize(
    ("kind", "child_field", "spec_field"),
    [
        ("Deployment", LIMITS, "spec.runtime.resources.limits"),
        ("Deployment", "spec.template.spec.containers[0].resources.limits", "spec.runtime.resources.limits"),
        ("Deployment", "spec.template.spec.containers[0].resources.requests[cpu]",
         "spec.runtime.resources.requests"),
        ("Deployment", "spec.template.spec.containers[0].resources", "spec.runtime.resources"),
        ("Deployment", "spec.template.spec.containers[0].resources.claims", "spec.runtime.resources"),
        ("Deployment", "spec.template.annotations", "spec.runtime.podAnnotations"),
        ("Deployment", "spec.template.metadata.annotations", "spec.runtime.podAnnotations"),
        ("Deployment", "spec.template.spec.nodeSelector", "spec.runtime.nodeSelector"),
        ("Deployment", "spec.template.spec.nodeSelector[tier]", "spec.runtime.nodeSelector"),
        ("Deployment", "spec.template.spec.containers[0].image", "spec.runtime.image"),
        ("Deployment", "spec.template.spec.containers[0].imagePullPolicy", "spec.runtime.imagePullPolicy"),
        ("Deployment", "spec.template.spec.containers[0].ports[0].containerPort", "spec.runtime.port"),
        ("Deployment", "spec.template.spec.containers[0].readinessProbe.httpGet.port", "spec.runtime.port"),
        ("Deployment", "spec.template.spec.serviceAccountName", "spec.runtime.serviceAccountName"),
        ("Deployment", "spec.template.spec.volumes[3].secret.secretName", "spec.redis"),
        ("Deployment", "spec.replicas", "spec.runtime.replicas"),
        ("Deployment", "spec.template.labels", "metadata.name"),
        ("Deployment", "spec.selector.matchLabels", "metadata.name"),
        ("Deployment", "metadata.name", "metadata.name"),
        ("Deployment", "spec.template.spec.securityContext.fsGroup", "spec.runtime"),  # ours: fallback
        ("Deployment", None, "spec.runtime"),
        ("Service", "spec.ports[0].port", "spec.runtime.port"),
        ("Service", "spec.selector", "metadata.name"),
        ("Service", "spec.clusterIP", "spec.runtime"),
        ("ConfigMap", "data", "spec.overrides"),
        ("ConfigMap", "metadata.labels", "metadata.name"),
        ("Secret", "data[admin-token]", None),
        ("Secret", "metadata.name", "metadata.name"),
    ],
)
def test_child_field_maps_to_the_policy_field(
    kind: str, child_field: str | None, spec_field: str | None
) -> None:
    assert spec_field_of(kind, child_field) == spec_field


def test_a_prefix_matches_only_at_a_field_boundary() -> None:
    # "image" must not swallow "imagePullPolicy", nor "resources.limits" a hypothetical "limitsX".
    assert spec_field_of("Deployment", "spec.template.spec.containers[0].imagePullPolicy") == (
        "spec.runtime.imagePullPolicy"
    )
    assert spec_field_of("Deployment", "spec.template.spec.containers[0].resources.limitsX") == (
        "spec.runtime.resources"
    )
    assert spec_field_of("Deployment", "spec.replicasX") == "spec.runtime"


@pytest.mark.parametrize(("status", "rejected"), [(422, True), (409, False), (500, False), (503, False),
                                                   (429, False), (404, False), (None, False)])
def test_only_invalid_is_a_rejection(status: int | None, rejected: bool) -> None:
    assert is_rejection(status) is rejected


# ------------------------------------------------------------------------------------------------
# reports from the captured bodies


@pytest.mark.parametrize(
    ("case", "spec_fields", "values"),
    [
        ("resource name", ["spec.runtime.resources.limits"], ['"tier"']),
        ("annotation key", ["spec.runtime.podAnnotations"], ['"not a key!"']),
        ("node selector value", ["spec.runtime.nodeSelector"], ['"not a value!"']),
        ("requests above limits", ["spec.runtime.resources.requests"], ['"2"', "cpu limit of 1"]),
        ("two fields", ["spec.runtime.podAnnotations", "spec.runtime.nodeSelector"],
         ['"not a key!"', '"not a value!"']),
    ],
)
def test_captured_refusal_names_the_policy_field_and_keeps_the_api_servers_words(
    case: str, spec_fields: list[str], values: list[str]
) -> None:
    body = CAPTURED[case]
    rejection = rejection_from_status("Deployment", DEPLOYMENT, body)
    assert rejection.spec_fields == spec_fields
    message = rejection.message()
    assert message.startswith(", ".join(spec_fields) + ": the API server refused Deployment " + DEPLOYMENT)
    for cause in body["details"]["causes"]:
        assert f"{cause['field']}: {cause['message']}" in message  # child field, value, rule: all kept
    for value in values:
        assert value in message
    assert rejection.api_message == body["message"]
    assert all(f.reason == "FieldValueInvalid" for f in rejection.fields)


def test_a_status_without_causes_keeps_its_message_and_names_the_kinds_field() -> None:
    # e.g. a ValidatingAdmissionPolicy denial with reason Invalid: no per-field causes.
    body = {"kind": "Status", "code": 422, "reason": "Invalid",
            "message": "deployments.apps \"refused-cachewarden\" is forbidden: ValidatingAdmissionPolicy "
                       "'team-labels' denied request: every Deployment needs a team label"}
    rejection = rejection_from_status("Deployment", DEPLOYMENT, body)
    assert rejection.spec_fields == ["spec.runtime"]
    assert rejection.message() == (
        f"spec.runtime: the API server refused Deployment {DEPLOYMENT}: {body['message']}"
    )


def test_no_body_keeps_the_error_text() -> None:
    rejection = rejection_from_status("Secret", "ns/x", None, "apply Secret ns/x: HTTP 422: garbled")
    assert rejection.fields == (RefusedField(None, None, "apply Secret ns/x: HTTP 422: garbled"),)
    assert rejection.message() == (
        "the policy's spec: the API server refused Secret ns/x: apply Secret ns/x: HTTP 422: garbled"
    )


def test_malformed_causes_are_skipped_not_fatal() -> None:
    body = {"message": "m", "details": {"causes": ["not a mapping", {"field": "spec.replicas"}]}}
    rejection = rejection_from_status("Deployment", DEPLOYMENT, body)
    assert rejection.fields == (RefusedField("spec.runtime.replicas", "spec.replicas", ""),)


def test_a_long_message_is_cut_for_the_condition() -> None:
    fields = tuple(RefusedField("spec.runtime.podAnnotations", "spec.template.annotations", "x" * 500)
                   for _ in range(10))
    message = ChildRejection("Deployment", DEPLOYMENT, fields, "m").message()
    assert len(message) == MESSAGE_LIMIT and message.endswith("...")
    assert message.startswith("spec.runtime.podAnnotations: ")  # named once, first


# ------------------------------------------------------------------------------------------------
# conditions


def test_child_rejected_is_stalled_not_reconciling() -> None:
    observed = c.PolicyObservation(generation=4, child_rejected="spec.runtime.nodeSelector: refused",
                                   config_hash="abc", pods_desired=2)
    got = {x["type"]: x for x in c.policy_conditions(observed, None, NOW)}
    assert (got["Stalled"]["status"], got["Stalled"]["reason"]) == ("True", "ChildRejected")
    assert got["Stalled"]["message"] == "spec.runtime.nodeSelector: refused"
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("False", "ChildRejected")
    assert (got["Reconciling"]["status"], got["Reconciling"]["reason"]) == ("False", "ChildRejected")
    # What was observed of the pods is still reported.
    assert (got["ConfigApplied"]["status"], got["ConfigApplied"]["reason"]) == ("False", "PodsPending")
    assert all(x["observedGeneration"] == 4 for x in got.values())


def test_a_corrected_spec_clears_stalled_with_a_new_transition() -> None:
    stalled = c.policy_conditions(c.PolicyObservation(generation=1, child_rejected="spec.x: no"), None, NOW)
    fixed = c.policy_conditions(c.PolicyObservation(generation=2), stalled, LATER)
    got = {x["type"]: x for x in fixed}
    assert (got["Stalled"]["status"], got["Stalled"]["reason"]) == ("False", "SpecAccepted")
    assert got["Stalled"]["lastTransitionTime"] == LATER
    assert got["Ready"]["status"] == "True"


# ------------------------------------------------------------------------------------------------
# the reconcile pass (FAKE API server: refuses the Deployment with a captured Status, or fails)


class RefusingKube:
    """In-memory API server (FAKE) whose apply of ``kind`` raises ``error``; everything else is stored."""

    def __init__(self, kind: str, error: KubeError) -> None:
        self.kind, self.error = kind, error
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: list[str] = []

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self.applied.append(obj["kind"])
        if obj["kind"] == self.kind:
            raise self.error
        self.objects[(obj["kind"], obj["metadata"]["name"])] = dict(obj)
        return dict(obj)

    async def create(self, obj: Mapping[str, Any]) -> bool:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in self.objects:
            return False
        self.objects[key] = dict(obj)
        return True

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        return self.objects.pop((kind, name), None) is not None

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return []

    async def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return []

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> bool:
        raise AssertionError("handle_reconcile leaves the status write to its caller")


class NoPods:
    """Pod client (FAKE) for a policy whose Deployment never came: nothing to call."""

    async def health(self, pod: PodTarget, token: str | None) -> PodReply:
        raise AssertionError("no pod exists")

    async def apply_config(
        self, pod: PodTarget, token: str | None, config: Mapping[str, Any], config_hash: str
    ) -> PodReply:
        raise AssertionError("no pod exists")

    async def for_each(self, pods: Iterable[Any], call: Callable[[Any], Awaitable[Any]]) -> list[Any]:
        return [await call(pod) for pod in pods]


class Patch:
    """kopf's patch (FAKE)."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}


class Logger:
    """Collects log lines by level (FAKE)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.lines.append(("info", message))

    def warning(self, message: str) -> None:
        self.lines.append(("warning", message))

    def error(self, message: str) -> None:
        self.lines.append(("error", message))


# Requests above limits: the CRD cannot compare quantities, so only the API server refuses it.
SPEC = {"preset": "production",
        "runtime": {"replicas": 0, "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}}


async def _pass(
    kube: RefusingKube, status: Mapping[str, Any], now: str
) -> tuple[Any, Patch, list[Any], Logger]:
    patch, events, logger = Patch(), [], Logger()
    outcome = await handle_reconcile(
        POLICY, SPEC, status, kube=kube, pods_io=NoPods(), patch=patch, logger=logger, now=now,
        events=lambda *event: events.append(event), detect=False,
    )
    return outcome, patch, events, logger


async def test_a_refused_deployment_stalls_the_policy_naming_the_field_and_warns_once() -> None:
    error = KubeError(f"apply Deployment {DEPLOYMENT}", 422, "invalid", CAPTURED["requests above limits"])
    kube = RefusingKube("Deployment", error)

    outcome, patch, events, logger = await _pass(kube, {}, NOW)

    assert outcome.outcome == "stalled"  # the daemon then waits the probe interval, not 1 s
    assert outcome.reason == "ChildRejected"
    assert outcome.message.startswith("spec.runtime.resources.requests: the API server refused Deployment ")
    assert 'Invalid value: "2": must be less than or equal to cpu limit of 1' in outcome.message
    got = {x["type"]: x for x in patch.status["conditions"]}
    assert (got["Stalled"]["status"], got["Stalled"]["reason"]) == ("True", "ChildRejected")
    assert got["Stalled"]["message"] == outcome.message
    assert (got["Ready"]["status"], got["Reconciling"]["status"]) == ("False", "False")
    assert patch.status["observedGeneration"] == 1
    assert kube.applied == ["ConfigMap", "Deployment"]  # Secret created first; Service never reached
    assert events == [("Warning", "ChildRejected", outcome.message)]
    assert [level for level, _ in logger.lines] == ["warning"]

    # The next (probe-interval) pass tries again, is refused again, and does not warn again.
    status = {**patch.status}
    again, patch2, events2, _ = await _pass(kube, status, LATER)
    assert again.outcome == "stalled"
    assert events2 == []
    assert {x["type"]: x for x in patch2.status["conditions"]}["Stalled"]["lastTransitionTime"] == NOW


@pytest.mark.parametrize("status_code", [500, 503, 409, 429])
async def test_a_transient_failure_stays_reconciling_and_is_retried(status_code: int) -> None:
    error = KubeError(f"apply Deployment {DEPLOYMENT}", status_code, "try again",
                      {"kind": "Status", "code": status_code, "message": "try again"})
    outcome, patch, events, logger = await _pass(RefusingKube("Deployment", error), {}, NOW)
    assert outcome.outcome == "progressing"
    got = {x["type"]: x for x in patch.status["conditions"]}
    assert (got["Reconciling"]["status"], got["Reconciling"]["reason"]) == ("True", "ApplyFailed")
    assert (got["Stalled"]["status"], got["Stalled"]["reason"]) == ("False", "SpecAccepted")
    assert events == []
    assert [level for level, _ in logger.lines] == ["error"]


async def test_a_refused_service_names_its_field_too() -> None:
    body = {"kind": "Status", "code": 422, "message": 'Service "refused-cachewarden" is invalid',
            "details": {"causes": [{"field": "spec.ports[0].port", "message": "Invalid value: 70000",
                                    "reason": "FieldValueInvalid"}]}}
    kube = RefusingKube("Service", KubeError("apply Service", 422, "invalid", body))
    outcome, _, _, _ = await _pass(kube, {}, NOW)
    assert outcome.outcome == "stalled"
    assert outcome.message.startswith(
        "spec.runtime.port: the API server refused Service ns/refused-cachewarden: "
        "spec.ports[0].port: Invalid value: 70000"
    )
    assert render.deployment_name("refused") in {name for _, name in kube.objects}


# ------------------------------------------------------------------------------------------------
# the same checks in the API model (the CRD's CEL rules and patterns; a client that skipped the
# schema gets InvalidSpec naming the field from the operator instead of a refused Deployment)


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        ({"resources": {"limits": {"tier": "1"}}},
         "spec.runtime.resources.limits: key 'tier' is not a container resource name; accepted: cpu, "),
        ({"resources": {"requests": {"kubernetes.io/foo": "1"}}},
         "spec.runtime.resources.requests: key 'kubernetes.io/foo' is not a container resource name"),
        ({"resources": {"requests": {"example.com/": "1"}}},
         "spec.runtime.resources.requests: key 'example.com/' is not a container resource name"),
        ({"podAnnotations": {"not a key!": "x"}},
         "spec.runtime.podAnnotations: key 'not a key!' is not a qualified name; accepted: an optional DNS"),
        ({"podAnnotations": {"a" * 64: "x"}}, "spec.runtime.podAnnotations: key 'aaaa"),
        ({"podAnnotations": {("p" * 254) + "/x": "x"}},
         "spec.runtime.podAnnotations: key 'pppp"),
        ({"nodeSelector": {"a/b/c": "x"}}, "spec.runtime.nodeSelector: key 'a/b/c' is not a qualified name"),
        ({"nodeSelector": {"tier": "not a value!"}},
         "spec.runtime.nodeSelector[tier]: value 'not a value!' is not a label value; accepted: empty, or"),
        ({"nodeSelector": {"tier": "v" * 64}}, "spec.runtime.nodeSelector[tier]: value 'vvvv"),
    ],
)
def test_the_model_refuses_what_the_crd_refuses_naming_field_and_value(
    runtime: dict[str, Any], message: str
) -> None:
    from cache_operator.api import SpecError
    from cache_operator.policy_inputs import parse_spec

    with pytest.raises(SpecError) as caught:
        parse_spec({"preset": "production", "runtime": {"replicas": 0, **runtime}})
    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.field == message.split(":", 1)[0]


def test_the_model_accepts_what_the_api_server_accepts() -> None:
    from cache_operator.policy_inputs import parse_spec

    model = parse_spec({"preset": "production", "runtime": {
        "resources": {"requests": {"cpu": "100m", "nvidia.com/gpu": 1},
                      "limits": {"memory": "1Gi", "hugepages-2Mi": "2Mi", "ephemeral-storage": "1Gi"}},
        "podAnnotations": {"prometheus.io/scrape": "true", "Simple_Key.1": "any value at all!",
                           ("p" * 253) + "/" + ("n" * 63): ""},
        "nodeSelector": {"kubernetes.io/os": "linux", "empty": "", "tier": "v" * 63},
    }})
    assert model.runtime is not None and model.runtime.node_selector is not None
    assert model.runtime.node_selector["empty"] == ""
