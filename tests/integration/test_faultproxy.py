"""devcluster.faultproxy against a real redis-server: added latency on PING round trips, runtime control,
ordering and integrity under jitter, the connection bound, the CLI; and its pure parts.

Timing is only ever asserted as a lower bound ("at least the injected delay"), which a slow or loaded
machine cannot break: the proxy holds every chunk at least that long before forwarding it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from devcluster.faultproxy import (
    MAX_DELAY_MS,
    DelaySchedule,
    DelaySettings,
    FaultProxy,
    FaultProxyError,
    control,
    parse_address,
    parse_command,
)
from tests.integration.conftest import RedisProcess

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def running_proxy(upstream: tuple[str, int], **kwargs: object) -> Iterator[FaultProxy]:
    """A FaultProxy on 127.0.0.1 (any port) serving from its own event loop thread."""
    loop = asyncio.new_event_loop()
    proxy = FaultProxy(("127.0.0.1", 0), upstream, control=("127.0.0.1", 0), **kwargs)  # type: ignore[arg-type]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def client(address: tuple[str, int]) -> redis.Redis:
    """A redis-py client through the proxy (generous timeouts: the proxy delays on purpose)."""
    return redis.Redis(host=address[0], port=address[1], socket_timeout=30, socket_connect_timeout=10)


def ping_rtts(conn: redis.Redis, count: int) -> list[float]:
    """Seconds per PING round trip, ``count`` of them (the connection is opened by a first PING)."""
    assert conn.ping()
    rtts = []
    for _ in range(count):
        started = time.perf_counter()
        assert conn.ping()
        rtts.append(time.perf_counter() - started)
    return rtts


def upstream_of(server: RedisProcess) -> tuple[str, int]:
    return (server.host, server.port)


# --- against a real redis-server -------------------------------------------------------------------


def test_ping_round_trip_carries_the_injected_delay(redis_server: RedisProcess) -> None:
    """50 ms each way: every PING round trip through the proxy takes at least 100 ms."""
    with running_proxy(upstream_of(redis_server), settings=DelaySettings(delay_ms=50)) as proxy:
        conn = client(proxy.listen_address)
        rtts = ping_rtts(conn, 5)
        conn.close()
    assert min(rtts) >= 0.100, rtts
    print(f"PING at 50 ms one-way: min {min(rtts) * 1000:.1f} ms, max {max(rtts) * 1000:.1f} ms")


def test_delay_changes_at_runtime_through_the_control_socket(redis_server: RedisProcess) -> None:
    """set delay_ms over the control socket: the open connection's next PINGs carry the new delay;
    setting it back to 0 keeps the connection working; bad commands are refused naming the field."""
    with running_proxy(upstream_of(redis_server)) as proxy:
        ctl = proxy.control_address
        assert ctl is not None
        assert control(ctl, "get")["delay_ms"] == 0
        conn = client(proxy.listen_address)
        ping_rtts(conn, 3)
        answer = control(ctl, "set delay_ms=40 jitter_ms=5")
        assert answer["ok"] and answer["delay_ms"] == 40 and answer["jitter_ms"] == 5, answer
        assert min(ping_rtts(conn, 5)) >= 0.080
        answer = control(ctl, "set delay_ms=0 jitter_ms=0")
        assert answer["ok"] and answer["delay_ms"] == 0, answer
        assert conn.set("after", "reset") and conn.get("after") == b"reset"
        assert answer["connections_open"] == 1 and answer["bytes_to_client"] > 0, answer

        refused = control(ctl, f"set delay_ms={MAX_DELAY_MS + 1}")
        assert refused["ok"] is False and refused["field"] == "delay_ms", refused
        assert str(MAX_DELAY_MS) in refused["error"]
        assert control(ctl, "set colour=red")["field"] == "colour"
        assert control(ctl, "drop everything")["field"] == "command"
        assert control(ctl, "get")["delay_ms"] == 0  # a refused command changed nothing
        conn.close()


def test_bytes_stay_in_order_and_intact_under_jitter(redis_server: RedisProcess) -> None:
    """Jitter larger than the delay, pipelined commands and a 2 MiB value: every answer in order,
    every byte intact (a chunk is never forwarded before the one read before it)."""
    redis_server.command("FLUSHALL")
    rng = random.Random(7)
    big = bytes(rng.getrandbits(8) for _ in range(2 * 1024 * 1024))
    with running_proxy(
        upstream_of(redis_server), settings=DelaySettings(delay_ms=1, jitter_ms=8), seed=3
    ) as proxy:
        conn = client(proxy.listen_address)
        pipe = conn.pipeline(transaction=False)
        for i in range(300):
            pipe.set(f"fp:{i}", f"value-{i}")
            pipe.get(f"fp:{i}")
        answers = pipe.execute()
        assert answers[1::2] == [f"value-{i}".encode() for i in range(300)]
        assert conn.set("fp:big", big)
        assert conn.get("fp:big") == big
        stats = control(proxy.control_address, "get")  # type: ignore[arg-type]
        assert stats["bytes_to_upstream"] > len(big) and stats["bytes_to_client"] > len(big), stats
        conn.close()


def test_connection_bound(redis_server: RedisProcess) -> None:
    """max_connections=2: a third connection at once is closed straight away and counted; once one
    closes, a new one is accepted again."""
    with running_proxy(upstream_of(redis_server), max_connections=2) as proxy:
        first, second = client(proxy.listen_address), client(proxy.listen_address)
        assert first.ping() and second.ping()
        third = redis.Redis(*proxy.listen_address, socket_timeout=5)
        with pytest.raises(redis.ConnectionError):
            third.ping()
        assert control(proxy.control_address, "get")["connections_refused"] >= 1  # type: ignore[arg-type]
        first.close()
        deadline = time.monotonic() + 10
        while control(proxy.control_address, "get")["connections_open"] > 1:  # type: ignore[arg-type]
            assert time.monotonic() < deadline, "the proxy never noticed the closed connection"
            time.sleep(0.05)
        assert client(proxy.listen_address).ping()
        second.close()


def test_upstream_changes_at_runtime(redis_factory: Any) -> None:
    """set upstream=: new connections go to the new server (a Redis pod replaced behind a stable
    address), open ones stay where they were; a non-loopback upstream is refused and changes nothing."""
    first, second = redis_factory.start(), redis_factory.start()
    first.command("SET", "who", "first")
    second.command("SET", "who", "second")
    with running_proxy(upstream_of(first)) as proxy:
        ctl = proxy.control_address
        assert ctl is not None
        old = client(proxy.listen_address)
        assert old.get("who") == b"first"
        answer = control(ctl, f"set upstream={second.host}:{second.port}")
        assert answer["ok"] and answer["upstream"] == f"{second.host}:{second.port}", answer
        new = client(proxy.listen_address)
        assert new.get("who") == b"second"
        assert old.get("who") == b"first"
        refused = control(ctl, "set upstream=192.0.2.1:6379 delay_ms=5")
        assert refused["ok"] is False and refused["field"] == "upstream", refused
        after = control(ctl, "get")
        assert after["upstream"] == f"{second.host}:{second.port}" and after["delay_ms"] == 0, after
        old.close()
        new.close()


def test_upstream_down_closes_the_client_connection(redis_factory: object) -> None:
    """An upstream that is not listening: the client's connection is closed (an error, not a hang),
    counted as an upstream failure."""
    from tests.integration.conftest import free_port

    with running_proxy(("127.0.0.1", free_port())) as proxy:
        conn = redis.Redis(*proxy.listen_address, socket_timeout=10)
        with pytest.raises(redis.ConnectionError):
            conn.ping()
        assert control(proxy.control_address, "get")["upstream_failures"] >= 1  # type: ignore[arg-type]


def test_cli_runs_is_controlled_and_stops_on_sigterm(redis_server: RedisProcess) -> None:
    """``python -m devcluster.faultproxy``: prints where it listens, delays, obeys ``--send``, exits 0
    on SIGTERM; bad arguments exit 2 naming the flag."""
    argv = [
        sys.executable,
        "-m",
        "devcluster.faultproxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        f"{redis_server.host}:{redis_server.port}",
        "--delay-ms",
        "30",
        "--control",
        "127.0.0.1:0",
    ]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = json.loads(proc.stdout.readline())
        host, port = parse_address(banner["listening"], "listening")
        assert banner["delay_ms"] == 30 and banner["control"]
        conn = client((host, port))
        assert min(ping_rtts(conn, 3)) >= 0.060
        sent = subprocess.run(
            [
                sys.executable,
                "-m",
                "devcluster.faultproxy",
                "--control",
                banner["control"],
                "--send",
                "set delay_ms=0",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert json.loads(sent.stdout)["delay_ms"] == 0
        assert conn.ping()
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "devcluster.faultproxy",
            "--listen",
            "10.1.2.3:6380",
            "--upstream",
            "127.0.0.1:6379",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert bad.returncode == 2 and "--listen" in bad.stderr and "loopback" in bad.stderr, bad.stderr


# --- pure parts ----------------------------------------------------------------------------------


def test_schedule_keeps_order_when_the_delay_drops() -> None:
    """A chunk is never due before the previous one, even if the delay was lowered in between."""
    current = {"settings": DelaySettings(delay_ms=500)}
    schedule = DelaySchedule(lambda: current["settings"], random.Random(1))
    first = schedule.due(10.0)
    assert first == pytest.approx(10.5)
    current["settings"] = DelaySettings(delay_ms=0)
    assert schedule.due(10.1) == first  # would be 10.1, but must not overtake the first chunk
    assert schedule.due(11.0) == pytest.approx(11.0)


def test_schedule_jitter_stays_in_bounds() -> None:
    """Each chunk's extra delay is delay..delay+jitter (or later, to keep the order)."""
    settings = DelaySettings(delay_ms=20, jitter_ms=10)
    schedule = DelaySchedule(lambda: settings, random.Random(5))
    now = 0.0
    previous = float("-inf")
    for _ in range(500):
        now += 0.05  # further apart than the jitter: the order rule never applies
        due = schedule.due(now)
        assert now + 0.020 <= due <= now + 0.030 + 1e-9
        assert due >= previous
        previous = due


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"delay_ms": -1}, "delay_ms"),
        ({"delay_ms": MAX_DELAY_MS + 1}, "delay_ms"),
        ({"delay_ms": "fast"}, "delay_ms"),
        ({"delay_ms": True}, "delay_ms"),
        ({"jitter_ms": -5}, "jitter_ms"),
        ({"delay_ms": MAX_DELAY_MS, "jitter_ms": 1}, "jitter_ms"),
        ({"latency": 5}, "latency"),
    ],
)
def test_settings_errors_name_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(FaultProxyError) as caught:
        DelaySettings.from_mapping(values)
    assert caught.value.field == field
    assert "accepted" in str(caught.value)


def test_settings_from_mapping_keeps_unset_values() -> None:
    current = DelaySettings(delay_ms=100, jitter_ms=7)
    assert DelaySettings.from_mapping({"delay_ms": "5"}, current) == DelaySettings(5, 7)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.9:6380", ("127.0.0.9", 6380)), ("[::1]:1", ("::1", 1)), ("localhost:80", ("localhost", 80))],
)
def test_parse_address_accepts_loopback(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text, "--listen") == expected


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.1:6379",
        "example.com:6379",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        ":6379",
        "127.0.0.1:x",
    ],
)
def test_parse_address_refuses_the_rest(text: str) -> None:
    with pytest.raises(FaultProxyError) as caught:
        parse_address(text, "--upstream")
    assert caught.value.field == "--upstream" and "loopback" in caught.value.accepted


def test_parse_address_port_zero_only_when_allowed() -> None:
    assert parse_address("127.0.0.1:0", "--listen", allow_port_zero=True) == ("127.0.0.1", 0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("get\n", ("get", {})),
        ("set delay_ms=5", ("set", {"delay_ms": "5"})),
        (" set delay_ms=5 jitter_ms=1 ", ("set", {"delay_ms": "5", "jitter_ms": "1"})),
    ],
)
def test_parse_command(line: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_command(line) == expected


@pytest.mark.parametrize("line", ["", "reset", "set", "set delay_ms", "get now=1", "set =3"])
def test_parse_command_refuses(line: str) -> None:
    with pytest.raises(FaultProxyError):
        parse_command(line)
