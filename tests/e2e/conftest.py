"""Fixtures for the end-to-end tests: one real local cluster per session (devcluster).

The fixtures live in ``devcluster.testing`` so any test directory can import them; see that module
for the skip/fail rules when the binaries are missing.
"""

from __future__ import annotations

import pytest

from devcluster.testing import dev_cluster, k8s_api, kube, namespace

__all__ = ["dev_cluster", "k8s_api", "kube", "namespace"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/e2e needs the cluster: mark it e2e (``-m 'not e2e'`` skips them)."""
    for item in items:
        if "tests/e2e/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("e2e/"):
            item.add_marker(pytest.mark.e2e)
