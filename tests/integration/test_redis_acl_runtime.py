"""The runtime service as it is deployed (``cachewarden runtime`` processes) on a Redis user that holds
exactly ``required_acl_rules`` of its config: a custom key prefix, its ``~prefix:*`` and ``~prefix#*``
keys, its coherence channel, the engine's commands and nothing else (issue 8).

The engine-level ACL tests (tests/integration/test_tiered_cache.py, test_l2_security.py) drive one
``TieredCache`` or ``RedisL2``; here two runtime processes, configured like an operator-managed pod
(URL with the ACL user, password from a file as the mounted Secret), serve the data API and every
admin action that touches Redis: get/set/delete, AI store/lookup, L1 coherence between the two,
pattern invalidation (SCAN + UNLINK), the namespace version bump, clear, compress-existing,
memory-stats (INFO) and redis/reconnect. Afterwards no Redis error of any kind was
counted, and the same user is refused (NOPERM) outside its prefix and channel.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis

from cache_runtime.config import required_acl_rules, resolve_config
from tests.waiting import wait_until

if TYPE_CHECKING:
    from tests.integration.conftest import RedisFactory, RedisProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ADMIN = "acl-admin-token-0123456789abcdef"
READ = "acl-read-token-0123456789abcdefg"
USER = "acme-cache"
OVERRIDES: dict[str, Any] = {
    "keys": {"prefix": "acme"},
    "coherence": {"channel": "acme#events"},
    "stampede": {"lease_lock": True},
    "compression": {"threshold_bytes": 256},
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


eventually = functools.partial(wait_until, timeout=15.0)


class RuntimeProcess:
    """One ``cachewarden runtime`` process on 127.0.0.1 with its own files."""

    def __init__(self, directory: Path, server: RedisProcess, password: str) -> None:
        directory.mkdir()
        (directory / "admin").write_text(ADMIN + "\n")
        (directory / "read").write_text(READ + "\n")
        (directory / "redis-password").write_text(password + "\n")
        config = {
            "preset": "ai-production",
            "overrides": OVERRIDES,
            "redis_url": f"redis://{USER}@127.0.0.1:{server.port}/0",
        }
        (directory / "config.json").write_text(json.dumps(config))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {key: value for key, value in os.environ.items() if key != "DEVCLUSTER_ROOT"}
        self.log_path = directory / "runtime.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cachewarden.cli",
                    "runtime",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--config-path",
                    str(directory / "config.json"),
                    "--admin-token-file",
                    str(directory / "admin"),
                    "--read-token-file",
                    str(directory / "read"),
                    "--redis-password-file",
                    str(directory / "redis-password"),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        self.client = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
        )

    def wait_ready(self) -> None:
        """Until /readyz answers 200 (fails early if the process exits)."""

        def ready() -> bool:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            try:
                return httpx.get(self.base + "/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        eventually(ready, f"runtime on {self.port} ready", timeout=30)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """An authenticated request that must succeed; its JSON."""
        response = self.client.request(method, path, **kwargs)
        assert response.status_code == 200, (method, path, response.status_code, response.text)
        return response.json()

    def lookup(self, key: str) -> int:
        """Status of GET /data/v1/keys/{key} (200 hit, 404 miss)."""
        return int(self.client.get(f"/data/v1/keys/{key}").status_code)

    def stop(self) -> None:
        """Terminate (then kill) this process only."""
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def acl_runtimes(
    redis_factory: RedisFactory, tmp_path: Path
) -> Iterator[tuple[RedisProcess, str, list[RuntimeProcess]]]:
    """A password-protected redis-server, an ACL user with exactly the runtime config's rules, and
    two runtime processes using that user."""
    server = redis_factory.start(password="acl-admin-" + os.urandom(6).hex())
    password = "acl-app-" + os.urandom(8).hex()
    rules = required_acl_rules(resolve_config("ai-production", overrides=OVERRIDES))
    server.command("ACL", "SETUSER", USER, "on", f">{password}", *rules)
    runtimes = [RuntimeProcess(tmp_path / name, server, password) for name in ("a", "b")]
    try:
        for runtime in runtimes:
            runtime.wait_ready()
        yield server, password, runtimes
    finally:
        for runtime in runtimes:
            runtime.stop()


def test_runtime_works_with_only_its_acl_rules(
    acl_runtimes: tuple[RedisProcess, str, list[RuntimeProcess]],
) -> None:
    server, password, (a, b) = acl_runtimes
    eventually(
        lambda: all(r.call("GET", "/internal/cache/status")["redis"]["connected"] for r in (a, b)),
        "both runtimes connected as the ACL user",
    )
    eventually(
        lambda: server.command("PUBSUB", "NUMSUB", "acme#events")[1] == 2,
        "both runtimes subscribed to the coherence channel",
    )

    # Data API across the two pods (through Redis).
    a.call("PUT", "/data/v1/keys/greeting", json={"value": {"text": "hello"}, "ttl_s": 600})
    assert b.call("GET", "/data/v1/keys/greeting")["value"] == {"text": "hello"}
    assert b.call("POST", "/data/v1/mget", json={"keys": ["greeting", "nope"]})["missing"] == ["nope"]
    request = {"operation": "summarize", "text": "a long document " * 40}
    a.call("POST", "/data/v1/ai/store", json={**request, "value": {"summary": "x" * 600}})
    assert b.call("POST", "/data/v1/ai/lookup", json=request)["hit"] is True
    assert all(key.startswith((b"acme:", b"acme#")) for key in server.command("KEYS", "*"))

    # Coherence: b holds "greeting" in L1; a deletes it; b drops it without asking Redis.
    a.call("DELETE", "/data/v1/keys/greeting")
    eventually(lambda: b.lookup("greeting") == 404, "b to drop greeting after a's delete")

    # Admin actions that touch Redis.
    a.call("PUT", "/data/v1/keys/p1", json={"value": 1})
    a.call("PUT", "/data/v1/keys/p2", json={"value": 2})
    invalidated = a.call("POST", "/internal/cache/invalidate", params={"pattern": "*p1*"})
    assert invalidated["redis_keys_removed"] >= 1, invalidated
    eventually(lambda: b.lookup("p1") == 404, "p1 invalidated everywhere")
    assert b.lookup("p2") == 200
    bumped = a.call("POST", "/internal/cache/invalidate", params={"namespace": "default"})
    assert bumped["namespace_version"] == 1, bumped
    eventually(lambda: b.lookup("p2") == 404, "b to follow the namespace version")
    assert server.command("GET", "acme#nsver:default") == b"1"
    a.call("PUT", "/data/v1/keys/big", json={"value": "y" * 5000})
    assert "rewritten" in a.call("POST", "/internal/cache/compress-existing")
    memory = a.call("GET", "/internal/cache/memory-stats")
    assert memory["redis"] is not None and memory["redis"]["used_memory"] > 0, memory
    assert a.call("POST", "/internal/cache/redis/reconnect")["available"] is True
    cleared = b.call("POST", "/internal/cache/clear")
    assert cleared["redis_keys_removed"] >= 1, cleared

    # Nothing was refused along the way, on either runtime.
    for runtime in (a, b):
        errors = runtime.call("GET", "/internal/cache/status")["redis"]["errors"]
        assert sum(errors.values()) == 0, (
            runtime.port,
            errors,
            runtime.call("GET", "/internal/cache/recent-errors"),
        )
        assert password not in runtime.log_path.read_text()

    # The same user outside its grant: other keys, the default prefix, other channels, admin commands.
    user = redis.Redis(host="127.0.0.1", port=server.port, username=USER, password=password, socket_timeout=5)
    try:
        for forbidden in (
            ("SET", "other-app:k", "v"),
            ("GET", "cw:default:v0:d:k"),
            ("PUBLISH", "cw#coherence", "m"),
            ("KEYS", "*"),
            ("FLUSHALL",),
            ("CONFIG", "GET", "maxmemory"),
            ("EVAL", "return 1", "0"),
            ("ACL", "LIST"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.execute_command(*forbidden)
        assert user.execute_command("SET", "acme:default:probe", "v")
    finally:
        user.close()
