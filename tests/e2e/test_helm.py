"""helm works against the local cluster: install, upgrade and uninstall a chart, and Helm's
kubeVersion check sees the version stamped into the API server."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from devcluster import binaries
from devcluster.testing import KubeTools, wait_for

CONFIGMAP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
  labels:
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/managed-by: {{ .Release.Service }}
data:
  preset: {{ .Values.preset | quote }}
  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
"""

SECRET = """apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-token
  labels:
    app.kubernetes.io/instance: {{ .Release.Name }}
type: Opaque
stringData:
  token: {{ .Values.token | quote }}
"""


def write_chart(directory: Path, kube_version: str = ">=1.20.0-0") -> Path:
    """A minimal chart: a ConfigMap and a Secret rendered from values."""
    chart = directory / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: tiny\nversion: 0.1.0\nappVersion: '1.0'\n"
        f"kubeVersion: {json.dumps(kube_version)}\n"
    )
    (chart / "values.yaml").write_text("preset: development\ntoken: first-token\n")
    (chart / "templates" / "configmap.yaml").write_text(CONFIGMAP)
    (chart / "templates" / "secret.yaml").write_text(SECRET)
    return chart


def _release_objects(kube: KubeTools, namespace: str, release: str) -> list[str]:
    items = kube.kubectl_json("get", "configmaps,secrets", "-n", namespace,
                              "-l", f"app.kubernetes.io/instance={release}")["items"]
    return sorted(f"{item['kind']}/{item['metadata']['name']}" for item in items)


def test_helm_install_upgrade_and_uninstall(kube: KubeTools, namespace: str, tmp_path: Path) -> None:
    chart = write_chart(tmp_path)
    kube.helm("install", "demo", str(chart), "--namespace", namespace, "--wait", "--timeout", "60s")

    assert _release_objects(kube, namespace, "demo") == ["ConfigMap/demo-settings", "Secret/demo-token"]
    settings = kube.kubectl_json("get", "configmap", "demo-settings", "-n", namespace)["data"]
    assert settings == {"preset": "development", "kubeVersion": binaries.pinned_versions().kubernetes}
    releases = json.loads(kube.helm("list", "--namespace", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"], r["revision"]) for r in releases] == [("demo", "deployed", "1")]

    kube.helm("upgrade", "demo", str(chart), "--namespace", namespace, "--set", "token=second-token",
              "--wait", "--timeout", "60s")
    secret = kube.kubectl_json("get", "secret", "demo-token", "-n", namespace)
    assert base64.b64decode(secret["data"]["token"]) == b"second-token"

    kube.helm("uninstall", "demo", "--namespace", namespace, "--wait", "--timeout", "60s")
    wait_for(lambda: _release_objects(kube, namespace, "demo") == [], 30,
             "helm uninstall to remove the release's ConfigMap and Secret")
    assert json.loads(kube.helm("list", "--namespace", namespace, "-o", "json").stdout) == []


def test_helm_checks_kube_version_against_the_stamped_server_version(
    kube: KubeTools, namespace: str, tmp_path: Path
) -> None:
    chart = write_chart(tmp_path, kube_version="<1.20.0-0")
    result = kube.helm("install", "too-new", str(chart), "--namespace", namespace, check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "Kubernetes version" in result.stderr, result.stderr
    assert binaries.pinned_versions().kubernetes in result.stderr, result.stderr
    assert _release_objects(kube, namespace, "too-new") == []
