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


async def test_drift_repair_reads_each_child_once_and_not_what_the_pass_already_read() -> None:
    """A drift-repair pass has already read the token Secret (for the tokens): apply_children_of
    reads only the other children, and applies none of them when nothing drifted (selector mode:
    the token Secret and the ConfigMap; stale runtime children not looked for here)."""
    from cache_operator import render
    from cache_operator.api.cachepolicy import CachePolicySpec
    from cache_operator.ports import PolicyRef
    from cache_operator.reconcile import apply_children_of

    policy = PolicyRef("web", "ns", "uid-1")
    model = CachePolicySpec.model_validate(
        {"preset": "development", "selector": {"matchLabels": {"app": "web"}}}
    )
    config = render.resolve_policy_config(model)
    tokens = render.new_tokens()
    children = {
        (obj["kind"], obj["metadata"]["name"]): obj
        for obj in render.render_children(policy, model, config, tokens, None)
    }

    class Recording:
        """FAKE kube: answers reads with the rendered children, records reads and applies."""

        def __init__(self) -> None:
            self.reads: list[str] = []
            self.applied: list[str] = []

        async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
            self.reads.append(kind)
            return copy.deepcopy(children.get((kind, name)))

        async def apply(self, obj: dict) -> dict:
            self.applied.append(obj["kind"])
            return obj

    kube = Recording()
    secret = copy.deepcopy(children[("Secret", render.token_secret_name("web"))])
    await apply_children_of(
        policy,
        model,
        config,
        tokens,
        kube,  # type: ignore[arg-type]
        delete_stale=False,
        only_if_drifted=True,
        already_read=[secret],
    )
    assert kube.reads == ["ConfigMap"]
    assert kube.applied == []
