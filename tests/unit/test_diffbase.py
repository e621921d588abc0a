"""cache_operator.diffbase: a spec-only essence for CachePolicy, kopf's own for everything else."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from cache_operator.api.common import API_VERSION
from cache_operator.diffbase import LeanDiffBaseStorage
from cache_operator.main import STORAGE_PREFIX

KEY = "last-handled-configuration"


def _body(kind: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": "p1",
            "namespace": "team-a",
            "labels": {"team": "a"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 4000 + "}"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"preset": "production", "selector": {"matchLabels": {"app": "chat"}}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "pods": [{"name": "a"}]},
    }


def _storage() -> LeanDiffBaseStorage:
    return LeanDiffBaseStorage(prefix=STORAGE_PREFIX, key=KEY, lean_kinds={(API_VERSION, "CachePolicy")})


def test_a_policy_essence_is_its_spec_alone_and_the_body_is_not_copied() -> None:
    raw = _body("CachePolicy")
    essence = _storage().build(body=kopf.Body(raw))
    assert essence == {"spec": raw["spec"]}
    assert essence["spec"] is raw["spec"]  # no deep copy of the event's body


def test_other_kinds_get_kopfs_own_essence() -> None:
    raw = _body("CacheIncident")
    expected = kopf.AnnotationsDiffBaseStorage(prefix=STORAGE_PREFIX, key=KEY).build(
        body=kopf.Body(copy.deepcopy(raw))
    )
    essence = _storage().build(body=kopf.Body(raw))
    assert essence == expected
    assert essence["metadata"]["labels"] == {"team": "a"}  # kopf's essence keeps labels, not status
    assert "status" not in essence


def test_a_policy_with_extra_fields_asked_for_gets_kopfs_essence() -> None:
    raw = _body("CachePolicy")
    fields = [("status", "conditions")]
    expected = kopf.AnnotationsDiffBaseStorage(prefix=STORAGE_PREFIX, key=KEY).build(
        body=kopf.Body(copy.deepcopy(raw)), extra_fields=fields
    )
    assert _storage().build(body=kopf.Body(raw), extra_fields=fields) == expected


def test_the_operator_installs_the_lean_storage_for_policies_only() -> None:
    from cache_operator.main import configure_persistence

    settings = kopf.OperatorSettings()
    configure_persistence(settings)
    storage = settings.persistence.diffbase_storage
    assert isinstance(storage, LeanDiffBaseStorage)
    assert storage.lean_kinds == {(API_VERSION, "CachePolicy")}
