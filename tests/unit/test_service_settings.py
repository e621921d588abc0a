"""Service settings: env and flags, devcluster mount-path mapping, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache_runtime.service.settings import ServiceSettings, SettingsError, map_mount_path


@pytest.mark.parametrize(
    ("path", "env", "expected"),
    [
        ("/var/run/cachewarden/admin-token", {}, Path("/var/run/cachewarden/admin-token")),
        (
            "/var/run/cachewarden/admin-token",
            {"DEVCLUSTER_ROOT": "/tmp/dc/pods/p1"},
            Path("/tmp/dc/pods/p1/var/run/cachewarden/admin-token"),
        ),
        ("relative/config.yaml", {"DEVCLUSTER_ROOT": "/tmp/dc"}, Path("relative/config.yaml")),
        ("/etc/x", {"DEVCLUSTER_ROOT": ""}, Path("/etc/x")),
        (None, {"DEVCLUSTER_ROOT": "/tmp/dc"}, None),
        ("", {}, None),
    ],
)
def test_map_mount_path(path: str | None, env: dict[str, str], expected: Path | None) -> None:
    assert map_mount_path(path, env) == expected


def test_defaults_bind_loopback() -> None:
    settings = ServiceSettings.from_env({})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.auth_disabled is False


def test_env_and_flags() -> None:
    env = {
        "CACHEWARDEN_BIND_HOST": "127.0.0.7",
        "CACHEWARDEN_PORT": "9000",
        "CACHEWARDEN_CONFIG_PATH": "/etc/cachewarden/config.json",
        "CACHEWARDEN_ADMIN_TOKEN_FILE": "/var/run/secrets/admin",
        "CACHEWARDEN_OPEN_METRICS": "false",
        "DEVCLUSTER_ROOT": "/tmp/root",
    }
    settings = ServiceSettings.from_env(env, port=9100)
    assert settings.host == "127.0.0.7"
    assert settings.port == 9100  # the flag wins over the environment
    assert settings.config_path == Path("/tmp/root/etc/cachewarden/config.json")
    assert settings.admin_token_file == Path("/tmp/root/var/run/secrets/admin")
    assert settings.open_metrics is False


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"CACHEWARDEN_PORT": "http"}, "port"),
        ({"CACHEWARDEN_PORT": "70000"}, "port"),
        ({"CACHEWARDEN_OPEN_METRICS": "maybe"}, "open_metrics"),
        ({"CACHEWARDEN_CONFIG_POLL_INTERVAL_S": "0"}, "config_poll_interval_s"),
        ({"CACHEWARDEN_LOG_LEVEL": "LOUD"}, "log_level"),
        ({"CACHEWARDEN_BIND_HOST": "  "}, "host"),
        ({"CACHEWARDEN_MAX_BODY_BYTES": "10"}, "max_body_bytes"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError) as caught:
        ServiceSettings.from_env(env)
    assert caught.value.name == name
    assert "accepted" in str(caught.value)


def test_unknown_flag() -> None:
    with pytest.raises(SettingsError) as caught:
        ServiceSettings.from_env({}, colour="blue")
    assert caught.value.name == "colour"


def test_redis_protocol_settings() -> None:
    assert ServiceSettings.from_env({}).resp_port is None  # off by default
    settings = ServiceSettings.from_env(
        {
            "CACHEWARDEN_RESP_PORT": "6380",
            "CACHEWARDEN_RESP_HOST": "0.0.0.0",
            "CACHEWARDEN_RESP_MAX_CONNECTIONS": "50",
        }
    )
    assert (settings.resp_port, settings.resp_host, settings.resp_max_connections) == (6380, "0.0.0.0", 50)
    for name, value, accepted in [
        ("RESP_PORT", "redis", "an integer from 0 to 65535"),
        ("RESP_PORT", "70000", "an integer from 0 to 65535"),
        ("RESP_MAX_CONNECTIONS", "0", "an integer from 1 to 100000"),
    ]:
        with pytest.raises(SettingsError) as caught:
            ServiceSettings.from_env({f"CACHEWARDEN_{name}": value})
        assert caught.value.name == name.lower() and caught.value.accepted == accepted
