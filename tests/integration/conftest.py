"""Shared fixtures of the integration tests: real redis-server processes on loopback, and faults.

- ``redis_server``: one redis-server for the whole session (fast); ``redis_url`` flushes it before
  each test and returns its URL. Use it when the test does not stop, reconfigure or break Redis.
- ``redis_factory``: start dedicated servers for one test (``redis_factory.start(...)``), with any
  extra redis-server arguments, a password, TLS; stop/restart them on the same port mid-test; all are
  killed (by pid) at teardown.
- ``blackhole``: a loopback TCP listener that accepts connections and never replies.
- ``tls_material``: a CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a
  second unrelated CA (the "wrong CA"), generated with ``cryptography`` into a temporary directory.
- ``redis_tls``: a redis-server that speaks only TLS (and requires client certificates optionally).
- ``redis_acl``: a redis-server with a password-protected default user and an ACL user holding
  exactly ``cache_runtime.config.required_acl_rules`` of the default config: the ``cw:*`` and ``cw#*``
  keys, the ``cw#coherence`` channel and the commands the engine sends (no CONFIG, no KEYS, no
  FLUSHALL, no EVAL).

Servers run with ``--save "" --appendonly no`` in a temporary directory, on a free 127.0.0.1 port.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from cache_runtime.config import CacheConfig, required_acl_rules

REDIS_SERVER = (
    os.environ.get("CACHEWARDEN_REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
)
STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


# redis-server gets SIGKILL when the test process dies, even killed -9, so an interrupted run never
# leaves servers behind (setpriv sets the parent-death signal, then execs: the pid stays the same).
# preexec_fn could do it too, but it is unsafe while other threads (the blackhole) run.
_SETPRIV = shutil.which("setpriv")
DIE_WITH_PARENT = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class TlsMaterial:
    """Paths of generated PEM files."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca_cert: Path


@dataclass
class RedisProcess:
    """One redis-server child process on 127.0.0.1, restartable on the same port."""

    directory: Path
    port: int
    extra_args: tuple[str, ...] = ()
    password: str | None = None
    tls: TlsMaterial | None = None
    host: str = "127.0.0.1"
    #: (service name, master host, master port): run as a Sentinel monitoring that master.
    sentinel_monitor: tuple[str, str, int] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.directory / f"redis-{self.port}.log"

    # -- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """redis:// (or rediss:// for a TLS server) URL without credentials."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """Pid of the running server (None when stopped)."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    # -- lifecycle ---------------------------------------------------------------------------

    def _sentinel_argv(self, service: str, master_host: str, master_port: int) -> list[str]:
        config = self.directory / f"sentinel-{self.port}.conf"
        if not config.exists():  # a restart keeps what Sentinel learned (it rewrites this file)
            config.write_text(
                f"port {self.port}\nbind {self.host}\ndir {self.directory}\nlogfile {self.log_path}\n"
                f"protected-mode no\nsentinel monitor {service} {master_host} {master_port} 1\n"
                f"sentinel down-after-milliseconds {service} 1000\n"
                f"sentinel failover-timeout {service} 5000\n"
            )
        return [*DIE_WITH_PARENT, REDIS_SERVER, str(config), "--sentinel", *self.extra_args]

    def _argv(self) -> list[str]:
        if self.sentinel_monitor is not None:
            return self._sentinel_argv(*self.sentinel_monitor)
        argv = [
            *DIE_WITH_PARENT,
            REDIS_SERVER,
            "--bind",
            self.host,
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
        ]
        if self.tls is not None:
            argv += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.server_cert),
                "--tls-key-file",
                str(self.tls.server_key),
                "--tls-ca-cert-file",
                str(self.tls.ca_cert),
                "--tls-auth-clients",
                "optional",
            ]
        else:
            argv += ["--port", str(self.port)]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        return argv + list(self.extra_args)

    def start(self) -> RedisProcess:
        """Start the server and wait (bounded) until it accepts connections."""
        if self.pid is not None:
            return self
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: {stderr}{self.log()}"
                )
            if self.log_path.exists():
                with self.log_path.open("rb") as handle:
                    handle.seek(offset)
                    marker = b"+monitor master" if self.sentinel_monitor else b"Ready to accept connections"
                    if marker in handle.read():
                        return self
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(
            f"redis-server on port {self.port} not ready within {STARTUP_TIMEOUT_S}s\n{self.log()}"
        )

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server by pid (SIGKILL by default: an outage, not a graceful shutdown)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if sig == signal.SIGSTOP:
            raise ValueError("use pause() for SIGSTOP")
        process.send_signal(sig)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
        if process.stderr is not None:
            process.stderr.close()

    def restart(self) -> RedisProcess:
        """Stop and start again on the same port (an empty dataset: nothing is persisted)."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung Redis)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def log(self) -> str:
        """The server's log (for failure messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- direct access for assertions ------------------------------------------------------------

    def client(self, **kwargs: Any) -> redis.Redis:
        """A synchronous redis-py client as the default user (for setup and assertions)."""
        params: dict[str, Any] = {"host": self.host, "port": self.port, "password": self.password}
        params.update(socket_timeout=5, socket_connect_timeout=5)
        if self.tls is not None:
            params.update(
                ssl=True,
                ssl_ca_certs=str(self.tls.ca_cert),
                ssl_certfile=str(self.tls.client_cert),
                ssl_keyfile=str(self.tls.client_key),
            )
        params.update(kwargs)
        return redis.Redis(**params)

    def command(self, *args: Any) -> Any:
        """Run one command on a fresh synchronous connection."""
        with self.client() as conn:
            return conn.execute_command(*args)

    def command_calls(self, command: str) -> int:
        """How many times ``command`` ran on the server (INFO commandstats)."""
        with self.client() as conn:
            stats = conn.info("commandstats")
        entry = stats.get(f"cmdstat_{command.lower()}")
        return int(entry["calls"]) if entry else 0


class RedisFactory:
    """Starts dedicated redis-server processes for one test and kills them all at teardown."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._servers: list[RedisProcess] = []

    def start(
        self,
        *extra_args: str,
        password: str | None = None,
        tls: TlsMaterial | None = None,
        port: int | None = None,
    ) -> RedisProcess:
        """Start a server with extra redis-server arguments (e.g. "--maxmemory", "1mb")."""
        directory = self._base / f"redis-{len(self._servers)}"
        directory.mkdir(parents=True, exist_ok=True)
        server = RedisProcess(
            directory=directory, port=port or free_port(), extra_args=extra_args, password=password, tls=tls
        )
        self._servers.append(server)
        return server.start()

    def start_sentinel(self, master: RedisProcess, service: str = "mymaster") -> RedisProcess:
        """Start a Sentinel (quorum 1) monitoring ``master`` under ``service``."""
        directory = self._base / f"sentinel-{len(self._servers)}"
        directory.mkdir(parents=True, exist_ok=True)
        sentinel = RedisProcess(
            directory=directory, port=free_port(), sentinel_monitor=(service, master.host, master.port)
        )
        self._servers.append(sentinel)
        return sentinel.start()

    def start_cluster(self, primaries: int = 3) -> list[RedisProcess]:
        """Start a Redis Cluster of ``primaries`` nodes (no replicas), slots split evenly; wait until ok."""
        nodes = []
        for _ in range(primaries):
            port = free_cluster_port()
            nodes.append(
                self.start(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "2000",
                    port=port,
                )
            )
        per_node = 16384 // primaries
        for index, node in enumerate(nodes):
            first = index * per_node
            last = 16383 if index == primaries - 1 else first + per_node - 1
            node.command("CLUSTER", "ADDSLOTSRANGE", first, last)
        for node in nodes[1:]:
            node.command("CLUSTER", "MEET", nodes[0].host, nodes[0].port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = [node.command("CLUSTER", "INFO").decode() for node in nodes]
            known = f"cluster_known_nodes:{primaries}"
            if all("cluster_state:ok" in state and known in state for state in states):
                return nodes
            time.sleep(0.05)
        raise RuntimeError(f"cluster not ok within 20 s: {states}")

    def close(self) -> None:
        """Kill every server this factory started (resuming paused ones first)."""
        for server in self._servers:
            server.resume()
            server.stop()


@pytest.fixture(scope="session")
def redis_binary() -> str:
    """Path of redis-server; the integration tests need it (``make test`` installs it)."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.fail(f"redis-server not found at {REDIS_SERVER}: install the Debian package redis-server")
    return REDIS_SERVER


@pytest.fixture(scope="session")
def redis_server(redis_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One shared redis-server for the session (do not stop or reconfigure it in a test)."""
    factory = RedisFactory(tmp_path_factory.mktemp("redis-shared"))
    try:
        yield factory.start()
    finally:
        factory.close()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """URL of the shared server, flushed before the test."""
    redis_server.command("FLUSHALL")
    redis_server.command("CONFIG", "RESETSTAT")
    return redis_server.url


@pytest.fixture
def redis_factory(redis_binary: str, tmp_path: Path) -> Iterator[RedisFactory]:
    """Dedicated servers for one test; killed at teardown."""
    factory = RedisFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


class Blackhole:
    """A loopback listener that accepts TCP connections and never sends a byte."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_forever, name="blackhole", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """redis:// URL pointing at the blackhole."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept_forever(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)  # kept open, never read, never answered

    def close(self) -> None:
        """Stop accepting and close every socket."""
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self.accepted:
            conn.close()
        self._listener.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    """A TCP listener on loopback that accepts connections and never replies."""
    hole = Blackhole()
    try:
        yield hole
    finally:
        hole.close()


def _write_key(path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _make_ca(common_name: str) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(ca_key: Any, ca_cert: Any, common_name: str, *, server: bool) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([usage]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """A CA, a server cert (SAN 127.0.0.1 + localhost), a client cert, and an unrelated "wrong" CA."""
    from cryptography.hazmat.primitives import serialization

    directory = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert = _make_ca("cachewarden test CA")
    server_key, server_cert = _make_leaf(ca_key, ca_cert, "redis.test", server=True)
    client_key, client_cert = _make_leaf(ca_key, ca_cert, "cachewarden-client", server=False)
    _, wrong_ca_cert = _make_ca("some other CA")

    def pem(cert: Any) -> bytes:
        return bytes(cert.public_bytes(serialization.Encoding.PEM))

    material = TlsMaterial(
        directory=directory,
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        wrong_ca_cert=directory / "wrong-ca.crt",
    )
    material.ca_cert.write_bytes(pem(ca_cert))
    _write_key(material.ca_key, ca_key)
    material.server_cert.write_bytes(pem(server_cert))
    _write_key(material.server_key, server_key)
    material.client_cert.write_bytes(pem(client_cert))
    _write_key(material.client_key, client_key)
    material.wrong_ca_cert.write_bytes(pem(wrong_ca_cert))
    return material


@pytest.fixture
def redis_tls(redis_factory: RedisFactory, tls_material: TlsMaterial) -> RedisProcess:
    """A redis-server that listens only with TLS (client certificates optional)."""
    return redis_factory.start(tls=tls_material)


@dataclass
class AclRedis:
    """A server whose default user needs a password, plus a limited ACL user."""

    server: RedisProcess
    admin_password: str
    username: str
    password: str
    key_patterns: tuple[str, ...]
    channel: str


# Exactly what the engine needs for the default config (prefix ``cw``): its keys, its bookkeeping
# keys, its coherence channel and its commands. One list, defined by the engine.
ACL_USER_RULES = ("on", *required_acl_rules(CacheConfig()))


@pytest.fixture
def redis_acl(redis_factory: RedisFactory) -> AclRedis:
    """A password-protected server with an ACL user ``cwapp`` holding exactly the engine's rules
    (``required_acl_rules`` of the default config: ``cw:*`` and ``cw#*`` keys, the ``cw#coherence``
    channel, the engine's commands)."""
    admin_password = "admin-" + os.urandom(8).hex()
    server = redis_factory.start(password=admin_password)
    user_password = "app-" + os.urandom(8).hex()
    server.command("ACL", "SETUSER", "cwapp", *ACL_USER_RULES, f">{user_password}")
    return AclRedis(
        server=server,
        admin_password=admin_password,
        username="cwapp",
        password=user_password,
        key_patterns=("cw:*", "cw#*"),
        channel="cw#coherence",
    )
