"""A real ``cachewarden runtime`` process for the guide tests, traffic for it, and jq.

:class:`RuntimeProcess` starts the runtime as the console script does (its own process, a real
port, real redis-server), :func:`drive` sends known AI and data-API traffic, :func:`run_guide_curl`
runs one of the guide's curl commands as the guide writes it (only the host and an auth header
changed) through bash, and :func:`jq` evaluates a guide filter with the jq binary.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ADMIN = "guide-admin-token-0123456789abcdef"
READ = "guide-read-token-0123456789abcdef0"
WRITE = "guide-write-token-0123456789abcdef"
GUIDE_HOST = "http://localhost:8000"
OPERATIONS = ("summarize", "sentiment", "key_points", "questions", "qa")


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RuntimeProcess:
    """One runtime process on loopback."""

    directory: Path
    redis_url: str
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    preset: str = "ai-production"

    @property
    def base(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> RuntimeProcess:
        """Start and wait for /readyz."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, token in (("admin", ADMIN), ("read", READ), ("write", WRITE)):
            (self.directory / name).write_text(token + "\n")
        (self.directory / "config.json").write_text(
            json.dumps({"preset": self.preset, "redis_url": self.redis_url})
        )
        self.port = self.port or free_port()
        argv = [
            sys.executable,
            "-c",
            "from cachewarden.cli import main; raise SystemExit(main())",
            "runtime",
            "--port",
            str(self.port),
            "--config-path",
            str(self.directory / "config.json"),
            "--admin-token-file",
            str(self.directory / "admin"),
            "--read-token-file",
            str(self.directory / "read"),
            "--write-token-file",
            str(self.directory / "write"),
            "--log-level",
            "WARNING",
        ]
        log = open(self.directory / "runtime.log", "ab")  # noqa: SIM115 - kept open for the process's life
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"runtime exited: {(self.directory / 'runtime.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("runtime did not become ready")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s (only the process this object started)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def client(self) -> httpx.Client:
        """An admin-token client."""
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30.0)


def text_of(index: int, size: int) -> str:
    """A deterministic text of about ``size`` characters."""
    words = f"sample {index} text about cache behaviour and redis tiers "
    return (words * (size // len(words) + 1))[:size]


def drive(
    client: httpx.Client,
    other: httpx.Client | None = None,
    *,
    texts: int = 40,
    rounds: int = 2,
    misses: int = 10,
    large_values: int = 3,
    tag: str = "",
) -> dict[str, int]:
    """Known traffic, as two pods of one policy see it: ``other`` (a second runtime on the same
    Redis) stores ``texts`` AI responses, ``client`` looks each up ``rounds`` times (the first round
    hits Redis, later ones L1), then ``misses`` unknown lookups and ``large_values`` data-API values
    of ~600 KB written and read through ``client``. Writes refused while isolated (409) are counted
    as refused. Returns the counts sent."""
    stored = hits = missed = refused = 0
    writer = other or client
    for index in range(texts):
        operation = OPERATIONS[index % len(OPERATIONS)]
        size = (200, 3000, 12000, 40000)[index % 4]
        response = writer.post(
            "/data/v1/ai/store",
            json={
                "operation": operation,
                "text": tag + text_of(index, size),
                "options": {"max_length": 100},
                "value": {"answer": text_of(index + 1000, 800)},
            },
        )
        if response.status_code == 409:
            refused += 1
            continue
        response.raise_for_status()
        stored += 1
    for _ in range(rounds):
        for index in range(texts):
            operation = OPERATIONS[index % len(OPERATIONS)]
            size = (200, 3000, 12000, 40000)[index % 4]
            body = client.post(
                "/data/v1/ai/lookup",
                json={
                    "operation": operation,
                    "text": tag + text_of(index, size),
                    "options": {"max_length": 100},
                },
            ).json()
            hits += bool(body.get("hit"))
    for index in range(misses):
        body = client.post(
            "/data/v1/ai/lookup", json={"operation": "qa", "text": f"never stored {index} {time.time()}"}
        ).json()
        missed += not body.get("hit")
    for index in range(large_values):
        response = client.put(
            f"/data/v1/keys/guide/large-{index}", json={"value": {"blob": text_of(index, 600_000)}}
        )
        if response.status_code == 409:
            refused += 1
            continue
        response.raise_for_status()
        client.get(f"/data/v1/keys/guide/large-{index}").raise_for_status()
    return {"stored": stored, "hits": hits, "misses": missed, "large": large_values, "refused": refused}


def guide_shell(text: str, base: str, token: str) -> str:
    """A guide snippet with its host replaced and the bearer token added to every curl."""
    return text.replace(GUIDE_HOST, base).replace("curl ", f'curl -H "Authorization: Bearer {token}" ')


def run_guide_curl(command_text: str, base: str, token: str, output: Path) -> int:
    """Run one guide curl (as written, jq pipe removed) through bash; body to ``output``; HTTP status."""
    script = guide_shell(command_text, base, token) + f" -o {output} -w '%{{http_code}}'"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, check=False)
    try:
        return int(done.stdout.strip()[-3:])
    except ValueError:
        return 0


def jq(filter_text: str, document: Path) -> list[Any]:
    """The values the jq binary outputs for ``filter_text`` on ``document`` (one per output)."""
    done = subprocess.run(
        ["jq", "-c", filter_text, str(document)], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"jq {filter_text!r} failed: {done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def jq_available() -> bool:
    """Whether the jq and curl binaries are installed."""
    return shutil.which("jq") is not None and shutil.which("curl") is not None


def scratch() -> Path:
    """A scratch directory."""
    return Path(tempfile.mkdtemp(prefix="guide-"))
