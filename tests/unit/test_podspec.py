"""The process kubelet's pure pod-spec logic (devcluster.podspec, devcluster.images) and its small
file/probe helpers, exercised as data in, data out, plus real files, sockets and processes."""

from __future__ import annotations

import base64
import http.server
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster import images, podspec
from devcluster.kubelet import prepare_root, run_probe, write_volume
from devcluster.podips import PodIpAllocator
from devcluster.podspec import PodSpecError, StaticLookup, TokenNeed

PYTHON = "/opt/venv/bin/python"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def make_pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web-1",
            "namespace": "team",
            "uid": "u-1",
            "labels": {"app": "web"},
            "annotations": {"note": 'say "hi"'},
        },
        "spec": {"nodeName": "node-a", "serviceAccountName": "reader", "containers": [], **spec},
        "status": {"podIP": "127.0.0.9", "hostIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.9"}]},
    }


LOOKUP = StaticLookup(
    configmaps={
        ("team", "settings"): {
            "metadata": {"namespace": "team", "name": "settings"},
            "data": {"PORT": "8080", "MODE": "fast", "bad key": "x"},
            "binaryData": {"blob": b64("\x00\x01")},
        },
    },
    secrets={
        ("team", "creds"): {
            "metadata": {"namespace": "team", "name": "creds"},
            "data": {"password": b64("s3cret"), "token": b64("t0k")},
        },
        ("team", "broken"): {"metadata": {"namespace": "team", "name": "broken"}, "data": {"x": "***"}},
    },
)


# --- $(VAR) expansion -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "alpha"),
        ("x-$(A)-$(B)-y", "x-alpha-beta-y"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("a$$b", "a$b"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("cost: 5$", "cost: 5$"),
        ("$()", "$()"),
        ("$(A)$$(B)$(B)", "alpha$(B)beta"),
        ("", ""),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert podspec.expand(text, {"A": "alpha", "B": "beta"}) == expected


# --- environment ----------------------------------------------------------------------------------


def test_env_order_expansion_and_precedence() -> None:
    container = {
        "name": "app",
        "envFrom": [
            {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
            {"secretRef": {"name": "creds"}},
        ],
        "env": [
            {"name": "URL", "value": "http://$(HOST):$(CFG_PORT)/$(LATER)"},
            {"name": "HOST", "value": "h"},
            {"name": "password", "value": "from-env-wins"},
            {"name": "SELF", "value": "$(HOST)/$(KUBERNETES_SERVICE_HOST)"},
            {"name": "LATER", "value": "late"},
            {"name": "EMPTY"},
        ],
    }
    result = podspec.resolve_env(
        make_pod(), container, LOOKUP, service_env={"KUBERNETES_SERVICE_HOST": "127.0.0.1"}
    )
    env = result.values
    # HOST and LATER are not defined yet when URL is expanded: they stay as written.
    assert env["URL"] == "http://$(HOST):8080/$(LATER)"
    assert env["SELF"] == "h/127.0.0.1"
    assert env["CFG_MODE"] == "fast"
    assert env["password"] == "from-env-wins"
    assert env["token"] == "t0k"
    assert env["EMPTY"] == ""
    assert "CFG_bad key" in env  # relaxed names: printable ASCII without '='
    # envFrom first, in source order; env entries after (a redefinition keeps its first position).
    assert list(env)[:6] == ["CFG_PORT", "CFG_MODE", "CFG_bad key", "CFG_blob", "password", "token"]


def test_env_from_skips_invalid_names() -> None:
    lookup = StaticLookup(configmaps={("team", "odd"): {"data": {"A=B": "1", "OK": "2"}}})
    result = podspec.resolve_env(
        make_pod(), {"name": "c", "envFrom": [{"configMapRef": {"name": "odd"}}]}, lookup
    )
    assert result.values == {"OK": "2"}
    assert result.skipped_names == ["A=B"]


def test_value_from_field_refs() -> None:
    fields = {
        "IP": "status.podIP",
        "NAME": "metadata.name",
        "NS": "metadata.namespace",
        "NODE": "spec.nodeName",
        "SA": "spec.serviceAccountName",
        "HOST": "status.hostIP",
        "APP": "metadata.labels['app']",
        "UID": "metadata.uid",
        "IPS": "status.podIPs",
        "NOTE": "metadata.annotations['note']",
    }
    container = {
        "name": "c",
        "env": [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in fields.items()],
    }
    env = podspec.resolve_env(make_pod(), container, LOOKUP).values
    assert env == {
        "IP": "127.0.0.9",
        "NAME": "web-1",
        "NS": "team",
        "NODE": "node-a",
        "SA": "reader",
        "HOST": "127.0.0.1",
        "APP": "web",
        "UID": "u-1",
        "IPS": "127.0.0.9",
        "NOTE": 'say "hi"',
    }


def test_unsupported_field_path_is_named() -> None:
    container = {
        "name": "c",
        "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}],
    }
    with pytest.raises(PodSpecError) as caught:
        podspec.resolve_env(make_pod(), container, LOOKUP)
    assert "env 'X'" in caught.value.message
    assert "'spec.hostname' is not supported" in caught.value.message
    assert "status.podIP" in caught.value.message


def test_key_refs_resolve_and_optional_ones_may_be_missing() -> None:
    container = {
        "name": "c",
        "env": [
            {"name": "PORT", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "PORT"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {
                "name": "NO_CM",
                "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": True}},
            },
            {
                "name": "NO_KEY",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "nope", "optional": True}},
            },
            {
                "name": "NO_SECRET",
                "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k", "optional": True}},
            },
        ],
    }
    assert podspec.resolve_env(make_pod(), container, LOOKUP).values == {"PORT": "8080", "PASS": "s3cret"}


def test_missing_required_key_names_variable_key_object_and_its_keys() -> None:
    container = {
        "name": "app",
        "env": [
            {"name": "DB_PORT", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "DB_PORT"}}}
        ],
    }
    with pytest.raises(PodSpecError) as caught:
        podspec.resolve_env(make_pod(), container, LOOKUP)
    error = caught.value
    assert error.reason == "CreateContainerConfigError"
    assert error.message == (
        "container 'app': env 'DB_PORT': couldn't find key DB_PORT in ConfigMap team/settings "
        "(its keys: MODE, PORT, bad key, blob)"
    )


@pytest.mark.parametrize(
    ("env_entry", "expected"),
    [
        (
            {"name": "P", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "password"}}},
            "container 'c': env 'P': Secret team/gone not found "
            "(mark the reference optional: true to start without it)",
        ),
        (
            {"name": "P", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}},
            "container 'c': env 'P': ConfigMap team/gone not found",
        ),
        (
            {"name": "P", "valueFrom": {"secretKeyRef": {"name": "broken", "key": "x"}}},
            "data['x'] of Secret team/broken is not valid base64",
        ),
        (
            {"name": "P", "valueFrom": {"fileKeyRef": {"path": "x"}}},
            "valueFrom ['fileKeyRef'] is not supported",
        ),
    ],
)
def test_bad_references_are_clear(env_entry: dict[str, Any], expected: str) -> None:
    with pytest.raises(PodSpecError) as caught:
        podspec.resolve_env(make_pod(), {"name": "c", "env": [env_entry]}, LOOKUP)
    assert expected in caught.value.message


def test_missing_required_env_from_source() -> None:
    container = {"name": "c", "envFrom": [{"secretRef": {"name": "absent"}}]}
    with pytest.raises(PodSpecError, match=r"envFrom\[0\]: Secret team/absent not found"):
        podspec.resolve_env(make_pod(), container, LOOKUP)
    optional = {"name": "c", "envFrom": [{"secretRef": {"name": "absent", "optional": True}}]}
    assert podspec.resolve_env(make_pod(), optional, LOOKUP).values == {}


def test_resource_field_refs() -> None:
    pod = make_pod(
        containers=[
            {
                "name": "c",
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}},
            }
        ]
    )
    container = {
        "name": "c",
        "env": [
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {
                "name": "MEM_MI",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {
                "name": "REQ_M",
                "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}},
            },
            {"name": "REQ_MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
            {"name": "EPH", "valueFrom": {"resourceFieldRef": {"resource": "limits.ephemeral-storage"}}},
        ],
    }
    env = podspec.resolve_env(pod, container, LOOKUP, node_allocatable={"ephemeral-storage": "1Gi"}).values
    # A request without a value defaults to the limit (as the API server's defaulting does).
    assert env == {"CPU": "1", "MEM_MI": "64", "REQ_M": "250", "REQ_MEM": str(64 * 2**20), "EPH": str(2**30)}


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("1.5", "1.5"), ("100m", "0.1"), ("2Ki", "2048"), ("1e3", "1000"), ("3G", "3000000000")],
)
def test_parse_quantity(quantity: str, value: str) -> None:
    assert podspec.parse_quantity(quantity) == podspec.Decimal(value)


def test_parse_quantity_rejects_garbage() -> None:
    with pytest.raises(PodSpecError, match=r"resource quantity '12 apples' is not a valid quantity"):
        podspec.parse_quantity("12 apples")


# --- images and command lines ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("ghcr.io/cachewarden/cachewarden:0.1.0", "cachewarden"),
        ("localhost:5000/team/cachewarden@sha256:abc", "cachewarden"),
        ("cachewarden", "cachewarden"),
        ("redis:7.2-alpine", "redis"),
        ("docker.io/library/python:3.12-slim", "python"),
        ("Busybox:1.36", "busybox"),
    ],
)
def test_image_name(image: str, name: str) -> None:
    assert images.image_name(image) == name


@pytest.mark.parametrize("image", ["nginx:1.25", "redis/redis-stack:latest", "", "python-base:3"])
def test_unknown_image_names_itself_and_the_accepted_ones(image: str) -> None:
    with pytest.raises(images.ImageNotMappedError) as caught:
        images.resolve_image(image, python_executable=PYTHON)
    message = str(caught.value)
    assert repr(image) in message
    assert (
        "accepted images: <registry>/cachewarden:<tag>, redis:<tag>, python:<tag>, busybox:<tag>" in message
    )
    assert caught.value.reason == "ImageNotMapped"


def command_for(container: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    spec = images.resolve_image(container["image"], python_executable=PYTHON)
    return podspec.build_command(container, spec, env or {}, pod_ip="127.0.0.5", root="/run/pod/root")


def test_python_image_runs_the_kubelets_interpreter_with_expanded_args() -> None:
    container = {
        "name": "web",
        "image": "python:3.12",
        "command": ["python", "-m", "http.server", "$(PORT)"],
        "args": ["--bind", "$(POD_IP)"],
    }
    argv = command_for(container, {"PORT": "8080", "POD_IP": "127.0.0.5"})
    assert argv == [PYTHON, "-m", "http.server", "8080", "--bind", "127.0.0.5"]
    assert command_for({"name": "c", "image": "python"}) == [PYTHON]
    assert command_for({"name": "c", "image": "python", "command": ["/usr/local/bin/python3", "-V"]}) == [
        PYTHON,
        "-V",
    ]


def test_cachewarden_image_runs_the_console_script_from_the_venv() -> None:
    argv = command_for(
        {"name": "rt", "image": "ghcr.io/cachewarden/cachewarden:dev", "args": ["runtime", "--port", "9"]}
    )
    assert argv == ["/opt/venv/bin/cachewarden", "runtime", "--port", "9"]
    spec = images.resolve_image("ghcr.io/cachewarden/cachewarden:dev", python_executable=PYTHON)
    assert spec.env["PYTHONUNBUFFERED"] == "1"


def test_redis_arguments_are_completed_for_the_pod_address() -> None:
    container = {
        "name": "redis",
        "image": "redis:7",
        "ports": [{"containerPort": 6380}],
        "args": ["--maxmemory", "10mb"],
    }
    assert command_for(container) == [
        images.REDIS_SERVER,
        "--maxmemory",
        "10mb",
        "--port",
        "6380",
        "--bind",
        "127.0.0.5",
        "--daemonize",
        "no",
    ]
    with_port = {
        "name": "redis",
        "image": "redis",
        "command": ["redis-server", "--port", "7000", "--bind", "0.0.0.0"],
    }
    assert command_for(with_port) == [
        images.REDIS_SERVER,
        "--port",
        "7000",
        "--bind",
        "0.0.0.0",
        "--bind",
        "127.0.0.5",
        "--daemonize",
        "no",
    ]
    config_file = {"name": "redis", "image": "redis", "args": ["/etc/redis/redis.conf"]}
    assert command_for(config_file)[:2] == [images.REDIS_SERVER, "/run/pod/root/etc/redis/redis.conf"]
    assert command_for({"name": "redis", "image": "redis"})[1:3] == ["--port", "6379"]


def test_redis_cli_is_pointed_at_the_pod() -> None:
    spec = images.resolve_image("redis:7")
    container = {"name": "redis", "ports": [{"containerPort": 6380}]}
    argv = podspec.local_argv(["redis-cli", "ping"], container, spec, pod_ip="127.0.0.5", root="/r")
    assert argv == [images.REDIS_CLI, "-h", "127.0.0.5", "-p", "6380", "ping"]
    explicit = podspec.local_argv(
        ["redis-cli", "-h", "other", "-p", "1", "ping"], container, spec, pod_ip="127.0.0.5", root="/r"
    )
    assert explicit == [images.REDIS_CLI, "-h", "other", "-p", "1", "ping"]


def test_command_replaces_default_args_and_unknown_programs_are_named() -> None:
    spec = images.resolve_image("redis")
    assert images.container_argv(spec, ["sh", "-c", "true"], None) == ["sh", "-c", "true"]
    assert images.container_argv(spec, None, ["redis-server", "--save", ""]) == ["redis-server", "--save", ""]
    with pytest.raises(PodSpecError) as caught:
        command_for({"name": "job", "image": "python:3", "command": ["pip", "install", "x"]})
    assert caught.value.reason == "RunContainerError"
    assert caught.value.message == (
        f"container 'job': image 'python:3' has no program 'pip' under the devcluster kubelet; "
        f"it provides: python, python3, python{sys.version_info.major}.{sys.version_info.minor}, sh"
    )


def test_busybox_offers_only_its_listed_programs() -> None:
    spec = images.resolve_image(
        "busybox:1.36", which=lambda name: f"/usr/bin/{name}" if name != "grep" else None
    )
    assert spec.program_path("sh") == images.SHELL
    assert spec.program_path("/bin/sleep") == "/usr/bin/sleep"
    with pytest.raises(images.ProgramNotFoundError, match="has no program 'grep'"):
        spec.program_path("grep")


# --- volumes --------------------------------------------------------------------------------------


def no_token(need: TokenNeed) -> str:
    raise AssertionError(f"no token expected, asked for {need}")


def test_configmap_volume_all_keys_and_items() -> None:
    all_keys = podspec.plan_volume(
        make_pod(), {"name": "cfg", "configMap": {"name": "settings", "defaultMode": 0o400}}, LOOKUP, no_token
    )
    assert all_keys.kind == "files"
    assert {f.path: (f.data, f.mode) for f in all_keys.files} == {
        "MODE": (b"fast", 0o400),
        "PORT": (b"8080", 0o400),
        "bad key": (b"x", 0o400),
        "blob": (b"\x00\x01", 0o400),
    }
    assert all_keys.sources == (("ConfigMap", "settings"),)
    items = podspec.plan_volume(
        make_pod(),
        {
            "name": "cfg",
            "configMap": {
                "name": "settings",
                "items": [
                    {"key": "PORT", "path": "conf/port.txt", "mode": 0o600},
                    {"key": "MODE", "path": "m"},
                ],
            },
        },
        LOOKUP,
        no_token,
    )
    assert [(f.path, f.data, f.mode) for f in items.files] == [
        ("conf/port.txt", b"8080", 0o600),
        ("m", b"fast", 0o644),
    ]


def test_secret_volume_is_decoded() -> None:
    content = podspec.plan_volume(
        make_pod(),
        {"name": "s", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "pw"}]}},
        LOOKUP,
        no_token,
    )
    assert [(f.path, f.data) for f in content.files] == [("pw", b"s3cret")]
    assert content.sources == (("Secret", "creds"),)


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ({"name": "v", "configMap": {"name": "absent"}}, "volume 'v': ConfigMap team/absent not found"),
        (
            {"name": "v", "secret": {"secretName": "creds", "items": [{"key": "nope", "path": "n"}]}},
            "volume 'v': Secret team/creds has no key 'nope' (its keys: password, token)",
        ),
        (
            {"name": "v", "hostPath": {"path": "/etc"}},
            "volume 'v': volume type 'hostPath' is not supported by the devcluster kubelet; "
            "supported: configMap, secret, emptyDir, projected, downwardAPI",
        ),
        (
            {"name": "v", "persistentVolumeClaim": {"claimName": "data"}},
            "volume type 'persistentVolumeClaim'",
        ),
        (
            {"name": "v", "configMap": {"name": "settings", "items": [{"key": "PORT", "path": "../escape"}]}},
            "file path '../escape' must be relative without '..' elements",
        ),
        (
            {"name": "v", "projected": {"sources": [{"clusterTrustBundle": {"name": "x"}}]}},
            "projected source ['clusterTrustBundle'] is not supported",
        ),
    ],
)
def test_volume_errors_are_clear(volume: dict[str, Any], message: str) -> None:
    with pytest.raises(PodSpecError) as caught:
        podspec.plan_volume(make_pod(), volume, LOOKUP, no_token)
    assert message in caught.value.message
    assert caught.value.reason == "ContainerCreating"


def test_optional_sources_may_be_missing() -> None:
    volume = {"name": "v", "configMap": {"name": "absent", "optional": True}}
    assert podspec.plan_volume(make_pod(), volume, LOOKUP, no_token).files == ()
    volume = {
        "name": "v",
        "secret": {"secretName": "creds", "optional": True, "items": [{"key": "nope", "path": "n"}]},
    }
    assert podspec.plan_volume(make_pod(), volume, LOOKUP, no_token).files == ()


def test_projected_service_account_volume() -> None:
    lookup = StaticLookup(configmaps={("team", "kube-root-ca.crt"): {"data": {"ca.crt": "PEM"}}})
    asked: list[TokenNeed] = []

    def token_for(need: TokenNeed) -> str:
        asked.append(need)
        return "jwt-token"

    volume = {
        "name": "kube-api-access-x",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                    }
                },
            ],
        },
    }
    content = podspec.plan_volume(make_pod(), volume, lookup, token_for)
    assert {f.path: f.data for f in content.files} == {
        "token": b"jwt-token",
        "ca.crt": b"PEM",
        "namespace": b"team",
    }
    assert asked == [TokenNeed(audience="", expiration_seconds=3607)]
    assert content.sources == (("ConfigMap", "kube-root-ca.crt"),)


def test_downward_api_volume_and_empty_dir() -> None:
    volume = {
        "name": "info",
        "downwardAPI": {
            "items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
            ]
        },
    }
    files = {f.path: f.data for f in podspec.plan_volume(make_pod(), volume, LOOKUP, no_token).files}
    assert files == {"labels": b'app="web"', "annotations": b'note="say \\"hi\\""'}
    assert (
        podspec.plan_volume(make_pod(), {"name": "scratch", "emptyDir": {}}, LOOKUP, no_token).kind
        == "directory"
    )


def test_mount_plan_and_environment() -> None:
    container = {
        "name": "c",
        "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/app/"},
            {"name": "cfg", "mountPath": "/etc/other/port", "subPath": "PORT"},
            {"name": "per-pod", "mountPath": "/data", "subPathExpr": "$(POD)"},
            {
                "name": "kube-api-access-1",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            },
        ],
    }
    links = podspec.plan_mounts(container, "/p/rootfs/c", lambda name: f"/p/volumes/{name}", {"POD": "web-1"})
    assert [(link.link, link.target) for link in links] == [
        ("/p/rootfs/c/etc/app", "/p/volumes/cfg"),
        ("/p/rootfs/c/etc/other/port", "/p/volumes/cfg/PORT"),
        ("/p/rootfs/c/data", "/p/volumes/per-pod/web-1"),
        ("/p/rootfs/c/var/run/secrets/kubernetes.io/serviceaccount", "/p/volumes/kube-api-access-1"),
    ]
    assert links[3].read_only
    assert podspec.mount_env(links) == {
        "DEVCLUSTER_MOUNT_CFG": "/p/rootfs/c/etc/app",
        "DEVCLUSTER_MOUNT_PER_POD": "/p/rootfs/c/data",
        "DEVCLUSTER_MOUNT_KUBE_API_ACCESS_1": "/p/rootfs/c/var/run/secrets/kubernetes.io/serviceaccount",
    }
    with pytest.raises(PodSpecError, match="mountPath 'relative/path' must be absolute"):
        podspec.plan_mounts(
            {"name": "c", "volumeMounts": [{"name": "v", "mountPath": "relative/path"}]}, "/r", str
        )


def test_service_account_volume_detection() -> None:
    pod = make_pod(
        volumes=[
            {
                "name": "kube-api-access-abc",
                "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
            },
            {"name": "cfg", "configMap": {"name": "settings"}},
        ]
    )
    mounted = {
        "name": "c",
        "volumeMounts": [{"name": "kube-api-access-abc", "mountPath": podspec.SERVICE_ACCOUNT_MOUNT_PATH}],
    }
    assert podspec.service_account_volume(pod, mounted) == "kube-api-access-abc"
    assert podspec.service_account_volume(pod, {"name": "c"}) is None
    wrong_volume = {
        "name": "c",
        "volumeMounts": [{"name": "cfg", "mountPath": podspec.SERVICE_ACCOUNT_MOUNT_PATH}],
    }
    assert podspec.service_account_volume(pod, wrong_volume) is None


# --- probes ---------------------------------------------------------------------------------------


def test_probe_plans() -> None:
    container = {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}
    http_plan = podspec.plan_probe(
        {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2}, container, "127.0.0.5"
    )
    assert http_plan is not None
    assert (http_plan.kind, http_plan.host, http_plan.port, http_plan.path, http_plan.period) == (
        "http",
        "127.0.0.5",
        8080,
        "/readyz",
        2.0,
    )
    assert (http_plan.timeout, http_plan.failure_threshold, http_plan.success_threshold) == (1.0, 3, 1)
    tcp_plan = podspec.plan_probe({"tcpSocket": {"port": 6379}}, container, "127.0.0.5")
    assert tcp_plan is not None and (tcp_plan.kind, tcp_plan.port) == ("tcp", 6379)
    exec_plan = podspec.plan_probe({"exec": {"command": ["true"]}}, container, "127.0.0.5")
    assert exec_plan is not None and exec_plan.command == ("true",)
    assert podspec.plan_probe(None, container, "127.0.0.5") is None


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        (
            {"httpGet": {"port": "metrics"}},
            "named port 'metrics' is not declared by the container (declared: http)",
        ),
        ({"grpc": {"port": 9000}}, "handler ['grpc'] is not supported; supported: httpGet, tcpSocket, exec"),
        ({"tcpSocket": {"port": 70000}}, "port 70000 is outside 1-65535"),
        ({"exec": {"command": []}}, "exec.command is empty"),
    ],
)
def test_bad_probes_are_named(probe: dict[str, Any], message: str) -> None:
    container = {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}
    with pytest.raises(PodSpecError) as caught:
        podspec.plan_probe(probe, container, "127.0.0.5", "liveness")
    assert message in caught.value.message
    assert "container 'c': livenessProbe" in caught.value.message


@pytest.fixture
def http_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 200 if self.path == "/ok" else 503
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_run_probe_against_real_endpoints(http_server: int, tmp_path: Path) -> None:
    def plan(**fields: Any) -> podspec.ProbePlan:
        return podspec.ProbePlan(
            initial_delay=0, period=1, timeout=2, success_threshold=1, failure_threshold=1, **fields
        )

    assert run_probe(plan(kind="http", host="127.0.0.1", port=http_server, path="/ok"), {}, "") == (True, "")
    ok, message = run_probe(plan(kind="http", host="127.0.0.1", port=http_server, path="/down"), {}, "")
    assert not ok and message == "HTTP probe failed with statuscode: 503"
    assert run_probe(plan(kind="tcp", host="127.0.0.1", port=http_server), {}, "")[0]
    assert run_probe(
        plan(kind="exec", command=("/bin/sh", "-c", 'test "$X" = yes')), {"X": "yes"}, str(tmp_path)
    )[0]
    ok, message = run_probe(
        plan(kind="exec", command=("/bin/sh", "-c", "echo broken; exit 4")), {}, str(tmp_path)
    )
    assert not ok and message == "command exited 4: broken"


# --- status ---------------------------------------------------------------------------------------


def running(name: str, ready: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "ready": ready,
        "restartCount": 0,
        "state": {"running": {"startedAt": "t"}},
        "lastState": {},
    }


def terminated(name: str, code: int) -> dict[str, Any]:
    return {
        "name": name,
        "ready": False,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": code}},
        "lastState": {},
    }


def waiting(name: str, after_crash: bool = False) -> dict[str, Any]:
    last = {"terminated": {"exitCode": 1}} if after_crash else {}
    return {
        "name": name,
        "ready": False,
        "restartCount": 1 if after_crash else 0,
        "state": podspec.waiting_state("CrashLoopBackOff" if after_crash else "ContainerCreating"),
        "lastState": last,
    }


@pytest.mark.parametrize(
    ("policy", "init", "main", "phase"),
    [
        ("Always", [], [waiting("a")], "Pending"),
        ("Always", [], [running("a"), waiting("b")], "Pending"),
        ("Always", [], [running("a"), terminated("b", 0)], "Running"),
        ("Always", [], [waiting("a", after_crash=True)], "Running"),
        ("Never", [], [terminated("a", 0), terminated("b", 0)], "Succeeded"),
        ("Never", [], [terminated("a", 0), terminated("b", 2)], "Failed"),
        ("OnFailure", [], [terminated("a", 2)], "Running"),
        ("OnFailure", [], [terminated("a", 0)], "Succeeded"),
        ("Always", [terminated("init", 0)], [running("a")], "Running"),
        ("Always", [running("init")], [waiting("a")], "Pending"),
        ("Never", [terminated("init", 1)], [waiting("a")], "Failed"),
        ("Always", [waiting("init", after_crash=True)], [waiting("a")], "Pending"),
    ],
)
def test_pod_phase(policy: str, init: list[dict[str, Any]], main: list[dict[str, Any]], phase: str) -> None:
    assert podspec.pod_phase(policy, init, main) == phase


def test_conditions_keep_transition_times_and_honour_readiness_gates() -> None:
    pod = make_pod(readinessGates=[{"conditionType": "example.com/gate"}])
    first = podspec.pod_status(
        pod,
        init_statuses=[],
        statuses=[running("a", ready=False)],
        pod_ip="127.0.0.9",
        host_ip="127.0.0.1",
        start_time="t0",
        now="t1",
    )
    by_type = {c["type"]: c for c in first["conditions"]}
    assert by_type["ContainersReady"]["status"] == "False"
    assert by_type["ContainersReady"]["message"] == "containers with unready status: [a]"
    assert by_type["PodScheduled"]["status"] == "True"
    pod["status"]["conditions"] = [*first["conditions"], {"type": "example.com/gate", "status": "False"}]
    second = podspec.pod_status(
        pod,
        init_statuses=[],
        statuses=[running("a")],
        pod_ip="127.0.0.9",
        host_ip="127.0.0.1",
        start_time="t0",
        now="t2",
    )
    by_type = {c["type"]: c for c in second["conditions"]}
    assert by_type["ContainersReady"] == {
        "type": "ContainersReady",
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": "t2",
    }
    assert by_type["Initialized"]["lastTransitionTime"] == "t1"  # unchanged since the first status
    assert by_type["Ready"]["status"] == "False"
    assert by_type["Ready"]["reason"] == "ReadinessGatesNotReady"
    assert second["podIP"] == "127.0.0.9" and second["podIPs"] == [{"ip": "127.0.0.9"}]
    assert second["phase"] == "Running"


def test_status_patch_names_every_state_field() -> None:
    status = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [running("a")],
    }
    patch = podspec.status_patch(status)["status"]
    assert patch["conditions"] == [{"type": "Ready", "status": "True", "reason": None, "message": None}]
    entry = patch["containerStatuses"][0]
    assert entry["state"] == {"waiting": None, "running": {"startedAt": "t"}, "terminated": None}
    assert entry["lastState"] == {"waiting": None, "running": None, "terminated": None}
    crashed = podspec.status_patch({"containerStatuses": [waiting("a", after_crash=True)]})["status"]
    assert crashed["containerStatuses"][0]["state"]["waiting"] == {
        "reason": "CrashLoopBackOff",
        "message": None,
    }


@pytest.mark.parametrize(
    ("returncode", "exit_code", "reason"),
    [(0, 0, "Completed"), (3, 3, "Error"), (-15, 143, "Error"), (-9, 137, "Error")],
)
def test_exit_codes(returncode: int, exit_code: int, reason: str) -> None:
    assert podspec.exit_code_of(returncode) == exit_code
    assert podspec.terminated_reason(exit_code) == reason


# --- files: volumes, roots, addresses -------------------------------------------------------------


def test_write_volume_swaps_data_atomically(tmp_path: Path) -> None:
    directory = tmp_path / "cfg"
    first = podspec.VolumeContent(
        "cfg", "files", (podspec.ProjectedFile("a", b"1", 0o644), podspec.ProjectedFile("sub/b", b"2", 0o600))
    )
    write_volume(directory, first)
    assert (directory / "a").read_bytes() == b"1"
    assert (directory / "sub" / "b").read_bytes() == b"2"
    assert os.readlink(directory / "a") == "..data/a"
    assert oct((directory / "sub" / "b").stat().st_mode & 0o777) == oct(0o600)
    old_payload = os.readlink(directory / "..data")
    second = podspec.VolumeContent("cfg", "files", (podspec.ProjectedFile("a", b"changed", 0o644),))
    write_volume(directory, second)
    assert (directory / "a").read_bytes() == b"changed"
    assert not (directory / "sub").exists()
    assert os.readlink(directory / "..data") != old_payload
    assert not (directory / old_payload).exists()
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith("..")) == ["a"]


def test_prepare_root_links_mounts(tmp_path: Path) -> None:
    volume = tmp_path / "volumes" / "cfg"
    volume.mkdir(parents=True)
    (volume / "port").write_text("8080")
    root = tmp_path / "rootfs" / "c"
    links = podspec.plan_mounts(
        {"name": "c", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}]},
        str(root),
        lambda name: str(tmp_path / "volumes" / name),
    )
    prepare_root(root, links, "/data")
    prepare_root(root, links, "/data")  # a restart of the container re-links without complaint
    assert (root / "etc" / "app" / "port").read_text() == "8080"
    assert (root / "data").is_dir() and (root / "tmp").is_dir()


def test_pod_addresses_are_distinct_across_kubelets_and_kept_across_restarts(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    first = PodIpAllocator(tmp_path / "a.json", locks)
    second = PodIpAllocator(tmp_path / "b.json", locks)
    a1, a2 = first.allocate("uid-1"), first.allocate("uid-2")
    b1 = second.allocate("uid-3")
    assert len({a1, a2, b1}) == 3
    assert first.allocate("uid-1") == a1
    assert all(ip.startswith("127.0.") and ip != "127.0.0.1" for ip in (a1, a2, b1))
    # The first kubelet goes away (its locks with it); a new one on the same run dir keeps the addresses.
    for fd in first.locks.values():
        os.close(fd)
    restarted = PodIpAllocator(tmp_path / "a.json", locks)
    assert restarted.allocate("uid-1") == a1 and restarted.allocate("uid-2") == a2
    restarted.release("uid-2")
    restarted.keep_only({"uid-9"})
    assert restarted.assigned == {}
    # A released address is not handed out again at once: the next pod on the machine gets a fresh one.
    assert second.allocate("uid-4") not in {a1, a2, b1}


def test_released_addresses_come_back_only_after_the_round_robin_wraps(tmp_path: Path) -> None:
    """A client still holding a deleted pod's address must not reach the next pod started anywhere on
    the machine: addresses go round robin from a cursor shared by every kubelet, the flock decides."""
    locks = tmp_path / "locks"
    space = ["127.0.9.1", "127.0.9.2", "127.0.9.3"]
    first = PodIpAllocator(tmp_path / "a.json", locks, candidates=space)
    second = PodIpAllocator(tmp_path / "b.json", locks, candidates=space)
    assert first.allocate("a") == "127.0.9.1"
    first.release("a")
    assert second.allocate("b") == "127.0.9.2"  # not the address just released
    assert first.allocate("c") == "127.0.9.3"
    assert second.allocate("d") == "127.0.9.1"  # wrapped: the only free one
    with pytest.raises(RuntimeError, match="no free pod address"):
        first.allocate("e")
    (locks / ".next").write_text("garbage")  # a torn cursor is a hint, not a failure
    second.release("b")
    assert first.allocate("f") == "127.0.9.2"


def test_failed_init_container_leaves_the_pod_not_initialized() -> None:
    pod = make_pod(restartPolicy="Never")
    status = podspec.pod_status(
        pod,
        init_statuses=[terminated("init", 5)],
        statuses=[waiting("a")],
        pod_ip="",
        host_ip="127.0.0.1",
        start_time="t0",
        now="t1",
    )
    by_type = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Failed"
    assert by_type["Initialized"]["status"] == "False"
    assert by_type["Initialized"]["message"] == "containers with incomplete status: [init]"
    assert "podIP" not in status
