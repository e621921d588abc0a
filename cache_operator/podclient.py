"""The one HTTP client the operator uses to talk to cache runtime pods (the ``/internal/cache`` admin API).

The operator reaches pods by pod IP (on devcluster every pod is its own 127.0.0.N and there are no
EndpointSlices; on a real cluster pod IPs are routable from the operator's pod), with the admin token
it rendered into the policy's Secret. aiohttp because kopf already depends on it: no new runtime
dependency, and one shared connection pool for every pod of every policy.

Every call has a total timeout, and returns a :class:`PodReply` instead of raising for the expected
failures (connection refused, timeout, non-2xx), so one sick pod never aborts a reconcile of the others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

ADMIN_PREFIX = "/internal/cache"
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_CONCURRENCY = 16

T = TypeVar("T")


@dataclass(frozen=True)
class PodTarget:
    """Where one pod's runtime API answers."""

    name: str
    ip: str
    port: int

    @property
    def base_url(self) -> str:
        """``http://<ip>:<port>`` (IPv6 addresses bracketed)."""
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}"


@dataclass
class PodReply:
    """The outcome of one call to one pod: ``ok`` with a JSON body, or an error that says why."""

    pod: str
    ok: bool
    status: int | None = None
    body: Any = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class PodClient:
    """Async client for the runtime admin API of many pods; create once per operator (kept in memo)."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s!r} must be > 0")
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r} must be >= 1")
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily inside the running loop (aiohttp binds a session to its loop).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.concurrency * 4, force_close=False),
            )
        return self._session

    async def close(self) -> None:
        """Close the connection pool (operator cleanup)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def call(
        self,
        pod: PodTarget,
        method: str,
        path: str,
        token: str | None,
        body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> PodReply:
        """One admin API request (``path`` relative to the admin prefix, query included); expected
        failures (HTTP errors, timeouts, connection errors) come back as ``PodReply(ok=False)``."""
        headers = {"Accept": "application/json", **(extra_headers or {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = f"{pod.base_url}{ADMIN_PREFIX}{path}"
        try:
            async with self._get_session().request(method, url, json=body, headers=headers) as response:
                text = await response.text()
                try:
                    data: Any = json.loads(text) if text else None
                except ValueError:
                    data = text[:500]
                if 200 <= response.status < 300:
                    return PodReply(pod.name, True, response.status, data)
                return PodReply(
                    pod.name,
                    False,
                    response.status,
                    data,
                    f"HTTP {response.status} from {method} {path}: {_detail(data)}",
                )
        except TimeoutError:
            return PodReply(
                pod.name, False, None, None, f"timeout after {self.timeout_s:g}s on {method} {path}"
            )
        except aiohttp.ClientError as exc:
            return PodReply(pod.name, False, None, None, f"{type(exc).__name__} on {method} {path}: {exc}")

    async def health(self, pod: PodTarget, token: str | None) -> PodReply:
        """``GET /internal/cache/health``: status, config hash, hit rates, memory, latency, Redis."""
        return await self.call(pod, "GET", "/health", token)

    async def apply_config(
        self, pod: PodTarget, token: str | None, config: Mapping[str, Any], config_hash: str
    ) -> PodReply:
        """``POST /internal/cache/config/apply`` with the full resolved config and its hash."""
        return await self.call(
            pod, "POST", "/config/apply", token, {"config": dict(config), "hash": config_hash}
        )

    async def for_each(self, pods: Iterable[PodTarget], call: Callable[[PodTarget], Awaitable[T]]) -> list[T]:
        """Run ``call`` on every pod concurrently, at most ``concurrency`` at a time, in input order."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(pod: PodTarget) -> T:
            async with gate:
                return await call(pod)

        return list(await asyncio.gather(*(one(pod) for pod in pods)))


def _detail(data: Any) -> str:
    """A short, human line from a runtime error body (RFC 7807 problem or plain text)."""
    if isinstance(data, Mapping):
        for key in ("detail", "title", "message", "error"):
            if data.get(key):
                return str(data[key])[:300]
        return json.dumps(data)[:300]
    return str(data)[:300]
