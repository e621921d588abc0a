"""Execution plans: action → runtime calls, idempotency keys, resumption after a crash at any point,
and time-boxed overrides."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from cache_operator.incidents.plan import (
    PlannedStep,
    build_plan,
    counts_from_reply,
    expires_at,
    finished_record,
    idempotency_key,
    merge_record,
    next_steps,
    outcome,
    override_active,
    override_for,
    override_to_lift,
    pending_records,
    planned_pods,
    started_record,
)
from cache_runtime.service.idempotency import IdempotencyStore, request_fingerprint, validate_key
from cache_runtime.timefmt import rfc3339

UID = "0b4c1a5e-7d2f-4f7e-9a51-3f0c8e6d2b11"
NOW = 1_800_000_000.0
PODS = ["web-2", "web-0", "web-1"]


def incident(action: str, parameters: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A CacheIncident object as the API returns it."""
    body: dict[str, Any] = {"policyRef": {"name": "web"}, "action": action, **spec}
    if parameters is not None:
        body["parameters"] = parameters
    return {"metadata": {"name": "inc", "uid": UID}, "spec": body, "status": {}}


@pytest.mark.parametrize(
    ("action", "parameters", "dry_run", "expected"),
    [
        ("clear", None, False, [("clear", "POST", "/clear", None)]),
        ("clear", None, True, [("clear", "POST", "/clear?dry_run=true", None)]),
        (
            "invalidate",
            {"pattern": "*:summarize:*"},
            False,
            [("invalidate", "POST", "/invalidate?pattern=%2A%3Asummarize%3A%2A", None)],
        ),
        (
            "invalidate",
            {"namespace": "docs"},
            True,
            [("invalidate", "POST", "/invalidate?dry_run=true&namespace=docs", None)],
        ),
        ("gc", None, False, [("gc", "POST", "/gc", None)]),
        ("reset-config", None, True, [("reset-config", "POST", "/reset-config?dry_run=true", None)]),
        (
            "apply-preset",
            {"preset": "conservative"},
            False,
            [("apply-preset", "POST", "/apply-preset", {"preset": "conservative"})],
        ),
        (
            "apply-preset",
            {"preset": "performance", "durationSeconds": 600},
            True,
            [("apply-preset", "POST", "/apply-preset?dry_run=true", {"preset": "performance"})],
        ),
        ("reconnect-redis", None, False, [("reconnect-redis", "POST", "/redis/reconnect", None)]),
        ("reconnect-redis", None, True, [("reconnect-redis", None, None, None)]),
        ("compress-existing", None, False, [("compress-existing", "POST", "/compress-existing", None)]),
        (
            "compress-existing",
            {"maxEntries": 500},
            True,
            [("compress-existing", "POST", "/compress-existing?dry_run=true&max_entries=500", None)],
        ),
        ("isolate", {"durationSeconds": 300}, False, [("isolate", "POST", "/emergency/isolate", None)]),
        ("restore", None, True, [("restore", "POST", "/emergency/restore?dry_run=true", None)]),
        (
            "diagnose",
            None,
            False,
            [
                ("diagnose-health", "GET", "/health", None),
                ("diagnose-key-analysis", "GET", "/key-analysis", None),
            ],
        ),
    ],
)
def test_each_action_maps_to_the_runtime_endpoint(
    action: str, parameters: dict[str, Any] | None, dry_run: bool, expected: list[tuple[Any, ...]]
) -> None:
    plan = build_plan(incident(action, parameters, dryRun=dry_run), ["web-0"])
    got = [
        (s.step, s.request and s.request.method, s.request and s.request.target, s.request and s.request.body)
        for s in plan.steps
    ]
    assert got == expected
    for step in plan.steps:
        posts = step.request is not None and step.request.method == "POST"
        assert (step.idempotency_key is not None) == posts
        if step.request is None:
            assert step.note  # recorded as Skipped with this note


def test_apply_preset_pushes_the_rendered_override_or_validates_it_on_dry_run() -> None:
    document = {"config": {"preset": "conservative"}, "hash": "c" * 64}
    real = build_plan(
        incident("apply-preset", {"preset": "conservative"}), ["web-0"], config_document=document
    )
    assert [(s.step, s.request and s.request.path, s.request and s.request.body) for s in real.steps] == [
        ("push-override", "/config/apply", document)
    ]
    dry = build_plan(
        incident("apply-preset", {"preset": "conservative"}, dryRun=True), ["web-0"], config_document=document
    )
    assert dry.steps[0].request is not None and dry.steps[0].request.path == "/config/validate"
    with pytest.raises(ValueError, match="config_document"):
        build_plan(
            incident("apply-preset", {"preset": "conservative"}), ["web-0"], config_document={"hash": 1}
        )


def test_apply_override_pushes_the_rendered_config_and_recompresses_after_a_compression_change() -> None:
    document = {"config": {"ttl": {"default_s": 600}}, "hash": "d" * 64}
    ttl = build_plan(incident("apply-override", {"overrides": {"ttl": {"default_s": 600}}}), ["web-0"],
                     config_document=document)
    assert [(s.step, s.request and s.request.path) for s in ttl.steps] == [("push-override", "/config/apply")]
    compression = build_plan(
        incident("apply-override", {"overrides": {"compression.threshold_bytes": 4096}}),
        ["web-0", "web-1"],
        config_document=document,
    )
    assert [(s.pod, s.step) for s in compression.steps] == [
        ("web-0", "push-override"), ("web-0", "compress-existing"),
        ("web-1", "push-override"), ("web-1", "compress-existing"),
    ]
    # The second step waits for the first on each pod (recorded one after the other).
    assert [s.step for s in next_steps(compression, [])] == ["push-override", "push-override"]
    dry = build_plan(
        incident("apply-override", {"overrides": {"compression": {"threshold_bytes": 4096}}}, dryRun=True),
        ["web-0"],
        config_document=document,
    )
    assert [(s.step, s.request and s.request.target) for s in dry.steps] == [
        ("push-override", "/config/validate"), ("compress-existing", "/compress-existing?dry_run=true")
    ]
    level = build_plan(
        incident("apply-override", {"overrides": {"compression": {"level": 1}}}), ["web-0"],
        config_document=document,
    )
    assert [s.step for s in level.steps] == ["push-override"]
    with pytest.raises(ValueError, match="config_document"):
        build_plan(incident("apply-override", {"overrides": {"ttl": {"default_s": 600}}}), ["web-0"])


def test_override_for_apply_override_carries_the_settings() -> None:
    source = incident("apply-override", {"overrides": {"ttl": {"default_s": 600}}, "durationSeconds": 900})
    assert override_for(source, NOW) == {
        "overrides": {"ttl": {"default_s": 600}},
        "incident": "inc",
        "expiresAt": rfc3339(NOW + 900),
    }
    assert override_for({**source, "spec": {**source["spec"], "dryRun": True}}, NOW) is None


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (None, "spec.parameters.overrides is required"),
        ({"overrides": {}}, "at least one engine parameter"),
        ({"overrides": {"redis": {"url": "redis://x:6379"}}}, "spec.parameters.overrides.redis.url"),
        ({"preset": "minimal"}, "spec.parameters.preset applies only"),
    ],
)
def test_apply_override_parameters_are_checked(parameters: dict[str, Any] | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_plan(
            incident("apply-override", parameters), ["web-0"], config_document={"config": {}, "hash": "e"}
        )


def test_pods_in_name_order_and_target_pods_narrow() -> None:
    plan = build_plan(incident("gc"), PODS)
    assert [s.pod for s in plan.steps] == ["web-0", "web-1", "web-2"]
    narrowed = build_plan(incident("gc", targetPods=["web-1", "gone"]), PODS)
    assert [(s.pod, s.request is None, s.note) for s in narrowed.steps] == [
        ("gone", True, "not a target pod of the policy"),
        ("web-1", False, ""),
    ]


def test_idempotency_keys_are_deterministic_distinct_and_valid() -> None:
    first = build_plan(incident("clear"), PODS)
    again = build_plan(incident("clear"), list(reversed(PODS)))
    assert [s.idempotency_key for s in first.steps] == [s.idempotency_key for s in again.steps]
    keys = [s.idempotency_key for s in first.steps]
    assert len(set(keys)) == 3 and keys[0] == f"{UID}:clear:web-0"
    long_pod = "p" * 253
    key = idempotency_key(UID, "diagnose-key-analysis", long_pod)
    assert validate_key(key) == key and key == idempotency_key(UID, "diagnose-key-analysis", long_pod)
    assert key != idempotency_key(UID, "diagnose-key-analysis", "p" * 252 + "q")


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"metadata": {"name": "x"}, "spec": {"policyRef": {"name": "w"}, "action": "gc"}}, "metadata.uid="),
        ({"metadata": {"uid": "a b"}, "spec": {"policyRef": {"name": "w"}, "action": "gc"}}, "metadata.uid="),
        (
            {"metadata": {"uid": "u"}, "spec": {"policyRef": {"name": "w"}, "action": "reboot"}},
            r"spec\.action",
        ),
        (
            {"metadata": {"uid": "u"}, "spec": {"policyRef": {"name": "w"}, "action": "apply-preset"}},
            "parameters.preset is required",
        ),
    ],
)
def test_bad_incidents_name_the_field(obj: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build_plan(obj, ["web-0"])


def test_bad_results_name_the_field() -> None:
    plan = build_plan(incident("gc"), PODS)
    with pytest.raises(ValueError, match=r"status\.results\[1\]="):
        next_steps(plan, [{"pod": "web-0", "step": "gc"}, {"pod": 3}])


# ------------------------------------------------------------------------------------------------
# resumption


class Crash(Exception):
    """The operator was killed here."""


class Runtime:
    """The pods' admin API as far as exactly-once goes: the runtime's real IdempotencyStore per pod,
    and a counter of the times each pod really acted."""

    def __init__(self) -> None:
        self.stores: dict[str, IdempotencyStore] = {}
        self.acted: Counter[tuple[str, str]] = Counter()
        self.calls = 0  # requests received, replays included

    async def call(self, step: PlannedStep) -> dict[str, Any]:
        assert step.request is not None
        request = step.request
        self.calls += 1
        store = self.stores.setdefault(step.pod, IdempotencyStore())
        fingerprint = request_fingerprint(request.method, request.path, dict(request.query), request.body)

        async def act() -> tuple[int, Any]:
            self.acted[(step.pod, step.step)] += 1
            return 200, {"action": step.step, "removed": 7, "dry_run": False}

        result = await store.run(step.idempotency_key, request.path, fingerprint, act)
        return dict(result.body)


async def execute(
    plan_source: dict[str, Any], status: dict[str, Any], runtime: Runtime, crash_at: int | None
) -> None:
    """The executor I2's handler implements, over a status that survives crashes. Each numbered point
    is a place the operator can die: before the Running record, after it, after the call."""
    point = 0

    def maybe_crash() -> None:
        nonlocal point
        if point == crash_at:
            raise Crash(point)
        point += 1

    pods = planned_pods(status.get("results")) or PODS
    plan = build_plan(plan_source, pods)
    if not status.get("results"):
        status["results"] = pending_records(plan)
    while steps := next_steps(plan, status["results"]):
        for step in steps:
            maybe_crash()
            if step.request is None:
                status["results"] = merge_record(status["results"], finished_record(step, NOW, "Skipped"))
                continue
            status["results"] = merge_record(status["results"], started_record(step, NOW))
            maybe_crash()
            reply = await runtime.call(step)
            maybe_crash()
            record = finished_record(step, NOW + 1, "Succeeded", counts=counts_from_reply(reply))
            status["results"] = merge_record(status["results"], record)


@pytest.mark.parametrize("action", ["clear", "diagnose", "isolate"])
async def test_a_crash_at_any_point_resumes_and_every_pod_acts_exactly_once(action: str) -> None:
    source = incident(action)
    steps_total = len(build_plan(source, PODS).steps)
    crash_points = 3 * steps_total
    for crash_at in range(crash_points + 1):
        runtime = Runtime()
        status: dict[str, Any] = {}
        crashed = False
        try:
            await execute(source, status, runtime, crash_at)
        except Crash:
            crashed = True
            await execute(source, status, runtime, None)  # the restarted operator
        assert crashed == (crash_at < crash_points)
        # Finished steps are never sent again: at most the one step in flight at the crash repeats.
        assert runtime.calls <= steps_total + 1, crash_at
        plan = build_plan(source, PODS)
        assert outcome(plan, status["results"]) == "Succeeded"
        for step in plan.steps:
            if step.request is not None and step.request.method == "POST":
                assert runtime.acted[(step.pod, step.step)] == 1, (crash_at, step)
        assert all(r["result"] == "Succeeded" and r["counts"]["removed"] == 7 for r in status["results"])
        first_start = next(r for r in status["results"] if r["pod"] == "web-0")
        assert first_start["startedAt"] == rfc3339(NOW)


def test_next_steps_table() -> None:
    plan = build_plan(incident("diagnose"), ["a", "b"])
    a1, a2, b1, b2 = plan.steps

    def rec(step: PlannedStep, result: str) -> dict[str, Any]:
        return {"pod": step.pod, "step": step.step, "result": result}

    assert next_steps(plan, None) == [a1, b1]
    assert next_steps(plan, [rec(a1, "Running")]) == [a1, b1]  # started, not finished: again
    assert next_steps(plan, [rec(a1, "Succeeded")]) == [a2, b1]
    assert next_steps(plan, [rec(a1, "Failed")]) == [b1]  # a failed pod gets no later step
    assert next_steps(plan, [rec(a1, "Skipped"), rec(a2, "Succeeded"), rec(b1, "Succeeded")]) == [b2]
    done = [rec(a1, "Succeeded"), rec(a2, "Succeeded"), rec(b1, "Succeeded"), rec(b2, "Skipped")]
    assert next_steps(plan, done) == [] and outcome(plan, done) == "Succeeded"
    failed = [rec(a1, "Failed"), rec(b1, "Succeeded"), rec(b2, "Succeeded")]
    assert outcome(plan, failed) == "Failed"
    assert outcome(plan, [rec(a1, "Running")]) == "Running"


def test_records() -> None:
    step = build_plan(incident("clear"), ["web-0"]).steps[0]
    started = started_record(step, NOW)
    assert started == {
        "pod": "web-0",
        "step": "clear",
        "result": "Running",
        "startedAt": rfc3339(NOW),
        "idempotencyKey": f"{UID}:clear:web-0",
    }
    done = finished_record(step, NOW + 5, "Failed", message="HTTP 503" * 500)
    merged = merge_record([started], done)
    assert len(merged) == 1 and merged[0]["startedAt"] == rfc3339(NOW) and merged[0]["result"] == "Failed"
    assert len(merged[0]["message"]) == 1024
    assert counts_from_reply({"removed": 3, "dry_run": True, "ratio": 0.5, "big": 2**70}) == {"removed": 3}
    assert counts_from_reply(["x"]) == {}


# ------------------------------------------------------------------------------------------------
# overrides


def test_override_for_apply_preset_counts_from_start() -> None:
    source = incident("apply-preset", {"preset": "conservative", "durationSeconds": 600})
    assert override_for(source, NOW) == {
        "preset": "conservative",
        "incident": "inc",
        "expiresAt": rfc3339(NOW + 600),
    }
    resumed = {**source, "status": {"startedAt": rfc3339(NOW - 100)}}
    assert override_for(resumed, NOW)["expiresAt"] == rfc3339(NOW + 500)  # type: ignore[index]
    default = incident("apply-preset", {"preset": "performance"})
    assert override_for(default, NOW, 1800)["expiresAt"] == rfc3339(NOW + 1800)  # type: ignore[index]
    assert override_for(incident("apply-preset", {"preset": "performance"}, dryRun=True), NOW) is None
    assert override_for(incident("clear"), NOW) is None
    assert expires_at(incident("isolate"), NOW, 900) == rfc3339(NOW + 900)
    assert expires_at(incident("gc"), NOW, 900) is None
    with pytest.raises(ValueError, match=r"status\.startedAt="):
        expires_at({**source, "status": {"startedAt": "later"}}, NOW, 60)


@pytest.mark.parametrize(
    ("override", "names", "active", "lift"),
    [
        ({"preset": "conservative", "incident": "inc", "expiresAt": rfc3339(NOW + 1)}, ["inc"], True, False),
        ({"preset": "conservative", "incident": "inc", "expiresAt": rfc3339(NOW)}, ["inc"], False, True),
        ({"preset": "conservative", "incident": "inc", "expiresAt": rfc3339(NOW + 60)}, [], True, True),
        ({"preset": "conservative", "incident": "inc", "expiresAt": "never"}, ["inc"], False, True),
        (None, [], False, False),
    ],
)
def test_override_active_and_lifted(
    override: dict[str, Any] | None, names: list[str], active: bool, lift: bool
) -> None:
    assert override_active(override, NOW) is active
    assert override_to_lift(override, NOW, names) is lift
