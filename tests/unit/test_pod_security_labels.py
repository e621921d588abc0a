"""Pod Security settings of devcluster's test and bench namespaces and pods (devcluster.podsecurity,
re-exported by devcluster.testing)."""

from __future__ import annotations

import pytest

from devcluster.testing import (
    POD_SECURITY_ENV,
    default_pod_security,
    namespace_manifest,
    pod_security_labels,
    restricted_pod_spec,
)


def test_enforce_follows_the_level_and_warn_audit_are_always_restricted() -> None:
    labels = pod_security_labels("baseline")
    assert labels == {
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "latest",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/audit-version": "latest",
    }
    assert pod_security_labels("restricted")["pod-security.kubernetes.io/enforce"] == "restricted"


def test_an_unknown_level_is_refused_naming_the_levels() -> None:
    with pytest.raises(ValueError, match=r"Pod Security level \(enforce\): 'strict' is not one; "
                                         r"accepted: privileged, baseline, restricted"):
        pod_security_labels("strict")


def test_the_default_level_is_restricted_unless_the_environment_says_otherwise() -> None:
    assert default_pod_security({}) == "restricted"
    assert default_pod_security({POD_SECURITY_ENV: " Baseline "}) == "baseline"
    assert default_pod_security({POD_SECURITY_ENV: ""}) == "restricted"
    with pytest.raises(ValueError, match=rf"{POD_SECURITY_ENV}: 'strict' is not a Pod Security level; "
                                         r"accepted: privileged, baseline, restricted"):
        default_pod_security({POD_SECURITY_ENV: "strict"})


def test_namespace_manifest_carries_the_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POD_SECURITY_ENV, raising=False)
    manifest = namespace_manifest("bench-x")
    assert manifest["kind"] == "Namespace" and manifest["metadata"]["name"] == "bench-x"
    assert manifest["metadata"]["labels"] == pod_security_labels("restricted")
    assert namespace_manifest("x", "baseline")["metadata"]["labels"] == pod_security_labels("baseline")
    monkeypatch.setenv(POD_SECURITY_ENV, "privileged")
    assert namespace_manifest("x")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_restricted_pod_spec_sets_the_four_settings_everywhere_and_keeps_explicit_ones() -> None:
    spec = {
        "initContainers": [{"name": "init", "image": "python"}],
        "containers": [
            {"name": "main", "image": "python"},
            {"name": "ro", "image": "python", "securityContext": {"readOnlyRootFilesystem": True}},
        ],
        "securityContext": {"runAsUser": 999},
    }
    result = restricted_pod_spec(spec)
    assert result["securityContext"] == {
        "runAsUser": 999, "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"},
    }
    for container in [*result["initContainers"], *result["containers"]]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, container
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, container
    assert result["containers"][1]["securityContext"]["readOnlyRootFilesystem"] is True
    assert "securityContext" not in spec["containers"][0], "the input is not modified"
    assert restricted_pod_spec({"containers": []})["securityContext"]["runAsUser"] == 10001
