"""Bad inputs of the operator's command line and pure helpers around reconcile: each refused with a
message naming the flag or field, the value and what is accepted."""

from __future__ import annotations

import pytest

from cache_operator.cli import build_parser, main
from cache_operator.k8s import resource_path
from cache_operator.metrics import OperatorMetrics
from cache_operator.podclient import PodClient, PodTarget
from cache_operator.selectors import label_selector_string


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--metrics-port", "70000"], "--metrics-port 70000 is not accepted; accepted: 1..65535"),
        (["--converge-interval", "0"], "--converge-interval 0.0 is not accepted; accepted: 0.1..60 seconds"),
        (["--pod-timeout", "500"], "--pod-timeout 500.0 is not accepted; accepted: 0.1..120 seconds"),
        (
            ["--log-level", "LOUD"],
            "--log-level 'LOUD' is not accepted; accepted: DEBUG, INFO, WARNING, ERROR",
        ),
        (
            ["--liveness", "0.0.0.0:8080"],
            "--liveness '0.0.0.0:8080' is not accepted; accepted: an http:// URL",
        ),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_namespace_and_all_namespaces_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--namespace", "a", "--all-namespaces"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cachewarden_dispatches_operator(capsys: pytest.CaptureFixture[str]) -> None:
    from cachewarden.cli import main as cachewarden

    assert cachewarden(["operator", "--metrics-port", "0"]) == 2
    assert "--metrics-port 0 is not accepted" in capsys.readouterr().err


def test_resource_path_names_the_unsupported_kind() -> None:
    assert resource_path("apps/v1", "Deployment", "ns", "d") == "/apis/apps/v1/namespaces/ns/deployments/d"
    with pytest.raises(
        ValueError, match=r"unsupported object batch/v1/Job; the operator handles: v1/ConfigMap"
    ):
        resource_path("batch/v1", "Job", "ns")


def test_label_selector_string_and_bad_operator() -> None:
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["x", "y"]},
            {"key": "gone", "operator": "DoesNotExist"},
        ],
    }
    assert label_selector_string(selector) == "a=1,b=2,tier in (x,y),!gone"
    with pytest.raises(
        ValueError, match=r"matchExpressions\[0\].operator: 'Near' is not accepted; accepted: In"
    ):
        label_selector_string({"matchExpressions": [{"key": "k", "operator": "Near"}]})


def test_pod_client_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="timeout_s=0 must be > 0"):
        PodClient(timeout_s=0)
    with pytest.raises(ValueError, match="concurrency=0 must be >= 1"):
        PodClient(concurrency=0)
    assert PodTarget("p", "fd00::1", 8080).base_url == "http://[fd00::1]:8080"


async def test_pod_client_reports_an_unreachable_pod_instead_of_raising() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    client = PodClient(timeout_s=2)
    try:
        reply = await client.health(PodTarget("gone", "127.0.0.1", 1), "t" * 20)
    finally:
        await client.close()
    assert not reply.ok and reply.status is None
    assert "GET /health" in (reply.error or "")


def test_policy_conditions_metric_counts_and_forgets() -> None:
    metrics = OperatorMetrics()
    metrics.policies.record("ns/a", [{"type": "Ready", "status": "True"}])
    metrics.policies.record("ns/b", [{"type": "Ready", "status": "False"}])
    metrics.policies.record("ns/c", [{"type": "Ready", "status": "True"}])
    metrics.policies.forget("ns/c")
    value = metrics.registry.get_sample_value
    assert value("cachewarden_operator_policies", {"condition": "Ready", "status": "True"}) == 1
    assert value("cachewarden_operator_policies", {"condition": "Ready", "status": "False"}) == 1
    assert value("cachewarden_operator_policies_total") == 2
