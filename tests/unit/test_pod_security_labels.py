"""Pod Security labels of the e2e test namespaces (devcluster.testing)."""

from __future__ import annotations

import pytest

from devcluster.testing import POD_SECURITY_ENV, default_pod_security, pod_security_labels


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


def test_an_unknown_level_is_refused_naming_the_variable_and_the_levels() -> None:
    with pytest.raises(ValueError, match=rf"{POD_SECURITY_ENV}: 'strict' is not a Pod Security level; "
                                         r"accepted: privileged, baseline, restricted"):
        pod_security_labels("strict")


def test_the_default_level_is_baseline_unless_the_environment_says_otherwise() -> None:
    assert default_pod_security({}) == "baseline"
    assert default_pod_security({POD_SECURITY_ENV: " Restricted "}) == "restricted"
    assert default_pod_security({POD_SECURITY_ENV: ""}) == "baseline"
