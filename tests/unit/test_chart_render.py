"""charts/cachewarden rendered by the real ``helm`` binary (``helm lint``, ``helm template``) across value
combinations, with the rendered objects checked: security context, RBAC rules exactly, peering,
monitoring objects, alerts' severity and runbook_url, metric names against the real exporters, the
NetworkPolicy, the cleanup hook, and bad values refused naming the field.

Needs only helm (no cluster): skipped when ``~/.cache/cachewarden/bin/helm`` is missing, failed instead
in CI or with CACHEWARDEN_REQUIRE_E2E=1 (devcluster.testing's rule)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import binaries
from devcluster.testing import e2e_required

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cachewarden"
RELEASE, NS = "cw", "cachewarden-system"
RUNBOOK_BASE = "https://github.com/cachewarden/cachewarden/blob/main/docs/"
MONITORING = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
              "--api-versions", "monitoring.coreos.com/v1/PodMonitor",
              "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]

# What the operator calls (cache_operator/k8s.py, reconcile.py, incidents/executor_io.py, handlers/, kopf).
OPERATOR_RULES = [
    {"apiGroups": ["cachewarden.io"], "resources": ["cachepolicies", "cacheincidents"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["cachewarden.io"], "resources": ["cacheincidents"], "verbs": ["create", "delete"]},
    {"apiGroups": ["cachewarden.io"], "resources": ["cachepolicies/status", "cacheincidents/status"],
     "verbs": ["patch"]},
    {"apiGroups": ["cachewarden.io"], "resources": ["cachepolicies/finalizers"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # read-only: cross-layer diagnosis of the policy's Redis (and the Redis Service lookup)
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
]
CRD_OBSERVATION = {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                   "verbs": ["list", "watch"]}
NAMESPACE_OBSERVATION = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}


@pytest.fixture(scope="module")
def helm() -> Path:
    """The pinned helm binary, or skip (fail when e2e is required)."""
    path = binaries.bin_dir() / "helm"
    if not os.access(path, os.X_OK):
        message = f"helm not found at {path}; build it with: {binaries.BUILD_COMMAND}"
        if e2e_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``helm args...`` with a private cache/config home."""
    home = Path(os.environ.get("TMPDIR", "/tmp")) / "cachewarden-helm-unit"
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=120,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def render(helm: Path, *values: str, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``helm template`` with ``--set`` values; the documents as dicts (hooks included)."""
    sets = [arg for value in values for arg in ("--set", value)]
    out = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NS, "--kube-version",
                   binaries.pinned_versions().kubernetes, *sets, *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Documents of ``kind`` (and ``name``)."""
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single document of ``kind`` (and ``name``)."""
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata'] for d in found]}"
    return found[0]


def not_hooks(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Documents of ``kind`` that are not Helm hooks (the release's own objects)."""
    return [d for d in find(docs, kind) if "helm.sh/hook" not in d["metadata"].get("annotations", {})]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator Deployment's container."""
    deployment = one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


# --- lint and CRDs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [
    [],
    ["rbac.scope=namespace", "rbac.watchNamespaces={team-a,team-b}", "replicas=2",
     "networkPolicy.enabled=true", "metrics.grafanaDashboard.enabled=true", "cleanup.onUninstall=delete"],
])
def test_helm_lint_strict(helm: Path, values: list[str]) -> None:
    sets = [arg for value in values for arg in ("--set", value)]
    result = run_helm(helm, "lint", "--strict", str(CHART), *sets)
    assert "0 chart(s) failed" in result.stdout


def test_chart_crds_are_the_repository_crds_byte_for_byte() -> None:
    repo_crds = sorted(p.name for p in (REPO / "crds").glob("*.cachewarden.io.yaml"))
    assert repo_crds == ["cacheincidents.cachewarden.io.yaml", "cachepolicies.cachewarden.io.yaml"]
    for name in repo_crds:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/cachewarden/crds/{name} differs from crds/{name}: run `make generate`")
    peering = list(yaml.safe_load_all((CHART / "crds" / "kopfpeerings.kopf.dev.yaml").read_text()))
    assert sorted(d["metadata"]["name"] for d in peering) == ["clusterkopfpeerings.kopf.dev",
                                                              "kopfpeerings.kopf.dev"]
    # A copy of kopf's peering CRDs among the repository's CRDs (for running the operator outside the
    # chart) must define the same objects.
    for other in (REPO / "crds").glob("*kopf*.yaml"):
        assert sorted(list(yaml.safe_load_all(other.read_text())), key=lambda d: d["metadata"]["name"]) == (
            sorted(peering, key=lambda d: d["metadata"]["name"])), f"{other} differs from the chart's copy"


def test_chart_and_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == "0.1.0"
    from cache_operator.api.cachepolicy import DEFAULT_IMAGE
    assert f"ghcr.io/cachewarden/cachewarden:{chart['appVersion']}" == DEFAULT_IMAGE


# --- the operator Deployment ---------------------------------------------------------------------


def test_default_deployment_is_standalone_restricted_and_probed(helm: Path) -> None:
    docs = render(helm)
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount", "cw-cachewarden")["metadata"]["name"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                      "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    container = operator_container(docs)
    assert container["image"] == "ghcr.io/cachewarden/cachewarden:0.1.0"
    assert container["securityContext"] == {
        "runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "privileged": False, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                      "limits": {"memory": "384Mi"}}
    args = container["args"]
    assert args[0] == "operator" and "--all-namespaces" in args
    assert not [a for a in args if a.startswith(("--peering", "--priority", "--namespace"))]
    assert "--resolve-service-hosts" not in args
    # The liveness probe hits the port the operator's --liveness endpoint listens on.
    assert "--liveness=http://$(POD_IP):8081/healthz" in args
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8081, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert one(docs, "Service", "cw-cachewarden-metrics")["spec"]["ports"][0]["targetPort"] == "metrics"


def test_image_tag_digest_args_and_devcluster_flag(helm: Path) -> None:
    docs = render(helm, "image.tag=9.9.9", "operator.logLevel=DEBUG", "operator.resolveServiceHosts=true",
                  "operator.extraArgs={--pod-timeout=7}")
    container = operator_container(docs)
    assert container["image"] == "ghcr.io/cachewarden/cachewarden:9.9.9"
    assert "--log-level=DEBUG" in container["args"] and "--resolve-service-hosts" in container["args"]
    assert container["args"][-1] == "--pod-timeout=7"
    services_verbs = {v for r in one(docs, "ClusterRole", "cw-cachewarden")["rules"]
                      if r["resources"] == ["services"] for v in r["verbs"]}
    assert services_verbs == {"get", "create", "patch", "delete"}  # get: drift repair, the Redis lookup
    digest = "sha256:" + "a" * 64
    assert operator_container(render(helm, f"image.digest={digest}"))["image"] == (
        f"ghcr.io/cachewarden/cachewarden@{digest}")


# --- RBAC -------------------------------------------------------------------------------------------


def test_cluster_scope_rbac_is_exactly_what_the_operator_uses(helm: Path) -> None:
    docs = render(helm)
    assert one(docs, "ClusterRole", "cw-cachewarden")["rules"] == OPERATOR_RULES
    assert one(docs, "ClusterRole", "cw-cachewarden-observer")["rules"] == [CRD_OBSERVATION]
    binding = one(docs, "ClusterRoleBinding", "cw-cachewarden")
    assert binding["roleRef"]["name"] == "cw-cachewarden"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cw-cachewarden", "namespace": NS}]
    assert not_hooks(docs, "Role") == []
    for doc in find(docs, "ClusterRole") + find(docs, "Role"):
        for rule in doc["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], doc["metadata"]["name"]
            if "secrets" in rule["resources"]:
                assert not {"list", "watch"} & set(rule["verbs"]), "Secrets are read by name only"
            if {"endpointslices", "statefulsets"} & set(rule["resources"]):
                assert set(rule["verbs"]) <= {"get", "list"}, "the Redis diagnosis only reads"


def test_namespace_scope_rbac_is_a_role_per_watched_namespace(helm: Path) -> None:
    docs = render(helm, "rbac.scope=namespace", "rbac.watchNamespaces={team-a,team-b}")
    roles = not_hooks(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == OPERATOR_RULES for r in roles)
    bindings = not_hooks(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert find(docs, "ClusterRole", "cw-cachewarden") == []
    assert one(docs, "ClusterRole", "cw-cachewarden-observer")["rules"] == [CRD_OBSERVATION,
                                                                           NAMESPACE_OBSERVATION]
    args = operator_container(docs)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args


def test_namespace_scope_defaults_to_the_release_namespace_and_observation_can_go(helm: Path) -> None:
    docs = render(helm, "rbac.scope=namespace", "rbac.clusterObservation=false")
    assert [r["metadata"]["namespace"] for r in not_hooks(docs, "Role")] == [NS]
    assert not_hooks(docs, "ClusterRole") == []
    assert f"--namespace={NS}" in operator_container(docs)["args"]


def test_rbac_create_false_renders_no_rbac(helm: Path) -> None:
    docs = render(helm, "rbac.create=false", "cleanup.onUninstall=none")
    assert find(docs, "ClusterRole") == find(docs, "Role") == []


# --- HA (kopf peering) -------------------------------------------------------------------------


def test_replicas_above_one_switch_on_peering_with_random_priorities(helm: Path) -> None:
    docs = render(helm, "replicas=3")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = operator_container(docs)["args"]
    assert "--peering=cw-cachewarden" in args and "--priority=random" in args
    assert "--peering-lifetime=30" in args
    assert one(docs, "ClusterKopfPeering", "cw-cachewarden")["apiVersion"] == "kopf.dev/v1"
    rules = one(docs, "ClusterRole", "cw-cachewarden")["rules"]
    assert rules[: len(OPERATOR_RULES)] == OPERATOR_RULES
    assert rules[len(OPERATOR_RULES):] == [
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["list", "watch"]},
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "resourceNames": ["cw-cachewarden"],
         "verbs": ["get", "patch"]},
    ]
    env = {e["name"] for e in operator_container(docs)["env"]}
    assert "POD_ID" in env  # kopf's peer identity is the pod name


def test_ha_in_namespace_scope_uses_a_kopfpeering_per_namespace(helm: Path) -> None:
    docs = render(helm, "ha.enabled=true", "ha.peeringName=cw-peers", "rbac.scope=namespace",
                  "rbac.watchNamespaces={team-a,team-b}")
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    assert sorted(p["metadata"]["namespace"] for p in find(docs, "KopfPeering", "cw-peers")) == ["team-a",
                                                                                                 "team-b"]
    assert find(docs, "ClusterKopfPeering") == []
    role = find(docs, "Role", "cw-cachewarden")[0]
    assert {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "resourceNames": ["cw-peers"],
            "verbs": ["get", "patch"]} in role["rules"]
    assert "--peering=cw-peers" in operator_container(docs)["args"]


def test_no_peering_objects_without_ha(helm: Path) -> None:
    docs = render(helm)
    assert find(docs, "ClusterKopfPeering") == find(docs, "KopfPeering") == []
    assert not any("kopf.dev" in r["apiGroups"] for d in find(docs, "ClusterRole") for r in d["rules"])


# --- monitoring ----------------------------------------------------------------------------------


def test_monitoring_objects_are_off_by_default(helm: Path) -> None:
    docs = render(helm)
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "NetworkPolicy"}
    assert not [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]


def test_servicemonitor_needs_the_prometheus_operator_crds(helm: Path) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", "metrics.serviceMonitor.enabled=true",
                      check=False)
    assert result.returncode != 0
    assert "metrics.serviceMonitor.enabled" in result.stderr and "ServiceMonitor" in result.stderr
    docs = render(helm, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom",
                  extra=tuple(MONITORING))
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    pods = one(docs, "PodMonitor")
    assert pods["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "cachewarden-runtime"}
    assert pods["spec"]["namespaceSelector"] == {"any": True}
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "http"


def _alerts(helm: Path) -> list[dict[str, Any]]:
    docs = render(helm, "metrics.prometheusRule.enabled=true", extra=tuple(MONITORING))
    rule = one(docs, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _anchors(markdown: str) -> set[str]:
    """Explicit ``<a id=...>`` anchors of a Markdown file."""
    return set(re.findall(r'<a id="([^"]+)"></a>', markdown))


def test_every_alert_has_a_severity_and_a_runbook_url_into_docs(helm: Path) -> None:
    alerts = _alerts(helm)
    assert len(alerts) >= 10
    for alert in alerts:
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_BASE), url
        page, _, anchor = url[len(RUNBOOK_BASE):].partition("#")
        doc = REPO / "docs" / page
        assert doc.is_file(), f"{alert['alert']}: {doc} does not exist"
        assert anchor in _anchors(doc.read_text()), f"{alert['alert']}: no anchor #{anchor} in docs/{page}"
        assert alert["annotations"]["summary"]


def test_alert_thresholds_come_from_values(helm: Path) -> None:
    docs = render(helm, "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.hitRateCritical=0.25",
                  extra=tuple(MONITORING))
    rules = [r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    critical = next(r for r in rules if r["alert"] == "CachewardenLowHitRate"
                    and r["labels"]["severity"] == "critical")
    assert "< 0.25" in critical["expr"]
    memory = [r["expr"] for r in rules if r["alert"] == "CachewardenHighMemory"]
    assert memory == ["cachewarden_cache_l1_bytes > 52428800", "cachewarden_cache_l1_bytes > 104857600"]


@pytest.fixture(scope="module")
def exported_metric_names() -> set[str]:
    """Every sample name the real exporters produce: the operator's registry and the runtime engine's
    collector over a live (memory-only) TieredCache."""
    from prometheus_client import CollectorRegistry, generate_latest

    from cache_operator.metrics import OperatorMetrics
    from cache_runtime import TieredCache, resolve_config
    from cache_runtime.metrics import register_engine_collector

    operator = OperatorMetrics()
    operator.reconciles.labels(trigger="start", outcome="ready").inc()
    operator.errors.labels(kind="kubernetes").inc()
    operator.reconcile_seconds.labels(trigger="start").observe(0.01)
    operator.probes.labels(result="ok").inc()
    operator.pushes.labels(result="ok").inc()
    operator.remediations.labels(verdict="Ineffective", symptom="HighMemory").inc()
    operator.policies.record("ns/p", [{"type": "Ready", "status": "True"}])
    text = generate_latest(operator.registry).decode()

    async def engine_text() -> str:
        config = resolve_config(preset="development", redis_url="redis://127.0.0.1:1/0")
        async with TieredCache(config) as cache:
            await cache.set("k", {"v": 1})
            await cache.get("k")
            registry = CollectorRegistry()
            register_engine_collector(cache.stats, registry=registry)
            return generate_latest(registry).decode()

    text += asyncio.run(engine_text())
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {line.split("{")[0].split(" ")[0] for line in samples}


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(cachewarden_[a-z0-9_]+)", expr))


def test_alert_and_dashboard_queries_use_real_metric_names(
    helm: Path, exported_metric_names: set[str]
) -> None:
    assert "cachewarden_cache_hits_total" in exported_metric_names  # the fixture really scraped
    used = set()
    for alert in _alerts(helm):
        used |= _metric_names(alert["expr"])
    docs = render(helm, "metrics.grafanaDashboard.enabled=true")
    dashboard_cm = one(docs, "ConfigMap", "cw-cachewarden-dashboard")
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_cm["data"]["cachewarden.json"])
    assert dashboard["uid"] == "cachewarden" and len(dashboard["panels"]) >= 10
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= _metric_names(target["expr"])
    unknown = sorted(used - exported_metric_names)
    assert unknown == [], f"queries name metrics no exporter produces: {unknown}"
    assert len(used) >= 15


# --- NetworkPolicy -------------------------------------------------------------------------------


def test_networkpolicy_admits_only_the_operator_prometheus_and_extra_peers(helm: Path) -> None:
    docs = render(helm, "networkPolicy.enabled=true", "rbac.scope=namespace",
                  "rbac.watchNamespaces={team-a,team-b}")
    policies = find(docs, "NetworkPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a", "team-b"]
    spec = policies[0]["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "cachewarden-runtime"}}
    assert spec["policyTypes"] == ["Ingress"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    operator_peer, prometheus_peer = ingress["from"]
    assert operator_peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}},
        "podSelector": {"matchLabels": one(docs, "Deployment")["spec"]["selector"]["matchLabels"]},
    }
    assert prometheus_peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    docs = render(helm, "networkPolicy.enabled=true", "networkPolicy.namespaces={apps}",
                  "networkPolicy.extraFrom[0].podSelector.matchLabels.app=client")
    (policy,) = find(docs, "NetworkPolicy")
    assert policy["metadata"]["namespace"] == "apps"
    assert policy["spec"]["ingress"][0]["from"][2] == {"podSelector": {"matchLabels": {"app": "client"}}}


def test_networkpolicy_in_cluster_scope_needs_its_namespaces(helm: Path) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", "networkPolicy.enabled=true",
                      check=False)
    assert result.returncode != 0
    assert "networkPolicy.namespaces: required with rbac.scope=cluster" in result.stderr


# --- cleanup hook --------------------------------------------------------------------------------


def _hooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "pre-delete"]


def test_orphan_cleanup_hook_stops_the_operator_then_strips_finalizers(helm: Path) -> None:
    docs = render(helm)
    hooks = _hooks(docs)
    job = one(hooks, "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "cw-cachewarden-cleanup"
    (container,) = pod["containers"]
    assert container["command"] == ["python3", "-c"]
    assert container["args"] == [(CHART / "files" / "pre-delete.py").read_text()]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CLEANUP_MODE"] == "orphan" and env["WATCH_NAMESPACES"] == ""
    assert env["OPERATOR_DEPLOYMENT"] == one(docs, "Deployment")["metadata"]["name"]
    assert env["FINALIZER"] == "cachewarden.io/finalizer"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert one(hooks, "ClusterRole")["rules"] == [
        {"apiGroups": ["cachewarden.io"], "resources": ["cachepolicies", "cacheincidents"],
         "verbs": ["list", "patch"]}]
    assert one(hooks, "Role", "cw-cachewarden-cleanup-operator")["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["cw-cachewarden"],
         "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    weights = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in hooks}
    assert weights["ServiceAccount"] < weights["Job"] and weights["ClusterRoleBinding"] < weights["Job"]


def test_delete_cleanup_in_namespace_scope_and_none(helm: Path) -> None:
    docs = render(helm, "cleanup.onUninstall=delete", "rbac.scope=namespace", "rbac.watchNamespaces={a,b}")
    hooks = _hooks(docs)
    roles = find(hooks, "Role", "cw-cachewarden-cleanup")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    assert roles[0]["rules"][0]["verbs"] == ["list", "delete", "patch"]
    assert find(hooks, "Role", "cw-cachewarden-cleanup-operator") == []
    (container,) = one(hooks, "Job")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CLEANUP_MODE"] == "delete" and env["WATCH_NAMESPACES"] == "a,b"
    assert _hooks(render(helm, "cleanup.onUninstall=none")) == []


# --- bad values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "needle"), [
    (["rbac.scope=everywhere"], "/rbac/scope"),
    (["replicas=0"], "/replicas"),
    (["ha.peeringLifetime=5"], "/ha/peeringLifetime"),
    (["operator.logLevel=LOUD"], "/operator/logLevel"),
    (["image.digest=sha1:abc"], "/image/digest"),
    (["cleanup.onUninstall=keep"], "/cleanup/onUninstall"),
    (["rbac.watchNamespaces={Not_A_Namespace}"], "/rbac/watchNamespaces/0"),
    (["metrics.serviceMonitor.interval=often"], "/metrics/serviceMonitor/interval"),
    (["resources.limits.memory=lots"], "/resources/limits/memory"),
    (["unknownKey=1"], "additional properties 'unknownKey' not allowed"),
    (["operator.unknown=1"], "/operator"),
    (["rbac.watchNamespaces={a}"], "rbac.watchNamespaces: [a] is only used with rbac.scope=namespace"),
    (["operator.convergeInterval=0.05"], "convergeInterval: 0.05 is not accepted; accepted: 0.1..60"),
    (["metrics.prometheusRule.hitRateWarning=1.5"], "prometheusRule.hitRateWarning: 1.5 is not accepted"),
])
def test_bad_values_are_refused_naming_the_field(helm: Path, values: list[str], needle: str) -> None:
    sets = [arg for value in values for arg in ("--set", value)]
    result = run_helm(helm, "template", RELEASE, str(CHART), *sets, check=False)
    assert result.returncode != 0, f"{values} was accepted"
    assert needle in result.stderr, result.stderr


def test_every_schema_property_is_described() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: dict[str, Any], path: str) -> Iterator[str]:
        if "description" not in node:
            yield path or "(root)"
        for key, child in (node.get("properties") or {}).items():
            yield from walk(child, f"{path}.{key}")

    assert list(walk(schema, "")) == []
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(tree: dict[str, Any], node: dict[str, Any], path: str) -> Iterator[str]:
        for key, value in tree.items():
            child = (node.get("properties") or {}).get(key)
            if child is None:
                yield f"{path}.{key}"
            elif isinstance(value, dict) and "properties" in child:
                yield from leaves(value, child, f"{path}.{key}")

    assert list(leaves(values, schema, "")) == [], "values.yaml keys missing from values.schema.json"
