"""One error shape for every 4xx the service returns.

Every rejected input answers with::

    {"error": "invalid_request", "message": "...",
     "problems": [{"field": "query.pattern", "value": "", "accepted": "...", "message": "..."}]}

FastAPI's own validation errors (wrong types, missing fields) are converted to the same shape, so a
client (or the operator) reads one format whatever rejected the request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cache_runtime.config import ConfigError

MAX_ECHO_CHARS = 200


def echo(value: Any) -> Any:
    """A value safe to send back: strict JSON (no NaN/Infinity, no number JSON cannot carry) and short.

    A JSON body may hold numbers Python reads as ``inf`` (``1e999``) or integers of thousands of
    digits; echoing those raw made the 422 itself unencodable (a 500). They come back as strings.
    """
    safe = _json_safe(value, 0)
    if isinstance(safe, str):
        return safe if len(safe) <= MAX_ECHO_CHARS else safe[:MAX_ECHO_CHARS] + "..."
    if isinstance(safe, (int, float, bool)) or safe is None:
        return safe
    try:
        encoded = orjson.dumps(safe)
    except (TypeError, orjson.JSONEncodeError):
        return repr(safe)[:MAX_ECHO_CHARS]
    if len(encoded) > MAX_ECHO_CHARS:
        return f"<{type(value).__name__} of {len(encoded)} bytes>"
    return safe


MAX_ECHO_DEPTH = 8
MAX_ECHO_DIGITS = 30


def _json_safe(value: Any, depth: int) -> Any:
    """``value`` with every part strict JSON can carry: non-finite floats, huge ints, odd types
    and too-deep nesting become short strings."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _utf8_safe(value)
    if isinstance(value, int):
        if abs(value) < 10**MAX_ECHO_DIGITS:
            return value
        return f"<integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= MAX_ECHO_DEPTH:
        return f"<{type(value).__name__} nested deeper than {MAX_ECHO_DEPTH}>"
    if isinstance(value, Mapping):
        return {
            _utf8_safe(str(key)[:MAX_ECHO_CHARS]): _json_safe(item, depth + 1)
            for key, item in list(value.items())[:50]
        }
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, depth + 1) for item in list(value)[:50]]
    if isinstance(value, bytes):
        return value[:MAX_ECHO_CHARS].decode("utf-8", "replace")
    return repr(value)[:MAX_ECHO_CHARS]


def _utf8_safe(text: str) -> str:
    """``text`` without lone surrogates (JSON may carry ``"\\ud800"``; UTF-8 cannot encode it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def strict(content: Any) -> Any:
    """A whole error body made encodable: strings UTF-8-safe, numbers finite (nothing shortened)."""
    if isinstance(content, str):
        return _utf8_safe(content)
    if isinstance(content, float) and not math.isfinite(content):
        return repr(content)
    if isinstance(content, Mapping):
        return {strict(key): strict(item) for key, item in content.items()}
    if isinstance(content, (list, tuple)):
        return [strict(item) for item in content]
    return content


def non_finite_path(value: Any, path: str = "") -> str | None:
    """The path of the first NaN/Infinity (or number beyond float range) inside ``value``, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(value)"
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = non_finite_path(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = non_finite_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


def reject_non_finite(value: Any) -> Any:
    """A pydantic validator body: refuse NaN/Infinity anywhere in ``value`` (JSON has neither)."""
    found = non_finite_path(value)
    if found is not None:
        raise ValueError(
            f"{found} is not a finite number; accepted: finite numbers (JSON has no NaN or Infinity)"
        )
    return value


def problem(field: str, value: Any, accepted: str, message: str | None = None) -> dict[str, Any]:
    """One problem entry: the field, the value given, what is accepted, and a sentence."""
    shown = echo(value)
    return {
        "field": field,
        "value": shown,
        "accepted": accepted,
        "message": message or f"{field}: {shown!r} is not accepted; accepted: {accepted}",
    }


class InvalidRequest(Exception):
    """Raised by handlers for inputs FastAPI's type checks cannot catch; becomes a 4xx."""

    def __init__(
        self, problems: Iterable[Mapping[str, Any]], status_code: int = 422, error: str = "invalid_request"
    ) -> None:
        self.problems = [dict(item) for item in problems]
        self.status_code = status_code
        self.error = error
        super().__init__("; ".join(str(item.get("message")) for item in self.problems))

    @classmethod
    def single(
        cls, field: str, value: Any, accepted: str, message: str | None = None, status_code: int = 422
    ) -> InvalidRequest:
        """An error about one field."""
        return cls([problem(field, value, accepted, message)], status_code)

    @classmethod
    def from_config_error(cls, error: ConfigError, prefix: str = "") -> InvalidRequest:
        """The engine's ConfigError (every problem pydantic found) as a 422."""
        return cls(
            [problem(prefix + item.field, item.value, item.accepted, item.message) for item in error.problems]
        )


def body(error: str, message: str, problems: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON body of an error response."""
    return {"error": error, "message": message, "problems": problems or []}


def _accepted_from_pydantic(item: Mapping[str, Any]) -> str:
    kind = str(item.get("type", ""))
    ctx = item.get("ctx") or {}
    if kind == "missing":
        return "a value (this field is required)"
    if "expected" in ctx:
        return f"one of {ctx['expected']}"
    bounds = [
        f"{word} {ctx[key]}"
        for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if key in ctx
    ]
    if bounds:
        return " and ".join(bounds)
    if kind in {"string_too_short", "too_short"}:
        return f"at least {ctx.get('min_length')} {'characters' if kind.startswith('string') else 'items'}"
    if kind in {"string_too_long", "too_long"}:
        return f"at most {ctx.get('max_length')} {'characters' if kind.startswith('string') else 'items'}"
    if "pattern" in ctx:
        return f"a string matching {ctx['pattern']}"
    if kind == "extra_forbidden":
        return "no such field (unknown fields are refused)"
    return str(item.get("msg", "a valid value"))


def problems_from_validation(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI/pydantic validation errors -> our problem entries (field path, value, accepted)."""
    result = []
    for item in errors:
        location = [str(part) for part in item.get("loc", ())]
        field = ".".join(location) or "request"
        result.append(
            problem(
                field,
                item.get("input"),
                _accepted_from_pydantic(item),
                f"{field}: {item.get('msg', 'invalid')}",
            )
        )
    return result


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response of ``app`` use the one shape (validation, our errors, HTTP errors)."""

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = problems_from_validation(exc.errors())
        message = "; ".join(item["message"] for item in problems[:5])
        return JSONResponse(status_code=422, content=strict(body("invalid_request", message, problems)))

    async def on_invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidRequest)
        content = strict(body(exc.error, str(exc), exc.problems))
        return JSONResponse(status_code=exc.status_code, content=content)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, (ValueError, RecursionError)):
            # FastAPI answers a body its JSON parser gave up on with a bare 400; say what was wrong.
            item = problem(
                "body",
                "(unparsed)",
                "JSON with integers of at most 4300 digits and nesting less than ~1000 levels deep",
                f"body: {type(cause).__name__}: {str(cause)[:200]}",
            )
            content = strict(body("invalid_request", item["message"], [item]))
            return JSONResponse(status_code=422, content=content)
        if isinstance(detail, Mapping):
            content = strict({"problems": [], **detail})
        else:
            content = body(_error_name(exc.status_code), str(detail))
        return JSONResponse(status_code=exc.status_code, content=content, headers=exc.headers)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(InvalidRequest, on_invalid)
    app.add_exception_handler(StarletteHTTPException, on_http)


def _error_name(status_code: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        422: "invalid_request",
        503: "unavailable",
    }.get(status_code, "error")
