"""Fuzzing CachePolicy and CacheIncident against the real API server with the real operator running.

Specs are generated (hypothesis, derandomized) from the CRD schemas in ``crds/``: valid values for a
random subset of fields (bounds, enums, patterns, lengths taken from the schema), then, for about half
of the examples, one mutation of one field: a wrong type, a number just outside its bounds, an
unknown enum value (preset, action, operator...), a string that breaks its pattern or length, an
unknown field, too many items. Each object is created the way ``kubectl apply`` does (strict field
validation), and then must be either

- **rejected** by the API server with a message naming the field (a ``spec.…`` path of a field the
  object sets), or
- **reconciled**: a policy to ``Ready=True`` or ``Stalled=True`` (the Stalled message naming a
  ``spec.…`` field) for its generation; an incident to a finished phase (a failed one naming a field);

and then **deleted within a bounded time** (the operator's finalizer never sticks). After all examples
the operator process is still alive and its log holds no traceback (no handler failed and retried).

Policies run in selector mode matching no pod, or runtime mode with 0 replicas, so nothing depends on
pods starting; the Deployment, Service, ConfigMap and Secret are still rendered and applied for real.
Example counts: ``CACHEWARDEN_FUZZ_EXAMPLES`` (default 40 policies, and two thirds as many incidents).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cache_operator.api.cacheincident import ACTION_PARAMETERS
from devcluster.cluster import Cluster
from devcluster.controlplane import https_request
from devcluster.testing import wait_for
from tests.e2e.support import OperatorProcess, crds, operator

__all__ = ["crds", "operator"]  # fixtures, reused

REPO = Path(__file__).resolve().parents[2]
GROUP_VERSION = "cachewarden.io/v1alpha1"
EXAMPLES = int(os.environ.get("CACHEWARDEN_FUZZ_EXAMPLES", "40"))
RECONCILE_TIMEOUT = 90.0
DELETE_TIMEOUT = 60.0
TARGET_POLICY = "fuzz-target"
FINISHED_PHASES = {"Succeeded", "Failed", "Skipped", "Resolved", "Recommended"}

Path_ = tuple[str | int, ...]


def crd_spec_schema(plural: str) -> dict[str, Any]:
    """The ``spec`` schema of one of our CRDs, as checked in."""
    crd = yaml.safe_load((REPO / "crds" / f"{plural}.cachewarden.io.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


POLICY_SCHEMA = crd_spec_schema("cachepolicies")
INCIDENT_SCHEMA = crd_spec_schema("cacheincidents")


def leaves(schema: dict[str, Any], path: Path_ = ("spec",)) -> Iterator[tuple[Path_, dict[str, Any]]]:
    """Every field of a schema with its path (arrays through their first item), parents first."""
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from leaves(sub, (*path, name))
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        yield from leaves(schema["items"], (*path, 0))


def path_text(path: Path_) -> str:
    """``spec.selector.matchExpressions[0].operator``: the API server's way of naming a field."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def set_path(obj: dict[str, Any], path: Path_, value: Any) -> None:
    """Set ``value`` at ``path`` below ``obj`` (paths start at ``spec``), creating parents."""
    node: Any = obj.setdefault("spec", {})
    for part, nxt in itertools.pairwise(path[1:]):
        if isinstance(part, int):
            while len(node) <= part:
                node.append({} if not isinstance(nxt, int) else [])
            node = node[part]
        else:
            if not isinstance(node.get(part), dict | list):
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
    last = path[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value


# --- values from a schema --------------------------------------------------------------------------

SAFE_TEXT = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=24)


def valid_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value the schema accepts on its own (cross-field rules are not considered)."""
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(int(schema.get("minimum", 0)), int(schema.get("maximum", 10**6)))
    if kind == "number":
        return st.floats(float(schema.get("minimum", 0)), float(schema.get("maximum", 10**6)),
                         allow_nan=False, allow_infinity=False).map(lambda v: round(v, 3)).filter(
            lambda v: float(schema.get("minimum", 0)) <= v <= float(schema.get("maximum", 10**6)))
    if kind == "string":
        low, high = int(schema.get("minLength", 1)), min(int(schema.get("maxLength", 24)), 24)
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: low <= len(s) <= high)
        return SAFE_TEXT.filter(lambda s: low <= len(s) <= high)
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return st.dictionaries(st.sampled_from(["example.com/team", "tier", "app.kubernetes.io/part-of"]),
                               st.sampled_from(["search", "a", "1"]), max_size=2)
    if kind == "array":
        return st.lists(valid_value(schema["items"]), max_size=min(int(schema.get("maxItems", 3)), 3))
    return st.just({})


def mutations(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    """(what, value) pairs the schema must refuse at one field."""
    kind = schema.get("type")
    found: list[tuple[str, Any]] = []
    if "enum" in schema:
        found += [("unknown enum value", "no-such-" + str(schema["enum"][0]).lower()),
                  ("enum value in the wrong case", str(schema["enum"][0]).upper() + "x")]
    if kind in ("integer", "number"):
        found.append(("a string for a number", "ten"))
        if "minimum" in schema:
            found.append(("below the minimum", float(schema["minimum"]) - 1 if kind == "number"
                          else int(schema["minimum"]) - 1))
        if "maximum" in schema:
            found.append(("above the maximum", float(schema["maximum"]) * 2 + 1 if kind == "number"
                          else int(schema["maximum"]) + 1))
        if kind == "integer":
            found.append(("a fraction for an integer", 1.5))
    if kind == "string":
        found.append(("a number for a string", 12345))
        if "pattern" in schema:
            found.append(("a string breaking the pattern", "Not Valid!! \u00e9"))
        if "maxLength" in schema:
            found.append(("a string over maxLength", "a" * (int(schema["maxLength"]) + 1)))
        if int(schema.get("minLength", 0)) >= 1:
            found.append(("an empty string", ""))
    if kind == "boolean":
        found.append(("a string for a boolean", "yes"))
    if kind == "object":
        found.append(("a string for an object", "not-an-object"))
        if schema.get("properties"):
            found.append(("an unknown field", {"bogusField": 1}))
    if kind == "array":
        found.append(("a string for a list", "not-a-list"))
        if "maxItems" in schema:
            item = {"key": "k", "operator": "Exists"} if (schema.get("items") or {}).get("type") == "object" \
                else "x"
            found.append(("too many items", [item] * (int(schema["maxItems"]) + 1)))
    return found


@dataclass
class Case:
    """One generated object and what was done to it."""

    kind: str
    body: dict[str, Any]
    mutation: str | None = None
    mutated_path: Path_ | None = None
    set_paths: list[Path_] = field(default_factory=list)

    @property
    def spec(self) -> dict[str, Any]:
        """The object's spec."""
        return self.body["spec"]


POLICY_SKIPPED = ("spec.runtime", "spec.selector", "spec.redis")  # shaped by the base, mutated below


@st.composite
def policy_cases(draw: st.DrawFn) -> Case:
    """A CachePolicy: a base (selector matching nothing, or runtime with 0 replicas), a random subset
    of valid fields, a Redis form, and maybe one mutation anywhere in the schema."""
    mode = draw(st.sampled_from(["selector", "runtime"]))
    spec: dict[str, Any] = {"preset": draw(valid_value(POLICY_SCHEMA["properties"]["preset"]))}
    if mode == "selector":
        spec["selector"] = {"matchLabels": {"fuzz.cachewarden.io/none": uuid.uuid4().hex[:8]}}
    else:
        spec["runtime"] = {"replicas": 0}
    case = Case("CachePolicy", {"apiVersion": GROUP_VERSION, "kind": "CachePolicy", "spec": spec})
    redis = draw(st.sampled_from([None, "url", "url+password", "secret", "tls"]))
    if redis == "url":
        spec["redis"] = {"url": "redis://cache-fuzz.invalid:6379/0"}
    elif redis == "url+password":
        spec["redis"] = {"url": "redis://cache-fuzz.invalid:6379/0", "username": "cw",
                         "passwordSecretRef": {"name": "redis-auth", "key": "password"}}
    elif redis == "secret":
        spec["redis"] = {"secretRef": {"name": "redis-url", "key": "url"}}
    elif redis == "tls":
        spec["redis"] = {"url": "rediss://cache-fuzz.invalid:6380/0",
                         "tls": {"enabled": True, "caSecretRef": {"name": "redis-ca", "key": "ca.crt"}}}
    own_target = "spec.selector" if mode == "selector" else "spec.runtime"
    candidates = [
        (path, schema) for path, schema in leaves(POLICY_SCHEMA)
        if len(path) > 1 and not schema.get("properties") and schema.get("type") != "array"
        and 0 not in path
        and (not path_text(path).startswith(POLICY_SKIPPED) or path_text(path).startswith(own_target + "."))
        and path_text(path) not in ("spec.runtime.replicas", "spec.selector.matchLabels")
    ]
    for path, schema in draw(st.lists(st.sampled_from(candidates), max_size=6, unique_by=lambda c: c[0])):
        if path[-1] in ("requests", "limits"):
            # Resource names the Deployment accepts (any other name: test_a_spec_whose_deployment_...).
            value = draw(st.dictionaries(st.sampled_from(["cpu", "memory", "ephemeral-storage"]),
                                         st.sampled_from(["100m", "128Mi", "1", "2Gi"]), max_size=2))
        else:
            value = draw(valid_value(schema))
        set_path(case.body, path, value)
        case.set_paths.append(path)
    if not draw(st.integers(0, 3)):
        # Fields the schema bounds one by one but the engine checks together (tiers ascending, a
        # critical threshold beyond the warning one): the way to Stalled.
        group = draw(st.sampled_from([("keys", "tiers", ("small", "medium", "large")),
                                      ("health", None, ("hit_rate_warning", "hit_rate_critical")),
                                      ("health", None, ("latency_warning_ms", "latency_critical_ms"))]))
        section, sub, names = group
        for name in names:
            group_path: Path_ = ("spec", "overrides", section, *((sub,) if sub else ()), name)
            section_schema = POLICY_SCHEMA["properties"]["overrides"]["properties"][section]
            field_schema = (section_schema["properties"][sub] if sub else section_schema)["properties"][name]
            set_path(case.body, group_path, draw(valid_value(field_schema)))
            case.set_paths.append(group_path)
    if mode == "selector" and draw(st.booleans()):
        operator_ = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
        values: list[str] = draw(st.lists(st.sampled_from(["a", "b"]), min_size=0, max_size=2))
        requirement: dict[str, Any] = {"key": "fuzz.cachewarden.io/tier", "operator": operator_}
        keep_empty: bool = draw(st.booleans())
        if values or keep_empty:
            requirement["values"] = values
        spec["selector"]["matchExpressions"] = [requirement]
        case.set_paths.append(("spec", "selector", "matchExpressions", 0))
    if draw(st.booleans()):
        # Not inside the other target: that only trips the "exactly one target" rule every time.
        other = "spec.selector" if mode == "runtime" else "spec.runtime"
        mutate(draw, case, POLICY_SCHEMA, exclude=(other,))
    return case


def mutate(draw: st.DrawFn, case: Case, schema: dict[str, Any], exclude: tuple[str, ...] = ()) -> None:
    """Apply one refused value at one field (or an unknown field below an object)."""
    options = [
        (path, what, value)
        for path, sub in leaves(schema)
        if not path_text(path).startswith(exclude)
        for what, value in mutations(sub)
        if len(path) > 1 or what == "an unknown field"  # spec itself stays an object
    ]
    path, what, value = draw(st.sampled_from(options))
    if what == "an unknown field":
        path = (*path, "bogusField")
        value = 1
    set_path(case.body, path, value)
    case.mutation, case.mutated_path = what, path
    case.set_paths.append(path)


@st.composite
def incident_cases(draw: st.DrawFn) -> Case:
    """A CacheIncident of any action on the fuzz target policy (or a missing one), with a random subset
    of the action's valid parameters (sometimes one it does not take), and maybe one mutation."""
    action = draw(st.sampled_from(INCIDENT_SCHEMA["properties"]["action"]["enum"]))
    spec: dict[str, Any] = {
        "policyRef": {"name": draw(st.sampled_from([TARGET_POLICY, TARGET_POLICY, "no-such-policy"]))},
        "action": action,
    }
    case = Case("CacheIncident", {"apiVersion": GROUP_VERSION, "kind": "CacheIncident", "spec": spec})
    param_schemas = INCIDENT_SCHEMA["properties"]["parameters"]["properties"]
    allowed = sorted(ACTION_PARAMETERS[action])
    names = draw(st.lists(st.sampled_from(sorted(param_schemas)), max_size=2, unique=True))
    if action == "apply-preset":
        names = sorted({*names, "preset"})
    if action == "invalidate" and not {"pattern", "namespace"} & set(names):
        names.append(draw(st.sampled_from(["pattern", "namespace"])))
    if not draw(st.integers(0, 3)):  # mostly the action's own parameters, sometimes a foreign one
        names = [n for n in names if n in allowed] or names
    else:
        names = [n for n in names if n in allowed]
    for name in names:
        set_path(case.body, ("spec", "parameters", name), draw(valid_value(param_schemas[name])))
        case.set_paths.append(("spec", "parameters", name))
    for name in ("reason", "severity", "dryRun", "targetPods"):
        if draw(st.booleans()):
            sub = INCIDENT_SCHEMA["properties"][name]
            set_path(case.body, ("spec", name), draw(valid_value(sub)))
            case.set_paths.append(("spec", name))
    if draw(st.booleans()):
        mutate(draw, case, INCIDENT_SCHEMA)
    return case


# --- talking to the API server -----------------------------------------------------------------------


@dataclass
class Api:
    """Raw JSON requests with the admin certificate (the full Status body on errors)."""

    cluster: Cluster

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(HTTP status, decoded body)."""
        api = self.cluster.api
        status, data = https_request(api.port, path, api.context, method, body, timeout=30)
        try:
            return status, json.loads(data) if data else None
        except json.JSONDecodeError:
            return status, data.decode(errors="replace")


def collection(namespace: str, kind: str) -> str:
    """The REST path of a kind's objects in a namespace."""
    plural = {"CachePolicy": "cachepolicies", "CacheIncident": "cacheincidents"}[kind]
    return f"/apis/{GROUP_VERSION}/namespaces/{namespace}/{plural}"


def _related(named: str, candidate: str) -> bool:
    """``named`` is ``candidate``, inside it, or one of its ancestors."""
    return any(a == b or a.startswith(b + ".") or a.startswith(b + "[")
               for a, b in ((named, candidate), (candidate, named)))


def field_named(message: str, case: Case) -> str | None:
    """The ``spec.…`` path in ``message`` that names the mutated field (itself, inside it or an
    ancestor below ``spec``), or without a mutation any field the object sets."""
    named = {n for n in re.findall(r"spec(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*", message) if n != "spec"}
    if case.mutated_path is not None:
        candidates = [path_text(case.mutated_path)]
    else:
        candidates = [path_text(p) for p in case.set_paths] + [f"spec.{key}" for key in case.spec]
    for text in sorted(named):
        if any(_related(text, candidate) for candidate in candidates):
            return text
    return None


def wait_obj(predicate: Callable[[], dict[str, Any] | None], timeout: float, what: str) -> dict[str, Any]:
    """``wait_for`` of a predicate returning the object once satisfied."""
    obj = wait_for(predicate, timeout, what)
    assert isinstance(obj, dict), obj
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    """One status condition ({} when absent)."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return {}


def settled_policy(api: Api, path: str) -> dict[str, Any] | None:
    """The policy once its status is for its generation and it is Ready or Stalled."""
    status, obj = api.call("GET", path)
    if status != 200:
        return None
    if (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    if "True" in (condition(obj, "Ready").get("status"), condition(obj, "Stalled").get("status")):
        return obj
    return None


def settled_incident(api: Api, path: str) -> dict[str, Any] | None:
    """The incident once it reached a finished phase."""
    status, obj = api.call("GET", path)
    if status == 200 and (obj.get("status") or {}).get("phase") in FINISHED_PHASES:
        return obj
    return None


@dataclass
class Tally:
    """What happened to the examples (printed; the figures go to docs/reliability.md)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    slowest_settle: float = 0.0
    slowest_delete: float = 0.0

    def report(self, what: str) -> str:
        """One line for the log."""
        return (f"{what}: {sum(self.outcomes.values())} examples in {time.monotonic() - self.started:.1f} s: "
                f"{dict(sorted(self.outcomes.items()))}; slowest reconcile {self.slowest_settle:.1f} s, "
                f"slowest delete {self.slowest_delete:.1f} s")


def run_case(api: Api, namespace: str, case: Case, name: str, tally: Tally) -> None:
    """Create, check the outcome, delete, check it is gone."""
    case.body["metadata"] = {"name": name}
    base = collection(namespace, case.kind)
    status, answer = api.call("POST", f"{base}?fieldValidation=Strict", case.body)
    shown = json.dumps(case.body)[:1500]
    if status >= 400:
        assert status in (400, 422), (status, answer, shown)
        message = answer.get("message", "") if isinstance(answer, dict) else str(answer)
        assert field_named(message, case), f"rejection names no field the object sets:\n{message}\n{shown}"
        tally.outcomes[f"rejected ({case.mutation or 'cross-field rule'})"] += 1
        return
    assert status == 201, (status, answer, shown)
    path = f"{base}/{name}"
    started = time.monotonic()
    if case.kind == "CachePolicy":
        obj = wait_obj(lambda: settled_policy(api, path), RECONCILE_TIMEOUT,
                       f"policy {name} Ready or Stalled: {shown}")
        stalled = condition(obj, "Stalled")
        if stalled.get("status") == "True":
            assert stalled.get("reason") == "InvalidSpec", stalled
            assert field_named(stalled.get("message", ""), case), (stalled, shown)
            tally.outcomes["Stalled"] += 1
        else:
            tally.outcomes["Ready"] += 1
    else:
        obj = wait_obj(lambda: settled_incident(api, path), RECONCILE_TIMEOUT,
                       f"incident {name} finished: {shown}")
        phase = obj["status"]["phase"]
        if phase == "Failed":
            succeeded = condition(obj, "Succeeded")
            if succeeded.get("reason") in ("InvalidSpec", "PolicyNotFound"):
                assert field_named(succeeded.get("message", ""), case), (succeeded, shown)
            tally.outcomes[f"Failed ({succeeded.get('reason')})"] += 1
        else:
            tally.outcomes[phase] += 1
    tally.slowest_settle = max(tally.slowest_settle, time.monotonic() - started)
    started = time.monotonic()
    status, answer = api.call("DELETE", path)
    assert status in (200, 202), (status, answer)
    wait_for(lambda: api.call("GET", path)[0] == 404, DELETE_TIMEOUT, f"{case.kind} {name} deleted")
    tally.slowest_delete = max(tally.slowest_delete, time.monotonic() - started)


def operator_healthy(proc: OperatorProcess) -> None:
    """The operator still runs and never logged a traceback (no handler crashed and retried)."""
    assert proc.process.poll() is None, f"the operator exited:\n{proc.log_tail()}"
    log = proc.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]
    assert "failed with an exception" not in log, proc.log_tail(120)


def fuzz_settings(examples: int) -> settings:
    """Bounded, reproducible runs: derandomized, no deadline, no shrinking."""
    return settings(FUZZ_SETTINGS, max_examples=examples)


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each step costs seconds on a real cluster
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


# --- tests ---------------------------------------------------------------------------------------


def test_generated_policies_are_rejected_naming_the_field_or_reconciled(
    operator: OperatorProcess, dev_cluster: Cluster, namespace: str
) -> None:
    """CachePolicy fuzzing: rejected naming a field, or Ready / Stalled naming a field; deleted in
    bounded time; the operator alive without a traceback."""
    api = Api(dev_cluster)
    tally = Tally()
    counter = iter(range(10**6))

    @fuzz_settings(EXAMPLES)
    @given(case=policy_cases())
    def one(case: Case) -> None:
        run_case(api, namespace, case, f"fz-{next(counter)}", tally)

    one()
    print(tally.report("CachePolicy fuzzing"))
    operator_healthy(operator)
    assert tally.outcomes["Ready"] and any(k.startswith("rejected") for k in tally.outcomes), tally.outcomes


def test_generated_incidents_are_rejected_naming_the_field_or_finish(
    operator: OperatorProcess, dev_cluster: Cluster, namespace: str
) -> None:
    """CacheIncident fuzzing against a Ready policy with one runtime pod: rejected naming a field, or a
    finished phase (a failure naming a field); deleted in bounded time; the operator alive."""
    api = Api(dev_cluster)
    # One real runtime pod (memory-only): the incidents' actions reach a real runtime with the
    # generated parameters.
    target = {
        "apiVersion": GROUP_VERSION, "kind": "CachePolicy", "metadata": {"name": TARGET_POLICY},
        "spec": {"preset": "development", "runtime": {"replicas": 1}, "health": {"probeIntervalSeconds": 5}},
    }
    status, answer = api.call("POST", collection(namespace, "CachePolicy"), target)
    assert status == 201, answer
    wait_for(lambda: settled_policy(api, f"{collection(namespace, 'CachePolicy')}/{TARGET_POLICY}"),
             180, "the target policy Ready")
    tally = Tally()
    counter = iter(range(10**6))

    @fuzz_settings(max(1, EXAMPLES * 2 // 3))
    @given(case=incident_cases())
    def one(case: Case) -> None:
        run_case(api, namespace, case, f"fz-{next(counter)}", tally)

    one()
    print(tally.report("CacheIncident fuzzing"))
    operator_healthy(operator)
    assert any(k.startswith("rejected") for k in tally.outcomes), tally.outcomes
    # The target policy is still Ready after every incident came and went (overrides lifted).
    assert settled_policy(api, f"{collection(namespace, 'CachePolicy')}/{TARGET_POLICY}")


# Specs whose rendered Deployment the API server refuses (found by this fuzzer at 300 examples: example
# fz-286; they used to leave the policy Reconciling/ApplyFailed, retried forever). The CRD now refuses
# these three itself, naming the field; anything it lets through ends Stalled/ChildRejected naming the
# field (tests/e2e/test_operator_child_rejected.py). Either way a policy settles.
CHILD_REFUSED = {
    "resource name": {"runtime": {"replicas": 0, "resources": {"limits": {"tier": "1"}}}},
    "annotation key": {"runtime": {"replicas": 0, "podAnnotations": {"not a key!": "x"}}},
    "node selector value": {"runtime": {"replicas": 0, "nodeSelector": {"tier": "not a value!"}}},
}


@pytest.mark.parametrize("case", sorted(CHILD_REFUSED))
def test_a_spec_whose_deployment_the_api_server_refuses_settles(
    operator: OperatorProcess, dev_cluster: Cluster, namespace: str, case: str
) -> None:
    """Accepted by the CRD (or refused there, naming the field), then never left reconciling forever."""
    api = Api(dev_cluster)
    spec = {"preset": "production", **CHILD_REFUSED[case]}
    body = {"apiVersion": GROUP_VERSION, "kind": "CachePolicy", "metadata": {"name": "refused"}, "spec": spec}
    fake = Case("CachePolicy", body, set_paths=[("spec", "runtime", key) for key in spec["runtime"]])
    status, answer = api.call("POST", f"{collection(namespace, 'CachePolicy')}?fieldValidation=Strict", body)
    if status >= 400:
        assert field_named(answer.get("message", ""), fake), answer
        return
    path = f"{collection(namespace, 'CachePolicy')}/refused"

    def settled_or_refused() -> dict[str, Any] | None:
        obj = settled_policy(api, path)
        if obj is not None:
            return obj
        status, current = api.call("GET", path)
        if status == 200 and condition(current, "Reconciling").get("reason") == "ApplyFailed":
            return dict(current)
        return None

    obj = wait_obj(settled_or_refused, 60, f"policy with a refused {case}: Ready, Stalled or ApplyFailed")
    stalled = condition(obj, "Stalled")
    assert stalled.get("status") == "True" and field_named(stalled.get("message", ""), fake), obj["status"]


@pytest.fixture(autouse=True)
def _operator_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "operator" in request.fixturenames:
        print("---- operator log ----\n" + request.getfixturevalue("operator").log_tail())
