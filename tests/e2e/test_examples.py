"""Every manifest in examples/ accepted by a real API server: ``kubectl apply --dry-run=server`` of each
file, all its documents, into a fresh namespace of the session's devcluster with the repository's CRDs
installed. Server-side dry run runs everything a real apply runs except persisting: schema validation
of the CRDs (types, enums, bounds, required fields), their CEL rules (one target, Redis URL without a
password, incident parameters per action...), defaulting, and admission (Pod Security warnings).

Documents that name a namespace are moved into the test's namespace (the object, not where it lives,
is under test). Argo CD and Flux objects are skipped here: their CRDs are not part of devcluster and
cannot be fetched offline; tests/unit/test_examples_static.py checks their required fields and that the
paths and sources they name exist.

Beyond acceptance, the examples are run for real with an operator: the quickstart (Redis + a runtime
policy) and the sample app in selector mode from its own manifests, judged by the GitOps health checks
(Argo CD Lua and Flux CEL) as a GitOps tool would see them; every incident example against the
quickstart policy; and docs/gitops.md's preset change by commit on examples/gitops/policy/.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devcluster.cluster import Cluster
from devcluster.testing import KubeTools, restricted_namespace, wait_for
from tests.e2e.support import OperatorProcess
from tests.gitops_health import argo_health, flux_health

__all__ = ["restricted_namespace"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
UNAVAILABLE_GROUPS = ("argoproj.io/", "kustomize.toolkit.fluxcd.io/", "source.toolkit.fluxcd.io/")
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
EXAMPLE_FILES = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def crd_established(kube: KubeTools, name: str) -> bool:
    """The CRD's Established condition is True."""
    crd = kube.kubectl_json("get", "crd", name)
    return any(c["type"] == "Established" and c["status"] == "True"
               for c in (crd.get("status") or {}).get("conditions") or [])


@pytest.fixture(scope="module")
def crds(kube: KubeTools) -> None:
    """The repository's CRDs, applied and established, and known to kubectl's discovery."""
    kube.kubectl("apply", "-f", str(REPO / "crds"))
    for crd in ("cachepolicies.cachewarden.io", "cacheincidents.cachewarden.io"):
        wait_for(partial(crd_established, kube, crd), 60, f"CRD {crd} Established")
    wait_for(lambda: kube.kubectl("get", "cacheincidents", "-A", check=False).returncode == 0, 60,
             "kubectl to know the cachewarden kinds")


def dry_run_documents(path: Path, namespace: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The documents of ``path`` that go to the API server (namespaces rewritten), and the kinds
    skipped because their CRDs are not available."""
    sent, skipped = [], []
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        if str(doc.get("apiVersion", "")).startswith(UNAVAILABLE_GROUPS):
            skipped.append(f"{doc['apiVersion']} {doc['kind']}")
            continue
        if doc.get("kind") not in CLUSTER_SCOPED:
            doc.setdefault("metadata", {})["namespace"] = namespace
        sent.append(doc)
    return sent, skipped


def test_examples_exist() -> None:
    """The glob below found the examples (an empty parametrization would pass silently)."""
    names = {str(p.relative_to(EXAMPLES)) for p in EXAMPLE_FILES}
    assert "quickstart.yaml" in names and "policies/ai-production.yaml" in names
    assert "incidents/apply-preset.yaml" in names and "sample_app/k8s/deployment.yaml" in names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_accepted_by_api_server(path: Path, crds: None, kube: KubeTools,
                                        restricted_namespace: str) -> None:
    """``kubectl apply --dry-run=server`` of every document of the file succeeds; every object comes
    back from the server (defaulted) under the name it was sent with. Every workload in the examples
    (the quickstart's Redis included) passes the restricted Pod Security profile without a warning."""
    documents, skipped = dry_run_documents(path, restricted_namespace)
    if not documents:
        assert skipped, f"{path}: no documents"
        pytest.skip(f"only {', '.join(skipped)}: CRDs not available offline; "
                    "checked by tests/unit/test_examples_static.py")
    manifest = yaml.safe_dump_all(documents, sort_keys=False)
    result = kube.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", input=manifest, check=False)
    assert result.returncode == 0, f"{path.relative_to(REPO)} rejected:\n{result.stderr}"
    returned = yaml.safe_load(result.stdout)
    items = returned["items"] if returned.get("kind") == "List" else [returned]
    assert [(i["kind"], i["metadata"]["name"]) for i in items] == [
        (d["kind"], d["metadata"]["name"]) for d in documents
    ]
    for item in items:
        if item["kind"] == "CachePolicy":
            # Defaults the CRD applies came back: the server really evaluated our schema.
            assert item["spec"]["remediation"]["mode"] in ("Off", "Recommend", "Auto")
            assert "health" in item["spec"]
        if item["kind"] == "CacheIncident":
            assert item["spec"]["severity"] in ("low", "medium", "high", "critical")
    assert "would violate PodSecurity" not in result.stderr, result.stderr


def test_api_server_rejects_a_broken_example(crds: None, kube: KubeTools, restricted_namespace: str) -> None:
    """The dry run is not a rubber stamp: the apply-preset example without its preset is refused with
    the CRD's CEL message."""
    documents, _ = dry_run_documents(EXAMPLES / "incidents" / "apply-preset.yaml", restricted_namespace)
    del documents[0]["spec"]["parameters"]["preset"]
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(documents),
                          check=False)
    assert result.returncode != 0
    assert "spec.parameters.preset is required when spec.action is apply-preset" in result.stderr


def test_pod_security_warning_is_seen(crds: None, kube: KubeTools, restricted_namespace: str) -> None:
    """The no-warning check above can fail: the sample app's Deployment without its security
    context draws the restricted profile's warning from the same dry run."""
    app = EXAMPLES / "sample_app" / "k8s" / "deployment.yaml"
    documents, _ = dry_run_documents(app, restricted_namespace)
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    del deployment["spec"]["template"]["spec"]["securityContext"]
    del deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(documents))
    assert "would violate PodSecurity" in result.stderr, result.stderr


# --------------------------------------------------------------------------------------------------
# the examples run for real


READY_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def operator(dev_cluster: Cluster, crds: None, kube: KubeTools,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """``cachewarden operator`` (all namespaces, Service hosts resolved as on devcluster) for the
    module's live test."""
    proc = OperatorProcess(dev_cluster, tmp_path_factory.mktemp("examples-operator") / "operator.log")
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{proc.liveness_port}/healthz", timeout=2).status_code
                 == 200, 60, "operator liveness endpoint")
        yield proc
    finally:
        proc.stop()


def apply_example(kube: KubeTools, path: Path, namespace: str) -> None:
    """``kubectl apply`` of an example file or directory, as written, into ``namespace``."""
    kube.kubectl("apply", "-n", namespace, "-f", str(path))


def get(kube: KubeTools, kind: str, name: str, namespace: str) -> dict[str, Any]:
    """One object as stored."""
    return dict(kube.kubectl_json("get", kind, name, "-n", namespace))


def ready_with(kube: KubeTools, name: str, namespace: str, pods: int) -> dict[str, Any] | None:
    """The policy once Ready=True for its generation with ``pods`` pods all configured."""
    policy = get(kube, "cachepolicy", name, namespace)
    status = policy.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    counts = status.get("pods") or {}
    if ready and status.get("observedGeneration") == policy["metadata"]["generation"] \
            and counts.get("desired") == pods and counts.get("configured") == pods:
        return policy
    return None


def finished(kube: KubeTools, name: str, namespace: str) -> dict[str, Any] | None:
    """The incident once it reached a terminal phase, else None."""
    incident = get(kube, "cacheincident", name, namespace)
    phase = (incident.get("status") or {}).get("phase")
    return incident if phase in ("Succeeded", "Failed", "Skipped") else None


def test_quickstart_sample_app_and_incidents_run(operator: OperatorProcess, kube: KubeTools,
                                                 namespace: str) -> None:
    """quickstart.yaml gives a Ready policy with 2 configured runtime pods; sample_app/k8s/ gives a
    Ready selector-mode policy over the app's 2 pods, and the app serves a repeated request from its
    cache; gc, clear (dry run) and diagnose incidents from examples/incidents/ succeed on the
    quickstart pods. Argo CD's Lua and Flux's CEL call all of them healthy."""
    try:
        apply_example(kube, EXAMPLES / "quickstart.yaml", namespace)
        apply_example(kube, EXAMPLES / "sample_app" / "k8s", namespace)
        quickstart = wait_for(partial(ready_with, kube, "quickstart", namespace, 2), READY_TIMEOUT,
                              "quickstart Ready with 2 configured pods")
        sample = wait_for(partial(ready_with, kube, "sample-app", namespace, 2), READY_TIMEOUT,
                          "sample-app Ready with both app pods configured")
        assert quickstart is not None and sample is not None

        pods = kube.kubectl_json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=sample-app")
        pod_ip = next(p["status"]["podIP"] for p in pods["items"] if p["status"].get("podIP"))
        body = {"text": "Caches keep answers close. Close answers are fast. Fast answers please."}
        calls = []
        for _ in range(2):
            response = httpx.post(f"http://{pod_ip}:8080/v1/summarize", json=body, timeout=10)
            assert response.status_code == 200, response.text
            calls.append(httpx.get(f"http://{pod_ip}:8080/v1/model-calls", timeout=10).json()["total"])
        assert calls == [1, 1], f"the repeated request reached the model again: {calls}"

        incidents = (("gc.yaml", "quickstart-gc"), ("clear-dry-run.yaml", "quickstart-clear-dry-run"),
                     ("diagnose.yaml", "quickstart-diagnose"))
        for example, name in incidents:
            apply_example(kube, EXAMPLES / "incidents" / example, namespace)
            incident = wait_for(partial(finished, kube, name, namespace), READY_TIMEOUT,
                                f"incident {name} finished")
            assert incident is not None
            assert incident["status"]["phase"] == "Succeeded", incident["status"]
            done = {r["pod"] for r in incident["status"]["results"] if r["result"] == "Succeeded"}
            assert len(done) == 2, incident["status"]["results"]
            assert argo_health("CacheIncident", incident)[0] == "Healthy"
            assert flux_health("CacheIncident", incident) == "Current"

        for policy in (quickstart, sample):
            assert argo_health("CachePolicy", policy)[0] == "Healthy", policy["status"]
            assert flux_health("CachePolicy", policy) == "Current"
    finally:
        # While the operator runs: its finalizers must come off before the namespace goes.
        kube.kubectl("delete", "cacheincidents,cachepolicies", "--all", "-n", namespace, "--timeout", "90s",
                     check=False)


def test_gitops_walkthrough_preset_change_without_rollout(operator: OperatorProcess, kube: KubeTools,
                                                          namespace: str) -> None:
    """docs/gitops.md's walk-through, minus the GitOps tool (which only applies the file): apply
    examples/gitops/policy/cachepolicy.yaml, then the same file with the walk-through's `sed` edit
    (ai-development -> ai-production). The operator pushes the new config to the same pods (same
    UIDs, same ReplicaSet, Deployment generation unchanged), the status shows the new generation,
    preset and hash on every pod, and both health checks say Healthy / current with the new hash."""
    redis = [d for d in yaml.safe_load_all((EXAMPLES / "quickstart.yaml").read_text())
             if d and d["kind"] != "CachePolicy"]
    kube.apply(yaml.safe_dump_all(redis), namespace)
    path = EXAMPLES / "gitops" / "policy" / "cachepolicy.yaml"
    text = path.read_text()
    name = yaml.safe_load(text)["metadata"]["name"]
    try:
        kube.apply(text, namespace)
        before = wait_for(partial(ready_with, kube, name, namespace, 2), READY_TIMEOUT, f"{name} Ready 2/2")
        assert before is not None and before["status"]["preset"] == "ai-development"
        selector = f"cachewarden.io/policy={name}"
        pods_before = {p["metadata"]["uid"] for p in kube.kubectl_json("get", "pods", "-n", namespace, "-l",
                                                                        selector)["items"]}
        deployment = kube.kubectl_json("get", "deployment", f"{name}-cachewarden", "-n", namespace)
        replicasets = {r["metadata"]["name"] for r in kube.kubectl_json("get", "replicasets", "-n", namespace,
                                                                         "-l", selector)["items"]}

        # The walk-through's edit: sed -i 's/preset: ai-development /preset: ai-production  /'
        assert text.count("preset: ai-development ") == 1
        kube.apply(text.replace("preset: ai-development ", "preset: ai-production  "), namespace)

        def changed() -> dict[str, Any] | None:
            policy = ready_with(kube, name, namespace, 2)
            if policy is None or policy["metadata"]["generation"] != before["metadata"]["generation"] + 1:
                return None
            return policy if policy["status"]["preset"] == "ai-production" else None

        after = wait_for(changed, READY_TIMEOUT, f"{name} Ready on ai-production")
        assert after is not None
        new_hash = after["status"]["configHash"]
        assert new_hash != before["status"]["configHash"]
        assert {t["configHash"] for t in after["status"]["targets"]} == {new_hash}

        pods_after = {p["metadata"]["uid"] for p in kube.kubectl_json("get", "pods", "-n", namespace, "-l",
                                                                       selector)["items"]}
        assert pods_after == pods_before, "a preset change must not replace the pods"
        assert kube.kubectl_json("get", "deployment", f"{name}-cachewarden", "-n", namespace)["metadata"][
            "generation"] == deployment["metadata"]["generation"], "the Deployment's template changed"
        assert {r["metadata"]["name"] for r in kube.kubectl_json("get", "replicasets", "-n", namespace, "-l",
                                                                  selector)["items"]} == replicasets

        status, message = argo_health("CachePolicy", after)
        assert status == "Healthy" and new_hash[:12] in message, message
        assert flux_health("CachePolicy", after) == "Current"
    finally:
        kube.kubectl("delete", "cachepolicies", "--all", "-n", namespace, "--timeout", "90s", check=False)


# Every incident example, in an order a person might run them; the targetPods examples name a
# placeholder pod, replaced by a real one exactly as their comments tell the reader to.
INCIDENT_RUN_ORDER = (
    "diagnose", "gc", "clear-dry-run", "clear", "invalidate", "invalidate-namespace",
    "compress-existing-dry-run", "compress-existing", "reset-config", "reconnect-redis",
    "reconnect-redis-one-pod", "apply-preset-dry-run", "apply-preset", "apply-override", "isolate-one-pod",
    "isolate", "restore",
)
PLACEHOLDER_POD = "quickstart-cachewarden-7d9c8b6f4-x2k8p"


def test_every_incident_example_runs(operator: OperatorProcess, kube: KubeTools, namespace: str) -> None:
    """Each file in examples/incidents/ applied (as written, but for the placeholder pod name) against
    the quickstart policy ends Succeeded with one successful step record per targeted pod; the
    apply-preset and apply-override examples put their preset or settings in force as a time-boxed
    override (in the policy's status) and deleting the incident lifts it."""
    assert sorted(INCIDENT_RUN_ORDER) == sorted(p.stem for p in (EXAMPLES / "incidents").glob("*.yaml"))
    try:
        apply_example(kube, EXAMPLES / "quickstart.yaml", namespace)
        wait_for(partial(ready_with, kube, "quickstart", namespace, 2), READY_TIMEOUT, "quickstart Ready 2/2")
        pods = sorted(p["metadata"]["name"] for p in kube.kubectl_json(
            "get", "pods", "-n", namespace, "-l", "cachewarden.io/policy=quickstart")["items"]
            if not p["metadata"].get("deletionTimestamp"))
        assert len(pods) == 2, pods
        for stem in INCIDENT_RUN_ORDER:
            text = (EXAMPLES / "incidents" / f"{stem}.yaml").read_text()
            targeted = [pods[0]] if PLACEHOLDER_POD in text else pods
            document = yaml.safe_load(text.replace(PLACEHOLDER_POD, pods[0]))
            name = document["metadata"]["name"]
            kube.apply(yaml.safe_dump(document), namespace)
            incident = wait_for(partial(finished, kube, name, namespace), READY_TIMEOUT, f"{stem} finished")
            assert incident is not None
            status = incident["status"]
            assert status["phase"] == "Succeeded", (stem, status.get("message"), status.get("results"))
            acted = {r["pod"] for r in status["results"] if r["result"] == "Succeeded"}
            assert acted == set(targeted), (stem, status["results"])
            if stem in ("apply-preset", "apply-override"):
                policy = get(kube, "cachepolicy", "quickstart", namespace)
                override = policy["status"]["override"]
                assert override["incident"] == name, override
                if stem == "apply-preset":
                    assert override["preset"] == document["spec"]["parameters"]["preset"]
                else:
                    assert override["overrides"] == document["spec"]["parameters"]["overrides"], override
                kube.kubectl("delete", "cacheincident", name, "-n", namespace, "--timeout", "60s")
                wait_for(lambda: "override" not in (get(kube, "cachepolicy", "quickstart", namespace)
                                                    .get("status") or {}), READY_TIMEOUT, "override lifted")
    finally:
        kube.kubectl("delete", "cacheincidents,cachepolicies", "--all", "-n", namespace, "--timeout", "90s",
                     check=False)
