"""The soak's load generator: a client of the runtime pods' data API that keeps its own ledger.

It is a client of our own rather than the sample app because the judge of every answer has to be the
writer of every value: the ledger (``bench/_soak_model.Ledger``) knows each key's sequence of writes,
deletes and invalidations, so every read can be checked. It talks to the runtime pods of one policy by
pod IP (devcluster has no Service routing), as a client-side load balancer does:

- the pod list comes from the API server (Ready pods of the policy, not being deleted), refreshed
  every second; while the API server is down the last list is kept;
- requests go round-robin; a request that meets a connection failure, a timeout or a 502/503/504 is
  retried on another pod after a short backoff (50, 100, 200 ms), at most ``ATTEMPTS`` times in all
  (every operation here is idempotent: a PUT carries its value's sequence, a DELETE or an
  invalidation can be repeated), and a pod that refused a connection is skipped for ``EJECT_S``
  seconds, as client-side load balancers do (outlier ejection). A request that still fails, or gets
  any other status than expected, is an **error returned to the client**. A miss (404, ``missing``
  in mget) is not an error.

Operations: single GET, mget of several keys, PUT, DELETE, and every ``invalidate_every_s`` a pattern
invalidation of one key group through the admin API (``POST /internal/cache/invalidate``). Writes of a
key are serialised (one at a time per key; an invalidation holds every key of its group), so a key's
sequence order is its acknowledgement order and the ledger is exact.

With ``resp_port`` set, a share (``resp_share``) of the reads, mgets, writes and deletes goes through
the pods' Redis protocol instead (``GET``, ``MGET``, ``SET ... EX``, ``DEL``; redis-py, one client per
pod and role, its own retries off so this module's retry and ejection apply to both protocols). A
value SET that way is stored as bytes (its JSON text), so either protocol may read back a value the
other wrote: RESP answers a JSON value as its JSON text, HTTP a bytes value as text with
``"encoding": "utf-8"``; :func:`bench._soak_model.value_read_back` parses both back for the judge.
This runs the RESP front end's kept replies (bytes values only) under every fault, against the same
ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bench._soak_model import Ledger, PhaseBook, make_value, value_read_back

ATTEMPTS = 4
RETRY_BACKOFF_S = 0.05
EJECT_S = 3.0
REQUEST_TIMEOUT_S = 10.0
RETRY_STATUSES = frozenset({502, 503, 504})
# What a request with retries answers: (its result, start of the first attempt, start of the answering
# attempt, the answering pod's IP). The result is (status, JSON body) over HTTP, the reply over RESP.
Answer = tuple[Any, float, float, str]
# A failed attempt that is retried on another pod and ejects this one. redis-py raises its
# ConnectionError for a refused or reset connection and for a pod still starting (LOADING is its
# BusyLoadingError), its TimeoutError for a reply that did not come.
CONNECTION_FAILURES = (
    aiohttp.ClientError,
    TimeoutError,
    ValueError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


@dataclass
class LoadSettings:
    """What the generator does per second and over which keys."""

    rate: float = 100.0  # operations started per second
    keys: int = 200
    groups: int = 10
    concurrency: int = 32
    value_pad: int = 200
    read_share: float = 0.70
    mget_share: float = 0.08
    write_share: float = 0.18  # the rest are deletes
    mget_size: int = 5
    invalidate_every_s: float = 10.0
    ttl_s: int = 3600
    port: int = 8080
    resp_port: int | None = None  # the pods' Redis-protocol port (spec.runtime.respPort); None: HTTP only
    resp_share: float = 0.0  # with resp_port: share of GET, mget, PUT and DELETE sent over the Redis protocol


@dataclass
class ClientCounters:
    """Requests as the client saw them."""

    requests: int = 0
    errors: int = 0
    retried: int = 0
    attempts_failed: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    error_examples: list[str] = field(default_factory=list)

    def note_error(self, text: str) -> None:
        """Count an error returned to the client; keep the first few for the report."""
        self.errors += 1
        if len(self.error_examples) < 20:
            self.error_examples.append(text[:300])


class PodDirectory:
    """The Ready runtime pods' IPs, refreshed by :meth:`refresh_forever` (a coroutine)."""

    def __init__(self, list_pods: Callable[[], list[dict[str, Any]]]) -> None:
        self._list_pods = list_pods
        self.ips: list[str] = []
        self.refresh_failures = 0

    def refresh_once(self) -> None:
        """Read the pod list (blocking); keep the previous one when the API server does not answer."""
        try:
            pods = self._list_pods()
        except Exception:
            self.refresh_failures += 1
            return
        ips = []
        for pod in pods:
            status = pod.get("status") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
            )
            if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
                ips.append(status["podIP"])
        self.ips = sorted(ips)

    async def refresh_forever(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Refresh every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            await asyncio.to_thread(self.refresh_once)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


class LoadGenerator:
    """Steady, seeded traffic against the pods; every read judged by ``ledger``."""

    def __init__(
        self,
        settings: LoadSettings,
        ledger: Ledger,
        book: PhaseBook,
        pods: PodDirectory,
        read_token: str,
        write_token: str,
        seed: int,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.book = book
        self.pods = pods
        self.read_headers = {"Authorization": f"Bearer {read_token}"}
        self.write_headers = {"Authorization": f"Bearer {write_token}"}
        self.rng = random.Random(seed)
        self.counters = ClientCounters()
        self.keys = [f"g{i % settings.groups:02d}-k{i:04d}" for i in range(settings.keys)]
        self.locks = {key: asyncio.Lock() for key in self.keys}
        self._rr = 0
        self._ejected: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tokens = {"read": read_token, "write": write_token}
        self._resp_clients: dict[tuple[str, str], redis.asyncio.Redis] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.started_ops = 0

    # --- one request with retries ---------------------------------------------------------------

    def _pick_pod(self, tried: set[str]) -> str | None:
        """Round-robin over the Ready pods, skipping pods this request already tried and pods ejected
        after a connection failure (for ``EJECT_S``, as client-side load balancers do)."""
        ips = self.pods.ips
        now = time.monotonic()
        candidates = [ip for ip in ips if ip not in tried and self._ejected.get(ip, 0.0) <= now]
        if not candidates:
            candidates = [ip for ip in ips if ip not in tried]
        if not candidates:
            return None
        self._rr = (self._rr + 1) % 1_000_003
        return candidates[self._rr % len(candidates)]

    async def _attempts(
        self, what: str, send: Callable[[str], Awaitable[tuple[str, Any]]]
    ) -> Answer | None:
        """Run ``send(pod IP)`` until a pod answers, at most ``ATTEMPTS`` times (see the module
        docstring); ``send`` answers ``("ok", result)``, ``("retry", problem)`` or ``("error",
        problem)``, or raises one of ``CONNECTION_FAILURES``. (result, start of the first attempt,
        start of the answering attempt, the answering pod's IP), or None when it failed (counted)."""
        first = time.monotonic()
        last_problem = "no Ready pod known"
        tried: set[str] = set()
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
            ip = self._pick_pod(tried)
            if ip is None:
                tried.clear()  # every pod failed once: try them again after the backoff
                self.counters.attempts_failed += 1
                continue
            tried.add(ip)
            started = time.monotonic()
            try:
                outcome, result = await send(ip)
            except CONNECTION_FAILURES as exc:
                last_problem = f"{what} on {ip}: {type(exc).__name__}: {exc}"
                self.counters.attempts_failed += 1
                self._ejected[ip] = time.monotonic() + EJECT_S
                continue
            if outcome == "retry":
                last_problem = f"{what} on {ip}: {result}"
                self.counters.attempts_failed += 1
                continue
            if attempt:
                self.counters.retried += 1
            if outcome != "ok":
                self.counters.note_error(f"{what} on {ip}: {result}")
                self.book.record(first, time.monotonic() - first, False, attempt > 0)
                return None
            self.book.record(first, time.monotonic() - first, True, attempt > 0)
            return result, first, started, ip
        self.counters.note_error(f"after {ATTEMPTS} attempts: {last_problem}")
        self.book.record(first, time.monotonic() - first, False, True)
        return None

    async def _call(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any = None,
        expect: tuple[int, ...] = (200,),
    ) -> Answer | None:
        """An HTTP request with retries: ((status, JSON body), start of the first attempt, start of the
        answering attempt, the answering pod's IP), or None (the error is counted)."""
        session = self._session
        assert session is not None

        async def send(ip: str) -> tuple[str, Any]:
            async with session.request(
                method,
                f"http://{ip}:{self.settings.port}{path}",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as response:
                payload = await response.json(content_type=None)
                status = response.status
            if status in RETRY_STATUSES:
                return "retry", f"HTTP {status}"
            if status not in expect:
                return "error", f"HTTP {status}: {str(payload)[:200]}"
            return "ok", (status, payload)

        return await self._attempts(f"{method} {path.split('?')[0][:40]}", send)

    def _resp_client(self, ip: str, role: str) -> redis.asyncio.Redis:
        """The Redis-protocol client of one pod and role (``read`` or ``write`` token), made on first
        use; clients of pods no longer listed are closed then."""
        client = self._resp_clients.get((ip, role))
        if client is None:
            listed = set(self.pods.ips)
            for gone in [k for k in self._resp_clients if k[0] not in listed]:
                task = asyncio.create_task(self._resp_clients.pop(gone).aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            assert self.settings.resp_port is not None
            client = self._resp_clients[(ip, role)] = redis.asyncio.Redis(
                host=ip,
                port=self.settings.resp_port,
                username="soak",  # not checked: the token decides the role
                password=self._tokens[role],
                protocol=2,
                socket_timeout=REQUEST_TIMEOUT_S,
                socket_connect_timeout=REQUEST_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),  # this module retries, on another pod
            )
        return client

    async def _command(
        self, role: str, args: tuple[Any, ...], valid: Callable[[Any], bool]
    ) -> Answer | None:
        """A Redis-protocol command with retries: (reply, start of the first attempt, start of the
        answering attempt, the answering pod's IP), or None (the error is counted). An error reply
        (``-ERR ...``) or a reply ``valid`` refuses is an error returned to the client."""

        async def send(ip: str) -> tuple[str, Any]:
            try:
                reply = await self._resp_client(ip, role).execute_command(*args)
            except redis.exceptions.ResponseError as exc:
                return "error", f"-{exc}"
            if not valid(reply):
                return "error", f"unexpected reply {reply!r:.200}"
            return "ok", reply

        return await self._attempts(f"RESP {args[0]}", send)

    async def close_resp_clients(self) -> None:
        """Close every Redis-protocol client (the end of the run)."""
        clients, self._resp_clients = list(self._resp_clients.values()), {}
        await asyncio.gather(*(c.aclose() for c in clients), *self._closing, return_exceptions=True)

    # --- operations ------------------------------------------------------------------------------

    async def read_one(self, key: str) -> None:
        """GET one key and judge the answer."""
        answer = await self._call("GET", f"/data/v1/keys/{quote(key)}", self.read_headers, expect=(200, 404))
        if answer is None:
            return
        (status, body), _, started, pod = answer
        value = value_read_back(body.get("value"), body.get("encoding")) if status == 200 else None
        self._judge(key, started, value, pod)

    async def read_many(self, keys: list[str]) -> None:
        """mget several keys and judge each."""
        answer = await self._call("POST", "/data/v1/mget", self.read_headers, {"keys": keys})
        if answer is None:
            return
        (_, body), _, started, pod = answer
        values = body.get("values") or {}
        encodings = body.get("encodings") or {}
        for key in keys:
            self._judge(key, started, value_read_back(values.get(key), encodings.get(key)), pod)

    async def resp_read_one(self, key: str) -> None:
        """GET one key over the Redis protocol and judge the answer."""
        answer = await self._command(
            "read", ("GET", key), lambda reply: reply is None or isinstance(reply, bytes)
        )
        if answer is None:
            return
        reply, _, started, pod = answer
        self._judge(key, started, value_read_back(reply), pod)

    async def resp_read_many(self, keys: list[str]) -> None:
        """MGET several keys over the Redis protocol and judge each."""
        answer = await self._command(
            "read", ("MGET", *keys), lambda replies: isinstance(replies, list) and len(replies) == len(keys)
        )
        if answer is None:
            return
        replies, _, started, pod = answer
        for key, reply in zip(keys, replies, strict=True):
            self._judge(key, started, value_read_back(reply), pod)

    def _judge(self, key: str, started: float, value: Any, pod: str) -> None:
        verdict = self.ledger.check_read(key, started, value, pod)
        if verdict.kind == "degraded-stale":
            self.book.note_degraded_stale(started)
        elif verdict.wrong:
            self.book.note_wrong(started)

    async def write(self, key: str) -> None:
        """PUT the next version of ``key``."""
        async with self.locks[key]:
            seq = self.ledger.begin_write(key)
            value = make_value(key, seq, self.settings.value_pad)
            answer = await self._call(
                "PUT",
                f"/data/v1/keys/{quote(key)}",
                self.write_headers,
                {"value": value, "ttl_s": self.settings.ttl_s},
            )
            self._acknowledge([key], [seq], answer)

    async def delete(self, key: str) -> None:
        """DELETE ``key``."""
        async with self.locks[key]:
            seq = self.ledger.begin_delete(key)
            answer = await self._call("DELETE", f"/data/v1/keys/{quote(key)}", self.write_headers)
            self._acknowledge([key], [seq], answer)

    async def resp_write(self, key: str) -> None:
        """SET the next version of ``key`` over the Redis protocol: the bytes of its JSON text."""
        async with self.locks[key]:
            seq = self.ledger.begin_write(key)
            text = json.dumps(make_value(key, seq, self.settings.value_pad), separators=(",", ":"))
            answer = await self._command(
                "write", ("SET", key, text.encode(), "EX", self.settings.ttl_s), lambda reply: reply is True
            )
            self._acknowledge([key], [seq], answer)

    async def resp_delete(self, key: str) -> None:
        """DEL ``key`` over the Redis protocol."""
        async with self.locks[key]:
            seq = self.ledger.begin_delete(key)
            answer = await self._command("write", ("DEL", key), lambda reply: reply in (0, 1))
            self._acknowledge([key], [seq], answer)

    async def invalidate_group(self, group: int) -> None:
        """Pattern-invalidate every key of ``group`` on one pod (the others follow by coherence)."""
        members = sorted(k for k in self.keys if k.startswith(f"g{group:02d}-"))
        held = []
        try:
            for key in members:  # sorted order: no deadlock with another multi-key holder
                await self.locks[key].acquire()
                held.append(key)
            seqs = [self.ledger.begin_delete(key) for key in members]
            headers = {**self.write_headers, "Idempotency-Key": f"soak-{uuid.uuid4().hex}"}
            answer = await self._call(
                "POST", f"/internal/cache/invalidate?pattern={quote(f'*:d:g{group:02d}-*')}", headers
            )
            self._acknowledge(members, seqs, answer)
        finally:
            for key in held:
                self.locks[key].release()

    def _acknowledge(self, keys: list[str], seqs: list[int], answer: Answer | None) -> None:
        """Tell the ledger how the write or delete ``seqs`` of ``keys`` ended (None: failed). An HTTP
        answer's body may say Redis did not take it; a RESP reply has no body (the ledger judges by
        the Redis fault windows anyway, the note is for tracing)."""
        acked = time.monotonic() if answer is not None else None
        started = answer[1] if answer is not None else time.monotonic()
        pod = answer[3] if answer is not None else ""
        result = answer[0] if answer is not None else None
        body = result[1] if isinstance(result, tuple) else None  # HTTP: (status, body)
        note = "(degraded: Redis did not take it)" if isinstance(body, dict) and body.get("degraded") else ""
        for key, seq in zip(keys, seqs, strict=True):
            self.ledger.acknowledge(key, seq, started, acked, pod, note)

    # --- the loop -----------------------------------------------------------------------------------

    def _pick(self) -> tuple[str, Any]:
        s = self.settings
        roll = self.rng.random()
        arg: Any
        if roll < s.read_share:
            op, arg = "get", self.rng.choice(self.keys)
        elif roll < s.read_share + s.mget_share:
            op, arg = "mget", self.rng.sample(self.keys, s.mget_size)
        elif roll < s.read_share + s.mget_share + s.write_share:
            op, arg = "put", self.rng.choice(self.keys)
        else:
            op, arg = "delete", self.rng.choice(self.keys)
        if s.resp_port is not None and self.rng.random() < s.resp_share:
            op = f"resp {op}"
        return op, arg

    async def _run_op(self, op: str, arg: Any, slots: asyncio.Semaphore) -> None:
        operations: dict[str, Callable[[Any], Awaitable[None]]] = {
            "get": self.read_one,
            "mget": self.read_many,
            "put": self.write,
            "delete": self.delete,
            "invalidate": self.invalidate_group,
            "resp get": self.resp_read_one,
            "resp mget": self.resp_read_many,
            "resp put": self.resp_write,
            "resp delete": self.resp_delete,
        }
        try:
            await operations[op](arg)
        except Exception as exc:  # a bug in the generator must show, not vanish in a task
            self.counters.note_error(f"generator {op}: {type(exc).__name__}: {exc}")
        finally:
            slots.release()

    async def run(self, stop: asyncio.Event) -> None:
        """Start ``rate`` operations per second (at most ``concurrency`` at once) until ``stop``."""
        s = self.settings
        connector = aiohttp.TCPConnector(limit=s.concurrency * 2, ttl_dns_cache=None)
        slots = asyncio.Semaphore(s.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(connector=connector) as session:
            self._session = session
            began = time.monotonic()
            next_invalidation = began + s.invalidate_every_s
            group = 0
            while not stop.is_set():
                now = time.monotonic()
                due = began + self.started_ops / s.rate
                if now - due > 1.0:
                    # Fell behind (every slot busy in a slow phase): drop the backlog instead of
                    # bursting to catch up, so the offered load stays steady.
                    began = now - self.started_ops / s.rate
                    due = now
                if due > now:
                    await asyncio.sleep(due - now)
                    continue
                await slots.acquire()  # back-pressure: a slow phase lowers the achieved rate
                if now >= next_invalidation:
                    op, arg = "invalidate", group % s.groups
                    group += 1
                    next_invalidation += s.invalidate_every_s
                else:
                    op, arg = self._pick()
                self.started_ops += 1
                self.counters.requests += 1
                self.counters.by_op[op] = self.counters.by_op.get(op, 0) + 1
                task = asyncio.create_task(self._run_op(op, arg, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S * ATTEMPTS + 5)
        self._session = None
        await self.close_resp_clients()
