"""Drift of a rendered child against the stored object (cache_operator.drift)."""

from __future__ import annotations

import copy

from cache_operator.drift import covers, drifted

RENDERED = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "p-cachewarden-config", "namespace": "ns", "labels": {"a": "1"}},
    "data": {"config.json": "{}", "config-hash": "abc"},
}


def stored() -> dict:
    """RENDERED as the API server returns it: server fields and another manager's label added."""
    live = copy.deepcopy(RENDERED)
    live["metadata"].update(uid="u1", resourceVersion="7", managedFields=[{"manager": "cachewarden"}])
    live["metadata"]["labels"]["team"] = "web"
    return live


def test_a_stored_child_with_server_and_foreign_fields_has_not_drifted() -> None:
    assert not drifted(stored(), RENDERED)


def test_missing_changed_or_removed_rendered_fields_are_drift() -> None:
    assert drifted(None, RENDERED)
    changed = stored()
    changed["data"]["config.json"] = '{"x": 1}'
    assert drifted(changed, RENDERED)
    removed = stored()
    del removed["data"]["config-hash"]
    assert drifted(removed, RENDERED)
    relabelled = stored()
    relabelled["metadata"]["labels"]["a"] = "2"
    assert drifted(relabelled, RENDERED)


def test_lists_compare_element_by_element_with_their_length() -> None:
    live = [{"name": "c", "image": "i", "imagePullPolicy": "IfNotPresent"}]
    assert covers(live, [{"name": "c", "image": "i"}])
    assert not covers([{"name": "c"}, {"name": "d"}], [{"name": "c"}])
    assert not covers({"x": 1}, [1])
