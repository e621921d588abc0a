"""The kind node image's pure parts and runc-host-compat, without Docker.

The wrapper is run for real (sh + jq) in front of a stand-in runc that records what it was given:
the point is what reaches runc, which no Docker is needed to see.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from devcluster import binaries
from devcluster.realnode import kind, nodeimage

NODE_FILES = nodeimage.NODE_DIR / "files"
WRAPPER = NODE_FILES / "usr/local/sbin/runc-host-compat"
VERSIONS = binaries.read_version_table()


def test_components_carry_the_names_kubeadm_and_containerd_ask_for() -> None:
    refs = {c.binary: c.ref for c in nodeimage.component_images(VERSIONS)}
    k8s = VERSIONS["KUBERNETES_VERSION"]
    assert refs["kube-apiserver"] == f"registry.k8s.io/kube-apiserver:{k8s}"
    assert refs["kube-proxy"] == f"registry.k8s.io/kube-proxy:{k8s}"
    assert refs["coredns"] == f"registry.k8s.io/coredns/coredns:{VERSIONS['COREDNS_VERSION']}"
    assert refs["etcd"] == "registry.k8s.io/etcd:" + VERSIONS["ETCD_VERSION"].removeprefix("v") + "-0"
    # containerd's sandbox image is the pause image the node preloads (one name, two files).
    config = tomllib.loads((NODE_FILES / "etc/containerd/config.toml").read_text())
    sandbox_image = config["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"]
    assert sandbox_image == refs["pause"] == nodeimage.PAUSE_IMAGE


def test_kind_config_pins_etcd_and_the_bridge_subnets() -> None:
    config = yaml.safe_load(kind.kind_config("cachewarden-e2e", etcd_image_tag="3.6.16-0"))
    assert config["kind"] == "Cluster" and config["name"] == "cachewarden-e2e"
    assert config["networking"]["podSubnet"] == kind.POD_SUBNET
    patch = yaml.safe_load(config["kubeadmConfigPatches"][0])
    assert patch["etcd"]["local"]["imageTag"] == "3.6.16-0"
    bridge = json.loads((NODE_FILES / "etc/cni/net.d/10-cachewarden-bridge.conflist").read_text())
    subnet = bridge["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
    assert subnet.startswith(kind.POD_SUBNET.split(".0.0/")[0] + ".")
    stock = yaml.safe_load(kind.kind_config("c", etcd_image_tag=None, stock_image=True))
    assert "kubeadmConfigPatches" not in stock


def test_the_entrypoint_keeps_the_ranges_kind_is_configured_with() -> None:
    entrypoint = (NODE_FILES / "usr/local/bin/entrypoint").read_text()
    assert f"CACHEWARDEN_SERVICE_SUBNET:-{kind.SERVICE_SUBNET}}}" in entrypoint
    assert f"CACHEWARDEN_POD_SUBNET:-{kind.POD_SUBNET}}}" in entrypoint


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "trail-", "x" * 33, "under_score"])
def test_bad_cluster_names_are_refused_naming_the_value(name: str) -> None:
    with pytest.raises(kind.KindError, match="accepted: lower-case letters"):
        kind.kind_config(name, etcd_image_tag="3.6.16-0")


def test_missing_etcd_tag_is_refused() -> None:
    with pytest.raises(kind.KindError, match="etcd_image_tag is empty"):
        kind.kind_config("c", etcd_image_tag="")


def test_node_tag_follows_every_input() -> None:
    parts = {"node-rootfs": "a", "bin/kubelet": "b"}
    tag = nodeimage.node_tag("v1.36.3", parts)
    assert tag.startswith("cachewarden/kind-node:v1.36.3-")
    assert nodeimage.node_tag("v1.36.3", dict(parts)) == tag
    assert nodeimage.node_tag("v1.36.3", {**parts, "bin/kubelet": "c"}) != tag
    assert nodeimage.node_tag("v1.36.3", {**parts, "extra": "x"}) != tag


def test_node_files_digest_sees_content_and_mode(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("one")
    first = nodeimage.node_files_digest(tmp_path)
    (tmp_path / "a").chmod(0o755)
    second = nodeimage.node_files_digest(tmp_path)
    (tmp_path / "a").write_text("two")
    assert len({first, second, nodeimage.node_files_digest(tmp_path)}) == 3


def test_network_policy_manifest_runs_the_preloaded_image() -> None:
    ref = next(c.ref for c in nodeimage.component_images(VERSIONS) if c.binary == "kube-router")
    documents = list(yaml.safe_load_all(nodeimage.network_policy_manifest(ref)))
    daemonset = next(d for d in documents if d["kind"] == "DaemonSet")
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == ref and container["imagePullPolicy"] == "Never"
    assert "--run-firewall=true" in container["args"] and "--run-service-proxy=false" in container["args"]


def test_component_tar_holds_only_the_binary_and_tmp(tmp_path: Path) -> None:
    import io
    import tarfile

    binary = tmp_path / "coredns"
    binary.write_bytes(b"\x7fELF...")
    with tarfile.open(fileobj=io.BytesIO(nodeimage.component_tar(binary, "/usr/local/bin/coredns"))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"usr", "usr/local", "usr/local/bin", "usr/local/bin/coredns", "tmp"}
    assert members["usr/local/bin/coredns"].mode == 0o755 and members["tmp"].mode == 0o1777


# runc-host-compat -----------------------------------------------------------------------------------

needs_jq = pytest.mark.skipif(shutil.which("jq") is None, reason="jq not installed (make system-deps)")


def _fake_runc(tmp_path: Path) -> Path:
    """A runc stand-in that copies the bundle's config.json (or the process file) and its argv aside."""
    fake = tmp_path / "runc"
    fake.write_text(
        "#!/bin/sh\n"
        f"echo \"$@\" > {tmp_path}/argv\n"
        "prev=\"\"; for a in \"$@\"; do\n"
        f"  case $prev in --bundle) cp \"$a/config.json\" {tmp_path}/seen.json ;; "
        f"--process) cp \"$a\" {tmp_path}/seen.json ;; esac; prev=$a; done\n"
    )
    fake.chmod(0o755)
    return fake


def _run_wrapper(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CACHEWARDEN_REAL_RUNC": str(_fake_runc(tmp_path))}
    return subprocess.run([str(WRAPPER), *args], env=env, capture_output=True, text=True, check=False)


CAPS = ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]


@needs_jq
def test_wrapper_drops_sys_resource_and_raises_negative_oom_score_adj(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    spec = {"process": {"oomScoreAdj": -998, "capabilities": {k: list(CAPS) for k in
                                                              ("bounding", "effective", "permitted")}},
            "root": {"path": "rootfs"}}
    (bundle / "config.json").write_text(json.dumps(spec))
    result = _run_wrapper(tmp_path, "--root", "/run/x", "create", "--bundle", str(bundle),
                          "--pid-file", "p", "id1")
    assert result.returncode == 0, result.stderr
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["process"]["oomScoreAdj"] == 0
    for values in seen["process"]["capabilities"].values():
        assert values == ["CAP_CHOWN", "CAP_NET_ADMIN"]
    assert seen["root"] == {"path": "rootfs"}  # nothing else touched
    assert (tmp_path / "argv").read_text().split() == ["--root", "/run/x", "create", "--bundle", str(bundle),
                                                      "--pid-file", "p", "id1"]


@needs_jq
def test_wrapper_leaves_positive_scores_and_patches_exec_process_files(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"oomScoreAdj": 500}}))
    assert _run_wrapper(tmp_path, "create", "--bundle", str(bundle), "id").returncode == 0
    assert json.loads((tmp_path / "seen.json").read_text())["process"]["oomScoreAdj"] == 500
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["sh"], "capabilities": {"bounding": list(CAPS)}}))
    assert _run_wrapper(tmp_path, "exec", "--process", str(process), "--detach", "id").returncode == 0
    assert json.loads((tmp_path / "seen.json").read_text())["capabilities"]["bounding"] == [
        "CAP_CHOWN", "CAP_NET_ADMIN"]


@needs_jq
def test_wrapper_passes_other_commands_through(tmp_path: Path) -> None:
    assert _run_wrapper(tmp_path, "state", "id").returncode == 0
    assert (tmp_path / "argv").read_text().split() == ["state", "id"]
    assert not (tmp_path / "seen.json").exists()
