"""The runtime's Redis-protocol front end against Redis itself: GET (an L1 hit) with the same client on
both sides, in the same run, next to the HTTP data API.

    .venv/bin/python bench/resp.py              # about a minute
    .venv/bin/python bench/resp.py --quick      # smoke run, figures not meaningful
    .venv/bin/python bench/resp.py --json out.json

What runs: a redis-server and one `cachewarden runtime` process (production preset, auth on, the
Redis protocol on with ``CACHEWARDEN_RESP_PORT``), both pinned to the server core when there are two
cores; the load generator (this process, bench core) keeps ``--concurrency`` GETs in flight, one per
connection at a time (no pipelining). Loads, interleaved round by round:

* redis-py asyncio -> redis-server ``GET`` (the anchor) and redis-py -> runtime ``GET`` (L1 hit);
* a minimal asyncio RESP client (one pre-encoded GET per request, one connection per worker: the
  client costs less, so the servers' own cost shows more) -> redis-server and -> runtime;
* ``redis-benchmark`` (Redis's own C client, pinned to the bench core; skipped when it is not installed)
  -> redis-server and -> runtime: a client that costs far less than either server, so both servers
  run at their own ceiling and the ratio is their cost per GET, not the client's;
* aiohttp -> runtime ``GET /data/v1/keys/{key}`` (the HTTP data API, L1 hit) and ``/healthz``;
* redis-py and redis-benchmark -> the *Python floor*: a process with the runtime's event loop (uvloop
  when installed) whose protocol answers every GET with one constant, pre-encoded reply (no parsing,
  no lookup, no auth). No Python front end on that loop can answer faster, so "floor / Redis" bounds
  what any Python implementation of the RESP front end can reach with that client on this machine.

Each load also prints its client's CPU per request and how busy the client was (this process, or
redis-benchmark's own CPU): a client busy ~100% of the time sets the pace itself, and the ratio then
says how much more or less client CPU each request costs against one server than the other (the
ratio's note says "client-bound"). redis-py speaks RESP2 to both servers (left to itself it speaks
RESP3 to Redis: another parser path, so not the same client).

Each runtime-vs-Redis ratio compares the same client against both servers, run back to back in each
round (alternating which goes first), as the median of the per-round ratios; the target (issue 16) is
runtime GET >= 1.0x Redis-direct GET throughput on the recommended protocol. Other figures are
medians over the rounds; nothing is asserted, and nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
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
    free_port,
    kill_and_reap,
    pin_bench_process,
    process_cpu_s,
    report,
    spawn_ready,
)
from service import TOKEN, VALUE, RuntimeProcess, run_load, wait_ready_and_seed

PAYLOAD = json.dumps(VALUE).encode()
C_CLIENT_SCALE = 10  # requests per round of the C client, as a multiple of --requests
# A client busy this share of the wall time (of its one core) on both sides sets the pace itself.
CLIENT_BOUND_BUSY = 0.95


# The Python floor's server: one constant reply per GET read, +OK per command of anything else (the
# client's AUTH and CLIENT SETINFO hand-shake); runs as its own pinned process like redis-server.
_FLOOR_SOURCE = r"""
import asyncio, sys
try:
    import uvloop
    new_loop = uvloop.new_event_loop
except ImportError:
    new_loop = asyncio.new_event_loop
payload = sys.stdin.buffer.read()
reply = b"$%d\r\n%b\r\n" % (len(payload), payload)
get_head = b"*2\r\n$3\r\nGET\r\n"

class Floor(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if data[:13] == get_head:
            self.transport.write(reply)
        else:
            self.transport.write(b"+OK\r\n" * (data.count(b"\r\n*") + (data[:1] == b"*")))

async def serve():
    server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()

loop = new_loop()
loop.run_until_complete(serve())
"""


class FloorServer:
    """The Python floor (see the module docstring): started pinned to ``cores``, killed by ``stop``."""

    def __init__(self, payload: bytes, cores: list[int] | None) -> None:
        self.port = free_port()
        self.payload = payload
        self.cores = cores
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait for its "ready" line; raises RuntimeError if it does not come up."""
        self.process = spawn_ready(_FLOOR_SOURCE, [str(self.port)], self.cores, stdin_data=self.payload)
        if self.process is None:
            raise RuntimeError("the Python floor server did not start")

    def stop(self) -> None:
        """Kill it and reap it."""
        kill_and_reap(self.process)
        self.process = None


def round_ratios(loads: list[dict[str, float]], anchors: list[dict[str, float]]) -> list[float]:
    """Throughput of ``loads`` over ``anchors``, round by round (rounds ran back to back), sorted."""
    return sorted(a["rps"] / b["rps"] for a, b in zip(loads, anchors, strict=True))


def client_cpu_s() -> float:
    """CPU seconds of the load generators so far: this process, plus the redis-benchmark runs that
    finished (waited-for children; the servers it started are still running, so not counted)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class RawRespClient:
    """One connection; ``get`` sends a pre-encoded GET and reads one bulk reply (no pipelining)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, password: str | None) -> RawRespClient:
        """Connect to 127.0.0.1:``port`` and AUTH when a password is given."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        if password:
            writer.write(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%b\r\n" % (len(password), password.encode()))
            line = await reader.readline()
            if line != b"+OK\r\n":
                raise RuntimeError(f"AUTH answered {line!r}")
        return client

    async def get(self, command: bytes) -> bytes:
        """Send one encoded GET, return the bulk payload."""
        self.writer.write(command)
        line = await self.reader.readline()
        if line[:1] != b"$" or line == b"$-1\r\n":
            raise RuntimeError(f"GET answered {line!r}")
        return (await self.reader.readexactly(int(line[1:-2]) + 2))[:-2]

    async def close(self) -> None:
        """Close the socket."""
        self.writer.close()
        await self.writer.wait_closed()


def encode_get(key: bytes) -> bytes:
    """``GET key`` as a RESP array."""
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(key), key)


async def run_raw_load(clients: list[RawRespClient], command: bytes, total: int) -> dict[str, float]:
    """Each connection runs sequential GETs until ``total`` finished; rps and latency percentiles."""
    pool = list(clients)

    async def call() -> None:
        client = pool.pop()
        try:
            await client.get(command)
        finally:
            pool.append(client)

    return await run_load(call, total, len(clients))


async def run_c_client(
    port: int, password: str | None, key: str, total: int, concurrency: int, cores: list[int]
) -> dict[str, float]:
    """``redis-benchmark`` GET ``key``: ``concurrency`` connections, one request in flight on each."""
    command = ["taskset", "-c", ",".join(map(str, cores)), "redis-benchmark", "-h", "127.0.0.1"]
    command += ["-p", str(port), "-c", str(concurrency), "-n", str(total), "-P", "1", "--csv"]
    if password is not None:
        command += ["-a", password]
    process = await asyncio.create_subprocess_exec(
        *command, "GET", key, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    rows = [row for row in csv.DictReader(out.decode().splitlines()) if row.get("rps")]
    if process.returncode != 0 or not rows:
        raise RuntimeError(f"redis-benchmark failed ({process.returncode}): {err.decode()[-500:]}")
    return {
        "rps": float(rows[0]["rps"]),
        "p50_ms": float(rows[0]["p50_latency_ms"]),
        "p99_ms": float(rows[0]["p99_latency_ms"]),
    }


async def bench(args: argparse.Namespace) -> list[Figure]:
    placement = pin_bench_process()
    print(placement.describe())
    server = RedisServer(placement.server_cores)
    server.start()
    resp_port = free_port()
    runtime = RuntimeProcess(
        server.url,
        placement.server_cores,
        extra_env={"CACHEWARDEN_RESP_PORT": str(resp_port), "CACHEWARDEN_RESP_MAX_CONNECTIONS": "1000"},
    )
    floor = FloorServer(PAYLOAD, placement.server_cores)
    figures: list[Figure] = []
    try:
        runtime.start()
        floor.start()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
        async with aiohttp.ClientSession(base_url=runtime.base, connector=connector, headers=headers) as http:
            await wait_ready_and_seed(http)
            redis_port = int(server.url.rsplit(":", 1)[1].split("/")[0])
            # The same client settings on both sides. RESP2 explicitly: redis-py 8 left to itself
            # speaks RESP3 to Redis (HELLO 3, maintenance notifications on), another parser path
            # than the RESP2 it speaks to the runtime, so the anchor would not be the same client.
            same = {"host": "127.0.0.1", "max_connections": args.concurrency, "protocol": 2}
            direct = aioredis.Redis(port=redis_port, **same)
            via_runtime = aioredis.Redis(port=resp_port, password=TOKEN, **same)
            to_floor = aioredis.Redis(port=floor.port, **same)
            await direct.set("bench:raw", PAYLOAD)
            await via_runtime.set("bench:resp", PAYLOAD)  # bytes in, bytes out: the same payload size
            assert await via_runtime.get("bench:resp") == PAYLOAD
            assert await to_floor.get("bench:floor") == PAYLOAD
            raw_direct = [await RawRespClient.connect(redis_port, None) for _ in range(args.concurrency)]
            raw_runtime = [await RawRespClient.connect(resp_port, TOKEN) for _ in range(args.concurrency)]
            get_raw, get_resp = encode_get(b"bench:raw"), encode_get(b"bench:resp")

            async def data_get() -> None:
                async with http.get("/data/v1/keys/bench-key") as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"data GET answered {response.status}")

            async def healthz() -> None:
                async with http.get("/healthz") as response:
                    await response.read()

            async def redis_py_direct() -> None:
                await direct.get("bench:raw")

            async def redis_py_runtime() -> None:
                await via_runtime.get("bench:resp")

            async def redis_py_floor() -> None:
                await to_floor.get("bench:floor")

            loads: dict[str, Callable[[int], Awaitable[dict[str, float]]]] = {
                "redis-py -> Redis GET (anchor)": lambda n: run_load(redis_py_direct, n, args.concurrency),
                "redis-py -> runtime RESP GET (L1 hit)": lambda n: run_load(
                    redis_py_runtime, n, args.concurrency
                ),
                "redis-py -> Python floor GET": lambda n: run_load(redis_py_floor, n, args.concurrency),
                "raw RESP -> Redis GET (anchor)": lambda n: run_raw_load(raw_direct, get_raw, n),
                "raw RESP -> runtime RESP GET (L1 hit)": lambda n: run_raw_load(raw_runtime, get_resp, n),
                "aiohttp -> runtime HTTP data GET (L1 hit)": lambda n: run_load(
                    data_get, n, args.concurrency
                ),
                "aiohttp -> runtime /healthz (HTTP floor)": lambda n: run_load(healthz, n, args.concurrency),
            }
            scale: dict[str, int] = {}  # requests per round as a multiple of --requests, where not 1
            if shutil.which("redis-benchmark"):
                conc, cores = args.concurrency, placement.bench_cores
                # 10x the requests: the C client finishes a round in tens of milliseconds otherwise.
                loads["redis-benchmark (C) -> Redis GET (anchor)"] = lambda n: run_c_client(
                    redis_port, None, "bench:raw", n * C_CLIENT_SCALE, conc, cores
                )
                loads["redis-benchmark (C) -> runtime RESP GET (L1 hit)"] = lambda n: run_c_client(
                    resp_port, TOKEN, "bench:resp", n * C_CLIENT_SCALE, conc, cores
                )
                loads["redis-benchmark (C) -> Python floor GET"] = lambda n: run_c_client(
                    floor.port, None, "bench:floor", n * C_CLIENT_SCALE, conc, cores
                )
                scale.update(dict.fromkeys(list(loads)[-3:], C_CLIENT_SCALE))
            else:
                print(
                    "redis-benchmark not installed (Debian package redis-tools): the C-client lane is skipped"
                )
            for load in loads.values():  # warm-up: connections, code paths
                await load(min(500, args.requests))
            results: dict[str, list[dict[str, float]]] = {name: [] for name in loads}
            cpu_s = dict.fromkeys(loads, 0.0)  # CPU time of the server process that answered the load
            client_s = dict.fromkeys(loads, 0.0)  # CPU time of the client (this process or redis-benchmark)
            wall_s = dict.fromkeys(loads, 0.0)
            pids = {
                "runtime": runtime.process.pid if runtime.process else None,
                "Redis": server.pid,
                "Python floor": floor.process.pid if floor.process else None,
            }
            # The loads one client runs against each server, compared with each other.
            groups: dict[str, list[str]] = {}
            for name in loads:
                groups.setdefault(name.split(" -> ")[0], []).append(name)
            for round_index in range(args.rounds):
                # A client's loads run back to back, their order rotated every round, so drift from a
                # neighbour's load lands on every side of each ratio.
                order = [
                    name
                    for group in groups.values()
                    for name in group[round_index % len(group) :] + group[: round_index % len(group)]
                ]
                for name in order:
                    pid = next(pid for server_name, pid in pids.items() if f"-> {server_name}" in name)
                    before, client_before, started = process_cpu_s(pid), client_cpu_s(), time.perf_counter()
                    results[name].append(await loads[name](args.requests))
                    wall_s[name] += time.perf_counter() - started
                    client_s[name] += client_cpu_s() - client_before
                    cpu_s[name] += process_cpu_s(pid) - before
            await direct.aclose()
            await via_runtime.aclose()
            await to_floor.aclose()
            for raw_client in raw_direct + raw_runtime:
                await raw_client.close()
            async with http.get("/internal/cache/metrics") as response:
                hits = (await response.json())["cache_metrics"]
        medians: dict[str, float] = {}
        busy = {name: client_s[name] / wall_s[name] if wall_s[name] else 0.0 for name in results}
        for name, rounds in results.items():
            rps = medians[name] = statistics.median(r["rps"] for r in rounds)
            requests = len(rounds) * args.requests * scale.get(name, 1)
            figures += [
                Figure("R1", f"{name}: throughput", rps, "req/s"),
                Figure("R1", f"{name}: p50", statistics.median(r["p50_ms"] for r in rounds), "ms"),
                Figure("R1", f"{name}: p99", statistics.median(r["p99_ms"] for r in rounds), "ms"),
                Figure(
                    "R1",
                    f"{name}: server CPU per request",
                    cpu_s[name] / requests * 1e6,
                    "us",
                    note="user+system time of the answering process (10 ms ticks, summed over the rounds)",
                ),
                Figure(
                    "R1",
                    f"{name}: client CPU per request",
                    client_s[name] / requests * 1e6,
                    "us",
                    note=f"client busy {busy[name]:.0%} of the load's wall time (1 core: 100%)",
                ),
            ]
        for client in ("redis-py", "raw RESP", "redis-benchmark (C)"):
            runtime_name = f"{client} -> runtime RESP GET (L1 hit)"
            redis_name = f"{client} -> Redis GET (anchor)"
            if redis_name not in results:
                continue
            per_round = round_ratios(results[runtime_name], results[redis_name])
            ratio = statistics.median(per_round)
            bound = ""
            if min(busy[runtime_name], busy[redis_name]) >= CLIENT_BOUND_BUSY:
                # The client's own CPU sets the pace on both sides: the ratio is its cost per request
                # against each server (reply timing, a busier neighbour core), not the servers' speed.
                per_request = client_s[runtime_name] / client_s[redis_name] if client_s[redis_name] else 0.0
                bound = (
                    f"; client-bound (busy {busy[redis_name]:.0%} / {busy[runtime_name]:.0%}), its CPU per "
                    f"request against the runtime {per_request:.2f}x that against Redis"
                )
            figures.append(
                Figure(
                    "R1",
                    f"runtime RESP GET / Redis GET, {client} client",
                    ratio,
                    "x",
                    ">= 1.0x",
                    ratio >= 1.0,
                    note=f"median of {len(per_round)} per-round ratios, "
                    f"range {per_round[0]:.2f}-{per_round[-1]:.2f}{bound}",
                )
            )
            floor_name = f"{client} -> Python floor GET"
            if floor_name in results:
                floor_rounds = round_ratios(results[floor_name], results[redis_name])
                figures.append(
                    Figure(
                        "R1",
                        f"Python floor GET / Redis GET, {client} client",
                        statistics.median(floor_rounds),
                        "x",
                        note=f"median of {len(floor_rounds)} per-round ratios, range "
                        f"{floor_rounds[0]:.2f}-{floor_rounds[-1]:.2f}: the most a Python front end on "
                        "this event loop reaches with this client (constant reply, no parsing or lookup)",
                    )
                )
        http_ratio = (
            medians["aiohttp -> runtime HTTP data GET (L1 hit)"] / medians["redis-py -> Redis GET (anchor)"]
        )
        figures += [
            Figure(
                "R1",
                "runtime HTTP data GET / redis-py Redis GET",
                http_ratio,
                "x",
                ">= 1.0x",
                http_ratio >= 1.0,
                note="different clients (aiohttp vs redis-py): the HTTP path's standing, not a like-for-like",
            ),
            Figure("R1", "runtime L1 hit rate during the run", hits["l1_hit_rate"], ""),
        ]
    finally:
        floor.stop()
        runtime.stop()
        server.close()
    print(
        f"load: {args.rounds} rounds x {args.requests} requests per load, {args.concurrency} in flight "
        f"(one per connection, no pipelining); load average at end {os.getloadavg()[0]:.2f}"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (optionally save) the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_load_arguments(parser, requests=2000, rounds=10)
    args = apply_quick(parser.parse_args(argv))
    report(asyncio.run(bench(args)), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
