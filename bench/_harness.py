"""Shared machinery of the engine benchmark: processes, placement, timing and stall measurement.

Everything here is bench-only. It starts its own redis-server (and a blackhole listener) on free
loopback ports, pins processes to cores so the client and the server do not fight for one core, and
offers the timing helpers every scenario uses. Nothing in here asserts on a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REDIS_SERVER_BINARY = shutil.which("redis-server") or "/usr/bin/redis-server"

# Cores chosen for the two sides when the machine has at least two: the benchmark process on 0,
# redis-server (and the blackhole) on 1, so a server busy answering does not steal the client's core.
BENCH_CORE = 0
SERVER_CORE = 1


# --------------------------------------------------------------------------------------------------
# placement


@dataclass
class Placement:
    """Where the benchmark and its servers run; printed at the top of every run."""

    cpu_count: int
    bench_cores: list[int]
    server_cores: list[int] | None
    python: str
    redis_server: str
    loadavg: tuple[float, float, float]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One readable block for the report."""
        server = "not pinned" if self.server_cores is None else f"cores {self.server_cores}"
        lines = [
            f"CPUs online: {self.cpu_count}; load average at start: "
            f"{self.loadavg[0]:.2f} {self.loadavg[1]:.2f} {self.loadavg[2]:.2f}",
            f"bench process pinned to cores {self.bench_cores}; redis-server/blackhole: {server}",
            f"Python {self.python}; {self.redis_server}",
        ]
        lines.extend(self.notes)
        return "\n".join(lines)


def online_cpus() -> list[int]:
    """Cores this process may run on (respects cgroups/cpusets, unlike os.cpu_count())."""
    return sorted(os.sched_getaffinity(0))


def pin_bench_process() -> Placement:
    """Pin this process to BENCH_CORE when two or more cores exist; return the placement to print."""
    cores = online_cpus()
    notes: list[str] = []
    if len(cores) >= 2:
        os.sched_setaffinity(0, {cores[BENCH_CORE]})
        server_cores: list[int] | None = [cores[SERVER_CORE]]
    else:
        server_cores = None
        notes.append("single core: bench and redis-server share it, figures include their contention")
    return Placement(
        cpu_count=len(cores),
        bench_cores=sorted(os.sched_getaffinity(0)),
        server_cores=server_cores,
        python=f"{platform.python_implementation()} {sys.version.split()[0]}",
        redis_server=redis_server_version(),
        loadavg=os.getloadavg(),
        notes=notes,
    )


def redis_server_version() -> str:
    """`redis-server --version`, shortened to the part that matters."""
    try:
        out = subprocess.run(
            [REDIS_SERVER_BINARY, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError as exc:
        return f"redis-server unavailable ({exc})"
    words = out.split()
    version = next((w.split("=", 1)[1] for w in words if w.startswith("v=")), out.strip())
    return f"redis-server {version}"


def pin_process(pid: int, cores: list[int] | None) -> None:
    """Pin another process (one we started) to the given cores; no-op when cores is None."""
    if cores:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(pid, set(cores))


# --------------------------------------------------------------------------------------------------
# ports and processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """In a child before exec: ask the kernel to SIGKILL it when the bench dies, so an interrupted
    run (Ctrl-C, a kill of the bench) never leaves a redis-server or blackhole behind."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def wait_for_port(port: int, timeout_s: float, expect_redis: bool) -> bool:
    """Wait until something answers on the port (a PONG when expect_redis); bounded by timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                if not expect_redis:
                    return True
                sock.sendall(b"PING\r\n")
                sock.settimeout(0.5)
                if sock.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.01)
    return False


class RedisServer:
    """A throwaway redis-server on a loopback port, no persistence, pinned to the server core.

    `stop()` kills it (the port then refuses connections); `start()` brings it back on the same port,
    which is how the outage scenario simulates "Redis went away and came back".
    """

    def __init__(self, cores: list[int] | None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.cores = cores
        self._dir = tempfile.mkdtemp(prefix="cachewarden-bench-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start redis-server and wait for PONG; raises RuntimeError if it does not come up."""
        args = [
            REDIS_SERVER_BINARY,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "no",
            "--dir", self._dir,
            "--logfile", os.path.join(self._dir, "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        pin_process(self._proc.pid, self.cores)
        if not wait_for_port(self.port, timeout_s, expect_redis=True):
            self.stop()
            raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {timeout_s}s")

    def stop(self) -> None:
        """Kill the server (SIGKILL: an abrupt outage, no goodbye to clients) and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        self._proc = None

    def close(self) -> None:
        """Stop and remove the working directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


# A listener that accepts connections, reads and discards whatever arrives, and never answers: the
# classic "Redis is there but hangs" failure. It runs as its own process so its work never lands on
# the benchmark's event loop or GIL.
_BLACKHOLE_SOURCE = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(1024)
srv.setblocking(False)
sel.register(srv, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is srv:
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ)
        else:
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                key.fileobj.close()
"""


def spawn_ready(
    source: str, argv: list[str], cores: list[int] | None, stdin_data: bytes | None = None
) -> subprocess.Popen[bytes] | None:
    """Run ``python -c source *argv`` pinned to ``cores`` (``stdin_data`` written to its stdin), and
    wait for the "ready" line it prints once it listens. The process, or None (reaped) if it exited
    without that line."""
    process = subprocess.Popen(
        [sys.executable, "-c", source, *argv],
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    pin_process(process.pid, cores)
    assert process.stdout is not None
    if stdin_data is not None:
        assert process.stdin is not None
        process.stdin.write(stdin_data)
        process.stdin.close()
    if process.stdout.readline().startswith(b"ready"):
        return process
    kill_and_reap(process)
    return None


def kill_and_reap(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a process we started (if it still runs) and wait for it, bounded."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


class Blackhole:
    """A process that accepts TCP connections on a port and never replies."""

    def __init__(self, port: int, cores: list[int] | None) -> None:
        self.port = port
        self.cores = cores
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start listening; raises RuntimeError if the port cannot be taken in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._proc = spawn_ready(_BLACKHOLE_SOURCE, [str(self.port)], self.cores)
            if self._proc is not None:
                return
            # The port may linger for a moment after redis-server died; retry within the bound.
            if time.monotonic() > deadline:
                raise RuntimeError(f"blackhole could not listen on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the listener; its open connections are reset by the kernel."""
        kill_and_reap(self._proc)
        self._proc = None


# --------------------------------------------------------------------------------------------------
# timing


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic GC around a timed region, as timeit does, so a collection is not billed."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class Timing:
    """Per-operation times (ns) of several repeats of one measurement."""

    per_op_ns: list[float]

    @property
    def median(self) -> float:
        """Median over repeats: the figure we report (robust on a shared machine)."""
        return statistics.median(self.per_op_ns)

    @property
    def best(self) -> float:
        """Best repeat: the closest to the code's own cost, least disturbed by neighbours."""
        return min(self.per_op_ns)

    def ops_per_s(self) -> float:
        """Throughput implied by the median."""
        return 1e9 / self.median if self.median > 0 else float("inf")


def time_sync(fn: Callable[[int], None], iterations: int, repeats: int) -> Timing:
    """Time fn(iterations) (which runs its own tight loop) `repeats` times; per-op ns of each repeat."""
    fn(min(iterations, 1000))  # warm caches and specialise the bytecode
    results: list[float] = []
    with gc_paused():
        for _ in range(repeats):
            start = time.perf_counter_ns()
            fn(iterations)
            results.append((time.perf_counter_ns() - start) / iterations)
    return Timing(results)


async def time_async(fn: Callable[[int], Awaitable[None]], iterations: int, repeats: int) -> Timing:
    """Async twin of time_sync: fn(iterations) awaits in a loop inside one coroutine."""
    await fn(min(iterations, 1000))
    results: list[float] = []
    with gc_paused():
        for _ in range(repeats):
            start = time.perf_counter_ns()
            await fn(iterations)
            results.append((time.perf_counter_ns() - start) / iterations)
    return Timing(results)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in 0..1) of a non-empty list; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


class LoopStallMonitor:
    """Measures how long the event loop fails to run a 1 ms ticker.

    A coroutine sleeps 1 ms at a time and records, for each wake-up, how late it came compared with
    when it asked to be woken. The worst lateness while some work runs, compared with the worst
    lateness of the ticker alone (its baseline jitter), is how long that work blocked the loop.
    """

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.lateness_s: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._running = False

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running:
            asked = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.lateness_s.append(max(0.0, loop.time() - asked))

    async def __aenter__(self) -> LoopStallMonitor:
        self._running = True
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # let the ticker take its first sleep before work starts
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False
        if self._task is not None:
            await self._task

    @property
    def max_stall_s(self) -> float:
        """Worst lateness of a tick, seconds."""
        return max(self.lateness_s, default=0.0)

    def p99_stall_s(self) -> float:
        """99th percentile lateness, seconds."""
        return percentile(self.lateness_s, 0.99)


# --------------------------------------------------------------------------------------------------
# results


@dataclass
class Figure:
    """One printed line: a measured value, optionally with its target and verdict."""

    scenario: str
    name: str
    value: float | int | str | None
    unit: str = ""
    target: str = ""
    passed: bool | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        """PASS / MISS against the target, or blank when the figure has no target."""
        if self.passed is None:
            return ""
        return "PASS" if self.passed else "MISS"

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "scenario": self.scenario,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "verdict": self.verdict,
            "note": self.note,
        }


def format_value(value: float | int | str | None) -> str:
    """Readable number: integers as is, floats with sensible precision."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:  # NaN
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def add_load_arguments(parser: argparse.ArgumentParser, requests: int, rounds: int) -> None:
    """The options every load bench takes: requests per load and round, rounds, concurrency, --quick
    (a tiny run of every path: see :func:`apply_quick`) and --json."""
    parser.add_argument("--requests", type=int, default=requests, help="requests per load per round")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="tiny run: every path once")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")


def apply_quick(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with --quick applied: 200 requests, one round."""
    if args.quick:
        args.requests, args.rounds = 200, 1
    return args


def report(figures: list[Figure], json_path: Path | None) -> None:
    """Print the figures (:func:`print_table`) and, with ``json_path``, write them there as JSON."""
    print_table(figures)
    if json_path:
        json_path.write_text(json.dumps([figure.as_dict() for figure in figures], indent=2))


def print_table(figures: list[Figure]) -> None:
    """Print figures as aligned columns: name, value, unit, target, verdict, note."""
    rows = [(f.name, format_value(f.value), f.unit, f.target, f.verdict, f.note) for f in figures]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2])]
        cells.append(row[3].ljust(widths[3]))
        cells.append(row[4].ljust(widths[4]))
        line = "  ".join(cells)
        if row[5]:
            line += "  " + row[5]
        print("  " + line.rstrip())


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far, from /proc/<pid>/stat (10 ms ticks).

    0.0 when ``pid`` is None or the process cannot be read (gone, or not ours to read): a figure
    that reads 0 says so plainly, where an exception would lose the rest of the run's results.
    """
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rotation(names: list[str], repeat: int) -> list[str]:
    """``names`` in the order repeat number ``repeat`` runs them: started ``repeat`` places further on.

    A fixed order puts each candidate always right after the same neighbour, whose after-effects
    (a burst of large MGET replies, a full socket buffer, the idle state the core was left in) then
    land on that one candidate only.
    """
    shift = repeat % len(names) if names else 0
    return names[shift:] + names[:shift]


async def time_async_interleaved(
    candidates: dict[str, Callable[[int], Awaitable[None]]],
    iterations: int,
    repeats: int,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[str, Timing]:
    """Time several async loops in rotation (a, b, a, b, ...) so a burst of noise from a neighbour
    on the shared machine lands on all of them instead of biasing the ratio. Each repeat starts one
    candidate further on (see :func:`rotation`), so none always runs right after the same one.
    ``clock`` (ns) is wall time by default; ``time.process_time_ns`` gives this process's CPU time."""
    for fn in candidates.values():
        await fn(min(iterations, 1000))
    results: dict[str, list[float]] = {name: [] for name in candidates}
    with gc_paused():
        for repeat in range(repeats):
            for name in rotation(list(candidates), repeat):
                start = clock()
                await candidates[name](iterations)
                results[name].append((clock() - start) / iterations)
    return {name: Timing(values) for name, values in results.items()}


def time_sync_interleaved(
    candidates: dict[str, Callable[[int], None]], iterations: int, repeats: int
) -> dict[str, Timing]:
    """Sync twin of time_async_interleaved."""
    for fn in candidates.values():
        fn(min(iterations, 1000))
    results: dict[str, list[float]] = {name: [] for name in candidates}
    with gc_paused():
        for repeat in range(repeats):
            for name in rotation(list(candidates), repeat):
                start = time.perf_counter_ns()
                candidates[name](iterations)
                results[name].append((time.perf_counter_ns() - start) / iterations)
    return {name: Timing(values) for name, values in results.items()}
