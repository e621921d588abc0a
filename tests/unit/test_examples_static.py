"""examples/ as data: complete (a policy per preset, an incident per action), valid beyond what the
API server checks (the engine resolves every policy's config; every incident builds a plan), and
consistent with the code it relies on (the sample app mounts what the operator renders for its
policy; the GitOps objects point at paths and sources that exist).

The API server's own verdict on every manifest is tests/e2e/test_examples.py (server-side dry run).
Argo CD and Flux objects cannot go through it here (their CRDs are not installed on devcluster and
not available offline), so their required fields are checked below instead.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from cache_operator import render
from cache_operator.api import CachePolicySpec
from cache_operator.incidents import plan
from cache_operator.ports import PolicyRef
from cache_runtime.actions import INCIDENT_ACTIONS
from cache_runtime.config import PRESETS

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
GROUP_VERSION = "cachewarden.io/v1alpha1"
# Kinds whose CRDs devcluster does not have: validated here, skipped by the server-side dry run.
GITOPS_KINDS = {
    ("argoproj.io/v1alpha1", "Application"),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
    ("source.toolkit.fluxcd.io/v1", "GitRepository"),
}


@cache
def example_files() -> tuple[Path, ...]:
    """Every YAML file under examples/."""
    return tuple(sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()))


def documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of one file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@cache
def all_documents() -> tuple[tuple[Path, dict[str, Any]], ...]:
    """(file, document) for every document of every example file."""
    return tuple((path, doc) for path in example_files() for doc in documents(path))


def of_kind(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    """The documents of one cachewarden kind."""
    return [(p, d) for p, d in all_documents()
            if d.get("kind") == kind and d.get("apiVersion") == GROUP_VERSION]


def rel(path: Path) -> str:
    """A path relative to the repository, for messages."""
    return str(path.relative_to(REPO))


# --------------------------------------------------------------------------------------------------
# completeness


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_has_a_policy_example(preset: str) -> None:
    """examples/policies/<preset>.yaml: one CachePolicy of that preset, with a comment saying when to
    use it (a new preset without an example fails here)."""
    path = EXAMPLES / "policies" / f"{preset}.yaml"
    assert path.is_file(), f"{rel(path)}: add an example CachePolicy for preset {preset}"
    docs = documents(path)
    assert [d["kind"] for d in docs] == ["CachePolicy"], rel(path)
    assert docs[0]["spec"]["preset"] == preset
    assert re.search(r"^# When: ", path.read_text(), re.MULTILINE), f"{rel(path)}: say when to use {preset}"


def test_no_policy_example_for_an_unknown_preset() -> None:
    """Every file in examples/policies/ is named after a preset that exists."""
    for path in (EXAMPLES / "policies").glob("*.yaml"):
        assert path.stem in PRESETS, f"{rel(path)}: no preset {path.stem!r}; accepted: {', '.join(PRESETS)}"


@pytest.mark.parametrize("action", INCIDENT_ACTIONS)
def test_every_action_has_an_incident_example(action: str) -> None:
    """examples/incidents/<action>.yaml: one CacheIncident running that action for real (no dry run),
    with a comment naming the runbook command it replaces."""
    path = EXAMPLES / "incidents" / f"{action}.yaml"
    assert path.is_file(), f"{rel(path)}: add an example CacheIncident for action {action}"
    docs = documents(path)
    assert [d["kind"] for d in docs] == ["CacheIncident"], rel(path)
    assert docs[0]["spec"]["action"] == action and not docs[0]["spec"].get("dryRun")
    assert "Runbook:" in path.read_text(), f"{rel(path)}: name the runbook command it replaces"


def test_incident_variants_cover_dry_run_target_pods_and_both_invalidations() -> None:
    """Beyond one file per action: dry runs of the disruptive actions that have one on the pod, a
    targetPods subset, and invalidate by namespace as well as by pattern."""
    specs = [d["spec"] for _, d in of_kind("CacheIncident")]
    dry = {s["action"] for s in specs if s.get("dryRun")}
    assert {"clear", "apply-preset", "compress-existing"} <= dry, dry
    assert any(s.get("targetPods") for s in specs)
    invalidations = [s["parameters"] for s in specs if s["action"] == "invalidate"]
    assert any("pattern" in p for p in invalidations) and any("namespace" in p for p in invalidations)


# --------------------------------------------------------------------------------------------------
# validity beyond the API server


def test_every_document_is_a_kubernetes_object() -> None:
    """apiVersion, kind and metadata.name on every document of every file; names unique per kind
    within a directory (they are applied together)."""
    assert example_files(), "no examples found"
    seen: dict[tuple[Path, str, str], Path] = {}
    for path, doc in all_documents():
        for field in ("apiVersion", "kind"):
            assert isinstance(doc.get(field), str) and doc[field], f"{rel(path)}: {field} missing"
        name = (doc.get("metadata") or {}).get("name")
        assert isinstance(name, str) and name, f"{rel(path)}: metadata.name missing in a {doc['kind']}"
        key = (path.parent, doc["kind"], name)
        assert key not in seen, f"{rel(path)}: {doc['kind']} {name} also in {rel(seen[key])}"
        seen[key] = path


@pytest.mark.parametrize("path", sorted({p for p, _ in of_kind("CachePolicy")}), ids=rel)
def test_policy_resolves_to_an_engine_config(path: Path) -> None:
    """The API model accepts the spec and the engine resolves it (overrides known and in range, tiers
    ascending...): what the operator would otherwise report as Stalled/InvalidSpec."""
    for doc in documents(path):
        if doc.get("kind") != "CachePolicy":
            continue
        spec = CachePolicySpec.model_validate(doc["spec"])
        config = render.resolve_policy_config(spec)
        assert re.fullmatch(r"[0-9a-f]{64}", config.config_hash())


@pytest.mark.parametrize("path", sorted({p for p, _ in of_kind("CacheIncident")}), ids=rel)
def test_incident_builds_a_plan(path: Path) -> None:
    """The executor's own parser accepts the spec and plans it over two pods (a targetPods example
    over its named pod), so the example runs as written."""
    for doc in documents(path):
        spec = plan.parse_incident_spec(doc)
        pods = [*(spec.target_pods or []), "other-pod"]
        # apply-override pushes the policy's config rendered with it (the executor renders it).
        document = {"config": {}, "hash": "0" * 64} if spec.action == "apply-override" else None
        built = plan.build_plan(
            {**doc, "metadata": {**doc["metadata"], "uid": "example-uid"}}, pods, config_document=document
        )
        assert built.steps, rel(path)


def test_incidents_target_the_quickstart_policy() -> None:
    """The incident examples run against the policy examples/quickstart.yaml creates."""
    quickstart = {d["metadata"]["name"] for d in documents(EXAMPLES / "quickstart.yaml")
                  if d["kind"] == "CachePolicy"}
    for path, doc in of_kind("CacheIncident"):
        assert doc["spec"]["policyRef"]["name"] in quickstart, rel(path)


# --------------------------------------------------------------------------------------------------
# the sample app in selector mode


def runtime_container_env() -> list[dict[str, Any]]:
    """The env the operator renders for a runtime pod's container."""
    spec = CachePolicySpec.model_validate({"runtime": {}})
    identity = PolicyRef(name="p", namespace="ns", uid="uid-1")
    deployment = render.render_deployment(identity, spec)
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["env"])


def test_sample_app_mounts_what_the_operator_renders_for_its_policy() -> None:
    """The Deployment's pods match the policy's selector, serve on its port, mount the ConfigMap and
    Secret the operator renders for that policy at the paths the env points at, and run the sample
    app from the cachewarden image as the runtime's non-root user."""
    k8s = EXAMPLES / "sample_app" / "k8s"
    docs = [d for p in sorted(k8s.glob("*.yaml")) for d in documents(p)]
    policy = next(d for d in docs if d["kind"] == "CachePolicy")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    name = policy["metadata"]["name"]
    spec = CachePolicySpec.model_validate(policy["spec"])
    assert spec.selector is not None and spec.runtime is None
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in (spec.selector.match_labels or {}).items())
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()

    container = template["spec"]["containers"][0]
    assert container["image"].rsplit(":", 1)[0] == "ghcr.io/cachewarden/cachewarden"
    assert container["command"] == ["python", "-m", "examples.sample_app"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["CACHEWARDEN_PORT"]) == spec.selector.port
    # Listening where the operator (by pod IP) and the Service reach it, as the runtime pods do.
    runtime_env = {e["name"]: e.get("value") for e in runtime_container_env()}
    assert env["CACHEWARDEN_BIND_HOST"] == runtime_env["CACHEWARDEN_BIND_HOST"] == "0.0.0.0"
    assert any(p["containerPort"] == spec.selector.port for p in container["ports"])
    assert env["CACHEWARDEN_CONFIG_PATH"] == render.CONFIG_PATH
    assert env["CACHEWARDEN_ADMIN_TOKEN_FILE"] == f"{render.TOKENS_DIR}/{render.ADMIN_TOKEN_KEY}"
    assert env["CACHEWARDEN_READ_TOKEN_FILE"] == f"{render.TOKENS_DIR}/{render.READ_TOKEN_KEY}"

    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[render.CONFIG_DIR]]["configMap"]["name"] == render.configmap_name(name)
    assert volumes[mounts[render.TOKENS_DIR]]["secret"]["secretName"] == render.token_secret_name(name)
    security = template["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == render.RUNTIME_USER_ID


# --------------------------------------------------------------------------------------------------
# GitOps objects (no CRDs for them on devcluster: checked here)


def gitops_doc(kind: str) -> tuple[Path, dict[str, Any]]:
    """The one example document of a GitOps kind."""
    found = [(p, d) for p, d in all_documents() if d.get("kind") == kind
             and (d.get("apiVersion"), kind) in GITOPS_KINDS]
    assert len(found) == 1, f"expected one {kind} example, found {len(found)}"
    return found[0]


def managed_path_has_a_policy(path_in_repo: str) -> None:
    """The git path a GitOps tool applies exists and holds a CachePolicy that resolves."""
    directory = REPO / path_in_repo.strip("./").rstrip("/")
    assert directory.is_dir(), f"{path_in_repo}: no such directory in the repository"
    kinds = [d["kind"] for p in directory.glob("*.yaml") for d in documents(p)]
    assert "CachePolicy" in kinds, f"{path_in_repo}: no CachePolicy there"
    for p in directory.glob("*.yaml"):
        for d in documents(p):
            assert not (d.get("metadata") or {}).get("namespace"), (
                f"{rel(p)}: leave the namespace to the GitOps tool (destination / targetNamespace)"
            )


def test_argocd_application_manages_the_policy_path() -> None:
    """The Application has the fields Argo CD requires and syncs the policy directory."""
    _, app = gitops_doc("Application")
    spec = app["spec"]
    assert app["metadata"]["namespace"] == "argocd" and spec["project"]
    assert spec["source"]["repoURL"].startswith("https://") and spec["source"]["targetRevision"]
    assert spec["destination"]["server"] and spec["destination"]["namespace"]
    managed_path_has_a_policy(spec["source"]["path"])
    assert spec["syncPolicy"]["automated"]["selfHeal"] is True


def assert_source_ignore_keeps_only(rules: str, path: str, tmp_path: Path) -> None:
    """The GitRepository's ``spec.ignore`` (.gitignore syntax) keeps the managed path's manifests and
    drops the rest of the repository, judged by git itself on a copy of the repository's layout."""
    repo = tmp_path / "layout"
    keep = path.strip("./").rstrip("/")
    wanted = [p.relative_to(REPO).as_posix() for p in (REPO / keep).glob("*.yaml")]
    others = ["README.md", "examples/quickstart.yaml", "examples/gitops/flux/gitrepository.yaml",
              "crds/cachepolicies.cachewarden.io.yaml", "cache_operator/main.py"]
    for name in wanted + others:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x\n")
    (repo / ".gitignore").write_text(rules)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    result = subprocess.run(["git", "-C", str(repo), "check-ignore", "--no-index", *wanted, *others],
                            capture_output=True, text=True, check=False)
    ignored = set(result.stdout.split())
    assert wanted and not ignored & set(wanted), f"spec.ignore drops the managed manifests: {ignored}"
    assert set(others) <= ignored, f"spec.ignore keeps more than {keep}: {set(others) - ignored}"


def test_flux_kustomization_and_source_fit_together(tmp_path: Path) -> None:
    """The Kustomization has the fields kustomize-controller requires, reads the GitRepository of the
    example, applies the policy directory, and that directory is not excluded by the source's ignore
    rules; the target namespace is created by the example's Namespace."""
    _, kustomization = gitops_doc("Kustomization")
    _, source = gitops_doc("GitRepository")
    spec = kustomization["spec"]
    for field in ("interval", "sourceRef", "path", "prune"):
        assert field in spec, f"Flux Kustomization: spec.{field} is required"
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
    assert kustomization["metadata"]["namespace"] == source["metadata"]["namespace"]
    assert source["spec"]["url"].startswith("https://") and source["spec"]["interval"]
    assert source["spec"]["ref"]["branch"]
    managed_path_has_a_policy(spec["path"])
    assert_source_ignore_keeps_only(source["spec"]["ignore"], spec["path"], tmp_path)
    namespaces = {d["metadata"]["name"] for _, d in all_documents() if d["kind"] == "Namespace"}
    assert spec["targetNamespace"] in namespaces
