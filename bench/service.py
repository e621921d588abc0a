"""Runtime service benchmark: the data API's GET (a cache hit) over loopback HTTP, against the same
load generator talking to Redis directly, in the same run.

    .venv/bin/python bench/service.py              # about a minute
    .venv/bin/python bench/service.py --quick      # smoke run, figures not meaningful
    .venv/bin/python bench/service.py --json out.json
    .venv/bin/python bench/service.py --http h11 --loop asyncio   # the app under other uvicorn choices
    .venv/bin/python bench/service.py --bare-asgi    # uvicorn's floor: a trivial ASGI app, no engine

What runs: a redis-server and one `cachewarden runtime` process (uvicorn, one worker, the production
preset, auth on), both pinned to the server core when there are two cores; the load generator (this
process, pinned to the bench core) keeps ``--concurrency`` requests in flight with aiohttp keep-alive
connections. Three loads, interleaved round by round so noise from a neighbour lands on all of them:

* ``runtime GET /data/v1/keys/{key}`` — a hit served from the runtime's L1 (the data API path: auth,
  routing, validation, engine get, JSON response);
* ``runtime GET /healthz`` — the same HTTP stack without the engine: the framework's floor;
* ``redis GET`` — redis-py asyncio against redis-server with the same concurrency: the anchor a
  non-Python client would compare against.

Figures: requests per second and p50/p99 latency per load (median over the rounds). No targets are
asserted: the issue asks for the figures next to the anchor. Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    Figure,
    RedisServer,
    add_load_arguments,
    apply_quick,
    die_with_parent,
    free_port,
    percentile,
    pin_bench_process,
    pin_process,
    report,
    wait_for_port,
)

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token-0123456789abcdef"
VALUE = {"summary": "The cache keeps AI responses close to the service. " * 8, "model": "fake", "tokens": 128}


# The runtime app under uvicorn with another HTTP parser / event loop (bench only: `--http`, `--loop`).
_UVICORN_VARIANT = """
import sys, uvicorn
from cache_runtime.service.app import create_app
from cache_runtime.service.settings import ServiceSettings
settings = ServiceSettings.from_env()
uvicorn.run(create_app(settings), host=settings.host, port=settings.port, http=sys.argv[1], loop=sys.argv[2],
            lifespan="on", log_config=None, access_log=False, server_header=False)
"""

# uvicorn's own floor: a trivial ASGI app (no FastAPI, no engine, no auth) answering every request with
# one fixed JSON body (bench only: `--bare-asgi`). The "data GET" then measures uvicorn alone.
_BARE_ASGI = """
import os, sys, uvicorn
BODY = b'{"key":"bench-key","hit":true,"value":null,"cache_metrics":{"l1_hit_rate":null}}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(os.environ["CACHEWARDEN_PORT"]), http=sys.argv[1],
            loop=sys.argv[2], log_config=None, access_log=False, server_header=False)
"""


class RuntimeProcess:
    """`cachewarden runtime` on a free loopback port, pinned, killed at the end."""

    def __init__(
        self,
        redis_url: str,
        cores: list[int] | None,
        extra_env: dict[str, str] | None = None,
        server: tuple[str, ...] | None = None,
    ) -> None:
        self.port = free_port()
        self.cores = cores
        self.extra_env = dict(extra_env or {})
        # ("app" | "bare", http, loop) for uvicorn, e.g. ("app", "h11", "asyncio"); None: as shipped.
        self.server = server
        self.directory = Path(tempfile.mkdtemp(prefix="cachewarden-bench-runtime-"))
        (self.directory / "admin").write_text(TOKEN)
        (self.directory / "config.json").write_text(
            json.dumps({"preset": "production", "redis_url": redis_url})
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.failed = False

    @property
    def base(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the runtime and wait until /readyz answers (bounded)."""
        env = {
            **os.environ,
            "CACHEWARDEN_CONFIG_PATH": str(self.directory / "config.json"),
            "CACHEWARDEN_ADMIN_TOKEN_FILE": str(self.directory / "admin"),
            "CACHEWARDEN_PORT": str(self.port),
            "CACHEWARDEN_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }
        env.pop("DEVCLUSTER_ROOT", None)
        log = (self.directory / "runtime.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cachewarden.cli", "runtime"]
            if self.server is None
            else [
                sys.executable,
                "-c",
                _BARE_ASGI if self.server[0] == "bare" else _UVICORN_VARIANT,
                *self.server[1:],
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        pin_process(self.process.pid, self.cores)
        if not wait_for_port(self.port, 30.0, expect_redis=False):
            self.failed = True  # its directory, with the log, stays for the reader of this error
            self.stop()
            raise RuntimeError(f"runtime did not listen within 30 s; log in {self.directory / 'runtime.log'}")

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL if it does not stop within 10 s; then remove its directory
        (config, token, log) unless it failed to start."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if not self.failed:
            shutil.rmtree(self.directory, ignore_errors=True)


async def run_load(call: Callable[[], Awaitable[None]], total: int, concurrency: int) -> dict[str, float]:
    """Keep ``concurrency`` calls in flight until ``total`` finished; rps and latency percentiles."""
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


async def wait_ready_and_seed(http: aiohttp.ClientSession, timeout_s: float = 30.0) -> None:
    """Wait for the runtime's /readyz, then store the value every data GET of the benches reads."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with http.get("/readyz") as response:
            if response.status == 200:
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"runtime not ready within {timeout_s:g} s")
        await asyncio.sleep(0.05)
    async with http.put("/data/v1/keys/bench-key", json={"value": VALUE}) as response:
        assert response.status == 200, await response.text()


async def bench(args: argparse.Namespace) -> list[Figure]:
    placement = pin_bench_process()
    print(placement.describe())
    server = RedisServer(placement.server_cores)
    server.start()
    variant: tuple[str, ...] | None = None
    if args.bare_asgi:
        variant = ("bare", args.http, args.loop)
    elif (args.http, args.loop) != ("auto", "auto"):
        variant = ("app", args.http, args.loop)
    runtime = RuntimeProcess(server.url, placement.server_cores, server=variant)
    shown = (
        " (as shipped)" if variant is None else " (a trivial ASGI app, no engine)" if args.bare_asgi else ""
    )
    print(f"uvicorn http={args.http} loop={args.loop}{shown}")
    figures: list[Figure] = []
    try:
        runtime.start()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
        async with aiohttp.ClientSession(base_url=runtime.base, connector=connector, headers=headers) as http:
            await wait_ready_and_seed(http)
            direct = aioredis.Redis.from_url(server.url, max_connections=args.concurrency)
            await direct.set("bench:raw", json.dumps(VALUE).encode())

            async def data_get() -> None:
                async with http.get("/data/v1/keys/bench-key") as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"data GET answered {response.status}")

            async def healthz() -> None:
                async with http.get("/healthz") as response:
                    await response.read()

            async def redis_get() -> None:
                await direct.get("bench:raw")

            loads = {
                "runtime data GET (hit)": data_get,
                "runtime /healthz (HTTP floor)": healthz,
                "redis GET (anchor)": redis_get,
            }
            for call in loads.values():  # warm-up: connections, code paths
                await run_load(call, min(500, args.requests), args.concurrency)
            results: dict[str, list[dict[str, float]]] = {name: [] for name in loads}
            for _ in range(args.rounds):
                for name, call in loads.items():
                    results[name].append(await run_load(call, args.requests, args.concurrency))
            await direct.aclose()
            async with http.get("/internal/cache/metrics") as response:
                hits = (await response.json())["cache_metrics"]
        for name, rounds in results.items():
            rps = statistics.median(r["rps"] for r in rounds)
            p50 = statistics.median(r["p50_ms"] for r in rounds)
            p99 = statistics.median(r["p99_ms"] for r in rounds)
            figures += [
                Figure("S1", f"{name}: throughput", rps, "req/s"),
                Figure("S1", f"{name}: p50", p50, "ms"),
                Figure("S1", f"{name}: p99", p99, "ms"),
            ]
        data_rps = statistics.median(r["rps"] for r in results["runtime data GET (hit)"])
        redis_rps = statistics.median(r["rps"] for r in results["redis GET (anchor)"])
        floor_rps = statistics.median(r["rps"] for r in results["runtime /healthz (HTTP floor)"])
        figures += [
            Figure("S1", "data GET / redis GET throughput", data_rps / redis_rps, "x"),
            Figure(
                "S1",
                "data GET / HTTP floor throughput",
                data_rps / floor_rps,
                "x",
                note="the share of the HTTP stack's capacity left after auth + engine",
            ),
            Figure("S1", "runtime L1 hit rate during the run", hits["l1_hit_rate"], ""),
        ]
    finally:
        runtime.stop()
        server.close()
    print(
        f"load: {args.rounds} rounds x {args.requests} requests per load, {args.concurrency} in flight; "
        f"load average at end {os.getloadavg()[0]:.2f}"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, requests=5000, rounds=3)
    parser.add_argument(
        "--http",
        choices=["auto", "h11", "httptools"],
        default="auto",
        help="uvicorn's HTTP parser (auto: as shipped)",
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="uvicorn's event loop (auto: as shipped)",
    )
    parser.add_argument(
        "--bare-asgi",
        action="store_true",
        help="serve a trivial ASGI app instead of the runtime: uvicorn's floor",
    )
    args = apply_quick(parser.parse_args(argv))
    report(asyncio.run(bench(args)), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
