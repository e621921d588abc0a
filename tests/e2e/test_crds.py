"""The generated CRDs on the real API server: valid manifests accepted and defaulted, invalid ones
rejected by the schema or a CEL rule with a message naming the field, `kubectl explain` and
`kubectl get` columns.

Only the API server is needed (no operator runs here): this tests the CRDs themselves.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from cache_operator import render
from cache_operator.api import CacheIncidentSpec, CachePolicySpec
from devcluster.testing import KubeTools, wait_for

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture(scope="module")
def crds(kube: KubeTools) -> None:
    """Apply the checked-in CRDs and wait until the API server serves them."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    for name in ("cachepolicies.cachewarden.io", "cacheincidents.cachewarden.io"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    # Discovery may lag behind Established; kubectl needs it for the short names.
    wait_for(lambda: kube.kubectl("get", "cpol,cinc", "-A", check=False).returncode == 0, 30,
             "short names cpol/cinc in discovery")


def policy(name: str, spec: str) -> str:
    """A CachePolicy manifest with ``spec`` (YAML, indented by 2)."""
    return (f"apiVersion: cachewarden.io/v1alpha1\nkind: CachePolicy\nmetadata:\n  name: {name}\n"
            f"spec:\n{spec}")


def incident(name: str, spec: str) -> str:
    """A CacheIncident manifest with ``spec`` (YAML, indented by 2)."""
    return (f"apiVersion: cachewarden.io/v1alpha1\nkind: CacheIncident\nmetadata:\n  name: {name}\n"
            f"spec:\n{spec}")


def model_view(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` parsed by the operator's model and dumped back (an empty overrides map left out,
    as the API server leaves it out)."""
    dumped = CachePolicySpec.model_validate(spec).to_api()
    if dumped.get("overrides") == {} and "overrides" not in spec:
        del dumped["overrides"]
    return dumped


def rejected(kube: KubeTools, manifest: str, namespace: str) -> str:
    """Apply a manifest that must be rejected; return kubectl's error output."""
    result = kube.kubectl("apply", "--namespace", namespace, "-f", "-", input=manifest, check=False)
    assert result.returncode != 0, f"accepted but should be rejected:\n{manifest}\n{result.stdout}"
    return result.stderr


def test_minimal_policy_is_accepted_and_defaulted(crds: None, kube: KubeTools, namespace: str) -> None:
    kube.apply(policy("web", "  runtime: {}\n  redis:\n    url: redis://redis:6379/0\n"), namespace)
    spec = kube.kubectl_json("get", "cachepolicy", "web", "--namespace", namespace)["spec"]
    assert spec["preset"] == "production"
    assert spec["runtime"] == {"replicas": 2, "image": "ghcr.io/cachewarden/cachewarden:0.1.0",
                               "imagePullPolicy": "IfNotPresent", "port": 8080}
    assert spec["health"]["probeIntervalSeconds"] == 15
    assert spec["remediation"]["mode"] == "Recommend"
    assert spec["remediation"]["allowedActions"] == ["gc", "reconnect-redis", "diagnose"]
    assert spec["paused"] is False
    assert model_view(spec) == spec  # the model's defaults are the API server's


def test_full_policy_is_accepted(crds: None, kube: KubeTools, namespace: str) -> None:
    kube.apply(policy("full", """\
  preset: ai-production
  overrides:
    ttl: {default_s: 600, qa_s: 3600}
    l1: {max_entries: 5000}
    keys:
      normalize: {whitespace: true}
  redis:
    secretRef: {name: redis-url, key: url}
    passwordSecretRef: {name: redis-auth, key: password}
    username: cache
    tls: {enabled: true, caSecretRef: {name: redis-ca, key: ca.crt}}
  selector:
    matchLabels: {app: summarizer}
    port: 8000
  health:
    probeIntervalSeconds: 30
    thresholds: {hitRateWarning: 0.7, hitRateCritical: 0.5}
  remediation:
    mode: Auto
    allowedActions: [gc, clear, apply-preset]
  paused: true
"""), namespace)
    spec = kube.kubectl_json("get", "cpol", "full", "--namespace", namespace)["spec"]
    assert spec["overrides"]["ttl"] == {"default_s": 600, "qa_s": 3600}
    assert spec["selector"]["adminPath"] == "/internal/cache"
    assert model_view(spec) == spec


@pytest.mark.parametrize(("name", "spec", "expected"), [
    ("both-targets", "  runtime: {}\n  selector: {matchLabels: {app: x}}\n",
     "set exactly one of spec.runtime"),
    ("no-target", "  preset: minimal\n", "set exactly one of spec.runtime"),
    ("url-and-secret",
     "  runtime: {}\n  redis:\n    url: redis://r:6379\n    secretRef: {name: s, key: url}\n",
     "set exactly one of url"),
    ("neither-url-nor-secret", "  runtime: {}\n  redis: {username: u}\n", "set exactly one of url"),
    ("password-in-url", "  runtime: {}\n  redis: {url: 'redis://u:secret@r:6379'}\n",
     "spec.redis.url must not carry a password"),
    ("tls-without-rediss", "  runtime: {}\n  redis: {url: 'redis://r:6379', tls: {enabled: true}}\n",
     "must use rediss://"),
    ("empty-selector", "  selector: {port: 8000}\n", "spec.selector needs matchLabels"),
    ("unknown-override", "  runtime: {}\n  overrides: {ttl: {nonsense_s: 5}}\n",
     'unknown field "spec.overrides.ttl.nonsense_s"'),
    ("unknown-group", "  runtime: {}\n  overrides: {turbo: {on: true}}\n",
     'unknown field "spec.overrides.turbo"'),
    ("out-of-range-override", "  runtime: {}\n  overrides: {ttl: {default_s: 0}}\n",
     "spec.overrides.ttl.default_s"),
    ("url-override", "  runtime: {}\n  overrides: {redis: {url: 'redis://x'}}\n",
     'unknown field "spec.overrides.redis.url"'),
    ("bad-preset", "  runtime: {}\n  preset: turbo\n", "spec.preset"),
    ("too-many-replicas", "  runtime: {replicas: 101}\n", "spec.runtime.replicas"),
    ("probe-too-often", "  runtime: {}\n  health: {probeIntervalSeconds: 1}\n",
     "spec.health.probeIntervalSeconds"),
    ("thresholds-inverted",
     "  runtime: {}\n  health: {thresholds: {hitRateWarning: 0.3, hitRateCritical: 0.5}}\n",
     "hitRateCritical must be at most hitRateWarning"),
    ("bad-mode", "  runtime: {}\n  remediation: {mode: Sometimes}\n", "spec.remediation.mode"),
    ("bad-action", "  runtime: {}\n  remediation: {allowedActions: [format-disk]}\n",
     "spec.remediation.allowedActions"),
])
def test_invalid_policy_is_rejected_naming_the_field(crds: None, kube: KubeTools, namespace: str,
                                                     name: str, spec: str, expected: str) -> None:
    error = rejected(kube, policy(name, spec), namespace)
    assert expected in error, error
    # The operator's model rejects the same spec (for specs written by clients that skip validation).
    with pytest.raises(ValidationError):
        CachePolicySpec.model_validate(yaml.safe_load(spec))


def test_policy_name_must_leave_room_for_child_names(crds: None, kube: KubeTools, namespace: str) -> None:
    error = rejected(kube, policy("p" * 52, "  runtime: {}\n"), namespace)
    assert "at most 51 characters" in error, error
    kube.apply(policy("p" * 51, "  runtime: {}\n"), namespace)


def test_incident_is_accepted_defaulted_and_immutable(crds: None, kube: KubeTools, namespace: str) -> None:
    kube.apply(incident("emergency", """\
  policyRef: {name: web}
  action: apply-preset
  parameters: {preset: conservative, durationSeconds: 600}
  reason: memory above critical
"""), namespace)
    spec = kube.kubectl_json("get", "cinc", "emergency", "--namespace", namespace)["spec"]
    assert spec["severity"] == "medium" and spec["dryRun"] is False
    error = rejected(kube, incident("emergency", """\
  policyRef: {name: web}
  action: apply-preset
  parameters: {preset: performance, durationSeconds: 600}
  reason: memory above critical
"""), namespace)
    assert "spec is immutable" in error, error


@pytest.mark.parametrize(("name", "spec", "expected"), [
    ("preset-missing", "  policyRef: {name: web}\n  action: apply-preset\n",
     "spec.parameters.preset is required when spec.action is apply-preset"),
    ("invalidate-nothing", "  policyRef: {name: web}\n  action: invalidate\n  parameters: {}\n",
     "needs exactly one of spec.parameters.pattern or spec.parameters.namespace"),
    ("invalidate-both", "  policyRef: {name: web}\n  action: invalidate\n"
                        "  parameters: {pattern: 'a*', namespace: docs}\n",
     "needs exactly one of spec.parameters.pattern"),
    ("preset-on-gc", "  policyRef: {name: web}\n  action: gc\n  parameters: {preset: minimal}\n",
     "spec.parameters.preset applies only to spec.action apply-preset"),
    ("bad-action", "  policyRef: {name: web}\n  action: reboot\n", "spec.action"),
    ("bad-severity", "  policyRef: {name: web}\n  action: gc\n  severity: apocalyptic\n", "spec.severity"),
    ("no-policy", "  action: gc\n", "spec.policyRef"),
])
def test_invalid_incident_is_rejected_naming_the_field(crds: None, kube: KubeTools, namespace: str,
                                                       name: str, spec: str, expected: str) -> None:
    error = rejected(kube, incident(name, spec), namespace)
    assert expected in error, error
    with pytest.raises(ValidationError):
        CacheIncidentSpec.model_validate(yaml.safe_load(spec))


def test_kubectl_explain_shows_descriptions(crds: None, kube: KubeTools) -> None:
    text = wait_for(lambda: kube.kubectl("explain", "cachepolicy.spec.redis").stdout, 30,
                    "kubectl explain cachepolicy.spec.redis")
    assert "Where Redis (L2) is; absent = memory-only cache." in text
    assert "secretRef" in text and "Secret key whose value is the Redis URL" in text
    text = kube.kubectl("explain", "cinc.spec.action").stdout
    assert "The runbook action to run" in text


def test_kubectl_get_shows_printer_columns(crds: None, kube: KubeTools, namespace: str) -> None:
    kube.apply(policy("cols", "  runtime: {}\n"), namespace)
    # Status is written the way the operator writes it: through the status subresource.
    status = ('{"status": {"preset": "production", "pods": {"desired": 2, "ready": 2, "configured": 2, '
              '"summary": "2/2"}, "health": {"hitRatePercent": "93.1%", "redis": "Connected", '
              '"status": "Healthy"}, "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", '
              '"message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}')
    kube.kubectl("patch", "cpol", "cols", "--namespace", namespace, "--subresource=status", "--type=merge",
                 "-p", status)
    lines = kube.kubectl("get", "cpol", "cols", "--namespace", namespace).stdout.splitlines()
    assert lines[0].split() == [
        "NAME", "PRESET", "READY", "PODS", "CONFIGURED", "HIT", "RATE", "REDIS", "AGE"]
    assert lines[1].split()[:7] == ["cols", "production", "True", "2/2", "2", "93.1%", "Connected"]
    wide = kube.kubectl("get", "cpol", "cols", "--namespace", namespace, "-o", "wide").stdout
    assert "PAUSED" in wide.splitlines()[0]

    kube.apply(incident("inc", "  policyRef: {name: cols}\n  action: gc\n  severity: high\n"), namespace)
    kube.kubectl("patch", "cinc", "inc", "--namespace", namespace, "--subresource=status", "--type=merge",
                 "-p", '{"status": {"phase": "Succeeded", "cause": "L1TooSmall"}}')
    lines = kube.kubectl("get", "cinc", "inc", "--namespace", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "POLICY", "ACTION", "SEVERITY", "PHASE", "CAUSE", "AGE"]
    assert lines[1].split()[:6] == ["inc", "cols", "gc", "high", "Succeeded", "L1TooSmall"]


def test_category_lists_both_kinds(crds: None, kube: KubeTools, namespace: str) -> None:
    kube.apply(policy("cat", "  runtime: {}\n"), namespace)
    text = kube.kubectl("get", "cachewarden", "--namespace", namespace).stdout
    assert "cachepolicy.cachewarden.io/cat" in text


def test_rendered_children_run_on_the_cluster(crds: None, kube: KubeTools, dev_cluster: Any,
                                              namespace: str) -> None:
    """The renderers' output, applied as the operator applies it, runs: pods Ready with the
    ConfigMap's config hash, tokens enforced; deleting the policy garbage-collects the children."""
    if not dev_cluster.with_kubelet:
        pytest.skip("needs the devcluster process kubelet (CACHEWARDEN_E2E_KUBELET=0 left it out)")
    kube.apply(policy("rendered", "  runtime: {replicas: 2}\n  preset: ai-production\n"), namespace)
    body = kube.kubectl_json("get", "cpol", "rendered", "--namespace", namespace)
    identity = SimpleNamespace(name="rendered", namespace=namespace, uid=body["metadata"]["uid"])
    spec = CachePolicySpec.model_validate(body["spec"])
    config = render.resolve_policy_config(spec)
    tokens = render.new_tokens()
    children = render.render_children(identity, spec, config, tokens)
    kube.kubectl("apply", "--server-side", "--field-manager=cachewarden-test", "-f", "-",
                 input="\n---\n".join(json.dumps(child) for child in children))

    def ready_pods() -> list[dict[str, Any]] | None:
        pods = kube.kubectl_json("get", "pods", "--namespace", namespace, "-l",
                                 render.pod_selector_string("rendered"))["items"]
        ready = [pod for pod in pods if any(cond["type"] == "Ready" and cond["status"] == "True"
                                            for cond in pod["status"].get("conditions", []))]
        return ready if len(ready) == 2 else None

    pods = wait_for(ready_pods, 120, "2 runtime pods Ready")
    assert pods is not None
    for pod in pods:
        assert pod["metadata"]["labels"]["cachewarden.io/policy"] == "rendered"
        base = f"http://{pod['status']['podIP']}:8080"
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as reply:
            assert json.load(reply)["config_hash"] == config.config_hash()
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{base}/internal/cache/config/current", timeout=5)
        assert denied.value.code == 401
        request = urllib.request.Request(f"{base}/internal/cache/config/current",
                                         headers={"Authorization": f"Bearer {tokens['read-token']}"})
        with urllib.request.urlopen(request, timeout=5) as reply:
            current = json.load(reply)
        assert current["hash"] == config.config_hash()
        assert current["config"]["preset"] == "ai-production"
        assert current["provenance"]["in_force"]["origin"] == "file"  # read from the mounted ConfigMap

    kube.kubectl("delete", "cpol", "rendered", "--namespace", namespace)
    wait_for(lambda: not kube.kubectl_json("get", "deployments,configmaps,secrets,services", "--namespace",
                                           namespace, "-l", "cachewarden.io/policy=rendered")["items"],
             120, "children garbage-collected with the policy")


def test_unknown_override_from_a_lenient_client_is_pruned_with_a_warning(crds: None, kube: KubeTools,
                                                                         namespace: str) -> None:
    """kubectl validates strictly by default (rejected above). A client that asks for warnings only
    gets one naming the field, and the API server drops the key: it never reaches the pods."""
    manifest = policy("lenient", "  runtime: {}\n  overrides: {ttl: {nonsense_s: 5, qa_s: 60}}\n")
    result = kube.kubectl("apply", "--validate=warn", "--namespace", namespace, "-f", "-", input=manifest)
    assert 'unknown field "spec.overrides.ttl.nonsense_s"' in result.stderr, result.stderr
    spec = kube.kubectl_json("get", "cpol", "lenient", "--namespace", namespace)["spec"]
    assert spec["overrides"] == {"ttl": {"qa_s": 60}}
