"""The pure renderers: children as plain data, checked field by field, and the config they carry
accepted by the runtime's own loader (same hash)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from cache_operator import render, selectors
from cache_operator.api.cachepolicy import CachePolicySpec, SelectorSpec
from cache_operator.api.cachepolicy_status import ActiveOverride
from cache_runtime.config import PRESET_NAMES
from cache_runtime.service.config_source import config_from_document, config_from_push
from cache_runtime.service.runtime_main import build_parser


@dataclass(frozen=True)
class Policy:
    name: str = "web"
    namespace: str = "shop"
    uid: str = "1234-uid"


POLICY = Policy()


def spec_of(**fields: Any) -> CachePolicySpec:
    return CachePolicySpec.model_validate({"runtime": {}, **fields})


def test_names_labels_and_owner() -> None:
    assert render.configmap_name("web") == "web-cachewarden-config"
    assert render.token_secret_name("web") == "web-cachewarden-tokens"
    assert render.deployment_name("web") == render.service_name("web") == "web-cachewarden"
    assert len(render.service_name("p" * 51)) == 63  # the CRD's name limit keeps the Service a DNS label
    assert render.child_labels("web") == {
        "app.kubernetes.io/name": "cachewarden-runtime", "app.kubernetes.io/instance": "web",
        "app.kubernetes.io/component": "runtime", "app.kubernetes.io/managed-by": "cachewarden",
        "cachewarden.io/policy": "web"}
    assert render.pod_selector_string("web") == (
        "app.kubernetes.io/name=cachewarden-runtime,app.kubernetes.io/instance=web")
    assert render.owner_reference(POLICY) == {
        "apiVersion": "cachewarden.io/v1alpha1", "kind": "CachePolicy", "name": "web", "uid": "1234-uid",
        "controller": True, "blockOwnerDeletion": True}


def test_every_child_has_explicit_labels_and_the_owner_only() -> None:
    spec = spec_of(redis={"url": "redis://redis:6379"})
    config = render.resolve_policy_config(spec)
    children = render.render_children(POLICY, spec, config, render.new_tokens(), "digest")
    assert [child["kind"] for child in children] == ["Secret", "ConfigMap", "Deployment", "Service"]
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "shop"
        assert meta["ownerReferences"] == [render.owner_reference(POLICY)]
        assert set(meta["labels"]) == set(render.child_labels("web"))
        assert not any("fluxcd" in key or "argocd" in key for key in meta["labels"])


def test_configmap_holds_the_resolved_config_and_hash_the_runtime_accepts() -> None:
    spec = spec_of(preset="ai-production", overrides={"ttl": {"default_s": 900}},
                   redis={"url": "redis://redis:6379/0", "username": "cache",
                          "passwordSecretRef": {"name": "redis", "key": "password"}})
    config = render.resolve_policy_config(spec)
    configmap = render.render_configmap(POLICY, config)
    document = json.loads(configmap["data"]["config.json"])
    assert set(document) == {"config", "hash"}
    assert document["hash"] == config.config_hash() == configmap["data"]["config-hash"]
    assert configmap["metadata"]["annotations"] == {"cachewarden.io/config-hash": config.config_hash(),
                                                    "cachewarden.io/preset": "ai-production"}
    loaded = config_from_document(document)
    assert loaded.config_hash() == config.config_hash()
    assert loaded.ttl.default_s == 900 and loaded.redis.username == "cache"
    assert document["config"]["redis"]["password"] is None  # never a secret in a ConfigMap
    pushed = render.config_document(config)
    assert config_from_push(pushed["config"], pushed["hash"]).config_hash() == config.config_hash()


def test_config_resolution_layers() -> None:
    spec = spec_of(preset="production", overrides={"ttl": {"default_s": 900}},
                   health={"thresholds": {"latencyWarningMs": 5, "latencyCriticalMs": 10}},
                   redis={"url": "redis://redis.shop.svc:6379"})
    base = render.resolve_policy_config(spec)
    assert base.preset == "production" and base.ttl.default_s == 900
    assert base.health.latency_warning_ms == 5 and base.redis.url == "redis://redis.shop.svc:6379"
    rewritten = render.resolve_policy_config(spec, redis_url="redis://127.0.0.7:6379")
    assert rewritten.redis.url == "redis://127.0.0.7:6379"
    assert rewritten.config_hash() != base.config_hash()
    override = ActiveOverride(preset="conservative", overrides={"l1": {"max_entries": 10}}, incident="inc-1",
                              expires_at="2030-01-01T00:00:00Z")
    emergency = render.resolve_policy_config(spec, override=override)
    assert emergency.preset == "conservative" and emergency.l1.max_entries == 10
    assert emergency.ttl.default_s == 900  # the spec's overrides still apply on top of the new preset


def test_secret_ref_url_never_enters_the_config() -> None:
    spec = spec_of(redis={"secretRef": {"name": "redis", "key": "url"}})
    assert render.resolve_policy_config(spec).redis.url is None
    args = render.render_deployment(POLICY, spec)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--redis-url-file") + 1] == "/etc/cachewarden/redis-url/url"


def test_tls_ca_is_mounted_and_configured_in_runtime_mode() -> None:
    tls = {"enabled": True, "caSecretRef": {"name": "ca", "key": "tls.crt"}}
    spec = spec_of(redis={"url": "rediss://redis:6380", "tls": tls})
    assert render.resolve_policy_config(spec).redis.tls_ca_file == "/etc/cachewarden/redis-ca/ca.crt"
    pod = render.render_deployment(POLICY, spec)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "redis-ca")
    assert volume["secret"] == {"secretName": "ca", "defaultMode": 0o440,
                                "items": [{"key": "tls.crt", "path": "ca.crt"}]}
    assert {"name": "redis-ca", "mountPath": "/etc/cachewarden/redis-ca", "readOnly": True} in \
        pod["containers"][0]["volumeMounts"]


def test_deployment_is_hardened_probed_and_runs_the_runtime_flags() -> None:
    spec = spec_of(runtime={"replicas": 3, "port": 9090, "image": "example.org/cw:1",
                            "resources": {"limits": {"memory": "1Gi"}}},
                   redis={"url": "redis://r:6379", "passwordSecretRef": {"name": "redis", "key": "pw"}})
    deployment = render.render_deployment(POLICY, spec, "abc")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["selector"] == {"matchLabels": render.pod_selector_labels("web")}
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"] == render.child_labels("web")
    assert template["metadata"]["annotations"] == {"cachewarden.io/restart-digest": "abc"}
    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == "example.org/cw:1"
    assert container["command"] == ["cachewarden"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                      "limits": {"memory": "1Gi"}}
    # The runtime's own parser accepts exactly these arguments (after the `runtime` subcommand).
    assert container["args"][0] == "runtime"
    parsed = build_parser().parse_args(container["args"][1:])
    assert parsed.port == 9090 and parsed.config_path == "/etc/cachewarden/config/config.json"
    assert parsed.admin_token_file == "/etc/cachewarden/tokens/admin-token"
    assert parsed.read_token_file == "/etc/cachewarden/tokens/read-token"
    assert parsed.redis_password_file == "/etc/cachewarden/redis-password/password"
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts == {"config": "/etc/cachewarden/config", "tokens": "/etc/cachewarden/tokens", "tmp": "/tmp",
                      "redis-password": "/etc/cachewarden/redis-password"}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "web-cachewarden-config"
    assert volumes["tokens"]["secret"]["secretName"] == "web-cachewarden-tokens"


def test_pod_template_changes_only_when_a_restart_is_needed() -> None:
    spec = spec_of(redis={"url": "redis://r:6379"})
    template = render.render_deployment(POLICY, spec, "d1")["spec"]["template"]
    # A preset or override change is pushed live: the Deployment does not change, no rollout.
    other_config = spec_of(preset="minimal", overrides={"ttl": {"default_s": 5}}, redis={"url": "redis://r:6379"})
    assert render.render_deployment(POLICY, other_config, "d1")["spec"]["template"] == template
    # A rotated Redis Secret changes the digest, hence the template.
    assert render.render_deployment(POLICY, spec, "d2")["spec"]["template"] != template
    digest = render.restart_digest({"redis": {"password": "YQ=="}})
    assert digest == render.restart_digest({"redis": {"password": "YQ=="}})
    assert digest != render.restart_digest({"redis": {"password": "Yg=="}})
    assert render.restart_digest({"redis": None}) != digest


def test_policy_labels_are_not_copied() -> None:
    # The renderers never see the policy's metadata.labels: children carry only child_labels().
    spec = spec_of(runtime={"podAnnotations": {"prometheus.io/scrape": "true"}})
    deployment = render.render_deployment(POLICY, spec)
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "cachewarden.io/restart-digest": "none"}


def test_service_targets_the_runtime_pods() -> None:
    service = render.render_service(POLICY, spec_of(runtime={"port": 8181}))
    assert service["spec"]["selector"] == render.pod_selector_labels("web")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8181, "targetPort": "http", "protocol": "TCP"}]


def test_resp_port_is_a_runtime_flag_a_container_port_and_a_service_port() -> None:
    spec = spec_of(runtime={"port": 8181, "respPort": 6380})
    (container,) = render.render_deployment(POLICY, spec)["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8181, "protocol": "TCP"},
                                  {"name": "resp", "containerPort": 6380, "protocol": "TCP"}]
    assert build_parser().parse_args(container["args"][1:]).resp_port == 6380
    assert render.render_service(POLICY, spec)["spec"]["ports"] == [
        {"name": "http", "port": 8181, "targetPort": "http", "protocol": "TCP"},
        {"name": "resp", "port": 6380, "targetPort": "resp", "protocol": "TCP"}]
    # Off by default: no flag, no port.
    (plain,) = render.render_deployment(POLICY, spec_of())["spec"]["template"]["spec"]["containers"]
    assert "--resp-port" not in plain["args"] and [p["name"] for p in plain["ports"]] == ["http"]


def test_selector_mode_renders_only_config_and_tokens() -> None:
    spec = CachePolicySpec.model_validate({"selector": {"matchLabels": {"app": "summarizer"}}})
    children = render.render_children(POLICY, spec, render.resolve_policy_config(spec), render.new_tokens())
    assert [child["kind"] for child in children] == ["Secret", "ConfigMap"]
    assert render.stale_children(spec) == [("apps/v1", "Deployment"), ("v1", "Service")]
    with pytest.raises(ValueError, match=r"spec\.runtime"):
        render.render_deployment(POLICY, spec)
    with pytest.raises(ValueError, match=r"spec\.runtime"):
        render.render_service(POLICY, spec)


def test_referenced_secrets() -> None:
    spec = spec_of(redis={"secretRef": {"name": "redis", "key": "url"},
                          "passwordSecretRef": {"name": "redis", "key": "pw"}})
    assert render.referenced_secrets(spec) == ["redis"]
    assert render.referenced_secrets(spec_of()) == []


def test_label_selector_string_and_matching() -> None:
    selector = SelectorSpec.model_validate({
        "matchLabels": {"app": "summarizer", "tier": "api"},
        "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable", "canary"]},
                             {"key": "legacy", "operator": "DoesNotExist"},
                             {"key": "zone", "operator": "NotIn", "values": ["b"]},
                             {"key": "cache", "operator": "Exists"}]})
    assert selectors.label_selector_string(selector) == (
        "app=summarizer,tier=api,track in (canary,stable),!legacy,zone notin (b),cache")
    base = {"app": "summarizer", "tier": "api", "track": "stable", "cache": "on"}
    assert selectors.selector_matches(selector, base)
    assert selectors.selector_matches(selector, {**base, "zone": "a"})
    assert not selectors.selector_matches(selector, {**base, "zone": "b"})
    assert not selectors.selector_matches(selector, {**base, "legacy": "1"})
    assert not selectors.selector_matches(selector, {**base, "track": "beta"})
    assert not selectors.selector_matches(selector, {k: v for k, v in base.items() if k != "cache"})
    assert not selectors.selector_matches(selector, {**base, "app": "other"})


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_preset_renders_a_config_the_runtime_loads_with_the_same_hash(preset: str) -> None:
    spec = spec_of(preset=preset, redis={"url": "redis://redis:6379/2", "username": "cache"},
                   health={"thresholds": {"minRequests": 10}})
    config = render.resolve_policy_config(spec)
    document = json.loads(render.render_configmap(POLICY, config)["data"]["config.json"])
    loaded = config_from_document(document)
    assert loaded.preset == preset
    assert loaded.config_hash() == config.config_hash() == document["hash"]
