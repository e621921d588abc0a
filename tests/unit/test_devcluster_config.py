"""devcluster's inputs from outside: versions.env, the binary directory, the state file, the
environment variables that pick directories and CI behaviour; and the wait_for helper."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster import binaries
from devcluster.cli import main as dev_main
from devcluster.cluster import (
    MARKER_FILE,
    Cluster,
    ClusterError,
    claim_run_dir,
    default_run_dir,
    read_state,
    remove_run_dir,
    run_dir_lock,
)
from devcluster.controlplane import ProcessRecord, process_start_ticks
from devcluster.testing import WaitTimeout, e2e_required, namespace_name, wait_for

VERSIONS = "# pinned\nKUBERNETES_VERSION=v1.36.3\n\nETCD_VERSION=v3.6.16\nHELM_VERSION=v3.22.0\n"


def test_the_checked_in_versions_file_parses() -> None:
    versions = binaries.pinned_versions()
    assert versions.kubernetes.startswith("v1.") and versions.etcd.startswith("v3.")


def test_versions_parse() -> None:
    assert binaries.parse_versions(VERSIONS) == binaries.PinnedVersions("v1.36.3", "v3.6.16", "v3.22.0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (VERSIONS.replace("HELM_VERSION=v3.22.0", ""), "HELM_VERSION is missing"),
        (VERSIONS.replace("v1.36.3", "1.36"), "KUBERNETES_VERSION='1.36' is not a version"),
        (VERSIONS + "export X=1\n", r"versions.env:6: cannot parse 'export X=1'"),
        (VERSIONS.replace("ETCD_VERSION=v3.6.16", 'ETCD_VERSION="v3.6.16"'), "ETCD_VERSION='\"v3.6.16\"'"),
    ],
)
def test_bad_versions_files_are_named(text: str, message: str) -> None:
    with pytest.raises(binaries.BinariesError, match=message):
        binaries.parse_versions(text)


def test_directories_follow_the_environment(tmp_path: Path) -> None:
    assert binaries.bin_dir({"CACHEWARDEN_BIN_DIR": str(tmp_path / "b")}) == tmp_path / "b"
    assert binaries.bin_dir({"CACHEWARDEN_CACHE_DIR": str(tmp_path)}) == tmp_path / "bin"
    assert binaries.bin_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "cachewarden" / "bin"
    assert default_run_dir({"CACHEWARDEN_DEV_DIR": str(tmp_path / "d")}) == (tmp_path / "d").resolve()
    assert default_run_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "cachewarden" / "dev"


def _fake_binary(directory: Path, name: str, output: str, executable: bool = True) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{output}'\n")
    path.chmod(0o755 if executable else 0o644)


def test_check_binaries_names_missing_wrong_and_unexecutable_ones(tmp_path: Path) -> None:
    versions = binaries.parse_versions(VERSIONS)
    _fake_binary(tmp_path, "etcd", "etcd Version: 3.6.16")
    _fake_binary(tmp_path, "kube-apiserver", "Kubernetes v1.35.0")
    _fake_binary(tmp_path, "kubectl", "Client Version: v1.36.3", executable=False)
    _fake_binary(tmp_path, "helm", "v3.22.0")
    problems = {p.component: p.reason for p in binaries.check_binaries(tmp_path, versions)}
    assert problems == {
        "kube-apiserver": "reports 'Kubernetes v1.35.0', expected 'v1.36.3'",
        "kube-controller-manager": "missing",
        "kubectl": "not executable",
    }
    message = binaries.describe_problems(binaries.check_binaries(tmp_path, versions))
    assert "kube-controller-manager: missing" in message and binaries.BUILD_COMMAND in message


def test_a_missing_binary_error_names_component_and_build_command(tmp_path: Path) -> None:
    with pytest.raises(binaries.BinariesError, match="kube-apiserver binary not found") as error:
        binaries.binary_path("kube-apiserver", tmp_path)
    assert "cachewarden dev build" in str(error.value)
    with pytest.raises(binaries.BinariesError, match="unknown component 'kubelet'"):
        binaries.binary_path("kubelet", tmp_path)


def test_ensure_binaries_without_build_reports_every_problem(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(binaries.BinariesError) as error:
        binaries.ensure_binaries(tmp_path, build=False)
    for component in binaries.COMPONENT_NAMES:
        assert f"{component}: missing" in str(error.value)


# --- state file ------------------------------------------------------------------------------


def _state(run_dir: Path, **changes: object) -> dict[str, object]:
    state: dict[str, object] = {
        "version": 1, "cluster_id": "abc", "run_dir": str(run_dir), "node_name": "n",
        "kubeconfig": str(run_dir / "kubeconfig"), "ports": {"apiserver": 6443},
        "processes": [{"name": "etcd", "pid": 1, "start_ticks": 5, "log": "x"}],
        "phase": "running", "started_at": 0.0,
    }
    state.update(changes)
    return state


def test_state_file_round_trip(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps(_state(tmp_path)))
    state = read_state(tmp_path)
    assert state is not None and state.processes[0].pid == 1 and state.ports == {"apiserver": 6443}
    assert read_state(tmp_path / "nothing") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps(_state(Path("/x"), version=7)), "version 7 is not supported"),
        (json.dumps({k: v for k, v in _state(Path("/x")).items() if k != "ports"}), "invalid state file"),
        (json.dumps(_state(Path("/x"), processes=[{"name": "etcd", "pid": "one"}])), "invalid"),
    ],
)
def test_a_bad_state_file_is_named(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "state.json").write_text(content)
    with pytest.raises(ClusterError, match=message) as error:
        read_state(tmp_path)
    assert str(tmp_path / "state.json") in str(error.value)


def test_a_process_record_knows_a_reused_pid_is_not_its_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ticks = process_start_ticks(child.pid)
        assert ticks is not None
        assert ProcessRecord("x", child.pid, ticks, "log").is_running()
        assert not ProcessRecord("x", child.pid, ticks + 1, "log").is_running()
    finally:
        child.kill()
        child.wait()
    assert not ProcessRecord("x", child.pid, ticks, "log").is_running()


def test_only_a_marked_run_dir_is_ever_deleted(tmp_path: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ClusterError, match=re.escape(f"no {MARKER_FILE} marker")):
        remove_run_dir(precious)
    assert (precious / "thesis.tex").exists()
    (precious / MARKER_FILE).touch()
    remove_run_dir(precious)
    assert not precious.exists()


def test_a_directory_with_foreign_files_is_never_adopted(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ClusterError, match=r"holds files devcluster did not create \(notes.txt\)"):
        claim_run_dir(tmp_path)
    assert not (tmp_path / MARKER_FILE).exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_run_dir(empty)
    remove_run_dir(empty)
    assert not empty.exists()


def test_a_directory_created_by_the_lock_alone_can_be_removed(tmp_path: Path) -> None:
    with run_dir_lock(tmp_path / "new"):
        remove_run_dir(tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("name", ["Dev_Node", "-node", "node.", "", "n" * 254])
def test_a_bad_node_name_is_named(name: str, tmp_path: Path) -> None:
    expected = f"node name {re.escape(repr(name))} is not valid; accepted: a DNS"
    with pytest.raises(ClusterError, match=expected):
        Cluster(tmp_path, node_name=name, kubelet=False)


def test_cli_on_a_directory_without_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dev_main(["status", "--dir", str(tmp_path)]) == 3
    assert "not running" in capsys.readouterr().out
    assert dev_main(["kubeconfig", "--dir", str(tmp_path)]) == 1
    assert "start one with: cachewarden dev up" in capsys.readouterr().err
    assert dev_main(["down", "--dir", str(tmp_path)]) == 0
    assert "nothing to stop" in capsys.readouterr().out
    assert dev_main(["up", "--dir", str(tmp_path), "--timeout-scale", "0"]) == 2
    assert "--timeout-scale 0.0 must be > 0" in capsys.readouterr().err


# --- testing helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "required"),
    [({}, False), ({"CI": "true"}, True), ({"CI": "false"}, False),
     ({"CACHEWARDEN_REQUIRE_E2E": "1"}, True), ({"CACHEWARDEN_REQUIRE_E2E": "0"}, False)],
)
def test_e2e_is_required_in_ci(environ: dict[str, str], required: bool) -> None:
    assert e2e_required(environ) is required


def test_wait_for_returns_the_value_once_truthy() -> None:
    values = iter([0, None, [], "done"])
    assert wait_for(lambda: next(values), timeout=5, what="a value", interval=0) == "done"


def test_wait_for_names_what_it_waited_for_and_the_last_observation() -> None:
    observed = iter([{"phase": "Pending"}, {}])

    def running_pod() -> dict[str, str]:
        status = next(observed, {"phase": "ContainerCreating"})
        return status if status.get("phase") == "Running" else {}

    with pytest.raises(WaitTimeout, match=r"waiting for the pod to run; last observed: \{\}"):
        wait_for(running_pod, timeout=0.3, what="the pod to run", interval=0.05)


def test_wait_for_reports_the_last_exception() -> None:
    def missing() -> None:
        raise LookupError("configmap x not found")

    with pytest.raises(WaitTimeout, match="last observed: 'LookupError: configmap x not found'"):
        wait_for(missing, timeout=0.2, what="configmap x", interval=0.05)


def test_namespace_names_are_valid_and_unique() -> None:
    first = namespace_name("test_Helm[install/Upgrade]" * 5)
    second = namespace_name("test_Helm[install/Upgrade]" * 5)
    assert first != second and len(first) <= 63
    assert all(c.isalnum() or c == "-" for c in first) and first == first.lower()
