"""The troubleshooting guide, run as written against real runtimes with real Redis and real traffic.

Every curl command is read from the guide's own text (``guide_doc.parse_guide``: 91 curl lines, 73
distinct method+path pairs), run through bash and curl with only the host replaced and a bearer
token added, and every ``jq`` filter the guide applies to its answer is evaluated by the jq binary.
Two runtimes share one redis-server, as two pods of one policy: one stores, the other (the one the
guide talks to) reads, so Redis hits, L1 hits, misses, compression and evictions all happen.

A second test drives exactly known traffic and checks the figures the guide reads against it; a
third runs the guide's multi-line shell snippets (the monitoring script, the emergency reset, the
Redis connectivity test, the phase-1 diagnosis) unchanged apart from URL and auth.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.integration.guide_doc import GUIDE, GuideCommand, parse_guide
from tests.integration.guide_runtime import (
    ADMIN,
    READ,
    RuntimeProcess,
    drive,
    guide_shell,
    jq,
    jq_available,
    run_guide_curl,
    text_of,
)

if TYPE_CHECKING:
    from tests.integration.conftest import RedisFactory, RedisProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not jq_available(), reason="needs the jq and curl binaries"),
]
MIB = 1024 * 1024
COMMANDS = parse_guide()


@pytest.fixture(scope="module")
def pods(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RuntimeProcess, RuntimeProcess]]:
    """Two runtime processes on the shared redis-server (flushed first)."""
    redis_server.command("FLUSHALL")
    base = tmp_path_factory.mktemp("guide-pods")
    first = RuntimeProcess(base / "a", redis_server.url)
    second = RuntimeProcess(base / "b", redis_server.url)
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_the_guide_is_what_the_issue_counted() -> None:
    assert len(COMMANDS) == 91
    assert len({command.pair for command in COMMANDS}) == 73
    # The variable-captured answers get their filters too (monitoring script, phase 1 baseline).
    monitor = next(command for command in COMMANDS if command.line == 141)
    assert monitor.filters == [
        ".cache_hit_rate // 0",
        ".total_operations // 0",
        ".memory_usage.total_mb // 0",
    ]


def _iterated_array(filter_text: str) -> str | None:
    """For a filter that starts by iterating an array (``.errors[] | ...``), the array's path."""
    match = re.match(r"^\s*(\.[A-Za-z_][A-Za-z0-9_.]*)\[\]", filter_text)
    return match.group(1) if match else None


def check_filters(command: GuideCommand, answer: Path) -> list[str]:
    """What the guide's filters fail to find in ``answer`` (empty when they all find data)."""
    problems = []
    for filter_text in command.filters:
        values = jq(filter_text, answer)
        array = _iterated_array(filter_text)
        if not values:
            if array is None:
                problems.append(f"{filter_text!r} output nothing")
            elif jq(f"{array} | type", answer) != ["array"]:
                problems.append(f"{array} is not an array")
            continue
        for value in values:
            if value is None:
                problems.append(f"{filter_text!r} is null")
            elif isinstance(value, dict):
                nulls = sorted(key for key, item in value.items() if item is None)
                if nulls:
                    problems.append(f"{filter_text[:40]!r}: null {nulls}")
    return problems


def test_every_guide_command_answers_with_data(
    pods: tuple[RuntimeProcess, RuntimeProcess], tmp_path: Path
) -> None:
    guide_pod, other_pod = pods
    answer = tmp_path / "answer"
    failures: dict[str, Any] = {}
    statuses: dict[tuple[str, str], int] = {}
    with guide_pod.client() as reader, other_pod.client() as writer:
        drive(reader, writer)
        for index, command in enumerate(COMMANDS):
            status = run_guide_curl(command.text, guide_pod.base, ADMIN, answer)
            statuses[command.pair] = status
            if not 200 <= status < 300:
                failures[f"{command.line} {command.method} {command.path}"] = (
                    status,
                    answer.read_text()[:300],
                )
                continue
            if command.path.endswith("/metrics/prometheus"):
                assert "cachewarden_" in answer.read_text()
            elif command.method == "GET" or command.filters:
                json.loads(answer.read_text())
            problems = check_filters(command, answer)
            if problems:
                failures[f"{command.line} {command.method} {command.path}"] = problems
            if command.method == "POST":
                # The guide's actions clear, restart and reconfigure: keep real traffic flowing.
                drive(reader, writer, texts=20, rounds=1, misses=3, large_values=1, tag=f"{index}-")
    assert not failures, json.dumps(failures, indent=1)
    assert len(statuses) == 73


def test_the_guide_actions_are_recorded_and_need_the_admin_token(
    pods: tuple[RuntimeProcess, RuntimeProcess],
) -> None:
    guide_pod, _ = pods
    actions = sorted(
        {
            command.path
            for command in COMMANDS
            if command.method == "POST"
            and not command.path.endswith(
                ("debug/key-generation", "test-consistency", "leak-analysis", "post-incident")
            )
        }
    )
    with httpx.Client(base_url=guide_pod.base, headers={"Authorization": f"Bearer {READ}"}) as client:
        for path in actions:
            assert client.post(path, json={}).status_code == 403, path
    with guide_pod.client() as client:
        for path in ("restart", "emergency/clear-all", "memory/aggressive-cleanup", "optimize/ttl-strategy"):
            assert (
                client.post(f"/internal/cache/{path}", params={"dry_run": "true"}).json()["dry_run"] is True
            )
        assert client.post("/internal/cache/recovery/restore-service", json={}).status_code == 200
        journal = client.get("/internal/cache/actions").json()
        recorded = set(journal["executed"]) | set(journal["dry_runs"])
        for path in (
            "restart",
            "emergency/clear-all",
            "memory/aggressive-cleanup",
            "optimize/ttl-strategy",
            "recovery/restore-service",
        ):
            assert path in recorded, path
        # dry_run changes nothing and says so; Idempotency-Key replays the first answer.
        entries = client.get("/internal/cache/status").json()["memory"]["entries"]
        dry = client.post("/internal/cache/emergency/clear-all?dry_run=true").json()
        assert (
            dry["dry_run"] is True
            and client.get("/internal/cache/status").json()["memory"]["entries"] == entries
        )
        first = client.post("/internal/cache/memory-cleanup", headers={"Idempotency-Key": "guide-cleanup-1"})
        again = client.post("/internal/cache/memory-cleanup", headers={"Idempotency-Key": "guide-cleanup-1"})
        assert again.headers.get("idempotent-replayed") == "true" and again.json() == first.json()
        # Redis server config is only read unless the runtime was started with the opt-in.
        server = client.post(
            "/internal/cache/redis/optimize-server", json={"memory_policy": "allkeys-lru"}
        ).json()
        assert server["applied"] is False and "CACHEWARDEN_ALLOW_REDIS_CONFIG_SET" in server["reason"]
        assert server["before"]["maxmemory-policy"] == "noeviction"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/internal/cache/config/update", {"default_ttl": "an hour"}, "body.default_ttl"),
        ("/internal/cache/config/update", {"defualt_ttl": 3600}, "body.defualt_ttl"),
        (
            "/internal/cache/config/update",
            {"operation_ttls": {"translate": 60}},
            "body.operation_ttls.translate",
        ),
        ("/internal/cache/config/update", {"compression_level": 42}, "body.compression_level"),
        ("/internal/cache/config/update", {"default_ttl": 1e999}, "body.default_ttl"),
        (
            "/internal/cache/text-processor/configure",
            {"remove_special_chars": True},
            "body.remove_special_chars",
        ),
        ("/internal/cache/optimize/ttl-strategy", {"min_ttl": -5}, "body.min_ttl"),
        ("/internal/cache/config/apply-preset", {"preset": "fastest"}, "body.preset"),
        ("/internal/cache/redis/optimize-server", {"max_memory": "lots"}, "body.max_memory"),
    ],
)
def test_bad_guide_bodies_get_a_422_naming_the_field(
    pods: tuple[RuntimeProcess, RuntimeProcess], path: str, body: Any, field: str
) -> None:
    with pods[0].client() as client:
        response = client.post(
            path,
            content=json.dumps(body).replace("Infinity", "1e999"),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 422, response.text
    assert field in [item["field"] for item in response.json()["problems"]], response.text


def test_figures_match_known_traffic(redis_factory: RedisFactory, tmp_path: Path) -> None:
    server = redis_factory.start()
    guide_pod = RuntimeProcess(tmp_path / "a", server.url).start()
    other_pod = RuntimeProcess(tmp_path / "b", server.url).start()
    try:
        with guide_pod.client() as reader, other_pod.client() as writer:
            sent = drive(reader, writer, texts=40, rounds=2, misses=10, large_values=3)
            assert sent == {"stored": 40, "hits": 80, "misses": 10, "large": 3, "refused": 0}
            metrics = reader.get("/internal/cache/metrics").json()
            # 40 Redis hits (first round), 40 + 3 L1 hits, 10 misses; 3 sets; no deletes.
            lookups, hits = 80 + 10 + 3, 80 + 3
            assert metrics["cache_hit_rate"] == pytest.approx(hits / lookups, abs=1e-4)
            assert metrics["memory_cache_hit_rate"] == pytest.approx(43 / lookups, abs=1e-4)
            # The engine's L2 hit rate: the share of L1 misses that Redis answered.
            assert metrics["redis_cache_hit_rate"] == pytest.approx(40 / (40 + 10), abs=1e-4)
            assert metrics["total_operations"] == lookups + 3
            status = reader.get("/internal/cache/status").json()
            assert metrics["memory_usage"]["total_mb"] == pytest.approx(
                status["memory"]["bytes"] / MIB, abs=1e-4
            )

            operations = reader.get("/internal/cache/operation-stats").json()["operations"]
            for name in ("summarize", "sentiment", "key_points", "questions"):
                assert operations[name]["count"] == 16 and operations[name]["hit_rate"] == 1.0
            assert operations["qa"]["count"] == 26
            assert operations["qa"]["hit_rate"] == pytest.approx(16 / 26, abs=1e-4)
            assert operations["get"]["count"] == lookups

            keys = reader.get("/internal/cache/key-analysis").json()
            assert keys["total_keys"] == 43
            assert keys["text_tier_stats"] == {"s": 10, "m": 10, "l": 10, "x": 10}
            assert keys["patterns"]["d:guide/*"] == 3
            assert (
                sum(count for pattern, count in keys["patterns"].items() if pattern.startswith("ai1:qa:"))
                == 8
            )

            memory = reader.get("/internal/cache/memory-stats").json()
            assert memory["total_cache_size_mb"] == pytest.approx(memory["l1"]["bytes"] / MIB, abs=1e-4)
            used = int(server.command("INFO", "memory")["used_memory"])
            assert memory["redis_memory_used_bytes"] == pytest.approx(used, rel=0.2)

            compression = reader.get("/internal/cache/compression-stats").json()
            raw = compression["compression"]
            assert compression["total_bytes_saved"] == raw["bytes_in"] - raw["bytes_out"] > 1_500_000
            assert compression["avg_compression_ratio"] == pytest.approx(
                raw["bytes_out"] / raw["bytes_in"], abs=1e-4
            )
            assert compression["avg_decompression_time"] is not None  # 40 Redis hits were decoded

            lookup = reader.post(
                "/data/v1/ai/lookup",
                json={"operation": "summarize", "text": text_of(0, 200), "options": {"max_length": 100}},
            ).json()
            described = reader.post(
                "/internal/cache/debug/key-generation",
                json={"operation": "summarize", "text": text_of(0, 200), "options": {"max_length": 100}},
            ).json()
            assert described["cache_key"] == lookup["key"] and described["consistency_verified"] is True

            assert (
                reader.post("/internal/cache/invalidate", params={"pattern": "ai1:qa:*"}).status_code == 200
            )
            reader.post("/internal/cache/clear")
            reader.post("/internal/cache/emergency/clear-all")
            invalidation = reader.get("/internal/cache/invalidation-stats").json()
            assert invalidation["manual_clear_count"] == 2
            assert invalidation["pattern_invalidations"] == 1 and invalidation["hourly_invalidations"] > 0
            after = reader.get("/internal/cache/key-analysis").json()
            assert after["total_keys"] == 0

            # Restart: a new engine, L1 empty, Redis entries kept (re-stored and read back through Redis).
            drive(reader, writer, texts=10, rounds=1, misses=0, large_values=0, tag="again-")
            restart = reader.post("/internal/cache/restart").json()
            assert restart["restarted"] is True and restart["after"]["entries"] == 0
            assert restart["l1_entries_dropped"] == restart["before"]["entries"] > 0

            # A Redis failure shows up where the guide looks for errors.
            server.stop()
            reader.post("/data/v1/ai/lookup", json={"operation": "qa", "text": "after the outage"})
            errors = reader.get("/internal/cache/health").json()["errors"]
            assert any(item["error_type"].startswith("redis_") for item in errors), errors
            recent = reader.get("/internal/cache/recent-errors").json()["errors"]
            assert all({"timestamp", "error_type", "message"} <= set(item) for item in recent) and recent
    finally:
        guide_pod.stop()
        other_pod.stop()


def _block(heading: str) -> str:
    """The first ```bash block after ``heading`` in the guide."""
    text = GUIDE.read_text()
    start = text.index(heading)
    match = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert match is not None
    return match.group(1)


def _run(script: str, base: str, *, timeout: float, stdin: str = "", cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["bash", "-c", guide_shell(script, base, ADMIN)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    return done.stdout + done.stderr


def test_the_monitoring_script_prints_real_figures(
    pods: tuple[RuntimeProcess, RuntimeProcess], tmp_path: Path
) -> None:
    guide_pod, other_pod = pods
    with guide_pod.client() as reader, other_pod.client() as writer:
        drive(reader, writer, texts=20, rounds=2, misses=5, large_values=1, tag="monitor-")
        metrics = reader.get("/internal/cache/metrics").json()
    block = _block("### Real-Time Monitoring Dashboard")
    # The block writes monitor_cache.sh and runs it (an endless loop, 10 s apart): stop it after the
    # first line, as a person would with Ctrl-C.
    try:
        subprocess.run(
            ["bash", "-c", guide_shell(block, guide_pod.base, ADMIN)],
            capture_output=True,
            text=True,
            timeout=4,
            cwd=tmp_path,
            check=False,
        )
        raise AssertionError("the monitoring loop ended by itself")
    except subprocess.TimeoutExpired as stopped:
        output = (
            (stopped.stdout or b"").decode() if isinstance(stopped.stdout, bytes) else (stopped.stdout or "")
        )
    assert (tmp_path / "monitor_cache.sh").exists()
    line = re.search(r"Hit Rate:\s*([0-9.]+)% \| Operations:\s*(\d+) \| Memory:\s*([0-9.]+) MB", output)
    assert line is not None, output
    assert float(line.group(1)) == pytest.approx(metrics["cache_hit_rate"] * 100, abs=0.06)
    assert int(line.group(2)) == metrics["total_operations"]
    assert float(line.group(3)) == pytest.approx(metrics["memory_usage"]["total_mb"], abs=0.06)


def test_the_other_snippets_run(pods: tuple[RuntimeProcess, RuntimeProcess], tmp_path: Path) -> None:
    guide_pod, other_pod = pods
    with guide_pod.client() as reader, other_pod.client() as writer:
        drive(reader, writer, texts=10, rounds=2, misses=2, large_values=0, tag="snippets-")
    phase1 = _run(_block("#### Phase 1: System Health Assessment"), guide_pod.base, timeout=60)
    assert "Cache unreachable" not in phase1
    baseline = re.search(
        r'\{"hit_rate":([0-9.]+),"operations":(\d+),"memory_mb":([0-9.]+)\}',
        phase1.replace(" ", "").replace("\n", ""),
    )
    assert baseline is not None, phase1

    connectivity = _run(_block("#### Network Connectivity Testing"), guide_pod.base, timeout=60)
    assert "PONG" in connectivity and "Redis not responding" not in connectivity, connectivity

    reset = _run(
        _block("#### Complete Cache System Reset"), guide_pod.base, timeout=60, stdin="y\n", cwd=tmp_path
    )
    assert "Emergency reset completed" in reset and '"' in reset.split("Verifying system recovery...")[1]
    assert list(tmp_path.glob("emergency_backup_*.json"))
    backup = json.loads(next(tmp_path.glob("emergency_backup_*.json")).read_text())
    assert backup["config"]["preset"] and len(backup["hash"]) == 64
    with guide_pod.client() as client:
        executed = client.get("/internal/cache/actions").json()["executed"]
    assert {"emergency/clear-all", "emergency/reset-config", "emergency/restart"} <= set(executed)


def test_cachewarden_guide_merges_every_pod(
    pods: tuple[RuntimeProcess, RuntimeProcess], tmp_path: Path
) -> None:
    first, second = pods
    with first.client() as reader, second.client() as writer:
        drive(reader, writer, texts=10, rounds=1, misses=4, large_values=0, tag="merge-")
        drive(writer, reader, texts=10, rounds=2, misses=1, large_values=0, tag="merge-back-")
        each = [client.get("/internal/cache/metrics").json() for client in (reader, writer)]
    token = tmp_path / "admin-token"
    token.write_text(ADMIN + "\n")
    command = [
        sys.executable,
        "-m",
        "cachewarden.cli",
        "guide",
        "--token-file",
        str(token),
        "--pod-url",
        first.base,
        "--pod-url",
        second.base,
    ]
    done = subprocess.run(
        [*command, "/internal/cache/metrics"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    merged = json.loads(done.stdout)
    assert merged["merged"]["answered"] == 2 and set(merged["pods"]) == {first.base, second.base}
    assert merged["total_operations"] == sum(item["total_operations"] for item in each)
    hits = sum(item["cache_metrics"]["hits"] for item in each)
    lookups = sum(item["cache_metrics"]["total_requests"] for item in each)
    assert merged["cache_hit_rate"] == pytest.approx(hits / lookups, abs=1e-4)
    assert merged["memory_usage"]["total_mb"] == pytest.approx(
        sum(item["memory_usage"]["total_mb"] for item in each), abs=1e-3
    )
    action = subprocess.run(
        [*command, "-X", "POST", "--dry-run", "/internal/cache/memory-cleanup"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert action.returncode == 0, action.stderr
    answer = json.loads(action.stdout)
    assert answer["dry_run"] is True and answer["action"] == "memory-cleanup"
    assert all(item["dry_run"] for item in answer["pods"].values())


def guide_blocks() -> list[tuple[int, str, str]]:
    """Every ```bash block of the guide: (line, heading, text)."""
    text = GUIDE.read_text()
    found = []
    for match in re.finditer(r"```bash\n(.*?)```", text, re.S):
        headings = re.findall(r"^#+ (.+)$|^\*\*(.+)\*\*:?$", text[: match.start()], re.M)
        heading = [a or b for a, b in headings][-1].strip()
        found.append((text.count("\n", 0, match.start()) + 1, heading, match.group(1)))
    return found


def test_every_snippet_runs_with_every_curl_answered(
    pods: tuple[RuntimeProcess, RuntimeProcess], tmp_path: Path
) -> None:
    """Each bash block, as the guide writes it (host and token changed), under ``set -eo pipefail``
    with ``curl --fail-with-body``: any HTTP error, jq error or failing command fails the block."""
    guide_pod, other_pod = pods
    blocks = guide_blocks()
    assert len(blocks) == 56
    failed = {}
    with guide_pod.client() as reader, other_pod.client() as writer:
        for line, heading, text in blocks:
            if heading == "Real-Time Monitoring Dashboard":
                continue  # an endless loop: test_the_monitoring_script_prints_real_figures
            drive(reader, writer, texts=10, rounds=1, misses=2, large_values=0, tag=f"block-{line}-")
            # The guide's own `curl -f` is the same check; curl refuses both flags together.
            script = "set -eo pipefail\n" + guide_shell(
                text.replace("curl -f ", "curl "), guide_pod.base, ADMIN
            )
            script = script.replace("curl -H", "curl --fail-with-body -H")
            done = subprocess.run(
                ["bash", "-c", script],
                input="y\n",
                capture_output=True,
                text=True,
                timeout=120,
                cwd=tmp_path,
                check=False,
            )
            if done.returncode != 0:
                failed[f"{line} {heading}"] = (done.returncode, (done.stdout + done.stderr)[-600:])
    assert not failed, json.dumps(failed, indent=1)
