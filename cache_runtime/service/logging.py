"""Structured JSON logs: one object per line, one line per request.

Request lines carry the method, the route *template* (``/data/v1/keys/{key}``, never the key: keys and
query strings can hold user text), the status and the duration. Tokens never reach a log record: the
auth module logs only file paths, and the access line has no headers.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ACCESS_LOGGER = "cachewarden.runtime.access"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message and its ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single line of JSON."""
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send every log record of the process (ours, uvicorn's errors) as JSON lines to ``stream``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log would duplicate ours and print raw paths (with user text): silence it.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def route_template(scope: Scope) -> str:
    """The matched route's template, or a placeholder: never the raw path (it can carry user text)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(template, str):
        return template
    return "<unmatched>"


class AccessLogMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streaming bodies) logging requests."""

    def __init__(
        self,
        app: ASGIApp,
        logger: logging.Logger | None = None,
        on_request: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        self.app = app
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)
        self.on_request = on_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and log one line when the response has started (or the app failed)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            duration = time.perf_counter() - started
            template = route_template(scope)
            method = str(scope.get("method", ""))
            if self.on_request is not None:
                self.on_request(method, template, status_holder[0], duration)
            self.logger.info(
                "request",
                extra={
                    "fields": {
                        "method": method,
                        "path": template,
                        "status": status_holder[0],
                        "duration_ms": round(duration * 1000, 3),
                    }
                },
            )
